//! The proactive messages API end to end: the real `botd` binary, a Converse user, a
//! Messenger user (signed webhook calls, a fake Graph API) and Telegram chats (a fake Bot API
//! with long polling), all on loopback. The bot speaks first: payloads, content and a flow,
//! with the user's state; Messenger's 24-hour and 7-day rules; a blocked Telegram bot
//! reported back; a repeated Idempotency-Key sending once; missing and wrong keys.

mod common;

use common::fake_http::{FakeHttp, Request, Response};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const KEY: &str = "proactive-key-0123456789";
const LIMIT: Duration = Duration::from_secs(20);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Gives `bot` the proactive API key [`KEY`].
fn allow_proactive(data: &Path, bot: &str) {
    let path = data.join("bots").join(bot).join("bot.config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["proactive"] = json!({"apiKeys": ["an-older-key-0123456789", KEY]});
    std::fs::write(path, config.to_string()).unwrap();
}

/// A call of the proactive API with `headers` (the API key is not added).
fn call(port: u16, path: &str, headers: &[(&str, &str)], body: &Value) -> Answer {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(port, "POST", path, &all, body.to_string().as_bytes())
}

/// `POST /api/v1/bots/{bot}/proactive/{channel}/{user}/{what}` with the right key.
fn speak(port: u16, bot: &str, channel: &str, user: &str, what: &str, body: &Value) -> Answer {
    speak_with(port, bot, channel, user, what, body, "")
}

fn speak_with(
    port: u16,
    bot: &str,
    channel: &str,
    user: &str,
    what: &str,
    body: &Value,
    query: &str,
) -> Answer {
    call(
        port,
        &format!("/api/v1/bots/{bot}/proactive/{channel}/{user}/{what}{query}"),
        &[("X-BP-Api-Key", KEY)],
        body,
    )
}

fn status_of(port: u16, bot: &str, id: &str) -> Answer {
    request(
        port,
        "GET",
        &format!("/api/v1/bots/{bot}/proactive/messages/{id}"),
        &[("X-BP-Api-Key", KEY)],
        b"",
    )
}

/// The error envelope of a refused call.
fn assert_error(answer: &Answer, status: u16, kind: &str, message_part: &str) {
    assert_eq!(answer.status, status, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["statusCode"], status, "{body}");
    assert_eq!(body["type"], kind, "{body}");
    let message = body["message"].as_str().unwrap_or("");
    assert!(
        message.contains(message_part),
        "{message:?} should contain {message_part:?}"
    );
}

fn greeting_ok(text: &str, name: &str) -> bool {
    [
        format!("👋, {name}!"),
        format!("Hello, {name}!"),
        format!("Welcome to Botpress, {name}!"),
    ]
    .contains(&text.to_string())
}

// ---------------------------------------------------------------------------------------
// Converse: keys, validation, the mailbox, Idempotency-Key
// ---------------------------------------------------------------------------------------

#[test]
fn converse_users_get_proactive_messages_first_and_keys_are_checked() {
    let data = data_copy("proactive-converse");
    allow_proactive(data.path(), "welcome-bot");
    // A second bot without keys: the API is off for it.
    let other = data.path().join("bots/other-bot");
    copy_dir(&data.path().join("bots/welcome-bot"), &other);
    let config = std::fs::read_to_string(other.join("bot.config.json"))
        .unwrap()
        .replace("\"welcome-bot\"", "\"other-bot\"");
    let mut config: Value = serde_json::from_str(&config).unwrap();
    config.as_object_mut().unwrap().remove("proactive");
    std::fs::write(other.join("bot.config.json"), config.to_string()).unwrap();
    let server = Server::start(data.path(), &[]);
    let port = server.port;
    let hello = json!({"payloads": [{"type": "text", "text": "Hi from the bot"}]});
    let path = "/api/v1/bots/welcome-bot/proactive/api/ann/messages";

    // Authentication: none, a wrong key, a bot without keys.
    assert_error(
        &call(port, path, &[], &hello),
        401,
        "UnauthorizedError",
        "X-BP-Api-Key",
    );
    assert_error(
        &call(port, path, &[("X-BP-Api-Key", "not-the-key")], &hello),
        403,
        "ForbiddenError",
        "not valid",
    );
    assert_error(
        &speak(port, "other-bot", "api", "ann", "messages", &hello),
        403,
        "ForbiddenError",
        "proactive.apiKeys",
    );
    // The Converse API keys are not proactive keys, nor is the secured route's token.
    let token = token(data.path(), &[]);
    let bearer = format!("Bearer {token}");
    assert_eq!(
        call(port, path, &[("Authorization", &bearer)], &hello).status,
        401
    );
    assert_eq!(
        speak(port, "no-such-bot", "api", "ann", "messages", &hello).status,
        404
    );

    // Validation, with Joi's words in the error envelope.
    let bad = |body: Value, part: &str| {
        let a = speak(port, "welcome-bot", "api", "ann", "messages", &body);
        assert_error(&a, 400, "BadRequestError", part);
    };
    bad(
        json!({}),
        "\"value\" must contain at least one of [payloads, contentId, contentType]",
    );
    bad(
        json!({"payloads": [{"text": "a"}], "contentType": "builtin_text"}),
        "\"value\" contains a conflict between exclusive peers [payloads, contentId, contentType]",
    );
    bad(
        json!({"payloads": []}),
        "child \"payloads\" fails because [\"payloads\" must contain at least 1 items]",
    );
    bad(
        json!({"payloads": ["x"]}),
        "\"payloads\" at position 0 fails because [\"0\" must be an object]",
    );
    bad(
        json!({"contentId": "builtin_text-nope"}),
        "content element \"builtin_text-nope\" does not exist",
    );
    bad(
        json!({"payloads": [{"text": "a"}], "colour": "red"}),
        "\"colour\" is not allowed",
    );
    bad(
        json!({"contentType": "builtin_nothing", "args": {"text": "a"}}),
        "the content cannot be rendered",
    );
    bad(
        json!({"payloads": [{"text": "a"}], "tag": "HUMAN_AGENT"}),
        "\"tag\" is only for the messenger channel",
    );
    let flow = |body: Value, part: &str| {
        let a = speak(port, "welcome-bot", "api", "ann", "flows", &body);
        assert_error(&a, 400, "BadRequestError", part);
    };
    flow(
        json!({}),
        "child \"flow\" fails because [\"flow\" is required]",
    );
    flow(
        json!({"flow": "nope.flow.json"}),
        "flow \"nope.flow.json\" does not exist",
    );
    flow(
        json!({"flow": "main.flow.json", "node": "nope"}),
        "node \"nope\" does not exist",
    );
    let not_json = request(
        port,
        "POST",
        path,
        &[("Content-Type", "application/json"), ("X-BP-Api-Key", KEY)],
        b"{oops",
    );
    assert_eq!(not_json.status, 400);
    assert_error(
        &speak(port, "welcome-bot", "fax", "ann", "messages", &hello),
        404,
        "NotFoundError",
        "api, messenger, telegram",
    );

    // Ann gives her name; then the bot writes first, with her state in the template.
    assert_eq!(
        texts(&converse(port, "welcome-bot", "ann", "hi").json()),
        vec!["May I know your name please?"]
    );
    let greeted = texts(&converse(port, "welcome-bot", "ann", "Ann").json());
    assert!(greeting_ok(&greeted[0], "Ann"), "{greeted:?}");
    let first = speak(
        port,
        "welcome-bot",
        "api",
        "ann",
        "messages",
        &json!({"contentType": "builtin_text", "args": {"text": "Your order has shipped, {{user.nickname}}"}}),
    );
    assert_eq!(first.status, 202, "{}", first.text());
    let first = first.json();
    assert_eq!(first["status"], "waiting", "{first}");
    assert_eq!(first["channel"], "api");
    assert_eq!(first["userId"], "ann");
    let first_id = first["id"].as_str().unwrap().to_string();
    assert_eq!(
        status_of(port, "welcome-bot", &first_id).json()["status"],
        "waiting"
    );
    // Waiting is all a Converse message can be until the user's next request: a wait for
    // its outcome ends there (200), it does not run out (202).
    let waited = speak_with(
        port,
        "welcome-bot",
        "api",
        "cy",
        "messages",
        &hello,
        "?wait=10s",
    );
    assert_eq!(waited.status, 200, "{}", waited.text());
    assert_eq!(waited.json()["status"], "waiting");

    // The same Idempotency-Key twice: one message, the same answer; with another body: 422.
    let payload = json!({"payloads": [{"type": "text", "text": "Only once"}]});
    let with_key = |body: &Value| {
        call(
            port,
            path,
            &[("X-BP-Api-Key", KEY), ("Idempotency-Key", "order-42")],
            body,
        )
    };
    let once = with_key(&payload);
    assert_eq!(once.status, 202, "{}", once.text());
    assert_eq!(once.header("Idempotent-Replayed"), None);
    let again = with_key(&payload);
    assert_eq!(again.status, 202, "{}", again.text());
    assert_eq!(again.header("Idempotent-Replayed").as_deref(), Some("true"));
    assert_eq!(again.json()["id"], once.json()["id"]);
    assert_error(
        &with_key(&json!({"payloads": [{"type": "text", "text": "Something else"}]})),
        422,
        "UnprocessableEntity",
        "Idempotency-Key",
    );

    // Ann's next request: the kept messages first, in order, each once, then the answer.
    let next = converse(port, "welcome-bot", "ann", "hello again").json();
    let got = texts(&next);
    assert_eq!(got[0], "Your order has shipped, Ann", "{got:?}");
    assert_eq!(got[1], "Only once", "{got:?}");
    assert!(
        got[2..]
            .iter()
            .all(|t| t != "Only once" && !t.contains("shipped")),
        "{got:?}"
    );
    assert!(got.len() > 2, "the turn's own answer is missing: {got:?}");
    assert_eq!(
        status_of(port, "welcome-bot", &first_id).json()["status"],
        "sent"
    );
    // Taken once: the request after has only its own answer.
    let after = texts(&converse(port, "welcome-bot", "ann", "and again").json());
    assert!(
        after
            .iter()
            .all(|t| t != "Only once" && !t.contains("shipped")),
        "{after:?}"
    );
    // A retry after delivery still sends nothing new.
    assert_eq!(
        with_key(&payload).header("Idempotent-Replayed").as_deref(),
        Some("true")
    );
    let last = texts(&converse(port, "welcome-bot", "ann", "one more").json());
    assert!(last.iter().all(|t| t != "Only once"), "{last:?}");
    assert_eq!(status_of(port, "welcome-bot", "0123").status, 404);

    // Kept across a restart (SIGKILL): the store holds them.
    let bob = speak(port, "welcome-bot", "api", "bob", "messages", &hello);
    assert_eq!(bob.status, 202);
    drop(server);
    let server = Server::start(data.path(), &[]);
    let got = texts(&converse(server.port, "welcome-bot", "bob", "hi").json());
    assert_eq!(got, vec!["Hi from the bot", "May I know your name please?"]);
}

// ---------------------------------------------------------------------------------------
// Messenger: the fake Graph API, signed webhooks, the 24-hour and 7-day rules
// ---------------------------------------------------------------------------------------

const SECRET: &str = "app-secret-for-tests";
const WEBHOOK: &str = "/api/v1/bots/___/mod/channel-messenger/webhook";

struct FakeGraph {
    _server: FakeHttp,
    port: u16,
    /// The bodies of `POST /me/messages`, in arrival order.
    sends: Arc<Mutex<Vec<Value>>>,
}

impl FakeGraph {
    fn start() -> FakeGraph {
        let sends: Arc<Mutex<Vec<Value>>> = Arc::default();
        let server = {
            let sends = sends.clone();
            FakeHttp::start(move |request| {
                let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
                let answer = match request.path() {
                    "/v23.0/me" => json!({"id": "PAGE", "name": "Page"}),
                    "/v23.0/me/messages" => {
                        sends.lock().unwrap().push(body.clone());
                        json!({"recipient_id": body["recipient"]["id"], "message_id": "m.1"})
                    }
                    _ => json!({"result": "success"}),
                };
                Response::json(200, &answer)
            })
        };
        FakeGraph {
            port: server.port,
            _server: server,
            sends,
        }
    }

    /// The message calls (not sender actions) to `psid`.
    fn messages(&self, psid: &str) -> Vec<Value> {
        self.sends
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b["recipient"]["id"] == psid && b.get("message").is_some())
            .cloned()
            .collect()
    }

    fn wait_messages(&self, psid: &str, n: usize) -> Vec<Value> {
        wait_until(LIMIT, || self.messages(psid).len() >= n);
        self.messages(psid)
    }
}

