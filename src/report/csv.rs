//! The timeline as CSV, one row per interval (for spreadsheets and plotting).

use std::io::{self, Write};

use crate::aggregate::TimelineRow;

pub fn write_timeline(w: &mut impl Write, rows: &[TimelineRow]) -> io::Result<()> {
    writeln!(
        w,
        "t_s,dt_s,target_rps,sent,completed,ok,errors,in_flight,rps,p50_us,p99_us,tokens,tokens_per_s,status,errors_by_kind"
    )?;
    for r in rows {
        writeln!(
            w,
            "{:.3},{:.3},{:.2},{},{},{},{},{},{:.2},{},{},{},{:.2},{},{}",
            r.t_s,
            r.dt_s,
            r.target_rps,
            r.sent,
            r.completed,
            r.ok,
            r.errors,
            r.in_flight,
            r.rps,
            r.p50_us,
            r.p99_us,
            r.tokens,
            r.tokens_per_s,
            pairs(r.status.iter().map(|(k, v)| (k.as_str(), v))),
            pairs(r.errors_by_kind.iter().map(|(k, v)| (*k, v))),
        )?;
    }
    Ok(())
}

/// A map as one cell without commas: `200:97;503:3`.
fn pairs<'a>(map: impl Iterator<Item = (&'a str, &'a u64)>) -> String {
    map.map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSV has a column for every field of the JSON timeline, and each row's cells line up.
    #[test]
    fn csv_has_every_json_timeline_field() {
        let row = TimelineRow {
            t_s: 1.0,
            dt_s: 1.0,
            target_rps: 0.0,
            sent: 3,
            completed: 2,
            ok: 2,
            errors: 0,
            in_flight: 1,
            rps: 2.0,
            p50_us: 10,
            p99_us: 20,
            tokens: 64,
            tokens_per_s: 64.0,
            status: [("200".to_string(), 2), ("503".to_string(), 1)].into(),
            errors_by_kind: [("timeout", 1)].into(),
            latency_histogram: None,
        };
        let mut out = Vec::new();
        write_timeline(&mut out, std::slice::from_ref(&row)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
        let json = serde_json::to_value(&row).unwrap();
        for key in json.as_object().unwrap().keys() {
            assert!(lines[0].contains(&key.as_str()), "no `{key}` in {text}");
        }
        assert_eq!(lines[0].last(), Some(&"errors_by_kind"));
        assert_eq!(lines[1].last(), Some(&"timeout:1"));
        assert_eq!(lines[1][lines[1].len() - 2], "200:2;503:1");
        assert_eq!(lines[0].len(), lines[1].len());
    }
}
