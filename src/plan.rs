//! Turns what the user typed into a validated `Plan`, in two steps (ripgrep's LowArgs /
//! HiArgs): `Spec::parse` checks every value without any I/O, so that it can be tested on
//! its own; `Spec::resolve` does what needs the system (DNS, the body and prompt files, the
//! open-files limit, the output directories) and renders the requests. Every mistake the
//! user can make is caught by one of them, with one clear message, before any thread starts
//! or any connection opens.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::cli::{ApiArg, ArrivalsArg, PatternArg, RunArgs};
use crate::http::request::{self, RequestSpec};
use crate::limits;
use crate::llm::{self, slo::Slo, Api, PromptMix, PromptSet};
use crate::schedule::{self, Arrivals, Pattern, RateSpec};
use crate::scrape::Selector;
use crate::stats::{Metric, MetricGroup};

/// A user error: printed as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

const DEFAULT_MODEL: &str = "llama3.2";

/// `--slack` unless given: enough to batch at tens of thousands of requests per second
/// while send lag p99 stays within 250 us.
pub const DEFAULT_SLACK: Duration = Duration::from_micros(150);
/// A larger slack would make a schedule meaningless at the rates it is for.
const MAX_SLACK: Duration = Duration::from_millis(10);
const DEFAULT_PROMPTS: &str = "short";
/// The longest duration any option takes: a run, a timeout or a period longer than this is a
/// typo, and bounding them keeps every `Instant + duration` in the engine from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Deeper pipelines only queue requests in the server's socket buffer.
const MAX_PIPELINE: usize = 1024;

fn err<T>(msg: impl Into<String>) -> Result<T, PlanError> {
    Err(PlanError(msg.into()))
}

/// The validated run: everything the engine needs, nothing it has to check again. The
/// shards share it (`engine::ShardSetup`), and serialized it is the result document's
/// `config`: the fields the document leaves out are skipped, and where the document's key
/// differs from the engine's name for a field, serde renames it.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub url: String,
    pub method: String,
    /// Shards, one per CPU of `cpus`.
    pub cores: usize,
    /// CPU ids to pin one shard each on.
    pub cpus: Vec<usize>,
    pub conns: usize,
    /// Requests outstanding per connection (HTTP/1.1 pipelining; 1 = none).
    pub pipeline: usize,
    /// `--requests`: send exactly this many requests in total (unless `run_for` ends first).
    #[serde(rename = "requests", skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
    /// `--duration`: stop sending this long after the start; in-flight requests get up to
    /// the timeout to finish.
    #[serde(
        rename = "duration_s",
        serialize_with = "ser_opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub run_for: Option<Duration>,
    #[serde(serialize_with = "ser_secs")]
    pub timeout: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub connect_timeout: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub interval: Duration,
    /// As typed (`Name: value`).
    pub headers: Vec<String>,
    pub body_bytes: usize,
    /// Open loop: when to send. None: closed loop (send as soon as a connection is free).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateSpec>,
    /// Cap on requests in flight over all shards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u64>,
    /// Open loop: how late a send may be for the sake of batching (see `crate::rt::batch`),
    /// in seconds in the document; None for a closed loop.
    #[serde(
        serialize_with = "ser_opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub slack: Option<Duration>,
    /// Speaking an LLM API: its bodies were rendered, its streams are decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<Llm>,
    /// The named scenario this run came from, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// Resolved addresses of the target, tried in order when connecting.
    #[serde(skip)]
    pub addrs: Vec<SocketAddr>,
    /// Pre-rendered requests, sent in rotation (the document's `requests` is `budget`).
    #[serde(skip)]
    pub requests: Vec<Vec<u8>>,
    /// The method is HEAD: responses carry no body.
    #[serde(skip)]
    pub head: bool,
    /// A `Connection: close` request header: each connection carries one request.
    #[serde(skip)]
    pub close_each: bool,
    /// `https://`: how the TLS is set up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsPlan>,
    /// The distributions this run records.
    #[serde(skip)]
    pub metrics: Vec<Metric>,
    #[serde(skip)]
    pub output: Output,
    /// `--shard`: which part of a run split between processes this is. Not in `config`, so
    /// that the shards of one run have the same one (the document has it as `shard`).
    #[serde(skip)]
    pub shard: ShardOf,
    /// `--start-at`: the instant to start at (the shards of one run share it).
    #[serde(skip)]
    pub start_at: Option<std::time::SystemTime>,
    /// `--scrape`: the target's metrics URLs, read from the main process during the run
    /// (in the document with their passwords masked).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "crate::scrape::ser_masked"
    )]
    pub scrape: Vec<String>,
    /// `--expect-count`: counters whose increase should equal the requests sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expect_count: Vec<Selector>,
}

/// `https://`: the TLS options (as the result's `config.tls`), and the client
/// configuration built from them (each shard copies it with a session cache of its own).
#[derive(Clone, Debug, Serialize)]
pub struct TlsPlan {
    pub insecure: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cacert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Sessions are resumed on reconnects (not `--no-tls-resume`).
    pub resume: bool,
    /// `--tls-version`, `--tls-ciphers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<crate::tls::Version>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphers: Option<Vec<String>>,
    #[serde(skip)]
    pub config: std::sync::Arc<rustls::ClientConfig>,
    #[serde(skip)]
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// `--shard I/N`: this process is shard `index` (0-based) of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ShardOf {
    pub index: usize,
    pub count: usize,
}

impl Default for ShardOf {
    fn default() -> Self {
        ShardOf { index: 0, count: 1 }
    }
}

impl ShardOf {
    /// This process's part of an integer quantity of the whole run.
    pub fn share(&self, total: u64) -> u64 {
        schedule::shard_share(total, self.index, self.count)
    }
}

/// `--start-at` may be at most this far ahead.
const MAX_START_AHEAD: Duration = Duration::from_secs(24 * 3600);

/// The most processes a run can be split between.
const MAX_SHARDS: usize = 100_000;

