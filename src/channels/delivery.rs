//! Durable, ordered work per conversation: what a channel has accepted (a webhook delivery,
//! a reply to send) is written to a [`Spool`] first, then handled by a fixed pool of threads.
//! Items of one key (a conversation) are handled strictly one after another, in the order
//! they were pushed; different keys proceed in parallel. A pause (a typing delay) or a retry
//! back-off holds up only its own key and never occupies a thread while it waits.

use crate::store::Spool;
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the handler did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Finished; the next item of the key may run now.
    Done,
    /// Finished; the next item of the key waits this long (e.g. a typing delay).
    Pause(Duration),
    /// Not finished; try the same item again after this long (the key waits too).
    Retry(Duration),
    /// Failed for good; dropped (the handler has logged why).
    Drop,
}

/// A handler that panics this many times on one item gets the item dropped.
const MAX_PANICS: u32 = 5;

/// Handles one item; `attempt` counts from 1.
pub type Handler = dyn Fn(&str, &Value, u32) -> Outcome + Send + Sync;

pub struct Delivery {
    inner: Arc<Inner>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

struct Inner {
    spool: Spool,
    state: Mutex<State>,
    wake: Condvar,
    handler: Box<Handler>,
    stopping: AtomicBool,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, VecDeque<Entry>>,
    /// Keys whose head item can run now (each key at most once).
    ready: VecDeque<String>,
    /// Keys with an item being handled.
    busy: HashSet<String>,
    /// Keys waiting for a pause or retry to end.
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    waiting: HashSet<String>,
}

struct Entry {
    id: u64,
    item: Value,
    attempts: u32,
}

impl Delivery {
    /// Opens the spool in `dir`, schedules what it still holds (work accepted before a
    /// restart), and starts `threads` workers named `name-N`.
    pub fn start(
        dir: &Path,
        threads: usize,
        name: &str,
        handler: Box<Handler>,
    ) -> io::Result<Delivery> {
        let spool = Spool::open(dir)?;
        let mut state = State::default();
        for (id, record) in spool.pending()? {
            let key = record["key"].as_str().unwrap_or("").to_string();
            state.enqueue(
                &key,
                Entry {
                    id,
                    item: record["item"].clone(),
                    attempts: 0,
                },
            );
        }
        let inner = Arc::new(Inner {
            spool,
            state: Mutex::new(state),
            wake: Condvar::new(),
            handler,
            stopping: AtomicBool::new(false),
        });
        let workers = (0..threads.max(1))
            .map(|i| {
                let inner = inner.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || inner.work())
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Delivery {
            inner,
            workers: Mutex::new(workers),
        })
    }

    /// Makes `items` durable, in order, for `key`, then schedules them. When this returns
    /// `Ok`, the items survive a crash.
    pub fn push(&self, key: &str, items: Vec<Value>) -> io::Result<()> {
        let mut ids = Vec::with_capacity(items.len());
        for item in &items {
            ids.push(self.inner.spool.push(&json!({"key": key, "item": item}))?);
        }
        let mut state = self.inner.lock();
        for (id, item) in ids.into_iter().zip(items) {
            state.enqueue(
                key,
                Entry {
                    id,
                    item,
                    attempts: 0,
                },
            );
        }
        drop(state);
        self.inner.wake.notify_all();
        Ok(())
    }

    /// Items not finished yet (queued, waiting or being handled).
    pub fn pending(&self) -> usize {
        self.inner.lock().queues.values().map(VecDeque::len).sum()
    }

    /// Stops the workers after the items they are handling; the rest stays in the spool.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.wake.notify_all();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.stop();
    }
}

impl State {
    fn enqueue(&mut self, key: &str, entry: Entry) {
        let queue = self.queues.entry(key.to_string()).or_default();
        queue.push_back(entry);
        if queue.len() == 1 && !self.busy.contains(key) && !self.waiting.contains(key) {
            self.ready.push_back(key.to_string());
        }
    }

