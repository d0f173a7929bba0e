//! The HTML report: one self-contained page (inline CSS and SVG, no script, nothing
//! fetched) drawn from result documents, so that `--html`, `blast report` and
//! `blast compare --html` share one renderer that reads the JSON contract.

pub mod charts;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::compare::Named;
use crate::report::decode_histogram;
use crate::report::text::fmt_us;
use charts::{color, Chart, Series, XAxis};

/// Text made safe to put in HTML, in an element or a quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The distributions a result may hold, in the order of `Metric::ALL`, with their titles.
const DISTRIBUTIONS: &[(&str, &str)] = &[
    ("latency_us", "Latency"),
    (
        "latency_uncorrected_us",
        "Latency, uncorrected (from the actual send)",
    ),
    ("send_lag_us", "Send lag (actual send - intended send)"),
    ("ttfb_us", "Time to first byte (TTFB)"),
    ("ttft_us", "Time to first token (TTFT)"),
    ("itl_us", "Inter-token latency (ITL)"),
    ("tpot_us", "Time per output token (TPOT)"),
    ("server_queue_us", "Ollama: queue"),
    ("server_load_us", "Ollama: model load"),
    ("server_prompt_eval_us", "Ollama: prompt eval"),
    ("server_eval_us", "Ollama: eval (generation)"),
];

/// Ollama's own timings: drawn together as one breakdown, not one chart each.
fn is_server_timing(key: &str) -> bool {
    key.starts_with("server_")
}

/// Read result documents (blast's, merged, or a sweep's) named after their files.
pub fn load(paths: &[std::path::PathBuf]) -> Result<Vec<Named>, String> {
    crate::compare::load(paths, true)
}

