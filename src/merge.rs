//! `blast merge A.json B.json ...`: the result documents of the shards of one run
//! (`--shard I/N`) made into one. Counters are summed; every distribution is recomputed
//! from the shards' histograms added together (exact, never an average of percentiles);
//! the timeline is realigned on the wall clock (`started_at_unix_s`); each shard's own
//! client cost is kept in `shards`.

use std::collections::BTreeMap;
use std::io::{self, Write};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::compare::Named;
use crate::report::text::{fmt_bytes, fmt_us, write_distribution, write_table_header};
use crate::report::{decode_histogram, encode_histogram};
use crate::stats::{new_histogram, Summary};

/// Config keys that are each process's own and may differ between shards of one run.
const PER_PROCESS: &[&str] = &["cores", "cpus"];

/// Objects whose every value is a count to add up.
const COUNTERS: &[&str] = &[
    "requests",
    "status",
    "errors",
    "connections",
    "done_reasons",
];

/// At most this many messages per error kind, as in a run's document.
const MESSAGES_PER_KIND: usize = 4;

/// The config with what each process has of its own taken out: what the shards must share.
fn shared_plan(doc: &Value) -> Value {
    let mut c = doc.get("config").cloned().unwrap_or(Value::Null);
    if let Some(o) = c.as_object_mut() {
        for k in PER_PROCESS {
            o.remove(*k);
        }
    }
    c
}

fn f64_at(doc: &Value, pointer: &str) -> f64 {
    doc.pointer(pointer).and_then(Value::as_f64).unwrap_or(0.0)
}

