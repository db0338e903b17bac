//! The webhook Facebook calls: `GET` for the subscription handshake, `POST` for events. A
//! `POST` is authenticated over its raw bytes, parsed, and its new events (by message id)
//! are queued with their ids remembered, all in one transaction, before the
//! `200 EVENT_RECEIVED` goes back; the turns and the Send API calls happen later, on the
//! delivery threads.
//!
//! Paths: `/api/v1/bots/<any>/mod/channel-messenger/webhook` (as Botpress) and `/webhook`.

use super::{signature, Core, GlobalConfig, MessengerEvent, DEDUPE_WINDOW};
use crate::channels::pipeline::{conversation_key, InboundRecord, Pipeline};
use crate::http::{self, Reply, Route};
use crate::store::{Batch, SeenId};
use serde_json::{json, Value};
use std::sync::Arc;

pub struct Webhook {
    pub(super) core: Arc<Core>,
    pub(super) pipeline: Arc<Pipeline<Core>>,
    pub(super) config: Arc<GlobalConfig>,
}

/// One user event of a delivery, ready for the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub page_id: String,
    pub psid: String,
    /// `message` or `callback`.
    pub kind: &'static str,
    pub payload: Value,
    /// What deduplication remembers: the page and the `mid` (or, without one, the event).
    pub dedupe: String,
    pub timestamp: i64,
}

/// Whether `path` is the webhook.
pub fn is_webhook_path(path: &str) -> bool {
    if path == "/webhook" {
        return true;
    }
    let segments: Vec<&str> = path.split('/').collect();
    matches!(segments.as_slice(), ["", "api", "v1", "bots", bot, "mod", "channel-messenger", "webhook"] if !bot.is_empty())
}

/// Reads the user events out of a webhook body: every `entry[]`, every `messaging[]` item.
/// Echoes, deliveries, reads and anything without a sender are left out.
pub fn parse(body: &Value) -> Result<Vec<Incoming>, String> {
    if !body.is_object() {
        return Err("the body must be a JSON object".into());
    }
    match body.get("object") {
        Some(Value::String(o)) if o == "page" => {}
        Some(other) => {
            return Err(format!(
                "\"object\" is {other}, only \"page\" events are handled"
            ))
        }
        None => return Err("\"object\" is missing".into()),
    }
    let entries = body
        .get("entry")
        .and_then(Value::as_array)
        .ok_or("\"entry\" must be an array")?;
    let mut out = Vec::new();
    for entry in entries {
        let Some(page_id) = id_text(&entry["id"]) else {
            continue;
        };
        let Some(items) = entry.get("messaging").and_then(Value::as_array) else {
            continue;
        };
        for item in items {
            let Some(psid) = id_text(&item["sender"]["id"]) else {
                continue;
            };
            let timestamp = item["timestamp"].as_i64().unwrap_or(0);
            let (kind, payload, mid) =
                if let Some(message) = item.get("message").filter(|m| m.is_object()) {
                    if message["is_echo"].as_bool() == Some(true) {
                        continue;
                    }
                    ("message", message.clone(), message["mid"].as_str())
                } else if let Some(postback) = item.get("postback").filter(|p| p.is_object()) {
                    (
                        "callback",
                        json!({"text": postback["payload"]}),
                        postback["mid"].as_str(),
                    )
                } else {
                    continue;
                };
            let dedupe = match mid {
                Some(mid) if !mid.is_empty() => format!("{page_id}\u{0}{mid}"),
                _ => format!("{page_id}\u{0}{psid}\u{0}{timestamp}\u{0}{kind}\u{0}{payload}"),
            };
            out.push(Incoming {
                page_id: page_id.clone(),
                psid,
                kind,
                payload,
                dedupe,
                timestamp,
            });
        }
    }
    Ok(out)
}

/// Ids come as strings; accept numbers too.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One event on its way to the inbound queue: timestamp, dedupe id, record.
type Spooled = (i64, String, InboundRecord<MessengerEvent>);

impl Route for Webhook {
    fn admit(&self, head: &http::Head) -> Option<http::Admission> {
        if !is_webhook_path(head.path()) {
            return None;
        }
        Some(match head.method {
            http::Method::Get => http::Admission::Body { limit: 0 },
            // The signature headers are checked before any of the body is read: an unsigned
            // call costs nothing but its head.
            http::Method::Post => match signature::claimed(
                &self.config.app_secret,
                head.header("X-Hub-Signature-256"),
                head.header("X-Hub-Signature"),
                self.config.require_sha256,
            ) {
                Ok(_) => http::Admission::Body {
                    limit: self.config.max_body,
                },
                Err(why) => http::Admission::Answer(refused(why)),
            },
            _ => http::Admission::Answer(Reply::error(
                405,
                "MethodNotAllowed",
                "the Messenger webhook takes GET and POST",
            )),
        })
    }

