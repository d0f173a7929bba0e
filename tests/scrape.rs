//! Issue 13: `--scrape` reads the target's own Prometheus metrics during a run
//! (`target_metrics`), `--expect-count` checks a counter against blast's own count, and
//! `blast watch` shows a target's metrics live. The target is a loopback server written
//! here: it serves the load path and a /metrics page exposing a counter of the load
//! requests it received, a gauge and a histogram.

mod common;

use common::doc::*;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{blast, blast_json, closed_port, parse_request, read_more, Acceptor};

/// What the metrics server counts.
#[derive(Default)]
struct Counted {
    /// Load requests received (on any path but /metrics).
    load: AtomicU64,
    /// Their request bytes, for the histogram's sum.
    load_bytes: AtomicU64,
    /// /metrics requests received.
    scrapes: AtomicU64,
    /// Load connections open now.
    open: AtomicU64,
    /// The Authorization header of the last /metrics request.
    auth: Mutex<Option<String>>,
}

/// How the server writes /metrics.
#[derive(Clone, Copy)]
enum Page {
    /// The load counter as received.
    Honest,
    /// The load counter twice what was received (a proxy that counts twice).
    DoubleCounting,
    /// An HTML page instead of metrics.
    Html,
}

struct MetricsServer {
    acceptor: Acceptor,
    counted: Arc<Counted>,
}

impl MetricsServer {
    fn start(page: Page) -> MetricsServer {
        let counted = Arc::new(Counted::default());
        let c = counted.clone();
        let acceptor = Acceptor::start(move |stream, stop| {
            let _ = serve(stream, stop, &c, page);
        });
        MetricsServer { acceptor, counted }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.acceptor.addr())
    }

    fn load(&self) -> u64 {
        self.acceptor.settle();
        self.counted.load.load(Ordering::SeqCst)
    }
}

fn exposition(c: &Counted, page: Page) -> String {
    let load = c.load.load(Ordering::SeqCst);
    let shown = match page {
        Page::DoubleCounting => load * 2,
        _ => load,
    };
    format!(
        "# HELP test_requests_total Load requests received.\n\
         # TYPE test_requests_total counter\n\
         test_requests_total{{path=\"/load\",method=\"GET\"}} {shown}\n\
         # HELP test_scrapes_total Metrics pages served.\n\
         # TYPE test_scrapes_total counter\n\
         test_scrapes_total {}\n\
         # HELP test_open_connections Load connections open.\n\
         # TYPE test_open_connections gauge\n\
         test_open_connections {}\n\
         # HELP test_request_bytes Sizes of the load requests.\n\
         # TYPE test_request_bytes histogram\n\
         test_request_bytes_bucket{{le=\"10\"}} 0\n\
         test_request_bytes_bucket{{le=\"+Inf\"}} {load}\n\
         test_request_bytes_sum {}\n\
         test_request_bytes_count {load}\n",
        c.scrapes.load(Ordering::SeqCst),
        c.open.load(Ordering::SeqCst),
        c.load_bytes.load(Ordering::SeqCst),
    )
}

fn serve(mut stream: TcpStream, stop: &AtomicBool, c: &Counted, page: Page) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut buf = Vec::new();
    let mut counted_open = false;
    let result = (|| loop {
        while let Some((req, used)) = parse_request(&buf)? {
            buf.drain(..used);
            let (body, kind) = if req.path == "/metrics" {
                // Counted before the page is written: a scrape sees itself.
                c.scrapes.fetch_add(1, Ordering::SeqCst);
                *c.auth.lock().unwrap() = req.header("authorization").map(str::to_string);
                match page {
                    Page::Html => (
                        "<html><body>Dashboard</body></html>\n".to_string(),
                        "text/html",
                    ),
                    _ => (exposition(c, page), "text/plain; version=0.0.4"),
                }
            } else {
                if !counted_open {
                    counted_open = true;
                    c.open.fetch_add(1, Ordering::SeqCst);
                }
                c.load.fetch_add(1, Ordering::SeqCst);
                c.load_bytes.fetch_add(used as u64, Ordering::SeqCst);
                ("ok".to_string(), "text/plain")
            };
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
        }
        if !read_more(&mut stream, &mut buf, stop)? {
            return Ok(());
        }
    })();
    if counted_open {
        c.open.fetch_sub(1, Ordering::SeqCst);
    }
    result
}

