//! Helpers for blast's integration tests: run the binary with a hard deadline, read its JSON
//! result, and a small loopback HTTP/1.1 server that counts what it really receives.

#![allow(dead_code)]

pub mod doc;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Running blast
// ---------------------------------------------------------------------------------------

/// No single blast run in these tests may take longer than this.
pub const HARD_TIMEOUT: Duration = Duration::from_secs(20);

/// One finished blast process.
pub struct Run {
    pub output: Output,
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// User + system CPU time of the blast process alone (from wait4's rusage).
    pub cpu: Duration,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// Run blast with `args` and wait for it, killing it (and failing the test) after
/// [`HARD_TIMEOUT`].
pub fn blast(args: &[&str]) -> Output {
    run_blast(args).output
}

/// blast refuses `args` with exit 2 and two lines on stderr: the first names `first`, the
/// second starts with `blast: ` and contains `hint`.
#[allow(dead_code)]
pub fn assert_two_line_error(args: &[&str], first: &str, hint: &str) {
    let run = run_blast(args);
    let err = run.stderr();
    assert_eq!(run.code(), Some(2), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{args:?}: {err}");
    assert!(
        lines[0].starts_with("blast: ") && lines[0].contains(first),
        "{args:?}: {err}"
    );
    assert!(
        lines[1].starts_with("blast: ") && lines[1].contains(hint),
        "{args:?}: {err}"
    );
}

/// Like [`blast`], and also report the wall and CPU time of the process.
// The child is reaped by wait4 below, which clippy cannot see.
pub fn run_blast(args: &[&str]) -> Run {
    run_blast_within(args, HARD_TIMEOUT)
}

/// Like [`run_blast`], with a deadline of its own (a command of many runs: `blast sweep`).
#[allow(clippy::zombie_processes)]
pub fn run_blast_within(args: &[&str], limit: Duration) -> Run {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot spawn blast");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let pid = child.id() as libc::pid_t;

    // wait4 rather than Child::wait: it gives this child's own rusage, which
    // RUSAGE_CHILDREN cannot (tests run in parallel threads of one process).
    let (status, usage) = loop {
        if let Some(done) = wait4(pid, libc::WNOHANG) {
            break done;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = wait4(pid, 0);
            let err = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
            panic!("blast {args:?} still running after {limit:?}: killed. stderr:\n{err}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let wall = start.elapsed();
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Run {
        output: Output {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        },
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
    }
}

/// Reap `pid` (blocking unless `flags` has WNOHANG); None while it is still running.
fn wait4(pid: libc::pid_t, flags: libc::c_int) -> Option<(ExitStatus, libc::rusage)> {
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data; wait4 only writes to the two pointers we pass.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if r == pid {
            return Some((ExitStatus::from_raw(status), usage));
        }
        if r == 0 {
            return None;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            panic!("wait4({pid}) failed: {e}");
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// A fresh path in the temp directory (not created).
pub fn temp_path(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("blast-test-{}-{n}-{tag}", std::process::id()))
}

/// A file in the temp directory, removed when dropped (even by a failing test).
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn with_contents(tag: &str, contents: &[u8]) -> TempFile {
        let path = temp_path(tag);
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }
    pub fn path_str(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Run blast with `--quiet --json <tempfile>` added and parse the result document.
pub fn blast_json(args: &[&str]) -> (Output, Value) {
    let (run, doc) = run_blast_json(args);
    (run.output, doc)
}

/// Three POSTs of a 32 MB body on one connection to `url` (with `extra` options): more
/// than the socket buffers hold, so a server that answers early and resets (nginx's 413)
/// does so while blast is still writing.
pub fn post_huge_body(url: &str, extra: &[&str]) -> Value {
    let body = TempFile::with_contents("huge-body", &vec![b'b'; 32 << 20]);
    let mut args = vec![
        url,
        "--body-file",
        body.path_str(),
        "--conns",
        "1",
        "--requests",
        "3",
    ];
    args.extend_from_slice(extra);
    blast_json(&args).1
}

/// Like [`blast_json`], with the timing of the process.
pub fn run_blast_json(args: &[&str]) -> (Run, Value) {
    run_blast_json_within(args, HARD_TIMEOUT)
}

/// Like [`run_blast_json`], with a deadline of its own (see [`run_blast_within`]).
pub fn run_blast_json_within(args: &[&str], limit: Duration) -> (Run, Value) {
    let path = temp_path("result.json");
    let path_text = path.to_str().expect("utf-8 temp path").to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--quiet", "--json", &path_text]);
    let run = run_blast_within(&all, limit);
    let text = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    let text = text.unwrap_or_else(|e| {
        panic!(
            "blast {all:?} wrote no JSON ({e}); exit {:?}, stderr:\n{}",
            run.code(),
            run.stderr()
        )
    });
    let doc = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("blast {all:?} wrote invalid JSON ({e}):\n{text}"));
    (run, doc)
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local addr").port()
}

// ---------------------------------------------------------------------------------------
// The test server
// ---------------------------------------------------------------------------------------

/// How response bodies are delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    ContentLength,
    /// `Transfer-Encoding: chunked`, with chunk extensions and trailer fields.
    Chunked,
    /// No length at all: the body ends when the server closes the connection.
    CloseDelimited,
}

/// What the server does with each request.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub status: u16,
    pub framing: Framing,
    /// Say `Connection: close` on every N-th response of a connection, then close it.
    pub close_every: Option<u64>,
    /// Close after this many responses on a connection *without* saying so (a keep-alive
    /// connection going stale).
    pub silent_close_after: Option<u64>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Close by simply dropping the socket (a reset if the client already sent more),
    /// instead of half-closing and draining.
    pub abrupt_close: bool,
    /// Answer with bytes that are not HTTP.
    pub garbage: bool,
    /// Size of each response body (chunked bodies are cut into 1000-byte chunks).
    pub body_len: usize,
    /// Every N-th request the server receives (counted over all connections) freezes the
    /// whole server for this long, like a GC pause: no connection answers until it is over.
    pub stall_every: Option<(u64, Duration)>,
    /// Write each response in three pieces, cut inside the status line and inside the
    /// header fields, with a pause after each, so that heads arrive cut in two.
    pub cut_heads: bool,
    /// Read (and count) every N-th request of a connection, then close the connection
    /// without answering it (see `close_gracefully` and `rst_close` for how).
    pub unanswered_every: Option<u64>,
    /// Close with a reset (SO_LINGER 0) instead of a FIN.
    pub rst_close: bool,
    /// Write every response twice, in one write.
    pub answer_twice: bool,
    /// Send each response again this long after the first copy.
    pub answer_again_after: Option<Duration>,
    /// Send these bytes instead of each response.
    pub raw: Option<Vec<u8>>,
    /// Write each response a byte at a time.
    pub trickle: bool,
    /// Header field lines added to every response head (each ending in CRLF).
    pub extra_headers: String,
    /// Answer (with `Connection: close`) as soon as a request head has arrived, before
    /// reading its body, then reset the connection (nginx's 413 for a body too large).
    pub early_reply: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            status: 200,
            framing: Framing::ContentLength,
            close_every: None,
            silent_close_after: None,
            delay: Duration::ZERO,
            abrupt_close: false,
            garbage: false,
            body_len: 11,
            stall_every: None,
            cut_heads: false,
            unanswered_every: None,
            rst_close: false,
            answer_twice: false,
            answer_again_after: None,
            raw: None,
            trickle: false,
            extra_headers: String::new(),
            early_reply: false,
        }
    }
}

impl Behaviour {
    /// Keep-alive, `Content-Length` bodies, 200 OK.
    pub fn keep_alive() -> Self {
        Self::default()
    }
    pub fn close_every(self, n: u64) -> Self {
        assert!(n > 0);
        Behaviour {
            close_every: Some(n),
            ..self
        }
    }
    pub fn chunked(self) -> Self {
        Behaviour {
            framing: Framing::Chunked,
            ..self
        }
    }
    pub fn close_delimited(self) -> Self {
        Behaviour {
            framing: Framing::CloseDelimited,
            ..self
        }
    }
    pub fn delay(self, delay: Duration) -> Self {
        Behaviour { delay, ..self }
    }
    pub fn status(self, status: u16) -> Self {
        Behaviour { status, ..self }
    }
    /// Answer one request per connection, then close it without `Connection: close`.
    pub fn stale(self) -> Self {
        Behaviour {
            silent_close_after: Some(1),
            ..self
        }
    }
    /// Like [`Behaviour::stale`], but the socket is dropped without a graceful close.
    pub fn stale_abrupt(self) -> Self {
        Behaviour {
            abrupt_close: true,
            ..self.stale()
        }
    }
    pub fn body_len(self, body_len: usize) -> Self {
        Behaviour { body_len, ..self }
    }
    pub fn garbage(self) -> Self {
        Behaviour {
            garbage: true,
            ..self
        }
    }
    pub fn cut_heads(self) -> Self {
        Behaviour {
            cut_heads: true,
            ..self
        }
    }
    /// Count every `n`-th request of a connection, then close it without an answer.
    pub fn unanswered_every(self, n: u64) -> Self {
        assert!(n > 0);
        Behaviour {
            unanswered_every: Some(n),
            ..self
        }
    }
    /// Close after `n` responses on a connection without saying so.
    pub fn silent_close_after(self, n: u64) -> Self {
        Behaviour {
            silent_close_after: Some(n),
            ..self
        }
    }
    /// Close by dropping the socket (a FIN, or a reset if unread data is left).
    pub fn abrupt(self) -> Self {
        Behaviour {
            abrupt_close: true,
            ..self
        }
    }
    /// Close with a reset.
    pub fn rst(self) -> Self {
        Behaviour {
            rst_close: true,
            ..self
        }
    }
    pub fn answer_twice(self) -> Self {
        Behaviour {
            answer_twice: true,
            ..self
        }
    }
    pub fn answer_again_after(self, after: Duration) -> Self {
        Behaviour {
            answer_again_after: Some(after),
            ..self
        }
    }
    pub fn raw(self, bytes: &[u8]) -> Self {
        Behaviour {
            raw: Some(bytes.to_vec()),
            ..self
        }
    }
    pub fn trickle(self) -> Self {
        Behaviour {
            trickle: true,
            ..self
        }
    }
    pub fn early_reply(self) -> Self {
        Behaviour {
            early_reply: true,
            ..self
        }
    }
    pub fn extra_headers(self, lines: &str) -> Self {
        Behaviour {
            extra_headers: lines.to_string(),
            ..self
        }
    }
}

/// A request as the server received it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SeenRequest {
    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub accepted: u64,
    /// Every complete request received, answered or not (including those read while
    /// closing a connection).
    pub requests: u64,
    /// Responses written (a response written twice counts once).
    pub answered: u64,
}

/// Requests kept in full for inspection.
const KEEP_SEEN: usize = 8;
/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Shared {
    requests: AtomicU64,
    answered: AtomicU64,
    seen: Mutex<Vec<SeenRequest>>,
    /// Requests received and not yet being answered, now and at most (see `Busy`).
    busy: AtomicU64,
    max_busy: AtomicU64,
    /// `Behaviour::stall_every`: the server answers nothing before this instant.
    stalled_until: Mutex<Option<Instant>>,
}

/// What an `Acceptor` counts, and the flag that stops it and the connections it serves.
#[derive(Default)]
pub struct Accepting {
    pub stop: AtomicBool,
    accepted: AtomicU64,
    /// Connection threads still running.
    open: AtomicU64,
    /// Times the accept loop found no pending connection.
    idle_rounds: AtomicU64,
}

/// A listener on 127.0.0.1:0 whose thread serves every connection in a thread of its own,
/// with `serve(stream, stop_flag)`. Dropping it stops it and joins all its threads (the
/// accept loop polls, and so must `serve`, through `read_more`, to notice the flag).
pub struct Acceptor {
    addr: SocketAddr,
    state: Arc<Accepting>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    pub fn start(serve: impl Fn(TcpStream, &AtomicBool) + Send + Sync + 'static) -> Acceptor {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback test server");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Accepting::default());
        let thread = {
            let state = state.clone();
            thread::spawn(move || accept_loop(listener, Arc::new(serve), &state))
        };
        Acceptor {
            addr,
            state,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Wait (a few seconds at most) until every connection offered so far has been accepted
    /// and has ended.
    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        // Two idle rounds after now: whatever was in the backlog has been accepted.
        let round = self.state.idle_rounds.load(Ordering::SeqCst);
        while self.state.idle_rounds.load(Ordering::SeqCst) < round + 2 && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(1));
        }
        while self.state.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop<F>(listener: TcpListener, serve: Arc<F>, state: &Arc<Accepting>)
where
    F: Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
{
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                state.accepted.fetch_add(1, Ordering::SeqCst);
                state.open.fetch_add(1, Ordering::SeqCst);
                let (serve, state) = (serve.clone(), state.clone());
                conns.push(thread::spawn(move || {
                    serve(stream, &state.stop);
                    state.open.fetch_sub(1, Ordering::SeqCst);
                }));
                conns.retain(|h| !h.is_finished());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                state.idle_rounds.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(1));
            }
            Err(_) => thread::sleep(Duration::from_millis(1)),
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

/// A loopback HTTP/1.1 server on 127.0.0.1:0, one thread per connection. Stops (and joins
/// all its threads) when dropped.
pub struct TestServer {
    shared: Arc<Shared>,
    acceptor: Acceptor,
}

impl TestServer {
    pub fn start(behaviour: Behaviour) -> TestServer {
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = shared.clone();
            Acceptor::start(move |stream, stop| {
                let _ = serve(stream, &behaviour, &shared, stop);
            })
        };
        TestServer { shared, acceptor }
    }

