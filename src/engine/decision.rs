//! The decision engine (§9.1): which QnA suggestion, if any, answers instead of the flow.

use super::event::parse_iso_ms;
use super::qna;
use serde_json::{json, Value};

/// A suggestion from the same source as the last reply is dropped within this window.
const NO_REPEAT_MS: i64 = 20_000;

pub fn default_decision() -> Value {
    json!({"decision": {"reason": "no suggestion matched", "status": "elected"}, "confidence": 1,
           "payloads": [], "source": "decisionEngine", "sourceDetails": "execute default flow"})
}

pub type Decided = (qna::Suggestion, &'static str, String);

/// Sorts `suggestions` by confidence and decides each (§9.1), given the last turn-history
/// entry of the session and the least confidence that may be elected (Botpress 11: 0.3, 12:
/// 0.5). Returns them with status and reason, and the index of the elected one (none while the
/// conversation is in the middle of a flow).
pub fn decide(
    mut suggestions: Vec<qna::Suggestion>,
    last_message: &Value,
    in_middle_of_flow: bool,
    now: i64,
    min_confidence: f64,
) -> (Vec<Decided>, Option<usize>) {
    suggestions.sort_by(|a, b| {
        b.confidence
            .partial_cmp(&a.confidence)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let last_source = last_message["replySource"].as_str().unwrap_or("");
    let last_date = last_message["replyDate"]
        .as_str()
        .and_then(parse_iso_ms)
        .unwrap_or(i64::MIN / 2);
    let mut best_found = false;
    let mut elected = None;
    let mut out = Vec::new();
    for (i, s) in suggestions.into_iter().enumerate() {
        let (status, reason) = if s.confidence < min_confidence {
            ("dropped", format!("confidence lower than {min_confidence}"))
        } else if last_source == format!("{} {}", s.source, s.source_details)
            && now - last_date < NO_REPEAT_MS
        {
            (
                "dropped",
                format!("bot would repeat itself (within {NO_REPEAT_MS}ms)"),
            )
        } else if best_found {
            ("dropped", "best suggestion already elected".to_string())
        } else if in_middle_of_flow {
            best_found = true;
            (
                "dropped",
                "would have been elected, but already in the middle of a flow".to_string(),
            )
        } else {
            best_found = true;
            elected = Some(i);
            ("elected", "best remaining suggestion available".to_string())
        };
        out.push((s, status, reason));
    }
    (out, elected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::event::iso_time;

    fn qna(id: &str, confidence: f64) -> qna::Suggestion {
        qna::Suggestion {
            confidence,
            source: "qna".into(),
            source_details: format!("__qna__{id}"),
            answer: Some(id.into()),
            redirect: None,
        }
    }

    fn summary(decided: &[Decided]) -> Vec<(String, &'static str, String)> {
        decided
            .iter()
            .map(|(s, st, r)| (s.source_details.clone(), *st, r.clone()))
            .collect()
    }

    /// Suggestions, last history entry, in the middle of a flow, expected decisions, elected.
    type Case<'a> = (
        Vec<qna::Suggestion>,
        &'a Value,
        bool,
        Vec<(&'a str, &'a str, &'a str)>,
        Option<usize>,
    );

    #[test]
    fn rules_of_the_decision_engine() {
        let now = 1_800_000_000_000;
        let none = Value::Null;
        let recent = json!({"replySource": "qna __qna__a", "replyDate": iso_time(now - 5_000)});
        let old = json!({"replySource": "qna __qna__a", "replyDate": iso_time(now - 25_000)});
        let cases: Vec<Case> = vec![
            // Sorted by confidence; the best is elected, the rest dropped.
            (
                vec![qna("b", 0.5), qna("a", 0.9)],
                &none,
                false,
                vec![
                    ("__qna__a", "elected", "best remaining suggestion available"),
                    ("__qna__b", "dropped", "best suggestion already elected"),
                ],
                Some(0),
            ),
            // Under 0.3 is never elected.
            (
                vec![qna("a", 0.29)],
                &none,
                false,
                vec![("__qna__a", "dropped", "confidence lower than 0.3")],
                None,
            ),
            // The same answer within 20 s is dropped; the next one is elected.
            (
                vec![qna("a", 0.9), qna("b", 0.6)],
                &recent,
                false,
                vec![
                    (
                        "__qna__a",
                        "dropped",
                        "bot would repeat itself (within 20000ms)",
                    ),
                    ("__qna__b", "elected", "best remaining suggestion available"),
                ],
                Some(1),
            ),
            // After 20 s it may answer again.
            (
                vec![qna("a", 0.9)],
                &old,
                false,
                vec![("__qna__a", "elected", "best remaining suggestion available")],
                Some(0),
            ),
            // In the middle of a flow nothing is elected.
            (
                vec![qna("a", 0.9), qna("b", 0.8)],
                &none,
                true,
                vec![
                    (
                        "__qna__a",
                        "dropped",
                        "would have been elected, but already in the middle of a flow",
                    ),
                    ("__qna__b", "dropped", "best suggestion already elected"),
                ],
                None,
            ),
            (vec![], &none, false, vec![], None),
        ];
        for (i, (suggestions, last, middle, expected, elected)) in cases.into_iter().enumerate() {
            let (decided, got) = decide(suggestions, last, middle, now, 0.3);
            let expected: Vec<(String, &str, String)> = expected
                .into_iter()
                .map(|(a, b, c)| (a.to_string(), b, c.to_string()))
                .collect();
            assert_eq!(summary(&decided), expected, "case {i}");
            assert_eq!(got, elected, "case {i}");
        }
    }
}