/// Write the page to `path`.
pub fn write(path: &Path, html: &str) -> Result<(), String> {
    std::fs::write(path, html).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The report of one or more runs (or sweeps), each in full, one after the other.
pub fn run_report(docs: &[Named]) -> Result<String, String> {
    let mut body = String::new();
    let title = match docs {
        [one] => format!("blast report: {}", one.name),
        _ => format!("blast report: {} results", docs.len()),
    };
    let _ = writeln!(body, "<h1>{}</h1>", escape(&title));
    for (i, d) in docs.iter().enumerate() {
        if d.doc["sweep"].is_object() {
            body += &sweep_section(d).map_err(|e| format!("{}: {e}", d.name))?;
        }
        if d.doc.pointer("/requests/sent").is_some() {
            body += &run_section(d, i).map_err(|e| format!("{}: {e}", d.name))?;
        }
    }
    Ok(page(&title, &body))
}

/// Runs overlaid: the comparison table, then timelines and spectra with one curve per run.
pub fn compare_report(docs: &[Named], table: &str) -> Result<String, String> {
    let names: Vec<&str> = docs.iter().map(|d| d.name.as_str()).collect();
    let title = format!("blast compare: {}", names.join(" vs "));
    let mut body = format!("<h1>{}</h1>\n", escape(&title));
    body += "<section><h2>Figures (ratios to the first)</h2>\n";
    let _ = writeln!(body, "<pre class=\"table\">{}</pre>", escape(table));
    body += "<table class=\"runs\"><tr><th>run</th><th>started</th><th>target</th><th>limited by</th><th>warnings</th></tr>\n";
    for (i, d) in docs.iter().enumerate() {
        let warnings: Vec<String> = d.doc["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["message"].as_str().map(escape))
            .collect();
        let _ =
            writeln!(
            body,
            "<tr><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"left\">{}</td></tr>",
            swatch(color(i), false),
            escape(&d.name),
            escape(d.doc["started_at"].as_str().unwrap_or("-")),
            escape(d.doc.pointer("/config/url").and_then(Value::as_str).unwrap_or("-")),
            escape(
                d.doc
                    .pointer("/open_loop/limited_by")
                    .and_then(Value::as_str)
                    .unwrap_or("closed loop")
            ),
            if warnings.is_empty() {
                "-".to_string()
            } else {
                warnings.join("<br>")
            }
        );
    }
    body += "</table></section>\n";

    let runs: Vec<(usize, &Named, Vec<Row>)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (i, d, rows(&d.doc)))
        .collect();
    let mut figs = Vec::new();
    let mut rate = Vec::new();
    let mut lat = Vec::new();
    let mut inflight = Vec::new();
    let mut failing = Vec::new();
    let mut tokens = Vec::new();
    for (i, d, rows) in &runs {
        let c = color(*i);
        rate.push(Series::new(
            format!("{} completed", d.name),
            c,
            line(rows, |r| r.rps),
        ));
        if rows.iter().any(|r| r.target > 0.0) {
            rate.push(
                Series::new(format!("{} offered", d.name), c, line(rows, |r| r.target)).dashed(),
            );
        }
        lat.push(Series::new(
            format!("{} p99", d.name),
            c,
            line(rows, |r| r.p99_ms),
        ));
        lat.push(Series::new(format!("{} p50", d.name), c, line(rows, |r| r.p50_ms)).dashed());
        inflight.push(Series::new(
            d.name.clone(),
            c,
            at_ends(rows, |r| r.in_flight),
        ));
        failing.push(Series::new(
            d.name.clone(),
            c,
            line(rows, |r| r.per_s(r.errors + r.completed - r.ok)),
        ));
        if rows.iter().any(|r| r.tokens_per_s > 0.0) {
            tokens.push(Series::new(
                d.name.clone(),
                c,
                line(rows, |r| r.tokens_per_s),
            ));
        }
    }
    figs.push(time_chart(
        "Completed req/s (dashed: offered)",
        "req/s",
        rate,
    )?);
    figs.push(time_chart("Latency p99 (dashed: p50)", "ms", lat)?);
    figs.push(time_chart("In flight", "requests", inflight)?);
    figs.push(time_chart(
        "Failed or non-2xx per second",
        "per s",
        failing,
    )?);
    if !tokens.is_empty() {
        figs.push(time_chart("Generated tokens/s", "tokens/s", tokens)?);
    }
    for (key, title) in DISTRIBUTIONS {
        let mut series = Vec::new();
        for (i, d, _) in &runs {
            if let Some(pts) = spectrum_of(&d.doc, key)? {
                series.push(Series::new(d.name.clone(), color(*i), pts));
            }
        }
        if !series.is_empty() {
            figs.push(spectrum_chart(
                &format!("{title}: percentile spectrum"),
                series,
            )?);
        }
    }
    body += "<section><h2>Overlaid</h2>\n";
    body += &grid(&figs);
    body += "</section>\n";
    Ok(page(&title, &body))
}

/// One interval of a timeline, read from the document.
#[derive(Clone, Debug, Default)]
struct Row {
    t: f64,
    dt: f64,
    target: f64,
    sent: f64,
    completed: f64,
    ok: f64,
    errors: f64,
    in_flight: f64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    tokens_per_s: f64,
    status: Option<BTreeMap<String, f64>>,
    errors_by_kind: Option<BTreeMap<String, f64>>,
}

impl Row {
    fn per_s(&self, n: f64) -> f64 {
        if self.dt > 0.0 {
            n / self.dt
        } else {
            0.0
        }
    }
}

fn rows(doc: &Value) -> Vec<Row> {
    let num = |r: &Value, k: &str| r[k].as_f64().unwrap_or(0.0);
    doc["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| Row {
            t: num(r, "t_s"),
            dt: num(r, "dt_s"),
            target: num(r, "target_rps"),
            sent: num(r, "sent"),
            completed: num(r, "completed"),
            ok: num(r, "ok"),
            errors: num(r, "errors"),
            in_flight: num(r, "in_flight"),
            rps: num(r, "rps"),
            p50_ms: num(r, "p50_us") / 1e3,
            p99_ms: num(r, "p99_us") / 1e3,
            tokens_per_s: num(r, "tokens_per_s"),
            status: counts(&r["status"]),
            errors_by_kind: counts(&r["errors_by_kind"]),
        })
        .collect()
}

