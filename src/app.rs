//! What the `blast` command does with its arguments: plan, run, print, and the exit code.
//! Exit codes: 0 success, 1 the run failed (no successful response, I/O), 2 bad input,
//! 130 interrupted by Ctrl-C and 143 stopped by SIGTERM (both after reporting what was
//! measured).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, RunArgs};
use crate::mock::{MockArgs, MockConfig, MockServer};
use crate::plan::Plan;
use crate::prometheus::Exporter;
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
            let mut out = std::io::stdout().lock();
            let listed = writeln!(
                out,
                "Scenarios (blast scenario NAME URL [OPTIONS], options override the preset):"
            )
            .and_then(|()| {
                SCENARIOS.iter().try_for_each(|s| {
                    let args = s.args.join(" ");
                    writeln!(
                        out,
                        "  {:<13} {}\n  {:<13} blast {args}",
                        s.name, s.about, ""
                    )
                })
            })
            .and_then(|()| out.flush());
            return match listed {
                // A reader that stopped early (`| head`) has what it wanted.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    fail(1, format!("cannot write the list: {e}"))
                }
                _ => ExitCode::SUCCESS,
            };
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
        // Clap's usage line would list the preset's own flags: name the missing URL instead.
        Err(e) if missing_url(&e) => {
            eprintln!("blast: `blast scenario {name}` needs the URL of the server to load");
            fail(2, format!("usage: blast scenario {name} URL [OPTIONS]"))
        }
        Err(e) => cli_error(e),
    }
}

/// Whether clap refused the command line only because the target URL is missing.
fn missing_url(e: &clap::Error) -> bool {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    e.kind() == ErrorKind::MissingRequiredArgument
        && matches!(e.get(ContextKind::InvalidArg),
            Some(ContextValue::Strings(args)) if args.iter().all(|a| a == "<URL>"))
}

