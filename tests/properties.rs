//! Property tests (issue "Hostile clients"): random and mutated input for the template renderer,
//! the condition parser, the Messenger webhook parser and the Telegram update parser. Each must
//! never panic; the renderer never writes more than its bound, and text from users comes out
//! literally. Seeds are real: templates and conditions from the bundled bots, the test bots and,
//! when the folder is there, `../shared/botpress-bots`; webhook bodies and updates in the shapes
//! Facebook and Telegram send. A small seeded xorshift generator makes every run the same, and
//! the case counts keep each test well under two seconds.

use botd::channels::messenger::webhook;
use botd::channels::telegram::{self, poller};
use botd::engine::expr::Condition;
use botd::engine::template::{self, Context};
use botd::engine::Event;
use serde_json::{json, Map, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Runs `f` on `input`, turning a panic into a failure that names the input.
fn no_panic<T>(what: &str, input: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let message = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what} panicked ({message}) on {input:?}");
        }
    }
}

// ------------------------------------------------------------------------------ seeds

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bot folders to take seeds from.
fn bot_roots() -> Vec<PathBuf> {
    let mut roots = vec![repo().join("data/bots"), repo().join("tests/bots")];
    let shared = repo().join("../shared/botpress-bots");
    if shared.is_dir() {
        roots.push(shared);
    }
    roots
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

fn bot_json() -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    for root in bot_roots() {
        json_files(&root, &mut files);
    }
    files
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            Some((p, serde_json::from_str(&text).ok()?))
        })
        .collect()
}

fn strings_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| strings_in(i, out)),
        Value::Object(map) => map.values().for_each(|i| strings_in(i, out)),
        _ => {}
    }
}

/// Every string of the bots' content elements and flows that holds a tag, and some hostile
/// shapes of our own.
fn template_seeds() -> Vec<String> {
    let mut all = Vec::new();
    for (path, json) in bot_json() {
        let p = path.to_string_lossy();
        if p.contains("content-elements") || p.contains("flows") || p.contains("qna") {
            strings_in(&json, &mut all);
        }
    }
    let mut seeds: Vec<String> = all.into_iter().filter(|s| s.contains("{{")).collect();
    seeds.sort();
    seeds.dedup();
    assert!(seeds.len() >= 10, "too few template seeds: {}", seeds.len());
    for s in [
        "{{#user.people}}{{name}}: {{#tags}}<{{.}}>{{/tags}}\n{{/user.people}}",
        "{{^user.none}}none{{/user.none}}{{! comment }}{{> partial}}{{=<% %>=}}",
        "{{{text}}} and {{text}} and {{& nested.inner}}",
        "{{#user.list}}{{#user.list}}{{#user.list}}{{{event.preview}}}{{/user.list}}{{/user.list}}{{/user.list}}",
        "{{{event.preview}}}{{{event.preview}}}{{{event.preview}}}",
        "  {{#user.ok}}  \n  x\n  {{/user.ok}}  \n",
    ] {
        seeds.push(s.to_string());
    }
    seeds
}

/// Every transition condition of the bots' flows.
fn condition_seeds() -> Vec<String> {
    let mut seeds = Vec::new();
    for (path, json) in bot_json() {
        if !path.to_string_lossy().ends_with(".flow.json") {
            continue;
        }
        let nodes = json["nodes"].as_array().cloned().unwrap_or_default();
        let transitions = nodes
            .iter()
            .chain(std::iter::once(&json["catchAll"]))
            .filter_map(|n| n["next"].as_array())
            .flatten();
        for t in transitions {
            if let Some(c) = t["condition"].as_str() {
                seeds.push(c.to_string());
            }
        }
    }
    seeds.sort();
    seeds.dedup();
    assert!(
        seeds.len() >= 10,
        "too few condition seeds: {}",
        seeds.len()
    );
    for s in [
        "typeof user.x === 'undefined' || !(temp.n >= 2 && session.a.b.c != null)",
        "event.payload.text.length > 3 && event.nlu.intents[0].name == \"hello\"",
        "user['a-b'] !== undefined && -temp.n < +\"4\"",
    ] {
        seeds.push(s.to_string());
    }
    seeds
}