/// A signed webhook delivery of one text from `psid`, sent at `at` (unix ms).
fn webhook_text(port: u16, psid: &str, mid: &str, text: &str, at: i64) -> Answer {
    let body = json!({"object": "page", "entry": [{"id": "PAGE", "time": at, "messaging": [
        {"sender": {"id": psid}, "recipient": {"id": "PAGE"}, "timestamp": at,
         "message": {"mid": mid, "seq": 1, "text": text}}]}]})
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    request(
        port,
        "POST",
        WEBHOOK,
        &[
            ("Content-Type", "application/json"),
            ("X-Hub-Signature-256", &signature),
        ],
        body.as_bytes(),
    )
}

#[test]
fn messenger_rules_inside_the_window_with_the_human_agent_tag_and_after_seven_days() {
    let graph = FakeGraph::start();
    let data = data_copy("proactive-messenger");
    allow_proactive(data.path(), "welcome-bot");
    let global = json!({"appSecret": SECRET, "verifyToken": "verify", "graphApiBase": format!("http://127.0.0.1:{}", graph.port), "typingDelay": false});
    write(
        data.path(),
        "global/config/channel-messenger.json",
        &global.to_string(),
    );
    write(
        data.path(),
        "bots/welcome-bot/config/channel-messenger.json",
        &json!({"enabled": true, "accessToken": "TOKEN"}).to_string(),
    );
    let server = Server::start(data.path(), &[("EXTERNAL_URL", "https://bots.example.org")]);
    let port = server.port;
    assert!(
        wait_until(LIMIT, || server.log().contains("answers page PAGE")),
        "{}",
        server.log()
    );

    // Three users, whose last messages are an hour, three days and eight days old.
    let hour = 3600 * 1000;
    let users = [("U1", hour), ("U2", 72 * hour), ("U3", 8 * 24 * hour)];
    for (psid, age) in users {
        let a = webhook_text(port, psid, &format!("mid-{psid}"), "hi", now_ms() - age);
        assert_eq!(a.status, 200, "{}", a.text());
    }
    for (psid, _) in users {
        let first = graph.wait_messages(psid, 1);
        assert_eq!(first[0]["message"]["text"], "May I know your name please?");
    }
    let notice = json!({"payloads": [{"text": "Your table is ready"}]});

    // Inside the window: sent as an update, without a tag; `wait` reports it sent.
    let inside = speak_with(
        port,
        "welcome-bot",
        "messenger",
        "U1",
        "messages",
        &notice,
        "?wait=5s",
    );
    assert_eq!(inside.status, 200, "{}", inside.text());
    assert_eq!(inside.json()["status"], "sent");
    let sent = graph.wait_messages("U1", 2);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1]["message"]["text"], "Your table is ready");
    assert_eq!(sent[1]["messaging_type"], "UPDATE");
    assert!(sent[1].get("tag").is_none(), "{}", sent[1]);

    // Three days later: refused without the tag, sent with it.
    let untagged = speak(port, "welcome-bot", "messenger", "U2", "messages", &notice);
    assert_error(&untagged, 409, "ConflictError", "HUMAN_AGENT");
    assert!(
        untagged.json()["message"]
            .as_str()
            .unwrap()
            .contains("72 hours"),
        "{}",
        untagged.text()
    );
    let tagged =
        json!({"payloads": [{"text": "An agent here: how can I help?"}], "tag": "HUMAN_AGENT"});
    let a = speak(port, "welcome-bot", "messenger", "U2", "messages", &tagged);
    assert_eq!(a.status, 202, "{}", a.text());
    assert_eq!(a.json()["tag"], "HUMAN_AGENT");
    let sent = graph.wait_messages("U2", 2);
    assert_eq!(sent[1]["message"]["text"], "An agent here: how can I help?");
    assert_eq!(sent[1]["messaging_type"], "MESSAGE_TAG");
    assert_eq!(sent[1]["tag"], "HUMAN_AGENT");
    // A content element of the bot, tagged: rendered for Messenger, no sender actions.
    let element = json!({"contentId": "builtin_text-z0J9qh", "tag": "HUMAN_AGENT"});
    let a = speak_with(
        port,
        "welcome-bot",
        "messenger",
        "U2",
        "messages",
        &element,
        "?wait=5s",
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let sent = graph.wait_messages("U2", 3);
    assert_eq!(sent[2]["message"]["text"], "May I know your name please?");
    assert_eq!(sent[2]["tag"], "HUMAN_AGENT");
    let typing_for_u2 = graph
        .sends
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b["recipient"]["id"] == "U2" && b["sender_action"] == "typing_on")
        .count();
    assert_eq!(
        typing_for_u2, 1,
        "only the webhook turn's reply may show typing"
    );

    // Eight days later: refused even with the tag; a user who never wrote: refused.
    assert_error(
        &speak(port, "welcome-bot", "messenger", "U3", "messages", &tagged),
        409,
        "ConflictError",
        "8 days",
    );
    assert_error(
        &speak(port, "welcome-bot", "messenger", "U9", "messages", &notice),
        409,
        "ConflictError",
        "never written",
    );
    // A new message from U3 (their name: greeting, first time, a tip) opens the window again.
    let a = webhook_text(port, "U3", "mid-U3-2", "Uma", now_ms());
    assert_eq!(a.status, 200);
    assert_eq!(graph.wait_messages("U3", 4).len(), 4);
    let a = speak(port, "welcome-bot", "messenger", "U3", "messages", &notice);
    assert_eq!(a.status, 202, "{}", a.text());
    let sent = graph.wait_messages("U3", 5);
    assert_eq!(sent.len(), 5);
    assert_eq!(sent[4]["message"]["text"], "Your table is ready");
    assert_eq!(sent[4]["messaging_type"], "UPDATE");
    assert_eq!(graph.messages("U1").len(), 2);
}

