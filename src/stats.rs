//! What a shard measures, and how measurements from many shards and intervals merge.
//!
//! A shard owns one `Stats` and updates it with plain stores: nothing here is shared or
//! atomic. Every interval the shard sends a `Snapshot` (its cumulative counters and the
//! histograms of that interval, then cleared) to the aggregator, so memory never grows
//! with the number of requests.

use std::ops::AddAssign;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds between 1 us and one hour, to 3 significant
/// digits; identical bounds everywhere make `Histogram::add` infallible.
pub const HIST_LOW: u64 = 1;
pub const HIST_HIGH: u64 = 3_600_000_000;
pub const HIST_SIGFIG: u8 = 3;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(HIST_LOW, HIST_HIGH, HIST_SIGFIG).expect("constant bounds are valid")
}

/// Why a request ended without a complete response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The connection could not be established (refused, unreachable, connect timeout).
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// Reading failed (e.g. connection reset).
    Read,
    /// Writing the request failed.
    Write,
    /// The response was not valid HTTP/1.1.
    Parse,
    /// The server closed the connection before the response was complete.
    Closed,
    /// The connection closed (or was reset) after the request was written and before any
    /// byte of its response: the request is not sent again, since the server may have
    /// acted on it.
    ClosedBeforeResponse,
    /// LLM: a 2xx response whose stream carried an error object (or malformed events).
    Stream,
    /// LLM: the body ended before the stream's end (`done`, `[DONE]` or a finish reason).
    Truncated,
    /// TLS failed: the handshake (certificate, alert, a port that does not speak TLS) or a
    /// record after it; or a plain `http://` request got a TLS answer.
    Tls,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Read,
        ErrorKind::Write,
        ErrorKind::Parse,
        ErrorKind::Closed,
        ErrorKind::ClosedBeforeResponse,
        ErrorKind::Stream,
        ErrorKind::Truncated,
        ErrorKind::Tls,
    ];
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Read => "read",
            ErrorKind::Write => "write",
            ErrorKind::Parse => "parse",
            ErrorKind::Closed => "closed",
            ErrorKind::ClosedBeforeResponse => "closed_before_response",
            ErrorKind::Stream => "stream",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Tls => "tls",
        }
    }
}

/// The distributions blast keeps. Only those a run needs are allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// End to end, from the intended send time (open loop) or the write (closed loop).
    Latency,
    /// Open loop only: from the actual write (service time, not corrected).
    LatencyUncorrected,
    /// Open loop only: how late the write was against its intended time.
    SendLag,
    /// LLM: until the response head (time to first byte).
    Ttfb,
    /// LLM: until the first event with generated text (time to first token).
    Ttft,
    /// LLM: gaps between consecutive token events, pooled over all responses.
    Itl,
    /// LLM: (end to end - TTFT) / (tokens - 1), one value per response.
    Tpot,
    /// Ollama's own figures, from the final object.
    ServerLoad,
    ServerPromptEval,
    ServerEval,
    /// Ollama: total - load - prompt eval - eval, the time spent waiting in its queue.
    ServerQueue,
    /// TCP connect, from the socket's creation to the connection being established.
    Connect,
    /// `https://`: the TLS handshake, after the connect.
    TlsHandshake,
}

impl Metric {
    pub const COUNT: usize = 13;
    pub const ALL: [Metric; Metric::COUNT] = [
        Metric::Latency,
        Metric::LatencyUncorrected,
        Metric::SendLag,
        Metric::Ttfb,
        Metric::Ttft,
        Metric::Itl,
        Metric::Tpot,
        Metric::ServerLoad,
        Metric::ServerPromptEval,
        Metric::ServerEval,
        Metric::ServerQueue,
        Metric::Connect,
        Metric::TlsHandshake,
    ];
    /// Which runs keep this distribution.
    pub fn group(self) -> MetricGroup {
        match self {
            Metric::Latency => MetricGroup::Every,
            Metric::Connect => MetricGroup::Connects,
            Metric::TlsHandshake => MetricGroup::Tls,
            Metric::LatencyUncorrected | Metric::SendLag => MetricGroup::OpenLoop,
            _ => MetricGroup::Llm,
        }
    }

