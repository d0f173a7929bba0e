//! `blast mock`'s command line, and its validation into a `MockConfig`.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::api::MAX_TOKENS;
use crate::plan::{parse_duration, PlanError};

/// Command-line options of `blast mock`.
#[derive(clap::Args, Debug, Clone)]
pub struct MockArgs {
    /// Address to listen on; port 0 picks a free port
    #[arg(long, default_value = "127.0.0.1:11434")]
    pub listen: String,
    /// Executors to run, one pinned thread per CPU [default: every CPU the process may use,
    /// as for the load test]
    #[arg(long)]
    pub cores: Option<usize>,
    /// Tokens per answer, unless the request sets num_predict / max_tokens
    #[arg(long, default_value_t = 32)]
    pub tokens: u32,
    /// Time to first token, e.g. 0ms, 200ms, 1s
    #[arg(long, default_value = "0ms")]
    pub ttft: String,
    /// Time between tokens, e.g. 0ms, 20ms
    #[arg(long, default_value = "0ms")]
    pub token_delay: String,
    /// At most P requests generating at once over the whole server; others queue (FIFO)
    #[arg(long, value_name = "P")]
    pub parallel: Option<u32>,
    /// With --parallel: answer 503 (like Ollama) once Q requests are already queued
    #[arg(long, value_name = "Q")]
    pub max_queue: Option<u32>,
    /// Fraction (0..1) of generation requests answered 500 "mock: injected failure"
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Known models, comma-separated; others get 404 (default: any name is accepted)
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// End OpenAI streams without `data: [DONE]` (like Llama Stack)
    #[arg(long)]
    pub no_done: bool,
    /// Seed of the --error-rate draws and of the embedding vectors
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Close a connection whose request head is not complete this long after its first
    /// byte (slow or stalled clients); 0s waits forever
    #[arg(long, default_value = "10s")]
    pub header_timeout: String,
    /// Close a connection idle this long between requests, or stalled inside a request
    /// body; 0s waits forever
    #[arg(long, default_value = "120s")]
    pub idle_timeout: String,
    /// Serve TLS (https://) with this PEM certificate chain, with --tls-key
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

/// A validated configuration (see `MockArgs` for the meaning of each field).
#[derive(Debug, Clone)]
pub struct MockConfig {
    pub listen: SocketAddr,
    /// CPU ids; one executor is pinned to each.
    pub cpus: Vec<usize>,
    pub tokens: u32,
    pub ttft: Duration,
    pub token_delay: Duration,
    pub parallel: Option<u32>,
    pub max_queue: Option<u32>,
    pub error_rate: f64,
    pub seed: u64,
    pub models: Option<Vec<String>>,
    pub no_done: bool,
    /// Zero: no limit.
    pub header_timeout: Duration,
    /// Zero: no limit.
    pub idle_timeout: Duration,
    /// Serve TLS with this configuration (`--tls-cert/--tls-key`).
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl MockConfig {
    /// The command-line defaults, on `listen` and `cpus`.
    pub fn new(listen: SocketAddr, cpus: Vec<usize>) -> MockConfig {
        MockConfig {
            listen,
            cpus,
            tokens: 32,
            ttft: Duration::ZERO,
            token_delay: Duration::ZERO,
            parallel: None,
            max_queue: None,
            error_rate: 0.0,
            seed: 1,
            models: None,
            no_done: false,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MockError {
    #[error("--listen {0:?}: not an address (want HOST:PORT, e.g. 127.0.0.1:11434)")]
    Listen(String),
    /// `--ttft` or `--token-delay`, read by the same parser as the load test's durations.
    #[error(transparent)]
    Duration(#[from] PlanError),
    #[error("--error-rate {0}: must be between 0 and 1")]
    ErrorRate(f64),
    #[error("--parallel 0: must be at least 1")]
    Parallel,
    #[error("--max-queue needs --parallel (without a slot limit nothing ever queues)")]
    QueueWithoutParallel,
    #[error("--tokens {0}: at most {MAX_TOKENS}")]
    Tokens(u32),
    #[error("--models: empty model name")]
    EmptyModel,
    #[error("--cores 0: must be at least 1")]
    NoCores,
    #[error("--cores {cores}: only {available} CPUs are available to this process")]
    TooManyCores { cores: usize, available: usize },
    #[error("mock: no CPUs to run on")]
    NoCpus,
    #[error("mock: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Tls(String),
    #[error("mock: executor failed: {0}")]
    Executor(String),
}

fn parse_listen(s: &str) -> Result<SocketAddr, MockError> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    // Host names are resolved here, once, on the calling thread.
    s.to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| MockError::Listen(s.to_string()))
}

impl MockArgs {
    /// Validates the options. `cpus` are the CPUs this process may use (e.g. its
    /// `sched_getaffinity` mask, see `crate::plan::allowed_cpus`); the first `--cores` of them are used.
    pub fn to_config(&self, cpus: Vec<usize>) -> Result<MockConfig, MockError> {
        let listen = parse_listen(&self.listen)?;
        let ttft = parse_duration("--ttft", &self.ttft)?;
        let token_delay = parse_duration("--token-delay", &self.token_delay)?;
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(MockError::ErrorRate(self.error_rate));
        }
        if self.parallel == Some(0) {
            return Err(MockError::Parallel);
        }
        if self.max_queue.is_some() && self.parallel.is_none() {
            return Err(MockError::QueueWithoutParallel);
        }
        if self.tokens > MAX_TOKENS {
            return Err(MockError::Tokens(self.tokens));
        }
        let models = match &self.models {
            None => None,
            Some(list) => {
                let list: Vec<String> = list.iter().map(|m| m.trim().to_string()).collect();
                if list.iter().any(String::is_empty) {
                    return Err(MockError::EmptyModel);
                }
                Some(list)
            }
        };
        let header_timeout = parse_duration("--header-timeout", &self.header_timeout)?;
        let idle_timeout = parse_duration("--idle-timeout", &self.idle_timeout)?;
        // Like the load test: every CPU this process may use unless told otherwise.
        let cores = self.cores.unwrap_or(cpus.len());
        if cores == 0 {
            return Err(MockError::NoCores);
        }
        if cores > cpus.len() {
            return Err(MockError::TooManyCores {
                cores,
                available: cpus.len(),
            });
        }
        let cpus = cpus.into_iter().take(cores).collect();
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Some(crate::tls::server_config(cert, key).map_err(MockError::Tls)?)
            }
            _ => None,
        };
        Ok(MockConfig {
            tokens: self.tokens,
            ttft,
            token_delay,
            parallel: self.parallel,
            max_queue: self.max_queue,
            error_rate: self.error_rate,
            seed: self.seed,
            models,
            no_done: self.no_done,
            header_timeout,
            idle_timeout,
            tls,
            ..MockConfig::new(listen, cpus)
        })
    }
}
