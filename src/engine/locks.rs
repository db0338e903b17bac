//! FIFO locks per conversation, so that turns of one conversation run one at a time in the
//! order they arrived while other conversations run in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

/// FIFO locks per conversation: a ticket lock, so waiting turns run in arrival order; entries
/// are removed when nobody holds or waits for them, so the map never grows without bound.
#[derive(Default)]
pub struct ConversationLocks {
    map: Mutex<HashMap<String, Arc<Ticket>>>,
}

#[derive(Default)]
struct Ticket {
    state: Mutex<(u64, u64)>,
    turn: Condvar,
}

pub struct ConversationGuard<'a> {
    locks: &'a ConversationLocks,
    key: String,
    ticket: Arc<Ticket>,
}

impl ConversationLocks {
    pub fn lock(&self, key: &str) -> ConversationGuard<'_> {
        let (ticket, mine) = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let ticket = map.entry(key.to_string()).or_default().clone();
            let mut state = ticket.state.lock().unwrap_or_else(|e| e.into_inner());
            let mine = state.0;
            state.0 += 1;
            drop(state);
            (ticket, mine)
        };
        let mut state = ticket.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.1 != mine {
            state = ticket.turn.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        drop(state);
        ConversationGuard {
            locks: self,
            key: key.to_string(),
            ticket,
        }
    }
}

impl Drop for ConversationGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = self.ticket.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        if state.0 == state.1 {
            map.remove(&self.key);
        }
        drop(state);
        self.ticket.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            while locks.map.lock().unwrap()["k"].state.lock().unwrap().0 < i + 2 {
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
}
