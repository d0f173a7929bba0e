//! The floor of a closed-loop HTTP/1.1 client's CPU per request, for PERFORMANCE.md: the
//! least a client can do per request (one send, one receive, an httparse of the head), with
//! no executor, no timing and no statistics, in two ways of waiting for sockets:
//!
//! * `epoll`: one edge-triggered epoll set, `recvfrom` until a short read, `sendto` the next
//!   request at once (blast's socket path without its runtime or statistics);
//! * `uring`: one io_uring ring (single issuer, deferred task work, so no interrupts), a
//!   multishot receive per connection into a provided-buffer ring, sends batched into one
//!   `io_uring_enter` per turn.
//!
//! ```sh
//! cargo build --release --example floor
//! taskset -c 0 /usr/bin/time -f '%e %U %S' target/release/examples/floor epoll 100 4 127.0.0.1:18081
//! ```
//!
//! It prints the responses it counted; divide user + sys time by them (or by the requests
//! the server counted). Run it against a loopback server only; it stops after SECS.

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types, IoUring};

const USAGE: &str = "usage: floor epoll|uring CONNS SECS HOST:PORT";

/// Parse the complete responses at the front of `buf`, drop them, and count them.
fn consume(buf: &mut Vec<u8>) -> Result<usize, String> {
    let (mut n, mut pos) = (0, 0);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(&buf[pos..]).map_err(|e| e.to_string())? {
            httparse::Status::Complete(head) => head,
            httparse::Status::Partial => break,
        };
        let body: usize = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
            .ok_or("a response without a Content-Length")?;
        if buf.len() - pos < head + body {
            break;
        }
        pos += head + body;
        n += 1;
    }
    buf.drain(..pos);
    Ok(n)
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn fd(&self) -> i32 {
        self.stream.as_raw_fd()
    }
}

fn connect(addr: &str, conns: usize) -> Result<Vec<Conn>, String> {
    (0..conns)
        .map(|_| {
            let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            Ok(Conn {
                stream,
                buf: Vec::with_capacity(4096),
            })
        })
        .collect()
}

