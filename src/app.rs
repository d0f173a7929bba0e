//! What the `blast` command does with its arguments: plan, run, print, and the exit code.
//! Exit codes: 0 success, 1 the run failed (no successful response, I/O), 2 bad input,
//! 130 interrupted (after reporting what was measured).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, RunArgs};
use crate::mock::{MockArgs, MockConfig, MockServer};
use crate::plan::Plan;
use crate::report::{csv, json, text, Report};
use crate::scenario::{self, SCENARIOS};

pub fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("blast: {msg}");
    ExitCode::from(code)
}

/// `blast scenario list` / `blast scenario NAME URL [OPTIONS]`.
pub fn scenario(name: Option<&str>, rest: &[String]) -> ExitCode {
    let name = match name {
        None | Some("list") => {
            println!("Scenarios (blast scenario NAME URL [OPTIONS], options override the preset):");
            for s in SCENARIOS {
                println!(
                    "  {:<13} {}\n  {:<13} blast {}",
                    s.name,
                    s.about,
                    "",
                    s.args.join(" ")
                );
            }
            return ExitCode::SUCCESS;
        }
        Some(n) => n,
    };
    let Some(preset) = scenario::find(name) else {
        return fail(
            2,
            format!("unknown scenario {name:?}; `blast scenario list` shows them"),
        );
    };
    run_preset(preset.args.iter().copied(), rest, name)
}

/// Parse a preset's options followed by the user's (later options win: clap's
/// `args_override_self`) and run the load test under the preset's name.
fn run_preset<'a>(
    preset: impl Iterator<Item = &'a str>,
    rest: &'a [String],
    name: &str,
) -> ExitCode {
    let argv = std::iter::once("blast")
        .chain(preset)
        .chain(rest.iter().map(String::as_str));
    match Cli::try_parse_from(argv) {
        Ok(cli) => load_test(&cli.run, Some(name)),
        Err(e) => e.exit(),
    }
}

