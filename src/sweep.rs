//! `blast sweep`: find the highest rate the target sustains (guidellm's sweep, AIPerf's
//! parameter sweeps). Every step is an ordinary load test (`crate::run` on a `Plan` built from
//! the user's options), so each keeps its full result document:
//!
//! 1. an unloaded probe: one connection, one request at a time (the latency floor);
//! 2. a closed-loop ceiling probe on `--conns` connections (the throughput ceiling);
//! 3. open-loop constant rates, evenly spaced from the unloaded rate up to the ceiling, with
//!    CO-corrected latency; past the ceiling while they still hold (the ceiling may be the
//!    connections'); the first that does not hold is run once more to confirm it; then
//!    `--refine` bisection steps between the last rate that held and the first that did not.
//!
//! Evenly spaced rather than geometric: the knee of a server is near its ceiling, so the
//! resolution that matters is there, and evenly spaced steps give it (ceiling / N each);
//! geometric steps crowd the low rates where nothing happens. Bisection then sharpens it.
//!
//! A rate holds when the server completed it within 1% (over the second half of the step,
//! after start-up; less two requests and a 10 ms hiccup's worth of that window), failures stayed under `--max-error-pct`, and the latency stayed
//! acceptable: with `--slo`, `--slo-pct` of the requests met the objectives; otherwise the
//! p99 stayed within `--p99-multiple` of the unloaded p99.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::{RunArgs, SweepArgs};
use crate::plan::{self, Plan, PlanError};
use crate::report::{Limit, Report};

/// Achieved may fall this far below offered before the server counts as behind; and by two
/// requests of the judged window more (whole requests are counted), and by what a hiccup of
/// `HICCUP` at the window's edge moves out of it (a completion that slips past the end
/// is not a server falling behind; over a long step this allowance fades).
pub const RATE_TOLERANCE: f64 = 0.01;
const COUNT_SLACK: f64 = 2.0;
const HICCUP: Duration = Duration::from_millis(10);
/// A rate step opens this many connections per request its expected latency keeps in
/// flight, so that a connection is free whenever a send is due.
const CONNS_MARGIN: f64 = 2.0;
/// The most steps (`--steps`, `--rates`) and bisections (`--refine`) a sweep takes.
const MAX_STEPS: usize = 100;
const MAX_REFINE: usize = 10;
/// Rates that did not hold and are run once more before the sweep stops there.
const MAX_CONFIRMATIONS: usize = 2;

fn err<T>(msg: impl Into<String>) -> Result<T, PlanError> {
    Err(PlanError(msg.into()))
}

/// What the sweep is asked to do, every value checked.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepSpec {
    pub steps: usize,
    pub step_duration: Duration,
    /// `--rates`, ascending; None: from the probes.
    pub rates: Option<Vec<f64>>,
    pub max_time: Duration,
    pub max_error_pct: f64,
    pub p99_multiple: f64,
    pub slo_pct: f64,
    pub refine: usize,
    pub max_conns: usize,
}

impl SweepSpec {
    /// Check the sweep's options, and refuse the load options the sweep sets itself.
    pub fn parse(s: &SweepArgs, run: &RunArgs) -> Result<SweepSpec, PlanError> {
        let own = [
            (
                run.duration.is_some(),
                "--duration",
                "each step runs --step-duration",
            ),
            (
                run.requests.is_some(),
                "--requests",
                "each step runs --step-duration",
            ),
            (
                run.rate.is_some(),
                "--rate",
                "the sweep chooses the rates (or --rates)",
            ),
            (
                run.pattern.is_some(),
                "--pattern",
                "the sweep's steps are constant rates",
            ),
            (
                run.stages.is_some(),
                "--stages",
                "the sweep's steps are constant rates",
            ),
            (
                run.max_in_flight.is_some(),
                "--max-in-flight",
                "the sweep sizes the connections of each step (--max-conns caps them)",
            ),
            (
                run.shard.is_some(),
                "--shard",
                "a sweep runs in one process",
            ),
            (
                run.start_at.is_some(),
                "--start-at",
                "a sweep starts at once",
            ),
            (
                run.timeline.is_some(),
                "--timeline",
                "--json keeps every step's timeline",
            ),
            (
                run.log.is_some(),
                "--log",
                "--json keeps every step's result",
            ),
        ];
        if let Some((_, flag, why)) = own.iter().find(|(given, _, _)| *given) {
            return err(format!("{flag} does not apply to blast sweep: {why}"));
        }
        if !(1..=MAX_STEPS).contains(&s.steps) {
            return err(format!("--steps must be between 1 and {MAX_STEPS}"));
        }
        let step_duration = plan::parse_duration("--step-duration", &s.step_duration)?;
        if step_duration < Duration::from_millis(100) {
            return err("--step-duration must be at least 100ms");
        }
        let max_time = plan::parse_duration("--max-time", &s.max_time)?;
        if max_time < step_duration {
            return err("--max-time must be at least --step-duration");
        }
        let rates = s.rates.as_deref().map(parse_rates).transpose()?;
        let pct = |flag: &str, v: f64, zero_ok: bool| {
            if v.is_finite() && v <= 100.0 && (v > 0.0 || (zero_ok && v == 0.0)) {
                Ok(v)
            } else {
                err(format!("{flag} must be a percentage, 0 to 100 (got {v})"))
            }
        };
        let max_error_pct = pct("--max-error-pct", s.max_error_pct, true)?;
        let slo_pct = pct("--slo-pct", s.slo_pct, false)?;
        if !(s.p99_multiple.is_finite() && s.p99_multiple >= 1.0) {
            return err(format!(
                "--p99-multiple must be at least 1 (got {})",
                s.p99_multiple
            ));
        }
        if s.refine > MAX_REFINE {
            return err(format!("--refine must be at most {MAX_REFINE}"));
        }
        if s.max_conns == 0 {
            return err("--max-conns must be at least 1");
        }
        Ok(SweepSpec {
            steps: s.steps,
            step_duration,
            rates,
            max_time,
            max_error_pct,
            p99_multiple: s.p99_multiple,
            slo_pct,
            refine: s.refine,
            max_conns: s.max_conns,
        })
    }
}