/// `--shard I/N`, or `index/N` with the index from `JOB_COMPLETION_INDEX` (what a Kubernetes
/// Indexed Job sets), read through `env` so that parsing stays testable.
pub fn parse_shard(raw: &str, env: impl Fn(&str) -> Option<String>) -> Result<ShardOf, PlanError> {
    let bad = || {
        PlanError(format!(
            "--shard {raw:?}: expected I/N with 0 <= I < N (e.g. 0/3), or index/N"
        ))
    };
    let (i, n) = raw.trim().split_once('/').ok_or_else(bad)?;
    let count: usize = n.trim().parse().map_err(|_| bad())?;
    if count == 0 || count > MAX_SHARDS {
        return err(format!(
            "--shard {raw}: N must be between 1 and {MAX_SHARDS}"
        ));
    }
    let index: usize = match i.trim() {
        "index" => {
            let v = env("JOB_COMPLETION_INDEX").ok_or_else(|| {
                PlanError(format!(
                    "--shard {raw}: JOB_COMPLETION_INDEX is not set (a Kubernetes Indexed Job sets it)"
                ))
            })?;
            v.trim().parse().map_err(|_| {
                PlanError(format!(
                    "--shard {raw}: JOB_COMPLETION_INDEX={v:?} is not a shard index"
                ))
            })?
        }
        i => i.parse().map_err(|_| bad())?,
    };
    if index >= count {
        return err(format!(
            "--shard {raw}: the index must be less than {count} (0-based)"
        ));
    }
    Ok(ShardOf { index, count })
}

/// `--start-at`: RFC 3339 (`2026-01-02T15:04:05Z`, fractions allowed) or unix seconds.
pub fn parse_start_at(raw: &str) -> Result<std::time::SystemTime, PlanError> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<f64>() {
        if secs.is_finite() && (0.0..4e9).contains(&secs) {
            return Ok(std::time::UNIX_EPOCH + Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_rfc3339_weak(raw).map_err(|e| {
        PlanError(format!(
            "--start-at {raw:?}: not RFC 3339 (2026-01-02T15:04:05Z) or unix seconds ({e})"
        ))
    })
}

/// The LLM part of the plan.
#[derive(Clone, Debug, Serialize)]
pub struct Llm {
    pub api: Api,
    pub model: String,
    /// Prompt sets (or "file:PATH") and how many distinct prompts rotate.
    pub prompts: String,
    pub prompt_count: usize,
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slo: Option<Slo>,
}

impl Llm {
    /// What a connection needs to decode the responses.
    pub fn decoding(&self) -> LlmPlan {
        LlmPlan {
            api: self.api,
            stream: self.stream,
            slo: self.slo.unwrap_or_default(),
        }
    }
}

/// What the engine needs to know to decode an LLM API's responses (a copy for each
/// connection).
#[derive(Clone, Copy, Debug)]
pub struct LlmPlan {
    pub api: Api,
    pub stream: bool,
    pub slo: Slo,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    pub quiet: bool,
    pub json: Option<PathBuf>,
    pub json_stdout: bool,
    pub timeline_csv: Option<PathBuf>,
    pub log: Option<PathBuf>,
    /// `--prometheus`: where to serve `/metrics` during the run.
    pub prometheus: Option<SocketAddr>,
    /// `--prometheus-linger`: how long to go on serving after the run.
    pub prometheus_linger: Duration,
    pub html: Option<PathBuf>,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn ser_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// The parts of an `http://` or `https://` URL that blast needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, never empty.
    pub path: String,
    /// `Host` header value.
    pub authority: String,
    /// `Authorization` header value from the URL's `user:password@`, as curl sends it.
    pub basic_auth: Option<String>,
}

/// `%XX` escapes decoded (the URL parser leaves user info escaped); anything else as is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if let (b'%', Some(h), Some(l)) = (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The URL as results show it: a password in it is masked.
fn without_password(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => raw.to_string(),
    }
}

pub fn parse_url(raw: &str) -> Result<Target, PlanError> {
    let url = url::Url::parse(raw).map_err(|e| PlanError(format!("invalid URL {raw:?}: {e}")))?;
    let https = match url.scheme() {
        "http" => false,
        "https" => true,
        other => {
            return err(format!(
                "{raw}: unsupported scheme {other:?}; use http:// or https://"
            ))
        }
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return err(format!("{raw}: the URL has no host")),
    };
    let port = url
        .port_or_known_default()
        .unwrap_or(if https { 443 } else { 80 });
    let mut path = url.path().to_string();
    if path.is_empty() {
        path.push('/');
    }
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let host_text = match url.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        _ => host.clone(),
    };
    let authority = match url.port() {
        Some(p) => format!("{host_text}:{p}"),
        None => host_text,
    };
    let basic_auth = (!url.username().is_empty() || url.password().is_some()).then(|| {
        use base64::Engine;
        let mut cred = percent_decode(url.username());
        cred.push(b':');
        cred.extend(percent_decode(url.password().unwrap_or("")));
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(cred)
        )
    });
    Ok(Target {
        https,
        host,
        port,
        path,
        authority,
        basic_auth,
    })
}

pub fn parse_duration(what: &str, raw: &str) -> Result<Duration, PlanError> {
    let d = humantime::parse_duration(raw.trim()).map_err(|e| {
        PlanError(format!(
            "{what}: cannot read {raw:?} as a duration ({e}); try 500ms, 10s or 2m"
        ))
    })?;
    if d > MAX_DURATION {
        return err(format!("{what} {raw}: at most a year (365d)"));
    }
    Ok(d)
}

/// `--prometheus ADDR`: `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT`, or `:PORT` for every
/// interface (as Prometheus exporters take it). No name lookup: this step does no I/O.
pub fn parse_listen_addr(raw: &str) -> Result<SocketAddr, PlanError> {
    let raw = raw.trim();
    let bad = |why: &str| {
        PlanError(format!(
            "--prometheus {raw:?}: {why}; want IP:PORT, e.g. 127.0.0.1:9464 (or :9464 for every interface)"
        ))
    };
    if let Ok(addr) = raw.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = raw.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not 0 to 65535"))?;
    match host {
        "" => Ok(SocketAddr::from(([0, 0, 0, 0], port))),
        h if h.eq_ignore_ascii_case("localhost") => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        _ => Err(bad("the host is not an IP address")),
    }
}

pub(crate) fn positive_duration(what: &str, raw: &str) -> Result<Duration, PlanError> {
    let d = parse_duration(what, raw)?;
    if d.is_zero() {
        return err(format!("{what} must be greater than zero"));
    }
    Ok(d)
}

/// The CPUs this process may run on (respects `taskset` and cgroup cpusets).
pub fn allowed_cpus() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Pick `wanted` of the `allowed` CPUs (all of them by default).
pub fn choose_cpus(wanted: Option<usize>, allowed: &[usize]) -> Result<Vec<usize>, PlanError> {
    if allowed.is_empty() {
        return err("cannot determine which CPUs this process may run on");
    }
    match wanted {
        None => Ok(allowed.to_vec()),
        Some(0) => err("--cores must be at least 1"),
        Some(n) if n > allowed.len() => err(format!(
            "--cores {n}: this process may run on {} CPU(s) only ({:?})",
            allowed.len(),
            allowed
        )),
        Some(n) => Ok(allowed[..n].to_vec()),
    }
}

pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, PlanError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| PlanError(format!("cannot resolve host {host:?}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return err(format!("host {host:?} resolved to no address"));
    }
    Ok(addrs)
}

/// Where the request body comes from. `--body ''` is no body, as if none were given.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Bytes(Vec<u8>),
    /// `--body-file`: read by `resolve`.
    File(PathBuf),
}

/// Where the prompts come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompts {
    /// `--prompts`: built-in sets (their names as given, and the mix they make).
    Sets(String, PromptMix),
    /// `--prompt-file`: read by `resolve`.
    File(PathBuf),
}

/// The LLM part of a `Spec`.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmSpec {
    pub api: Api,
    pub model: String,
    pub prompts: Prompts,
    pub stream: bool,
    pub max_tokens: Option<u32>,
    pub slo: Option<Slo>,
}

/// Step one: what the user typed, every value checked, with no I/O at all (no DNS, no file
/// read, no limit raised, nothing rendered), so that it can be tested on its own. `resolve`
/// is step two. Field names are the plan's.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub url: String,
    pub target: Target,
    /// As given; None: GET, or POST when there is a body (known once it is read).
    pub method: Option<String>,
    pub cpus: Vec<usize>,
    pub conns: usize,
    pub pipeline: usize,
    /// `--requests`: send exactly this many requests in total (unless `run_for` ends first).
    pub budget: Option<u64>,
    /// `--duration`: stop sending this long after the start.
    pub run_for: Option<Duration>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub interval: Duration,
    /// As typed, and as parsed.
    pub headers: Vec<String>,
    pub header_fields: Vec<(String, String)>,
    pub body: Body,
    pub rate: Option<RateSpec>,
    pub max_in_flight: Option<u64>,
    pub slack: Option<Duration>,
    pub llm: Option<LlmSpec>,
    pub output: Output,
    pub shard: ShardOf,
    pub start_at: Option<std::time::SystemTime>,
    pub scrape: Vec<String>,
    pub expect_count: Vec<Selector>,
    /// `https://`: the TLS options (files read by `resolve`).
    pub tls: Option<crate::tls::ClientOptions>,
    /// A `Connection: close` request header was given.
    pub close_each: bool,
}

