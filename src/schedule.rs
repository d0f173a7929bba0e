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

use std::cell::Cell;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::rng::SplitMix64;

/// Chaos holds shorter than this would make the rate curve (and `target_rate`) cost more to walk
/// than the sends it drives.
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

    /// Total target rate (req/s, all shards) at offset `t`. Bursts count as their average over
    /// the burst period, added to R. Stages are 0 once finished.
    pub fn target_rate(&self, t: Duration) -> f64 {
        let r = clean(self.rate);
        let ts = t.as_secs_f64();
        match &self.pattern {
            Pattern::Constant => r,
            Pattern::Burst { size, every } => {
                if every.is_zero() {
                    r
                } else {
                    r + *size as f64 / every.as_secs_f64()
                }
            }
            Pattern::Ramp { from, over } => {
                let over = over.as_secs_f64();
                if ts < over {
                    let from = clean(*from);
                    from + (r - from) * (ts / over)
                } else {
                    r
                }
            }
            Pattern::Spike { rate, len, every } => {
                let every_ns = every.as_nanos();
                if every_ns == 0 {
                    return r;
                }
                let phase = t.as_nanos() % every_ns;
                if phase >= every_ns.saturating_sub(len.as_nanos()) {
                    clean(*rate)
                } else {
                    r
                }
            }
            Pattern::Chaos { min_hold, max_hold } => {
                chaos_rate_at(self.seed, r, *min_hold, *max_hold, t)
            }
            Pattern::Stages(stages) => {
                let mut start = Duration::ZERO;
                let mut prev = 0.0;
                for st in stages {
                    let end = start.saturating_add(st.duration);
                    let target = clean(st.target);
                    if t < end {
                        let frac = (t - start).as_secs_f64() / st.duration.as_secs_f64();
                        return prev + (target - prev) * frac;
                    }
                    start = end;
                    prev = target;
                }
                0.0
            }
        }
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

// ---------------------------------------------------------------------------------------------
// PRNG

const SHARD_SALT: u64 = 0x5348_4152_4453_414c; // "SHARDSAL"
const CHAOS_SALT: u64 = 0x4348_414f_5353_414c; // "CHAOSSAL"

// ---------------------------------------------------------------------------------------------
// Chaos rate curve

/// The chaos (hold, rate) sequence. Seeded by the spec's seed alone, so every shard (and
/// `target_rate`) walks the same curve.
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

type ChaosKey = (u64, u64, Duration, Duration);

thread_local! {
    // The live view asks for increasing times; resuming the last walk keeps that O(1) amortised
    // instead of re-walking the curve from the start on every call.
    static CHAOS_CURSOR: Cell<Option<(ChaosKey, ChaosWalk)>> = const { Cell::new(None) };
}

fn chaos_rate_at(seed: u64, rate: f64, min_hold: Duration, max_hold: Duration, t: Duration) -> f64 {
    let key = (seed, rate.to_bits(), min_hold, max_hold);
    let t = t.as_nanos();
    let mut walk = match CHAOS_CURSOR.get() {
        Some((k, w)) if k == key && w.start_ns <= t => w,
        _ => ChaosWalk::new(ChaosGen::new(seed, rate, min_hold, max_hold)),
    };
    while walk.end_ns <= t {
        walk.advance();
    }
    CHAOS_CURSOR.set(Some((key, walk)));
    walk.rate
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
            self.l0 + self.len * (self.r0 + 0.5 * self.slope * self.len)
        }
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
}