    /// Moves keys whose timer has run out to `ready`; returns how long until the next timer.
    fn fire_timers(&mut self, now: Instant) -> Option<Duration> {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                return Some(*at - now);
            }
            let Reverse((_, key)) = self.timers.pop().expect("peeked");
            self.waiting.remove(&key);
            if self.queues.get(&key).is_some_and(|q| !q.is_empty()) {
                self.ready.push_back(key);
            }
        }
        None
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn work(&self) {
        let mut state = self.lock();
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let next_timer = state.fire_timers(Instant::now());
            let Some(key) = state.ready.pop_front() else {
                let wait = next_timer.unwrap_or(Duration::from_millis(500));
                state = self
                    .wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            };
            let Some(entry) = state.queues.get_mut(&key).and_then(|q| q.front_mut()) else {
                continue;
            };
            entry.attempts += 1;
            let (id, item, attempt) = (entry.id, entry.item.clone(), entry.attempts);
            state.busy.insert(key.clone());
            drop(state);

            // A panicking handler must not kill this thread nor leave the key busy forever.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (self.handler)(&key, &item, attempt)
            }))
            .unwrap_or_else(|_| {
                log::error!("a delivery handler panicked on attempt {attempt} (key {key:?})");
                if attempt < MAX_PANICS {
                    Outcome::Retry(Duration::from_secs(u64::from(attempt)))
                } else {
                    Outcome::Drop
                }
            });
            if matches!(outcome, Outcome::Done | Outcome::Pause(_) | Outcome::Drop) {
                if let Err(e) = self.spool.remove(id) {
                    log::warn!("cannot remove a finished item from the spool: {e}");
                }
            }

            state = self.lock();
            state.busy.remove(&key);
            let delay = match outcome {
                Outcome::Done | Outcome::Drop => {
                    Self::pop(&mut state, &key);
                    None
                }
                Outcome::Pause(d) => {
                    Self::pop(&mut state, &key);
                    Some(d)
                }
                Outcome::Retry(d) => Some(d),
            };
            let has_more = state.queues.get(&key).is_some_and(|q| !q.is_empty());
            match delay {
                Some(d) if !d.is_zero() => {
                    state.waiting.insert(key.clone());
                    state.timers.push(Reverse((Instant::now() + d, key)));
                    self.wake.notify_one();
                }
                _ if has_more => {
                    state.ready.push_back(key);
                    self.wake.notify_one();
                }
                _ => {}
            }
        }
    }

    fn pop(state: &mut State, key: &str) {
        if let Some(q) = state.queues.get_mut(key) {
            q.pop_front();
            if q.is_empty() {
                state.queues.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("botd-delivery-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn per_key_order_with_pauses_and_retries() {
        let dir = temp("order");
        let seen = Arc::new(Mutex::new(Vec::<(String, i64)>::new()));
        let log = seen.clone();
        let delivery = Delivery::start(
            &dir,
            3,
            "t",
            Box::new(move |key, item, attempt| {
                let n = item.as_i64().unwrap();
                // Every third item fails once first.
                if n % 3 == 0 && attempt == 1 {
                    return Outcome::Retry(Duration::from_millis(5));
                }
                log.lock().unwrap().push((key.to_string(), n));
                if n % 2 == 0 {
                    Outcome::Pause(Duration::from_millis(3))
                } else {
                    Outcome::Done
                }
            }),
        )
        .unwrap();
        for key in ["a", "b", "c", "d"] {
            delivery
                .push(key, (0..20).map(Value::from).collect())
                .unwrap();
        }
        let start = Instant::now();
        while delivery.pending() > 0 && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        delivery.stop();
        let seen = seen.lock().unwrap();
        for key in ["a", "b", "c", "d"] {
            let got: Vec<i64> = seen
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, n)| *n)
                .collect();
            assert_eq!(got, (0..20).collect::<Vec<_>>(), "key {key}");
        }
        assert!(Spool::open(&dir).unwrap().pending().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unfinished_items_survive_a_restart() {
        let dir = temp("restart");
        {
            let delivery = Delivery::start(
                &dir,
                1,
                "t",
                Box::new(|_, _, _| Outcome::Retry(Duration::from_secs(60))),
            )
            .unwrap();
            delivery.push("k", vec![json!(1), json!(2)]).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            delivery.stop();
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let delivery = Delivery::start(
            &dir,
            2,
            "t",
            Box::new(move |_, item, _| {
                log.lock().unwrap().push(item.clone());
                Outcome::Done
            }),
        )
        .unwrap();
        let start = Instant::now();
        while delivery.pending() > 0 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*seen.lock().unwrap(), vec![json!(1), json!(2)]);
        drop(delivery);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