impl Spec {
    /// Check every option that can be checked without I/O. `allowed_cpus` are the CPUs this
    /// process may run on (`allowed_cpus()`), passed in so that the step stays pure.
    pub fn parse(args: &RunArgs, allowed_cpus: &[usize]) -> Result<Spec, PlanError> {
        let Some(raw_url) = args.url.as_deref() else {
            return err("a target URL is required, e.g. blast http://127.0.0.1:8080/");
        };
        let target = parse_url(raw_url)?;
        let mut cpus = choose_cpus(args.cores, allowed_cpus)?;
        if args.conns == 0 {
            return err("--conns must be at least 1");
        }
        let shard = match &args.shard {
            Some(raw) => parse_shard(raw, |k| std::env::var(k).ok())?,
            None => ShardOf::default(),
        };
        let start_at = args.start_at.as_deref().map(parse_start_at).transpose()?;
        // This process's connections: what the others leave it.
        let conns = shard.share(args.conns as u64) as usize;
        if conns == 0 {
            return err(format!(
                "--conns {} leaves shard {} of {} without a connection (at least one per shard)",
                args.conns, shard.index, shard.count
            ));
        }
        if let Some(r) = args.requests.filter(|r| *r > 0) {
            if shard.share(r) == 0 {
                return err(format!(
                    "--requests {r} leaves shard {} of {} nothing to send (at least one per shard)",
                    shard.index, shard.count
                ));
            }
        }
        // Every shard needs a connection to do its share of the work.
        if conns < cpus.len() {
            if args.cores.is_some() {
                let of = match shard.count {
                    1 => String::new(),
                    _ => format!(", of which this shard has {conns}"),
                };
                return err(format!(
                    "--cores {} needs at least as many connections (--conns {}{of})",
                    cpus.len(),
                    args.conns
                ));
            }
            cpus.truncate(conns);
        }
        let rate = rate_spec(args)?;
        if !(1..=MAX_PIPELINE).contains(&args.pipeline) {
            return err(format!("--pipeline must be between 1 and {MAX_PIPELINE}"));
        }
        if args.requests == Some(0) {
            return err("--requests must be at least 1");
        }
        let run_for = match (&args.duration, args.requests) {
            (Some(d), _) => Some(positive_duration("--duration", d)?),
            (None, Some(_)) => None,
            // A stage list says how long it lasts; otherwise 10 s, like wrk.
            (None, None) => Some(
                rate.as_ref()
                    .and_then(RateSpec::natural_duration)
                    .unwrap_or(Duration::from_secs(10)),
            ),
        };
        let rate = match rate {
            Some(mut spec) => {
                if let Pattern::Ramp { over, .. } = &mut spec.pattern {
                    if over.is_zero() {
                        match run_for {
                            Some(d) => *over = d,
                            None => return err("--pattern ramp with --requests needs --ramp-over"),
                        }
                    }
                }
                spec.validate(run_for)
                    .map_err(|e| PlanError(e.to_string()))?;
                Some(spec)
            }
            None => None,
        };
        let max_in_flight = match args.max_in_flight {
            Some(0) => return err("--max-in-flight must be at least 1"),
            Some(n) if (shard.share(n) as usize) < cpus.len() => {
                let of = match shard.count {
                    1 => String::new(),
                    n => format!(" of shard {} of {n}", shard.index),
                };
                return err(format!(
                    "--max-in-flight {n} is less than one per core ({} cores{of})",
                    cpus.len()
                ));
            }
            other => other,
        };
        let slack = match (&args.slack, &rate) {
            (Some(raw), _) => {
                let d = parse_duration("--slack", raw)?;
                if d > MAX_SLACK {
                    return err(format!(
                        "--slack {raw}: at most {} (a send may be this late)",
                        humantime::format_duration(MAX_SLACK)
                    ));
                }
                Some(d)
            }
            (None, Some(_)) => Some(DEFAULT_SLACK),
            (None, None) => None,
        };
        let timeout = positive_duration("--timeout", &args.timeout)?;
        let connect_timeout = positive_duration("--connect-timeout", &args.connect_timeout)?;
        let interval = positive_duration("--interval", &args.interval)?;
        if interval < Duration::from_millis(10) {
            return err("--interval must be at least 10ms");
        }

        let mut header_fields = args
            .headers
            .iter()
            .map(|h| request::parse_header(h).map_err(PlanError))
            .collect::<Result<Vec<_>, _>>()?;
        let given = |name: &str| {
            header_fields
                .iter()
                .any(|(n, _): &(String, String)| n.eq_ignore_ascii_case(name))
        };
        // blast frames every body with its own Content-Length: a Transfer-Encoding would
        // contradict it, and so would a Content-Length other than the body's (checked once
        // the body is read).
        if given("transfer-encoding") {
            return err(
                "-H Transfer-Encoding: blast sends bodies with a Content-Length; drop the header",
            );
        }
        // A user's own Authorization wins over the URL's user info.
        if let (Some(auth), false) = (&target.basic_auth, given("authorization")) {
            header_fields.push(("Authorization".to_string(), auth.clone()));
        }
        let body = match (&args.body, &args.body_file) {
            (Some(b), _) => Body::Bytes(b.clone().into_bytes()),
            (None, Some(path)) => Body::File(path.clone()),
            (None, None) => Body::Bytes(Vec::new()),
        };
        let api = match args.api {
            None | Some(ApiArg::None) => None,
            Some(ApiArg::OllamaGenerate) => Some(Api::OllamaGenerate),
            Some(ApiArg::OllamaChat) => Some(Api::OllamaChat),
            Some(ApiArg::OpenaiChat) => Some(Api::OpenaiChat),
            Some(ApiArg::OpenaiCompletions) => Some(Api::OpenaiCompletions),
        };
        if let Body::Bytes(bytes) = &body {
            check_body(api.is_some(), bytes)?;
        }
        // Without --api the LLM options would be silently ignored: refuse them. An explicit
        // `--api none` says "plain HTTP" on purpose (a scenario's prompts are then unused).
        if args.api.is_none() {
            if let Some(flag) = llm_only_flag(args) {
                return err(format!(
                    "{flag} only applies to an LLM API: add --api (e.g. --api ollama-generate)"
                ));
            }
        }
        let method = match &args.method {
            Some(m) => {
                let m = m.trim().to_ascii_uppercase();
                if m.is_empty()
                    || !m
                        .bytes()
                        .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_')
                {
                    return err(format!("--method {m:?} is not a valid HTTP method"));
                }
                Some(m)
            }
            None => None,
        };
        let llm = api.map(|api| llm_spec(args, api)).transpose()?;
        if llm.is_some() && content_length(&header_fields).is_some() {
            return err("-H Content-Length: --api bodies vary in length and blast sets it for each; drop the header");
        }
        let scrape = args
            .scrape
            .iter()
            .map(|u| crate::scrape::check_url(u).map_err(PlanError))
            .collect::<Result<Vec<_>, _>>()?;
        let expect_count = args
            .expect_count
            .iter()
            .map(|s| Selector::parse(s).map_err(PlanError))
            .collect::<Result<Vec<_>, _>>()?;
        if !expect_count.is_empty() && scrape.is_empty() {
            return err("--expect-count compares a scraped counter: add --scrape METRICS_URL");
        }
        let tls_flag = [
            (args.cacert.is_some(), "--cacert"),
            (args.insecure, "--insecure"),
            (args.cert.is_some(), "--cert"),
            (args.no_tls_resume, "--no-tls-resume"),
            (args.tls_version.is_some(), "--tls-version"),
            (args.tls_ciphers.is_some(), "--tls-ciphers"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag));
        let tls = match (target.https, tls_flag) {
            (false, Some(flag)) => {
                return err(format!("{flag} applies to an https:// URL"));
            }
            (false, None) => None,
            (true, _) => {
                if args.insecure && args.cacert.is_some() {
                    return err("--insecure trusts any certificate: drop --cacert, or --insecure");
                }
                Some(crate::tls::ClientOptions {
                    cacert: args.cacert.clone(),
                    insecure: args.insecure,
                    cert: args.cert.clone(),
                    key: args.key.clone(),
                    resume: !args.no_tls_resume,
                    version: args
                        .tls_version
                        .as_deref()
                        .map(crate::tls::Version::parse)
                        .transpose()
                        .map_err(PlanError)?,
                    ciphers: args
                        .tls_ciphers
                        .as_deref()
                        .map(crate::tls::parse_ciphers)
                        .transpose()
                        .map_err(PlanError)?,
                })
            }
        };
        // `Connection: close` asks for one request per connection (as each new connection
        // is measured: `connect_us`, `tls_handshake_us`); pipelining behind it would only
        // see the rest of the window fail.
        let close_each = header_fields.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("connection")
                && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
        });
        if close_each && args.pipeline > 1 {
            return err(format!(
                "--pipeline {} with -H 'Connection: close': each connection carries one request",
                args.pipeline
            ));
        }
        let json = args.json.as_deref();
        let output = Output {
            quiet: args.quiet,
            json_stdout: json == Some("-"),
            json: json.filter(|p| *p != "-").map(PathBuf::from),
            timeline_csv: args.timeline.clone(),
            log: args.log.clone(),
            prometheus: args
                .prometheus
                .as_deref()
                .map(parse_listen_addr)
                .transpose()?,
            prometheus_linger: match &args.prometheus_linger {
                Some(raw) => parse_duration("--prometheus-linger", raw)?,
                None => Duration::ZERO,
            },
            html: args.html.clone(),
        };
        Ok(Spec {
            url: without_password(raw_url),
            target,
            method,
            cpus,
            conns: args.conns,
            pipeline: args.pipeline,
            budget: args.requests,
            run_for,
            timeout,
            connect_timeout,
            interval,
            headers: args.headers.clone(),
            header_fields,
            body,
            rate,
            max_in_flight,
            slack,
            llm,
            output,
            shard,
            start_at,
            scrape,
            expect_count,
            tls,
            close_each,
        })
    }

    /// Step two: look up the target, read the body and prompt files, make room for the
    /// connections, check that the output files can be created, render the requests.
    pub fn resolve(self) -> Result<Plan, PlanError> {
        let body = match self.body {
            Body::Bytes(bytes) => bytes,
            Body::File(path) => {
                let bytes = std::fs::read(&path).map_err(|e| {
                    PlanError(format!("cannot read --body-file {}: {e}", path.display()))
                })?;
                check_body(self.llm.is_some(), &bytes)?;
                bytes
            }
        };
        if let Some(given) = content_length(&self.header_fields) {
            if given.trim().parse::<usize>().ok() != Some(body.len()) {
                return err(format!(
                    "-H Content-Length: {given} contradicts the {}-byte body; drop the header (blast sets it)",
                    body.len()
                ));
            }
        }
        let method = match self.method {
            Some(m) => m,
            None if !body.is_empty() || self.llm.is_some() => "POST".to_string(),
            None => "GET".to_string(),
        };
        // A start this far ahead is a typo (a wrong year, milliseconds for seconds).
        if let Some(at) = self.start_at {
            let ahead = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            if ahead > MAX_START_AHEAD {
                return err(format!(
                    "--start-at {}: more than a day ahead",
                    humantime::format_rfc3339_seconds(at)
                ));
            }
        }
        let addrs = resolve(&self.target.host, self.target.port)?;
        let tls = match &self.tls {
            None => None,
            Some(o) => Some(TlsPlan {
                insecure: o.insecure,
                cacert: o.cacert.clone(),
                cert: o.cert.clone(),
                resume: o.resume,
                version: o.version,
                ciphers: o.ciphers.clone(),
                config: std::sync::Arc::new(crate::tls::client_config(o).map_err(PlanError)?),
                server_name: crate::tls::server_name(&self.target.host).map_err(PlanError)?,
            }),
        };
        limits::raise_nofile(self.shard.share(self.conns as u64) as usize).map_err(PlanError)?;
        let (requests, llm) = match self.llm {
            None => {
                let one = request::render(&RequestSpec {
                    method: &method,
                    path: &self.target.path,
                    host: &self.target.authority,
                    headers: &self.header_fields,
                    body: &body,
                });
                (vec![one], None)
            }
            Some(spec) => {
                let (requests, llm) =
                    llm_requests(spec, &method, &self.target, self.header_fields)?;
                (requests, Some(llm))
            }
        };
        let out = &self.output;
        for path in [&out.json, &out.timeline_csv, &out.log, &out.html]
            .into_iter()
            .flatten()
        {
            check_writable_dir(path)?;
        }
        Ok(Plan {
            url: self.url,
            head: method == "HEAD",
            method,
            cores: self.cpus.len(),
            cpus: self.cpus,
            conns: self.conns,
            pipeline: self.pipeline,
            budget: self.budget,
            run_for: self.run_for,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            interval: self.interval,
            headers: self.headers,
            body_bytes: body.len(),
            metrics: metrics(
                self.rate.is_some(),
                llm.is_some(),
                tls.is_some(),
                self.close_each,
            ),
            close_each: self.close_each,
            tls,
            rate: self.rate,
            max_in_flight: self.max_in_flight,
            slack: self.slack,
            llm,
            scenario: None,
            addrs,
            requests,
            output: self.output,
            shard: self.shard,
            start_at: self.start_at,
            scrape: self.scrape,
            expect_count: self.expect_count,
        })
    }
}

