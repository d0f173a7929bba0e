//! `blast watch METRICS_URL`: a live view of a target's own metrics without sending load
//! (the old tester's "monitor only" mode). Each interval prints the counters' rates, the
//! histograms' rates and means, and the gauges' values.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use regex::Regex;

use super::{fmt_count, increase, Fetcher, Reading, TIMEOUT};

/// What to watch, checked.
pub struct Watch {
    pub url: String,
    /// Only series whose `name{labels}` this matches.
    pub pattern: Option<Regex>,
    pub interval: Duration,
    /// Stop by itself after this long.
    pub duration: Option<Duration>,
}

/// Scrape every interval until `stop` is set or the duration is over, printing a block per
/// interval to `out` and each failed scrape to `err`. Returns the successful scrapes.
pub fn run(
    spec: &Watch,
    stop: &AtomicBool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> io::Result<u64> {
    let fetcher = Fetcher::new(&spec.url, TIMEOUT.min(spec.interval.max(MIN_TIMEOUT)));
    let start = Instant::now();
    let end = spec.duration.map(|d| start + d);
    writeln!(
        out,
        "blast watch {}: every {}{}; Ctrl-C stops",
        fetcher.url(),
        humantime::format_duration(spec.interval),
        spec.pattern
            .as_ref()
            .map_or(String::new(), |p| format!(", series matching {p}"))
    )?;
    out.flush()?;
    let mut ok = 0;
    let mut prev: Option<(Instant, Reading)> = None;
    let mut tick = 0u32;
    loop {
        let at = Instant::now();
        match fetcher.scrape() {
            Ok(now) => {
                ok += 1;
                if let Some((then, before)) = &prev {
                    let dt = at.duration_since(*then).as_secs_f64();
                    let t = at.duration_since(start).as_secs_f64();
                    render(out, t, dt, before, &now, spec.pattern.as_ref())?;
                    out.flush()?;
                }
                prev = Some((at, now));
            }
            Err(e) => {
                let t = at.duration_since(start).as_secs_f64();
                writeln!(
                    err,
                    "blast: {t:>6.1}s  scrape of {} failed: {e}",
                    fetcher.url()
                )?;
                // A rate spans two successful scrapes in a row.
                prev = None;
            }
        }
        tick += 1;
        let next = start + spec.interval * tick;
        if !sleep_until(next, end, stop) {
            return Ok(ok);
        }
    }
}

/// A scrape that must fit in a short interval still gets this long.
const MIN_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a sleep looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Sleep until `until`; false when `stop` was set or `end` comes first.
fn sleep_until(until: Instant, end: Option<Instant>, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if end.is_some_and(|e| now >= e || until > e) {
            return false;
        }
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(POLL));
    }
}

/// One interval's block: counters and histograms that moved (all that match, with a
/// pattern) as rates per second, then the gauges.
pub fn render(
    w: &mut impl Write,
    t: f64,
    dt: f64,
    before: &Reading,
    now: &Reading,
    pattern: Option<&Regex>,
) -> io::Result<()> {
    let shown = |key: &str| pattern.is_none_or(|p| p.is_match(key));
    let mut lines: Vec<(String, String)> = Vec::new();
    for (s, v) in &now.counters {
        let key = s.to_string();
        let inc = increase(before.counters.get(s).copied(), *v);
        if shown(&key) && (inc > 0.0 || pattern.is_some()) {
            lines.push((
                key,
                format!("{:>12.2}/s  total {}", inc / dt, fmt_count(*v)),
            ));
        }
    }
    for (s, h) in &now.hists {
        let key = s.to_string();
        let b = before.hists.get(s);
        let n = increase(b.map(|b| b.count), h.count);
        let sum = increase(b.map(|b| b.sum), h.sum);
        if shown(&key) && (n > 0.0 || pattern.is_some()) {
            let mean = match n > 0.0 {
                true => format!("  mean {:.6}", sum / n),
                false => String::new(),
            };
            lines.push((key, format!("{:>12.2}/s{mean}", n / dt)));
        }
    }
    for (s, v) in &now.gauges {
        let key = s.to_string();
        if shown(&key) {
            lines.push((key, format!("{:>12}", fmt_count(*v))));
        }
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let stamp = format!("{t:>7.1}s");
    if lines.is_empty() {
        return writeln!(w, "{stamp}  (nothing moved)");
    }
    for (i, (k, v)) in lines.iter().enumerate() {
        let lead = if i == 0 { stamp.as_str() } else { "" };
        writeln!(w, "{lead:>8}  {k:<width$}  {v}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::parse;

    #[test]
    fn rates_and_gauges() {
        let before = parse(
            "# TYPE req_total counter\nreq_total 10\nidle_total 4\n# TYPE depth gauge\ndepth 1\n\
             # TYPE lat histogram\nlat_bucket{le=\"+Inf\"} 2\nlat_sum 1\nlat_count 2\n",
        )
        .unwrap();
        let now = parse(
            "# TYPE req_total counter\nreq_total 30\nidle_total 4\n# TYPE depth gauge\ndepth 5\n\
             # TYPE lat histogram\nlat_bucket{le=\"+Inf\"} 6\nlat_sum 3\nlat_count 6\n",
        )
        .unwrap();
        let mut out = Vec::new();
        render(&mut out, 2.0, 2.0, &before, &now, None).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("req_total") && text.contains("10.00/s  total 30"),
            "{text}"
        );
        assert!(!text.contains("idle_total"), "{text}");
        assert!(text.contains("2.00/s  mean 0.500000"), "{text}");
        assert!(text.contains("depth") && text.contains(" 5"), "{text}");
        let mut out = Vec::new();
        let p = Regex::new("^idle").unwrap();
        render(&mut out, 2.0, 2.0, &before, &now, Some(&p)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("idle_total") && text.contains("0.00/s"),
            "{text}"
        );
        assert!(
            !text.contains("req_total") && !text.contains("depth"),
            "{text}"
        );
    }
}