    pub fn port(&self) -> u16 {
        self.acceptor.addr().port()
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.acceptor.addr())
    }

    /// What the server has counted, once every connection it was offered has been accepted
    /// and has ended (call it after blast exited; gives up waiting after a few seconds).
    pub fn counts(&self) -> Counts {
        self.acceptor.settle();
        Counts {
            accepted: self.acceptor.accepted(),
            requests: self.shared.requests.load(Ordering::SeqCst),
            answered: self.shared.answered.load(Ordering::SeqCst),
        }
    }

    /// The first few requests received, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.acceptor.settle();
        self.shared.seen.lock().unwrap().clone()
    }
}

/// Serve one connection until the peer closes it, the behaviour closes it, or the server
/// stops.
fn serve(
    mut stream: TcpStream,
    b: &Behaviour,
    shared: &Shared,
    stop: &AtomicBool,
) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    let mut served = 0u64;
    let mut received = 0u64;
    loop {
        if b.early_reply {
            if let Some(req) = request_head(&buf)? {
                record(shared, req);
                let resp = b.raw.clone().unwrap_or_else(|| response(b, true, false));
                stream.write_all(&resp)?;
                shared.answered.fetch_add(1, Ordering::SeqCst);
                let reset = Behaviour {
                    rst_close: true,
                    ..Behaviour::default()
                };
                return close(stream, &reset, buf, shared, stop);
            }
        }
        while let Some((req, used)) = parse_request(&buf)? {
            buf.drain(..used);
            let req_is_head = req.method == "HEAD";
            let number = record(shared, req);
            received += 1;
            if b.unanswered_every
                .is_some_and(|n| received.is_multiple_of(n))
            {
                return close(stream, b, buf, shared, stop);
            }
            let busy = Busy::begin(shared);
            if !sleep_unless_stopped(b.delay, stop) || !wait_out_stall(b, number, shared, stop) {
                return Ok(());
            }
            drop(busy);
            served += 1;
            if b.garbage {
                stream.write_all(b"THIS IS NOT HTTP AT ALL\r\n\r\n")?;
                continue;
            }
            let announce_close = b.close_every.is_some_and(|n| served.is_multiple_of(n));
            let silent_close = b.silent_close_after.is_some_and(|n| served >= n);
            let mut resp = match &b.raw {
                Some(raw) => raw.clone(),
                None => response(b, announce_close, req_is_head),
            };
            if b.answer_twice {
                resp.extend_from_within(..);
            }
            if b.cut_heads {
                let (a, rest) = resp.split_at(5);
                let (b2, c) = rest.split_at(rest.len().min(20));
                for piece in [a, b2, c] {
                    stream.write_all(piece)?;
                    thread::sleep(Duration::from_millis(1));
                }
            } else if b.trickle {
                for byte in resp.chunks(1) {
                    stream.write_all(byte)?;
                    thread::sleep(Duration::from_millis(1));
                }
            } else {
                stream.write_all(&resp)?;
            }
            shared.answered.fetch_add(1, Ordering::SeqCst);
            if let Some(after) = b.answer_again_after {
                if !sleep_unless_stopped(after, stop) {
                    return Ok(());
                }
                // The client may have closed already: that is what it should do.
                let _ = stream.write_all(&resp);
            }
            if announce_close || silent_close || b.framing == Framing::CloseDelimited {
                return close(stream, b, buf, shared, stop);
            }
        }
        if !read_more(&mut stream, &mut buf, stop)? {
            return Ok(());
        }
    }
}

