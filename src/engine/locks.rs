//! FIFO locks per conversation, so that turns of one conversation run one at a time in the
//! order they arrived while other conversations run in parallel.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// FIFO locks per conversation: a ticket lock, so waiting turns run in arrival order; entries
/// are removed when nobody holds or waits for them, so the map never grows without bound.
#[derive(Default)]
pub struct ConversationLocks {
    map: Mutex<HashMap<String, Arc<Ticket>>>,
}

#[derive(Default)]
struct Ticket {
    state: Mutex<TicketState>,
    turn: Condvar,
}

#[derive(Default)]
struct TicketState {
    /// The next ticket to hand out.
    next: u64,
    /// The ticket whose holder may run.
    serving: u64,
    /// Tickets whose holders stopped waiting (their deadline passed); skipped when reached.
    abandoned: BTreeSet<u64>,
}

impl TicketState {
    /// Moves past the current holder and any abandoned tickets after it.
    fn advance(&mut self) {
        self.serving += 1;
        while self.abandoned.remove(&self.serving) {
            self.serving += 1;
        }
    }
}

pub struct ConversationGuard<'a> {
    locks: &'a ConversationLocks,
    key: String,
    ticket: Arc<Ticket>,
}

impl ConversationLocks {
    /// Waits for the conversation `key`, as long as it takes.
    pub fn lock(&self, key: &str) -> ConversationGuard<'_> {
        self.lock_until(key, None)
            .expect("a wait without deadline always gets its turn")
    }

    /// Waits for the conversation `key` until `deadline`; `None` when the deadline passed
    /// first (the place in the queue is given up, and the turns behind it move up).
    pub fn lock_until(
        &self,
        key: &str,
        deadline: Option<Instant>,
    ) -> Option<ConversationGuard<'_>> {
        let (ticket, mine) = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let ticket = map.entry(key.to_string()).or_default().clone();
            let mut state = ticket.state.lock().unwrap_or_else(|e| e.into_inner());
            let mine = state.next;
            state.next += 1;
            drop(state);
            (ticket, mine)
        };
        let mut state = ticket.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.serving != mine {
            match deadline {
                None => state = ticket.turn.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        // Give up the place: `serving` skips it when it gets there.
                        state.abandoned.insert(mine);
                        // The holder ahead of us still counts in `next`, so the entry stays
                        // until it releases; then `advance` skips this ticket.
                        return None;
                    }
                    state = ticket
                        .turn
                        .wait_timeout(state, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        drop(state);
        Some(ConversationGuard {
            locks: self,
            key: key.to_string(),
            ticket,
        })
    }
}

impl Drop for ConversationGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = self.ticket.state.lock().unwrap_or_else(|e| e.into_inner());
        state.advance();
        if state.next == state.serving {
            map.remove(&self.key);
        }
        drop(state);
        self.ticket.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn conversation_locks_are_fifo_and_cleaned_up() {
        let locks = Arc::new(ConversationLocks::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = locks.lock("k");
        let mut handles = Vec::new();
        for i in 0..8 {
            let (shared, order) = (locks.clone(), order.clone());
            handles.push(std::thread::spawn(move || {
                let _g = shared.lock("k");
                order.lock().unwrap().push(i);
            }));
            // Let each thread take its ticket before the next one starts.
            while locks.map.lock().unwrap()["k"].state.lock().unwrap().next < i + 2 {
                std::thread::yield_now();
            }
        }
        drop(first);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
        assert!(locks.map.lock().unwrap().is_empty());
    }

    #[test]
    fn a_waiter_past_its_deadline_gives_up_its_place() {
        let locks = ConversationLocks::default();
        let held = locks.lock("k");
        let soon = Instant::now() + Duration::from_millis(30);
        assert!(locks.lock_until("k", Some(soon)).is_none());
        // Other keys are not affected.
        assert!(locks.lock_until("other", Some(soon)).is_some());
        drop(held);
        // The abandoned ticket is skipped: the next waiter gets the lock at once.
        let later = Instant::now() + Duration::from_millis(200);
        let next = locks.lock_until("k", Some(later));
        assert!(next.is_some());
        drop(next);
        assert!(locks.map.lock().unwrap().is_empty());
    }
}