/// Webhook bodies as Facebook sends them: text, quick reply, attachment, postback, echo,
/// delivery and read, in one or two entries.
fn webhook_seeds() -> Vec<Value> {
    let item = |extra: Value| {
        let mut v = json!({"sender": {"id": "1254459154682919"}, "recipient": {"id": "682498171943165"}, "timestamp": 1_700_000_000_000i64});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let items = vec![
        item(json!({"message": {"mid": "m_1", "seq": 1, "text": "hello {{user.name}}"}})),
        item(json!({"message": {"mid": "m_2", "text": "Red", "quick_reply": {"payload": "RED"}}})),
        item(
            json!({"message": {"mid": "m_3", "attachments": [{"type": "image", "payload": {"url": "https://x/y.png"}}]}}),
        ),
        item(json!({"postback": {"title": "Pick", "payload": "PICKED", "mid": "m_4"}})),
        item(json!({"message": {"mid": "m_5", "is_echo": true, "app_id": 1, "text": "echo"}})),
        item(json!({"delivery": {"mids": ["m_1"], "watermark": 1}})),
        item(json!({"read": {"watermark": 1}})),
    ];
    vec![
        json!({"object": "page", "entry": [{"id": "682498171943165", "time": 1, "messaging": items}]}),
        json!({"object": "page", "entry": [
            {"id": "P1", "time": 1, "messaging": [items[0].clone(), items[3].clone()]},
            {"id": 42, "time": 2, "messaging": [items[1].clone()]}]}),
    ]
}

/// Updates as Telegram sends them: text, a command, a photo, a callback query, an edit, a
/// channel post, a member change.
fn update_seeds() -> Vec<Value> {
    let from = json!({"id": 500, "is_bot": false, "first_name": "T", "language_code": "en"});
    let chat = json!({"id": -100, "type": "group", "title": "G"});
    vec![
        json!({"update_id": 1000, "message": {"message_id": 1, "date": 1_700_000_000, "from": from, "chat": chat, "text": "hi {{event.botId}}"}}),
        json!({"update_id": 1001, "message": {"message_id": 2, "date": 1, "from": from, "chat": {"id": 500, "type": "private"}, "text": "/start@Bot x", "entities": [{"type": "bot_command", "offset": 0, "length": 10}]}}),
        json!({"update_id": 1002, "message": {"message_id": 3, "date": 1, "from": from, "chat": chat, "photo": [{"file_id": "A", "width": 90, "height": 90}], "caption": "c"}}),
        json!({"update_id": 1003, "callback_query": {"id": "q1", "from": from, "data": "PICK", "chat_instance": "1", "message": {"message_id": 4, "date": 1, "chat": chat}}}),
        json!({"update_id": 1004, "edited_message": {"message_id": 1, "date": 1, "from": from, "chat": chat, "text": "edited"}}),
        json!({"update_id": 1005, "channel_post": {"message_id": 5, "date": 1, "chat": {"id": -200, "type": "channel"}, "text": "post"}}),
        json!({"update_id": 1006, "my_chat_member": {"chat": chat, "from": from, "date": 1}}),
    ]
}

// ------------------------------------------------------------------------------ mutations

/// Pieces that matter to Mustache, conditions and JSON readers.
const PIECES: &[&str] = &[
    "{{",
    "}}",
    "{{{",
    "}}}",
    "{{#",
    "{{/",
    "{{^",
    "{{&",
    "{{!",
    "{{>",
    "{{=",
    "=}}",
    "{{.}}",
    ".",
    "..",
    "\n",
    "\r\n",
    " ",
    "\t",
    "é",
    "😀",
    "\u{feff}",
    "\u{2028}",
    "\0",
    "user",
    "event",
    "temp",
    "session",
    "bot",
    "text",
    ".length",
    "[0]",
    "['a']",
    "(",
    ")",
    "!",
    "&&",
    "||",
    "==",
    "===",
    "!==",
    "<=",
    ">",
    "'",
    "\"",
    "\\",
    "typeof ",
    "undefined",
    "null",
    "1e308",
    "-0",
    "NaN",
    "$r",
    ";",
    ",",
    "[",
    "]",
    "{",
    "}",
];

fn mutate_text(rng: &mut Rng, seed: &str) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(7) {
            0 | 1 => {
                let piece: Vec<char> = rng.pick(PIECES).chars().collect();
                chars.splice(at..at, piece);
            }
            2 if !chars.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(chars.len());
                let at = at.min(chars.len().saturating_sub(1));
                chars.drain(at..end.max(at));
            }
            3 if !chars.is_empty() => {
                let from = rng.below(chars.len());
                let end = (from + 1 + rng.below(24)).min(chars.len());
                let copy: Vec<char> = chars[from..end].to_vec();
                chars.splice(at..at, copy);
            }
            4 => chars.truncate(at),
            5 => chars.insert(at, char::from_u32(rng.below(0x3000) as u32).unwrap_or('?')),
            _ => {
                // Repeat a piece many times: long inputs and deep nesting.
                let piece = rng.pick(PIECES);
                let times = 1 + rng.below(200);
                let many: Vec<char> = piece.repeat(times).chars().collect();
                chars.splice(at..at, many);
            }
        }
    }
    chars.into_iter().collect()
}

