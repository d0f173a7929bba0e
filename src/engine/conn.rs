//! One connection's loop. It serves every load model: the shard decides when a request
//! may start (`Shard::take_ticket`), this loop sends it, reads the response and records it.
//!
//! Per request it does one write, of the shard's pre-rendered request as it is (several
//! small pipelined ones are gathered into one buffer first), and (usually) one read, into the
//! shard's receive buffer; it touches only shard-local state: no formatting, no
//! allocation, no locks, no atomics.

use std::collections::VecDeque;
use std::io::{self, BufRead, Write};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use super::llm::{BodyTap, LlmTracker};
use super::shard::{Abort, Shard, Ticket};
use crate::http::response::{ParseError, Progress, ResponseHead, ResponseParser, MAX_HEAD};
use crate::rt::{self, Stream};
use crate::stats::{ErrorKind, Metric};
use crate::tls;

/// A connection's own buffer, for what it received but could not parse yet (most often
/// nothing: it is allocated at the first such piece). It grows, up to what a response
/// head may need, only for huge heads.
const READ_BUF: usize = 16 * 1024;

/// Reconnection back-off after a failed connect: doubles from MIN to MAX, so a target
/// that is down costs a few attempts per second per connection instead of a spinning core.
const BACKOFF_MIN: Duration = Duration::from_millis(1);
const BACKOFF_MAX: Duration = Duration::from_millis(200);

/// Older arrival stamps than this are not believed (see `arrival`).
const MAX_STAMP_AGE: Duration = Duration::from_secs(1);

/// Pipelined requests are gathered into one write up to this size; a larger one is written
/// on its own, from the shard's copy, so that a connection's memory does not grow with
/// body size times pipelining depth.
const GATHER_MAX: usize = 64 * 1024;

/// Open loop: how late past the end of the run a request due before it may still be sent.
const LATE_GRACE: Duration = Duration::from_millis(100);

/// A request written (or about to be written) on this connection, awaiting its response.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    ticket: Ticket,
    /// The (latest) write of this request.
    sent: Instant,
    written: bool,
    /// Send lag is recorded once per request.
    lag_recorded: bool,
}

/// The requests in flight on a connection, oldest first. The oldest lives inline, in the
/// connection itself, and only the others (pipelining) in a deque: without pipelining a
/// response then touches no memory beyond the connection's own, which matters at
/// thousands of connections, where a separate allocation is a cache miss per response.
struct Window {
    /// None only when `rest` is empty too.
    head: Option<InFlight>,
    rest: VecDeque<InFlight>,
}

impl Window {
    fn with_capacity(depth: usize) -> Window {
        Window {
            head: None,
            rest: VecDeque::with_capacity(depth.saturating_sub(1)),
        }
    }

    fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.len()
    }

    fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    fn front(&self) -> Option<&InFlight> {
        self.head.as_ref()
    }

    fn push_back(&mut self, f: InFlight) {
        if self.head.is_none() {
            self.head = Some(f);
        } else {
            self.rest.push_back(f);
        }
    }

    fn pop_front(&mut self) -> Option<InFlight> {
        let f = self.head.take()?;
        if !self.rest.is_empty() {
            self.head = self.rest.pop_front();
        }
        Some(f)
    }

    fn get(&self, i: usize) -> Option<&InFlight> {
        match i {
            0 => self.head.as_ref(),
            _ => self.rest.get(i - 1),
        }
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut InFlight> {
        self.head.iter_mut().chain(self.rest.iter_mut())
    }

    fn clear(&mut self) {
        self.head = None;
        self.rest.clear();
    }
}

struct Conn {
    shard: Rc<Shard>,
    idx: usize,
    stream: Option<Stream>,
    /// `https://`: the TLS state of `stream` (boxed: rustls' connection is large, and a
    /// plain connection carries only the empty pointer).
    tls: Option<Box<rustls::ClientConnection>>,
    ever_connected: bool,
    backoff: Duration,
    buf: Vec<u8>,
    /// Unparsed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    parser: ResponseParser,
    window: Window,
    wbuf: Vec<u8>,
    /// When the latest read returned.
    read_at: Instant,
    llm: Option<LlmTracker>,
}

