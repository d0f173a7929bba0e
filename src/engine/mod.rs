//! The load engine: one pinned runtime thread per CPU ("shard", see `crate::rt`), each
//! owning a slice of the connections, its own counters and histograms. Shards never share
//! state on the hot path; they meet the main thread only through a crossbeam channel of
//! `Snapshot`s.

mod conn;
mod llm;
mod shard;

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;

use crate::plan::{Llm, LlmPlan, Plan};
use crate::rt::{self, Pinned};
use crate::schedule::Part;
use crate::stats::Snapshot;

/// Set by the Ctrl-C handler; each shard polls it once per tick, never per request.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Shard threads are named after this, with their index.
const SHARD_THREAD: &str = "blast-shard";

/// Where the first shard panic happened, for blast's one-line message.
static PANIC_AT: Mutex<Option<String>> = Mutex::new(None);

/// Keep Rust's panic text for shard threads off stderr (blast says in one line which shard
/// failed, what it said and where), unless RUST_BACKTRACE asks for the whole story.
fn quiet_shard_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_shard = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with(SHARD_THREAD));
            if !in_shard || std::env::var_os("RUST_BACKTRACE").is_some() {
                return default(info);
            }
            if let (Some(at), Ok(mut first)) = (info.location(), PANIC_AT.lock()) {
                first.get_or_insert_with(|| format!("{}:{}", at.file(), at.line()));
            }
        }));
    });
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot start the shards: {0}")]
    Start(#[from] std::io::Error),
    #[error("shard on CPU {cpu} failed: {msg}")]
    Shard { cpu: usize, msg: String },
}

/// One shard's view of the plan: the plan all shards share, and this shard's share of what
/// is split between them. Its own fields have the plan's names and stand in for the plan's
/// (`conns` is this shard's connections, `plan.conns` all of them; `llm` is the part of the
/// plan's a connection decodes with); every other field reads through to the plan (`Deref`).
#[derive(Clone, Debug)]
pub(crate) struct ShardSetup {
    /// This shard's index, among this process's.
    pub id: usize,
    /// Where it stands in the whole run (across `--shard` processes).
    pub part: Part,
    pub conns: usize,
    /// This shard's share of the plan's `budget` (`--requests`).
    pub budget: Option<u64>,
    /// This shard's share of `--max-in-flight`.
    pub max_in_flight: Option<u64>,
    /// What a connection needs to decode the plan's LLM responses.
    pub llm: Option<LlmPlan>,
    pub plan: Arc<Plan>,
}

impl ShardSetup {
    /// Shard `id`'s share: as even a split as possible, first between the processes of
    /// `--shard`, then between this one's cores.
    fn new(plan: &Arc<Plan>, id: usize) -> ShardSetup {
        let part = Part {
            process: plan.shard.index,
            processes: plan.shard.count,
            core: id,
            cores: plan.cores,
        };
        let share = |total: u64| part.share(total);
        ShardSetup {
            id,
            part,
            conns: share(plan.conns as u64) as usize,
            budget: plan.budget.map(share),
            max_in_flight: plan.max_in_flight.map(share),
            llm: plan.llm.as_ref().map(Llm::decoding),
            plan: Arc::clone(plan),
        }
    }
}

impl Deref for ShardSetup {
    type Target = Plan;

    fn deref(&self) -> &Plan {
        &self.plan
    }
}

/// A started run: its shards are connected to the aggregator by `snapshots`, one channel
/// per plan.
pub struct Run {
    pub start: Instant,
    /// `start` on the wall clock, and how late it was for `--start-at` (None without one).
    pub started_at: SystemTime,
    pub start_late: Option<Duration>,
    pub snapshots: Vec<Receiver<Snapshot>>,
    /// A shard's index arrives here when it panicked: its snapshot sender may never be
    /// dropped (its tasks can outlive the unwinding), so the aggregator must not wait for it.
    pub panicked: Receiver<usize>,
    shards: Vec<(usize, Pinned<()>)>,
}

/// Lives in a shard's root future, which unwinding drops: tells the main thread that the
/// shard panicked, and stops the other shards (the run failed, their work is moot).
struct PanicAlarm {
    id: usize,
    tx: crossbeam_channel::Sender<usize>,
}

impl Drop for PanicAlarm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            INTERRUPTED.store(true, Ordering::Relaxed);
            let _ = self.tx.send(self.id);
        }
    }
}