/// `--rates 50,100,200`: positive, finite, at most `MAX_STEPS`; returned ascending.
pub fn parse_rates(raw: &str) -> Result<Vec<f64>, PlanError> {
    let mut rates = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => rates.push(r),
            _ => {
                return err(format!(
                    "--rates: {part:?} is not a rate in requests per second (e.g. 50,100,200)"
                ))
            }
        }
    }
    if rates.is_empty() {
        return err("--rates: give at least one rate, e.g. 50,100,200");
    }
    if rates.len() > MAX_STEPS {
        return err(format!("--rates: at most {MAX_STEPS} rates"));
    }
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    Ok(rates)
}

/// `steps` rates evenly spaced above `low` (the unloaded rate) up to `ceiling`, the last at
/// the ceiling. A ceiling at or below the unloaded rate (a server that slows down under
/// concurrency) is spread from zero instead.
pub fn rates_between(low: f64, ceiling: f64, steps: usize) -> Vec<f64> {
    let n = steps as f64;
    let low = if ceiling > low { low } else { 0.0 };
    (1..=steps)
        .map(|k| low + (ceiling - low) * k as f64 / n)
        .collect()
}

/// Connections for a step at `rate` whose requests are expected to take `latency`: what
/// Little's law keeps in flight, times a margin, at least one per core, at most `cap`.
pub fn conns_for(rate: f64, latency: Duration, cores: usize, cap: usize) -> usize {
    let need = (rate * latency.as_secs_f64() * CONNS_MARGIN).ceil() as usize + cores;
    need.clamp(cores.max(1), cap.max(cores))
}

/// What stopped the sweep (the JSON's `sweep.limit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepLimit {
    /// Every step held.
    None,
    /// The server fell behind the offered rate, or its latency passed the bound.
    Server,
    /// Failed requests passed `--max-error-pct`.
    Errors,
    /// Too few requests met `--slo`.
    Slo,
    /// The next step would have ended after `--max-time`.
    Time,
    /// blast itself could not send the rate (or could not start the step).
    Client,
    /// Every connection `--max-conns` allows was busy: blast could not offer the rate.
    Connections,
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

impl SweepLimit {
    pub fn name(self) -> &'static str {
        match self {
            SweepLimit::None => "none",
            SweepLimit::Server => "server",
            SweepLimit::Errors => "errors",
            SweepLimit::Slo => "slo",
            SweepLimit::Time => "time",
            SweepLimit::Client => "client",
            SweepLimit::Connections => "connections",
            SweepLimit::Interrupted => "interrupted",
        }
    }
}

/// The figures a step is judged on, plain numbers of its result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub offered: Option<f64>,
    /// Successful responses per second over the judged window.
    pub achieved: f64,
    /// Length of that window: the second half of the step.
    pub window_s: f64,
    pub sent: u64,
    /// Requests without a 2xx answer: transport failures and other statuses.
    pub failed: u64,
    pub p99_us: u64,
    /// Share of completed requests that met `--slo`, when one was given.
    pub slo_ratio: Option<f64>,
    /// The open loop's own verdict, and why.
    pub limited_by: Option<Limit>,
    pub limited_why: String,
    /// Open loop: requests blast started per second over the step (what it offered).
    pub sent_rps: Option<f64>,
    pub interrupted: bool,
    pub conns: usize,
}

impl Figures {
    pub fn of(r: &Report, offered: Option<f64>, step: Duration) -> Figures {
        let (achieved, window_s) = steady_ok_rate(r, step);
        Figures {
            offered,
            achieved,
            window_s,
            sent: r.requests.sent,
            failed: r.requests.failed + r.requests.completed.saturating_sub(r.requests.ok),
            p99_us: r.latency_us.p99,
            slo_ratio: r.goodput.as_ref().map(|g| g.ratio),
            limited_by: r.open_loop.as_ref().map(|o| o.limited_by),
            limited_why: r
                .open_loop
                .as_ref()
                .map_or(String::new(), |o| o.why.clone()),
            sent_rps: r.open_loop.as_ref().map(|o| o.achieved_rps),
            interrupted: r.interrupted,
            conns: r.config.conns,
        }
    }