/// Make closing `stream` send a reset (SO_LINGER 0) rather than a FIN.
pub fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Close the connection as the behaviour says: with a reset, by dropping the socket, or
/// gracefully (counting what still arrives). `buf` holds what was received and not read.
fn close(
    stream: TcpStream,
    b: &Behaviour,
    buf: Vec<u8>,
    shared: &Shared,
    stop: &AtomicBool,
) -> io::Result<()> {
    if b.rst_close {
        reset_on_close(&stream);
        return Ok(());
    }
    if b.abrupt_close {
        return Ok(());
    }
    close_gracefully(stream, buf, shared, stop)
}

/// Read once into `buf`; false at EOF or once `stop` is set (the stream has a read
/// timeout, so the flag is polled).
pub fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, stop: &AtomicBool) -> io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(false);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(true);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Send FIN, then read (counting, not answering, the requests in it) whatever the client
/// still sends until it closes too, so that the close is never turned into a reset that
/// could destroy the response in flight, and every request that arrives is counted.
fn close_gracefully(
    mut stream: TcpStream,
    mut buf: Vec<u8>,
    shared: &Shared,
    stop: &AtomicBool,
) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        while let Ok(Some((req, used))) = parse_request(&buf) {
            buf.drain(..used);
            record(shared, req);
        }
        if Instant::now() >= deadline || !read_more(&mut stream, &mut buf, stop)? {
            return Ok(());
        }
    }
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        thread::sleep((end - now).min(POLL));
    }
}

