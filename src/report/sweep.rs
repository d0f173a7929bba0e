//! `blast sweep`'s human summary: one table row per step, then the answer and what stopped
//! the sweep; and the line each step prints as it ends.

use std::io::{self, Write};

use super::text::fmt_us;
use crate::stats::Summary;
use crate::sweep::{Step, StepKind, Sweep, SweepLimit};

fn kind(k: StepKind) -> &'static str {
    match k {
        StepKind::Unloaded => "unloaded",
        StepKind::Ceiling => "ceiling",
        StepKind::Rate => "rate",
    }
}

fn offered(step: &Step) -> String {
    step.offered_rps
        .map_or_else(|| "-".to_string(), |r| format!("{r:.1}"))
}

fn ms(v: f64) -> String {
    fmt_us(v * 1e3)
}

/// A distribution of the step's result, by its document key (`ttft_us`).
fn dist<'a>(step: &'a Step, key: &str) -> Option<&'a Summary> {
    step.result
        .distributions
        .iter()
        .find(|(k, s)| *k == key && s.count > 0)
        .map(|(_, s)| s)
}

fn p50_p99(step: &Step, key: &str) -> String {
    dist(step, key).map_or_else(
        || "-".to_string(),
        |s| format!("{}/{}", fmt_us(s.p50 as f64), fmt_us(s.p99 as f64)),
    )
}

/// The line a step prints when it ends (stderr, unless --quiet).
pub fn live_line(n: usize, step: &Step) -> String {
    let what = match step.kind {
        StepKind::Rate => format!("step {n}: rate {} req/s", offered(step)),
        k => format!("step {n}: {} probe", kind(k)),
    };
    let why = match step.why.is_empty() {
        true => String::new(),
        false => format!(": {}", step.why),
    };
    format!(
        "sweep  {what}, {} conns: achieved {:.1} req/s, ok {:.2}%, p50 {}, p99 {}  [{}{why}]",
        step.conns,
        step.achieved_rps,
        step.ok_pct,
        ms(step.p50_ms),
        ms(step.p99_ms),
        step.verdict
    )
}

pub fn write(w: &mut impl Write, s: &Sweep) -> io::Result<()> {
    let first = s.steps.first().map(|st| &st.result.config);
    if let Some(c) = first {
        writeln!(w, "blast sweep {} {}", c.method, c.url)?;
    }
    let bound = match s.criterion {
        "slo" => format!(
            "--slo met by {}% of requests",
            s.slo_pct.unwrap_or_default()
        ),
        _ => format!(
            "p99 within {} x the unloaded p99 ({} -> {})",
            s.p99_multiple,
            ms(s.unloaded_p99_ms),
            ms(s.unloaded_p99_ms * s.p99_multiple)
        ),
    };
    writeln!(
        w,
        "  A rate holds when achieved (second half of the step) is within 1% of offered, \
         failures <= {}%, {bound}.",
        s.max_error_pct
    )?;
    writeln!(w)?;
    writeln!(
        w,
        "  {:>2}  {:<8} {:>9} {:>9} {:>6} {:>8} {:>9} {:>9}  verdict",
        "#", "step", "offered", "achieved", "conns", "ok %", "p50", "p99"
    )?;
    for (i, st) in s.steps.iter().enumerate() {
        let limited = match st.limited_by {
            Some(l) if l.name() != "none" => format!(" (limited by {})", l.name()),
            _ => String::new(),
        };
        writeln!(
            w,
            "  {:>2}  {:<8} {:>9} {:>9.1} {:>6} {:>8.2} {:>9} {:>9}  {}{limited}",
            i + 1,
            kind(st.kind),
            offered(st),
            st.achieved_rps,
            st.conns,
            st.ok_pct,
            ms(st.p50_ms),
            ms(st.p99_ms),
            st.verdict
        )?;
    }
    if s.steps.iter().any(|st| st.result.tokens.is_some()) {
        writeln!(w)?;
        writeln!(
            w,
            "  {:>2}  {:>9} {:>19} {:>19} {:>19} {:>9} {:>9}",
            "#", "offered", "TTFT p50/p99", "ITL p50/p99", "TPOT p50/p99", "tokens/s", "goodput"
        )?;
        for (i, st) in s.steps.iter().enumerate() {
            let tokens = st.result.tokens.as_ref().map_or(0.0, |t| t.per_s);
            let goodput = st
                .result
                .goodput
                .as_ref()
                .map_or_else(|| "-".to_string(), |g| format!("{:.1}", g.rps));
            writeln!(
                w,
                "  {:>2}  {:>9} {:>19} {:>19} {:>19} {:>9.1} {:>9}",
                i + 1,
                offered(st),
                p50_p99(st, "ttft_us"),
                p50_p99(st, "itl_us"),
                p50_p99(st, "tpot_us"),
                tokens,
                goodput
            )?;
        }
    }
    writeln!(w)?;
    match s.max_sustainable_rps {
        Some(r) => writeln!(w, "  Max sustainable  {r:.1} req/s")?,
        None => writeln!(w, "  Max sustainable  none: no rate step held")?,
    }
    let at = s
        .limit_rps
        .map_or(String::new(), |r| format!(" (at {r:.1} req/s)"));
    match s.limit {
        SweepLimit::None => writeln!(w, "  Limit            none: every step held")?,
        l => writeln!(w, "  Limit            {}{at}: {}", l.name(), s.limit_why)?,
    }
    if let (Some(c), Some(st)) = (
        s.ceiling_rps,
        s.steps.iter().find(|st| st.kind == StepKind::Ceiling),
    ) {
        writeln!(
            w,
            "  Ceiling          {c:.1} req/s closed loop on {} connections",
            st.conns
        )?;
    }
    writeln!(
        w,
        "  Elapsed          {:.1}s, {} steps of {}s",
        s.elapsed_s,
        s.steps.len(),
        s.step_duration_s
    )?;
    for note in &s.notes {
        writeln!(w, "  NOTE             {note}")?;
    }
    Ok(())
}
