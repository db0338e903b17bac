//! Durable, ordered work per conversation: what a channel has accepted (a webhook delivery,
//! a reply to send) is committed to a [`Queue`] of the store first, then handled by a fixed
//! pool of threads. Items of one key (a conversation) are handled strictly one after another,
//! in the order they were queued; different keys proceed in parallel. A pause (a typing
//! delay) or a retry back-off holds up only its own key and never occupies a thread while it
//! waits. Nothing is retried forever: an item that fails for good goes to the dead letters
//! with a log line, and its conversation moves on.
//!
//! **Removals are shared.** The removal of a finished item is not committed by the thread
//! that finished it: a flusher collects the removals of the last [`REMOVAL_WINDOW`] and
//! commits them as one batch (which the store's group commit may merge with other work),
//! without waiting for the disk ([`Durability::Soon`]: the next durable commit, or the store
//! itself within [`SYNC_WITHIN`], makes it durable), so sending a reply costs no fsync of its
//! own. The conversation's next item still waits until the removal of the one before it is
//! committed (the flusher does not wait out its window when one does), so after botd crashes
//! at most the last finished item of a conversation — its API call just made, its removal not
//! yet committed — is handled again; after a power cut, also the items whose removals were
//! committed in the last [`SYNC_WITHIN`], like API calls that were in flight.
//!
//! **Shared stores.** When other instances use the same database ([`Store::shared`]), an
//! item is not handled by whichever instance queued it: a claimer thread asks the store for
//! the conversations this instance holds a lease on ([`Store::claim`], every
//! [`CLAIM_EVERY`], at once when the store says work was queued anywhere, and after each
//! local commit) and schedules their items; a conversation is held by one instance at a time,
//! so its items still run one after another in order. Workers start an item only while the
//! lease has at least [`LEASE_MARGIN`] left (as this instance last renewed it), so an instance
//! cut off from the database stops before another one can take its conversations over; a
//! removal that cannot be committed is tried again rather than forgotten.