    fn handle(&self, request: &http::Request) -> Reply {
        match request.method() {
            http::Method::Post => self.receive(request),
            _ => self.verify(request),
        }
    }
}

fn refused(why: &str) -> Reply {
    // Anyone can send unsigned calls: one warning per ten seconds at most, the rest at debug,
    // so the log cannot be grown by an attacker.
    static LAST_WARNING_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let now = crate::engine::event::now_ms();
    let last = LAST_WARNING_MS.load(std::sync::atomic::Ordering::Relaxed);
    if now - last >= 10_000 {
        LAST_WARNING_MS.store(now, std::sync::atomic::Ordering::Relaxed);
        log::warn!(
            "Messenger: webhook call refused: {why} (further refusals for 10 s at debug level)"
        );
    } else {
        log::debug!("Messenger: webhook call refused: {why}");
    }
    Reply::error(403, "entity.verify.failed", &format!("Forbidden: {why}"))
}

impl Webhook {
    /// The subscription handshake.
    fn verify(&self, request: &http::Request) -> Reply {
        let query = http::query_pairs(request.url());
        let get = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let token_ok = get("hub.verify_token")
            .is_some_and(|t| signature::same_secret(t, &self.config.verify_token));
        match (get("hub.mode"), get("hub.challenge")) {
            (Some("subscribe"), Some(challenge)) if token_ok => {
                log::info!("Messenger: webhook verified by Facebook");
                Reply::express_text(200, challenge)
            }
            _ => {
                log::warn!(
                    "Messenger: webhook verification refused (wrong hub.mode or hub.verify_token)"
                );
                Reply::express_text(403, "Forbidden")
            }
        }
    }

