//! End-to-end tests of the load engine: blast against a loopback server that counts what it
//! really receives. Every run is bounded by `--requests` or a short `--duration`, and by the
//! harness's hard timeout.

mod common;

use common::doc::*;

use std::time::Duration;

use serde_json::Value;

use common::{blast, blast_json, closed_port, run_blast_json, Behaviour, TempFile, TestServer};

// ---------------------------------------------------------------------------------------
// Reading the result document
// ---------------------------------------------------------------------------------------

/// Exactly `k` requests were sent, completed and 2xx; none failed or was cut off.
fn assert_exactly_ok(doc: &Value, k: u64) {
    for key in ["sent", "completed", "ok"] {
        assert_eq!(num(doc, &format!("requests.{key}")), k, "requests.{key}");
    }
    assert_eq!(num(doc, "requests.cut_off"), 0, "requests.cut_off");
    assert_no_errors(doc);
}

/// blast exited 1 because nothing succeeded, and said so.
fn assert_no_success_exit(out: &std::process::Output) {
    assert_exit(out, 1);
    assert!(
        stderr_of(out).contains("no successful responses"),
        "stderr:\n{}",
        stderr_of(out)
    );
}

// ---------------------------------------------------------------------------------------
// Exact request counts and connections
// ---------------------------------------------------------------------------------------

/// `--requests k` against a keep-alive server: exactly k requests reach the server, every
/// one is accounted for, and exactly `conns` connections are opened.
fn check_exact_requests(cores: u32, conns: u32, k: u64) {
    let server = TestServer::start(Behaviour::keep_alive());
    let (cores, conns_arg, k_arg) = (cores.to_string(), conns.to_string(), k.to_string());
    let (out, doc) = blast_json(&[
        &server.url("/"),
        "--cores",
        &cores,
        "--conns",
        &conns_arg,
        "--requests",
        &k_arg,
    ]);
    assert_exit(&out, 0);
    assert_exactly_ok(&doc, k);
    assert_eq!(num(&doc, "status.200"), k);
    let seen = server.counts();
    assert_eq!(seen.requests, k, "requests the server received");
    let opened = u64::from(conns).min(k);
    assert_eq!(seen.accepted, opened, "connections the server accepted");
    assert_eq!(num(&doc, "connections.opened"), opened);
    assert_eq!(num(&doc, "connections.reconnects"), 0);
}

#[test]
fn requests_exact_on_two_cores_with_uneven_split() {
    check_exact_requests(2, 7, 1001);
}

#[test]
fn requests_exact_on_one_core() {
    check_exact_requests(1, 3, 101);
}

#[test]
fn keep_alive_opens_exactly_conns_connections() {
    check_exact_requests(2, 6, 300);
}

/// With fewer connections than CPUs, blast uses fewer cores (every shard needs a
/// connection to do its share); asking for more cores than connections is an error.
#[test]
fn requests_exact_with_fewer_conns_than_cores() {
    let server = TestServer::start(Behaviour::keep_alive());
    let (out, doc) = blast_json(&[&server.url("/"), "--conns", "1", "--requests", "10"]);
    assert_exit(&out, 0);
    assert_exactly_ok(&doc, 10);
    assert_eq!(server.counts().requests, 10, "requests the server received");
    let out = blast(&[
        &server.url("/"),
        "--cores",
        "2",
        "--conns",
        "1",
        "--requests",
        "10",
    ]);
    if common::allowed_cpu_count() >= 2 {
        assert_exit(&out, 2);
    }
}

// ---------------------------------------------------------------------------------------
// Response framing and connection reuse
// ---------------------------------------------------------------------------------------

/// Run `--requests k` against a server with `behaviour`; assert that every request reached
/// the server exactly once and completed with no error. Returns the document and what the
/// server counted.
fn exact_run_against(behaviour: Behaviour, conns: u32, k: u64) -> (Value, common::Counts) {
    let server = TestServer::start(behaviour);
    let (conns, k_arg) = (conns.to_string(), k.to_string());
    let (out, doc) = blast_json(&[&server.url("/x"), "--conns", &conns, "--requests", &k_arg]);
    assert_exit(&out, 0);
    assert_exactly_ok(&doc, k);
    let seen = server.counts();
    assert_eq!(seen.requests, k, "requests the server received");
    (doc, seen)
}

