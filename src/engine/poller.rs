//! Socket readiness for one shard through one edge-triggered epoll instance.
//!
//! glommio 0.9 waits for a socket by arming an io_uring poll on it, one per wait. On a
//! busy shard that poll completes while the shard's thread is running, and io_uring then
//! delivers the completion as task work with a signal, an inter-processor interrupt to
//! the shard's CPU for nearly every response (`RES` in /proc/interrupts: 0.5-0.8 per
//! request at 100 connections; wrk: 0). The rings glommio creates cannot ask for
//! `IORING_SETUP_COOP_TASKRUN`, which would avoid it.
//!
//! epoll does not interrupt a running thread: a readiness event only queues the socket on
//! the ready list. So each shard registers its sockets once (edge-triggered, no
//! `epoll_ctl` per request), its poller task collects events with a non-blocking
//! `epoll_wait` and wakes the connections they belong to.
//!
//! The poller also keeps the shard's timers (send times, connect timeouts, the ticker),
//! because of what parking costs: glommio parks by arming and cancelling io_uring
//! timeouts, linking its rings and issuing a membarrier, about 30 us of CPU per park here.
//! An open loop at 20k req/s parks once per send, so that was most of its 46 us per
//! request. Every task of the shard is tracked (`tracked`): when a whole turn of the run
//! queue passes in which none of them ran, nothing is ready and no timer is due, the
//! poller blocks in one `epoll_pwait2` until the next event or timer (20 ms at most), and
//! glommio never needs to park.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::future;
use socket2::{Domain, Protocol, Socket, Type};

/// Readiness bits of a slot. `HUP` (hang-up, error, peer shut down) is sticky: it
/// satisfies every wait, because the syscall then reports what happened.
const IN: u8 = 1;
const OUT: u8 = 2;
const HUP: u8 = 4;

/// The longest the poller blocks at once: well within glommio's preemption timer (100 ms),
/// which keeps running while the thread is blocked here.
const MAX_BLOCK: Duration = Duration::from_millis(20);

/// Events collected per `epoll_wait`.
const BATCH: usize = 256;

/// Rebuild the timer heap when it holds this many times more entries than live timers
/// (cancelled ones are dropped lazily).
const TIMER_SLACK_FACTOR: usize = 4;

#[derive(Default)]
struct Slot {
    ready: u8,
    /// The task that last waited on this socket (one at a time: it reads or writes). It is
    /// kept after a wake-up, so a task waiting elsewhere meanwhile may be woken spuriously.
    waker: Option<Waker>,
}

pub(crate) struct Poller {
    epfd: OwnedFd,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    timers: RefCell<Timers>,
    /// Polls of the shard's tracked tasks so far.
    progress: Cell<u64>,
    /// When the poller task last ran (see `yield_if_needed`).
    last_turn: Cell<Instant>,
    /// `epoll_pwait2` (Linux 5.11) works; otherwise block with millisecond timeouts.
    fine_timeouts: Cell<bool>,
}

/// A timer heap with lazy cancellation: an entry is live while its slot's generation
/// matches the one it was queued with.
#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    slots: Vec<TimerSlot>,
    free: Vec<u32>,
}

