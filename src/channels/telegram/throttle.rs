//! Outgoing pacing as Telegram asks (Bot FAQ "My bot is hitting limits"), at conversation
//! speed: a chat may get a short burst at once (a turn's few messages), then about one message
//! a second; a group (negative chat id) also at most 20 a minute over time; the bot 30 a second
//! in all. Each is a token bucket ([`crate::ratelimit`]), so over any stretch of time a chat,
//! group or bot gets at most its burst plus its sustained rate.
//!
//! The throttle never sleeps: it answers "send now" (and counts the message) or "wait this
//! long", and the sender turns the wait into a `Retry` of the same item, so a chat's messages
//! keep their order and a waiting chat holds no thread and no other chat. When Telegram still
//! answers 429, its `retry_after` holds the chat the message was for; 429s for two different
//! chats within a second mean the bot as a whole is over its limit, and then the hold is the
//! bot's.

use crate::ratelimit::{Bucket, Buckets, Rate};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limits; [`Limits::TELEGRAM`] is what Telegram documents, with bursts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_chat: Rate,
    pub per_group: Rate,
    pub global: Rate,
}

impl Limits {
    pub const TELEGRAM: Limits = Limits {
        // A turn of up to four messages goes at once; then one a second.
        per_chat: Rate {
            burst: 4,
            every: Duration::from_secs(1),
        },
        // 20 a minute is one every 3 s.
        per_group: Rate {
            burst: 4,
            every: Duration::from_secs(3),
        },
        // 30 a second, as a burst of 30 refilled one every 1/30 s.
        global: Rate {
            burst: 30,
            every: Duration::from_nanos(1_000_000_000 / 30),
        },
    };
}

/// How many chats' buckets are kept (quiet ones are forgotten first).
const MAX_CHATS: usize = 100_000;

/// What a 429 held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Chat,
    Bot,
}

pub struct Throttle {
    limits: Limits,
    state: Mutex<State>,
}

struct State {
    chats: Buckets<i64>,
    groups: Buckets<i64>,
    global: Bucket,
    /// The last 429 Telegram answered, and for which chat.
    last_refusal: Option<(i64, Instant)>,
}

impl Throttle {
    pub fn new(limits: Limits) -> Throttle {
        Throttle {
            limits,
            state: Mutex::new(State {
                chats: Buckets::new(MAX_CHATS),
                groups: Buckets::new(MAX_CHATS),
                global: Bucket::default(),
                last_refusal: None,
            }),
        }
    }

    /// `Ok` when a message to `chat` may go now (it is counted); otherwise how long to wait.
    /// A group (negative id) is held to both the per-chat and the per-group limit. Nothing is
    /// counted unless every limit allows it.
    pub fn try_acquire(&self, chat: i64, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let limits = self.limits;
        let mut wait = state.global.wait(limits.global, now);
        wait = wait.max(state.chats.bucket(&chat, now).wait(limits.per_chat, now));
        if chat < 0 {
            wait = wait.max(state.groups.bucket(&chat, now).wait(limits.per_group, now));
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        state.global.take_unchecked(limits.global, now);
        state
            .chats
            .bucket(&chat, now)
            .take_unchecked(limits.per_chat, now);
        if chat < 0 {
            state
                .groups
                .bucket(&chat, now)
                .take_unchecked(limits.per_group, now);
        }
        Ok(())
    }

    /// Telegram answered 429 for a message to `chat`: nothing more goes to that chat (or, when
    /// another chat was refused within the last second too, from the bot at all) for `wait`.
    pub fn refused(&self, chat: i64, wait: Duration, now: Instant) -> Held {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let until = now + wait;
        let bot_wide = state.last_refusal.is_some_and(|(other, at)| {
            other != chat && now.saturating_duration_since(at) < Duration::from_secs(1)
        });
        state.last_refusal = Some((chat, now));
        let limits = self.limits;
        state
            .chats
            .bucket(&chat, now)
            .hold_until(limits.per_chat, until);
        if bot_wide {
            state.global.hold_until(limits.global, until);
            Held::Bot
        } else {
            Held::Chat
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent_within(
        t: &Throttle,
        chat: i64,
        from: Instant,
        tries: u64,
        step: Duration,
    ) -> Vec<Instant> {
        let mut sent = Vec::new();
        for i in 0..tries {
            let now = from + step * i as u32;
            if t.try_acquire(chat, now).is_ok() {
                sent.push(now);
            }
        }
        sent
    }

    #[test]
    fn a_turn_goes_at_once_then_one_a_second() {
        let t = Throttle::new(Limits::TELEGRAM);
        let now = Instant::now();
        for _ in 0..4 {
            assert_eq!(t.try_acquire(1, now), Ok(()));
        }
        assert_eq!(t.try_acquire(1, now), Err(Duration::from_secs(1)));
        assert_eq!(
            t.try_acquire(1, now + Duration::from_millis(300)),
            Err(Duration::from_millis(700))
        );
        // Another chat is not held up.
        assert_eq!(t.try_acquire(2, now), Ok(()));
        assert_eq!(t.try_acquire(1, now + Duration::from_secs(1)), Ok(()));
        // Asking all the time for a minute: the burst, then one a second.
        let t = Throttle::new(Limits::TELEGRAM);
        let sent = sent_within(&t, 5, now, 6000, Duration::from_millis(10));
        assert!((60..=4 + 60).contains(&sent.len()), "{}", sent.len());
    }

    #[test]
    fn groups_stay_within_twenty_a_minute_over_time() {
        let t = Throttle::new(Limits::TELEGRAM);
        let now = Instant::now();
        let sent = sent_within(&t, -100, now, 600, Duration::from_secs(1));
        // Ten minutes: the burst plus one every 3 s.
        assert!((200..=4 + 200).contains(&sent.len()), "{}", sent.len());
        for (i, start) in sent.iter().enumerate() {
            let end = *start + Duration::from_secs(60);
            let inside = sent[i..].iter().take_while(|s| **s < end).count();
            assert!(inside <= 4 + 20, "{inside} in a minute");
        }
    }

    #[test]
    fn thirty_a_second_for_the_bot() {
        let t = Throttle::new(Limits::TELEGRAM);
        let now = Instant::now();
        for chat in 0..30 {
            assert_eq!(t.try_acquire(chat, now), Ok(()));
        }
        let wait = t.try_acquire(99, now).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(34),
            "{wait:?}"
        );
        // A refusal by the bot's limit counts nothing against chat 99.
        assert_eq!(t.try_acquire(99, now + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn retry_after_holds_the_chat_or_the_bot() {
        let t = Throttle::new(Limits::TELEGRAM);
        let now = Instant::now();
        assert_eq!(t.refused(1, Duration::from_secs(5), now), Held::Chat);
        assert_eq!(t.try_acquire(1, now), Err(Duration::from_secs(5)));
        assert_eq!(t.try_acquire(2, now), Ok(()));
        assert_eq!(t.try_acquire(1, now + Duration::from_secs(5)), Ok(()));
        // A second chat refused within a second: the whole bot waits.
        let later = now + Duration::from_secs(10);
        t.refused(3, Duration::from_secs(2), later);
        assert_eq!(t.refused(4, Duration::from_secs(2), later), Held::Bot);
        assert!(t.try_acquire(7, later + Duration::from_secs(1)).is_err());
        assert_eq!(t.try_acquire(7, later + Duration::from_secs(2)), Ok(()));
    }
}