/// How an exchange on the current connection ended, when it did not simply continue.
enum Broken {
    /// Fail every request in the window with this kind.
    Fail(ErrorKind),
    /// The connection ended before any byte of the next response. The requests written on
    /// it fail as `ClosedBeforeResponse`: the server may have acted on them, so they are
    /// never sent again (RFC 9112 section 9.3.1). Those not written yet go on a new one.
    Closed,
    /// The run was interrupted: the window is cut off, not failed.
    CutOff,
}

pub(crate) async fn run(shard: Rc<Shard>, idx: usize) {
    let depth = shard.setup.pipeline;
    let mut c = Conn::new(shard, idx);
    loop {
        c.fill_window(depth).await;
        if c.window.is_empty() {
            break;
        }
        // The shard cancels the exchange when a request times out or the run stops.
        let shard = c.shard.clone();
        let exchanged = shard.watches[idx].cancel.guard(c.exchange()).await;
        if let Err(broken) = exchanged.unwrap_or_else(|why| Err(aborted(why))) {
            c.handle(broken).await;
        }
    }
    c.close();
}

impl Conn {
    fn new(shard: Rc<Shard>, idx: usize) -> Conn {
        let setup = &shard.setup;
        let mut parser = ResponseParser::new();
        // The parser must know about HEAD before the first response, not only after a reset.
        parser.reset(setup.head);
        Conn {
            idx,
            stream: None,
            tls: None,
            ever_connected: false,
            backoff: BACKOFF_MIN,
            buf: Vec::new(),
            start: 0,
            end: 0,
            parser,
            window: Window::with_capacity(setup.pipeline),
            wbuf: Vec::new(),
            read_at: Instant::now(),
            llm: setup.llm.map(LlmTracker::new),
            shard,
        }
    }

    /// Connect if need be, write what is not on the wire yet, read at least one response.
    async fn exchange(&mut self) -> Result<(), Broken> {
        // A keep-alive connection the server closed while it had nothing of ours (its idle
        // timeout): seen already, so the next request goes on a new connection instead of
        // failing on this one.
        let idle = self.window.iter_mut().all(|f| !f.written);
        if idle && self.stream.as_ref().is_some_and(Stream::peer_closed) {
            self.close();
        }
        // Bytes that came while nothing of ours was in flight (a server that answers twice,
        // late, or speaks first) answer no request: the connection is out of step.
        if idle && self.unsolicited_input() {
            self.shard.counters.borrow_mut().unsolicited += 1;
            self.close();
        }
        if self.stream.is_none() {
            self.connect().await?;
        }
        if let Err(broken) = self.write().await {
            return Err(self.early_response(broken));
        }
        self.read().await
    }

    /// Whether the idle connection holds bytes other than blank lines (read and dropped).
    fn unsolicited_input(&mut self) -> bool {
        let Some(stream) = self.stream.as_ref().filter(|s| s.may_have_input()) else {
            return false;
        };
        let shard = self.shard.clone();
        let mut rbuf = shard.rbuf.borrow_mut();
        match stream.try_read(&mut rbuf[..]) {
            Some(Ok(n)) if n > 0 => {
                shard.counters.borrow_mut().bytes_read += n as u64;
                !rbuf[..n].iter().all(|b| matches!(b, b'\r' | b'\n'))
            }
            // The end, or an error: the write or read that follows finds it.
            _ => false,
        }
    }

    /// A write failed: a server may have answered before reading the whole request (a 413
    /// for a body too large, then a reset). Whatever response it sent is read and counted;
    /// `broken` stands for the rest.
    fn early_response(&mut self, broken: Broken) -> Broken {
        if self.stream.is_none() || self.start < self.end {
            return broken;
        }
        let parsed = match self.tls.take() {
            None => self.early_plain(),
            Some(mut conn) => {
                let parsed = self.early_tls(&mut conn);
                self.tls = Some(conn);
                parsed
            }
        };
        match parsed {
            // Nothing came.
            None => broken,
            // The rest of the window was written, and will not be answered.
            Some(Ok(true)) => Broken::Closed,
            // Part of a response came: it did begin (its status is still counted).
            Some(Ok(false)) if self.parser.in_progress() => match broken {
                Broken::Closed => Broken::Fail(ErrorKind::Closed),
                other => other,
            },
            Some(Ok(false)) => broken,
            Some(Err(parse_failure)) => parse_failure,
        }
    }

