//! Trying again, the same way everywhere: one back-off curve for every channel call, every
//! poll and every turn that could not be saved; a server's `Retry-After` (or Telegram's
//! `retry_after`) wins over the curve; and one stoppable sleep, so that a stop never waits
//! out a back-off.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The longest wait between two tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The longest wait a server may ask for (a larger `Retry-After` is capped to this).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The wait after `failures` failures in a row (counted from 1): 1 s, 2 s, 4 s … at most
/// [`MAX_BACKOFF`]. Never zero, so nothing that keeps failing can spin.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

/// The wait before the next try: what the server asked for when it said (capped at
/// [`MAX_RETRY_AFTER`]), else the curve.
pub fn delay(failures: u32, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(after) => after.min(MAX_RETRY_AFTER),
        None => backoff(failures),
    }
}

/// Why a call to a channel's API failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Worth trying again (network error, 5xx, throttling), after `after` when the server
    /// said so.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// Trying again cannot help (bad token, bad payload, a user who blocked the bot).
    GiveUp(String),
}

impl Failure {
    pub fn why(&self) -> &str {
        match self {
            Failure::Retry { why, .. } | Failure::GiveUp(why) => why,
        }
    }
}

/// A stop signal that sleeping threads wake up for at once.
#[derive(Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Asks every sleeper to stop, now and from now on.
    pub fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps `d` unless stopped meanwhile; false when stopped (before or during the sleep).
    pub fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *stopped {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            stopped = self
                .wake
                .wait_timeout(stopped, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn one_curve_and_retry_after_wins() {
        let got: Vec<u64> = (0..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(got, vec![1, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
        assert_eq!(delay(3, None), Duration::from_secs(4));
        assert_eq!(
            delay(3, Some(Duration::from_millis(1500))),
            Duration::from_millis(1500)
        );
        assert_eq!(
            delay(1, Some(Duration::from_secs(100_000))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn a_stop_ends_a_sleep_at_once() {
        let stop = Arc::new(Stop::new());
        assert!(stop.sleep(Duration::from_millis(1)));
        let sleeper = {
            let stop = stop.clone();
            std::thread::spawn(move || stop.sleep(Duration::from_secs(600)))
        };
        std::thread::sleep(Duration::from_millis(20));
        stop.stop();
        // Joins at once: a sleeper still waiting out 600 s would hang the test run.
        assert!(!sleeper.join().unwrap());
        assert!(stop.is_stopped() && !stop.sleep(Duration::from_secs(1)));
    }
}
