//! End-to-end tests of the open loop: blast sending on a schedule (`--rate`, `--pattern`,
//! `--stages`, `--arrivals`) against a loopback server that counts what it receives.
//!
//! The machine is small, shared and noisy and the build is a debug one, so nothing here
//! asserts speed or tight timing. What is asserted exactly is what the schedule makes
//! exact: with uniform arrivals the number of requests sent in a window is the area under
//! the rate curve. Rates stay modest, runs last at most a couple of seconds, and every
//! run is bounded by the harness's hard timeout.
//!
//! Per-row counts of the timeline depend on blast sending on time. Its own measure of that,
//! the worst send lag, sets how far a row may be off; a run in which the machine froze
//! blast for more than 100 ms is run once more, and if that happens again only the exact
//! totals and the rate targets are judged, not the rows (see `run_on_schedule`).

mod common;

use common::doc::*;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{blast, blast_json, run_blast_json, temp_path, Behaviour, TempFile, TestServer};

// ---------------------------------------------------------------------------------------
// Reading the result document
// ---------------------------------------------------------------------------------------

/// One row of the result's `timeline`.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    t_s: f64,
    dt_s: f64,
    target_rps: f64,
    sent: u64,
    completed: u64,
}

fn timeline(doc: &Value) -> Vec<Row> {
    at(doc, "timeline")
        .as_array()
        .unwrap_or_else(|| panic!("`timeline` is not an array:\n{doc:#}"))
        .iter()
        .map(|r| Row {
            t_s: float(r, "t_s"),
            dt_s: float(r, "dt_s"),
            target_rps: float(r, "target_rps"),
            sent: num(r, "sent"),
            completed: num(r, "completed"),
        })
        .collect()
}

/// The rows that span (nearly) a whole `interval`. A run ends with its last response, so
/// its last row is usually a little short (it ends just after the last send), or very short
/// (a few responses after an interval boundary), or shorter still when the schedule has no
/// send near the end of the run.
fn full_rows(doc: &Value, interval_s: f64) -> Vec<Row> {
    timeline(doc)
        .into_iter()
        .filter(|r| r.dt_s >= 0.9 * interval_s)
        .collect()
}

/// The full rows, exactly `n` of them, in order.
fn n_full_rows(doc: &Value, interval_s: f64, n: usize) -> Vec<Row> {
    let rows = full_rows(doc, interval_s);
    assert_eq!(
        rows.len(),
        n,
        "expected {n} full {interval_s} s rows, timeline: {:#?}",
        timeline(doc)
    );
    rows
}

// ---------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------

/// Exactly `k` requests were sent, all completed with a 2xx, none failed or was cut off.
fn assert_all_ok(doc: &Value, k: u64) {
    for key in ["sent", "completed", "ok"] {
        assert_eq!(
            num(doc, &format!("requests.{key}")),
            k,
            "requests.{key}: {:#}",
            at(doc, "requests")
        );
    }
    assert_eq!(num(doc, "requests.failed"), 0, "requests.failed");
    assert_eq!(num(doc, "requests.cut_off"), 0, "requests.cut_off");
}

/// `actual` within `tolerance` (a fraction) of `expected`.
fn assert_near(what: &str, actual: f64, expected: f64, tolerance: f64) {
    assert!(
        (actual - expected).abs() <= expected.abs() * tolerance,
        "{what}: {actual} is not within {}% of {expected}",
        tolerance * 100.0
    );
}

/// `actual` within `slack` of `expected`.
fn assert_within(what: &str, actual: u64, expected: u64, slack: u64) {
    assert!(
        actual.abs_diff(expected) <= slack,
        "{what}: {actual} is not {expected} ± {slack}"
    );
}

// ---------------------------------------------------------------------------------------
// Running blast
// ---------------------------------------------------------------------------------------

/// Run blast against a fresh keep-alive server; exit 0, every request reached the server.
fn run_ok(args: &[&str]) -> Value {
    let server = TestServer::start(Behaviour::keep_alive());
    let url = server.url("/");
    let mut all = vec![url.as_str()];
    all.extend_from_slice(args);
    let (out, doc) = blast_json(&all);
    assert_exit(&out, 0);
    assert_balanced(&doc);
    assert_eq!(num(&doc, "requests.failed"), 0, "{:#}", at(&doc, "errors"));
    assert_eq!(
        server.counts().requests,
        num(&doc, "requests.sent"),
        "requests the server received"
    );
    doc
}

/// Longest any send was late against its intended time, in seconds.
fn worst_send_lag_s(doc: &Value) -> f64 {
    num(doc, "send_lag_us.max") as f64 / 1e6
}

/// Beyond this, a send lag means the machine froze blast (its rows then show the freeze,
/// not the schedule).
const FROZEN_S: f64 = 0.1;

