//! `blast overhead --via PROXY_URL --direct UPSTREAM_URL [load options]`: what a proxy adds to
//! every percentile, measured in one run so that the machine's noise falls on both sides.
//!
//! Both sides run the user's workload exactly as `blast URL [load options]` would, at once, in
//! this process (`crate::run_together`): each with its own shards, connections and
//! histograms, sharing the cores. Open loop, the direct side's schedule is the via side's
//! shifted by half a send gap, so that their sends alternate; closed loop, both start
//! together with `--conns` connections each. The difference per percentile comes with a 95%
//! interval from a paired block bootstrap over the timeline's intervals (see `bootstrap_ci`).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

use crate::cli::{Cli, RunArgs};
use crate::plan::Plan;
use crate::report::text::fmt_us;
use crate::report::Report;
use crate::rng::SplitMix64;
use crate::schedule::Arrivals;
use crate::stats::{Metric, Snapshot, Summary};

/// The distributions compared, with their names in `overhead.delta`.
pub const METRICS: [(Metric, &str); 5] = [
    (Metric::Latency, "latency"),
    (Metric::Ttfb, "ttfb"),
    (Metric::Ttft, "ttft"),
    (Metric::Itl, "itl"),
    (Metric::Tpot, "tpot"),
];

/// The percentiles compared, with their keys (those of a result's summaries).
pub const PERCENTILES: [(f64, &str); 4] =
    [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p999")];

/// Bootstrap resamples: enough for stable 2.5% / 97.5% points, cheap next to the run.
pub const RESAMPLES: usize = 1000;
/// Fewer paired intervals than this give no interval estimate at all.
pub const MIN_BLOCKS: usize = 5;
/// The statistics interval unless `--interval` says otherwise: the bootstrap's blocks, so
/// shorter than a load test's 1 s (a 10 s run gives 40 blocks).
const DEFAULT_INTERVAL: &str = "250ms";
/// The direct side's schedule starts at most this long after the via side's.
const MAX_OFFSET: Duration = Duration::from_millis(50);
/// A percentile's interval needs this many values beyond it on each side (a p99 needs
/// 1000): the bootstrap cannot say how far an extreme of few values would move.
pub const MIN_TAIL: f64 = 10.0;
/// Salt of the direct side's Poisson seed (see `plans`).
const DIRECT_SALT: u64 = 0x4449_5245_4354; // "DIRECT"
/// Per-response token counts may differ this much (relative) before they count as a mismatch.
const TOKEN_TOLERANCE: f64 = 0.005;

const USAGE: &str = "usage: blast overhead --via PROXY_URL --direct UPSTREAM_URL [load options]";

/// What `blast overhead` was asked to do.
#[derive(Debug)]
pub struct Invocation {
    pub via: String,
    pub direct: String,
    /// The load options (their `url` is the via URL).
    pub args: RunArgs,
}

#[derive(Debug)]
pub enum ArgsError {
    Help,
    /// One line for the user.
    Usage(String),
    Clap(clap::Error),
}

/// The subcommand's words: `--via`/`--direct` (each once, `--via URL` or `--via=URL`), and
/// every other word a load option as `blast URL` takes them.
pub fn parse_args(rest: &[String]) -> Result<Invocation, ArgsError> {
    let (mut via, mut direct, mut load) = (None, None, Vec::new());
    let mut words = rest.iter();
    while let Some(w) = words.next() {
        let (name, inline) = match w.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (w.as_str(), None),
        };
        let slot = match name {
            "--via" => &mut via,
            "--direct" => &mut direct,
            "-h" | "--help" => return Err(ArgsError::Help),
            _ => {
                load.push(w.clone());
                continue;
            }
        };
        let value = match inline.or_else(|| words.next().cloned()) {
            Some(v) if !v.is_empty() && !v.starts_with('-') => v,
            _ => return Err(ArgsError::Usage(format!("{name} needs a URL; {USAGE}"))),
        };
        if slot.replace(value).is_some() {
            return Err(ArgsError::Usage(format!("{name} is given twice; {USAGE}")));
        }
    }
    let (Some(via), Some(direct)) = (via, direct) else {
        return Err(ArgsError::Usage(format!(
            "blast overhead needs both --via and --direct; {USAGE}"
        )));
    };
    // The default interval first: the user's, if any, comes later and wins.
    let argv = ["blast", via.as_str(), "--interval", DEFAULT_INTERVAL]
        .into_iter()
        .map(str::to_string)
        .chain(load);
    let cli = Cli::try_parse_from(argv).map_err(ArgsError::Clap)?;
    if cli.command.is_some() {
        return Err(ArgsError::Usage(format!(
            "blast overhead takes load options only; {USAGE}"
        )));
    }
    Ok(Invocation {
        via,
        direct,
        args: cli.run,
    })
}

