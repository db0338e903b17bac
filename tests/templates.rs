//! Issue "Hostile clients", item 5: text that came from a user is data, never a template. Over
//! real Converse HTTP, users type Mustache at welcome-bot and at a small bot written here that
//! echoes, stores and answers with what it heard; every template they type comes back or is
//! stored literally, while the authors' own templates (including an element that renders an
//! author-written argument holding a template) render as Botpress renders them.
//!
//! Expected texts come from the bot files and from Botpress' rules: `{{x}}` HTML-escapes
//! `& < > " ' / \` =` (so `/` becomes `&#x2F;`), `{{{x}}}` does not, and a template found in an
//! author-written `say` argument is rendered again (Botpress' later passes).

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;

const ASK_NAME: &str = "May I know your name please?";
const BOT: &str = "tpl-bot";

fn greetings(name: &str) -> [String; 3] {
    [
        format!("👋, {name}!"),
        format!("Hello, {name}!"),
        format!("Welcome to Botpress, {name}!"),
    ]
}

/// mustache.js's `{{ }}` escaping, the rule the expected texts follow.
fn html_escaped(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '/' => out.push_str("&#x2F;"),
            '`' => out.push_str("&#x60;"),
            '=' => out.push_str("&#x3D;"),
            c => out.push(c),
        }
    }
    out
}

fn set(kind: &str, name: &str, value: &str) -> String {
    format!(
        "builtin/setVariable {}",
        json!({"type": kind, "name": name, "value": value})
    )
}