/// A row's counts by status code or error kind; None in documents from before they were
/// kept (and in merged ones of those).
fn counts(v: &Value) -> Option<BTreeMap<String, f64>> {
    v.as_object().map(|m| {
        m.iter()
            .map(|(k, n)| (k.clone(), n.as_f64().unwrap_or(0.0)))
            .collect()
    })
}

/// A figure of each interval, drawn flat across it (a rate or percentile of the interval).
fn line(rows: &[Row], y: impl Fn(&Row) -> f64) -> Vec<(f64, f64)> {
    rows.iter()
        .flat_map(|r| {
            let v = y(r);
            [((r.t - r.dt).max(0.0), v), (r.t, v)]
        })
        .collect()
}

/// Responses per second by status code (solid) and failures by error kind (dashed); for
/// documents without those counts per interval, 2xx, other statuses and errors.
fn status_series(rows: &[Row]) -> Vec<Series> {
    if rows.is_empty() || rows.iter().any(|r| r.status.is_none()) {
        return vec![
            Series::new("2xx", color(2), line(rows, |r| r.per_s(r.ok))),
            Series::new(
                "other status",
                color(1),
                line(rows, |r| r.per_s(r.completed - r.ok)),
            ),
            Series::new("errors", color(3), line(rows, |r| r.per_s(r.errors))),
        ];
    }
    let keys = |of: fn(&Row) -> &Option<BTreeMap<String, f64>>| -> BTreeSet<String> {
        rows.iter()
            .flat_map(|r| of(r).iter().flat_map(|m| m.keys().cloned()))
            .collect()
    };
    let codes = keys(|r| &r.status);
    let kinds = keys(|r| &r.errors_by_kind);
    // The first 2xx code is green, the first error kind red; the others take the
    // palette's remaining colours.
    let mut others = [1, 4, 5, 6, 8, 9, 0, 7].into_iter().cycle();
    let mut red = Some(3);
    let mut green = Some(2);
    let mut series = Vec::new();
    for code in &codes {
        let c = match code.starts_with('2') {
            true => green
                .take()
                .unwrap_or_else(|| others.next().expect("cycles")),
            false => others.next().expect("cycles"),
        };
        let pts = line(rows, |r| {
            r.per_s(
                r.status
                    .as_ref()
                    .and_then(|m| m.get(code))
                    .copied()
                    .unwrap_or(0.0),
            )
        });
        series.push(Series::new(code.clone(), color(c), pts));
    }
    for kind in &kinds {
        let pts = line(rows, |r| {
            r.per_s(
                r.errors_by_kind
                    .as_ref()
                    .and_then(|m| m.get(kind))
                    .copied()
                    .unwrap_or(0.0),
            )
        });
        let c = red.take().unwrap_or_else(|| others.next().expect("cycles"));
        series.push(Series::new(format!("{kind} (error)"), color(c), pts).dashed());
    }
    if series.is_empty() {
        // Nothing answered and nothing failed: say so with a flat line.
        series.push(Series::new("no responses", color(7), line(rows, |_| 0.0)));
    }
    series
}

/// A figure sampled at the end of each interval (in flight).
fn at_ends(rows: &[Row], y: impl Fn(&Row) -> f64) -> Vec<(f64, f64)> {
    rows.iter().map(|r| (r.t, y(r))).collect()
}

/// The percentile spectrum of distribution `key` in ms, if the document has its histogram
/// and it holds anything.
fn spectrum_of(doc: &Value, key: &str) -> Result<Option<Vec<(f64, f64)>>, String> {
    let Some(text) = doc["histograms"][key].as_str() else {
        return Ok(None);
    };
    let h = decode_histogram(text).map_err(|e| format!("histograms.{key}: {e}"))?;
    if h.is_empty() {
        return Ok(None);
    }
    Ok(Some(spectrum(&h)))
}

