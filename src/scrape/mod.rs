//! A target's own Prometheus metrics: read during a load test (`--scrape`, the JSON's
//! `target_metrics`) and watched without load (`blast watch`).
//!
//! Fetching (`ureq`, plain HTTP, a short timeout) and parsing (`prometheus-parse`) happen on
//! threads of the main process, one per metrics URL, never in the shards. A scrape that fails
//! is counted and reported as a warning: it never fails the run.

pub mod exposition;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

pub use exposition::{parse, Hist, HistKind, Reading, Selector, Series};

use crate::report::Warning;

/// How long one scrape may take, connect to last byte: a slow exporter must not hold up the
/// start of the run or its report.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// A body larger than this is not a metrics page.
const BODY_LIMIT: u64 = 32 << 20;
/// When an `--expect-count` counter disagrees at the end, the target may count a request
/// just after answering it: read it again this long after, up to `SETTLE_TRIES` times.
const SETTLE: Duration = Duration::from_millis(300);
const SETTLE_TRIES: usize = 2;

/// `--scrape`'s URL: http only (blast is built without TLS), with a host.
pub fn check_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("--scrape {raw:?}: invalid URL: {e}"))?;
    match url.scheme() {
        "http" => {}
        other => {
            return Err(format!(
                "--scrape {raw}: unsupported scheme {other:?}; use http://"
            ))
        }
    }
    if url.host().is_none() {
        return Err(format!("--scrape {raw}: the URL has no host"));
    }
    Ok(url.to_string())
}

/// The URL as shown (config, results, messages): a password in it masked.
pub fn masked(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => raw.to_string(),
    }
}

/// Serialize URLs masked (the plan's `scrape`).
pub fn ser_masked<S: serde::Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|u| masked(u)))
}

/// One HTTP client for one metrics URL.
pub struct Fetcher {
    agent: ureq::Agent,
    /// What is requested: the URL without its user info.
    target: String,
    /// User info in the URL, sent as `Authorization: Basic` (as curl does).
    auth: Option<String>,
    /// As shown.
    url: String,
}

impl Fetcher {
    pub fn new(url: &str, timeout: Duration) -> Fetcher {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // A status other than 200 is reported with the body's first line, below.
            .http_status_as_error(false)
            // Like the load itself, straight to the target whatever http_proxy says.
            .proxy(None)
            .user_agent(concat!("blast/", env!("CARGO_PKG_VERSION")))
            .build();
        // The load's own reading of user info, so that both send the same header.
        let auth = crate::plan::parse_url(url).ok().and_then(|t| t.basic_auth);
        let target = match url::Url::parse(url) {
            Ok(mut u) if auth.is_some() => {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.to_string()
            }
            _ => url.to_string(),
        };
        Fetcher {
            agent: config.into(),
            target,
            auth,
            url: masked(url),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// GET the exposition as text.
    pub fn get(&self) -> Result<String, String> {
        let mut req = self
            .agent
            .get(&self.target)
            // The classic text format, not OpenMetrics or protobuf.
            .header("Accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1");
        if let Some(auth) = &self.auth {
            req = req.header("Authorization", auth);
        }
        let mut resp = req.call().map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            let first = body.lines().next().unwrap_or("").trim();
            return Err(format!("HTTP {status}: {:.80}", first));
        }
        Ok(body)
    }

    /// GET and parse.
    pub fn scrape(&self) -> Result<Reading, String> {
        parse(&self.get()?)
    }
}

/// The deltas of a histogram or summary over the run. Summaries' quantiles are not
/// cumulative, so only their sum and count have a delta.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HistDelta {
    /// Histograms: cumulative buckets, in the target's order (`le` as a string: "+Inf").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<Bucket>,
    pub sum: f64,
    pub count: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    pub le: String,
    pub count: f64,
}

/// What one metrics URL showed over a run: the JSON's `target_metrics[]`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetMetrics {
    pub url: String,
    /// Scrapes tried and those that failed.
    pub scrapes: u64,
    pub failed: u64,
    /// The first failure's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Each counter's increase over the run (a reset counts from zero), by series
    /// (`name{label="value",...}`).
    pub counters: BTreeMap<String, f64>,
    /// Each gauge read after each timeline row: `gauges[k][i]` beside `timeline[i]`
    /// (null when that scrape failed or was skipped).
    pub gauges: BTreeMap<String, Vec<Option<f64>>>,
    /// Histogram series: the increase of each bucket, of the sum and of the count.
    pub histograms: BTreeMap<String, HistDelta>,
    /// Summary series: the increase of the sum and of the count.
    pub summaries: BTreeMap<String, HistDelta>,
}