fn random_scalar(rng: &mut Rng) -> Value {
    match rng.below(10) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(2)),
        2 => json!(rng.next() as i64),
        3 => json!(i64::MAX),
        4 => json!(-1),
        5 => json!(0.5),
        6 => json!(u64::MAX),
        7 => json!(""),
        8 => json!("{{event}}"),
        _ => Value::String(mutate_text(rng, "text")),
    }
}

/// A copy of `v` with a few random changes: values replaced by other kinds, keys removed or
/// added, arrays emptied or grown, strings mutated, parts wrapped in arrays.
fn mutate_json(rng: &mut Rng, v: &Value, depth: usize) -> Value {
    if depth > 12 || rng.chance(12) {
        return match rng.below(4) {
            0 => random_scalar(rng),
            1 => json!([v.clone()]),
            2 => json!({}),
            _ => json!([]),
        };
    }
    match v {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, x) in map {
                if rng.chance(10) {
                    continue;
                }
                out.insert(k.clone(), mutate_json(rng, x, depth + 1));
            }
            if rng.chance(8) {
                let key = rng
                    .pick(&[
                        "update_id",
                        "message",
                        "text",
                        "chat",
                        "id",
                        "messaging",
                        "sender",
                        "postback",
                        "payload",
                        "is_echo",
                        "mid",
                    ])
                    .to_string();
                out.insert(key, random_scalar(rng));
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for x in items {
                if !rng.chance(10) {
                    out.push(mutate_json(rng, x, depth + 1));
                }
            }
            if !items.is_empty() && rng.chance(6) {
                let from = rng.below(items.len());
                out.push(mutate_json(rng, &items[from], depth + 1));
            }
            Value::Array(out)
        }
        Value::String(s) if rng.chance(3) => Value::String(mutate_text(rng, s)),
        _ if rng.chance(6) => random_scalar(rng),
        other => other.clone(),
    }
}

/// Raw bytes of `v` with a few bytes changed, cut or doubled.
fn mutate_bytes(rng: &mut Rng, v: &Value) -> Vec<u8> {
    let mut bytes = v.to_string().into_bytes();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(4) {
            0 => bytes.truncate(at),
            1 => bytes.insert(at, *rng.pick(b"{}[]\",:\\0e-.\xff")),
            2 if at < bytes.len() => bytes[at] = rng.next() as u8,
            _ => {
                let copy = bytes[at..].to_vec();
                bytes.extend(copy);
            }
        }
    }
    bytes
}

// ------------------------------------------------------------------------------ properties

