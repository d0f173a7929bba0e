//! One shard: a pinned executor that owns `conns` connections, its statistics and its
//! share of the work, and reports a `Snapshot` every interval.

use std::cell::{Cell, RefCell};
use std::os::unix::io::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use glommio::timer::Timer;

use super::{conn, interrupted, ShardSetup};
use crate::stats::{Counters, Hists, Snapshot};

/// Why the shard cut a connection's request short from the outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Abort {
    /// The oldest request on the connection passed `--timeout`.
    Timeout,
    /// The run was interrupted: what is in flight is cut off.
    Stop,
}

/// What the shard knows about one of its connections, so that it can time it out without
/// a timer per request: the connection writes its deadline here, the shard's ticker
/// sweeps all deadlines a few times per timeout and shuts the socket down when one has
/// passed. The connection's pending read then ends, and it reads `fired` to learn why.
#[derive(Default)]
pub(crate) struct Watch {
    pub fd: Cell<Option<RawFd>>,
    pub deadline: Cell<Option<Instant>>,
    pub fired: Cell<Option<Abort>>,
}

impl Watch {
    fn fire(&self, why: Abort) {
        if self.fired.get().is_none() {
            self.fired.set(Some(why));
            if let Some(fd) = self.fd.get() {
                // SAFETY: the fd belongs to a live stream owned by the connection task on this
                // thread (it clears `fd` before dropping the stream). shutdown(2) wakes its
                // pending read or write without closing the descriptor.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
        }
    }
}

/// A request the shard has allowed a connection to send.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    /// Which pre-rendered request to send.
    pub template: u32,
}

/// The shard's state, shared by its connection tasks and its ticker (one thread: `Rc`).
pub(crate) struct Shard {
    pub setup: ShardSetup,
    pub start: Instant,
    /// When to stop sending, for duration runs.
    pub end: Option<Instant>,
    pub counters: RefCell<Counters>,
    pub hists: RefCell<Hists>,
    pub watches: Vec<Watch>,
    /// Requests this shard may still start, for count runs.
    budget: Cell<Option<u64>>,
    next_template: Cell<u32>,
    /// Interrupted: start nothing new.
    pub stopping: Cell<bool>,
    /// Index in `setup.addrs` of the address that last accepted a connection.
    pub preferred_addr: Cell<usize>,
}

impl Shard {
    /// Next request to send, or None when this shard's work is done.
    pub fn take_ticket(&self, now: Instant) -> Option<Ticket> {
        if self.stopping.get() || self.end.is_some_and(|end| now >= end) {
            return None;
        }
        if let Some(left) = self.budget.get() {
            if left == 0 {
                return None;
            }
            self.budget.set(Some(left - 1));
        }
        let template = self.next_template.get();
        let next = template + 1;
        self.next_template
            .set(if next as usize == self.setup.requests.len() {
                0
            } else {
                next
            });
        self.counters.borrow_mut().sent += 1;
        Some(Ticket { template })
    }

    pub fn request(&self, t: Ticket) -> &[u8] {
        &self.setup.requests[t.template as usize]
    }

    fn snapshot(&self, seq: u64, last: bool) -> Snapshot {
        let mut hists = self.hists.borrow_mut();
        let snap = Snapshot {
            shard: self.setup.id,
            seq,
            at: self.start.elapsed(),
            last,
            counters: self.counters.borrow().clone(),
            hists: hists.clone(),
        };
        hists.reset();
        snap
    }
}

pub(crate) async fn run(setup: ShardSetup, start: Instant, tx: Sender<Snapshot>) {
    let shard = Rc::new(Shard {
        end: setup.run_for.map(|d| start + d),
        counters: RefCell::new(Counters::default()),
        hists: RefCell::new(Hists::new(&setup.metrics)),
        watches: (0..setup.conns).map(|_| Watch::default()).collect(),
        budget: Cell::new(setup.budget),
        next_template: Cell::new(0),
        stopping: Cell::new(false),
        preferred_addr: Cell::new(0),
        start,
        setup,
    });
    let done = Rc::new(Cell::new(false));
    let seq = Rc::new(Cell::new(0u64));
    glommio::spawn_local(ticker(shard.clone(), done.clone(), seq.clone(), tx.clone())).detach();

    let tasks: Vec<_> = (0..shard.setup.conns)
        .map(|i| glommio::spawn_local(conn::run(shard.clone(), i)).detach())
        .collect();
    for t in tasks {
        t.await;
    }
    done.set(true);
    let _ = tx.send(shard.snapshot(seq.get(), true));
}

/// Every few milliseconds: time out overdue requests and notice Ctrl-C. Every interval:
/// send a snapshot. Deadlines are absolute so that intervals do not drift.
async fn ticker(shard: Rc<Shard>, done: Rc<Cell<bool>>, seq: Rc<Cell<u64>>, tx: Sender<Snapshot>) {
    let setup = &shard.setup;
    // A sweep every 1/20 of the timeout keeps timeouts within 5% without a timer per request.
    let tick = (setup.timeout / 20).clamp(Duration::from_millis(1), Duration::from_millis(50));
    let mut next_snapshot = shard.start + setup.interval;
    let mut next_sweep = shard.start + tick;
    let mut timer = Timer::new(Duration::ZERO);
    loop {
        let wake = next_sweep.min(next_snapshot);
        let now = Instant::now();
        if wake > now {
            timer.reset(wake - now);
            (&mut timer).await;
        }
        if done.get() {
            return;
        }
        let now = Instant::now();
        if interrupted() && !shard.stopping.get() {
            shard.stopping.set(true);
            for w in &shard.watches {
                w.fire(Abort::Stop);
            }
        }
        if now >= next_sweep {
            for w in &shard.watches {
                if w.deadline.get().is_some_and(|d| now >= d) {
                    w.fire(Abort::Timeout);
                }
            }
            while next_sweep <= now {
                next_sweep += tick;
            }
        }
        if now >= next_snapshot {
            let _ = tx.send(shard.snapshot(seq.get(), false));
            seq.set(seq.get() + 1);
            next_snapshot += setup.interval;
        }
    }
}