pub fn load_test(args: &RunArgs, scenario: Option<&str>) -> ExitCode {
    let mut plan = match Plan::from_args(args) {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    plan.scenario = scenario.map(str::to_string);
    let plan = Arc::new(plan);
    if let Err(e) = ctrlc::set_handler(|| {
        // A second Ctrl-C means "now": skip the report.
        if crate::engine::INTERRUPTED.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
    }) {
        return fail(2, format!("cannot install the Ctrl-C handler: {e}"));
    }
    let live = !plan.output.quiet && std::io::stderr().is_terminal();
    let total_s = plan.run_for.map(|d| d.as_secs_f64());
    let report = match crate::run(&plan, |row| {
        if live {
            eprintln!("{}", text::live_line(row, total_s));
        }
    }) {
        Ok(r) => r,
        Err(e) => return fail(1, e),
    };
    if let Err(e) = write_outputs(&plan, &report) {
        return fail(1, e);
    }
    if report.interrupted {
        return ExitCode::from(130);
    }
    if report.requests.ok == 0 {
        return fail(1, "no successful responses");
    }
    ExitCode::SUCCESS
}

fn write_outputs(plan: &Plan, report: &Report) -> Result<(), String> {
    let out = &plan.output;
    // With the JSON document on stdout, the human summary moves to stderr.
    let _ = match out.json_stdout {
        true => text::write(&mut std::io::stderr().lock(), report),
        false => text::write(&mut std::io::stdout().lock(), report),
    };
    if out.json_stdout {
        json::write(&mut std::io::stdout().lock(), report)
            .map_err(|e| format!("cannot write the JSON result: {e}"))?;
    }
    let create = |path: &std::path::Path| {
        std::fs::File::create(path)
            .map(std::io::BufWriter::new)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    if let Some(path) = &out.json {
        json::write(&mut create(path)?, report)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &out.timeline_csv {
        csv::write_timeline(&mut create(path)?, &report.timeline)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &out.log {
        let line = json::log_line(report, std::time::SystemTime::now());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"))
            .map_err(|e| format!("cannot append to {}: {e}", path.display()))?;
    }
    Ok(())
}

/// `blast mock`: serve until Ctrl-C.
pub fn mock(args: &MockArgs) -> ExitCode {
    let cfg = match args.to_config(crate::plan::allowed_cpus()) {
        Ok(c) => c,
        Err(e) => return fail(2, e),
    };
    let cores = cfg.cpus.len();
    let server = match MockServer::start(cfg) {
        Ok(s) => s,
        Err(e) => return fail(1, e),
    };
    static STOP: AtomicBool = AtomicBool::new(false);
    if let Err(e) = ctrlc::set_handler(|| STOP.store(true, Ordering::Relaxed)) {
        return fail(2, format!("cannot install the Ctrl-C handler: {e}"));
    }
    eprintln!(
        "blast mock: listening on http://{} ({cores} core(s)); Ctrl-C stops it",
        server.local_addr()
    );
    match server.run_until(&STOP) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

/// The demo's mock: a small model that answers in realistic time, so that TTFT and
/// inter-token latency mean something.
const DEMO_TTFT: Duration = Duration::from_millis(20);
const DEMO_TOKEN_DELAY: Duration = Duration::from_millis(5);
const DEMO_ARGS: &[&str] = &[
    "--api",
    "ollama-generate",
    "--prompts",
    "short,medium",
    "--conns",
    "32",
    "--duration",
    "5s",
    "--slo",
    "ttft=100ms,tpot=10ms",
];

/// `blast demo`: a real load test end to end with no server of the user's own.
pub fn demo(rest: &[String]) -> ExitCode {
    let cpus = crate::plan::allowed_cpus();
    // The mock takes the last CPU; blast may use them all (on one CPU they share it).
    let mut cfg = MockConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        cpus.last().into_iter().copied().collect(),
    );
    cfg.ttft = DEMO_TTFT;
    cfg.token_delay = DEMO_TOKEN_DELAY;
    let server = match MockServer::start(cfg) {
        Ok(s) => s,
        Err(e) => return fail(1, format!("cannot start the mock: {e}")),
    };
    let url = format!("http://{}/api/generate", server.local_addr());
    eprintln!(
        "blast demo: a mock Ollama on {url} (32 tokens per answer, first after {}, then one every {}); \
         it runs in this process, so the client-cost line below includes it",
        humantime::format_duration(DEMO_TTFT),
        humantime::format_duration(DEMO_TOKEN_DELAY)
    );
    let preset = DEMO_ARGS
        .iter()
        .copied()
        .chain(std::iter::once(url.as_str()));
    let code = run_preset(preset, rest, "demo");
    if let Err(e) = server.stop() {
        eprintln!("blast: stopping the mock: {e}");
    }
    code
}

/// `blast compare A.json B.json ... [--fail-if EXPR]`.
pub fn compare(files: &[std::path::PathBuf], fail_if: &[String]) -> ExitCode {
    let thresholds = match fail_if
        .iter()
        .map(|t| crate::compare::Threshold::parse(t))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(t) => t,
        Err(e) => return fail(2, e),
    };
    let results = match crate::compare::load(files) {
        Ok(r) => r,
        Err(e) => return fail(2, e),
    };
    let violations =
        match crate::compare::compare(&mut std::io::stdout().lock(), &results, &thresholds) {
            Ok(v) => v,
            Err(e) => return fail(1, e),
        };
    if violations.is_empty() {
        return ExitCode::SUCCESS;
    }
    for v in &violations {
        eprintln!("blast: threshold crossed: {v}");
    }
    ExitCode::from(1)
}

/// Parse the command line and do what it says.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        None => load_test(&cli.run, None),
        Some(crate::cli::Command::Scenario { name, rest }) => scenario(name.as_deref(), rest),
        Some(crate::cli::Command::Compare { files, fail_if }) => compare(files, fail_if),
        Some(crate::cli::Command::Mock(args)) => mock(args),
        Some(crate::cli::Command::Demo { rest }) => demo(rest),
    }
}
