//! Open-loop send schedule: the intended send time of every request, per shard.
//!
//! Everything is computed in *total* units. `r(t)` is the rate of the whole run (all shards) and
//! `Λ(t) = ∫₀ᵗ r` is how many sends the whole run should have made by `t`. With uniform arrivals
//! the whole run's j-th send (j = 0, 1, 2, ...) is at `Λ(t) = j`, and shard i of n owns the sends
//! with `j ≡ i (mod n)`. That is the same as giving each shard rate `r/n` with phase `i/n`, but the
//! targets stay exact integers in f64, so a constant 1000 req/s is exactly `j / 1000` seconds and
//! the shards' schedules merge into exactly the one-shard schedule. With Poisson arrivals each
//! shard walks `Λ` in independent `n·Exp(1)` steps from its own seeded stream.
//!
//! Times are always `t0 + τ` of the rate piece that contains the target, with `τ` solved
//! analytically inside the piece, so no error accumulates across sends.
//!
//! The same curve, integrated piece by piece, says how many sends are due in a window
//! ([`RateSpec::sends_due`]): the whole run's send j is due at the first instant Λ passes j, so
//! `ceil(Λ(t))` rate-driven sends fall in [0, t), and a burst at `k·every` falls in every window
//! that contains that instant. With uniform arrivals that is exactly what the shards' schedules
//! emit in the window, whatever the shard count; with Poisson arrivals it is the expectation
//! (Λ itself, plus the bursts). The report's targets come from it, so they agree with the
//! engine by construction.

use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::rng::SplitMix64;

/// Chaos holds shorter than this would make the rate curve (and the count of sends due) cost more
/// to walk than the sends it drives.
pub const MIN_CHAOS_HOLD: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Arrivals {
    /// Evenly spaced in Λ: exact counts per window.
    Uniform,
    /// Exponential gaps in Λ (a non-homogeneous Poisson process).
    Poisson,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Pattern {
    /// Rate R throughout.
    Constant,
    /// `size` requests at once every `every` (the first burst at t=0), on top of rate R (R may be 0).
    Burst { size: u64, every: Duration },
    /// Linear from `from` to R over `over`, then R.
    Ramp { from: f64, over: Duration },
    /// R, except `rate` during the last `len` of every period `every`, so the run starts at R.
    Spike {
        rate: f64,
        len: Duration,
        every: Duration,
    },
    /// Seeded random rates, uniform in [0, R], each held for a random time in [min_hold, max_hold].
    Chaos {
        min_hold: Duration,
        max_hold: Duration,
    },
    /// k6-style: linear from the previous target (0 before the first stage) to each stage's target
    /// over its duration; the schedule ends with the last stage. R is not used.
    // Internally tagged enums cannot hold a bare sequence, so it goes out as {"kind":"stages","stages":[...]}.
    #[serde(serialize_with = "serialize_stages")]
    Stages(Vec<Stage>),
}

impl Pattern {
    pub fn name(&self) -> &'static str {
        match self {
            Pattern::Constant => "constant",
            Pattern::Burst { .. } => "burst",
            Pattern::Ramp { .. } => "ramp",
            Pattern::Spike { .. } => "spike",
            Pattern::Chaos { .. } => "chaos",
            Pattern::Stages(_) => "stages",
        }
    }
}

fn serialize_stages<S: Serializer>(stages: &[Stage], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("Stages", 1)?;
    st.serialize_field("stages", stages)?;
    st.end()
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stage {
    pub duration: Duration,
    /// Total req/s reached at the end of the stage.
    pub target: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RateSpec {
    /// Total req/s over all shards (R).
    pub rate: f64,
    pub pattern: Pattern,
    pub arrivals: Arrivals,
    pub seed: u64,
}

fn fmt_dur(d: &Duration) -> humantime::FormattedDuration {
    humantime::format_duration(*d)
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("rate must be a finite number >= 0 req/s, got {0}")]
    InvalidRate(f64),
    #[error("the {0} pattern needs a rate > 0 req/s")]
    ZeroRate(&'static str),
    #[error("burst size must be at least 1 request")]
    BurstSize,
    #[error("burst interval must be longer than 0s")]
    BurstEvery,
    #[error("ramp start rate must be a finite number >= 0 req/s, got {0}")]
    RampFrom(f64),
    #[error("ramp duration must be longer than 0s")]
    RampOver,
    #[error("the ramp lasts {}, longer than the {} run", fmt_dur(.over), fmt_dur(.run))]
    RampLongerThanRun { over: Duration, run: Duration },
    #[error("spike rate must be a finite number >= 0 req/s, got {0}")]
    SpikeRate(f64),
    #[error(
        "spike length must be longer than 0s and shorter than its period, got {} every {}",
        fmt_dur(.len),
        fmt_dur(.every)
    )]
    SpikeLen { len: Duration, every: Duration },
    #[error("the first spike would start at {}, after the {} run has ended", fmt_dur(.start), fmt_dur(.run))]
    SpikeAfterRun { start: Duration, run: Duration },
    #[error(
        "chaos hold times must be at least {} with min <= max, got {} to {}",
        fmt_dur(&MIN_CHAOS_HOLD),
        fmt_dur(.min),
        fmt_dur(.max)
    )]
    ChaosHold { min: Duration, max: Duration },
    #[error("at least one stage is required")]
    NoStages,
    #[error("stage {index} target must be a finite number >= 0 req/s, got {target}")]
    StageTarget { index: usize, target: f64 },
    #[error("the stages must last longer than 0s in total")]
    StagesTooShort,
    #[error("stage `{0}` must be DURATION:RATE, like 30s:100")]
    StageSyntax(String),
    #[error("stage `{stage}` has an invalid duration: {reason}")]
    StageDuration { stage: String, reason: String },
    #[error("stage `{0}` rate must be a finite number >= 0 req/s")]
    StageRate(String),
}

/// "30s:100,1m:1000,30s:0" -> stages (humantime durations, rates >= 0, at least one stage).
pub fn parse_stages(s: &str) -> Result<Vec<Stage>, SpecError> {
    if s.trim().is_empty() {
        return Err(SpecError::NoStages);
    }
    s.split(',').map(|part| parse_stage(part.trim())).collect()
}

fn parse_stage(stage: &str) -> Result<Stage, SpecError> {
    let syntax = || SpecError::StageSyntax(stage.to_string());
    let (d, r) = stage.split_once(':').ok_or_else(syntax)?;
    let (d, r) = (d.trim(), r.trim());
    if d.is_empty() || r.is_empty() || r.contains(':') {
        return Err(syntax());
    }
    let duration = humantime::parse_duration(d).map_err(|e| SpecError::StageDuration {
        stage: stage.to_string(),
        reason: e.to_string(),
    })?;
    let target: f64 = r
        .parse()
        .map_err(|_| SpecError::StageRate(stage.to_string()))?;
    if !is_rate(target) {
        return Err(SpecError::StageRate(stage.to_string()));
    }
    Ok(Stage { duration, target })
}

fn is_rate(r: f64) -> bool {
    r.is_finite() && r >= 0.0
}

/// Anything that is not a usable rate counts as 0, so an unvalidated spec cannot poison the
/// arithmetic with NaN (which would make every piece look empty and loop forever).
fn clean(r: f64) -> f64 {
    if is_rate(r) {
        r
    } else {
        0.0
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn duration_from_nanos(ns: u128) -> Option<Duration> {
    let secs = u64::try_from(ns / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (ns % 1_000_000_000) as u32))
}

impl RateSpec {
    /// Check the spec; `run` is the run's duration when one is known.
    pub fn validate(&self, run: Option<Duration>) -> Result<(), SpecError> {
        if !is_rate(self.rate) {
            return Err(SpecError::InvalidRate(self.rate));
        }
        let needs_rate = matches!(
            self.pattern,
            Pattern::Constant
                | Pattern::Ramp { .. }
                | Pattern::Spike { .. }
                | Pattern::Chaos { .. }
        );
        if needs_rate && self.rate == 0.0 {
            return Err(SpecError::ZeroRate(self.pattern.name()));
        }
        match &self.pattern {
            Pattern::Constant => {}
            Pattern::Burst { size, every } => {
                if *size == 0 {
                    return Err(SpecError::BurstSize);
                }
                if every.is_zero() {
                    return Err(SpecError::BurstEvery);
                }
            }
            Pattern::Ramp { from, over } => {
                if !is_rate(*from) {
                    return Err(SpecError::RampFrom(*from));
                }
                if over.is_zero() {
                    return Err(SpecError::RampOver);
                }
                if let Some(run) = run {
                    if *over > run {
                        return Err(SpecError::RampLongerThanRun { over: *over, run });
                    }
                }
            }
            Pattern::Spike { rate, len, every } => {
                if !is_rate(*rate) {
                    return Err(SpecError::SpikeRate(*rate));
                }
                if len.is_zero() || len >= every {
                    return Err(SpecError::SpikeLen {
                        len: *len,
                        every: *every,
                    });
                }
                // A spike that never happens is certainly not what was asked for.
                let start = *every - *len;
                if let Some(run) = run {
                    if start >= run {
                        return Err(SpecError::SpikeAfterRun { start, run });
                    }
                }
            }
            Pattern::Chaos { min_hold, max_hold } => {
                if *min_hold < MIN_CHAOS_HOLD || min_hold > max_hold {
                    return Err(SpecError::ChaosHold {
                        min: *min_hold,
                        max: *max_hold,
                    });
                }
            }
            Pattern::Stages(stages) => {
                if stages.is_empty() {
                    return Err(SpecError::NoStages);
                }
                for (i, st) in stages.iter().enumerate() {
                    if !is_rate(st.target) {
                        return Err(SpecError::StageTarget {
                            index: i + 1,
                            target: st.target,
                        });
                    }
                }
                if stages.iter().all(|st| st.duration.is_zero()) {
                    return Err(SpecError::StagesTooShort);
                }
            }
        }
        Ok(())
    }

    /// Length of the pattern when it has one (Stages), else None.
    pub fn natural_duration(&self) -> Option<Duration> {
        match &self.pattern {
            Pattern::Stages(stages) => Some(
                stages
                    .iter()
                    .fold(Duration::ZERO, |acc, st| acc.saturating_add(st.duration)),
            ),
            _ => None,
        }
    }
}

/// Shard `shard` of `shards`'s part of an integer quantity: `total / shards`, plus one for the
/// first `total % shards` shards.
pub fn shard_share(total: u64, shard: usize, shards: usize) -> u64 {
    let n = shards.max(1) as u64;
    total / n + u64::from((shard as u64) < total % n)
}

/// Where one engine shard stands in the whole run: core `core` of `cores` of process shard
/// `process` of `processes` (`--shard`; 0 of 1 without it). Work is split first between the
/// processes, then between each process's cores, so that the processes' core counts may
/// differ and all shards together still do exactly what one process would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub process: usize,
    pub processes: usize,
    pub core: usize,
    pub cores: usize,
}

