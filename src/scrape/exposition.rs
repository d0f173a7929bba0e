//! One scrape of the Prometheus text format, parsed by `prometheus-parse` and sorted into
//! counters, gauges and histograms/summaries by series.

use std::collections::BTreeMap;
use std::fmt;

use prometheus_parse::{LineInfo, Scrape, Value};

/// A metric name and its labels, sorted by name; shown as Prometheus writes it:
/// `name{label="value",...}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl Series {
    fn new(name: &str, labels: &prometheus_parse::Labels) -> Series {
        let mut labels: Vec<(String, String)> =
            labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.sort();
        Series {
            name: name.to_string(),
            labels,
        }
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if self.labels.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}=\"")?;
            for c in v.chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '"' => f.write_str("\\\"")?,
                    '\n' => f.write_str("\\n")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

/// `--expect-count SERIES`: a metric name, and labels a series must carry (others may be
/// there too). A bare name matches every label set of the metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Selector {
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// As typed.
    raw: String,
}

impl Selector {
    /// Read as one sample line of the exposition format (`SERIES 0`), by the same parser as
    /// the scrapes, so that a selector is written exactly as the target writes the series.
    pub fn parse(raw: &str) -> Result<Selector, String> {
        let bad = || {
            format!(
                "--expect-count {raw:?}: want a counter's name, e.g. requests_total or \
                 requests_total{{path=\"/api/generate\"}}"
            )
        };
        let raw = raw.trim();
        let name = raw.split('{').next().unwrap_or("");
        if name.is_empty() || raw.contains(char::is_whitespace) {
            return Err(bad());
        }
        let line = format!("{raw} 0");
        if !matches!(LineInfo::parse(&line), LineInfo::Sample { .. }) {
            return Err(bad());
        }
        let scrape = Scrape::parse(std::iter::once(Ok(line))).map_err(|_| bad())?;
        match scrape.samples.as_slice() {
            [s] if s.metric == name => {
                let series = Series::new(&s.metric, &s.labels);
                // Labels the parser could not read are dropped by it: refuse rather than
                // match more than was asked for.
                if raw.contains('{') && series.labels.is_empty() {
                    return Err(bad());
                }
                Ok(Selector {
                    name: series.name,
                    labels: series.labels,
                    raw: raw.to_string(),
                })
            }
            _ => Err(bad()),
        }
    }

