//! What a newcomer sees first: `--help` grouped by topic with one line per option under
//! `-h`, and command-line mistakes answered in two lines (what is wrong, then one hint).

mod common;

use common::{assert_two_line_error, run_blast};

/// `blast --help` groups the options under one heading per topic.
#[test]
fn long_help_has_a_heading_per_topic() {
    let run = run_blast(&["--help"]);
    assert_eq!(run.code(), Some(0));
    let out = run.stdout();
    println!("{out}");
    for heading in [
        "Load:",
        "Connection:",
        "Request:",
        "Output:",
        "Open loop:",
        "LLM:",
    ] {
        assert!(
            out.lines().any(|l| l == heading),
            "no `{heading}` in:\n{out}"
        );
    }
    // Every option has a help text, including the second half of each pair.
    for (option, help) in [
        ("--burst-every <D>", "time between bursts"),
        ("--spike-every <D>", "period of the spikes"),
        ("--chaos-max-hold <D>", "longest time a random rate is held"),
    ] {
        let at = out
            .find(option)
            .unwrap_or_else(|| panic!("{option}: {out}"));
        let next = &out[at..];
        let next = &next[..next.find("\n\n").unwrap_or(next.len())];
        assert!(next.contains(help), "{option}: {next}");
    }
}

/// `blast -h`: one line per option, its short help beside it.
#[test]
fn short_help_is_one_line_per_option() {
    let run = run_blast(&["-h"]);
    assert_eq!(run.code(), Some(0));
    let out = run.stdout();
    println!("{out}");
    let mut options = 0;
    // From the first option block on (the usage above it has continuation lines of its own).
    let from = out.find("\nOptions:\n").expect("an Options block");
    for line in out[from..].lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') {
            options += 1;
            // The option's name, then its help on the same line.
            assert!(trimmed.contains("  "), "no help beside: {line}");
        } else if line.starts_with("   ") {
            panic!("a help text continued on a line of its own: {line:?}\n{out}");
        }
    }
    assert!(options > 40, "{out}");
    assert!(
        out.contains("[default: GET, or POST with a body or --api]"),
        "{out}"
    );
}

/// `compare --fail-if` shows a plain value name and says what the expression looks like.
#[test]
fn compare_help_names_the_threshold_form() {
    let run = run_blast(&["compare", "--help"]);
    let out = run.stdout();
    assert!(out.contains("--fail-if <EXPR>"), "{out}");
    assert!(out.contains("METRIC>+N%"), "{out}");
}

/// Mistyped values: one line naming the option and its form, one hint saying what it takes.
#[test]
fn mistyped_values_take_two_lines() {
    let url = "http://127.0.0.1:1/";
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--rate", "-5", url], "--rate", "--rate RPS: Open loop"),
        (
            &["-r", "-5", url],
            "--requests <K>",
            "--requests K: Send exactly",
        ),
        (
            &[url, "-n"],
            "--conns <N>",
            "--conns N: Keep-alive connections",
        ),
        (
            &["-n", "x", url],
            "--conns <N>",
            "--conns N: Keep-alive connections",
        ),
        (
            &["compare", "a.json", "b.json", "--fail-if"],
            "--fail-if <EXPR>",
            "--fail-if EXPR",
        ),
    ];
    for (args, first, hint) in cases {
        assert_two_line_error(args, first, hint);
    }
}

/// A value clap accepts but the plan cannot read (a duration): still one line that names the
/// option and the accepted form.
#[test]
fn unreadable_durations_take_one_line() {
    let run = run_blast(&["--duration", "soon", "http://127.0.0.1:1/"]);
    let err = run.stderr();
    assert_eq!(run.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("blast: --duration: cannot read \"soon\""),
        "{err}"
    );
    assert!(err.contains("try 500ms, 10s or 2m"), "{err}");
}

/// Plain `blast`: the missing URL, then where to start.
#[test]
fn no_arguments_say_the_url_is_missing() {
    let run = run_blast(&[]);
    let err = run.stderr();
    assert_eq!(run.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].contains("URL to load is missing"), "{err}");
    assert!(lines[1].contains("blast demo"), "{err}");
}

/// A scenario without its URL says so, with the scenario's own usage, not the preset's flags.
#[test]
fn scenario_without_a_url_names_the_url() {
    let run = run_blast(&["scenario", "quick"]);
    let err = run.stderr();
    assert_eq!(run.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].contains("needs the URL"), "{err}");
    assert!(lines[1].contains("blast scenario quick URL"), "{err}");
    assert!(!err.contains("--prompts"), "{err}");
}

/// `blast completions SHELL` and `blast man` print what the shell and `man` read.
#[test]
fn completions_and_man_page() {
    let bash = run_blast(&["completions", "bash"]);
    assert_eq!(bash.code(), Some(0), "{}", bash.stderr());
    let script = bash.stdout();
    assert!(script.contains("complete -F"), "{script}");
    assert!(script.contains("--max-in-flight"), "{script}");
    let man = run_blast(&["man"]);
    assert_eq!(man.code(), Some(0), "{}", man.stderr());
    let page = man.stdout();
    assert!(page.starts_with(".ie"), "{page}");
    assert!(page.contains(".TH blast"), "{page}");
    assert!(page.contains("max\\-in\\-flight"), "{page}");
    let wrong = run_blast(&["completions", "cmd.exe"]);
    assert_eq!(wrong.code(), Some(2));
    assert!(
        wrong.stderr().contains("[possible values"),
        "{}",
        wrong.stderr()
    );
}
