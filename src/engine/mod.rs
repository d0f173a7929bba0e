//! The load engine: one pinned runtime thread per CPU ("shard", see `crate::rt`), each
//! owning a slice of the connections, its own counters and histograms. Shards never share
//! state on the hot path; they meet the main thread only through a crossbeam channel of
//! `Snapshot`s.

mod conn;
mod llm;
mod shard;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::plan::{Llm, LlmPlan, Plan};
use crate::rt::{self, Pinned};
use crate::schedule::RateSpec;
use crate::stats::{Metric, Snapshot};

/// Set by the Ctrl-C handler; each shard polls it once per tick, never per request.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Shard threads are named after this, with their index.
const SHARD_THREAD: &str = "blast-shard";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot start the shards: {0}")]
    Start(#[from] std::io::Error),
    #[error("shard on CPU {cpu} failed: {msg}")]
    Shard { cpu: usize, msg: String },
}

/// Everything one shard needs; built on the main thread, moved into the shard's thread.
#[derive(Clone, Debug)]
pub(crate) struct ShardSetup {
    pub id: usize,
    pub addrs: Vec<SocketAddr>,
    pub conns: usize,
    pub pipeline: usize,
    /// This shard's share of `--requests`.
    pub budget: Option<u64>,
    /// Stop sending this long after the start.
    pub run_for: Option<Duration>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub interval: Duration,
    pub requests: Vec<Vec<u8>>,
    pub head: bool,
    pub metrics: Vec<Metric>,
    /// Open loop: the whole run's rate; the shard follows its own share of it.
    pub rate: Option<RateSpec>,
    pub shards: usize,
    /// This shard's share of `--max-in-flight`.
    pub max_in_flight: Option<u64>,
    pub llm: Option<LlmPlan>,
}

/// A started run: its shards are connected to the aggregator by `snapshots`.
pub struct Run {
    pub start: Instant,
    pub snapshots: Receiver<Snapshot>,
    shards: Vec<(usize, Pinned<()>)>,
}

impl Run {
    /// Start one shard per CPU of the plan, wait until each is up, then start them all at
    /// one common instant (so that every shard's intervals line up).
    pub fn start(plan: &Plan) -> Result<Run, EngineError> {
        let (snap_tx, snapshots) = crossbeam_channel::unbounded();
        let (go_tx, go_rx) = crossbeam_channel::unbounded::<Instant>();
        let work = plan
            .cpus
            .iter()
            .enumerate()
            .map(|(id, &cpu)| {
                let setup = ShardSetup {
                    id,
                    addrs: plan.addrs.clone(),
                    conns: plan.conns_of(id),
                    pipeline: plan.pipeline,
                    budget: plan.budget_of(id),
                    run_for: plan.run_for,
                    timeout: plan.timeout,
                    connect_timeout: plan.connect_timeout,
                    interval: plan.interval,
                    requests: plan.requests.clone(),
                    head: plan.head,
                    metrics: plan.metrics.clone(),
                    rate: plan.rate.clone(),
                    shards: plan.cores,
                    max_in_flight: plan.max_in_flight_of(id),
                    llm: plan.llm.as_ref().map(Llm::decoding),
                };
                let (tx, go) = (snap_tx.clone(), go_rx.clone());
                // Each shard waits, on its runtime but before any I/O, for the common start;
                // a start that was called off (the sender dropped) ends it.
                let main = move || async move {
                    if let Ok(start) = go.recv() {
                        shard::run(setup, start, tx).await;
                    }
                };
                (cpu, main)
            })
            .collect();
        drop((snap_tx, go_rx));
        let threads = rt::start_pinned(SHARD_THREAD, work)?;
        let start = Instant::now();
        for _ in 0..threads.len() {
            let _ = go_tx.send(start);
        }
        Ok(Run {
            start,
            snapshots,
            shards: plan.cpus.iter().copied().zip(threads).collect(),
        })
    }

    /// Wait for every shard to end.
    pub fn join(self) -> Result<(), EngineError> {
        let mut first = None;
        for (cpu, t) in self.shards {
            if let (Err(msg), None) = (t.join(), &first) {
                first = Some(EngineError::Shard { cpu, msg });
            }
        }
        first.map_or(Ok(()), Err)
    }
}
