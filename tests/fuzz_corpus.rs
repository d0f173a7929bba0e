//! Replays the fuzz corpus and every saved crash input (fuzz/corpus/<target>/*,
//! fuzz/artifacts/<target>/*) through the fuzz targets' own property checks, on stable,
//! so a fixed finding stays fixed and the corpus keeps exercising the parsers.

#[path = "../fuzz/src/props.rs"]
mod props;

use std::path::Path;

/// Known bug, fix in progress in src/http/response.rs: the parser skips re-scanning an
/// incomplete head when a read holds no LF, so an invalid byte in it (e.g. `o` after
/// `Content-Length: 10\r`, fuzz/artifacts/response_parser/crash-cl-cr-then-byte) is
/// errors.parse when the input is read whole but errors.closed or a timeout when read byte
/// by byte. Inputs failing only that way are reported, not failed, while this is true; once
/// none does, the test says so and this should become false.
const TOLERATE_HEAD_RESCAN_BUG: bool = true;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = format!(
                "{dir}/{target}/{}",
                path.file_name().unwrap().to_string_lossy()
            );
            out.push((name, std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

fn check(target: &str, data: &[u8], skip_known: bool) -> Result<(), String> {
    std::panic::catch_unwind(|| props::check_target(target, data, skip_known))
        .unwrap_or_else(|_| Err("panicked".to_string()))
}

#[test]
fn corpus_and_crashes_replay() {
    let mut failures = Vec::new();
    let mut known = Vec::new();
    for target in props::TARGETS {
        let inputs = inputs(target);
        assert!(!inputs.is_empty(), "no corpus for {target}");
        for (name, data) in inputs {
            let Err(e) = check(target, &data, false) else {
                continue;
            };
            if TOLERATE_HEAD_RESCAN_BUG && check(target, &data, true).is_ok() {
                known.push(name);
            } else {
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    if TOLERATE_HEAD_RESCAN_BUG {
        println!(
            "{} inputs fail only by the known head re-scan bug (not failed): {known:?}",
            known.len()
        );
        if known.is_empty() {
            println!("no input shows the head re-scan bug any more: set TOLERATE_HEAD_RESCAN_BUG to false");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
