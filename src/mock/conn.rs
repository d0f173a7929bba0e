//! One connection: reads requests, answers what needs no waiting at once, and hands
//! generations to `generate`. Answers collect in one buffer that goes out when the
//! connection would otherwise wait.

mod generate;

use std::io;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future::or;

use super::api::{model_known, parse_embed, parse_gen, parse_show, GenSpec, Reject};
use super::http::{
    decode_chunked, parse_head, scan_chunked, Chunked, Framing, Head, HeadResult, Method,
};
use super::render::{
    embed_body, error_body, oa_model_body, push_metrics, push_response, show_body,
    unknown_model_msg, Canned, ConnMode, JSON,
};
use super::server::{note_freed, Core};
use super::stats::Route;
use crate::rt::{self, Stream};

/// A task that can run without waiting (a fast stream) lets the poller look at sockets and
/// timers at least this often.
const SLICE: Duration = Duration::from_millis(1);
/// Sleeps at least this long also watch for the client going away.
const PEER_WATCH_MIN: Duration = Duration::from_millis(20);
const READ_INIT: usize = 8 << 10;
const OUT_INIT: usize = 8 << 10;
/// Buffers grown past this by a large request or response are given back afterwards.
const BUF_KEEP: usize = 1 << 20;
/// With zero delays a stream is produced faster than written: send in pieces this large.
const FLUSH_AT: usize = 64 << 10;

/// Serves one accepted connection until the client closes it or the server stops.
pub(crate) async fn serve(core: Rc<Core>, stream: Stream) {
    let tls = match &core.cfg.tls {
        None => None,
        Some(config) => match handshake(&core, config, &stream).await {
            Some(tls) => Some(tls),
            None => return,
        },
    };
    let mut conn = Conn {
        stream,
        tls,
        buf: vec![0; READ_INIT],
        start: 0,
        end: 0,
        want: 0,
        out: Vec::with_capacity(OUT_INIT),
        tok: Vec::new(),
        offs: Vec::new(),
        ts: Vec::new(),
        scratch: Vec::new(),
        body: Vec::new(),
        continue_sent: false,
        head_since: None,
    };
    if !core.stopping() {
        let _ = conn.run(&core).await;
    }
}

enum Next {
    Read,
    Continue,
    Close,
    Generate(GenSpec, ConnMode, bool),
}

/// `--tls-cert`: the TLS handshake of an accepted connection, within `--header-timeout`.
/// None when it failed (rustls has sent the client its alert) or timed out.
async fn handshake(
    core: &Core,
    config: &std::sync::Arc<rustls::ServerConfig>,
    stream: &Stream,
) -> Option<Box<rustls::ServerConnection>> {
    let mut tls = Box::new(rustls::ServerConnection::new(config.clone()).ok()?);
    tls.set_buffer_limit(None);
    let limit = core.cfg.header_timeout;
    // The last flight goes out now: a TLS 1.2 client waits for the server's Finished
    // before it sends its request.
    let shaken = async {
        crate::tls::handshake(&mut tls, stream).await.is_ok()
            && crate::tls::flush(&mut tls, stream).await.is_ok()
    };
    let done = if limit.is_zero() {
        shaken.await
    } else {
        or(shaken, async {
            rt::sleep(limit).await;
            false
        })
        .await
    };
    done.then_some(tls)
}

