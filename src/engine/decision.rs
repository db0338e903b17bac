//! The decision engine (§9.1): which QnA suggestion, if any, answers instead of the flow.

use super::bot::Bot;
use super::event::parse_iso_ms;
use super::qna;
use serde_json::{json, Value};

/// Minimum confidence for a suggestion to be elected (§9.1).
const MIN_CONFIDENCE: f64 = 0.3;
/// A suggestion from the same source as the last reply is dropped within this window.
const NO_REPEAT_MS: i64 = 20_000;

pub fn default_decision() -> Value {
    json!({"decision": {"reason": "no suggestion matched", "status": "elected"}, "confidence": 1,
           "payloads": [], "source": "decisionEngine", "sourceDetails": "execute default flow"})
}

pub type Decided = (qna::Suggestion, &'static str, String);

/// Sorts the QnA suggestions and decides each (§9.1). Returns them with status and reason,
/// and the index of the elected one.
pub fn decide(
    bot: &Bot,
    nlu: &Value,
    scope: &Value,
    in_middle_of_flow: bool,
    now: i64,
) -> (Vec<Decided>, Option<usize>) {
    let mut suggestions = qna::suggest(&bot.qna, nlu);
    suggestions.sort_by(|a, b| {
        b.confidence
            .partial_cmp(&a.confidence)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let last = scope["session"]["lastMessages"]
        .as_array()
        .and_then(|l| l.last())
        .cloned()
        .unwrap_or(Value::Null);
    let last_source = last["replySource"].as_str().unwrap_or("").to_string();
    let last_date = last["replyDate"]
        .as_str()
        .and_then(parse_iso_ms)
        .unwrap_or(0);
    let mut elected = None;
    let mut out = Vec::new();
    for (i, s) in suggestions.into_iter().enumerate() {
        let (status, reason) = if s.confidence < MIN_CONFIDENCE {
            ("dropped", format!("confidence lower than {MIN_CONFIDENCE}"))
        } else if last_source == format!("{} {}", s.source, s.source_details)
            && now - last_date < NO_REPEAT_MS
        {
            (
                "dropped",
                format!("bot would repeat itself (within {NO_REPEAT_MS}ms)"),
            )
        } else if elected.is_some() {
            ("dropped", "best suggestion already elected".to_string())
        } else if in_middle_of_flow {
            (
                "dropped",
                "would have been elected, but already in the middle of a flow".to_string(),
            )
        } else {
            elected = Some(i);
            ("elected", "best remaining suggestion available".to_string())
        };
        out.push((s, status, reason));
    }
    (out, elected)
}