impl Timers {
    /// Timers queued and not dropped yet.
    fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// A free slot of `slots`: one of `free` as it was left, or a new default one.
fn take_slot<T: Default>(slots: &mut Vec<T>, free: &mut Vec<u32>) -> u32 {
    free.pop().unwrap_or_else(|| {
        slots.push(T::default());
        (slots.len() - 1) as u32
    })
}

#[derive(Default)]
struct TimerSlot {
    generation: u32,
    waker: Option<Waker>,
}

impl Poller {
    pub fn new() -> io::Result<Rc<Poller>> {
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // Timers of this thread fire when due, not up to 50 us later (the default slack).
        // SAFETY: plain prctl on the calling (shard) thread.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        Ok(Rc::new(Poller {
            // SAFETY: `fd` is a fresh descriptor nothing else owns.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            timers: RefCell::new(Timers::default()),
            progress: Cell::new(0),
            last_turn: Cell::new(Instant::now()),
            fine_timeouts: Cell::new(true),
        }))
    }

    /// Add a socket that is not connected yet: no readiness until its first event.
    fn register(&self, fd: RawFd) -> io::Result<u32> {
        let id = {
            let mut slots = self.slots.borrow_mut();
            let id = take_slot(&mut slots, &mut self.free.borrow_mut());
            // Whatever was recorded on a reused slot is forgotten.
            slots[id as usize] = Slot::default();
            id
        };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: id as u64,
        };
        // SAFETY: both descriptors are open; `ev` outlives the call.
        let rc =
            unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            self.free.borrow_mut().push(id);
            return Err(err);
        }
        Ok(id)
    }

    /// Forget a slot. Its socket is closed right after, which removes it from the epoll
    /// set (no other descriptor refers to it), so no event names the slot again.
    fn release(&self, id: u32) {
        self.slots.borrow_mut()[id as usize] = Slot::default();
        self.free.borrow_mut().push(id);
    }

    /// Collect ready events, waiting up to `timeout` for the first (None: until one comes
    /// or a signal interrupts), and wake their tasks.
    fn dispatch(&self, events: &mut [libc::epoll_event], timeout: Option<Duration>) -> usize {
        let n = self.epoll_wait(events, timeout);
        if n <= 0 {
            return 0; // nothing ready, or interrupted by a signal: look again later
        }
        let mut slots = self.slots.borrow_mut();
        for ev in &events[..n as usize] {
            let Some(slot) = slots.get_mut(ev.u64 as usize) else {
                continue;
            };
            let bits = ev.events as libc::c_int;
            if bits & libc::EPOLLIN != 0 {
                slot.ready |= IN;
            }
            if bits & libc::EPOLLOUT != 0 {
                slot.ready |= OUT;
            }
            if bits & (libc::EPOLLHUP | libc::EPOLLRDHUP | libc::EPOLLERR) != 0 {
                slot.ready |= HUP;
            }
            // The waker stays: the task waits on this socket again after most wake-ups.
            if let Some(w) = &slot.waker {
                w.wake_by_ref();
            }
        }
        n as usize
    }

    fn epoll_wait(&self, events: &mut [libc::epoll_event], timeout: Option<Duration>) -> i32 {
        let (fd, buf, len) = (
            self.epfd.as_raw_fd(),
            events.as_mut_ptr(),
            events.len() as libc::c_int,
        );
        match timeout {
            Some(t) if !t.is_zero() && self.fine_timeouts.get() => {
                let ts = libc::timespec {
                    tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
                    tv_nsec: t.subsec_nanos() as libc::c_long,
                };
                // SAFETY: valid buffer and timespec; no signal mask (the size is ignored).
                let n = unsafe {
                    libc::syscall(
                        libc::SYS_epoll_pwait2,
                        fd,
                        buf,
                        len,
                        &ts,
                        std::ptr::null::<libc::sigset_t>(),
                        0usize,
                    )
                } as i32;
                if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                    self.fine_timeouts.set(false);
                    return self.epoll_wait(events, timeout);
                }
                n
            }
            _ => {
                let ms = match timeout {
                    None => -1,
                    // Round up: waking early would only mean another wait.
                    Some(t) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
                };
                // SAFETY: `buf` is valid for `len` entries.
                unsafe { libc::epoll_wait(fd, buf, len, ms) }
            }
        }
    }

    fn poll_ready(&self, id: u32, want: u8, cx: &mut Context<'_>) -> Poll<()> {
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[id as usize];
        if slot.ready & (want | HUP) != 0 {
            return Poll::Ready(());
        }
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    async fn ready(&self, id: u32, want: u8) {
        poll_fn(|cx| self.poll_ready(id, want, cx)).await
    }

    fn set(&self, id: u32, bits: u8) {
        self.slots.borrow_mut()[id as usize].ready |= bits;
    }

    /// A failed socket call: Ok to try again, or the error. Ok(true) when it would block
    /// (try after the next edge), Ok(false) when it was interrupted (try at once).
    fn retry(&self, id: u32, bit: u8, err: io::Error) -> io::Result<bool> {
        match err.kind() {
            io::ErrorKind::WouldBlock => {
                self.clear(id, bit);
                Ok(true)
            }
            io::ErrorKind::Interrupted => Ok(false),
            _ => Err(err),
        }
    }

    /// The socket said it has nothing more (EAGAIN, or a short read or write): wait for
    /// the next edge. An edge that came in the meantime is still queued in the kernel and
    /// sets the bit again at the next dispatch.
    fn clear(&self, id: u32, bit: u8) {
        self.slots.borrow_mut()[id as usize].ready &= !bit;
    }

    /// Sleep until `at`.
    pub async fn sleep_until(&self, at: Instant) {
        Sleep {
            poller: self,
            at,
            queued: None,
        }
        .await
    }

    /// Sleep until `at` unless `stop` says otherwise first; `stop` is looked at before each
    /// nap of at most `every`. False when stopped.
    pub async fn sleep_unless(
        &self,
        at: Instant,
        every: Duration,
        stop: impl Fn() -> bool,
    ) -> bool {
        loop {
            if stop() {
                return false;
            }
            let now = Instant::now();
            if now >= at {
                return true;
            }
            self.sleep_until(at.min(now + every)).await;
        }
    }

    /// Wake the tasks whose timers are due; how many.
    fn fire(&self, now: Instant) -> usize {
        let mut t = self.timers.borrow_mut();
        let mut woke = 0;
        while let Some(&Reverse((at, slot, generation))) = t.heap.peek() {
            if at > now {
                break;
            }
            t.heap.pop();
            let s = &mut t.slots[slot as usize];
            if s.generation == generation {
                if let Some(w) = s.waker.take() {
                    w.wake();
                    woke += 1;
                }
            }
        }
        woke
    }

    fn next_due(&self) -> Option<Instant> {
        self.timers.borrow().heap.peek().map(|r| r.0 .0)
    }

    /// Yield if the poller has not had a turn for `slice`: for tasks that can run long
    /// without waiting (a fast stream), so that ready sockets and due timers are seen.
    pub async fn yield_if_needed(&self, slice: Duration) {
        if self.last_turn.get().elapsed() >= slice {
            future::yield_now().await;
        }
    }

    /// Run `task` as one of the shard's tasks: its polls are what tells the poller that
    /// the shard is busy (see `drive`). Every task of the shard must be tracked.
    pub async fn tracked<F: Future>(self: Rc<Self>, task: F) -> F::Output {
        let mut task = pin!(task);
        poll_fn(|cx| {
            self.progress.set(self.progress.get() + 1);
            task.as_mut().poll(cx)
        })
        .await
    }
}

