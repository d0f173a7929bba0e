//! One core's runtime: the accept loop, connections, pacing, and shutdown.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures_lite::future::or;
use socket2::Socket;

use super::api::{parse_gen, GenSpec, Reject};
use super::http::{
    decode_chunked, parse_head, scan_chunked, Chunked, Framing, Head, HeadResult, Method,
};
use super::render::{
    json_error, json_str, push_head, push_metrics, push_response, push_stream_end, render_full,
    render_tokens, BodyLen, Canned, CannedSet, ConnMode, Stamp, Timings, JSON, NDJSON, SSE, WORDS,
};
use super::stats::{Admission, CoreStats, Route, Shared, Waiters};
use super::MockConfig;
use crate::llm::Api;
use crate::rng::SplitMix64;
use crate::rt::{self, Listener, Stream};

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

pub(crate) struct Core {
    idx: usize,
    cfg: Arc<MockConfig>,
    shared: Arc<Shared>,
    canned: Arc<CannedSet>,
    rng: Cell<SplitMix64>,
    next_id: Cell<u64>,
    waiters: Waiters,
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "mock server stopping")
}

impl Core {
    fn stats(&self) -> &CoreStats {
        &self.shared.cores[self.idx]
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Relaxed)
    }

    fn inject_error(&self) -> bool {
        let p = self.cfg.error_rate;
        if p <= 0.0 {
            return false;
        }
        let mut rng = self.rng.get();
        let draw = rng.unit();
        self.rng.set(rng);
        draw < p
    }

    fn stamp(&self, api: Api, model: &str) -> Stamp {
        if api.is_ollama() {
            return Stamp {
                created_at: created_at(api),
                created: 0,
                id: String::new(),
                model_json: json_str(model),
            };
        }
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        let prefix = if api == Api::OpenaiChat {
            "chatcmpl"
        } else {
            "cmpl"
        };
        Stamp {
            created_at: String::new(),
            created: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            id: format!("{prefix}-mock{}x{n}", self.idx),
            model_json: json_str(model),
        }
    }
}

/// The core's root task: serves until stop is asked, then returns, and the runtime drops
/// every connection where it stands (mid-stream ones too).
pub(crate) async fn core_main(
    idx: usize,
    sock: Socket,
    cfg: Arc<MockConfig>,
    shared: Arc<Shared>,
    canned: Arc<CannedSet>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let listener = match Listener::new(sock) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("core {idx} cannot accept: {e}")));
            return;
        }
    };
    let seed = cfg.seed ^ (idx as u64).wrapping_mul(0xa076_1d64_78bd_642f);
    let core = Rc::new(Core {
        idx,
        cfg,
        shared,
        canned,
        rng: Cell::new(SplitMix64::from_state(seed)),
        next_id: Cell::new(0),
        waiters: Waiters::default(),
    });
    let _ = ready.send(Ok(()));
    drop(ready);
    // The doorbell rings for stop, and when a `--parallel` slot was released on any core.
    let bell = async {
        loop {
            core.shared.bells[idx].wait().await;
            if core.stopping() {
                return;
            }
            core.waiters.wake_ready(&core.shared, false);
        }
    };
    or(accept_loop(&core, listener), bell).await;
    // Waiters for a slot end with an error rather than being dropped unserved.
    core.waiters.wake_ready(&core.shared, true);
}

fn spawn(task: impl Future<Output = ()> + 'static) {
    rt::spawn(task).detach();
}

async fn accept_loop(core: &Rc<Core>, listener: Listener) {
    loop {
        match listener.accept().await {
            Ok(stream) => spawn(serve(core.clone(), stream)),
            // Out of fds and the like: back off instead of spinning on the error.
            Err(_) => rt::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve(core: Rc<Core>, stream: Stream) {
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

/// `base + offset + step * n`, saturating at a year away (absurd delays must not panic).
fn deadline(base: Instant, offset: Duration, step: Duration, n: u32) -> Instant {
    step.checked_mul(n)
        .and_then(|d| d.checked_add(offset))
        .and_then(|d| base.checked_add(d))
        .unwrap_or_else(|| base + Duration::from_secs(365 * 86400))
}

fn nanos(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_nanos() as u64
}

struct InFlight<'a>(&'a CoreStats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.gauge_in_flight(false);
    }
}

/// A `--parallel` ticket. Awaiting it waits for its turn; dropping it gives the slot back
/// (waking this core's next waiter), or leaves the unserved ticket to be released in its
/// turn, however the request ends.
struct Ticket<'a> {
    core: &'a Rc<Core>,
    adm: &'a Admission,
    ticket: u64,
    admitted: bool,
}

impl Ticket<'_> {
    fn admit_now(&mut self) -> bool {
        self.admitted = self.admitted || self.adm.may_run(self.ticket);
        self.admitted
    }
}

