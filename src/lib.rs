//! blast: a thread-per-core HTTP/1.1 load engine.
//!
//! `Plan` (validated input, shared by the shards) -> `engine::Run` (pinned shards) -> `Aggregator` (snapshots
//! merged into a timeline and totals) -> `Report` (plain data, printed elsewhere).

pub mod aggregate;
pub mod app;
pub mod cli;
pub mod compare;
pub mod engine;
pub mod html;
pub mod http;
pub mod limits;
pub mod llm;
pub mod merge;
pub mod mock;
pub mod overhead;
pub mod plan;
pub mod prometheus;
pub mod report;
pub mod rng;
pub mod rt;
pub mod scenario;
pub mod schedule;
pub mod scrape;
pub mod stats;
pub mod sweep;
pub mod tls;

use aggregate::{Aggregator, Interval, TimelineRow};
use std::sync::Arc;
use std::time::Duration;

use plan::Plan;
use report::{Report, SelfCost};

/// Run the plan to its end. `on_row` sees each timeline row as soon as every shard has
/// reported it (the live view).
pub fn run(
    plan: &Arc<Plan>,
    mut on_row: impl FnMut(&TimelineRow),
) -> Result<Report, engine::EngineError> {
    run_with(plan, |interval| on_row(interval.row))
}

/// Like `run`, and `on_interval` also sees the run's counters at the end of each row and the
/// row's distributions (what `--prometheus` exposes).
pub fn run_with(
    plan: &Arc<Plan>,
    mut on_interval: impl FnMut(&Interval),
) -> Result<Report, engine::EngineError> {
    let mut reports = run_together(
        std::slice::from_ref(plan),
        &[Duration::ZERO],
        |_, interval| on_interval(interval),
        |_, _| {},
    )?;
    Ok(reports.pop().expect("one plan, one report"))
}

/// Run several plans at once in this process (`blast overhead`), each with its own shards
/// (run by the same per-CPU threads, see `engine::Run::start_together`),
/// connections and aggregator, from one common start: plan `i` starts `offsets[i]` after
/// it. `on_interval(i, interval)` sees plan `i`'s timeline rows as they complete,
/// `on_snapshot(i, snap)` every snapshot of its shards before it is merged. The reports
/// come in the order of the plans. CPU time is the process's: with several plans, each
/// report's client CPU figures are those of the whole process.
pub fn run_together(
    plans: &[Arc<Plan>],
    offsets: &[Duration],
    mut on_interval: impl FnMut(usize, &Interval),
    mut on_snapshot: impl FnMut(usize, &stats::Snapshot),
) -> Result<Vec<Report>, engine::EngineError> {
    assert_eq!(plans.len(), offsets.len(), "one offset per plan");
    let cpu_before = limits::cpu_time();
    let run = engine::Run::start_together(plans, offsets)?;
    let (started_at, start_late) = (run.started_at, run.start_late);
    let mut aggs: Vec<Aggregator> = plans
        .iter()
        .map(|plan| {
            let due = plan.rate.as_ref().map(|spec| spec.due(plan.run_for));
            // A `--shard` process's target is its part of the run's.
            Aggregator::new(plan.cores, plan.interval, due).with_share(plan.shard.count)
        })
        .collect();
    // Every shard holds a sender until it ends: when all of a plan's are gone, nothing more
    // comes for it. A shard that panicked may hold its senders for ever: its alarm ends the
    // wait instead (and `join` reports the panic).
    let n = plans.len();
    let mut sel = crossbeam_channel::Select::new();
    for rx in &run.snapshots {
        sel.recv(rx);
    }
    let alarm = sel.recv(&run.panicked);
    let mut gone = vec![false; n];
    while (0..n).any(|i| !gone[i] && !aggs[i].all_done()) {
        let op = sel.select();
        let i = op.index();
        if i == alarm {
            match op.recv(&run.panicked) {
                Ok(_) => break,
                // Every shard ended without a panic: only snapshots are left to read.
                Err(_) => {
                    sel.remove(alarm);
                    continue;
                }
            }
        }
        match op.recv(&run.snapshots[i]) {
            Ok(snap) => {
                on_snapshot(i, &snap);
                aggs[i].push(snap);
                for interval in aggs[i].closed() {
                    on_interval(i, &interval);
                }
            }
            Err(_) => {
                sel.remove(i);
                gone[i] = true;
            }
        }
    }
    drop(sel);
    run.join()?;
    let cost = SelfCost {
        cpu: limits::cpu_time().saturating_sub(cpu_before),
        peak_rss_bytes: limits::peak_rss(),
    };
    Ok(plans
        .iter()
        .zip(&aggs)
        .zip(offsets)
        .map(|((plan, agg), &off)| {
            let started = report::Started {
                at: started_at + off,
                late: start_late,
            };
            Report::build(agg, plan, cost.clone(), started, engine::interrupted())
        })
        .collect())
}