/// HdrHistogram's percentile distribution: (x on the percentile axis, value in ms).
fn spectrum(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
    h.iter_quantiles(5)
        .map(|v| {
            (
                charts::percentile_x(v.quantile_iterated_to()),
                h.highest_equivalent(v.value_iterated_to()) as f64 / 1e3,
            )
        })
        .collect()
}

fn time_chart(title: &str, y_desc: &str, series: Vec<Series>) -> Result<String, String> {
    figure(&Chart {
        title,
        x: XAxis::Seconds,
        x_desc: "seconds since the start",
        y_desc,
        series,
        marker: None,
    })
}

fn spectrum_chart(title: &str, series: Vec<Series>) -> Result<String, String> {
    figure(&Chart {
        title,
        x: XAxis::Percentile,
        x_desc: "percentile",
        y_desc: "ms",
        series,
        marker: None,
    })
}

/// Where a mean request's time went: Ollama's own parts (means add up, percentiles do
/// not), then the rest of the time blast measured from its write to the response's end
/// (network, proxies, blast).
fn server_breakdown(doc: &Value) -> Result<Option<String>, String> {
    let mean_ms = |key: &str| doc[key]["mean"].as_f64().map(|us| us / 1e3);
    let mut parts: Vec<(String, f64, plotters::style::RGBColor)> = DISTRIBUTIONS
        .iter()
        .enumerate()
        .filter(|(_, (key, _))| is_server_timing(key))
        .filter_map(|(i, (key, title))| {
            let name = title.trim_start_matches("Ollama: ").to_string();
            mean_ms(key).map(|ms| (name, ms, color(i)))
        })
        .collect();
    if parts.is_empty() {
        return Ok(None);
    }
    let server: f64 = parts.iter().map(|p| p.1).sum();
    let measured = mean_ms("latency_uncorrected_us").or_else(|| mean_ms("latency_us"));
    if let Some(rest) = measured.map(|m| m - server).filter(|r| *r > 0.0) {
        parts.push(("outside Ollama".into(), rest, color(7)));
    }
    let svg = charts::draw_breakdown("Mean request time, by part", "ms", &parts)?;
    let keys: String = parts
        .iter()
        .map(|(name, ms, c)| {
            format!(
                "<span class=\"key\"><i class=\"sw bar\" style=\"background:#{:02x}{:02x}{:02x}\"></i>{} {}</span>",
                c.0,
                c.1,
                c.2,
                escape(name),
                escape(&fmt_us(ms * 1e3))
            )
        })
        .collect();
    Ok(Some(format!(
        "<figure>{svg}<figcaption>{keys}</figcaption></figure>\n"
    )))
}

/// A chart with its legend (HTML, below it).
fn figure(c: &Chart) -> Result<String, String> {
    let svg = charts::draw(c)?;
    let keys: String = c
        .series
        .iter()
        .map(|s| {
            format!(
                "<span class=\"key\">{}{}</span>",
                swatch(s.color, s.dashed),
                escape(&s.name)
            )
        })
        .collect();
    Ok(format!(
        "<figure>{svg}<figcaption>{keys}</figcaption></figure>\n"
    ))
}

fn swatch(c: plotters::style::RGBColor, dashed: bool) -> String {
    format!(
        "<i class=\"sw{}\" style=\"border-color:#{:02x}{:02x}{:02x}\"></i>",
        if dashed { " dash" } else { "" },
        c.0,
        c.1,
        c.2
    )
}

fn grid(figs: &[String]) -> String {
    format!("<div class=\"charts\">\n{}</div>\n", figs.concat())
}

fn num(doc: &Value, pointer: &str) -> Option<f64> {
    doc.pointer(pointer).and_then(Value::as_f64)
}

fn card(label: &str, value: String) -> String {
    format!(
        "<div class=\"card\"><b>{}</b><span>{}</span></div>",
        escape(&value),
        escape(label)
    )
}

