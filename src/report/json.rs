//! The result document as JSON.

use std::io::{self, Write};

use super::Report;

pub fn write(w: &mut impl Write, report: &Report) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, report)?;
    writeln!(w)
}
