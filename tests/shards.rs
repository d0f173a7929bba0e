//! `--shard I/N` and `--start-at`: N blast processes that start together and, together,
//! send exactly what one process would (and `blast merge` of their results).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

/// Run `--shard i/3` for i in 0..3 at once, all with one `--start-at` a second ahead, each
/// with `extra[i]` added; their result documents, in shard order.
fn three_shards(url: &str, common: &[&str], extra: [&[&str]; 3]) -> Vec<Value> {
    let at = SystemTime::now() + Duration::from_secs(1);
    let at = format!(
        "{:.3}",
        at.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
    );
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let shard = format!("{i}/3");
            let mut args: Vec<String> = ["--shard", &shard, "--start-at", &at]
                .iter()
                .chain(common)
                .chain(extra[i])
                .map(|s| s.to_string())
                .collect();
            args.push(url.to_string());
            std::thread::spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let (out, doc) = blast_json(&args);
                assert!(
                    out.status.success(),
                    "shard {i}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let summary = String::from_utf8_lossy(&out.stdout);
                assert!(summary.contains(&format!(", shard {i} of 3")), "{summary}");
                doc
            })
        })
        .collect();
    let docs: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let at: f64 = at.parse().unwrap();
    for (i, d) in docs.iter().enumerate() {
        assert_eq!(d["shard"]["index"], i as u64);
        assert_eq!(d["shard"]["count"], 3);
        let started = d["started_at_unix_s"].as_f64().unwrap();
        let late = d["start_late_s"].as_f64().unwrap();
        // The start is the agreed instant, or reported as late as it was.
        assert!(started >= at - 0.01, "shard {i} started before --start-at");
        assert!((started - at - late).abs() < 0.05, "{started} {at} {late}");
        assert!(d["started_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(plan(d), plan(&docs[0]), "the shards share one plan");
    }
    docs
}

/// The config without what is each process's own (its cores).
fn plan(doc: &Value) -> Value {
    let mut c = doc["config"].clone();
    let o = c.as_object_mut().unwrap();
    o.remove("cores");
    o.remove("cpus");
    c
}

/// `blast merge` of `docs` (written to files), with `extra` options; its exit and document.
fn merge(docs: &[&Value], extra: &[&str]) -> (std::process::Output, Option<Value>) {
    let files: Vec<TempFile> = docs
        .iter()
        .map(|d| TempFile::with_contents("shard.json", d.to_string().as_bytes()))
        .collect();
    let out = TempFile(temp_path("merged.json"));
    let mut args = vec!["merge"];
    args.extend(files.iter().map(TempFile::path_str));
    args.extend(["--json", out.path_str()]);
    args.extend(extra);
    let output = blast(&args);
    let merged = std::fs::read_to_string(&out.0)
        .ok()
        .map(|t| serde_json::from_str(&t).expect("merged JSON"));
    (output, merged)
}

fn sent(docs: &[Value]) -> u64 {
    docs.iter()
        .map(|d| d["requests"]["sent"].as_u64().unwrap())
        .sum()
}

#[test]
fn shards_of_a_request_budget_send_it_exactly() {
    let server = TestServer::start(Behaviour::keep_alive());
    let url = server.url("/");
    // Shard 1 runs on one core, the others on all they may use: the split still adds up.
    let docs = three_shards(
        &url,
        &["-n", "6", "--requests", "300"],
        [&[], &["--cores", "1"], &[]],
    );
    let shares: Vec<u64> = docs
        .iter()
        .map(|d| d["requests"]["sent"].as_u64().unwrap())
        .collect();
    assert_eq!(shares, [100, 100, 100]);
    assert_eq!(sent(&docs), 300);
    assert_eq!(server.counts().requests, 300);

    let (out, merged) = merge(&docs.iter().collect::<Vec<_>>(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = merged.unwrap();
    assert_eq!(m["requests"]["sent"], 300);
    assert_eq!(m["latency_us"]["count"], 300);
    assert_eq!(m["shards"].as_array().unwrap().len(), 3);
    // Each shard keeps its intervals' latency histograms, from which merge computes the
    // merged rows' percentiles: between the shards' lowest and highest.
    let rows = |d: &Value| d["timeline"].as_array().unwrap().clone();
    for d in &docs {
        for r in rows(d).iter().filter(|r| r["completed"].as_u64() > Some(0)) {
            assert!(r["latency_histogram"].is_string(), "{r}");
        }
    }
    let p99s: Vec<u64> = docs
        .iter()
        .flat_map(rows)
        .filter(|r| r["completed"].as_u64() > Some(0))
        .map(|r| r["p99_us"].as_u64().unwrap())
        .collect();
    for r in rows(&m)
        .iter()
        .filter(|r| r["completed"].as_u64() > Some(0))
    {
        let p99 = r["p99_us"].as_u64().unwrap();
        assert!(r.get("latency_histogram").is_none(), "{r}");
        assert!(
            (*p99s.iter().min().unwrap()..=*p99s.iter().max().unwrap()).contains(&p99),
            "{r} {p99s:?}"
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("blast merge of 3 shard(s)"), "{text}");
    assert!(text.contains("Shard 1/3      100 sent"), "{text}");
    assert!(text.contains("300 sent"), "{text}");

    // A file merged with itself: refused as a duplicate shard, unless asked for; then its
    // counts double and its percentiles stay.
    let (out, _) = merge(&[&docs[0], &docs[0]], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("both shard 0 of 3"), "{err}");
    let (out, merged) = merge(&[&docs[0], &docs[0]], &["--allow-duplicates"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = merged.unwrap();
    assert_eq!(m["requests"]["sent"], 200);
    assert_eq!(
        m["requests"]["ok"],
        docs[0]["requests"]["ok"].as_u64().unwrap() * 2
    );
    for p in ["p50", "p90", "p99", "p999", "max", "min"] {
        assert_eq!(m["latency_us"][p], docs[0]["latency_us"][p], "{p}");
    }
}

#[test]
fn shards_of_an_open_loop_send_one_schedule() {
    let server = TestServer::start(Behaviour::keep_alive());
    let url = server.url("/");
    let docs = three_shards(
        &url,
        &["-n", "6", "--rate", "300", "--duration", "1s"],
        [&[], &["--cores", "1"], &[]],
    );
    let missed: u64 = docs
        .iter()
        .map(|d| d["open_loop"]["missed"].as_u64().unwrap())
        .sum();
    assert_eq!(missed, 0, "a shard fell behind its schedule");
    assert_eq!(
        sent(&docs),
        300,
        "one process's schedule: 300 sends in [0, 1s)"
    );
    for d in &docs {
        // Each shard's target is its part of the run's.
        assert!((d["open_loop"]["target_rps"].as_f64().unwrap() - 100.0).abs() < 1e-6);
    }
    assert_eq!(server.counts().requests, 300);
}

/// A start that is already past is made at once, and reported as late as it is.
#[test]
fn a_late_start_says_how_late() {
    let server = TestServer::start(Behaviour::keep_alive());
    let at = SystemTime::now() - Duration::from_secs(2);
    let at = format!(
        "{:.3}",
        at.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
    );
    let (out, doc) = blast_json(&[
        "--start-at",
        &at,
        "-n",
        "2",
        "--requests",
        "10",
        &server.url("/"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let late = doc["start_late_s"].as_f64().unwrap();
    assert!((2.0..10.0).contains(&late), "start_late_s {late}");
    assert_eq!(doc["shard"]["count"], 1);
    assert_eq!(doc["requests"]["sent"], 10);

    // A day and more ahead is a typo, refused before anything starts.
    let far = format!(
        "{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 90_000
    );
    let out = blast(&["--start-at", &far, &server.url("/")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more than a day ahead"), "{err}");
}
