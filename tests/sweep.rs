//! Issue 13: `blast sweep` finds the highest rate a server sustains, against loopback servers
//! written here whose limits are known: a fixed number of worker slots with a fixed service
//! time (capacity = slots / service time), a rate limiter that answers 503 past its rate,
//! and an LLM server that slows down past a rate (an SLO stop).

mod common;

use common::doc::*;

use std::collections::VecDeque;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{parse_request, read_more, run_blast_within, temp_path, Acceptor};

/// A whole sweep in these tests takes well under this.
const SWEEP_LIMIT: Duration = Duration::from_secs(90);

/// One sweep at a time: the capacity a sweep finds must not be shared with another's load.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What a test server decides for one request: after how long, and what to answer.
type Decide = dyn Fn(Instant) -> (Instant, &'static [u8]) + Send + Sync;

/// A loopback server, one thread per connection, answering each request at the instant
/// `decide` gives (from its arrival), and counting the requests it received.
struct Server {
    acceptor: Acceptor,
    received: Arc<AtomicU64>,
}

impl Server {
    fn start(decide: Arc<Decide>) -> Server {
        let received = Arc::new(AtomicU64::new(0));
        let count = received.clone();
        let acceptor = Acceptor::start(move |stream, stop| {
            let _ = serve(stream, stop, &*decide, &count);
        });
        Server { acceptor, received }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.acceptor.addr())
    }
}

fn serve(
    mut stream: TcpStream,
    stop: &AtomicBool,
    decide: &Decide,
    received: &AtomicU64,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(20)))?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    loop {
        while let Some((_, used)) = parse_request(&buf)? {
            buf.drain(..used);
            received.fetch_add(1, Ordering::SeqCst);
            let (at, answer) = decide(Instant::now());
            // Sleep in short pieces, so that a stopping server does not wait out a queue.
            while let Some(left) = at.checked_duration_since(Instant::now()) {
                if stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                thread::sleep(left.min(Duration::from_millis(20)));
            }
            stream.write_all(answer)?;
        }
        if !read_more(&mut stream, &mut buf, stop)? {
            return Ok(());
        }
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy";

/// `slots` workers, each taking `service` per request, first come first served; requests
/// beyond them queue. Each slot's next start is computed from its last deadline, not from
/// when its thread woke, so a late wake-up on a busy machine costs latency, never capacity:
/// the capacity is exactly slots / service.
fn slots(slots: usize, service: Duration) -> Arc<Decide> {
    let free_at = Mutex::new(vec![Instant::now(); slots]);
    Arc::new(move |arrived| {
        let mut free = free_at.lock().unwrap();
        let slot = (0..free.len()).min_by_key(|&i| free[i]).expect("a slot");
        let done = free[slot].max(arrived) + service;
        free[slot] = done;
        (done, OK)
    })
}

/// A token bucket of `rate` per second (burst `burst`): a request with a token is answered
/// after `service`, one without gets 503 at once.
fn rate_limited(rate: f64, burst: f64, service: Duration) -> Arc<Decide> {
    let bucket = Mutex::new((burst, Instant::now()));
    Arc::new(move |arrived| {
        let mut b = bucket.lock().unwrap();
        b.0 = (b.0 + arrived.duration_since(b.1).as_secs_f64() * rate).min(burst);
        b.1 = arrived;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            (arrived + service, OK)
        } else {
            (arrived, BUSY)
        }
    })
}