    /// What `early_response` finds on a plain connection: None when nothing came, else
    /// whether a response was completed.
    fn early_plain(&mut self) -> Option<Result<bool, Broken>> {
        let stream = self.stream.as_ref()?;
        let shard = self.shard.clone();
        let mut rbuf = shard.rbuf.borrow_mut();
        let n = match stream.try_read(&mut rbuf[..]) {
            Some(Ok(n)) if n > 0 => n,
            _ => return None,
        };
        self.read_at = self.clock();
        self.shard.counters.borrow_mut().bytes_read += n as u64;
        Some(self.parse(&rbuf[..n]).map(|(_, completed)| completed))
    }

    /// `early_plain` over TLS: the records the socket holds, decrypted and parsed, without
    /// waiting for more.
    fn early_tls(&mut self, conn: &mut rustls::ClientConnection) -> Option<Result<bool, Broken>> {
        let mut read = 0;
        loop {
            let stream = self.stream.as_ref()?;
            let n = match tls::read_now(conn, stream) {
                Ok(n) if n > 0 => n,
                _ => break,
            };
            read += n;
            self.read_at = self.clock();
            self.shard.counters.borrow_mut().bytes_read += n as u64;
            if conn.process_new_packets().is_err() {
                break;
            }
            match self.parse_plaintext(conn) {
                Ok(false) => {}
                done => return Some(done),
            }
        }
        (read > 0).then_some(Ok(false))
    }

    /// Read the clock. Every event a connection records is timed by a reading taken here,
    /// and taking one first closes the intervals that ended before it, so an event never
    /// lands in an interval that was already over (the ticker may run later than it).
    fn clock(&self) -> Instant {
        let now = Instant::now();
        self.shard.roll(now);
        now
    }

    fn watch(&self) -> &super::shard::Watch {
        &self.shard.watches[self.idx]
    }

    /// Take requests to send, up to `depth` in flight. With nothing in flight this waits for
    /// the next one (its send time, a permit under `--max-in-flight`); with requests already
    /// in flight it takes only those that are due, so that responses keep being read.
    async fn fill_window(&mut self, depth: usize) {
        // Closed loop, pipelined: top the window up only once half of it has been answered,
        // so that one write carries many requests (as wrk's and h2load's pipelining do)
        // instead of one write per read. An open loop sends each request when it is due.
        if self.shard.is_closed_loop() && !self.window.is_empty() && self.window.len() > depth / 2 {
            return;
        }
        while self.window.len() < depth {
            // One clock read per request here, and again only after an actual wait.
            let mut now = self.clock();
            let Some(ticket) = self.shard.take_ticket(now, !self.window.is_empty()) else {
                return;
            };
            if let Some(at) = ticket.intended.filter(|at| *at > now) {
                self.sleep_until(at).await;
                now = self.clock();
            }
            if self.shard.stopping.get() {
                return;
            }
            if self.too_late(ticket, now) {
                continue;
            }
            if self.shard.has_cap() {
                if !self.shard.admit().await {
                    return;
                }
                now = self.clock();
                if self.too_late(ticket, now) {
                    self.shard.release(1);
                    continue;
                }
            }
            self.shard.counters.borrow_mut().sent += 1;
            self.window.push_back(InFlight {
                ticket,
                sent: now,
                written: false,
                lag_recorded: false,
            });
        }
    }

    /// Sending stops at the end of the run. A request due before the end that comes out a
    /// little late still goes (a wake-up a millisecond late must not drop the last send of
    /// an exact schedule); one that is far behind (blast or its connections fell behind)
    /// is counted as missed, so that the backlog shows in the report.
    fn too_late(&self, ticket: Ticket, now: Instant) -> bool {
        if self.shard.end.is_none_or(|end| now < end) {
            return false;
        }
        match ticket.intended {
            Some(at) if now.saturating_duration_since(at) <= LATE_GRACE => false,
            Some(_) => {
                self.shard.miss(now - LATE_GRACE);
                true
            }
            None => true,
        }
    }

