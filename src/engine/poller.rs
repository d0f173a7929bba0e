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
//! `epoll_wait` and wakes the connections they belong to, and only when nothing is ready
//! does it hand the epoll descriptor itself to glommio to wait on, which lets the
//! executor park and run its timers as before.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::{future, AsyncRead};
use glommio::timer::Timer;
use socket2::{Domain, Protocol, Socket, Type};

/// Readiness bits of a slot. `HUP` (hang-up, error, peer shut down) is sticky: it
/// satisfies every wait, because the syscall then reports what happened.
const IN: u8 = 1;
const OUT: u8 = 2;
const HUP: u8 = 4;

/// Events collected per `epoll_wait`.
const BATCH: usize = 256;

/// If glommio cannot watch the epoll descriptor (no descriptor left to duplicate), look
/// again after this long instead of spinning.
const FALLBACK_NAP: Duration = Duration::from_millis(1);

#[derive(Default)]
struct Slot {
    ready: u8,
    /// The connection task waiting on this socket (one at a time: it reads or writes).
    waker: Option<Waker>,
}

pub(crate) struct Poller {
    epfd: OwnedFd,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
}

impl Poller {
    pub fn new() -> io::Result<Rc<Poller>> {
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Rc::new(Poller {
            // SAFETY: `fd` is a fresh descriptor nothing else owns.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
        }))
    }

    fn register(&self, fd: RawFd) -> io::Result<u32> {
        let id = match self.free.borrow_mut().pop() {
            Some(id) => id,
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(Slot::default());
                (slots.len() - 1) as u32
            }
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

    /// Collect the events that are ready now, without blocking, and wake their tasks.
    fn dispatch(&self, events: &mut [libc::epoll_event]) -> usize {
        // SAFETY: `events` is a valid buffer of `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                0,
            )
        };
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
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        }
        n as usize
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

    /// The socket said it has nothing more (EAGAIN, or a short read or write): wait for
    /// the next edge. An edge that came in the meantime is still queued in the kernel and
    /// sets the bit again at the next dispatch.
    fn clear(&self, id: u32, bit: u8) {
        self.slots.borrow_mut()[id as usize].ready &= !bit;
    }

    /// Wait until the epoll descriptor is readable, through glommio (so the executor can
    /// park and its timers run). glommio 0.9 has no public way to wait for an arbitrary
    /// descriptor, but a stream built from one arms an io_uring poll on it at once, and
    /// its first read waits for that poll (a later read would fail: it is not a socket).
    /// A duplicate descriptor per wait keeps the epoll instance itself owned here.
    async fn idle(&self) {
        // SAFETY: plain syscall on an open descriptor.
        let dup = unsafe { libc::fcntl(self.epfd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            Timer::new(FALLBACK_NAP).await;
            return;
        }
        // SAFETY: `dup` is a fresh descriptor; the stream owns and closes it.
        let mut bell = unsafe { glommio::net::UnixStream::from_raw_fd(dup) };
        let mut armed = false;
        poll_fn(|cx| {
            if armed {
                // Woken: the epoll instance has events (or glommio woke us spuriously,
                // which costs one empty dispatch).
                return Poll::Ready(());
            }
            armed = true;
            let mut byte = [0u8; 1];
            match Pin::new(&mut bell).poll_read(cx, &mut byte) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(_) => Poll::Ready(()),
            }
        })
        .await;
    }
}

/// The shard's poller task: hand out ready events, let the woken connections run, repeat;
/// when nothing is ready, wait on the epoll descriptor. It runs until its executor ends.
pub(crate) async fn drive(poller: Rc<Poller>) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; BATCH];
    loop {
        if poller.dispatch(&mut events) > 0 {
            future::yield_now().await;
        } else {
            poller.idle().await;
        }
    }
}

/// A non-blocking TCP connection whose waits go through the shard's poller.
pub(crate) struct Stream {
    sock: Socket,
    id: u32,
    poller: Rc<Poller>,
}

impl Stream {
    /// Connect to `addr` within `timeout`, with TCP_NODELAY.
    pub async fn connect(
        poller: &Rc<Poller>,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<Stream> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        let id = poller.register(sock.as_raw_fd())?;
        let stream = Stream {
            sock,
            id,
            poller: poller.clone(),
        };
        match stream.sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                let connected = future::or(
                    async {
                        stream.poller.ready(stream.id, OUT).await;
                        true
                    },
                    async {
                        Timer::new(timeout).await;
                        false
                    },
                )
                .await;
                if !connected {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                if let Some(e) = stream.sock.take_error()? {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        // Writable from the start, whether or not the connect's edge has been seen yet.
        stream.poller.set(stream.id, OUT);
        Ok(stream)
    }

    /// Read what is there, waiting for it if need be. Ok(0) is the end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.poller.ready(self.id, IN).await;
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let n = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                let n = n as usize;
                if n > 0 && n < buf.len() {
                    // A short read drained the socket: later data brings a new edge.
                    self.poller.clear(self.id, IN);
                }
                return Ok(n);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => self.poller.clear(self.id, IN),
                io::ErrorKind::Interrupted => {}
                _ => return Err(err),
            }
        }
    }

    /// Write all of `buf`.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            self.poller.ready(self.id, OUT).await;
            // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
            let n = unsafe {
                libc::send(
                    self.sock.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            if n > 0 {
                let n = n as usize;
                if n < buf.len() {
                    // The send buffer is full: space freed later brings a new edge.
                    self.poller.clear(self.id, OUT);
                }
                buf = &buf[n..];
                continue;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => self.poller.clear(self.id, OUT),
                io::ErrorKind::Interrupted => {}
                _ => return Err(err),
            }
        }
        Ok(())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // The socket (a field) is closed right after this.
        self.poller.release(self.id);
    }
}