pub fn load_test(args: &RunArgs, scenario: Option<&str>) -> ExitCode {
    let mut plan = match Plan::from_args(args) {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    plan.scenario = scenario.map(str::to_string);
    let plan = Arc::new(plan);
    if let Err(e) = on_stop_signals() {
        return fail(2, format!("cannot install the Ctrl-C/SIGTERM handler: {e}"));
    }
    let live = !plan.output.quiet && std::io::stderr().is_terminal();
    // A wait for --start-at would otherwise look like a hang.
    if let (Some(at), true) = (plan.start_at, live) {
        eprintln!("blast: starting at {}", crate::report::wall_clock(at).0);
    }
    // Listening before the run starts: a busy port is the user's to fix, not a lost run.
    let exporter = match plan.output.prometheus {
        Some(addr) => match Exporter::start(addr, &plan) {
            Ok(x) => Some(x),
            Err(e) => return fail(2, format!("--prometheus {addr}: cannot listen: {e}")),
        },
        None => None,
    };
    // With port 0 the line is the only way to learn the port: said even with --quiet.
    let asked_port_0 = plan.output.prometheus.is_some_and(|a| a.port() == 0);
    if let (Some(x), false) = (&exporter, plan.output.quiet && !asked_port_0) {
        eprintln!(
            "blast: Prometheus metrics on http://{}/metrics",
            x.local_addr()
        );
    }
    let total_s = plan.run_for.map(|d| d.as_secs_f64());
    // The target's own metrics are read on threads of their own, first before the load.
    let mut scraper =
        (!plan.scrape.is_empty()).then(|| crate::scrape::Scraper::start(&plan.scrape));
    let report = match crate::run_with(&plan, |interval| {
        if let Some(s) = &mut scraper {
            s.row();
        }
        if live {
            eprintln!("{}", text::live_line(interval.row, total_s));
        }
        if let Some(x) = &exporter {
            x.update(interval);
        }
    }) {
        Ok(r) => r,
        Err(e) => return fail(1, e),
    };
    if let Some(x) = &exporter {
        x.finish();
    }
    let mut report = report;
    if let Some(s) = scraper {
        let (metrics, warnings) = s.finish(
            report.timeline.len(),
            &plan.expect_count,
            report.requests.sent,
            plan.shard.count,
        );
        report.target_metrics = Some(metrics);
        report.warnings.extend(warnings);
    }
    let failures = write_outputs(&plan, &report);
    for f in &failures {
        eprintln!("blast: {f}");
    }
    // The results are out; a last scrape may still come for the final totals. A run cut
    // short by Ctrl-C does not wait.
    let linger = plan.output.prometheus_linger;
    if let (Some(x), false) = (&exporter, linger.is_zero() || report.interrupted) {
        if !plan.output.quiet {
            eprintln!(
                "blast: serving the final metrics for {} more (Ctrl-C ends it)",
                humantime::format_duration(linger)
            );
        }
        x.linger(linger);
    }
    drop(exporter);
    if report.interrupted {
        return interrupted_exit();
    }
    if !failures.is_empty() {
        return ExitCode::from(1);
    }
    if report.requests.ok == 0 {
        return fail(1, "no successful responses");
    }
    ExitCode::SUCCESS
}

/// `blast overhead --via PROXY_URL --direct UPSTREAM_URL [load options]`: both sides at
/// once, then the comparison (`crate::overhead`).
pub fn overhead(rest: &[String]) -> ExitCode {
    use crate::overhead::{self as oh, ArgsError};
    let inv = match oh::parse_args(rest) {
        Ok(inv) => inv,
        Err(ArgsError::Help) => {
            println!(
                "blast overhead --via PROXY_URL --direct UPSTREAM_URL [load options]\n\n\
                 Sends the same load to the proxy and to its upstream at once (open loop: the \
                 direct side's sends half a gap after the via side's; closed loop: --conns \
                 connections each) and reports via, direct and via - direct for latency, TTFB, \
                 TTFT, ITL and TPOT at p50/p90/p99/p99.9, each with a 95% interval (paired block \
                 bootstrap over the --interval intervals, 250ms by default).\n\
                 Load options are those of `blast URL` (see `blast --help`); --json PATH writes \
                 overhead.{{via,direct,delta}}."
            );
            return ExitCode::SUCCESS;
        }
        Err(ArgsError::Usage(msg)) => return fail(2, msg),
        Err(ArgsError::Clap(e)) => return cli_error(e),
    };
    let plans = match oh::plans(&inv) {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    if let Err(e) = on_stop_signals() {
        return fail(2, format!("cannot install the Ctrl-C/SIGTERM handler: {e}"));
    }
    let out = plans[0].output.clone();
    let live = !out.quiet && std::io::stderr().is_terminal();
    if let (Some(at), true) = (plans[0].start_at, live) {
        eprintln!("blast: starting at {}", crate::report::wall_clock(at).0);
    }
    let total_s = plans[0].run_for.map(|d| d.as_secs_f64());
    let offset = oh::direct_offset(&plans[0]);
    let mut blocks = oh::Blocks::default();
    let ran = crate::run_together(
        &plans,
        &[Duration::ZERO, offset],
        |side, interval| {
            if live {
                let name = ["via   ", "direct"][side];
                eprintln!("{name} {}", text::live_line(interval.row, total_s));
            }
        },
        |side, snap| blocks.record(side, snap),
    );
    let mut reports = match ran {
        Ok(r) => r,
        Err(e) => return fail(1, e),
    };
    // The client's CPU per request is the process's over both sides' requests.
    let done: u64 = reports.iter().map(|r| r.requests.completed).sum();
    for r in &mut reports {
        r.client_cpu_us_per_request *= r.requests.completed as f64 / done.max(1) as f64;
    }
    let cmp = oh::Overhead::new(&reports[0], &reports[1], &blocks, offset);
    let mut failures = Vec::new();
    let summary = match out.json_stdout {
        true => cmp.write_text(&mut std::io::stderr().lock()),
        false => flushed(&mut std::io::stdout().lock(), |w| cmp.write_text(w)),
    };
    match summary {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            failures.push(format!("cannot write the summary: {e}"))
        }
        _ => {}
    }
    if out.json_stdout {
        if let Err(e) = flushed(&mut std::io::stdout().lock(), |w| cmp.write_json(w)) {
            failures.push(format!("cannot write the JSON result to stdout: {e}"));
        }
    }
    if let Some(path) = &out.json {
        let written = std::fs::File::create(path)
            .and_then(|f| flushed(&mut std::io::BufWriter::new(f), |w| cmp.write_json(w)));
        if let Err(e) = written {
            failures.push(format!("cannot write {}: {e}", path.display()));
        }
    }
    for f in &failures {
        eprintln!("blast: {f}");
    }
    if reports.iter().any(|r| r.interrupted) {
        return interrupted_exit();
    }
    if !failures.is_empty() {
        return ExitCode::from(1);
    }
    match (reports[0].requests.ok, reports[1].requests.ok) {
        (0, _) => fail(1, "no successful responses through the proxy (--via)"),
        (_, 0) => fail(1, "no successful responses from the upstream (--direct)"),
        _ => ExitCode::SUCCESS,
    }
}

/// Write every output asked for, each even when another failed; one line per failure.
fn write_outputs(plan: &Plan, report: &Report) -> Vec<String> {
    let out = &plan.output;
    let mut failures = Vec::new();
    // With the JSON document on stdout, the human summary moves to stderr.
    let summary = match out.json_stdout {
        true => text::write(&mut std::io::stderr().lock(), report),
        false => flushed(&mut std::io::stdout().lock(), |w| text::write(w, report)),
    };
    match summary {
        // Whoever read stdout stopped early (`| head`): nothing to tell them.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => failures.push(format!("cannot write the summary: {e}")),
        Ok(()) => {}
    }
    if out.json_stdout {
        if let Err(e) = flushed(&mut std::io::stdout().lock(), |w| json::write(w, report)) {
            failures.push(format!("cannot write the JSON result to stdout: {e}"));
        }
    }
    // A buffered file is flushed before it is dropped: that is where a full disk shows.
    let to_file = |path: &std::path::Path, what: &dyn Fn(&mut dyn Write) -> std::io::Result<()>| {
        std::fs::File::create(path)
            .and_then(|f| flushed(&mut std::io::BufWriter::new(f), |w| what(w)))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    if let Some(path) = &out.json {
        if let Err(e) = to_file(path, &|mut w| json::write(&mut w, report)) {
            failures.push(e);
        }
    }
    if let Some(path) = &out.timeline_csv {
        if let Err(e) = to_file(path, &|mut w| csv::write_timeline(&mut w, &report.timeline)) {
            failures.push(e);
        }
    }
    if let Some(path) = &out.html {
        let page = serde_json::to_value(report)
            .map_err(|e| e.to_string())
            .and_then(|doc| {
                let name = report
                    .config
                    .scenario
                    .clone()
                    .unwrap_or_else(|| "run".into());
                crate::html::run_report(&[crate::compare::Named { name, doc }])
            })
            .and_then(|page| crate::html::write(path, &page));
        if let Err(e) = page {
            failures.push(format!("cannot write the HTML report: {e}"));
        }
    }
    if let Some(path) = &out.log {
        let line = json::log_line(report, std::time::SystemTime::now());
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            failures.push(format!("cannot append to {}: {e}", path.display()));
        }
    }
    failures
}

/// `write` into `w`, then flush it.
pub(crate) fn flushed<W: Write>(
    w: &mut W,
    write: impl FnOnce(&mut W) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write(w)?;
    w.flush()
}

/// The exit code of a run stopped by Ctrl-C (130) or SIGTERM (143).
pub(crate) fn interrupted_exit() -> ExitCode {
    ExitCode::from(match STOP_SIGNAL.load(Ordering::Relaxed) {
        0 => 130,
        sig => (128 + sig) as u8,
    })
}

/// The signal that stopped the run: the exit code is 128 + it.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Ctrl-C (SIGINT) and SIGTERM (`timeout`, systemd, Kubernetes) both stop the run, which then
/// reports what it measured; a second one of either exits at once. signal-hook rather than
/// the ctrlc crate's `termination` feature: that one runs a single handler for SIGINT,
/// SIGTERM and SIGHUP without saying which arrived, so the exit code could not tell them
/// apart (and a hang-up would stop the run too).
pub(crate) fn on_stop_signals() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        let action = move || {
            // The first signal names the exit code; it is set before the run can see the stop.
            let _ = STOP_SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
            if crate::engine::INTERRUPTED.swap(true, Ordering::SeqCst) {
                signal_hook::low_level::exit(128 + sig);
            }
        };
        // SAFETY: the action only uses atomics and `_exit`, which are async-signal-safe.
        unsafe { signal_hook::low_level::register(sig, action) }?;
    }
    Ok(())
}

