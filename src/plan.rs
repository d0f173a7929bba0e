//! Turns what the user typed into a validated `Plan`. Every mistake the user can make is
//! caught here, with one clear message, before any thread starts or any connection opens.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::cli::{ApiArg, ArrivalsArg, PatternArg, RunArgs};
use crate::http::request::{self, RequestSpec};
use crate::limits;
use crate::llm::{self, slo::Slo, Api, PromptMix, PromptSet};
use crate::schedule::{self, shard_share, Arrivals, Pattern, RateSpec};
use crate::stats::{Metric, MetricGroup};

/// A user error: printed as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

const DEFAULT_MODEL: &str = "llama3.2";

/// `--slack` unless given: enough to batch at tens of thousands of requests per second
/// while send lag p99 stays within 250 us.
pub const DEFAULT_SLACK: Duration = Duration::from_micros(200);
/// A larger slack would make a schedule meaningless at the rates it is for.
const MAX_SLACK: Duration = Duration::from_millis(10);
const DEFAULT_PROMPTS: &str = "short";

/// Deeper pipelines only queue requests in the server's socket buffer.
const MAX_PIPELINE: usize = 1024;

fn err<T>(msg: impl Into<String>) -> Result<T, PlanError> {
    Err(PlanError(msg.into()))
}

/// The validated run: everything the engine needs, nothing it has to check again.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Resolved addresses of the target, tried in order when connecting.
    pub addrs: Vec<SocketAddr>,
    /// CPU ids to pin one shard each on.
    pub cpus: Vec<usize>,
    pub conns: usize,
    /// Requests outstanding per connection (HTTP/1.1 pipelining; 1 = none).
    pub pipeline: usize,
    /// Send exactly this many requests in total (unless the duration ends first).
    pub requests: Option<u64>,
    /// Stop sending after this long; in-flight requests get up to the timeout to finish.
    pub duration: Option<Duration>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub interval: Duration,
    /// Pre-rendered requests, sent in rotation.
    pub rendered: Vec<Vec<u8>>,
    /// The method is HEAD: responses carry no body.
    pub head: bool,
    /// Open loop: when to send. None: closed loop (send as soon as a connection is free).
    pub rate: Option<RateSpec>,
    /// Cap on requests in flight over all shards.
    pub max_in_flight: Option<u64>,
    /// Open loop: how late a send may be for the sake of batching (see `crate::rt::batch`).
    pub slack: Duration,
    /// Speaking an LLM API: decode its streams.
    pub llm: Option<LlmPlan>,
    pub output: Output,
    pub config: Config,
}

/// What the engine needs to know to decode an LLM API's responses.
#[derive(Clone, Copy, Debug)]
pub struct LlmPlan {
    pub api: Api,
    pub streaming: bool,
    pub slo: Slo,
}

/// The LLM part of `config` in the result document.
#[derive(Clone, Debug, Serialize)]
pub struct LlmConfig {
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

#[derive(Clone, Debug, Default)]
pub struct Output {
    pub quiet: bool,
    pub json: Option<PathBuf>,
    pub json_stdout: bool,
    pub timeline_csv: Option<PathBuf>,
    pub log: Option<PathBuf>,
}

/// What ran, as recorded in the result document (`config`).
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub url: String,
    pub method: String,
    pub cores: usize,
    pub cpus: Vec<usize>,
    pub conns: usize,
    pub pipeline: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    #[serde(
        serialize_with = "ser_opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration_s: Option<Duration>,
    #[serde(serialize_with = "ser_secs")]
    pub timeout: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub connect_timeout: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub interval: Duration,
    pub headers: Vec<String>,
    pub body_bytes: usize,
    /// Open loop: the rate and its pattern (absent for a closed loop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u64>,
    /// Open loop: `--slack` in seconds.
    #[serde(
        serialize_with = "ser_opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub slack: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmConfig>,
    /// The named scenario this run came from, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
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

/// The parts of an `http://` URL that blast needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Path and query, never empty.
    pub path: String,
    /// `Host` header value.
    pub authority: String,
}

pub fn parse_url(raw: &str) -> Result<Target, PlanError> {
    let url = url::Url::parse(raw).map_err(|e| PlanError(format!("invalid URL {raw:?}: {e}")))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return err(format!(
                "{raw}: https is not supported yet (TLS); use an http:// URL"
            ))
        }
        other => return err(format!("{raw}: unsupported scheme {other:?}; use http://")),
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return err(format!("{raw}: the URL has no host")),
    };
    let port = url.port_or_known_default().unwrap_or(80);
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
    Ok(Target {
        host,
        port,
        path,
        authority,
    })
}

