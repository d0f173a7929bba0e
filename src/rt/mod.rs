//! blast's runtime: one single-threaded executor per pinned thread, waiting for sockets,
//! timers and cross-thread wake-ups in one epoll set.
//!
//! The loop: run the tasks that are ready, fire the timers that are due, then block in
//! `epoll_pwait2` until the next socket event, the next timer or a wake-up from another
//! thread (an eventfd in the same set). Nothing polls and nothing needs a signal: every
//! way a task can become ready ends the one wait. Task cells and wakers are `async-task`'s.
//!
//! Both the load engine (one shard per thread) and `blast mock` run on it.

mod poller;
pub mod sync;
mod timer;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_task::Runnable;

use poller::Woke;
pub(crate) use poller::{Listener, Stream};
pub use timer::{sleep, sleep_until};

/// A spawned task: await it for its output, or `detach` it to let it run on its own.
pub type Task<T> = async_task::Task<T>;

/// Epoll events collected per wait.
const BATCH: usize = 256;

/// What a thread's executor holds: its run queue, its poller (sockets and timers), and the
/// door other threads use to hand it work.
struct Core {
    queue: RefCell<VecDeque<Runnable>>,
    poller: Rc<poller::Poller>,
    remote: Arc<Remote>,
    /// When the loop last looked at sockets and timers (see `yield_if_needed`).
    last_turn: Cell<Instant>,
    /// See `batch`; zero: every event and timer is handled as it comes.
    slack: Cell<Duration>,
    /// The last turn found work (events, due timers, ready tasks).
    active: Cell<bool>,
}

/// Tasks woken from other threads, handed over through a locked queue and an eventfd that
/// ends the owner's epoll wait.
struct Remote {
    queue: Mutex<Vec<Runnable>>,
    /// The eventfd has been written and not read since: no need to write it again.
    rung: std::sync::atomic::AtomicBool,
    efd: std::os::fd::OwnedFd,
}

impl Remote {
    fn push(&self, r: Runnable) {
        use std::sync::atomic::Ordering;
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).push(r);
        if !self.rung.swap(true, Ordering::AcqRel) {
            poller::ring(&self.efd);
        }
    }

    /// Take what other threads queued. The flag is lowered before the queue is taken, so a
    /// push that comes after the take rings again.
    fn take(&self) -> Vec<Runnable> {
        self.rung.store(false, std::sync::atomic::Ordering::Release);
        poller::drain(&self.efd);
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

thread_local! {
    /// The executor running on this thread, while `Runtime::block_on` runs.
    static CURRENT: Cell<*const Core> = const { Cell::new(std::ptr::null()) };
}

/// The current thread's executor. Panics outside `Runtime::block_on`: blast's tasks,
/// sockets and timers only exist inside one.
fn with_core<R>(f: impl FnOnce(&Core) -> R) -> R {
    CURRENT.with(|c| {
        let core = c.get();
        assert!(
            !core.is_null(),
            "blast's runtime is not running on this thread"
        );
        // SAFETY: CURRENT points at the `Core` of the `block_on` running on this thread,
        // which outlives every call made from inside it (it is reset before the Core goes).
        f(unsafe { &*core })
    })
}

/// `f` on the current thread's executor, if one is running.
fn if_running(f: impl FnOnce(&Core)) {
    CURRENT.with(|c| {
        // SAFETY: as in `with_core`.
        if let Some(core) = unsafe { c.get().as_ref() } {
            f(core)
        }
    })
}

/// A thread's executor, created on the thread that runs it.
pub struct Runtime {
    core: Core,
}

impl Runtime {
    pub fn new() -> io::Result<Runtime> {
        let (poller, efd) = poller::Poller::new()?;
        Ok(Runtime {
            core: Core {
                queue: RefCell::new(VecDeque::new()),
                poller,
                remote: Arc::new(Remote {
                    queue: Mutex::new(Vec::new()),
                    rung: false.into(),
                    efd,
                }),
                last_turn: Cell::new(Instant::now()),
                slack: Cell::new(Duration::ZERO),
                active: Cell::new(false),
            },
        })
    }

    /// Run `root` and every task it spawns until `root` is done; tasks still pending then
    /// are dropped.
    pub fn block_on<F: Future + 'static>(self, root: F) -> F::Output {
        let core = &self.core;
        let prev = CURRENT.with(|c| c.replace(core));
        // Reset CURRENT however this ends (a task may panic).
        struct Reset(*const Core);
        impl Drop for Reset {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _reset = Reset(prev);
        let mut root = spawn(root);
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; BATCH];
        loop {
            core.run_ready();
            if root.is_finished() {
                break;
            }
            core.turn(&mut events);
        }
        let out = match pin!(&mut root).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(out) => out,
            Poll::Pending => unreachable!("a finished task has its output"),
        };
        core.teardown();
        out
    }
}

