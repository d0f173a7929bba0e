//! The human summary (stdout) and the live line (stderr).

use std::collections::BTreeMap;
use std::io::{self, Write};

use super::Report;
use crate::aggregate::TimelineRow;
use crate::stats::{Metric, MetricGroup, Summary};

fn is_llm(key: &str) -> bool {
    Metric::ALL
        .iter()
        .any(|m| m.group() == MetricGroup::Llm && m.key() == key)
}

/// Microseconds in the unit a person reads best.
pub fn fmt_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0}us")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

pub fn fmt_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0}{}", UNITS[u])
    } else {
        format!("{v:.2}{}", UNITS[u])
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

pub(crate) fn write_table_header(w: &mut impl Write) -> io::Result<()> {
    writeln!(
        w,
        "  {:<19} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "min", "mean", "p50", "p90", "p99", "p99.9", "max"
    )
}

pub(crate) fn write_distribution(w: &mut impl Write, name: &str, s: &Summary) -> io::Result<()> {
    writeln!(
        w,
        "  {name:<19} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        fmt_us(s.min as f64),
        fmt_us(s.mean),
        fmt_us(s.p50 as f64),
        fmt_us(s.p90 as f64),
        fmt_us(s.p99 as f64),
        fmt_us(s.p999 as f64),
        fmt_us(s.max as f64),
    )
}

pub fn write(w: &mut impl Write, r: &Report) -> io::Result<()> {
    let c = &r.config;
    let bound = match (c.budget, c.run_for) {
        (Some(n), Some(d)) => format!("{n} requests or {}", humantime::format_duration(d)),
        (Some(n), None) => format!("{n} requests"),
        (None, Some(d)) => humantime::format_duration(d).to_string(),
        (None, None) => String::new(),
    };
    // A `--shard` process says which part of the run it is (its figures are that part's).
    let shard = match r.shard.count {
        1 => String::new(),
        n => format!(", shard {} of {n}", r.shard.index),
    };
    writeln!(
        w,
        "blast {} {}: {} core(s), {} connection(s), {bound}{shard}{}",
        c.method,
        c.url,
        c.cores,
        c.conns,
        if r.interrupted { " (interrupted)" } else { "" }
    )?;
    let q = &r.requests;
    writeln!(w)?;
    writeln!(w, "  Elapsed        {:.3}s", r.elapsed_s)?;
    writeln!(
        w,
        "  Requests       {} sent, {} completed, {} ok ({:.2}%), {} failed, {} cut off",
        q.sent,
        q.completed,
        q.ok,
        percent(q.ok, q.sent),
        q.failed,
        q.cut_off
    )?;
    writeln!(
        w,
        "  Throughput     {:.1} req/s, {}/s read, {} written",
        r.rps,
        fmt_bytes(r.transfer.read_bytes_per_s),
        fmt_bytes(r.transfer.bytes_written as f64)
    )?;
    writeln!(w)?;
    write_table_header(w)?;
    write_distribution(w, "latency", &r.latency_us)?;
    for (key, s) in r.distributions.iter().filter(|(k, _)| !is_llm(k)) {
        write_distribution(w, key.trim_end_matches("_us"), s)?;
    }
    writeln!(w)?;
    let status: Vec<String> = r
        .status
        .iter()
        .map(|(code, n)| format!("{code}: {n}"))
        .collect();
    writeln!(
        w,
        "  Status codes   {}",
        if status.is_empty() {
            "none".into()
        } else {
            status.join(", ")
        }
    )?;
    let errors: Vec<String> = r
        .errors
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(kind, n)| format!("{kind}: {n}"))
        .collect();
    writeln!(
        w,
        "  Errors         {}",
        if errors.is_empty() {
            "none".into()
        } else {
            errors.join(", ")
        }
    )?;
    for (kind, messages) in &r.error_messages {
        writeln!(w, "                 {kind}: {}", messages.join("; "))?;
    }
    writeln!(
        w,
        "  Connections    {} opened, {} reconnects{}",
        r.connections.opened,
        r.connections.reconnects,
        match (r.connections.tls_handshakes, r.connections.tls_resumed) {
            (Some(h), Some(res)) => format!(
                ", {h} TLS handshakes ({res} resumed{})",
                tls_ciphers(r.connections.tls_ciphers.as_ref())
            ),
            _ => String::new(),
        }
    )?;
    writeln!(
        w,
        "  Client cost    {:.2} us CPU/request, {:.0}% of {} core(s) busy, peak RSS {}",
        r.client_cpu_us_per_request,
        r.client_cpu_utilization * 100.0,
        r.config.cores,
        fmt_bytes(r.peak_rss_bytes as f64)
    )?;
    write_llm(w, r)?;
    if let Some(o) = &r.open_loop {
        writeln!(
            w,
            "  Open loop      target {:.1} req/s, achieved {:.1} req/s, send lag p99 {}, \
             limited by {}",
            o.target_rps,
            o.achieved_rps,
            fmt_us(o.send_lag_p99_us as f64),
            o.limited_by.name()
        )?;
        if o.missed > 0 {
            writeln!(
                w,
                "  Missed         {} requests were due but not sent before the end",
                o.missed
            )?;
        }
    }
    write_target_metrics(w, r)?;
    for warning in &r.warnings {
        writeln!(w, "  WARNING        {} ({})", warning.message, warning.code)?;
    }
    Ok(())
}

/// Lines per metrics URL in the summary; the JSON has them all.
const TARGET_LINES: usize = 20;

