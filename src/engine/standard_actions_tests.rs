//! Unit tests of the standard actions (builtin, basic-skills, analytics) against what
//! Botpress's JavaScript does to the state, on a small bot loaded from a temporary folder.

use super::actions;
use super::bot::{self, Bot};
use super::dialog::{DialogContext, Turn};
use crate::config::Settings;
use crate::store::{Batch, Namespace, SqliteStore, Store};
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;

struct Fixture {
    dir: PathBuf,
    bot: Bot,
    store: SqliteStore,
    settings: std::sync::Arc<Settings>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture(tag: &str, version: &str) -> Fixture {
    fixture_with(tag, version, &[]).0
}

/// A fixture with more files, paths relative to the data folder; also gives the load's
/// warnings.
fn fixture_with(tag: &str, version: &str, files: &[(&str, &str)]) -> (Fixture, Vec<String>) {
    let dir = std::env::temp_dir().join(format!("botd-actions-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (rel, text) in files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let bot_dir = dir.join("bots/test-bot");
    let write = |rel: &str, text: &str| {
        let path = bot_dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "bot.config.json",
        &format!(
            r#"{{"name":"t","version":"{version}","defaultLanguage":"en","languages":["en"]}}"#
        ),
    );
    write(
        "flows/main.flow.json",
        r#"{"version":"0.0.1","startNode":"entry","nodes":[{"id":"n0001","name":"entry","onEnter":[],"onReceive":null,"next":[]}]}"#,
    );
    write(
        "intents/order.json",
        r#"{"name":"order","contexts":["shop","global"],"utterances":["I want [cheese](topping) pizza"],"slots":[{"name":"topping","entities":["any"]}]}"#,
    );
    write(
        "content-elements/builtin_single-choice.json",
        r#"[{"id":"builtin_single-choice-abc","formData":{"text$en":"Size?","choices$en":[{"title":"Large","value":"large"},{"title":"Small","value":"small"}]}}]"#,
    );
    let settings = Settings::load(&dir).expect("settings");
    let outcome = bot::load_bot(&settings, "test-bot");
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let store = SqliteStore::open(&dir.join("storage")).expect("database");
    let warnings = outcome.warnings.iter().map(|p| p.to_string()).collect();
    (
        Fixture {
            bot: outcome.bot.expect("bot loads"),
            store,
            dir,
            settings: std::sync::Arc::new(settings),
        },
        warnings,
    )
}

fn turn<'a>(f: &'a Fixture, event: Value) -> Turn<'a> {
    Turn {
        bot: &f.bot,
        store: &f.store,
        scope: json!({"event": event, "user": {}, "session": {"lastMessages": []}, "temp": {}}),
        context: DialogContext::default(),
        channel: "api".into(),
        bot_url: "http://localhost:3000".into(),
        settings: f.settings.clone(),
        outputs: Vec::new(),
        kv_writes: Vec::new(),
        deadline: None,
        replies_together: false,
    }
}

fn text_event(text: &str) -> Value {
    json!({"target": "u1", "botId": "test-bot", "preview": text, "payload": {"type": "text", "text": text},
        "nlu": {"intent": {"name": "none"}, "entities": [], "slots": {}}})
}

fn args(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn run(t: &mut Turn, name: &str, a: Value) {
    actions::run(name, &args(a), t).unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// Applies the turn's KV writes, as a saved turn does.
fn commit(t: &mut Turn) {
    let mut batch = Batch::new();
    for (k, v) in t.kv_writes.drain(..) {
        batch.put(Namespace::Kv, &t.bot.id, &k, v);
    }
    t.store.commit(batch).unwrap();
}

#[test]
fn global_variables_set_get_and_reset() {
    let f = fixture("globals", "1.0.0");
    let mut t = turn(&f, text_event("hi"));
    run(
        &mut t,
        "builtin/setGlobalVariable",
        json!({"name": "promo", "value": "spring", "expiry": "never", "output": "copy"}),
    );
    assert_eq!(t.scope["temp"]["copy"], "spring");
    commit(&mut t);
    // Botpress's key and box: storage/global/<name> → {value, expiry}.
    assert_eq!(
        f.store
            .get(Namespace::Kv, "test-bot", "storage/global/promo")
            .unwrap(),
        Some(json!({"value": "spring", "expiry": "never"}))
    );
    let mut t = turn(&f, text_event("hi"));
    run(
        &mut t,
        "builtin/getGlobalVariable",
        json!({"name": "promo", "output": "p"}),
    );
    assert_eq!(t.scope["temp"]["p"], "spring");
    run(
        &mut t,
        "builtin/resetGlobalVariable",
        json!({"name": "pro"}),
    );
    run(
        &mut t,
        "builtin/getGlobalVariable",
        json!({"name": "promo", "output": "p"}),
    );
    // Reset removes every key starting with the name; the output is then undefined.
    assert_eq!(t.scope["temp"].get("p"), None);
    // An expired value reads as undefined.
    run(
        &mut t,
        "builtin/setGlobalVariable",
        json!({"name": "flash", "value": 1, "expiry": "1ms"}),
    );
    std::thread::sleep(std::time::Duration::from_millis(5));
    run(
        &mut t,
        "builtin/getGlobalVariable",
        json!({"name": "flash", "output": "f"}),
    );
    assert_eq!(t.scope["temp"].get("f"), None);
}

#[test]
fn reset_session_keeps_last_messages_and_contexts() {
    let f = fixture("reset", "12.1.6");
    let mut t = turn(&f, text_event("hi"));
    t.scope["session"] = json!({"lastMessages": [1], "nluContexts": [{"context": "a", "ttl": 2}], "slots": 1, "x": 2});
    t.scope["temp"] = json!({"lastMessages": "kept too", "y": 1});
    run(&mut t, "builtin/resetSession", json!({}));
    assert_eq!(
        t.scope["session"],
        json!({"lastMessages": [1], "nluContexts": [{"context": "a", "ttl": 2}]})
    );
    assert_eq!(t.scope["temp"], json!({"lastMessages": "kept too"}));
}

#[test]
fn analytics_metrics_count_per_metric_and_group() {
    let f = fixture("analytics", "12.1.6");
    let mut t = turn(&f, text_event("hi"));
    run(
        &mut t,
        "analytics/increment",
        json!({"name": "orders", "group": "pizza"}),
    );
    run(
        &mut t,
        "analytics/increment",
        json!({"name": "orders", "group": "pizza", "count": "2"}),
    );
    run(
        &mut t,
        "analytics/decrement",
        json!({"metric": "orders", "group": "pizza"}),
    );
    assert_eq!(
        t.kv_get("analytics/custom_metrics/orders~pizza"),
        Some(json!(2.0))
    );
    run(
        &mut t,
        "analytics/set",
        json!({"metric": "visits", "count": 7}),
    );
    // Without a group, Botpress's template literal names it "undefined".
    assert_eq!(
        t.kv_get("analytics/custom_metrics/visits~undefined"),
        Some(json!(7.0))
    );
    assert!(actions::run(
        "analytics/set",
        &args(json!({"metric": "m", "count": "many"})),
        &mut t
    )
    .is_err());
}

#[test]
fn slot_fill_takes_matching_entities_or_the_whole_text_for_any() {
    let f = fixture("slotfill", "1.0.0");
    let mut event = text_event("a large one");
    event["nlu"]["entities"] = json!([
        {"name": "numeral", "type": "system", "data": {"value": 1}},
        {"name": "size", "type": "list", "data": {"value": "large"}}
    ]);
    let mut t = turn(&f, event);
    run(
        &mut t,
        "basic-skills/slot_fill",
        json!({"slotName": "size", "entities": "size,colour"}),
    );
    let slot = &t.scope["session"]["extractedSlots"]["size"];
    assert_eq!(slot["value"], "large");
    assert_eq!(slot["name"], "size");
    assert_eq!(slot["entity"]["name"], "size");
    assert_eq!(slot["turns"], 0);
    assert_eq!(slot["overwritable"], true);
    assert_eq!(slot["expiresAfterTurns"], false);
    assert_eq!(t.scope["session"]["extractedSlots"]["notFound"], 0);
    // A filled slot is not replaced.
    t.scope["event"]["nlu"]["entities"][1]["data"]["value"] = json!("small");
    run(
        &mut t,
        "basic-skills/slot_fill",
        json!({"slotName": "size", "entities": "size"}),
    );
    assert_eq!(
        t.scope["session"]["extractedSlots"]["size"]["value"],
        "large"
    );
    // `any` fills from the text only when the NLU found no entity at all.
    run(
        &mut t,
        "basic-skills/slot_fill",
        json!({"slotName": "topping", "entities": "any"}),
    );
    assert_eq!(t.scope["session"]["extractedSlots"].get("topping"), None);
    let mut t = turn(&f, text_event("mushrooms"));
    run(
        &mut t,
        "basic-skills/slot_fill",
        json!({"slotName": "topping", "entities": "any"}),
    );
    let slot = &t.scope["session"]["extractedSlots"]["topping"];
    assert_eq!(slot["value"], "mushrooms");
    assert_eq!(
        slot["entity"],
        json!({"name": "any", "type": "any", "meta": {"start": 0, "end": 9}, "data": {"extras": {}, "value": "mushrooms"}})
    );
}

#[test]
fn slot_not_found_counts_to_its_limit_and_reset_forgets() {
    let f = fixture("notfound", "1.0.0");
    let mut t = turn(&f, text_event("?"));
    let counts: Vec<Value> = (0..3)
        .map(|_| {
            run(
                &mut t,
                "basic-skills/slot_not_found",
                json!({"retryAttempts": "3"}),
            );
            t.scope["session"]["extractedSlots"]["notFound"].clone()
        })
        .collect();
    // 0 counts as 1, then +1 below the limit; at the limit notExtracted is set instead.
    assert_eq!(counts, vec![json!(2.0), json!(3.0), json!(3.0)]);
    assert_eq!(t.scope["temp"]["notExtracted"], "true");
    // The hard limit is 10, whatever the skill says.
    let mut t = turn(&f, text_event("?"));
    t.scope["session"]["extractedSlots"] = json!({"notFound": 10});
    run(
        &mut t,
        "basic-skills/slot_not_found",
        json!({"retryAttempts": 50}),
    );
    assert_eq!(t.scope["temp"]["notExtracted"], "true");
    t.scope["session"]["extractedSlots"]["size"] = json!({"value": "large"});
    run(
        &mut t,
        "basic-skills/slot_reset",
        json!({"slotName": "size"}),
    );
    assert_eq!(t.scope["session"]["extractedSlots"].get("size"), None);
}

#[test]
fn slot_update_contexts_listens_to_the_intent_contexts() {
    let f = fixture("contexts", "1.0.0");
    let mut t = turn(&f, text_event("?"));
    t.scope["session"]["nluContexts"] = json!([{"context": "old", "ttl": 3}]);
    run(
        &mut t,
        "basic-skills/slot_update_contexts",
        json!({"intentName": "order"}),
    );
    assert_eq!(
        t.scope["session"]["nluContexts"],
        json!([{"context": "shop", "ttl": 1000}, {"context": "global", "ttl": 1000}])
    );
    assert!(actions::run(
        "basic-skills/slot_update_contexts",
        &args(json!({"intentName": "nope"})),
        &mut t
    )
    .unwrap_err()
    .contains("\"nope\""));
}

#[test]
fn the_slot_hook_stores_nlu_slots_and_counts_turns() {
    let mut session = json!({"extractedSlots": {"size": {"value": "large", "turns": 2, "overwritable": true},
        "locked": {"value": "x", "overwritable": false}, "notFound": 2}});
    let nlu = json!({"slots": {
        "topping": {"name": "topping", "value": "cheese", "entity": null},
        "locked": {"name": "locked", "value": "y"},
        "empty": {"name": "empty", "value": null}
    }});
    super::skills::extract_slots_hook(bot::BotpressVersion(11, 9, 7), &mut session, &nlu);
    let slots = &session["extractedSlots"];
    assert_eq!(slots["size"]["turns"], 3.0);
    assert_eq!(slots["topping"]["value"], "cheese");
    assert_eq!(slots["topping"]["turns"], 0);
    assert_eq!(slots["locked"]["value"], "x", "not overwritable");
    assert_eq!(slots.get("empty"), None);
    assert_eq!(slots["notFound"], 0);
}

#[test]
fn botpress_12_slots_live_in_session_slots_with_their_expiry() {
    let f = fixture("slots12", "12.1.6");
    let mut t = turn(&f, text_event("mushrooms"));
    run(
        &mut t,
        "basic-skills/slot_fill",
        json!({"slotName": "topping", "entities": "any", "turnExpiry": 2}),
    );
    assert_eq!(t.scope["session"].get("extractedSlots"), None);
    assert_eq!(t.scope["session"]["slots"]["topping"]["value"], "mushrooms");
    assert_eq!(
        t.scope["session"]["slots"]["topping"]["expiresAfterTurns"],
        2
    );
    run(
        &mut t,
        "basic-skills/slot_not_found",
        json!({"retryAttempts": 2}),
    );
    assert_eq!(t.scope["session"]["slots"]["notFound"], 2.0);
    // The hook counts turns and drops the slot at its expiry; -1 never expires in 12.
    let mut session = t.scope["session"].clone();
    session["slots"]["kept"] = json!({"value": 1, "turns": 5, "expiresAfterTurns": -1});
    let v12 = bot::BotpressVersion(12, 1, 6);
    super::skills::extract_slots_hook(v12, &mut session, &json!({"slots": {}}));
    assert_eq!(session["slots"]["topping"]["turns"], 1.0);
    super::skills::extract_slots_hook(v12, &mut session, &json!({"slots": {}}));
    assert_eq!(session["slots"].get("topping"), None);
    assert_eq!(session["slots"]["kept"]["turns"], 7.0);

    // 12.20: slot_update_contexts starts temp.tryFillSlotCount, slot_not_found counts there.
    let f = fixture("slots1220", "12.20.0");
    let mut t = turn(&f, text_event("?"));
    run(
        &mut t,
        "basic-skills/slot_update_contexts",
        json!({"intentName": "order"}),
    );
    assert_eq!(
        t.scope["temp"],
        json!({"tryFillSlotCount": 1, "extracted": false, "notExtracted": false, "alreadyExtracted": false})
    );
    run(
        &mut t,
        "basic-skills/slot_not_found",
        json!({"retryAttempts": 2}),
    );
    assert_eq!(t.scope["temp"]["tryFillSlotCount"], 2.0);
    assert_eq!(t.scope["temp"]["notExtracted"], false);
    run(
        &mut t,
        "basic-skills/slot_not_found",
        json!({"retryAttempts": 2}),
    );
    assert_eq!(t.scope["temp"]["notExtracted"], "true");
}

#[test]
fn choice_skill_counters_and_version_rules() {
    let f = fixture("choice11", "1.0.0");
    let mut t = turn(&f, text_event("small please"));
    run(&mut t, "basic-skills/choice_invalid_answer", json!({}));
    run(
        &mut t,
        "basic-skills/choice_invalid_answer",
        json!({"randomId": "x1"}),
    );
    assert_eq!(t.scope["temp"]["skill-choice-invalid-count"], 1);
    assert_eq!(t.scope["temp"]["skill-choice-invalid-count-x1"], 1);
    // Keywords "s" (contained in the answer) before "small please" (equal to it): 11.9.7
    // takes the first contained keyword, 12.10.8 on the equal one.
    let parse = json!({"contentId": "builtin_single-choice-abc",
        "keywords": {"tiny": ["s"], "small": ["small please"]}, "config": {}});
    run(&mut t, "basic-skills/choice_parse_answer", parse.clone());
    assert_eq!(t.scope["temp"]["skill-choice-ret"], "tiny");
    let f12 = fixture("choice12", "12.10.8");
    let mut t = turn(&f12, text_event("small please"));
    run(&mut t, "basic-skills/choice_parse_answer", parse);
    assert_eq!(t.scope["temp"]["skill-choice-ret"], "small");
    // A number picks that choice of the element.
    let mut t = turn(&f12, text_event("2"));
    run(
        &mut t,
        "basic-skills/choice_parse_answer",
        json!({"contentId": "builtin_single-choice-abc", "keywords": {}, "config": {}}),
    );
    assert_eq!(t.scope["temp"]["skill-choice-ret"], "small");
    assert_eq!(t.scope["temp"]["skill-choice-valid"], true);
}

/// A fake API on loopback: one canned answer per connection; records what it was sent.
fn fake_api(
    status: u16,
    content_type: &'static str,
    body: &'static str,
) -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut sent = vec![0; length];
            reader.read_exact(&mut sent).unwrap();
            let _ = tx.send(format!("{head}\n{}", String::from_utf8_lossy(&sent)));
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (port, rx)
}

#[test]
fn call_api_renders_headers_and_body_and_stores_the_answer() {
    let f = fixture("callapi", "1.0.0");
    let (port, sent) = fake_api(200, "application/json", r#"{"ok":true,"n":3}"#);
    let mut t = turn(&f, text_event("hi"));
    t.scope["user"] = json!({"name": "Ann"});
    run(
        &mut t,
        "basic-skills/call_api",
        json!({"url": format!("http://127.0.0.1:{port}/orders?u={{{{user.name}}}}"), "method": "post",
            "body": "{\"who\":\"{{user.name}}\"}", "headers": {"X-User": "{{user.name}}", "Content-Type": "application/json"},
            "memory": "temp", "variable": "answer"}),
    );
    assert_eq!(
        t.scope["temp"]["answer"],
        json!({"body": {"ok": true, "n": 3}, "status": 200})
    );
    assert_eq!(t.scope["temp"]["valid"], true);
    let request = sent.recv().unwrap();
    // The URL is not a template in Botpress; headers and body are.
    assert!(
        request.starts_with("POST /orders?u={{user.name}} HTTP/1.1"),
        "{request}"
    );
    assert!(request.contains("X-User: Ann"), "{request}");
    assert!(request.ends_with("\n{\"who\":\"Ann\"}"), "{request}");

    // A text answer stays text; a string body without a Content-Type gets axios's default.
    let (port, sent) = fake_api(201, "text/plain", "created");
    let mut t = turn(&f, text_event("hi"));
    run(
        &mut t,
        "basic-skills/call_api",
        json!({"url": format!("http://127.0.0.1:{port}/x"), "method": "put", "body": "a=1",
            "memory": "session", "variable": "r"}),
    );
    assert_eq!(
        t.scope["session"]["r"],
        json!({"body": "created", "status": 201})
    );
    assert!(sent
        .recv()
        .unwrap()
        .to_ascii_lowercase()
        .contains("content-type: application/x-www-form-urlencoded"));
}

#[test]
fn call_api_failures_store_the_status_and_clear_valid() {
    let f = fixture("callapifail", "1.0.0");
    let (port, _sent) = fake_api(404, "application/json", r#"{"error":"no"}"#);
    let mut t = turn(&f, text_event("hi"));
    run(
        &mut t,
        "basic-skills/call_api",
        json!({"url": format!("http://127.0.0.1:{port}/missing"), "method": "get",
            "memory": "user", "variable": "api"}),
    );
    assert_eq!(t.scope["user"]["api"], json!({"status": 404}));
    assert_eq!(t.scope["temp"]["valid"], false);
    // Nothing listens on a port just released: the connection is refused.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    run(
        &mut t,
        "basic-skills/call_api",
        json!({"url": format!("http://127.0.0.1:{closed}/"), "method": "get",
            "memory": "user", "variable": "api"}),
    );
    assert_eq!(t.scope["user"]["api"], json!({"status": "ECONNREFUSED"}));
    assert!(actions::run(
        "basic-skills/call_api",
        &args(json!({"url": "http://127.0.0.1:1/", "memory": "bot", "variable": "v"})),
        &mut t
    )
    .unwrap_err()
    .contains("user, session or temp"));
}

#[test]
fn unknown_actions_fail_and_standard_ones_are_known() {
    let f = fixture("unknown", "1.0.0");
    let mut t = turn(&f, text_event("hi"));
    assert!(actions::run("myModule/doStuff", &Map::new(), &mut t)
        .unwrap_err()
        .contains("not found"));
    for name in [
        "builtin/getGlobalVariable",
        "basic-skills/call_api",
        "analytics/increment",
    ] {
        assert!(actions::NATIVE_ACTIONS.contains(&name), "{name}");
    }
}

/// What `choice_parse_answer` makes of `text` (with the NLU intent `intent`) on `f`'s bot.
fn parsed_choice(f: &Fixture, text: &str, intent: &str) -> Value {
    let mut event = text_event(text);
    event["nlu"]["intent"]["name"] = json!(intent);
    let mut t = turn(f, event);
    run(
        &mut t,
        "basic-skills/choice_parse_answer",
        json!({"contentId": "builtin_single-choice-abc", "config": {"nbMaxRetries": 3},
            "keywords": {"large": ["Large", "intent:order"], "small": ["Small"]}}),
    );
    if t.scope["temp"]["skill-choice-valid"] == true {
        t.scope["temp"]["skill-choice-ret"].clone()
    } else {
        Value::Null
    }
}

#[test]
fn the_choice_skill_reads_the_basic_skills_configuration() {
    // Botpress's defaults: numbers and intents both match.
    let f = fixture("choice-config-default", "12.1.6");
    assert_eq!(parsed_choice(&f, "2", "none"), "small");
    assert_eq!(parsed_choice(&f, "#1", "none"), "large");
    assert_eq!(parsed_choice(&f, "the big one", "order"), "large");
    assert_eq!(parsed_choice(&f, "the big one", "none"), Value::Null);

    // The global file turns both off; the keywords the user writes still match.
    let global = r#"{"matchNumbers": false, "matchNLU": false}"#;
    let (f, _) = fixture_with(
        "choice-config-global",
        "12.1.6",
        &[("global/config/basic-skills.json", global)],
    );
    assert_eq!(parsed_choice(&f, "2", "none"), Value::Null);
    assert_eq!(parsed_choice(&f, "the big one", "order"), Value::Null);
    assert_eq!(parsed_choice(&f, "small", "order"), "small");

    // The bot's own file wins over the global one, key by key.
    let (f, warnings) = fixture_with(
        "choice-config-bot",
        "11.9.7",
        &[
            ("global/config/basic-skills.json", global),
            (
                "bots/test-bot/config/basic-skills.json",
                r#"{"matchNumbers": true}"#,
            ),
        ],
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(parsed_choice(&f, "2", "none"), "small");
    assert_eq!(parsed_choice(&f, "the big one", "order"), Value::Null);

    // A value of the wrong type is a warning naming the file and the key, and reads as
    // JavaScript reads it: the string "false" is true. The editor-only keys are accepted.
    let (f, warnings) = fixture_with(
        "choice-config-string",
        "12.1.6",
        &[(
            "bots/test-bot/config/basic-skills.json",
            r#"{"matchNumbers": "false", "matchNLU": 0, "defaultMaxAttempts": 5,
                "defaultContentElement": "builtin_single-choice", "transportConnectionString": {"host": "smtp"}}"#,
        )],
    );
    assert_eq!(parsed_choice(&f, "2", "none"), "small");
    assert_eq!(parsed_choice(&f, "the big one", "order"), Value::Null);
    let file = "bots/test-bot/config/basic-skills.json";
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(file) && w.contains("\"matchNumbers\" must be of type boolean")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(file) && w.contains("\"matchNLU\" must be of type boolean")),
        "{warnings:?}"
    );
    assert_eq!(warnings.len(), 2, "{warnings:?}");

    // With the integrity check on, a default element botd cannot render is named.
    let (_, warnings) = fixture_with(
        "choice-config-integrity",
        "12.1.6",
        &[(
            "bots/test-bot/config/basic-skills.json",
            r#"{"disableIntegrityCheck": false, "defaultContentElement": "my_fancy-choice"}"#,
        )],
    );
    assert!(
        warnings.iter().any(|w| w.contains(file)
            && w.contains("defaultContentElement")
            && w.contains("\"my_fancy-choice\"")),
        "{warnings:?}"
    );
}

#[test]
fn botpress_12_language_and_variable_actions() {
    let f = fixture("lang-vars", "12.28.0");
    let mut t = turn(&f, text_event("hi"));
    // switchLanguage (12.2): `event.state.user.language = args.lang`.
    run(&mut t, "builtin/switchLanguage", json!({"lang": "fr"}));
    assert_eq!(t.scope["user"]["language"], "fr");
    assert_eq!(t.language(), "fr");
    run(&mut t, "builtin/switchLanguage", json!({}));
    assert!(t.scope["user"].get("language").is_none());
    assert_eq!(t.language(), "en", "unset: the default language");

    // setVariable erases on '', 'null' and a missing value; a JSON null is a value.
    run(
        &mut t,
        "builtin/setVariable",
        json!({"type": "temp", "name": "a", "value": null}),
    );
    assert_eq!(t.scope["temp"].get("a"), Some(&Value::Null));
    run(
        &mut t,
        "builtin/setVariable",
        json!({"type": "temp", "name": "a"}),
    );
    assert!(t.scope["temp"].get("a").is_none());

    // removeVariable (12.28): deletes a user/session/temp variable; the bot's becomes 'null'.
    run(
        &mut t,
        "builtin/setVariable",
        json!({"type": "session", "name": "s", "value": "x"}),
    );
    run(
        &mut t,
        "builtin/setVariable",
        json!({"type": "bot", "name": "b", "value": "y"}),
    );
    run(
        &mut t,
        "builtin/removeVariable",
        json!({"type": "session", "name": "s"}),
    );
    assert!(t.scope["session"].get("s").is_none());
    run(
        &mut t,
        "builtin/removeVariable",
        json!({"type": "bot", "name": "b"}),
    );
    assert_eq!(t.scope["bot"], json!({"b": "null"}));
    commit(&mut t);
    assert_eq!(
        f.store.get(Namespace::Kv, "test-bot", "global").unwrap(),
        Some(json!({"b": "null"}))
    );
    assert!(actions::run(
        "builtin/removeVariable",
        &args(json!({"type": "context", "name": "x"})),
        &mut t
    )
    .is_err());
}