/// A counter-like value's increase from `prev` to `now`. `prev` None: the series was absent
/// from the last successful scrape, so it was created since (client libraries create a
/// labelled series on first use) and started at zero. A drop is a restart of the target:
/// it counted `now` since.
fn increase(prev: Option<f64>, now: f64) -> f64 {
    match prev {
        Some(p) if now >= p => now - p,
        _ => now,
    }
}

/// A histogram's or summary's accumulated increase.
#[derive(Clone, Debug)]
struct HistAcc {
    kind: HistKind,
    /// (le, increase), in the target's order.
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

/// One metrics URL's scrapes over a run, accumulated.
struct Track {
    fetcher: Fetcher,
    scrapes: u64,
    failed: u64,
    error: Option<String>,
    /// The last successful reading: the base of the next increase.
    last: Option<Reading>,
    counters: BTreeMap<Series, f64>,
    hists: BTreeMap<Series, HistAcc>,
    gauges: BTreeMap<Series, Vec<Option<f64>>>,
    /// Whether the first scrape (before the load) succeeded.
    based: bool,
}

impl Track {
    fn new(fetcher: Fetcher) -> Track {
        Track {
            fetcher,
            scrapes: 0,
            failed: 0,
            error: None,
            last: None,
            counters: BTreeMap::new(),
            hists: BTreeMap::new(),
            gauges: BTreeMap::new(),
            based: false,
        }
    }

    /// Scrape now; `row` is the timeline row this reading stands beside, if any.
    fn scrape(&mut self, row: Option<usize>) {
        self.scrapes += 1;
        match self.fetcher.scrape() {
            Ok(reading) => self.observe(reading, row),
            Err(e) => {
                self.failed += 1;
                self.error.get_or_insert(e);
            }
        }
    }

    fn observe(&mut self, now: Reading, row: Option<usize>) {
        if let Some(prev) = &self.last {
            for (s, v) in &now.counters {
                let inc = increase(prev.counters.get(s).copied(), *v);
                *self.counters.entry(s.clone()).or_default() += inc;
            }
            for (s, h) in &now.hists {
                let before = prev.hists.get(s);
                let acc = self.hists.entry(s.clone()).or_insert_with(|| HistAcc {
                    kind: h.kind,
                    buckets: Vec::new(),
                    sum: 0.0,
                    count: 0.0,
                });
                acc.sum += increase(before.map(|b| b.sum), h.sum);
                acc.count += increase(before.map(|b| b.count), h.count);
                for (le, n) in &h.buckets {
                    let was = before.and_then(|b| b.bucket(*le));
                    match acc.buckets.iter_mut().find(|(l, _)| l == le) {
                        Some((_, total)) => *total += increase(was, *n),
                        None => acc.buckets.push((*le, increase(was, *n))),
                    }
                }
            }
        } else {
            // The base: every series is known from here on, with nothing counted yet.
            for s in now.counters.keys() {
                self.counters.entry(s.clone()).or_default();
            }
            for (s, h) in &now.hists {
                self.hists.entry(s.clone()).or_insert_with(|| HistAcc {
                    kind: h.kind,
                    buckets: h.buckets.iter().map(|(le, _)| (*le, 0.0)).collect(),
                    sum: 0.0,
                    count: 0.0,
                });
            }
        }
        if let Some(i) = row {
            for (s, v) in &now.gauges {
                let values = self.gauges.entry(s.clone()).or_default();
                if values.len() <= i {
                    values.resize(i + 1, None);
                }
                values[i] = Some(*v);
            }
        }
        self.last = Some(now);
    }

