//! The timeline as CSV, one row per interval (for spreadsheets and plotting).

use std::io::{self, Write};

use crate::aggregate::TimelineRow;

pub fn write_timeline(w: &mut impl Write, rows: &[TimelineRow]) -> io::Result<()> {
    writeln!(
        w,
        "t_s,dt_s,target_rps,sent,completed,ok,errors,in_flight,rps,p50_us,p99_us,tokens"
    )?;
    for r in rows {
        writeln!(
            w,
            "{:.3},{:.3},{:.2},{},{},{},{},{},{:.2},{},{},{}",
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
            r.tokens
        )?;
    }
    Ok(())
}
