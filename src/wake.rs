//! A guard against lost wake-ups in glommio 0.9: under load, an executor can sleep in
//! `io_uring_enter` past its own timer (seen here about once in a few hundred starts and
//! stops on a loaded machine; glommio issues #326 and #547 describe the same), and then a
//! shard stops reporting or a server never stops. Any signal ends that sleep with EINTR,
//! which glommio treats as a normal wake-up, so the thread that waits for an executor
//! "kicks" it with a signal whose handler does nothing.

use std::sync::Once;

/// The signal used for kicks: no other part of blast uses it.
const KICK: libc::c_int = libc::SIGUSR2;

extern "C" fn ignore(_: libc::c_int) {}

/// Install the do-nothing handler (once per process). Without SA_RESTART, so that a
/// sleeping `io_uring_enter` returns.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a handler that does nothing is async-signal-safe; sigaction only reads `sa`.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(KICK, &sa, std::ptr::null_mut());
        }
    });
}

/// Wake thread `tid` of this process if it is asleep. A thread that has already exited is
/// not an error (tgkill reports ESRCH), and a recycled id can only name another thread of
/// this process, for which the kick is harmless.
pub fn kick(tid: libc::pid_t) {
    install();
    // SAFETY: tgkill only sends a signal whose handler (installed above) does nothing.
    unsafe {
        libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, KICK);
    }
}

/// Kick every thread of this process whose name starts with `prefix` (glommio names its
/// executor threads after the builder's name). Finding them by name works even for an
/// executor that went to sleep before it could run any of our code.
pub fn kick_threads(prefix: &str) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let named =
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.starts_with(prefix));
        if let (true, Some(tid)) = (
            named,
            task.file_name().to_str().and_then(|t| t.parse().ok()),
        ) {
            kick(tid);
        }
    }
}

/// A thread that kicks the threads named `prefix` every `every` until dropped.
pub struct Kicker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Kicker {
    pub fn start(prefix: &'static str, every: std::time::Duration) -> Kicker {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(every);
                    kick_threads(prefix);
                }
            })
        };
        Kicker {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Kicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The calling thread's kernel id.
    pub fn thread_id() -> libc::pid_t {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
    }

    /// A thread named `name` in a 10 s raw nanosleep (std's sleep would resume after a
    /// signal); returns its id once it sleeps, and how long it slept when joined.
    fn sleeper(name: &str) -> (libc::pid_t, std::thread::JoinHandle<Duration>) {
        install();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                tx.send(thread_id()).unwrap();
                let start = Instant::now();
                let ts = libc::timespec {
                    tv_sec: 10,
                    tv_nsec: 0,
                };
                // SAFETY: nanosleep only reads `ts`.
                unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
                start.elapsed()
            })
            .unwrap();
        let tid = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        (tid, handle)
    }

    #[test]
    fn a_kick_ends_a_blocking_sleep_early() {
        let (tid, handle) = sleeper("blast-kick-one");
        kick(tid);
        assert!(handle.join().unwrap() < Duration::from_secs(5));
        kick(tid); // the thread is gone: still fine
    }

    #[test]
    fn threads_are_found_by_name() {
        let (_, handle) = sleeper("blast-kicktest");
        kick_threads("blast-kicktest");
        assert!(handle.join().unwrap() < Duration::from_secs(5));
    }
}