const LLM_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 105\r\n\r\n\
{\"model\":\"m\",\"response\":\"hi there\",\"done\":true,\"done_reason\":\"stop\",\"eval_count\":2,\"prompt_eval_count\":3}";

/// An Ollama-like server with no capacity limit that answers in `fast`, or in `slow` while
/// more than `rate` requests per second arrived over the last 250 ms (a model slowing down
/// as it batches more).
fn slows_past(rate: f64, fast: Duration, slow: Duration) -> Arc<Decide> {
    const WINDOW: Duration = Duration::from_millis(250);
    let recent = Mutex::new(VecDeque::<Instant>::new());
    Arc::new(move |arrived| {
        let mut r = recent.lock().unwrap();
        r.push_back(arrived);
        while r
            .front()
            .is_some_and(|t| arrived.duration_since(*t) > WINDOW)
        {
            r.pop_front();
        }
        let busy = r.len() as f64 > rate * WINDOW.as_secs_f64();
        (arrived + if busy { slow } else { fast }, LLM_ANSWER)
    })
}

/// Run `blast sweep URL args... --quiet --json FILE` and read the document.
fn sweep(url: &str, args: &[&str]) -> (common::Run, Value) {
    let mut all = vec!["sweep", url];
    all.extend_from_slice(args);
    common::run_blast_json_within(&all, SWEEP_LIMIT)
}

fn steps(doc: &Value) -> &Vec<Value> {
    at(doc, "sweep.steps").as_array().expect("steps is a list")
}

/// The keys the HTML report reads, with their types, on the sweep and on every step.
fn assert_shape(doc: &Value) {
    let s = at(doc, "sweep");
    assert!(
        s["max_sustainable_rps"].is_number() || s["max_sustainable_rps"].is_null(),
        "{s:#}"
    );
    assert!(s["limit"].is_string(), "{s:#}");
    assert!(s["unloaded_p99_ms"].is_number(), "{s:#}");
    assert!(s["p99_multiple"].is_number(), "{s:#}");
    let steps = steps(doc);
    assert!(!steps.is_empty());
    assert_eq!(steps[0]["kind"], "unloaded");
    for st in steps {
        let kind = st["kind"].as_str().expect("kind");
        assert!(["unloaded", "ceiling", "rate"].contains(&kind), "{kind}");
        assert_eq!(st["offered_rps"].is_number(), kind == "rate", "{st:#}");
        for key in ["achieved_rps", "ok_pct", "p50_ms", "p99_ms"] {
            assert!(st[key].is_number(), "{key}: {st:#}");
        }
        // The full result document of the step, as a plain run writes it.
        let r = &st["result"];
        assert_eq!(r["tool"], "blast");
        for key in ["requests", "latency_us", "timeline", "histograms", "config"] {
            assert!(r.get(key).is_some(), "result.{key}: {r:#}");
        }
        assert_eq!(r["open_loop"].is_object(), kind == "rate", "{kind}");
    }
    // The unloaded probe: one connection, one request at a time.
    assert_eq!(num(&steps[0]["result"], "config.conns"), 1);
}

/// 4 slots x 10 ms = 400 req/s: the sweep's answer lands within 15% of it, the server is
/// what stopped it, and every request blast counts the server received. The p99 bound is
/// loose (10 x the unloaded p99): on a shared test machine a second-long step's p99 is
/// mostly scheduling noise; the capacity is where the server falls behind. Steps of 2 s:
/// their judged halves are long enough that a hiccup at an edge is not 1% of it.
#[test]
fn the_sweep_finds_a_known_capacity() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(slots(4, Duration::from_millis(10)));
    let (run, doc) = sweep(
        &server.url("/"),
        &[
            "--steps",
            "4",
            "--step-duration",
            "2s",
            "--max-time",
            "60s",
            "--p99-multiple",
            "10",
        ],
    );
    assert_exit(&run.output, 0);
    // The table, for whoever reads the test's log.
    eprintln!("{}", run.stdout());
    assert_shape(&doc);
    let answer = float(&doc, "sweep.max_sustainable_rps");
    assert!(
        (340.0..=460.0).contains(&answer),
        "max_sustainable_rps {answer}, want 400 +- 15%:\n{}",
        run.stdout()
    );
    assert_eq!(text(&doc, "sweep.limit"), "server", "{}", run.stdout());
    let kinds: Vec<&str> = steps(&doc)
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(&kinds[..3], ["unloaded", "ceiling", "rate"], "{kinds:?}");
    // The unloaded latency is the service time (its p99 is the machine's noise as much).
    let p50 = num(&steps(&doc)[0]["result"], "latency_us.p50");
    assert!((9_000..50_000).contains(&p50), "unloaded p50 {p50} us");
    assert!(float(&doc, "sweep.unloaded_p99_ms") >= 9.0);
    // The step that stopped the sweep offered more than the answer and did not hold.
    let stopped = float(&doc, "sweep.limit_rps");
    assert!(stopped > answer, "{stopped} <= {answer}");
    let sent: u64 = steps(&doc)
        .iter()
        .map(|s| num(&s["result"], "requests.sent"))
        .sum();
    assert_eq!(sent, server.received.load(Ordering::SeqCst));
    // The summary's table names the answer and the limit.
    let out = run.stdout();
    assert!(
        out.contains("Max sustainable") && out.contains("Limit            server"),
        "{out}"
    );
}

