//! blast: a thread-per-core HTTP/1.1 load engine.
//!
//! `Plan` (validated input) -> `engine::Run` (pinned shards) -> `Aggregator` (snapshots
//! merged into a timeline and totals) -> `Report` (plain data, printed elsewhere).

pub mod aggregate;
pub mod app;
pub mod cli;
pub mod compare;
pub mod engine;
pub mod http;
pub mod limits;
pub mod llm;
pub mod mock;
pub mod plan;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod stats;
pub mod wake;

use std::time::{Duration, Instant};

use aggregate::{Aggregator, TimelineRow};
use crossbeam_channel::RecvTimeoutError;
use plan::Plan;
use report::{Report, SelfCost};

/// Run the plan to its end. `on_row` sees each timeline row as soon as every shard has
/// reported it (the live view).
pub fn run(
    plan: &Plan,
    mut on_row: impl FnMut(&TimelineRow),
) -> Result<Report, engine::EngineError> {
    let cpu_before = limits::cpu_time();
    let run = engine::Run::start(plan)?;
    let shards = plan.cpus.len();
    let due = plan.rate.as_ref().map(|spec| spec.due(plan.duration));
    let mut agg = Aggregator::new(shards, plan.interval, due);
    // A shard reports at least every interval; one that has been silent for two is
    // kicked, in case glommio lost its wake-up (see `wake`).
    let silent_for = plan.interval * 2 + Duration::from_millis(100);
    let mut heard = vec![Instant::now(); shards];
    while !agg.all_done() {
        match run.snapshots.recv_timeout(Duration::from_millis(100)) {
            Ok(snap) => {
                heard[snap.shard] = Instant::now();
                for row in agg.push(snap) {
                    on_row(row);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Every shard holds a sender until it ends: all are gone.
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if (0..shards).any(|s| !agg.done(s) && heard[s].elapsed() > silent_for) {
            run.kick();
            heard.fill(Instant::now());
        }
    }
    run.join()?;
    let cost = SelfCost {
        cpu: limits::cpu_time().saturating_sub(cpu_before),
        peak_rss_bytes: limits::peak_rss(),
    };
    Ok(Report::build(&agg, plan, cost, engine::interrupted()))
}
