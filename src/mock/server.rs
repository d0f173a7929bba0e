//! The running server: one pinned runtime thread per CPU, each accepting on its own
//! listener, and what each core keeps for the connections it serves.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use futures_lite::future::or;
use socket2::{Domain, Socket, Type};

use super::conn::serve;
use super::render::{created_at, json_str, CannedSet, Stamp};
use super::stats::{Admission, CoreStats, Shared, Waiters};
use super::{MockConfig, MockError};
use crate::llm::Api;
use crate::rng::SplitMix64;
use crate::rt::{self, Listener, Pinned};

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

thread_local! {
    /// Set when a connection of this core gave back a large buffer.
    static FREED: Cell<bool> = const { Cell::new(false) };
}

/// Notes that a large buffer was freed on this thread, for `trim_loop`.
pub(crate) fn note_freed() {
    FREED.with(|f| f.set(true));
}

/// How often a core may return freed memory to the system.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Gives freed heap back to the system at most every `TRIM_EVERY`, and only after large
/// buffers were freed. glibc keeps freed memory in its per-thread arenas (large requests
/// and responses grow buffers that are freed afterwards), so without this the resident
/// size stays at its peak.
async fn trim_loop() {
    loop {
        rt::sleep(TRIM_EVERY).await;
        if FREED.with(|f| f.replace(false)) {
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only walks and releases the allocator's free memory.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
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
                let main = move || core_main(idx, sock, cfg, shared, canned, ready);
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

/// One core's state, shared by its connections (on its thread only).
pub(crate) struct Core {
    idx: usize,
    pub(crate) cfg: Arc<MockConfig>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) canned: Arc<CannedSet>,
    /// The `--error-rate` draws.
    rng: Cell<SplitMix64>,
    /// Numbers OpenAI ids.
    next_id: Cell<u64>,
    pub(crate) waiters: Waiters,
}

impl Core {
    pub(crate) fn stats(&self) -> &CoreStats {
        &self.shared.cores[self.idx]
    }

    pub(crate) fn stopping(&self) -> bool {
        self.shared.stopping()
    }

    /// Whether to answer this generation with an injected 500.
    pub(crate) fn inject_error(&self) -> bool {
        let p = self.cfg.error_rate;
        if p <= 0.0 {
            return false;
        }
        let mut rng = self.rng.get();
        let draw = rng.unit();
        self.rng.set(rng);
        draw < p
    }

    /// The identity stamped on every chunk of one response.
    pub(crate) fn stamp(&self, api: Api, model: &str) -> Stamp {
        if api.is_ollama() {
            return Stamp {
                created_at: created_at(api),
                created: 0,
                id: String::new(),
                model_json: json_str(model),
            };
        }
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        let prefix = if api == Api::OpenaiChat {
            "chatcmpl"
        } else {
            "cmpl"
        };
        Stamp {
            created_at: String::new(),
            created: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            id: format!("{prefix}-mock{}x{n}", self.idx),
            model_json: json_str(model),
        }
    }
}

/// The core's root task: serves until stop is asked, then returns, and the runtime drops
/// every connection where it stands (mid-stream ones too).
async fn core_main(
    idx: usize,
    sock: Socket,
    cfg: Arc<MockConfig>,
    shared: Arc<Shared>,
    canned: Arc<CannedSet>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let listener = match Listener::new(sock) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("core {idx} cannot accept: {e}")));
            return;
        }
    };
    let seed = cfg.seed ^ (idx as u64).wrapping_mul(0xa076_1d64_78bd_642f);
    let core = Rc::new(Core {
        idx,
        cfg,
        shared,
        canned,
        rng: Cell::new(SplitMix64::from_state(seed)),
        next_id: Cell::new(0),
        waiters: Waiters::default(),
    });
    let _ = ready.send(Ok(()));
    drop(ready);
    // The doorbell rings for stop, and when a `--parallel` slot was released on any core.
    let bell = async {
        loop {
            core.shared.bells[idx].wait().await;
            if core.stopping() {
                return;
            }
            core.waiters.wake_ready(&core.shared, false);
        }
    };
    or(accept_loop(&core, listener), or(bell, trim_loop())).await;
    // Waiters for a slot end with an error rather than being dropped unserved.
    core.waiters.wake_ready(&core.shared, true);
}

async fn accept_loop(core: &Rc<Core>, listener: Listener) {
    loop {
        match listener.accept().await {
            Ok(stream) => rt::spawn(serve(core.clone(), stream)).detach(),
            // Out of fds and the like: back off instead of spinning on the error.
            Err(_) => rt::sleep(Duration::from_millis(10)).await,
        }
    }
}
