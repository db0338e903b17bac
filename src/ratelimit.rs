//! Token buckets as GCRA (the generic cell rate algorithm): a bucket of `burst` tokens that
//! regains one token every `every` is stored as a single instant, the "theoretical arrival
//! time", so a bucket costs one `Instant` and every answer is exact integer arithmetic. Time is
//! always passed in (never read, never slept on), so every rule is a unit test with a made-up
//! clock. Used by the Converse limits and the Telegram pacing.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// `burst` requests at once, then one per `every` on average.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

impl Rate {
    /// How far ahead of `now` a bucket may run before it refuses: all but one of the burst.
    fn tolerance(&self) -> Duration {
        self.every.saturating_mul(self.burst.max(1) - 1)
    }
}

/// One bucket: the instant at which it is full again (`None`: full).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    full_at: Option<Instant>,
}

impl Bucket {
    /// The wait before `rate` allows one more at `now` (zero: now). Takes nothing.
    pub fn wait(&self, rate: Rate, now: Instant) -> Duration {
        let tat = self.full_at.map_or(now, |t| t.max(now));
        (tat - now).saturating_sub(rate.tolerance())
    }

    /// Takes one token when the bucket has one; otherwise the wait until it has.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let wait = self.wait(rate, now);
        if !wait.is_zero() {
            return Err(wait);
        }
        self.take_unchecked(rate, now);
        Ok(())
    }

    /// Takes one token whatever the bucket holds (after [`Bucket::wait`] said zero for every
    /// bucket a message is held to, so that several buckets are taken from together or not at
    /// all).
    pub fn take_unchecked(&mut self, rate: Rate, now: Instant) {
        let tat = self.full_at.map_or(now, |t| t.max(now));
        self.full_at = Some(tat + rate.every);
    }

    /// Empties the bucket until `until`: nothing is allowed before it (a server's own
    /// "retry after"), and the burst refills from then on.
    pub fn hold_until(&mut self, rate: Rate, until: Instant) {
        let held = until + rate.tolerance();
        if self.full_at.is_none_or(|t| t < held) {
            self.full_at = Some(held);
        }
    }

    /// A bucket that is full at `now` is the same as a new one, so it can be forgotten.
    pub fn is_full(&self, now: Instant) -> bool {
        self.full_at.is_none_or(|t| t <= now)
    }
}

/// Buckets by key, at most `capacity` of them. Full buckets are forgotten first (that loses
/// nothing); when every bucket is in use, the older half by last use goes, so a client that
/// invents a new key per request costs a bounded amount of memory (and its per-client bucket,
/// keyed by address, still holds it back).
#[derive(Debug)]
pub struct Buckets<K> {
    capacity: usize,
    map: HashMap<K, (Bucket, Instant)>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(capacity: usize) -> Buckets<K> {
        Buckets {
            capacity: capacity.max(1),
            map: HashMap::new(),
        }
    }

    /// Takes one token from `key`'s bucket at `now`, or answers the wait.
    pub fn take(&mut self, key: &K, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.bucket(key, now).take(rate, now)
    }

    /// `key`'s bucket (a new, full one the first time), marked as used at `now`.
    pub fn bucket(&mut self, key: &K, now: Instant) -> &mut Bucket {
        if !self.map.contains_key(key) && self.map.len() >= self.capacity {
            self.evict(now);
        }
        let (bucket, used) = self
            .map
            .entry(key.clone())
            .or_insert((Bucket::default(), now));
        *used = now;
        bucket
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn evict(&mut self, now: Instant) {
        self.map.retain(|_, (bucket, _)| !bucket.is_full(now));
        if self.map.len() < self.capacity {
            return;
        }
        let mut used: Vec<Instant> = self.map.values().map(|(_, u)| *u).collect();
        let middle = used.len() / 2;
        let (_, cut, _) = used.select_nth_unstable(middle);
        let cut = *cut;
        self.map.retain(|_, (_, u)| *u > cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        burst: 3,
        every: Duration::from_secs(2),
    };

    #[test]
    fn burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::default();
        for _ in 0..3 {
            assert_eq!(b.take(RATE, t0), Ok(()));
        }
        assert_eq!(b.take(RATE, t0), Err(Duration::from_secs(2)));
        let later = t0 + Duration::from_millis(500);
        assert_eq!(b.take(RATE, later), Err(Duration::from_millis(1500)));
        assert_eq!(b.take(RATE, t0 + Duration::from_secs(2)), Ok(()));
        assert!(b.take(RATE, t0 + Duration::from_secs(2)).is_err());
        // Quiet for the whole refill time: full again.
        assert!(b.is_full(t0 + Duration::from_secs(8)));
        assert!(!b.is_full(t0 + Duration::from_secs(7)));
    }

    #[test]
    fn a_window_never_holds_more_than_burst_plus_rate() {
        // Ask every 100 ms for a minute: in any window of length w, at most burst + w/every.
        let t0 = Instant::now();
        let mut b = Bucket::default();
        let mut sent = Vec::new();
        for i in 0..600u64 {
            let now = t0 + Duration::from_millis(100 * i);
            if b.take(RATE, now).is_ok() {
                sent.push(now);
            }
        }
        for (i, start) in sent.iter().enumerate() {
            for w in [1u64, 2, 5, 10, 30] {
                let end = *start + Duration::from_secs(w);
                let inside = sent[i..].iter().take_while(|t| **t < end).count() as u64;
                assert!(inside <= 3 + w / 2, "{inside} in {w} s");
            }
        }
        assert_eq!(sent.len(), 3 + 29);
    }

    #[test]
    fn a_hold_refuses_until_its_end() {
        let t0 = Instant::now();
        let mut b = Bucket::default();
        b.hold_until(RATE, t0 + Duration::from_secs(5));
        assert_eq!(b.take(RATE, t0), Err(Duration::from_secs(5)));
        assert_eq!(b.take(RATE, t0 + Duration::from_secs(5)), Ok(()));
        // The burst is not there at once after a hold: it refills from the hold's end.
        assert!(b.take(RATE, t0 + Duration::from_secs(5)).is_err());
        // A shorter hold does not shorten a longer one.
        b.hold_until(RATE, t0 + Duration::from_secs(20));
        b.hold_until(RATE, t0 + Duration::from_secs(6));
        assert!(b.take(RATE, t0 + Duration::from_secs(19)).is_err());
        assert_eq!(b.take(RATE, t0 + Duration::from_secs(20)), Ok(()));
    }

    #[test]
    fn rotating_keys_stay_bounded() {
        let t0 = Instant::now();
        let mut buckets = Buckets::new(100);
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_millis(i);
            assert_eq!(buckets.take(&i, RATE, now), Ok(()));
            assert!(buckets.len() <= 100);
        }
        // A key still in use survives the evictions of keys used once long ago.
        let mut buckets = Buckets::new(10);
        let busy = u64::MAX;
        for i in 0..200u64 {
            let now = t0 + Duration::from_secs(i);
            let _ = buckets.take(&busy, RATE, now);
            let _ = buckets.take(&i, RATE, now);
        }
        // A forgotten bucket would allow a whole burst again.
        let at = t0 + Duration::from_secs(200);
        let burst: Vec<_> = (0..3).map(|_| buckets.take(&busy, RATE, at)).collect();
        assert!(burst.iter().any(Result::is_err), "{burst:?}");
    }
}
