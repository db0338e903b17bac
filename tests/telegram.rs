//! The Telegram channel end to end: the real `botd` binary against a fake Bot API server
//! (`common::fake_http` on loopback) that does real long polling — waits up to `timeout`, honours
//! `offset`, gives unconfirmed updates again, answers 409 to a second concurrent poller, 429
//! with `retry_after` when told to, and 401 to a token it does not know.

mod common;

use common::fake_http::{FakeHttp, Request, Response};
use common::{
    add_timeout_node, copy_dir, data_copy, database, rows_of, wait_until, write, Server, TempDir,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// The fake Bot API
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Call {
    token: String,
    method: String,
    params: Value,
    at: Instant,
}

#[derive(Default)]
struct Account {
    queue: Vec<Value>,
    next_id: i64,
    polling: bool,
    /// Answer the next getUpdates with 429 and this retry_after.
    throttle_next_poll: Option<u64>,
    /// Answer every getUpdates with this body at once (a broken or hostile Bot API).
    canned_poll: Option<Value>,
    /// Give every update again whatever the offset (a broken Bot API).
    ignore_offset: bool,
    /// Answer the next sendMessage with 429 and this retry_after.
    throttle_next_send: Option<u64>,
}

#[derive(Default)]
struct State {
    accounts: HashMap<String, Account>,
    calls: Vec<Call>,
}

#[derive(Clone)]
struct FakeTelegram {
    port: u16,
    shared: Arc<(Mutex<State>, Condvar)>,
    /// The server (absent in the copy its handler answers with).
    _server: Option<Arc<FakeHttp>>,
}

impl FakeTelegram {
    fn start(tokens: &[&str]) -> FakeTelegram {
        let mut state = State::default();
        for t in tokens {
            state.accounts.insert(
                t.to_string(),
                Account {
                    next_id: 1000,
                    ..Account::default()
                },
            );
        }
        let fake = FakeTelegram {
            port: 0,
            shared: Arc::new((Mutex::new(state), Condvar::new())),
            _server: None,
        };
        let answering = fake.clone();
        let server = FakeHttp::start(move |request| answering.handle(request));
        FakeTelegram {
            port: server.port,
            _server: Some(Arc::new(server)),
            ..fake
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn handle(&self, request: Request) -> Response {
        let params: Value = serde_json::from_slice(&request.body).unwrap_or(json!({}));
        let rest = request.path().strip_prefix("/bot").unwrap_or("");
        let (token, method) = rest.rsplit_once('/').unwrap_or(("", ""));
        let (status, answer) = self.answer(token, method, &params);
        Response::json(status, &answer)
    }

    fn answer(&self, token: &str, method: &str, params: &Value) -> (u16, Value) {
        let (lock, cv) = &*self.shared;
        let mut state = lock.lock().unwrap();
        state.calls.push(Call {
            token: token.into(),
            method: method.into(),
            params: params.clone(),
            at: Instant::now(),
        });
        let Some(account) = state.accounts.get_mut(token) else {
            return (
                401,
                json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
            );
        };
        match method {
            "getUpdates" => {
                if let Some(body) = &account.canned_poll {
                    return (200, body.clone());
                }
                if let Some(retry) = account.throttle_next_poll.take() {
                    return (
                        429,
                        json!({"ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {retry}"), "parameters": {"retry_after": retry}}),
                    );
                }
                if account.polling {
                    return (
                        409,
                        json!({"ok": false, "error_code": 409, "description": "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"}),
                    );
                }
                // Updates without an integer id are never confirmed, so they stay, as they
                // would on a broken server.
                if let Some(offset) = params["offset"].as_i64().filter(|_| !account.ignore_offset) {
                    account
                        .queue
                        .retain(|u| u["update_id"].as_i64().is_none_or(|id| id >= offset));
                }
                let timeout = Duration::from_secs(params["timeout"].as_u64().unwrap_or(0).min(10));
                let limit = params["limit"].as_u64().unwrap_or(100) as usize;
                account.polling = true;
                let until = Instant::now() + timeout;
                loop {
                    let account = state.accounts.get_mut(token).unwrap();
                    let now = Instant::now();
                    if !account.queue.is_empty() || now >= until {
                        account.polling = false;
                        let batch: Vec<Value> = account.queue.iter().take(limit).cloned().collect();
                        return (200, json!({"ok": true, "result": batch}));
                    }
                    state = cv.wait_timeout(state, until - now).unwrap().0;
                }
            }
            "sendMessage" => {
                if let Some(retry) = account.throttle_next_send.take() {
                    return (
                        429,
                        json!({"ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {retry}"), "parameters": {"retry_after": retry}}),
                    );
                }
                let text = params["text"].as_str().unwrap_or("");
                if text.contains("BADMD") && params.get("parse_mode").is_some() {
                    return (
                        400,
                        json!({"ok": false, "error_code": 400, "description": "Bad Request: can't parse entities"}),
                    );
                }
                (
                    200,
                    json!({"ok": true, "result": {"message_id": 1, "chat": {"id": params["chat_id"]}, "text": text}}),
                )
            }
            _ => (200, json!({"ok": true, "result": true})),
        }
    }

    fn push(&self, token: &str, make: impl FnOnce(i64) -> Value) -> i64 {
        let (lock, cv) = &*self.shared;
        let mut state = lock.lock().unwrap();
        let account = state.accounts.get_mut(token).unwrap();
        let id = account.next_id;
        account.next_id += 1;
        account.queue.push(make(id));
        cv.notify_all();
        id
    }

    /// Queues `update` as it is, whatever its id.
    fn push_raw(&self, token: &str, update: Value) {
        let (lock, cv) = &*self.shared;
        let mut state = lock.lock().unwrap();
        state.accounts.get_mut(token).unwrap().queue.push(update);
        cv.notify_all();
    }

    fn set_canned_poll(&self, token: &str, body: Option<Value>) {
        let mut state = self.shared.0.lock().unwrap();
        state.accounts.get_mut(token).unwrap().canned_poll = body;
    }

    /// The getUpdates calls of `token` made at or after `since`.
    fn polls_since(&self, token: &str, since: Instant) -> Vec<Call> {
        self.calls(token)
            .into_iter()
            .filter(|c| c.method == "getUpdates" && c.at >= since)
            .collect()
    }

    fn text(&self, token: &str, chat: i64, from: i64, text: &str) -> i64 {
        self.push(token, |id| {
            json!({"update_id": id, "message": {"message_id": id, "date": 1_700_000_000,
                "from": {"id": from, "is_bot": false, "first_name": "T"}, "chat": {"id": chat, "type": "private"}, "text": text}})
        })
    }

    fn calls(&self, token: &str) -> Vec<Call> {
        self.shared
            .0
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.token == token)
            .cloned()
            .collect()
    }

    /// The messages sent to `chat`: `(method, params)`, chat actions left out.
    fn sent(&self, token: &str, chat: i64) -> Vec<Call> {
        self.calls(token)
            .into_iter()
            .filter(|c| {
                c.method.starts_with("send")
                    && c.method != "sendChatAction"
                    && c.params["chat_id"] == json!(chat)
            })
            .filter(|c| {
                !(c.params["text"].as_str().unwrap_or("").contains("BADMD")
                    && c.params.get("parse_mode").is_some())
            })
            .collect()
    }

    fn texts(&self, token: &str, chat: i64) -> Vec<String> {
        self.sent(token, chat)
            .iter()
            .filter_map(|c| c.params["text"].as_str().map(str::to_string))
            .collect()
    }

    fn wait_texts(&self, token: &str, chat: i64, n: usize, limit: Duration) -> Vec<String> {
        wait_until(limit, || self.texts(token, chat).len() >= n);
        self.texts(token, chat)
    }
}