/// Like [`run_ok`], for runs whose timeline rows are compared with the schedule: when some
/// send was more than [`FROZEN_S`] late (a busy machine can stall a process for that long),
/// run once more.
fn run_on_schedule(args: &[&str]) -> Value {
    let doc = run_ok(args);
    if worst_send_lag_s(&doc) <= FROZEN_S {
        return doc;
    }
    eprintln!(
        "note: a send was {:.3} s late (machine busy): running {args:?} again",
        worst_send_lag_s(&doc)
    );
    run_ok(args)
}

/// How far a row's `sent` may be from the schedule's count for it: 2 for the sends due at
/// its edges (either row may count them), plus what the schedule sends, at `peak_rps` at
/// most, in the time blast was late by at worst (a late send lands in a later row).
/// None when blast was so late that its rows say nothing about the schedule.
fn row_slack(doc: &Value, peak_rps: f64) -> Option<u64> {
    let lag = worst_send_lag_s(doc);
    if lag > FROZEN_S {
        eprintln!("note: a send was {lag:.3} s late (machine busy): not judging the rows");
        return None;
    }
    Some(2 + (peak_rps * lag).ceil() as u64)
}

// ---------------------------------------------------------------------------------------
// 1. Rate accuracy
// ---------------------------------------------------------------------------------------

/// `--rate 500 --duration 2s`: the schedule says exactly 1000 sends, 500 per second.
#[test]
fn constant_rate_sends_exactly_the_schedule() {
    let doc = run_on_schedule(&["--rate", "500", "--duration", "2s"]);
    assert_all_ok(&doc, 1000);
    for r in full_rows(&doc, 1.0) {
        assert_near("row target_rps", r.target_rps, 500.0, 0.01);
    }
    assert_near(
        "open_loop.target_rps",
        float(&doc, "open_loop.target_rps"),
        500.0,
        0.01,
    );
    if let Some(slack) = row_slack(&doc, 500.0) {
        // ±2% (more if blast was measurably late).
        let slack = slack.max(10);
        let rows = n_full_rows(&doc, 1.0, 2);
        for r in &rows {
            assert_within(
                &format!("sent in row {r:?} of {rows:#?}"),
                r.sent,
                500,
                slack,
            );
        }
        assert_near(
            "open_loop.achieved_rps",
            float(&doc, "open_loop.achieved_rps"),
            500.0,
            0.05,
        );
    }
    assert_eq!(float(&doc, "config.rate.rate"), 500.0);
    assert_eq!(at(&doc, "config.rate.pattern.kind"), "constant");
    // The open-loop distributions are there, one value per completed request.
    for key in ["latency_us", "latency_uncorrected_us"] {
        assert_eq!(num(&doc, &format!("{key}.count")), 1000, "{key}.count");
    }
    assert_eq!(num(&doc, "send_lag_us.count"), 1000, "send_lag_us.count");
}

/// With `--slack`, a core handles its sends and responses in batches: the counts stay
/// exact, every request is on the server's count, and the slack is in the config. The
/// batch sleeps come after the first request, so both the batched and the plain path run.
#[test]
fn slack_batches_without_losing_a_request() {
    for slack in ["0", "2ms"] {
        let doc = run_on_schedule(&["--rate", "400", "--duration", "1s", "--slack", slack]);
        assert_all_ok(&doc, 400);
        let want = if slack == "0" { 0.0 } else { 0.002 };
        assert_eq!(float(&doc, "config.slack"), want, "config.slack");
        assert_eq!(num(&doc, "send_lag_us.count"), 400, "send_lag_us.count");
    }
    // The default applies to open loops only.
    let doc = run_on_schedule(&["--rate", "100", "--duration", "1s"]);
    assert_eq!(float(&doc, "config.slack"), 0.00015, "default slack");
}

