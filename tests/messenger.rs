//! Facebook Messenger over real HTTP on loopback: botd runs as a process, Facebook's side is
//! played by signed webhook calls, and the Graph API by a fake in this test (`common::fake_http`)
//! (set through `graphApiBase`). Nothing leaves 127.0.0.1.

mod common;

use common::fake_http::{FakeHttp, Response};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha1::Sha1;
use sha2::Sha256;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "app-secret-for-tests";
const VERIFY: &str = "verify-me";
const WEBHOOK: &str = "/api/v1/bots/___/mod/channel-messenger/webhook";

// ---------------------------------------------------------------------------------------
// The fake Graph API
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    method: String,
    path: String,
    token: String,
    body: Value,
}

struct FakeGraph {
    _server: FakeHttp,
    port: u16,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Answer 500 to every n-th `POST /me/messages` (0: never).
    fail_every: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl FakeGraph {
    /// `pages`: access token → page id.
    fn start(pages: &[(&str, &str)]) -> FakeGraph {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let fail_every: Arc<AtomicUsize> = Arc::default();
        let sends = AtomicUsize::new(0);
        let failed: Arc<AtomicUsize> = Arc::default();
        let pages: HashMap<String, String> = pages
            .iter()
            .map(|(t, p)| (t.to_string(), p.to_string()))
            .collect();
        let server = {
            let (calls, fail_every, failed) = (calls.clone(), fail_every.clone(), failed.clone());
            FakeHttp::start(move |request| {
                let (path, query) = (request.path().to_string(), request.query());
                let token = query
                    .split('&')
                    .find_map(|p| p.strip_prefix("access_token="))
                    .unwrap_or("")
                    .to_string();
                let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
                let method = request.method.clone();
                let (status, answer) = match (method.as_str(), path.as_str()) {
                    ("GET", "/v23.0/me") => match pages.get(&token) {
                        Some(page) => (200, json!({"id": page, "name": format!("Page {page}")})),
                        None => (
                            400,
                            json!({"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}}),
                        ),
                    },
                    ("POST", "/v23.0/me/messages") => {
                        let n = sends.fetch_add(1, Ordering::SeqCst) + 1;
                        let every = fail_every.load(Ordering::SeqCst);
                        if body["recipient"]["id"]
                            .as_str()
                            .is_some_and(|r| r.starts_with("X-"))
                        {
                            (
                                400,
                                json!({"error": {"message": "This person isn't available right now.", "type": "OAuthException", "code": 551}}),
                            )
                        } else if every > 0 && n.is_multiple_of(every) {
                            failed.fetch_add(1, Ordering::SeqCst);
                            (
                                500,
                                json!({"error": {"message": "An unexpected error has occurred.", "code": 2}}),
                            )
                        } else {
                            (
                                200,
                                json!({"recipient_id": body["recipient"]["id"], "message_id": format!("m.{n}")}),
                            )
                        }
                    }
                    (_, "/v23.0/me/messenger_profile") => (200, json!({"result": "success"})),
                    _ => (
                        404,
                        json!({"error": {"message": "unknown path", "code": 803}}),
                    ),
                };
                if status == 200 {
                    calls.lock().unwrap().push(Call {
                        at: Instant::now(),
                        method,
                        path,
                        token,
                        body,
                    });
                }
                Response::json(status, &answer)
            })
        };
        FakeGraph {
            port: server.port,
            _server: server,
            calls,
            fail_every,
            failed,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Successful `POST /me/messages` calls to `psid`, in the order they arrived.
    fn sent_to(&self, psid: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path == "/v23.0/me/messages" && c.body["recipient"]["id"] == psid)
            .collect()
    }

    /// The texts sent to `psid`.
    fn texts(&self, psid: &str) -> Vec<String> {
        self.sent_to(psid)
            .iter()
            .filter_map(|c| c.body["message"]["text"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits until `psid` has received at least `n` texts.
    fn wait_texts(&self, psid: &str, n: usize, limit: Duration) -> Vec<String> {
        wait_until(limit, || self.texts(psid).len() >= n);
        self.texts(psid)
    }
}

// ---------------------------------------------------------------------------------------
// Data folder, webhook calls
// ---------------------------------------------------------------------------------------

/// A data folder with welcome-bot on page `PW` (token `TOKEN-W`) and echo-bot on page `PE`
/// (token `TOKEN-E`, typing delay on, profile settings).
fn data_dir(tag: &str, fake: &FakeGraph, global_extra: Value) -> TempDir {
    let data = data_copy(tag);
    let mut global = json!({"appSecret": SECRET, "verifyToken": VERIFY, "graphApiBase": fake.base(), "typingDelay": false});
    for (k, v) in global_extra.as_object().unwrap() {
        global[k] = v.clone();
    }
    write(
        data.path(),
        "global/config/channel-messenger.json",
        &global.to_string(),
    );
    write(
        data.path(),
        "bots/welcome-bot/config/channel-messenger.json",
        &json!({"enabled": true, "accessToken": "TOKEN-W"}).to_string(),
    );
    echo_bot(data.path());
    data
}

/// A copy of welcome-bot whose flow answers `type|preview|quick-reply payload` to everything.
fn echo_bot(data: &Path) {
    let dir = data.join("bots/echo-bot");
    copy_dir(&data.join("bots/welcome-bot"), &dir);
    let config = std::fs::read_to_string(dir.join("bot.config.json"))
        .unwrap()
        .replace("\"welcome-bot\"", "\"echo-bot\"");
    std::fs::write(dir.join("bot.config.json"), config).unwrap();
    for sub in ["flows", "content-elements", "intents"] {
        let _ = std::fs::remove_dir_all(dir.join(sub));
    }
    let flow = json!({"version": "0.0.1", "flow": "main.flow.json", "startNode": "entry", "catchAll": {"onReceive": [], "next": []},
        "nodes": [{"id": "entry", "name": "entry", "onEnter": ["say #!builtin_text-echo"], "onReceive": null,
                   "next": [{"condition": "true", "node": "END"}]}]});
    write(&dir, "flows/main.flow.json", &flow.to_string());
    write(&dir, "flows/main.ui.json", r#"{"nodes":[]}"#);
    let element = json!([{"id": "builtin_text-echo", "createdBy": "t", "createdOn": "2019-04-24T18:00:00.000Z", "modifiedOn": null,
        "formData": {"text$en": "{{{event.type}}}|{{{event.preview}}}|{{{event.payload.quick_reply.payload}}}", "typing$en": true}}]);
    write(
        &dir,
        "content-elements/builtin_text.json",
        &element.to_string(),
    );
    let config = json!({"enabled": true, "accessToken": "TOKEN-E", "typingDelay": true, "greeting": "Hi there!", "getStarted": "GET_STARTED"});
    write(&dir, "config/channel-messenger.json", &config.to_string());
}

fn start(data: &Path) -> Server {
    // Debug logging everywhere: still no token in the log.
    let server = Server::start(
        data,
        &[
            ("EXTERNAL_URL", "http://bots.example.org"),
            ("RUST_LOG", "debug"),
        ],
    );
    let ready = wait_until(Duration::from_secs(10), || {
        let log = server.log();
        log.contains("answers page PW") && log.contains("answers page PE")
    });
    assert!(ready, "pages not found: {}", server.log());
    server
}

fn text_event(psid: &str, mid: &str, text: &str) -> Value {
    json!({"sender": {"id": psid}, "recipient": {"id": "P"}, "timestamp": 1_700_000_000_000i64, "message": {"mid": mid, "seq": 1, "text": text}})
}

fn delivery(entries: &[(&str, Vec<Value>)]) -> String {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(page, items)| json!({"id": page, "time": 1_700_000_000_000i64, "messaging": items}))
        .collect();
    json!({"object": "page", "entry": entries}).to_string()
}

fn sha256_header(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn sha1_header(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A webhook POST signed with SHA-256 (and SHA-1, as Facebook sends both).
fn post(port: u16, body: &str) -> Answer {
    let b = body.as_bytes();
    let (s256, s1) = (sha256_header(b), sha1_header(b));
    request(
        port,
        "POST",
        WEBHOOK,
        &[
            ("Content-Type", "application/json"),
            ("X-Hub-Signature-256", &s256),
            ("X-Hub-Signature", &s1),
        ],
        b,
    )
}

/// Like [`post`], but `None` when the server is not there (killed) or answers nothing.
fn try_post(port: u16, body: &str) -> Option<u16> {
    let b = body.as_bytes();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Hub-Signature-256: {}\r\n\r\n",
        b.len(),
        sha256_header(b)
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(b).ok()?;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let line = String::from_utf8_lossy(&raw).lines().next()?.to_string();
    line.split_whitespace().nth(1)?.parse().ok()
}

fn greeting_ok(text: &str, name: &str) -> bool {
    [
        format!("👋, {name}!"),
        format!("Hello, {name}!"),
        format!("Welcome to Botpress, {name}!"),
    ]
    .contains(&text.to_string())
}

/// Checks the welcome-bot transcript of one user who sent `hi`, their name, then `n - 2`
/// more messages: every reply present, once, in order.
fn check_welcome(texts: &[String], name: &str, n: usize) {
    assert_eq!(texts.len(), 4 + 2 * (n - 2), "{name}: {texts:?}");
    assert_eq!(texts[0], "May I know your name please?");
    assert!(greeting_ok(&texts[1], name), "{name}: {}", texts[1]);
    assert_eq!(texts[2], "This is the first time we speak 🤖");
    assert_eq!(texts[3], "Try saying something like \"forget my name\"!");
    for k in 1..=n - 2 {
        assert!(
            greeting_ok(&texts[2 + 2 * k], name),
            "{name}: {}",
            texts[2 + 2 * k]
        );
        assert_eq!(
            texts[3 + 2 * k],
            format!("We already spoke {k} times!"),
            "{name}: reply {k} out of order"
        );
    }
}

/// What user `u` says as message `k` (1-based) to welcome-bot.
fn welcome_text(u: usize, k: usize) -> String {
    match k {
        1 => "hi".to_string(),
        2 => format!("Name{u}"),
        _ => format!("ok {k}"),
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Handshake, signatures, body rules, every event kind, batching, dedupe, the profile, the
/// typing delay, and no token in the log.
#[test]
fn webhook_events_and_signatures() {
    let fake = FakeGraph::start(&[("TOKEN-W", "PW"), ("TOKEN-E", "PE")]);
    let data = data_dir("mess-basic", &fake, json!({"maxBodySize": "100kb"}));
    let server = start(data.path());
    let port = server.port;
    let log = server.log();
    assert!(log.contains("Messenger webhook URL is http://bots.example.org/api/v1/bots/___/mod/channel-messenger/webhook"), "{log}");
    assert!(log.contains("not https"), "{log}");

    // Verification handshake, on both paths.
    for path in [
        WEBHOOK,
        "/webhook",
        "/api/v1/bots/welcome-bot/mod/channel-messenger/webhook",
    ] {
        let ok = request(
            port,
            "GET",
            &format!(
                "{path}?hub.mode=subscribe&hub.verify_token={VERIFY}&hub.challenge=1158201444"
            ),
            &[],
            b"",
        );
        assert_eq!(
            (ok.status, ok.text()),
            (200, "1158201444".to_string()),
            "{path}"
        );
    }
    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=verify-me&hub.challenge=1",
        "hub.challenge=1",
    ] {
        assert_eq!(
            request(port, "GET", &format!("/webhook?{query}"), &[], b"").status,
            403,
            "{query}"
        );
    }

    // Signatures: good SHA-256, good SHA-1 alone, and every kind of bad header.
    let body = delivery(&[("PE", vec![text_event("U-sig", "mid.sig1", "first")])]);
    assert_eq!(post(port, &body).text(), "EVENT_RECEIVED");
    let body = delivery(&[("PE", vec![text_event("U-sig", "mid.sig2", "second")])]);
    let b = body.as_bytes();
    let sha1_only = request(
        port,
        "POST",
        "/webhook",
        &[("X-Hub-Signature", &sha1_header(b))],
        b,
    );
    assert_eq!(sha1_only.status, 200, "{}", sha1_only.text());
    let bad_body = delivery(&[("PE", vec![text_event("U-bad", "mid.bad", "never")])]);
    let bb = bad_body.as_bytes();
    let good256 = sha256_header(bb);
    let wrong_secret = {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"another secret").unwrap();
        mac.update(bb);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let over_other_bytes = sha256_header(format!("{bad_body} ").as_bytes());
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![],
        vec![("X-Hub-Signature-256", wrong_secret)],
        vec![("X-Hub-Signature-256", over_other_bytes)],
        vec![("X-Hub-Signature-256", "sha256=zzzz".into())],
        vec![("X-Hub-Signature-256", good256.replace("sha256=", "sha1="))],
        vec![(
            "X-Hub-Signature-256",
            good256[..good256.len() - 2].to_string(),
        )],
        vec![("X-Hub-Signature-256", good256.replace("sha256=", ""))],
        vec![("X-Hub-Signature", "sha1=".to_string())],
        vec![("X-Hub-Signature", good256.replace("sha256=", "sha1="))],
        vec![("X-Hub-Signature", "garbage".into())],
    ];
    for headers in &cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = request(port, "POST", WEBHOOK, &h, bb);
        assert_eq!(answer.status, 403, "{headers:?}");
        let envelope = answer.json();
        assert_eq!(
            (envelope["statusCode"].as_i64(), envelope["type"].as_str()),
            (Some(403), Some("entity.verify.failed")),
            "{headers:?}"
        );
    }

    // Non-ASCII text: Facebook's escaped-unicode form and raw UTF-8, each signed as sent.
    let escaped = r#"{"object":"page","entry":[{"id":"PE","time":1,"messaging":[{"sender":{"id":"U-utf"},"recipient":{"id":"PE"},"timestamp":1,"message":{"mid":"mid.utf1","text":"h\u00e9llo \u00e4\u00f6\u00e5 \ud83d\ude00 \/ \u003C"}}]}]}"#;
    assert_eq!(post(port, escaped).status, 200);
    let raw = delivery(&[("PE", vec![text_event("U-utf", "mid.utf2", "grüße 😀 日本")])]);
    assert_eq!(post(port, &raw).status, 200);

    // A batch: two pages, several users and items, an unknown page, and things to ignore.
    let mut qr = text_event("U-b1", "mid.b2", "Yes");
    qr["message"]["quick_reply"] = json!({"payload": "YES_PAYLOAD"});
    let postback = json!({"sender": {"id": "U-b2"}, "recipient": {"id": "PE"}, "timestamp": 2, "postback": {"title": "Get Started", "payload": "GET_STARTED", "mid": "mid.pb1"}});
    let echo = json!({"sender": {"id": "PE"}, "recipient": {"id": "U-b1"}, "timestamp": 3, "message": {"mid": "mid.echo", "text": "from the page", "is_echo": true}});
    let read = json!({"sender": {"id": "U-quiet"}, "recipient": {"id": "PE"}, "timestamp": 4, "read": {"watermark": 1}});
    let delivered = json!({"sender": {"id": "U-quiet"}, "recipient": {"id": "PE"}, "timestamp": 5, "delivery": {"mids": ["mid.b1"], "watermark": 1}});
    let no_sender = json!({"recipient": {"id": "PE"}, "timestamp": 6, "message": {"mid": "mid.nosender", "text": "x"}});
    let batch = delivery(&[
        (
            "PE",
            vec![
                text_event("U-b1", "mid.b1", "one"),
                qr,
                postback,
                echo,
                read.clone(),
                delivered,
                no_sender,
            ],
        ),
        ("PW", vec![text_event("U-b3", "mid.b3", "hi")]),
        ("P-unknown", vec![text_event("U-b4", "mid.b4", "lost")]),
        ("PE", vec![text_event("U-b1", "mid.b5", "two")]),
    ]);
    let answer = post(port, &batch);
    assert_eq!(
        (answer.status, answer.text()),
        (200, "EVENT_RECEIVED".to_string())
    );
    // The same delivery again (Facebook retrying) and one item again in a new batch.
    assert_eq!(post(port, &batch).status, 200);
    assert_eq!(
        post(
            port,
            &delivery(&[("PE", vec![text_event("U-b1", "mid.b5", "two, again")])])
        )
        .status,
        200
    );
    // Only things to ignore.
    assert_eq!(post(port, &delivery(&[("PE", vec![read])])).status, 200);

    // Bodies that are refused.
    let too_big = delivery(&[(
        "PE",
        vec![text_event("U-big", "mid.big", &"x".repeat(120 * 1024))],
    )]);
    assert_eq!(post(port, &too_big).status, 413);
    let not_page = json!({"object": "instagram", "entry": [{"id": "PE", "messaging": [text_event("U-ig", "mid.ig", "x")]}]}).to_string();
    let answer = post(port, &not_page);
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.text().contains("page"));
    assert_eq!(post(port, "{\"object\":\"page\",").status, 400);
    assert_eq!(request(port, "PUT", "/webhook", &[], b"").status, 405);

    // What Facebook received (the log is printed when a reply is missing).
    let received = |psid: &str, n: usize| {
        let t = fake.wait_texts(psid, n, Duration::from_secs(10));
        if t.len() < n {
            eprintln!("{psid} got {t:?} of {n}; the log:\n{}", server.log());
        }
        t
    };
    let t = received("U-sig", 2);
    assert_eq!(t, vec!["message|first|", "message|second|"]);
    let t = received("U-utf", 2);
    assert_eq!(
        t,
        vec!["message|héllo äöå 😀 / <|", "message|grüße 😀 日本|"]
    );
    let t = received("U-b1", 3);
    assert_eq!(
        t,
        vec!["message|one|", "message|Yes|YES_PAYLOAD", "message|two|"]
    );
    assert_eq!(received("U-b2", 1), vec!["callback|GET_STARTED|"]);
    assert_eq!(received("U-b3", 1), vec!["May I know your name please?"]);
    std::thread::sleep(Duration::from_millis(800));
    for quiet in ["U-bad", "U-quiet", "U-b4", "PE", "U-big", "U-ig"] {
        assert!(
            fake.sent_to(quiet).is_empty(),
            "{quiet} got {:?}",
            fake.sent_to(quiet)
        );
    }
    assert_eq!(fake.texts("U-b1").len(), 3, "duplicates answered once");
    assert!(server.log().contains("no bot answers that page"));

    // Call order for one message, with the echo-bot's typing delay (`true` → 500 ms).
    let calls = fake.sent_to("U-b2");
    let shape: Vec<String> = calls
        .iter()
        .map(|c| {
            c.body["sender_action"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| "message".into())
        })
        .collect();
    assert_eq!(
        shape,
        vec!["mark_seen", "typing_on", "typing_off", "message"]
    );
    // `typing: true` pauses 500 ms (the rule itself is unit-tested in channels::tests); the
    // upper bound only leaves room for a loaded machine.
    let pause = calls[2].at - calls[1].at;
    assert!(
        pause >= Duration::from_millis(480) && pause < Duration::from_millis(1500),
        "typing pause {pause:?}"
    );
    assert!(calls.iter().all(|c| c.token == "TOKEN-E"));
    assert!(fake.sent_to("U-b3").iter().all(|c| c.token == "TOKEN-W"));
    // welcome-bot has typingDelay false: no pause.
    let w = fake.sent_to("U-b3");
    assert!(w[2].at - w[1].at < Duration::from_millis(450));

    // Messenger profile (§4.6): set what is configured, delete the greeting and menu that are not.
    let profile: Vec<(String, String, Value)> = fake
        .calls()
        .into_iter()
        .filter(|c| c.path.ends_with("messenger_profile"))
        .map(|c| (c.token, c.method, c.body))
        .collect();
    let has = |token: &str, method: &str, body: Value| {
        profile
            .iter()
            .any(|(t, m, b)| t == token && m == method && *b == body)
    };
    assert!(
        has(
            "TOKEN-E",
            "POST",
            json!({"greeting": [{"locale": "default", "text": "Hi there!"}]})
        ),
        "{profile:?}"
    );
    assert!(
        has(
            "TOKEN-E",
            "POST",
            json!({"get_started": {"payload": "GET_STARTED"}})
        ),
        "{profile:?}"
    );
    assert!(
        has("TOKEN-E", "DELETE", json!({"fields": ["persistent_menu"]})),
        "{profile:?}"
    );
    assert!(
        has("TOKEN-W", "DELETE", json!({"fields": ["greeting"]})),
        "{profile:?}"
    );
    assert!(
        has("TOKEN-W", "DELETE", json!({"fields": ["persistent_menu"]})),
        "{profile:?}"
    );

    let log = server.log();
    assert!(!log.contains("TOKEN-"), "a token reached the log:\n{log}");
    assert!(!log.contains("access_token"), "{log}");
    assert!(
        log.contains("duplicate delivery of an event"),
        "debug logging is on: {log}"
    );
}

/// Without appSecret or verifyToken there is no webhook, and the log says which file to fix.
#[test]
fn missing_secrets_register_no_webhook() {
    let fake = FakeGraph::start(&[("TOKEN-W", "PW"), ("TOKEN-E", "PE")]);
    let data = data_dir("mess-off", &fake, json!({"verifyToken": ""}));
    write(
        data.path(),
        "bots/welcome-bot/config/channel-messenger.json",
        &json!({"enabled": true, "accessToken": "TOKEN-BAD"}).to_string(),
    );
    let server = Server::start(data.path(), &[]);
    for path in [WEBHOOK, "/webhook"] {
        assert_eq!(
            request(
                server.port,
                "GET",
                &format!("{path}?hub.mode=subscribe&hub.verify_token=&hub.challenge=1"),
                &[],
                b""
            )
            .status,
            404
        );
        assert_eq!(post(server.port, &delivery(&[])).status, 404);
    }
    let log = server.log();
    assert_eq!(log.matches("no webhook is registered").count(), 1, "{log}");
    assert!(
        log.contains("global/config/channel-messenger.json"),
        "{log}"
    );
    // The page lookup with a bad token gives up at once, without showing the token.
    assert!(wait_until(Duration::from_secs(10), || server
        .log()
        .contains("bot \"welcome-bot\": cannot find its Facebook page")));
    assert!(server
        .log()
        .contains("Invalid OAuth access token. (code 190)"));
    assert!(wait_until(Duration::from_secs(10), || server
        .log()
        .contains("answers page PE")));
    assert!(!server.log().contains("TOKEN-"), "{}", server.log());
}

/// Janitor timeout replies of a `messenger` conversation go out through the Send API, and
/// SIGTERM stops botd promptly.
#[test]
fn janitor_timeout_replies_over_messenger() {
    let fake = FakeGraph::start(&[("TOKEN-W", "PW"), ("TOKEN-E", "PE")]);
    let data = data_dir("mess-timeout", &fake, json!({}));
    add_timeout_node(data.path(), "welcome-bot");
    let mut server = start(data.path());
    assert_eq!(
        post(
            server.port,
            &delivery(&[("PW", vec![text_event("T1", "mid.T1", "hi")])])
        )
        .status,
        200
    );
    let texts = fake.wait_texts("T1", 2, Duration::from_secs(15));
    assert_eq!(
        texts,
        vec!["May I know your name please?", "Still there?"],
        "{}",
        server.log()
    );
    server.stop_gracefully();
}

/// 20 users × 50 messages to welcome-bot at once: every reply arrives, once, in order per user.
#[test]
fn twenty_users_fifty_messages_in_order() {
    let fake = FakeGraph::start(&[("TOKEN-W", "PW"), ("TOKEN-E", "PE")]);
    let data = data_dir("mess-load", &fake, json!({}));
    let server = start(data.path());
    let port = server.port;
    let (users, n) = (20, 50);
    let started = Instant::now();
    let threads: Vec<_> = (0..users)
        .map(|u| {
            std::thread::spawn(move || {
                for k in 1..=n {
                    let body = delivery(&[(
                        "PW",
                        vec![text_event(
                            &format!("L{u}"),
                            &format!("mid.L{u}.{k}"),
                            &welcome_text(u, k),
                        )],
                    )]);
                    let answer = post(port, &body);
                    assert_eq!(answer.status, 200, "{}", answer.text());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let acked = started.elapsed();
    for u in 0..users {
        let texts = fake.wait_texts(&format!("L{u}"), 4 + 2 * (n - 2), Duration::from_secs(40));
        check_welcome(&texts, &format!("Name{u}"), n);
    }
    eprintln!(
        "{} messages acknowledged in {acked:?}, all answered in {:?}",
        users * n,
        started.elapsed()
    );
}

/// The Graph API fails every 5th send: everything still arrives, once and in order.
#[test]
fn graph_failing_every_fifth_call() {
    let fake = FakeGraph::start(&[("TOKEN-W", "PW"), ("TOKEN-E", "PE")]);
    fake.fail_every.store(5, Ordering::SeqCst);
    let data = data_dir("mess-fail", &fake, json!({}));
    let server = start(data.path());
    let port = server.port;
    let (users, n) = (5, 12);
    let threads: Vec<_> = (0..users)
        .map(|u| {
            std::thread::spawn(move || {
                for k in 1..=n {
                    let body = delivery(&[(
                        "PW",
                        vec![text_event(
                            &format!("F{u}"),
                            &format!("mid.F{u}.{k}"),
                            &welcome_text(u, k),
                        )],
                    )]);
                    assert_eq!(post(port, &body).status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // A user who blocked the page: Graph says 400; botd gives up on those calls with one log
    // line each, and goes on with the conversation.
    for k in 1..=2 {
        let body = delivery(&[(
            "PW",
            vec![text_event(
                "X-blocked",
                &format!("mid.X.{k}"),
                &welcome_text(9, k),
            )],
        )]);
        assert_eq!(post(port, &body).status, 200);
    }
    // Every fifth Graph call fails with a 500: each costs its conversation a back-off of 1 s
    // or more (channels/retry.rs), so the bound leaves room for a loaded machine.
    for u in 0..users {
        let texts = fake.wait_texts(&format!("F{u}"), 4 + 2 * (n - 2), Duration::from_secs(90));
        check_welcome(&texts, &format!("Name{u}"), n);
    }
    assert!(
        wait_until(Duration::from_secs(10), || server
            .log()
            .matches("a reply to X-blocked is dropped")
            .count()
            == 4),
        "{}",
        server.log()
    );
    assert!(server
        .log()
        .contains("This person isn't available right now. (code 551)"));
    assert!(
        fake.failed.load(Ordering::SeqCst) >= 50,
        "failures injected: {}",
        fake.failed.load(Ordering::SeqCst)
    );
    assert!(!server.log().contains("TOKEN-"));
}

/// SIGKILL under load, twice, with restarts: every acknowledged message is answered, in order;
/// what repeats is only what the documented guarantee allows (per conversation and crash, one
/// Graph call made again and one turn played again: at most two extra copies of a reply,
/// right after it). Old message ids sent again after the restarts are not answered.
#[test]
fn sigkill_under_load_then_restart() {
    let fake = FakeGraph::start(&[("TOKEN-W", "PW"), ("TOKEN-E", "PE")]);
    let data = data_dir("mess-kill", &fake, json!({}));
    // The echo bot without its typing delay, so the load is quick.
    let config = json!({"enabled": true, "accessToken": "TOKEN-E", "typingDelay": false});
    write(
        data.path(),
        "bots/echo-bot/config/channel-messenger.json",
        &config.to_string(),
    );
    let mut server = start(data.path());
    let port = Arc::new(AtomicU16::new(server.port));
    let acked = Arc::new(AtomicUsize::new(0));
    let (users, n) = (10, 25);
    let threads: Vec<_> = (0..users)
        .map(|u| {
            let (port, acked) = (port.clone(), acked.clone());
            std::thread::spawn(move || {
                for k in 1..=n {
                    let body = delivery(&[(
                        "PE",
                        vec![text_event(
                            &format!("K{u}"),
                            &format!("mid.K{u}.{k}"),
                            &format!("K{u} says {k}"),
                        )],
                    )]);
                    // As Facebook does: send again until a 200 comes back.
                    let start = Instant::now();
                    while try_post(port.load(Ordering::SeqCst), &body) != Some(200) {
                        assert!(
                            start.elapsed() < Duration::from_secs(30),
                            "K{u} message {k} never acknowledged"
                        );
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let mut at_kill = Vec::new();
    for share in [3, 2] {
        assert!(wait_until(Duration::from_secs(20), || acked
            .load(Ordering::SeqCst)
            >= users * n * (share - 1) / share));
        server.kill();
        at_kill.push(acked.load(Ordering::SeqCst));
        server = start(data.path());
        port.store(server.port, Ordering::SeqCst);
    }
    let restarted = server;
    for t in threads {
        t.join().unwrap();
    }
    let mut extra_total = 0;
    for u in 0..users {
        let psid = format!("K{u}");
        wait_until(Duration::from_secs(30), || {
            fake.texts(&psid)
                .last()
                .is_some_and(|t| t == &format!("message|K{u} says {n}|"))
        });
        std::thread::sleep(Duration::from_millis(100));
        let texts = fake.texts(&psid);
        // Collapse repeats that follow their original: only the Graph call in flight at a
        // kill can repeat (a turn is never played twice), so at most one per kill.
        let mut distinct: Vec<String> = Vec::new();
        let mut extra = 0;
        for t in &texts {
            if distinct.last() == Some(t) {
                extra += 1;
            } else {
                distinct.push(t.clone());
            }
        }
        let expected: Vec<String> = (1..=n).map(|k| format!("message|K{u} says {k}|")).collect();
        assert_eq!(
            distinct, expected,
            "{psid}: every message answered, in order"
        );
        assert!(
            extra <= at_kill.len(),
            "{psid}: {extra} repeated replies: {texts:?}"
        );
        extra_total += extra;
    }
    eprintln!("killed after {at_kill:?} acknowledged messages; {extra_total} replies repeated after the crashes");
    // Facebook sending old messages again, after the restarts: nothing new is answered.
    let before = fake.calls().len();
    for u in 0..users {
        let body = delivery(&[(
            "PE",
            vec![text_event(
                &format!("K{u}"),
                &format!("mid.K{u}.1"),
                "again",
            )],
        )]);
        assert_eq!(post(restarted.port, &body).status, 200);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fake.calls().len(),
        before,
        "a duplicate was answered after a restart"
    );
    let log = restarted.log();
    assert!(!log.contains("TOKEN-"));
}

/// A user who types a template over Messenger gets it back as typed (issue "Hostile clients",
/// item 5 on this channel).
#[test]
fn templates_typed_over_messenger_are_echoed_literally() {
    let fake = FakeGraph::start(&[("TOKEN-W", "PW"), ("TOKEN-E", "PE")]);
    let data = data_dir("mess-tpl", &fake, json!({}));
    let server = start(data.path());
    let typed = [
        "{{event.botId}}",
        "{{{event.target}}}",
        "{{#event}}{{channel}}{{/event}}",
    ];
    let items: Vec<Value> = typed
        .iter()
        .enumerate()
        .map(|(i, t)| text_event("U-tpl", &format!("mid.tpl{i}"), t))
        .collect();
    assert_eq!(
        post(server.port, &delivery(&[("PE", items)])).text(),
        "EVENT_RECEIVED"
    );
    let texts = fake.wait_texts("U-tpl", typed.len(), Duration::from_secs(15));
    let expected: Vec<String> = typed.iter().map(|t| format!("message|{t}|")).collect();
    assert_eq!(texts, expected, "{}", server.log());
}

// ---------------------------------------------------------------------------------------
// Storage: whole batches, dead letters, the previous release's files
// ---------------------------------------------------------------------------------------

/// A webhook delivery is stored whole or not at all: a failure on its third event (a
/// trigger that makes SQLite refuse it) leaves neither the first two events nor any seen id,
/// so Facebook's retry is played once, in order.
#[test]
fn a_webhook_delivery_is_stored_whole_or_not_at_all() {
    let fake = FakeGraph::start(&[("TOKEN-W", "PW"), ("TOKEN-E", "PE")]);
    let data = data_dir("mess-whole", &fake, json!({}));
    let server = start(data.path());
    database(data.path())
        .execute_batch(
            "CREATE TRIGGER refuse_third BEFORE INSERT ON queue_items WHEN NEW.item LIKE '%third-event%'
             BEGIN SELECT RAISE(ABORT, 'no room left'); END",
        )
        .unwrap();
    let body = delivery(&[(
        "PW",
        vec![
            text_event("U-whole", "mid.w1", "hi"),
            text_event("U-whole", "mid.w2", "Ivan"),
            text_event("U-whole", "mid.w3", "third-event"),
        ],
    )]);
    let refused = post(server.port, &body);
    assert_eq!(refused.status, 500, "{}", refused.text());
    let db = database(data.path());
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT count(*) FROM queue_items"), 0);
    assert_eq!(count("SELECT count(*) FROM seen_ids"), 0);
    db.execute_batch("DROP TRIGGER refuse_third").unwrap();
    // Facebook sends the same delivery again, then the next message.
    assert_eq!(post(server.port, &body).text(), "EVENT_RECEIVED");
    assert_eq!(post(server.port, &body).text(), "EVENT_RECEIVED");
    let next = delivery(&[("PW", vec![text_event("U-whole", "mid.w4", "ok 4")])]);
    assert_eq!(post(server.port, &next).text(), "EVENT_RECEIVED");
    let texts = fake.wait_texts("U-whole", 8, Duration::from_secs(20));
    check_welcome(&texts, "Ivan", 4);
}

/// A turn that can never be saved (SQLite refuses the user record for good) ends in the dead
/// letters with a log line; the conversation's queue moves on to the next event.
#[test]
fn a_turn_that_cannot_be_saved_is_dead_lettered_and_the_queue_moves_on() {
    let fake = FakeGraph::start(&[("TOKEN-W", "PW"), ("TOKEN-E", "PE")]);
    let data = data_dir("mess-dead", &fake, json!({}));
    let server = start(data.path());
    database(data.path())
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON users WHEN NEW.value LIKE '%poison%'
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .unwrap();
    let body = delivery(&[(
        "PW",
        vec![
            text_event("U-dead", "mid.d1", "hi"),
            text_event("U-dead", "mid.d2", "poison"),
            text_event("U-dead", "mid.d3", "Judy"),
        ],
    )]);
    assert_eq!(post(server.port, &body).text(), "EVENT_RECEIVED");
    // "poison" was never saved: "Judy" is taken as the name, a first conversation.
    let texts = fake.wait_texts("U-dead", 4, Duration::from_secs(20));
    check_welcome(&texts, "Judy", 2);
    let reasons: Vec<String> = {
        let db = database(data.path());
        let mut stmt = db
            .prepare("SELECT queue, reason FROM dead_letters")
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok(format!(
                    "{}: {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?
                ))
            })
            .unwrap();
        rows.map(Result::unwrap).collect()
    };
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].starts_with("messenger-in: "), "{reasons:?}");
    assert!(
        server.log().contains("moved to the dead letters"),
        "{}",
        server.log()
    );
}

/// The previous release's Messenger files: a queued event, a reply not yet sent and the
/// seen-id log are imported at first start; the event is played, the reply sent, and ids
/// seen before the upgrade stay duplicates.
#[test]
fn the_previous_release_spools_and_seen_ids_are_imported() {
    let fake = FakeGraph::start(&[("TOKEN-W", "PW"), ("TOKEN-E", "PE")]);
    let data = data_dir("mess-import", &fake, json!({}));
    let storage = data.path().join("storage");
    let event = json!({"key": "welcome-bot/U-old", "item": {"bot": "welcome-bot", "psid": "U-old",
        "kind": "message", "payload": {"mid": "mid.old1", "text": "hi"}, "seen": "PW\u{0}mid.old1"}});
    write(
        &storage,
        "messenger/inbound/01700000000000000001.json",
        &event.to_string(),
    );
    let reply = json!({"key": "welcome-bot/U-out", "item": {"bot": "welcome-bot", "psid": "U-out",
        "calls": [{"recipient": {"id": "U-out"}, "message": {"text": "left from before"}}], "pauseMs": 0}});
    write(
        &storage,
        "messenger/outbound/01700000000000000002.json",
        &reply.to_string(),
    );
    write(
        &storage,
        "messenger/outbound/01700000000000000003.json",
        "{\"key\": \"welcome-bot/U-out\", \"it",
    );
    // seen.log: the 64-bit prefix of SHA-256 of "<page>\0<mid>", and when it was seen.
    let hash = |id: &str| {
        use sha2::Digest;
        let d = Sha256::digest(id.as_bytes());
        u64::from_be_bytes(d[..8].try_into().unwrap())
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    write(
        &storage,
        "messenger/seen.log",
        &format!("{:016x} {now}\n", hash("PW\u{0}mid.seen")),
    );
    let server = start(data.path());
    assert_eq!(
        fake.wait_texts("U-old", 1, Duration::from_secs(20)),
        ["May I know your name please?"]
    );
    assert_eq!(
        fake.wait_texts("U-out", 1, Duration::from_secs(20)),
        ["left from before"]
    );
    // Deliveries seen before the upgrade are duplicates; a new one from the same user is not.
    let again = delivery(&[(
        "PW",
        vec![
            text_event("U-old", "mid.old1", "hi"),
            text_event("U-seen", "mid.seen", "hi"),
        ],
    )]);
    assert_eq!(post(server.port, &again).text(), "EVENT_RECEIVED");
    let fresh = delivery(&[("PW", vec![text_event("U-seen", "mid.seen2", "hi")])]);
    assert_eq!(post(server.port, &fresh).text(), "EVENT_RECEIVED");
    assert_eq!(
        fake.wait_texts("U-seen", 1, Duration::from_secs(20)),
        ["May I know your name please?"]
    );
    let old = delivery(&[("PW", vec![text_event("U-old", "mid.old2", "Kim")])]);
    assert_eq!(post(server.port, &old).text(), "EVENT_RECEIVED");
    let texts = fake.wait_texts("U-old", 4, Duration::from_secs(20));
    check_welcome(&texts, "Kim", 2);
    assert_eq!(fake.texts("U-seen").len(), 1);
    // The damaged spool file is quarantined, the old files moved aside.
    assert!(server
        .log()
        .contains("damaged file of the previous release"));
    assert!(storage.join("imported-files/messenger/inbound").is_dir());
    assert!(storage.join("imported-files/messenger/seen.log").is_file());
    assert!(!storage.join("messenger/inbound").exists());
}

/// A queued event that cannot be read is quarantined at start with a log line, not skipped
/// and kept forever; the items after it are played.
#[test]
fn an_unreadable_queued_event_is_quarantined_at_start() {
    let fake = FakeGraph::start(&[("TOKEN-W", "PW"), ("TOKEN-E", "PE")]);
    let data = data_dir("mess-unreadable", &fake, json!({}));
    drop(start(data.path()));
    {
        let db = database(data.path());
        db.execute(
            "INSERT INTO queue_items (queue, key, item, created_ms) VALUES ('messenger-in', 'welcome-bot/U-q', '{\"bot\": \"welcome-b', 0)",
            [],
        )
        .unwrap();
        let good = json!({"bot": "welcome-bot", "psid": "U-q", "kind": "message", "payload": {"mid": "mid.q1", "text": "hi"}});
        db.execute(
            "INSERT INTO queue_items (queue, key, item, created_ms) VALUES ('messenger-in', 'welcome-bot/U-q', ?1, 0)",
            [good.to_string()],
        )
        .unwrap();
    }
    let server = start(data.path());
    assert_eq!(
        fake.wait_texts("U-q", 1, Duration::from_secs(20)),
        ["May I know your name please?"]
    );
    let log = server.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("ERROR") && l.contains("of queue messenger-in"))
            .count(),
        1,
        "{log}"
    );
    let kinds: Vec<String> = {
        let db = database(data.path());
        let mut stmt = db.prepare("SELECT kind FROM quarantine").unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    };
    assert_eq!(kinds, ["queue messenger-in"]);
    drop(server);
    // Nothing is left to skip at the next start.
    let server = start(data.path());
    assert!(!server.log().contains("cannot be read"), "{}", server.log());
}

/// SIGKILL twice during a welcome-bot burst: after the restarts every acknowledged message
/// was played exactly once and in order — the flow's conversation counter ("We already spoke
/// N times!") would show a turn played twice — and only a Graph call in flight repeats.
#[test]
fn sigkill_plays_every_acknowledged_event_exactly_once() {
    let fake = FakeGraph::start(&[("TOKEN-W", "PW"), ("TOKEN-E", "PE")]);
    let data = data_dir("mess-once", &fake, json!({}));
    let mut server = start(data.path());
    let port = Arc::new(AtomicU16::new(server.port));
    let acked = Arc::new(AtomicUsize::new(0));
    let (users, n) = (8, 12);
    let threads: Vec<_> = (0..users)
        .map(|u| {
            let (port, acked) = (port.clone(), acked.clone());
            std::thread::spawn(move || {
                for k in 1..=n {
                    let body = delivery(&[(
                        "PW",
                        vec![text_event(
                            &format!("O{u}"),
                            &format!("mid.O{u}.{k}"),
                            &welcome_text(u, k),
                        )],
                    )]);
                    let start = Instant::now();
                    while try_post(port.load(Ordering::SeqCst), &body) != Some(200) {
                        assert!(
                            start.elapsed() < Duration::from_secs(30),
                            "O{u} message {k} never acknowledged"
                        );
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let mut kills = 0;
    for share in [3, 2] {
        assert!(wait_until(Duration::from_secs(20), || acked
            .load(Ordering::SeqCst)
            >= users * n * (share - 1) / share));
        server.kill();
        kills += 1;
        server = start(data.path());
        port.store(server.port, Ordering::SeqCst);
    }
    for t in threads {
        t.join().unwrap();
    }
    for u in 0..users {
        let psid = format!("O{u}");
        let last = format!("We already spoke {} times!", n - 2);
        wait_until(Duration::from_secs(30), || {
            fake.texts(&psid).contains(&last)
        });
        let texts = fake.texts(&psid);
        let mut distinct: Vec<String> = Vec::new();
        for t in &texts {
            if distinct.last() != Some(t) {
                distinct.push(t.clone());
            }
        }
        assert!(
            texts.len() - distinct.len() <= kills,
            "{psid}: more repeats than Graph calls in flight: {texts:?}"
        );
        check_welcome(&distinct, &format!("Name{u}"), n);
    }
    drop(server);
}

/// SIGHUP: a new greeting restarts Messenger, whose profile set-up sends it; webhook events
/// posted around the reload are all answered, in order; a reload that changes nothing of
/// Messenger leaves it running.
#[test]
fn sighup_restarts_messenger_only_when_its_configuration_changed() {
    let fake = FakeGraph::start(&[("TOKEN-W", "PW"), ("TOKEN-E", "PE")]);
    let data = data_dir("fb-reload", &fake, json!({}));
    let server = start(data.path());
    let hangup = || {
        let status = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(server.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    };
    let reloads = || server.log().matches("reload done").count();
    let greeting = |text: &str| {
        fake.calls().iter().any(|c| {
            c.path.ends_with("messenger_profile")
                && c.body == json!({"greeting": [{"locale": "default", "text": text}]})
        })
    };

    // Nothing of Messenger changed: no restart.
    hangup();
    assert!(
        wait_until(Duration::from_secs(20), || reloads() == 1),
        "{}",
        server.log()
    );
    assert!(
        !server.log().contains("Messenger restarts"),
        "{}",
        server.log()
    );

    let config = json!({"enabled": true, "accessToken": "TOKEN-E", "typingDelay": false, "greeting": "Welcome back!", "getStarted": "GET_STARTED"});
    write(
        data.path(),
        "bots/echo-bot/config/channel-messenger.json",
        &config.to_string(),
    );
    let texts: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    for (i, text) in texts.iter().enumerate() {
        if i == 3 {
            hangup();
        }
        let body = delivery(&[("PE", vec![text_event("U-r", &format!("mid-r{i}"), text)])]);
        // A restarted Messenger looks its pages up again and answers 503 meanwhile; Facebook
        // sends the delivery again, and so does this test.
        let mut a = post(server.port, &body);
        for _ in 0..100 {
            if a.status != 503 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            a = post(server.port, &body);
        }
        assert_eq!(a.status, 200, "{}", a.text());
    }
    assert!(
        wait_until(Duration::from_secs(20), || reloads() == 2),
        "{}",
        server.log()
    );
    assert!(server.log().contains("Messenger restarts"));
    assert!(
        wait_until(Duration::from_secs(20), || greeting("Welcome back!")),
        "{:?}",
        fake.calls()
    );
    let got = fake.wait_texts("U-r", 6, Duration::from_secs(20));
    let expected: Vec<String> = texts.iter().map(|t| format!("message|{t}|")).collect();
    assert_eq!(got, expected, "{}", server.log());
}
