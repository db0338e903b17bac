//! A fake of Facebook's Graph API and a signed webhook text message, for the tests that play
//! a bot over Messenger end to end.

use super::fake_http::{FakeHttp, Response};
use super::{request, wait_until};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where Messenger posts (the path botd answers for every bot).
pub const WEBHOOK: &str = "/api/v1/bots/___/mod/channel-messenger/webhook";

/// The Graph API: `/me` names the page, `/me/messages` records what is sent.
pub struct FakeGraph {
    pub port: u16,
    sent: Arc<Mutex<Vec<Value>>>,
    _server: FakeHttp,
}

impl FakeGraph {
    pub fn start(page: &'static str) -> FakeGraph {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = sent.clone();
        let server = FakeHttp::start(move |request| {
            let answer = match request.path() {
                "/v23.0/me" => json!({"id": page, "name": "Test page"}),
                "/v23.0/me/messages" => {
                    log.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&request.body).unwrap_or(Value::Null));
                    json!({"recipient_id": "U1", "message_id": "m.1"})
                }
                _ => json!({"result": "success"}),
            };
            Response::json(200, &answer)
        });
        FakeGraph {
            port: server.port,
            sent,
            _server: server,
        }
    }

    /// The messages (not sender actions) sent so far.
    pub fn messages(&self) -> Vec<Value> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| c.get("message").cloned())
            .collect()
    }

    /// The sender actions (`typing_on`, `mark_seen`…) sent so far.
    pub fn sender_actions(&self) -> Vec<Value> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| c.get("sender_action").cloned())
            .collect()
    }

    /// Waits (at most 20 s) until `n` messages were sent; all of them.
    pub fn wait_messages(&self, n: usize) -> Vec<Value> {
        wait_until(Duration::from_secs(20), || self.messages().len() >= n);
        self.messages()
    }
}

/// Posts user `U1`'s text message to `page`, signed with `secret`; the webhook must say 200.
pub fn post_text(port: u16, secret: &str, page: &str, mid: &str, text: &str) {
    let body = json!({"object": "page", "entry": [{"id": page, "time": 1_700_000_000_000i64, "messaging": [
        {"sender": {"id": "U1"}, "recipient": {"id": page}, "timestamp": 1_700_000_000_000i64,
         "message": {"mid": mid, "seq": 1, "text": text}}]}]})
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let answer = request(
        port,
        "POST",
        WEBHOOK,
        &[
            ("Content-Type", "application/json"),
            ("X-Hub-Signature-256", &signature),
        ],
        body.as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
}