/// Responses read late on purpose are timed by their arrival: the server answers at once,
/// blast reads each response up to 10 ms after it came, and the service time it reports
/// (send to arrival) is not stretched by that wait. Without arrival stamps the median would
/// be about half the slack; with them it is the loopback round trip. Only the gross
/// difference is asserted (the machine is noisy).
#[test]
fn late_reads_are_timed_by_arrival() {
    let doc = run_on_schedule(&["--rate", "300", "--duration", "1s", "--slack", "10ms"]);
    // On a starved machine a few sends may come too late to go (they are counted missed);
    // what went is all answered and on the server's count (run_on_schedule checks that).
    assert_eq!(
        num(&doc, "requests.sent") + num(&doc, "open_loop.missed"),
        300,
        "sent + missed"
    );
    assert_eq!(num(&doc, "requests.ok"), num(&doc, "requests.sent"), "ok");
    let p50 = num(&doc, "latency_uncorrected_us.p50");
    assert!(
        p50 < 2_500,
        "uncorrected latency p50 {p50} us: the reads' wait was counted"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Coordinated omission
// ---------------------------------------------------------------------------------------

/// The server freezes for 300 ms every 100th request (every connection at once, like a
/// GC pause). The requests scheduled during a freeze cannot be sent: all 4 connections are
/// stuck. When the freeze ends they go out at once and are answered at once, so their
/// service time (uncorrected latency) is tiny, but they were due up to 300 ms earlier and
/// the corrected latency, measured from the intended send time, charges them the wait —
/// what wrk2 shows and a closed-loop tool hides. ~60 of every ~160 requests are affected,
/// so the corrected p90 shows the freezes, the uncorrected p90 does not.
#[test]
fn corrected_latency_charges_requests_for_a_stalled_server() {
    let stall = Duration::from_millis(300);
    let server = TestServer::start(Behaviour::keep_alive().stall_every(100, stall));
    let (out, doc) = blast_json(&[
        &server.url("/"),
        "--rate",
        "200",
        "--duration",
        "2s",
        "--conns",
        "4",
    ]);
    assert_exit(&out, 0);
    assert_all_ok(&doc, 400);
    assert_eq!(server.counts().requests, 400);

    let corrected_p90 = num(&doc, "latency_us.p90");
    let corrected_p99 = num(&doc, "latency_us.p99");
    let uncorrected_p50 = num(&doc, "latency_uncorrected_us.p50");
    let uncorrected_p90 = num(&doc, "latency_uncorrected_us.p90");
    let summary = format!(
        "latency_us {:#}\nlatency_uncorrected_us {:#}",
        at(&doc, "latency_us"),
        at(&doc, "latency_uncorrected_us")
    );
    assert!(uncorrected_p50 < 50_000, "{summary}");
    assert!(corrected_p90 >= 100_000, "{summary}");
    assert!(corrected_p99 >= 200_000, "{summary}");
    assert!(corrected_p99 > 10 * uncorrected_p50, "{summary}");
    // The difference is the waiting that coordinated omission would hide.
    assert!(corrected_p90 > 2 * uncorrected_p90, "{summary}");
    // Corrected latency is never below the service time.
    for q in ["p50", "p90", "p99", "max"] {
        assert!(
            num(&doc, &format!("latency_us.{q}"))
                >= num(&doc, &format!("latency_uncorrected_us.{q}")),
            "{q}: {summary}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 3. --max-in-flight
// ---------------------------------------------------------------------------------------

/// 200 req/s for 1 s on 50 connections, at most 4 requests in flight, one core.
fn capped_run(url: &str) -> [&str; 11] {
    [
        url,
        "--rate",
        "200",
        "--duration",
        "1s",
        "--conns",
        "50",
        "--max-in-flight",
        "4",
        "--cores",
        "1",
    ]
}

/// 50 connections but at most 4 requests in flight: the server never works on more than
/// 4 at once, and blast (4 × 10 req/s at most against 200 asked for) says it fell behind.
#[test]
fn max_in_flight_caps_what_the_server_sees() {
    let server = TestServer::start(Behaviour::keep_alive().delay(Duration::from_millis(100)));
    let url = server.url("/");
    let (out, doc) = blast_json(&capped_run(&url));
    assert_exit(&out, 0);
    assert_balanced(&doc);
    let sent = num(&doc, "requests.sent");
    assert_eq!(server.counts().requests, sent);
    assert_eq!(server.max_concurrent(), 4, "most requests at once");
    // 4 at a time for 100 ms each: 40 per second, far below the 200 asked for. (Not more
    // than the schedule: see `duration_ends_sending_even_with_a_backlog` for how long
    // this takes.)
    assert!((4..=200).contains(&sent), "sent {sent}");
    assert!(
        !flag(&doc, "open_loop.kept_up"),
        "{:#}",
        at(&doc, "open_loop")
    );
    assert_eq!(
        text(&doc, "open_loop.limited_by"),
        "connections",
        "{:#}",
        at(&doc, "open_loop")
    );
    assert!(
        float(&doc, "open_loop.achieved_rps") < 0.5 * float(&doc, "open_loop.target_rps"),
        "{:#}",
        at(&doc, "open_loop")
    );
    assert_eq!(num(&doc, "config.max_in_flight"), 4);
}

/// `--duration 1s` means "stop sending after 1 s" (`--help`), also when blast is behind
/// schedule: here it can send only 40 of the 200 requests due in that second.
#[test]
fn duration_ends_sending_even_with_a_backlog() {
    let server = TestServer::start(Behaviour::keep_alive().delay(Duration::from_millis(100)));
    let url = server.url("/");
    let (run, doc) = run_blast_json(&capped_run(&url));
    assert_exit(&run.output, 0);
    assert_balanced(&doc);
    // At most 4 in flight at 1 s, answered 100 ms later.
    let elapsed = float(&doc, "elapsed_s");
    assert!(elapsed < 2.0, "elapsed_s {elapsed} for --duration 1s");
    let sent = num(&doc, "requests.sent");
    assert!(
        sent <= 60,
        "sent {sent}: 4 at a time for 100 ms each makes ~40 in 1 s"
    );
    let late: u64 = timeline(&doc)
        .iter()
        .filter(|r| r.t_s - r.dt_s >= 1.2)
        .map(|r| r.sent)
        .sum();
    assert_eq!(late, 0, "sent after the end: {:#?}", timeline(&doc));
}

/// The control: without the cap, the same run reaches far more requests at once.
#[test]
fn without_max_in_flight_the_server_sees_the_backlog() {
    let server = TestServer::start(Behaviour::keep_alive().delay(Duration::from_millis(100)));
    let (out, doc) = blast_json(&[
        &server.url("/"),
        "--rate",
        "200",
        "--duration",
        "1s",
        "--conns",
        "50",
        "--cores",
        "1",
    ]);
    assert_exit(&out, 0);
    assert_all_ok(&doc, 200);
    // 200 req/s × 100 ms: about 20 at once.
    assert!(server.max_concurrent() >= 10, "{}", server.max_concurrent());
}

// ---------------------------------------------------------------------------------------
// 4. Patterns, as seen in the timeline
// ---------------------------------------------------------------------------------------

/// Ramp from 0 to 400 req/s over the whole 2 s: r(t) = 200·t, so the four half-second
/// rows should hold 25, 75, 125 and 175 sends (400 in all).
#[test]
fn ramp_climbs_linearly() {
    let doc = run_on_schedule(&[
        "--pattern",
        "ramp",
        "--rate",
        "400",
        "--ramp-over",
        "2s",
        "--duration",
        "2s",
        "--interval",
        "500ms",
    ]);
    assert_within("sent", num(&doc, "requests.sent"), 400, 1);
    // Mean of 200·t over each row.
    for (i, (r, expected)) in full_rows(&doc, 0.5)
        .iter()
        .zip([50.0, 150.0, 250.0, 350.0])
        .enumerate()
    {
        assert_near(
            &format!("target_rps in row {i}"),
            r.target_rps,
            expected,
            0.02,
        );
    }
    let Some(slack) = row_slack(&doc, 400.0) else {
        return;
    };
    let rows = n_full_rows(&doc, 0.5, 4);
    for (i, (r, expected)) in rows.iter().zip([25u64, 75, 125, 175]).enumerate() {
        assert_within(
            &format!("sent in row {i} of {rows:#?}"),
            r.sent,
            expected,
            slack,
        );
    }
    assert!(
        rows.windows(2).all(|w| w[1].sent > w[0].sent),
        "not increasing: {rows:#?}"
    );
}

/// The arguments of a burst run: 20 requests at once every 500 ms for 2 s, nothing in
/// between (80 requests), then `extra`.
fn bursts<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--pattern",
        "burst",
        "--rate",
        "0",
        "--burst-size",
        "20",
        "--burst-every",
        "500ms",
        "--duration",
        "2s",
    ];
    args.extend_from_slice(extra);
    args
}

/// 20 requests at once every 500 ms, nothing in between: 4 bursts (at 0, 0.5, 1 and
/// 1.5 s), 80 requests. Rows of 400 ms put each burst in a row of its own, away from the
/// rows' ends (a send due exactly at a row's end may be counted in either row).
#[test]
fn burst_sends_whole_bursts() {
    let doc = run_on_schedule(&bursts(&["--interval", "400ms"]));
    assert_all_ok(&doc, 80);
    // A row's target is the burst it holds (20 in 400 ms for a full row), and nothing once the
    // last burst (the one at 1.5 s, in the fourth row) has gone.
    for (i, r) in timeline(&doc).iter().enumerate() {
        let due = if i < 4 { 20.0 } else { 0.0 };
        assert!(
            (r.target_rps * r.dt_s - due).abs() < 1e-6,
            "row {i} {r:?}: target for {due} sends"
        );
    }
    // Each burst is due 100 ms or more before the end of its row.
    if row_slack(&doc, 0.0).is_some() {
        let rows = timeline(&doc);
        let bursts: Vec<u64> = rows.iter().map(|r| r.sent).filter(|&n| n > 0).collect();
        assert_eq!(bursts, [20, 20, 20, 20], "{rows:#?}");
    }
}

/// The same bursts in rows of 500 ms: each burst is due exactly at the start of a row and
/// belongs to that row, so every row holds exactly one burst.
#[test]
fn bursts_due_at_a_row_boundary_belong_to_the_next_row() {
    let doc = run_on_schedule(&bursts(&["--interval", "500ms"]));
    assert_all_ok(&doc, 80);
    let rows = timeline(&doc);
    let per_row: Vec<u64> = rows.iter().map(|r| r.sent).collect();
    assert_eq!(per_row, [20, 20, 20, 20], "{rows:#?}");
}

/// A burst run sends exactly what it is asked to (80 in 2 s, 40 req/s), so its achieved
/// rate is its target rate, over the run's 2 s.
#[test]
fn achieved_rate_of_a_burst_run_is_its_target() {
    let doc = run_ok(&bursts(&[]));
    assert_all_ok(&doc, 80);
    assert_near(
        "open_loop.target_rps",
        float(&doc, "open_loop.target_rps"),
        40.0,
        0.01,
    );
    assert_near(
        "open_loop.achieved_rps",
        float(&doc, "open_loop.achieved_rps"),
        40.0,
        0.05,
    );
}

/// Issue 11: `--rate 10 --pattern burst --duration 1s` has the default burst (50 every
/// 10 s) at 0 and 10 sends at 10 req/s due, 60 req/s over the run. The target used to be
/// the burst spread over its period, 15 req/s.
#[test]
fn short_burst_run_targets_what_was_due() {
    let doc = run_ok(&["--rate", "10", "--pattern", "burst", "--duration", "1s"]);
    assert_all_ok(&doc, 60);
    let open_loop = at(&doc, "open_loop");
    assert_eq!(float(&doc, "open_loop.target_rps"), 60.0, "{open_loop:#}");
    assert_eq!(float(&doc, "open_loop.achieved_rps"), 60.0, "{open_loop:#}");
    // Sending all that was due is keeping up: the lag of the burst at start-up (50 requests
    // at once, and their connects) is not judged (issue 12).
    assert!(flag(&doc, "open_loop.kept_up"), "{open_loop:#}");
    assert_eq!(text(&doc, "open_loop.limited_by"), "none", "{open_loop:#}");
    let due: f64 = timeline(&doc).iter().map(|r| r.target_rps * r.dt_s).sum();
    assert!((due - 60.0).abs() < 1e-6, "timeline: {:#?}", timeline(&doc));
}

/// 100 req/s with a 400 req/s spike in the last 500 ms of every second: rows of 50, 200,
/// 50, 200 sends.
#[test]
fn spikes_show_in_the_timeline() {
    let doc = run_on_schedule(&[
        "--rate",
        "100",
        "--pattern",
        "spike",
        "--spike-rate",
        "400",
        "--spike-len",
        "500ms",
        "--spike-every",
        "1s",
        "--duration",
        "2s",
        "--interval",
        "500ms",
    ]);
    assert_within("sent", num(&doc, "requests.sent"), 500, 2);
    let expected = |i: usize| {
        if i % 2 == 1 {
            (400.0, 200)
        } else {
            (100.0, 50)
        }
    };
    for (i, r) in full_rows(&doc, 0.5).iter().enumerate() {
        assert_near(
            &format!("target_rps in row {i}"),
            r.target_rps,
            expected(i).0,
            0.01,
        );
    }
    let Some(slack) = row_slack(&doc, 400.0) else {
        return;
    };
    let rows = n_full_rows(&doc, 0.5, 4);
    for (i, r) in rows.iter().enumerate() {
        assert_within(
            &format!("sent in row {i} of {rows:#?}"),
            r.sent,
            expected(i).1,
            slack,
        );
    }
}

/// A chaos run with `seed`: random rates up to 400 req/s, each held 100-300 ms.
fn chaos_run(seed: &str) -> Value {
    run_on_schedule(&[
        "--pattern",
        "chaos",
        "--rate",
        "400",
        "--seed",
        seed,
        "--chaos-min-hold",
        "100ms",
        "--chaos-max-hold",
        "300ms",
        "--duration",
        "1500ms",
        "--interval",
        "250ms",
        "--conns",
        "20",
    ])
}

/// The target of each of the first four rows (the first second), as a comparable list.
/// (Later rows depend a little on timing: where the last one ends.)
fn targets(doc: &Value) -> Vec<f64> {
    let rows = timeline(doc);
    assert!(rows.len() >= 5, "{rows:#?}");
    rows[..4].iter().map(|r| r.target_rps).collect()
}

/// The same seed gives the same rate curve; another seed, another curve. Either way blast
/// sends what the curve asks for.
#[test]
fn chaos_is_repeatable_by_seed() {
    let (a, b, c) = (chaos_run("42"), chaos_run("42"), chaos_run("43"));
    assert_eq!(targets(&a), targets(&b), "same seed, same curve");
    assert_ne!(targets(&a), targets(&c), "another seed, same curve");
    assert_eq!(
        num(&a, "requests.sent"),
        num(&b, "requests.sent"),
        "same seed, same number of sends"
    );
    for doc in [&a, &b, &c] {
        let rows = full_rows(doc, 0.25);
        assert!(rows.len() >= 5, "{rows:#?}");
        // Rates are uniform in [0, 400] and the curve is not flat.
        assert!(
            rows.iter().all(|r| (0.0..=400.0).contains(&r.target_rps)),
            "{rows:#?}"
        );
        let lo = rows
            .iter()
            .map(|r| r.target_rps)
            .fold(f64::INFINITY, f64::min);
        let hi = rows.iter().map(|r| r.target_rps).fold(0.0, f64::max);
        assert!(hi - lo > 1.0, "flat chaos: {rows:#?}");
        // Each row sends the area under its part of the curve.
        let Some(slack) = row_slack(doc, 400.0) else {
            continue;
        };
        for r in &rows {
            let area = r.target_rps * r.dt_s;
            assert!(
                (r.sent as f64 - area).abs() <= (slack + 2) as f64 + 0.1 * area,
                "row {r:?}: sent {} for an area of {area}; rows {rows:#?}",
                r.sent
            );
        }
    }
}

/// `--stages 1s:200,1s:200`: 0 → 200 req/s over a second (area 100), then a second at
/// 200 (area 200). The stages say how long the run lasts.
#[test]
fn stages_set_the_rate_and_the_length() {
    let doc = run_on_schedule(&["--stages", "1s:200,1s:200", "--interval", "500ms"]);
    assert_within("sent", num(&doc, "requests.sent"), 300, 2);
    assert_eq!(float(&doc, "config.duration_s"), 2.0);
    let elapsed = float(&doc, "elapsed_s");
    assert!((1.9..4.0).contains(&elapsed), "elapsed_s {elapsed}");
    assert_eq!(at(&doc, "config.rate.pattern.kind"), "stages");
    let expected = [25u64, 75, 100, 100];
    for (i, (r, sent)) in full_rows(&doc, 0.5).iter().zip(expected).enumerate() {
        assert_near(
            &format!("target_rps in row {i}"),
            r.target_rps,
            sent as f64 * 2.0,
            0.02,
        );
    }
    let Some(slack) = row_slack(&doc, 200.0) else {
        return;
    };
    let rows = n_full_rows(&doc, 0.5, 4);
    for (i, (r, sent)) in rows.iter().zip(expected).enumerate() {
        assert_within(
            &format!("sent in row {i} of {rows:#?}"),
            r.sent,
            sent,
            slack,
        );
    }
}

// ---------------------------------------------------------------------------------------
// 5. Poisson arrivals
// ---------------------------------------------------------------------------------------

fn poisson_run(seed: &str) -> Value {
    run_ok(&[
        "--arrivals",
        "poisson",
        "--rate",
        "500",
        "--duration",
        "2s",
        "--seed",
        seed,
    ])
}

/// Random gaps: about 1000 sends in 2 s at 500 req/s, the same number for the same seed.
#[test]
fn poisson_arrivals_are_random_but_seeded() {
    let (a, b) = (poisson_run("7"), poisson_run("7"));
    let sent = num(&a, "requests.sent");
    assert_within("sent", sent, 1000, 150);
    assert_eq!(num(&b, "requests.sent"), sent, "same seed, same sends");
    assert_eq!(at(&a, "config.rate.arrivals"), "Poisson");
    assert_eq!(num(&a, "config.rate.seed"), 7);
}

// ---------------------------------------------------------------------------------------
// 6. Timeline CSV and results log
// ---------------------------------------------------------------------------------------

/// `--timeline PATH`: a header, then one line per row of the JSON timeline, same figures.
#[test]
fn timeline_csv_matches_the_json_timeline() {
    let csv = TempFile(temp_path("timeline.csv"));
    let doc = run_ok(&[
        "--rate",
        "100",
        "--duration",
        "1s",
        "--interval",
        "250ms",
        "--timeline",
        csv.path_str(),
    ]);
    let text = std::fs::read_to_string(&csv.0).expect("the timeline CSV was written");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header line").split(',').collect();
    for column in ["t_s", "dt_s", "target_rps", "sent", "completed"] {
        assert!(header.contains(&column), "no `{column}` in {header:?}");
    }
    let column = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let rows = timeline(&doc);
    let lines: Vec<&str> = lines.collect();
    assert_eq!(lines.len(), rows.len(), "CSV:\n{text}");
    for (line, row) in lines.iter().zip(&rows) {
        let cells: Vec<&str> = line.split(',').collect();
        let cell = |name: &str| cells[column(name)];
        assert_eq!(cell("sent").parse::<u64>().unwrap(), row.sent, "{line}");
        assert_eq!(
            cell("completed").parse::<u64>().unwrap(),
            row.completed,
            "{line}"
        );
        let t: f64 = cell("t_s").parse().unwrap();
        assert!((t - row.t_s).abs() < 0.001, "{line} vs {row:?}");
        let target: f64 = cell("target_rps").parse().unwrap();
        assert!((target - row.target_rps).abs() < 0.01, "{line} vs {row:?}");
    }
    let total: u64 = rows.iter().map(|r| r.sent).sum();
    assert_eq!(total, num(&doc, "requests.sent"));
}

/// Every CSV line has a cell for each column of the header, no more, no fewer.
#[test]
fn timeline_csv_rows_are_as_wide_as_the_header() {
    let csv = TempFile(temp_path("timeline.csv"));
    run_ok(&[
        "--rate",
        "100",
        "--duration",
        "500ms",
        "--timeline",
        csv.path_str(),
    ]);
    let text = std::fs::read_to_string(&csv.0).expect("the timeline CSV was written");
    let mut lines = text.lines();
    let width = lines.next().expect("a header line").split(',').count();
    for line in lines {
        assert_eq!(
            line.split(',').count(),
            width,
            "header and row differ:\n{text}"
        );
    }
}

/// `--log PATH` appends one JSON line per run.
#[test]
fn log_appends_one_json_line_per_run() {
    let log = TempFile(temp_path("runs.jsonl"));
    for rate in ["50", "60"] {
        run_ok(&[
            "--rate",
            rate,
            "--duration",
            "500ms",
            "--log",
            log.path_str(),
        ]);
    }
    let text = std::fs::read_to_string(&log.0).expect("the log was written");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "log:\n{text}");
    for (line, (rate, sent)) in lines.iter().zip([(50.0, 25), (60.0, 30)]) {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            at(&entry, "time").as_str().is_some_and(|t| t.len() >= 19),
            "{entry}"
        );
        assert_eq!(float(&entry, "config.rate.rate"), rate);
        assert_eq!(num(&entry, "summary.requests.sent"), sent, "{entry}");
        assert!(entry.get("timeline").is_none() && entry.get("histograms").is_none());
        // The verdict and its warnings too (issue 12).
        let limited_by = at(&entry, "summary.open_loop.limited_by").as_str();
        assert!(limited_by.is_some(), "{entry}");
        assert!(at(&entry, "summary.warnings").is_array(), "{entry}");
    }
}

// ---------------------------------------------------------------------------------------
// 7. Scenarios
// ---------------------------------------------------------------------------------------

#[test]
fn scenario_list_names_every_scenario() {
    let out = blast(&["scenario", "list"]);
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["queue-stress", "burst", "ramp", "spike", "chaos", "quick"] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "`{name}` not listed:\n{text}"
        );
    }
}

