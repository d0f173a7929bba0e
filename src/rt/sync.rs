//! Waiting on something other than a socket or a timer: a semaphore and a cancellation
//! within one thread (no atomics: a thread's tasks never run at once), and a doorbell
//! another thread can ring.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Poll, Waker};

/// Permits shared by one thread's tasks, handed out first come, first served.
pub struct Semaphore {
    permits: Cell<u64>,
    closed: Cell<bool>,
    /// Waiting tasks by ticket, oldest first; a ticket is served once it reaches the front.
    waiters: RefCell<VecDeque<(u64, Waker)>>,
    next_ticket: Cell<u64>,
}

impl Semaphore {
    pub fn new(permits: u64) -> Semaphore {
        Semaphore {
            permits: Cell::new(permits),
            closed: Cell::new(false),
            waiters: RefCell::new(VecDeque::new()),
            next_ticket: Cell::new(0),
        }
    }

    /// Take one permit, waiting for it; false once the semaphore is closed.
    pub async fn acquire(&self) -> bool {
        if self.closed.get() {
            return false;
        }
        // The fast path: nobody is waiting and a permit is free.
        if self.waiters.borrow().is_empty() && self.permits.get() > 0 {
            self.permits.set(self.permits.get() - 1);
            return true;
        }
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        let mut queued = false;
        let mut guard = Abandon {
            sem: self,
            ticket,
            done: false,
        };
        let got = poll_fn(|cx| {
            if self.closed.get() {
                return Poll::Ready(false);
            }
            let front = self.waiters.borrow().front().map(|(t, _)| *t);
            let first = front.is_none_or(|t| t == ticket);
            if first && self.permits.get() > 0 {
                self.permits.set(self.permits.get() - 1);
                return Poll::Ready(true);
            }
            if !queued {
                self.waiters
                    .borrow_mut()
                    .push_back((ticket, cx.waker().clone()));
                queued = true;
            }
            Poll::Pending
        })
        .await;
        guard.done = true;
        self.leave(ticket);
        got
    }

    /// Give `n` permits back, waking the next waiter.
    pub fn release(&self, n: u64) {
        self.permits.set(self.permits.get() + n);
        self.wake_front();
    }

    /// Wake every waiter; from now on `acquire` fails.
    pub fn close(&self) {
        self.closed.set(true);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }

    fn wake_front(&self) {
        if self.permits.get() == 0 {
            return;
        }
        let front = self.waiters.borrow().front().map(|(_, w)| w.clone());
        if let Some(w) = front {
            w.wake();
        }
    }

    /// A waiter is gone (served, or dropped while waiting): take it out of the queue and
    /// let the next one look.
    fn leave(&self, ticket: u64) {
        self.waiters.borrow_mut().retain(|(t, _)| *t != ticket);
        self.wake_front();
    }
}

/// Takes a waiter that was dropped mid-wait out of the queue.
struct Abandon<'a> {
    sem: &'a Semaphore,
    ticket: u64,
    done: bool,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.sem.leave(self.ticket);
        }
    }
}

/// Lets one task's work be cut short by another task of the same thread: `guard` runs a
/// future unless `fire` comes first, and `fire` wakes the guarded task at once.
pub struct Cancel<R: Copy> {
    fired: Cell<Option<R>>,
    waker: RefCell<Option<Waker>>,
}

impl<R: Copy> Default for Cancel<R> {
    fn default() -> Self {
        Cancel {
            fired: Cell::new(None),
            waker: RefCell::new(None),
        }
    }
}

impl<R: Copy> Cancel<R> {
    /// Cut the guarded work short for `why` (the first reason stays until `reset`).
    pub fn fire(&self, why: R) {
        if self.fired.get().is_none() {
            self.fired.set(Some(why));
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    pub fn fired(&self) -> Option<R> {
        self.fired.get()
    }

    pub fn reset(&self) {
        self.fired.set(None);
    }

    /// Run `fut` to its end, or until `fire`: then it is dropped where it waits.
    pub async fn guard<F: Future>(&self, fut: F) -> Result<F::Output, R> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Some(why) = self.fired.get() {
                return Poll::Ready(Err(why));
            }
            {
                let mut w = self.waker.borrow_mut();
                match &*w {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
            }
            fut.as_mut().poll(cx).map(Ok)
        })
        .await
    }
}