// ---------------------------------------------------------------------------------------
// Telegram: the fake Bot API, a flow started first, a blocked bot
// ---------------------------------------------------------------------------------------

const TG_TOKEN: &str = "555:PROACTIVEtoken";
/// welcome-bot's many-times node, on the second visit.
const MANY_TIMES: &str = "We already spoke 1 times!";

#[derive(Default)]
struct TgState {
    queue: Vec<Value>,
    next_id: i64,
    /// Chats that blocked the bot: sendMessage answers 403.
    blocked: HashSet<i64>,
    /// Texts sent per chat, in order.
    sent: HashMap<i64, Vec<String>>,
}

#[derive(Clone)]
struct FakeTelegram {
    port: u16,
    shared: Arc<(Mutex<TgState>, Condvar)>,
    /// The server (absent in the copy its handler answers with).
    _server: Option<Arc<FakeHttp>>,
}

impl FakeTelegram {
    fn start() -> FakeTelegram {
        let fake = FakeTelegram {
            port: 0,
            _server: None,
            shared: Arc::new((
                Mutex::new(TgState {
                    next_id: 100,
                    ..TgState::default()
                }),
                Condvar::new(),
            )),
        };
        let answering = fake.clone();
        let server = FakeHttp::start(move |request| answering.handle(request));
        FakeTelegram {
            port: server.port,
            _server: Some(Arc::new(server)),
            ..fake
        }
    }

