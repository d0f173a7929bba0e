//! One connection: reads requests, answers what needs no waiting at once, and hands
//! generations to `generate`. Answers collect in one buffer that goes out when the
//! connection would otherwise wait.

mod generate;

use std::io;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future::or;

use super::api::{parse_gen, GenSpec, Reject};
use super::http::{
    decode_chunked, parse_head, scan_chunked, Chunked, Framing, Head, HeadResult, Method,
};
use super::render::{json_error, push_metrics, push_response, Canned, ConnMode, JSON};
use super::server::Core;
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
    let mut conn = Conn {
        stream,
        buf: vec![0; READ_INIT],
        start: 0,
        end: 0,
        want: 0,
        out: Vec::with_capacity(OUT_INIT),
        tok: Vec::new(),
        offs: Vec::new(),
        scratch: Vec::new(),
        body: Vec::new(),
        continue_sent: false,
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

struct Conn {
    stream: Stream,
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
    scratch: Vec<u8>,
    /// A decoded chunked request body.
    body: Vec<u8>,
    continue_sent: bool,
}

fn count(core: &Core, route: Route, status: u16) {
    core.stats().count(route, status);
}

/// Answers a complete request, unless it is a generation that must be paced (`Generate`).
fn dispatch(core: &Core, head: &Head, body: &[u8], out: &mut Vec<u8>) -> Next {
    let c = &core.canned;
    let mode = head.mode;
    let head_only = head.method == Method::Head;
    let canned = |out: &mut Vec<u8>, canned: &Canned, status| {
        canned.push(out, mode, head_only);
        status
    };
    let status = match (head.route, head.method) {
        (Route::Gen(api), Method::Post) => {
            let cfg = &core.cfg;
            match parse_gen(api, body, cfg.tokens, cfg.models.as_deref()) {
                Ok(spec) => return Next::Generate(spec, mode, head.http10),
                Err(Reject::MissingBody) => canned(out, &c.missing_body, 400),
                Err(Reject::ModelRequired) => canned(out, &c.model_required, 400),
                Err(Reject::BadJson(e)) => {
                    push_response(out, 400, JSON, &json_error(&e), mode, "", false);
                    400
                }
                Err(Reject::UnknownModel(m)) => {
                    let msg = json_error(&format!("model '{m}' not found"));
                    push_response(out, 404, JSON, &msg, mode, "", false);
                    404
                }
            }
        }
        (Route::Gen(_), _) => canned(out, &c.post_only, 405),
        (Route::Other, _) => canned(out, &c.not_found, 404),
        (route, Method::Get | Method::Head) => match route {
            Route::Root => canned(out, &c.root, 200),
            Route::Version => canned(out, &c.version, 200),
            Route::Tags => canned(out, &c.tags, 200),
            Route::OaModels => canned(out, &c.oa_models, 200),
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
        (_, _) => canned(out, &c.get_only, 405),
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
                    if !self.fill().await? {
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
        self.stream.shutdown(Shutdown::Write)
    }

    /// Answer a request that cannot be read with `status` and a JSON error, then close:
    /// what follows it on the connection cannot be framed.
    fn reject(&mut self, core: &Core, route: Route, status: u16, what: &str) -> Next {
        let msg = json_error(&format!("{what} ({status})"));
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
                return Next::Read;
            }
            HeadResult::Invalid(status) => {
                return self.reject(core, Route::Other, status, "bad request");
            }
            HeadResult::Complete(h) => h,
        };
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
        let next = dispatch(core, &head, body, &mut self.out);
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
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
            if self.out.capacity() > BUF_KEEP {
                self.out = Vec::with_capacity(OUT_INIT);
            }
        }
        Ok(())
    }

    /// Waits for `deadline`, first sending what is buffered; never sleeps when it has passed.
    async fn pace(&mut self, deadline: Instant) -> io::Result<()> {
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        self.flush().await?;
        // Watching costs a peeking recv per sleep: not worth it for short token gaps,
        // where the next write notices a closed client soon enough.
        if deadline - now < PEER_WATCH_MIN {
            rt::sleep_until(deadline).await;
            return Ok(());
        }
        let slept = async {
            rt::sleep_until(deadline).await;
            Ok(())
        };
        or(slept, peer_gone(&self.stream)).await
    }
}