/// The two sides' plans, via first: the same options, each with its own URL.
pub fn plans(inv: &Invocation) -> Result<[Arc<Plan>; 2], String> {
    let plan = |url: &str| {
        let mut args = inv.args.clone();
        args.url = Some(url.to_string());
        Plan::from_args(&args).map_err(|e| e.to_string())
    };
    let (via, mut direct) = (plan(&inv.via)?, plan(&inv.direct)?);
    // Poisson: the direct side draws gaps of its own. A copy of the via side's gaps shifted
    // by a constant would put every direct send right after a via send, and via's after
    // gaps of every length: in an A/A run (both sides one server, 300 req/s) via's p50 came
    // out 30 us higher, beyond the interval. Independent streams make the sides alike in
    // distribution. (Chaos draws its rate curve from the seed too, which both must share.)
    if let Some(spec) = direct.rate.as_mut() {
        let chaos = matches!(spec.pattern, crate::schedule::Pattern::Chaos { .. });
        if spec.arrivals == Arrivals::Poisson && !chaos {
            spec.seed = SplitMix64::new(spec.seed, DIRECT_SALT).next_u64();
        }
    }
    if via.shard.count > 1 {
        return Err("--shard does not apply to blast overhead (run it whole)".into());
    }
    let unsupported = [
        (via.output.timeline_csv.is_some(), "--timeline"),
        (via.output.log.is_some(), "--log"),
    ];
    if let Some((_, name)) = unsupported.iter().find(|(given, _)| *given) {
        return Err(format!(
            "{name} does not apply to blast overhead: each side's timeline is in its --json result"
        ));
    }
    Ok([Arc::new(via), Arc::new(direct)])
}

/// How long after the via side's schedule the direct side's starts: half the mean gap
/// between one core's sends (0 for a closed loop, and for Poisson arrivals, whose two
/// streams are independent). Each core's thread then sends via and
/// direct requests in strict alternation with equal gaps: a side whose sends came right
/// after the other's would find the thread awake, and one after a long idle would pay the
/// wake-up (measured: 50 us of send lag at the median on loopback with a quarter-gap offset).
pub fn direct_offset(plan: &Plan) -> Duration {
    let Some(spec) = plan
        .rate
        .as_ref()
        .filter(|s| s.arrivals == Arrivals::Uniform)
    else {
        return Duration::ZERO;
    };
    let span = plan.run_for.unwrap_or(Duration::from_secs(1));
    let rate = spec.mean_rate(Duration::ZERO, span);
    if rate.is_nan() || rate <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64((0.5 * plan.cores as f64 / rate).min(MAX_OFFSET.as_secs_f64()))
}

/// A histogram of one interval, as (value, count) pairs of its recorded buckets.
pub type Sparse = Vec<(u64, u64)>;

/// Each side's recorded values per interval (the bootstrap's blocks), per compared metric.
#[derive(Default)]
pub struct Blocks {
    /// [side][interval][metric]
    sides: [Vec<[Sparse; METRICS.len()]>; 2],
}