/// The one `target_metrics` entry of a run with one `--scrape`.
fn target(doc: &Value) -> &Value {
    let all = at(doc, "target_metrics")
        .as_array()
        .unwrap_or_else(|| panic!("target_metrics is not a list:\n{doc:#}"));
    assert_eq!(all.len(), 1, "{doc:#}");
    &all[0]
}

fn codes(doc: &Value) -> Vec<String> {
    at(doc, "warnings")
        .as_array()
        .expect("warnings is a list")
        .iter()
        .map(|w| w["code"].as_str().unwrap_or("").to_string())
        .collect()
}

const LOAD: &[&str] = &[
    "--rate",
    "100",
    "--duration",
    "1500ms",
    "--interval",
    "250ms",
    "--conns",
    "4",
    "--cores",
    "1",
];

/// The counter's increase over the run is what blast sent and what the server counted; the
/// gauge stands beside each timeline row; the histogram's increase counts the same requests.
#[test]
fn target_metrics_deltas_equal_what_blast_sent() {
    let server = MetricsServer::start(Page::Honest);
    let (metrics, load) = (server.url("/metrics"), server.url("/load"));
    let mut args = LOAD.to_vec();
    args.extend([
        "--scrape",
        &metrics,
        "--expect-count",
        "test_requests_total{path=\"/load\"}",
        &load,
    ]);
    let (out, doc) = blast_json(&args);
    assert_exit(&out, 0);
    let sent = num(&doc, "requests.sent");
    assert!(sent >= 100, "an open loop of 100/s for 1.5s sent {sent}");
    assert_eq!(server.load(), sent, "the server counted what blast sent");
    let t = target(&doc);
    assert_eq!(t["url"], metrics.as_str());
    assert_eq!(t["failed"], 0, "{t:#}");
    let counters = &t["counters"];
    assert_eq!(
        counters["test_requests_total{method=\"GET\",path=\"/load\"}"].as_f64(),
        Some(sent as f64),
        "{t:#}"
    );
    // Every scrape but the first is counted in the increase (each page counts itself).
    let scrapes = t["scrapes"].as_u64().expect("scrapes");
    assert!(scrapes >= 3, "start, rows and end: {t:#}");
    assert_eq!(
        counters["test_scrapes_total"].as_f64(),
        Some((scrapes - 1) as f64)
    );
    let h = &t["histograms"]["test_request_bytes"];
    assert_eq!(h["count"].as_f64(), Some(sent as f64), "{t:#}");
    assert_eq!(h["buckets"][0]["le"], "10");
    assert_eq!(h["buckets"][0]["count"].as_f64(), Some(0.0));
    assert_eq!(h["buckets"][1]["le"], "+Inf");
    assert_eq!(h["buckets"][1]["count"].as_f64(), Some(sent as f64));
    assert!(h["sum"].as_f64().unwrap() >= sent as f64 * 10.0, "{h:#}");
    // The gauge: one value per timeline row, read while the 4 connections were open.
    let rows = at(&doc, "timeline").as_array().unwrap().len();
    let gauge = t["gauges"]["test_open_connections"]
        .as_array()
        .unwrap_or_else(|| panic!("no gauge: {t:#}"));
    assert_eq!(gauge.len(), rows, "{t:#}");
    assert!(
        gauge.iter().any(|v| v.as_f64() == Some(4.0)),
        "4 connections open during the run: {gauge:?}"
    );
    assert!(
        !codes(&doc).iter().any(|c| c.starts_with("count_")),
        "{doc:#}"
    );
    assert!(
        !codes(&doc).contains(&"scrape_failed".to_string()),
        "{doc:#}"
    );
    // The summary shows the counters that moved.
    let text = blast(&[
        "--requests",
        "20",
        "--conns",
        "2",
        "--cores",
        "1",
        "--scrape",
        &metrics,
        &load,
    ]);
    assert_exit(&text, 0);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains(&format!("Target metrics {metrics}"))
            && stdout.contains("test_requests_total{method=\"GET\",path=\"/load\"}  +20"),
        "{stdout}"
    );
}