impl Part {
    /// Core `core` of `cores` of a run that is not split between processes.
    pub fn core(core: usize, cores: usize) -> Part {
        Part {
            process: 0,
            processes: 1,
            core,
            cores,
        }
    }

    /// This shard's part of an integer quantity (connections, `--requests`, ...).
    pub fn share(&self, total: u64) -> u64 {
        let process = shard_share(total, self.process, self.processes);
        shard_share(process, self.core, self.cores)
    }

    /// The whole run's sends `phase + k * stride` (k = 0, 1, ...) are this shard's: those of
    /// its process (`j mod processes == process`), dealt in turn to the process's cores.
    fn phase(&self) -> u64 {
        self.process as u64 + self.processes as u64 * self.core as u64
    }

    fn stride(&self) -> u64 {
        (self.processes.max(1) * self.cores.max(1)) as u64
    }
}

// ---------------------------------------------------------------------------------------------
// PRNG

const SHARD_SALT: u64 = 0x5348_4152_4453_414c; // "SHARDSAL"
const CHAOS_SALT: u64 = 0x4348_414f_5353_414c; // "CHAOSSAL"

// ---------------------------------------------------------------------------------------------
// Chaos rate curve

/// The chaos (hold, rate) sequence. Seeded by the spec's seed alone, so every shard (and the
/// count of sends due) walks the same curve.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ChaosGen {
    rng: SplitMix64,
    max_rate: f64,
    min_ns: u64,
    span_ns: u64,
}

impl ChaosGen {
    fn new(seed: u64, max_rate: f64, min_hold: Duration, max_hold: Duration) -> Self {
        // Clamped (not trusted) so an unvalidated spec cannot make the curve unwalkable.
        let min_ns = nanos(min_hold).max(nanos(MIN_CHAOS_HOLD));
        let max_ns = nanos(max_hold).max(min_ns);
        ChaosGen {
            rng: SplitMix64::new(seed, CHAOS_SALT),
            max_rate,
            min_ns,
            span_ns: max_ns - min_ns,
        }
    }

    /// Next piece: (hold in ns, total rate).
    fn piece(&mut self) -> (u64, f64) {
        let hold = self.min_ns + self.rng.below(self.span_ns.saturating_add(1));
        let rate = self.rng.unit() * self.max_rate;
        (hold, rate)
    }
}

/// Where a walk along the chaos curve stands: the piece [start_ns, end_ns) at `rate`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ChaosWalk {
    gen: ChaosGen,
    start_ns: u128,
    end_ns: u128,
    rate: f64,
}

impl ChaosWalk {
    fn new(mut gen: ChaosGen) -> Self {
        let (hold, rate) = gen.piece();
        ChaosWalk {
            gen,
            start_ns: 0,
            end_ns: u128::from(hold),
            rate,
        }
    }

    fn advance(&mut self) {
        let (hold, rate) = self.gen.piece();
        self.start_ns = self.end_ns;
        self.end_ns += u128::from(hold);
        self.rate = rate;
    }
}

// ---------------------------------------------------------------------------------------------
// Rate pieces

/// A piece of the total rate curve: rate `r0 + slope·τ` for τ in [0, len) from `t0` seconds, with
/// `Λ(t0) = l0`. `len` may be infinite (then slope is 0).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Piece {
    t0: f64,
    len: f64,
    r0: f64,
    slope: f64,
    l0: f64,
}

impl Piece {
    fn constant(t0: f64, len: f64, rate: f64, l0: f64) -> Self {
        Piece {
            t0,
            len,
            r0: rate,
            slope: 0.0,
            l0,
        }
    }

    fn l_end(&self) -> f64 {
        if self.len.is_infinite() {
            // inf * 0 would be NaN; an endless piece at rate 0 adds nothing.
            if self.r0 > 0.0 {
                f64::INFINITY
            } else {
                self.l0
            }
        } else {
            self.lambda_after(self.len)
        }
    }

    /// Λ at `t` seconds, for `t` in the piece (clamped to it).
    fn lambda(&self, t: f64) -> f64 {
        self.lambda_after((t - self.t0).clamp(0.0, self.len))
    }

    fn lambda_after(&self, tau: f64) -> f64 {
        self.l0 + tau * (self.r0 + 0.5 * self.slope * tau)
    }

    /// The time at which Λ reaches `target`, for `l0 <= target < l_end`.
    fn invert(&self, target: f64) -> f64 {
        let d = (target - self.l0).max(0.0);
        let tau = if d == 0.0 {
            0.0
        } else if self.slope == 0.0 {
            d / self.r0
        } else {
            // Root of r0·τ + slope·τ²/2 = d in the form without cancellation, valid for either
            // sign of the slope and for r0 = 0.
            let disc = (self.r0 * self.r0 + 2.0 * self.slope * d).max(0.0);
            2.0 * d / (self.r0 + disc.sqrt())
        };
        self.t0 + tau.min(self.len)
    }

    /// When the schedule sends the whole run's send `target`, which this piece holds: None at or
    /// past `end` (a pattern that ends). The one place a send time is computed, so the schedule
    /// and the count of sends due (which settles sends within rounding of a window's edge with
    /// it) cannot disagree.
    fn send_time(&self, target: f64, end: Option<f64>) -> Option<Duration> {
        let t = self.invert(target);
        if end.is_some_and(|end| t >= end) {
            return None;
        }
        Duration::try_from_secs_f64(t).ok()
    }
}

/// Spike periods: `quiet` seconds at `base` then `every - quiet` seconds at `peak`, period k
/// starting at `k·every` with `Λ = k·area`. Located by arithmetic so a near-zero base rate cannot
/// make us walk periods one by one.
#[derive(Debug)]
struct Spikes {
    base: f64,
    peak: f64,
    quiet: f64,
    every: f64,
    area: f64,
}

impl Spikes {
    /// Period `k`'s base and peak pieces.
    fn period(&self, k: f64) -> (Piece, Piece) {
        let l0 = k * self.area;
        let t0 = k * self.every;
        let base_area = self.base * self.quiet;
        (
            Piece::constant(t0, self.quiet, self.base, l0),
            Piece::constant(
                t0 + self.quiet,
                self.every - self.quiet,
                self.peak,
                l0 + base_area,
            ),
        )
    }

    /// floor(x / unit) as a whole number of periods, corrected where the division rounds across
    /// a period boundary.
    fn periods(x: f64, unit: f64) -> f64 {
        let k = (x / unit).floor();
        if k * unit > x {
            k - 1.0
        } else if (k + 1.0) * unit <= x {
            k + 1.0
        } else {
            k
        }
    }
}

/// A walk along the chaos curve as pieces, with the one before the current piece kept for the
/// count of sends due (see `Curve::around`).
#[derive(Debug)]
struct ChaosPieces {
    /// The walk at its start, to walk again from when asked about an earlier time.
    first: ChaosWalk,
    walk: ChaosWalk,
    piece: Piece,
    prev: Option<Piece>,
}

impl ChaosPieces {
    fn new(walk: ChaosWalk) -> Self {
        ChaosPieces {
            first: walk,
            walk,
            piece: Piece::constant(0.0, walk.end_ns as f64 / 1e9, walk.rate, 0.0),
            prev: None,
        }
    }

    fn advance(&mut self) {
        let l0 = self.piece.l_end();
        self.walk.advance();
        let t0 = self.walk.start_ns as f64 / 1e9;
        let len = (self.walk.end_ns - self.walk.start_ns) as f64 / 1e9;
        self.prev = Some(self.piece);
        self.piece = Piece::constant(t0, len, self.walk.rate, l0);
    }
}

/// The pieces around a time: the one containing it (None once a curve that ends has ended) and
/// the one before it (None in the first piece).
#[derive(Clone, Copy, Debug, Default)]
struct Around {
    prev: Option<Piece>,
    cur: Option<Piece>,
}

impl Around {
    /// Λ at `t` seconds, the time these pieces are around.
    fn lambda(&self, t: f64) -> f64 {
        match (self.cur, self.prev) {
            (Some(p), _) => p.lambda(t),
            (None, Some(p)) => p.l_end(),
            (None, None) => 0.0,
        }
    }

