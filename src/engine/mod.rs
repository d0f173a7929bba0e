//! The load engine: one pinned glommio executor per CPU ("shard"), each owning a slice of
//! the connections, its own counters and histograms. Shards never share state on the hot
//! path; they meet the main thread only through a crossbeam channel of `Snapshot`s.

mod conn;
mod llm;
pub(crate) mod poller;
mod shard;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use self::poller::Poller;
use crate::plan::{LlmPlan, Plan};
use crate::schedule::RateSpec;
use crate::stats::{Metric, Snapshot};

/// Set by the Ctrl-C handler; each shard polls it once per tick, never per request.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Shard threads are named after this (glommio appends a number), so they can be found.
const SHARD_THREAD: &str = "blast-shard";

/// io_uring registered memory per shard. blast does no file I/O, so the 10 MiB default
/// would only eat into RLIMIT_MEMLOCK (often 8 MiB in all).
const IO_MEMORY: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot start the executor on CPU {cpu}: {source}")]
    Executor {
        cpu: usize,
        source: glommio::GlommioError<()>,
    },
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
    handles: Vec<(usize, ExecutorJoinHandle<()>)>,
}

impl Run {
    /// Spawn one shard per CPU of the plan, wait until each executor is up, then start
    /// them all at one common instant (so that every shard's intervals line up).
    pub fn start(plan: &Plan) -> Result<Run, EngineError> {
        let (snap_tx, snapshots) = crossbeam_channel::unbounded();
        let (go_tx, go_rx) = crossbeam_channel::unbounded::<Option<Instant>>();
        let mut handles = Vec::new();
        let mut readies = Vec::new();
        for (id, &cpu) in plan.cpus.iter().enumerate() {
            let setup = ShardSetup {
                id,
                addrs: plan.addrs.clone(),
                conns: plan.conns_of(id),
                pipeline: plan.pipeline,
                budget: plan.requests_of(id),
                run_for: plan.duration,
                timeout: plan.timeout,
                connect_timeout: plan.connect_timeout,
                interval: plan.interval,
                requests: plan.rendered.clone(),
                head: plan.head,
                metrics: plan.metrics(),
                rate: plan.rate.clone(),
                shards: plan.cpus.len(),
                max_in_flight: plan.max_in_flight_of(id),
                llm: plan.llm,
            };
            let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), String>>(1);
            readies.push(ready_rx);
            let go_rx = go_rx.clone();
            let tx: Sender<Snapshot> = snap_tx.clone();
            let spawned = LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .name(SHARD_THREAD)
                .io_memory(IO_MEMORY)
                .spawn(move || async move {
                    let poller = match Poller::new() {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("cannot create its epoll set: {e}")));
                            return;
                        }
                    };
                    if ready_tx.send(Ok(())).is_err() {
                        return;
                    }
                    // Blocking here is fine: no I/O of this executor has started yet.
                    if let Ok(Some(start)) = go_rx.recv() {
                        shard::run(setup, poller, start, tx).await;
                    }
                });
            match spawned {
                Ok(h) => handles.push((cpu, h)),
                Err(source) => {
                    abort(&go_tx, handles);
                    return Err(EngineError::Executor { cpu, source });
                }
            }
        }
        drop(snap_tx);
        for (i, ready) in readies.iter().enumerate() {
            let err = match wait_kicking(ready) {
                Some(Ok(())) => continue,
                // The shard could not set itself up.
                Some(Err(msg)) => EngineError::Shard {
                    cpu: handles[i].0,
                    msg,
                },
                // The executor died before running our future: its join has the reason.
                None => {
                    let (cpu, failed) = handles.remove(i);
                    match failed.join() {
                        Err(source) => EngineError::Executor { cpu, source },
                        Ok(()) => EngineError::Shard {
                            cpu,
                            msg: "exited before starting".into(),
                        },
                    }
                }
            };
            abort(&go_tx, handles);
            return Err(err);
        }
        let start = Instant::now();
        for _ in 0..handles.len() {
            let _ = go_tx.send(Some(start));
        }
        Ok(Run {
            start,
            snapshots,
            handles,
        })
    }

    /// Wake the shards in case glommio lost a wake-up (harmless to those that are running).
    pub fn kick(&self) {
        crate::wake::kick_threads(SHARD_THREAD);
    }

    /// Wait for every shard to end.
    pub fn join(self) -> Result<(), EngineError> {
        let mut first = None;
        for (cpu, h) in self.handles {
            let res = h.join().map_err(|e| EngineError::Shard {
                cpu,
                msg: e.to_string(),
            });
            if let (Err(e), None) = (res, &first) {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Wait for a shard's "ready", kicking the shards while waiting (see `wake`). None if the
/// shard died before it could say it.
fn wait_kicking<T>(ready: &Receiver<T>) -> Option<T> {
    loop {
        match ready.recv_timeout(Duration::from_millis(200)) {
            Ok(said) => return Some(said),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                crate::wake::kick_threads(SHARD_THREAD)
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

fn abort(go: &Sender<Option<Instant>>, handles: Vec<(usize, ExecutorJoinHandle<()>)>) {
    for _ in 0..handles.len() {
        let _ = go.send(None);
    }
    for (_, h) in handles {
        let _ = h.join();
    }
}