    /// The key in the result document.
    pub fn key(self) -> &'static str {
        match self {
            Metric::Latency => "latency_us",
            Metric::LatencyUncorrected => "latency_uncorrected_us",
            Metric::SendLag => "send_lag_us",
            Metric::Ttfb => "ttfb_us",
            Metric::Ttft => "ttft_us",
            Metric::Itl => "itl_us",
            Metric::Tpot => "tpot_us",
            Metric::ServerLoad => "server_load_us",
            Metric::ServerPromptEval => "server_prompt_eval_us",
            Metric::ServerEval => "server_eval_us",
            Metric::ServerQueue => "server_queue_us",
            Metric::Connect => "connect_us",
            Metric::TlsHandshake => "tls_handshake_us",
        }
    }
}

/// Runs that keep a distribution: every run, open-loop runs, runs of an LLM API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricGroup {
    Every,
    OpenLoop,
    Llm,
    /// `https://` runs.
    Tls,
    /// Runs where connecting is part of what is measured: `https://`, or a `Connection:
    /// close` header (a plain keep-alive run connects once per connection and keeps the
    /// histogram's memory).
    Connects,
}

/// One histogram per enabled metric.
#[derive(Clone, Debug)]
pub struct Hists {
    slots: [Option<Histogram<u64>>; Metric::COUNT],
}

impl Hists {
    pub fn new(enabled: &[Metric]) -> Hists {
        let mut slots: [Option<Histogram<u64>>; Metric::COUNT] = Default::default();
        for m in enabled {
            slots[*m as usize] = Some(new_histogram());
        }
        Hists { slots }
    }

    #[inline]
    pub fn record(&mut self, m: Metric, value: Duration) {
        if let Some(h) = &mut self.slots[m as usize] {
            h.saturating_record((value.as_micros() as u64).max(HIST_LOW));
        }
    }

    pub fn get(&self, m: Metric) -> Option<&Histogram<u64>> {
        self.slots[m as usize].as_ref()
    }

    pub fn enabled(&self) -> impl Iterator<Item = (Metric, &Histogram<u64>)> {
        Metric::ALL
            .into_iter()
            .filter_map(|m| self.get(m).map(|h| (m, h)))
    }

    pub fn reset(&mut self) {
        for h in self.slots.iter_mut().flatten() {
            h.reset();
        }
    }
}

impl AddAssign<&Hists> for Hists {
    fn add_assign(&mut self, other: &Hists) {
        for (mine, theirs) in self.slots.iter_mut().zip(&other.slots) {
            match (mine, theirs) {
                (Some(a), Some(b)) => a.add(b).expect("identical bounds"),
                (slot @ None, Some(b)) => *slot = Some(b.clone()),
                _ => {}
            }
        }
    }
}

