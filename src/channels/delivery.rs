//! Durable, ordered work per conversation: what a channel has accepted (a webhook delivery,
//! a reply to send) is committed to a [`Queue`] of the store first, then handled by a fixed
//! pool of threads. Items of one key (a conversation) are handled strictly one after another,
//! in the order they were queued; different keys proceed in parallel. A pause (a typing
//! delay) or a retry back-off holds up only its own key and never occupies a thread while it
//! waits. Nothing is retried forever: an item that fails for good goes to the dead letters
//! with a log line, and its conversation moves on.

use crate::store::{Batch, Committed, Queue, SeenId, Store, StoreError, Ticket};
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the handler did with an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Finished; the next item of the key may run now.
    Done,
    /// Finished; the next item of the key waits this long (e.g. a typing delay).
    Pause(Duration),
    /// Not finished; try the same item again after this long (the key waits too).
    Retry(Duration),
    /// Nothing to do with it; removed (the handler has logged why).
    Drop,
    /// Finished, and the handler already committed the item's removal (with the turn it
    /// caused), so there is nothing left to write.
    Removed,
    /// Failed for good (the reason): moved to the dead letters, with a log line.
    DeadLetter(String),
}

/// A handler that panics this many times on one item gets the item dead-lettered.
const MAX_PANICS: u32 = 5;

/// One item handed to the handler; `attempt` counts from 1.
pub struct Job<'a> {
    pub queue: Queue,
    pub id: u64,
    pub key: &'a str,
    pub item: &'a Value,
    pub attempt: u32,
}

pub type Handler = dyn Fn(&Job) -> Outcome + Send + Sync;

/// Items added to a [`Batch`] for one delivery, to schedule once the batch is committed.
pub struct Staged {
    queue: Queue,
    entries: Vec<(String, Ticket, Value)>,
}

pub struct Delivery {
    inner: Arc<Inner>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

struct Inner {
    store: Arc<dyn Store>,
    queue: Queue,
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
    /// Schedules what `queue` still holds (work accepted before a restart), and starts
    /// `threads` workers named `name-N`.
    pub fn start(
        store: Arc<dyn Store>,
        queue: Queue,
        threads: usize,
        name: &str,
        handler: Box<Handler>,
    ) -> io::Result<Delivery> {
        let mut state = State::default();
        for item in store.pending(queue)? {
            state.enqueue(
                &item.key,
                Entry {
                    id: item.id,
                    item: item.item,
                    attempts: 0,
                },
            );
        }
        let inner = Arc::new(Inner {
            store,
            queue,
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

    /// The queue this delivery works on.
    pub fn queue(&self) -> Queue {
        self.inner.queue
    }

    /// Commits `items`, in order, for `key`, then schedules them. When this returns `Ok`,
    /// the items survive a crash.
    pub fn push(&self, key: &str, items: Vec<Value>) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        let mut staged = self.staged();
        for item in items {
            self.stage(&mut staged, &mut batch, key, item, None);
        }
        self.commit(batch, staged).map(|_| ())
    }

    /// An empty set of staged items for this delivery.
    pub fn staged(&self) -> Staged {
        Staged {
            queue: self.inner.queue,
            entries: Vec::new(),
        }
    }

    /// Adds `item` for `key` to `batch` (only when `unless_seen` is not remembered yet); once
    /// the batch is committed, [`Delivery::schedule`] hands it to the workers.
    pub fn stage(
        &self,
        staged: &mut Staged,
        batch: &mut Batch,
        key: &str,
        item: Value,
        unless_seen: Option<SeenId>,
    ) {
        let ticket = batch.enqueue(self.inner.queue, key, item.clone(), unless_seen);
        staged.entries.push((key.to_string(), ticket, item));
    }

    /// Schedules the staged items that `committed` queued (not those whose id was seen).
    /// Returns how many.
    pub fn schedule(&self, staged: Staged, committed: &Committed) -> usize {
        debug_assert_eq!(staged.queue, self.inner.queue);
        let mut state = self.inner.lock();
        let mut count = 0;
        for (key, ticket, item) in staged.entries {
            if let Some(id) = committed.id(ticket) {
                state.enqueue(
                    &key,
                    Entry {
                        id,
                        item,
                        attempts: 0,
                    },
                );
                count += 1;
            }
        }
        drop(state);
        if count > 0 {
            self.inner.wake.notify_all();
        }
        count
    }

    /// Commits `batch` (holding what was staged, and anything else that must go with it),
    /// then schedules the staged items it queued; returns how many.
    pub fn commit(&self, batch: Batch, staged: Staged) -> Result<usize, StoreError> {
        let committed = self.inner.store.commit(batch)?;
        Ok(self.schedule(staged, &committed))
    }

    /// Items not finished yet (queued, waiting or being handled).
    pub fn pending(&self) -> usize {
        self.inner.lock().queues.values().map(VecDeque::len).sum()
    }

    /// Stops the workers after the items they are handling; the rest stays queued.
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
            let job = Job {
                queue: self.queue,
                id,
                key: &key,
                item: &item,
                attempt,
            };
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.handler)(&job)))
                    .unwrap_or_else(|_| {
                        log::error!(
                            "a delivery handler panicked on attempt {attempt} (key {key:?})"
                        );
                        if attempt < MAX_PANICS {
                            Outcome::Retry(Duration::from_secs(u64::from(attempt)))
                        } else {
                            Outcome::DeadLetter(format!("its handler panicked {attempt} times"))
                        }
                    });
            self.finish(&job, &outcome);