    async fn connect(&mut self) -> Result<(), Broken> {
        let addrs = &self.shard.setup.addrs;
        let first = self.shard.preferred_addr.get();
        let mut failure = None;
        for k in 0..addrs.len() {
            let i = (first + k) % addrs.len();
            let began = self.clock();
            let connected = Stream::connect(addrs[i], self.shard.setup.connect_timeout).await;
            let stream = match connected {
                Ok(stream) => Some(stream),
                Err(e) => {
                    failure = Some(e);
                    None
                }
            };
            if let Some(stream) = stream {
                if self.shard.stamps {
                    // Without stamps, reads are timed when they happen: still counted.
                    let _ = stream.stamp_arrivals();
                }
                self.shard.preferred_addr.set(i);
                let connected_at = self.clock();
                self.shard
                    .hists
                    .borrow_mut()
                    .record(Metric::Connect, connected_at - began);
                {
                    let mut counters = self.shard.counters.borrow_mut();
                    counters.conns_opened += 1;
                    if self.ever_connected {
                        counters.reconnects += 1;
                    }
                }
                self.ever_connected = true;
                if self.shard.tls.is_some() {
                    self.tls = Some(self.handshake(&stream).await?);
                }
                self.backoff = BACKOFF_MIN;
                self.stream = Some(stream);
                return Ok(());
            }
        }
        if let Some(e) = failure {
            self.shard
                .counters
                .borrow_mut()
                .record_error_message(ErrorKind::Connect, &e);
        }
        Err(Broken::Fail(ErrorKind::Connect))
    }