    pub fn error_pct(&self) -> f64 {
        match self.sent {
            0 => 0.0,
            n => self.failed as f64 * 100.0 / n as f64,
        }
    }
}

/// Successful responses per second over the second half of the sending window (start-up
/// and the drain after the last send left out), and that window's length. A run too short
/// for whole intervals there falls back to the whole run.
pub fn steady_ok_rate(r: &Report, step: Duration) -> (f64, f64) {
    let end = step.as_secs_f64();
    let (ok, span) = r
        .timeline
        .iter()
        .filter(|row| row.t_s - row.dt_s >= end / 2.0 - 1e-6 && row.t_s <= end + 1e-6)
        .fold((0u64, 0.0), |(ok, span), row| {
            (ok + row.ok, span + row.dt_s)
        });
    if span > 0.0 {
        (ok as f64 / span, span)
    } else if r.elapsed_s > 0.0 {
        (r.requests.ok as f64 / r.elapsed_s, r.elapsed_s)
    } else {
        (0.0, 0.0)
    }
}

/// What a step is held to.
#[derive(Clone, Debug, PartialEq)]
pub struct Criteria {
    pub max_error_pct: f64,
    /// With `--slo`: the share of requests that must meet it.
    pub slo_share: Option<f64>,
    /// Without: the p99 bound (`--p99-multiple` x the unloaded p99).
    pub p99_limit_us: Option<u64>,
    pub max_conns: usize,
}

/// How a rate step went.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Held,
    /// Run the step again, on this many connections: every connection was busy, or blast
    /// itself fell behind (once).
    Retry(usize),
    Stop(SweepLimit, String),
}

/// Judge one rate step; `retried` says it already ran once with fewer connections.
pub fn judge(f: &Figures, c: &Criteria, retried: bool) -> Outcome {
    let offered = f.offered.unwrap_or(0.0);
    if f.interrupted {
        return Outcome::Stop(SweepLimit::Interrupted, "interrupted".into());
    }
    let window = f.window_s.max(1e-3);
    let floor =
        offered * (1.0 - RATE_TOLERANCE - HICCUP.as_secs_f64() / window) - COUNT_SLACK / window;
    // blast late on a busy machine but still sending the rate: the server's figures stand
    // (the step says it was limited by the client); short of the rate, they would not.
    let sent = f.sent_rps.unwrap_or(offered);
    match f.limited_by {
        // Once more: on a busy machine blast may have been descheduled for a moment.
        Some(Limit::Client) if sent < offered * (1.0 - RATE_TOLERANCE) && !retried => {
            return Outcome::Retry(f.conns)
        }
        Some(Limit::Client) if sent < offered * (1.0 - RATE_TOLERANCE) => {
            return Outcome::Stop(
                SweepLimit::Client,
                format!(
                    "blast itself sent {sent:.1} of the {offered:.1} req/s ({}); the figures \
                     past it would describe blast",
                    f.limited_why
                ),
            )
        }
        // Too few connections for the server's latency: more can tell whether the server
        // keeps up; after one retry the latency grew past any margin (queueing).
        Some(Limit::Connections) if !retried && f.conns < c.max_conns => {
            return Outcome::Retry((f.conns * 4).min(c.max_conns))
        }
        Some(Limit::Connections) if f.conns >= c.max_conns => {
            return Outcome::Stop(
                SweepLimit::Connections,
                format!(
                    "all {} connections (--max-conns) were busy at {offered:.1} req/s, so \
                     blast could not offer the rate: raise --max-conns to know more",
                    f.conns
                ),
            )
        }
        Some(Limit::Connections) => {
            return Outcome::Stop(
                SweepLimit::Server,
                format!(
                    "even on {} connections (4x what its latency at lower rates needed) all \
                     were busy at {offered:.1} req/s: the server's latency grew with the load \
                     (it completed {:.1} req/s)",
                    f.conns, f.achieved
                ),
            )
        }
        _ => {}
    }
    if f.error_pct() > c.max_error_pct {
        return Outcome::Stop(
            SweepLimit::Errors,
            format!(
                "{} of {} requests failed or were not 2xx ({:.2}%) at {offered:.1} req/s, over \
                 --max-error-pct {}",
                f.failed,
                f.sent,
                f.error_pct(),
                c.max_error_pct
            ),
        );
    }
    if let (Some(share), Some(ratio)) = (c.slo_share, f.slo_ratio) {
        if ratio < share {
            return Outcome::Stop(
                SweepLimit::Slo,
                format!(
                    "{:.1}% of requests met the SLOs at {offered:.1} req/s, under --slo-pct {}",
                    ratio * 100.0,
                    share * 100.0
                ),
            );
        }
    }
    if f.achieved < floor {
        return Outcome::Stop(
            SweepLimit::Server,
            format!(
                "the server completed {:.1} of the {offered:.1} req/s offered (more than 1% \
                 behind)",
                f.achieved
            ),
        );
    }
    if f.limited_by == Some(Limit::Server) {
        return Outcome::Stop(SweepLimit::Server, f.limited_why.clone());
    }
    if let Some(limit) = c.p99_limit_us.filter(|l| f.p99_us > *l) {
        // The latency counts from the intended send: blast's own lateness is in that p99.
        if f.limited_by == Some(Limit::Client) {
            if !retried {
                return Outcome::Retry(f.conns);
            }
            return Outcome::Stop(
                SweepLimit::Client,
                format!(
                    "p99 {} at {offered:.1} req/s passed the bound {} while blast itself was \
                     late sending ({}): the bound may have been passed by blast's lateness",
                    ms(f.p99_us),
                    ms(limit),
                    f.limited_why
                ),
            );
        }
        return Outcome::Stop(
            SweepLimit::Server,
            format!(
                "p99 {} at {offered:.1} req/s passed the bound {} (--p99-multiple x the \
                 unloaded p99)",
                ms(f.p99_us),
                ms(limit)
            ),
        );
    }
    Outcome::Held
}