            state = self.lock();
            state.busy.remove(&key);
            let delay = match outcome {
                Outcome::Done | Outcome::Drop | Outcome::Removed | Outcome::DeadLetter(_) => {
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

    /// Writes what the outcome means for the stored item: removed, or moved to the dead
    /// letters. A failed write leaves the item queued; it is played again at the next start.
    fn finish(&self, job: &Job, outcome: &Outcome) {
        let mut batch = Batch::new();
        match outcome {
            Outcome::Done | Outcome::Pause(_) | Outcome::Drop => {
                batch.dequeue(job.queue, job.id);
            }
            Outcome::DeadLetter(reason) => {
                log::error!(
                    "queue {}: item #{} (conversation {:?}) failed for good: {reason}; moved to the dead letters (see `botd check`), the conversation goes on",
                    job.queue.name(),
                    job.id,
                    job.key
                );
                batch.dead_letter(job.queue, job.id, reason);
            }
            Outcome::Retry(_) | Outcome::Removed => return,
        }
        if let Err(e) = self.store.commit(batch) {
            log::error!(
                "queue {}: cannot remove finished item #{} ({e}); it stays queued and is played again at the next start",
                job.queue.name(),
                job.id
            );
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
    use crate::store::SqliteStore;
    use serde_json::json;

    fn temp(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("botd-delivery-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn open(dir: &std::path::Path) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(dir).unwrap())
    }

    fn wait_empty(delivery: &Delivery, limit: Duration) {
        let start = Instant::now();
        while delivery.pending() > 0 && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn per_key_order_with_pauses_and_retries() {
        let dir = temp("order");
        let store = open(&dir);
        let seen = Arc::new(Mutex::new(Vec::<(String, i64)>::new()));
        let log = seen.clone();
        let delivery = Delivery::start(
            store.clone(),
            Queue::MessengerOut,
            3,
            "t",
            Box::new(move |job| {
                let n = job.item.as_i64().unwrap();
                // Every third item fails once first.
                if n % 3 == 0 && job.attempt == 1 {
                    return Outcome::Retry(Duration::from_millis(5));
                }
                log.lock().unwrap().push((job.key.to_string(), n));
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
        wait_empty(&delivery, Duration::from_secs(10));
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
        assert!(store.pending(Queue::MessengerOut).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unfinished_items_survive_a_restart() {
        let dir = temp("restart");
        {
            let delivery = Delivery::start(
                open(&dir),
                Queue::TelegramOut,
                1,
                "t",
                Box::new(|_| Outcome::Retry(Duration::from_secs(60))),
            )
            .unwrap();
            delivery.push("k", vec![json!(1), json!(2)]).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            delivery.stop();
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let delivery = Delivery::start(
            open(&dir),
            Queue::TelegramOut,
            2,
            "t",
            Box::new(move |job| {
                log.lock().unwrap().push(job.item.clone());
                Outcome::Done
            }),
        )
        .unwrap();
        wait_empty(&delivery, Duration::from_secs(5));
        assert_eq!(*seen.lock().unwrap(), vec![json!(1), json!(2)]);
        drop(delivery);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn failures_for_good_go_to_the_dead_letters_and_the_key_moves_on() {
        let dir = temp("dead");
        let store = open(&dir);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let delivery = Delivery::start(
            store.clone(),
            Queue::MessengerIn,
            1,
            "t",
            Box::new(move |job| match job.item.as_i64() {
                Some(1) => Outcome::DeadLetter("storage refuses it".into()),
                n => {
                    log.lock().unwrap().push(n);
                    Outcome::Done
                }
            }),
        )
        .unwrap();
        delivery.push("k", vec![json!(1), json!(3)]).unwrap();
        wait_empty(&delivery, Duration::from_secs(10));
        delivery.stop();
        assert_eq!(*seen.lock().unwrap(), vec![Some(3)]);
        assert!(store.pending(Queue::MessengerIn).unwrap().is_empty());
        drop(store);
        let report = crate::store::check_database(&dir);
        assert_eq!(
            report
                .lines
                .iter()
                .filter(|l| l.contains("dead letter #"))
                .count(),
            1,
            "{:?}",
            report.lines
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
