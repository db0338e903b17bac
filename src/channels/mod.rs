//! Channels: one module per channel. Each parses what arrives into an engine event and
//! delivers what the engine renders. Channels know nothing of flows. The push channels
//! (Messenger, Telegram) run on one [`pipeline`], with one way of trying again ([`retry`]).

pub mod converse;
pub mod delivery;
pub mod messenger;
pub mod pipeline;
pub mod render;
pub mod retry;
pub mod telegram;

use serde_json::Value;
use std::time::Duration;

/// Compares two secrets in constant time (over their SHA-256 digests, so the length of the
/// expected value does not leak either). An empty expected secret matches nothing.
pub fn same_secret(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0 && !expected.is_empty()
}

/// The Botpress typing delay (§4.5), the same on every channel: 1000 ms when the value is
/// missing or not a number, else that many ms with a 500 ms minimum (`true` counts as 1, so
/// it is 500 ms), capped at one minute.
pub fn typing_delay(value: Option<&Value>) -> Duration {
    let number = match value {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(f64::from(u8::from(*b))),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) if s.trim().is_empty() => Some(0.0),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match number {
        Some(n) if n.is_finite() => Duration::from_millis(n.clamp(500.0, 60_000.0) as u64),
        _ => Duration::from_millis(1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typing_delay_rule() {
        let cases = [
            (None, 1000),
            (Some(json!(null)), 1000),
            (Some(json!(true)), 500),
            (Some(json!(false)), 500),
            (Some(json!(200)), 500),
            (Some(json!(1500)), 1500),
            (Some(json!("abc")), 1000),
            (Some(json!("800")), 800),
            (Some(json!(1e12)), 60_000),
            (Some(json!([1])), 1000),
        ];
        for (value, ms) in cases {
            assert_eq!(
                typing_delay(value.as_ref()),
                Duration::from_millis(ms),
                "{value:?}"
            );
        }
    }
}
