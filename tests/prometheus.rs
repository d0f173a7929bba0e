//! `--prometheus ADDR` and `--prometheus-linger D`: scrapes during and after a run against a
//! counting loopback server, checked against the result document, the server's count and
//! `promtool check metrics`; the scrape config and the Grafana dashboard in deploy/.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::doc::{assert_exit, num};
use common::{temp_path, Behaviour, TestServer};
use serde_json::Value;

/// No test here waits longer than this for anything.
const DEADLINE: Duration = Duration::from_secs(30);

/// A blast process killed (and reaped) if the test ends without waiting for it.
struct Blast {
    child: Child,
    json: PathBuf,
    metrics: SocketAddr,
    /// The rest of its stderr, read to the end by a thread.
    stderr: Option<thread::JoinHandle<String>>,
}

impl Blast {
    /// blast `args` with `--prometheus` on port 0 (blast names the port on stderr) and
    /// `--json` to a temp file.
    fn start(args: &[&str]) -> Blast {
        let json = temp_path("prometheus.json");
        let mut child = Command::new(env!("CARGO_BIN_EXE_blast"))
            .args(args)
            .args(["--quiet", "--prometheus", "127.0.0.1:0", "--json"])
            .arg(&json)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot spawn blast");
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let mut before = String::new();
        let metrics = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    let addr = line
                        .split_once("metrics on http://")
                        .and_then(|(_, rest)| rest.strip_suffix("/metrics"));
                    if let Some(addr) = addr {
                        break addr.parse().expect("a socket address");
                    }
                    before += &line;
                }
                _ => panic!("blast {args:?} named no metrics address; stderr:\n{before}"),
            }
        };
        let stderr =
            thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
        Blast {
            child,
            json,
            metrics,
            stderr: Some(stderr),
        }
    }

    /// The result document, once blast has written all of it.
    fn wait_for_json(&mut self) -> Value {
        let doc = wait_until("the result document", || {
            let text = std::fs::read_to_string(&self.json).ok()?;
            serde_json::from_str::<Value>(&text).ok()
        });
        let _ = std::fs::remove_file(&self.json);
        doc
    }

    /// Wait for the exit (failing after `limit`); the status and stderr.
    fn wait(mut self, limit: Duration) -> (ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let err = self.stderr.take().expect("once").join().unwrap_or_default();
                return (status, err);
            }
            assert!(
                start.elapsed() < limit,
                "blast still running after {limit:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child this test owns and has not reaped.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) },
            0
        );
    }
}

impl Drop for Blast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.json);
    }
}

/// Poll `f` until it gives a value, for `DEADLINE` at most.
fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "no {what} after {DEADLINE:?}");
        thread::sleep(Duration::from_millis(25));
    }
}

/// `GET path` on `addr`: the status code and the body, or None if nothing answers.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// One scrape: the exposition text and its samples (`name{labels}` -> value).
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn of(addr: SocketAddr) -> Option<Scrape> {
        let (status, text) = get(addr, "/metrics")?;
        assert_eq!(status, 200, "{text}");
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (key, value) = l.rsplit_once(' ').expect("sample line: NAME VALUE");
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().unwrap_or_else(|_| panic!("sample value: {l}")),
                };
                (key.to_string(), value)
            })
            .collect();
        Some(Scrape { text, samples })
    }

    /// The sample `key` (`name` or `name{label="value"}`); panics if absent.
    fn get(&self, key: &str) -> u64 {
        let v = self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key} in:\n{}", self.text));
        assert!(v.fract() == 0.0 && *v >= 0.0, "{key} = {v}");
        *v as u64
    }

    /// The samples of metric `name` keyed by the value of its one label.
    fn by_label(&self, name: &str) -> BTreeMap<String, u64> {
        let prefix = format!("{name}{{");
        self.samples
            .iter()
            .filter_map(|(k, v)| {
                let labels = k.strip_prefix(&prefix)?.strip_suffix('}')?;
                let (_, value) = labels.split_once('=')?;
                Some((value.trim_matches('"').to_string(), *v as u64))
            })
            .collect()
    }

    /// The metric families present (`# TYPE` lines).
    fn families(&self) -> Vec<&str> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect()
    }
}

/// Scrape until `ready` holds (for a mid-run scrape: the run going, a first interval in).
fn scrape_when(addr: SocketAddr, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    wait_until("scrape that fits", || Scrape::of(addr).filter(|s| ready(s)))
}

/// `promtool` on PATH, or None outside CI (said on the terminal, past the test harness's
/// capture); in CI (CI=true) a missing promtool fails the test.
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("promtool");
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "promtool is missing in CI: .ci/run installs it (apt-get install -y prometheus)"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: promtool not found (Debian: apt-get install prometheus); the promtool checks did not run"
    );
    None
}