impl Blocks {
    /// Keep what `snap` (one shard's interval of side `side`) recorded.
    pub fn record(&mut self, side: usize, snap: &Snapshot) {
        let seq = snap.seq as usize;
        let blocks = &mut self.sides[side];
        if blocks.len() <= seq {
            blocks.resize_with(seq + 1, Default::default);
        }
        for (k, (m, _)) in METRICS.iter().enumerate() {
            if let Some(h) = snap.hists.get(*m) {
                let pairs = h
                    .iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value()));
                blocks[seq][k].extend(pairs);
            }
        }
    }

    /// Paired intervals: the longer side's count.
    pub fn len(&self) -> usize {
        self.sides[0].len().max(self.sides[1].len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn metric(&self, side: usize, k: usize) -> Vec<Sparse> {
        self.sides[side].iter().map(|b| b[k].clone()).collect()
    }

    /// Values recorded by side `side` in each interval, for metric `k`.
    fn counts(&self, side: usize, k: usize) -> Vec<f64> {
        let mut c: Vec<f64> = self.sides[side]
            .iter()
            .map(|b| b[k].iter().map(|(_, n)| *n as f64).sum())
            .collect();
        c.resize(self.len(), 0.0);
        c
    }
}

/// One percentile of one metric on both sides, in milliseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Delta {
    pub via_ms: f64,
    pub direct_ms: f64,
    /// via - direct: what the proxy adds.
    pub delta_ms: f64,
    /// The 95% interval of the difference: null with too few intervals, or too few values
    /// beyond the percentile (`MIN_TAIL`).
    pub ci95_low_ms: Option<f64>,
    pub ci95_high_ms: Option<f64>,
}

impl Delta {
    /// The interval excludes 0: the difference is more than noise.
    pub fn significant(&self) -> bool {
        matches!((self.ci95_low_ms, self.ci95_high_ms), (Some(l), Some(h)) if l > 0.0 || h < 0.0)
    }
}

/// The summary of metric `m` in a result, if it recorded any.
fn summary(r: &Report, m: Metric) -> Option<&Summary> {
    let s = match m {
        Metric::Latency => Some(&r.latency_us),
        _ => r
            .distributions
            .iter()
            .find(|(k, _)| *k == m.key())
            .map(|(_, s)| s),
    };
    s.filter(|s| s.count > 0)
}

fn pct(s: &Summary, key: &str) -> u64 {
    match key {
        "p50" => s.p50,
        "p90" => s.p90,
        "p99" => s.p99,
        _ => s.p999,
    }
}

/// Per metric (recorded by both sides), per percentile: via, direct, the difference and its
/// 95% interval. The point figures are exactly those of the two result documents.
pub fn deltas(
    via: &Report,
    direct: &Report,
    blocks: &Blocks,
    seed: u64,
) -> BTreeMap<&'static str, BTreeMap<&'static str, Delta>> {
    let qs: Vec<f64> = PERCENTILES.iter().map(|(q, _)| *q).collect();
    let mut out = BTreeMap::new();
    for (k, (m, name)) in METRICS.iter().enumerate() {
        let (Some(a), Some(b)) = (summary(via, *m), summary(direct, *m)) else {
            continue;
        };
        let mut rng = SplitMix64::new(seed, k as u64);
        let ci = bootstrap_ci(
            &blocks.metric(0, k),
            &blocks.metric(1, k),
            &qs,
            RESAMPLES,
            &mut rng,
        );
        let per: BTreeMap<&'static str, Delta> = PERCENTILES
            .iter()
            .enumerate()
            .map(|(j, (_, key))| {
                let (v, d) = (pct(a, key) as f64 / 1e3, pct(b, key) as f64 / 1e3);
                let (q, _) = PERCENTILES[j];
                let tail = (a.count.min(b.count) as f64) * (1.0 - q);
                let ci = ci.as_ref().map(|c| c[j]).filter(|_| tail >= MIN_TAIL);
                let delta = Delta {
                    via_ms: v,
                    direct_ms: d,
                    delta_ms: v - d,
                    ci95_low_ms: ci.map(|c| c.0 / 1e3),
                    ci95_high_ms: ci.map(|c| c.1 / 1e3),
                };
                (*key, delta)
            })
            .collect();
        out.insert(*name, per);
    }
    out
}

/// One side's intervals with their values replaced by indices into the side's sorted
/// distinct values, so that a resample is a weighted sum of counts and one scan.
struct Indexed {
    values: Vec<u64>,
    blocks: Vec<Vec<(u32, u64)>>,
}

impl Indexed {
    fn new(blocks: &[Sparse], n: usize) -> Indexed {
        let mut values: Vec<u64> = blocks.iter().flatten().map(|(v, _)| *v).collect();
        values.sort_unstable();
        values.dedup();
        let mut indexed: Vec<Vec<(u32, u64)>> = blocks
            .iter()
            .map(|b| {
                b.iter()
                    .map(|(v, c)| (values.binary_search(v).expect("listed") as u32, *c))
                    .collect()
            })
            .collect();
        indexed.resize(n, Vec::new());
        Indexed {
            values,
            blocks: indexed,
        }
    }

