use super::*;
use crate::report::encode_histogram;
use crate::stats::new_histogram;
use serde_json::json;

/// A histogram of `n` values spread from `lo_us` up, encoded as in a result document.
fn hist(lo_us: u64, n: u64) -> String {
    let mut h = new_histogram();
    for i in 0..n {
        h.record(lo_us + i * 7 % 1000 + i * i % 97).unwrap();
    }
    encode_histogram(&h)
}

fn summary() -> Value {
    json!({"count": 100, "min": 100, "mean": 500.0, "stdev": 10.0, "p50": 450, "p90": 800,
           "p99": 950, "p999": 990, "max": 1000})
}

/// A result document with the keys the renderer reads: closed loop, plain HTTP.
fn closed_loop() -> Value {
    let rows: Vec<Value> = (1..=5)
        .map(|t| {
            json!({"t_s": t as f64, "dt_s": 1.0, "target_rps": 0.0, "sent": 100, "completed": 99,
                   "ok": 97, "errors": 1, "in_flight": 4, "rps": 99.0, "p50_us": 400 + t,
                   "p99_us": 900 + t, "tokens": 0, "tokens_per_s": 0.0,
                   "status": {"200": 97, "503": 2}, "errors_by_kind": {"timeout": 1}})
        })
        .collect();
    json!({
        "tool": "blast", "started_at": "2026-12-05T19:00:00Z", "elapsed_s": 5.0, "rps": 99.0,
        "requests": {"sent": 500, "completed": 495, "ok": 485, "failed": 5, "cut_off": 0},
        "status": {"200": 485, "503": 10}, "errors": {"connect": 0, "timeout": 5},
        "error_messages": {"timeout": ["no response within 30s"]},
        "latency_us": summary(), "warnings": [], "timeline": rows,
        "histograms": {"latency_us": hist(300, 500)},
        "config": {"url": "http://127.0.0.1:8080/", "conns": 4},
    })
}

/// An open-loop Ollama run with every distribution blast keeps.
fn llm_open_loop() -> Value {
    let mut doc = closed_loop();
    for r in doc["timeline"].as_array_mut().unwrap() {
        r["target_rps"] = json!(100.0);
        r["tokens_per_s"] = json!(3000.0);
    }
    doc["open_loop"] = json!({"target_rps": 100.0, "achieved_rps": 99.5, "missed": 0,
        "send_lag_p99_us": 80, "kept_up": true, "limited_by": "server"});
    doc["warnings"] = json!([{"code": "limited_by_server",
        "message": "the run was limited by the server: <it> fell behind"}]);
    doc["tokens"] = json!({"output": 15000, "per_s": 3000.0, "source": "server", "prompt": 10});
    for (key, _) in DISTRIBUTIONS {
        doc[*key] = summary();
        doc["histograms"][*key] = json!(hist(50, 300));
    }
    doc
}

fn named(name: &str, doc: Value) -> Named {
    Named {
        name: name.into(),
        doc,
    }
}

/// The legend under the chart titled `title`.
fn legend_of<'a>(page: &'a str, title: &str) -> &'a str {
    let after = page.split(title).nth(1).expect("the chart is there");
    let legend = after.split("<figcaption>").nth(1).unwrap();
    legend.split("</figcaption>").next().unwrap()
}

fn svgs(page: &str) -> usize {
    page.matches("<svg").count()
}

/// Nothing the page loads comes from elsewhere: no src or href to a URL, no script,
/// no stylesheet link, no CSS import or url().
fn assert_self_contained(page: &str) {
    let lower = page.to_ascii_lowercase();
    for bad in [
        "src=\"http",
        "src='http",
        "href=\"http",
        "href='http",
        "href=\"//",
        "src=\"//",
        "<script",
        "<link",
        "@import",
        "url(",
        "<iframe",
        "<img",
    ] {
        assert!(!lower.contains(bad), "the page has {bad:?}");
    }
    for attr in ["src=", "href="] {
        assert!(!lower.contains(attr), "the page loads something: {attr}");
    }
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.trim_end().ends_with("</html>"));
}

