//! `blast mock`: a thread-per-core fake LLM upstream (Ollama and OpenAI APIs) on glommio.
//!
//! One executor per CPU, each with its own SO_REUSEPORT listener on the same port, so the
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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

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
    #[error("--{flag} {value:?}: {reason} (want e.g. 0ms, 20ms, 1s)")]
    Duration {
        flag: &'static str,
        value: String,
        reason: String,
    },
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

fn parse_duration(flag: &'static str, value: &str) -> Result<Duration, MockError> {
    humantime::parse_duration(value.trim()).map_err(|e| MockError::Duration {
        flag,
        value: value.to_string(),
        reason: e.to_string(),
    })
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
        let ttft = parse_duration("ttft", &self.ttft)?;
        let token_delay = parse_duration("token-delay", &self.token_delay)?;
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

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A listening socket with SO_REUSEPORT, so every core can have its own on one port.
fn reuseport_listener(addr: SocketAddr) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls; every pointer is to a live local of the stated size.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        check(fd)?;
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            check(libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &one as *const libc::c_int as *const libc::c_void,
                size_of::<libc::c_int>() as libc::socklen_t,
            ))?;
        }
        match addr {
            SocketAddr::V4(a) => {
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_port = a.port().to_be();
                sa.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                check(libc::bind(
                    fd.as_raw_fd(),
                    &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                ))?;
            }
            SocketAddr::V6(a) => {
                let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_port = a.port().to_be();
                sa.sin6_addr.s6_addr = a.ip().octets();
                sa.sin6_flowinfo = a.flowinfo();
                sa.sin6_scope_id = a.scope_id();
                check(libc::bind(
                    fd.as_raw_fd(),
                    &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                ))?;
            }
        }
        check(libc::listen(fd.as_raw_fd(), 4096))?;
        Ok(fd)
    }
}

/// Binds `n` listeners on one port, resolving port 0 once.
fn bind_all(addr: SocketAddr, n: usize) -> Result<(SocketAddr, Vec<OwnedFd>), MockError> {
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

/// Mock executor threads are named after this (glommio appends a number).
const MOCK_THREAD: &str = "blast-mock";

/// A running mock server. Dropping it stops it too (ignoring errors).
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    handles: Vec<ExecutorJoinHandle<()>>,
}

/// How often the cores are kicked while stopping (see `crate::wake`).
const KICK_EVERY: Duration = Duration::from_millis(200);

impl MockServer {
    /// Binds, starts one executor per CPU of `cfg.cpus`, and returns once all accept.
    /// Every core listens on the same port (port 0 is resolved once, first); a port
    /// already in use is `MockError::Bind`. Raises the soft RLIMIT_NOFILE to the hard one.
    pub fn start(cfg: MockConfig) -> Result<MockServer, MockError> {
        if cfg.cpus.is_empty() {
            return Err(MockError::NoCpus);
        }
        // A server needs one fd per connection: take what the hard limit allows.
        crate::limits::raise_nofile_soft();
        let n = cfg.cpus.len();
        let (addr, fds) = bind_all(cfg.listen, n)?;
        let mut cfg = cfg;
        cfg.listen = addr;
        let cfg = Arc::new(cfg);
        let admission = cfg.parallel.map(|p| Admission::new(p, cfg.max_queue));
        let shared = Arc::new(Shared::new(n, admission));
        let canned = Arc::new(CannedSet::build(&cfg));
        let mut server = MockServer {
            addr,
            shared: shared.clone(),
            handles: Vec::with_capacity(n),
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        for (idx, (&cpu, fd)) in cfg.cpus.iter().zip(fds).enumerate() {
            let (cfg, shared, canned, ready) = (
                cfg.clone(),
                shared.clone(),
                canned.clone(),
                ready_tx.clone(),
            );
            let spawned = LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .name(MOCK_THREAD)
                .io_memory(64 << 10)
                .spawn(move || server::core_main(idx, fd, cfg, shared, canned, ready));
            match spawned {
                Ok(h) => server.handles.push(h),
                Err(e) => {
                    let _ = server.shutdown();
                    return Err(MockError::Executor(format!("cpu {cpu}: {e}")));
                }
            }
        }
        drop(ready_tx);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut started = 0;
        while started < n {
            match ready_rx.recv_timeout(Duration::from_millis(200)) {
                Ok(_) => started += 1,
                // glommio may have lost a wake-up (see `crate::wake`): kick and keep waiting.
                Err(mpsc::RecvTimeoutError::Timeout) if std::time::Instant::now() < deadline => {
                    crate::wake::kick_threads(MOCK_THREAD)
                }
                // A core whose executor failed to build drops its sender without a word.
                Err(_) => {
                    return Err(match server.shutdown() {
                        Err(e) => e,
                        Ok(()) => MockError::Executor("a core did not start".into()),
                    });
                }
            }
        }
        Ok(server)
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
        self.shared.stop.store(true, Ordering::Relaxed);
        // Joining cannot time out, so a kicker wakes the cores until they are all gone, in
        // case glommio lost a wake-up before a core's poller took over.
        let kicker = crate::wake::Kicker::start(MOCK_THREAD, KICK_EVERY);
        let result = self.join_all();
        drop(kicker);
        result
    }

    fn join_all(&mut self) -> Result<(), MockError> {
        let mut result = Ok(());
        for h in self.handles.drain(..) {
            if let Err(e) = h.join() {
                if result.is_ok() {
                    result = Err(MockError::Executor(e.to_string()));
                }
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
