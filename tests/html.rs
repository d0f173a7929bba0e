//! The HTML report end to end: `--html` on a real run against a loopback server,
//! `blast report` and `blast compare --html` from its result document, and bad input.

mod common;

use common::doc::{assert_exit, num, stderr_of};
use common::{blast, blast_json, temp_path, Behaviour, TempFile, TestServer};

fn svgs(page: &str) -> usize {
    page.matches("<svg").count()
}

fn assert_self_contained(page: &str) {
    let lower = page.to_ascii_lowercase();
    for bad in ["src=", "href=", "<script", "<link", "@import", "url("] {
        assert!(!lower.contains(bad), "the page has {bad:?}");
    }
}

/// An open-loop run writes its page with the run's own figures; the page made from its
/// JSON by `blast report` has the same charts.
#[test]
fn a_run_writes_its_report_and_report_redraws_it() {
    let server = TestServer::start(Behaviour::keep_alive());
    let html = TempFile(temp_path("run.html"));
    let (out, doc) = blast_json(&[
        &server.url("/"),
        "--rate",
        "100",
        "--duration",
        "1500ms",
        "--conns",
        "4",
        "--interval",
        "500ms",
        "--html",
        html.path_str(),
    ]);
    assert_exit(&out, 0);
    let sent = num(&doc, "requests.sent");
    assert_eq!(server.counts().requests, sent);
    let page = std::fs::read_to_string(&html.0).expect("the page was written");
    // Rates, latency, in flight, responses and errors; latency, uncorrected latency and
    // send lag spectra (open loop, plain HTTP).
    assert_eq!(svgs(&page), 7, "charts");
    assert!(page.contains(&format!("<b>{sent}</b><span>requests sent</span>")));
    assert!(
        page.contains("offered (target)"),
        "the open-loop target curve"
    );
    assert!(page.contains("Send lag"));
    assert_self_contained(&page);

    let json = TempFile::with_contents("run.json", doc.to_string().as_bytes());
    let again = TempFile(temp_path("again.html"));
    let out = blast(&["report", json.path_str(), "--html", again.path_str()]);
    assert_exit(&out, 0);
    let redrawn = std::fs::read_to_string(&again.0).expect("report wrote the page");
    assert_eq!(svgs(&redrawn), 7);

    let cmp = TempFile(temp_path("compare.html"));
    let out = blast(&[
        "compare",
        json.path_str(),
        json.path_str(),
        "--html",
        cmp.path_str(),
    ]);
    assert_exit(&out, 0);
    let page = std::fs::read_to_string(&cmp.0).expect("compare wrote the page");
    // Rates, latency, in flight, failures; three spectra.
    assert_eq!(svgs(&page), 7);
    assert!(String::from_utf8_lossy(&out.stdout).contains("req/s"));
    assert_self_contained(&page);
}

/// Bad input: one line naming the problem, exit 2, no page.
#[test]
fn report_refuses_what_is_not_a_result() {
    let html = temp_path("never.html");
    let html_s = html.to_str().unwrap();
    let missing = temp_path("missing.json");
    let not_json = TempFile::with_contents("not.json", b"{ nope");
    let not_result = TempFile::with_contents("other.json", br#"{"hello": 1}"#);
    let bad_hist = TempFile::with_contents(
        "badhist.json",
        br#"{"requests": {"sent": 1}, "histograms": {"latency_us": "%%%"}}"#,
    );
    for (file, says) in [
        (missing.to_str().unwrap(), "cannot read"),
        (not_json.path_str(), "is not JSON"),
        (not_result.path_str(), "is not a result document"),
        (bad_hist.path_str(), "histograms.latency_us"),
    ] {
        let out = blast(&["report", file, "--html", html_s]);
        assert_exit(&out, 2);
        let err = stderr_of(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("blast: ") && err.contains(says), "{err}");
        assert!(!html.exists());
    }
    // --html is what `report` is for.
    let out = blast(&["report", not_result.path_str()]);
    assert_exit(&out, 2);
    // A directory that does not exist is refused before the load test starts.
    let out = blast(&[
        "http://127.0.0.1:9/",
        "--html",
        "/nonexistent-dir-of-blast/r.html",
    ]);
    assert_exit(&out, 2);
    assert!(stderr_of(&out).contains("r.html"), "{}", stderr_of(&out));
}

/// Status codes per interval add up to the run's, and the page draws a curve for each.
#[test]
fn status_codes_over_time_come_from_the_timeline() {
    let server = TestServer::start(Behaviour::keep_alive().status(503));
    let html = TempFile(temp_path("status.html"));
    let (out, doc) = blast_json(&[
        &server.url("/"),
        "--requests",
        "60",
        "--conns",
        "2",
        "--interval",
        "200ms",
        "--html",
        html.path_str(),
    ]);
    // No 2xx: the run counts as failed, and still writes its outputs.
    assert_exit(&out, 1);
    assert_eq!(server.counts().requests, 60);
    let rows = doc["timeline"].as_array().unwrap();
    let per_row: u64 = rows
        .iter()
        .map(|r| r["status"]["503"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(per_row, num(&doc, "status.503"));
    assert_eq!(per_row, 60);
    let page = std::fs::read_to_string(&html.0).expect("the page was written");
    let after = page.split("Status codes and errors").nth(1).unwrap();
    let legend = after.split("</figcaption>").next().unwrap();
    assert!(legend.contains(">503</span>"), "{legend}");
    assert!(!legend.contains(">200</span>"), "{legend}");
}