#[test]
fn escape_covers_the_five_characters_and_nothing_else() {
    assert_eq!(
        escape(r#"<a href="x">&'é"#),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;é"
    );
    assert_eq!(escape("plain text 123"), "plain text 123");
    // Escaping is not idempotent by accident: an entity is escaped again.
    assert_eq!(escape("&amp;"), "&amp;amp;");
    assert_eq!(escape(""), "");
}

#[test]
fn a_closed_loop_run_has_its_timeline_plots_and_one_spectrum() {
    let page = run_report(&[named("plain", closed_loop())]).unwrap();
    // Rates, latency over time, in flight, responses and errors; the latency spectrum.
    assert_eq!(svgs(&page), 5, "{page}");
    for title in [
        "Offered, achieved and ok rate",
        "Latency over time",
        "In flight",
        "Status codes and errors",
        "Latency: percentile spectrum",
    ] {
        assert!(page.contains(title), "missing {title}");
    }
    assert!(!page.contains("tokens/s"), "no LLM plot for plain HTTP");
    assert!(
        page.contains("verdict bad"),
        "failures make a closed loop's verdict bad"
    );
    assert!(page.contains("Closed loop: 15 of 500 requests failed"));
    // One curve per status code and per error kind.
    let legend = legend_of(&page, "Status codes and errors");
    for key in [">200</span>", ">503</span>", ">timeout (error)</span>"] {
        assert!(legend.contains(key), "{key} in {legend}");
    }
    // A document from before the per-interval counts: 2xx, other statuses, errors.
    let mut old = closed_loop();
    for r in old["timeline"].as_array_mut().unwrap() {
        let r = r.as_object_mut().unwrap();
        r.remove("status");
        r.remove("errors_by_kind");
    }
    let page = run_report(&[named("old", old)]).unwrap();
    let legend = legend_of(&page, "Status codes and errors");
    assert!(legend.contains(">2xx</span>") && legend.contains(">other status</span>"));
    // The status and error tables.
    assert!(page.contains("<td>503</td><td>10</td>"));
    assert!(page.contains("no response within 30s"));
    assert_self_contained(&page);
}

#[test]
fn an_llm_open_loop_run_has_a_plot_for_every_distribution() {
    let page = run_report(&[named("llm", llm_open_loop())]).unwrap();
    // 5 over time (with tokens/s), 7 spectra, the server timing's spectra and breakdown.
    assert_eq!(svgs(&page), 14);
    assert!(page.contains("Mean request time, by part"));
    // The summaries' means: 500 us for each of 4 parts, then the rest of the 500 us measured.
    assert!(!page.contains("outside Ollama"), "no time is left outside");
    let mut longer = llm_open_loop();
    longer["latency_uncorrected_us"]["mean"] = json!(3000.0);
    let page = run_report(&[named("llm", longer)]).unwrap();
    assert!(
        page.contains("outside Ollama 1.00ms"),
        "3 ms measured, 2 ms in Ollama"
    );
    for (key, title) in DISTRIBUTIONS {
        if is_server_timing(key) {
            let short = title.trim_start_matches("Ollama: ");
            assert!(page.contains(&escape(short)), "missing {key}");
        } else {
            let caption = escape(&format!("{title}: percentile spectrum"));
            assert!(page.contains(&caption), "missing {key}");
        }
    }
    assert!(page.contains("Ollama server timing: percentile spectra"));
    assert!(page.contains("limited by server"));
    // Warnings are escaped like everything else.
    assert!(page.contains("the server: &lt;it&gt; fell behind"));
    assert!(page.contains("offered (target)"));
    assert_self_contained(&page);
}

#[test]
fn the_config_is_escaped() {
    let mut doc = closed_loop();
    doc["config"]["llm"] = json!({"model": "</pre><script>alert('x')</script>"});
    doc["config"]["headers"] = json!(["X-A: \"q\" & <b>"]);
    let page = run_report(&[named("esc", doc)]).unwrap();
    assert!(
        !page.contains("<script"),
        "the config broke out of its <pre>"
    );
    assert!(page.contains("&lt;/pre&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(page.contains("&amp; &lt;b&gt;"));
    // A file name is text too.
    let page = run_report(&[named("<b>run</b>", closed_loop())]).unwrap();
    assert!(page.contains("&lt;b&gt;run&lt;/b&gt;") && !page.contains("<b>run"));
    assert_self_contained(&page);
}

#[test]
fn a_compare_overlays_every_run() {
    let docs = [named("base", closed_loop()), named("new", llm_open_loop())];
    let page = compare_report(&docs, "req/s  99  99 (1.00x)").unwrap();
    // Rates, latency, in flight, failures, tokens/s (one run has them), then a spectrum per
    // distribution present in any run.
    assert_eq!(svgs(&page), 5 + DISTRIBUTIONS.len());
    // Both runs are in the latency spectrum's legend.
    let legend = legend_of(&page, "Latency: percentile spectrum");
    assert!(
        legend.contains(">base</span>") && legend.contains(">new</span>"),
        "{legend}"
    );
    assert!(page.contains("req/s  99  99 (1.00x)"));
    assert_self_contained(&page);
}

#[test]
fn a_sweep_shows_its_curve_knee_and_steps() {
    let step = |kind: &str, offered: Option<f64>, achieved: f64, p99: f64| {
        json!({"kind": kind, "offered_rps": offered, "achieved_rps": achieved, "ok_pct": 100.0,
               "p50_ms": p99 / 2.0, "p99_ms": p99, "result": closed_loop()})
    };
    let doc = json!({"sweep": {"max_sustainable_rps": 400.0, "limit": "p99 > 3x unloaded",
    "unloaded_p99_ms": 1.5, "steps": [
        step("unloaded", None, 10.0, 1.5),
        step("ceiling", None, 900.0, 40.0),
        step("rate", Some(200.0), 200.0, 1.8),
        step("rate", Some(400.0), 400.0, 3.0),
        step("rate", Some(600.0), 560.0, 25.0),
    ]}});
    let page = run_report(&[named("sweep", doc)]).unwrap();
    // The curve and the steps' spectra; no run section, the document is not a result.
    assert_eq!(svgs(&page), 2);
    assert!(page.contains("Latency against throughput"));
    assert!(
        page.contains("max sustainable 400 req/s"),
        "the knee is marked"
    );
    assert_eq!(page.matches("<tr class=\"knee\">").count(), 1);
    assert_eq!(page.matches("<td>rate</td>").count(), 3);
    assert!(page.contains("<td>ceiling</td>") && page.contains("<td>unloaded</td>"));
    assert_self_contained(&page);
    // No knee found: no marker, and the page says so.
    let none = json!({"sweep": {"max_sustainable_rps": null, "limit": "errors",
        "unloaded_p99_ms": 1.0, "steps": [step("unloaded", None, 10.0, 1.0)]}});
    let page = run_report(&[named("s", none)]).unwrap();
    assert!(page.contains("not found") && !page.contains("max sustainable not"));
}

#[test]
fn a_broken_histogram_is_an_error_not_a_blank_chart() {
    let mut doc = closed_loop();
    doc["histograms"]["latency_us"] = json!("not base64!");
    let e = run_report(&[named("bad", doc)]).unwrap_err();
    assert!(e.contains("bad: histograms.latency_us"), "{e}");
}

#[test]
fn the_spectrum_rises_to_the_max_at_the_last_nine() {
    let mut h = new_histogram();
    for v in 1..=100_000u64 {
        h.record(v).unwrap();
    }
    let pts = spectrum(&h);
    assert_eq!(pts[0].0, 0.0);
    assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    let last = pts.last().unwrap();
    assert_eq!(last.0, charts::PERCENTILE_NINES);
    assert!((last.1 - 100.0).abs() < 0.1, "{last:?}");
    // The median is near 50 ms.
    let mid = pts
        .iter()
        .find(|p| p.0 >= charts::percentile_x(0.5))
        .unwrap();
    assert!((mid.1 - 50.0).abs() < 1.0, "{mid:?}");
}