    pub fn matches(&self, s: &Series) -> bool {
        s.name == self.name && self.labels.iter().all(|l| s.labels.contains(l))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl serde::Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistKind {
    Histogram,
    Summary,
}

/// A histogram's or summary's cumulative figures at one scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Hist {
    pub kind: HistKind,
    /// Histograms: (le, cumulative count), in the target's order.
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Hist {
    pub fn bucket(&self, le: f64) -> Option<f64> {
        self.buckets.iter().find(|(l, _)| *l == le).map(|(_, n)| *n)
    }
}

/// One scrape, by kind of series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    pub counters: BTreeMap<Series, f64>,
    pub gauges: BTreeMap<Series, f64>,
    pub hists: BTreeMap<Series, Hist>,
}

/// A bucket bound as the exposition writes it.
pub fn fmt_le(le: f64) -> String {
    match le {
        f64::INFINITY => "+Inf".into(),
        f64::NEG_INFINITY => "-Inf".into(),
        le => le.to_string(),
    }
}

/// Parse an exposition. Samples without a TYPE line are sorted by the conventions of the
/// format: `X_total` is a counter, `X_sum` and `X_count` belong to histogram or summary `X`,
/// anything else is a gauge. `X_created` (the start time client libraries add beside a
/// counter, histogram or summary `X`) is left out. Text with lines the parser cannot read
/// and no sample at all (an HTML page, say) is an error.
pub fn parse(text: &str) -> Result<Reading, String> {
    let mut unreadable = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if !matches!(LineInfo::parse(t), LineInfo::Sample { .. }) {
            unreadable.get_or_insert((i + 1, t));
        }
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .map_err(|e| format!("cannot read the exposition: {e}"))?;
    if scrape.samples.is_empty() {
        if let Some((n, line)) = unreadable {
            return Err(format!(
                "not the Prometheus text format (line {n}: {:.60})",
                line
            ));
        }
    }
    let mut r = Reading::default();
    let mut untyped = Vec::new();
    for s in &scrape.samples {
        let series = Series::new(&s.metric, &s.labels);
        match &s.value {
            // Series the parser put under one key (see `colliding_series_add_up`) add up.
            Value::Counter(v) => *r.counters.entry(series).or_default() += v,
            Value::Gauge(v) => {
                r.gauges.insert(series, *v);
            }
            Value::Histogram(buckets) => {
                let buckets = buckets.iter().map(|b| (b.less_than, b.count)).collect();
                r.hists.insert(series, hist(HistKind::Histogram, buckets));
            }
            Value::Summary(_) => {
                r.hists.insert(series, hist(HistKind::Summary, Vec::new()));
            }
            Value::Untyped(v) => untyped.push((series, *v)),
        }
    }
    for (series, v) in untyped {
        let part = ["_sum", "_count"]
            .into_iter()
            .find_map(|suffix| Some((suffix, series.name.strip_suffix(suffix)?.to_string())));
        if let Some((suffix, base)) = part {
            let owner = Series {
                name: base,
                labels: series.labels.clone(),
            };
            if let Some(h) = r.hists.get_mut(&owner) {
                match suffix {
                    "_sum" => h.sum += v,
                    _ => h.count += v,
                }
                continue;
            }
        }
        if series.name.ends_with("_total") {
            *r.counters.entry(series).or_default() += v;
            continue;
        }
        r.gauges.insert(series, v);
    }
    // `X_created`, untyped or typed as a gauge (Python's client does so), is no gauge.
    let created: Vec<Series> = r
        .gauges
        .keys()
        .filter(|g| {
            g.name.strip_suffix("_created").is_some_and(|base| {
                [base.to_string(), format!("{base}_total")]
                    .into_iter()
                    .any(|name| {
                        let s = Series {
                            name,
                            labels: g.labels.clone(),
                        };
                        r.counters.contains_key(&s) || r.hists.contains_key(&s)
                    })
            })
        })
        .cloned()
        .collect();
    for g in created {
        r.gauges.remove(&g);
    }
    Ok(r)
}

fn hist(kind: HistKind, buckets: Vec<(f64, f64)>) -> Hist {
    Hist {
        kind,
        buckets,
        sum: 0.0,
        count: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, labels: &[(&str, &str)]) -> Series {
        Series {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// What Python's prometheus_client writes for a counter, a gauge, a histogram and a
    /// summary with labels.
    const PYTHON: &str = r#"# HELP proxy_requests_total Requests.
# TYPE proxy_requests_total counter
proxy_requests_total{method="POST",path="/api/generate"} 12.0
proxy_requests_total{method="GET",path="/api/tags"} 3.0
# HELP proxy_requests_created Requests.
# TYPE proxy_requests_created gauge
proxy_requests_created{method="POST",path="/api/generate"} 1.7e9
# HELP proxy_queue_depth Waiting.
# TYPE proxy_queue_depth gauge
proxy_queue_depth 4.0
# HELP proxy_latency_seconds Latency.
# TYPE proxy_latency_seconds histogram
proxy_latency_seconds_bucket{path="/api/generate",le="0.5"} 10.0
proxy_latency_seconds_bucket{path="/api/generate",le="+Inf"} 12.0
proxy_latency_seconds_count{path="/api/generate"} 12.0
proxy_latency_seconds_sum{path="/api/generate"} 3.5
proxy_latency_seconds_created{path="/api/generate"} 1.7e9
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.2
rpc_seconds_sum 8.0
rpc_seconds_count 20.0
untyped_thing_total 5
plain_untyped 1.5
"#;

    #[test]
    fn sorts_series_by_kind() {
        let r = parse(PYTHON).unwrap();
        let post = s(
            "proxy_requests_total",
            &[("method", "POST"), ("path", "/api/generate")],
        );
        assert_eq!(r.counters[&post], 12.0);
        assert_eq!(r.counters.len(), 3, "{:?}", r.counters);
        assert_eq!(r.counters[&s("untyped_thing_total", &[])], 5.0);
        assert_eq!(
            r.gauges.keys().map(|g| g.to_string()).collect::<Vec<_>>(),
            ["plain_untyped", "proxy_queue_depth"]
        );
        let h = &r.hists[&s("proxy_latency_seconds", &[("path", "/api/generate")])];
        assert_eq!(h.kind, HistKind::Histogram);
        assert_eq!(h.buckets, vec![(0.5, 10.0), (f64::INFINITY, 12.0)]);
        assert_eq!((h.sum, h.count), (3.5, 12.0));
        let q = &r.hists[&s("rpc_seconds", &[])];
        assert_eq!((q.kind, q.sum, q.count), (HistKind::Summary, 8.0, 20.0));
        assert_eq!(
            post.to_string(),
            r#"proxy_requests_total{method="POST",path="/api/generate"}"#
        );
    }

    /// prometheus-parse splits label values at commas: two series that differ after one
    /// land on one key, and their counters are added rather than one lost.
    #[test]
    fn colliding_series_add_up() {
        let r = parse(
            "# TYPE req_total counter\nreq_total{path=\"/a,b\"} 2\nreq_total{path=\"/a,c\"} 3\n",
        )
        .unwrap();
        assert_eq!(r.counters.values().sum::<f64>(), 5.0, "{:?}", r.counters);
    }

    #[test]
    fn bad_text_is_an_error() {
        let e = parse("<html><body>Dashboard</body></html>\n").unwrap_err();
        assert!(e.contains("not the Prometheus text format"), "{e}");
        // Empty is a target with no metrics yet, not an error.
        assert_eq!(parse("").unwrap(), Reading::default());
        assert_eq!(parse("# only comments\n").unwrap(), Reading::default());
    }

    #[test]
    fn selectors() {
        let sel = Selector::parse(r#"proxy_requests_total{path="/api/generate"}"#).unwrap();
        assert_eq!(sel.name, "proxy_requests_total");
        assert_eq!(sel.labels, vec![("path".into(), "/api/generate".into())]);
        let post = s(
            "proxy_requests_total",
            &[("method", "POST"), ("path", "/api/generate")],
        );
        assert!(sel.matches(&post));
        assert!(!sel.matches(&s("proxy_requests_total", &[("path", "/x")])));
        let bare = Selector::parse("proxy_requests_total").unwrap();
        assert!(bare.matches(&post) && bare.labels.is_empty());
        for bad in ["", "{a=\"b\"}", "a b", "x{", "x{}"] {
            assert!(Selector::parse(bad).is_err(), "{bad:?}");
        }
    }
}