/// A timer of the poller; dropping it cancels it.
struct Sleep<'a> {
    poller: &'a Poller,
    at: Instant,
    /// Its slot in `Timers`, once queued.
    queued: Option<u32>,
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let mut t = self.poller.timers.borrow_mut();
        match self.queued {
            Some(slot) => t.slots[slot as usize].waker = Some(cx.waker().clone()),
            None => {
                let Timers { slots, free, heap } = &mut *t;
                // A reused slot keeps its generation (bumped when it was freed), so entries
                // queued with an older one stay dead.
                let slot = take_slot(slots, free);
                let s = &mut slots[slot as usize];
                s.waker = Some(cx.waker().clone());
                heap.push(Reverse((self.at, slot, s.generation)));
                drop(t);
                self.queued = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.queued else {
            return;
        };
        let mut t = self.poller.timers.borrow_mut();
        let s = &mut t.slots[slot as usize];
        s.generation = s.generation.wrapping_add(1);
        s.waker = None;
        t.free.push(slot);
        if t.heap.len() > 64 && t.heap.len() > TIMER_SLACK_FACTOR * t.live() {
            let Timers { heap, slots, .. } = &mut *t;
            heap.retain(|Reverse((_, slot, generation))| {
                slots[*slot as usize].generation == *generation
            });
        }
    }
}