/// The whole run's rate curve as a sequence of pieces, found by Λ.
#[derive(Debug)]
enum Curve {
    Empty,
    /// Precomputed pieces (Constant, Ramp, Stages, the rate part of Burst).
    Pieces {
        pieces: Vec<Piece>,
        idx: usize,
    },
    /// Periods of `quiet` seconds at `base` then `every - quiet` seconds at `peak`; located by
    /// arithmetic so a near-zero base rate cannot make us walk periods one by one.
    Spike {
        base: f64,
        peak: f64,
        quiet: f64,
        every: f64,
        area: f64,
    },
    Chaos {
        walk: ChaosWalk,
        piece: Piece,
    },
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
                    Curve::Spike {
                        base: r,
                        peak,
                        quiet,
                        every: every_s,
                        area,
                    }
                } else {
                    Curve::Empty
                }
            }
            Pattern::Chaos { min_hold, max_hold } => {
                if r == 0.0 {
                    return Curve::Empty;
                }
                let walk = ChaosWalk::new(ChaosGen::new(spec.seed, r, *min_hold, *max_hold));
                Curve::Chaos {
                    walk,
                    piece: Piece::constant(0.0, walk.end_ns as f64 / 1e9, walk.rate, 0.0),
                }
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
            Curve::Spike {
                base,
                peak,
                quiet,
                every,
                area,
            } => {
                let mut k = (target / *area).floor();
                // The division can round across a period boundary.
                if k * *area > target {
                    k -= 1.0;
                } else if (k + 1.0) * *area <= target {
                    k += 1.0;
                }
                let l0 = k * *area;
                let t0 = k * *every;
                let base_area = *base * *quiet;
                if target < l0 + base_area {
                    Some(Piece::constant(t0, *quiet, *base, l0))
                } else {
                    Some(Piece::constant(
                        t0 + *quiet,
                        *every - *quiet,
                        *peak,
                        l0 + base_area,
                    ))
                }
            }
            Curve::Chaos { walk, piece } => {
                while target >= piece.l_end() {
                    let l0 = piece.l_end();
                    walk.advance();
                    let t0 = walk.start_ns as f64 / 1e9;
                    let len = (walk.end_ns - walk.start_ns) as f64 / 1e9;
                    *piece = Piece::constant(t0, len, walk.rate, l0);
                }
                Some(*piece)
            }
        }
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
    /// Shard `shard` of `shards`.
    pub fn new(spec: &RateSpec, shard: usize, shards: usize) -> Schedule {
        debug_assert!(shard < shards, "shard {shard} of {shards}");
        let shards = shards.max(1);
        let shard = shard.min(shards - 1);
        let draw = match spec.arrivals {
            Arrivals::Uniform => Draw::Uniform {
                k: 0,
                phase: shard as f64,
            },
            Arrivals::Poisson => Draw::Poisson {
                rng: SplitMix64::new(spec.seed, SHARD_SALT ^ shard as u64),
                acc: 0.0,
            },
        };
        let bursts = match &spec.pattern {
            Pattern::Burst { size, every } if !every.is_zero() => {
                let share = shard_share(*size, shard, shards);
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
            stride: shards as f64,
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
        let t = self.curve.locate(target)?.invert(target);
        if self.end.is_some_and(|end| t >= end) {
            return None;
        }
        // Rounding at piece boundaries must never let a send go backwards.
        let d = Duration::try_from_secs_f64(t).ok()?.max(self.last);
        self.last = d;
        Some(d)
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

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
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

    /// ∫ target_rate over [a, b) by the midpoint rule (fine for piecewise linear curves when the
    /// breakpoints fall on the grid).
    fn integral(spec: &RateSpec, a: f64, b: f64) -> f64 {
        let steps = 1000;
        let h = (b - a) / steps as f64;
        (0..steps)
            .map(|i| spec.target_rate(secs(a + (i as f64 + 0.5) * h)) * h)
            .sum()
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
            assert_eq!(s.target_rate(Duration::from_secs(w as u64)), want);
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
        assert_eq!(s.target_rate(Duration::from_secs(3)), 10.0);
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
        assert_eq!(s.target_rate(Duration::ZERO), 120.0);
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
                let want = integral(&s, w as f64, w as f64 + 1.0);
                assert!(close(n, want, 1.0), "window {w}: {n} vs {want}");
            }
        }
        assert_eq!(s.target_rate(Duration::from_secs(5)), 50.0);
        assert_eq!(s.target_rate(Duration::from_secs(15)), 100.0);
        assert_eq!(s.target_rate(Duration::from_secs(25)), 50.0);
        assert_eq!(s.target_rate(Duration::from_secs(30)), 0.0);
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
            let r = a.target_rate(Duration::from_millis(ms));
            assert!((0.0..=800.0).contains(&r));
            if !distinct.contains(&r) {
                distinct.push(r);
            }
        }
        // 200 ms to 2 s holds over 20 s: about 18 changes.
        assert!(distinct.len() >= 8, "{} rates", distinct.len());
        // Out-of-order queries give the same answers as in-order ones.
        assert_eq!(
            a.target_rate(Duration::from_millis(1234)),
            mk(7).target_rate(Duration::from_millis(1234))
        );

        // Sends follow the curve.
        let all = all_sends(&a, 3, run);
        let c = counts(&all, Duration::from_millis(100), 200);
        let mut covered = 0.0;
        for (w, &n) in c.iter().enumerate() {
            let lo = w as f64 * 0.1;
            let want = integral(&a, lo, lo + 0.1);
            covered += want;
            // A hold boundary inside the window makes the midpoint integral slightly off.
            assert!(close(n, want, 2.0), "window {w}: {n} vs {want}");
        }
        assert!(close(all.len(), covered, 2.0));
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
                let _ = s.target_rate(Duration::from_secs(1));
            }
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
    fn target_rate_and_natural_duration() {
        let d = Duration::from_secs;
        let s = spec(
            100.0,
            Pattern::Ramp {
                from: 50.0,
                over: d(10),
            },
        );
        assert_eq!(s.target_rate(d(0)), 50.0);
        assert_eq!(s.target_rate(d(5)), 75.0);
        assert_eq!(s.target_rate(d(10)), 100.0);
        assert_eq!(s.target_rate(d(1000)), 100.0);
        assert_eq!(s.natural_duration(), None);
        assert_eq!(spec(5.0, Pattern::Constant).target_rate(d(3)), 5.0);
        let sp = spec(
            10.0,
            Pattern::Spike {
                rate: 99.0,
                len: d(1),
                every: d(4),
            },
        );
        assert_eq!(sp.target_rate(Duration::from_millis(2999)), 10.0);
        assert_eq!(sp.target_rate(d(3)), 99.0);
        assert_eq!(sp.target_rate(d(4)), 10.0);
        assert_eq!(
            spec(0.0, parse_stages_pattern("1m:10,30s:20")).natural_duration(),
            Some(d(90))
        );
    }
}