    /// The quantiles `qs` (ascending) of the blocks weighted by `w`, as a histogram's
    /// `value_at_quantile` would give them; None when the weighted blocks hold nothing.
    fn quantiles(&self, w: &[u64], qs: &[f64], counts: &mut Vec<u64>) -> Option<Vec<f64>> {
        counts.clear();
        counts.resize(self.values.len(), 0);
        let mut total = 0u64;
        for (b, &wb) in self.blocks.iter().zip(w) {
            if wb == 0 {
                continue;
            }
            for &(i, c) in b {
                counts[i as usize] += c * wb;
                total += c * wb;
            }
        }
        if total == 0 {
            return None;
        }
        let mut out = Vec::with_capacity(qs.len());
        let (mut cum, mut i) = (0u64, 0usize);
        for q in qs {
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            while cum < rank {
                cum += counts[i];
                i += 1;
            }
            out.push(self.values[i - 1] as f64);
        }
        Some(out)
    }
}

/// Multinomial block weights: `n` draws with replacement from `n` blocks.
fn draw(w: &mut [u64], rng: &mut SplitMix64) {
    w.fill(0);
    let n = w.len() as u64;
    for _ in 0..n {
        w[rng.below(n) as usize] += 1;
    }
}

/// The 2.5% and 97.5% points of `xs` (sorted here), by nearest rank.
fn interval95(xs: &mut [f64]) -> (f64, f64) {
    xs.sort_unstable_by(f64::total_cmp);
    let at = |p: f64| xs[((p * (xs.len() - 1) as f64).round() as usize).min(xs.len() - 1)];
    (at(0.025), at(0.975))
}

/// A paired block bootstrap of `quantile(via) - quantile(direct)` for each of `qs`: the
/// run's intervals are drawn with replacement, the same draw for both sides (interval `i` of
/// one side ran beside interval `i` of the other, so noise common to both, a busy moment of
/// the machine, cancels instead of widening the interval). Blocks of time rather than single
/// requests keep the correlation between neighbouring requests (queueing) inside a block.
/// Returns the (2.5%, 97.5%) points per quantile, or None with fewer than `MIN_BLOCKS`
/// intervals.
pub fn bootstrap_ci(
    via: &[Sparse],
    direct: &[Sparse],
    qs: &[f64],
    resamples: usize,
    rng: &mut SplitMix64,
) -> Option<Vec<(f64, f64)>> {
    let n = via.len().max(direct.len());
    if n < MIN_BLOCKS {
        return None;
    }
    let (a, b) = (Indexed::new(via, n), Indexed::new(direct, n));
    let (mut w, mut scratch) = (vec![0u64; n], Vec::new());
    let mut diffs: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); qs.len()];
    for _ in 0..resamples {
        draw(&mut w, rng);
        let (Some(x), Some(y)) = (
            a.quantiles(&w, qs, &mut scratch),
            b.quantiles(&w, qs, &mut scratch),
        ) else {
            continue;
        };
        for (j, d) in diffs.iter_mut().enumerate() {
            d.push(x[j] - y[j]);
        }
    }
    if diffs[0].len() < resamples / 2 {
        return None;
    }
    Some(diffs.iter_mut().map(|d| interval95(d)).collect())
}

/// The same paired bootstrap for a ratio of sums: `num / den` via minus direct, each a
/// per-interval series (e.g. tokens over responses).
pub fn ratio_diff_ci(
    num: [&[f64]; 2],
    den: [&[f64]; 2],
    resamples: usize,
    rng: &mut SplitMix64,
) -> Option<(f64, f64)> {
    let n = num[0]
        .len()
        .min(num[1].len())
        .min(den[0].len())
        .min(den[1].len());
    if n < MIN_BLOCKS {
        return None;
    }
    let mut w = vec![0u64; n];
    let mut diffs = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        draw(&mut w, rng);
        let ratio = |s: usize| {
            let (mut x, mut y) = (0.0, 0.0);
            for i in 0..n {
                x += num[s][i] * w[i] as f64;
                y += den[s][i] * w[i] as f64;
            }
            (y > 0.0).then(|| x / y)
        };
        if let (Some(a), Some(b)) = (ratio(0), ratio(1)) {
            diffs.push(a - b);
        }
    }
    (diffs.len() >= resamples / 2).then(|| interval95(&mut diffs))
}