/// `blast watch METRICS_URL`: scrape every interval and print what moved, until Ctrl-C,
/// SIGTERM or `--duration`. Exit 1 when no scrape succeeded.
pub fn watch(url: &str, pattern: Option<&str>, interval: &str, duration: Option<&str>) -> ExitCode {
    let spec = (|| -> Result<crate::scrape::watch::Watch, String> {
        let url =
            crate::scrape::check_url(url).map_err(|e| e.replacen("--scrape", "blast watch", 1))?;
        let pattern = pattern
            .map(|p| regex::Regex::new(p).map_err(|e| format!("--match {p:?}: {e}")))
            .transpose()?;
        let interval =
            crate::plan::positive_duration("--interval", interval).map_err(|e| e.to_string())?;
        if interval < Duration::from_millis(100) {
            return Err("--interval must be at least 100ms for blast watch".into());
        }
        let duration = duration
            .map(|d| crate::plan::positive_duration("--duration", d).map_err(|e| e.to_string()))
            .transpose()?;
        Ok(crate::scrape::watch::Watch {
            url,
            pattern,
            interval,
            duration,
        })
    })();
    let spec = match spec {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    if let Err(e) = on_stop_signals() {
        return fail(2, format!("cannot install the Ctrl-C/SIGTERM handler: {e}"));
    }
    let watched = crate::scrape::watch::run(
        &spec,
        &crate::engine::INTERRUPTED,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    let sig = STOP_SIGNAL.load(Ordering::Relaxed);
    match watched {
        _ if sig != 0 => ExitCode::from((128 + sig) as u8),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(1, format!("cannot write the view: {e}")),
        Ok(0) => fail(
            1,
            format!(
                "no scrape of {} succeeded",
                crate::scrape::masked(&spec.url)
            ),
        ),
        Ok(_) => ExitCode::SUCCESS,
    }
}

/// `blast mock`: serve until Ctrl-C.
pub fn mock(args: &MockArgs) -> ExitCode {
    let cfg = match args.to_config(crate::plan::allowed_cpus()) {
        Ok(c) => c,
        Err(e) => return fail(2, e),
    };
    let cores = cfg.cpus.len();
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let server = match MockServer::start(cfg) {
        Ok(s) => s,
        Err(e) => return fail(1, e),
    };
    static STOP: AtomicBool = AtomicBool::new(false);
    if let Err(e) = ctrlc::set_handler(|| STOP.store(true, Ordering::Relaxed)) {
        return fail(2, format!("cannot install the Ctrl-C handler: {e}"));
    }
    eprintln!(
        "blast mock: listening on {scheme}://{} ({cores} core(s)); Ctrl-C stops it",
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

/// `blast compare A.json B.json ... [--fail-if EXPR] [--html PATH]`.
pub fn compare(
    files: &[std::path::PathBuf],
    fail_if: &[String],
    html: Option<&std::path::Path>,
) -> ExitCode {
    let thresholds = match fail_if
        .iter()
        .map(|t| crate::compare::Threshold::parse(t))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(t) => t,
        Err(e) => return fail(2, e),
    };
    let results = match crate::compare::load(files, false) {
        Ok(r) => r,
        Err(e) => return fail(2, e),
    };
    // The table goes to stdout, and into the page too.
    let mut table = Vec::new();
    let violations = match crate::compare::compare(&mut table, &results, &thresholds) {
        Ok(v) => v,
        Err(e) => return fail(1, e),
    };
    if let Err(e) = flushed(&mut std::io::stdout().lock(), |w| w.write_all(&table)) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return fail(1, format!("cannot write the table: {e}"));
        }
    }
    if let Some(path) = html {
        let table = String::from_utf8_lossy(&table);
        let page = match crate::html::compare_report(&results, &table) {
            Ok(p) => p,
            Err(e) => return fail(2, e),
        };
        if let Err(e) = crate::html::write(path, &page) {
            return fail(1, e);
        }
    }
    if violations.is_empty() {
        return ExitCode::SUCCESS;
    }
    for v in &violations {
        eprintln!("blast: threshold crossed: {v}");
    }
    ExitCode::from(1)
}

/// `blast report A.json ... --html PATH`: the HTML report of saved result documents.
pub fn report(files: &[std::path::PathBuf], html: &std::path::Path) -> ExitCode {
    let docs = match crate::html::load(files) {
        Ok(d) => d,
        Err(e) => return fail(2, e),
    };
    let page = match crate::html::run_report(&docs) {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    match crate::html::write(html, &page) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

/// `blast merge A.json B.json ... [--json OUT] [--allow-duplicates]`: one result from the
/// shards' (`crate::merge`); the summary goes to stdout, or to stderr with `--json -`.
pub fn merge(files: &[std::path::PathBuf], json: Option<&str>, allow_duplicates: bool) -> ExitCode {
    let docs = match crate::compare::load(files, false) {
        Ok(d) => d,
        Err(e) => return fail(2, e),
    };
    let (merged, notes) = match crate::merge::merge(&docs, allow_duplicates) {
        Ok(m) => m,
        Err(e) => return fail(2, e),
    };
    for n in &notes {
        eprintln!("blast: {n}");
    }
    let failures = summary_and_json(json, &merged, "merged result", |w| {
        crate::merge::write_text(&mut &mut *w, &merged)
    });
    for f in &failures {
        eprintln!("blast: {f}");
    }
    match failures.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    }
}

/// A command's summary and its JSON document (`json`: a path, or "-" for stdout, which then
/// moves the summary to stderr), each flushed, each written even when the other failed.
/// Returns one line per failure.
pub(crate) fn summary_and_json(
    json: Option<&str>,
    doc: &impl serde::Serialize,
    what: &str,
    summary: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let written = match json {
        Some("-") => summary(&mut std::io::stderr().lock()),
        _ => flushed(&mut std::io::stdout().lock(), |w| summary(w)),
    };
    match written {
        // Whoever read stdout stopped early (`| head`): nothing to tell them.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            failures.push(format!("cannot write the summary: {e}"))
        }
        _ => {}
    }
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut *w, doc)?;
        writeln!(w)?;
        w.flush()
    };
    let written = match json {
        None => Ok(()),
        Some("-") => write(&mut std::io::stdout().lock()),
        Some(path) => std::fs::File::create(path)
            .and_then(|f| write(&mut std::io::BufWriter::new(f)))
            .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}"))),
    };
    if let Err(e) = written {
        failures.push(format!("cannot write the {what}: {e}"));
    }
    failures
}