// ---------------------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------------------

/// The global channel-telegram file: the fake's address, short polls.
fn global_config(data: &Path, fake: &FakeTelegram, extra: Value) {
    let mut config = json!({"apiBase": fake.base(), "pollTimeout": "1s"});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    write(
        data,
        "global/config/channel-telegram.json",
        &config.to_string(),
    );
}

/// A copy of welcome-bot named `id` whose only flow says what it received, plus a choice,
/// a card and an image on demand.
fn echo_bot(data: &Path, id: &str) {
    let dir = data.join("bots").join(id);
    copy_dir(&data.join("bots/welcome-bot"), &dir);
    let config = std::fs::read_to_string(dir.join("bot.config.json"))
        .unwrap()
        .replace("\"welcome-bot\"", &format!("\"{id}\""));
    std::fs::write(dir.join("bot.config.json"), config).unwrap();
    let _ = std::fs::remove_dir_all(dir.join("flows"));
    let _ = std::fs::remove_dir_all(dir.join("content-elements"));
    let _ = std::fs::remove_dir_all(dir.join("intents"));
    let leaf = |name: &str, say: &str| json!({"id": name, "name": name, "onEnter": [format!("say #!{say}")], "onReceive": null, "next": [{"condition": "true", "node": "END"}]});
    let flow = json!({"version": "0.0.1", "flow": "main.flow.json", "startNode": "entry", "catchAll": {"onReceive": [], "next": []},
        "nodes": [
            {"id": "entry", "name": "entry", "onEnter": [], "onReceive": null, "next": [
                {"condition": "event.preview === 'choice'", "node": "choice"},
                {"condition": "event.preview === 'card'", "node": "card"},
                {"condition": "event.preview === 'image'", "node": "image"},
                {"condition": "true", "node": "echo"}]},
            leaf("echo", "builtin_text-echo"), leaf("choice", "builtin_single-choice-c"),
            leaf("card", "builtin_card-k"), leaf("image", "builtin_image-i")]});
    write(&dir, "flows/main.flow.json", &flow.to_string());
    write(&dir, "flows/main.ui.json", r#"{"nodes":[]}"#);
    let el = |id: &str, form: Value| json!([{"id": id, "formData": form, "createdBy": "t", "createdOn": "2019-04-24T18:00:00.000Z", "modifiedOn": null}]);
    write(&dir, "content-elements/builtin_text.json", &el("builtin_text-echo",
        json!({"text$en": "{{{event.type}}}|{{{event.preview}}}|{{{event.target}}}|{{{event.threadId}}}"})).to_string());
    write(&dir, "content-elements/builtin_single-choice.json", &el("builtin_single-choice-c",
        json!({"text$en": "Pick one", "choices$en": [{"title": "Red", "value": "red"}, {"title": "Blue", "value": "blue"}], "typing$en": true})).to_string());
    write(&dir, "content-elements/builtin_card.json", &el("builtin_card-k",
        json!({"title$en": "Card", "subtitle$en": "Sub", "image$en": "https://example.org/p.png",
               "actions$en": [{"action": "Open URL", "title": "Site", "url": "https://example.org"},
                              {"action": "Postback", "title": "Pick", "payload": "PICKED"}]})).to_string());
    write(
        &dir,
        "content-elements/builtin_image.json",
        &el(
            "builtin_image-i",
            json!({"image$en": "https://example.org/cat.gif", "title$en": "A cat"}),
        )
        .to_string(),
    );
}

/// A data folder whose echo-bot answers Telegram as `token`, with `global` as the global
/// Telegram configuration.
fn echo_data(tag: &str, fake: &FakeTelegram, token: &str, global: Value) -> TempDir {
    let data = data_copy(tag);
    global_config(data.path(), fake, global);
    echo_bot(data.path(), "echo-bot");
    bot_token(data.path(), "echo-bot", json!({"botToken": token}));
    data
}

fn bot_token(data: &Path, bot: &str, config: Value) {
    write(
        data,
        &format!("bots/{bot}/config/channel-telegram.json"),
        &config.to_string(),
    );
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Every update kind, every payload kind, two bots polling at once and a third with a bad
/// token that stops alone; the welcome-bot transcript with typing and pacing on.
#[test]
fn updates_replies_two_bots_and_a_bad_token() {
    let (echo_t, welcome_t, bad_t) = ("111:ECHOtoken", "222:WELCOMEtoken", "333:BADtoken");
    let fake = FakeTelegram::start(&[echo_t, welcome_t]);
    let data = data_copy("tg-kinds");
    global_config(data.path(), &fake, json!({}));
    echo_bot(data.path(), "echo-bot");
    echo_bot(data.path(), "bad-bot");
    // The one-line file of the Botpress docs: a botToken and no "enabled" key.
    bot_token(data.path(), "welcome-bot", json!({"botToken": welcome_t}));
    bot_token(
        data.path(),
        "echo-bot",
        json!({"botToken": echo_t, "enabled": true, "typingDelay": false}),
    );
    bot_token(data.path(), "bad-bot", json!({"botToken": bad_t}));
    let server = Server::start(data.path(), &[]);

    // Echo bot: one chat, every update kind, in order.
    let (chat, from) = (100, 500);
    fake.text(echo_t, chat, from, "/start");
    fake.text(echo_t, chat, from, "/help@EchoBot");
    fake.text(echo_t, chat, from, "hello *there*");
    fake.push(echo_t, |id| {
        json!({"update_id": id, "callback_query": {"id": "cbq-1", "from": {"id": from}, "data": "PICKED",
            "message": {"message_id": 9, "chat": {"id": chat, "type": "private"}, "date": 1}}})
    });
    fake.push(echo_t, |id| {
        json!({"update_id": id, "message": {"message_id": id, "date": 1, "from": {"id": from}, "chat": {"id": chat},
            "photo": [{"file_id": "AgAD", "width": 90, "height": 90}]}})
    });
    fake.text(echo_t, chat, from, "BADMD _unclosed");
    fake.text(echo_t, chat, from, "choice");
    fake.text(echo_t, chat, from, "card");
    fake.text(echo_t, chat, from, "image");

    // Welcome bot, at the same time, another chat.
    let wchat = 200;
    fake.text(welcome_t, wchat, wchat, "hi");
    // Bounded waits sized for `make smoke-arm` (qemu-user, where this took 15 s once).
    let first = fake.wait_texts(welcome_t, wchat, 1, Duration::from_secs(60));
    assert_eq!(
        first,
        vec!["May I know your name please?"],
        "{}",
        server.log()
    );
    fake.text(welcome_t, wchat, wchat, "Alice");
    let texts = fake.wait_texts(welcome_t, wchat, 4, Duration::from_secs(60));
    assert_eq!(texts.len(), 4, "{texts:?}\n{}", server.log());
    assert!(texts[1].contains("Alice"), "{texts:?}");
    assert_eq!(texts[2], "This is the first time we speak 🤖");
    assert_eq!(texts[3], "Try saying something like \"forget my name\"!");
    // typing before each text, and at most about one message a second in the chat.
    let calls: Vec<Call> = fake
        .calls(welcome_t)
        .into_iter()
        .filter(|c| c.params["chat_id"] == json!(wchat))
        .collect();
    let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "sendChatAction",
            "sendMessage",
            "sendChatAction",
            "sendMessage",
            "sendChatAction",
            "sendMessage",
            "sendChatAction",
            "sendMessage"
        ]
    );
    assert_eq!(calls[1].params["parse_mode"], "Markdown");
    let sends: Vec<Instant> = calls
        .iter()
        .filter(|c| c.method == "sendMessage")
        .map(|c| c.at)
        .collect();
    // A turn's messages go in a burst (see `a_turn_goes_in_a_burst…`): only the typing delay
    // before each one separates them.
    for pair in sends[1..].windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(450),
            "typing delay not waited: {:?}",
            pair[1] - pair[0]
        );
    }
    // The typing delay (true → 500 ms) is waited after each chat action.
    assert!(calls[1].at - calls[0].at >= Duration::from_millis(450));

    // The echo bot's chat, in order.
    // Eight texts: the card's photo and the image carry none (a wait for nine always ran out).
    let echo = fake.wait_texts(echo_t, chat, 8, Duration::from_secs(60));
    assert_eq!(
        &echo[..6],
        &[
            "start|/start|500|100",
            "help|/help@EchoBot|500|100",
            "message|hello *there*|500|100",
            "callback|PICKED|500|100",
            "message||500|100",
            "message|BADMD _unclosed|500|100",
        ],
        "{}",
        server.log()
    );
    let sent = fake.sent(echo_t, chat);
    // The Markdown fallback: refused with parse_mode, then sent plain.
    assert!(sent[5].params.get("parse_mode").is_none());
    assert!(sent[4].params["parse_mode"] == "Markdown");
    assert!(fake
        .calls(echo_t)
        .iter()
        .any(|c| c.method == "answerCallbackQuery" && c.params["callback_query_id"] == "cbq-1"));
    // Single choice: a one-time reply keyboard.
    assert_eq!(sent[6].params["text"], "Pick one");
    assert_eq!(
        sent[6].params["reply_markup"]["keyboard"],
        json!([[{"text": "Red"}, {"text": "Blue"}]])
    );
    assert_eq!(sent[6].params["reply_markup"]["one_time_keyboard"], true);
    assert!(
        sent[0].params.get("reply_markup").is_none(),
        "no empty reply_markup"
    );
    // Card: photo, then the title text with an inline keyboard.
    assert_eq!(
        (sent[7].method.as_str(), &sent[7].params["photo"]),
        ("sendPhoto", &json!("https://example.org/p.png"))
    );
    assert_eq!(sent[8].params["text"], "*Card*\nSub");
    assert_eq!(
        sent[8].params["reply_markup"]["inline_keyboard"],
        json!([[{"text": "Site", "url": "https://example.org"}, {"text": "Pick", "callback_data": "PICKED"}]])
    );
    wait_until(Duration::from_secs(10), || {
        fake.sent(echo_t, chat).len() >= 10
    });
    let sent = fake.sent(echo_t, chat);
    assert_eq!(sent[9].method, "sendAnimation");
    assert_eq!(sent[9].params["caption"], "A cat");

    // The bad token: one clear line, one call, nothing else stopped, never the token itself.
    let log = server.log();
    assert_eq!(log.matches("refused the bot token").count(), 1, "{log}");
    assert!(log.contains("bad-bot"));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fake.calls(bad_t).len(), 1, "the bad-token poller stopped");
    for t in [echo_t, welcome_t, bad_t] {
        assert!(!server.log().contains(t), "token {t} in the log");
    }
    // The offset is in the database, committed with its batch; no offset file any more.
    assert_eq!(rows_of(data.path(), "channel_state", "echo-bot"), 1);
    assert!(!data
        .path()
        .join("storage/telegram/echo-bot/offset.json")
        .exists());
}

