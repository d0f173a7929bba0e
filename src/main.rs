use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use blast::cli::Cli;
use blast::plan::{Plan, Stop};
use blast::report::{json, text};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => load_test(&cli.run),
    }
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("blast: {msg}");
    ExitCode::from(code)
}

fn load_test(args: &blast::cli::RunArgs) -> ExitCode {
    let plan = match Plan::from_args(args) {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    if let Err(e) = ctrlc::set_handler(|| {
        // A second Ctrl-C means "now": skip the report.
        if blast::engine::INTERRUPTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            std::process::exit(130);
        }
    }) {
        return fail(2, format!("cannot install the Ctrl-C handler: {e}"));
    }
    let live = !plan.output.quiet && std::io::stderr().is_terminal();
    let total_s = match plan.stop {
        Stop::Duration(d) => Some(d.as_secs_f64()),
        Stop::Requests(_) => None,
    };
    let report = match blast::run(&plan, |row| {
        if live {
            eprintln!("{}", text::live_line(row, total_s));
        }
    }) {
        Ok(r) => r,
        Err(e) => return fail(1, e),
    };

    let mut summary: Box<dyn Write> = match plan.output.json_stdout {
        true => Box::new(std::io::stderr()),
        false => Box::new(std::io::stdout()),
    };
    let _ = text::write(&mut summary, &report);
    if plan.output.json_stdout {
        if let Err(e) = json::write(&mut std::io::stdout().lock(), &report) {
            return fail(1, format!("cannot write the JSON result: {e}"));
        }
    }
    if let Some(path) = &plan.output.json {
        let written = std::fs::File::create(path)
            .and_then(|f| json::write(&mut std::io::BufWriter::new(f), &report));
        if let Err(e) = written {
            return fail(1, format!("cannot write {}: {e}", path.display()));
        }
    }
    if report.interrupted {
        return ExitCode::from(130);
    }
    if report.requests.ok == 0 {
        return fail(1, "no successful responses");
    }
    ExitCode::SUCCESS
}
