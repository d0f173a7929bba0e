//! Counters shared by all cores, and the server-wide `--parallel` admission queue.
//!
//! Every counter has exactly one writer (its core), so updates are a relaxed load plus a
//! relaxed store rather than a locked read-modify-write; `/metrics` sums all cores.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};

use crate::llm::Api;
use crate::rt::sync::Doorbell;

/// Routes get a fixed label set so `/metrics` cardinality stays bounded whatever the
/// clients send: every unknown path is counted as `other`, every model id as one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Root,
    /// vLLM's health check (guidellm probes it).
    Health,
    Version,
    Tags,
    /// Ollama's loaded models.
    Ps,
    Show,
    /// A generation API, served at its `Api::default_path`.
    Gen(Api),
    Embed,
    /// Ollama's older single-prompt embeddings.
    Embeddings,
    OaModels,
    /// `/v1/models/{id}`: one model.
    OaModel,
    OaEmbeddings,
    Metrics,
    Other,
}

/// Llama Stack's older OpenAI paths put this before `/v1/...`.
const OA_ALIAS: &str = "/v1/openai";
const OA_MODEL: &str = "/v1/models/";

impl Route {
    /// Every route, in `index` order (the order of the `/metrics` lines).
    pub(crate) const ALL: [Route; 17] = [
        Route::Root,
        Route::Health,
        Route::Version,
        Route::Tags,
        Route::Ps,
        Route::Show,
        Route::Gen(Api::OllamaGenerate),
        Route::Gen(Api::OllamaChat),
        Route::Gen(Api::OpenaiChat),
        Route::Gen(Api::OpenaiCompletions),
        Route::Embed,
        Route::Embeddings,
        Route::OaModels,
        Route::OaModel,
        Route::OaEmbeddings,
        Route::Metrics,
        Route::Other,
    ];

    /// The route of a path (without its query), and the path with the OpenAI alias prefix
    /// removed (for `OaModel`'s id).
    pub(crate) fn from_path(path: &str) -> (Route, &str) {
        let path = match path.strip_prefix(OA_ALIAS) {
            Some(p) if p.starts_with("/v1/") => p,
            _ => path,
        };
        if path.len() > OA_MODEL.len() && path.starts_with(OA_MODEL) {
            return (Route::OaModel, path);
        }
        // Every route but `OaModel` and `Other` is served at its label.
        let route = Route::ALL
            .into_iter()
            .find(|&r| r != Route::Other && r != Route::OaModel && r.label() == path)
            .unwrap_or(Route::Other);
        (route, path)
    }

    /// The model id of an `OaModel` path returned by `from_path`.
    pub(crate) fn model_id(path: &str) -> &str {
        path.strip_prefix(OA_MODEL).unwrap_or("")
    }

    /// Whether errors take OpenAI's shape (`{"error":{"message",...}}`).
    pub(crate) fn is_openai(self) -> bool {
        match self {
            Route::Gen(api) => !api.is_ollama(),
            Route::OaModels | Route::OaModel | Route::OaEmbeddings => true,
            _ => false,
        }
    }

    /// The `path` label in `/metrics`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Route::Root => "/",
            Route::Health => "/health",
            Route::Version => "/api/version",
            Route::Tags => "/api/tags",
            Route::Ps => "/api/ps",
            Route::Show => "/api/show",
            Route::Gen(api) => api.default_path(),
            Route::Embed => "/api/embed",
            Route::Embeddings => "/api/embeddings",
            Route::OaModels => "/v1/models",
            Route::OaModel => "/v1/models/{id}",
            Route::OaEmbeddings => "/v1/embeddings",
            Route::Metrics => "/metrics",
            Route::Other => "other",
        }
    }

    fn index(self) -> usize {
        match self {
            Route::Root => 0,
            Route::Health => 1,
            Route::Version => 2,
            Route::Tags => 3,
            Route::Ps => 4,
            Route::Show => 5,
            // `Api::ALL` order.
            Route::Gen(api) => 6 + api as usize,
            Route::Embed => 10,
            Route::Embeddings => 11,
            Route::OaModels => 12,
            Route::OaModel => 13,
            Route::OaEmbeddings => 14,
            Route::Metrics => 15,
            Route::Other => 16,
        }
    }
}

/// Every status the mock can answer with (100 Continue is not counted).
pub(crate) const STATUSES: [u16; 8] = [200, 400, 404, 405, 413, 431, 500, 503];

fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|&s| s == status)
        .expect("status missing from STATUSES")
}

/// One core's counters, on its own cache lines so cores never share a line they write.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct CoreStats {
    requests: [[AtomicU64; STATUSES.len()]; Route::ALL.len()],
    tokens: AtomicU64,
    in_flight: AtomicU64,
    waiting: AtomicU64,
}

fn add(a: &AtomicU64, d: u64) {
    a.store(a.load(Relaxed).wrapping_add(d), Relaxed);
}