    /// Does the schedule send the whole run's send `target` before `t` (the time these pieces are
    /// around)? Some(answer) when the send lies in one of them, found the way `Curve::locate`
    /// finds it; None when it lies in an earlier piece (so it is before `t`) or a later one (so it
    /// is not).
    fn sends_before(&self, target: f64, t: Duration, end: Option<f64>) -> Option<bool> {
        let before = |p: Piece| p.send_time(target, end).is_some_and(|d| d < t);
        match (self.cur, self.prev) {
            (Some(c), _) if target >= c.l0 => (target < c.l_end()).then(|| before(c)),
            // Past the end of a curve that ends: what the last piece does not hold is never sent.
            (None, Some(p)) if target >= p.l_end() => Some(false),
            // Λ between the previous piece's end and this one's start (rounding) is sent at the
            // end of the previous piece, as `locate` does.
            (_, Some(p)) if target >= p.l0 => Some(before(p)),
            _ => None,
        }
    }
}

/// The whole run's rate curve as a sequence of pieces, found by Λ (the schedule) or by time (the
/// count of sends due).
#[derive(Debug)]
enum Curve {
    Empty,
    /// Precomputed pieces (Constant, Ramp, Stages, the rate part of Burst), contiguous from 0.
    Pieces {
        pieces: Vec<Piece>,
        /// Where `locate` looks first.
        idx: usize,
    },
    Spike(Spikes),
    // Boxed: a walk is several times the size of the other variants.
    Chaos(Box<ChaosPieces>),
}

impl Curve {
    fn new(spec: &RateSpec) -> Curve {
        let r = clean(spec.rate);
        let pieces = |pieces: Vec<Piece>| Curve::Pieces { pieces, idx: 0 };
        match &spec.pattern {
            Pattern::Constant | Pattern::Burst { .. } if r == 0.0 => Curve::Empty,
            Pattern::Constant | Pattern::Burst { .. } => {
                pieces(vec![Piece::constant(0.0, f64::INFINITY, r, 0.0)])
            }
            Pattern::Ramp { from, over } => {
                let from = clean(*from);
                let over = over.as_secs_f64();
                let mut v = Vec::with_capacity(2);
                if over > 0.0 {
                    v.push(Piece {
                        t0: 0.0,
                        len: over,
                        r0: from,
                        slope: (r - from) / over,
                        l0: 0.0,
                    });
                }
                let l0 = v.last().map_or(0.0, Piece::l_end);
                v.push(Piece::constant(over, f64::INFINITY, r, l0));
                pieces(v)
            }
            Pattern::Spike { rate, len, every } => {
                let every_s = every.as_secs_f64();
                let peak_s = len.as_secs_f64().min(every_s);
                let quiet = every_s - peak_s;
                let peak = clean(*rate);
                let area = r * quiet + peak * peak_s;
                if area > 0.0 && area.is_finite() {
                    Curve::Spike(Spikes {
                        base: r,
                        peak,
                        quiet,
                        every: every_s,
                        area,
                    })
                } else {
                    Curve::Empty
                }
            }
            Pattern::Chaos { min_hold, max_hold } => {
                if r == 0.0 {
                    return Curve::Empty;
                }
                let gen = ChaosGen::new(spec.seed, r, *min_hold, *max_hold);
                Curve::Chaos(Box::new(ChaosPieces::new(ChaosWalk::new(gen))))
            }
            Pattern::Stages(stages) => {
                let mut v = Vec::with_capacity(stages.len());
                let mut start = Duration::ZERO;
                let mut prev = 0.0;
                let mut l0 = 0.0;
                for st in stages {
                    let target = clean(st.target);
                    let len = st.duration.as_secs_f64();
                    // A zero-length stage is a step: it only sets where the next stage starts from.
                    if len > 0.0 {
                        let p = Piece {
                            // From the exact Duration sum, so stage boundaries do not drift.
                            t0: start.as_secs_f64(),
                            len,
                            r0: prev,
                            slope: (target - prev) / len,
                            l0,
                        };
                        l0 = p.l_end();
                        v.push(p);
                    }
                    start = start.saturating_add(st.duration);
                    prev = target;
                }
                pieces(v)
            }
        }
    }

    /// The piece with `l0 <= target < l_end`, moving forward only (targets never decrease).
    fn locate(&mut self, target: f64) -> Option<Piece> {
        match self {
            Curve::Empty => None,
            Curve::Pieces { pieces, idx } => {
                while let Some(p) = pieces.get(*idx) {
                    if target < p.l_end() {
                        return Some(*p);
                    }
                    *idx += 1;
                }
                None
            }
            Curve::Spike(s) => {
                let (base, peak) = s.period(Spikes::periods(target, s.area));
                Some(if target < peak.l0 { base } else { peak })
            }
            Curve::Chaos(c) => {
                while target >= c.piece.l_end() {
                    c.advance();
                }
                Some(c.piece)
            }
        }
    }