/// The distributions a run records: the open-loop and LLM ones only when they apply.
fn metrics(open_loop: bool, llm: bool, tls: bool, close_each: bool) -> Vec<Metric> {
    Metric::ALL
        .into_iter()
        .filter(|m| match m.group() {
            MetricGroup::Every => true,
            MetricGroup::OpenLoop => open_loop,
            MetricGroup::Llm => llm,
            MetricGroup::Tls => tls,
            MetricGroup::Connects => tls || close_each,
        })
        .collect()
}

impl Plan {
    /// Both steps: what the command line asks for, ready to run.
    pub fn from_args(args: &RunArgs) -> Result<Plan, PlanError> {
        Spec::parse(args, &allowed_cpus())?.resolve()
    }
}

/// An output file must be creatable: its directory has to exist (checked before the run,
/// so that a typo does not cost the whole run).
/// The value of a user-given `Content-Length` header.
fn content_length(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_str())
}

fn check_writable_dir(path: &std::path::Path) -> Result<(), PlanError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        return err(format!(
            "cannot write {}: directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    if path.is_dir() {
        return err(format!(
            "cannot write {}: it is a directory",
            path.display()
        ));
    }
    Ok(())
}

/// The first LLM option given without `--api`, which would otherwise be silently ignored.
fn llm_only_flag(args: &RunArgs) -> Option<&'static str> {
    [
        (args.model.is_some(), "--model"),
        (args.prompts.is_some(), "--prompts"),
        (args.prompt_file.is_some(), "--prompt-file"),
        (args.stream || args.no_stream, "--stream/--no-stream"),
        (args.max_tokens.is_some(), "--max-tokens"),
        (args.slo.is_some(), "--slo"),
    ]
    .into_iter()
    .find_map(|(given, flag)| given.then_some(flag))
}

/// `--api` writes the body itself: a body of the user's own would be silently replaced.
fn check_body(llm: bool, body: &[u8]) -> Result<(), PlanError> {
    if llm && !body.is_empty() {
        return err("--body/--body-file and --api both set the body: use one of them");
    }
    Ok(())
}

/// The LLM options, checked (a prompt file is only named here, `resolve` reads it).
fn llm_spec(args: &RunArgs, api: Api) -> Result<LlmSpec, PlanError> {
    let prompts = match &args.prompt_file {
        Some(path) => Prompts::File(path.clone()),
        None => {
            let names = args.prompts.as_deref().unwrap_or(DEFAULT_PROMPTS);
            let sets =
                PromptSet::parse_list(names).map_err(|e| PlanError(format!("--prompts: {e}")))?;
            let mix = PromptMix::from_sets(&sets)
                .ok_or_else(|| PlanError("--prompts: no prompt set given".into()))?;
            Prompts::Sets(names.to_string(), mix)
        }
    };
    let model = args.model.as_deref().unwrap_or(DEFAULT_MODEL);
    if model.trim().is_empty() {
        return err("--model must not be empty");
    }
    if args.max_tokens == Some(0) {
        return err("--max-tokens must be at least 1");
    }
    let slo = match &args.slo {
        Some(text) => Some(Slo::parse(text).map_err(PlanError)?).filter(Slo::is_set),
        None => None,
    };
    Ok(LlmSpec {
        api,
        model: model.to_string(),
        prompts,
        stream: !args.no_stream,
        max_tokens: args.max_tokens,
        slo,
    })
}