fn sub(a: &AtomicU64, d: u64) {
    a.store(a.load(Relaxed).wrapping_sub(d), Relaxed);
}

impl CoreStats {
    pub(crate) fn count(&self, route: Route, status: u16) {
        add(&self.requests[route.index()][status_index(status)], 1);
    }
    pub(crate) fn add_tokens(&self, n: u64) {
        add(&self.tokens, n);
    }
    pub(crate) fn gauge_in_flight(&self, up: bool) {
        if up {
            add(&self.in_flight, 1)
        } else {
            sub(&self.in_flight, 1)
        }
    }
    pub(crate) fn gauge_waiting(&self, up: bool) {
        if up {
            add(&self.waiting, 1)
        } else {
            sub(&self.waiting, 1)
        }
    }
}

/// Sums over all cores, for `/metrics`.
pub(crate) struct Totals {
    pub requests: Vec<(Route, u16, u64)>,
    pub tokens: u64,
    pub in_flight: u64,
    pub waiting: u64,
}

pub(crate) fn totals(cores: &[CoreStats]) -> Totals {
    let mut requests = Vec::new();
    for route in Route::ALL {
        let r = route.index();
        for (s, &status) in STATUSES.iter().enumerate() {
            let n: u64 = cores.iter().map(|c| c.requests[r][s].load(Relaxed)).sum();
            if n > 0 {
                requests.push((route, status, n));
            }
        }
    }
    let sum = |f: fn(&CoreStats) -> &AtomicU64| cores.iter().map(|c| f(c).load(Relaxed)).sum();
    Totals {
        requests,
        tokens: sum(|c| &c.tokens),
        in_flight: sum(|c| &c.in_flight),
        waiting: sum(|c| &c.waiting),
    }
}

/// State shared by every core.
pub(crate) struct Shared {
    pub stop: AtomicBool,
    pub cores: Box<[CoreStats]>,
    pub admission: Option<Admission>,
    /// One per core: rung to stop it, and when a `--parallel` slot is released elsewhere.
    pub bells: Box<[Doorbell]>,
}

impl Shared {
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// Ask every core to stop.
    pub(crate) fn stop_all(&self) {
        self.stop.store(true, Relaxed);
        self.ring_all();
    }

    pub(crate) fn ring_all(&self) {
        for bell in &self.bells {
            bell.ring();
        }
    }

    pub(crate) fn new(ncores: usize, admission: Option<Admission>) -> Shared {
        Shared {
            stop: AtomicBool::new(false),
            cores: (0..ncores).map(|_| CoreStats::default()).collect(),
            bells: (0..ncores).map(|_| Doorbell::default()).collect(),
            admission,
        }
    }
}

/// Server-wide FIFO for `--parallel`, without locks: every admitted request takes a ticket
/// (`tickets` counts them) and every finished one bumps `released`. Ticket `t` may generate
/// once `t < released + parallel`, so slots go out in ticket order across all cores.
pub(crate) struct Admission {
    parallel: u64,
    /// Tickets that may be outstanding (generating or waiting) before answering 503.
    capacity: Option<u64>,
    tickets: AtomicU64,
    released: AtomicU64,
}

impl Admission {
    pub(crate) fn new(parallel: u32, max_queue: Option<u32>) -> Admission {
        Admission {
            parallel: parallel as u64,
            capacity: max_queue.map(|q| parallel as u64 + q as u64),
            tickets: AtomicU64::new(0),
            released: AtomicU64::new(0),
        }
    }

    /// A ticket, or None when the queue is full (503). Whoever gets a ticket must call
    /// `release` exactly once, or every later ticket waits forever.
    pub(crate) fn try_enter(&self) -> Option<u64> {
        let mut t = self.tickets.load(Relaxed);
        loop {
            if let Some(cap) = self.capacity {
                let outstanding = t.saturating_sub(self.released.load(Relaxed));
                if outstanding >= cap {
                    return None;
                }
            }
            match self
                .tickets
                .compare_exchange_weak(t, t + 1, Relaxed, Relaxed)
            {
                Ok(_) => return Some(t),
                Err(now) => t = now,
            }
        }
    }

    pub(crate) fn may_run(&self, ticket: u64) -> bool {
        ticket < self.released.load(Relaxed) + self.parallel
    }

    pub(crate) fn release(&self) {
        self.released.fetch_add(1, Relaxed);
    }
}

/// A core's waiting tickets. A release on any core rings every core's doorbell, and each
/// core then wakes its waiters whose turn has come.
///
/// A ticket whose client went away stays here as `None` until its turn, and is released
/// then: releasing it early would let a later ticket run beside the ones before it.
#[derive(Default)]
pub(crate) struct Waiters {
    pub map: RefCell<BTreeMap<u64, Option<Waker>>>,
}