    /// The pieces around time `t`. Cheap for non-decreasing times; an earlier time walks a chaos
    /// curve again from its start.
    fn around(&mut self, t: Duration) -> Around {
        let ts = t.as_secs_f64();
        match self {
            Curve::Empty => Around::default(),
            Curve::Pieces { pieces, .. } => {
                // The first piece starts at 0, so the one containing t is the last that starts at
                // or before it, unless the curve has ended.
                let i = pieces.partition_point(|p| p.t0 <= ts);
                let Some(last) = i.checked_sub(1) else {
                    return Around::default();
                };
                let p = pieces[last];
                if ts < p.t0 + p.len {
                    Around {
                        prev: last.checked_sub(1).map(|j| pieces[j]),
                        cur: Some(p),
                    }
                } else {
                    Around {
                        prev: Some(p),
                        cur: None,
                    }
                }
            }
            Curve::Spike(s) => {
                let k = Spikes::periods(ts, s.every);
                let (base, peak) = s.period(k);
                if ts < peak.t0 {
                    Around {
                        prev: (k > 0.0).then(|| s.period(k - 1.0).1),
                        cur: Some(base),
                    }
                } else {
                    Around {
                        prev: Some(base),
                        cur: Some(peak),
                    }
                }
            }
            Curve::Chaos(c) => {
                let ns = t.as_nanos();
                if ns < c.walk.start_ns {
                    **c = ChaosPieces::new(c.first);
                }
                while ns >= c.walk.end_ns {
                    c.advance();
                }
                Around {
                    prev: c.prev,
                    cur: Some(c.piece),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sends due

/// How many sends the whole run has due before given times (all shards, bursts included), from the
/// curve the schedule walks: exact for uniform arrivals, the expectation for Poisson ones.
/// Answers for non-decreasing times cost O(1) amortised (a chaos curve is walked once); an
/// earlier time is answered too, more slowly.
#[derive(Debug)]
pub struct Due {
    curve: Curve,
    uniform: bool,
    /// Rate-driven sends stop before this (seconds), for patterns that end (as in `Schedule`).
    end: Option<f64>,
    /// The run sends nothing at or after this (its `--duration`, see `RateSpec::due`).
    stop: Option<Duration>,
    /// Burst period in ns and requests per burst.
    bursts: Option<(u128, u64)>,
}

impl Due {
    /// Sends due in [0, t).
    pub fn before(&mut self, t: Duration) -> f64 {
        let t = self.stop.map_or(t, |stop| t.min(stop));
        self.rate_before(t) + self.bursts_before(t)
    }

    /// Sends due in [from, to) (0 for an empty window).
    pub fn between(&mut self, from: Duration, to: Duration) -> f64 {
        if to <= from {
            return 0.0;
        }
        let before = self.before(from);
        self.before(to) - before
    }

    /// Mean target rate over [from, to) in req/s: the sends due in it over its length (0 for an
    /// empty window).
    pub fn mean_rate(&mut self, from: Duration, to: Duration) -> f64 {
        if to <= from {
            return 0.0;
        }
        self.between(from, to) / (to - from).as_secs_f64()
    }

    fn rate_before(&mut self, t: Duration) -> f64 {
        let at = self.curve.around(t);
        let lambda = at.lambda(t.as_secs_f64());
        if !self.uniform {
            return lambda;
        }
        // Send j is due where Λ passes j, so the sends before t are those with j < Λ(t). Only a
        // send due within rounding of t can be on the other side of t than that says (as at
        // every whole second of a constant 1000 req/s): settle those with the schedule's own
        // send times, so that the count is what the shards emit.
        let mut n = lambda.ceil();
        while n >= 1.0 && at.sends_before(n - 1.0, t, self.end) == Some(false) {
            n -= 1.0;
        }
        while at.sends_before(n, t, self.end) == Some(true) {
            n += 1.0;
        }
        n
    }

    /// Bursts (not requests) due in [0, t).
    fn burst_count_before(&self, t: Duration) -> u64 {
        self.bursts.map_or(0, |(every_ns, _)| {
            u64::try_from(t.as_nanos().div_ceil(every_ns)).unwrap_or(u64::MAX)
        })
    }

    fn bursts_before(&self, t: Duration) -> f64 {
        // The bursts at k·every < t.
        self.bursts.map_or(0.0, |(every_ns, size)| {
            t.as_nanos().div_ceil(every_ns) as f64 * size as f64
        })
    }
}

impl RateSpec {
    /// The count of sends due (see [`Due`]) for a run that sends nothing at or after `run`, when
    /// the run has a duration: the engine stops sending with the first send time at or past it.
    pub fn due(&self, run: Option<Duration>) -> Due {
        let bursts = match &self.pattern {
            Pattern::Burst { size, every } if *size > 0 && !every.is_zero() => {
                Some((every.as_nanos(), *size))
            }
            _ => None,
        };
        Due {
            curve: Curve::new(self),
            uniform: self.arrivals == Arrivals::Uniform,
            end: self.natural_duration().map(|d| d.as_secs_f64()),
            stop: run,
            bursts,
        }
    }

    /// Sends the whole run (all shards) is due to make in [from, to): with uniform arrivals
    /// exactly the number of send times the shards' schedules hold in the window, with Poisson
    /// arrivals its expectation. A burst at `k·every` is due at that instant; a pattern that ends
    /// has nothing due after its end.
    pub fn sends_due(&self, from: Duration, to: Duration) -> f64 {
        self.due(None).between(from, to)
    }

    /// Mean target rate (req/s, all shards) over [from, to): `sends_due` over the window's
    /// length, so bursts count in the windows that hold them (0 for an empty window).
    pub fn mean_rate(&self, from: Duration, to: Duration) -> f64 {
        self.due(None).mean_rate(from, to)
    }
}

// ---------------------------------------------------------------------------------------------
// Schedule

/// Where the next rate-driven send lies in Λ.
#[derive(Debug)]
enum Draw {
    /// The k-th send of this shard is the whole run's send `k·shards + shard`.
    Uniform {
        k: u64,
        phase: f64,
    },
    Poisson {
        rng: SplitMix64,
        acc: f64,
    },
}

#[derive(Debug)]
struct Bursts {
    every_ns: u128,
    share: u64,
    index: u64,
    left: u64,
}

impl Bursts {
    fn peek(&self) -> Option<Duration> {
        duration_from_nanos(self.every_ns.checked_mul(u128::from(self.index))?)
    }

    fn take(&mut self) {
        self.left -= 1;
        if self.left == 0 {
            self.index += 1;
            self.left = self.share;
        }
    }
}

/// One shard's intended send times, as offsets from the run's common start.
#[derive(Debug)]
pub struct Schedule {
    curve: Curve,
    draw: Draw,
    /// Λ per send of this shard (the shard count).
    stride: f64,
    /// Rate-driven sends stop before this (seconds), for patterns that end.
    end: Option<f64>,
    pending: Option<Duration>,
    rate_done: bool,
    last: Duration,
    bursts: Option<Bursts>,
}

impl Schedule {
    /// Shard `shard` of `shards` of a run in one process.
    pub fn new(spec: &RateSpec, shard: usize, shards: usize) -> Schedule {
        debug_assert!(shard < shards, "shard {shard} of {shards}");
        let shards = shards.max(1);
        Schedule::part(spec, Part::core(shard.min(shards - 1), shards))
    }

    /// The shard at `part` of the whole run (see `Part`).
    pub fn part(spec: &RateSpec, part: Part) -> Schedule {
        let (phase, stride) = (part.phase(), part.stride());
        let draw = match spec.arrivals {
            Arrivals::Uniform => Draw::Uniform {
                k: 0,
                phase: phase as f64,
            },
            Arrivals::Poisson => Draw::Poisson {
                rng: SplitMix64::new(spec.seed, SHARD_SALT ^ phase),
                acc: 0.0,
            },
        };
        let bursts = match &spec.pattern {
            Pattern::Burst { size, every } if !every.is_zero() => {
                let share = part.share(*size);
                (share > 0).then_some(Bursts {
                    every_ns: every.as_nanos(),
                    share,
                    index: 0,
                    left: share,
                })
            }
            _ => None,
        };
        Schedule {
            curve: Curve::new(spec),
            draw,
            stride: stride as f64,
            end: spec.natural_duration().map(|d| d.as_secs_f64()),
            pending: None,
            rate_done: false,
            last: Duration::ZERO,
            bursts,
        }
    }

    /// Offset from the run start of the next intended send, in non-decreasing order, or None when
    /// the pattern has no more sends (stages finished, or rate 0 forever with no bursts).
    // Inherent so callers need no trait import; `Iterator` is implemented too.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Duration> {
        if self.pending.is_none() && !self.rate_done {
            self.pending = self.next_rate_send();
            self.rate_done = self.pending.is_none();
        }
        let burst = self.bursts.as_ref().and_then(Bursts::peek);
        match (self.pending, burst) {
            (Some(r), Some(b)) if r < b => self.pending.take(),
            (_, Some(b)) => {
                if let Some(bursts) = &mut self.bursts {
                    bursts.take();
                }
                Some(b)
            }
            (Some(_), None) => self.pending.take(),
            (None, None) => None,
        }
    }

    fn next_rate_send(&mut self) -> Option<Duration> {
        let target = match &mut self.draw {
            Draw::Uniform { k, phase } => {
                let t = *k as f64 * self.stride + *phase;
                *k += 1;
                t
            }
            Draw::Poisson { rng, acc } => {
                *acc += self.stride * rng.exp();
                *acc
            }
        };
        let d = self.curve.locate(target)?.send_time(target, self.end)?;
        // Rounding at piece boundaries must never let a send go backwards.
        let d = d.max(self.last);
        self.last = d;
        Some(d)
    }
}

impl Schedule {
    /// Drop every send of this shard's schedule due before `t` without walking them one by
    /// one, and say how many there were: for a backlog that can no longer be sent, whose
    /// size grows with rate x duration. `due` must be the same spec's `RateSpec::due(None)`
    /// (it is kept between calls so that a chaos curve is walked once); exact for uniform
    /// arrivals, the expected count for Poisson ones (whose gaps are memoryless, so the
    /// schedule goes on from `t` as if it had been walked).
    pub fn skip_before(&mut self, t: Duration, due: &mut Due) -> u64 {
        let mut skipped = 0;
        if let Some(b) = &mut self.bursts {
            let first_kept = due.burst_count_before(t);
            if b.index < first_kept {
                skipped += b.left + (first_kept - b.index - 1).saturating_mul(b.share);
                b.index = first_kept;
                b.left = b.share;
            }
        }
        if self.rate_done {
            return skipped;
        }
        // A drawn send that is not before `t` stays; the rest of the rate-driven sends
        // before `t` go.
        if self.pending.is_some_and(|d| d >= t) {
            return skipped;
        }
        let lambda = due.rate_before(t);
        match &mut self.draw {
            Draw::Uniform { k, phase } => {
                // This shard's sends are the run's `k·stride + phase` (see `next_rate_send`);
                // those below the run's count before `t` are due before it. A pending send
                // was drawn (k advanced) but not taken.
                let taken = *k - u64::from(self.pending.is_some());
                let below = ((lambda - *phase) / self.stride).ceil().max(0.0) as u64;
                if below > taken {
                    skipped += below - taken;
                    *k = below;
                    self.pending = None;
                }
            }
            Draw::Poisson { acc, .. } => {
                // `acc` is the last drawn send's place in Λ: the pending one's, if any.
                if self.pending.take().is_some() {
                    skipped += 1;
                }
                if lambda > *acc {
                    skipped += ((lambda - *acc) / self.stride).round() as u64;
                    *acc = lambda;
                }
            }
        }
        skipped
    }
}

impl Iterator for Schedule {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Schedule::next(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rate: f64, pattern: Pattern) -> RateSpec {
        RateSpec {
            rate,
            pattern,
            arrivals: Arrivals::Uniform,
            seed: 42,
        }
    }

    fn poisson(mut s: RateSpec) -> RateSpec {
        s.arrivals = Arrivals::Poisson;
        s
    }

    /// This shard's sends before `until`.
    fn sends(spec: &RateSpec, shard: usize, shards: usize, until: Duration) -> Vec<Duration> {
        let mut s = Schedule::new(spec, shard, shards);
        let mut out = Vec::new();
        while let Some(t) = s.next() {
            if t >= until {
                break;
            }
            out.push(t);
            assert!(out.len() < 10_000_000, "runaway schedule");
        }
        out
    }

    /// All shards' sends before `until`, merged and sorted.
    fn all_sends(spec: &RateSpec, shards: usize, until: Duration) -> Vec<Duration> {
        let mut v: Vec<Duration> = (0..shards)
            .flat_map(|i| sends(spec, i, shards, until))
            .collect();
        v.sort();
        v
    }

    fn counts(times: &[Duration], width: Duration, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for t in times {
            let w = (t.as_nanos() / width.as_nanos()) as usize;
            if w < n {
                c[w] += 1;
            }
        }
        c
    }

    /// The rate part of the curve at `t` (bursts are instants, not a rate).
    fn rate_at(spec: &RateSpec, t: Duration) -> f64 {
        Curve::new(spec)
            .around(t)
            .cur
            .map_or(0.0, |p| p.r0 + p.slope * (t.as_secs_f64() - p.t0))
    }

    fn assert_monotonic(times: &[Duration]) {
        for w in times.windows(2) {
            assert!(w[0] <= w[1], "{:?} then {:?}", w[0], w[1]);
        }
    }

    fn close(a: usize, b: f64, tol: f64) -> bool {
        (a as f64 - b).abs() <= tol
    }

    #[test]
    fn constant_exact_counts() {
        let s = spec(1000.0, Pattern::Constant);
        for shards in [1, 2, 3, 4, 7, 16] {
            let all = all_sends(&s, shards, Duration::from_secs(10));
            assert_eq!(all.len(), 10_000, "shards={shards}");
            for (w, c) in counts(&all, Duration::from_secs(1), 10)
                .into_iter()
                .enumerate()
            {
                assert_eq!(c, 1000, "shards={shards} window {w}");
            }
            for i in 0..shards {
                let mine = sends(&s, i, shards, Duration::from_secs(10));
                assert_monotonic(&mine);
                let per = 1000.0 / shards as f64;
                for c in counts(&mine, Duration::from_secs(1), 10) {
                    assert!(close(c, per, 1.0), "shard {i}/{shards}: {c} vs {per}");
                }
            }
        }
    }

    #[test]
    fn constant_times_are_exact_and_interleaved() {
        let s = spec(1000.0, Pattern::Constant);
        let all = all_sends(&s, 4, Duration::from_secs(1));
        for (j, t) in all.iter().enumerate() {
            assert_eq!(*t, Duration::from_millis(j as u64));
        }
        // Shard 1 of 4 takes sends 1, 5, 9, ...
        let one = sends(&s, 1, 4, Duration::from_millis(12));
        assert_eq!(
            one,
            vec![
                Duration::from_millis(1),
                Duration::from_millis(5),
                Duration::from_millis(9)
            ]
        );
    }

    #[test]
    fn no_drift_after_billions_of_sends() {
        let s = spec(1_000_000.0, Pattern::Constant);
        let mut sch = Schedule::new(&s, 3, 8);
        // Jump to this shard's send number 450M: the whole run's send 3.6e9 + 3, an hour in.
        sch.draw = Draw::Uniform {
            k: 450_000_000,
            phase: 3.0,
        };
        assert_eq!(sch.next(), Some(Duration::new(3600, 3_000)));
        assert_eq!(sch.next(), Some(Duration::new(3600, 11_000)));

        let r = spec(
            1000.0,
            Pattern::Ramp {
                from: 0.0,
                over: Duration::from_secs(10),
            },
        );
        let mut sch = Schedule::new(&r, 0, 1);
        // The ramp holds 5000 sends; send 5000 + 1000·3600 is 3600 s after it.
        sch.draw = Draw::Uniform {
            k: 5000 + 3_600_000,
            phase: 0.0,
        };
        assert_eq!(sch.next(), Some(Duration::from_secs(3610)));
    }

    #[test]
    fn shards_merge_into_the_single_shard_schedule() {
        let specs = [
            spec(750.0, Pattern::Constant),
            spec(
                900.0,
                Pattern::Ramp {
                    from: 10.0,
                    over: Duration::from_secs(3),
                },
            ),
            spec(
                200.0,
                Pattern::Spike {
                    rate: 900.0,
                    len: Duration::from_millis(700),
                    every: Duration::from_secs(2),
                },
            ),
            spec(
                500.0,
                Pattern::Chaos {
                    min_hold: Duration::from_millis(100),
                    max_hold: Duration::from_millis(900),
                },
            ),
            spec(0.0, parse_stages_pattern("1s:300,2s:300,1500ms:0")),
        ];
        for s in &specs {
            let whole = sends(s, 0, 1, Duration::from_secs(5));
            assert!(!whole.is_empty());
            for shards in [2, 3, 5] {
                assert_eq!(
                    all_sends(s, shards, Duration::from_secs(5)),
                    whole,
                    "{:?} shards={shards}",
                    s.pattern
                );
            }
        }
    }

    fn parse_stages_pattern(s: &str) -> Pattern {
        Pattern::Stages(parse_stages(s).unwrap())
    }

    #[test]
    fn ramp_windows_rise_linearly_then_hold() {
        let s = spec(
            1000.0,
            Pattern::Ramp {
                from: 0.0,
                over: Duration::from_secs(10),
            },
        );
        s.validate(Some(Duration::from_secs(15))).unwrap();
        for shards in [1, 3] {
            let all = all_sends(&s, shards, Duration::from_secs(15));
            assert_monotonic(&all);
            let c = counts(&all, Duration::from_secs(1), 15);
            for (w, &n) in c.iter().enumerate() {
                let want = if w < 10 {
                    100.0 * w as f64 + 50.0
                } else {
                    1000.0
                };
                assert!(
                    close(n, want, 1.0),
                    "shards={shards} window {w}: {n} vs {want}"
                );
            }
            assert!(close(all.len(), 5000.0 + 5000.0, 1.0));
        }
    }

    #[test]
    fn ramp_down() {
        let s = spec(
            100.0,
            Pattern::Ramp {
                from: 1100.0,
                over: Duration::from_secs(5),
            },
        );
        let all = all_sends(&s, 2, Duration::from_secs(8));
        let c = counts(&all, Duration::from_secs(1), 8);
        for (w, &n) in c.iter().enumerate() {
            let want = if w < 5 {
                1000.0 - 200.0 * w as f64
            } else {
                100.0
            };
            assert!(close(n, want, 1.0), "window {w}: {n} vs {want}");
        }
    }

    #[test]
    fn spike_at_the_end_of_each_period() {
        let s = spec(
            100.0,
            Pattern::Spike {
                rate: 1000.0,
                len: Duration::from_secs(2),
                every: Duration::from_secs(10),
            },
        );
        s.validate(Some(Duration::from_secs(30))).unwrap();
        let all = all_sends(&s, 3, Duration::from_secs(30));
        assert_monotonic(&all);
        for (w, &n) in counts(&all, Duration::from_secs(1), 30).iter().enumerate() {
            let want = if w % 10 >= 8 { 1000.0 } else { 100.0 };
            assert!(close(n, want, 1.0), "window {w}: {n} vs {want}");
            assert_eq!(rate_at(&s, Duration::from_secs(w as u64)), want);
        }
    }

    #[test]
    fn spike_can_be_a_dip_to_zero() {
        let s = spec(
            100.0,
            Pattern::Spike {
                rate: 0.0,
                len: Duration::from_millis(500),
                every: Duration::from_secs(1),
            },
        );
        s.validate(None).unwrap();
        let all = all_sends(&s, 2, Duration::from_secs(5));
        assert!(close(all.len(), 250.0, 1.0));
        assert!(all.iter().all(|t| t.subsec_millis() < 500));
    }

    #[test]
    fn bursts_exact_at_instants() {
        let s = spec(
            0.0,
            Pattern::Burst {
                size: 10,
                every: Duration::from_secs(1),
            },
        );
        s.validate(None).unwrap();
        let shards = 3;
        for i in 0..shards {
            let mine = sends(&s, i, shards, Duration::from_secs(5));
            let share = [4, 3, 3][i];
            assert_eq!(mine.len(), 5 * share);
            for (k, chunk) in mine.chunks(share).enumerate() {
                assert!(chunk.iter().all(|t| *t == Duration::from_secs(k as u64)));
            }
        }
        let all = all_sends(&s, shards, Duration::from_secs(5));
        for (k, c) in counts(&all, Duration::from_secs(1), 5)
            .into_iter()
            .enumerate()
        {
            assert_eq!(c, 10, "burst {k}");
        }
        // A burst is due at its instant: 10 in any second that holds one, none in between.
        let d = Duration::from_millis;
        assert_eq!(s.mean_rate(d(3000), d(4000)), 10.0);
        assert_eq!(s.sends_due(d(3000), d(3001)), 10.0);
        assert_eq!(s.sends_due(d(3001), d(4000)), 0.0);
    }

    #[test]
    fn bursts_on_top_of_a_rate() {
        let s = spec(
            100.0,
            Pattern::Burst {
                size: 50,
                every: Duration::from_millis(2500),
            },
        );
        let all = all_sends(&s, 4, Duration::from_secs(10));
        assert_monotonic(&all);
        assert!(close(all.len(), 1000.0 + 4.0 * 50.0, 1.0));
        for k in 0..4u64 {
            let at = Duration::from_millis(2500 * k);
            // 50 burst sends, plus the rate-driven one that lands on the same instant.
            assert_eq!(all.iter().filter(|t| **t == at).count(), 51, "burst {k}");
        }
        for i in 0..4 {
            assert_monotonic(&sends(&s, i, 4, Duration::from_secs(10)));
        }
        // Over a whole burst period the mean is R plus the burst spread over the period.
        assert_eq!(
            s.mean_rate(Duration::ZERO, Duration::from_millis(2500)),
            120.0
        );
    }

    #[test]
    fn burst_smaller_than_shard_count() {
        let s = spec(
            0.0,
            Pattern::Burst {
                size: 2,
                every: Duration::from_secs(1),
            },
        );
        let mut idle = Schedule::new(&s, 3, 4);
        assert_eq!(idle.next(), None);
        assert_eq!(idle.next(), None);
        let busy = sends(&s, 1, 4, Duration::from_secs(3));
        assert_eq!(busy.len(), 3);
    }

    #[test]
    fn stages_shape_total_and_end() {
        let s = spec(0.0, parse_stages_pattern("10s:100,10s:100,10s:0"));
        s.validate(None).unwrap();
        assert_eq!(s.natural_duration(), Some(Duration::from_secs(30)));
        for shards in [1, 4] {
            let all = all_sends(&s, shards, Duration::MAX);
            assert_monotonic(&all);
            assert!(all.iter().all(|t| *t < Duration::from_secs(30)));
            // Area under the curve: 500 + 1000 + 500.
            assert!(close(all.len(), 2000.0, shards as f64));
            for (w, &n) in counts(&all, Duration::from_secs(1), 30).iter().enumerate() {
                let w = w as u64;
                let want = s.sends_due(Duration::from_secs(w), Duration::from_secs(w + 1));
                assert!(close(n, want, 1.0), "window {w}: {n} vs {want}");
            }
        }
        let at = |t| rate_at(&s, Duration::from_secs(t));
        assert_eq!(at(5), 50.0);
        assert_eq!(at(15), 100.0);
        assert_eq!(at(25), 50.0);
        assert_eq!(at(30), 0.0);
        let mut sch = Schedule::new(&s, 0, 1);
        for _ in 0..2000 {
            sch.next();
        }
        assert_eq!(sch.next(), None);
        assert_eq!(sch.next(), None);
    }

    #[test]
    fn stages_with_steps_and_idle_stretches() {
        let s = spec(
            0.0,
            parse_stages_pattern("0s:50,5s:50,2s:0,0s:0,3s:0,1s:100"),
        );
        s.validate(None).unwrap();
        let all = all_sends(&s, 3, Duration::MAX);
        assert_eq!(all[0], Duration::ZERO);
        // 250 at 50/s, the ramp down 50, nothing in the idle stretch, the final ramp 50.
        assert!(close(all.len(), 350.0, 3.0), "{}", all.len());
        assert!(!all
            .iter()
            .any(|t| *t >= Duration::from_secs(7) && *t < Duration::from_secs(10)));
        assert!(all.iter().all(|t| *t < Duration::from_secs(11)));

        let zero = spec(0.0, parse_stages_pattern("1h:0,1h:0"));
        zero.validate(None).unwrap();
        assert_eq!(Schedule::new(&zero, 0, 2).next(), None);
    }

    #[test]
    fn chaos_is_seeded_and_bounded() {
        let mk = |seed| RateSpec {
            seed,
            ..spec(
                800.0,
                Pattern::Chaos {
                    min_hold: Duration::from_millis(200),
                    max_hold: Duration::from_secs(2),
                },
            )
        };
        let a = mk(7);
        a.validate(None).unwrap();
        let run = Duration::from_secs(20);
        let first = sends(&a, 1, 3, run);
        assert_eq!(first, sends(&a, 1, 3, run));
        assert_ne!(first, sends(&mk(8), 1, 3, run));
        assert_monotonic(&first);

        let mut distinct = Vec::new();
        for ms in (0..20_000).step_by(10) {
            let r = rate_at(&a, Duration::from_millis(ms));
            assert!((0.0..=800.0).contains(&r));
            if !distinct.contains(&r) {
                distinct.push(r);
            }
        }
        // 200 ms to 2 s holds over 20 s: about 18 changes.
        assert!(distinct.len() >= 8, "{} rates", distinct.len());
        // Out-of-order queries give the same answers as in-order ones.
        assert_eq!(
            rate_at(&a, Duration::from_millis(1234)),
            rate_at(&mk(7), Duration::from_millis(1234))
        );

        // Sends follow the curve.
        let all = all_sends(&a, 3, run);
        let c = counts(&all, Duration::from_millis(100), 200);
        let mut covered = 0.0;
        for (w, &n) in c.iter().enumerate() {
            let lo = Duration::from_millis(100 * w as u64);
            let want = a.sends_due(lo, lo + Duration::from_millis(100));
            covered += want;
            assert!(close(n, want, 2.0), "window {w}: {n} vs {want}");
        }
        assert!(close(all.len(), covered, 2.0));
    }

    // -----------------------------------------------------------------------------------------
    // Sends due

    /// One spec of every pattern, with rates and lengths that put sends, bursts and breakpoints
    /// on round instants (where rounding decides which side of a window they fall) and off them.
    fn every_pattern() -> Vec<RateSpec> {
        let ms = Duration::from_millis;
        let stages = |st: &str| spec(0.0, parse_stages_pattern(st));
        vec![
            spec(1000.0, Pattern::Constant),
            spec(333.3, Pattern::Constant),
            spec(
                0.0,
                Pattern::Burst {
                    size: 7,
                    every: ms(333),
                },
            ),
            spec(
                100.0,
                Pattern::Burst {
                    size: 50,
                    every: ms(1000),
                },
            ),
            spec(
                10.0,
                Pattern::Burst {
                    size: 50,
                    every: Duration::from_secs(10),
                },
            ),
            spec(
                1000.0,
                Pattern::Ramp {
                    from: 0.0,
                    over: ms(2000),
                },
            ),
            spec(
                300.0,
                Pattern::Ramp {
                    from: 1100.7,
                    over: ms(1500),
                },
            ),
            spec(
                100.0,
                Pattern::Spike {
                    rate: 1000.0,
                    len: ms(200),
                    every: ms(1000),
                },
            ),
            spec(
                0.1,
                Pattern::Spike {
                    rate: 700.3,
                    len: ms(170),
                    every: ms(430),
                },
            ),
            spec(
                100.0,
                Pattern::Spike {
                    rate: 0.0,
                    len: ms(500),
                    every: ms(1000),
                },
            ),
            spec(
                300.0,
                Pattern::Chaos {
                    min_hold: ms(1),
                    max_hold: ms(50),
                },
            ),
            spec(
                800.0,
                Pattern::Chaos {
                    min_hold: ms(100),
                    max_hold: ms(400),
                },
            ),
            stages("1s:400,0s:10,1s:900,1s:0"),
            stages("300ms:10.1,700ms:3.3,1s:77.7,0s:0,500ms:0,200ms:1000"),
            // Ends before the run does.
            stages("500ms:200,1s:200"),
        ]
    }

    /// Window edges for a run of `run` with send times `all`: a grid, the send times themselves
    /// and a nanosecond either side, and seeded random instants.
    fn edges(all: &[Duration], run: Duration) -> Vec<Duration> {
        let mut v: Vec<Duration> = (0..=30).map(|k| run * k / 30).collect();
        let ns = Duration::from_nanos(1);
        for t in all.iter().step_by(7) {
            v.extend([*t, t.saturating_sub(ns), *t + ns]);
        }
        let mut rng = SplitMix64::new(5, 5);
        v.extend((0..100).map(|_| Duration::from_nanos(rng.below(nanos(run)))));
        v.sort();
        v
    }

    #[test]
    fn skip_before_drops_exactly_the_sends_a_walk_would() {
        let run = Duration::from_secs(3);
        for s in every_pattern() {
            for shards in [1, 3] {
                for shard in 0..shards {
                    let walked = sends(&s, shard, shards, run);
                    for cut in [0, 1, walked.len() / 3, walked.len() / 2] {
                        let Some(&at) = walked.get(cut) else { continue };
                        // Take `cut / 2` sends, then skip everything before `at`, where the
                        // walk's send `cut` is: the schedule goes on from that very send.
                        let mut sched = Schedule::new(&s, shard, shards);
                        let mut due = s.due(None);
                        for _ in 0..cut / 2 {
                            sched.next();
                        }
                        let first = walked.partition_point(|x| *x < at);
                        let skipped = sched.skip_before(at, &mut due);
                        let ctx = format!("{:?} shard {shard}/{shards} cut {cut}", s.pattern);
                        // (Taken sends may reach past `at` when several share its time: a burst.)
                        assert_eq!(skipped as usize, first.saturating_sub(cut / 2), "{ctx}");
                        assert_eq!(sched.next(), Some(walked[first.max(cut / 2)]), "{ctx}");
                        // Nothing more to drop before the same time.
                        assert_eq!(sched.skip_before(at, &mut due), 0, "{ctx}");
                    }
                }
            }
        }
    }

    #[test]
    fn skip_before_costs_nothing_like_the_walk_it_saves() {
        // A billion sends a second, a minute behind: skipped at once.
        let s = spec(1e9, Pattern::Constant);
        let mut sched = Schedule::new(&s, 1, 2);
        let mut due = s.due(None);
        assert_eq!(sched.next(), Some(Duration::from_nanos(1)));
        let skipped = sched.skip_before(Duration::from_secs(60), &mut due);
        assert_eq!(skipped, 30_000_000_000 - 1);
        assert_eq!(
            sched.next(),
            Some(Duration::from_secs(60) + Duration::from_nanos(1))
        );
        // Poisson: about the expected count.
        let mut sched = Schedule::new(&poisson(s.clone()), 0, 2);
        let mut due = poisson(s).due(None);
        let skipped = sched.skip_before(Duration::from_secs(60), &mut due) as f64;
        assert!((skipped / 30e9 - 1.0).abs() < 1e-6, "{skipped}");
        assert!(sched.next().is_some_and(|d| d >= Duration::from_secs(60)));
    }

    #[test]
    fn sends_due_is_what_the_uniform_schedule_emits() {
        let run = Duration::from_secs(3);
        for s in every_pattern() {
            s.validate(None).unwrap();
            for shards in [1, 3] {
                let all = all_sends(&s, shards, run);
                assert!(!all.is_empty(), "{:?}", s.pattern);
                let before = |t: Duration| all.partition_point(|x| *x < t) as f64;
                let edges = edges(&all, run);
                // Over the run, from the start to every edge, and between edges near and far apart.
                assert_eq!(s.sends_due(Duration::ZERO, run), all.len() as f64);
                let mut due = s.due(None);
                for (i, &b) in edges.iter().enumerate() {
                    let want = before(b);
                    assert_eq!(
                        due.before(b),
                        want,
                        "{:?} shards={shards} [0, {b:?})",
                        s.pattern
                    );
                    for &a in [edges[i.saturating_sub(1)], edges[i / 2]].iter() {
                        assert_eq!(
                            s.sends_due(a, b),
                            want - before(a),
                            "{:?} shards={shards} [{a:?}, {b:?})",
                            s.pattern
                        );
                    }
                }
                // The same answers asked in the other order (a chaos curve is walked again).
                for &b in edges.iter().rev().step_by(13) {
                    assert_eq!(due.before(b), before(b), "{:?} [0, {b:?})", s.pattern);
                }
            }
        }
    }

    /// Exact far into a run, where Λ is in the billions: send j is due at its own send time and
    /// not a nanosecond before.
    #[test]
    fn sends_due_exact_an_hour_in() {
        let specs = [
            spec(1_000_000.0, Pattern::Constant),
            spec(
                1000.0,
                Pattern::Ramp {
                    from: 0.0,
                    over: Duration::from_secs(10),
                },
            ),
            spec(
                3_000.3,
                Pattern::Spike {
                    rate: 17_000.0,
                    len: Duration::from_millis(300),
                    every: Duration::from_millis(1100),
                },
            ),
        ];
        for s in &specs {
            let mut due = s.due(None);
            let mut sch = Schedule::new(s, 0, 1);
            // Jump to the first send at or after an hour.
            let first = due.before(Duration::from_secs(3600)) as u64;
            sch.draw = Draw::Uniform {
                k: first,
                phase: 0.0,
            };
            let mut prev = None;
            for j in first..first + 2000 {
                let t = sch.next().unwrap();
                if prev != Some(t) {
                    assert_eq!(due.before(t), j as f64, "{:?} send {j} at {t:?}", s.pattern);
                }
                let after = t + Duration::from_nanos(1);
                assert_eq!(
                    due.before(after),
                    (j + 1) as f64,
                    "{:?} send {j}",
                    s.pattern
                );
                prev = Some(t);
            }
        }
    }

    /// Poisson arrivals: the sends due are the expectation, Λ itself rather than its ceiling, and
    /// the schedule's counts scatter around it.
    #[test]
    fn sends_due_is_the_expectation_for_poisson_arrivals() {
        let ms = Duration::from_millis;
        let c = spec(1000.0, Pattern::Constant);
        assert_eq!(
            c.sends_due(Duration::ZERO, Duration::from_micros(1500)),
            2.0
        );
        assert_eq!(
            poisson(c).sends_due(Duration::ZERO, Duration::from_micros(1500)),
            1.5
        );
        // Bursts are due at their instants either way.
        let b = poisson(spec(
            100.0,
            Pattern::Burst {
                size: 50,
                every: ms(1000),
            },
        ));
        assert!((b.sends_due(ms(0), ms(1500)) - 250.0).abs() < 1e-9);
        assert!((b.sends_due(ms(500), ms(1001)) - 100.1).abs() < 1e-9);

        let run = Duration::from_secs(3);
        for s in every_pattern() {
            let s = poisson(s);
            let want = s.sends_due(Duration::ZERO, run);
            let uniform = RateSpec {
                arrivals: Arrivals::Uniform,
                ..s.clone()
            };
            assert!((uniform.sends_due(Duration::ZERO, run) - want).abs() <= 1.0);
            for shards in [1, 3] {
                let n = all_sends(&s, shards, run).len();
                // Bursts are exact; the rest is Poisson, sd = sqrt(mean).
                assert!(
                    close(n, want, 5.0 * want.sqrt() + 1.0),
                    "{:?} shards={shards}: {n} vs {want}",
                    s.pattern
                );
            }
        }
    }

    /// Issue 11: a 1 s run of `--rate 10 --pattern burst` (50 every 10 s) has the burst at 0 and
    /// 10 rate-driven sends due, 60 req/s over the run, not the rate plus the burst smeared over
    /// its period (15).
    #[test]
    fn burst_target_counts_the_burst_in_the_run() {
        let s = spec(
            10.0,
            Pattern::Burst {
                size: 50,
                every: Duration::from_secs(10),
            },
        );
        let d = Duration::from_millis;
        assert_eq!(s.sends_due(d(0), d(1000)), 60.0);
        assert_eq!(s.mean_rate(d(0), d(1000)), 60.0);
        assert_eq!(all_sends(&s, 3, d(1000)).len(), 60);
        assert_eq!(s.mean_rate(d(0), d(10_000)), 15.0);
        assert_eq!(s.sends_due(d(0), d(10_001)), 101.0 + 100.0);
    }

    #[test]
    fn due_stops_with_the_run_and_with_the_stages() {
        let d = Duration::from_millis;
        let c = spec(100.0, Pattern::Constant);
        let mut due = c.due(Some(d(1500)));
        assert_eq!(due.before(d(1000)), 100.0);
        assert_eq!(due.before(d(1500)), 150.0);
        assert_eq!(due.before(d(9000)), 150.0);
        assert_eq!(due.mean_rate(d(1000), d(2000)), 50.0);
        assert_eq!(due.mean_rate(d(2000), d(2000)), 0.0);
        assert_eq!(c.sends_due(d(1000), d(500)), 0.0);

        // Nothing after the last stage, whatever the run's length.
        let s = spec(0.0, parse_stages_pattern("1s:100,1s:100"));
        let all = all_sends(&s, 2, Duration::MAX);
        assert_eq!(s.sends_due(Duration::ZERO, Duration::MAX), all.len() as f64);
        assert_eq!(s.sends_due(d(2000), d(60_000)), 0.0);
        assert_eq!(s.sends_due(d(0), d(2000)), 150.0);
    }

    #[test]
    fn chaos_holds_within_bounds() {
        let mut w = ChaosWalk::new(ChaosGen::new(
            3,
            10.0,
            Duration::from_millis(300),
            Duration::from_millis(400),
        ));
        for _ in 0..1000 {
            let hold = w.end_ns - w.start_ns;
            assert!((300_000_000..=400_000_000).contains(&hold));
            assert!((0.0..=10.0).contains(&w.rate));
            w.advance();
        }
    }

    #[test]
    fn poisson_mean_and_reproducibility() {
        let s = poisson(spec(1000.0, Pattern::Constant));
        let run = Duration::from_secs(60);
        let all = all_sends(&s, 4, run);
        assert_monotonic(&all);
        // 60000 expected, sd ≈ 245.
        assert!(close(all.len(), 60_000.0, 1500.0), "{}", all.len());
        let mine = sends(&s, 2, 4, run);
        assert_monotonic(&mine);
        assert!(close(mine.len(), 15_000.0, 600.0));
        assert_eq!(mine, sends(&s, 2, 4, run));
        assert_ne!(mine, sends(&s, 1, 4, run));
        let other = RateSpec {
            seed: 43,
            ..s.clone()
        };
        assert_ne!(mine, sends(&other, 2, 4, run));
        // Gaps look exponential: mean 4 ms, and about e⁻¹ of them longer than the mean.
        let gaps: Vec<f64> = mine
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        assert!((mean - 0.004).abs() < 0.0003, "{mean}");
        let long = gaps.iter().filter(|g| **g > 0.004).count() as f64 / gaps.len() as f64;
        assert!((long - (-1f64).exp()).abs() < 0.03, "{long}");
    }

    #[test]
    fn poisson_follows_a_time_varying_rate() {
        let s = poisson(spec(
            2000.0,
            Pattern::Ramp {
                from: 0.0,
                over: Duration::from_secs(10),
            },
        ));
        let all = all_sends(&s, 2, Duration::from_secs(10));
        let c = counts(&all, Duration::from_secs(5), 2);
        // Expected 2500 then 7500.
        assert!(close(c[0], 2500.0, 250.0), "{c:?}");
        assert!(close(c[1], 7500.0, 450.0), "{c:?}");

        let st = poisson(spec(0.0, parse_stages_pattern("2s:500,2s:0")));
        let all = all_sends(&st, 3, Duration::MAX);
        assert!(close(all.len(), 1000.0, 150.0), "{}", all.len());
        assert!(all.iter().all(|t| *t < Duration::from_secs(4)));
    }

    #[test]
    fn every_pattern_is_monotonic() {
        let patterns = [
            (300.0, Pattern::Constant),
            (
                300.0,
                Pattern::Burst {
                    size: 7,
                    every: Duration::from_millis(333),
                },
            ),
            (
                300.0,
                Pattern::Ramp {
                    from: 5.0,
                    over: Duration::from_millis(1500),
                },
            ),
            (
                300.0,
                Pattern::Spike {
                    rate: 3000.0,
                    len: Duration::from_millis(100),
                    every: Duration::from_millis(700),
                },
            ),
            (
                300.0,
                Pattern::Chaos {
                    min_hold: Duration::from_millis(1),
                    max_hold: Duration::from_millis(50),
                },
            ),
            (0.0, parse_stages_pattern("1s:400,0s:10,1s:900,1s:0")),
        ];
        for (rate, pattern) in patterns {
            for arrivals in [Arrivals::Uniform, Arrivals::Poisson] {
                let s = RateSpec {
                    rate,
                    pattern: pattern.clone(),
                    arrivals,
                    seed: 9,
                };
                s.validate(Some(Duration::from_secs(3))).unwrap();
                for i in 0..3 {
                    let v = sends(&s, i, 3, Duration::from_secs(3));
                    assert!(!v.is_empty());
                    assert_monotonic(&v);
                }
            }
        }
    }

    #[test]
    fn unvalidated_specs_do_not_hang_or_panic() {
        let bad = [
            spec(f64::NAN, Pattern::Constant),
            spec(-5.0, Pattern::Constant),
            spec(0.0, Pattern::Constant),
            spec(
                f64::INFINITY,
                Pattern::Ramp {
                    from: f64::NAN,
                    over: Duration::ZERO,
                },
            ),
            spec(
                0.0,
                Pattern::Spike {
                    rate: 0.0,
                    len: Duration::ZERO,
                    every: Duration::ZERO,
                },
            ),
            spec(
                0.0,
                Pattern::Chaos {
                    min_hold: Duration::ZERO,
                    max_hold: Duration::ZERO,
                },
            ),
            spec(
                1.0,
                Pattern::Chaos {
                    min_hold: Duration::ZERO,
                    max_hold: Duration::ZERO,
                },
            ),
            spec(
                0.0,
                Pattern::Burst {
                    size: 0,
                    every: Duration::ZERO,
                },
            ),
            spec(
                1.0,
                Pattern::Burst {
                    size: 5,
                    every: Duration::MAX,
                },
            ),
            spec(1e-300, Pattern::Constant),
            spec(0.0, Pattern::Stages(vec![])),
        ];
        for s in &bad {
            for arrivals in [Arrivals::Uniform, Arrivals::Poisson] {
                let s = RateSpec {
                    arrivals,
                    ..s.clone()
                };
                let v = sends(&s, 0, 2, Duration::from_secs(2));
                assert_monotonic(&v);
                let _ = s.sends_due(Duration::ZERO, Duration::from_secs(1));
                let _ = s
                    .due(Some(Duration::from_secs(1)))
                    .before(Duration::from_secs(2));
            }
        }
    }

    /// `--shard`: processes with different core counts together send exactly the one-process
    /// schedule, send for send (uniform arrivals, bursts included).
    #[test]
    fn process_shards_send_exactly_the_whole_schedule() {
        let until = Duration::from_secs(3);
        let patterns = [
            spec(300.0, Pattern::Constant),
            spec(
                10.0,
                Pattern::Burst {
                    size: 50,
                    every: Duration::from_secs(1),
                },
            ),
            spec(
                100.0,
                Pattern::Spike {
                    rate: 1000.0,
                    len: Duration::from_millis(200),
                    every: Duration::from_secs(1),
                },
            ),
        ];
        for s in patterns {
            let whole = sends(&s, 0, 1, until);
            let cores = [2, 1, 3];
            let mut parts: Vec<Duration> = Vec::new();
            for (process, &c) in cores.iter().enumerate() {
                for core in 0..c {
                    let part = Part {
                        process,
                        processes: cores.len(),
                        core,
                        cores: c,
                    };
                    parts.extend(Schedule::part(&s, part).take_while(|d| *d < until));
                }
            }
            parts.sort();
            assert_eq!(parts, whole, "{s:?}");
            let total: u64 = (0..3)
                .flat_map(|p| (0..cores[p]).map(move |k| (p, k)))
                .map(|(p, k)| {
                    Part {
                        process: p,
                        processes: 3,
                        core: k,
                        cores: cores[p],
                    }
                    .share(1001)
                })
                .sum();
            assert_eq!(total, 1001);
        }
    }

    #[test]
    fn shard_shares_sum_to_total() {
        for total in [0, 1, 5, 10, 1001] {
            for shards in 1..9 {
                let shares: Vec<u64> = (0..shards).map(|i| shard_share(total, i, shards)).collect();
                assert_eq!(shares.iter().sum::<u64>(), total);
                assert!(shares.windows(2).all(|w| w[0] >= w[1] && w[0] - w[1] <= 1));
            }
        }
    }

    #[test]
    fn parse_stages_good() {
        assert_eq!(
            parse_stages("30s:100,1m:1000,30s:0").unwrap(),
            vec![
                Stage {
                    duration: Duration::from_secs(30),
                    target: 100.0
                },
                Stage {
                    duration: Duration::from_secs(60),
                    target: 1000.0
                },
                Stage {
                    duration: Duration::from_secs(30),
                    target: 0.0
                },
            ]
        );
        assert_eq!(
            parse_stages(" 1m 30s : 2.5 , 500ms:0 ").unwrap(),
            vec![
                Stage {
                    duration: Duration::from_secs(90),
                    target: 2.5
                },
                Stage {
                    duration: Duration::from_millis(500),
                    target: 0.0
                },
            ]
        );
        assert_eq!(parse_stages("0s:10").unwrap().len(), 1);
    }

    #[test]
    fn parse_stages_bad() {
        assert_eq!(parse_stages(""), Err(SpecError::NoStages));
        assert_eq!(parse_stages("  "), Err(SpecError::NoStages));
        let syntax = |s: &str| Err(SpecError::StageSyntax(s.into()));
        assert_eq!(parse_stages("30s"), syntax("30s"));
        assert_eq!(parse_stages("30s:100,"), syntax(""));
        assert_eq!(parse_stages("30s:100,,1m:5"), syntax(""));
        assert_eq!(parse_stages(":100"), syntax(":100"));
        assert_eq!(parse_stages("30s:"), syntax("30s:"));
        assert_eq!(parse_stages("30s:1:2"), syntax("30s:1:2"));
        assert!(matches!(
            parse_stages("30x:100"),
            Err(SpecError::StageDuration { .. })
        ));
        assert!(matches!(
            parse_stages("100:30s"),
            Err(SpecError::StageDuration { .. })
        ));
        for rate in ["-1", "NaN", "inf", "fast", "1e999"] {
            let st = format!("10s:{rate}");
            assert_eq!(parse_stages(&st), Err(SpecError::StageRate(st.clone())));
        }
        let msg = parse_stages("30s").unwrap_err().to_string();
        assert_eq!(msg, "stage `30s` must be DURATION:RATE, like 30s:100");
    }

    #[test]
    fn validate_rejections() {
        let d = Duration::from_secs;
        let ok = |s: RateSpec, run| assert_eq!(s.validate(run), Ok(()));
        let err = |s: RateSpec, run, e| assert_eq!(s.validate(run), Err(e));

        ok(spec(1.0, Pattern::Constant), None);
        err(
            spec(-1.0, Pattern::Constant),
            None,
            SpecError::InvalidRate(-1.0),
        );
        err(
            spec(f64::INFINITY, Pattern::Constant),
            None,
            SpecError::InvalidRate(f64::INFINITY),
        );
        assert!(matches!(
            spec(f64::NAN, Pattern::Constant).validate(None),
            Err(SpecError::InvalidRate(r)) if r.is_nan()
        ));
        err(
            spec(0.0, Pattern::Constant),
            None,
            SpecError::ZeroRate("constant"),
        );

        let burst = |size, every| Pattern::Burst { size, every };
        ok(spec(0.0, burst(1, d(1))), None);
        err(spec(0.0, burst(0, d(1))), None, SpecError::BurstSize);
        err(spec(0.0, burst(3, d(0))), None, SpecError::BurstEvery);

        let ramp = |from, over| Pattern::Ramp { from, over };
        ok(spec(10.0, ramp(0.0, d(10))), Some(d(10)));
        err(
            spec(0.0, ramp(5.0, d(10))),
            None,
            SpecError::ZeroRate("ramp"),
        );
        err(
            spec(10.0, ramp(-1.0, d(10))),
            None,
            SpecError::RampFrom(-1.0),
        );
        err(spec(10.0, ramp(0.0, d(0))), None, SpecError::RampOver);
        err(
            spec(10.0, ramp(0.0, d(11))),
            Some(d(10)),
            SpecError::RampLongerThanRun {
                over: d(11),
                run: d(10),
            },
        );
        ok(spec(10.0, ramp(0.0, d(11))), None);

        let spike = |rate, len, every| Pattern::Spike { rate, len, every };
        ok(spec(10.0, spike(100.0, d(1), d(5))), Some(d(5)));
        err(
            spec(10.0, spike(-3.0, d(1), d(5))),
            None,
            SpecError::SpikeRate(-3.0),
        );
        for (len, every) in [(d(5), d(5)), (d(6), d(5)), (d(0), d(5)), (d(0), d(0))] {
            err(
                spec(10.0, spike(100.0, len, every)),
                None,
                SpecError::SpikeLen { len, every },
            );
        }
        err(
            spec(10.0, spike(100.0, d(1), d(60))),
            Some(d(30)),
            SpecError::SpikeAfterRun {
                start: d(59),
                run: d(30),
            },
        );

        let chaos = |min_hold, max_hold| Pattern::Chaos { min_hold, max_hold };
        ok(spec(10.0, chaos(d(1), d(1))), None);
        err(
            spec(0.0, chaos(d(1), d(2))),
            None,
            SpecError::ZeroRate("chaos"),
        );
        for (min, max) in [
            (d(0), d(1)),
            (d(2), d(1)),
            (Duration::from_micros(10), d(1)),
        ] {
            err(
                spec(10.0, chaos(min, max)),
                None,
                SpecError::ChaosHold { min, max },
            );
        }

        err(
            spec(0.0, Pattern::Stages(vec![])),
            None,
            SpecError::NoStages,
        );
        err(
            spec(0.0, parse_stages_pattern("0s:10,0ms:5")),
            None,
            SpecError::StagesTooShort,
        );
        let mut stages = parse_stages("1s:1,1s:2").unwrap();
        stages[1].target = f64::NEG_INFINITY;
        err(
            spec(0.0, Pattern::Stages(stages)),
            None,
            SpecError::StageTarget {
                index: 2,
                target: f64::NEG_INFINITY,
            },
        );
        ok(spec(0.0, parse_stages_pattern("1m:10")), Some(d(5)));
    }

    #[test]
    fn error_messages_read_well() {
        let e = SpecError::RampLongerThanRun {
            over: Duration::from_secs(90),
            run: Duration::from_secs(60),
        };
        assert_eq!(
            e.to_string(),
            "the ramp lasts 1m 30s, longer than the 1m run"
        );
        let e = SpecError::ChaosHold {
            min: Duration::ZERO,
            max: Duration::from_secs(1),
        };
        assert_eq!(
            e.to_string(),
            "chaos hold times must be at least 1ms with min <= max, got 0s to 1s"
        );
    }

    #[test]
    fn rate_at_and_natural_duration() {
        let d = Duration::from_secs;
        let s = spec(
            100.0,
            Pattern::Ramp {
                from: 50.0,
                over: d(10),
            },
        );
        assert_eq!(rate_at(&s, d(0)), 50.0);
        assert_eq!(rate_at(&s, d(5)), 75.0);
        assert_eq!(rate_at(&s, d(10)), 100.0);
        assert_eq!(rate_at(&s, d(1000)), 100.0);
        assert_eq!(s.natural_duration(), None);
        assert_eq!(rate_at(&spec(5.0, Pattern::Constant), d(3)), 5.0);
        let sp = spec(
            10.0,
            Pattern::Spike {
                rate: 99.0,
                len: d(1),
                every: d(4),
            },
        );
        assert_eq!(rate_at(&sp, Duration::from_millis(2999)), 10.0);
        assert_eq!(rate_at(&sp, d(3)), 99.0);
        assert_eq!(rate_at(&sp, d(4)), 10.0);
        assert_eq!(
            spec(0.0, parse_stages_pattern("1m:10,30s:20")).natural_duration(),
            Some(d(90))
        );
    }
}