fn ms(us: u64) -> String {
    crate::report::text::fmt_us(us as f64)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    Unloaded,
    Ceiling,
    Rate,
}

/// One step: its headline figures, its verdict and its full result document.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub kind: StepKind,
    pub offered_rps: Option<f64>,
    /// Successful responses per second over the second half of the step.
    pub achieved_rps: f64,
    /// Successful share of the requests sent.
    pub ok_pct: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub conns: usize,
    /// Rate steps: whether the rate held; None for the probes.
    pub held: Option<bool>,
    /// "held", "retried" (re-run with more connections), a limit's name, or "probe".
    pub verdict: String,
    /// Why, in a sentence (empty when it held).
    pub why: String,
    /// The open loop's `limited_by`, for rate steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited_by: Option<Limit>,
    pub result: Report,
}

impl Step {
    fn new(kind: StepKind, offered: Option<f64>, report: Report, duration: Duration) -> Step {
        let f = Figures::of(&report, offered, duration);
        let r = &report.requests;
        Step {
            kind,
            offered_rps: offered,
            achieved_rps: f.achieved,
            ok_pct: match r.sent {
                0 => 0.0,
                n => r.ok as f64 * 100.0 / n as f64,
            },
            p50_ms: report.latency_us.p50 as f64 / 1e3,
            p99_ms: report.latency_us.p99 as f64 / 1e3,
            conns: report.config.conns,
            held: None,
            verdict: "probe".into(),
            why: String::new(),
            limited_by: f.limited_by,
            result: report,
        }
    }
}

/// The whole sweep: the answer, what stopped it, and every step.
#[derive(Clone, Debug, Serialize)]
pub struct Sweep {
    /// The highest offered rate that held; None when none did.
    pub max_sustainable_rps: Option<f64>,
    pub limit: SweepLimit,
    /// Why the sweep stopped there, in a sentence.
    pub limit_why: String,
    /// The offered rate of the step that stopped it, if one did.
    pub limit_rps: Option<f64>,
    pub unloaded_p99_ms: f64,
    pub p99_multiple: f64,
    /// What latency a step was held to: "slo" (`--slo`, `slo_pct` of requests) or "p99".
    pub criterion: &'static str,
    pub slo_pct: Option<f64>,
    pub max_error_pct: f64,
    /// The closed-loop ceiling probe's successful responses per second.
    pub ceiling_rps: Option<f64>,
    pub step_duration_s: f64,
    pub elapsed_s: f64,
    /// What the figures alone do not say.
    pub notes: Vec<String>,
    pub steps: Vec<Step>,
}

/// The JSON document: `{"sweep": {...}}`.
#[derive(Serialize)]
pub struct Document<'a> {
    pub sweep: &'a Sweep,
}

/// The load options of one step: the user's, with the sweep's duration, rate and
/// connections, and no output of its own.
fn step_args(base: &RunArgs, spec: &SweepSpec, rate: Option<f64>, conns: usize) -> RunArgs {
    let mut a = base.clone();
    a.duration = Some(format!("{}ms", spec.step_duration.as_millis()));
    // At least ten rows per step, so that its second half can be judged on whole rows.
    let interval = plan::parse_duration("--interval", &base.interval)
        .unwrap_or(Duration::from_secs(1))
        .min(spec.step_duration / 10)
        .max(Duration::from_millis(10));
    a.interval = format!("{}us", interval.as_micros());
    a.conns = conns;
    a.rate = rate;
    if rate.is_none() {
        a.slack = None;
    }
    a.json = None;
    a.quiet = true;
    a
}