/// Count (and maybe keep) a request; returns its number, from 1, over all connections.
fn record(shared: &Shared, req: SeenRequest) -> u64 {
    let number = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let mut seen = shared.seen.lock().unwrap();
    if seen.len() < KEEP_SEEN {
        seen.push(req);
    }
    number
}

/// Parsed header fields as owned (name, value) pairs, values decoded lossily.
pub fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// The head of a request at the front of `buf` (its body not read), once complete.
fn request_head(buf: &[u8]) -> io::Result<Option<SeenRequest>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => Ok(Some(SeenRequest {
            method: req.method.unwrap_or_default().to_string(),
            path: req.path.unwrap_or_default().to_string(),
            headers: owned_headers(req.headers),
            body: Vec::new(),
        })),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    }
}

/// One complete request (head and `Content-Length` body) at the front of `buf`, and its
/// length; None while incomplete.
pub fn parse_request(buf: &[u8]) -> io::Result<Option<(SeenRequest, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    let headers = owned_headers(req.headers);
    let body_len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse::<usize>())
        .transpose()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        .unwrap_or(0);
    let total = head_len + body_len;
    if buf.len() < total {
        return Ok(None);
    }
    let seen = SeenRequest {
        method: req.method.unwrap_or_default().to_string(),
        path: req.path.unwrap_or_default().to_string(),
        headers,
        body: buf[head_len..total].to_vec(),
    };
    Ok(Some((seen, total)))
}