fn request(addr: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: floor\r\nAccept: */*\r\n\r\n")
        .into_bytes()
}

fn send(fd: i32, req: &[u8]) -> Result<(), String> {
    // SAFETY: `req` is valid for reads of its length; no address is passed.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            req.as_ptr(),
            req.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            0usize,
            0usize,
        )
    };
    if n as usize == req.len() {
        Ok(())
    } else {
        Err(format!("short or failed send: {n}"))
    }
}

fn run_epoll(addr: &str, conns: usize, run_for: Duration) -> Result<u64, String> {
    let mut cs = connect(addr, conns)?;
    let req = request(addr);
    // SAFETY: plain syscall.
    let ep = unsafe { libc::epoll_create1(0) };
    for (i, c) in cs.iter_mut().enumerate() {
        c.stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: i as u64,
        };
        // SAFETY: both descriptors are open; `ev` outlives the call.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, c.fd(), &mut ev) } < 0 {
            return Err("epoll_ctl failed".into());
        }
        c.stream.write_all(&req).map_err(|e| e.to_string())?;
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut chunk = vec![0u8; 16 * 1024];
    let end = Instant::now() + run_for;
    let mut done = 0;
    while Instant::now() < end {
        // SAFETY: `events` is valid for 256 entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 256, 100) };
        for ev in &events[..n.max(0) as usize] {
            let c = &mut cs[ev.u64 as usize];
            loop {
                // SAFETY: `chunk` is valid for writes of its length; no address is asked for.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_recvfrom,
                        c.fd(),
                        chunk.as_mut_ptr(),
                        chunk.len(),
                        libc::MSG_DONTWAIT,
                        0usize,
                        0usize,
                    )
                };
                if r == 0 {
                    return Err("the server closed a connection".into());
                }
                if r < 0 {
                    break; // EAGAIN: wait for the next edge
                }
                c.buf.extend_from_slice(&chunk[..r as usize]);
                for _ in 0..consume(&mut c.buf)? {
                    done += 1;
                    send(c.fd(), &req)?;
                }
                if (r as usize) < chunk.len() {
                    break;
                }
            }
        }
    }
    Ok(done)
}

const BUFS: u16 = 1024;
const BUF_LEN: usize = 4096;
const GROUP: u16 = 7;
const RECV: u64 = 0;
const SEND: u64 = 1;

/// A provided-buffer ring (io_uring_setup_buf_ring(3)): `BUFS` entries of 16 bytes, the
/// ring's tail overlaid on the first entry's last two bytes.
struct BufRing {
    ring: *mut u8,
    bufs: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new() -> Result<BufRing, String> {
        // SAFETY: an anonymous private mapping; page-aligned as the kernel requires.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BUFS as usize * 16,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err("mmap failed".into());
        }
        let mut r = BufRing {
            ring: ring.cast(),
            bufs: vec![0; BUFS as usize * BUF_LEN],
            tail: 0,
        };
        for bid in 0..BUFS {
            r.give_back(bid);
        }
        r.publish();
        Ok(r)
    }

    fn give_back(&mut self, bid: u16) {
        // SAFETY: the entry lies inside the mapping; the kernel reads it only after `publish`.
        unsafe {
            let e = self.ring.add((self.tail & (BUFS - 1)) as usize * 16);
            let addr = self.bufs.as_mut_ptr().add(bid as usize * BUF_LEN);
            (e as *mut u64).write(addr as u64);
            (e.add(8) as *mut u32).write(BUF_LEN as u32);
            (e.add(12) as *mut u16).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field is at offset 14 of the mapping and 2-byte aligned.
        let tail = unsafe { &*(self.ring.add(14) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    fn data(&self, bid: u16, len: usize) -> &[u8] {
        &self.bufs[bid as usize * BUF_LEN..][..len]
    }
}

fn run_uring(addr: &str, conns: usize, run_for: Duration) -> Result<u64, String> {
    let mut cs = connect(addr, conns)?;
    let req = request(addr);
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .build(4096)
        .map_err(|e| format!("io_uring: {e}"))?;
    let mut bufs = BufRing::new()?;
    // SAFETY: the ring memory stays mapped for the ring's life (the process's).
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.ring as u64, BUFS, GROUP, 0)
            .map_err(|e| format!("register_buf_ring: {e}"))?
    };
    let recv = |fd: i32, i: usize| {
        opcode::RecvMulti::new(types::Fd(fd), GROUP)
            .build()
            .user_data((i as u64) << 1 | RECV)
    };
    let send = |fd: i32, i: usize| {
        opcode::Send::new(types::Fd(fd), req.as_ptr(), req.len() as u32)
            .build()
            .user_data((i as u64) << 1 | SEND)
    };
    let (mut rearm, mut resend): (Vec<usize>, Vec<usize>) =
        ((0..conns).collect(), (0..conns).collect());
    let mut cqes = Vec::with_capacity(4096);
    let end = Instant::now() + run_for;
    let mut done = 0;
    while Instant::now() < end {
        {
            let mut sq = ring.submission();
            let entries = rearm.drain(..).map(|i| recv(cs[i].fd(), i));
            let entries = entries.chain(resend.drain(..).map(|i| send(cs[i].fd(), i)));
            for entry in entries {
                // SAFETY: what the entries point to (the request, the buffer ring) lives as
                // long as the ring.
                unsafe { sq.push(&entry).map_err(|_| "submission queue full")? };
            }
        }
        ring.submit_and_wait(1)
            .map_err(|e| format!("io_uring_enter: {e}"))?;
        cqes.clear();
        cqes.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(ud, res, flags) in &cqes {
            let i = (ud >> 1) as usize;
            if ud & 1 == SEND {
                if res as usize != req.len() {
                    return Err(format!("short or failed send: {res}"));
                }
                continue;
            }
            if res == -libc::ENOBUFS {
                rearm.push(i);
                continue;
            }
            if res <= 0 {
                return Err(format!("receive ended: {res}"));
            }
            if let Some(bid) = cqueue::buffer_select(flags) {
                cs[i].buf.extend_from_slice(bufs.data(bid, res as usize));
                bufs.give_back(bid);
            }
            for _ in 0..consume(&mut cs[i].buf)? {
                done += 1;
                resend.push(i);
            }
            if !cqueue::more(flags) {
                rearm.push(i);
            }
        }
        bufs.publish();
    }
    Ok(done)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [mode, conns, secs, addr] => conns
            .parse::<usize>()
            .ok()
            .zip(secs.parse::<u64>().ok())
            .map(|(c, s)| (mode.as_str(), c, Duration::from_secs(s), addr.as_str())),
        _ => None,
    };
    let Some((mode, conns, run_for, addr)) = parsed else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let done = match mode {
        "epoll" => run_epoll(addr, conns, run_for),
        "uring" => run_uring(addr, conns, run_for),
        _ => Err(USAGE.to_string()),
    };
    match done {
        Ok(n) => {
            println!("{mode}: {n} responses");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::FAILURE
        }
    }
}