/// The previous release's `offset.json` is imported: polling resumes after it, the file is
/// moved to `storage/imported-files/`, and the offset lives in the database from then on.
#[test]
fn an_old_offset_file_is_imported() {
    let token = "556:IMPORTtoken";
    let fake = FakeTelegram::start(&[token]);
    let data = echo_data(
        "tg-offset-import",
        &fake,
        token,
        json!({"typingDelay": false, "throttle": false}),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    write(
        data.path(),
        "storage/telegram/echo-bot/offset.json",
        &json!({"update_id": 41, "at": now}).to_string(),
    );
    let server = Server::start(data.path(), &[]);
    let polled = || {
        fake.calls(token)
            .into_iter()
            .filter(|c| c.method == "getUpdates")
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(10), || !polled().is_empty()),
        "{}",
        server.log()
    );
    assert_eq!(polled()[0].params["offset"], 42, "{}", server.log());
    assert!(!data
        .path()
        .join("storage/telegram/echo-bot/offset.json")
        .exists());
    assert!(data
        .path()
        .join("storage/imported-files/telegram/echo-bot/offset.json")
        .is_file());
    drop(server);
    let stored: String = database(data.path())
        .query_row(
            "SELECT value FROM channel_state WHERE bot = 'echo-bot' AND key = 'telegram-offset'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["update_id"], 41);
}

/// Items the previous release left on the queues, in its own shapes (`{bot, update, at}` in,
/// one call `{bot, chat, method, params, pause_ms, fallback, at}` out): played and sent
/// after the upgrade, then gone from the queues.
#[test]
fn items_the_previous_release_queued_are_played_and_sent() {
    let token = "557:LEGACYtoken";
    let fake = FakeTelegram::start(&[token]);
    let data = echo_data(
        "tg-legacy-items",
        &fake,
        token,
        json!({"typingDelay": false, "throttle": false}),
    );
    drop(Server::start(data.path(), &[]));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let update = json!({"update_id": 41, "message": {"message_id": 1, "from": {"id": 77},
        "chat": {"id": 77, "type": "private"}, "date": 1, "text": "queued before"}});
    let inbound = json!({"bot": "echo-bot", "update": update, "at": now});
    let outbound = json!({"bot": "echo-bot", "chat": "78", "method": "sendMessage",
        "params": {"chat_id": 78, "text": "left *from* before", "parse_mode": "Markdown"},
        "pause_ms": 0, "fallback": true, "at": now});
    {
        let db = database(data.path());
        db.execute(
            "INSERT INTO queue_items (queue, key, item, created_ms) VALUES ('telegram-in', 'echo-bot/77', ?1, 0), ('telegram-out', 'echo-bot/78', ?2, 0)",
            [inbound.to_string(), outbound.to_string()],
        )
        .unwrap();
    }
    let server = Server::start(data.path(), &[]);
    assert_eq!(
        fake.wait_texts(token, 77, 1, Duration::from_secs(20)),
        ["message|queued before|77|77"],
        "{}",
        server.log()
    );
    assert_eq!(
        fake.wait_texts(token, 78, 1, Duration::from_secs(20)),
        ["left *from* before"]
    );
    assert_eq!(fake.sent(token, 78)[0].params["parse_mode"], "Markdown");
    assert!(wait_until(Duration::from_secs(10), || {
        database(data.path())
            .query_row("SELECT count(*) FROM queue_items", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
            == 0
    }));
    let log = server.log();
    assert!(
        !log.contains("dead letter") && !log.contains("quarantine"),
        "{log}"
    );
}

/// Webhook mode: botd calls setWebhook with its public URL and a secret it made and keeps;
/// an update posted with the secret is committed and answered, a repeated update id is
/// acknowledged but played once (also after a restart), a missing or wrong secret gets 403
/// with the error envelope and is never played, and nothing polls.
#[test]
fn webhook_mode_sets_the_webhook_and_plays_each_update_once() {
    let token = "558:HOOKtoken";
    let fake = FakeTelegram::start(&[token]);
    let data = echo_data(
        "tg-webhook",
        &fake,
        token,
        json!({"typingDelay": false, "throttle": false}),
    );
    bot_token(
        data.path(),
        "echo-bot",
        json!({"botToken": token, "mode": "webhook"}),
    );
    let env = [("EXTERNAL_URL", "https://bot.example.org")];
    let set_webhooks = || {
        fake.calls(token)
            .into_iter()
            .filter(|c| c.method == "setWebhook")
            .collect::<Vec<_>>()
    };
    let server = Server::start(data.path(), &env);
    assert!(
        wait_until(Duration::from_secs(10), || !set_webhooks().is_empty()),
        "{}",
        server.log()
    );
    let params = set_webhooks()[0].params.clone();
    assert_eq!(
        params["url"],
        "https://bot.example.org/api/v1/bots/echo-bot/mod/channel-telegram/webhook"
    );
    assert_eq!(
        params["allowed_updates"],
        json!(["message", "callback_query"])
    );
    let secret = params["secret_token"].as_str().unwrap().to_string();
    assert!(
        secret.len() >= 32
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "{secret}"
    );
    let path = "/api/v1/bots/echo-bot/mod/channel-telegram/webhook";
    let update = |id: i64, text: &str| {
        json!({"update_id": id, "message": {"message_id": id, "date": 1_700_000_000,
            "from": {"id": 61, "is_bot": false, "first_name": "T"},
            "chat": {"id": 61, "type": "private"}, "text": text}})
        .to_string()
    };
    let post = |port: u16, secret: Option<&str>, body: &str| {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(s) = secret {
            headers.push(("X-Telegram-Bot-Api-Secret-Token", s));
        }
        common::request(port, "POST", path, &headers, body.as_bytes())
    };
    let port = server.port;
    assert_eq!(
        post(port, Some(&secret), &update(500, "via webhook")).status,
        200
    );
    assert_eq!(
        fake.wait_texts(token, 61, 1, Duration::from_secs(20)),
        ["message|via webhook|61|61"],
        "{}",
        server.log()
    );
    // Telegram repeats an update it thinks failed: acknowledged, not played again.
    assert_eq!(
        post(port, Some(&secret), &update(500, "via webhook")).status,
        200
    );
    // Forged calls: no secret, a wrong one, one a byte short.
    let short = &secret[..secret.len() - 1];
    for wrong in [None, Some("not-the-secret"), Some(short)] {
        let answer = post(port, wrong, &update(900, "forged"));
        assert_eq!(answer.status, 403, "{wrong:?}: {}", answer.text());
        let envelope = answer.json();
        assert_eq!(envelope["statusCode"], 403);
        assert!(
            envelope["message"]
                .as_str()
                .unwrap()
                .contains("X-Telegram-Bot-Api-Secret-Token"),
            "{envelope}"
        );
    }
    assert_eq!(common::request(port, "GET", path, &[], b"").status, 405);
    assert_eq!(post(port, Some(&secret), "{not json").status, 400);
    assert_eq!(
        post(port, Some(&secret), &update(501, "second")).status,
        200
    );
    // In order per chat: a replay of 500 or a forged update would show before "second".
    assert_eq!(
        fake.wait_texts(token, 61, 2, Duration::from_secs(20)),
        ["message|via webhook|61|61", "message|second|61|61"]
    );
    // A stop, not a kill: after SIGKILL the reply just sent may go again (the documented
    // at-least-once window), which would blur what this test counts.
    let mut server = server;
    server.stop_gracefully();
    drop(server);

    // After a restart: the same secret, and update 500 is still known.
    let server = Server::start(data.path(), &env);
    assert!(wait_until(Duration::from_secs(10), || set_webhooks().len() == 2));
    assert_eq!(set_webhooks()[1].params["secret_token"], secret.as_str());
    let port = server.port;
    assert_eq!(
        post(port, Some(&secret), &update(500, "via webhook")).status,
        200
    );
    assert_eq!(post(port, Some(&secret), &update(502, "third")).status, 200);
    assert_eq!(
        fake.wait_texts(token, 61, 3, Duration::from_secs(20)),
        [
            "message|via webhook|61|61",
            "message|second|61|61",
            "message|third|61|61"
        ]
    );
    let calls = fake.calls(token);
    assert!(
        calls
            .iter()
            .all(|c| c.method != "getUpdates" && c.method != "deleteWebhook"),
        "webhook mode does not poll"
    );
    assert!(
        !server.log().contains(&secret),
        "the secret reached the log"
    );
    assert!(!server.log().contains(token));
}

/// 20 chats × 30 messages to welcome-bot: all answered, each chat in order.
#[test]
fn twenty_chats_thirty_messages_in_order() {
    let token = "444:LOADtoken";
    let fake = FakeTelegram::start(&[token]);
    let data = data_copy("tg-load");
    global_config(
        data.path(),
        &fake,
        json!({"typingDelay": false, "throttle": false}),
    );
    bot_token(data.path(), "welcome-bot", json!({"botToken": token}));
    let server = Server::start(data.path(), &[]);
    let (chats, messages) = (20i64, 30usize);
    for i in 0..messages {
        for c in 0..chats {
            let chat = 1000 + c;
            let text = if i == 1 {
                format!("User{c}")
            } else {
                format!("message number {i}")
            };
            fake.text(token, chat, chat, &text);
        }
    }
    // Per chat: the question, 3 texts after the name, then 2 per message.
    let per_chat = 1 + 3 + (messages - 2) * 2;
    let ok = wait_until(Duration::from_secs(45), || {
        (0..chats).all(|c| fake.texts(token, 1000 + c).len() >= per_chat)
    });
    assert!(
        ok,
        "not all answered: {:?}\n{}",
        (0..chats)
            .map(|c| fake.texts(token, 1000 + c).len())
            .collect::<Vec<_>>(),
        server.log()
    );
    for c in 0..chats {
        let texts = fake.texts(token, 1000 + c);
        assert_eq!(texts.len(), per_chat, "chat {c}: {texts:?}");
        assert_eq!(texts[0], "May I know your name please?");
        assert!(texts[1].contains(&format!("User{c}")), "{texts:?}");
        let counts: Vec<u64> = texts
            .iter()
            .filter_map(|t| {
                t.strip_prefix("We already spoke ")
                    .and_then(|r| r.strip_suffix(" times!"))
                    .and_then(|n| n.parse().ok())
            })
            .collect();
        assert_eq!(
            counts,
            (1..=(messages as u64 - 2)).collect::<Vec<_>>(),
            "chat {c} out of order"
        );
    }
}

/// SIGKILL in the middle of a load, restart: every message answered; a message is answered
/// twice only if it was in flight at the kill (at most one per worker thread).
#[test]
fn sigkill_and_restart_lose_nothing() {
    let token = "555:KILLtoken";
    let fake = FakeTelegram::start(&[token]);
    let data = echo_data(
        "tg-kill",
        &fake,
        token,
        json!({"typingDelay": false, "throttle": false}),
    );
    let (chats, messages) = (10i64, 25usize);
    for i in 0..messages {
        for c in 0..chats {
            fake.text(token, 2000 + c, 2000 + c, &format!("m{i}"));
        }
    }
    let total = chats as usize * messages;
    let mut server = Server::start(data.path(), &[]);
    let sent_count = || {
        (0..chats)
            .map(|c| fake.texts(token, 2000 + c).len())
            .sum::<usize>()
    };
    assert!(
        wait_until(Duration::from_secs(20), || sent_count() >= total / 3),
        "{}",
        server.log()
    );
    server.kill();
    let at_kill = sent_count();
    assert!(at_kill < total, "the kill came too late to test anything");
    let server = Server::start(data.path(), &[]);
    let ok = wait_until(Duration::from_secs(40), || {
        (0..chats).all(|c| {
            let mut t = fake.texts(token, 2000 + c);
            t.dedup();
            t.len() >= messages
        })
    });
    assert!(ok, "lost messages after the restart\n{}", server.log());
    std::thread::sleep(Duration::from_millis(500));
    let mut duplicates = 0;
    for c in 0..chats {
        let texts = fake.texts(token, 2000 + c);
        let mut unique = texts.clone();
        unique.dedup();
        // In flight at the kill: at most the chat's last send, made but its removal not yet
        // committed (a turn is never played twice: its update's removal is in its commit).
        assert!(texts.len() - unique.len() <= 1, "chat {c}: {texts:?}");
        duplicates += texts.len() - unique.len();
        let expected: Vec<String> = (0..messages)
            .map(|i| format!("message|m{i}|{}|{}", 2000 + c, 2000 + c))
            .collect();
        assert_eq!(unique, expected, "chat {c}");
    }
    eprintln!("sent before the kill: {at_kill}/{total}; duplicates: {duplicates}");
}

/// A pseudo-random number below `n` (xorshift, seeded from the clock): kill instants that
/// differ from run to run. The seed is printed so a failure can be read back.
fn random_below(state: &mut u64, n: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % n.max(1)
}

/// SIGKILL at random instants, three rounds, during a welcome-bot burst over Telegram: after
/// each restart, every update is played exactly once and in order per chat — the flow's
/// counter ("We already spoke N times!") would skip or repeat a number for a turn lost or
/// played twice — and only a send in flight repeats (at most one per chat per kill).
#[test]
fn sigkill_at_random_instants_plays_every_update_exactly_once() {
    let token = "557:ONCEtoken";
    let fake = FakeTelegram::start(&[token]);
    let data = data_copy("tg-once");
    global_config(
        data.path(),
        &fake,
        json!({"typingDelay": false, "throttle": false}),
    );
    bot_token(data.path(), "welcome-bot", json!({"botToken": token}));
    let (chats, messages) = (8i64, 16usize);
    for i in 0..messages {
        for c in 0..chats {
            let chat = 3000 + c;
            let text = if i == 1 {
                format!("User{c}")
            } else {
                format!("message number {i}")
            };
            fake.text(token, chat, chat, &text);
        }
    }
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill instants seed: {seed}");
    let replies = || {
        (0..chats)
            .map(|c| fake.texts(token, 3000 + c).len())
            .sum::<usize>()
    };
    let mut server = Server::start(data.path(), &[]);
    let kills = 3;
    let mut at_kills = Vec::new();
    for _ in 0..kills {
        // Somewhere in the next few replies: after 1 to 24 more arrived (counted, not timed,
        // so a quick machine cannot finish the burst first), then 0 to 4 ms later.
        let target = replies() + 1 + random_below(&mut seed, 24) as usize;
        wait_until(Duration::from_secs(10), || replies() >= target);
        std::thread::sleep(Duration::from_millis(random_below(&mut seed, 5)));
        server.kill();
        at_kills.push(replies());
        server = Server::start(data.path(), &[]);
    }
    let total = chats as usize * (1 + 3 + (messages - 2) * 2);
    assert!(
        at_kills[0] < total,
        "the first kill came after the burst: {at_kills:?}"
    );
    let last = format!("We already spoke {} times!", messages - 2);
    let done = wait_until(Duration::from_secs(60), || {
        (0..chats).all(|c| fake.texts(token, 3000 + c).contains(&last))
    });
    assert!(done, "not every chat finished\n{}", server.log());
    std::thread::sleep(Duration::from_millis(300));
    for c in 0..chats {
        let texts = fake.texts(token, 3000 + c);
        let mut distinct: Vec<String> = Vec::new();
        for t in &texts {
            if distinct.last() != Some(t) {
                distinct.push(t.clone());
            }
        }
        assert!(
            texts.len() - distinct.len() <= kills,
            "chat {c}: more repeats than sends in flight: {texts:?}"
        );
        assert_eq!(distinct[0], "May I know your name please?", "{texts:?}");
        assert!(distinct[1].contains(&format!("User{c}")), "{texts:?}");
        let counts: Vec<u64> = distinct
            .iter()
            .filter_map(|t| {
                t.strip_prefix("We already spoke ")
                    .and_then(|r| r.strip_suffix(" times!"))
                    .and_then(|n| n.parse().ok())
            })
            .collect();
        assert_eq!(
            counts,
            (1..=(messages as u64 - 2)).collect::<Vec<_>>(),
            "chat {c}: a turn lost, played twice or out of order: {texts:?}"
        );
        assert_eq!(
            distinct.len(),
            1 + 3 + (messages - 2) * 2,
            "chat {c}: {texts:?}"
        );
    }
}

/// 409 while another poller holds the token, then 429: logged once, backed off, no spin; the
/// update waiting meanwhile is still answered.
#[test]
fn conflict_and_rate_limit_back_off() {
    let token = "666:CONFLICTtoken";
    let fake = FakeTelegram::start(&[token]);
    let data = echo_data("tg-409", &fake, token, json!({"typingDelay": false}));
    // Another program polls this token for the next 6 seconds.
    let rogue = {
        let port = fake.port;
        std::thread::spawn(move || {
            common::post_json(
                port,
                &format!("/bot{token}/getUpdates"),
                &json!({"timeout": 6}),
            );
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let server = Server::start(data.path(), &[]);
    rogue.join().unwrap();
    let polls_during_conflict = fake
        .calls(token)
        .iter()
        .filter(|c| c.method == "getUpdates" && c.at >= started)
        .count();
    // Back-off 1 s, 2 s, 4 s…: a handful of tries in ~6 s, never a spin.
    assert!(
        polls_during_conflict <= 6,
        "{polls_during_conflict} getUpdates in ~6 s"
    );
    let log = server.log();
    assert_eq!(log.matches("409 Conflict").count(), 1, "{log}");
    assert!(log.contains("another program is polling with this bot token"));

    // Once free, polling resumes (within the back-off) and answers.
    fake.text(token, 7, 7, "after the conflict");
    let texts = fake.wait_texts(token, 7, 1, Duration::from_secs(15));
    assert_eq!(
        texts,
        vec!["message|after the conflict|7|7"],
        "{}",
        server.log()
    );

    // 429 on getUpdates: retry_after is waited.
    fake.shared
        .0
        .lock()
        .unwrap()
        .accounts
        .get_mut(token)
        .unwrap()
        .throttle_next_poll = Some(2);
    assert!(wait_until(Duration::from_secs(5), || fake
        .shared
        .0
        .lock()
        .unwrap()
        .accounts[token]
        .throttle_next_poll
        .is_none()));
    let limited_at = Instant::now();
    fake.text(token, 7, 7, "after the 429");
    let texts = fake.wait_texts(token, 7, 2, Duration::from_secs(15));
    assert_eq!(texts[1], "message|after the 429|7|7");
    let next_poll = fake
        .calls(token)
        .into_iter()
        .filter(|c| c.method == "getUpdates" && c.at > limited_at)
        .map(|c| c.at)
        .next()
        .unwrap();
    assert!(
        next_poll - limited_at >= Duration::from_millis(1500),
        "retry_after not honoured"
    );
}

/// A conversation left in the middle of a flow times out: the janitor's timeout node
/// replies through the Telegram outbound delivery (the proactive sink).
#[test]
fn janitor_timeout_replies_over_telegram() {
    let token = "777:TIMEOUTtoken";
    let fake = FakeTelegram::start(&[token]);
    let data = data_copy("tg-timeout");
    global_config(data.path(), &fake, json!({"typingDelay": false}));
    add_timeout_node(data.path(), "welcome-bot");
    bot_token(data.path(), "welcome-bot", json!({"botToken": token}));
    let mut server = Server::start(data.path(), &[]);

    fake.text(token, 9, 9, "hi");
    let texts = fake.wait_texts(token, 9, 2, Duration::from_secs(15));
    assert_eq!(
        texts,
        vec!["May I know your name please?", "Still there?"],
        "{}",
        server.log()
    );

    // SIGTERM stops promptly even with a poller inside a long poll.
    server.stop_gracefully();
}

/// Answers that are not a proper update list, given at once: `result` an object, an empty
/// list well before the long-poll timeout, no `result` at all, a list of numbers, a list whose
/// only update has no `update_id`. Each bot's poller backs off (1 s, 2 s, 4 s…) instead of
/// spinning or retrying every second, and polls normally again once the answers are proper.
#[test]
fn odd_get_updates_answers_do_not_spin() {
    let cases = [
        ("701:OBJECTtoken", json!({"ok": true, "result": {}})),
        ("702:EMPTYtoken", json!({"ok": true, "result": []})),
        ("703:NORESULTtoken", json!({"ok": true})),
        ("704:NUMBERStoken", json!({"ok": true, "result": [1, 2, 3]})),
        (
            "707:NOIDtoken",
            json!({"ok": true, "result": [{"message": {"chat": {"id": 1}, "text": "no id"}}]}),
        ),
    ];
    // One fake per bot, each answering its own odd `getUpdates`.
    let fakes: Vec<FakeTelegram> = cases
        .iter()
        .map(|(token, _)| FakeTelegram::start(&[token]))
        .collect();
    let data = data_copy("tg-odd");
    // A 4 s long poll: an empty answer in well under 2 s did not wait.
    global_config(
        data.path(),
        &fakes[0],
        json!({"typingDelay": false, "pollTimeout": "4s"}),
    );
    for (i, ((token, answer), fake)) in cases.iter().zip(&fakes).enumerate() {
        fake.set_canned_poll(token, Some(answer.clone()));
        let bot = format!("odd-bot-{i}");
        echo_bot(data.path(), &bot);
        bot_token(
            data.path(),
            &bot,
            json!({"botToken": token, "apiBase": fake.base()}),
        );
    }
    let started = Instant::now();
    let server = Server::start(data.path(), &[]);
    // In this window a spinning poller makes thousands of calls, one retrying every second
    // six or seven, one backing off 1 s, 2 s, 4 s three (at about 0, 1 and 3 s).
    std::thread::sleep(Duration::from_secs(6));
    for ((token, answer), fake) in cases.iter().zip(&fakes) {
        let polls = fake.polls_since(token, started).len();
        assert!(
            (1..=4).contains(&polls),
            "{polls} getUpdates for {answer} in ~6 s\n{}",
            server.log()
        );
    }
    let log = server.log();
    assert!(
        log.contains("getUpdates answered something that is not a list of updates"),
        "{log}"
    );
    assert!(
        log.contains("getUpdates answered an empty list at once"),
        "{log}"
    );
    assert!(log.contains("is a number, not an object"), "{log}");
    assert!(log.contains("has no update_id"), "{log}");

    // Proper answers again: each bot answers its next message.
    for ((token, _), fake) in cases.iter().zip(&fakes) {
        fake.set_canned_poll(token, None);
        fake.text(token, 10, 10, "proper again");
    }
    for ((token, _), fake) in cases.iter().zip(&fakes) {
        let texts = fake.wait_texts(token, 10, 1, Duration::from_secs(30));
        assert_eq!(
            texts,
            vec!["message|proper again|10|10"],
            "{token}\n{}",
            server.log()
        );
    }
}

/// Updates botd cannot use are skipped with a log line while the good ones of the same batch
/// are answered: one without `update_id`, one whose id is not an integer, and one with
/// `update_id` = i64::MAX, whose next offset would overflow. No offset sent is negative, and
/// the bad updates the server keeps giving back do not make the poller spin.
#[test]
fn unusable_updates_are_skipped() {
    let token = "705:SKIPtoken";
    let fake = FakeTelegram::start(&[token]);
    let data = echo_data("tg-skip", &fake, token, json!({"typingDelay": false}));
    let message = |text: &str| json!({"message_id": 1, "date": 1, "from": {"id": 7}, "chat": {"id": 7}, "text": text});
    fake.push_raw(token, json!({"message": message("no id")}));
    fake.text(token, 7, 7, "first");
    fake.push_raw(
        token,
        json!({"update_id": "12", "message": message("string id")}),
    );
    fake.push_raw(
        token,
        json!({"update_id": i64::MAX, "message": message("largest id")}),
    );
    fake.text(token, 7, 7, "second");
    let server = Server::start(data.path(), &[]);

    let texts = fake.wait_texts(token, 7, 2, Duration::from_secs(15));
    assert_eq!(
        texts,
        vec!["message|first|7|7", "message|second|7|7"],
        "{}",
        server.log()
    );
    // The bad updates come back at every poll; the poller backs off instead of spinning.
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let polls = fake.polls_since(token, window).len();
    assert!(polls <= 4, "{polls} getUpdates in 3 s\n{}", server.log());

    // Still polling: the next message is answered.
    fake.text(token, 7, 7, "third");
    let texts = fake.wait_texts(token, 7, 3, Duration::from_secs(30));
    assert_eq!(texts[2..], ["message|third|7|7"], "{}", server.log());
    for call in fake.polls_since(token, Instant::now() - Duration::from_secs(3600)) {
        if let Some(offset) = call.params.get("offset") {
            let offset = offset.as_i64().unwrap_or(-1);
            assert!(offset > 0, "getUpdates offset {offset}");
        }
    }
    let log = server.log();
    assert!(log.contains("has no update_id"), "{log}");
    assert!(
        log.contains("has an update_id that is not an integer (\"12\")"),
        "{log}"
    );
    assert!(log.contains("which leaves no next offset"), "{log}");
    assert_eq!(fake.texts(token, 7).len(), 3, "nothing else was answered");
}

/// A user who types a template over Telegram gets it back as typed (item 5 on this channel).
#[test]
fn templates_typed_over_telegram_are_echoed_literally() {
    let token = "706:TPLtoken";
    let fake = FakeTelegram::start(&[token]);
    let data = echo_data("tg-tpl", &fake, token, json!({"typingDelay": false}));
    let server = Server::start(data.path(), &[]);
    let typed = [
        "{{event.botId}}",
        "{{{event.target}}}",
        "{{#event}}{{channel}}{{/event}}",
    ];
    for text in typed {
        fake.text(token, 9, 9, text);
    }
    let texts = fake.wait_texts(token, 9, typed.len(), Duration::from_secs(15));
    let expected: Vec<String> = typed.iter().map(|t| format!("message|{t}|9|9")).collect();
    assert_eq!(texts, expected, "{}", server.log());
}

/// A Bot API that ignores `offset` and gives confirmed updates back at once: each is answered
/// once, and the poller backs off instead of spinning through them.
#[test]
fn updates_given_again_below_the_offset_are_not_answered_again() {
    let token = "708:REPEATtoken";
    let fake = FakeTelegram::start(&[token]);
    fake.shared
        .0
        .lock()
        .unwrap()
        .accounts
        .get_mut(token)
        .unwrap()
        .ignore_offset = true;
    let data = echo_data("tg-repeat", &fake, token, json!({"typingDelay": false}));
    fake.text(token, 8, 8, "once");
    let server = Server::start(data.path(), &[]);
    let texts = fake.wait_texts(token, 8, 1, Duration::from_secs(15));
    assert_eq!(texts, vec!["message|once|8|8"], "{}", server.log());
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let polls = fake.polls_since(token, window).len();
    assert!(polls <= 4, "{polls} getUpdates in 3 s\n{}", server.log());
    // A new update among the old ones is still answered, once.
    fake.text(token, 8, 8, "twice");
    let texts = fake.wait_texts(token, 8, 2, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        fake.texts(token, 8),
        vec!["message|once|8|8", "message|twice|8|8"],
        "{}",
        server.log()
    );
    assert_eq!(texts.len(), 2);
    assert!(
        server.log().contains("below the offset 1001 asked for"),
        "{}",
        server.log()
    );
}

/// A bot whose every turn says three texts: `<text>/1`, `<text>/2`, `<text>/3`.
fn three_texts_bot(data: &Path, id: &str) {
    echo_bot(data, id);
    let dir = data.join("bots").join(id);
    let say = |n: u32| format!("say #!builtin_text-{n}");
    let flow = json!({"version": "0.0.1", "flow": "main.flow.json", "startNode": "entry", "catchAll": {"onReceive": [], "next": []},
        "nodes": [{"id": "entry", "name": "entry", "onEnter": [say(1), say(2), say(3)], "onReceive": null,
                   "next": [{"condition": "true", "node": "END"}]}]});
    write(&dir, "flows/main.flow.json", &flow.to_string());
    let elements: Vec<Value> = (1..=3)
        .map(|n| json!({"id": format!("builtin_text-{n}"), "formData": {"text$en": format!("{{{{{{event.preview}}}}}}/{n}")},
            "createdBy": "t", "createdOn": "2019-04-24T18:00:00.000Z", "modifiedOn": null}))
        .collect();
    write(
        &dir,
        "content-elements/builtin_text.json",
        &Value::Array(elements).to_string(),
    );
}

/// The fake's receive times of the messages to `chat`.
fn send_times(fake: &FakeTelegram, token: &str, chat: i64) -> Vec<Instant> {
    fake.sent(token, chat).iter().map(|c| c.at).collect()
}

/// How many of `times` fall in `[start, start + window)`, the most over every start.
fn most_within(times: &[Instant], window: Duration) -> usize {
    times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && **t < *start + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Pacing on: a turn's three messages go out together (not a second apart), a long run to
/// one chat is held to the burst plus one a second, in order; a 429 on a send holds that chat
/// for its retry_after, says so in the log, and the message is sent after it.
#[test]
fn a_turn_goes_in_a_burst_and_a_long_run_keeps_the_chat_rate() {
    let token = "888:BURSTtoken";
    let fake = FakeTelegram::start(&[token]);
    let data = data_copy("tg-burst");
    global_config(data.path(), &fake, json!({"typingDelay": false}));
    three_texts_bot(data.path(), "three-bot");
    bot_token(data.path(), "three-bot", json!({"botToken": token}));
    let server = Server::start(data.path(), &[]);

    fake.text(token, 501, 501, "turn");
    let texts = fake.wait_texts(token, 501, 3, Duration::from_secs(20));
    assert_eq!(
        texts,
        vec!["turn/1", "turn/2", "turn/3"],
        "{}",
        server.log()
    );
    // Paced at one a second, the third would come two seconds after the first.
    assert_eq!(
        most_within(&send_times(&fake, token, 501), Duration::from_secs(1)),
        3
    );

    // Five turns at once to another chat: fifteen messages, in order, never more than the
    // burst (4) plus one a second in any stretch of time (one more for the fake's clock).
    let run: Vec<String> = (1..=5).map(|i| format!("r{i}")).collect();
    for text in &run {
        fake.text(token, 502, 502, text);
    }
    let texts = fake.wait_texts(token, 502, 15, Duration::from_secs(60));
    let expected: Vec<String> = run
        .iter()
        .flat_map(|r| (1..=3).map(move |n| format!("{r}/{n}")))
        .collect();
    assert_eq!(texts, expected, "{}", server.log());
    let times = send_times(&fake, token, 502);
    for window in [1u64, 3, 6] {
        let most = most_within(&times, Duration::from_secs(window));
        assert!(
            most <= 4 + window as usize + 1,
            "{most} messages within {window} s"
        );
    }

    // Telegram says 429 retry_after 2 for chat 503: that chat waits, and the log says so.
    fake.shared
        .0
        .lock()
        .unwrap()
        .accounts
        .get_mut(token)
        .unwrap()
        .throttle_next_send = Some(2);
    fake.text(token, 503, 503, "slow");
    // The fake records the refused call too: it is the first one.
    let texts = fake.wait_texts(token, 503, 4, Duration::from_secs(20));
    assert_eq!(
        texts,
        vec!["slow/1", "slow/1", "slow/2", "slow/3"],
        "{}",
        server.log()
    );
    let times = send_times(&fake, token, 503);
    assert!(
        times[1] - times[0] >= Duration::from_millis(1900),
        "retry_after not honoured"
    );
    assert!(
        server.log().contains("chat 503 wait 2 s"),
        "{}",
        server.log()
    );
}

/// SIGHUP: a change elsewhere leaves Telegram polling as it was; a change of one bot's
/// Telegram configuration restarts that bot's poller with it, and only that one. An update
/// that arrives just before the reload is still answered.
#[test]
fn sighup_restarts_telegram_only_when_its_configuration_changed() {
    let (token, other) = ("901:RELOADtoken", "902:OTHERtoken");
    let fake = FakeTelegram::start(&[token, other]);
    let data = echo_data("tg-reload", &fake, token, json!({"typingDelay": false}));
    echo_bot(data.path(), "other-bot");
    bot_token(data.path(), "other-bot", json!({"botToken": other}));
    let server = Server::start(data.path(), &[]);
    let started = |bot: &str| {
        server
            .log()
            .matches(&format!("bot \"{bot}\": Telegram long polling started"))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(15), || started("echo-bot") == 1
            && started("other-bot") == 1),
        "{}",
        server.log()
    );
    let hangup = || {
        let status = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(server.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    };
    let reloads = || server.log().matches("reload done").count();
    fake.text(token, 11, 11, "before");
    assert_eq!(
        fake.wait_texts(token, 11, 1, Duration::from_secs(15)).len(),
        1
    );

    // Only botpress.config.json changes: Telegram keeps running.
    let config = json!({"appSecret": "reload-secret-0123456789abcdefghijkl", "converse": {"maxMessageLength": 200}});
    write(
        data.path(),
        "global/botpress.config.json",
        &config.to_string(),
    );
    hangup();
    assert!(
        wait_until(Duration::from_secs(20), || reloads() == 1),
        "{}",
        server.log()
    );
    assert!(
        !server.log().contains("Telegram restarts"),
        "{}",
        server.log()
    );

    // The bot's poll timeout changes: an update waiting meanwhile is answered, and the new
    // poller asks with the new timeout.
    fake.text(token, 11, 11, "in flight");
    bot_token(
        data.path(),
        "echo-bot",
        json!({"botToken": token, "pollTimeout": "2s"}),
    );
    let reloaded_at = Instant::now();
    hangup();
    assert!(
        wait_until(Duration::from_secs(90), || reloads() == 2),
        "{}",
        server.log()
    );
    assert!(server.log().contains("Telegram restarts"));
    let texts = fake.wait_texts(token, 11, 2, Duration::from_secs(15));
    assert_eq!(
        texts,
        vec!["message|before|11|11", "message|in flight|11|11"]
    );
    fake.text(token, 12, 12, "after");
    let texts = fake.wait_texts(token, 12, 1, Duration::from_secs(20));
    assert_eq!(texts, vec!["message|after|12|12"], "{}", server.log());
    // The other bot's poller was never restarted, and it answers as before.
    assert_eq!(started("echo-bot"), 2, "{}", server.log());
    assert_eq!(started("other-bot"), 1, "{}", server.log());
    fake.text(other, 13, 13, "still here");
    let texts = fake.wait_texts(other, 13, 1, Duration::from_secs(20));
    assert_eq!(texts, vec!["message|still here|13|13"]);

    // A half-written bot file: the reload is refused with the file named, nothing restarts,
    // and a conversation in flight goes on.
    fake.text(token, 14, 14, "during");
    write(
        data.path(),
        "bots/echo-bot/config/channel-telegram.json",
        "{\"botToken\": ",
    );
    hangup();
    assert!(
        wait_until(Duration::from_secs(20), || server
            .log()
            .contains("the running configuration stays")),
        "{}",
        server.log()
    );
    assert!(
        server
            .log()
            .contains("bots/echo-bot/config/channel-telegram.json: invalid JSON"),
        "{}",
        server.log()
    );
    let texts = fake.wait_texts(token, 14, 1, Duration::from_secs(20));
    assert_eq!(texts, vec!["message|during|14|14"]);
    fake.text(token, 14, 14, "after the broken file");
    let texts = fake.wait_texts(token, 14, 2, Duration::from_secs(20));
    assert_eq!(texts[1], "message|after the broken file|14|14");
    assert_eq!(started("echo-bot"), 2, "{}", server.log());
    assert_eq!(reloads(), 2);
    assert!(
        fake.polls_since(token, reloaded_at)
            .iter()
            .any(|c| c.params["timeout"] == json!(2)),
        "the new poll timeout is not used"
    );
}

/// A custom JavaScript action over a push channel: it replies through
/// `bp.cms.renderElement` + `bp.events.replyToEvent` (rendered for Telegram), and the say
/// node after it uses what it wrote in `temp`.
#[test]
fn a_javascript_action_answers_over_telegram() {
    let token = "707:JStoken";
    let fake = FakeTelegram::start(&[token]);
    let data = data_copy("tg-js");
    global_config(data.path(), &fake, json!({"typingDelay": false}));
    echo_bot(data.path(), "js-tg-bot");
    bot_token(data.path(), "js-tg-bot", json!({"botToken": token}));
    let dir = data.path().join("bots/js-tg-bot");
    let flow = json!({"version": "0.0.1", "flow": "main.flow.json", "startNode": "entry",
        "catchAll": {"onReceive": [], "next": []},
        "nodes": [{"id": "entry", "name": "entry",
            "onEnter": ["shout {}", "say #builtin_text {\"text\": \"{{temp.loud}} on {{temp.channel}}\"}"],
            "onReceive": null, "next": [{"condition": "true", "node": "END"}]}]});
    write(&dir, "flows/main.flow.json", &flow.to_string());
    write(
        &dir,
        "actions/shout.js",
        "temp.loud = event.preview.toUpperCase()\ntemp.channel = event.channel\n\
         const p = await bp.cms.renderElement('builtin_text', { text: 'first: ' + event.preview }, event)\n\
         await bp.events.replyToEvent(event, p)\n",
    );
    let server = Server::start(data.path(), &[]);
    fake.text(token, 11, 11, "hello");
    let texts = fake.wait_texts(token, 11, 2, Duration::from_secs(15));
    assert_eq!(
        texts,
        ["first: hello", "HELLO on telegram"],
        "{}",
        server.log()
    );
}

/// The action of tests/js.rs that computes from `args` and an NLU entity, over a push channel:
/// `user` and `temp` it writes show in the reply, and `user` stays for the next message.
#[test]
fn a_javascript_action_computes_from_an_nlu_entity_over_telegram() {
    let token = "708:JSentity";
    let fake = FakeTelegram::start(&[token]);
    let data = data_copy("tg-js-entity");
    global_config(data.path(), &fake, json!({"typingDelay": false}));
    echo_bot(data.path(), "js-tg-bot");
    bot_token(data.path(), "js-tg-bot", json!({"botToken": token}));
    let dir = data.path().join("bots/js-tg-bot");
    let flow = json!({"version": "0.0.1", "flow": "main.flow.json", "startNode": "entry",
        "catchAll": {"onReceive": [], "next": []},
        "nodes": [{"id": "entry", "name": "entry",
            "onEnter": ["bmi {\"height\": \"2\", \"channel\": \"{{event.channel}}\"}",
                "say #builtin_text {\"text\": \"{{{temp.reply}}}; weight {{user.weight}}\"}"],
            "onReceive": null, "next": [{"condition": "true", "node": "END"}]}]});
    write(&dir, "flows/main.flow.json", &flow.to_string());
    write(&dir, "actions/bmi.js", common::BMI_ACTION);
    let server = Server::start(data.path(), &[]);
    fake.text(token, 12, 12, "I weigh eighty");
    let first = fake.wait_texts(token, 12, 1, Duration::from_secs(15));
    assert_eq!(
        first,
        ["BMI 20 from \"eighty\" on telegram; weight 80"],
        "{}",
        server.log()
    );
    fake.text(token, 12, 12, "hello");
    let both = fake.wait_texts(token, 12, 2, Duration::from_secs(15));
    assert_eq!(
        both,
        [
            "BMI 20 from \"eighty\" on telegram; weight 80",
            "no number in hello; weight 80"
        ],
        "{}",
        server.log()
    );
}