impl Core {
    /// Run the tasks that were ready when the batch began; those they wake run in the next
    /// batch, after sockets and timers have been looked at.
    fn run_ready(&self) {
        let n = self.queue.borrow().len();
        for _ in 0..n {
            let next = self.queue.borrow_mut().pop_front();
            match next {
                Some(r) => {
                    r.run();
                }
                None => break,
            }
        }
    }

    /// Fire due timers, then look at the sockets: without waiting when tasks are ready,
    /// else blocking until the next event, timer or remote wake-up; or, while batching
    /// (see `batch`), sleeping through `slack` first and then taking everything at once.
    fn turn(&self, events: &mut [libc::epoll_event]) {
        let now = Instant::now();
        self.last_turn.set(now);
        let mut active = self.poller.timers.fire(now) > 0;
        let slack = self.slack.get();
        let woke = if !self.queue.borrow().is_empty() {
            active = true;
            self.poller.dispatch(events, Some(Duration::ZERO))
        } else if !slack.is_zero() && self.active.get() {
            // Sockets cannot end this sleep, so the responses, sends and timers that come
            // due within it are handled in one wake-up instead of one wake-up each.
            self.poller.nap(slack);
            Woke {
                waited: true,
                ..self.poller.dispatch(events, Some(Duration::ZERO))
            }
        } else {
            let until_next = self.poller.timers.next_due();
            self.poller.dispatch(
                events,
                until_next.map(|at| at.saturating_duration_since(now)),
            )
        };
        if woke.remote {
            self.queue.borrow_mut().extend(self.remote.take());
        }
        if woke.waited {
            active |= self.poller.timers.fire(Instant::now()) > 0;
        }
        // A sleep that found nothing to do ends the batching until something happens again:
        // an idle thread blocks until its next event instead of waking every `slack`.
        self.active.set(active || woke.events > 0 || woke.remote);
    }

    /// Drop every task left: wakers held by sockets and timers are let go, which schedules
    /// the tasks one last time, and their runnables are dropped unrun (that drops their
    /// futures, here, on their own thread).
    fn teardown(&self) {
        loop {
            let wakers = self.poller.take_wakers();
            let had = !wakers.is_empty();
            drop(wakers);
            self.queue.borrow_mut().extend(self.remote.take());
            let mut dropped = false;
            loop {
                let next = self.queue.borrow_mut().pop_front();
                let Some(r) = next else { break };
                drop(r);
                dropped = true;
            }
            if !had && !dropped {
                break;
            }
        }
    }

    fn schedule(&self, r: Runnable) {
        self.queue.borrow_mut().push_back(r);
    }
}

/// Run `future` as a task of the current thread's executor.
pub fn spawn<F>(future: F) -> Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let remote = with_core(|c| c.remote.clone());
    let schedule = move |r: Runnable| {
        // Woken on its own thread (the usual case): straight onto the run queue. From
        // another thread: through the remote queue and the eventfd.
        let local = CURRENT.with(|c| {
            let core = c.get();
            // SAFETY: as in `with_core`.
            (!core.is_null() && Arc::ptr_eq(unsafe { &(*core).remote }, &remote)).then_some(core)
        });
        match local {
            // SAFETY: as in `with_core`.
            Some(core) => unsafe { &*core }.schedule(r),
            None => remote.push(r),
        }
    };
    let (runnable, task) = async_task::spawn_local(future, schedule);
    runnable.schedule();
    task
}

/// The current thread's poller, for sockets.
pub(crate) fn poller() -> Rc<poller::Poller> {
    with_core(|c| c.poller.clone())
}

/// Let the current thread handle its work in batches: while it is busy, each wait is a
/// sleep of `slack` that no socket event ends, after which everything that came in and
/// every timer that came due is handled at once. A timer then fires up to `slack` late,
/// and a response is read up to `slack` after it arrived (its arrival time is still known
/// to the microsecond: see `Stream::read_stamps`). Once a sleep finds nothing to do, the
/// thread blocks as usual until its next event or timer. Zero turns batching off.
pub fn batch(slack: Duration) {
    with_core(|c| c.slack.set(slack));
}

/// Let the loop look at sockets and timers if it has not for `slice`: for tasks that can
/// run long without waiting (a fast stream).
pub async fn yield_if_needed(slice: Duration) {
    if with_core(|c| c.last_turn.get().elapsed() >= slice) {
        futures_lite::future::yield_now().await;
    }
}

/// A thread started by `start_pinned`.
pub struct Pinned<T>(std::thread::JoinHandle<Option<T>>);

impl<T> Pinned<T> {
    /// Wait for the thread's `main` to end: its output, or what it panicked with.
    pub fn join(self) -> Result<T, String> {
        match self.0.join() {
            Ok(Some(out)) => Ok(out),
            Ok(None) => Err("its runtime did not start".into()),
            Err(panic) => Err(panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("it panicked")
                .to_string()),
        }
    }
}