/// One request per prompt, in rotation, for an LLM API. A URL without a path gets the
/// API's usual one.
fn llm_requests(
    spec: LlmSpec,
    method: &str,
    target: &Target,
    mut headers: Vec<(String, String)>,
) -> Result<(Vec<Vec<u8>>, Llm), PlanError> {
    let LlmSpec {
        api,
        model,
        prompts,
        stream,
        max_tokens,
        slo,
    } = spec;
    let (mix, prompts_name) = match prompts {
        Prompts::Sets(names, mix) => (mix, names),
        Prompts::File(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                PlanError(format!("cannot read --prompt-file {}: {e}", path.display()))
            })?;
            let mix = PromptMix::from_file(&text)
                .map_err(|e| PlanError(format!("--prompt-file {}: {e}", path.display())))?;
            (mix, format!("file:{}", path.display()))
        }
    };
    let path = if target.path == "/" {
        api.default_path()
    } else {
        target.path.as_str()
    };
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("Content-Type".into(), "application/json".into()));
    }
    let rendered = mix
        .iter()
        .map(|prompt| {
            let body = llm::render(&llm::BodySpec {
                api,
                model: &model,
                prompt,
                stream,
                max_tokens,
                include_usage: true,
            });
            request::render(&RequestSpec {
                method,
                path,
                host: &target.authority,
                headers: &headers,
                body: &body,
            })
        })
        .collect();
    let llm = Llm {
        api,
        model,
        prompts: prompts_name,
        prompt_count: mix.len(),
        stream,
        max_tokens,
        slo,
    };
    Ok((rendered, llm))
}