/// The context templates see on a turn, with user-typed text in it.
fn scope_with(rng: &mut Rng, typed: &str) -> Value {
    let list: Vec<Value> = (0..rng.below(20)).map(|i| json!(i)).collect();
    json!({
        "event": {"botId": "b", "channel": "api", "preview": typed, "payload": {"type": "text", "text": typed},
                  "nlu": {"intents": [{"name": "hello", "confidence": 0.9}, {"name": "none"}]}},
        "user": {"nickname": typed, "name": "O'Brien", "ok": true, "list": list,
                 "people": [{"name": "Ann", "tags": ["a", "b"]}, {"name": typed}]},
        "session": {"lastMessages": [{"incomingPreview": typed}]},
        "temp": {"$r": 0, "heard": typed},
        "bot": {"secret": "s3cr3t"},
        "text": "Hi {{user.nickname}} {{{event.preview}}}",
        "nested": {"inner": "{{#user.people}}{{{name}}}{{/user.people}}"}
    })
}

#[test]
fn renderer_never_panics_and_stays_within_its_bound() {
    let seeds = template_seeds();
    let mut rng = Rng::new(0x7e3a_11c5_d00d_f00d);
    for case in 0..1500 {
        let seed = rng.pick(&seeds).clone();
        let template = mutate_text(&mut rng, &seed);
        let seed = rng.pick(&seeds).clone();
        let typed = mutate_text(&mut rng, &seed);
        let values = scope_with(&mut rng, &typed);
        let ctx = Context::with_authored(&values, ["text", "nested"]);
        let out = no_panic("render", &template, || template::render(&template, &ctx));
        assert!(
            out.len() <= template::output_limit(&template),
            "case {case}: {} bytes from {template:?}",
            out.len()
        );
        let value = json!({"text": template, "list": [template, {"deep": typed}], "n": 1});
        no_panic("render_value", &template, || {
            template::render_value(&value, &ctx)
        });
    }
}

/// Whatever a user typed, an author's `{{{…}}}` of it gives it back as typed, and `{{…}}`
/// gives it back escaped, never rendered.
#[test]
fn text_from_users_comes_out_literally() {
    let seeds = template_seeds();
    let mut rng = Rng::new(0x51ab_0b0e_cafe_beef);
    for _ in 0..1500 {
        let seed = rng.pick(&seeds).clone();
        let typed = mutate_text(&mut rng, &seed);
        let values = scope_with(&mut rng, &typed);
        let ctx = Context::with_authored(&values, ["text", "nested"]);
        for template in [
            "{{{event.preview}}}",
            "{{& event.payload.text}}",
            "{{{temp.heard}}}",
            "{{#user}}{{{nickname}}}{{/user}}",
        ] {
            let out = no_panic("render", &typed, || template::render(template, &ctx));
            let expected: String = typed
                .chars()
                .scan(0, |len, c| {
                    *len += c.len_utf8();
                    Some((*len, c))
                })
                .take_while(|(len, _)| *len <= template::output_limit(template))
                .map(|(_, c)| c)
                .collect();
            assert_eq!(out, expected, "{template} with {typed:?}");
        }
        let escaped = template::render("{{event.preview}}", &ctx);
        assert!(
            !escaped.contains(['<', '>', '"', '\'', '`', '=']),
            "{typed:?} gave {escaped:?}"
        );
    }
}

#[test]
fn condition_parser_never_panics() {
    let seeds = condition_seeds();
    let mut rng = Rng::new(0xc0de_1234_5678_9abc);
    let (cases, mut evaluated) = (4000, 0);
    for _ in 0..cases {
        let seed = rng.pick(&seeds).clone();
        let source = mutate_text(&mut rng, &seed);
        let parsed = no_panic("Condition::parse", &source, || Condition::parse(&source));
        if let Ok(condition) = parsed {
            evaluated += 1;
            let typed = mutate_text(&mut rng, &source);
            let scope = scope_with(&mut rng, &typed);
            let scope = mutate_json(&mut rng, &scope, 0);
            no_panic("Condition::eval", &source, || condition.eval(&scope));
        }
    }
    // The mutations must leave enough conditions valid for the evaluator to be exercised.
    assert!(
        evaluated * 10 >= cases,
        "only {evaluated} of {cases} parsed"
    );
    // Absurd sizes and nesting get an error, not a crash.
    for source in [
        "(".repeat(100_000),
        "!".repeat(100_000),
        format!("{}1{}", "(".repeat(5_000), ")".repeat(5_000)),
        "a.".repeat(50_000),
        "user.x == ".repeat(10_000),
        "'".to_string(),
        "\"\\".to_string(),
        "-".repeat(100_000),
    ] {
        assert!(
            no_panic("Condition::parse", &source, || Condition::parse(&source)).is_err(),
            "{} chars accepted",
            source.len()
        );
    }
}