/// Check everything before the first step: the sweep's options, and the load options as
/// the unloaded probe and a rate step would use them (the output file's directory too).
pub fn validate(args: &RunArgs, spec: &SweepSpec) -> Result<(), PlanError> {
    let mut probe = step_args(args, spec, None, 1);
    probe.cores = Some(1);
    probe.json = args.json.clone();
    Plan::from_args(&probe)?;
    let cores = args.cores.unwrap_or(1);
    plan::Spec::parse(
        &step_args(args, spec, Some(1.0), cores),
        &plan::allowed_cpus(),
    )?;
    Ok(())
}

/// Runs the steps and keeps what they measured.
struct Sweeper<'a, F: FnMut(usize, &Step)> {
    args: &'a RunArgs,
    spec: &'a SweepSpec,
    started: Instant,
    steps: Vec<Step>,
    on_step: F,
}

/// Why a step could not run.
enum NotRun {
    Time,
    Failed(String),
}

impl<F: FnMut(usize, &Step)> Sweeper<'_, F> {
    fn run(&mut self, kind: StepKind, args: RunArgs, offered: Option<f64>) -> Result<(), NotRun> {
        // A step's drain can outlast its sending: allow a tenth more.
        if self.started.elapsed() + self.spec.step_duration.mul_f64(1.1) > self.spec.max_time {
            return Err(NotRun::Time);
        }
        let plan = Arc::new(Plan::from_args(&args).map_err(|e| NotRun::Failed(e.0))?);
        let report = crate::run(&plan, |_| {}).map_err(|e| NotRun::Failed(e.to_string()))?;
        self.steps
            .push(Step::new(kind, offered, report, self.spec.step_duration));
        Ok(())
    }

    fn last(&mut self) -> &mut Step {
        self.steps.last_mut().expect("a step ran")
    }

    fn report_last(&mut self) {
        let step = self.steps.last().expect("a step ran");
        (self.on_step)(self.steps.len(), step);
    }

    /// Run a rate step (again with more connections if they were the limit) and judge it;
    /// also whether it ran twice.
    fn rate(
        &mut self,
        rate: f64,
        latency: Duration,
        c: &Criteria,
    ) -> Result<(Outcome, bool), NotRun> {
        let cores = self.args.cores.unwrap_or(1);
        let mut conns = conns_for(rate, latency, cores, self.spec.max_conns);
        let mut retried = false;
        loop {
            let args = step_args(self.args, self.spec, Some(rate), conns);
            self.run(StepKind::Rate, args, Some(rate))?;
            let step_duration = self.spec.step_duration;
            let f = Figures::of(&self.last().result, Some(rate), step_duration);
            let outcome = judge(&f, c, retried);
            let step = self.last();
            step.held = Some(outcome == Outcome::Held);
            match &outcome {
                Outcome::Held => step.verdict = "held".into(),
                Outcome::Retry(more) if *more == step.conns => {
                    step.verdict = "retried".into();
                    step.why = "blast fell behind its own schedule: run again".into();
                }
                Outcome::Retry(more) => {
                    step.verdict = "retried".into();
                    step.why = format!(
                        "all {} connections were busy: run again on {more}",
                        step.conns
                    );
                }
                Outcome::Stop(limit, why) => {
                    step.verdict = limit.name().into();
                    step.why = why.clone();
                }
            }
            self.report_last();
            match outcome {
                Outcome::Retry(more) => {
                    conns = more;
                    retried = true;
                }
                other => return Ok((other, retried)),
            }
        }
    }
}