/// Do the sides' responses carry the same tokens? A proxy that drops or duplicates stream
/// events changes the count through it.
#[derive(Clone, Debug, Serialize)]
pub struct TokenCheck {
    /// Tokens per successful response (the server's count when it gives one).
    pub via_per_response: f64,
    pub direct_per_response: f64,
    /// Streaming: token events received per response with a first token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_events_per_response: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_events_per_response: Option<f64>,
    #[serde(rename = "match")]
    pub matched: bool,
}

/// A difference of per-response means that is beyond `TOKEN_TOLERANCE` and beyond the
/// bootstrap's interval (without one, beyond twice the tolerance).
fn differs(a: f64, b: f64, ci: Option<(f64, f64)>) -> bool {
    let rel = (a - b).abs() / b.abs().max(1e-9);
    match ci {
        Some((lo, hi)) => rel > TOKEN_TOLERANCE && (lo > 0.0 || hi < 0.0),
        None => rel > 2.0 * TOKEN_TOLERANCE,
    }
}

pub fn token_check(
    via: &Report,
    direct: &Report,
    blocks: &Blocks,
    seed: u64,
) -> Option<TokenCheck> {
    let (tv, td) = (via.tokens.as_ref()?, direct.tokens.as_ref()?);
    if via.requests.ok == 0 || direct.requests.ok == 0 {
        return None;
    }
    let mut rng = SplitMix64::new(seed, 0x544f_4b45_4e53);
    let (vp, dp) = (
        tv.output as f64 / via.requests.ok as f64,
        td.output as f64 / direct.requests.ok as f64,
    );
    let series = |r: &Report, f: fn(&crate::aggregate::TimelineRow) -> u64| -> Vec<f64> {
        r.timeline.iter().map(|row| f(row) as f64).collect()
    };
    let (tok, ok) = (
        [series(via, |r| r.tokens), series(direct, |r| r.tokens)],
        [series(via, |r| r.ok), series(direct, |r| r.ok)],
    );
    let ci = ratio_diff_ci([&tok[0], &tok[1]], [&ok[0], &ok[1]], RESAMPLES, &mut rng);
    let mut matched = !differs(vp, dp, ci);
    // Token events: ITL gaps plus one first token per response.
    let k = |m: Metric| METRICS.iter().position(|(x, _)| *x == m).expect("compared");
    let (itl, ttft) = (k(Metric::Itl), k(Metric::Ttft));
    let events = |s: usize| -> (Vec<f64>, Vec<f64>) {
        let (gaps, firsts) = (blocks.counts(s, itl), blocks.counts(s, ttft));
        (
            gaps.iter().zip(&firsts).map(|(g, f)| g + f).collect(),
            firsts,
        )
    };
    let ((ev, fv), (ed, fd)) = (events(0), events(1));
    let per = |e: &[f64], f: &[f64]| {
        let firsts: f64 = f.iter().sum();
        (firsts > 0.0).then(|| e.iter().sum::<f64>() / firsts)
    };
    let (vev, dev) = (per(&ev, &fv), per(&ed, &fd));
    if let (Some(a), Some(b)) = (vev, dev) {
        let ci = ratio_diff_ci([&ev, &ed], [&fv, &fd], RESAMPLES, &mut rng);
        matched &= !differs(a, b, ci);
    }
    Some(TokenCheck {
        via_per_response: vp,
        direct_per_response: dp,
        via_events_per_response: vev,
        direct_events_per_response: dev,
        matched,
    })
}