impl Future for Ticket<'_> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let core = self.core;
        if core.stopping() {
            return Poll::Ready(Err(stopped()));
        }
        if self.admit_now() {
            core.waiters.map.borrow_mut().remove(&self.ticket);
            return Poll::Ready(Ok(()));
        }
        core.waiters
            .map
            .borrow_mut()
            .insert(self.ticket, Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let (core, adm) = (self.core, self.adm);
        if self.admitted {
            adm.release();
            // This core's waiters at once, the other cores' through their doorbells.
            core.waiters.wake_ready(&core.shared, false);
            core.shared.ring_all();
            return;
        }
        core.waiters.map.borrow_mut().insert(self.ticket, None);
        core.waiters.wake_ready(&core.shared, core.stopping());
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
    async fn run(&mut self, core: &Rc<Core>) -> io::Result<()> {
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

    /// Produces a generation response; true when the connection must close after it.
    async fn generate(
        &mut self,
        core: &Rc<Core>,
        spec: GenSpec,
        mode: ConnMode,
        http10: bool,
    ) -> io::Result<bool> {
        let t_arrive = Instant::now();
        let route = Route::Gen(spec.api);
        let stats = core.stats();
        if core.inject_error() {
            core.canned.injected.push(&mut self.out, mode, false);
            count(core, route, 500);
            return Ok(mode.closes());
        }
        let _slot = match &core.shared.admission {
            None => None,
            Some(adm) => {
                let Some(ticket) = adm.try_enter() else {
                    core.canned.busy.push(&mut self.out, mode, false);
                    count(core, route, 503);
                    return Ok(mode.closes());
                };
                let mut ticket = Ticket {
                    core,
                    adm,
                    ticket,
                    admitted: false,
                };
                if !ticket.admit_now() {
                    // Earlier pipelined answers should not wait behind the queue.
                    self.flush().await?;
                    stats.gauge_waiting(true);
                    let r = or(&mut ticket, peer_gone(&self.stream)).await;
                    stats.gauge_waiting(false);
                    r?;
                }
                Some(ticket)
            }
        };
        stats.gauge_in_flight(true);
        let _in_flight = InFlight(stats);

        let t_slot = Instant::now();
        let stamp = core.stamp(spec.api, &spec.model);
        // HTTP/1.0 has no chunked encoding: stream until close instead.
        let chunked = !http10;
        let close = mode.closes() || (spec.stream && http10);
        let mode = if close { ConnMode::Close } else { mode };
        if spec.stream {
            render_tokens(
                &mut self.tok,
                &mut self.offs,
                &mut self.scratch,
                &spec,
                &stamp,
                chunked,
            );
        }
        let t_gen = Instant::now();
        let (ttft, step) = (core.cfg.ttft, core.cfg.token_delay);
        if spec.stream {
            let ctype = if spec.api.is_ollama() { NDJSON } else { SSE };
            let len = if chunked {
                BodyLen::Chunked
            } else {
                BodyLen::UntilClose
            };
            push_head(&mut self.out, 200, ctype, len, mode, "");
            count(core, route, 200);
            let mut first_at = None;
            let w = WORDS.len();
            for i in 0..spec.tokens {
                self.pace(deadline(t_gen, ttft, step, i)).await?;
                if i == 0 {
                    first_at = Some(Instant::now());
                    // OpenAI chat's role-only chunk, empty for the other APIs.
                    self.out.extend_from_slice(&self.tok[..self.offs[0]]);
                }
                let k = i as usize % w;
                self.out
                    .extend_from_slice(&self.tok[self.offs[k]..self.offs[k + 1]]);
                stats.add_tokens(1);
                if self.out.len() >= FLUSH_AT {
                    self.flush().await?;
                    rt::yield_if_needed(SLICE).await;
                }
            }
            // The final object comes one decode step after the last token, like an EOS.
            self.pace(deadline(t_gen, ttft, step, spec.tokens)).await?;
            let t_end = Instant::now();
            let t_first = first_at.unwrap_or(t_end);
            let timings = timings(t_arrive, t_slot, t_gen, t_first, t_end);
            let end_at = created_at(spec.api);
            push_stream_end(
                &mut self.out,
                &mut self.scratch,
                &spec,
                &stamp,
                &end_at,
                &timings,
                chunked,
                core.cfg.no_done,
            );
        } else {
            self.pace(deadline(t_gen, ttft, step, spec.tokens)).await?;
            let t_end = Instant::now();
            let t_first = deadline(t_gen, ttft, step, 0).min(t_end);
            let timings = timings(t_arrive, t_slot, t_gen, t_first, t_end);
            let end_at = created_at(spec.api);
            render_full(&mut self.scratch, &spec, &stamp, &end_at, &timings);
            push_response(&mut self.out, 200, JSON, &self.scratch, mode, "", false);
            count(core, route, 200);
            stats.add_tokens(spec.tokens as u64);
        }
        Ok(close)
    }
}

/// Ollama's `created_at` for now (RFC 3339, nanoseconds); OpenAI objects carry none.
fn created_at(api: Api) -> String {
    if api.is_ollama() {
        humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
    } else {
        String::new()
    }
}

/// Queue wait is `t_slot - t_arrive`; it is in `total` but none of the phases.
fn timings(
    t_arrive: Instant,
    t_slot: Instant,
    t_gen: Instant,
    t_first: Instant,
    t_end: Instant,
) -> Timings {
    Timings {
        total: nanos(t_arrive, t_end),
        load: nanos(t_slot, t_gen),
        prompt_eval: nanos(t_gen, t_first),
        eval: nanos(t_first, t_end),
    }
}