/// The open-loop schedule the user asked for, if any (not yet checked against the run length).
fn rate_spec(args: &RunArgs) -> Result<Option<RateSpec>, PlanError> {
    let arrivals = match args.arrivals {
        ArrivalsArg::Uniform => Arrivals::Uniform,
        ArrivalsArg::Poisson => Arrivals::Poisson,
    };
    let spec = |rate: f64, pattern: Pattern| {
        Some(RateSpec {
            rate,
            pattern,
            arrivals,
            seed: args.seed,
        })
    };
    if let Some(stages) = &args.stages {
        let stages =
            schedule::parse_stages(stages).map_err(|e| PlanError(format!("--stages: {e}")))?;
        let total = stages
            .iter()
            .fold(Duration::ZERO, |acc, st| acc.saturating_add(st.duration));
        if total > MAX_DURATION {
            return err("--stages: the stages last more than a year (365d) in all");
        }
        return Ok(spec(args.rate.unwrap_or(0.0), Pattern::Stages(stages)));
    }
    if let Some(r) = args.rate {
        if !r.is_finite() || r < 0.0 {
            return err(format!(
                "--rate must be a positive number of requests per second, got {r}"
            ));
        }
        if r == 0.0 && args.pattern != Some(PatternArg::Burst) {
            return err("--rate must be greater than zero (only --pattern burst allows 0)");
        }
    }
    let Some(pattern) = args.pattern else {
        return Ok(args.rate.and_then(|r| spec(r, Pattern::Constant)));
    };
    let rate = match (pattern, args.rate) {
        (PatternArg::Burst, r) => r.unwrap_or(0.0),
        (_, Some(r)) => r,
        (p, None) => {
            return err(format!(
                "--pattern {} needs --rate",
                format!("{p:?}").to_lowercase()
            ))
        }
    };
    let pattern = match pattern {
        PatternArg::Constant => Pattern::Constant,
        PatternArg::Burst => Pattern::Burst {
            size: args.burst_size,
            every: positive_duration("--burst-every", &args.burst_every)?,
        },
        PatternArg::Ramp => Pattern::Ramp {
            from: args.ramp_from,
            // Zero means "the whole run": filled in once the run's length is known.
            over: match &args.ramp_over {
                Some(d) => positive_duration("--ramp-over", d)?,
                None => Duration::ZERO,
            },
        },
        PatternArg::Spike => Pattern::Spike {
            rate: args.spike_rate.unwrap_or(rate * 5.0),
            len: positive_duration("--spike-len", &args.spike_len)?,
            every: positive_duration("--spike-every", &args.spike_every)?,
        },
        PatternArg::Chaos => Pattern::Chaos {
            min_hold: positive_duration("--chaos-min-hold", &args.chaos_min_hold)?,
            max_hold: positive_duration("--chaos-max-hold", &args.chaos_max_hold)?,
        },
    };
    Ok(spec(rate, pattern))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn url_user_info_becomes_basic_auth() {
        let auth = |u: &str| parse_url(u).unwrap().basic_auth;
        assert_eq!(auth("http://h/"), None);
        // base64("Aladdin:open sesame"), the RFC 7617 example.
        assert_eq!(
            auth("http://Aladdin:open%20sesame@h/").as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        assert_eq!(auth("http://u@h/").as_deref(), Some("Basic dTo="));
        assert_eq!(percent_decode("a%3a%zz%4"), b"a:%zz%4");
        assert_eq!(
            without_password("http://u:secret@h:1/p"),
            "http://u:***@h:1/p"
        );
        assert_eq!(without_password("http://h/p"), "http://h/p");
    }

    #[test]
    fn urls() {
        let t = parse_url("http://localhost:11435/api/generate").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("localhost", 11435, "/api/generate")
        );
        assert_eq!(t.authority, "localhost:11435");
        let t = parse_url("http://127.0.0.1").unwrap();
        assert_eq!(
            (t.port, t.path.as_str(), t.authority.as_str()),
            (80, "/", "127.0.0.1")
        );
        let t = parse_url("http://[::1]:8080/x?a=b&c").unwrap();
        assert_eq!(
            (t.host.as_str(), t.path.as_str(), t.authority.as_str()),
            ("::1", "/x?a=b&c", "[::1]:8080")
        );
        let t = parse_url("https://example.com/v1").unwrap();
        assert_eq!(
            (t.https, t.port, t.authority.as_str()),
            (true, 443, "example.com")
        );
        assert!(!parse_url("http://example.com/").unwrap().https);
        assert!(parse_url("ftp://example.com/").is_err());
        assert!(parse_url("not a url").is_err());
        assert!(parse_url("http://").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("x", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_duration("x", "2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("x", "ten").is_err());
        assert!(positive_duration("x", "0s").is_err());
    }

    #[test]
    fn cpus() {
        let allowed = [0, 2, 4, 6];
        assert_eq!(choose_cpus(None, &allowed).unwrap(), allowed);
        assert_eq!(choose_cpus(Some(3), &allowed).unwrap(), [0, 2, 4]);
        assert!(choose_cpus(Some(0), &allowed).is_err());
        assert!(choose_cpus(Some(5), &allowed)
            .unwrap_err()
            .0
            .contains("4 CPU(s) only"));
        assert!(choose_cpus(None, &[]).is_err());
        assert!(!allowed_cpus().is_empty());
    }

    /// Four CPUs, whatever the machine running the tests has.
    const CPUS: &[usize] = &[0, 1, 2, 3];

    fn parse(argv: &[&str]) -> Result<Spec, PlanError> {
        let argv = std::iter::once("blast").chain(argv.iter().copied());
        let cli = crate::cli::Cli::try_parse_from(argv).expect("clap accepts the arguments");
        Spec::parse(&cli.run, CPUS)
    }

    fn rejected(argv: &[&str]) -> String {
        match parse(argv) {
            Ok(spec) => panic!("{argv:?} was accepted: {spec:?}"),
            Err(e) => e.0,
        }
    }

    const URL: &str = "http://127.0.0.1:9/";

    #[test]
    fn parse_fills_in_the_defaults() {
        let spec = parse(&[URL]).unwrap();
        assert_eq!(spec.cpus, CPUS);
        assert_eq!((spec.conns, spec.pipeline), (100, 1));
        assert_eq!(spec.run_for, Some(Duration::from_secs(10)));
        assert_eq!(spec.budget, None);
        assert_eq!(
            spec.method, None,
            "GET or POST is decided once the body is known"
        );
        assert_eq!(spec.body, Body::Bytes(Vec::new()));
        assert_eq!((spec.rate, spec.llm), (None, None));

        // A count alone bounds the run; fewer connections than CPUs use fewer CPUs.
        let spec = parse(&["-n", "2", "-r", "5", URL]).unwrap();
        assert_eq!((spec.budget, spec.run_for), (Some(5), None));
        assert_eq!(spec.cpus, [0, 1]);
        // A stage list says how long the run lasts.
        let spec = parse(&["--stages", "1s:10,2s:0", URL]).unwrap();
        assert_eq!(spec.run_for, Some(Duration::from_secs(3)));
    }

    #[test]
    fn parse_touches_neither_network_nor_files() {
        let spec = parse(&["http://nonexistent.invalid/"]).unwrap();
        assert_eq!(spec.target.host, "nonexistent.invalid");
        let missing = "/nonexistent/blast-test/file";
        let spec = parse(&["--body-file", missing, URL]).unwrap();
        assert_eq!(spec.body, Body::File(missing.into()));
        let spec = parse(&["--api", "ollama-generate", "--prompt-file", missing, URL]).unwrap();
        assert_eq!(spec.llm.unwrap().prompts, Prompts::File(missing.into()));
        let out = format!("{missing}/out.json");
        let spec = parse(&["--json", &out, "--log", missing, URL]).unwrap();
        assert_eq!(spec.output.json, Some(out.into()));
    }

    #[test]
    fn resolve_does_the_io() {
        let e = parse(&["http://nonexistent.invalid/"]).unwrap().resolve();
        assert!(
            e.unwrap_err()
                .0
                .contains("cannot resolve host \"nonexistent.invalid\""),
            "DNS is resolve's"
        );
        let missing = "/nonexistent/blast-test/body";
        let e = parse(&["--body-file", missing, URL]).unwrap().resolve();
        assert!(e
            .unwrap_err()
            .0
            .starts_with("cannot read --body-file /nonexistent/blast-test/body: "));
        let e = parse(&["--api", "openai-chat", "--prompt-file", missing, URL])
            .unwrap()
            .resolve();
        assert!(e.unwrap_err().0.starts_with("cannot read --prompt-file "));
    }

    #[test]
    fn shard_and_start_at() {
        fn env(v: Option<&'static str>) -> impl Fn(&str) -> Option<String> {
            move |_| v.map(str::to_string)
        }
        assert_eq!(
            parse_shard("2/3", env(None)).unwrap(),
            ShardOf { index: 2, count: 3 }
        );
        assert_eq!(
            parse_shard("index/4", env(Some("3"))).unwrap(),
            ShardOf { index: 3, count: 4 }
        );
        for (raw, v, msg) in [
            ("3/3", None, "the index must be less than 3"),
            ("1/0", None, "N must be between 1"),
            ("x", None, "expected I/N"),
            ("-1/3", None, "expected I/N"),
            ("index/3", None, "JOB_COMPLETION_INDEX is not set"),
            ("index/3", Some("a"), "is not a shard index"),
            ("index/3", Some("3"), "the index must be less than 3"),
        ] {
            let e = parse_shard(raw, env(v)).unwrap_err().0;
            assert!(e.contains(msg), "{raw}: {e}");
            assert!(!e.contains('\n'));
        }
        let spec = parse(&["--shard", "1/3", "-n", "10", "--requests", "300", URL]).unwrap();
        assert_eq!(spec.shard, ShardOf { index: 1, count: 3 });
        // Shard 1 of 3 gets 3 of the 10 connections: 3 of the 4 cores.
        assert_eq!(spec.cpus.len(), 3);
        let e = parse(&["--shard", "2/3", "--requests", "2", URL])
            .unwrap_err()
            .0;
        assert!(e.contains("leaves shard 2 of 3 nothing to send"), "{e}");
        let e = parse(&["--shard", "2/3", "-n", "2", URL]).unwrap_err().0;
        assert!(e.contains("without a connection"), "{e}");
        let e = parse(&[
            "--shard",
            "0/2",
            "--rate",
            "10",
            "--max-in-flight",
            "6",
            URL,
        ])
        .unwrap_err()
        .0;
        assert!(e.contains("of shard 0 of 2"), "{e}");
        let t = parse_start_at("2026-01-02T15:04:05.5Z").unwrap();
        let unix = t.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(unix.as_secs_f64(), 1767366245.5);
        assert_eq!(parse_start_at("1767366245.5").unwrap(), t);
        let e = parse(&["--start-at", "tomorrow", URL]).unwrap_err().0;
        assert!(
            e.starts_with("--start-at \"tomorrow\": not RFC 3339"),
            "{e}"
        );
    }

    #[test]
    fn parse_rejects_bad_input() {
        let cases: &[(&[&str], &str)] = &[
            (&["ftp://example.com/"], "use http:// or https://"),
            (
                &["http://example.com/", "--insecure"],
                "--insecure applies to an https:// URL",
            ),
            (
                &[
                    "https://example.com/",
                    "-k",
                    "-H",
                    "Connection: close",
                    "-p",
                    "2",
                ],
                "each connection carries one request",
            ),
            (&["-n", "0", URL], "--conns must be at least 1"),
            (
                &["--cores", "5", URL],
                "--cores 5: this process may run on 4 CPU(s) only",
            ),
            (
                &["--cores", "3", "-n", "2", URL],
                "--cores 3 needs at least as many connections (--conns 2)",
            ),
            (&["-p", "0", URL], "--pipeline must be between 1 and 1024"),
            (&["-r", "0", URL], "--requests must be at least 1"),
            (
                &["-d", "ten", URL],
                "--duration: cannot read \"ten\" as a duration",
            ),
            (
                &["--max-in-flight", "3", URL],
                "--max-in-flight 3 is less than one per core (4 cores)",
            ),
            (
                &["--interval", "5ms", URL],
                "--interval must be at least 10ms",
            ),
            (&["--rate", "0", URL], "--rate must be greater than zero"),
            (
                &["--pattern", "ramp", "--rate", "5", "-r", "9", URL],
                "--pattern ramp with --requests needs --ramp-over",
            ),
            (&["-H", "nocolon", URL], "has no colon"),
            (
                &["--timeout", "10000000000000000000s", URL],
                "--timeout 10000000000000000000s: at most a year",
            ),
            (
                &["--connect-timeout", "366d", URL],
                "--connect-timeout 366d: at most a year",
            ),
            (
                &["--interval", "400d", URL],
                "--interval 400d: at most a year",
            ),
            (
                &["-d", "18446744073709551615s", URL],
                "--duration 18446744073709551615s: at most a year",
            ),
            (
                &["--rate", "5", "--slack", "10000000000000000000s", URL],
                "--slack 10000000000000000000s: at most a year",
            ),
            (
                &["--pattern", "burst", "--burst-every", "9999999999999s", URL],
                "--burst-every 9999999999999s: at most a year",
            ),
            (
                &[
                    "--pattern",
                    "ramp",
                    "--rate",
                    "5",
                    "--ramp-over",
                    "9999999999999s",
                    URL,
                ],
                "--ramp-over 9999999999999s: at most a year",
            ),
            (
                &[
                    "--pattern",
                    "spike",
                    "--rate",
                    "5",
                    "--spike-every",
                    "9999999999999s",
                    URL,
                ],
                "--spike-every 9999999999999s: at most a year",
            ),
            (
                &[
                    "--pattern",
                    "chaos",
                    "--rate",
                    "5",
                    "--chaos-max-hold",
                    "9999999999999s",
                    URL,
                ],
                "--chaos-max-hold 9999999999999s: at most a year",
            ),
            (
                &["--stages", "200d:5,200d:9", URL],
                "--stages: the stages last more than a year",
            ),
            (
                &["-m", "G T", URL],
                "--method \"G T\" is not a valid HTTP method",
            ),
            (
                &["--body", "x", "--api", "ollama-chat", URL],
                "--body/--body-file and --api both set the body",
            ),
            (&["--model", "m", URL], "--model only applies to an LLM API"),
            (
                &["--api", "ollama-chat", "--prompts", "huge", URL],
                "--prompts: unknown prompt set \"huge\"",
            ),
            (
                &["--api", "ollama-chat", "--model", " ", URL],
                "--model must not be empty",
            ),
            (
                &["--api", "ollama-chat", "--max-tokens", "0", URL],
                "--max-tokens must be at least 1",
            ),
            (&["--api", "ollama-chat", "--slo", "ttft=fast", URL], "fast"),
        ];
        for (argv, expect) in cases {
            let msg = rejected(argv);
            assert!(
                msg.contains(expect),
                "{argv:?}: {msg:?} does not say {expect:?}"
            );
        }
    }

    #[test]
    fn parse_checks_the_llm_options() {
        let spec = parse(&[
            "--api",
            "openai-chat",
            "--prompts",
            "short,medium",
            "--no-stream",
            "--max-tokens",
            "7",
            "--slo",
            "ttft=1s",
            URL,
        ])
        .unwrap();
        let llm = spec.llm.unwrap();
        assert_eq!(
            (llm.api, llm.model.as_str()),
            (Api::OpenaiChat, DEFAULT_MODEL)
        );
        assert!(!llm.stream);
        assert_eq!(llm.max_tokens, Some(7));
        assert!(llm.slo.is_some_and(|s| s.is_set()));
        assert!(
            matches!(&llm.prompts, Prompts::Sets(names, mix) if names == "short,medium" && mix.len() == 16)
        );
        // `--api none` turns the LLM options off on purpose.
        assert_eq!(
            parse(&["--api", "none", "--model", "m", URL]).unwrap().llm,
            None
        );
        // An empty --body is no body, so --api may write it.
        assert!(parse(&["--api", "ollama-chat", "--body", "", URL]).is_ok());
    }

    /// The result document's `config` is the serialized plan: its keys, in order, with the
    /// engine's fields left out.
    #[test]
    fn the_plan_serializes_as_the_config() {
        let keys = |argv: &[&str]| {
            let plan = parse(argv).unwrap().resolve().unwrap();
            let json = serde_json::to_string(&plan).unwrap();
            let doc: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&json).unwrap();
            // serde_json's map is sorted: read the order off the text.
            let mut keys: Vec<String> = doc.keys().cloned().collect();
            keys.sort_by_key(|k| json.find(&format!("\"{k}\":")).unwrap());
            (keys, doc)
        };
        let (k, doc) = keys(&[
            "-n",
            "4",
            "-r",
            "8",
            "-d",
            "2s",
            "--rate",
            "5",
            "--max-in-flight",
            "4",
            URL,
        ]);
        assert_eq!(
            k,
            [
                "url",
                "method",
                "cores",
                "cpus",
                "conns",
                "pipeline",
                "requests",
                "duration_s",
                "timeout",
                "connect_timeout",
                "interval",
                "headers",
                "body_bytes",
                "rate",
                "max_in_flight",
                "slack"
            ]
        );
        assert_eq!(doc["slack"], 0.00015, "the default slack of an open loop");
        assert_eq!(doc["requests"], 8);
        assert_eq!(doc["duration_s"], 2.0);
        assert_eq!(doc["cores"], 4);
        let (k, doc) = keys(&[
            "-n",
            "1",
            "-r",
            "1",
            "--api",
            "ollama-chat",
            "--slo",
            "ttft=1s",
            URL,
        ]);
        assert_eq!(&k[k.len() - 2..], ["body_bytes", "llm"]);
        assert_eq!(doc["method"], "POST");
        let llm: Vec<&String> = doc["llm"].as_object().unwrap().keys().collect();
        assert_eq!(
            llm,
            ["api", "model", "prompt_count", "prompts", "slo", "stream"],
            "sorted; max_tokens is left out when unset"
        );
    }
}