/// The response to one request; `head_only` for a HEAD request (no body, same headers).
fn response(b: &Behaviour, announce_close: bool, head_only: bool) -> Vec<u8> {
    let body: Vec<u8> = b"hello world"
        .iter()
        .copied()
        .cycle()
        .take(b.body_len)
        .collect();
    let mut out = format!("HTTP/1.1 {} {}\r\n", b.status, reason(b.status)).into_bytes();
    out.extend_from_slice(b.extra_headers.as_bytes());
    if announce_close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    let framing = match b.framing {
        Framing::ContentLength => format!("Content-Length: {}\r\n\r\n", body.len()),
        Framing::Chunked => {
            "Transfer-Encoding: chunked\r\nTrailer: X-Checksum, X-Other\r\n\r\n".into()
        }
        Framing::CloseDelimited => "Content-Type: text/plain\r\n\r\n".into(),
    };
    out.extend_from_slice(framing.as_bytes());
    if head_only {
        return out;
    }
    match b.framing {
        Framing::ContentLength | Framing::CloseDelimited => out.extend_from_slice(&body),
        Framing::Chunked => {
            // Several chunks even for a small body, at most 1000 bytes each.
            let chunk_len = (body.len() / 3).clamp(1, 1000);
            for (i, chunk) in body.chunks(chunk_len).enumerate() {
                // Every kind of chunk extension: bare name, name=token, name="quoted".
                let ext = match i % 3 {
                    0 => ";flag".to_string(),
                    1 => format!(";n={i}"),
                    _ => ";q=\"a; b\"".to_string(),
                };
                out.extend_from_slice(format!("{:x}{ext}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0;last=1\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n");
        }
    }
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// How many CPUs this process may run on (what blast uses by default).
pub fn allowed_cpu_count() -> usize {
    blast::plan::allowed_cpus().len()
}

// ---------------------------------------------------------------------------------------
// Stalls and concurrency (open-loop tests)
// ---------------------------------------------------------------------------------------

impl Behaviour {
    /// Every `n`-th request received (over all connections) stalls the whole server for
    /// `stall`: every connection's answer waits until the stall is over.
    pub fn stall_every(self, n: u64, stall: Duration) -> Self {
        assert!(n > 0);
        Behaviour {
            stall_every: Some((n, stall)),
            ..self
        }
    }
}

impl TestServer {
    /// The most requests the server was ever working on at once (received, response not
    /// yet being written). Never more than the client had in flight.
    pub fn max_concurrent(&self) -> u64 {
        self.acceptor.settle();
        self.shared.max_busy.load(Ordering::SeqCst)
    }
}

/// One request the server is working on, from when it was read in full until just before
/// its response is written (so that the count can only under-, never over-state what the
/// client has in flight).
struct Busy<'a>(&'a Shared);

impl<'a> Busy<'a> {
    fn begin(shared: &'a Shared) -> Busy<'a> {
        let now = shared.busy.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_busy.fetch_max(now, Ordering::SeqCst);
        Busy(shared)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `Behaviour::stall_every`: start a stall if request `number` is an N-th one, then wait
/// until any stall is over. False if the server stopped meanwhile.
fn wait_out_stall(b: &Behaviour, number: u64, shared: &Shared, stop: &AtomicBool) -> bool {
    let Some((n, stall)) = b.stall_every else {
        return true;
    };
    let until = {
        let mut until = shared.stalled_until.lock().unwrap();
        if number.is_multiple_of(n) {
            let end = Instant::now() + stall;
            *until = Some(until.map_or(end, |u| u.max(end)));
        }
        *until
    };
    match until {
        Some(until) => sleep_unless_stopped(until.saturating_duration_since(Instant::now()), stop),
        None => true,
    }
}

/// Send `sig` to `child` after `after`, then wait for it: its exit code, stdout, stderr and
/// how long it took to exit after the signal.
pub fn signal_after(
    mut child: std::process::Child,
    after: Duration,
    sig: libc::c_int,
) -> (Option<i32>, String, String, Duration) {
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    thread::sleep(after);
    // SAFETY: kill(2) on the pid of a child this test owns and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for blast") {
            break status;
        }
        if signalled.elapsed() > HARD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("blast still running {HARD_TIMEOUT:?} after signal {sig}: killed");
        }
        thread::sleep(Duration::from_millis(2));
    };
    let took = signalled.elapsed();
    (
        status.code(),
        out.join().unwrap(),
        err.join().unwrap(),
        took,
    )
}

/// `blast mock` running as a child process on a free loopback port; killed when dropped.
pub struct Mock {
    child: Child,
    pub port: u16,
}

impl Mock {
    /// `options`: the mock's, separated by spaces.
    pub fn start(options: &str) -> Mock {
        Mock::start_with(&options.split_whitespace().collect::<Vec<_>>())
    }

    /// `args`: the mock's options, one per item (paths may hold spaces).
    pub fn start_with(args: &[&str]) -> Mock {
        for attempt in 0..2 {
            let port = closed_port();
            let listen = format!("127.0.0.1:{port}");
            let mut child = Command::new(env!("CARGO_BIN_EXE_blast"))
                .args(["mock", "--listen", &listen])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cannot spawn blast mock");
            // The mock says "listening on ..." once it is bound and serving. (Probing the
            // port instead could reach whatever else took it after `closed_port`.)
            let lines = stderr_lines(child.stderr.take().expect("piped stderr"));
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut said = String::new();
            loop {
                match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(line) if line.contains("listening on") => return Mock { child, port },
                    Ok(line) => said.push_str(&line),
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        let status = child.wait().expect("wait for blast mock");
                        if attempt == 0 && said.contains("cannot listen") {
                            break; // the port was taken meanwhile: try another
                        }
                        panic!("blast mock exited ({status}) before serving:\n{said}");
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("blast mock did not start on {listen} within 5 s:\n{said}");
                    }
                }
            }
        }
        unreachable!("the second attempt returns or panics");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Mock {
    /// Ctrl-C, and how the mock exited if it did within `limit`.
    pub fn interrupt(&mut self, limit: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        // Ctrl-C first (the mock stops cleanly), then SIGKILL if it lingers.
        if self.interrupt(Duration::from_secs(3)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The lines a child writes to stderr, read (until it exits) by a thread of their own.
fn stderr_lines(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line); // keep draining even once nobody listens
        }
    });
    rx
}