/// A server that answers 503 past 100 req/s: the sweep stops on errors, near that rate.
#[test]
fn an_erroring_server_stops_the_sweep_on_errors() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(rate_limited(100.0, 5.0, Duration::from_millis(20)));
    let (run, doc) = sweep(
        &server.url("/"),
        &[
            "--steps",
            "3",
            "--step-duration",
            "1s",
            "--conns",
            "20",
            "--refine",
            "0",
        ],
    );
    assert_exit(&run.output, 0);
    assert_shape(&doc);
    assert_eq!(text(&doc, "sweep.limit"), "errors", "{}", run.stdout());
    let last = steps(&doc).last().expect("a step");
    assert_eq!(last["verdict"], "errors", "{last:#}");
    assert!(num(&last["result"], "status.503") > 0, "{last:#}");
    let answer = float(&doc, "sweep.max_sustainable_rps");
    assert!(
        (40.0..=115.0).contains(&answer),
        "{answer}:\n{}",
        run.stdout()
    );
}

/// An LLM server that slows from 20 ms to 100 ms past 120 req/s, with --slo e2e=50ms: the
/// SLO stops the sweep, below that rate.
#[test]
fn a_missed_slo_stops_the_sweep() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(slows_past(
        120.0,
        Duration::from_millis(20),
        Duration::from_millis(100),
    ));
    let (run, doc) = sweep(
        &server.url("/api/generate"),
        &[
            "--api",
            "ollama-generate",
            "--no-stream",
            "--slo",
            "e2e=50ms",
            "--steps",
            "3",
            "--step-duration",
            "1s",
            "--conns",
            "10",
        ],
    );
    assert_exit(&run.output, 0);
    assert_shape(&doc);
    assert_eq!(text(&doc, "sweep.limit"), "slo", "{}", run.stdout());
    let answer = float(&doc, "sweep.max_sustainable_rps");
    assert!(
        (40.0..=135.0).contains(&answer),
        "{answer}:\n{}",
        run.stdout()
    );
    // A rate that held met the SLO; the step that stopped the sweep did not.
    for st in steps(&doc).iter().filter(|s| s["kind"] == "rate") {
        let ratio = float(&st["result"], "goodput.ratio");
        match st["verdict"].as_str().unwrap() {
            "held" => assert!(ratio >= 0.9, "{st:#}"),
            "slo" => assert!(ratio < 0.9, "{st:#}"),
            _ => {}
        }
    }
    // The LLM table: TTFT/ITL/TPOT, tokens/s, goodput.
    assert!(run.stdout().contains("goodput"), "{}", run.stdout());
}

/// Ctrl-C during a sweep stops it, and what was measured is still written (exit 130).
#[test]
fn ctrl_c_stops_the_sweep_and_keeps_what_it_measured() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(slots(4, Duration::from_millis(10)));
    let path = temp_path("sweep-int.json");
    let child = Command::new(env!("CARGO_BIN_EXE_blast"))
        .args([
            "sweep",
            &server.url("/"),
            "--step-duration",
            "1s",
            "--quiet",
        ])
        .args(["--json", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn blast");
    // Into the second step (the ceiling probe).
    let (code, ..) = common::signal_after(child, Duration::from_millis(1500), libc::SIGINT);
    let text = std::fs::read_to_string(&path).expect("the sweep wrote its JSON");
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, Some(130));
    let doc: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(text_of(&doc), "interrupted");
    assert!(!steps(&doc).is_empty());
    assert_eq!(steps(&doc)[0]["kind"], "unloaded");
}

fn text_of(doc: &Value) -> &str {
    text(doc, "sweep.limit")
}

/// A missing URL says how a sweep is spelled.
#[test]
fn a_sweep_without_url_says_how_to_spell_it() {
    common::assert_two_line_error(&["sweep", "--steps", "3"], "blast sweep", "blast sweep URL");
}

/// A bad option is one line and exit 2, before any load.
#[test]
fn bad_options_are_one_line_and_exit_2() {
    let url = "http://127.0.0.1:9/";
    for (args, says) in [
        (vec!["--steps", "0"], "--steps"),
        (vec!["--rates", "10,fast"], "--rates"),
        (vec!["--duration", "5s"], "--duration does not apply"),
        (vec!["--rate", "50"], "--rate does not apply"),
        (vec!["--p99-multiple", "0.5"], "--p99-multiple"),
        (vec!["--max-error-pct", "101"], "--max-error-pct"),
        (vec!["--step-duration", "soon"], "--step-duration"),
        (
            vec!["--max-time", "1s", "--step-duration", "2s"],
            "--max-time",
        ),
    ] {
        let mut all = vec!["sweep", url];
        all.extend(args.iter().copied());
        let run = run_blast_within(&all, SWEEP_LIMIT);
        let err = run.stderr();
        assert_eq!(run.code(), Some(2), "{all:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{all:?}: {err}");
        assert!(
            err.starts_with("blast: ") && err.contains(says),
            "{all:?}: {err}"
        );
    }
}