/// Run the sweep; `on_step` sees each step (numbered from 1) as it ends.
pub fn run(args: &RunArgs, spec: &SweepSpec, on_step: impl FnMut(usize, &Step)) -> Sweep {
    let mut s = Sweeper {
        args,
        spec,
        started: Instant::now(),
        steps: Vec::new(),
        on_step,
    };
    let mut notes = Vec::new();
    let mut stop: Option<(SweepLimit, String, Option<f64>)>;
    let not_run = |e: NotRun| match e {
        NotRun::Time => (
            SweepLimit::Time,
            "the next step would have ended after --max-time".to_string(),
            None,
        ),
        NotRun::Failed(msg) => (SweepLimit::Client, msg, None),
    };

    // 1. Unloaded: one connection, one request at a time.
    let mut probe = step_args(args, spec, None, 1);
    probe.cores = Some(1);
    let mut unloaded_p99 = Duration::ZERO;
    // What a request is expected to take, for sizing the connections: the p90 rather than
    // the p99, which one hiccup of a busy machine can make seconds (and thousands of
    // connections); a step that needs more gets them on its retry.
    let mut latency = Duration::ZERO;
    let mut unloaded_rps = 0.0;
    let mut slo = false;
    match s.run(StepKind::Unloaded, probe, None) {
        Err(e) => stop = Some(not_run(e)),
        Ok(()) => {
            s.report_last();
            let step = s.last();
            let r = &step.result;
            unloaded_p99 = Duration::from_micros(r.latency_us.p99);
            latency = Duration::from_micros(r.latency_us.p90);
            unloaded_rps = step.achieved_rps;
            slo = r.goodput.is_some();
            let f = Figures::of(r, None, spec.step_duration);
            let ratio = f.slo_ratio.unwrap_or(1.0);
            stop = if r.interrupted {
                Some((SweepLimit::Interrupted, "interrupted".into(), None))
            } else if r.requests.ok == 0 {
                Some((
                    SweepLimit::Errors,
                    format!(
                        "the unloaded probe got no successful response ({} sent)",
                        f.sent
                    ),
                    None,
                ))
            } else {
                None
            };
            // A short probe is a small sample: its failures or missed SLOs are noted, and
            // the rate steps (which judge them) decide.
            if f.error_pct() > spec.max_error_pct {
                notes.push(format!(
                    "even unloaded, {} of {} requests failed or were not 2xx",
                    f.failed, f.sent
                ));
            }
            if ratio * 100.0 < spec.slo_pct {
                notes.push(format!(
                    "even unloaded, only {:.1}% of requests met the SLOs",
                    ratio * 100.0
                ));
            }
            if step.p99_ms * 4e-3 > spec.step_duration.as_secs_f64() {
                notes.push(format!(
                    "the unloaded p99 ({:.0} ms) is more than a quarter of --step-duration: \
                     a step's second half may still be its start-up; raise --step-duration",
                    step.p99_ms
                ));
            }
        }
    }
    let criteria = Criteria {
        max_error_pct: spec.max_error_pct,
        slo_share: slo.then_some(spec.slo_pct / 100.0),
        p99_limit_us: (!slo)
            .then(|| (unloaded_p99.as_micros() as f64 * spec.p99_multiple).ceil() as u64),
        max_conns: spec.max_conns,
    };

    // 2. The ceiling: closed loop on --conns connections.
    let mut ceiling = None;
    if stop.is_none() && spec.rates.is_none() {
        let cores = args.cores;
        let mut a = step_args(args, spec, None, args.conns);
        a.cores = cores;
        match s.run(StepKind::Ceiling, a, None) {
            Err(e) => stop = Some(not_run(e)),
            Ok(()) => {
                s.report_last();
                let step = s.last();
                let r = &step.result;
                if r.interrupted {
                    stop = Some((SweepLimit::Interrupted, "interrupted".into(), None));
                } else if step.achieved_rps <= 0.0 {
                    stop = Some((
                        SweepLimit::Errors,
                        "the ceiling probe got no successful response".into(),
                        None,
                    ));
                }
                ceiling = Some(step.achieved_rps);
                if step.ok_pct > 99.0
                    && (r.latency_us.p50 as f64) < 2.0 * unloaded_p99.as_micros() as f64
                {
                    notes.push(format!(
                        "the ceiling probe's latency stayed near the unloaded one: {} \
                         connections may not saturate the server (raise --conns); rate steps \
                         go on past the ceiling while they hold",
                        r.config.conns
                    ));
                }
            }
        }
    }

    // 3. Constant rates, ascending, until one does not hold.
    let mut held: Option<f64> = None;
    let rates = match (&spec.rates, ceiling) {
        (Some(r), _) => r.clone(),
        (None, Some(c)) => rates_between(unloaded_rps, c, spec.steps),
        (None, None) => Vec::new(),
    };
    // Past the ceiling, steps go on at the same spacing.
    let step_up = match rates.as_slice() {
        [a, b, ..] => b - a,
        [a] => *a,
        [] => 0.0,
    };
    let mut failed_at = None;
    let mut confirmations = MAX_CONFIRMATIONS;
    if stop.is_none() {
        let extra: Vec<f64> = match (ceiling, spec.rates.is_none()) {
            // Past the ceiling while the rates hold: it may have been the connections'.
            (Some(c), true) => (1..=spec.steps).map(|j| c + step_up * j as f64).collect(),
            _ => Vec::new(),
        };
        for rate in rates.iter().chain(extra.iter()).copied() {
            let (outcome, retried) = match s.rate(rate, latency, &criteria) {
                Ok((o, retried)) => (Ok(o), retried),
                Err(e) => (Err(e), false),
            };
            match outcome {
                Err(e) => {
                    stop = Some(not_run(e));
                    break;
                }
                Ok(Outcome::Held) => {
                    held = Some(rate);
                    let p90 = s.last().result.latency_us.p90;
                    latency = latency.max(Duration::from_micros(p90));
                }
                Ok(Outcome::Stop(limit, why)) => {
                    // A knee is confirmed by a second run at the same rate before the sweep
                    // stops there: a busy machine's hiccup is not one.
                    let judged = matches!(
                        limit,
                        SweepLimit::Server | SweepLimit::Errors | SweepLimit::Slo
                    );
                    // A step run twice already (on more connections) is confirmed.
                    if judged && confirmations > 0 && !retried {
                        confirmations -= 1;
                        match s.rate(rate, latency, &criteria).map(|(o, _)| o) {
                            Ok(Outcome::Held) => {
                                let again = s.steps.len() - 2;
                                let first = &mut s.steps[again];
                                first.verdict = "unconfirmed".into();
                                first.why = format!("{why}; held when run again");
                                held = Some(rate);
                                continue;
                            }
                            Err(e) => {
                                stop = Some(not_run(e));
                                break;
                            }
                            // Confirmed: the first run's reason stands (the second may
                            // name another face of the same knee).
                            Ok(Outcome::Stop(..)) => {
                                failed_at = Some(rate);
                                stop = Some((limit, why, Some(rate)));
                                break;
                            }
                            Ok(Outcome::Retry(_)) => unreachable!("retries are run by `rate`"),
                        }
                    }
                    failed_at = Some(rate);
                    stop = Some((limit, why, Some(rate)));
                    break;
                }
                Ok(Outcome::Retry(_)) => unreachable!("retries are run by `rate`"),
            }
        }
    }

    // 4. Bisect between the last rate that held and the first that did not.
    let refinable = matches!(
        stop,
        Some((
            SweepLimit::Server | SweepLimit::Errors | SweepLimit::Slo | SweepLimit::Connections,
            ..
        ))
    );
    if let (Some(mut hi), true, None) = (failed_at, refinable, &spec.rates) {
        let mut lo = held.unwrap_or(0.0);
        for _ in 0..spec.refine {
            let mid = (lo + hi) / 2.0;
            match s.rate(mid, latency, &criteria).map(|(o, _)| o) {
                Err(NotRun::Time) => {
                    notes.push("--max-time ended the refinement early".into());
                    break;
                }
                Err(NotRun::Failed(msg)) => {
                    notes.push(format!("a refinement step could not run: {msg}"));
                    break;
                }
                Ok(Outcome::Held) => {
                    lo = mid;
                    held = Some(held.map_or(mid, |h: f64| h.max(mid)));
                }
                Ok(Outcome::Stop(SweepLimit::Interrupted, why)) => {
                    stop = Some((SweepLimit::Interrupted, why, Some(mid)));
                    break;
                }
                // blast could not offer the rate: nothing learnt about the server.
                Ok(Outcome::Stop(SweepLimit::Client, why)) => {
                    notes.push(format!("refinement stopped at {mid:.1} req/s: {why}"));
                    break;
                }
                Ok(Outcome::Stop(..)) => hi = mid,
                Ok(Outcome::Retry(_)) => unreachable!("retries are run by `rate`"),
            }
        }
    }

    let (limit, limit_why, limit_rps) =
        stop.unwrap_or((SweepLimit::None, "every step held".to_string(), None));
    // The rates that held are the answer: say if blast's side limited one of them.
    if let Some(o) = s
        .steps
        .iter()
        .filter(|st| st.held == Some(true))
        .filter_map(|st| st.result.open_loop.as_ref())
        .find(|o| matches!(o.limited_by, Limit::Client | Limit::Connections))
    {
        notes.push(format!(
            "a rate that held was limited by blast's side ({}), though it sent the rate: {}",
            o.limited_by.name(),
            o.why
        ));
    }
    Sweep {
        max_sustainable_rps: held,
        limit,
        limit_why,
        limit_rps,
        unloaded_p99_ms: unloaded_p99.as_micros() as f64 / 1e3,
        p99_multiple: spec.p99_multiple,
        criterion: if slo { "slo" } else { "p99" },
        slo_pct: slo.then_some(spec.slo_pct),
        max_error_pct: spec.max_error_pct,
        ceiling_rps: ceiling,
        step_duration_s: spec.step_duration.as_secs_f64(),
        elapsed_s: s.started.elapsed().as_secs_f64(),
        notes,
        steps: s.steps,
    }
}