/// `--scrape`: per metrics URL, the counters and histograms that moved and the gauges that
/// changed over the run.
fn write_target_metrics(w: &mut impl Write, r: &Report) -> io::Result<()> {
    use crate::scrape::fmt_count;
    for t in r.target_metrics.iter().flatten() {
        writeln!(w)?;
        writeln!(
            w,
            "  Target metrics {} ({} scrapes, {} failed)",
            t.url, t.scrapes, t.failed
        )?;
        let mut lines: Vec<(&str, String)> = Vec::new();
        for (k, v) in t.counters.iter().filter(|(_, v)| **v != 0.0) {
            lines.push((k, format!("+{}", fmt_count(*v))));
        }
        for (k, h) in t.histograms.iter().chain(&t.summaries) {
            if h.count > 0.0 {
                lines.push((
                    k,
                    format!(
                        "+{} observed, mean {:.6}",
                        fmt_count(h.count),
                        h.sum / h.count
                    ),
                ));
            }
        }
        for (k, values) in &t.gauges {
            let seen: Vec<f64> = values.iter().flatten().copied().collect();
            let (Some(min), Some(max)) = (
                seen.iter().copied().reduce(f64::min),
                seen.iter().copied().reduce(f64::max),
            ) else {
                continue;
            };
            if min != max {
                lines.push((k, format!("{} to {}", fmt_count(min), fmt_count(max))));
            }
        }
        if lines.is_empty() && t.scrapes > t.failed {
            writeln!(w, "                 nothing moved")?;
        }
        let width = lines
            .iter()
            .take(TARGET_LINES)
            .map(|(k, _)| k.len())
            .max()
            .unwrap_or(0);
        for (k, v) in lines.iter().take(TARGET_LINES) {
            writeln!(w, "                 {k:<width$}  {v}")?;
        }
        if lines.len() > TARGET_LINES {
            writeln!(
                w,
                "                 ... {} more in the JSON's target_metrics",
                lines.len() - TARGET_LINES
            )?;
        }
    }
    Ok(())
}

/// The LLM section: tokens, their pace, where the server's time went, goodput.
fn write_llm(w: &mut impl Write, r: &Report) -> io::Result<()> {
    let (Some(llm), Some(tokens)) = (&r.config.llm, &r.tokens) else {
        return Ok(());
    };
    writeln!(w)?;
    writeln!(
        w,
        "  LLM            {} model {}, {}, {} prompt(s) from {}",
        llm.api.name(),
        llm.model,
        if llm.stream {
            "streaming"
        } else {
            "not streaming"
        },
        llm.prompt_count,
        llm.prompts
    )?;
    let server = tokens.server_per_s.map_or(String::new(), |v| {
        format!(", server eval {v:.1} tokens/s per request")
    });
    writeln!(
        w,
        "  Tokens         {} generated ({} count), {:.1} tokens/s{server}, {} prompt tokens",
        tokens.output, tokens.source, tokens.per_s, tokens.prompt
    )?;
    if let Some(d) = &r.done_reasons {
        writeln!(
            w,
            "  Done reasons   stop: {}, length: {}, other: {}",
            d.stop, d.length, d.other
        )?;
    }
    if let (Some(g), Some(slo)) = (&r.goodput, &llm.slo) {
        let limits: Vec<String> = [("ttft", slo.ttft), ("tpot", slo.tpot), ("e2e", slo.e2e)]
            .iter()
            .filter_map(|(n, d)| d.map(|d| format!("{n}<={}", fmt_us(d.as_micros() as f64))))
            .collect();
        writeln!(
            w,
            "  Goodput        {:.2} req/s met {} ({} requests, {:.1}%)",
            g.rps,
            limits.join(" "),
            g.good,
            g.ratio * 100.0
        )?;
    }
    write_table_header(w)?;
    for (key, s) in r
        .distributions
        .iter()
        .filter(|(k, s)| is_llm(k) && s.count > 0)
    {
        write_distribution(w, key.trim_end_matches("_us"), s)?;
    }
    Ok(())
}

/// One line per interval, for a person watching the run (and their dashboards).
pub fn live_line(row: &TimelineRow, total_s: Option<f64>) -> String {
    let elapsed = match total_s {
        Some(t) => format!("{:>6.1}s/{t:.0}s", row.t_s),
        None => format!("{:>6.1}s", row.t_s),
    };
    let answered = row.completed + row.errors;
    let target = if row.target_rps > 0.0 {
        format!("target {:>8.0}  ", row.target_rps)
    } else {
        String::new()
    };
    format!(
        "{elapsed}  {target}{:>9.0} req/s  in-flight {:>5}  ok {:>8}  errors {:>6}  success {:>6.2}%  p50 {:>8}  p99 {:>8}",
        row.rps,
        row.in_flight,
        row.ok,
        row.errors,
        percent(row.ok, answered),
        fmt_us(row.p50_us as f64),
        fmt_us(row.p99_us as f64),
    )
}

/// The suites the handshakes negotiated, for the Connections line: `; TLS_AES_256_GCM_SHA384`,
/// with counts when there were several.
fn tls_ciphers(ciphers: Option<&BTreeMap<String, u64>>) -> String {
    let Some(ciphers) = ciphers.filter(|c| !c.is_empty()) else {
        return String::new();
    };
    let names: Vec<String> = if ciphers.len() == 1 {
        ciphers.keys().cloned().collect()
    } else {
        ciphers
            .iter()
            .map(|(name, n)| format!("{name} x{n}"))
            .collect()
    };
    format!("; {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(fmt_us(532.0), "532us");
        assert_eq!(fmt_us(1_234.0), "1.23ms");
        assert_eq!(fmt_us(2_500_000.0), "2.50s");
        assert_eq!(fmt_bytes(512.0), "512B");
        assert_eq!(fmt_bytes(1536.0), "1.50KiB");
    }
}
