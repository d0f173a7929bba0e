//! One shard: a pinned executor that owns `conns` connections, its statistics and its
//! share of the work, and reports a `Snapshot` every interval.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::{conn, interrupted, ShardSetup};
use crate::rt::{self, sync::Cancel, sync::Semaphore};
use crate::schedule::{Due, Schedule};
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
/// sweeps all deadlines a few times per timeout and cancels the connection's exchange when
/// one has passed (or when the run is interrupted), which wakes it wherever it waits.
#[derive(Default)]
pub(crate) struct Watch {
    pub deadline: Cell<Option<Instant>>,
    pub cancel: Cancel<Abort>,
}

/// A request the shard has allowed a connection to send.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    /// Which pre-rendered request to send.
    pub template: u32,
    /// Open loop: when it should be sent. Latency counts from here, so a request that had
    /// to wait for a free connection or a slow shard is charged for the wait.
    pub intended: Option<Instant>,
}

/// Size of the shard's receive buffer: a socket read takes up to this much.
const RBUF: usize = 64 * 1024;

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
    /// Open loop: this shard's share of the schedule, and its next send time once looked at.
    schedule: Option<RefCell<Schedule>>,
    peeked: Cell<Option<Instant>>,
    /// Open loop: counts the backlog that `miss` drops (made at its first use).
    due: RefCell<Option<Due>>,
    /// `--max-in-flight`: permits for requests in flight on this shard.
    cap: Option<Semaphore>,
    next_template: Cell<u32>,
    /// Interrupted: start nothing new.
    pub stopping: Cell<bool>,
    /// Every connection is done and the last snapshot is sent.
    finished: Cell<bool>,
    /// Responses are read late on purpose (open loop with slack): time them by their
    /// kernel arrival stamps.
    pub stamps: bool,
    /// Index in `setup.addrs` of the address that last accepted a connection.
    pub preferred_addr: Cell<usize>,
    tx: Sender<Snapshot>,
    /// The interval being measured, and when it ends.
    seq: Cell<u64>,
    next_snapshot: Cell<Instant>,
    /// What a connection receives goes here first, one connection at a time (never held
    /// across an await): one buffer that stays in cache instead of one per connection.
    /// A connection keeps only what it could not parse yet (`Conn::buf`).
    pub rbuf: RefCell<Box<[u8]>>,
    /// `https://`: this shard's TLS configuration (its own session cache) and the name the
    /// server's certificate must carry.
    pub tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl Shard {
    /// Next request to send, or None when there is none: this shard's work is done, or
    /// (with `only_due`) the next send time has not come yet.
    ///
    /// Closed loop: a ticket whenever there is work left. Open loop: the next send time of
    /// the schedule, taken in order by whichever connection is free first; the connection
    /// sleeps until that time. Sending stops with the first send time at or past the end.
    pub fn take_ticket(&self, now: Instant, only_due: bool) -> Option<Ticket> {
        if self.stopping.get() || self.budget.get() == Some(0) {
            return None;
        }
        let intended = match &self.schedule {
            None => {
                if self.end.is_some_and(|end| now >= end) {
                    return None;
                }
                None
            }
            Some(schedule) => {
                let at = match self.peeked.get() {
                    Some(at) => at,
                    None => {
                        let at = self.start + schedule.borrow_mut().next()?;
                        self.peeked.set(Some(at));
                        at
                    }
                };
                if self.end.is_some_and(|end| at >= end) || (only_due && at > now) {
                    return None;
                }
                self.peeked.set(None);
                Some(at)
            }
        };
        if let Some(left) = self.budget.get() {
            self.budget.set(Some(left - 1));
        }
        let template = self.next_template.get();
        let next = template + 1;
        let wrapped = next as usize == self.setup.requests.len();
        self.next_template.set(if wrapped { 0 } else { next });
        Some(Ticket { template, intended })
    }

    /// A ticket taken after the end was too late to send: count it as missed, and with it
    /// every other send of the schedule due before `before` (and before the end), which
    /// would be just as late. They are counted, not walked: a backlog can hold rate x
    /// duration sends, and walking it would keep the core busy long after the run.
    pub fn miss(&self, before: Instant) {
        // Besides the ticket itself (taken, so already paid for from the budget).
        let mut more = 0;
        if let (Some(schedule), Some(spec)) = (&self.schedule, &self.setup.rate) {
            let until = self.end.map_or(before, |end| end.min(before));
            if self.peeked.get().is_some_and(|at| at < until) {
                // Drawn already: one of those due before `until`.
                self.peeked.set(None);
                more += 1;
            }
            let mut due = self.due.borrow_mut();
            let due = due.get_or_insert_with(|| spec.due(None));
            let offset = until.saturating_duration_since(self.start);
            more += schedule.borrow_mut().skip_before(offset, due);
        }
        if let Some(left) = self.budget.get() {
            // A count run would never have taken more tickets than it has left.
            more = more.min(left);
            self.budget.set(Some(left - more));
        }
        let len = self.setup.requests.len() as u64;
        let next = (u64::from(self.next_template.get()) + more % len) % len;
        self.next_template.set(next as u32);
        self.counters.borrow_mut().missed += 1 + more;
    }

    /// No schedule: requests go out as fast as responses come back.
    pub fn is_closed_loop(&self) -> bool {
        self.schedule.is_none()
    }

    pub fn has_cap(&self) -> bool {
        self.cap.is_some()
    }

    /// Wait for room under `--max-in-flight`; false if the run stopped meanwhile.
    pub async fn admit(&self) -> bool {
        match &self.cap {
            Some(cap) => cap.acquire().await && !self.stopping.get(),
            None => !self.stopping.get(),
        }
    }

    /// `n` requests are no longer in flight.
    pub fn release(&self, n: u64) {
        if let Some(cap) = &self.cap {
            cap.release(n);
        }
    }

    pub fn request(&self, t: Ticket) -> &[u8] {
        &self.setup.requests[t.template as usize]
    }

    /// Send the snapshot of every interval that ended at or before `now`. The ticker calls
    /// this, and so does every clock reading of a connection (`Conn::clock`), so that an
    /// event at or after a boundary lands in the next interval even when its task runs
    /// before the ticker's.
    #[inline]
    pub fn roll(&self, now: Instant) {
        while now >= self.next_snapshot.get() {
            let boundary = self.next_snapshot.get();
            self.send_snapshot(boundary - self.start, false);
            self.next_snapshot.set(boundary + self.setup.interval);
        }
    }

    fn send_snapshot(&self, at: Duration, last: bool) {
        let mut hists = self.hists.borrow_mut();
        let snap = Snapshot {
            shard: self.setup.id,
            seq: self.seq.get(),
            at,
            last,
            counters: self.counters.borrow().clone(),
            hists: hists.clone(),
        };
        hists.reset();
        let _ = self.tx.send(snap);
        self.seq.set(self.seq.get() + 1);
    }
}