/// What the comparison says that its figures alone do not.
pub fn warnings(
    via: &Report,
    direct: &Report,
    tokens: Option<&TokenCheck>,
    blocks: usize,
) -> Vec<crate::report::Warning> {
    use crate::report::Warning;
    let mut out = Vec::new();
    if let Some(t) = tokens.filter(|t| !t.matched) {
        let events = match (t.via_events_per_response, t.direct_events_per_response) {
            (Some(a), Some(b)) => format!(", token events {a:.2} vs {b:.2}"),
            _ => String::new(),
        };
        out.push(Warning {
            code: "tokens_mismatch",
            message: format!(
                "the proxy changes the tokens: {:.2} per response through it, {:.2} direct{events}; \
                 it drops or duplicates stream events (or the model's answers vary: fix \
                 --max-tokens and the sampling to compare)",
                t.via_per_response, t.direct_per_response
            ),
        });
    }
    let buffered = |r: &Report| r.warnings.iter().any(|w| w.code == "buffered_stream");
    let itl_p50 = |r: &Report| summary(r, Metric::Itl).map(|s| s.p50);
    let collapsed = match (itl_p50(via), itl_p50(direct)) {
        (Some(a), Some(b)) => b >= 100 && a * 4 < b,
        _ => false,
    };
    if (buffered(via) && !buffered(direct)) || collapsed {
        let itl = match (itl_p50(via), itl_p50(direct)) {
            (Some(a), Some(b)) => format!(
                " (ITL p50 {} through it, {} direct)",
                fmt_us(a as f64),
                fmt_us(b as f64)
            ),
            _ => String::new(),
        };
        out.push(Warning {
            code: "proxy_buffers_stream",
            message: format!(
                "the proxy buffers streamed responses: their tokens arrive at once through it \
                 but one by one direct{itl}, so through it TTFT is close to the whole answer \
                 and ITL/TPOT say nothing about the server"
            ),
        });
    }
    let bad = |r: &Report| r.requests.failed + r.requests.completed.saturating_sub(r.requests.ok);
    let (bv, bd) = (bad(via), bad(direct));
    if bv > bd + 1 + via.requests.sent / 100 {
        out.push(Warning {
            code: "proxy_errors",
            message: format!(
                "{bv} of {} requests failed or were not 2xx through the proxy, {bd} of {} direct",
                via.requests.sent, direct.requests.sent
            ),
        });
    }
    if blocks < MIN_BLOCKS {
        out.push(Warning {
            code: "too_few_intervals",
            message: format!(
                "only {blocks} intervals: no 95% interval for the differences (run longer or \
                 with a shorter --interval; {MIN_BLOCKS} at least)"
            ),
        });
    }
    out
}

/// The whole comparison, as written to `--json`.
#[derive(Serialize)]
pub struct Overhead<'a> {
    pub via_url: &'a str,
    pub direct_url: &'a str,
    /// How long after the via side's schedule the direct side's started.
    pub direct_offset_ms: f64,
    /// Paired intervals (the bootstrap's blocks) and their length.
    pub blocks: usize,
    pub block_s: f64,
    pub resamples: usize,
    pub delta: BTreeMap<&'static str, BTreeMap<&'static str, Delta>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenCheck>,
    pub warnings: Vec<crate::report::Warning>,
    pub via: &'a Report,
    pub direct: &'a Report,
}

impl<'a> Overhead<'a> {
    pub fn new(via: &'a Report, direct: &'a Report, blocks: &Blocks, offset: Duration) -> Self {
        let seed = via.config.rate.as_ref().map_or(1, |s| s.seed);
        let tokens = token_check(via, direct, blocks, seed);
        Overhead {
            via_url: &via.config.url,
            direct_url: &direct.config.url,
            direct_offset_ms: offset.as_secs_f64() * 1e3,
            blocks: blocks.len(),
            block_s: via.config.interval.as_secs_f64(),
            resamples: RESAMPLES,
            delta: deltas(via, direct, blocks, seed),
            warnings: warnings(via, direct, tokens.as_ref(), blocks.len()),
            tokens,
            via,
            direct,
        }
    }

    pub fn write_json(&self, w: &mut impl Write) -> io::Result<()> {
        let doc = serde_json::json!({
            "tool": "blast",
            "version": env!("CARGO_PKG_VERSION"),
            "command": "overhead",
            "interrupted": self.via.interrupted || self.direct.interrupted,
            "overhead": self,
        });
        serde_json::to_writer_pretty(&mut *w, &doc)?;
        writeln!(w)
    }