    /// The document's part, with `rows` timeline rows.
    fn result(&self, rows: usize) -> TargetMetrics {
        let mut out = TargetMetrics {
            url: self.fetcher.url().to_string(),
            scrapes: self.scrapes,
            failed: self.failed,
            error: self.error.clone(),
            counters: self
                .counters
                .iter()
                .map(|(s, v)| (s.to_string(), *v))
                .collect(),
            gauges: self
                .gauges
                .iter()
                .map(|(s, v)| {
                    let mut v = v.clone();
                    v.resize(rows, None);
                    (s.to_string(), v)
                })
                .collect(),
            ..TargetMetrics::default()
        };
        for (s, h) in &self.hists {
            let delta = HistDelta {
                buckets: h
                    .buckets
                    .iter()
                    .map(|(le, n)| Bucket {
                        le: exposition::fmt_le(*le),
                        count: *n,
                    })
                    .collect(),
                sum: h.sum,
                count: h.count,
            };
            match h.kind {
                HistKind::Histogram => out.histograms.insert(s.to_string(), delta),
                HistKind::Summary => out.summaries.insert(s.to_string(), delta),
            };
        }
        out
    }

    /// The increase of every counter `sel` matches, if any does.
    fn count(&self, sel: &Selector) -> Option<f64> {
        let mut matched = self.counters.iter().filter(|(s, _)| sel.matches(s));
        let first = matched.next()?;
        Some(first.1 + matched.map(|(_, v)| v).sum::<f64>())
    }
}

enum Msg {
    /// Timeline row `index` is complete.
    Row(usize),
    /// The run is over: scrape once more and hand the track back.
    End,
}

struct Worker {
    tx: mpsc::Sender<Msg>,
    handle: JoinHandle<Track>,
}

/// The scrape threads of one run, one per `--scrape` URL.
pub struct Scraper {
    workers: Vec<Worker>,
    rows: usize,
}

impl Scraper {
    /// Start a thread per URL and wait for each one's first scrape, so that the base is
    /// read before the load starts.
    pub fn start(urls: &[String]) -> Scraper {
        let (ready_tx, ready_rx) = mpsc::channel();
        let workers: Vec<Worker> = urls
            .iter()
            .map(|url| {
                let (tx, rx) = mpsc::channel();
                let ready = ready_tx.clone();
                let fetcher = Fetcher::new(url, TIMEOUT);
                let handle = std::thread::Builder::new()
                    .name("blast-scrape".into())
                    .spawn(move || {
                        let mut track = Track::new(fetcher);
                        track.scrape(None);
                        track.based = track.last.is_some();
                        let _ = ready.send(());
                        serve(&mut track, &rx);
                        track
                    })
                    .expect("spawn a scrape thread");
                Worker { tx, handle }
            })
            .collect();
        drop(ready_tx);
        // Each first scrape ends within the timeout; a thread that died ends the wait too.
        for _ in 0..workers.len() {
            if ready_rx.recv().is_err() {
                break;
            }
        }
        Scraper { workers, rows: 0 }
    }

    /// A timeline row is complete: scrape beside it (without waiting for the scrape).
    pub fn row(&mut self) {
        for w in &self.workers {
            let _ = w.tx.send(Msg::Row(self.rows));
        }
        self.rows += 1;
    }