#[test]
fn messenger_webhook_parser_never_panics() {
    let seeds = webhook_seeds();
    let mut rng = Rng::new(0xfb00_0000_1111_2222);
    let (cases, mut with_events) = (1200, 0);
    for _ in 0..cases {
        let seed = rng.pick(&seeds).clone();
        let body = mutate_json(&mut rng, &seed, 0);
        let shown = body.to_string();
        let events = no_panic("webhook::parse", &shown, || webhook::parse(&body));
        if events.as_ref().is_ok_and(|e| !e.is_empty()) {
            with_events += 1;
        }
        for incoming in events.into_iter().flatten() {
            assert!(!incoming.psid.is_empty() && !incoming.page_id.is_empty());
            no_panic("Event::new", &shown, || {
                Event::new(
                    "b",
                    "messenger",
                    incoming.kind,
                    &incoming.psid,
                    incoming.payload,
                )
            });
        }
        // The raw bytes, as the webhook reads them.
        let bytes = mutate_bytes(&mut rng, &seed);
        let shown = String::from_utf8_lossy(&bytes).into_owned();
        no_panic("webhook bytes", &shown, || {
            if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                let _ = webhook::parse(&v);
            }
        });
    }
    assert!(
        with_events * 10 >= cases,
        "only {with_events} of {cases} gave events"
    );
}

#[test]
fn telegram_update_parser_never_panics() {
    let seeds = update_seeds();
    let mut rng = Rng::new(0x7e1e_6a3a_0000_0001);
    let (cases, mut usable) = (2000, 0);
    for _ in 0..cases {
        let mut batch = Vec::new();
        for _ in 0..rng.below(5) {
            let seed = rng.pick(&seeds).clone();
            batch.push(mutate_json(&mut rng, &seed, 0));
        }
        let result = if rng.chance(10) {
            mutate_json(&mut rng, &json!({"result": batch}), 0)
        } else {
            Value::Array(batch)
        };
        let shown = result.to_string();
        let parsed = no_panic("parse_batch", &shown, || poller::parse_batch(&result));
        if let Ok(mut parsed) = parsed {
            let total = result.as_array().map_or(0, Vec::len);
            usable += parsed.updates.len();
            let offset = *rng.pick(&[0, 1, 1000, 1003, i64::MAX]);
            parsed.skip_below(offset);
            assert!(parsed.updates.iter().all(|u| u.id >= offset), "{shown}");
            assert_eq!(
                parsed.updates.len() + parsed.skipped.len(),
                total,
                "{shown}"
            );
            for update in &parsed.updates {
                assert!(
                    update.id >= 0 && update.next_offset() > update.id,
                    "{shown}"
                );
                let chat = no_panic("update_chat", &shown, || {
                    telegram::update_chat(&update.body)
                });
                assert!(!chat.is_empty());
                no_panic("event_for", &shown, || {
                    telegram::event_for("b", &update.body)
                });
            }
        }
        // Whatever an update is, reading its chat and event never panics.
        let seed = rng.pick(&seeds).clone();
        let one = mutate_json(&mut rng, &seed, 0);
        let shown = one.to_string();
        no_panic("event_for", &shown, || telegram::event_for("b", &one));
        no_panic("update_chat", &shown, || telegram::update_chat(&one));
    }
    assert!(
        usable >= cases,
        "only {usable} usable updates in {cases} batches"
    );
}