pub(crate) async fn run(setup: ShardSetup, start: Instant, tx: Sender<Snapshot>) {
    let shard = Rc::new(Shard {
        end: setup.run_for.map(|d| start + d),
        counters: RefCell::new(Counters::default()),
        hists: RefCell::new(Hists::new(&setup.metrics)),
        watches: (0..setup.conns).map(|_| Watch::default()).collect(),
        budget: Cell::new(setup.budget),
        schedule: setup
            .rate
            .as_ref()
            .map(|spec| RefCell::new(Schedule::part(spec, setup.part))),
        peeked: Cell::new(None),
        due: RefCell::new(None),
        cap: setup.max_in_flight.map(Semaphore::new),
        next_template: Cell::new(0),
        stopping: Cell::new(false),
        finished: Cell::new(false),
        stamps: setup.slack.is_some_and(|s| !s.is_zero()),
        preferred_addr: Cell::new(0),
        tx,
        seq: Cell::new(0),
        next_snapshot: Cell::new(start + setup.interval),
        rbuf: RefCell::new(vec![0; RBUF].into_boxed_slice()),
        tls: setup.tls.as_ref().map(|t| {
            (
                crate::tls::for_shard(&t.config, t.resume),
                t.server_name.clone(),
            )
        }),
        start,
        setup,
    });
    if let (true, Some(slack)) = (shard.stamps, shard.setup.slack) {
        rt::batch(slack);
    }
    // The ticker is dropped with the runtime once the connections are done.
    rt::spawn(ticker(shard.clone())).detach();
    let tasks: Vec<_> = (0..shard.setup.conns)
        .map(|i| rt::spawn(conn::run(shard.clone(), i)))
        .collect();
    for t in tasks {
        t.await;
    }
    shard.finished.set(true);
    let now = Instant::now();
    shard.roll(now);
    shard.send_snapshot(now - shard.start, true);
}

/// Every few milliseconds: time out overdue requests and notice Ctrl-C. Every interval:
/// send a snapshot. Deadlines are absolute so that intervals do not drift.
async fn ticker(shard: Rc<Shard>) {
    let setup = &shard.setup;
    // A sweep every 1/20 of the timeout keeps timeouts within 5% without a timer per request.
    let tick = (setup.timeout / 20).clamp(Duration::from_millis(1), Duration::from_millis(50));
    let mut next_sweep = shard.start + tick;
    loop {
        let wake = next_sweep.min(shard.next_snapshot.get());
        let now = Instant::now();
        if wake > now {
            rt::sleep_until(wake).await;
        }
        if shard.finished.get() {
            return;
        }
        let now = Instant::now();
        if interrupted() && !shard.stopping.get() {
            shard.stopping.set(true);
            if let Some(cap) = &shard.cap {
                cap.close();
            }
            for w in &shard.watches {
                w.cancel.fire(Abort::Stop);
            }
        }
        if now >= next_sweep {
            for w in &shard.watches {
                if w.deadline.get().is_some_and(|d| now >= d) {
                    w.cancel.fire(Abort::Timeout);
                }
            }
            while next_sweep <= now {
                next_sweep += tick;
            }
        }
        shard.roll(now);
    }
}
