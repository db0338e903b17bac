//! A real Botpress 12 bot (`../shared/botpress-bots/bluebot`) played over Messenger: signed
//! webhook calls in, a fake Graph API on loopback out. Botpress 12's Messenger renderers:
//! typing only when the element asks for it, single choices as quick replies, carousels as
//! generic templates.

mod common;

use common::fake_graph::{post_text, FakeGraph};
use common::*;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const SECRET: &str = "bluebot-app-secret";
const PAGE: &str = "PBLUE";
const TOKEN: &str = "TOKEN-BLUE";

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

#[test]
fn bluebot_plays_over_messenger() {
    let graph = FakeGraph::start(PAGE);
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

    post_text(server.port, SECRET, PAGE, "m1", "hi");
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
    let actions = graph.sender_actions();
    assert_eq!(
        actions.iter().filter(|a| *a == "typing_on").count(),
        3,
        "{actions:?}"
    );

    post_text(server.port, SECRET, PAGE, "m2", "2");
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

    post_text(server.port, SECRET, PAGE, "m3", "Claim");
    assert_eq!(
        graph.wait_messages(6)[5],
        json!({"text": "Driving licence copy, Original FIR copy, original keys."})
    );
}

#[test]
fn a_wait_pauses_the_conversation_after_what_was_said_before_it() {
    let graph = FakeGraph::start(PAGE);
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
    post_text(server.port, SECRET, PAGE, "m1", "hi");
    post_text(server.port, SECRET, PAGE, "m2", "go");
    // The turn is saved and "one" goes out at once: the wait is a pause of the conversation's
    // outbound queue, not a turn asleep for ten minutes before anything is sent.
    let sent = graph.wait_messages(1);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["text"], "one", "{sent:?}");
}
