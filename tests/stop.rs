//! Stopping on time, with the report: huge schedules, Ctrl-C and SIGTERM at any moment, a
//! shard that panics, outputs that cannot be written, a closed stdout, absurd durations.

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_two_line_error, run_blast, signal_after, Acceptor, Behaviour, TestServer};
use serde_json::Value;

/// A blast process started with `args`, stdout and stderr piped.
fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot spawn blast")
}

fn u(doc: &Value, path: &str) -> u64 {
    doc.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing in {doc}"))
}

#[test]
fn a_huge_rate_stops_on_time_and_counts_what_it_missed() {
    let server = TestServer::start(Behaviour::keep_alive());
    let url = server.url("/");
    let run = run_blast(&[
        "--rate",
        "1e9",
        "--duration",
        "1s",
        "-n",
        "4",
        "-q",
        "--json",
        "-",
        &url,
    ]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    // The backlog of a billion sends is counted, not walked: the run ends at its end.
    assert!(run.wall < Duration::from_secs(5), "took {:?}", run.wall);
    let doc: Value = serde_json::from_str(&run.stdout()).expect("JSON on stdout");
    let (sent, missed) = (u(&doc, "/requests/sent"), u(&doc, "/open_loop/missed"));
    // Uniform arrivals: every send due in the second is either sent or missed, exactly.
    assert_eq!(sent + missed, 1_000_000_000, "{doc}");
    assert_eq!(server.counts().requests, sent, "{doc}");
}

#[test]
fn a_huge_bursty_rate_with_a_budget_stops_on_time() {
    let server = TestServer::start(Behaviour::keep_alive());
    let url = server.url("/");
    let run = run_blast(&[
        "--pattern",
        "burst",
        "--rate",
        "1e9",
        "--burst-size",
        "1000000",
        "--burst-every",
        "100ms",
        "--arrivals",
        "poisson",
        "--duration",
        "1s",
        "--requests",
        "500000000",
        "-q",
        "--json",
        "-",
        &url,
    ]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert!(run.wall < Duration::from_secs(5), "took {:?}", run.wall);
    let doc: Value = serde_json::from_str(&run.stdout()).expect("JSON on stdout");
    let (sent, missed) = (u(&doc, "/requests/sent"), u(&doc, "/open_loop/missed"));
    // The budget caps what is missed as well as what is sent.
    assert!(sent + missed <= 500_000_000, "{doc}");
    assert_eq!(server.counts().requests, sent, "{doc}");
}

/// A listener whose backlog is full: connecting to it hangs (the SYNs are dropped).
fn blackhole() -> (TcpListener, Vec<TcpStream>, String) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().unwrap();
    // SAFETY: listen(2) on a socket this test owns: a backlog of 0 (the kernel keeps one).
    unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), 0) };
    let mut fill = Vec::new();
    for _ in 0..4 {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            fill.push(s);
        }
    }
    (l, fill, format!("http://{addr}/"))
}

#[test]
fn ctrl_c_while_connecting_stops_at_once() {
    let (_l, _fill, url) = blackhole();
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let child = spawn(&[
            "-n",
            "4",
            "-d",
            "60s",
            "--connect-timeout",
            "30s",
            "--timeout",
            "30s",
            "-q",
            "--json",
            "-",
            &url,
        ]);
        let (got, out, err, took) = signal_after(child, Duration::from_millis(700), sig);
        assert_eq!(got, Some(code), "signal {sig}: {err}");
        assert!(took < Duration::from_secs(1), "signal {sig}: took {took:?}");
        let doc: Value = serde_json::from_str(&out).expect("the report, as JSON");
        // Nothing connected, so nothing was sent or answered.
        assert_eq!(u(&doc, "/connections/opened"), 0, "{doc}");
        assert_eq!(u(&doc, "/requests/completed"), 0, "{doc}");
    }
}