/// `blast sweep URL [options]`: validate, run the steps, print the table, write the JSON.
pub fn command(sweep_args: &SweepArgs, args: &RunArgs) -> ExitCode {
    use crate::app::fail;
    let spec = match SweepSpec::parse(sweep_args, args).and_then(|spec| {
        validate(args, &spec)?;
        Ok(spec)
    }) {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    if let Err(e) = crate::app::on_stop_signals() {
        return fail(2, format!("cannot install the Ctrl-C/SIGTERM handler: {e}"));
    }
    let live = !args.quiet;
    let sweep = run(args, &spec, |n, step| {
        if live {
            eprintln!("{}", crate::report::sweep::live_line(n, step));
        }
    });
    let doc = Document { sweep: &sweep };
    let failures = crate::app::summary_and_json(args.json.as_deref(), &doc, "sweep result", |w| {
        crate::report::sweep::write(&mut &mut *w, &sweep)
    });
    for f in &failures {
        eprintln!("blast: {f}");
    }
    if sweep.limit == SweepLimit::Interrupted {
        return crate::app::interrupted_exit();
    }
    if !failures.is_empty() {
        return ExitCode::from(1);
    }
    if sweep.steps.iter().all(|s| s.result.requests.ok == 0) {
        return fail(1, "no successful responses");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Figures {
        Figures {
            offered: Some(100.0),
            achieved: 100.0,
            window_s: 5.0,
            sent: 1000,
            failed: 0,
            p99_us: 12_000,
            conns: 8,
            ..Figures::default()
        }
    }

    fn criteria() -> Criteria {
        Criteria {
            max_error_pct: 1.0,
            slo_share: None,
            p99_limit_us: Some(50_000),
            max_conns: 100,
        }
    }

    fn limit_of(o: Outcome) -> SweepLimit {
        match o {
            Outcome::Stop(l, _) => l,
            other => panic!("expected a stop, got {other:?}"),
        }
    }

    #[test]
    fn a_step_that_keeps_pace_holds() {
        assert_eq!(judge(&figures(), &criteria(), false), Outcome::Held);
        // Within 1% (and two requests and a 10 ms hiccup of the 5 s window: 98.4).
        let close = Figures {
            achieved: 98.5,
            ..figures()
        };
        assert_eq!(judge(&close, &criteria(), false), Outcome::Held);
    }

    #[test]
    fn falling_behind_errors_slo_and_p99_stop_it() {
        let behind = Figures {
            achieved: 98.3,
            ..figures()
        };
        assert_eq!(
            limit_of(judge(&behind, &criteria(), false)),
            SweepLimit::Server
        );
        let errors = Figures {
            failed: 11,
            ..figures()
        };
        assert_eq!(
            limit_of(judge(&errors, &criteria(), false)),
            SweepLimit::Errors
        );
        let slow = Figures {
            p99_us: 50_001,
            ..figures()
        };
        assert_eq!(
            limit_of(judge(&slow, &criteria(), false)),
            SweepLimit::Server
        );
        // With SLOs, the share that met them decides, not the p99.
        let slo = Criteria {
            slo_share: Some(0.9),
            p99_limit_us: None,
            ..criteria()
        };
        let missed = Figures {
            slo_ratio: Some(0.5),
            ..slow.clone()
        };
        assert_eq!(limit_of(judge(&missed, &slo, false)), SweepLimit::Slo);
        let met = Figures {
            slo_ratio: Some(0.95),
            ..slow
        };
        assert_eq!(judge(&met, &slo, false), Outcome::Held);
    }

    #[test]
    fn busy_connections_are_retried_once_then_stop() {
        let pinned = Figures {
            limited_by: Some(Limit::Connections),
            achieved: 80.0,
            ..figures()
        };
        assert_eq!(judge(&pinned, &criteria(), false), Outcome::Retry(32));
        assert_eq!(
            limit_of(judge(&pinned, &criteria(), true)),
            SweepLimit::Server
        );
        let at_cap = Figures {
            conns: 100,
            ..pinned.clone()
        };
        assert_eq!(
            limit_of(judge(&at_cap, &criteria(), false)),
            SweepLimit::Connections
        );
        // blast late but sending the rate: judged on the server's figures.
        let late = Figures {
            limited_by: Some(Limit::Client),
            sent_rps: Some(100.0),
            ..figures()
        };
        assert_eq!(judge(&late, &criteria(), false), Outcome::Held);
        // ... but a p99 past the bound may be blast's own lateness: once more, then client.
        let late_and_slow = Figures {
            p99_us: 50_001,
            ..late.clone()
        };
        assert_eq!(judge(&late_and_slow, &criteria(), false), Outcome::Retry(8));
        assert_eq!(
            limit_of(judge(&late_and_slow, &criteria(), true)),
            SweepLimit::Client
        );
        let short = Figures {
            sent_rps: Some(90.0),
            ..late
        };
        assert_eq!(judge(&short, &criteria(), false), Outcome::Retry(8));
        assert_eq!(
            limit_of(judge(&short, &criteria(), true)),
            SweepLimit::Client
        );
    }

    #[test]
    fn rates_are_evenly_spaced_up_to_the_ceiling() {
        assert_eq!(
            rates_between(100.0, 500.0, 4),
            vec![200.0, 300.0, 400.0, 500.0]
        );
        // A ceiling below the unloaded rate: spread from zero.
        assert_eq!(rates_between(100.0, 80.0, 2), vec![40.0, 80.0]);
        assert_eq!(
            parse_rates(" 200,50 ,100,100").unwrap(),
            vec![50.0, 100.0, 200.0]
        );
        for bad in ["", "0", "-5", "fast", "1,nan"] {
            assert!(parse_rates(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connections_follow_rate_times_latency() {
        let ms = Duration::from_millis;
        // 400 req/s x 10 ms = 4 in flight, x2 margin, + 1 per core.
        assert_eq!(conns_for(400.0, ms(10), 1, 1000), 9);
        assert_eq!(conns_for(0.1, ms(1), 4, 1000), 5);
        assert_eq!(conns_for(1e6, ms(1000), 2, 500), 500);
    }
}