fn u64_at(doc: &Value, pointer: &str) -> u64 {
    doc.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// Check that `docs` are shards of one run: the same plan (apart from each process's cores),
/// the same shard count, each shard index once (unless `allow_duplicates`: then merging a
/// result with itself, say, adds it twice). Shards that are missing are only a warning.
fn check(docs: &[Named], allow_duplicates: bool) -> Result<Vec<String>, String> {
    let first = &docs[0];
    let plan = shared_plan(&first.doc);
    let mut seen = BTreeMap::new();
    let mut count = None;
    for d in docs {
        if d.doc
            .get("started_at_unix_s")
            .and_then(Value::as_f64)
            .is_none()
        {
            return Err(format!(
                "{} has no started_at_unix_s: not a blast result that can be merged",
                d.name
            ));
        }
        if shared_plan(&d.doc) != plan {
            return Err(format!(
                "{} and {} are not shards of one run: their config differs (apart from cores)",
                first.name, d.name
            ));
        }
        let index = u64_at(&d.doc, "/shard/index");
        let n = d
            .doc
            .pointer("/shard/count")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        if *count.get_or_insert(n) != n {
            return Err(format!(
                "{} is shard {index} of {n}, {} one of {}: not shards of one run",
                d.name,
                first.name,
                count.unwrap_or(1)
            ));
        }
        if let Some(other) = seen.insert(index, &d.name) {
            if !allow_duplicates {
                return Err(format!(
                    "{other} and {} are both shard {index} of {n}; pass --allow-duplicates to add them anyway",
                    d.name
                ));
            }
        }
    }
    let n = count.unwrap_or(1);
    let missing: Vec<String> = (0..n)
        .filter(|i| !seen.contains_key(i))
        .map(|i| i.to_string())
        .collect();
    Ok(match missing.is_empty() {
        true => Vec::new(),
        false => vec![format!(
            "shard(s) {} of {n} are missing: the figures are theirs only",
            missing.join(", ")
        )],
    })
}

/// Add the numbers of `from` into `into`, key by key (both flat objects of counts).
fn add_counts(into: &mut Map<String, Value>, from: &Value) {
    for (k, v) in from.as_object().into_iter().flatten() {
        if v.is_object() {
            // Counts by name (`connections.tls_ciphers`) add up name by name.
            let sub = into
                .entry(k.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(sub) = sub.as_object_mut() {
                add_counts(sub, v);
            }
            continue;
        }
        let sum = into.get(k).and_then(Value::as_u64).unwrap_or(0) + v.as_u64().unwrap_or(0);
        into.insert(k.clone(), sum.into());
    }
}

fn per_s(n: f64, elapsed_s: f64) -> f64 {
    if elapsed_s > 0.0 {
        n / elapsed_s
    } else {
        0.0
    }
}

/// Merge the shards' documents into one (see the module's doc); the strings are warnings.
pub fn merge(docs: &[Named], allow_duplicates: bool) -> Result<(Value, Vec<String>), String> {
    if docs.is_empty() {
        return Err("nothing to merge".into());
    }
    let notes = check(docs, allow_duplicates)?;
    let first = &docs[0].doc;
    let t0 = docs
        .iter()
        .map(|d| f64_at(&d.doc, "/started_at_unix_s"))
        .fold(f64::INFINITY, f64::min);
    let earliest = docs
        .iter()
        .find(|d| f64_at(&d.doc, "/started_at_unix_s") == t0)
        .map_or(first, |d| &d.doc);
    // Each shard's offset from the earliest start; the merged run ends with the last one.
    let offset = |d: &Value| f64_at(d, "/started_at_unix_s") - t0;
    let elapsed_s = docs
        .iter()
        .map(|d| offset(&d.doc) + f64_at(&d.doc, "/elapsed_s"))
        .fold(0.0, f64::max);

    let mut out = Map::new();
    out.insert("tool".into(), first["tool"].clone());
    out.insert("version".into(), first["version"].clone());
    out.insert("started_at".into(), earliest["started_at"].clone());
    out.insert("started_at_unix_s".into(), t0.into());
    // The merged result is the whole run: shard 0 of 1.
    out.insert("shard".into(), json!({"index": 0, "count": 1}));
    out.insert("elapsed_s".into(), elapsed_s.into());

    for key in COUNTERS {
        let mut sum = Map::new();
        let mut any = false;
        for d in docs {
            if let Some(v) = d.doc.get(*key) {
                add_counts(&mut sum, v);
                any = true;
            }
        }
        if any {
            out.insert((*key).into(), Value::Object(sum));
        }
    }
    let completed = u64_at(&Value::Object(out.clone()), "/requests/completed");
    out.insert("rps".into(), per_s(completed as f64, elapsed_s).into());

    let mut messages: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for d in docs {
        for (kind, list) in d.doc["error_messages"].as_object().into_iter().flatten() {
            let kept = messages.entry(kind.clone()).or_default();
            for m in list.as_array().into_iter().flatten() {
                if kept.len() < MESSAGES_PER_KIND && !kept.contains(m) {
                    kept.push(m.clone());
                }
            }
        }
    }
    out.insert("error_messages".into(), json!(messages));

    // Distributions: the shards' histograms added, then summarised as a run's are.
    let mut histograms = Map::new();
    for (key, _) in first["histograms"].as_object().into_iter().flatten() {
        let mut merged = None;
        for d in docs {
            let text = d.doc["histograms"][key].as_str().ok_or_else(|| {
                format!("{} has no histograms.{key}: not shards of one run", d.name)
            })?;
            let h = decode_histogram(text).map_err(|e| format!("{} {key}: {e}", d.name))?;
            match &mut merged {
                None => merged = Some(h),
                Some(m) => m
                    .add(&h)
                    .map_err(|e| format!("{} {key}: cannot add: {e:?}", d.name))?,
            }
        }
        if let Some(h) = merged {
            out.insert(key.clone(), json!(Summary::of(&h)));
            histograms.insert(key.clone(), encode_histogram(&h).into());
        }
    }

    let bytes_read: u64 = docs
        .iter()
        .map(|d| u64_at(&d.doc, "/transfer/bytes_read"))
        .sum();
    let bytes_written: u64 = docs
        .iter()
        .map(|d| u64_at(&d.doc, "/transfer/bytes_written"))
        .sum();
    out.insert(
        "transfer".into(),
        json!({
            "bytes_read": bytes_read,
            "bytes_written": bytes_written,
            "read_bytes_per_s": per_s(bytes_read as f64, elapsed_s),
        }),
    );

    // Client cost: over all shards (CPU time is us/request x completed), and per shard.
    let cpu_us: f64 = docs
        .iter()
        .map(|d| {
            f64_at(&d.doc, "/client_cpu_us_per_request")
                * u64_at(&d.doc, "/requests/completed") as f64
        })
        .sum();
    let core_s: f64 = docs
        .iter()
        .map(|d| f64_at(&d.doc, "/elapsed_s") * u64_at(&d.doc, "/config/cores").max(1) as f64)
        .sum();
    out.insert(
        "client_cpu_us_per_request".into(),
        per_s(cpu_us, completed as f64).into(),
    );
    out.insert(
        "client_cpu_utilization".into(),
        per_s(cpu_us / 1e6, core_s).into(),
    );
    out.insert(
        "peak_rss_bytes".into(),
        docs.iter()
            .map(|d| u64_at(&d.doc, "/peak_rss_bytes"))
            .max()
            .unwrap_or(0)
            .into(),
    );
    out.insert(
        "interrupted".into(),
        docs.iter()
            .any(|d| d.doc["interrupted"].as_bool() == Some(true))
            .into(),
    );

    let mut warnings: Vec<Value> = Vec::new();
    for d in docs {
        for w in d.doc["warnings"].as_array().into_iter().flatten() {
            if !warnings.iter().any(|k| k["code"] == w["code"]) {
                warnings.push(w.clone());
            }
        }
    }
    for n in &notes {
        warnings.push(json!({"code": "missing_shards", "message": n}));
    }

    if first.get("open_loop").is_some() {
        out.insert("open_loop".into(), open_loop(docs, &out));
    }
    if first.get("tokens").is_some() {
        let output: u64 = docs.iter().map(|d| u64_at(&d.doc, "/tokens/output")).sum();
        let prompt: u64 = docs.iter().map(|d| u64_at(&d.doc, "/tokens/prompt")).sum();
        let sources: Vec<&Value> = docs.iter().map(|d| &d.doc["tokens"]["source"]).collect();
        let source = match sources.iter().all(|s| *s == sources[0]) {
            true => sources[0].clone(),
            false => "mixed".into(),
        };
        out.insert(
            "tokens".into(),
            json!({
                "output": output,
                "per_s": per_s(output as f64, elapsed_s),
                "source": source,
                "prompt": prompt,
            }),
        );
    }
    if first.get("goodput").is_some() {
        let good: u64 = docs.iter().map(|d| u64_at(&d.doc, "/goodput/good")).sum();
        out.insert(
            "goodput".into(),
            json!({
                "good": good,
                "rps": per_s(good as f64, elapsed_s),
                "ratio": per_s(good as f64, completed as f64),
            }),
        );
    }
    out.insert("warnings".into(), Value::Array(warnings));
    out.insert("timeline".into(), timeline(docs, t0, elapsed_s)?);
    out.insert(
        "shards".into(),
        docs.iter()
            .map(|d| {
                json!({
                    "file": d.name,
                    "shard": d.doc["shard"],
                    "started_at": d.doc["started_at"],
                    "started_at_unix_s": d.doc["started_at_unix_s"],
                    "start_late_s": d.doc.get("start_late_s"),
                    "elapsed_s": d.doc["elapsed_s"],
                    "cores": d.doc["config"]["cores"],
                    "requests": d.doc["requests"],
                    "client_cpu_us_per_request": d.doc["client_cpu_us_per_request"],
                    "client_cpu_utilization": d.doc["client_cpu_utilization"],
                    "peak_rss_bytes": d.doc["peak_rss_bytes"],
                })
            })
            .collect(),
    );
    out.insert("histograms".into(), Value::Object(histograms));
    let mut config = shared_plan(first);
    if let Some(o) = config.as_object_mut() {
        let cores: u64 = docs.iter().map(|d| u64_at(&d.doc, "/config/cores")).sum();
        o.insert("cores".into(), cores.into());
    }
    out.insert("config".into(), config);
    Ok((Value::Object(out), notes))
}

/// The open-loop figures: targets and achieved rates of the shards add up (each has its
/// part of the run's); send lag p99 comes from the merged histogram.
fn open_loop(docs: &[Named], merged: &Map<String, Value>) -> Value {
    let sum = |p: &str| docs.iter().map(|d| f64_at(&d.doc, p)).sum::<f64>();
    let order = ["client", "connections", "server"];
    let limited_by = order
        .iter()
        .find(|l| docs.iter().any(|d| d.doc["open_loop"]["limited_by"] == **l))
        .copied()
        .unwrap_or("none");
    json!({
        "target_rps": sum("/open_loop/target_rps"),
        "achieved_rps": sum("/open_loop/achieved_rps"),
        "missed": docs.iter().map(|d| u64_at(&d.doc, "/open_loop/missed")).sum::<u64>(),
        "send_lag_p99_us": merged.get("send_lag_us").map_or(0, |s| s["p99"].as_u64().unwrap_or(0)),
        "kept_up": matches!(limited_by, "none" | "server"),
        "limited_by": limited_by,
    })
}

/// Timeline rows on the wall clock: a shard's row lands in the interval (counted from the
/// earliest start) that holds its middle. Counts and targets add up; a row's p50/p99 come
/// from the shards' `latency_histogram`s added together (exact), or are the highest of the
/// shards' where a row has none (a document from before blast kept them).
fn timeline(docs: &[Named], t0: f64, elapsed_s: f64) -> Result<Value, String> {
    let interval = f64_at(&docs[0].doc, "/config/interval");
    if interval <= 0.0 {
        return Err(format!("{} has no config.interval", docs[0].name));
    }
    let mut rows: BTreeMap<u64, Map<String, Value>> = BTreeMap::new();
    // Per merged row: the latency histograms added up, None once a row without one came.
    let mut latency: BTreeMap<u64, Option<Histogram<u64>>> = BTreeMap::new();
    for d in docs {
        let offset = f64_at(&d.doc, "/started_at_unix_s") - t0;
        let doc_rows = d.doc["timeline"].as_array().map_or(&[][..], Vec::as_slice);
        // Shards keep each interval's histogram when it has samples: a row without one then
        // had none. A document that kept none is from before blast kept them.
        let kept = doc_rows.iter().any(|r| r["latency_histogram"].is_string());
        for r in doc_rows {
            let mid = offset + f64_at(r, "/t_s") - f64_at(r, "/dt_s") / 2.0;
            let i = (mid.max(0.0) / interval) as u64;
            let sum = latency.entry(i).or_insert_with(|| Some(new_histogram()));
            let row_hist = match r["latency_histogram"].as_str() {
                Some(text) => Some(
                    decode_histogram(text)
                        .map_err(|e| format!("{}: timeline latency_histogram: {e}", d.name))?,
                ),
                None if kept => Some(new_histogram()),
                None => None,
            };
            *sum = match (sum.take(), row_hist) {
                (Some(mut sum), Some(h)) => sum.add(&h).ok().map(|()| sum),
                _ => None,
            };
            let row = rows.entry(i).or_default();
            for k in ["sent", "completed", "ok", "errors", "in_flight", "tokens"] {
                let v =
                    row.get(k).and_then(Value::as_u64).unwrap_or(0) + u64_at(r, &format!("/{k}"));
                row.insert(k.into(), v.into());
            }
            // Counts by status code and by error kind add up too.
            for k in ["status", "errors_by_kind"] {
                let Some(counts) = r[k].as_object() else {
                    continue;
                };
                let merged = row
                    .entry(k)
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("inserted as an object");
                for (key, n) in counts {
                    let sum = merged.get(key).and_then(Value::as_u64).unwrap_or(0)
                        + n.as_u64().unwrap_or(0);
                    merged.insert(key.clone(), sum.into());
                }
            }
            let target = row.get("target_rps").and_then(Value::as_f64).unwrap_or(0.0)
                + f64_at(r, "/target_rps");
            row.insert("target_rps".into(), target.into());
            for k in ["p50_us", "p99_us"] {
                let v = row
                    .get(k)
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    .max(u64_at(r, &format!("/{k}")));
                row.insert(k.into(), v.into());
            }
        }
    }
    let rows = rows
        .into_iter()
        .map(|(i, mut row)| {
            if let Some(Some(h)) = latency.remove(&i) {
                let (p50, p99) = if h.is_empty() {
                    (0, 0)
                } else {
                    (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
                };
                row.insert("p50_us".into(), p50.into());
                row.insert("p99_us".into(), p99.into());
            }
            let start = i as f64 * interval;
            let end = (start + interval).min(elapsed_s.max(start));
            let dt = end - start;
            let of = |k: &str| row.get(k).and_then(Value::as_u64).unwrap_or(0) as f64;
            let (rps, tokens_per_s) = (per_s(of("completed"), dt), per_s(of("tokens"), dt));
            row.insert("t_s".into(), end.into());
            row.insert("dt_s".into(), dt.into());
            row.insert("rps".into(), rps.into());
            row.insert("tokens_per_s".into(), tokens_per_s.into());
            Value::Object(row)
        })
        .collect();
    Ok(Value::Array(rows))
}

/// The merged summary, laid out like a run's.
pub fn write_text(w: &mut impl Write, m: &Value) -> io::Result<()> {
    let c = &m["config"];
    let shards = m["shards"].as_array().map_or(0, Vec::len);
    writeln!(
        w,
        "blast merge of {shards} shard(s): {} {}, {} core(s), {} connection(s){}",
        c["method"].as_str().unwrap_or("?"),
        c["url"].as_str().unwrap_or("?"),
        c["cores"],
        c["conns"],
        if m["interrupted"] == true {
            " (interrupted)"
        } else {
            ""
        }
    )?;
    writeln!(w)?;
    writeln!(
        w,
        "  Started        {}",
        m["started_at"].as_str().unwrap_or("?")
    )?;
    writeln!(w, "  Elapsed        {:.3}s", f64_at(m, "/elapsed_s"))?;
    let q = |k: &str| u64_at(m, &format!("/requests/{k}"));
    writeln!(
        w,
        "  Requests       {} sent, {} completed, {} ok ({:.2}%), {} failed, {} cut off",
        q("sent"),
        q("completed"),
        q("ok"),
        per_s(q("ok") as f64 * 100.0, q("sent") as f64),
        q("failed"),
        q("cut_off")
    )?;
    writeln!(
        w,
        "  Throughput     {:.1} req/s, {}/s read, {} written",
        f64_at(m, "/rps"),
        fmt_bytes(f64_at(m, "/transfer/read_bytes_per_s")),
        fmt_bytes(f64_at(m, "/transfer/bytes_written"))
    )?;
    writeln!(w)?;
    write_table_header(w)?;
    // Latency first, as in a run's summary.
    let mut keys: Vec<&String> = m["histograms"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .collect();
    keys.sort_by_key(|k| *k != "latency_us");
    for key in keys {
        if let Ok(s) = serde_json::from_value::<Summary>(m[key].clone()) {
            if s.count > 0 {
                write_distribution(w, key.trim_end_matches("_us"), &s)?;
            }
        }
    }
    writeln!(w)?;
    let list = |v: &Value| -> String {
        let items: Vec<String> = v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, n)| n.as_u64() != Some(0))
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        if items.is_empty() {
            "none".into()
        } else {
            items.join(", ")
        }
    };
    writeln!(w, "  Status codes   {}", list(&m["status"]))?;
    writeln!(w, "  Errors         {}", list(&m["errors"]))?;
    for s in m["shards"].as_array().into_iter().flatten() {
        let late = s["start_late_s"]
            .as_f64()
            .map_or(String::new(), |l| format!(", {} late", fmt_us(l * 1e6)));
        writeln!(
            w,
            "  Shard {}/{}      {} sent, {:.2} us CPU/request, {:.0}% of {} core(s) busy, peak RSS {}{late}",
            s["shard"]["index"],
            s["shard"]["count"],
            s["requests"]["sent"],
            s["client_cpu_us_per_request"].as_f64().unwrap_or(0.0),
            s["client_cpu_utilization"].as_f64().unwrap_or(0.0) * 100.0,
            s["cores"],
            fmt_bytes(s["peak_rss_bytes"].as_f64().unwrap_or(0.0))
        )?;
    }
    if let Some(o) = m.get("open_loop") {
        writeln!(
            w,
            "  Open loop      target {:.1} req/s, achieved {:.1} req/s, send lag p99 {}, limited by {}",
            f64_at(o, "/target_rps"),
            f64_at(o, "/achieved_rps"),
            fmt_us(f64_at(o, "/send_lag_p99_us")),
            o["limited_by"].as_str().unwrap_or("?")
        )?;
    }
    for warning in m["warnings"].as_array().into_iter().flatten() {
        writeln!(
            w,
            "  WARNING        {} ({})",
            warning["message"].as_str().unwrap_or(""),
            warning["code"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use crate::stats::new_histogram;

    /// A shard's document with just what merging reads.
    fn shard_doc(index: u64, count: u64, start: f64, latencies: &[u64]) -> Named {
        let mut h = new_histogram();
        for v in latencies {
            h.record(*v).unwrap();
        }
        let n = latencies.len() as u64;
        Named {
            name: format!("shard{index}"),
            doc: json!({
                "tool": "blast", "version": "0", "started_at": "x",
                "started_at_unix_s": start, "elapsed_s": 1.0,
                "shard": {"index": index, "count": count},
                "requests": {"sent": n, "completed": n, "ok": n, "failed": 0, "cut_off": 0},
                "status": {"200": n}, "errors": {"timeout": 0},
                "latency_us": Summary::of(&h),
                "histograms": {"latency_us": encode_histogram(&h)},
                "timeline": [{"t_s": 1.0, "dt_s": 1.0, "sent": n, "completed": n, "ok": n,
                              "errors": 0, "in_flight": 0, "target_rps": 0.0,
                              "p50_us": h.value_at_quantile(0.5),
                              "p99_us": h.value_at_quantile(0.99), "tokens": 0,
                              "status": {"200": n}, "latency_histogram": encode_histogram(&h)}],
                "config": {"url": "http://x/", "method": "GET", "interval": 1.0,
                           "cores": index + 1, "cpus": [index]},
            }),
        }
    }

    /// Merging the shards' histograms gives exactly the percentiles of one histogram fed
    /// every sample.
    #[test]
    fn merged_percentiles_are_those_of_all_samples() {
        let mut rng = SplitMix64::new(7, 7);
        let samples: Vec<u64> = (0..30_000)
            .map(|i| 1 + rng.below(if i % 10 == 0 { 5_000_000 } else { 20_000 }))
            .collect();
        let mut all = new_histogram();
        for v in &samples {
            all.record(*v).unwrap();
        }
        let parts: Vec<Named> = samples
            .chunks(7_000)
            .enumerate()
            .map(|(i, c)| shard_doc(i as u64, 5, 100.0 + i as f64 * 0.3, c))
            .collect();
        let (m, notes) = merge(&parts, false).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        let merged: Summary = serde_json::from_value(m["latency_us"].clone()).unwrap();
        assert_eq!(merged, Summary::of(&all));
        assert_eq!(m["requests"]["sent"], 30_000);
        assert_eq!(m["status"]["200"], 30_000);
        assert_eq!(m["config"]["cores"], 1 + 2 + 3 + 4 + 5);
        // Shards started 0.3 s apart: the run ends with the last one, 1.2 s after the first.
        let rows = m["timeline"].as_array().unwrap();
        let sent: u64 = rows.iter().map(|r| r["sent"].as_u64().unwrap()).sum();
        assert_eq!(sent, 30_000);
        let by_status: u64 = rows
            .iter()
            .map(|r| r["status"]["200"].as_u64().unwrap())
            .sum();
        assert_eq!(by_status, 30_000, "status codes per row add up");
        assert!((m["elapsed_s"].as_f64().unwrap() - 2.2).abs() < 1e-9);
        // Each row lands in the interval that holds its middle: 0.5, 0.8 | 1.1, 1.4, 1.7.
        assert_eq!(rows.len(), 2);
        // Each merged row's p50/p99 are those of its shards' samples together.
        for (row, chunks) in rows.iter().zip([0..2, 2..5]) {
            let mut h = new_histogram();
            for v in &samples[chunks.start * 7_000..(chunks.end * 7_000).min(samples.len())] {
                h.record(*v).unwrap();
            }
            assert_eq!(row["p50_us"], h.value_at_quantile(0.5), "{row}");
            assert_eq!(row["p99_us"], h.value_at_quantile(0.99), "{row}");
            assert!(row.get("latency_histogram").is_none());
        }
        assert_ne!(rows[1]["p99_us"], parts[4].doc["timeline"][0]["p99_us"]);

        // Documents whose rows kept no histogram: the highest shard's p50/p99.
        let bare: Vec<Named> = parts
            .iter()
            .map(|p| {
                let mut p = p.clone_doc();
                p.doc["timeline"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("latency_histogram");
                p
            })
            .collect();
        let (m, _) = merge(&bare, false).unwrap();
        let highest = |k: &str| {
            (2..5)
                .map(|i| parts[i].doc["timeline"][0][k].as_u64().unwrap())
                .max()
                .unwrap()
        };
        assert_eq!(m["timeline"][1]["p50_us"], highest("p50_us"));
        assert_eq!(m["timeline"][1]["p99_us"], highest("p99_us"));
    }

    #[test]
    fn counts_by_name_add_up_name_by_name() {
        let mut sum = Map::new();
        add_counts(&mut sum, &json!({"opened": 2, "tls_ciphers": {"A": 1}}));
        add_counts(
            &mut sum,
            &json!({"opened": 3, "tls_ciphers": {"A": 2, "B": 1}}),
        );
        assert_eq!(
            Value::Object(sum),
            json!({"opened": 5, "tls_ciphers": {"A": 3, "B": 1}})
        );
    }

    #[test]
    fn only_shards_of_one_run_merge() {
        let a = shard_doc(0, 2, 0.0, &[10, 20]);
        let e = merge(&[a.clone_doc(), a.clone_doc()], false).unwrap_err();
        assert!(
            e.contains("both shard 0 of 2; pass --allow-duplicates"),
            "{e}"
        );
        let (m, notes) = merge(&[a.clone_doc(), a.clone_doc()], true).unwrap();
        assert_eq!(m["requests"]["sent"], 4);
        assert_eq!(m["latency_us"]["p50"], a.doc["latency_us"]["p50"]);
        assert!(
            notes[0].contains("shard(s) 1 of 2 are missing"),
            "{notes:?}"
        );
        let mut other = shard_doc(1, 2, 0.0, &[1]);
        other.doc["config"]["url"] = "http://y/".into();
        let e = merge(&[a.clone_doc(), other], false).unwrap_err();
        assert!(e.contains("their config differs"), "{e}");
        let e = merge(&[a.clone_doc(), shard_doc(1, 3, 0.0, &[1])], false).unwrap_err();
        assert!(e.contains("not shards of one run"), "{e}");
    }

    impl Named {
        fn clone_doc(&self) -> Named {
            Named {
                name: self.name.clone(),
                doc: self.doc.clone(),
            }
        }
    }
}