/// Monotonic counters of one shard (or, summed, of the run).
#[derive(Clone, Debug, PartialEq)]
pub struct Counters {
    /// Requests started: each ends as completed, failed, or cut off.
    pub sent: u64,
    /// Full responses received, whatever the status.
    pub completed: u64,
    /// Completed with a 2xx status.
    pub ok: u64,
    /// Ended without a complete, valid response (see `errors`).
    pub failed: u64,
    /// Still in flight when the run was cut short (Ctrl-C).
    pub cut_off: u64,
    /// Open loop: due before the end of the run but not sent by then (not in `sent`).
    pub missed: u64,
    pub errors: [u64; ErrorKind::ALL.len()],
    /// Response heads by status code (index = code, 0..=999).
    pub status: Vec<u64>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub conns_opened: u64,
    /// Connections opened again after the server closed one.
    pub reconnects: u64,
    /// Connections closed because the server sent bytes while none of our requests was in
    /// flight (they answer nothing of ours).
    pub unsolicited: u64,
    /// `https://`: handshakes completed, and those of them that resumed a session.
    pub tls_handshakes: u64,
    pub tls_resumed: u64,
    /// `https://`: handshakes by the cipher suite negotiated (index into `tls::SUITES`).
    pub tls_suites: [u64; crate::tls::SUITE_COUNT],
    /// LLM: generated tokens (the server's count when it gives one, else token events).
    pub tokens: u64,
    /// LLM: responses whose token count came from the server, and from counting events.
    pub tokens_by_server: u64,
    pub tokens_by_events: u64,
    /// LLM: prompt tokens, as the server counted them.
    pub prompt_tokens: u64,
    /// Ollama: sum of eval_count over responses that gave eval_duration, and of eval_duration.
    pub server_eval_tokens: u64,
    pub server_eval_ns: u64,
    /// LLM: finish reasons: stop, length, other.
    pub done_reasons: [u64; 3],
    /// LLM: responses that met every `--slo`.
    pub good: u64,
    /// LLM, streaming: responses with enough token events to tell how they arrived, and
    /// those of them that arrived in one piece (a buffering proxy).
    pub timed_streams: u64,
    pub buffered_streams: u64,
    /// LLM: 2xx responses whose Content-Encoding blast cannot decode.
    pub undecodable: u64,
    /// The first few distinct messages of each error kind, to say what the counts mean.
    pub messages: ErrorMessages,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            sent: 0,
            completed: 0,
            ok: 0,
            failed: 0,
            cut_off: 0,
            missed: 0,
            errors: [0; ErrorKind::ALL.len()],
            status: vec![0; 1000],
            bytes_read: 0,
            bytes_written: 0,
            conns_opened: 0,
            reconnects: 0,
            unsolicited: 0,
            tls_handshakes: 0,
            tls_resumed: 0,
            tls_suites: [0; crate::tls::SUITE_COUNT],
            tokens: 0,
            tokens_by_server: 0,
            tokens_by_events: 0,
            prompt_tokens: 0,
            server_eval_tokens: 0,
            server_eval_ns: 0,
            done_reasons: [0; 3],
            good: 0,
            timed_streams: 0,
            buffered_streams: 0,
            undecodable: 0,
            messages: ErrorMessages::default(),
        }
    }
}

impl Counters {
    pub fn in_flight(&self) -> u64 {
        self.sent
            .saturating_sub(self.completed + self.failed + self.cut_off)
    }

    pub fn error(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize]
    }

    #[inline]
    pub fn record_status(&mut self, status: u16) {
        self.completed += 1;
        if (200..300).contains(&status) {
            self.ok += 1;
        }
        self.count_status(status);
    }

    #[inline]
    pub fn count_status(&mut self, status: u16) {
        if let Some(n) = self.status.get_mut(status as usize) {
            *n += 1;
        }
    }

    #[inline]
    pub fn record_error(&mut self, kind: ErrorKind, requests: u64) {
        self.errors[kind as usize] += requests;
        self.failed += requests;
    }

    /// Keep `why` as a message of `kind` if it is one of the first few distinct ones.
    pub fn record_error_message(&mut self, kind: ErrorKind, why: &dyn std::fmt::Display) {
        self.messages.record(kind, why);
    }

    /// Apply `f` to every counter of `self` with the matching counter of `other`: the one
    /// place that lists the fields, so that adding one cannot miss the merge or the diff.
    fn zip_with(&mut self, other: &Counters, f: impl Fn(&mut u64, u64)) {
        let scalars = [
            (&mut self.sent, other.sent),
            (&mut self.completed, other.completed),
            (&mut self.ok, other.ok),
            (&mut self.failed, other.failed),
            (&mut self.cut_off, other.cut_off),
            (&mut self.missed, other.missed),
            (&mut self.bytes_read, other.bytes_read),
            (&mut self.bytes_written, other.bytes_written),
            (&mut self.conns_opened, other.conns_opened),
            (&mut self.reconnects, other.reconnects),
            (&mut self.unsolicited, other.unsolicited),
            (&mut self.tls_handshakes, other.tls_handshakes),
            (&mut self.tls_resumed, other.tls_resumed),
            (&mut self.tokens, other.tokens),
            (&mut self.tokens_by_server, other.tokens_by_server),
            (&mut self.tokens_by_events, other.tokens_by_events),
            (&mut self.prompt_tokens, other.prompt_tokens),
            (&mut self.server_eval_tokens, other.server_eval_tokens),
            (&mut self.server_eval_ns, other.server_eval_ns),
            (&mut self.good, other.good),
            (&mut self.timed_streams, other.timed_streams),
            (&mut self.buffered_streams, other.buffered_streams),
            (&mut self.undecodable, other.undecodable),
        ];
        for (mine, theirs) in scalars {
            f(mine, theirs);
        }
        let arrays = self
            .errors
            .iter_mut()
            .zip(&other.errors)
            .chain(self.status.iter_mut().zip(&other.status))
            .chain(self.done_reasons.iter_mut().zip(&other.done_reasons))
            .chain(self.tls_suites.iter_mut().zip(&other.tls_suites));
        for (mine, theirs) in arrays {
            f(mine, *theirs);
        }
    }

    /// Field by field `self - earlier` (for one interval).
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut d = self.clone();
        d.zip_with(earlier, |a, b| *a -= b);
        d
    }
}