/// Read plaintext from a TLS connection into `buf`: Ok(0) at the end (close_notify, or
/// the end of the stream).
async fn tls_read(
    tls: &mut rustls::ServerConnection,
    stream: &Stream,
    buf: &mut [u8],
) -> io::Result<usize> {
    use std::io::Read;
    loop {
        match tls.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        crate::tls::read_some(tls, stream).await?;
        if let Err(e) = tls.process_new_packets() {
            let _ = crate::tls::flush(tls, stream).await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
}

struct Conn {
    stream: Stream,
    /// `--tls-cert`: the TLS state of `stream`.
    tls: Option<Box<rustls::ServerConnection>>,
    /// Received bytes are `buf[start..end]`; `want` is how many the request needs, if known.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    want: usize,
    /// Responses accumulate here and go out when the connection would otherwise wait, so
    /// pipelined requests and zero-delay streams cost one write, not one per chunk.
    out: Vec<u8>,
    /// Pre-rendered token chunks of the current stream (see `render_tokens`).
    tok: Vec<u8>,
    offs: Vec<usize>,
    /// Where each token chunk's Ollama `created_at` lies in `tok`.
    ts: Vec<usize>,
    scratch: Vec<u8>,
    /// A decoded chunked request body.
    body: Vec<u8>,
    continue_sent: bool,
    /// When the first bytes of a still incomplete request head arrived.
    head_since: Option<Instant>,
}

/// Gives back a buffer grown past `BUF_KEEP`, and lets the core return the memory to the
/// system (`server::note_freed`).
fn shrink<T>(v: &mut Vec<T>) {
    if v.capacity() > BUF_KEEP {
        *v = Vec::new();
        note_freed();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let big = [
            self.buf.capacity(),
            self.out.capacity(),
            self.scratch.capacity(),
            self.body.capacity(),
        ];
        if big.into_iter().any(|c| c > BUF_KEEP) {
            note_freed();
        }
    }
}

fn count(core: &Core, route: Route, status: u16) {
    core.stats().count(route, status);
}

/// `%XX` escapes decoded (clients may escape a model id's `:` or `/`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON answer rendered for this request, status first.
fn push_json(out: &mut Vec<u8>, mode: ConnMode, head_only: bool, status: u16, body: &[u8]) -> u16 {
    push_response(out, status, JSON, body, mode, "", head_only);
    status
}

/// Answers a complete request, unless it is a generation that must be paced (`Generate`).
fn dispatch(core: &Core, head: &Head, path: &str, body: &[u8], out: &mut Vec<u8>) -> Next {
    let c = &core.canned;
    let cfg = &core.cfg;
    let mode = head.mode;
    let head_only = head.method == Method::Head;
    let oa = head.route.is_openai();
    let canned = |out: &mut Vec<u8>, canned: &Canned, status| {
        canned.push(out, mode, head_only);
        status
    };
    // A refused request body, in the route's error shape.
    let rejected = |out: &mut Vec<u8>, r: Reject| match r {
        Reject::MissingBody => canned(out, c.missing_body.get(oa), 400),
        Reject::ModelRequired => canned(out, c.model_required.get(oa), 400),
        Reject::BadJson(e) => push_json(out, mode, false, 400, &error_body(oa, 400, &e)),
        Reject::UnknownModel(m) => {
            let msg = match head.route {
                // Ollama's show (and OpenAI's retrieve, built on it) words it differently.
                Route::Show | Route::OaModel => format!("model '{m}' not found"),
                _ => unknown_model_msg(&m),
            };
            push_json(out, mode, false, 404, &error_body(oa, 404, &msg))
        }
    };
    let models = cfg.models.as_deref();
    let status = match (head.route, head.method) {
        (Route::Gen(api), Method::Post) => match parse_gen(api, body, cfg.tokens, models) {
            Ok(spec) => return Next::Generate(spec, mode, head.http10),
            Err(r) => rejected(out, r),
        },
        (Route::Show, Method::Post) => match parse_show(body, models) {
            Ok(m) => push_json(out, mode, false, 200, &show_body(&m)),
            Err(r) => rejected(out, r),
        },
        (route @ (Route::Embed | Route::Embeddings | Route::OaEmbeddings), Method::Post) => {
            let t0 = Instant::now();
            match parse_embed(body, models) {
                Ok(spec) => {
                    let took = t0.elapsed().as_nanos() as u64;
                    let body = embed_body(route, &spec, cfg.seed, took);
                    push_json(out, mode, false, 200, &body)
                }
                Err(r) => rejected(out, r),
            }
        }
        (
            Route::Gen(_) | Route::Show | Route::Embed | Route::Embeddings | Route::OaEmbeddings,
            _,
        ) => canned(out, c.post_only.get(oa), 405),
        (Route::Other, _) => canned(out, &c.not_found, 404),
        (route, Method::Get | Method::Head) => match route {
            Route::Root => canned(out, &c.root, 200),
            Route::Health => canned(out, &c.health, 200),
            Route::Version => canned(out, &c.version, 200),
            Route::Tags => canned(out, &c.tags, 200),
            Route::Ps => canned(out, &c.ps, 200),
            Route::OaModels => canned(out, &c.oa_models, 200),
            Route::OaModel => {
                let id = percent_decode(Route::model_id(path));
                match models {
                    Some(m) if !model_known(m, &id) => rejected(out, Reject::UnknownModel(id)),
                    _ => push_json(out, mode, head_only, 200, &oa_model_body(&id)),
                }
            }
            _ => {
                count(core, Route::Metrics, 200);
                push_metrics(out, &core.shared.cores, mode, head_only);
                return if mode.closes() {
                    Next::Close
                } else {
                    Next::Continue
                };
            }
        },
        (_, _) => canned(out, c.get_only.get(oa), 405),
    };
    count(core, head.route, status);
    if mode.closes() {
        Next::Close
    } else {
        Next::Continue
    }
}

/// Completes, with an error, once the client has closed its end, so a cancelled request
/// stops waiting (for a slot, or through a long delay). Bytes pipelined behind the request
/// hide a close; then it never completes and the next write finds out instead.
async fn peer_gone(stream: &Stream) -> io::Result<()> {
    let mut b = [0u8; 1];
    match stream.peek(&mut b).await {
        Ok(0) | Err(_) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "client went away",
        )),
        Ok(_) => futures_lite::future::pending().await,
    }
}

