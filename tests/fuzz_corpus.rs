//! Replays the fuzz corpus and every saved crash input (fuzz/corpus/<target>/*,
//! fuzz/artifacts/<target>/*) through the fuzz targets' own property checks, on stable,
//! so a fixed finding stays fixed and the corpus keeps exercising the parsers.

#[path = "../fuzz/src/props.rs"]
mod props;

use std::path::Path;

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
    for target in props::TARGETS {
        let inputs = inputs(target);
        assert!(!inputs.is_empty(), "no corpus for {target}");
        for (name, data) in inputs {
            // The head re-scan bug the fuzzer found is fixed: nothing is let through.
            if let Err(e) = check(target, &data, false) {
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