    /// The run is over: scrape a last time, then compare each `--expect-count` counter
    /// with `sent` (reading again briefly while they disagree). `shards`: the process count
    /// of `--shard` (the target counts them all).
    pub fn finish(
        self,
        rows: usize,
        expect: &[Selector],
        sent: u64,
        shards: usize,
    ) -> (Vec<TargetMetrics>, Vec<Warning>) {
        for w in &self.workers {
            let _ = w.tx.send(Msg::End);
        }
        let mut tracks: Vec<Track> = self
            .workers
            .into_iter()
            .filter_map(|w| w.handle.join().ok())
            .collect();
        let mut tries = 0;
        while tries < SETTLE_TRIES && !expect.is_empty() && shards == 1 {
            let agree = expect.iter().all(|sel| {
                let counts: Vec<f64> = tracks.iter().filter_map(|t| t.count(sel)).collect();
                counts.is_empty() || counts.iter().sum::<f64>() == sent as f64
            });
            if agree {
                break;
            }
            std::thread::sleep(SETTLE);
            for t in &mut tracks {
                t.scrape(None);
            }
            tries += 1;
        }
        let mut warnings = Vec::new();
        for t in &tracks {
            if t.failed > 0 {
                warnings.push(Warning {
                    code: "scrape_failed",
                    message: format!(
                        "{} of {} scrapes of {} failed ({}){}",
                        t.failed,
                        t.scrapes,
                        t.fetcher.url(),
                        t.error.as_deref().unwrap_or("?"),
                        match (t.based, t.last.is_some()) {
                            (_, false) => ": no target metrics from it",
                            (false, true) => ": the first one failed, so counts start later",
                            _ => "",
                        }
                    ),
                });
            }
        }
        for sel in expect {
            let counts: Vec<f64> = tracks.iter().filter_map(|t| t.count(sel)).collect();
            if counts.is_empty() {
                // Every scrape failed: scrape_failed already says so.
                if tracks.iter().any(|t| t.last.is_some()) {
                    warnings.push(Warning {
                        code: "count_missing",
                        message: format!(
                            "--expect-count {sel}: no counter of the scraped metrics matches it"
                        ),
                    });
                }
                continue;
            }
            let counted: f64 = counts.iter().sum();
            if counted != sent as f64 {
                let shard = match shards {
                    1 => String::new(),
                    n => format!(
                        " (this process is one of {n} --shard processes; the target counts them all)"
                    ),
                };
                warnings.push(Warning {
                    code: "count_mismatch",
                    message: format!(
                        "the target counted {} for {sel} but blast sent {sent} requests{shard}",
                        fmt_count(counted)
                    ),
                });
            }
        }
        (tracks.iter().map(|t| t.result(rows)).collect(), warnings)
    }
}

/// A count as a person reads it: whole numbers without a fraction.
pub fn fmt_count(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// A worker's loop: a scrape after each row until the end. Rows that queued up while a slow
/// scrape ran are skipped (their gauges stay null): only the newest is read.
fn serve(track: &mut Track, rx: &mpsc::Receiver<Msg>) {
    while let Ok(msg) = rx.recv() {
        let mut latest = msg;
        while let Ok(next) = rx.try_recv() {
            if matches!(latest, Msg::End) {
                break;
            }
            latest = next;
        }
        match latest {
            Msg::Row(i) => track.scrape(Some(i)),
            Msg::End => {
                track.scrape(None);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(text: &str) -> Reading {
        parse(text).unwrap()
    }

    fn track() -> Track {
        Track::new(Fetcher::new("http://127.0.0.1:1/metrics", TIMEOUT))
    }

    const TEXT: &str = "# TYPE req_total counter\nreq_total{path=\"/a\"} 5\n\
        # TYPE depth gauge\ndepth 2\n\
        # TYPE lat histogram\nlat_bucket{le=\"0.1\"} 1\nlat_bucket{le=\"+Inf\"} 2\nlat_sum 0.3\nlat_count 2\n";

    #[test]
    fn deltas_resets_and_new_series() {
        let mut t = track();
        t.observe(reading(TEXT), None);
        t.observe(
            reading(
                "# TYPE req_total counter\nreq_total{path=\"/a\"} 9\nreq_total{path=\"/b\"} 3\n\
                 # TYPE depth gauge\ndepth 7\n\
                 # TYPE lat histogram\nlat_bucket{le=\"0.1\"} 4\nlat_bucket{le=\"+Inf\"} 6\nlat_sum 1.3\nlat_count 6\n",
            ),
            Some(0),
        );
        // A restart: /a starts again from zero.
        t.observe(
            reading(
                "# TYPE req_total counter\nreq_total{path=\"/a\"} 2\nreq_total{path=\"/b\"} 3\n",
            ),
            Some(2),
        );
        let r = t.result(3);
        assert_eq!(r.counters["req_total{path=\"/a\"}"], 4.0 + 2.0);
        assert_eq!(r.counters["req_total{path=\"/b\"}"], 3.0);
        assert_eq!(r.gauges["depth"], vec![Some(7.0), None, None]);
        let h = &r.histograms["lat"];
        assert_eq!(h.count, 4.0);
        assert!((h.sum - 1.0).abs() < 1e-9);
        assert_eq!(
            h.buckets,
            vec![
                Bucket {
                    le: "0.1".into(),
                    count: 3.0
                },
                Bucket {
                    le: "+Inf".into(),
                    count: 4.0
                }
            ]
        );
        let all = Selector::parse("req_total").unwrap();
        assert_eq!(t.count(&all), Some(9.0));
        let a = Selector::parse("req_total{path=\"/a\"}").unwrap();
        assert_eq!(t.count(&a), Some(6.0));
        assert_eq!(t.count(&Selector::parse("other_total").unwrap()), None);
    }

    #[test]
    fn urls() {
        assert!(check_url("http://127.0.0.1:9000/metrics").is_ok());
        assert!(check_url("https://x/metrics")
            .unwrap_err()
            .contains("http://"));
        assert!(check_url("not a url").is_err());
    }
}