/// A target that counts every request twice: `--expect-count` says so, and the run succeeds.
#[test]
fn expect_count_mismatch_warns() {
    let server = MetricsServer::start(Page::DoubleCounting);
    let (metrics, load) = (server.url("/metrics"), server.url("/load"));
    let (out, doc) = blast_json(&[
        "--requests",
        "50",
        "--conns",
        "2",
        "--cores",
        "1",
        "--scrape",
        &metrics,
        "--expect-count",
        "test_requests_total",
        "--expect-count",
        "no_such_total",
        &load,
    ]);
    assert_exit(&out, 0);
    assert_eq!(num(&doc, "requests.sent"), 50);
    assert_eq!(server.load(), 50);
    let warnings = at(&doc, "warnings").as_array().unwrap();
    let mismatch = warnings
        .iter()
        .find(|w| w["code"] == "count_mismatch")
        .unwrap_or_else(|| panic!("no count_mismatch: {doc:#}"));
    let message = mismatch["message"].as_str().unwrap();
    assert!(
        message.contains("counted 100") && message.contains("sent 50"),
        "{message}"
    );
    assert!(
        codes(&doc).contains(&"count_missing".to_string()),
        "{doc:#}"
    );
}

/// A metrics URL nothing listens on, and one that serves HTML: warnings, and the run and
/// its other figures are whole.
#[test]
fn failed_scrapes_warn_and_the_run_succeeds() {
    let server = MetricsServer::start(Page::Html);
    let dead = format!("http://127.0.0.1:{}/metrics", closed_port());
    let html = server.url("/metrics");
    let load = server.url("/load");
    let (out, doc) = blast_json(&[
        "--requests",
        "30",
        "--conns",
        "2",
        "--cores",
        "1",
        "--scrape",
        &dead,
        "--scrape",
        &html,
        &load,
    ]);
    assert_exit(&out, 0);
    assert_eq!(num(&doc, "requests.ok"), 30);
    let all = at(&doc, "target_metrics").as_array().unwrap();
    assert_eq!(all.len(), 2);
    for t in all {
        assert!(t["scrapes"].as_u64().unwrap() >= 2, "{t:#}");
        assert_eq!(t["failed"], t["scrapes"], "{t:#}");
        assert_eq!(t["counters"].as_object().unwrap().len(), 0, "{t:#}");
    }
    assert!(all[1]["error"]
        .as_str()
        .unwrap()
        .contains("not the Prometheus text format"));
    let failed: Vec<&Value> = at(&doc, "warnings")
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["code"] == "scrape_failed")
        .collect();
    assert_eq!(failed.len(), 2, "{doc:#}");
    assert!(failed[0]["message"].as_str().unwrap().contains(&dead));
}

/// User info in a metrics URL is sent as Basic auth, as for the load's URL, and its
/// password is masked in the result.
#[test]
fn scrape_url_user_info_is_basic_auth_and_masked() {
    let server = MetricsServer::start(Page::Honest);
    let metrics = format!("http://scraper:s3cret@{}/metrics", server.acceptor.addr());
    let (out, doc) = blast_json(&[
        "--requests",
        "5",
        "--conns",
        "1",
        "--cores",
        "1",
        "--scrape",
        &metrics,
        &server.url("/load"),
    ]);
    assert_exit(&out, 0);
    // base64("scraper:s3cret")
    assert_eq!(
        server.counted.auth.lock().unwrap().as_deref(),
        Some("Basic c2NyYXBlcjpzM2NyZXQ=")
    );
    let shown = format!("http://scraper:***@{}/metrics", server.acceptor.addr());
    assert_eq!(target(&doc)["url"], shown.as_str());
    assert_eq!(at(&doc, "config.scrape")[0], shown.as_str());
    assert!(!doc.to_string().contains("s3cret"));
    assert_eq!(target(&doc)["failed"], 0);
}