/// A command line clap refused, in two lines rather than clap's five to eight: what is
/// wrong (naming the option and its form), then one hint (clap's tip or the accepted
/// values, else where to look). Help and version go out as clap renders them.
fn cli_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        // A closed stdout is not an error worth a word here.
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let what = lines.next().unwrap_or("invalid command line");
    let what = what.strip_prefix("error: ").unwrap_or(what);
    // Rust's integer-parsing messages, in words that say what is wanted.
    let what = what
        .replace("invalid digit found in string", "want a whole number")
        .replace("number too large to fit in target type", "too large");
    let what = what.as_str();
    // "the following required arguments were not provided:" names them on the next line.
    let what = match (what.ends_with(':'), lines.clone().next()) {
        (true, Some(next)) if !next.starts_with("Usage:") => {
            lines.next();
            format!("{what} {next}")
        }
        _ => what.to_string(),
    };
    // The option at fault, as clap names it: "--conns <N>".
    let arg = match e.get(clap::error::ContextKind::InvalidArg) {
        Some(clap::error::ContextValue::String(a)) => a.split(' ').next(),
        _ => None,
    };
    let hint = lines
        .find(|l| l.starts_with("tip:") || l.starts_with("[possible values"))
        .map(|l| l.trim_start_matches("tip:").trim().to_string())
        .or_else(|| arg.and_then(option_help))
        .unwrap_or_else(|| "see `blast --help`".to_string());
    eprintln!("blast: {what}");
    fail(2, hint)
}

