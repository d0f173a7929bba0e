//! blast: a thread-per-core HTTP/1.1 load engine.
//!
//! `Plan` (validated input, shared by the shards) -> `engine::Run` (pinned shards) -> `Aggregator` (snapshots
//! merged into a timeline and totals) -> `Report` (plain data, printed elsewhere).

pub mod aggregate;
pub mod app;
pub mod cli;
pub mod compare;
pub mod engine;
pub mod http;
pub mod limits;
pub mod llm;
pub mod merge;
pub mod mock;
pub mod plan;
pub mod report;
pub mod rng;
pub mod rt;
pub mod scenario;
pub mod schedule;
pub mod stats;
pub mod tls;

use aggregate::{Aggregator, TimelineRow};
use std::sync::Arc;

use plan::Plan;
use report::{Report, SelfCost};

/// Run the plan to its end. `on_row` sees each timeline row as soon as every shard has
/// reported it (the live view).
pub fn run(
    plan: &Arc<Plan>,
    mut on_row: impl FnMut(&TimelineRow),
) -> Result<Report, engine::EngineError> {
    let cpu_before = limits::cpu_time();
    let run = engine::Run::start(plan)?;
    let due = plan.rate.as_ref().map(|spec| spec.due(plan.run_for));
    // A `--shard` process's target is its part of the run's.
    let mut agg = Aggregator::new(plan.cores, plan.interval, due).with_share(plan.shard.count);
    let (run_started_at, start_late) = (run.started_at, run.start_late);
    // Every shard holds a sender until it ends: when all are gone, nothing more comes. A
    // shard that panicked may hold its sender for ever: its alarm ends the wait instead
    // (and `join` reports the panic).
    let mut panicked = run.panicked.clone();
    while !agg.all_done() {
        let snap = crossbeam_channel::select! {
            recv(run.snapshots) -> snap => snap,
            recv(panicked) -> alarm => match alarm {
                Ok(_) => break,
                // Every shard ended without a panic: only snapshots are left to read.
                Err(_) => {
                    panicked = crossbeam_channel::never();
                    continue;
                }
            },
        };
        let Ok(snap) = snap else {
            break;
        };
        for row in agg.push(snap) {
            on_row(row);
        }
    }
    run.join()?;
    let cost = SelfCost {
        cpu: limits::cpu_time().saturating_sub(cpu_before),
        peak_rss_bytes: limits::peak_rss(),
    };
    let started = report::Started {
        at: run_started_at,
        late: start_late,
    };
    Ok(Report::build(
        &agg,
        plan,
        cost,
        started,
        engine::interrupted(),
    ))
}