#[test]
fn reconnects_after_connection_close() {
    let conns = 4;
    let (doc, seen) = exact_run_against(Behaviour::keep_alive().close_every(5), conns, 203);
    assert!(
        num(&doc, "connections.reconnects") > 0,
        "no reconnects:\n{doc:#}"
    );
    assert!(
        seen.accepted > u64::from(conns),
        "server accepted {}",
        seen.accepted
    );
    assert_eq!(num(&doc, "connections.opened"), seen.accepted);
}

#[test]
fn chunked_bodies_with_extensions_and_trailers() {
    let (doc, _) = exact_run_against(Behaviour::keep_alive().chunked(), 3, 150);
    assert!(num(&doc, "transfer.bytes_read") > 0);
    assert_eq!(
        num(&doc, "connections.opened"),
        3,
        "chunked responses keep the connection"
    );
}

#[test]
fn close_delimited_bodies() {
    let (doc, seen) = exact_run_against(Behaviour::keep_alive().close_delimited(), 3, 60);
    assert!(num(&doc, "transfer.bytes_read") > 0);
    assert_eq!(
        seen.accepted, 60,
        "one connection per close-delimited response"
    );
}

/// A keep-alive connection the server closes after one response, without saying so: a
/// request written on it before the close was seen fails as closed before its response,
/// and is not sent again (one written after the close was seen goes on a new connection).
#[test]
fn stale_keep_alive_connections_fail_the_request_written_on_them() {
    let (doc, seen) = accounted_run(Behaviour::keep_alive().stale(), &["--conns", "3"], 60);
    assert!(num(&doc, "connections.reconnects") > 0);
    assert_eq!(
        num(&doc, "requests.failed"),
        num(&doc, "errors.closed_before_response"),
        "{doc:#}"
    );
    assert_eq!(seen.requests, 60, "requests the server received");
}

/// An open loop at a low rate against a server that closes each keep-alive connection
/// after one response (an idle timeout shorter than the gap between sends): the close is
/// seen before the next send, which goes on a new connection; nothing fails.
#[test]
fn a_connection_closed_while_idle_is_replaced_not_failed() {
    let server = TestServer::start(Behaviour::keep_alive().stale());
    let (out, doc) = blast_json(&[
        &server.url("/"),
        "--conns",
        "2",
        "--rate",
        "20",
        "--duration",
        "1s",
    ]);
    assert_exit(&out, 0);
    assert_balanced(&doc);
    assert_eq!(num(&doc, "requests.failed"), 0, "{:#}", at(&doc, "errors"));
    assert_eq!(num(&doc, "requests.completed"), 20);
    assert_eq!(server.counts().requests, 20, "requests the server received");
}

/// The same, with the socket dropped: what blast wrote after the close may be lost in the
/// reset (the server never reads it), but it is never sent twice.
#[test]
fn stale_keep_alive_connections_dropped_abruptly_are_not_resent() {
    let server = TestServer::start(Behaviour::keep_alive().stale_abrupt());
    let (_, doc) = blast_json(&[&server.url("/"), "--conns", "3", "--requests", "60"]);
    let seen = server.counts();
    assert_balanced(&doc);
    assert_eq!(num(&doc, "requests.sent"), 60);
    assert!(seen.requests <= 60, "server received {}", seen.requests);
    assert_eq!(num(&doc, "requests.completed"), seen.answered);
    assert_eq!(
        num(&doc, "requests.failed"),
        num(&doc, "errors.closed_before_response")
    );
}

#[test]
fn large_bodies_in_every_framing() {
    const BODY: u64 = 100_000;
    for behaviour in [
        Behaviour::keep_alive(),
        Behaviour::keep_alive().chunked(),
        Behaviour::keep_alive().close_delimited(),
    ] {
        let framing = behaviour.framing;
        let (doc, _) = exact_run_against(behaviour.body_len(BODY as usize), 2, 20);
        let read = num(&doc, "transfer.bytes_read");
        assert!(read >= 20 * BODY, "{framing:?}: read {read} bytes");
    }
}

#[test]
fn head_responses_have_no_body() {
    let server = TestServer::start(Behaviour::keep_alive());
    let (out, doc) = blast_json(&[
        &server.url("/"),
        "--method",
        "HEAD",
        "--conns",
        "2",
        "--requests",
        "40",
        "--timeout",
        "1s",
    ]);
    assert_exit(&out, 0);
    assert_exactly_ok(&doc, 40);
    assert_eq!(num(&doc, "connections.opened"), 2);
    assert_eq!(server.counts().requests, 40);
}