use crate::store::{Batch, Committed, Queue, SeenId, Store, StoreError, Ticket};
#[cfg(doc)]
use crate::store::{Durability, SYNC_WITHIN};
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a claimed conversation stays this instance's without a renewal: an instance that
/// dies has its conversations taken over by the others this long after its last renewal.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often the claimer renews its leases and looks for work nobody holds.
pub const CLAIM_EVERY: Duration = Duration::from_secs(1);
/// An item is started only while the lease has this much left.
pub const LEASE_MARGIN: Duration = Duration::from_millis(2500);

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
/// How long a removal may wait for others to share its commit when nothing waits for it.
pub const REMOVAL_WINDOW: Duration = Duration::from_millis(20);

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
    flusher: Mutex<Option<JoinHandle<()>>>,
    claimer: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    store: Arc<dyn Store>,
    queue: Queue,
    state: Mutex<State>,
    /// Wakes the workers (only they wait on it).
    wake: Condvar,
    /// How many workers there are.
    threads: usize,
    /// Wakes the flusher: a removal to commit, a conversation waiting for one, or the stop.
    flush_wake: Condvar,
    handler: Box<Handler>,
    stopping: AtomicBool,
    /// Whether other instances share the store: items come from claims (see the module doc).
    shared: bool,
    /// Wakes the claimer: work was queued, or the stop.
    claim_wake: Condvar,
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
    /// Finished items whose removal is not committed yet (key, id), oldest first, and when
    /// the oldest finished.
    removals: Vec<(String, u64)>,
    oldest_removal: Option<Instant>,
    /// Keys whose last finished item's removal is not committed yet: their next item waits.
    settling: HashSet<String>,
    /// Shared store: the claim pass being run or last run (counts up).
    generation: u64,
    /// Shared store: finished items a claim may still return, with the generation at which
    /// their removal was committed (`None`: not committed yet), so they are not played again.
    finished: HashMap<u64, Option<u64>>,
    /// Shared store: keys lost to another instance while one of their items was running.
    lost: HashSet<String>,
    /// Shared store: until when this instance's leases hold, as of its last renewal.
    lease_until: Option<Instant>,
    /// Shared store: a claim is asked for (work was queued).
    claim_due: bool,
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
        let shared = store.shared();
        let mut state = State {
            claim_due: true,
            ..State::default()
        };
        // A shared store's items come from claims; a private one's are all this instance's.
        let pending = if shared {
            Vec::new()
        } else {
            store.pending(queue)?
        };
        for item in pending {
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
            threads: threads.max(1),
            flush_wake: Condvar::new(),
            handler,
            stopping: AtomicBool::new(false),
            shared,
            claim_wake: Condvar::new(),
        });
        let claimer = if shared {
            let weak = Arc::downgrade(&inner);
            inner.store.watch(
                queue,
                Arc::new(move || {
                    if let Some(inner) = weak.upgrade() {
                        inner.ask_claim();
                    }
                }),
            );
            let inner = inner.clone();
            Some(
                std::thread::Builder::new()
                    .name(format!("{name}-claim"))
                    .spawn(move || inner.claim_loop())?,
            )
        } else {
            None
        };
        let flusher = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(format!("{name}-flush"))
                .spawn(move || inner.flush_removals())?
        };
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
            flusher: Mutex::new(Some(flusher)),
            claimer: Mutex::new(claimer),
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
        if self.inner.shared {
            // Whichever instance holds the conversation plays them: claim at once.
            count = staged
                .entries
                .iter()
                .filter(|(_, ticket, _)| committed.id(*ticket).is_some())
                .count();
            if count > 0 {
                state.claim_due = true;
                self.inner.claim_wake.notify_all();
            }
            return count;
        }
        let ready_before = state.ready.len();
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
        // A new item behind a removal still waiting: the flusher commits it now.
        let awaited = state.removal_awaited();
        let newly_ready = state.ready.len() - ready_before;
        drop(state);
        // One worker per conversation made ready: waking them all would cost every idle
        // worker a context switch per item.
        self.inner.wake_workers(newly_ready);
        if awaited {
            self.inner.flush_wake.notify_one();
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

    /// Stops the workers after the items they are handling and commits the removals still
    /// waiting; the rest stays queued.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.wake.notify_all();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in workers {
            let _ = w.join();
        }
        // Only now: a worker that was finishing an item has handed its removal over.
        self.inner.flush_wake.notify_all();
        let flusher = self
            .flusher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(f) = flusher {
            let _ = f.join();
        }
        self.inner.claim_wake.notify_all();
        let claimer = self
            .claimer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(c) = claimer {
            let _ = c.join();
            // Nothing runs here any more: the others may take these conversations now.
            if let Err(e) = self.inner.store.release(self.inner.queue) {
                log::warn!(
                    "queue {}: cannot give up this instance's conversations ({e}); the others take them when the leases end",
                    self.inner.queue.name()
                );
            }
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
        if queue.len() == 1
            && !self.busy.contains(key)
            && !self.waiting.contains(key)
            && !self.settling.contains(key)
        {
            self.ready.push_back(key.to_string());
        }
    }

    /// Whether a conversation has an item that waits only for a removal to be committed.
    fn removal_awaited(&self) -> bool {
        self.settling
            .iter()
            .any(|k| self.queues.get(k).is_some_and(|q| !q.is_empty()))
    }

    /// Moves keys whose timer has run out to `ready`; returns how long until the next timer.
    fn fire_timers(&mut self, now: Instant) -> Option<Duration> {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                return Some(*at - now);
            }
            let Reverse((_, key)) = self.timers.pop().expect("peeked");
            self.waiting.remove(&key);
            if self.queues.get(&key).is_some_and(|q| !q.is_empty()) && !self.settling.contains(&key)
            {
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
            let leased = state
                .lease_until
                .is_some_and(|until| until > Instant::now() + LEASE_MARGIN);
            if self.shared && !leased {
                // The leases may be running out (no renewal lately): start nothing.
                state = self
                    .wake
                    .wait_timeout(state, Duration::from_millis(200))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            let Some(key) = state.ready.pop_front() else {
                let wait = next_timer.unwrap_or(Duration::from_millis(500));
                state = self
                    .wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            };
            if state.busy.contains(&key) {
                // Listed twice (a shared store dropped the key and claimed it again).
                continue;
            }
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
            if let Outcome::DeadLetter(reason) = &outcome {
                self.dead_letter(&job, reason);
            }

            state = self.lock();
            state.busy.remove(&key);
            if self.shared && !matches!(outcome, Outcome::Retry(_)) {
                let committed = match outcome {
                    Outcome::Removed | Outcome::DeadLetter(_) => Some(state.generation),
                    _ => None,
                };
                state.finished.insert(id, committed);
            }
            let delay = match outcome {
                Outcome::Removed | Outcome::DeadLetter(_) => {
                    Self::pop(&mut state, &key);
                    None
                }
                Outcome::Done | Outcome::Drop | Outcome::Pause(_) => {
                    Self::pop(&mut state, &key);
                    // Handed to the flusher; the key's next item waits for the commit.
                    if state.removals.is_empty() {
                        state.oldest_removal = Some(Instant::now());
                    }
                    state.removals.push((key.clone(), id));
                    state.settling.insert(key.clone());
                    self.flush_wake.notify_one();
                    match outcome {
                        Outcome::Pause(d) => Some(d),
                        _ => None,
                    }
                }
                Outcome::Retry(d) => Some(d),
            };
            if state.lost.remove(&key) {
                // Another instance holds the conversation now: its items are not ours.
                state.queues.remove(&key);
            }
            let has_more = state.queues.get(&key).is_some_and(|q| !q.is_empty());
            let settling = state.settling.contains(&key);
            match delay {
                Some(d) if !d.is_zero() => {
                    state.waiting.insert(key.clone());
                    state.timers.push(Reverse((Instant::now() + d, key)));
                    self.wake.notify_one();
                }
                _ if has_more && !settling => {
                    state.ready.push_back(key);
                    self.wake.notify_one();
                }
                _ => {}
            }
        }
    }

    /// Moves an item that failed for good to the dead letters (at once: this is rare, and the
    /// log line should only say so once it is true). A failed write leaves the item queued;
    /// it is played again at the next start.
    fn dead_letter(&self, job: &Job, reason: &str) {
        log::error!(
            "queue {}: item #{} (conversation {:?}) failed for good: {reason}; moved to the dead letters (see `botd check`), the conversation goes on",
            job.queue.name(),
            job.id,
            job.key
        );
        let mut batch = Batch::new();
        batch.dead_letter(job.queue, job.id, reason);
        if let Err(e) = self.store.commit(batch) {
            log::error!(
                "queue {}: cannot move item #{} to the dead letters ({e}); it stays queued and is played again at the next start",
                job.queue.name(),
                job.id
            );
        }
    }

    /// The flusher: commits the removals of finished items, together, once the oldest has
    /// waited [`REMOVAL_WINDOW`] or as soon as a conversation waits for one; then lets the
    /// conversations that waited go on. After the stop, it commits what is left and ends.
    fn flush_removals(&self) {
        let mut state = self.lock();
        loop {
            let stopping = self.stopping.load(Ordering::SeqCst);
            if state.removals.is_empty() {
                if stopping {
                    return;
                }
                state = self
                    .flush_wake
                    .wait_timeout(state, Duration::from_millis(500))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            let due = state.oldest_removal.unwrap_or_else(Instant::now) + REMOVAL_WINDOW;
            let now = Instant::now();
            if !stopping && now < due && !state.removal_awaited() {
                state = self
                    .flush_wake
                    .wait_timeout(state, due - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            let removals = std::mem::take(&mut state.removals);
            state.oldest_removal = None;
            drop(state);
            let mut batch = Batch::soon();
            for (_, id) in &removals {
                batch.dequeue(self.queue, *id);
            }
            let result = self.store.commit(batch);
            state = self.lock();
            match result {
                Ok(_) if self.shared => {
                    let generation = state.generation;
                    for (_, id) in &removals {
                        state.finished.insert(*id, Some(generation));
                    }
                }
                Ok(_) => {}
                Err(e) if self.shared => {
                    // Tried again: forgotten, the item would be played again by whichever
                    // instance claims the conversation next. Its conversation waits.
                    log::warn!(
                        "queue {}: cannot remove {} finished item(s) ({e}); trying again in a second",
                        self.queue.name(),
                        removals.len()
                    );
                    if state.removals.is_empty() {
                        state.oldest_removal = Some(Instant::now());
                    }
                    let mut again = removals;
                    again.append(&mut state.removals);
                    state.removals = again;
                    if !self.stopping.load(Ordering::SeqCst) {
                        state = self
                            .flush_wake
                            .wait_timeout(state, Duration::from_secs(1))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                        continue;
                    }
                    return;
                }
                Err(e) => {
                    log::error!(
                        "queue {}: cannot remove {} finished item(s) ({e}); they stay queued and are played again at the next start",
                        self.queue.name(),
                        removals.len()
                    );
                }
            }
            let mut woke = 0;
            for (key, _) in removals {
                if !state.settling.remove(&key) {
                    continue;
                }
                let has_more = state.queues.get(&key).is_some_and(|q| !q.is_empty());
                if has_more && !state.busy.contains(&key) && !state.waiting.contains(&key) {
                    state.ready.push_back(key);
                    woke += 1;
                }
            }
            self.wake_workers(woke);
        }
    }

    /// Asks the claimer for a claim now (the store says work was queued somewhere).
    fn ask_claim(&self) {
        self.lock().claim_due = true;
        self.claim_wake.notify_all();
    }

    /// The claimer of a shared store (see the module documentation): renews the leases,
    /// takes free conversations and schedules the items of those held, every
    /// [`CLAIM_EVERY`] or when asked; drops conversations another instance took.
    fn claim_loop(&self) {
        let mut state = self.lock();
        let mut failing = false;
        let mut last = Instant::now() - CLAIM_EVERY;
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let since = last.elapsed();
            if !state.claim_due && since < CLAIM_EVERY {
                state = self
                    .claim_wake
                    .wait_timeout(state, CLAIM_EVERY - since)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            state.claim_due = false;
            state.generation += 1;
            let generation = state.generation;
            let started = Instant::now();
            last = started;
            drop(state);
            let claimed = self.store.claim(self.queue, LEASE);
            state = self.lock();
            let claim = match claimed {
                Ok(claim) => claim,
                Err(e) => {
                    if !failing {
                        log::warn!(
                            "queue {}: cannot claim work ({e}); queued items wait until the database answers",
                            self.queue.name()
                        );
                        failing = true;
                    }
                    continue;
                }
            };
            if failing {
                log::info!("queue {}: claiming work again", self.queue.name());
                failing = false;
            }
            state.lease_until = Some(started + LEASE);
            let held: HashSet<String> = claim.held.into_iter().collect();
            let gone: Vec<String> = state
                .queues
                .keys()
                .filter(|k| !held.contains(*k))
                .cloned()
                .collect();
            for key in gone {
                if state.busy.contains(&key) {
                    state.lost.insert(key);
                } else {
                    state.queues.remove(&key);
                }
            }
            for item in claim.items {
                let known = state.finished.contains_key(&item.id)
                    || state
                        .queues
                        .get(&item.key)
                        .is_some_and(|q| q.iter().any(|e| e.id == item.id));
                if !known && !state.lost.contains(&item.key) {
                    state.enqueue(
                        &item.key,
                        Entry {
                            id: item.id,
                            item: item.item,
                            attempts: 0,
                        },
                    );
                }
            }
            // Removals committed before this claim began cannot be in its answer.
            state
                .finished
                .retain(|_, at| at.is_none_or(|g| g >= generation));
            self.wake.notify_all();
        }
    }

    /// Wakes `count` idle workers (at most all of them).
    fn wake_workers(&self, count: usize) {
        for _ in 0..count.min(self.threads) {
            self.wake.notify_one();
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