    /// The summary: one table of via, direct and the difference, then what to look out for.
    pub fn write_text(&self, w: &mut impl Write) -> io::Result<()> {
        let (v, d) = (self.via, self.direct);
        writeln!(w, "Overhead of {} over {}", self.via_url, self.direct_url)?;
        writeln!(
            w,
            "  requests: via {} sent, {} ok; direct {} sent, {} ok; {:.1} s{}",
            v.requests.sent,
            v.requests.ok,
            d.requests.sent,
            d.requests.ok,
            v.elapsed_s.max(d.elapsed_s),
            if v.interrupted { " (interrupted)" } else { "" }
        )?;
        writeln!(
            w,
            "  one run, both sides at once{}; 95% intervals from {} paired {:.2} s intervals",
            match self.direct_offset_ms {
                o if o > 0.0 => format!(", direct sends {o:.2} ms after via's"),
                _ => String::new(),
            },
            self.blocks,
            self.block_s
        )?;
        writeln!(w)?;
        writeln!(
            w,
            "  {:<8}{:<6}{:>12}{:>12}{:>12}   95% interval of via - direct",
            "", "", "via", "direct", "via-direct"
        )?;
        for (_, name) in METRICS {
            let Some(per) = self.delta.get(name) else {
                continue;
            };
            for (j, (_, key)) in PERCENTILES.iter().enumerate() {
                let x = &per[key];
                let ci = match (x.ci95_low_ms, x.ci95_high_ms) {
                    (Some(l), Some(h)) => format!(
                        "[{:+.3}, {:+.3}] ms{}",
                        l,
                        h,
                        if x.significant() {
                            ""
                        } else {
                            "  (within noise)"
                        }
                    ),
                    _ => "-  (too few values to tell)".to_string(),
                };
                writeln!(
                    w,
                    "  {:<8}{:<6}{:>12}{:>12}{:>12}   {ci}",
                    if j == 0 { name } else { "" },
                    key.replace("p999", "p99.9"),
                    fmt_ms(x.via_ms),
                    fmt_ms(x.direct_ms),
                    format!("{:+.3}ms", x.delta_ms),
                )?;
            }
        }
        if let Some(t) = &self.tokens {
            writeln!(
                w,
                "\n  tokens per response: via {:.2}, direct {:.2}{}",
                t.via_per_response,
                t.direct_per_response,
                if t.matched { " (match)" } else { " (MISMATCH)" }
            )?;
        }
        let sides = [("via", v), ("direct", d)];
        let side_warnings = sides.iter().flat_map(|(s, r)| {
            r.warnings
                .iter()
                .map(move |w| format!("{s}: {}", w.message))
        });
        let all: Vec<String> = self
            .warnings
            .iter()
            .map(|w| w.message.clone())
            .chain(side_warnings)
            .collect();
        if !all.is_empty() {
            writeln!(w, "\nWarnings:")?;
            for m in all {
                writeln!(w, "  ! {m}")?;
            }
        }
        Ok(())
    }
}