impl Conn {
    async fn run(&mut self, core: &Core) -> io::Result<()> {
        loop {
            if core.stopping() {
                return Ok(());
            }
            match self.step(core) {
                Next::Read => {
                    self.flush().await?;
                    if !self.fill_within(core).await? {
                        return Ok(());
                    }
                }
                Next::Continue => rt::yield_if_needed(SLICE).await,
                Next::Close => return self.flush_and_close().await,
                Next::Generate(spec, mode, http10) => {
                    if self.generate(core, spec, mode, http10).await? {
                        return self.flush_and_close().await;
                    }
                    rt::yield_if_needed(SLICE).await;
                }
            }
        }
    }

    /// Send what is buffered, then the FIN (the client reads to the end).
    async fn flush_and_close(&mut self) -> io::Result<()> {
        self.flush().await?;
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            crate::tls::flush(tls, &self.stream).await?;
        }
        self.stream.shutdown(Shutdown::Write)
    }

    /// Answer a request that cannot be read with `status` and a JSON error, then close:
    /// what follows it on the connection cannot be framed.
    fn reject(&mut self, core: &Core, route: Route, status: u16, what: &str) -> Next {
        let msg = error_body(route.is_openai(), status, &format!("{what} ({status})"));
        push_response(
            &mut self.out,
            status,
            JSON,
            &msg,
            ConnMode::Close,
            "",
            false,
        );
        count(core, route, status);
        Next::Close
    }

    /// Parses one request from the buffer and answers it if that needs no waiting.
    fn step(&mut self, core: &Core) -> Next {
        let data = &self.buf[self.start..self.end];
        let head = match parse_head(data) {
            HeadResult::Partial => {
                self.want = 0;
                if !data.is_empty() && self.head_since.is_none() {
                    self.head_since = Some(Instant::now());
                }
                return Next::Read;
            }
            HeadResult::Invalid(status) => {
                return self.reject(core, Route::Other, status, "bad request");
            }
            HeadResult::Complete(h) => h,
        };
        self.head_since = None;
        let rest = &data[head.len..];
        let (body, used): (&[u8], usize) = match head.framing {
            Framing::Length(n) if rest.len() >= n => (&rest[..n], n),
            Framing::Chunked => match scan_chunked(rest) {
                Chunked::Complete(n) => {
                    decode_chunked(&rest[..n], &mut self.body);
                    (&self.body, n)
                }
                Chunked::Invalid(status) => {
                    return self.reject(core, head.route, status, "bad chunked body");
                }
                Chunked::Partial => {
                    self.want = 0;
                    self.send_continue(&head);
                    return Next::Read;
                }
            },
            Framing::Length(n) => {
                self.want = head.len + n;
                self.send_continue(&head);
                return Next::Read;
            }
        };
        let path = std::str::from_utf8(&data[head.path.clone()]).unwrap_or("");
        let next = dispatch(core, &head, path, body, &mut self.out);
        shrink(&mut self.body);
        shrink(&mut self.scratch);
        self.start += head.len + used;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        self.want = 0;
        self.continue_sent = false;
        next
    }

    fn send_continue(&mut self, head: &Head) {
        if head.expect_continue && !head.http10 && !self.continue_sent {
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.continue_sent = true;
        }
    }

    /// Reads more; false on end of stream.
    async fn fill(&mut self) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > BUF_KEEP {
                self.buf = vec![0; READ_INIT];
                note_freed();
            }
        }
        let need = self.want.max(self.end - self.start + 1);
        if self.start + need > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if need > self.buf.len() {
                let len = need.max(self.buf.len() * 2);
                self.buf.resize(len, 0);
            }
        }
        let n = match &mut self.tls {
            None => self.stream.read(&mut self.buf[self.end..]).await?,
            Some(tls) => tls_read(tls, &self.stream, &mut self.buf[self.end..]).await?,
        };
        self.end += n;
        Ok(n > 0)
    }

    /// `fill`, within the time a client may take: `--header-timeout` from the first byte
    /// of a request head, `--idle-timeout` for each wait between requests or inside a
    /// body. False on end of stream or timeout (the connection is then closed silently,
    /// as Go's server does).
    async fn fill_within(&mut self, core: &Core) -> io::Result<bool> {
        let cfg = &core.cfg;
        let (since, limit) = match self.head_since {
            Some(t) => (t, cfg.header_timeout),
            None => (Instant::now(), cfg.idle_timeout),
        };
        if limit.is_zero() {
            return self.fill().await;
        }
        let deadline = since.checked_add(limit).unwrap_or(since);
        let expired = async {
            rt::sleep_until(deadline).await;
            Ok(false)
        };
        or(self.fill(), expired).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            match &mut self.tls {
                None => self.stream.write_all(&self.out).await?,
                Some(tls) => {
                    use std::io::Write;
                    tls.writer().write_all(&self.out)?;
                    crate::tls::flush(tls, &self.stream).await?;
                }
            }
            self.out.clear();
            if self.out.capacity() > BUF_KEEP {
                self.out = Vec::with_capacity(OUT_INIT);
                note_freed();
            }
        }
        Ok(())
    }

    /// Waits for `deadline`, first sending what is buffered; never sleeps when it has passed.
    /// True when it waited.
    async fn pace(&mut self, deadline: Instant) -> io::Result<bool> {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        self.flush().await?;
        // Watching costs a peeking recv per sleep: not worth it for short token gaps,
        // where the next write notices a closed client soon enough.
        if deadline - now < PEER_WATCH_MIN {
            rt::sleep_until(deadline).await;
            return Ok(true);
        }
        let slept = async {
            rt::sleep_until(deadline).await;
            Ok(true)
        };
        let gone = async { peer_gone(&self.stream).await.map(|()| true) };
        or(slept, gone).await
    }
}