/// A doorbell for one waiting task, rung from any thread: `wait` ends once after each
/// ring (rings before the wait count; several rings before it count as one).
#[derive(Default)]
pub struct Doorbell {
    rung: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Doorbell {
    pub fn ring(&self) {
        self.rung.store(true, Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.rung.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            // A ring between the swap and the store found no waker: look again.
            if self.rung.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::{sleep, spawn, Runtime};
    use std::rc::Rc;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn semaphore_serves_in_order_and_close_wakes_everyone() {
        let order = Runtime::new().unwrap().block_on(async {
            let sem = Rc::new(Semaphore::new(1));
            let order = Rc::new(RefCell::new(Vec::new()));
            assert!(sem.acquire().await);
            let tasks: Vec<_> = (0..3)
                .map(|i| {
                    let (sem, order) = (sem.clone(), order.clone());
                    spawn(async move {
                        if sem.acquire().await {
                            order.borrow_mut().push(i);
                            sleep(Duration::from_millis(1)).await;
                            sem.release(1);
                        }
                    })
                })
                .collect();
            sleep(Duration::from_millis(5)).await;
            sem.release(1);
            for t in tasks {
                t.await;
            }
            // A waiter on a closed semaphore gives up.
            assert!(sem.acquire().await);
            let waiter = {
                let sem = sem.clone();
                spawn(async move { sem.acquire().await })
            };
            sleep(Duration::from_millis(1)).await;
            sem.close();
            assert!(!waiter.await);
            order.take()
        });
        assert_eq!(order, vec![0, 1, 2]);
    }

    #[test]
    fn a_dropped_waiter_lets_the_next_one_in() {
        Runtime::new().unwrap().block_on(async {
            let sem = Rc::new(Semaphore::new(0));
            let gives_up = {
                let sem = sem.clone();
                spawn(async move {
                    futures_lite::future::or(async { sem.acquire().await }, async {
                        sleep(Duration::from_millis(2)).await;
                        false
                    })
                    .await
                })
            };
            let waits = {
                let sem = sem.clone();
                spawn(async move { sem.acquire().await })
            };
            assert!(!gives_up.await);
            sem.release(1);
            assert!(waits.await);
        });
    }

    #[test]
    fn a_cancel_cuts_the_guarded_work_short_and_wakes_it() {
        Runtime::new().unwrap().block_on(async {
            let cancel = Rc::new(Cancel::<u8>::default());
            let start = Instant::now();
            let guarded = {
                let cancel = cancel.clone();
                spawn(async move { cancel.guard(sleep(Duration::from_secs(3600))).await })
            };
            sleep(Duration::from_millis(1)).await;
            cancel.fire(7);
            cancel.fire(8);
            assert_eq!(guarded.await, Err(7), "the first reason stays");
            assert!(start.elapsed() < Duration::from_secs(60));
            assert_eq!(cancel.guard(async { 1 }).await, Err(7));
            cancel.reset();
            assert_eq!(cancel.guard(async { 1 }).await, Ok(1));
        });
    }

    #[test]
    fn a_doorbell_rung_from_another_thread_wakes_the_waiter() {
        let bell = Arc::new(Doorbell::default());
        let ringer = {
            let bell = bell.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                bell.ring();
            })
        };
        let start = Instant::now();
        let b = bell.clone();
        Runtime::new()
            .unwrap()
            .block_on(async move { b.wait().await });
        assert!(start.elapsed() >= Duration::from_millis(20));
        ringer.join().unwrap();
        // A ring before the wait is kept.
        bell.ring();
        let b = bell.clone();
        Runtime::new()
            .unwrap()
            .block_on(async move { b.wait().await });
    }
}