// ---------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------

#[test]
fn timeouts_fail_each_request() {
    let server = TestServer::start(Behaviour::keep_alive().delay(Duration::from_secs(2)));
    let (run, doc) = run_blast_json(&[
        &server.url("/"),
        "--timeout",
        "200ms",
        "--requests",
        "4",
        "--conns",
        "2",
    ]);
    assert_no_success_exit(&run.output);
    assert_eq!(num(&doc, "errors.timeout"), 4);
    assert_eq!(num(&doc, "requests.failed"), 4);
    assert_eq!(num(&doc, "requests.completed"), 0);
    assert_balanced(&doc);
    // Two rounds of 200 ms per connection; waiting for answers would take 2 s per round.
    assert!(
        float(&doc, "elapsed_s") < 2.0,
        "elapsed_s {}",
        float(&doc, "elapsed_s")
    );
    assert!(run.wall < Duration::from_secs(10), "took {:?}", run.wall);
    assert_eq!(server.counts().requests, 4);
}

#[test]
fn connect_errors_against_a_closed_port_do_not_spin() {
    let url = format!("http://127.0.0.1:{}/", closed_port());
    let (run, doc) = run_blast_json(&[&url, "--duration", "1s"]);
    assert_no_success_exit(&run.output);
    assert!(num(&doc, "errors.connect") > 0, "{doc:#}");
    assert_eq!(num(&doc, "requests.completed"), 0);
    assert_balanced(&doc);
    assert!(
        run.wall >= Duration::from_millis(900),
        "ended early: {:?}",
        run.wall
    );
    assert!(
        run.wall < Duration::from_secs(6),
        "not on time: {:?}",
        run.wall
    );
    assert!(
        run.cpu.as_secs_f64() < 0.5 * run.wall.as_secs_f64(),
        "burnt {:?} of CPU in {:?}",
        run.cpu,
        run.wall
    );
}

#[test]
fn non_2xx_responses_complete_but_are_not_ok() {
    let server = TestServer::start(Behaviour::keep_alive().status(503));
    let (out, doc) = blast_json(&[&server.url("/"), "--conns", "2", "--requests", "20"]);
    assert_no_success_exit(&out);
    assert_eq!(num(&doc, "requests.completed"), 20);
    assert_eq!(num(&doc, "requests.ok"), 0);
    assert_eq!(num(&doc, "status.503"), 20);
    assert_no_errors(&doc);
    assert_eq!(server.counts().requests, 20);
}

#[test]
fn garbage_responses_are_parse_errors() {
    let server = TestServer::start(Behaviour::keep_alive().garbage());
    let (out, doc) = blast_json(&[&server.url("/"), "--conns", "2", "--requests", "6"]);
    assert_no_success_exit(&out);
    assert!(num(&doc, "errors.parse") > 0, "{doc:#}");
    assert_eq!(num(&doc, "requests.failed"), 6);
    assert_eq!(num(&doc, "requests.completed"), 0);
    assert_balanced(&doc);
}

// ---------------------------------------------------------------------------------------
// Duration runs
// ---------------------------------------------------------------------------------------

#[test]
fn duration_run_against_keep_alive_server() {
    let server = TestServer::start(Behaviour::keep_alive());
    let (run, doc) = run_blast_json(&[&server.url("/"), "--duration", "1s", "--conns", "4"]);
    assert_exit(&run.output, 0);
    let elapsed = float(&doc, "elapsed_s");
    assert!((0.9..=5.0).contains(&elapsed), "elapsed_s {elapsed}");
    assert!(run.wall < Duration::from_secs(10), "took {:?}", run.wall);
    assert!(!at(&doc, "timeline").as_array().unwrap().is_empty());
    assert!(num(&doc, "requests.ok") > 0);
    assert_balanced(&doc);
    assert_eq!(num(&doc, "requests.completed"), server.counts().requests);
}

// ---------------------------------------------------------------------------------------
// The request on the wire
// ---------------------------------------------------------------------------------------

/// Send two requests with `args` added and return the first one the server saw.
fn first_request_with(args: &[&str]) -> (common::SeenRequest, u16) {
    let server = TestServer::start(Behaviour::keep_alive());
    let url = server.url("/shape?q=1");
    let mut all = vec![
        url.as_str(),
        "--cores",
        "1",
        "--conns",
        "1",
        "--requests",
        "2",
    ];
    all.extend_from_slice(args);
    let out = blast(&all);
    assert_exit(&out, 0);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "requests seen: {seen:?}");
    (seen[0].clone(), server.port())
}