/// Options after the URL override the preset's (`quick` is 2 minutes at 40 req/s of
/// Ollama generate requests; `--api none` makes it plain HTTP for this server).
#[test]
fn scenario_runs_with_overrides() {
    let server = TestServer::start(Behaviour::keep_alive());
    let (out, doc) = blast_json(&[
        "scenario",
        "quick",
        &server.url("/"),
        "--duration",
        "1s",
        "--rate",
        "50",
        "--api",
        "none",
    ]);
    assert_exit(&out, 0);
    assert_all_ok(&doc, 50);
    assert_eq!(server.counts().requests, 50);
    assert_eq!(at(&doc, "config.scenario"), "quick");
    assert_eq!(float(&doc, "config.rate.rate"), 50.0);
    assert_eq!(float(&doc, "config.duration_s"), 1.0);
    assert_eq!(num(&doc, "config.conns"), 60, "the preset's own --conns");
}

#[test]
fn unknown_scenario_is_bad_input() {
    let server = TestServer::start(Behaviour::keep_alive());
    let out = blast(&["scenario", "nope", &server.url("/")]);
    assert_bad_input(&out, "scenario nope");
    assert!(stderr_of(&out).contains("nope"), "{}", stderr_of(&out));
    assert_eq!(server.counts().accepted, 0);
}

