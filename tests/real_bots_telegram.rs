//! A real Botpress 12 bot (`../shared/botpress-bots/bluebot`) played over Telegram through a
//! fake Bot API on loopback: QnA answers that are content elements, single choices as reply
//! keyboards and carousels as one message per card, the way Botpress's Telegram renderers
//! show them (web renderers' text, quick replies as a keyboard).

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "555:BLUEtoken";

#[derive(Default)]
struct State {
    updates: Vec<Value>,
    next_id: i64,
    /// Every call but getUpdates: (method, params).
    calls: Vec<(String, Value)>,
}

#[derive(Clone)]
struct FakeBotApi {
    port: u16,
    shared: Arc<(Mutex<State>, Condvar)>,
}

impl FakeBotApi {
    fn start() -> FakeBotApi {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let fake = FakeBotApi {
            port: server.server_addr().to_ip().unwrap().port(),
            shared: Arc::new((
                Mutex::new(State {
                    next_id: 100,
                    ..State::default()
                }),
                Condvar::new(),
            )),
        };
        let f = fake.clone();
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                let f = f.clone();
                std::thread::spawn(move || f.handle(request));
            }
        });
        fake
    }

    fn handle(&self, mut request: tiny_http::Request) {
        let mut body = String::new();
        let _ = std::io::Read::read_to_string(request.as_reader(), &mut body);
        let params: Value = serde_json::from_str(&body).unwrap_or(json!({}));
        let method = request.url().rsplit('/').next().unwrap_or("").to_string();
        let answer = self.answer(&method, &params);
        let _ = request.respond(
            tiny_http::Response::from_string(answer.to_string()).with_header(
                "Content-Type: application/json"
                    .parse::<tiny_http::Header>()
                    .unwrap(),
            ),
        );
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

    fn text(&self, chat: i64, text: &str) {
        let (lock, cv) = &*self.shared;
        let mut state = lock.lock().unwrap();
        let id = state.next_id;
        state.next_id += 1;
        state.updates.push(json!({"update_id": id, "message": {"message_id": id, "date": 1_700_000_000,
            "from": {"id": chat, "is_bot": false, "first_name": "T"}, "chat": {"id": chat, "type": "private"}, "text": text}}));
        cv.notify_all();
    }

    /// The messages sent to `chat`, chat actions left out.
    fn sent(&self, chat: i64) -> Vec<(String, Value)> {
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
    fn wait_sent(&self, chat: i64, from: usize, n: usize) -> Vec<(String, Value)> {
        wait_until(Duration::from_secs(20), || {
            self.sent(chat).len() >= from + n
        });
        self.sent(chat).split_off(from.min(self.sent(chat).len()))
    }
}

fn bluebot_on_telegram(data: &Path, fake: &FakeBotApi) {
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/botpress-bots/bluebot"),
        &data.join("bots/bluebot"),
    );
    write(
        data,
        "global/config/channel-telegram.json",
        &json!({"apiBase": format!("http://127.0.0.1:{}", fake.port), "pollTimeout": "1s", "typingDelay": false}).to_string(),
    );
    write(
        data,
        "bots/bluebot/config/channel-telegram.json",
        &json!({"enabled": true, "botToken": TOKEN}).to_string(),
    );
}

fn message(text: &str) -> (String, Value) {
    (
        "sendMessage".into(),
        json!({"chat_id": 77, "text": text, "parse_mode": "Markdown"}),
    )
}

fn keyboard_message(text: &str, buttons: &[&str]) -> (String, Value) {
    let row: Vec<Value> = buttons.iter().map(|b| json!({ "text": b })).collect();
    let (method, mut params) = message(text);
    params["reply_markup"] =
        json!({"keyboard": [row], "one_time_keyboard": true, "resize_keyboard": true});
    (method, params)
}

#[test]
fn bluebot_plays_over_telegram() {
    let fake = FakeBotApi::start();
    let data = TempDir::new("bluebot-telegram");
    bluebot_on_telegram(data.path(), &fake);
    let server = Server::start(data.path(), &[]);

    fake.text(77, "hi");
    let greeting = fake.wait_sent(77, 0, 3);
    assert_eq!(
        greeting,
        vec![
            message(":-)"),
            message(
                "Hello, welcome to ABC Insurance Virtual Assistant. How can I assist you today? "
            ),
            keyboard_message(
                "Are you here with issues regarding",
                &[" Health insurance", "Vehicle insurance"]
            ),
        ],
        "{}",
        server.log()
    );

    fake.text(77, "1");
    let health = fake.wait_sent(77, 3, 1);
    assert_eq!(
        health,
        vec![keyboard_message(
            "In our new health policy we covered all medical-day care treatment such as skin treatment  and Lasik surgery. The policy  covers a time period of 5 years. ",
            &["Benefits", "Documents Required", "Insurance renuwal ", "Back"]
        )]
    );

    // A carousel of three cards without pictures or buttons: one message per card, the title
    // in bold, then the closing text.
    fake.text(77, "Benefits");
    let cards = fake.wait_sent(77, 4, 4);
    assert_eq!(
        cards,
        vec![
            message("*Cummilative Benifits*\nAn additional sum insured of 10% of annual sum insuured provided on each renewal for every claim-free year upto a maximum of 50%."),
            message("*Health Checkup cupon*\n1 cupon per indiviual policy and 2 cupon per floater policy will be offered."),
            message("*Tax Benifits*\nIncome tax exception for ₹1,00,000"),
            message("If you have any  Q&A please ask. Or type reboot to restart."),
        ]
    );
}