/// `tpl-bot`: welcome-bot's configuration and intents, with a flow that stores a secret in
/// user, session, temp and the bot-wide store, then echoes whatever it hears three ways, and a
/// QnA that answers with what the user said before.
fn tpl_bot(data: &Path) {
    let dir = data.join("bots").join(BOT);
    copy_dir(&data.join("bots/welcome-bot"), &dir);
    let config = std::fs::read_to_string(dir.join("bot.config.json"))
        .unwrap()
        .replace("\"welcome-bot\"", &format!("\"{BOT}\""));
    std::fs::write(dir.join("bot.config.json"), config).unwrap();
    let _ = std::fs::remove_dir_all(dir.join("flows"));
    let _ = std::fs::remove_dir_all(dir.join("content-elements"));
    let flow = json!({"version": "0.0.1", "flow": "main.flow.json", "startNode": "entry",
    "catchAll": {"onReceive": [], "next": []},
    "nodes": [
        {"id": "node-entry", "name": "entry",
         "onEnter": [
            set("user", "secret", "U-SECRET"), set("session", "secret", "S-SECRET"),
            set("temp", "secret", "T-SECRET"), set("bot", "secret", "B-SECRET"),
            "say #builtin_text {\"text\": \"ready\"}"],
         "onReceive": [
            set("user", "previous", "{{{user.heard}}}"),
            set("user", "heard", "{{event.payload.text}}")],
         "next": [
            {"condition": "event.preview === 'done'", "node": "END"},
            {"condition": "true", "node": "echo"}]},
        {"id": "node-echo", "name": "echo",
         "onEnter": [
            "say #!builtin_text-echo",
            "say #builtin_text {\"text\": \"said: {{{event.payload.text}}}\"}",
            "say #!builtin_text-nested {\"greeting\": \"Hi {{{user.heard}}}\", \"plain\": \"{{event.preview}}\"}"],
         "onReceive": null,
         "next": [{"condition": "true", "node": "entry"}]}
    ]});
    write(&dir, "flows/main.flow.json", &flow.to_string());
    write(&dir, "flows/main.ui.json", r#"{"nodes":[]}"#);
    let element = |id: &str, text: &str| json!({"id": id, "formData": {"text$en": text}, "createdBy": "t", "createdOn": "2019-04-24T18:00:00.000Z", "modifiedOn": null});
    let elements = json!([
        element("builtin_text-echo", "{{{event.preview}}}|{{{user.heard}}}"),
        element(
            "builtin_text-nested",
            "{{{greeting}}} ({{plain}}) {{user.secret}}"
        ),
    ]);
    write(
        &dir,
        "content-elements/builtin_text.json",
        &elements.to_string(),
    );
    let qna = json!({"id": "shop0000aa_where_is_the_shop", "data": {
        "questions": ["Where is the shop?", "Where can I find the shop?", "Where is your shop?",
            "Tell me where the shop is", "Shop address", "How do I get to the shop?",
            "What is the address of the shop?", "Where is the store?"],
        "answers": ["The shop is on Main Street, {{{user.previous}}}."],
        "redirectFlow": "", "redirectNode": "", "action": "text", "category": "global", "enabled": true}});
    write(
        &dir,
        "qna/shop0000aa_where_is_the_shop.json",
        &qna.to_string(),
    );
}

fn started(tag: &str) -> (TempDir, Server) {
    let data = data_copy(tag);
    tpl_bot(data.path());
    let server = Server::start(data.path(), &[]);
    let (code, out, err) = botd(&["check", "--data", data.path().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    (data, server)
}

fn texts_of(answer: &Answer) -> Vec<String> {
    texts(&json!({"responses": responses(answer)}))
}

/// The three echoes `tpl-bot` gives for `said` (then "ready" as it waits again).
fn echoes(said: &str) -> Vec<String> {
    let stored = html_escaped(said);
    vec![
        format!("{said}|{stored}"),
        format!("said: {said}"),
        format!("Hi {stored} ({}) U-SECRET", html_escaped(said)),
        "ready".to_string(),
    ]
}

/// Every template a user types to the echo bot comes back as typed, in a content element, a
/// direct `say` and an author argument that is itself a template; stored values stay literal.
#[test]
fn user_templates_come_back_literally() {
    let (data, server) = started("tpl-echo");
    let p = server.port;
    let t = token(data.path(), &[]);
    assert_eq!(texts_of(&converse(p, BOT, "mallory", "start")), ["ready"]);
    let attempts = [
        // Authors' templates escape this one, and the nested author argument renders it.
        "O'Neil & co",
        "{{event.botId}}",
        "{{{bot.secret}}}",
        "{{#user}}{{secret}}{{/user}}",
        "{{session.secret}} {{temp.secret}} {{user.secret}} {{& bot.secret}}",
        "{{#event.nlu.intents}}{{name}},{{/event.nlu.intents}}",
        "{{event}} {{.}} {{^nothing}}inverted{{/nothing}}",
        "{{{greeting}}} {{plain}}",
        "plain text, no tags",
    ];
    for said in attempts {
        assert_eq!(
            texts_of(&converse(p, BOT, "mallory", said)),
            echoes(said),
            "{said}\n{}",
            server.log()
        );
    }
    // What was stored is the escaped text, never a rendering of it.
    let last = attempts[attempts.len() - 1];
    let state = state_after(p, BOT, "mallory", "{{user.secret}}", &t);
    assert_eq!(state["user"]["heard"], html_escaped("{{user.secret}}"));
    assert_eq!(state["user"]["previous"], html_escaped(last));
    assert_eq!(state["user"]["secret"], "U-SECRET");
}

/// A message built to multiply itself through nested passes gets exactly itself back, and the
/// reply stays the size of the message.
#[test]
fn a_self_referencing_message_does_not_grow() {
    let (_data, server) = started("tpl-grow");
    let p = server.port;
    converse(p, BOT, "eve", "start");
    // Each pass would paste the whole message in place of each of its tags.
    let said = "{{{event.preview}}}".repeat(357 / 19);
    let answer = converse(p, BOT, "eve", &said);
    // Sizes first: a failure here must not print a megabyte.
    assert!(
        answer.body.len() < 8 * said.len(),
        "{} bytes",
        answer.body.len()
    );
    assert_eq!(texts_of(&answer), echoes(&said), "{}", server.log());
}

/// welcome-bot: a name that is a template is stored and greeted literally (the nickname is
/// stored escaped by `{{event.payload.text}}` and escaped again by `{{user.nickname}}`), and a
/// 352-character name keeps the stored records small.
#[test]
fn welcome_bot_names_are_data() {
    let data = data_copy("tpl-welcome");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let t = token(data.path(), &[]);
    for (user, name) in [
        ("w0", "Bob"),
        ("w1", "{{event.botId}}"),
        ("w2", "{{#user}}{{nickname}}{{/user}}"),
        ("w3", "{{{user.nickname}}}{{{user.nickname}}}"),
    ] {
        assert_eq!(
            responses(&converse(p, "welcome-bot", user, "hi")),
            typed_text(ASK_NAME)
        );
        let greeting = &texts_of(&converse(p, "welcome-bot", user, name))[0];
        let shown = html_escaped(&html_escaped(name));
        assert!(
            greetings(&shown).contains(greeting),
            "{name}: {greeting}\n{}",
            server.log()
        );
        let state = state_after(p, "welcome-bot", user, "hello", &t);
        assert_eq!(state["user"]["nickname"], html_escaped(name), "{name}");
    }

    let long_name = "{{event.preview}}".repeat(352 / 17);
    converse(p, "welcome-bot", "w4", "hi");
    let greeting = &texts_of(&converse(p, "welcome-bot", "w4", &long_name))[0];
    assert!(
        greeting.len() < 2 * long_name.len(),
        "{} bytes",
        greeting.len()
    );
    assert!(greetings(&long_name).contains(greeting), "{greeting}");
    let later = converse(p, "welcome-bot", "w4", "hello again");
    assert!(later.body.len() < 8 * 1024, "{} bytes", later.body.len());
    let stored: u64 = files_below(&data.path().join("storage/bots/welcome-bot"))
        .iter()
        .map(|f| {
            std::fs::metadata(data.path().join("storage/bots/welcome-bot").join(f))
                .map_or(0, |m| m.len())
        })
        .sum();
    assert!(
        stored < 16 * 1024,
        "welcome-bot storage holds {stored} bytes"
    );
}

/// A QnA answer that shows something the user said shows it as said.
#[test]
fn qna_answers_keep_user_text_literal() {
    let (data, server) = started("tpl-qna");
    let p = server.port;
    let t = token(data.path(), &[]);
    converse(p, BOT, "quinn", "start");
    let said = "{{{bot.secret}}} {{user.secret}}";
    assert_eq!(texts_of(&converse(p, BOT, "quinn", said)), echoes(said));
    // "done" ends the flow, so the next question is QnA's to answer.
    converse(p, BOT, "quinn", "done");
    let body = json!({"type": "text", "text": "Where is the shop?"});
    let a = secured(p, BOT, "quinn", &body, "decision", &t);
    assert_eq!(a.status, 200, "{}", a.text());
    let a: Value = a.json();
    assert_eq!(a["decision"]["source"], "qna", "{a}");
    assert_eq!(
        texts(&a),
        [format!(
            "The shop is on Main Street, {}.",
            html_escaped(said)
        )]
    );
}
