//! `blast compare A.json B.json ...`: results side by side, each column's ratio to the
//! first, and `--fail-if` thresholds for regression checks. Reads any document with
//! blast's keys (blast's own, or the async baseline's).

use std::io::{self, Write};

use serde_json::Value;

/// A figure that can be compared, and where it lives in a result document.
struct Figure {
    name: &'static str,
    label: &'static str,
    pointer: &'static str,
    /// Microseconds, shown in a human unit.
    micros: bool,
}

const FIGURES: &[Figure] = &[
    Figure {
        name: "rps",
        label: "req/s",
        pointer: "/rps",
        micros: false,
    },
    Figure {
        name: "ok_pct",
        label: "ok %",
        pointer: "",
        micros: false,
    },
    Figure {
        name: "mean",
        label: "latency mean",
        pointer: "/latency_us/mean",
        micros: true,
    },
    Figure {
        name: "p50",
        label: "latency p50",
        pointer: "/latency_us/p50",
        micros: true,
    },
    Figure {
        name: "p90",
        label: "latency p90",
        pointer: "/latency_us/p90",
        micros: true,
    },
    Figure {
        name: "p99",
        label: "latency p99",
        pointer: "/latency_us/p99",
        micros: true,
    },
    Figure {
        name: "p999",
        label: "latency p99.9",
        pointer: "/latency_us/p999",
        micros: true,
    },
    Figure {
        name: "max",
        label: "latency max",
        pointer: "/latency_us/max",
        micros: true,
    },
    Figure {
        name: "ttft_p50",
        label: "TTFT p50",
        pointer: "/ttft_us/p50",
        micros: true,
    },
    Figure {
        name: "ttft_p99",
        label: "TTFT p99",
        pointer: "/ttft_us/p99",
        micros: true,
    },
    Figure {
        name: "itl_p50",
        label: "ITL p50",
        pointer: "/itl_us/p50",
        micros: true,
    },
    Figure {
        name: "tpot_p50",
        label: "TPOT p50",
        pointer: "/tpot_us/p50",
        micros: true,
    },
    Figure {
        name: "tokens_per_s",
        label: "tokens/s",
        pointer: "/tokens/per_s",
        micros: false,
    },
    Figure {
        name: "goodput",
        label: "goodput req/s",
        pointer: "/goodput/rps",
        micros: false,
    },
    Figure {
        name: "cpu_us",
        label: "client CPU us/req",
        pointer: "/client_cpu_us_per_request",
        micros: false,
    },
    Figure {
        name: "rss_mb",
        label: "peak RSS MB",
        pointer: "/peak_rss_bytes",
        micros: false,
    },
];

fn value(doc: &Value, f: &Figure) -> Option<f64> {
    match f.name {
        "ok_pct" => {
            let ok = doc.pointer("/requests/ok")?.as_f64()?;
            let sent = doc.pointer("/requests/sent")?.as_f64()?;
            (sent > 0.0).then(|| ok * 100.0 / sent)
        }
        "rss_mb" => doc.pointer(f.pointer)?.as_f64().map(|b| b / 1e6),
        _ => doc.pointer(f.pointer)?.as_f64(),
    }
}

/// `METRIC>+10%` or `METRIC<-5%`: fail when a later result's change against the first
/// crosses the bound in that direction.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    figure: &'static str,
    above: bool,
    percent: f64,
}

impl Threshold {
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let t = text.trim();
        let (name, rest, above) = match (t.find('>'), t.find('<')) {
            (Some(i), None) => (&t[..i], &t[i + 1..], true),
            (None, Some(i)) => (&t[..i], &t[i + 1..], false),
            _ => {
                return Err(format!(
                    "--fail-if {text:?}: expected METRIC>+N% or METRIC<-N%, e.g. p99>+10%"
                ))
            }
        };
        let name = name.trim();
        let figure = FIGURES
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.name)
            .ok_or_else(|| {
                let names: Vec<&str> = FIGURES.iter().map(|f| f.name).collect();
                format!(
                    "--fail-if {text:?}: unknown metric {name:?} (one of {})",
                    names.join(", ")
                )
            })?;
        let number = rest
            .trim()
            .strip_suffix('%')
            .ok_or_else(|| format!("--fail-if {text:?}: the bound must end in %"))?;
        let percent: f64 = number
            .trim()
            .parse()
            .map_err(|_| format!("--fail-if {text:?}: {number:?} is not a number"))?;
        if !percent.is_finite() {
            return Err(format!("--fail-if {text:?}: the bound must be finite"));
        }
        Ok(Threshold {
            figure,
            above,
            percent,
        })
    }

    /// The change in percent of `value` against `base`, if it crosses this threshold.
    fn crossed(&self, base: f64, value: f64) -> Option<f64> {
        if base == 0.0 {
            return None;
        }
        let change = (value - base) / base * 100.0;
        let crossed = if self.above {
            change > self.percent
        } else {
            change < self.percent
        };
        crossed.then_some(change)
    }
}