fn fmt_ms(ms: f64) -> String {
    format!("{ms:.3}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn via_and_direct_are_taken_out_of_the_load_options() {
        let inv = parse_args(&words(
            "--rate 50 --via http://127.0.0.1:1/a --direct=http://127.0.0.1:2/a -n 4",
        ))
        .unwrap();
        assert_eq!(inv.via, "http://127.0.0.1:1/a");
        assert_eq!(inv.direct, "http://127.0.0.1:2/a");
        assert_eq!(inv.args.rate, Some(50.0));
        assert_eq!(inv.args.conns, 4);
        assert_eq!(inv.args.interval, DEFAULT_INTERVAL);
        let inv = parse_args(&words("--via http://a/ --direct http://b/ --interval 1s")).unwrap();
        assert_eq!(inv.args.interval, "1s");
        for bad in [
            "--via http://a/",
            "--direct http://b/",
            "--via --direct http://b/",
            "--via http://a/ --via http://c/ --direct http://b/",
        ] {
            assert!(
                matches!(parse_args(&words(bad)), Err(ArgsError::Usage(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_args(&words("--via http://a/ --direct http://b/ --conns x")),
            Err(ArgsError::Clap(_))
        ));
        assert!(matches!(parse_args(&words("--help")), Err(ArgsError::Help)));
    }

    /// Uniform: the same schedule, the direct side's half a core's gap later. Poisson: gaps
    /// of its own, no shift. Closed loop: no shift.
    #[test]
    fn the_sides_schedules() {
        let sides = |opts: &str| {
            let inv = parse_args(&words(&format!(
                "--via http://127.0.0.1:1/ --direct http://127.0.0.1:2/ --cores 1 {opts}"
            )))
            .unwrap();
            let [via, direct] = plans(&inv).unwrap();
            let seeds = (
                via.rate.as_ref().map(|r| r.seed),
                direct.rate.as_ref().map(|r| r.seed),
            );
            (seeds, direct_offset(&via))
        };
        let ((a, b), off) = sides("--rate 100");
        assert_eq!((a, b, off), (Some(1), Some(1), Duration::from_millis(5)));
        let ((a, b), off) = sides("--rate 100 --arrivals poisson");
        assert!(a != b && b.is_some(), "{a:?} {b:?}");
        assert_eq!(off, Duration::ZERO);
        let ((a, b), off) = sides("--rate 1");
        assert_eq!((a, b, off), (Some(1), Some(1), MAX_OFFSET));
        assert_eq!(sides("--conns 2").1, Duration::ZERO);
        let inv = parse_args(&words(
            "--via http://127.0.0.1:1/ --direct http://127.0.0.1:2/ --shard 0/2",
        ))
        .unwrap();
        assert!(plans(&inv).is_err());
    }

    /// Blocks of `n` values each: `base + i` for i in 0..n.
    fn blocks(count: usize, base: u64, n: u64) -> Vec<Sparse> {
        (0..count)
            .map(|_| (0..n).map(|i| (base + i, 1)).collect())
            .collect()
    }

    #[test]
    fn a_constant_shift_has_a_tight_interval_around_it() {
        let qs = [0.5, 0.9];
        let mut rng = SplitMix64::new(1, 2);
        let ci = bootstrap_ci(
            &blocks(20, 5_000, 100),
            &blocks(20, 0, 100),
            &qs,
            200,
            &mut rng,
        )
        .unwrap();
        for (lo, hi) in ci {
            assert_eq!((lo, hi), (5_000.0, 5_000.0));
        }
        assert!(bootstrap_ci(&blocks(3, 0, 10), &blocks(3, 0, 10), &qs, 200, &mut rng).is_none());
    }

    /// Noisy but equal sides: the interval holds 0. The same noise on both sides in each
    /// interval (a busy moment) cancels in the paired draw.
    #[test]
    fn equal_sides_give_an_interval_around_zero() {
        let mut rng = SplitMix64::new(3, 4);
        let noisy: Vec<Sparse> = (0..30u64)
            .map(|b| {
                (0..50u64)
                    .map(|i| (1_000 + b * 97 % 500 + i * 3, 1))
                    .collect()
            })
            .collect();
        let ci = bootstrap_ci(&noisy, &noisy, &[0.5, 0.99], 300, &mut rng).unwrap();
        for (lo, hi) in ci {
            assert!(lo <= 0.0 && hi >= 0.0, "({lo}, {hi})");
        }
        let shifted: Vec<Sparse> = noisy
            .iter()
            .map(|b| b.iter().map(|(v, c)| (v + 300, *c)).collect())
            .collect();
        let ci = bootstrap_ci(&shifted, &noisy, &[0.5], 300, &mut rng).unwrap();
        assert!(ci[0].0 > 200.0 && ci[0].1 < 400.0, "{ci:?}");
    }

    /// The resample's quantile is the histogram's: the same rank rule.
    #[test]
    fn quantiles_agree_with_hdrhistogram() {
        let mut h = crate::stats::new_histogram();
        let mut sparse = Sparse::new();
        for v in [3u64, 7, 7, 10, 250, 251, 9_999, 12_345, 12_345, 77_777] {
            h.record(v).unwrap();
        }
        for v in h.iter_recorded() {
            sparse.push((v.value_iterated_to(), v.count_at_value()));
        }
        let idx = Indexed::new(&[sparse], 1);
        let qs = [0.1, 0.5, 0.9, 0.99, 0.999];
        let got = idx.quantiles(&[1], &qs, &mut Vec::new()).unwrap();
        let want: Vec<f64> = qs.iter().map(|q| h.value_at_quantile(*q) as f64).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn ratio_differences_are_found() {
        let mut rng = SplitMix64::new(5, 6);
        let ok = vec![10.0; 10];
        let (same, fewer) = (vec![320.0; 10], vec![240.0; 10]);
        let ci = ratio_diff_ci([&fewer, &same], [&ok, &ok], 100, &mut rng).unwrap();
        assert_eq!(ci, (-8.0, -8.0));
        assert!(differs(24.0, 32.0, Some(ci)));
        let ci = ratio_diff_ci([&same, &same], [&ok, &ok], 100, &mut rng).unwrap();
        assert!(!differs(32.0, 32.0, Some(ci)));
    }
}
