//! A real Botpress 12 bot (`../shared/botpress-bots/bluebot`) played over Messenger: signed
//! webhook calls in, a fake Graph API on loopback out. Botpress 12's Messenger renderers:
//! typing only when the element asks for it, single choices as quick replies, carousels as
//! generic templates.

mod common;

use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "bluebot-app-secret";
const PAGE: &str = "PBLUE";
const TOKEN: &str = "TOKEN-BLUE";
const WEBHOOK: &str = "/api/v1/bots/___/mod/channel-messenger/webhook";

/// The Graph API: `/me` names the page, `/me/messages` records what is sent.
struct FakeGraph {
    port: u16,
    sent: Arc<Mutex<Vec<Value>>>,
}

impl FakeGraph {
    fn start() -> FakeGraph {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = sent.clone();
        std::thread::spawn(move || {
            while let Ok(mut request) = server.recv() {
                let path = request.url().split('?').next().unwrap_or("").to_string();
                let mut raw = String::new();
                let _ = std::io::Read::read_to_string(request.as_reader(), &mut raw);
                let answer = match path.as_str() {
                    "/v23.0/me" => json!({"id": PAGE, "name": "Blue page"}),
                    "/v23.0/me/messages" => {
                        log.lock()
                            .unwrap()
                            .push(serde_json::from_str(&raw).unwrap_or(Value::Null));
                        json!({"recipient_id": "u", "message_id": "m.1"})
                    }
                    _ => json!({"result": "success"}),
                };
                let _ = request.respond(tiny_http::Response::from_string(answer.to_string()));
            }
        });
        FakeGraph { port, sent }
    }

    /// The messages (not sender actions) sent so far.
    fn messages(&self) -> Vec<Value> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| c.get("message").cloned())
            .collect()
    }

    fn wait_messages(&self, n: usize) -> Vec<Value> {
        wait_until(Duration::from_secs(20), || self.messages().len() >= n);
        self.messages()
    }
}

fn bluebot_on_messenger(data: &Path, graph: &FakeGraph) {
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/botpress-bots/bluebot"),
        &data.join("bots/bluebot"),
    );
    write(
        data,
        "global/config/channel-messenger.json",
        &json!({"appSecret": SECRET, "verifyToken": "v", "typingDelay": false,
            "graphApiBase": format!("http://127.0.0.1:{}", graph.port)})
        .to_string(),
    );
    write(
        data,
        "bots/bluebot/config/channel-messenger.json",
        &json!({"enabled": true, "accessToken": TOKEN}).to_string(),
    );
}

fn send_text(port: u16, mid: &str, text: &str) {
    let body = json!({"object": "page", "entry": [{"id": PAGE, "time": 1_700_000_000_000i64, "messaging": [
        {"sender": {"id": "U1"}, "recipient": {"id": PAGE}, "timestamp": 1_700_000_000_000i64,
         "message": {"mid": mid, "seq": 1, "text": text}}]}]})
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
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

#[test]
fn bluebot_plays_over_messenger() {
    let graph = FakeGraph::start();
    let data = TempDir::new("bluebot-messenger");
    bluebot_on_messenger(data.path(), &graph);
    let server = Server::start(data.path(), &[]);
    assert!(
        wait_until(Duration::from_secs(10), || server
            .log()
            .contains(&format!("answers page {PAGE}"))),
        "{}",
        server.log()
    );

    send_text(server.port, "m1", "hi");
    let greeting = graph.wait_messages(3);
    assert_eq!(
        greeting,
        vec![
            json!({"text": ":-)"}),
            json!({"text": "Hello, welcome to ABC Insurance Virtual Assistant. How can I assist you today? "}),
            json!({"text": "Are you here with issues regarding", "quick_replies": [
                {"content_type": "text", "title": " Health insurance", "payload": "1"},
                {"content_type": "text", "title": "Vehicle insurance", "payload": "2"}]}),
        ],
        "{}",
        server.log()
    );
    // Each text asked for typing: typing_on and typing_off around it.
    let actions: Vec<Value> = graph
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter_map(|c| c.get("sender_action").cloned())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "typing_on").count(),
        3,
        "{actions:?}"
    );

    send_text(server.port, "m2", "2");
    let vehicle = graph.wait_messages(5);
    // The card (no typing asked) as a generic template, then the next choice.
    let template = &vehicle[3]["attachment"];
    assert_eq!(template["type"], "template");
    assert_eq!(template["payload"]["template_type"], "generic");
    let element = &template["payload"]["elements"][0];
    assert_eq!(
        (&element["title"], &element["subtitle"]),
        (
            &json!("Vehicle insurance"),
            &json!("Get your wheels on the road without any worries. We introduced Vehicle insurance policy  thus we understand how precise is your life. ")
        )
    );
    assert_eq!(vehicle[4]["text"], "Vehicle Insurance");
    assert_eq!(
        vehicle[4]["quick_replies"][1],
        json!({"content_type": "text", "title": "Claim", "payload": "VALUE FOR YOUR LOSE."})
    );

    send_text(server.port, "m3", "Claim");
    assert_eq!(
        graph.wait_messages(6)[5],
        json!({"text": "Driving licence copy, Original FIR copy, original keys."})
    );
}

#[test]
fn a_wait_pauses_the_conversation_after_what_was_said_before_it() {
    let graph = FakeGraph::start();
    let data = TempDir::new("messenger-wait");
    let d = data.path();
    write(
        d,
        "bots/wait-bot/bot.config.json",
        r#"{"name":"w","version":"12.1.6","defaultLanguage":"en","languages":["en"]}"#,
    );
    // Ten minutes of `builtin/wait` between two replies.
    write(
        d,
        "bots/wait-bot/flows/main.flow.json",
        r#"{"version":"0.0.1","startNode":"entry","nodes":[
            {"id":"n0001","name":"entry","onEnter":[],"onReceive":[],"next":[{"condition":"true","node":"long"}]},
            {"id":"n0002","name":"long","onEnter":[
                "say #builtin_text {\"text\":\"one\"}",
                "builtin/wait {\"delay\":600000}",
                "say #builtin_text {\"text\":\"two\"}"],"onReceive":null,"next":[]}
        ]}"#,
    );
    write(
        d,
        "global/config/channel-messenger.json",
        &json!({"appSecret": SECRET, "verifyToken": "v", "typingDelay": false,
            "graphApiBase": format!("http://127.0.0.1:{}", graph.port)})
        .to_string(),
    );
    write(
        d,
        "bots/wait-bot/config/channel-messenger.json",
        &json!({"enabled": true, "accessToken": TOKEN}).to_string(),
    );
    let server = Server::start(d, &[]);
    assert!(
        wait_until(Duration::from_secs(10), || server
            .log()
            .contains(&format!("answers page {PAGE}"))),
        "{}",
        server.log()
    );
    send_text(server.port, "m1", "hi");
    send_text(server.port, "m2", "go");
    // The turn is saved and "one" goes out at once: the wait is a pause of the conversation's
    // outbound queue, not a turn asleep for ten minutes before anything is sent.
    let sent = graph.wait_messages(1);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["text"], "one", "{sent:?}");
}
