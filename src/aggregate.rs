//! The aggregator: merges the shards' snapshots into timeline rows (one per interval, once
//! every shard has reported it) and into the run's totals.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::schedule::RateSpec;
use crate::stats::{Counters, Hists, Metric, Snapshot, Summary};

/// One interval of the run, over all shards.
#[derive(Clone, Debug, Serialize)]
pub struct TimelineRow {
    /// End of the interval, seconds since the start.
    pub t_s: f64,
    /// Length of the interval (the last one may be short).
    pub dt_s: f64,
    /// Open loop: the mean target rate over the interval (0 for a closed loop).
    pub target_rps: f64,
    pub sent: u64,
    pub completed: u64,
    pub ok: u64,
    /// Requests that failed in this interval.
    pub errors: u64,
    /// Requests in flight at the end of the interval.
    pub in_flight: u64,
    /// Completed responses per second in this interval.
    pub rps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

#[derive(Default)]
struct Pending {
    /// Sum of the reporting shards' cumulative counters at the end of this interval.
    cum: Counters,
    hists: Option<Hists>,
    at: Duration,
}

pub struct Aggregator {
    interval: Duration,
    rate: Option<RateSpec>,
    /// Per shard: highest interval reported so far.
    max_seq: Vec<Option<u64>>,
    /// Per shard, once done: its last interval and final counters.
    finals: Vec<Option<(u64, Counters)>>,
    pending: BTreeMap<u64, Pending>,
    prev_cum: Counters,
    prev_t: Duration,
    pub timeline: Vec<TimelineRow>,
    pub hists: Option<Hists>,
    /// Latest offset any shard reported from (its end, for the last snapshots).
    pub end: Duration,
}

impl Aggregator {
    pub fn new(shards: usize, interval: Duration, rate: Option<RateSpec>) -> Aggregator {
        Aggregator {
            interval,
            rate,
            max_seq: vec![None; shards],
            finals: vec![None; shards],
            pending: BTreeMap::new(),
            prev_cum: Counters::default(),
            prev_t: Duration::ZERO,
            timeline: Vec::new(),
            hists: None,
            end: Duration::ZERO,
        }
    }

    pub fn all_done(&self) -> bool {
        self.finals.iter().all(Option::is_some)
    }

    /// Take one snapshot; returns the timeline rows it completed (usually zero or one).
    pub fn push(&mut self, snap: Snapshot) -> &[TimelineRow] {
        let before = self.timeline.len();
        self.end = self.end.max(snap.at);
        match &mut self.hists {
            Some(h) => *h += &snap.hists,
            None => self.hists = Some(snap.hists.clone()),
        }
        let p = self.pending.entry(snap.seq).or_default();
        p.cum += &snap.counters;
        p.at = p.at.max(snap.at);
        match &mut p.hists {
            Some(h) => *h += &snap.hists,
            None => p.hists = Some(snap.hists),
        }
        self.max_seq[snap.shard] = Some(snap.seq);
        if snap.last {
            self.finals[snap.shard] = Some((snap.seq, snap.counters));
        }
        while let Some((&seq, _)) = self.pending.first_key_value() {
            if !self.covered(seq) {
                break;
            }
            let p = self.pending.remove(&seq).expect("present");
            self.emit(seq, p);
        }
        &self.timeline[before..]
    }

    /// Has every shard either reported interval `seq` or ended before it?
    fn covered(&self, seq: u64) -> bool {
        (0..self.max_seq.len())
            .all(|s| self.finals[s].is_some() || self.max_seq[s].is_some_and(|m| m >= seq))
    }

    fn emit(&mut self, seq: u64, p: Pending) {
        let mut cum = p.cum;
        for (last_seq, counters) in self.finals.iter().flatten() {
            if *last_seq < seq {
                cum += counters;
            }
        }
        let full_end = self.interval * (seq as u32 + 1);
        let t = if self.all_done() && self.pending.is_empty() {
            p.at.min(full_end)
        } else {
            full_end
        };
        let t = t.max(self.prev_t);
        let d = cum.since(&self.prev_cum);
        let dt = (t - self.prev_t).as_secs_f64();
        let (p50, p99) = p
            .hists
            .as_ref()
            .and_then(|h| h.get(Metric::Latency))
            .filter(|h| !h.is_empty())
            .map_or((0, 0), |h| {
                (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
            });
        let target_rps = self
            .rate
            .as_ref()
            .map_or(0.0, |r| mean_rate(r, self.prev_t, t));
        self.timeline.push(TimelineRow {
            t_s: t.as_secs_f64(),
            dt_s: dt,
            target_rps,
            sent: d.sent,
            completed: d.completed,
            ok: d.ok,
            errors: d.failed,
            in_flight: cum.in_flight(),
            rps: if dt > 0.0 {
                d.completed as f64 / dt
            } else {
                0.0
            },
            p50_us: p50,
            p99_us: p99,
        });
        self.prev_cum = cum;
        self.prev_t = t;
    }

    /// Totals over the whole run (valid once every shard is done).
    pub fn totals(&self) -> Counters {
        let mut total = Counters::default();
        for (_, c) in self.finals.iter().flatten() {
            total += c;
        }
        total
    }

    pub fn summary(&self, m: Metric) -> Option<Summary> {
        self.hists.as_ref().and_then(|h| h.get(m)).map(Summary::of)
    }
}

/// Mean of the target rate over [from, to), sampled at the midpoints of 100 slices.
fn mean_rate(spec: &RateSpec, from: Duration, to: Duration) -> f64 {
    const SLICES: u32 = 100;
    if to <= from {
        return 0.0;
    }
    let step = (to - from) / SLICES;
    (0..SLICES)
        .map(|i| spec.target_rate(from + step * i + step / 2))
        .sum::<f64>()
        / SLICES as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(shard: usize, seq: u64, at_ms: u64, last: bool, completed: u64) -> Snapshot {
        let mut counters = Counters {
            sent: completed,
            ..Default::default()
        };
        for _ in 0..completed {
            counters.record_status(200);
        }
        let mut hists = Hists::new(&[Metric::Latency]);
        hists.record(Metric::Latency, Duration::from_micros(100));
        Snapshot {
            shard,
            seq,
            at: Duration::from_millis(at_ms),
            last,
            counters,
            hists,
        }
    }

    #[test]
    fn rows_wait_for_every_shard_and_count_deltas() {
        let mut a = Aggregator::new(2, Duration::from_secs(1), None);
        assert!(a.push(snap(0, 0, 1000, false, 10)).is_empty());
        assert!(a.push(snap(0, 1, 2000, false, 30)).is_empty());
        let rows = a.push(snap(1, 0, 1000, false, 5)).to_vec();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].completed, 15);
        assert!((rows[0].rps - 15.0).abs() < 1e-9);
        // Shard 1 ends early, in interval 1: interval 1 can now be closed.
        let rows = a.push(snap(1, 1, 1500, true, 7)).to_vec();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].completed, (30 - 10) + (7 - 5));
        // Shard 0 keeps going alone; shard 1's final counters carry over without being double counted.
        let rows = a.push(snap(0, 2, 2500, true, 40)).to_vec();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].completed, 10);
        assert!((rows[0].t_s - 2.5).abs() < 1e-9, "{:?}", rows[0]);
        assert!(a.all_done());
        assert_eq!(a.totals().completed, 47);
        assert_eq!(a.timeline.iter().map(|r| r.completed).sum::<u64>(), 47);
        assert_eq!(a.summary(Metric::Latency).unwrap().count, 5);
    }
}
