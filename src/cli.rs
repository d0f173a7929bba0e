//! Command-line definitions only: what the user can type. Meaning and validation live in `plan`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "blast",
    version,
    about = "Thread-per-core HTTP/1.1 load generator for LLM servers and the proxies in front of them",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {}

/// A load test: `blast [OPTIONS] URL`.
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Target URL (http:// only), e.g. http://localhost:11435/api/generate
    #[arg(required = true)]
    pub url: Option<String>,

    /// Pinned executors (one per core). Default: every CPU this process may run on.
    #[arg(long, short = 'c')]
    pub cores: Option<usize>,

    /// Keep-alive connections in total, split evenly across the cores.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub conns: usize,

    /// Run for this long (e.g. 500ms, 10s, 2m). Default 10s unless --requests is given.
    #[arg(long, short = 'd', conflicts_with = "requests")]
    pub duration: Option<String>,

    /// Send exactly this many requests in total, then stop.
    #[arg(long, short = 'r')]
    pub requests: Option<u64>,

    /// HTTP method. Default: GET, or POST when a body is given.
    #[arg(long, short = 'm')]
    pub method: Option<String>,

    /// Extra request header, 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,

    /// Request body read from a file.
    #[arg(long, value_name = "PATH")]
    pub body_file: Option<PathBuf>,

    /// Give up on a request after this long and drop its connection.
    #[arg(long, default_value = "30s")]
    pub timeout: String,

    /// Give up on a connection attempt after this long.
    #[arg(long, default_value = "5s")]
    pub connect_timeout: String,

    /// Statistics interval (live line, timeline rows).
    #[arg(long, default_value = "1s")]
    pub interval: String,

    /// No live line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Write the result document as JSON to PATH ('-' for stdout).
    #[arg(long, value_name = "PATH")]
    pub json: Option<String>,
}
