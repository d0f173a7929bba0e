//! `blast mock`: a thread-per-core fake LLM upstream (Ollama and OpenAI APIs) on blast's
//! runtime (`crate::rt`).
//!
//! One pinned runtime thread per CPU, each with its own SO_REUSEPORT listener on the same port, so the
//! kernel spreads connections and the request path shares nothing but relaxed atomics.
//! Responses are pre-rendered where possible; with zero delays a whole stream is one write.

mod api;
mod http;
mod render;
mod server;
mod stats;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::plan::{parse_duration, PlanError};
use crate::rt::{self, Pinned};

use render::CannedSet;
use stats::{Admission, Shared};

pub use api::MAX_TOKENS;

/// Command-line options of `blast mock`.
#[derive(clap::Args, Debug, Clone)]
pub struct MockArgs {
    /// Address to listen on; port 0 picks a free port
    #[arg(long, default_value = "127.0.0.1:11434")]
    pub listen: String,
    /// Executors to run, one pinned thread per CPU
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
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
    /// Seed of the --error-rate draws
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
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
        if self.cores == 0 {
            return Err(MockError::NoCores);
        }
        if self.cores > cpus.len() {
            return Err(MockError::TooManyCores {
                cores: self.cores,
                available: cpus.len(),
            });
        }
        let cpus = cpus.into_iter().take(self.cores).collect();
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
            ..MockConfig::new(listen, cpus)
        })
    }
}

/// A listening socket with SO_REUSEPORT, so every core can have its own on one port.
fn reuseport_listener(addr: SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock)
}

/// Binds `n` listeners on one port, resolving port 0 once.
fn bind_all(addr: SocketAddr, n: usize) -> Result<(SocketAddr, Vec<Socket>), MockError> {
    // A plain (non-reuseport) bind first: it fails if anyone listens there, where
    // SO_REUSEPORT alone would silently share the port with another reuseport server
    // of the same user (a second `blast mock`, say). It also resolves port 0.
    let resolved = std::net::TcpListener::bind(addr)
        .and_then(|probe| probe.local_addr())
        .map_err(|source| MockError::Bind { addr, source })?;
    let fds = (0..n)
        .map(|_| reuseport_listener(resolved))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|source| MockError::Bind {
            addr: resolved,
            source,
        })?;
    Ok((resolved, fds))
}

/// Mock threads are named after this, with their index.
const MOCK_THREAD: &str = "blast-mock";

/// A running mock server. Dropping it stops it too (ignoring errors).
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<Pinned<()>>,
}

impl MockServer {
    /// Binds, starts one runtime thread per CPU of `cfg.cpus`, and returns once all accept.
    /// Every core listens on the same port (port 0 is resolved once, first); a port
    /// already in use is `MockError::Bind`. Raises the soft RLIMIT_NOFILE to the hard one.
    pub fn start(cfg: MockConfig) -> Result<MockServer, MockError> {
        if cfg.cpus.is_empty() {
            return Err(MockError::NoCpus);
        }
        // A server needs one fd per connection: take what the hard limit allows.
        crate::limits::raise_nofile_soft();
        let n = cfg.cpus.len();
        let (addr, socks) = bind_all(cfg.listen, n)?;
        let mut cfg = cfg;
        cfg.listen = addr;
        let cfg = Arc::new(cfg);
        let admission = cfg.parallel.map(|p| Admission::new(p, cfg.max_queue));
        let shared = Arc::new(Shared::new(n, admission));
        let canned = Arc::new(CannedSet::build(&cfg));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let work = cfg
            .cpus
            .iter()
            .zip(socks)
            .enumerate()
            .map(|(idx, (&cpu, sock))| {
                let (cfg, shared, canned) = (cfg.clone(), shared.clone(), canned.clone());
                let ready = ready_tx.clone();
                let main = move || server::core_main(idx, sock, cfg, shared, canned, ready);
                (cpu, main)
            })
            .collect();
        drop(ready_tx);
        let mut server = MockServer {
            addr,
            shared,
            threads: Vec::new(),
        };
        let failed = match rt::start_pinned(MOCK_THREAD, work) {
            Ok(threads) => {
                server.threads = threads;
                // Each core says whether it listens; one that died says nothing (its sender
                // is gone with it).
                (0..n).find_map(|_| match ready_rx.recv() {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some("a core did not start".to_string()),
                })
            }
            Err(e) => Some(e.to_string()),
        };
        match failed {
            None => Ok(server),
            Some(e) => {
                let _ = server.shutdown();
                Err(MockError::Executor(e))
            }
        }
    }

    /// The bound address (with the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes connections (even mid-stream), and joins every thread.
    pub fn stop(mut self) -> Result<(), MockError> {
        self.shutdown()
    }

    /// Blocks until `stop_flag` becomes true (checked every 50 ms), then stops.
    pub fn run_until(self, stop_flag: &AtomicBool) -> Result<(), MockError> {
        while !stop_flag.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop()
    }

    fn shutdown(&mut self) -> Result<(), MockError> {
        self.shared.stop_all();
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            if let (Err(e), true) = (t.join(), result.is_ok()) {
                result = Err(MockError::Executor(e));
            }
        }
        result
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