#[test]
fn sigterm_reports_like_ctrl_c_and_exits_143() {
    let server = TestServer::start(Behaviour::keep_alive());
    let url = server.url("/");
    let json = common::temp_path("sigterm.json");
    let json_s = json.to_str().unwrap();
    let child = spawn(&["-n", "4", "-d", "30s", "-q", "--json", json_s, &url]);
    let (code, out, err, took) = signal_after(child, Duration::from_millis(800), libc::SIGTERM);
    assert_eq!(code, Some(143), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(out.contains("Requests"), "the summary on stdout: {out}");
    let doc: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON file")).expect("valid JSON");
    let _ = std::fs::remove_file(&json);
    let (sent, completed) = (u(&doc, "/requests/sent"), u(&doc, "/requests/completed"));
    assert!(completed > 0, "{doc}");
    let received = server.counts().requests;
    // What was cut off may or may not have reached the server.
    assert!(
        (completed..=sent).contains(&received),
        "{received} received, {doc}"
    );
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let (_l, _fill, url) = blackhole();
    let child = spawn(&["-n", "2", "-d", "60s", "-q", &url]);
    thread::sleep(Duration::from_millis(500));
    // Two in a row: the second may arrive while the first is still being handled.
    for _ in 0..2 {
        // SAFETY: kill(2) on a child this test owns.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        thread::sleep(Duration::from_millis(1));
    }
    let (code, ..) = signal_after(child, Duration::ZERO, 0);
    assert_eq!(code, Some(143));
}

#[test]
fn absurd_durations_are_bad_input() {
    let acceptor = Acceptor::start(|_, _| {});
    let url = format!("http://{}/", acceptor.addr());
    let huge = "10000000000000000000s";
    let cases: &[&[&str]] = &[
        &["--timeout", huge],
        &["--connect-timeout", huge],
        &["--interval", huge],
        &["--duration", huge],
        &["--rate", "5", "--slack", huge],
        &["--pattern", "burst", "--burst-every", huge],
        &["--pattern", "ramp", "--rate", "5", "--ramp-over", huge],
        &["--pattern", "spike", "--rate", "5", "--spike-len", huge],
        &["--pattern", "spike", "--rate", "5", "--spike-every", huge],
        &[
            "--pattern",
            "chaos",
            "--rate",
            "5",
            "--chaos-min-hold",
            huge,
        ],
        &[
            "--pattern",
            "chaos",
            "--rate",
            "5",
            "--chaos-max-hold",
            huge,
        ],
        &["--stages", "300d:5,300d:0"],
    ];
    for case in cases {
        let args: Vec<&str> = case.iter().copied().chain([url.as_str()]).collect();
        let run = run_blast(&args);
        let err = run.stderr();
        assert_eq!(run.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("at most a year") || err.contains("more than a year"),
            "{err}"
        );
    }
    assert_eq!(acceptor.accepted(), 0, "bad input opens no connection");
}

#[cfg(debug_assertions)]
#[test]
fn a_panicking_shard_ends_the_run() {
    let server = TestServer::start(Behaviour::keep_alive());
    let url = server.url("/");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blast"));
    cmd.args(["-n", "2", "-d", "30s", "-q", &url])
        .env("BLAST_TEST_SHARD_PANIC", "1")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn blast");
    let start = Instant::now();
    let out = child.wait_with_output().expect("wait");
    assert!(start.elapsed() < Duration::from_secs(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // One line, blast's, naming where: Rust's panic text stays off stderr.
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("blast: shard on CPU"), "{err}");
    assert!(
        lines[0].contains("BLAST_TEST_SHARD_PANIC is set (at src/engine/mod.rs:"),
        "{err}"
    );
    assert_eq!(server.counts().requests, 0);
}

#[test]
fn every_output_is_written_and_each_failure_reported() {
    let server = TestServer::start(Behaviour::keep_alive());
    let url = server.url("/");
    let log = common::temp_path("outputs.jsonl");
    let log_s = log.to_str().unwrap();
    let run = run_blast(&[
        "-r",
        "50",
        "-n",
        "2",
        "-q",
        "--json",
        "/dev/full",
        "--timeline",
        "/dev/full",
        "--log",
        log_s,
        &url,
    ]);
    let err = run.stderr();
    assert_eq!(run.code(), Some(1), "{err}");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            "blast: cannot write /dev/full: No space left on device (os error 28)",
            "blast: cannot write /dev/full: No space left on device (os error 28)"
        ],
        "{err}"
    );
    assert!(run.stdout().contains("Requests"), "summary on stdout");
    let line = std::fs::read_to_string(&log).expect("the log was still written");
    let _ = std::fs::remove_file(&log);
    let _: Value = serde_json::from_str(line.trim()).expect("one JSON line");
    assert_eq!(server.counts().requests, 50);
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    for args in [&["scenario", "list"][..], &["--help"][..]] {
        let mut child = spawn(args);
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn user_info_in_the_url_is_sent_as_basic_auth_and_masked_in_results() {
    let server = TestServer::start(Behaviour::keep_alive());
    let url = format!("http://us%40er:p%3Ass@127.0.0.1:{}/", server.port());
    let run = run_blast(&["-r", "3", "-n", "1", "-q", "--json", "-", &url]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert!(!run.stdout().contains("p%3Ass"), "the password is masked");
    assert_eq!(server.counts().requests, 3);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    for req in seen {
        assert_eq!(req.header("authorization"), Some("Basic dXNAZXI6cDpzcw=="));
    }
}

#[test]
fn headers_that_would_break_the_request_are_bad_input() {
    let acceptor = Acceptor::start(|_, _| {});
    let url = format!("http://{}/", acceptor.addr());
    let cases: &[(&[&str], &str)] = &[
        (&["-H", "X-A: a\u{1}b"], "control character"),
        (&["-H", "X-A: a\u{7f}"], "control character"),
        (
            &["--body", "abc", "-H", "Content-Length: 5"],
            "Content-Length: 5 contradicts the 3-byte body",
        ),
        (
            &["-H", "Content-Length: 1"],
            "Content-Length: 1 contradicts the 0-byte body",
        ),
        (
            &["--body", "abc", "-H", "Transfer-Encoding: chunked"],
            "Transfer-Encoding",
        ),
        (
            &["--api", "ollama-generate", "-H", "content-length: 10"],
            "Content-Length",
        ),
    ];
    for (case, want) in cases {
        let args: Vec<&str> = case.iter().copied().chain([url.as_str()]).collect();
        let run = run_blast(&args);
        let err = run.stderr();
        assert_eq!(run.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(acceptor.accepted(), 0, "bad input opens no connection");
}

#[test]
fn a_content_length_that_agrees_with_the_body_is_sent_once() {
    let server = TestServer::start(Behaviour::keep_alive());
    let url = server.url("/");
    let run = run_blast(&[
        "-r",
        "2",
        "-n",
        "1",
        "-q",
        "--body",
        "abc",
        "-H",
        "Content-Length: 3",
        "-H",
        "X-T: a\tb",
        &url,
    ]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert_eq!(server.counts().requests, 2);
    let seen = server.seen();
    assert_eq!(seen[0].header("x-t"), Some("a\tb"));
    assert_eq!(seen[0].header("content-length"), Some("3"));
}

#[test]
fn command_line_errors_take_two_lines() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["--conns", "x", "http://127.0.0.1:1/"],
            "--conns",
            "--conns N: Keep-alive connections",
        ),
        (
            &["--api", "llama", "http://127.0.0.1:1/"],
            "--api",
            "[possible values",
        ),
        (&["--bogus", "http://127.0.0.1:1/"], "--bogus", ""),
        (&["compare", "a.json"], "<FILES>", ""),
        (
            &["scenario", "quick", "http://127.0.0.1:1/", "--conns", "x"],
            "--conns",
            "",
        ),
    ];
    for (args, first, hint) in cases {
        assert_two_line_error(args, first, hint);
    }
}

#[test]
fn ctrl_c_during_a_huge_rate_stops_at_once() {
    let server = TestServer::start(Behaviour::keep_alive());
    let url = server.url("/");
    let child = spawn(&[
        "--rate",
        "1e9",
        "--duration",
        "60s",
        "-n",
        "4",
        "-q",
        "--json",
        "-",
        &url,
    ]);
    let (code, out, err, took) = signal_after(child, Duration::from_millis(1500), libc::SIGINT);
    assert_eq!(code, Some(130), "{err}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let doc: Value = serde_json::from_str(&out).expect("the report, as JSON");
    let sent = u(&doc, "/requests/sent");
    let received = server.counts().requests;
    assert!(
        (u(&doc, "/requests/completed")..=sent).contains(&received),
        "{received} received, {doc}"
    );
}
