//! Command-line definitions only: what the user can type. Meaning and validation live in `plan`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "blast",
    version,
    about = "Thread-per-core HTTP/1.1 load generator for LLM servers and the proxies in front of them",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// A fake Ollama / OpenAI-compatible upstream on loopback (thread per core).
    Mock(crate::mock::MockArgs),
    /// Start the mock on a free loopback port and load it with a streaming Ollama workload.
    Demo {
        /// Load-test options, overriding the demo's (e.g. --duration 10s --api openai-chat).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Results side by side (blast's or the async baseline's JSON), with ratios to the first.
    Compare {
        /// Result documents; the first is the baseline.
        #[arg(required = true, num_args = 2..)]
        files: Vec<PathBuf>,
        /// Exit 1 when a later result crosses this change against the first:
        /// METRIC>+N% or METRIC<-N%, e.g. 'p99>+10%' or 'rps<-5%' (repeatable).
        #[arg(long = "fail-if", value_name = "EXPR")]
        fail_if: Vec<String>,
        /// Also write the runs overlaid (timelines, percentile spectra) as an HTML page to PATH
        #[arg(long, value_name = "PATH")]
        html: Option<PathBuf>,
    },
    /// An HTML report (one self-contained page with plots) from saved result documents.
    Report {
        /// Result documents (`--json`, `blast merge`, or a sweep's), each shown in full.
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Write the page here.
        #[arg(long, value_name = "PATH", required = true)]
        html: PathBuf,
    },
    /// A shell completion script on stdout, e.g. `blast completions bash > blast.bash`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The manual page (roff) on stdout, e.g. `blast man > blast.1 && man ./blast.1`.
    Man,
    /// Merge the result documents of the shards of one run (`--shard`) into one result.
    Merge {
        /// Result documents, one per shard.
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Write the merged result document here ("-": stdout).
        #[arg(long, value_name = "PATH")]
        json: Option<String>,
        /// Accept inputs with the same shard index (e.g. a file merged with itself).
        #[arg(long)]
        allow_duplicates: bool,
    },
    /// A live view of a target's Prometheus metrics (counter rates, gauges) without load.
    Watch {
        /// The metrics URL, e.g. http://localhost:8001/metrics
        url: String,
        /// Only series whose name{labels} matches this regular expression
        #[arg(long = "match", value_name = "REGEX")]
        pattern: Option<String>,
        /// Time between scrapes
        #[arg(long, value_name = "D", default_value = "1s")]
        interval: String,
        /// Stop after this long [default: until Ctrl-C]
        #[arg(long, short = 'd', value_name = "D")]
        duration: Option<String>,
    },
    /// What a proxy adds: the same load on --via PROXY_URL and --direct UPSTREAM_URL at once,
    /// compared per percentile with 95% intervals.
    ///
    /// Both sides run at once in one process, each with the load options' connections and
    /// rate (those of `blast URL`, see `blast --help`); `--json PATH` writes
    /// overhead.{via,direct,delta}. See the README's "What a proxy adds".
    #[command(
        override_usage = "blast overhead --via PROXY_URL --direct UPSTREAM_URL [load options]"
    )]
    Overhead {
        /// --via PROXY_URL --direct UPSTREAM_URL and load options (as for `blast URL`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Find the highest rate the target sustains: an unloaded probe, a closed-loop ceiling,
    /// then constant rates in between (each a full run; `--json` keeps every step's result).
    Sweep {
        #[command(flatten)]
        sweep: SweepArgs,
        #[command(flatten)]
        run: Box<RunArgs>,
    },
    /// Named load scenarios: `blast scenario list`, `blast scenario NAME URL [OPTIONS]`.
    Scenario {
        /// `list`, or a scenario name.
        name: Option<String>,
        /// The URL and any options, which override the scenario's.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

/// `blast sweep`'s own options (the load options are `RunArgs`').
#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// Constant-rate steps, evenly spaced from the unloaded rate up to the ceiling
    #[arg(
        long,
        value_name = "N",
        default_value_t = 8,
        help_heading = "Sweep",
        allow_negative_numbers = true
    )]
    pub steps: usize,

    /// How long each step (probe or rate) sends
    #[arg(long, value_name = "D", default_value = "10s", help_heading = "Sweep")]
    pub step_duration: String,

    /// Explicit rates to step through instead (R1,R2,... req/s; no ceiling probe then)
    #[arg(long, value_name = "R1,R2,...", help_heading = "Sweep")]
    pub rates: Option<String>,

    /// Start no step that could end after this much time in all
    #[arg(long, value_name = "D", default_value = "10m", help_heading = "Sweep")]
    pub max_time: String,

    /// Stop when a step's failed requests pass this percentage of those sent
    #[arg(
        long,
        value_name = "P",
        default_value_t = 1.0,
        help_heading = "Sweep",
        allow_negative_numbers = true
    )]
    pub max_error_pct: f64,

    /// Without --slo: a step holds only if its p99 stays within this multiple of the unloaded p99
    #[arg(
        long,
        value_name = "X",
        default_value_t = 5.0,
        help_heading = "Sweep",
        allow_negative_numbers = true
    )]
    pub p99_multiple: f64,

    /// With --slo: a step holds only if at least this percentage of its requests met the SLOs
    #[arg(
        long,
        value_name = "P",
        default_value_t = 90.0,
        help_heading = "Sweep",
        allow_negative_numbers = true
    )]
    pub slo_pct: f64,

    /// Extra steps that halve the gap between the last rate that held and the first that did not
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2,
        help_heading = "Sweep",
        allow_negative_numbers = true
    )]
    pub refine: usize,

    /// Most connections a rate step may open (they grow with rate x latency)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 4096,
        help_heading = "Sweep",
        allow_negative_numbers = true
    )]
    pub max_conns: usize,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiArg {
    /// Plain HTTP: no request body of ours, responses not decoded.
    None,
    OllamaGenerate,
    OllamaChat,
    OpenaiChat,
    OpenaiCompletions,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrivalsArg {
    Uniform,
    Poisson,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternArg {
    Constant,
    Burst,
    Ramp,
    Spike,
    Chaos,
}

/// A load test: `blast [OPTIONS] URL`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Target URL (http:// or https://), e.g. http://localhost:11435/api/generate
    #[arg(required = true)]
    pub url: Option<String>,

    /// Pinned executors, one per core [default: every CPU this process may run on]
    #[arg(
        long,
        short = 'c',
        value_name = "N",
        help_heading = "Load",
        allow_negative_numbers = true
    )]
    pub cores: Option<usize>,

    /// Keep-alive connections in total, split evenly across the cores
    #[arg(
        long,
        short = 'n',
        value_name = "N",
        default_value_t = 100,
        help_heading = "Connection",
        allow_negative_numbers = true
    )]
    pub conns: usize,

    /// Stop sending after this long: 500ms, 10s, 2m [default: 10s]
    ///
    /// The 10s default applies unless --requests is given; with both, whichever comes first
    /// ends the run.
    #[arg(long, short = 'd', value_name = "D", help_heading = "Load")]
    pub duration: Option<String>,

    /// HTTP/1.1 pipelining depth: requests outstanding per connection
    ///
    /// Up to N requests are written back to back on a connection; each response is matched to
    /// its request and timed on its own.
    #[arg(
        long,
        short = 'p',
        value_name = "N",
        default_value_t = 1,
        help_heading = "Connection",
        allow_negative_numbers = true
    )]
    pub pipeline: usize,

    /// Send exactly this many requests in total, then stop
    #[arg(
        long,
        short = 'r',
        value_name = "K",
        help_heading = "Load",
        allow_negative_numbers = true
    )]
    pub requests: Option<u64>,

    /// HTTP method [default: GET, or POST with a body or --api]
    #[arg(long, short = 'm', value_name = "M", help_heading = "Request")]
    pub method: Option<String>,

    /// Extra request header, 'Name: value' (repeatable)
    #[arg(
        long = "header",
        short = 'H',
        value_name = "NAME: VALUE",
        help_heading = "Request"
    )]
    pub headers: Vec<String>,

    /// Request body
    #[arg(long, conflicts_with = "body_file", help_heading = "Request")]
    pub body: Option<String>,

    /// Request body read from a file
    #[arg(long, value_name = "PATH", help_heading = "Request")]
    pub body_file: Option<PathBuf>,

    /// Give up on a request after this long and drop its connection
    #[arg(
        long,
        value_name = "D",
        default_value = "30s",
        help_heading = "Connection"
    )]
    pub timeout: String,

    /// Give up on a connection attempt after this long
    #[arg(
        long,
        value_name = "D",
        default_value = "5s",
        help_heading = "Connection"
    )]
    pub connect_timeout: String,

    /// https://: trust the CA certificates in this PEM file instead of the system's
    #[arg(long, value_name = "PATH", help_heading = "TLS")]
    pub cacert: Option<PathBuf>,

    /// https://: accept any server certificate (signatures are still checked)
    #[arg(long, short = 'k', help_heading = "TLS")]
    pub insecure: bool,

    /// https://: client certificate chain (PEM), with --key
    #[arg(long, value_name = "PATH", requires = "key", help_heading = "TLS")]
    pub cert: Option<PathBuf>,

    /// https://: the client certificate's private key (PEM), with --cert
    #[arg(long, value_name = "PATH", requires = "cert", help_heading = "TLS")]
    pub key: Option<PathBuf>,

    /// https://: a full handshake on every new connection (no session resumption)
    #[arg(long, help_heading = "TLS")]
    pub no_tls_resume: bool,

    /// https://: offer only this TLS version, 1.2 or 1.3 (default: both)
    #[arg(long, value_name = "VERSION", help_heading = "TLS")]
    pub tls_version: Option<String>,

    /// https://: the cipher suites to offer, in order of preference, comma-separated IANA
    /// names such as TLS_AES_128_GCM_SHA256 (default: AES-256-GCM, AES-128-GCM, ChaCha20)
    #[arg(long, value_name = "LIST", help_heading = "TLS")]
    pub tls_ciphers: Option<String>,

    /// Statistics interval (live line, timeline rows)
    #[arg(long, value_name = "D", default_value = "1s", help_heading = "Output")]
    pub interval: String,

    /// No live line on stderr
    #[arg(long, short = 'q', help_heading = "Output")]
    pub quiet: bool,

    /// Write the result document as JSON to PATH ('-' for stdout)
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    pub json: Option<String>,

    /// Write an HTML report (plots, verdict, config; one self-contained file) to PATH
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    pub html: Option<PathBuf>,

    /// Write the per-interval timeline as CSV to PATH
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    pub timeline: Option<PathBuf>,

    /// Append one JSON line per run (time, scenario, config, summary) to PATH
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    pub log: Option<PathBuf>,

    /// Serve live metrics for Prometheus on http://ADDR/metrics, e.g. 127.0.0.1:9464
    ///
    /// Updated every --interval from the aggregated figures; ":PORT" listens on every
    /// interface.
    #[arg(long, value_name = "ADDR", help_heading = "Output")]
    pub prometheus: Option<String>,

    /// Keep serving the metrics this long after the run, so a last scrape sees the totals
    ///
    /// Ctrl-C ends it early.
    #[arg(
        long,
        value_name = "D",
        requires = "prometheus",
        help_heading = "Output"
    )]
    pub prometheus_linger: Option<String>,

    /// Open loop: requests per second in total, sent on schedule
    ///
    /// Requests go out on schedule whatever the server does; latency is measured from when
    /// each request should have been sent.
    #[arg(
        long,
        value_name = "RPS",
        allow_negative_numbers = true,
        value_parser = rate,
        help_heading = "Open loop"
    )]
    pub rate: Option<f64>,

    /// Cap on requests in flight over all cores
    ///
    /// Each core enforces its share.
    #[arg(
        long,
        value_name = "N",
        help_heading = "Open loop",
        allow_negative_numbers = true
    )]
    pub max_in_flight: Option<u64>,

    /// How late a send may be, to batch wake-ups [default: 150us; closed loop: off]
    ///
    /// Sends and responses are handled in batches, one wake-up for many (CPU per request falls
    /// as it grows); 0 wakes for each. Latency is still measured from the intended send time
    /// to the response's arrival. At most 10ms. In a closed loop, given by hand, it also
    /// spares the server the cost of waking an idle blast for each response.
    #[arg(long, value_name = "D", help_heading = "Open loop")]
    pub slack: Option<String>,

    /// Spacing of sends: evenly, or exponential gaps (Poisson arrivals)
    #[arg(
        long,
        value_enum,
        default_value = "uniform",
        help_heading = "Open loop"
    )]
    pub arrivals: ArrivalsArg,

    /// Seed for every random choice (Poisson gaps, chaos), so runs can be repeated
    #[arg(
        long,
        default_value_t = 1,
        help_heading = "Open loop",
        allow_negative_numbers = true
    )]
    pub seed: u64,

    /// Shape of the rate over time
    #[arg(long, value_enum, help_heading = "Open loop")]
    pub pattern: Option<PatternArg>,

    /// burst: requests sent at once every --burst-every, on top of --rate (which may be 0)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 50,
        help_heading = "Open loop",
        allow_negative_numbers = true
    )]
    pub burst_size: u64,

    /// burst: time between bursts (the first at the start)
    #[arg(
        long,
        value_name = "D",
        default_value = "10s",
        help_heading = "Open loop"
    )]
    pub burst_every: String,

    /// ramp: starting rate, rising linearly to --rate over --ramp-over, then holding
    #[arg(
        long,
        value_name = "RPS",
        default_value_t = 0.0,
        help_heading = "Open loop",
        allow_negative_numbers = true
    )]
    pub ramp_from: f64,

    /// ramp: how long the climb takes [default: the whole run]
    #[arg(long, value_name = "D", help_heading = "Open loop")]
    pub ramp_over: Option<String>,

    /// spike: rate during a spike [default: 5 x --rate]
    #[arg(
        long,
        value_name = "RPS",
        help_heading = "Open loop",
        allow_negative_numbers = true
    )]
    pub spike_rate: Option<f64>,

    /// spike: how long each spike lasts (at the end of every --spike-every period)
    #[arg(
        long,
        value_name = "D",
        default_value = "5s",
        help_heading = "Open loop"
    )]
    pub spike_len: String,

    /// spike: period of the spikes (each spike ends a period)
    #[arg(
        long,
        value_name = "D",
        default_value = "30s",
        help_heading = "Open loop"
    )]
    pub spike_every: String,

    /// chaos: shortest time a random rate is held
    #[arg(
        long,
        value_name = "D",
        default_value = "1s",
        help_heading = "Open loop"
    )]
    pub chaos_min_hold: String,

    /// chaos: longest time a random rate is held
    #[arg(
        long,
        value_name = "D",
        default_value = "10s",
        help_heading = "Open loop"
    )]
    pub chaos_max_hold: String,

    /// Speak an LLM API: its request bodies, its streams decoded (TTFT, ITL, tokens)
    ///
    /// An explicit `none` turns the LLM options off (e.g. to run a scenario as plain HTTP).
    #[arg(long, value_enum, help_heading = "LLM")]
    pub api: Option<ApiArg>,

    /// Model name in the request body [default: llama3.2]
    #[arg(long, help_heading = "LLM")]
    pub model: Option<String>,

    /// Built-in prompt sets to rotate through: short,medium,long [default: short]
    #[arg(long, help_heading = "LLM")]
    pub prompts: Option<String>,

    /// Prompts from a file, one per line (instead of --prompts)
    #[arg(long, value_name = "PATH", help_heading = "LLM")]
    pub prompt_file: Option<PathBuf>,

    /// Ask for a streamed response (the default)
    #[arg(long, overrides_with = "no_stream", help_heading = "LLM")]
    pub stream: bool,

    /// Ask for one whole response instead of a stream
    #[arg(long, help_heading = "LLM")]
    pub no_stream: bool,

    /// Cap on generated tokens (Ollama options.num_predict, OpenAI max_tokens)
    #[arg(
        long,
        value_name = "N",
        help_heading = "LLM",
        allow_negative_numbers = true
    )]
    pub max_tokens: Option<u32>,

    /// SLOs for goodput, e.g. ttft=500ms,tpot=50ms,e2e=10s
    ///
    /// Goodput is the requests per second that met every one of these objectives.
    #[arg(long, value_name = "SLOS", help_heading = "LLM")]
    pub slo: Option<String>,

    /// k6-style stages, linear ramps between rates: 30s:100,1m:1000,30s:0
    ///
    /// The run lasts as long as the stages unless --duration says otherwise.
    #[arg(
        long,
        value_name = "STAGES",
        conflicts_with = "pattern",
        help_heading = "Open loop"
    )]
    pub stages: Option<String>,

    /// Run shard I (0-based) of N processes that together send what one would, e.g. 0/3
    ///
    /// "index/3" reads I from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job).
    #[arg(long, value_name = "I/N", help_heading = "Distributed")]
    pub shard: Option<String>,

    /// Read this Prometheus metrics URL at the start, every --interval and at the end (repeatable)
    ///
    /// The result's target_metrics has each counter's increase over the run, each gauge beside
    /// each timeline row, and histograms' increases. A failed scrape is a warning only.
    #[arg(long, value_name = "METRICS_URL", help_heading = "Target metrics")]
    pub scrape: Vec<String>,

    /// Warn when this scraped counter's increase differs from the requests sent (repeatable)
    ///
    /// NAME sums every label set; NAME{label="value"} only the series with those labels.
    #[arg(long, value_name = "SERIES", help_heading = "Target metrics")]
    pub expect_count: Vec<String>,

    /// Start at this instant: RFC 3339 (2026-01-02T15:04:05Z) or unix seconds
    ///
    /// So that shards start together; a late start is reported (start_late_s).
    #[arg(long, value_name = "TIME", help_heading = "Distributed")]
    pub start_at: Option<String>,
}

/// `--rate`: a finite number of requests per second, not negative. Checked here rather than
/// in the plan so that a mistyped rate is answered like any other mistyped value.
fn rate(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err("want a number of requests per second, e.g. 100 or 2.5".to_string()),
    }
}