    fn handle(&self, request: Request) -> Response {
        let params: Value = serde_json::from_slice(&request.body).unwrap_or(json!({}));
        let method = request.path().rsplit('/').next().unwrap_or("");
        let (status, answer) = self.answer(request.url.contains(TG_TOKEN), method, &params);
        Response::json(status, &answer)
    }

    fn answer(&self, known: bool, method: &str, params: &Value) -> (u16, Value) {
        if !known {
            return (
                401,
                json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
            );
        }
        let (lock, cv) = &*self.shared;
        let mut state = lock.lock().unwrap();
        match method {
            "getUpdates" => {
                if let Some(offset) = params["offset"].as_i64() {
                    state
                        .queue
                        .retain(|u| u["update_id"].as_i64().unwrap() >= offset);
                }
                let until = Instant::now()
                    + Duration::from_secs(params["timeout"].as_u64().unwrap_or(0).min(5));
                while state.queue.is_empty() && Instant::now() < until {
                    let left = until.saturating_duration_since(Instant::now());
                    state = cv.wait_timeout(state, left).unwrap().0;
                }
                (200, json!({"ok": true, "result": state.queue.clone()}))
            }
            "sendMessage" => {
                let chat = params["chat_id"].as_i64().unwrap_or(0);
                if state.blocked.contains(&chat) {
                    return (
                        403,
                        json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
                    );
                }
                let text = params["text"].as_str().unwrap_or("").to_string();
                state.sent.entry(chat).or_default().push(text.clone());
                (
                    200,
                    json!({"ok": true, "result": {"message_id": 1, "chat": {"id": chat}, "text": text}}),
                )
            }
            _ => (200, json!({"ok": true, "result": true})),
        }
    }