impl Waiters {
    /// Wakes every waiter that may now run (all of them when stopping), and releases the
    /// abandoned tickets whose turn has come (telling the other cores).
    pub(crate) fn wake_ready(&self, shared: &Shared, stopping: bool) {
        let Some(adm) = &shared.admission else {
            return;
        };
        let mut ready = Vec::new();
        let mut released = false;
        {
            let mut map = self.map.borrow_mut();
            // may_run reads `released` afresh, so releasing an abandoned ticket lets the
            // loop go on to the next one.
            while let Some(entry) = map.first_entry() {
                if !(stopping || adm.may_run(*entry.key())) {
                    break;
                }
                match entry.remove() {
                    Some(w) => ready.push(w),
                    None => {
                        adm.release();
                        released = true;
                    }
                }
            }
        }
        if released {
            shared.ring_all();
        }
        for w in ready {
            w.wake();
        }
    }
}

/// A `--parallel` ticket. Awaiting it waits for its turn; dropping it gives the slot back
/// (waking this core's next waiter), or leaves the unserved ticket to be released in its
/// turn, however the request ends.
pub(crate) struct Ticket<'a> {
    shared: &'a Shared,
    adm: &'a Admission,
    /// The waiters of the core serving the request.
    waiters: &'a Waiters,
    ticket: u64,
    admitted: bool,
}

impl<'a> Ticket<'a> {
    /// A place in the queue, or None when it is full (503).
    pub(crate) fn take(
        shared: &'a Shared,
        adm: &'a Admission,
        waiters: &'a Waiters,
    ) -> Option<Ticket<'a>> {
        let ticket = adm.try_enter()?;
        Some(Ticket {
            shared,
            adm,
            waiters,
            ticket,
            admitted: false,
        })
    }

    /// Whether the ticket may generate now, without waiting.
    pub(crate) fn admit_now(&mut self) -> bool {
        self.admitted = self.admitted || self.adm.may_run(self.ticket);
        self.admitted
    }
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "mock server stopping")
}

impl Future for Ticket<'_> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.shared.stopping() {
            return Poll::Ready(Err(stopped()));
        }
        if self.admit_now() {
            self.waiters.map.borrow_mut().remove(&self.ticket);
            return Poll::Ready(Ok(()));
        }
        self.waiters
            .map
            .borrow_mut()
            .insert(self.ticket, Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let (shared, waiters) = (self.shared, self.waiters);
        if self.admitted {
            self.adm.release();
            // This core's waiters at once, the other cores' through their doorbells.
            waiters.wake_ready(shared, false);
            shared.ring_all();
            return;
        }
        waiters.map.borrow_mut().insert(self.ticket, None);
        waiters.wake_ready(shared, shared.stopping());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_index_label_and_path() {
        for (i, r) in Route::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let route = |p| Route::from_path(p).0;
        for api in Api::ALL {
            assert_eq!(route(api.default_path()), Route::Gen(api));
        }
        for r in Route::ALL {
            if r != Route::OaModel && r != Route::Other {
                assert_eq!(route(r.label()), r);
            }
        }
        assert_eq!(route("/"), Route::Root);
        assert_eq!(route("other"), Route::Other);
        assert_eq!(route("/api/generate/"), Route::Other);
        // Llama Stack's aliases of the OpenAI paths.
        assert_eq!(
            route("/v1/openai/v1/chat/completions"),
            Route::Gen(Api::OpenaiChat)
        );
        assert_eq!(route("/v1/openai/v1/embeddings"), Route::OaEmbeddings);
        assert_eq!(route("/v1/openai/api/tags"), Route::Other);
        let (r, p) = Route::from_path("/v1/openai/v1/models/llama3.2:latest");
        assert_eq!((r, Route::model_id(p)), (Route::OaModel, "llama3.2:latest"));
        assert_eq!(route("/v1/models/"), Route::Other);
    }

    #[test]
    fn admission_is_fifo_and_bounded() {
        let a = Admission::new(2, Some(1));
        let t0 = a.try_enter().unwrap();
        let t1 = a.try_enter().unwrap();
        let t2 = a.try_enter().unwrap();
        assert!(a.try_enter().is_none(), "2 running + 1 waiting is full");
        assert!(a.may_run(t0) && a.may_run(t1) && !a.may_run(t2));
        a.release();
        assert!(a.may_run(t2));
        let t3 = a.try_enter().unwrap();
        assert!(!a.may_run(t3));
    }

    #[test]
    fn totals_sum_cores() {
        let cores: Vec<CoreStats> = (0..3).map(|_| CoreStats::default()).collect();
        let gen = Route::Gen(Api::OllamaGenerate);
        cores[0].count(gen, 200);
        cores[2].count(gen, 200);
        cores[1].count(Route::Other, 404);
        cores[1].add_tokens(5);
        cores[2].gauge_in_flight(true);
        let t = totals(&cores);
        assert_eq!(t.tokens, 5);
        assert_eq!(t.in_flight, 1);
        assert!(t.requests.contains(&(gen, 200, 2)));
        assert!(t.requests.contains(&(Route::Other, 404, 1)));
    }
}
