//! Group commit: batches that are ready at the same time share one durable commit, so the
//! fsyncs per turn fall as load rises while a lone turn still commits at once.
//!
//! There is no writer thread: the first committer that finds no commit running becomes the
//! leader, takes every batch queued so far (its own among them) and commits them together;
//! the others wait only for that commit, then find their own result. While a leader waits
//! for its fsync, new batches queue up and the next leader takes them all. A conversation
//! therefore never waits for another one except for the commit they share, and an idle
//! machine pays no hand-over to another thread.
//!
//! Each waiter sleeps on its own condition, so a finished commit wakes only the callers whose
//! batches it held, and the first one still queued to lead the next: with one condition for
//! all, every commit would wake every waiting thread (32 of them under 16 Messenger users)
//! only for most to find their batch still queued and sleep again.
//!
//! Whatever runs a group must give each batch its own result: one batch that fails (a
//! constraint, a trigger) must not fail the others of its group.

use super::{Batch, Committed, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// At most this many batches in one commit, so one commit's latency stays bounded.
pub const MAX_GROUP: usize = 256;

/// The queue of batches waiting for a commit and the results not collected yet.
#[derive(Default)]
pub struct GroupCommit {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_seq: u64,
    queue: Vec<Queued>,
    leading: bool,
    results: HashMap<u64, Result<Committed, StoreError>>,
}

/// A batch waiting for a commit, and the condition its caller sleeps on.
struct Queued {
    seq: u64,
    batch: Batch,
    wake: Arc<Condvar>,
}

/// What [`GroupCommit::commit`] gives back: the batch's result, and whether this caller led
/// a group (then it may do the housekeeping that follows a commit, like a checkpoint).
pub struct Outcome {
    pub result: Result<Committed, StoreError>,
    pub led: bool,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `batch`, and waits until a leader (perhaps this caller) has committed it.
    /// `run` commits a group, oldest batch first, and returns one result per batch in the
    /// same order; it is called by the leader only, never by two callers at once.
    pub fn commit(
        &self,
        batch: Batch,
        run: &mut dyn FnMut(Vec<Batch>) -> Vec<Result<Committed, StoreError>>,
    ) -> Outcome {
        let wake = Arc::new(Condvar::new());
        let mut state = self.lock();
        let seq = state.next_seq;
        state.next_seq += 1;
        state.queue.push(Queued {
            seq,
            batch,
            wake: wake.clone(),
        });
        let mut led = false;
        loop {
            if let Some(result) = state.results.remove(&seq) {
                return Outcome { result, led };
            }
            if state.leading {
                state = wake.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            state.leading = true;
            led = true;
            let take = state.queue.len().min(MAX_GROUP);
            let group: Vec<Queued> = state.queue.drain(..take).collect();
            drop(state);
            let mut seqs = Vec::with_capacity(group.len());
            let mut wakes = Vec::with_capacity(group.len());
            let mut batches = Vec::with_capacity(group.len());
            for queued in group {
                seqs.push(queued.seq);
                wakes.push(queued.wake);
                batches.push(queued.batch);
            }
            let count = batches.len();
            // A runner that panics must not leave its followers waiting forever.
            let mut results =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(batches)))
                    .unwrap_or_default();
            results.resize_with(count, || {
                Err(StoreError::transient("the commit did not finish (a panic)"))
            });
            state = self.lock();
            for (seq, result) in seqs.into_iter().zip(results) {
                state.results.insert(seq, result);
            }
            state.leading = false;
            for other in wakes.iter().filter(|w| !Arc::ptr_eq(w, &wake)) {
                other.notify_one();
            }
            // The oldest batch still queued: its caller leads the next commit.
            if let Some(next) = state.queue.first() {
                next.wake.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn concurrent_batches_share_commits_and_keep_their_own_results() {
        let group = Arc::new(GroupCommit::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (group, runs, running) = (group.clone(), runs.clone(), running.clone());
                std::thread::spawn(move || {
                    let mut results = Vec::new();
                    for round in 0..20 {
                        let mut batch = Batch::new();
                        // The batch's "id" travels in a key, so each result can be checked.
                        batch.delete(super::super::Namespace::Kv, "bot1", &format!("{i}/{round}"));
                        let outcome = group.commit(batch, &mut |batches| {
                            assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0);
                            runs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(1));
                            running.fetch_sub(1, Ordering::SeqCst);
                            batches
                                .iter()
                                .map(|b| match &b.ops[0] {
                                    super::super::Op::Delete { key, .. } if key.ends_with("/7") => {
                                        Err(StoreError::permanent(key.clone()))
                                    }
                                    super::super::Op::Delete { key, .. } => {
                                        Ok(Committed::new(vec![Some(key.len() as u64)]))
                                    }
                                    _ => unreachable!("only deletes are queued"),
                                })
                                .collect()
                        });
                        results.push((format!("{i}/{round}"), outcome.result));
                    }
                    results
                })
            })
            .collect();
        let mut total = 0;
        for t in threads {
            for (key, result) in t.join().unwrap() {
                total += 1;
                if key.ends_with("/7") {
                    assert_eq!(result.unwrap_err().message, key);
                } else {
                    assert_eq!(
                        result.unwrap(),
                        Committed::new(vec![Some(key.len() as u64)])
                    );
                }
            }
        }
        assert_eq!(total, 16 * 20);
        // 320 batches, and each run sleeps 1 ms while 15 other threads queue: shared commits.
        assert!(runs.load(Ordering::SeqCst) < total, "{runs:?}");
    }

    /// More callers than one group holds: the first commit is held until all of them have
    /// queued, so the rest must be split into groups of at most [`MAX_GROUP`], each led by
    /// the oldest caller left over, and every caller must get its own result.
    #[test]
    fn callers_beyond_one_group_are_handed_the_next_commit() {
        const CALLERS: usize = MAX_GROUP + 44;
        let group = Arc::new(GroupCommit::default());
        let arrived = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let (done, results) = std::sync::mpsc::channel();
        for i in 0..CALLERS {
            let (group, arrived, sizes, done) =
                (group.clone(), arrived.clone(), sizes.clone(), done.clone());
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut batch = Batch::new();
                    batch.delete(super::super::Namespace::Kv, "bot1", &i.to_string());
                    arrived.fetch_add(1, Ordering::SeqCst);
                    let outcome = group.commit(batch, &mut |batches| {
                        let first = sizes.lock().unwrap().is_empty();
                        if first {
                            // Hold the first commit until every caller is queued (bounded).
                            for _ in 0..500 {
                                if arrived.load(Ordering::SeqCst) == CALLERS {
                                    break;
                                }
                                std::thread::sleep(std::time::Duration::from_millis(2));
                            }
                            std::thread::sleep(std::time::Duration::from_millis(50));
                        }
                        sizes.lock().unwrap().push(batches.len());
                        batches
                            .iter()
                            .map(|b| match &b.ops[0] {
                                super::super::Op::Delete { key, .. } => {
                                    Ok(Committed::new(vec![Some(key.parse().unwrap())]))
                                }
                                _ => unreachable!("only deletes are queued"),
                            })
                            .collect()
                    });
                    let _ = done.send((i, outcome.result));
                })
                .unwrap();
        }
        drop(done);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut answered = vec![false; CALLERS];
        for _ in 0..CALLERS {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let (i, result) = results
                .recv_timeout(left)
                .expect("every caller gets an answer within 30 s");
            assert_eq!(result.unwrap(), Committed::new(vec![Some(i as u64)]));
            assert!(!answered[i], "caller {i} answered twice");
            answered[i] = true;
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), CALLERS, "{sizes:?}");
        assert!(sizes.iter().all(|&n| n <= MAX_GROUP), "{sizes:?}");
        // All but the first were queued behind the held commit: one full group among them.
        assert!(sizes.contains(&MAX_GROUP), "{sizes:?}");
    }

    #[test]
    fn a_panicking_run_fails_its_group_only() {
        let group = GroupCommit::default();
        let outcome = group.commit(Batch::new(), &mut |_| panic!("boom"));
        assert!(outcome.led && outcome.result.is_err());
        let outcome = group.commit(Batch::new(), &mut |b| {
            b.iter().map(|_| Ok(Committed::default())).collect()
        });
        assert!(outcome.result.is_ok());
    }
}