#[test]
fn bad_scrape_options_are_refused() {
    for (args, says) in [
        (
            vec!["--expect-count", "x_total", "http://127.0.0.1:1/"],
            "add --scrape",
        ),
        (
            vec![
                "--scrape",
                "https://127.0.0.1:1/metrics",
                "http://127.0.0.1:1/",
            ],
            "use http://",
        ),
        (
            vec![
                "--scrape",
                "http://127.0.0.1:1/metrics",
                "--expect-count",
                "x{",
                "http://127.0.0.1:1/",
            ],
            "--expect-count",
        ),
        (
            vec!["watch", "http://127.0.0.1:1/", "--match", "("],
            "--match",
        ),
    ] {
        let out = blast(&args);
        assert_exit(&out, 2);
        let err = stderr_of(&out);
        assert!(
            err.starts_with("blast: ") && err.contains(says),
            "{args:?}: {err}"
        );
    }
}

/// `blast watch --duration`: rates of the counters (the server's own scrape counter moves
/// with each of watch's scrapes), gauges, and exit 0 by itself.
#[test]
fn watch_prints_rates_until_its_duration() {
    let server = MetricsServer::start(Page::Honest);
    let metrics = server.url("/metrics");
    let start = Instant::now();
    let out = blast(&["watch", &metrics, "--interval", "500ms", "--duration", "2s"]);
    assert_exit(&out, 0);
    assert!(start.elapsed() < Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rate_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("test_scrapes_total"))
        .collect();
    assert!(rate_lines.len() >= 2, "{stdout}");
    // One scrape each 500ms: 2 per second (generous bounds on a busy machine).
    for l in &rate_lines {
        let rate: f64 = l
            .split_whitespace()
            .find_map(|w| w.strip_suffix("/s")?.parse().ok())
            .unwrap_or_else(|| panic!("no rate in {l:?}"));
        assert!(rate > 0.5 && rate < 5.0, "{l}");
    }
    assert!(stdout.contains("test_open_connections"), "{stdout}");
    // --match: only what matches.
    let out = blast(&[
        "watch",
        &metrics,
        "--interval",
        "300ms",
        "--duration",
        "1s",
        "--match",
        "^test_open",
    ]);
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("test_open_connections"), "{stdout}");
    assert!(!stdout.contains("test_scrapes_total"), "{stdout}");
    // Nothing to watch: exit 1 with the reason.
    let dead = format!("http://127.0.0.1:{}/metrics", closed_port());
    let out = blast(&["watch", &dead, "--interval", "200ms", "--duration", "500ms"]);
    assert_exit(&out, 1);
    assert!(
        stderr_of(&out).contains("no scrape of"),
        "{}",
        stderr_of(&out)
    );
}

/// SIGTERM stops `blast watch` cleanly with 143.
#[test]
fn watch_stops_on_sigterm() {
    let server = MetricsServer::start(Page::Honest);
    let child = Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(["watch", &server.url("/metrics"), "--interval", "200ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn blast watch");
    let (code, stdout, err, _) =
        common::signal_after(child, Duration::from_millis(800), libc::SIGTERM);
    assert_eq!(code, Some(143), "{err}");
    assert!(stdout.contains("test_scrapes_total"), "{stdout}");
}

/// Ctrl-C mid-run: the run reports (exit 130), and its end scrape still comes, so the
/// counter's increase is what the server received.
#[test]
fn ctrl_c_still_reads_the_target_at_the_end() {
    let server = MetricsServer::start(Page::Honest);
    let json = common::temp_path("scrape-sigint.json");
    let child = Command::new(env!("CARGO_BIN_EXE_blast"))
        .args([
            "-n",
            "2",
            "-c",
            "1",
            "-d",
            "30s",
            "-q",
            "--json",
            json.to_str().unwrap(),
            "--scrape",
            &server.url("/metrics"),
            &server.url("/load"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn blast");
    let (code, _, err, _) = common::signal_after(child, Duration::from_millis(1000), libc::SIGINT);
    assert_eq!(code, Some(130), "{err}");
    let doc: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON file")).expect("valid JSON");
    let _ = std::fs::remove_file(&json);
    let received = server.load();
    let (completed, sent) = (num(&doc, "requests.completed"), num(&doc, "requests.sent"));
    assert!(
        completed > 0 && (completed..=sent).contains(&received),
        "{received}: {doc:#}"
    );
    let counted = target(&doc)["counters"]["test_requests_total{method=\"GET\",path=\"/load\"}"]
        .as_f64()
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert_eq!(counted, received as f64);
}