pub struct Named {
    pub name: String,
    pub doc: Value,
}

fn show(v: Option<f64>, micros: bool) -> String {
    match v {
        None => "-".into(),
        Some(v) if micros => crate::report::text::fmt_us(v),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// Print the table; return the threshold violations (one line each).
pub fn compare(
    w: &mut impl Write,
    results: &[Named],
    thresholds: &[Threshold],
) -> io::Result<Vec<String>> {
    // Build the cells first so that every column is as wide as its widest cell.
    let header = std::iter::once(String::new()).chain(results.iter().map(|r| r.name.clone()));
    let mut rows = vec![header.collect::<Vec<_>>()];
    for f in FIGURES {
        let values: Vec<Option<f64>> = results.iter().map(|r| value(&r.doc, f)).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        let mut row = vec![f.label.to_string()];
        for (i, v) in values.iter().enumerate() {
            let ratio = match (values[0], v) {
                (Some(base), Some(v)) if i > 0 && base != 0.0 => format!(" ({:.2}x)", v / base),
                _ => String::new(),
            };
            row.push(format!("{}{ratio}", show(*v, f.micros)));
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        write!(w, "{:<width$}", row[0], width = widths[0])?;
        for (cell, width) in row.iter().zip(&widths).skip(1) {
            write!(w, "  {cell:>width$}")?;
        }
        writeln!(w)?;
    }
    let mut violations = Vec::new();
    for t in thresholds {
        let f = FIGURES
            .iter()
            .find(|f| f.name == t.figure)
            .expect("parsed from FIGURES");
        let Some(base) = value(&results[0].doc, f) else {
            continue;
        };
        for r in &results[1..] {
            if let Some(change) = value(&r.doc, f).and_then(|v| t.crossed(base, v)) {
                violations.push(format!(
                    "{}: {} changed {change:+.1}% against {} (limit {}{:+}%)",
                    r.name,
                    f.name,
                    results[0].name,
                    if t.above { ">" } else { "<" },
                    t.percent
                ));
            }
        }
    }
    Ok(violations)
}

/// Read result documents (and, with `sweeps`, a sweep's); each is named after its file.
pub fn load(paths: &[std::path::PathBuf], sweeps: bool) -> Result<Vec<Named>, String> {
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let doc: Value = serde_json::from_str(&text)
                .map_err(|e| format!("{} is not JSON: {e}", p.display()))?;
            let sweep = sweeps && doc["sweep"].is_object();
            if doc.pointer("/requests/sent").is_none() && !sweep {
                return Err(format!(
                    "{} is not a result document (no requests.sent{})",
                    p.display(),
                    if sweeps { ", no sweep" } else { "" }
                ));
            }
            let name = p.file_stem().map_or_else(
                || p.display().to_string(),
                |s| s.to_string_lossy().into_owned(),
            );
            Ok(Named { name, doc })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(rps: f64, p99: u64) -> Value {
        serde_json::json!({"rps": rps, "requests": {"sent": 100, "ok": 99}, "latency_us": {"p50": 10, "p99": p99}})
    }

    #[test]
    fn thresholds_parse() {
        assert_eq!(
            Threshold::parse("p99>+10%").unwrap(),
            Threshold {
                figure: "p99",
                above: true,
                percent: 10.0
            }
        );
        assert_eq!(
            Threshold::parse(" rps < -5 % ").unwrap(),
            Threshold {
                figure: "rps",
                above: false,
                percent: -5.0
            }
        );
        for bad in [
            "p99",
            "p99>10",
            "speed>+1%",
            "p99>x%",
            "p99<>1%",
            "p99>inf%",
        ] {
            assert!(Threshold::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn table_and_violations() {
        let results = vec![
            Named {
                name: "base".into(),
                doc: doc(1000.0, 500),
            },
            Named {
                name: "new".into(),
                doc: doc(900.0, 600),
            },
        ];
        let ts = [
            Threshold::parse("p99>+10%").unwrap(),
            Threshold::parse("rps<-5%").unwrap(),
        ];
        let mut out = Vec::new();
        let v = compare(&mut out, &results, &ts).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("req/s"), "{text}");
        assert!(text.contains("(0.90x)"), "{text}");
        assert!(text.contains("ok %"), "{text}");
        assert!(
            !text.contains("TTFT"),
            "absent figures are not shown: {text}"
        );
        assert_eq!(v.len(), 2, "{v:?}");
        let loose = [
            Threshold::parse("p99>+25%").unwrap(),
            Threshold::parse("rps<-20%").unwrap(),
        ];
        assert!(compare(&mut Vec::new(), &results, &loose)
            .unwrap()
            .is_empty());
    }
}
