//! A fake of Telegram's Bot API for the tests that play a bot over Telegram end to end.

use super::fake_http::{FakeHttp, Response};
use super::wait_until;
use serde_json::{json, Value};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    updates: Vec<Value>,
    next_id: i64,
    /// Every call but getUpdates: (method, params).
    calls: Vec<(String, Value)>,
}

/// Telegram's Bot API on loopback: `getUpdates` long-polls (at most 1 s) the updates the
/// test queues with [`FakeBotApi::text`]; every other call is recorded and succeeds.
#[derive(Clone)]
pub struct FakeBotApi {
    pub port: u16,
    shared: Arc<(Mutex<State>, Condvar)>,
    /// The server (absent in the copy its handler answers with).
    server: Option<Arc<FakeHttp>>,
}

impl FakeBotApi {
    pub fn start() -> FakeBotApi {
        let shared = Arc::new((
            Mutex::new(State {
                next_id: 100,
                ..State::default()
            }),
            Condvar::new(),
        ));
        let answering = FakeBotApi {
            port: 0,
            shared: shared.clone(),
            server: None,
        };
        let server = FakeHttp::start(move |request| {
            let params: Value = serde_json::from_slice(&request.body).unwrap_or(json!({}));
            let method = request.path().rsplit('/').next().unwrap_or("");
            Response::json(200, &answering.answer(method, &params))
        });
        FakeBotApi {
            port: server.port,
            shared,
            server: Some(Arc::new(server)),
        }
    }

    fn answer(&self, method: &str, params: &Value) -> Value {
        let (lock, cv) = &*self.shared;
        let mut state = lock.lock().unwrap();
        if method != "getUpdates" {
            state.calls.push((method.to_string(), params.clone()));
            return json!({"ok": true, "result": {"message_id": 1, "chat": {"id": params["chat_id"]}}});
        }
        if let Some(offset) = params["offset"].as_i64() {
            state
                .updates
                .retain(|u| u["update_id"].as_i64().unwrap() >= offset);
        }
        // A long poll of at most one second.
        let until = Instant::now() + Duration::from_secs(1);
        while state.updates.is_empty() && Instant::now() < until {
            state = cv
                .wait_timeout(state, until.saturating_duration_since(Instant::now()))
                .unwrap()
                .0;
        }
        json!({"ok": true, "result": state.updates.clone()})
    }

    pub fn text(&self, chat: i64, text: &str) {
        let (lock, cv) = &*self.shared;
        let mut state = lock.lock().unwrap();
        let id = state.next_id;
        state.next_id += 1;
        state.updates.push(json!({"update_id": id, "message": {"message_id": id, "date": 1_700_000_000,
            "from": {"id": chat, "is_bot": false, "first_name": "T"}, "chat": {"id": chat, "type": "private"}, "text": text}}));
        cv.notify_all();
    }

    /// The messages sent to `chat`, chat actions left out.
    pub fn sent(&self, chat: i64) -> Vec<(String, Value)> {
        self.shared
            .0
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(m, p)| m != "sendChatAction" && p["chat_id"] == json!(chat))
            .cloned()
            .collect()
    }

    /// Waits until `chat` has received `n` messages in all; returns the ones after `from`.
    pub fn wait_sent(&self, chat: i64, from: usize, n: usize) -> Vec<(String, Value)> {
        wait_until(Duration::from_secs(20), || {
            self.sent(chat).len() >= from + n
        });
        self.sent(chat).split_off(from.min(self.sent(chat).len()))
    }
}