/// A plain number: no decimals when large, two when small.
fn plain(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// One run: headline, verdict and warnings, config, charts, tables.
fn run_section(d: &Named, index: usize) -> Result<String, String> {
    let doc = &d.doc;
    let mut s = format!("<section id=\"run-{index}\">\n");
    let _ = writeln!(s, "<h2>{}</h2>", escape(&d.name));
    let meta = [
        doc.pointer("/config/url").and_then(Value::as_str),
        doc["started_at"].as_str(),
        doc.pointer("/config/scenario").and_then(Value::as_str),
    ];
    let meta: Vec<String> = meta.iter().flatten().map(|m| escape(m)).collect();
    let _ = writeln!(s, "<p class=\"meta\">{}</p>", meta.join(" &middot; "));

    // Headline figures.
    let mut cards = Vec::new();
    let sent = num(doc, "/requests/sent").unwrap_or(0.0);
    let ok = num(doc, "/requests/ok").unwrap_or(0.0);
    cards.push(card(
        "completed req/s",
        plain(num(doc, "/rps").unwrap_or(0.0)),
    ));
    if let Some(o) = doc.get("open_loop").filter(|o| o.is_object()) {
        let t = o["target_rps"].as_f64().unwrap_or(0.0);
        let a = o["achieved_rps"].as_f64().unwrap_or(0.0);
        cards.push(card("offered req/s", plain(t)));
        cards.push(card("sent req/s", plain(a)));
    }
    cards.push(card("requests sent", format!("{sent:.0}")));
    let ok_pct = if sent > 0.0 { ok * 100.0 / sent } else { 0.0 };
    cards.push(card("ok (2xx)", format!("{ok_pct:.2}%")));
    cards.push(card(
        "failed",
        format!("{:.0}", num(doc, "/requests/failed").unwrap_or(0.0)),
    ));
    for (label, ptr) in [
        ("latency p50", "/latency_us/p50"),
        ("latency p99", "/latency_us/p99"),
        ("latency p99.9", "/latency_us/p999"),
        ("latency max", "/latency_us/max"),
        ("TTFT p50", "/ttft_us/p50"),
        ("TTFT p99", "/ttft_us/p99"),
        ("TPOT p50", "/tpot_us/p50"),
    ] {
        // A distribution with no sample (nothing answered) has no figures to show.
        let key = ptr.split('/').nth(1).unwrap_or("");
        let empty = doc[key]["count"].as_u64() == Some(0);
        if let Some(v) = num(doc, ptr) {
            cards.push(card(label, if empty { "-".into() } else { fmt_us(v) }));
        }
    }
    if let Some(v) = num(doc, "/tokens/per_s") {
        cards.push(card("tokens/s", plain(v)));
    }
    if let Some(v) = num(doc, "/goodput/rps") {
        cards.push(card("goodput req/s", plain(v)));
    }
    cards.push(card(
        "elapsed",
        format!("{:.2} s", num(doc, "/elapsed_s").unwrap_or(0.0)),
    ));
    if let Some(v) = num(doc, "/client_cpu_utilization") {
        cards.push(card("blast CPU", format!("{:.0}%", v * 100.0)));
    }
    let _ = writeln!(s, "<div class=\"cards\">{}</div>", cards.concat());

    // Verdict and warnings.
    let limit = doc.pointer("/open_loop/limited_by").and_then(Value::as_str);
    let warnings: Vec<&str> = doc["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["message"].as_str())
        .collect();
    let (class, verdict) = match limit {
        Some("none") => (
            "good",
            "Open loop: nothing limited the run; blast sent what was asked for.".to_string(),
        ),
        Some(l) => ("bad", format!("Open loop: the run was limited by {l}.")),
        None => {
            let not_ok = sent - ok;
            if not_ok > 0.0 {
                ("bad", format!("Closed loop: {not_ok:.0} of {sent:.0} requests failed or were not answered with a 2xx (see the tables below)."))
            } else {
                ("neutral", "Closed loop: each connection sends its next request when the last one is answered, so there is no offered rate to judge.".to_string())
            }
        }
    };
    let class = if class == "neutral" && !warnings.is_empty() {
        "bad"
    } else {
        class
    };
    let _ = write!(
        s,
        "<div class=\"verdict {class}\"><b>Verdict:</b> {}",
        escape(&verdict)
    );
    if !warnings.is_empty() {
        s += "<ul>";
        for w in &warnings {
            let _ = write!(s, "<li>{}</li>", escape(w));
        }
        s += "</ul>";
    }
    s += "</div>\n";

    let config = serde_json::to_string_pretty(&doc["config"]).unwrap_or_default();
    let _ = writeln!(
        s,
        "<details open><summary>Config</summary><pre class=\"config\">{}</pre></details>",
        escape(&config)
    );

    // Charts.
    let rows = rows(doc);
    let mut figs = Vec::new();
    let mut rates = Vec::new();
    if rows.iter().any(|r| r.target > 0.0) {
        rates.push(Series::new("offered (target)", color(7), line(&rows, |r| r.target)).dashed());
    }
    rates.push(Series::new(
        "sent",
        color(0),
        line(&rows, |r| r.per_s(r.sent)),
    ));
    rates.push(Series::new("completed", color(1), line(&rows, |r| r.rps)));
    // Dashed, so that completed shows through where every response was a 2xx.
    rates.push(Series::new("ok (2xx)", color(2), line(&rows, |r| r.per_s(r.ok))).dashed());
    figs.push(time_chart("Offered, achieved and ok rate", "req/s", rates)?);
    figs.push(time_chart(
        "Latency over time",
        "ms",
        vec![
            Series::new("p99", color(3), line(&rows, |r| r.p99_ms)),
            Series::new("p50", color(0), line(&rows, |r| r.p50_ms)),
        ],
    )?);
    figs.push(time_chart(
        "In flight (at the end of each interval)",
        "requests",
        vec![Series::new(
            "in flight",
            color(4),
            at_ends(&rows, |r| r.in_flight),
        )],
    )?);
    figs.push(time_chart(
        "Status codes and errors",
        "per s",
        status_series(&rows),
    )?);
    if rows.iter().any(|r| r.tokens_per_s > 0.0) {
        figs.push(time_chart(
            "Generated tokens/s",
            "tokens/s",
            vec![Series::new(
                "tokens/s",
                color(5),
                line(&rows, |r| r.tokens_per_s),
            )],
        )?);
    }
    let mut server = Vec::new();
    for (i, (key, title)) in DISTRIBUTIONS.iter().enumerate() {
        let Some(pts) = spectrum_of(doc, key)? else {
            continue;
        };
        if is_server_timing(key) {
            server.push(Series::new(
                title.trim_start_matches("Ollama: "),
                color(i),
                pts,
            ));
        } else {
            figs.push(spectrum_chart(
                &format!("{title}: percentile spectrum"),
                vec![Series::new(*title, color(0), pts)],
            )?);
        }
    }
    if !server.is_empty() {
        figs.push(spectrum_chart(
            "Ollama server timing: percentile spectra",
            server,
        )?);
    }
    if let Some(fig) = server_breakdown(doc)? {
        figs.push(fig);
    }
    s += &grid(&figs);

    // Tables: status codes, errors, distributions.
    s += "<div class=\"tables\">";
    s += "<table><tr><th>status</th><th>responses</th></tr>";
    for (code, n) in doc["status"].as_object().into_iter().flatten() {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(code),
            n.as_u64().unwrap_or(0)
        );
    }
    if doc["status"].as_object().is_none_or(|m| m.is_empty()) {
        s += "<tr><td>none</td><td>0</td></tr>";
    }
    s += "</table>\n<table><tr><th>error</th><th>requests</th><th class=\"left\">first messages</th></tr>";
    if doc["errors"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(_, n)| n.as_u64() == Some(0))
    {
        s += "<tr><td>none</td><td>0</td><td></td></tr>";
    }
    for (kind, n) in doc["errors"].as_object().into_iter().flatten() {
        let n = n.as_u64().unwrap_or(0);
        if n == 0 {
            continue;
        }
        let msgs: Vec<String> = doc["error_messages"][kind]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(escape))
            .collect();
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{n}</td><td class=\"left\">{}</td></tr>",
            escape(kind),
            msgs.join("<br>")
        );
    }
    s += "</table>\n<table><tr><th>distribution</th><th>count</th><th>mean</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>";
    for (key, title) in DISTRIBUTIONS {
        let Some(d) = doc.get(*key).filter(|d| d.is_object()) else {
            continue;
        };
        let f = |k: &str| d[k].as_f64().map_or("-".into(), fmt_us);
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(title),
            d["count"].as_u64().unwrap_or(0),
            f("mean"),
            f("p50"),
            f("p90"),
            f("p99"),
            f("p999"),
            f("max")
        );
    }
    s += "</table></div>\n</section>\n";
    Ok(s)
}

