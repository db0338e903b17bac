//! The incoming event (§1.1): what a channel hands the engine for one turn.

use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// One incoming message, already parsed by its channel.
#[derive(Debug, Clone)]
pub struct Event {
    pub bot_id: String,
    /// `api`, `messenger`, `telegram`.
    pub channel: String,
    /// `text`, `message`, `callback`, `start`, `help`, `timeout`, …
    pub kind: String,
    /// The user id on that channel.
    pub target: String,
    /// Telegram's chat id; `None` elsewhere.
    pub thread_id: Option<String>,
    /// The raw payload from the channel.
    pub payload: Value,
    /// `payload.text` for most events; empty when the message has no text (NLU is skipped).
    pub preview: String,
    /// The NLU contexts the caller asks for (Converse `includedContexts`), default `["global"]`.
    pub included_contexts: Vec<String>,
    /// The decoded external-auth token, if any.
    pub credentials: Option<Value>,
    /// Whether the channel answers with all the turn's replies at once (Converse's HTTP
    /// answer, `botd chat`): a `builtin/wait` then waits within the turn, bounded by its
    /// deadline. When false (Messenger, Telegram), the wait becomes a pause between the
    /// replies that the channel's delivery keeps without holding a thread.
    pub replies_together: bool,
}

impl Event {
    /// An event whose preview is taken from `payload.__preview`, `payload.preview` or
    /// `payload.text`, as Botpress does.
    pub fn new(bot_id: &str, channel: &str, kind: &str, target: &str, payload: Value) -> Event {
        let preview = ["__preview", "preview", "text"]
            .iter()
            .find_map(|k| payload.get(*k).and_then(Value::as_str))
            .unwrap_or("")
            .to_string();
        Event {
            bot_id: bot_id.to_string(),
            channel: channel.to_string(),
            kind: kind.to_string(),
            target: target.to_string(),
            thread_id: None,
            payload,
            preview,
            included_contexts: vec!["global".to_string()],
            credentials: None,
            replies_together: true,
        }
    }

    /// The event of a channel that sends each reply as it comes ([`Event::replies_together`]).
    pub fn replies_as_they_come(mut self) -> Event {
        self.replies_together = false;
        self
    }

    pub fn with_thread(mut self, thread_id: Option<String>) -> Event {
        self.thread_id = thread_id;
        self
    }

    /// The session id of §8.8: `{channel}::{target}[::{threadId}]` (kept per bot by the store).
    pub fn session_id(&self) -> String {
        session_id(&self.channel, &self.target, self.thread_id.as_deref())
    }
}

pub fn session_id(channel: &str, target: &str, thread_id: Option<&str>) -> String {
    match thread_id {
        Some(thread) => format!("{channel}::{target}::{thread}"),
        None => format!("{channel}::{target}"),
    }
}

/// Botpress event ids: `Date.now() * 100000 + random(0..99999)` as a decimal string.
pub fn new_event_id() -> String {
    let ms = now_ms() as u128;
    format!(
        "{}",
        ms * 100_000 + (crate::engine::random::below(100_000) as u128)
    )
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A JSON object made of `pairs`, moving the values in (unlike `json!`, which copies every
/// interpolated value through `Serialize` — costly for big values on every turn).
pub fn object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// The `nlu` object when NLU does not run (§1.1).
pub fn default_nlu(included_contexts: &[String]) -> Value {
    json!({
        "entities": [], "language": "n/a", "slots": {},
        "intent": {"name": "none", "confidence": 1, "context": "global"},
        "intents": [], "errored": false, "includedContexts": included_contexts
    })
}

/// An ISO-8601 UTC timestamp with milliseconds, as JavaScript's `Date.toISOString()`.
pub fn iso_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Parses the `YYYY-MM-DDTHH:MM:SS[.mmm]Z` timestamps botd writes, to Unix ms.
pub fn parse_iso_ms(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let ms = if s.as_bytes().get(19) == Some(&b'.') {
        num(20..23)?
    } else {
        0
    };
    Some((days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss) * 1000 + ms)
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(1_556_128_800_123), "2019-04-24T18:00:00.123Z");
        assert_eq!(iso_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
        for ms in [0, 1_556_128_800_123, 951_782_400_000, 1_800_000_000_999] {
            assert_eq!(parse_iso_ms(&iso_time(ms)), Some(ms));
        }
        assert_eq!(parse_iso_ms("nope"), None);
    }

    #[test]
    fn preview_and_session_ids() {
        let e = Event::new(
            "b",
            "api",
            "text",
            "u1",
            json!({"type": "text", "text": "hi"}),
        );
        assert_eq!(e.preview, "hi");
        assert_eq!(e.session_id(), "api::u1");
        let e = e.with_thread(Some("42".into()));
        assert_eq!(e.session_id(), "api::u1::42");
        assert_eq!(
            Event::new("b", "x", "t", "u", json!({"attachments": []})).preview,
            ""
        );
    }
}