impl Run {
    /// Start one shard per CPU of the plan, wait until each is up (and, with `--start-at`,
    /// until that instant), then start them all at one common instant (so that every
    /// shard's intervals line up).
    pub fn start(plan: &Arc<Plan>) -> Result<Run, EngineError> {
        Run::start_together(std::slice::from_ref(plan), &[Duration::ZERO])
    }

    /// Several plans at once (`blast overhead`): each CPU's thread runs a shard of every
    /// plan on its one event loop, so that whatever slows the thread (a busy moment, a
    /// long batch of events) slows all the plans alike, and none gets more of the CPU than
    /// another. Plan `i`'s shards start `offsets[i]` after the common start. The plans must
    /// run on the same CPUs (the first plan's are used).
    pub fn start_together(plans: &[Arc<Plan>], offsets: &[Duration]) -> Result<Run, EngineError> {
        assert!(!plans.is_empty() && plans.len() == offsets.len());
        let (go_tx, go_rx) = crossbeam_channel::unbounded::<Instant>();
        let (panic_tx, panicked) = crossbeam_channel::unbounded();
        quiet_shard_panics();
        let (snap_txs, snapshots): (Vec<_>, Vec<_>) =
            plans.iter().map(|_| crossbeam_channel::unbounded()).unzip();
        let cpus = plans[0].cpus.clone();
        let work = cpus
            .iter()
            .enumerate()
            .map(|(id, &cpu)| {
                let mut shards: Vec<(ShardSetup, Duration, _)> = plans
                    .iter()
                    .zip(offsets)
                    .zip(&snap_txs)
                    .map(|((plan, &off), tx)| (ShardSetup::new(plan, id), off, tx.clone()))
                    .collect();
                // Which plan's tasks a loop turn meets first goes round the CPUs, so that no
                // plan is always served first.
                shards.rotate_left(id % plans.len());
                let go = go_rx.clone();
                let alarm = PanicAlarm {
                    id,
                    tx: panic_tx.clone(),
                };
                // Each shard waits, on its runtime but before any I/O, for the common start;
                // a start that was called off (the sender dropped) ends it.
                let main = move || async move {
                    let _alarm = alarm;
                    if let Ok(start) = go.recv() {
                        // Lets the tests check that a panicking shard ends the run.
                        #[cfg(debug_assertions)]
                        if std::env::var_os("BLAST_TEST_SHARD_PANIC").is_some() {
                            panic!("BLAST_TEST_SHARD_PANIC is set");
                        }
                        let tasks: Vec<_> = shards
                            .into_iter()
                            .map(|(setup, off, tx)| rt::spawn(shard::run(setup, start + off, tx)))
                            .collect();
                        for t in tasks {
                            t.await;
                        }
                    }
                };
                (cpu, main)
            })
            .collect();
        drop((snap_txs, go_rx, panic_tx));
        let threads = rt::start_pinned(SHARD_THREAD, work)?;
        let start_at = plans[0].start_at;
        if let Some(at) = start_at {
            wait_until(at);
        }
        let (start, started_at) = (Instant::now(), SystemTime::now());
        // Measured against the same reading as `started_at`, so the two agree exactly.
        let start_late = start_at.map(|at| started_at.duration_since(at).unwrap_or_default());
        for _ in 0..threads.len() {
            let _ = go_tx.send(start);
        }
        Ok(Run {
            start,
            started_at,
            start_late,
            snapshots,
            panicked,
            shards: cpus.into_iter().zip(threads).collect(),
        })
    }

    /// Wait for every shard to end.
    pub fn join(self) -> Result<(), EngineError> {
        let mut first = None;
        for (cpu, t) in self.shards {
            if let (Err(mut msg), None) = (t.join(), &first) {
                if let Some(at) = PANIC_AT.lock().ok().and_then(|mut at| at.take()) {
                    msg = format!("{msg} (at {at}; RUST_BACKTRACE=1 shows how)");
                }
                first = Some(EngineError::Shard { cpu, msg });
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// `--start-at`: sleep (the shards are up, waiting for the go) until the wall clock reaches
/// `at`, or the run is interrupted.
fn wait_until(at: SystemTime) {
    /// Short enough that Ctrl-C during the wait is felt at once.
    const STEP: Duration = Duration::from_millis(50);
    while let Ok(left) = at.duration_since(SystemTime::now()) {
        if left.is_zero() || interrupted() {
            break;
        }
        std::thread::sleep(left.min(STEP));
    }
}
