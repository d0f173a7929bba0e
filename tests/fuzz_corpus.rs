//! Replays the fuzz corpus and every saved crash input (fuzz/corpus/<target>/*,
//! fuzz/artifacts/<target>/*) through the fuzz targets' own property checks, on stable,
//! so a fixed finding stays fixed and the corpus keeps exercising the parsers.

#[path = "../fuzz/src/props.rs"]
mod props;

use std::path::Path;

/// Inputs that still break a property because of a bug being fixed elsewhere. They are run,
/// but their failure does not fail the test; once one passes, the test says so, and the
/// entry should go. (target, file name under fuzz/artifacts/<target>/, the bug)
const KNOWN_FAILURES: &[(&str, &str, &str)] = &[(
    "response_parser",
    "crash-cl-cr-then-byte",
    "head re-scan skipped when a read holds no LF: a bad byte after `Content-Length: 10\\r` \
     is errors.parse whole but errors.closed / a timeout byte by byte (fix in progress in \
     src/http/response.rs)",
)];

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

#[test]
fn corpus_and_crashes_replay() {
    let mut failures = Vec::new();
    for target in props::TARGETS {
        let inputs = inputs(target);
        assert!(!inputs.is_empty(), "no corpus for {target}");
        for (name, data) in inputs {
            let known = KNOWN_FAILURES
                .iter()
                .find(|(t, file, _)| *t == target && name.ends_with(&format!("/{file}")));
            let result = std::panic::catch_unwind(|| props::check_target(target, &data))
                .unwrap_or_else(|_| Err("panicked".to_string()));
            match (result, known) {
                (Ok(()), None) => {}
                (Ok(()), Some(_)) => {
                    println!("{name}: known failure now passes; drop it from KNOWN_FAILURES")
                }
                (Err(e), Some((_, _, bug))) => println!("{name}: known failure ({bug}): {e}"),
                (Err(e), None) => failures.push(format!("{name}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
