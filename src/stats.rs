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
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Read,
        ErrorKind::Write,
        ErrorKind::Parse,
        ErrorKind::Closed,
    ];
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Read => "read",
            ErrorKind::Write => "write",
            ErrorKind::Parse => "parse",
            ErrorKind::Closed => "closed",
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
}

impl Metric {
    pub const COUNT: usize = 3;
    pub const ALL: [Metric; Metric::COUNT] =
        [Metric::Latency, Metric::LatencyUncorrected, Metric::SendLag];
    /// The key in the result document.
    pub fn key(self) -> &'static str {
        match self {
            Metric::Latency => "latency_us",
            Metric::LatencyUncorrected => "latency_uncorrected_us",
            Metric::SendLag => "send_lag_us",
        }
    }
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
    /// Ended without a complete response (see `errors`).
    pub failed: u64,
    /// Still in flight when the run was cut short (Ctrl-C, or still unanswered at the end).
    pub cut_off: u64,
    pub errors: [u64; ErrorKind::ALL.len()],
    /// Responses by status code (index = code, 0..=999).
    pub status: Vec<u64>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub conns_opened: u64,
    /// Connections opened again after the server closed one.
    pub reconnects: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            sent: 0,
            completed: 0,
            ok: 0,
            failed: 0,
            cut_off: 0,
            errors: [0; ErrorKind::ALL.len()],
            status: vec![0; 1000],
            bytes_read: 0,
            bytes_written: 0,
            conns_opened: 0,
            reconnects: 0,
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

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    #[inline]
    pub fn record_status(&mut self, status: u16) {
        self.completed += 1;
        if (200..300).contains(&status) {
            self.ok += 1;
        }
        if let Some(n) = self.status.get_mut(status as usize) {
            *n += 1;
        }
    }

    #[inline]
    pub fn record_error(&mut self, kind: ErrorKind, requests: u64) {
        self.errors[kind as usize] += 1;
        self.failed += requests;
    }

    /// Field by field `self - earlier` (for one interval).
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut d = self.clone();
        d.sent -= earlier.sent;
        d.completed -= earlier.completed;
        d.ok -= earlier.ok;
        d.failed -= earlier.failed;
        d.cut_off -= earlier.cut_off;
        for (a, b) in d.errors.iter_mut().zip(&earlier.errors) {
            *a -= b;
        }
        for (a, b) in d.status.iter_mut().zip(&earlier.status) {
            *a -= b;
        }
        d.bytes_read -= earlier.bytes_read;
        d.bytes_written -= earlier.bytes_written;
        d.conns_opened -= earlier.conns_opened;
        d.reconnects -= earlier.reconnects;
        d
    }
}

impl AddAssign<&Counters> for Counters {
    fn add_assign(&mut self, o: &Counters) {
        self.sent += o.sent;
        self.completed += o.completed;
        self.ok += o.ok;
        self.failed += o.failed;
        self.cut_off += o.cut_off;
        for (a, b) in self.errors.iter_mut().zip(&o.errors) {
            *a += b;
        }
        for (a, b) in self.status.iter_mut().zip(&o.status) {
            *a += b;
        }
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
        self.conns_opened += o.conns_opened;
        self.reconnects += o.reconnects;
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
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