/// A sweep (`blast sweep`): the latency-throughput curve with its knee, and the steps.
fn sweep_section(d: &Named) -> Result<String, String> {
    let sw = &d.doc["sweep"];
    let steps: Vec<&Value> = sw["steps"].as_array().into_iter().flatten().collect();
    let mut s = String::from("<section class=\"sweep\">\n");
    let _ = writeln!(s, "<h2>Sweep: {}</h2>", escape(&d.name));
    let knee = sw["max_sustainable_rps"].as_f64();
    let limit = sw["limit"].as_str().unwrap_or("-");
    let knee_text = match knee {
        Some(k) => format!("{} req/s", plain(k)),
        None => "not found".to_string(),
    };
    let mut cards = vec![
        card("max sustainable req/s", knee_text.clone()),
        card("limited by", limit.to_string()),
    ];
    if let Some(v) = sw["unloaded_p99_ms"].as_f64() {
        cards.push(card("unloaded p99", fmt_us(v * 1e3)));
    }
    cards.push(card("steps", steps.len().to_string()));
    let _ = writeln!(s, "<div class=\"cards\">{}</div>", cards.concat());

    // Steps in order of achieved rate, so the curve reads left to right.
    let mut by_rate: Vec<&Value> = steps.clone();
    by_rate.sort_by(|a, b| {
        let r = |v: &Value| v["achieved_rps"].as_f64().unwrap_or(0.0);
        r(a).total_cmp(&r(b))
    });
    let curve = |k: &str| -> Vec<(f64, f64)> {
        by_rate
            .iter()
            .filter_map(|st| Some((st["achieved_rps"].as_f64()?, st[k].as_f64()?)))
            .collect()
    };
    let mut figs = vec![figure(&Chart {
        title: "Latency against throughput",
        x: XAxis::Rate,
        x_desc: "achieved req/s",
        y_desc: "ms",
        series: vec![
            Series::new("p99", color(3), curve("p99_ms")).marked(),
            Series::new("p50", color(0), curve("p50_ms")).marked(),
        ],
        marker: knee.map(|k| (k, format!("max sustainable {knee_text}"))),
    })?];
    let mut spectra = Vec::new();
    for (i, st) in steps.iter().enumerate() {
        if let Some(pts) = spectrum_of(&st["result"], "latency_us")? {
            spectra.push(Series::new(step_name(i, st), color(i), pts));
        }
    }
    if !spectra.is_empty() {
        figs.push(spectrum_chart("Latency spectrum of each step", spectra)?);
    }
    s += &grid(&figs);

    s += "<table><tr><th>step</th><th>kind</th><th>offered req/s</th><th>achieved req/s</th><th>ok %</th><th>p50</th><th>p99</th><th>limited by</th></tr>";
    for (i, st) in steps.iter().enumerate() {
        let f = |k: &str| st[k].as_f64().map_or("-".into(), plain);
        let ms = |k: &str| st[k].as_f64().map_or("-".into(), |v| fmt_us(v * 1e3));
        let marked = match (knee, st["achieved_rps"].as_f64()) {
            (Some(k), Some(a)) if (k - a).abs() < 1e-9 => " class=\"knee\"",
            _ => "",
        };
        let _ = write!(
            s,
            "<tr{marked}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            i + 1,
            escape(st["kind"].as_str().unwrap_or("-")),
            f("offered_rps"),
            f("achieved_rps"),
            st["ok_pct"].as_f64().map_or("-".into(), |v| format!("{v:.2}")),
            ms("p50_ms"),
            ms("p99_ms"),
            escape(
                st.pointer("/result/open_loop/limited_by")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
            ),
        );
    }
    s += "</table>\n</section>\n";
    Ok(s)
}