/// The shard's poller task: hand out ready events and due timers, let the woken tasks
/// run, repeat. When a whole turn of the run queue passed without any tracked task
/// running (everything waits on a socket or a timer, and this task is the only one
/// runnable), block until the next event or timer, or `MAX_BLOCK`. It runs until its
/// executor ends.
pub(crate) async fn drive(poller: Rc<Poller>) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; BATCH];
    let mut seen = None;
    loop {
        let now = Instant::now();
        poller.last_turn.set(now);
        let woke = poller.dispatch(&mut events, Some(Duration::ZERO)) + poller.fire(now);
        if woke == 0 && seen == Some(poller.progress.get()) {
            let timeout = poller
                .next_due()
                .map(|at| at.saturating_duration_since(now))
                .map_or(MAX_BLOCK, |t| t.min(MAX_BLOCK));
            poller.dispatch(&mut events, Some(timeout));
            poller.fire(Instant::now());
        }
        seen = Some(poller.progress.get());
        future::yield_now().await;
    }
}

/// sendto(2) or recvfrom(2) (`nr`) on a connected socket, with no address: the syscall
/// itself, not glibc's send or recv, which (cancellation points) switch asynchronous
/// thread cancellation on and off around every call.
///
/// # Safety
/// `buf` must be valid for `len` bytes: readable for sendto, writable for recvfrom.
unsafe fn transfer(
    nr: libc::c_long,
    fd: RawFd,
    buf: *mut u8,
    len: usize,
    flags: libc::c_int,
) -> isize {
    // SAFETY: the caller vouches for `buf`; a null address with length 0 is no address.
    unsafe { libc::syscall(nr, fd, buf, len, flags, 0usize, 0usize) as isize }
}

/// A non-blocking socket in the poller's set, with its slot. It leaves the set when dropped
/// (and is closed right after, with the `sock` field).
struct Registered {
    sock: Socket,
    id: u32,
    poller: Rc<Poller>,
}

impl Registered {
    /// Make `sock` non-blocking and register it, ready for `ready` (IN, OUT) from the start.
    fn new(poller: &Rc<Poller>, sock: Socket, ready: u8) -> io::Result<Registered> {
        sock.set_nonblocking(true)?;
        let id = poller.register(sock.as_raw_fd())?;
        poller.set(id, ready);
        Ok(Registered {
            sock,
            id,
            poller: poller.clone(),
        })
    }

    async fn ready(&self, want: u8) {
        self.poller.ready(self.id, want).await
    }

    fn poll_ready(&self, want: u8, cx: &mut Context<'_>) -> Poll<()> {
        self.poller.poll_ready(self.id, want, cx)
    }

    /// See `Poller::clear`.
    fn clear(&self, bit: u8) {
        self.poller.clear(self.id, bit)
    }

    /// See `Poller::retry`.
    fn retry(&self, bit: u8, err: io::Error) -> io::Result<bool> {
        self.poller.retry(self.id, bit, err)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.poller.release(self.id);
    }
}

/// A non-blocking TCP connection whose waits go through the shard's poller.
pub(crate) struct Stream {
    reg: Registered,
}

impl Stream {
    /// Connect to `addr` within `timeout`, with TCP_NODELAY.
    pub async fn connect(
        poller: &Rc<Poller>,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<Stream> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        let stream = Stream::adopt(poller, sock, 0)?;
        let reg = &stream.reg;
        match reg.sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                let connected = future::or(
                    async {
                        reg.ready(OUT).await;
                        true
                    },
                    async {
                        poller.sleep_until(Instant::now() + timeout).await;
                        false
                    },
                )
                .await;
                if !connected {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                if let Some(e) = reg.sock.take_error()? {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        // Writable from the start, whether or not the connect's edge has been seen yet.
        poller.set(reg.id, OUT);
        Ok(stream)
    }

    /// Give `sock` TCP_NODELAY and register it, ready for `ready` from the start.
    fn adopt(poller: &Rc<Poller>, sock: Socket, ready: u8) -> io::Result<Stream> {
        sock.set_nodelay(true)?;
        Ok(Stream {
            reg: Registered::new(poller, sock, ready)?,
        })
    }

    /// Read what is there, waiting for it if need be. Ok(0) is the end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_recv(cx, buf, 0)).await
    }

    /// Like `read`, but leaves the bytes in the socket.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_recv(cx, buf, libc::MSG_PEEK)).await
    }