    /// `https://`: the TLS handshake on a new connection, within `--connect-timeout`.
    async fn handshake(&self, stream: &Stream) -> Result<Box<rustls::ClientConnection>, Broken> {
        let (config, name) = self.shard.tls.as_ref().expect("an https:// target");
        let began = self.clock();
        let fail = |why: &dyn std::fmt::Display| {
            self.shard
                .counters
                .borrow_mut()
                .record_error_message(ErrorKind::Tls, why);
            Broken::Fail(ErrorKind::Tls)
        };
        let mut conn = match rustls::ClientConnection::new(config.clone(), name.clone()) {
            Ok(c) => Box::new(c),
            Err(e) => return Err(fail(&tls::Failure::Tls(e))),
        };
        // Requests are written whole and flushed at once (see `send`).
        conn.set_buffer_limit(None);
        let timeout = self.shard.setup.connect_timeout;
        let done = futures_lite::future::or(
            async { Some(tls::handshake(&mut conn, stream).await) },
            async {
                rt::sleep(timeout).await;
                None
            },
        )
        .await;
        let (sent, received) = match done {
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => return Err(fail(&e)),
            None => {
                return Err(fail(&format_args!(
                    "no TLS handshake within --connect-timeout {} (does the port speak TLS?)",
                    humantime::format_duration(timeout)
                )))
            }
        };
        let now = self.clock();
        self.shard
            .hists
            .borrow_mut()
            .record(Metric::TlsHandshake, now - began);
        let mut counters = self.shard.counters.borrow_mut();
        counters.tls_handshakes += 1;
        counters.bytes_written += sent as u64;
        counters.bytes_read += received as u64;
        if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            counters.tls_resumed += 1;
        }
        if let Some(i) = conn.negotiated_cipher_suite().and_then(tls::suite_index) {
            counters.tls_suites[i] += 1;
        }
        Ok(conn)
    }

    /// Write every request of the window that is not on the wire yet. A lone request (no
    /// pipelining) goes straight from the shard's pre-rendered bytes, which every connection
    /// shares; several are gathered in `wbuf` into one write, up to `GATHER_MAX`, and a
    /// larger one is written on its own, uncopied, so that `wbuf` never holds big bodies.
    async fn write(&mut self) -> Result<(), Broken> {
        let now = self.clock();
        let mut unwritten = 0;
        {
            let mut hists = self.shard.hists.borrow_mut();
            for f in self.window.iter_mut().filter(|f| !f.written) {
                unwritten += 1;
                f.written = true;
                f.sent = now;
                if let (Some(at), false) = (f.ticket.intended, f.lag_recorded) {
                    hists.record(Metric::SendLag, now.saturating_duration_since(at));
                    f.lag_recorded = true;
                }
            }
        }
        if unwritten == 0 {
            return Ok(());
        }
        if self.watch().deadline.get().is_none() {
            self.watch()
                .deadline
                .set(Some(now + self.shard.setup.timeout));
        }
        // Written requests are the front of the window: the new ones are its tail.
        let shard = self.shard.clone();
        let mut wbuf = std::mem::take(&mut self.wbuf);
        wbuf.clear();
        // The run to write next: one request, uncopied, or several gathered in `wbuf`.
        let mut lone: Option<&[u8]> = None;
        let len = self.window.len();
        for i in len - unwritten..len {
            let ticket = self.window.get(i).expect("within the window").ticket;
            let bytes = shard.request(ticket);
            let run = lone.map_or(wbuf.len(), <[u8]>::len);
            if run > 0 && run + bytes.len() > GATHER_MAX {
                let sent = self.send(lone.take().unwrap_or(&wbuf[..])).await;
                wbuf.clear();
                if sent.is_err() {
                    self.wbuf = wbuf;
                    return sent;
                }
            }
            match lone.take() {
                None if wbuf.is_empty() => lone = Some(bytes),
                Some(prev) => {
                    wbuf.extend_from_slice(prev);
                    wbuf.extend_from_slice(bytes);
                }
                None => wbuf.extend_from_slice(bytes),
            }
        }
        let sent = self.send(lone.unwrap_or(&wbuf[..])).await;
        self.wbuf = wbuf;
        sent
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        let stream = self.stream.as_mut().expect("connected before writing");
        // Bytes on the wire: with TLS, the records (and what was left of the handshake).
        let written = match self.tls.as_mut() {
            None => stream.write_all(bytes).await.map(|()| bytes.len()),
            // Encrypted into rustls' buffer (no limit: see `handshake`), then sent.
            Some(conn) => match conn.writer().write_all(bytes) {
                Ok(()) => tls::flush(conn, stream).await,
                Err(e) => Err(e),
            },
        };
        match written {
            Ok(n) => {
                self.shard.counters.borrow_mut().bytes_written += n as u64;
                Ok(())
            }
            Err(e) => Err(self.io_failure(ErrorKind::Write, &e)),
        }
    }

    /// Read until at least one response is complete. What arrives is read into the shard's
    /// buffer and parsed there; only a piece that cannot be parsed yet (a head cut in two)
    /// is kept in the connection's own buffer, and what follows it is read after it.
    async fn read(&mut self) -> Result<(), Broken> {
        if self.shard.tls.is_some() {
            return self.read_tls().await;
        }
        loop {
            if self.start < self.end {
                let buf = std::mem::take(&mut self.buf);
                let parsed = self.parse(&buf[self.start..self.end]);
                self.buf = buf;
                let (consumed, completed) = parsed?;
                self.start += consumed;
                if completed {
                    self.compact();
                    return Ok(());
                }
            }
            let kept = self.start < self.end;
            if kept {
                self.make_room()?;
            }
            let stream = self.stream.as_ref().expect("connected before reading");
            stream.readable().await;
            let shard = self.shard.clone();
            let mut rbuf = shard.rbuf.borrow_mut();
            let data = if kept {
                &mut self.buf[self.end..]
            } else {
                &mut rbuf[..]
            };
            let mut arrived = None;
            let got = if self.shard.stamps {
                stream.try_read_stamped(data, &mut arrived)
            } else {
                stream.try_read(data)
            };
            let n = match got {
                None => continue,
                Some(Ok(0)) => return Err(self.eof()),
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(self.io_failure(ErrorKind::Read, &e)),
            };
            // One clock read per read: every response and token event it completes is
            // timed by it, or by when the kernel says the bytes arrived, when the shard
            // reads late on purpose (see `rt::batch`).
            let now = self.clock();
            self.read_at = arrived.map_or(now, |at| arrival(now, at));
            self.shard.counters.borrow_mut().bytes_read += n as u64;
            if kept {
                self.end += n;
                continue;
            }
            let (consumed, completed) = self.parse(&rbuf[..n])?;
            self.keep(&rbuf[consumed..n]);
            if completed {
                return Ok(());
            }
        }
    }

    /// `read` over TLS: rustls reads the socket into its own buffer and decrypts there, and
    /// the plaintext is parsed where it lies (only a head cut in two is copied, as above).
    async fn read_tls(&mut self) -> Result<(), Broken> {
        let mut conn = self.tls.take().expect("a TLS connection before reading");
        let read = self.read_tls_with(&mut conn).await;
        self.tls = Some(conn);
        read
    }

    async fn read_tls_with(&mut self, conn: &mut rustls::ClientConnection) -> Result<(), Broken> {
        loop {
            if self.parse_plaintext(conn)? {
                return Ok(());
            }
            let stream = self.stream.as_ref().expect("connected before reading");
            let mut arrived = None;
            let stamps = self.shard.stamps.then_some(&mut arrived);
            let n = match tls::read_some_stamped(conn, stream, stamps).await {
                Ok(n) => n,
                Err(e) => return Err(self.io_failure(ErrorKind::Read, &e)),
            };
            let now = self.clock();
            self.read_at = arrived.map_or(now, |at| arrival(now, at));
            self.shard.counters.borrow_mut().bytes_read += n as u64;
            if let Err(e) = conn.process_new_packets() {
                self.shard
                    .counters
                    .borrow_mut()
                    .record_error_message(ErrorKind::Tls, &tls::Failure::Tls(e));
                let _ = tls::flush(conn, stream).await;
                return Err(Broken::Fail(ErrorKind::Tls));
            }
        }
    }

    /// Parse what rustls has decrypted already, one record's plaintext at a time: whether a
    /// response was completed (false: nothing more to parse yet).
    fn parse_plaintext(&mut self, conn: &mut rustls::ClientConnection) -> Result<bool, Broken> {
        loop {
            let chunk = match conn.reader().into_first_chunk() {
                // The server's close_notify.
                Ok([]) => return Err(self.eof()),
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                // The end of the stream without a close_notify.
                Err(_) => return Err(self.eof()),
            };
            let n = chunk.len();
            let completed = if self.start < self.end {
                self.append(chunk)?;
                let buf = std::mem::take(&mut self.buf);
                let parsed = self.parse(&buf[self.start..self.end]);
                self.buf = buf;
                let (consumed, completed) = parsed?;
                self.start += consumed;
                self.compact();
                completed
            } else {
                let (consumed, completed) = self.parse(chunk)?;
                self.keep(&chunk[consumed..]);
                completed
            };
            conn.reader().consume(n);
            if completed {
                return Ok(true);
            }
        }
    }

    /// Add `more` after the bytes kept (a head cut in two) in the connection's buffer.
    fn append(&mut self, more: &[u8]) -> Result<(), Broken> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end > MAX_HEAD {
            self.shard
                .counters
                .borrow_mut()
                .record_error_message(ErrorKind::Parse, &ParseError::HeadTooLarge);
            return Err(Broken::Fail(ErrorKind::Parse));
        }
        let need = self.end + more.len();
        if self.buf.len() < need {
            self.buf.resize(need.max(READ_BUF), 0);
        }
        self.buf[self.end..need].copy_from_slice(more);
        self.end = need;
        Ok(())
    }

    /// Feed `data` to the parser, completing responses while requests are in flight.
    /// Returns how much of it was used and whether a response was completed.
    fn parse(&mut self, data: &[u8]) -> Result<(usize, bool), Broken> {
        let mut pos = 0;
        let mut completed = false;
        while let Some(front) = self.window.front() {
            if pos == data.len() {
                break;
            }
            let mut tap = BodyTap {
                llm: self.llm.as_mut(),
                hists: &self.shard.hists,
                base: front.ticket.intended.unwrap_or(front.sent),
                now: self.read_at,
            };
            match self.parser.feed(&data[pos..], &mut tap) {
                Ok(Progress::Partial { consumed }) => {
                    pos += consumed;
                    break;
                }
                Ok(Progress::Complete { consumed, head }) => {
                    pos += consumed;
                    // Bytes after the response to the last request in flight answer no
                    // request (a server that answers twice, or spoke first): the exchange
                    // is out of step, and this response may not be this request's either.
                    if self.window.len() == 1
                        && !data[pos..].iter().all(|b| matches!(b, b'\r' | b'\n'))
                    {
                        return Err(Broken::Fail(ErrorKind::Parse));
                    }
                    completed = true;
                    if !self.complete(head) {
                        return Err(Broken::Closed);
                    }
                }
                // A TLS record where a response should begin: a TLS port, asked in plain
                // HTTP (its alert, or a handshake).
                Err(_) if self.shard.tls.is_none() && tls::looks_like_tls(&data[pos..]) => {
                    self.shard.counters.borrow_mut().record_error_message(
                        ErrorKind::Tls,
                        &"the server answered with TLS: the port speaks TLS, use https://",
                    );
                    return Err(Broken::Fail(ErrorKind::Tls));
                }
                Err(e) => {
                    self.shard
                        .counters
                        .borrow_mut()
                        .record_error_message(ErrorKind::Parse, &e);
                    return Err(Broken::Fail(ErrorKind::Parse));
                }
            }
        }
        Ok((pos, completed))
    }

    /// Keep `rest`, received but not parsed yet, in the connection's own buffer (empty
    /// before this).
    fn keep(&mut self, rest: &[u8]) {
        if rest.is_empty() {
            return;
        }
        if self.buf.len() < rest.len() {
            self.buf.resize(rest.len().max(READ_BUF), 0);
        }
        self.buf[..rest.len()].copy_from_slice(rest);
        self.start = 0;
        self.end = rest.len();
    }

    /// Record the response to the oldest request. Returns false when the server will close
    /// the connection after it.
    fn complete(&mut self, head: ResponseHead) -> bool {
        let f = self
            .window
            .pop_front()
            .expect("a response answers a request in flight");
        let now = self.read_at;
        self.shard.release(1);
        {
            let mut counters = self.shard.counters.borrow_mut();
            let mut hists = self.shard.hists.borrow_mut();
            let verdict = match &mut self.llm {
                Some(llm) => llm.finish(now, &mut counters, &mut hists),
                None => Ok(()),
            };
            match verdict {
                Ok(()) => {
                    counters.record_status(head.status);
                    hists.record(Metric::Latency, now - f.ticket.intended.unwrap_or(f.sent));
                    hists.record(Metric::LatencyUncorrected, now - f.sent);
                }
                // The server answered, but the stream inside failed: a failed request.
                Err(kind) => {
                    counters.count_status(head.status);
                    counters.record_error(kind, 1);
                }
            }
        }
        self.parser.reset(self.shard.setup.head);
        let next_deadline = self
            .window
            .front()
            .map(|f| f.sent + self.shard.setup.timeout);
        self.watch().deadline.set(next_deadline);
        // A `Connection: close` request header: one request per connection, whatever the
        // server says.
        head.keep_alive && !self.shard.setup.close_each
    }

    /// The peer closed the connection: maybe that ends a close-delimited body; maybe no
    /// byte of the next response had come (a keep-alive connection the server let go of).
    fn eof(&mut self) -> Broken {
        self.read_at = self.clock();
        match self.parser.on_eof(&mut ()) {
            Ok(Some(head)) => {
                self.complete(head);
                Broken::Closed
            }
            Ok(None) => Broken::Closed,
            Err(_) => Broken::Fail(ErrorKind::Closed),
        }
    }

    /// A reset before any byte of the response is a close before it; otherwise `kind`.
    fn io_failure(&self, kind: ErrorKind, e: &io::Error) -> Broken {
        let nothing_yet = !self.parser.in_progress() && self.start == self.end;
        let reset = matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        );
        if reset && nothing_yet {
            return Broken::Closed;
        }
        self.shard
            .counters
            .borrow_mut()
            .record_error_message(kind, e);
        Broken::Fail(kind)
    }

    async fn handle(&mut self, broken: Broken) {
        // The failure is counted now: in the interval it happened in.
        self.clock();
        if let (Broken::Fail(_), Some(head)) = (&broken, self.parser.unfinished_head()) {
            // The oldest request fails after its head arrived: its status and the tokens
            // that came are still reported.
            let mut counters = self.shard.counters.borrow_mut();
            counters.count_status(head.status);
            if let Some(llm) = &mut self.llm {
                llm.abandon(&mut counters);
            }
        }
        if let Broken::Closed = broken {
            // Written requests are the front of the window (they go out in order).
            let mut n = 0;
            while self.window.front().is_some_and(|f| f.written) {
                self.window.pop_front();
                n += 1;
            }
            if n > 0 {
                let mut counters = self.shard.counters.borrow_mut();
                counters.record_error(ErrorKind::ClosedBeforeResponse, n);
                drop(counters);
                self.shard.release(n);
            }
        }
        self.close();
        match broken {
            Broken::Closed => {}
            Broken::CutOff => {
                let n = self.window.len() as u64;
                self.shard.counters.borrow_mut().cut_off += n;
                self.shard.release(n);
                self.window.clear();
            }
            Broken::Fail(kind) => {
                let n = self.window.len() as u64;
                self.window.clear();
                self.shard.counters.borrow_mut().record_error(kind, n);
                self.shard.release(n);
                if matches!(kind, ErrorKind::Connect | ErrorKind::Tls) {
                    let nap = self.backoff;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    let mut wake = Instant::now() + nap;
                    if let Some(end) = self.shard.end {
                        wake = wake.min(end);
                    }
                    self.sleep_until(wake).await;
                }
            }
        }
    }

    /// Drop the connection and everything buffered for it.
    fn close(&mut self) {
        self.watch().deadline.set(None);
        self.watch().cancel.reset();
        self.stream = None;
        self.tls = None;
        self.start = 0;
        self.end = 0;
        self.parser.reset(self.shard.setup.head);
        for f in self.window.iter_mut() {
            f.written = false;
        }
    }

    fn compact(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Ensure there is free space after `end`: move unparsed bytes to the front, or grow
    /// the buffer while a response head is still incomplete.
    fn make_room(&mut self) -> Result<(), Broken> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end < self.buf.len() {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return Ok(());
        }
        if self.buf.len() > MAX_HEAD {
            self.shard
                .counters
                .borrow_mut()
                .record_error_message(ErrorKind::Parse, &ParseError::HeadTooLarge);
            return Err(Broken::Fail(ErrorKind::Parse));
        }
        self.buf.resize((self.buf.len() * 2).max(READ_BUF), 0);
        Ok(())
    }

    /// Sleep until `at`, or until the run is interrupted.
    async fn sleep_until(&self, at: Instant) {
        let _ = self.watch().cancel.guard(rt::sleep_until(at)).await;
    }
}

