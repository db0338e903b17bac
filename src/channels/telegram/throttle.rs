//! Outgoing pacing as Telegram asks (Bot FAQ "My bot is hitting limits"): about one message
//! a second per chat, 20 a minute per group (negative chat ids) and 30 a second per bot in
//! all. The throttle never sleeps: it answers "send now" (and counts the message) or "wait
//! this long", and the sender turns the wait into a `Retry` of the same item, so a chat's
//! messages keep their order and a waiting chat holds no thread and no other chat.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limits; [`Limits::TELEGRAM`] is what Telegram documents.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_chat: (usize, Duration),
    pub per_group: (usize, Duration),
    pub global: (usize, Duration),
}

impl Limits {
    pub const TELEGRAM: Limits = Limits {
        per_chat: (1, Duration::from_secs(1)),
        per_group: (20, Duration::from_secs(60)),
        global: (30, Duration::from_secs(1)),
    };
}

pub struct Throttle {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    chats: HashMap<i64, VecDeque<Instant>>,
    global: VecDeque<Instant>,
    acquired: u64,
}

impl Throttle {
    pub fn new(limits: Limits) -> Throttle {
        Throttle {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// `Ok` when a message to `chat` may go now (it is counted); otherwise how long to wait.
    /// A group (negative id) is held to both the per-chat and the per-group limit.
    pub fn try_acquire(&self, chat: i64, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let limits = self.limits;
        let keep = limits.per_chat.1.max(limits.per_group.1);
        let history = state.chats.entry(chat).or_default();
        prune(history, keep, now);
        let mut wait = wait_for(history, limits.per_chat, now);
        if chat < 0 {
            wait = wait.max(wait_for(history, limits.per_group, now));
        }
        prune(&mut state.global, limits.global.1, now);
        wait = wait.max(wait_for(&state.global, limits.global, now));
        if !wait.is_zero() {
            return Err(wait);
        }
        state
            .chats
            .get_mut(&chat)
            .expect("entry above")
            .push_back(now);
        state.global.push_back(now);
        state.acquired += 1;
        if state.acquired.is_multiple_of(1024) {
            // Forget chats that have been quiet for longer than any window.
            state.chats.retain(|_, h| {
                h.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < keep)
            });
        }
        Ok(())
    }
}

fn prune(history: &mut VecDeque<Instant>, keep: Duration, now: Instant) {
    while history
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= keep)
    {
        history.pop_front();
    }
}

/// The wait until one more message fits `count` per `window`, given the send times so far.
fn wait_for(
    history: &VecDeque<Instant>,
    (count, window): (usize, Duration),
    now: Instant,
) -> Duration {
    let count = count.max(1);
    let recent = history
        .iter()
        .rev()
        .take_while(|t| now.saturating_duration_since(**t) < window)
        .count();
    if recent < count {
        return Duration::ZERO;
    }
    let oldest = history[history.len() - count];
    (oldest + window)
        .saturating_duration_since(now)
        .max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_chat_group_and_global_limits() {
        let t = Throttle::new(Limits::TELEGRAM);
        let now = Instant::now();
        assert_eq!(t.try_acquire(1, now), Ok(()));
        let wait = t
            .try_acquire(1, now + Duration::from_millis(300))
            .unwrap_err();
        assert_eq!(wait, Duration::from_millis(700));
        // Another chat is not held up.
        assert_eq!(t.try_acquire(2, now), Ok(()));
        assert_eq!(t.try_acquire(1, now + Duration::from_secs(1)), Ok(()));

        // A group: one a second and 20 a minute.
        let t = Throttle::new(Limits::TELEGRAM);
        assert_eq!(t.try_acquire(-100, now), Ok(()));
        assert!(t
            .try_acquire(-100, now + Duration::from_millis(500))
            .is_err());
        for i in 1..20 {
            assert_eq!(
                t.try_acquire(-100, now + Duration::from_secs(i)),
                Ok(()),
                "{i}"
            );
        }
        let wait = t
            .try_acquire(-100, now + Duration::from_secs(21))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(39));
        assert_eq!(t.try_acquire(-100, now + Duration::from_secs(60)), Ok(()));

        // 30 a second in all.
        let t = Throttle::new(Limits::TELEGRAM);
        for chat in 0..30 {
            assert_eq!(t.try_acquire(chat, now), Ok(()));
        }
        assert!(t.try_acquire(99, now + Duration::from_millis(10)).is_err());
        assert_eq!(t.try_acquire(99, now + Duration::from_secs(1)), Ok(()));
    }
}