    /// Write all of `buf`.
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut sent = 0;
        poll_fn(|cx| {
            while sent < buf.len() {
                sent += ready!(self.poll_send(cx, &buf[sent..]))?;
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    // The two socket calls of every request are poll functions rather than async fns
    // awaiting `Registered::ready`: each nested async fn is a state machine of its own,
    // polled twice per request (once pending, once ready).

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        flags: libc::c_int,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.reg.poll_ready(IN, cx));
            if let Some(r) = self.try_recv(buf, flags) {
                return Poll::Ready(r);
            }
        }
    }

    /// Wait until a read may find something (or the end, or an error). A plain poll_fn,
    /// not an async fn over `Registered::ready`: it is awaited once per response.
    pub fn readable(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| self.reg.poll_ready(IN, cx))
    }

    /// Read what is there without waiting; None when nothing is (the socket waits for its
    /// next edge then: see `readable`).
    pub fn try_read(&self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        self.try_recv(buf, 0)
    }

    fn try_recv(&self, buf: &mut [u8], flags: libc::c_int) -> Option<io::Result<usize>> {
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let n = unsafe {
                transfer(
                    libc::SYS_recvfrom,
                    self.as_raw_fd(),
                    buf.as_mut_ptr(),
                    buf.len(),
                    flags | libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                let n = n as usize;
                if n > 0 && n < buf.len() && flags & libc::MSG_PEEK == 0 {
                    // A short read drained the socket: later data brings a new edge.
                    self.reg.clear(IN);
                }
                return Some(Ok(n));
            }
            match self.reg.retry(IN, io::Error::last_os_error()) {
                Ok(true) => return None,
                Ok(false) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// One sendto of what `buf` holds: how much of it went.
    fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.reg.poll_ready(OUT, cx));
            // SAFETY: `buf` is valid for reads of `buf.len()` bytes; sendto does not write it.
            let n = unsafe {
                transfer(
                    libc::SYS_sendto,
                    self.as_raw_fd(),
                    buf.as_ptr().cast_mut(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n > 0 {
                let n = n as usize;
                if n < buf.len() {
                    // The send buffer is full: space freed later brings a new edge.
                    self.reg.clear(OUT);
                }
                return Poll::Ready(Ok(n));
            }
            self.reg.retry(OUT, io::Error::last_os_error())?;
        }
    }

    /// shutdown(2): with `Write`, the peer reads to the end after what was sent.
    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        self.reg.sock.shutdown(how)
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.reg.sock.as_raw_fd()
    }
}

/// A listening socket whose accepts wait through the poller.
pub(crate) struct Listener {
    reg: Registered,
}

impl Listener {
    /// Take over a bound, listening socket (connections may be queued already).
    pub fn new(poller: &Rc<Poller>, fd: OwnedFd) -> io::Result<Listener> {
        Ok(Listener {
            reg: Registered::new(poller, Socket::from(fd), IN)?,
        })
    }

    /// The next connection, non-blocking and with TCP_NODELAY; a request may already be
    /// waiting on it.
    pub async fn accept(&self) -> io::Result<Stream> {
        loop {
            self.reg.ready(IN).await;
            match self.reg.sock.accept() {
                Ok((sock, _)) => return Stream::adopt(&self.reg.poller, sock, IN | OUT),
                Err(e) => {
                    self.reg.retry(IN, e)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// Run `body` next to `poller`'s task, as a shard does (on any executor: nothing here
    /// needs glommio), for at most 10 s.
    fn run<T>(poller: &Rc<Poller>, body: impl Future<Output = T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        future::block_on(future::or(
            future::or(body, async {
                poller.sleep_until(deadline).await;
                panic!("timed out: a wake-up was lost")
            }),
            async {
                drive(poller.clone()).await;
                unreachable!("the poller task never ends")
            },
        ))
    }

    #[test]
    fn timers_fire_in_order_and_cancelled_ones_do_not_linger() {
        let p = Poller::new().unwrap();
        let t0 = Instant::now();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut late = Box::pin(p.sleep_until(t0 + Duration::from_secs(60)));
        let mut soon = Box::pin(p.sleep_until(t0 + Duration::from_millis(1)));
        assert!(late.as_mut().poll(&mut cx).is_pending());
        assert!(soon.as_mut().poll(&mut cx).is_pending());
        assert_eq!(p.next_due(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(p.fire(t0), 0);
        assert_eq!(p.fire(t0 + Duration::from_millis(2)), 1);
        assert_eq!(p.next_due(), Some(t0 + Duration::from_secs(60)));
        drop(late);
        assert_eq!(
            p.fire(t0 + Duration::from_secs(61)),
            0,
            "a cancelled timer wakes no one"
        );
        drop(soon);
        assert_eq!(p.timers.borrow().live(), 0);
        // Many cancelled timers: the heap is rebuilt instead of growing without bound.
        for i in 0..1000 {
            let mut s = Box::pin(p.sleep_until(t0 + Duration::from_secs(100 + i)));
            assert!(s.as_mut().poll(&mut cx).is_pending());
        }
        assert!(p.timers.borrow().heap.len() <= 64 * TIMER_SLACK_FACTOR);
    }

    #[test]
    fn a_shard_with_nothing_to_do_blocks_until_its_timer() {
        let p = Poller::new().unwrap();
        let start = Instant::now();
        run(&p, p.sleep_until(start + Duration::from_millis(30)));
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn stream_writes_reads_and_sees_the_peer_close() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            // Data and the close arrive together: the close must still be seen.
            s.write_all(b"pong!").unwrap();
        });
        let poller = Poller::new().unwrap();
        let got = run(&poller, async {
            let mut s = Stream::connect(&poller, addr, Duration::from_secs(5))
                .await
                .unwrap();
            s.write_all(b"ping!").await.unwrap();
            let mut buf = vec![0u8; 64];
            let mut got = Vec::new();
            loop {
                match s.read(&mut buf).await.unwrap() {
                    0 => break got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        server.join().unwrap();
        assert_eq!(got, b"pong!");
    }

    #[test]
    fn a_write_larger_than_the_socket_buffers_waits_for_room() {
        // Far more than loopback's send and receive buffers hold: the sends come up short,
        // and write_all must wait for the edge that room brings, then carry on.
        const LEN: usize = 16 << 20;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            let mut got = Vec::with_capacity(LEN);
            s.read_to_end(&mut got).unwrap();
            got
        });
        let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        let poller = Poller::new().unwrap();
        run(&poller, async {
            let mut s = Stream::connect(&poller, addr, Duration::from_secs(5))
                .await
                .unwrap();
            s.write_all(&data).await.unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
        });
        assert!(data == server.join().unwrap());
    }

    #[test]
    fn a_listener_accepts_and_peek_leaves_the_bytes() {
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let poller = Poller::new().unwrap();
        let listener = Listener::new(&poller, OwnedFd::from(std_listener)).unwrap();
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"hello").unwrap();
        });
        let (peeked, read) = run(&poller, async {
            let mut s = listener.accept().await.unwrap();
            let mut one = [0u8; 1];
            s.peek(&mut one).await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            loop {
                match s.read(&mut buf).await.unwrap() {
                    0 => break (one, got),
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        client.join().unwrap();
        assert_eq!(&peeked, b"h");
        assert_eq!(read, b"hello");
    }

    #[test]
    fn a_refused_connect_is_an_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let poller = Poller::new().unwrap();
        let res = run(
            &poller,
            Stream::connect(&poller, addr, Duration::from_secs(5)),
        );
        assert!(res.is_err());
    }
}