fn assert_hello_put(req: &common::SeenRequest, port: u16) {
    assert_eq!(req.method, "PUT");
    assert_eq!(req.path, "/shape?q=1");
    assert_eq!(req.header("X-Test"), Some("yes"), "{req:?}");
    assert_eq!(req.header("Content-Length"), Some("5"), "{req:?}");
    assert_eq!(req.body, b"hello");
    let host = format!("127.0.0.1:{port}");
    assert_eq!(req.header("Host"), Some(host.as_str()), "{req:?}");
}

#[test]
fn request_carries_method_headers_and_body() {
    let (req, port) = first_request_with(&[
        "--method",
        "PUT",
        "--header",
        "X-Test: yes",
        "--body",
        "hello",
    ]);
    assert_hello_put(&req, port);
}

#[test]
fn request_body_from_file() {
    let body = TempFile::with_contents("body.txt", b"hello");
    let (req, port) = first_request_with(&[
        "--method",
        "PUT",
        "--header",
        "X-Test: yes",
        "--body-file",
        body.path_str(),
    ]);
    assert_hello_put(&req, port);
}

#[test]
fn body_without_method_is_a_post() {
    let (req, _) = first_request_with(&["--body", "hello"]);
    assert_eq!(req.method, "POST");
    assert_eq!(req.body, b"hello");
    assert_eq!(req.header("Content-Length"), Some("5"));
}