/// `promtool ARGS` with `stdin`; panics with its output unless it succeeds.
fn run_promtool(promtool: &str, args: &[&str], stdin: &str) {
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool {args:?} refused:\n{}{}\n--- input:\n{stdin}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every counter (and histogram series) of `earlier` is at most its value in `later`.
fn assert_monotonic(earlier: &Scrape, later: &Scrape) {
    for (key, v) in &earlier.samples {
        let name = key.split('{').next().unwrap_or(key);
        if ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .any(|s| name.ends_with(s))
        {
            let after = later.samples.get(key).copied().unwrap_or(f64::NAN);
            assert!(after >= *v, "{key} went from {v} to {after}");
        }
    }
}

/// An open-loop run against a server that leaves every 9th request of a connection
/// unanswered (errors, reconnects): a mid-run scrape that promtool accepts, then the last
/// scrape, during the linger, whose counters are the result document's totals and the
/// server's count; Ctrl-C ends the linger at once.
#[test]
fn the_last_scrape_equals_the_json_totals_and_the_servers_count() {
    let server = TestServer::start(
        Behaviour::keep_alive()
            .delay(Duration::from_millis(2))
            .unanswered_every(9),
    );
    let url = server.url("/");
    let mut blast = Blast::start(&[
        &url,
        "--rate",
        "150",
        "--duration",
        "3s",
        "--interval",
        "250ms",
        "--conns",
        "8",
        "--cores",
        "1",
        "--prometheus-linger",
        "60s",
    ]);
    let addr = blast.metrics;
    let mid = scrape_when(addr, |s| {
        s.samples.get("blast_running") == Some(&1.0)
            && s.samples
                .get("blast_requests_sent_total")
                .is_some_and(|n| *n > 0.0)
    });
    for family in [
        "blast_latency_seconds",
        "blast_send_lag_seconds",
        "blast_latency_uncorrected_seconds",
        "blast_requests_missed_total",
        "blast_target_requests_per_second",
    ] {
        assert!(mid.families().contains(&family), "{family}:\n{}", mid.text);
    }
    if let Some(p) = promtool() {
        run_promtool(p, &["check", "metrics"], &mid.text);
    }
    let doc = blast.wait_for_json();
    let last = Scrape::of(addr).expect("blast serves after the run (--prometheus-linger)");
    assert_eq!(last.get("blast_running"), 0, "{}", last.text);
    assert_monotonic(&mid, &last);

    let sent = num(&doc, "requests.sent");
    assert!(sent >= 50, "a run of 3 s at 150/s sent {sent}");
    assert_eq!(last.get("blast_requests_sent_total"), sent);
    let outcomes = last.by_label("blast_requests_total");
    let completed = num(&doc, "requests.completed");
    let ok = num(&doc, "requests.ok");
    assert_eq!(outcomes["ok"], ok);
    assert_eq!(outcomes["non_2xx"], completed - ok);
    assert_eq!(outcomes["failed"], num(&doc, "requests.failed"));
    assert_eq!(outcomes["cut_off"], num(&doc, "requests.cut_off"));
    let errors = last.by_label("blast_errors_total");
    let doc_errors = doc["errors"].as_object().expect("errors");
    assert_eq!(
        errors.len(),
        doc_errors.len(),
        "{errors:?} vs {doc_errors:?}"
    );
    for (kind, n) in doc_errors {
        assert_eq!(errors[kind], n.as_u64().unwrap(), "errors.{kind}");
    }
    assert!(
        num(&doc, "requests.failed") > 0,
        "the server leaves requests unanswered: {doc:#}"
    );
    let codes = last.by_label("blast_responses_total");
    let doc_codes: BTreeMap<String, u64> = doc["status"]
        .as_object()
        .expect("status")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(codes, doc_codes);
    assert_eq!(
        last.get("blast_latency_seconds_count"),
        num(&doc, "latency_us.count")
    );
    assert_eq!(
        last.get("blast_send_lag_seconds_count"),
        num(&doc, "send_lag_us.count")
    );
    assert_eq!(
        last.get("blast_latency_seconds_bucket{le=\"+Inf\"}"),
        num(&doc, "latency_us.count")
    );
    assert_eq!(
        last.get("blast_requests_missed_total"),
        num(&doc, "open_loop.missed")
    );
    assert_eq!(
        last.get("blast_connections_opened_total"),
        num(&doc, "connections.opened")
    );
    assert_eq!(
        last.get("blast_read_bytes_total"),
        num(&doc, "transfer.bytes_read")
    );

    // Only /metrics is served.
    assert_eq!(get(addr, "/").map(|(s, _)| s), Some(404));

    // Ctrl-C ends the linger (60 s) at once; the run itself had ended well.
    let asked = Instant::now();
    blast.signal(libc::SIGINT);
    let (status, err) = blast.wait(Duration::from_secs(10));
    assert!(asked.elapsed() < Duration::from_secs(5), "{err}");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(Scrape::of(addr).is_none(), "still serving after the exit");
    assert_eq!(
        server.counts().requests,
        sent,
        "requests the server received"
    );
}

/// An LLM run (the demo's mock Ollama, open loop): a mid-run scrape has TTFT, ITL and TPOT
/// histograms and token counts, and promtool accepts it; the linger then ends by itself.
#[test]
fn promtool_accepts_a_mid_run_scrape_of_an_llm_run() {
    let mut blast = Blast::start(&[
        "demo",
        "--rate",
        "40",
        "--duration",
        "3s",
        "--interval",
        "250ms",
        "--cores",
        "1",
        "--prometheus-linger",
        "1s",
    ]);
    let addr = blast.metrics;
    let mid = scrape_when(addr, |s| {
        s.samples.get("blast_running") == Some(&1.0)
            && s.samples
                .get("blast_tpot_seconds_count")
                .is_some_and(|n| *n > 0.0)
    });
    for name in [
        "blast_ttft_seconds_count",
        "blast_itl_seconds_count",
        "blast_tokens_total",
    ] {
        assert!(mid.get(name) > 0, "{name}:\n{}", mid.text);
    }
    assert!(
        mid.text.contains("blast_run_info{url=\"http://127.0.0.1:"),
        "{}",
        mid.text
    );
    if let Some(p) = promtool() {
        run_promtool(p, &["check", "metrics"], &mid.text);
    }
    let doc = blast.wait_for_json();
    let last = Scrape::of(addr).expect("serving during the linger");
    assert_eq!(last.get("blast_tokens_total"), num(&doc, "tokens.output"));
    assert_eq!(
        last.get("blast_prompt_tokens_total"),
        num(&doc, "tokens.prompt")
    );
    assert_eq!(
        last.get("blast_ttft_seconds_count"),
        num(&doc, "ttft_us.count")
    );
    assert_eq!(
        last.get("blast_requests_good_total"),
        num(&doc, "goodput.good")
    );
    let (status, err) = blast.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{err}");
}

/// A bad address or a busy port: one line, exit 2, and no request sent.
#[test]
fn a_bad_or_busy_address_is_refused_before_the_run() {
    let server = TestServer::start(Behaviour::keep_alive());
    let url = server.url("/");
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = busy.local_addr().expect("addr").to_string();
    for (addr, says) in [
        (busy.as_str(), "cannot listen"),
        ("127.0.0.1", "want IP:PORT"),
        ("example.com:9464", "not an IP address"),
    ] {
        let out = common::blast(&[&url, "--requests", "5", "--prometheus", addr]);
        assert_exit(&out, 2);
        let err = common::doc::stderr_of(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("blast: --prometheus") && err.contains(says),
            "{err}"
        );
    }
    assert_eq!(server.counts().requests, 0);
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// deploy/grafana/blast-dashboard.json parses; every query names only metrics blast serves
/// (those of an open-loop LLM run) or the proxy's, and is valid PromQL (promtool); the scrape
/// config passes `promtool check config`.
#[test]
fn the_dashboard_and_the_scrape_config_are_valid() {
    let text = std::fs::read_to_string(repo_file("deploy/grafana/blast-dashboard.json"))
        .expect("read the dashboard");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert!(p["gridPos"]["w"].as_u64().is_some(), "gridPos: {p}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "a panel without a query: {p}");
        exprs.extend(targets.iter().map(|t| t["expr"].as_str().expect("expr")));
    }
    assert!(exprs.len() >= 10, "{exprs:?}");

    // The metrics blast serves, from a real run with every family (open loop, LLM).
    let mut blast = Blast::start(&[
        "demo",
        "--rate",
        "20",
        "--duration",
        "500ms",
        "--cores",
        "1",
        "--prometheus-linger",
        "30s",
    ]);
    blast.wait_for_json();
    let scrape = Scrape::of(blast.metrics).expect("serving during the linger");
    blast.signal(libc::SIGTERM);
    let served: Vec<&str> = scrape.families();
    for expr in &exprs {
        for name in metric_names(expr) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                served.contains(&family) || served.contains(&name),
                "the dashboard asks for {name}, which blast does not serve ({served:?})"
            );
        }
    }

    let Some(promtool) = promtool() else {
        return;
    };
    // Grafana's variables as their defaults, and each query as a recording rule.
    let vars = &dash["templating"]["list"];
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let mut e = expr.replace("$__rate_interval", "1m");
        for v in vars.as_array().expect("variables") {
            if let (Some(name), Some(value)) = (v["name"].as_str(), v["query"].as_str()) {
                e = e
                    .replace(&format!("${{{name}}}"), value)
                    .replace(&format!("${name}"), value);
            }
        }
        assert!(!e.contains('$'), "an unknown variable in {expr}");
        rules += &format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(&e).expect("quote")
        );
    }
    let rules_file = temp_path("dashboard-rules.yml");
    std::fs::write(&rules_file, &rules).expect("write rules");
    let rules_path = rules_file.to_str().expect("utf-8");
    let checked = std::panic::catch_unwind(|| {
        run_promtool(promtool, &["check", "rules", rules_path], "");
    });
    let _ = std::fs::remove_file(&rules_file);
    if let Err(e) = checked {
        std::panic::resume_unwind(e);
    }
    let config = repo_file("deploy/prometheus/prometheus.yml");
    run_promtool(
        promtool,
        &["check", "config", config.to_str().expect("utf-8")],
        "",
    );
}

/// The `blast_...` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("blast_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(&tail[..end]);
        rest = &tail[end..];
    }
    names
}