impl AddAssign<&Counters> for Counters {
    fn add_assign(&mut self, other: &Counters) {
        self.zip_with(other, |a, b| *a += b);
        self.messages.merge(&other.messages);
    }
}

/// Distinct error messages kept per kind, per shard and after merging.
pub const MESSAGES_PER_KIND: usize = 4;
/// A message is cut to this many bytes (it is formatted on the stack, not allocated).
const MESSAGE_MAX: usize = 160;

/// The first few distinct messages of each error kind. Recording formats the message into
/// a stack buffer and compares it with those kept: only a new distinct message allocates,
/// at most `MESSAGES_PER_KIND` times per kind, and a full kind costs one comparison.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ErrorMessages {
    kinds: [Vec<Box<str>>; ErrorKind::ALL.len()],
}

impl ErrorMessages {
    pub fn record(&mut self, kind: ErrorKind, why: &dyn std::fmt::Display) {
        let kept = &mut self.kinds[kind as usize];
        if kept.len() >= MESSAGES_PER_KIND {
            return;
        }
        let mut buf = [0u8; MESSAGE_MAX];
        let len = {
            let mut w = Truncating {
                buf: &mut buf,
                len: 0,
            };
            let _ = std::fmt::write(&mut w, format_args!("{why}"));
            w.len
        };
        // Cut on a character boundary.
        let text = match std::str::from_utf8(&buf[..len]) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or_default(),
        };
        push_distinct(kept, text);
    }

    fn merge(&mut self, other: &ErrorMessages) {
        for (mine, theirs) in self.kinds.iter_mut().zip(&other.kinds) {
            for m in theirs {
                if mine.len() >= MESSAGES_PER_KIND {
                    break;
                }
                push_distinct(mine, m);
            }
        }
    }

    /// The messages kept for `kind`, first seen first.
    pub fn of(&self, kind: ErrorKind) -> &[Box<str>] {
        &self.kinds[kind as usize]
    }
}

fn push_distinct(kept: &mut Vec<Box<str>>, text: &str) {
    if !text.is_empty() && kept.len() < MESSAGES_PER_KIND && !kept.iter().any(|m| &**m == text) {
        kept.push(text.into());
    }
}

/// A `fmt::Write` into a fixed buffer that drops what does not fit.
struct Truncating<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl std::fmt::Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// What a shard sends to the aggregator every interval, and once more at its end.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub shard: usize,
    /// Interval index: this snapshot covers [seq * interval, (seq + 1) * interval), or up to
    /// `at` for the last one.
    pub seq: u64,
    /// Offset from the run start when the snapshot was taken.
    pub at: Duration,
    /// The shard is done; no more snapshots follow.
    pub last: bool,
    /// Cumulative since the start.
    pub counters: Counters,
    /// This interval only.
    pub hists: Hists,
}