#[test]
fn plain_request_is_a_get_without_body() {
    let (req, port) = first_request_with(&[]);
    assert_eq!(req.method, "GET");
    assert!(req.body.is_empty());
    assert_eq!(req.header("Content-Length"), None);
    assert_eq!(
        req.header("Host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
}

// ---------------------------------------------------------------------------------------
// The result document
// ---------------------------------------------------------------------------------------

#[test]
fn json_document_has_every_key() {
    let server = TestServer::start(Behaviour::keep_alive());
    let (out, doc) = blast_json(&[
        &server.url("/"),
        "--conns",
        "2",
        "--requests",
        "50",
        "--interval",
        "10ms",
    ]);
    assert_exit(&out, 0);
    let paths = [
        "elapsed_s",
        "rps",
        "requests.sent",
        "requests.completed",
        "requests.ok",
        "requests.failed",
        "status",
        "latency_us.min",
        "latency_us.mean",
        "latency_us.p50",
        "latency_us.p90",
        "latency_us.p99",
        "latency_us.p999",
        "latency_us.max",
        "timeline",
        "histograms.latency_us",
        "config",
    ];
    for path in paths {
        at(&doc, path);
    }
    for kind in [
        "connect",
        "timeout",
        "read",
        "write",
        "parse",
        "closed",
        "closed_before_response",
    ] {
        at(&doc, &format!("errors.{kind}"));
    }
    assert!(at(&doc, "config").is_object());

    let rows = at(&doc, "timeline")
        .as_array()
        .expect("timeline is an array");
    assert!(!rows.is_empty());
    for row in rows {
        for key in [
            "t_s",
            "completed",
            "ok",
            "errors",
            "in_flight",
            "rps",
            "p50_us",
            "p99_us",
        ] {
            at(row, key);
        }
        // Only the shards of a `--shard` run keep each interval's histogram.
        assert!(row.get("latency_histogram").is_none(), "{row}");
    }
    let completed: u64 = rows.iter().map(|r| num(r, "completed")).sum();
    assert_eq!(
        completed,
        num(&doc, "requests.completed"),
        "timeline rows add up"
    );

    let encoded = at(&doc, "histograms.latency_us")
        .as_str()
        .expect("base64 string");
    let hist = blast::report::decode_histogram(encoded).expect("histogram decodes");
    assert_eq!(hist.len(), num(&doc, "requests.completed"));
}

#[test]
fn json_to_stdout_keeps_the_summary_off_stdout() {
    let server = TestServer::start(Behaviour::keep_alive());
    let out = blast(&[
        &server.url("/"),
        "--conns",
        "2",
        "--requests",
        "10",
        "--json",
        "-",
    ]);
    assert_exit(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(num(&doc, "requests.completed"), 10);
    assert!(
        stderr_of(&out).contains("Requests"),
        "summary goes to stderr"
    );
}

// ---------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------

/// What is wrong with how blast rejected `args`, if anything. `own_message`: blast's own
/// validation (one `blast: ` line) rather than clap's usage error.
fn rejection_problem(args: &[&str], own_message: bool, must_mention: &str) -> Option<String> {
    let out = blast(args);
    let err = stderr_of(&out);
    let problem = if out.status.code() != Some(2) {
        format!("exit status {:?}", out.status)
    } else if err.contains("panicked") {
        "panicked".to_string()
    } else if own_message && (err.lines().count() != 1 || !err.starts_with("blast: ")) {
        "not exactly one `blast: ` line on stderr".to_string()
    } else if !err.contains(must_mention) {
        format!("message does not mention {must_mention:?}")
    } else {
        return None;
    };
    Some(format!("{args:?}: {problem}; stderr:\n{err}"))
}

#[test]
fn bad_input_is_rejected_with_one_line() {
    let url = format!("http://127.0.0.1:{}/", closed_port());
    let url = url.as_str();
    let own_checks: &[(&[&str], &str)] = &[
        (&["not a url", "--requests", "1"], ""),
        (&["ftp://127.0.0.1/", "--requests", "1"], "ftp"),
        (
            &["https://127.0.0.1/", "-k", "--cacert", "/x.pem", "-r", "1"],
            "--insecure",
        ),
        (
            &["http://nonexistent.invalid/", "--requests", "1"],
            "nonexistent.invalid",
        ),
        (&[url, "--conns", "0", "--requests", "1"], "--conns"),
        (&[url, "--cores", "0", "--requests", "1"], "--cores"),
        (&[url, "--cores", "999", "--requests", "1"], "--cores"),
        (&[url, "--duration", "tenseconds"], "--duration"),
        (&[url, "--timeout", "0s", "--requests", "1"], "--timeout"),
        (
            &[url, "--connect-timeout", "0s", "--requests", "1"],
            "--connect-timeout",
        ),
        (
            &[url, "--body-file", "/nonexistent", "--requests", "1"],
            "/nonexistent",
        ),
        (&[url, "--header", "NoColon", "--requests", "1"], "NoColon"),
        (&[url, "--requests", "0"], "--requests"),
        (&[url, "--conns", "10000000", "--requests", "1"], "--conns"),
        (
            &[url, "--json", "/nonexistent/r.json", "--requests", "1"],
            "/nonexistent",
        ),
        (&[url, "--timeline", "/tmp", "--requests", "1"], "directory"),
    ];
    let clap_level: &[&[&str]] = &[
        &[],
        &[url, "--conns", "many"],
        &[url, "--requests", "-5"],
        &[
            url,
            "--body",
            "a",
            "--body-file",
            "/dev/null",
            "--requests",
            "1",
        ],
        &[url, "--no-such-flag"],
    ];
    let problems: Vec<String> = own_checks
        .iter()
        .filter_map(|(args, mention)| rejection_problem(args, true, mention))
        .chain(
            clap_level
                .iter()
                .filter_map(|args| rejection_problem(args, false, "")),
        )
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

// ---------------------------------------------------------------------------------------
// Pipelining
// ---------------------------------------------------------------------------------------

/// Up to 8 requests in flight per connection, written back to back: every one answered,
/// counted once, on exactly the connections asked for.
#[test]
fn pipelined_requests_are_exact() {
    let server = TestServer::start(Behaviour::keep_alive());
    let url = server.url("/");
    let (out, doc) = blast_json(&[
        &url,
        "--conns",
        "3",
        "--pipeline",
        "8",
        "--requests",
        "1001",
    ]);
    assert_exit(&out, 0);
    assert_exactly_ok(&doc, 1001);
    let seen = server.counts();
    assert_eq!(seen.requests, 1001, "requests the server received");
    assert_eq!(seen.accepted, num(&doc, "connections.opened"));
    assert_eq!(num(&doc, "connections.opened"), 3);
}

/// A server that says `Connection: close` in the middle of a pipeline does not answer the
/// requests behind it, but received them: they fail as closed before their response, and
/// are not sent again.
#[test]
fn pipelined_requests_behind_a_close_fail_once() {
    let (doc, _) = accounted_run(
        Behaviour::keep_alive().close_every(5),
        &["--conns", "2", "--pipeline", "4"],
        203,
    );
    assert!(num(&doc, "connections.reconnects") > 0);
    assert!(num(&doc, "requests.completed") > 0);
}

/// Heads that arrive cut in two (inside the status line, inside a field name) are put
/// together: a piece that cannot be parsed yet is kept, and what follows is read after it,
/// also behind pipelined requests and for chunked bodies.
#[test]
fn heads_cut_across_reads_are_put_together() {
    for (behaviour, pipeline) in [
        (Behaviour::keep_alive().cut_heads(), "1"),
        (Behaviour::keep_alive().cut_heads(), "4"),
        (Behaviour::keep_alive().chunked().cut_heads(), "2"),
    ] {
        let server = TestServer::start(behaviour);
        let url = server.url("/");
        let (out, doc) = blast_json(&[
            &url,
            "--conns",
            "2",
            "--pipeline",
            pipeline,
            "--requests",
            "61",
        ]);
        assert_exit(&out, 0);
        assert_exactly_ok(&doc, 61);
        assert_eq!(server.counts().requests, 61, "pipeline {pipeline}");
    }
}

// ---------------------------------------------------------------------------------------
// blast compare
// ---------------------------------------------------------------------------------------

/// A minimal result document with the given rate and p99.
fn result_file(rps: f64, p99: u64) -> TempFile {
    let doc = serde_json::json!({
        "rps": rps,
        "requests": {"sent": 1000, "completed": 1000, "ok": 1000, "failed": 0},
        "latency_us": {"p50": 100, "p99": p99},
    });
    TempFile::with_contents("compare.json", doc.to_string().as_bytes())
}

#[test]
fn compare_exits_1_only_when_a_threshold_is_crossed() {
    let (base, worse) = (result_file(1000.0, 500), result_file(900.0, 600));
    let (a, b) = (base.path_str(), worse.path_str());
    let out = blast(&["compare", a, b]);
    assert_exit(&out, 0);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("req/s") && table.contains("(0.90x)"),
        "{table}"
    );

    assert_exit(&blast(&["compare", a, b, "--fail-if", "p99>+10%"]), 1);
    assert_exit(&blast(&["compare", a, b, "--fail-if", "rps<-5%"]), 1);
    assert_exit(
        &blast(&[
            "compare",
            a,
            b,
            "--fail-if",
            "p99>+25%",
            "--fail-if",
            "rps<-20%",
        ]),
        0,
    );
    assert_exit(&blast(&["compare", a, b, "--fail-if", "speed>1%"]), 2);
    assert_exit(&blast(&["compare", a, "/nonexistent.json"]), 2);
}

// ---------------------------------------------------------------------------------------
// Accounting: the server's count equals blast's
// ---------------------------------------------------------------------------------------

/// Run `--requests k` with `args` against a server with `behaviour` and check the
/// accounting: the server received exactly `requests.sent` requests, each ended as
/// completed, failed or cut off, every response the server wrote was completed, and every
/// failure was a close before the response. Returns the document and the server's counts.
fn accounted_run(behaviour: Behaviour, args: &[&str], k: u64) -> (Value, common::Counts) {
    let server = TestServer::start(behaviour);
    let (url, k_arg) = (server.url("/"), k.to_string());
    let mut all = vec![url.as_str(), "--requests", &k_arg, "--timeout", "5s"];
    all.extend_from_slice(args);
    let (_, doc) = blast_json(&all);
    let seen = server.counts();
    assert_balanced(&doc);
    assert_eq!(num(&doc, "requests.sent"), k, "requests.sent:\n{doc:#}");
    assert_eq!(seen.requests, k, "requests the server received:\n{doc:#}");
    assert_eq!(
        num(&doc, "requests.completed"),
        seen.answered,
        "responses the server wrote"
    );
    assert_eq!(
        num(&doc, "requests.failed"),
        num(&doc, "errors.closed_before_response"),
        "{doc:#}"
    );
    (doc, seen)
}

/// A server that reads every second request of a connection and closes without an
/// answer (half-close then FIN, drop, reset): the POST is never sent twice.
#[test]
fn a_close_after_reading_a_request_fails_it_once() {
    for behaviour in [
        Behaviour::keep_alive().unanswered_every(2),
        Behaviour::keep_alive().unanswered_every(2).abrupt(),
        Behaviour::keep_alive().unanswered_every(2).rst(),
    ] {
        let what = format!("{behaviour:?}");
        let (doc, _) = accounted_run(behaviour, &["--conns", "4", "--body", "x"], 200);
        // Every connection alternates, starting with an answer: half, give or take one
        // per connection.
        let completed = num(&doc, "requests.completed");
        assert!((100..=104).contains(&completed), "{what}: {completed}");
        assert_eq!(
            num(&doc, "errors.closed_before_response"),
            200 - completed,
            "{what}"
        );
    }
}

/// Pipelined x16 against a server that closes after 5 responses without saying so: what
/// was written behind them fails once, and only what was not written yet goes out again.
#[test]
fn pipelined_requests_behind_a_silent_close_fail_once() {
    let (doc, _) = accounted_run(
        Behaviour::keep_alive().silent_close_after(5),
        &["--conns", "2", "--pipeline", "16", "--body", "x"],
        1000,
    );
    assert!(num(&doc, "errors.closed_before_response") > 0, "{doc:#}");
}

/// Bytes beyond the responses to the requests in flight (a server that answers twice) are
/// a protocol error on the connection, never the response to the next request.
#[test]
fn responses_with_no_request_in_flight_are_parse_errors() {
    let server = TestServer::start(Behaviour::keep_alive().answer_twice());
    let (_, doc) = blast_json(&[&server.url("/"), "--conns", "2", "--requests", "100"]);
    let seen = server.counts();
    assert_balanced(&doc);
    assert_eq!(seen.requests, 100, "requests the server received");
    assert_eq!(num(&doc, "requests.sent"), 100);
    assert!(num(&doc, "errors.parse") > 0, "{doc:#}");
    assert!(
        num(&doc, "requests.completed") <= seen.answered,
        "completed more than the server answered:\n{doc:#}"
    );
    assert_eq!(
        num(&doc, "requests.completed") + num(&doc, "errors.parse"),
        100,
        "{doc:#}"
    );
}

/// `--slack` in a closed loop (fewer wake-ups, which the server pays for too): the counts
/// stay exact and the run stays a closed loop.
#[test]
fn a_closed_loop_with_slack_counts_exactly() {
    let server = TestServer::start(Behaviour::keep_alive());
    let (_, doc) = blast_json(&[
        &server.url("/"),
        "--conns",
        "4",
        "--requests",
        "2000",
        "--slack",
        "500us",
    ]);
    let seen = server.counts();
    assert_balanced(&doc);
    assert_eq!(seen.requests, 2000, "requests the server received");
    assert_eq!(num(&doc, "requests.completed"), 2000, "{doc:#}");
    assert_eq!(doc["config"]["slack"], 0.0005, "{doc:#}");
    assert!(doc["open_loop"].is_null(), "{doc:#}");
}

/// A second answer that comes while the connection is idle (the same goes for a server that
/// speaks first) answers nothing of ours: the connection is closed and replaced, counted,
/// and warned about, and the next request goes on the new one.
#[test]
fn bytes_that_come_while_idle_close_the_connection() {
    let late = Behaviour::keep_alive().answer_again_after(Duration::from_millis(10));
    let server = TestServer::start(late);
    let (_, doc) = blast_json(&[
        &server.url("/"),
        "--conns",
        "1",
        "--rate",
        "20",
        "--requests",
        "6",
    ]);
    let seen = server.counts();
    assert_balanced(&doc);
    assert_eq!(seen.requests, 6, "requests the server received");
    assert_eq!(num(&doc, "requests.sent"), 6);
    assert_eq!(num(&doc, "requests.completed"), 6, "{doc:#}");
    assert!(num(&doc, "connections.unsolicited") >= 4, "{doc:#}");
    assert_eq!(num(&doc, "connections.opened"), seen.accepted, "{doc:#}");
    let codes: Vec<&str> = doc["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["code"].as_str())
        .collect();
    assert!(codes.contains(&"unsolicited_bytes"), "{doc:#}");
}

/// More header fields than the parser's stack array, and obs-fold lines (unfolded, so that
/// a folded `Connection: close` is seen), are accepted.
#[test]
fn many_and_folded_header_fields_are_accepted() {
    let mut many: String = (0..100).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    many.push_str("X-Folded: a\r\n b\r\n");
    let (doc, seen) = exact_run_against(Behaviour::keep_alive().extra_headers(&many), 2, 50);
    assert_eq!(seen.accepted, 2);
    assert_eq!(num(&doc, "connections.opened"), 2);
    let folded_close =
        Behaviour::keep_alive().extra_headers("Connection: keep-alive,\r\n close\r\n");
    let (doc, seen) = exact_run_against(folded_close, 1, 5);
    assert_eq!(seen.accepted, 5, "the folded close was seen");
    assert_eq!(num(&doc, "connections.opened"), 5);
}

/// Found by fuzzing: an invalid byte after a CR gave a parse error when the head arrived
/// whole, and a timeout when it arrived a byte at a time.
#[test]
fn an_invalid_head_is_a_parse_error_however_it_arrives() {
    let bad = b"HTTP/1.1 200 OK\r\nContent-Length: 10\ro";
    for behaviour in [
        Behaviour::keep_alive().raw(bad),
        Behaviour::keep_alive().raw(bad).trickle(),
    ] {
        let server = TestServer::start(behaviour);
        let (_, doc) = blast_json(&[
            &server.url("/"),
            "--conns",
            "1",
            "--requests",
            "3",
            "--timeout",
            "3s",
        ]);
        assert_eq!(num(&doc, "errors.parse"), 3, "{doc:#}");
        assert_balanced(&doc);
        assert_eq!(server.counts().requests, 3);
    }
}

/// Pipelined large bodies are written from the one pre-rendered copy, not gathered per
/// request: memory stays bounded by the connections, not by body size times depth.
#[test]
fn pipelined_large_bodies_are_not_copied_per_request() {
    const BODY: usize = 4 << 20;
    let body = TempFile::with_contents("big-body", &vec![b'b'; BODY]);
    let server = TestServer::start(Behaviour::keep_alive());
    let (out, doc) = blast_json(&[
        &server.url("/"),
        "--body-file",
        body.path_str(),
        "--conns",
        "2",
        "--pipeline",
        "16",
        "--requests",
        "48",
    ]);
    assert_exit(&out, 0);
    assert_exactly_ok(&doc, 48);
    assert_eq!(server.counts().requests, 48, "requests the server received");
    // Gathering would hold up to 16 bodies per connection: 128 MiB.
    let rss = num(&doc, "peak_rss_bytes");
    assert!(rss < 48 << 20, "peak RSS {} MiB", rss >> 20);
}

/// A streamed answer that stops after its status and two token events: the request times
/// out, and its status and the tokens that came are still reported.
#[test]
fn a_timeout_after_the_head_keeps_its_status_and_tokens() {
    let partial = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        3c\r\n{\"response\":\"a\",\"done\":false}\n{\"response\":\"b\",\"done\":false}\n\r\n";
    let server = TestServer::start(Behaviour::keep_alive().raw(partial));
    let (_, doc) = blast_json(&[
        &server.url("/api/generate"),
        "--api",
        "ollama-generate",
        "--conns",
        "1",
        "--requests",
        "2",
        "--timeout",
        "300ms",
    ]);
    assert_eq!(num(&doc, "errors.timeout"), 2, "{doc:#}");
    assert_eq!(num(&doc, "status.200"), 2, "{doc:#}");
    assert_eq!(num(&doc, "tokens.output"), 4, "{doc:#}");
    assert_eq!(num(&doc, "requests.completed"), 0);
    assert_balanced(&doc);
    assert_eq!(server.counts().requests, 2);
}

/// A server that answers 413 as soon as it has the head, then resets the connection while
/// blast is still writing the body: the response is counted, with its status, and not
/// lost as a write error.
#[test]
fn an_early_final_response_is_counted() {
    let post = |server: &TestServer| common::post_huge_body(&server.url("/"), &[]);
    let server = TestServer::start(Behaviour::keep_alive().status(413).early_reply());
    let doc = post(&server);
    let seen = server.counts();
    assert_balanced(&doc);
    assert_eq!(seen.requests, 3, "requests the server received");
    assert_eq!(num(&doc, "requests.completed"), 3, "{doc:#}");
    assert_eq!(num(&doc, "status.413"), 3, "{doc:#}");
    assert_eq!(num(&doc, "requests.failed"), 0, "{doc:#}");

    // Only part of the early response came before the reset: the request fails, as
    // closed before its response was complete, and its status still counts.
    let cut =
        b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 100\r\n\r\nab";
    let server = TestServer::start(Behaviour::keep_alive().raw(cut).early_reply());
    let doc = post(&server);
    assert_balanced(&doc);
    assert_eq!(server.counts().requests, 3, "requests the server received");
    assert_eq!(num(&doc, "errors.closed"), 3, "{doc:#}");
    assert_eq!(num(&doc, "status.413"), 3, "{doc:#}");
}