/// Start one thread per `(cpu, main)` of `work`, named `name-<i>` and pinned to its CPU,
/// each running `main()` to its end on its own runtime (called there, so it may spawn and
/// open sockets at once). Returns once every thread is pinned and has its runtime, or
/// with the first error (threads that did start go on into `main`, which must then find
/// out for itself that the start was called off).
pub fn start_pinned<T, F, Fut>(name: &str, work: Vec<(usize, F)>) -> io::Result<Vec<Pinned<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (up_tx, up_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let mut threads = Vec::with_capacity(work.len());
    for (i, (cpu, main)) in work.into_iter().enumerate() {
        let up = up_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                // core_affinity indexes a fixed-size CPU set: larger ids would panic there.
                let pinned = cpu < libc::CPU_SETSIZE as usize
                    && core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                let rt = if pinned {
                    Runtime::new()
                } else {
                    Err(io::Error::other(format!(
                        "cannot pin a thread to CPU {cpu}"
                    )))
                };
                match rt {
                    Ok(rt) => {
                        let _ = up.send(Ok(()));
                        drop(up);
                        Some(rt.block_on(async move { main().await }))
                    }
                    Err(e) => {
                        let _ = up.send(Err(e));
                        None
                    }
                }
            })?;
        threads.push(Pinned(handle));
    }
    drop(up_tx);
    for _ in 0..threads.len() {
        match up_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("a runtime thread died while starting")),
        }
    }
    Ok(threads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn tasks_run_and_their_outputs_are_awaited() {
        let out = Runtime::new().unwrap().block_on(async {
            let a = spawn(async { 2 });
            let b = spawn(async {
                futures_lite::future::yield_now().await;
                3
            });
            a.await * b.await
        });
        assert_eq!(out, 6);
    }

    #[test]
    fn a_wake_from_another_thread_ends_the_wait() {
        // The root waits on nothing but a waker sent to another thread: only the eventfd
        // can end the epoll wait (no timer is queued).
        let (tx, rx) = std::sync::mpsc::channel::<Waker>();
        let other = std::thread::spawn(move || {
            let w = rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(30));
            w.wake();
        });
        let start = Instant::now();
        let mut sent = false;
        Runtime::new()
            .unwrap()
            .block_on(std::future::poll_fn(move |cx| {
                if sent {
                    return Poll::Ready(());
                }
                sent = true;
                tx.send(cx.waker().clone()).unwrap();
                Poll::Pending
            }));
        other.join().unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn a_batching_runtime_still_serves_sockets_and_timers() {
        use std::io::{Read, Write};
        // Data that comes while the thread is idle (no timers) must still wake it, and data
        // that comes during a batch sleep must be read after it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            for _ in 0..20 {
                let mut b = [0u8; 1];
                s.read_exact(&mut b).unwrap();
                s.write_all(b"y").unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
            s.write_all(b"z").unwrap();
        });
        let got = Runtime::new().unwrap().block_on(async move {
            batch(Duration::from_millis(2));
            let mut s = Stream::connect(addr, Duration::from_secs(5)).await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 8];
            for _ in 0..20 {
                sleep(Duration::from_micros(100)).await;
                s.write_all(b"x").await.unwrap();
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            let n = s.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            got
        });
        server.join().unwrap();
        assert_eq!(got, [&[b'y'; 20][..], b"z"].concat());
    }

    #[test]
    fn pending_tasks_are_dropped_when_the_root_ends() {
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let d = drops.clone();
        Runtime::new().unwrap().block_on(async move {
            for _ in 0..3 {
                let c = Counted(d.clone());
                spawn(async move {
                    let _c = c;
                    sleep(Duration::from_secs(3600)).await;
                })
                .detach();
            }
            let c = Counted(d.clone());
            spawn(async move {
                let _c = c;
                std::future::pending::<()>().await;
            })
            .detach();
            // Let them start and wait.
            futures_lite::future::yield_now().await;
        });
        // The sleepers are dropped through their timers' wakers. The task that waits on
        // nothing holds no waker anywhere: async-task frees it when its last reference goes.
        assert!(drops.load(Ordering::Relaxed) >= 3);
    }

    #[test]
    fn pinned_threads_each_run_their_main() {
        let cpus = crate::plan::allowed_cpus();
        let work = cpus
            .iter()
            .enumerate()
            .map(|(i, &cpu)| {
                (cpu, move || async move {
                    sleep(Duration::from_millis(1)).await;
                    i
                })
            })
            .collect();
        let handles = start_pinned("blast-rt-test", work).unwrap();
        let got: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(got, (0..cpus.len()).collect::<Vec<_>>());
    }
}