/// The usual percentiles of a distribution, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Summary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            stdev: h.stdev(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_merge_and_diff() {
        let mut a = Counters {
            sent: 10,
            ..Default::default()
        };
        a.record_status(200);
        a.record_status(503);
        a.record_error(ErrorKind::Timeout, 1);
        let mut b = a.clone();
        b.sent += 5;
        b.record_status(200);
        let d = b.since(&a);
        assert_eq!((d.sent, d.completed, d.ok, d.failed), (5, 1, 1, 0));
        assert_eq!(d.status[200], 1);
        let mut sum = a.clone();
        sum += &b;
        assert_eq!((sum.sent, sum.completed, sum.ok, sum.failed), (25, 5, 3, 2));
        assert_eq!(sum.status[503], 2);
        assert_eq!(sum.error(ErrorKind::Timeout), 2);
        assert_eq!(a.in_flight(), 10 - 2 - 1);
    }

    /// Issue 12: errors keep a few distinct messages per kind, bounded per shard and after
    /// merging, cut to a bounded length.
    #[test]
    fn error_messages_are_few_distinct_and_merge() {
        let mut a = Counters::default();
        for _ in 0..100 {
            a.record_error_message(ErrorKind::Connect, &"connection refused");
        }
        a.record_error_message(ErrorKind::Parse, &"response head larger than 65536 bytes");
        assert_eq!(a.messages.of(ErrorKind::Connect).len(), 1);
        for i in 0..10 {
            a.record_error_message(ErrorKind::Read, &format!("reset {i}"));
        }
        assert_eq!(a.messages.of(ErrorKind::Read).len(), MESSAGES_PER_KIND);
        assert_eq!(&*a.messages.of(ErrorKind::Read)[0], "reset 0");
        let long = "é".repeat(200);
        a.record_error_message(ErrorKind::Stream, &long);
        let kept = &a.messages.of(ErrorKind::Stream)[0];
        assert!(kept.len() <= MESSAGE_MAX && long.starts_with(&**kept));

        let mut b = Counters::default();
        b.record_error_message(ErrorKind::Connect, &"connection refused");
        b.record_error_message(ErrorKind::Connect, &"connect timed out");
        let mut sum = Counters::default();
        sum += &a;
        sum += &b;
        let connect: Vec<&str> = sum
            .messages
            .of(ErrorKind::Connect)
            .iter()
            .map(|m| &**m)
            .collect();
        assert_eq!(connect, ["connection refused", "connect timed out"]);
        assert_eq!(sum.messages.of(ErrorKind::Read).len(), MESSAGES_PER_KIND);
        // An interval's difference keeps the messages seen so far.
        assert_eq!(b.since(&a).messages, b.messages);
    }

    #[test]
    fn status_outside_table_is_not_a_panic() {
        let mut c = Counters::default();
        c.record_status(1500);
        assert_eq!(c.completed, 1);
    }

    #[test]
    fn hists_merge_exactly() {
        let mut a = Hists::new(&[Metric::Latency]);
        let mut b = Hists::new(&[Metric::Latency, Metric::SendLag]);
        for us in 1..=1000u64 {
            a.record(Metric::Latency, Duration::from_micros(us));
            b.record(Metric::Latency, Duration::from_micros(us + 1000));
        }
        b.record(Metric::SendLag, Duration::from_micros(7));
        a.record(Metric::SendLag, Duration::from_micros(7)); // not enabled in `a`: ignored
        a += &b;
        let lat = Summary::of(a.get(Metric::Latency).unwrap());
        assert_eq!(lat.count, 2000);
        assert_eq!(lat.min, 1);
        assert!((lat.p50 as i64 - 1000).abs() <= 1, "{lat:?}");
        assert_eq!(a.get(Metric::SendLag).unwrap().len(), 1);
    }

    #[test]
    fn huge_and_zero_values_saturate() {
        let mut h = Hists::new(&[Metric::Latency]);
        h.record(Metric::Latency, Duration::ZERO);
        h.record(Metric::Latency, Duration::from_secs(100_000));
        let s = Summary::of(h.get(Metric::Latency).unwrap());
        assert_eq!(s.count, 2);
        assert_eq!(s.min, 1);
        assert!(s.max >= HIST_HIGH / 2);
    }
}