/// A scenario whose override is invalid fails like the plain command would.
#[test]
fn scenario_with_a_bad_override_is_bad_input() {
    let server = TestServer::start(Behaviour::keep_alive());
    for bad in [
        &["--rate", "abc"][..],
        &["--rate", "0"],
        &["--pattern", "wobble"],
    ] {
        let mut args = vec!["scenario", "quick"];
        let url = server.url("/");
        args.push(&url);
        args.extend_from_slice(bad);
        assert_bad_input(&blast(&args), &format!("scenario quick {bad:?}"));
    }
    assert_eq!(server.counts().accepted, 0);
}

// ---------------------------------------------------------------------------------------
// 8. Bad input
// ---------------------------------------------------------------------------------------

/// Exit 2 with one `blast: ` line, or a command-line error (what is wrong, then a hint:
/// two `blast: ` lines, also exit 2); no panic.
fn assert_bad_input(out: &std::process::Output, what: &str) {
    let err = stderr_of(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: exit status {:?}, stderr:\n{err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
    let err = err.trim_end();
    let one_line_of_ours = err.starts_with("blast: ") && !err.contains('\n');
    let clap_usage_error =
        err.lines().count() == 2 && err.lines().all(|l| l.starts_with("blast: "));
    assert!(
        one_line_of_ours || clap_usage_error,
        "{what}: not one `blast: ` line:\n{err}"
    );
    assert!(out.stdout.is_empty(), "{what}: wrote to stdout");
}

#[test]
fn bad_open_loop_input_is_rejected_before_any_connection() {
    let server = TestServer::start(Behaviour::keep_alive());
    let url = server.url("/");
    let cases: &[&[&str]] = &[
        &["--rate", "0"],
        &["--rate", "-5"],
        &["--rate=-5"],
        &["--rate", "abc"],
        &["--rate", "NaN"],
        &["--rate", "inf"],
        &["--pattern", "ramp"],
        &["--pattern", "wobble", "--rate", "10"],
        &[
            "--pattern",
            "ramp",
            "--rate",
            "10",
            "--ramp-over",
            "10s",
            "--duration",
            "2s",
        ],
        &["--stages", "30s"],
        &["--stages", "30s:abc"],
        &["--stages", ""],
        &["--stages", "1s:100,"],
        &["--stages", "0s:100"],
        &["--stages", "1s:100", "--pattern", "ramp", "--rate", "10"],
        &["--rate", "10", "--max-in-flight", "0"],
        &[
            "--pattern",
            "spike",
            "--rate",
            "10",
            "--spike-len",
            "5s",
            "--spike-every",
            "2s",
        ],
        &[
            "--pattern",
            "spike",
            "--rate",
            "10",
            "--spike-len",
            "1s",
            "--spike-every",
            "5s",
            "--duration",
            "2s",
        ],
        &["--pattern", "burst", "--burst-size", "0"],
        &[
            "--pattern",
            "chaos",
            "--rate",
            "10",
            "--chaos-min-hold",
            "2s",
            "--chaos-max-hold",
            "1s",
        ],
        &["--arrivals", "sometimes", "--rate", "10"],
        &["--seed", "-1", "--rate", "10"],
        &["--slack", "11ms"],
        &["--slack", "soon", "--rate", "10"],
        &["--slack", "11ms", "--rate", "10"],
    ];
    for case in cases {
        let mut args = vec![url.as_str()];
        args.extend_from_slice(case);
        assert_bad_input(&blast(&args), &format!("{case:?}"));
    }
    assert_eq!(server.counts().accepted, 0, "a bad command connected");
}

// ---------------------------------------------------------------------------------------
// 9. Ctrl-C
// ---------------------------------------------------------------------------------------

/// Start blast in the background (quiet, JSON to `json`), not waiting for it.
fn spawn_blast(args: &[&str], json: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_blast"))
        .args(args)
        .args(["--quiet", "--json"])
        .arg(json)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot spawn blast")
}

fn interrupt(child: &Child) {
    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
    let r = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
}

/// Wait for `child` at most `limit`; kill it and fail if it is still running by then.
fn wait_at_most(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("blast still running {limit:?} after Ctrl-C: killed");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Ctrl-C in the middle of a 30 s run whose responses all take 2 s: blast stops within a
/// few seconds, still writes its result (everything in flight cut off) and exits 130.
#[test]
fn ctrl_c_reports_what_was_measured_and_exits_130() {
    let server = TestServer::start(Behaviour::keep_alive().delay(Duration::from_secs(2)));
    let json = TempFile(temp_path("interrupted.json"));
    let mut child = spawn_blast(
        &[&server.url("/"), "--rate", "100", "--duration", "30s"],
        &json.0,
    );
    thread::sleep(Duration::from_secs(1));
    let interrupted_at = Instant::now();
    interrupt(&child);
    let status = wait_at_most(&mut child, Duration::from_secs(10));
    let took = interrupted_at.elapsed();
    let mut err = String::new();
    use std::io::Read as _;
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert_eq!(
        status.code(),
        Some(130),
        "status {status:?}, stderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?} to stop");

    let text = std::fs::read_to_string(&json.0).expect("the JSON result was written");
    let doc: Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(flag(&doc, "interrupted"), "{doc:#}");
    assert!(
        num(&doc, "requests.cut_off") > 0,
        "{:#}",
        at(&doc, "requests")
    );
    assert_balanced(&doc);
    // About a second at 100 req/s, none of them answered yet.
    let sent = num(&doc, "requests.sent");
    assert!((20..=400).contains(&sent), "sent {sent}");
    assert_eq!(num(&doc, "requests.completed"), 0);
    assert!(
        float(&doc, "elapsed_s") < 6.0,
        "elapsed_s {}",
        float(&doc, "elapsed_s")
    );
}
