//! The result document as JSON.

use std::io::{self, Write};

use super::Report;

pub fn write(w: &mut impl Write, report: &Report) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, report)?;
    writeln!(w)
}

/// One line for the results log: when, which scenario, what ran, and the headline figures
/// (not the timeline or histograms, so that the log stays small).
pub fn log_line(report: &Report, at: std::time::SystemTime) -> serde_json::Value {
    serde_json::json!({
        "time": humantime::format_rfc3339_seconds(at).to_string(),
        "scenario": report.config.scenario,
        "config": *report.config,
        "summary": {
            "elapsed_s": report.elapsed_s,
            "rps": report.rps,
            "requests": report.requests,
            "status": report.status,
            "errors": report.errors,
            "error_messages": report.error_messages,
            "latency_us": report.latency_us,
            "open_loop": report.open_loop,
            "warnings": report.warnings,
        },
    })
}
