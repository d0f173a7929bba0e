//! Timers of one thread: a binary heap of deadlines with lazy cancellation. The loop fires
//! the due ones and blocks until the earliest of the rest (`epoll_pwait2` takes it to the
//! nanosecond; the thread's timer slack is set to 1 ns so the kernel does not round it).

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Rebuild the heap when it holds this many times more entries than live timers (cancelled
/// ones are dropped lazily).
const SLACK_FACTOR: usize = 4;

#[derive(Default)]
pub(crate) struct Timers {
    inner: RefCell<Inner>,
}

/// An entry is live while its slot's generation matches the one it was queued with.
#[derive(Default)]
struct Inner {
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    slots: Vec<Slot>,
    free: Vec<u32>,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    waker: Option<Waker>,
}

impl Inner {
    fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

impl Timers {
    /// Wake the tasks whose timers are due; how many.
    pub fn fire(&self, now: Instant) -> usize {
        let mut woken = Vec::new();
        {
            let mut t = self.inner.borrow_mut();
            while let Some(&Reverse((at, slot, generation))) = t.heap.peek() {
                if at > now {
                    break;
                }
                t.heap.pop();
                let s = &mut t.slots[slot as usize];
                if s.generation == generation {
                    woken.extend(s.waker.take());
                }
            }
        }
        // Woken outside the borrow: a waker of another runtime's task runs its schedule here.
        let n = woken.len();
        for w in woken {
            w.wake();
        }
        n
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.inner.borrow().heap.peek().map(|r| r.0 .0)
    }

    /// Every waker still held (the runtime is being torn down).
    pub fn take_wakers(&self) -> Vec<Waker> {
        let mut t = self.inner.borrow_mut();
        t.slots.iter_mut().filter_map(|s| s.waker.take()).collect()
    }

    /// Queue a timer at `at` for `waker`, or renew the waker of the one in `slot`.
    fn arm(&self, slot: Option<u32>, at: Instant, waker: &Waker) -> u32 {
        let mut t = self.inner.borrow_mut();
        if let Some(slot) = slot {
            let s = &mut t.slots[slot as usize];
            match &s.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => s.waker = Some(waker.clone()),
            }
            return slot;
        }
        let Inner { slots, free, heap } = &mut *t;
        // A reused slot keeps its generation (bumped when it was freed), so entries queued
        // with an older one stay dead.
        let slot = free.pop().unwrap_or_else(|| {
            slots.push(Slot::default());
            (slots.len() - 1) as u32
        });
        let s = &mut slots[slot as usize];
        s.waker = Some(waker.clone());
        heap.push(Reverse((at, slot, s.generation)));
        slot
    }

    fn cancel(&self, slot: u32) {
        let mut t = self.inner.borrow_mut();
        let s = &mut t.slots[slot as usize];
        s.generation = s.generation.wrapping_add(1);
        let waker = s.waker.take();
        t.free.push(slot);
        if t.heap.len() > 64 && t.heap.len() > SLACK_FACTOR * t.live() {
            let Inner { heap, slots, .. } = &mut *t;
            heap.retain(|Reverse((_, slot, generation))| {
                slots[*slot as usize].generation == *generation
            });
        }
        drop(t);
        drop(waker);
    }
}

/// Sleep until `at`.
pub fn sleep_until(at: Instant) -> Sleep {
    Sleep { at, queued: None }
}

/// Sleep for `d`.
pub fn sleep(d: Duration) -> Sleep {
    sleep_until(Instant::now() + d)
}

/// A timer of the current thread's runtime; dropping it cancels it.
pub struct Sleep {
    at: Instant,
    /// Its slot in `Timers`, once queued.
    queued: Option<u32>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let at = self.at;
        let queued = self.queued;
        let slot = super::with_core(|c| c.poller.timers.arm(queued, at, cx.waker()));
        self.queued = Some(slot);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        // Outside the runtime (a panic unwinding past it) there is no timer left to cancel.
        if let Some(slot) = self.queued {
            super::if_running(|c| c.poller.timers.cancel(slot));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::Runtime;

    #[test]
    fn timers_fire_in_order_and_cancelled_ones_do_not_linger() {
        let t = Timers::default();
        let t0 = Instant::now();
        let w = Waker::noop();
        let late = t.arm(None, t0 + Duration::from_secs(60), w);
        let _soon = t.arm(None, t0 + Duration::from_millis(1), w);
        assert_eq!(t.next_due(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(t.fire(t0), 0);
        assert_eq!(t.fire(t0 + Duration::from_millis(2)), 1);
        assert_eq!(t.next_due(), Some(t0 + Duration::from_secs(60)));
        t.cancel(late);
        assert_eq!(
            t.fire(t0 + Duration::from_secs(61)),
            0,
            "a cancelled timer wakes no one"
        );
        // Many cancelled timers: the heap is rebuilt instead of growing without bound.
        for i in 0..1000 {
            let s = t.arm(None, t0 + Duration::from_secs(100 + i), w);
            t.cancel(s);
        }
        assert!(t.inner.borrow().heap.len() <= 64 * SLACK_FACTOR);
    }

    #[test]
    fn a_runtime_with_nothing_to_do_blocks_until_its_timer() {
        let start = Instant::now();
        Runtime::new()
            .unwrap()
            .block_on(sleep_until(start + Duration::from_millis(30)));
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn sleeps_never_end_early() {
        // Many short sleeps below epoll_wait's 1 ms resolution: each ends at or after its
        // deadline (how late is not asserted: timing on a shared machine is noisy).
        Runtime::new().unwrap().block_on(async {
            for _ in 0..50 {
                let at = Instant::now() + Duration::from_micros(300);
                sleep_until(at).await;
                assert!(Instant::now() >= at);
            }
        });
    }
}