fn step_name(i: usize, st: &Value) -> String {
    match st["offered_rps"].as_f64() {
        Some(r) => format!(
            "{}: {} at {} req/s",
            i + 1,
            st["kind"].as_str().unwrap_or("step"),
            plain(r)
        ),
        None => format!("{}: {}", i + 1, st["kind"].as_str().unwrap_or("step")),
    }
}

const CSS: &str = r#"
:root{color-scheme:light}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0 auto;max-width:1500px;padding:16px 24px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 6px}
h2{font-size:19px;border-bottom:2px solid #ddd;padding-bottom:4px;margin:28px 0 8px}
.meta{color:#555;margin:0 0 10px;word-break:break-all}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:8px;margin:8px 0 12px}
.card{border:1px solid #ddd;border-radius:6px;padding:6px 10px}
.card b{display:block;font-size:19px;font-variant-numeric:tabular-nums}
.card span{color:#555;font-size:13px}
.verdict{padding:8px 12px;border-radius:6px;border-left:5px solid #999;background:#f4f4f4;margin:8px 0}
.verdict ul{margin:4px 0 0;padding-left:20px}
.verdict.good{background:#eef8ee;border-color:#2ca02c}
.verdict.bad{background:#fdf0ec;border-color:#d62728}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px;margin:14px 0}
figure{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:6px;break-inside:avoid}
figure svg{width:100%;height:auto;display:block}
figcaption{font-size:13px;color:#333;padding:2px 6px}
.key{display:inline-block;margin-right:14px;white-space:nowrap}
.sw{display:inline-block;width:20px;height:0;border-top:3px solid;vertical-align:middle;margin-right:5px}
.sw.dash{border-top-style:dashed}
.sw.bar{height:12px;border:0;width:14px;print-color-adjust:exact;-webkit-print-color-adjust:exact}
.tables{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:8px 0;font-size:14px}
th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:right;vertical-align:top}
th{background:#f6f6f6}
th:first-child,td:first-child,td.left,th.left,table.runs th,table.runs td{text-align:left}
table.runs td:first-child,table.runs td:nth-child(2){white-space:nowrap}
tr.knee td{background:#fff3cd;font-weight:bold}
details summary{cursor:pointer;font-weight:bold;margin:6px 0}
pre{background:#f6f6f6;padding:8px 10px;border-radius:6px;overflow:auto;font-size:12.5px;margin:4px 0}
pre.config{columns:4 260px;column-rule:1px solid #e3e3e3;white-space:pre-wrap;word-break:break-all}
@media print{
 body{max-width:none;padding:0;font-size:10.5pt}
 .charts{grid-template-columns:1fr 1fr}
 figure,table,.cards,.verdict{break-inside:avoid}
 h2{break-after:avoid}
}
"#;

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"blast {}\">\n<title>{}</title>\n<style>{CSS}</style>\n\
         </head>\n<body>\n{body}<footer class=\"meta\">Written by blast {}.</footer>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION"),
        escape(title),
        env!("CARGO_PKG_VERSION"),
    )
}

#[cfg(test)]
mod tests;
