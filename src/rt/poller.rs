//! Socket readiness for one thread through one edge-triggered epoll instance.
//!
//! Each socket is registered once (edge-triggered, no `epoll_ctl` per request) with a slot
//! that records what the kernel last said (readable, writable, hung up) and which task
//! waits on it. A socket call that would block clears the bit and the task waits for the
//! next edge. The runtime's loop collects events here, as the one place it blocks, with
//! the deadline of its earliest timer as the timeout.
//!
//! The same epoll set holds the runtime's eventfd, so a wake-up from another thread ends
//! the wait too.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use futures_lite::future;
use socket2::{Domain, Protocol, Socket, Type};

use super::timer::{self, Timers};

/// Readiness bits of a slot. `HUP` (hang-up, error, peer shut down) is sticky: it
/// satisfies every wait, because the syscall then reports what happened.
const IN: u8 = 1;
const OUT: u8 = 2;
const HUP: u8 = 4;

/// The epoll token of the runtime's eventfd (socket slots are u32).
const REMOTE: u64 = u64::MAX;

#[derive(Default)]
struct Slot {
    ready: u8,
    /// The task that last waited on this socket (one at a time: it reads or writes). It is
    /// kept after a wake-up, so a task waiting elsewhere meanwhile may be woken spuriously.
    waker: Option<Waker>,
}

pub(crate) struct Poller {
    epfd: OwnedFd,
    /// An epoll set with only the eventfd in it: a sleep that sockets do not end.
    quiet: OwnedFd,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    pub timers: Timers,
    /// `epoll_pwait2` (Linux 5.11) works; otherwise block with millisecond timeouts.
    fine_timeouts: Cell<bool>,
}

/// What one `dispatch` saw.
pub(crate) struct Woke {
    /// Another thread queued tasks (the eventfd fired).
    pub remote: bool,
    /// The call may have blocked: the clock has moved.
    pub waited: bool,
    /// Socket events collected.
    pub events: usize,
}