/// `now` less the age of a kernel arrival stamp (wall clock): when the bytes arrived, on
/// the clock every other event is timed by. A stamp that makes no sense (from the future,
/// or older than a wall-clock step would explain) gives `now`.
fn arrival(now: Instant, stamp: SystemTime) -> Instant {
    SystemTime::now()
        .duration_since(stamp)
        .ok()
        .filter(|age| *age < MAX_STAMP_AGE)
        .and_then(|age| now.checked_sub(age))
        .unwrap_or(now)
}

fn aborted(why: Abort) -> Broken {
    match why {
        Abort::Timeout => Broken::Fail(ErrorKind::Timeout),
        Abort::Stop => Broken::CutOff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(template: u32) -> InFlight {
        InFlight {
            ticket: Ticket {
                template,
                intended: None,
            },
            sent: Instant::now(),
            written: false,
            lag_recorded: false,
        }
    }

    fn templates(w: &mut Window) -> Vec<u32> {
        w.iter_mut().map(|f| f.ticket.template).collect()
    }

    #[test]
    fn window_is_first_in_first_out_across_head_and_rest() {
        let mut w = Window::with_capacity(4);
        assert!(w.is_empty() && w.front().is_none() && w.pop_front().is_none());
        for t in 0..4 {
            w.push_back(req(t));
        }
        assert_eq!((w.len(), templates(&mut w)), (4, vec![0, 1, 2, 3]));
        assert_eq!(w.pop_front().map(|f| f.ticket.template), Some(0));
        assert_eq!(w.front().map(|f| f.ticket.template), Some(1));
        // Refilled while some are in flight: the order holds.
        w.push_back(req(4));
        assert_eq!(templates(&mut w), vec![1, 2, 3, 4]);
        let mut popped = Vec::new();
        while let Some(f) = w.pop_front() {
            popped.push(f.ticket.template);
            assert!(
                w.head.is_some() || w.rest.is_empty(),
                "the head empties last"
            );
        }
        assert_eq!(popped, vec![1, 2, 3, 4]);
        assert_eq!((w.is_empty(), w.len()), (true, 0));
    }

    #[test]
    fn window_of_one_never_uses_the_deque() {
        let mut w = Window::with_capacity(1);
        for t in 0..3 {
            w.push_back(req(t));
            assert_eq!(w.len(), 1);
            assert!(w.rest.is_empty());
            assert_eq!(w.pop_front().map(|f| f.ticket.template), Some(t));
        }
        assert_eq!(w.rest.capacity(), 0);
    }

    #[test]
    fn window_marks_and_clears_every_request() {
        let mut w = Window::with_capacity(3);
        for t in 0..3 {
            w.push_back(req(t));
        }
        for f in w.iter_mut() {
            f.written = true;
        }
        assert!(w.iter_mut().all(|f| f.written));
        w.clear();
        assert_eq!(
            (w.is_empty(), w.len(), templates(&mut w)),
            (true, 0, vec![])
        );
        w.push_back(req(9));
        assert_eq!(templates(&mut w), vec![9]);
    }
}
