//! A small, fast random source for picking content variations and ids (not for secrets:
//! those come from the OS, see `config::random_secret`).

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    // Mix in a stack address so threads started in the same nanosecond differ.
    (nanos ^ (&local as *const u8 as u64).rotate_left(32)) | 1
}

/// A number in `0..n` (0 when `n` is 0).
pub fn below(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    STATE.with(|s| {
        let mut rng = XorShift(s.get());
        let x = rng.next_u64();
        s.set(rng.0);
        x % n
    })
}

/// xorshift64*: the generator behind `below`, also usable with a fixed seed where a sequence
/// must repeat (property tests).
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}