/// "--conns N: Keep-alive connections ...": an option's form and short help, looked up by
/// its long name (`--conns`) for the hint under an error: in the subcommand typed, if any
/// (`blast mock --cores` is the mock's), else in the load test's options.
fn option_help(name: &str) -> Option<String> {
    let long = name.strip_prefix("--")?;
    let cmd = <Cli as clap::CommandFactory>::command();
    let typed = std::env::args()
        .nth(1)
        .and_then(|sub| cmd.find_subcommand(&sub).cloned());
    let arg = typed
        .iter()
        .chain(std::iter::once(&cmd))
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(long))?;
    let value = match arg.get_action().takes_values() {
        true => arg.get_value_names().and_then(|v| v.first()).map_or_else(
            || format!(" {}", arg.get_id().as_str().to_uppercase()),
            |v| format!(" {v}"),
        ),
        false => String::new(),
    };
    let help = arg.get_help()?.to_string();
    Some(format!("--{long}{value}: {help}"))
}

/// `blast completions SHELL`, `blast man`: a generated text on stdout, rendered in memory
/// first so that a reader that stops early (`| head`) costs nothing but a quiet exit.
fn generated(render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> ExitCode {
    let mut text = Vec::new();
    if let Err(e) = render(&mut text) {
        return fail(1, e);
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(&text).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => fail(1, e),
        _ => ExitCode::SUCCESS,
    }
}

/// Parse the command line and do what it says.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if missing_url(&e) && std::env::args().nth(1).as_deref() == Some("sweep") => {
            eprintln!("blast: `blast sweep` needs the URL of the server to load");
            return fail(2, "usage: blast sweep URL [OPTIONS]");
        }
        // Plain `blast`: say what it needs and where a first try can go.
        Err(e) if missing_url(&e) => {
            eprintln!("blast: the URL to load is missing: blast [OPTIONS] URL");
            return fail(
                2,
                "e.g. blast http://127.0.0.1:8080/; `blast demo` loads a built-in mock; `blast -h` lists the options",
            );
        }
        Err(e) => return cli_error(e),
    };
    match &cli.command {
        None => load_test(&cli.run, None),
        Some(crate::cli::Command::Scenario { name, rest }) => scenario(name.as_deref(), rest),
        Some(crate::cli::Command::Compare {
            files,
            fail_if,
            html,
        }) => compare(files, fail_if, html.as_deref()),
        Some(crate::cli::Command::Report { files, html }) => report(files, html),
        Some(crate::cli::Command::Merge {
            files,
            json,
            allow_duplicates,
        }) => merge(files, json.as_deref(), *allow_duplicates),
        Some(crate::cli::Command::Mock(args)) => mock(args),
        Some(crate::cli::Command::Watch {
            url,
            pattern,
            interval,
            duration,
        }) => watch(url, pattern.as_deref(), interval, duration.as_deref()),
        Some(crate::cli::Command::Sweep { sweep, run }) => crate::sweep::command(sweep, run),
        Some(crate::cli::Command::Demo { rest }) => demo(rest),
        Some(crate::cli::Command::Overhead { rest }) => overhead(rest),
        Some(crate::cli::Command::Completions { shell }) => generated(|out| {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "blast", out);
            Ok(())
        }),
        Some(crate::cli::Command::Man) => generated(|out| {
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(out)
        }),
    }
}