/// Write the eventfd: the thread blocked on its epoll set wakes up.
pub(crate) fn ring(efd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd. It cannot fail short of the
    // counter overflowing, which `drain` prevents.
    unsafe { libc::write(efd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Reset the eventfd's counter (non-blocking: nothing to read is fine).
pub(crate) fn drain(efd: &OwnedFd) {
    let mut n: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64.
    unsafe { libc::read(efd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Poller {
    /// A new epoll set with an eventfd in it (and a quiet set with only the eventfd); the
    /// eventfd is returned for the remote queue.
    pub fn new() -> io::Result<(Rc<Poller>, OwnedFd)> {
        // SAFETY: plain syscalls; each descriptor is owned at once.
        let epfd =
            unsafe { OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        let efd = unsafe {
            OwnedFd::from_raw_fd(check(libc::eventfd(
                0,
                libc::EFD_CLOEXEC | libc::EFD_NONBLOCK,
            ))?)
        };
        let quiet =
            unsafe { OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        for set in [&epfd, &quiet] {
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                u64: REMOTE,
            };
            // SAFETY: both descriptors are open; `ev` outlives the call.
            check(unsafe {
                libc::epoll_ctl(
                    set.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    efd.as_raw_fd(),
                    &mut ev,
                )
            })?;
        }
        // Timers of this thread fire when due, not up to 50 us later (the default slack).
        // SAFETY: plain prctl on the calling thread.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        let poller = Poller {
            epfd,
            quiet,
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            timers: Timers::default(),
            fine_timeouts: Cell::new(true),
        };
        Ok((Rc::new(poller), efd))
    }

    /// Add a socket: no readiness until its first event.
    fn register(&self, fd: RawFd) -> io::Result<u32> {
        let id = {
            let mut slots = self.slots.borrow_mut();
            let id = self.free.borrow_mut().pop().unwrap_or_else(|| {
                slots.push(Slot::default());
                (slots.len() - 1) as u32
            });
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
        let old = std::mem::take(&mut self.slots.borrow_mut()[id as usize]);
        self.free.borrow_mut().push(id);
        drop(old);
    }

    /// Collect ready events, waiting up to `timeout` for the first (None: until one comes),
    /// and wake their tasks.
    pub fn dispatch(&self, events: &mut [libc::epoll_event], timeout: Option<Duration>) -> Woke {
        let waited = timeout != Some(Duration::ZERO);
        let mut woke = Woke {
            remote: false,
            waited,
            events: 0,
        };
        let n = self.epoll_wait(self.epfd.as_raw_fd(), events, timeout);
        if n <= 0 {
            return woke; // nothing ready, or interrupted by a signal: the loop looks again
        }
        let mut slots = self.slots.borrow_mut();
        for ev in &events[..n as usize] {
            if ev.u64 == REMOTE {
                woke.remote = true;
                continue;
            }
            let Some(slot) = slots.get_mut(ev.u64 as usize) else {
                continue;
            };
            woke.events += 1;
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
            // Waking a task of this thread only queues it, so the borrow is safe to hold.
            if let Some(w) = &slot.waker {
                w.wake_by_ref();
            }
        }
        woke
    }

    /// Sleep for `d`, or until another thread wakes this one; sockets do not end it (their
    /// events wait in the main set).
    pub fn nap(&self, d: Duration) {
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }];
        self.epoll_wait(self.quiet.as_raw_fd(), &mut ev, Some(d));
    }

    fn epoll_wait(
        &self,
        fd: RawFd,
        events: &mut [libc::epoll_event],
        timeout: Option<Duration>,
    ) -> i32 {
        let (buf, len) = (events.as_mut_ptr(), events.len() as libc::c_int);
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
                    return self.epoll_wait(fd, events, timeout);
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

    /// Every waker the sockets hold (the runtime is being torn down), timers' included.
    pub fn take_wakers(&self) -> Vec<Waker> {
        let mut wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(|s| s.waker.take())
            .collect();
        wakers.extend(self.timers.take_wakers());
        wakers
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

    fn hung_up(&self, id: u32) -> bool {
        self.slots.borrow()[id as usize].ready & HUP != 0
    }

    fn has(&self, id: u32, bit: u8) -> bool {
        self.slots.borrow()[id as usize].ready & bit != 0
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
}

/// Sends never wait (the poller does), and a closed peer is an error, not SIGPIPE.
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

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

/// recvmsg(2) into `buf`, with room for the arrival stamp, which is written to `arrived`
/// when the kernel sent one. The syscall itself, for the reason given at `transfer`.
fn recv_stamped(
    fd: RawFd,
    buf: &mut [u8],
    flags: libc::c_int,
    arrived: &mut Option<SystemTime>,
) -> isize {
    // Aligned for cmsghdr; room for one timespec message and then some.
    let mut ctl = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&ctl);
    // SAFETY: `msg` points at `iov` (valid for `buf`) and `ctl`, all live for the call.
    let n = unsafe { libc::syscall(libc::SYS_recvmsg, fd, &mut msg, flags) as isize };
    if n > 0 {
        // SAFETY: the kernel filled `msg_controllen` bytes of `ctl` with well-formed
        // control messages; the CMSG macros stay within them.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    *arrived = Some(
                        SystemTime::UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32),
                    );
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
    }
    n
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
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Stream> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        let stream = Stream::adopt(&super::poller(), sock, 0)?;
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
                        timer::sleep(timeout).await;
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
        reg.poller.set(reg.id, OUT);
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
            if let Some(r) = self.try_recv(buf, flags, None) {
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
        self.try_recv(buf, 0, None)
    }

    /// Have the kernel stamp each received segment with its arrival time (SO_TIMESTAMPNS),
    /// for `try_read_stamped`.
    pub fn stamp_arrivals(&self) -> io::Result<()> {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads an int from a live local.
        check(unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        })
        .map(drop)
    }

    /// `try_read`, and when the last of the bytes read arrived (wall clock), if the kernel
    /// said (see `stamp_arrivals`).
    pub fn try_read_stamped(
        &self,
        buf: &mut [u8],
        arrived: &mut Option<SystemTime>,
    ) -> Option<io::Result<usize>> {
        self.try_recv(buf, 0, Some(arrived))
    }

    fn try_recv(
        &self,
        buf: &mut [u8],
        flags: libc::c_int,
        mut arrived: Option<&mut Option<SystemTime>>,
    ) -> Option<io::Result<usize>> {
        loop {
            let flags = flags | libc::MSG_DONTWAIT;
            let n = match arrived.as_deref_mut() {
                None => {
                    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
                    unsafe {
                        transfer(
                            libc::SYS_recvfrom,
                            self.as_raw_fd(),
                            buf.as_mut_ptr(),
                            buf.len(),
                            flags,
                        )
                    }
                }
                Some(arrived) => recv_stamped(self.as_raw_fd(), buf, flags, arrived),
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

    /// One sendto of what `buf` holds: how much of it went, once the socket has room.
    fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.reg.poll_ready(OUT, cx));
            if let Some(sent) = self.try_write(buf) {
                return Poll::Ready(sent);
            }
        }
    }

    /// Wait until a write may go (or fail). For callers that drive their own writes
    /// (`try_write`), such as a TLS connection flushing its records.
    pub fn writable(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| self.reg.poll_ready(OUT, cx))
    }

    /// One send of `buf` without waiting; None when the socket has no room (it waits for
    /// its next edge then: see `writable`).
    pub fn try_write(&self, buf: &[u8]) -> Option<io::Result<usize>> {
        self.try_send(buf.len(), || {
            // SAFETY: `buf` is valid for reads of `buf.len()` bytes; sendto does not write it.
            unsafe {
                transfer(
                    libc::SYS_sendto,
                    self.as_raw_fd(),
                    buf.as_ptr().cast_mut(),
                    buf.len(),
                    SEND_FLAGS,
                )
            }
        })
    }

    /// `try_write` of several buffers in one sendmsg(2): records that go together (a TLS
    /// Finished and the first request) leave in one segment, not one each.
    pub fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> Option<io::Result<usize>> {
        let bufs = &bufs[..bufs.len().min(libc::UIO_MAXIOV as usize)];
        let len = bufs.iter().map(|b| b.len()).sum();
        self.try_send(len, || {
            // SAFETY: an all-zero msghdr is valid (no name, no control).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            // IoSlice is ABI-compatible with iovec; sendmsg only reads through it.
            msg.msg_iov = bufs.as_ptr().cast_mut().cast();
            msg.msg_iovlen = bufs.len() as _;
            // SAFETY: `msg` points at `bufs`, live and readable for the call.
            unsafe { libc::syscall(libc::SYS_sendmsg, self.as_raw_fd(), &msg, SEND_FLAGS) as isize }
        })
    }

    /// A send (`send`, `len` bytes asked) without waiting, with what its result says about
    /// the socket's room.
    fn try_send(&self, len: usize, send: impl Fn() -> isize) -> Option<io::Result<usize>> {
        loop {
            let n = send();
            if n == 0 && len > 0 {
                return Some(Err(io::ErrorKind::WriteZero.into()));
            }
            if n >= 0 {
                let n = n as usize;
                if n < len {
                    // The send buffer is full: space freed later brings a new edge.
                    self.reg.clear(OUT);
                }
                return Some(Ok(n));
            }
            match self.reg.retry(OUT, io::Error::last_os_error()) {
                Ok(true) => return None,
                Ok(false) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The kernel has said that the peer closed or reset the connection (an event this
    /// thread already collected: no syscall). A read would find the end or the error.
    pub fn peer_closed(&self) -> bool {
        self.reg.poller.hung_up(self.reg.id)
    }

    /// The kernel may have bytes to read: it said so since the last read that drained the
    /// socket (no syscall; a stream from `connect` starts without). A read tells for sure.
    pub fn may_have_input(&self) -> bool {
        self.reg.poller.has(self.reg.id, IN)
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
    pub fn new(sock: Socket) -> io::Result<Listener> {
        Ok(Listener {
            reg: Registered::new(&super::poller(), sock, IN)?,
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

    /// Run `body` on a runtime for at most 10 s.
    fn run<T: 'static>(body: impl Future<Output = T> + 'static) -> T {
        crate::rt::Runtime::new().unwrap().block_on(async {
            future::or(body, async {
                timer::sleep(Duration::from_secs(10)).await;
                panic!("timed out: a wake-up was lost")
            })
            .await
        })
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
        let got = run(async move {
            let mut s = Stream::connect(addr, Duration::from_secs(5)).await.unwrap();
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
    fn a_vectored_write_sends_the_buffers_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        let sent = run(async move {
            let s = Stream::connect(addr, Duration::from_secs(5)).await.unwrap();
            let bufs = [b"one,".as_slice(), b"", b"two,", b"three"].map(io::IoSlice::new);
            s.writable().await;
            let sent = s.try_write_vectored(&bufs).unwrap().unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            sent
        });
        assert_eq!(sent, 13);
        assert_eq!(server.join().unwrap(), b"one,two,three");
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
        let sent = data.clone();
        run(async move {
            let mut s = Stream::connect(addr, Duration::from_secs(5)).await.unwrap();
            s.write_all(&sent).await.unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
        });
        assert!(data == server.join().unwrap());
    }

    #[test]
    fn a_listener_accepts_and_peek_leaves_the_bytes() {
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"hello").unwrap();
        });
        let (peeked, read) = run(async move {
            let listener = Listener::new(Socket::from(OwnedFd::from(std_listener))).unwrap();
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
    fn a_stamped_read_says_when_the_bytes_arrived() {
        // The kernel turns stamping on from a work queue when the first socket in the system
        // asks (net_enable_timestamp), so the first segments may come unstamped: ask again,
        // one round trip at a time, until a stamp comes.
        const ROUNDS: usize = 50;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // Answer each byte only once the client stamps arrivals (bytes that came before
            // are not); a closed connection ends the rounds.
            let mut b = [0u8; 1];
            while s.read_exact(&mut b).is_ok() {
                s.write_all(b"now").unwrap();
            }
        });
        let (n, age, rounds) = run(async move {
            let mut s = Stream::connect(addr, Duration::from_secs(5)).await.unwrap();
            s.stamp_arrivals().unwrap();
            for round in 1..=ROUNDS {
                s.write_all(b"?").await.unwrap();
                let mut buf = [0u8; 16];
                let mut got = 0;
                let mut arrived = None;
                while got < 3 {
                    s.readable().await;
                    // Read well after the bytes came: the stamp is their arrival, not the read.
                    std::thread::sleep(Duration::from_millis(30));
                    if let Some(n) = s.try_read_stamped(&mut buf[got..], &mut arrived) {
                        got += n.unwrap();
                    }
                }
                if let Some(at) = arrived {
                    return (got, SystemTime::now().duration_since(at), round);
                }
            }
            panic!("no arrival stamp in {ROUNDS} round trips")
        });
        server.join().unwrap();
        assert_eq!(n, 3);
        eprintln!("stamped on round {rounds}");
        // A wall clock stepped back meanwhile (a VM's time sync) leaves nothing to judge.
        match age {
            Ok(age) => assert!(age >= Duration::from_millis(25), "stamp {age:?} old"),
            Err(e) => eprintln!("the wall clock went back {:?}", e.duration()),
        }
    }

    #[test]
    fn a_refused_connect_is_an_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let res = run(Stream::connect(addr, Duration::from_secs(5)));
        assert!(res.is_err());
    }
}