    fn receive(&self, request: &http::Request) -> Reply {
        let body = &request.body;
        if let Err(why) = signature::verify(
            &self.config.app_secret,
            body,
            request.header("X-Hub-Signature-256"),
            request.header("X-Hub-Signature"),
            self.config.require_sha256,
        ) {
            return refused(why);
        }
        let json: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return Reply::error(
                    400,
                    "entity.parse.failed",
                    &format!("Bad Request: the body is not JSON: {e}"),
                )
            }
        };
        let events = match parse(&json) {
            Ok(events) => events,
            Err(why) => {
                log::warn!("Messenger: webhook call ignored: {why}");
                return Reply::error(400, "BadRequestError", &format!("Bad Request: {why}"));
            }
        };
        self.accept(events)
    }

    /// Queues the new events per conversation and remembers their ids, in one transaction,
    /// then answers: the whole delivery is stored, or none of it (and Facebook sends it again).
    fn accept(&self, events: Vec<Incoming>) -> Reply {
        // Conversations in order of first appearance, found by key in constant time (a
        // 10,000-event call must not compare every key with every other).
        let mut groups: Vec<(String, Vec<Spooled>)> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let mut waiting_for_lookup = false;
        let now = crate::engine::event::now_ms();
        for e in events {
            let Some(bot) = self.core.bot_for_page(&e.page_id) else {
                if self.core.lookups_pending() {
                    waiting_for_lookup = true;
                } else {
                    log::warn!(
                        "Messenger: event for page {} skipped: no bot answers that page",
                        e.page_id
                    );
                }
                continue;
            };
            let key = conversation_key(&bot, &e.psid);
            let item = InboundRecord {
                bot,
                conversation: e.psid,
                at: now,
                event: MessengerEvent {
                    kind: e.kind.to_string(),
                    payload: e.payload,
                    sent_at: e.timestamp,
                },
            };
            match index.get(&key) {
                Some(&i) => groups[i].1.push((e.timestamp, e.dedupe, item)),
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push((key, vec![(e.timestamp, e.dedupe, item)]));
                }
            }
        }
        let expires = now + DEDUPE_WINDOW.as_millis() as i64;
        let (mut batch, mut staged) = (Batch::new(), self.pipeline.staged());
        let mut offered = 0;
        for (_, mut list) in groups {
            // Facebook does not promise order inside a batch; timestamps do.
            list.sort_by_key(|(t, _, _)| *t);
            for (_, dedupe, item) in list {
                let seen = SeenId::new("messenger", &dedupe, expires);
                self.pipeline
                    .stage(&mut staged, &mut batch, &item, Some(seen));
                offered += 1;
            }
        }
        match self.pipeline.commit(batch, staged) {
            Ok(queued) if queued < offered => log::debug!(
                "Messenger: duplicate delivery of an event skipped ({} in this call)",
                offered - queued
            ),
            Ok(_) => {}
            Err(e) if e.unavailable => {
                log::warn!("Messenger: cannot store a webhook delivery, the database cannot be reached (Facebook will send it again): {e}");
                return Reply::error(
                    503,
                    "ServiceUnavailable",
                    "the database cannot be reached; send the delivery again",
                )
                .with_header("Retry-After", "5");
            }
            Err(e) => {
                log::error!(
                    "Messenger: cannot store a webhook delivery (nothing of it was kept; Facebook will send it again): {e}"
                );
                return Reply::error(
                    500,
                    "StorageError",
                    "the delivery could not be stored; send it again",
                );
            }
        }
        if waiting_for_lookup {
            return Reply::error(
                503,
                "ServiceUnavailable",
                "page ids are still being looked up; send it again",
            )
            .with_header("Retry-After", "5");
        }
        Reply::express_text(200, "EVENT_RECEIVED")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(is_webhook_path("/webhook"));
        assert!(is_webhook_path(
            "/api/v1/bots/___/mod/channel-messenger/webhook"
        ));
        assert!(is_webhook_path(
            "/api/v1/bots/welcome-bot/mod/channel-messenger/webhook"
        ));
        assert!(!is_webhook_path(
            "/api/v1/bots//mod/channel-messenger/webhook"
        ));
        assert!(!is_webhook_path(
            "/api/v1/bots/x/mod/channel-telegram/webhook"
        ));
        assert!(!is_webhook_path("/webhook/x"));
    }

    #[test]
    fn reads_every_entry_and_item() {
        let body = json!({"object": "page", "entry": [
            {"id": "P1", "time": 1, "messaging": [
                {"sender": {"id": "U1"}, "recipient": {"id": "P1"}, "timestamp": 10, "message": {"mid": "m1", "text": "hi"}},
                {"sender": {"id": "U1"}, "timestamp": 11, "message": {"mid": "m2", "text": "Yes", "quick_reply": {"payload": "YES"}}},
                {"sender": {"id": "P1"}, "timestamp": 12, "message": {"mid": "m3", "text": "echo", "is_echo": true}},
                {"sender": {"id": "U1"}, "timestamp": 13, "delivery": {"mids": ["m1"], "watermark": 13}},
                {"sender": {"id": "U1"}, "timestamp": 14, "read": {"watermark": 13}},
                {"recipient": {"id": "P1"}, "timestamp": 15, "message": {"mid": "m4", "text": "no sender"}}
            ]},
            {"id": "P2", "time": 2},
            {"id": 42, "messaging": [
                {"sender": {"id": 7}, "timestamp": 20, "postback": {"title": "Start", "payload": "GET_STARTED", "mid": "m5"}},
                {"sender": {"id": "U2"}, "timestamp": 21, "postback": {"title": "Old", "payload": "OLD"}}
            ]}
        ]});
        let events = parse(&body).unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(
            (events[0].kind, events[0].payload["text"].as_str()),
            ("message", Some("hi"))
        );
        assert_eq!(events[1].payload["quick_reply"]["payload"], "YES");
        assert_eq!(
            (
                events[2].page_id.as_str(),
                events[2].psid.as_str(),
                events[2].kind
            ),
            ("42", "7", "callback")
        );
        assert_eq!(events[2].payload, json!({"text": "GET_STARTED"}));
        assert_eq!(events[2].dedupe, "42\u{0}m5");
        assert!(
            events[3].dedupe.contains("U2"),
            "no mid: the event itself is the id"
        );
    }

    #[test]
    fn refuses_other_objects() {
        assert!(parse(&json!({"object": "instagram", "entry": []})).is_err());
        assert!(parse(&json!({"entry": []})).is_err());
        assert!(parse(&json!({"object": "page"})).is_err());
        assert!(parse(&json!([1, 2])).is_err());
        assert_eq!(
            parse(&json!({"object": "page", "entry": []})).unwrap(),
            vec![]
        );
    }
}