pub fn parse_duration(what: &str, raw: &str) -> Result<Duration, PlanError> {
    humantime::parse_duration(raw.trim()).map_err(|e| {
        PlanError(format!(
            "{what}: cannot read {raw:?} as a duration ({e}); try 500ms, 10s or 2m"
        ))
    })
}

fn positive_duration(what: &str, raw: &str) -> Result<Duration, PlanError> {
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

/// Pick `wanted` CPUs (all allowed ones by default).
pub fn choose_cpus(wanted: Option<usize>) -> Result<Vec<usize>, PlanError> {
    let allowed = allowed_cpus();
    if allowed.is_empty() {
        return err("cannot determine which CPUs this process may run on");
    }
    match wanted {
        None => Ok(allowed),
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

impl Plan {
    pub fn from_args(args: &RunArgs) -> Result<Plan, PlanError> {
        let Some(raw_url) = args.url.as_deref() else {
            return err("a target URL is required, e.g. blast http://127.0.0.1:8080/");
        };
        let target = parse_url(raw_url)?;
        let mut cpus = choose_cpus(args.cores)?;
        if args.conns == 0 {
            return err("--conns must be at least 1");
        }
        // Every shard needs a connection to do its share of the work.
        if args.conns < cpus.len() {
            if args.cores.is_some() {
                return err(format!(
                    "--cores {} needs at least as many connections (--conns {})",
                    cpus.len(),
                    args.conns
                ));
            }
            cpus.truncate(args.conns);
        }
        let rate = rate_spec(args)?;
        if !(1..=MAX_PIPELINE).contains(&args.pipeline) {
            return err(format!("--pipeline must be between 1 and {MAX_PIPELINE}"));
        }
        if args.requests == Some(0) {
            return err("--requests must be at least 1");
        }
        let duration = match (&args.duration, args.requests) {
            (Some(d), _) => Some(positive_duration("--duration", d)?),
            (None, Some(_)) => None,
            // A stage list says how long it lasts; otherwise 10 s, like wrk.
            (None, None) => Some(
                rate.as_ref()
                    .and_then(RateSpec::natural_duration)
                    .unwrap_or(Duration::from_secs(10)),
            ),
        };
        let run_for = duration;
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
            Some(n) if (n as usize) < cpus.len() => {
                return err(format!(
                    "--max-in-flight {n} is less than one per core ({} cores)",
                    cpus.len()
                ))
            }
            other => other,
        };
        let slack = match (&args.slack, &rate) {
            (Some(_), None) => {
                return err("--slack applies to an open loop: add --rate (or --pattern, --stages)")
            }
            (Some(raw), Some(_)) => {
                let d = parse_duration("--slack", raw)?;
                if d > MAX_SLACK {
                    return err(format!(
                        "--slack {raw}: at most {} (a send may be this late)",
                        humantime::format_duration(MAX_SLACK)
                    ));
                }
                d
            }
            (None, Some(_)) => DEFAULT_SLACK,
            (None, None) => Duration::ZERO,
        };
        let timeout = positive_duration("--timeout", &args.timeout)?;
        let connect_timeout = positive_duration("--connect-timeout", &args.connect_timeout)?;
        let interval = positive_duration("--interval", &args.interval)?;
        if interval < Duration::from_millis(10) {
            return err("--interval must be at least 10ms");
        }

        let headers = args
            .headers
            .iter()
            .map(|h| request::parse_header(h).map_err(PlanError))
            .collect::<Result<Vec<_>, _>>()?;
        let body = match (&args.body, &args.body_file) {
            (Some(b), _) => b.clone().into_bytes(),
            (None, Some(path)) => std::fs::read(path).map_err(|e| {
                PlanError(format!("cannot read --body-file {}: {e}", path.display()))
            })?,
            (None, None) => Vec::new(),
        };
        let api = match args.api {
            None | Some(ApiArg::None) => None,
            Some(ApiArg::OllamaGenerate) => Some(Api::OllamaGenerate),
            Some(ApiArg::OllamaChat) => Some(Api::OllamaChat),
            Some(ApiArg::OpenaiChat) => Some(Api::OpenaiChat),
            Some(ApiArg::OpenaiCompletions) => Some(Api::OpenaiCompletions),
        };
        if api.is_some() && !body.is_empty() {
            return err("--body/--body-file and --api both set the body: use one of them");
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
                m
            }
            None if !body.is_empty() || api.is_some() => "POST".to_string(),
            None => "GET".to_string(),
        };

        let addrs = resolve(&target.host, target.port)?;
        limits::raise_nofile(args.conns).map_err(PlanError)?;

        let (rendered, llm, llm_config) = match api {
            None => {
                let one = request::render(&RequestSpec {
                    method: &method,
                    path: &target.path,
                    host: &target.authority,
                    headers: &headers,
                    body: &body,
                });
                (vec![one], None, None)
            }
            Some(api) => {
                let (rendered, plan, config) = llm_requests(args, api, &method, &target, headers)?;
                (rendered, Some(plan), Some(config))
            }
        };
        for path in [
            args.json
                .as_deref()
                .filter(|p| *p != "-")
                .map(std::path::Path::new),
            args.timeline.as_deref(),
            args.log.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            check_writable_dir(path)?;
        }
        let output = Output {
            quiet: args.quiet,
            json_stdout: args.json.as_deref() == Some("-"),
            json: args
                .json
                .as_deref()
                .filter(|p| *p != "-")
                .map(PathBuf::from),
            timeline_csv: args.timeline.clone(),
            log: args.log.clone(),
        };
        let config = Config {
            url: raw_url.to_string(),
            method: method.clone(),
            cores: cpus.len(),
            cpus: cpus.clone(),
            conns: args.conns,
            pipeline: args.pipeline,
            requests: args.requests,
            duration_s: duration,
            timeout,
            connect_timeout,
            interval,
            headers: args.headers.clone(),
            body_bytes: body.len(),
            rate: rate.clone(),
            max_in_flight,
            slack: rate.as_ref().map(|_| slack),
            llm: llm_config,
            scenario: None,
        };
        Ok(Plan {
            addrs,
            cpus,
            conns: args.conns,
            pipeline: args.pipeline,
            requests: args.requests,
            duration,
            timeout,
            connect_timeout,
            interval,
            rendered,
            head: method == "HEAD",
            rate,
            max_in_flight,
            slack,
            llm,
            output,
            config,
        })
    }

    /// Connections given to shard `i`: as even a split as possible.
    pub fn conns_of(&self, shard: usize) -> usize {
        shard_share(self.conns as u64, shard, self.cpus.len()) as usize
    }

    /// The request budget of shard `i` when the run is bounded by a count.
    pub fn requests_of(&self, shard: usize) -> Option<u64> {
        self.requests
            .map(|n| shard_share(n, shard, self.cpus.len()))
    }

    /// The distributions this run records.
    pub fn metrics(&self) -> Vec<Metric> {
        Metric::ALL
            .into_iter()
            .filter(|m| match m.group() {
                MetricGroup::Every => true,
                MetricGroup::OpenLoop => self.rate.is_some(),
                MetricGroup::Llm => self.llm.is_some(),
            })
            .collect()
    }

    /// Shard `i`'s part of `--max-in-flight`.
    pub fn max_in_flight_of(&self, shard: usize) -> Option<u64> {
        self.max_in_flight
            .map(|n| shard_share(n, shard, self.cpus.len()))
    }
}

/// An output file must be creatable: its directory has to exist (checked before the run,
/// so that a typo does not cost the whole run).
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

/// One request per prompt, in rotation, for an LLM API. A URL without a path gets the
/// API's usual one.
fn llm_requests(
    args: &RunArgs,
    api: Api,
    method: &str,
    target: &Target,
    mut headers: Vec<(String, String)>,
) -> Result<(Vec<Vec<u8>>, LlmPlan, LlmConfig), PlanError> {
    let (mix, prompts_name) = match &args.prompt_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                PlanError(format!("cannot read --prompt-file {}: {e}", path.display()))
            })?;
            let mix = PromptMix::from_file(&text)
                .map_err(|e| PlanError(format!("--prompt-file {}: {e}", path.display())))?;
            (mix, format!("file:{}", path.display()))
        }
        None => {
            let names = args.prompts.as_deref().unwrap_or(DEFAULT_PROMPTS);
            let sets =
                PromptSet::parse_list(names).map_err(|e| PlanError(format!("--prompts: {e}")))?;
            let mix = PromptMix::from_sets(&sets)
                .ok_or_else(|| PlanError("--prompts: no prompt set given".into()))?;
            (mix, names.to_string())
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
        Some(text) => Slo::parse(text).map_err(PlanError)?,
        None => Slo::default(),
    };
    let streaming = !args.no_stream;
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
                model,
                prompt,
                stream: streaming,
                max_tokens: args.max_tokens,
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
    let config = LlmConfig {
        api,
        model: model.to_string(),
        prompts: prompts_name,
        prompt_count: mix.len(),
        stream: streaming,
        max_tokens: args.max_tokens,
        slo: slo.is_set().then_some(slo),
    };
    Ok((
        rendered,
        LlmPlan {
            api,
            streaming,
            slo,
        },
        config,
    ))
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
        assert!(parse_url("https://example.com/")
            .unwrap_err()
            .0
            .contains("not supported yet"));
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
        let all = allowed_cpus();
        assert!(!all.is_empty());
        assert_eq!(choose_cpus(Some(1)).unwrap().len(), 1);
        assert!(choose_cpus(Some(0)).is_err());
        assert!(choose_cpus(Some(all.len() + 1)).is_err());
    }
}