    fn user_says(&self, chat: i64, text: &str) {
        let (lock, cv) = &*self.shared;
        let mut state = lock.lock().unwrap();
        let id = state.next_id;
        state.next_id += 1;
        state.queue.push(json!({"update_id": id, "message": {"message_id": id, "date": 1_700_000_000,
            "from": {"id": chat, "is_bot": false, "first_name": "T"}, "chat": {"id": chat, "type": "private"}, "text": text}}));
        cv.notify_all();
    }

    fn texts(&self, chat: i64) -> Vec<String> {
        self.shared
            .0
            .lock()
            .unwrap()
            .sent
            .get(&chat)
            .cloned()
            .unwrap_or_default()
    }

    fn wait_texts(&self, chat: i64, n: usize) -> Vec<String> {
        wait_until(LIMIT, || self.texts(chat).len() >= n);
        self.texts(chat)
    }
}

#[test]
fn telegram_flows_started_first_continue_with_the_answer_and_a_blocked_bot_is_reported() {
    let fake = FakeTelegram::start();
    fake.shared.0.lock().unwrap().blocked.insert(666);
    let data = data_copy("proactive-telegram");
    allow_proactive(data.path(), "welcome-bot");
    let global = json!({"apiBase": format!("http://127.0.0.1:{}", fake.port), "pollTimeout": "1s", "typingDelay": false});
    write(
        data.path(),
        "global/config/channel-telegram.json",
        &global.to_string(),
    );
    write(
        data.path(),
        "bots/welcome-bot/config/channel-telegram.json",
        &json!({"botToken": TG_TOKEN}).to_string(),
    );
    let server = Server::start(data.path(), &[]);
    let port = server.port;
    assert!(
        wait_until(LIMIT, || server.log().contains("Telegram enabled for")),
        "{}",
        server.log()
    );

    // The bot starts the main flow for a chat that never wrote: its first node asks.
    let started = speak_with(
        port,
        "welcome-bot",
        "telegram",
        "501",
        "flows",
        &json!({"flow": "main.flow.json"}),
        "?wait=5s",
    );
    assert_eq!(started.status, 200, "{}", started.text());
    assert_eq!(started.json()["status"], "sent");
    assert_eq!(
        fake.wait_texts(501, 1),
        vec!["May I know your name please?"]
    );
    // The answer continues that flow: the name is taken, not asked again.
    fake.user_says(501, "Zoe");
    let texts = fake.wait_texts(501, 4);
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert!(greeting_ok(&texts[1], "Zoe"), "{texts:?}");
    assert_eq!(texts[2], "This is the first time we speak 🤖");
    // A node of a flow, with the state the conversation now has (the name, one visit).
    let node = json!({"flow": "main.flow.json", "node": "welcome"});
    let a = speak_with(
        port,
        "welcome-bot",
        "telegram",
        "501",
        "flows",
        &node,
        "?wait=5s",
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let texts = fake.wait_texts(501, 6);
    assert_eq!(texts.len(), 6, "{texts:?}");
    assert!(greeting_ok(&texts[4], "Zoe"), "{texts:?}");
    assert_eq!(texts[5], MANY_TIMES);

    // A chat that blocked the bot: the 403 comes back, in the wait and in the status.
    let notice = json!({"payloads": [{"type": "text", "text": "Anyone there?"}]});
    let blocked = speak_with(
        port,
        "welcome-bot",
        "telegram",
        "666",
        "messages",
        &notice,
        "?wait=5s",
    );
    assert_eq!(blocked.status, 200, "{}", blocked.text());
    let outcome = blocked.json();
    assert_eq!(outcome["status"], "failed", "{outcome}");
    assert_eq!(outcome["error"]["code"], 403, "{outcome}");
    assert_eq!(
        outcome["error"]["description"],
        "Forbidden: bot was blocked by the user"
    );
    let id = outcome["id"].as_str().unwrap();
    let status = status_of(port, "welcome-bot", id);
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["status"], "failed");
    assert_eq!(status.json()["error"]["code"], 403);

    // Without `wait`: queued at once, then sent, in order after the chat's other replies.
    let queued = speak(port, "welcome-bot", "telegram", "777", "messages", &notice);
    assert_eq!(queued.status, 202, "{}", queued.text());
    let id = queued.json()["id"].as_str().unwrap().to_string();
    assert!(wait_until(LIMIT, || status_of(port, "welcome-bot", &id)
        .json()["status"]
        == "sent"));
    assert_eq!(fake.texts(777), vec!["Anyone there?"]);
}
