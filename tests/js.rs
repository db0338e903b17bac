//! Acceptance of the issue "JavaScript: custom actions, hooks and conditions": small bots
//! written into a temp data folder, played over the real server's Converse API. Expected
//! answers come from the bot files and Botpress's semantics.

mod common;

use common::fake_http::{FakeHttp, Response};
use common::*;
use serde_json::{json, Value};
use std::path::Path;

const BOT: &str = "js-bot";

/// Writes bot `BOT` with `nodes` in its main flow (the first is the start node).
fn js_bot(data: &Path, nodes: Value, extra_config: Value) {
    let dir = data.join("bots").join(BOT);
    let mut config = json!({"id": BOT, "name": "JS bot", "version": "1.0.0",
        "defaultLanguage": "en", "languages": ["en"], "dialog": {"timeoutInterval": "5m"}});
    if let (Some(c), Some(extra)) = (config.as_object_mut(), extra_config.as_object()) {
        c.extend(extra.clone());
    }
    write(&dir, "bot.config.json", &config.to_string());
    let start = nodes[0]["name"].as_str().unwrap().to_string();
    let flow = json!({"version": "0.0.1", "flow": "main.flow.json", "startNode": start,
        "catchAll": {"onReceive": [], "next": []}, "nodes": nodes});
    write(&dir, "flows/main.flow.json", &flow.to_string());
    write(&dir, "flows/main.ui.json", r#"{"nodes":[]}"#);
}

fn node(name: &str, on_enter: &[&str], on_receive: Option<&[&str]>, next: Value) -> Value {
    json!({"id": format!("n-{name}"), "name": name, "onEnter": on_enter,
        "onReceive": on_receive, "next": next})
}

fn say(text: &str) -> String {
    format!("say #builtin_text {}", json!({ "text": text }))
}

fn action_file(data: &Path, name: &str, source: &str) {
    write(
        &data.join("bots").join(BOT),
        &format!("actions/{name}.js"),
        source,
    );
}

fn texts_of(answer: &Answer) -> Vec<String> {
    assert_eq!(answer.status, 200, "{}", answer.text());
    texts(&answer.json())
}

#[test]
fn an_action_computes_from_args_and_the_event_and_writes_user_and_temp() {
    let data = TempDir::new("js-compute");
    js_bot(
        data.path(),
        json!([
            node(
                "ask",
                &[&say("weight?")],
                Some(&["bmi {\"weight\": \"{{event.payload.text}}\", \"height\": \"2\"}"]),
                json!([
                    // Beyond the native subset (an arrow function): evaluated as JavaScript.
                    {"condition": "event.payload.text.split('').every(c => c >= '0' && c <= '9')", "node": "result"},
                    {"condition": "true", "node": "notNumber"}])
            ),
            node(
                "result",
                &[&say(
                    "BMI {{user.bmi}} {{temp.category}} from {{temp.source}}, {{temp.awaited}}"
                )],
                None,
                json!([])
            ),
            node(
                "notNumber",
                &[&say("numbers only, last BMI {{user.bmi}}")],
                None,
                json!([])
            )
        ]),
        json!({}),
    );
    // Top-level await and return are legal, as in Botpress's wrapper.
    action_file(
        data.path(),
        "bmi",
        "const w = Number(args.weight)\nconst h = Number(args.height)\n\
         if (isNaN(w)) return\n\
         user.bmi = Math.round(w / (h * h))\n\
         temp.category = user.bmi >= 25 ? 'high' : 'normal'\n\
         temp.source = event.payload.text\n\
         temp.awaited = await Promise.resolve('awaited')\n\
         const order = []\n\
         await new Promise(done => {\n\
           setTimeout(() => { order.push('b'); done() }, 30)\n\
           setTimeout(() => order.push('a'), 10)\n\
           clearTimeout(setTimeout(() => order.push('never'), 20))\n\
         })\n\
         temp.awaited += ' ' + order.join('')\n\
         return\n\
         temp.category = 'unreachable'\n",
    );
    let server = Server::start(data.path(), &[]);
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u1", "hi")),
        ["weight?"]
    );
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u1", "100")),
        ["BMI 25 high from 100, awaited ab"]
    );
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u1", "again")),
        ["weight?"]
    );
    // `user` was kept from the earlier turn.
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u1", "abc")),
        ["numbers only, last BMI 25"]
    );
}

#[test]
fn an_action_awaits_axios_against_a_fake_api() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let api = FakeHttp::start(move |request| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (status, text) = if request.url == "/weather?city=Paris" {
            (200, r#"{"celsius": 21}"#.to_string())
        } else if request.url == "/echo" && request.method == "POST" {
            (201, request.text())
        } else {
            (404, r#"{"error": "nope"}"#.to_string())
        };
        Response::text(status, &text).with_header("Content-Type", "application/json")
    });
    let api_port = api.port;
    let data = TempDir::new("js-axios");
    js_bot(
        data.path(),
        json!([node(
            "start",
            &[
                &format!("weather {{\"base\": \"http://127.0.0.1:{api_port}\"}}"),
                &say("{{{temp.weather}}} / {{temp.posted}} / {{temp.missing}}")
            ],
            None,
            json!([])
        )]),
        json!({}),
    );
    action_file(
        data.path(),
        "weather",
        "const axios = require('axios')\n\
         const r = await axios.get(args.base + '/weather', { params: { city: 'Paris' } })\n\
         temp.weather = r.status + ' ' + r.data.celsius + ' ' + r.headers['content-type']\n\
         const p = await axios.post(args.base + '/echo', { n: 2 })\n\
         temp.posted = p.status + ' ' + p.data.n\n\
         try { await axios({ url: args.base + '/missing', method: 'get' }); temp.missing = 'resolved' }\n\
         catch (e) { temp.missing = e.response.status + ' ' + e.response.data.error }\n",
    );
    let server = Server::start(data.path(), &[]);
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u1", "hi")),
        ["200 21 application/json / 201 2 / 404 nope"],
        "{}",
        server.log()
    );
    // The weather, the echo and the missing page: one call each.
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[test]
fn an_action_replies_with_rendered_content_and_uses_the_kv_store() {
    let data = TempDir::new("js-reply");
    js_bot(
        data.path(),
        json!([node("start", &["reply {}"], None, json!([]))]),
        json!({}),
    );
    let element = json!([{"id": "builtin_text-greet", "formData": {"text$en": "Greetings {{user.name}}"},
        "createdBy": "t", "createdOn": "2019-04-24T18:00:00.000Z", "modifiedOn": null}]);
    write(
        &data.path().join("bots").join(BOT),
        "content-elements/builtin_text.json",
        &element.to_string(),
    );
    action_file(
        data.path(),
        "reply",
        "const count = ((await bp.kvs.get(event.botId, 'count')) || 0) + 1\n\
         await bp.kvs.set(event.botId, 'count', count)\n\
         await bp.users.updateAttributes(event.channel, event.target, { name: 'Ada' })\n\
         const attributes = await bp.users.getAttributes(event.channel, event.target)\n\
         const a = await bp.cms.renderElement('builtin_text', { text: 'Hello ' + event.payload.text + ' #' + count }, event)\n\
         await bp.events.replyToEvent(event, a)\n\
         const b = await bp.cms.renderElement('!builtin_text-greet', { user: attributes }, event)\n\
         await bp.events.replyToEvent(event, b)\n\
         bp.logger.info('replied', count)\n",
    );
    let server = Server::start(data.path(), &[]);
    let first = converse(server.port, BOT, "u1", "there");
    assert_eq!(texts_of(&first), ["Hello there #1", "Greetings Ada"]);
    assert_eq!(first.json()["responses"][1]["type"], "text");
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u2", "you")),
        ["Hello you #2", "Greetings Ada"]
    );
    assert!(server.log().contains("replied 2"), "{}", server.log());
}

#[test]
fn runaway_scripts_are_stopped_while_other_conversations_are_answered() {
    let data = TempDir::new("js-limits");
    js_bot(
        data.path(),
        json!([
            node(
                "start",
                &[&say("ready")],
                Some(&[]),
                json!([
                {"condition": "event.payload.text === 'loop'", "node": "loop"},
                {"condition": "event.payload.text === 'deep'", "node": "deep"},
                {"condition": "event.payload.text === 'bomb'", "node": "bomb"},
                {"condition": "event.payload.text === 'throw'", "node": "throw"},
                {"condition": "true", "node": "hello"}])
            ),
            node("loop", &["spin {}"], None, json!([])),
            node("deep", &["recurse {}"], None, json!([])),
            node("bomb", &["bomb {}"], None, json!([])),
            node("throw", &["fails {}"], None, json!([])),
            node(
                "hello",
                &[&say("hello {{event.payload.text}}")],
                None,
                json!([])
            )
        ]),
        json!({"scripts": {"actionTimeout": "1s", "memoryLimit": "16mb"}}),
    );
    action_file(
        data.path(),
        "spin",
        "bp.logger.info('spinning now')\nwhile (true) {}\n",
    );
    action_file(
        data.path(),
        "recurse",
        "function down(n) { return down(n + 1) + 1 }\ndown(0)\n",
    );
    action_file(
        data.path(),
        "bomb",
        "const hoard = []\nfor (;;) hoard.push(new Array(100000).fill('x'))\n",
    );
    action_file(
        data.path(),
        "fails",
        "const a = 1\n\nthrow new Error('broken on purpose')\n",
    );
    let server = Server::start(data.path(), &[]);
    let port = server.port;
    for (user, word, file, reason) in [
        ("a-loop", "loop", "actions/spin.js", "deadline"),
        ("a-deep", "deep", "actions/recurse.js", "stack overflow"),
        ("a-bomb", "bomb", "actions/bomb.js", "out of memory"),
        (
            "a-throw",
            "throw",
            "actions/fails.js:3",
            "broken on purpose",
        ),
    ] {
        assert_eq!(texts_of(&converse(port, BOT, user, "hi")), ["ready"]);
        let stuck = std::thread::spawn(move || converse(port, BOT, user, word));
        if word == "loop" {
            // Another user is answered while the first one's script spins.
            assert!(wait_until(std::time::Duration::from_secs(30), || server
                .log()
                .contains("spinning now")));
        }
        let other = format!("b-{word}");
        assert_eq!(texts_of(&converse(port, BOT, &other, "hi")), ["ready"]);
        assert_eq!(
            texts_of(&converse(port, BOT, &other, "there")),
            ["hello there"]
        );
        let answer = stuck.join().unwrap();
        // Botpress logs a failing action and saves the turn; nothing more is sent.
        assert_eq!(texts_of(&answer), Vec::<String>::new(), "{word}");
        // The server's log is read by another thread: the line may trail the answer a little.
        let logged = |log: &str| log.contains(file) && log.contains(reason);
        wait_until(std::time::Duration::from_secs(10), || logged(&server.log()));
        let log = server.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(file) && l.contains(reason))
            .collect();
        assert_eq!(lines.len(), 1, "{word}: one log line expected in\n{log}");
        assert!(lines[0].contains(BOT), "{}", lines[0]);
    }
    // The worker that ran them carries on. The failed turn was saved on the failing node,
    // so the next message plays that node again, as in Botpress.
    assert_eq!(
        texts_of(&converse(port, BOT, "a-throw", "hi")),
        Vec::<String>::new()
    );
    let log = server.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("actions/fails.js:3") && l.contains("broken on purpose"))
            .count(),
        2,
        "{log}"
    );
}

#[test]
fn require_loads_local_files_and_pure_js_packages_and_refuses_builtins() {
    let data = TempDir::new("js-require");
    js_bot(
        data.path(),
        json!([
            node(
                "start",
                &[&say("ready")],
                Some(&[]),
                json!([
                {"condition": "event.payload.text === 'fs'", "node": "fs"},
                {"condition": "true", "node": "ok"}])
            ),
            node(
                "ok",
                &[
                    "tools/compute {\"n\": \"{{event.payload.text}}\"}",
                    "greet {}",
                    &say("{{temp.result}} {{temp.greeting}}")
                ],
                None,
                json!([])
            ),
            node("fs", &["usesFs {}"], None, json!([]))
        ]),
        json!({}),
    );
    let bot = data.path().join("bots").join(BOT);
    write(
        &bot,
        "actions/tools/lib/double.js",
        "const { twice } = require('../helpers.json')\nmodule.exports = n => n * twice\n",
    );
    write(&bot, "actions/tools/helpers.json", r#"{"twice": 2}"#);
    write(
        &bot,
        "actions/tools/compute.js",
        "const double = require('./lib/double')\nconst pad = require('tiny-pad')\n\
         temp.result = pad(String(double(Number(args.n))), 5)\n",
    );
    write(
        data.path(),
        "node_modules/tiny-pad/package.json",
        r#"{"name": "tiny-pad", "main": "lib/pad.js"}"#,
    );
    write(
        data.path(),
        "node_modules/tiny-pad/lib/pad.js",
        "module.exports = function (s, n) { while (s.length < n) s = '0' + s; return s }\n",
    );
    // A global action, from data/global/actions/.
    write(
        data.path(),
        "global/actions/greet.js",
        "temp.greeting = 'hi from global'\n",
    );
    write(&bot, "actions/usesFs.js", "const fs = require('fs')\n");
    let server = Server::start(data.path(), &[]);
    assert_eq!(texts_of(&converse(server.port, BOT, "u1", "hi")), ["ready"]);
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u1", "21")),
        ["00042 hi from global"]
    );
    assert_eq!(texts_of(&converse(server.port, BOT, "u2", "hi")), ["ready"]);
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u2", "fs")),
        Vec::<String>::new()
    );
    assert!(
        server.log().contains("\"fs\" is a Node.js built-in module"),
        "{}",
        server.log()
    );
}

#[test]
fn hooks_change_and_swallow_events() {
    let data = TempDir::new("js-hooks");
    js_bot(
        data.path(),
        json!([node(
            "start",
            &[
                "readLast {}",
                &say("echo {{event.payload.text}} last={{temp.last}}")
            ],
            None,
            json!([])
        )]),
        json!({}),
    );
    action_file(
        data.path(),
        "readLast",
        "temp.last = await bp.kvs.get(event.botId, 'processed')\n",
    );
    let hooks = data.path().join("global/hooks");
    write(
        &hooks,
        "before_incoming_middleware/00_rewrite.js",
        "if (event.payload.text === 'secret') { event.payload.text = 'rewritten'; event.preview = 'rewritten' }\n",
    );
    write(
        &hooks,
        "before_incoming_middleware/10_swallow.js",
        "if (event.preview === 'ignore me') event.setFlag(bp.IO.WellKnownFlags.SKIP_DIALOG_ENGINE, true)\n",
    );
    // A hook that throws is logged; the others and the turn carry on.
    write(
        &hooks,
        "before_incoming_middleware/20_broken.js",
        "throw new Error('hook broke')\n",
    );
    write(
        &hooks,
        "after_incoming_middleware/shout.js",
        "if (event.preview === 'shout') event.payload.text = 'SHOUT'\n",
    );
    write(
        &hooks,
        "before_outgoing_middleware/mark.js",
        "if (event.payload.type === 'text') event.payload.text += ' [checked]'\n",
    );
    write(
        &hooks,
        "after_event_processed/remember.js",
        "await bp.kvs.set(event.botId, 'processed', event.preview)\n",
    );
    // Botpress 12's per-bot hooks run after the global ones.
    write(
        &data.path().join("bots").join(BOT),
        "hooks/before_outgoing_middleware/mark2.js",
        "if (event.payload.type === 'text') event.payload.text += '!'\n",
    );
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    assert_eq!(
        texts_of(&converse(p, BOT, "u1", "hello")),
        ["echo hello last= [checked]!"]
    );
    assert_eq!(
        texts_of(&converse(p, BOT, "u1", "secret")),
        ["echo rewritten last=hello [checked]!"]
    );
    let swallowed = converse(p, BOT, "u1", "ignore me");
    assert_eq!(responses(&swallowed), Vec::<Value>::new());
    // The swallowed event never reached the dialog engine, so after_event_processed did not run.
    assert_eq!(
        texts_of(&converse(p, BOT, "u1", "shout")),
        ["echo SHOUT last=rewritten [checked]!"]
    );
    assert!(server.log().contains("hook broke"), "{}", server.log());
}

#[test]
fn check_reports_syntax_errors_with_lines_and_missing_packages() {
    let data = TempDir::new("js-check");
    js_bot(
        data.path(),
        json!([node(
            "start",
            &["good {}", "nowhere/toBeFound {}"],
            None,
            json!([])
        )]),
        json!({}),
    );
    action_file(data.path(), "good", "const _ = require('./lib/x')\n");
    action_file(data.path(), "lib/x", "module.exports = 1\n");
    action_file(data.path(), "bad", "const a = 1\n\nconst b = ;\n");
    action_file(
        data.path(),
        "needs",
        "const moment = require('moment')\nconst cp = require(\"child_process\")\n",
    );
    write(
        data.path(),
        "global/hooks/after_incoming_middleware/broken.js",
        "if (event {\n",
    );
    let (code, out, err) = botd(&["check", "--data", data.path().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "warnings only: {out}\n{err}");
    let bot = format!("{}/bots/{BOT}", data.path().display());
    let has = |prefix: &str, needle: &str| {
        assert!(
            out.lines()
                .any(|l| l.starts_with(prefix) && l.contains(needle)),
            "no line `{prefix}…{needle}` in:\n{out}"
        )
    };
    has(&format!("{bot}/actions/bad.js:3: warning: "), "SyntaxError");
    has(
        &format!("{bot}/actions/needs.js: warning: "),
        "\"moment\" is not installed",
    );
    has(
        &format!("{bot}/actions/needs.js: warning: "),
        "\"child_process\" is a Node.js built-in",
    );
    has(
        &format!(
            "{}/global/hooks/after_incoming_middleware/broken.js:1: warning: ",
            data.path().display()
        ),
        "SyntaxError",
    );
    has(
        &format!("{bot}/flows/main.flow.json: warning: "),
        "nowhere/toBeFound",
    );
    assert!(!out.contains("good.js"), "{out}");
    assert!(!out.contains("lib/x.js"), "{out}");
}

/// Reads the KV key `key` of the bot into `temp.<into>`.
fn kv_reader(data: &Path, name: &str, pairs: &[(&str, &str)]) {
    let body: String = pairs
        .iter()
        .map(|(key, into)| format!("temp['{into}'] = await bp.kvs.get(event.botId, {key})\n"))
        .collect();
    action_file(data, name, &body);
}

#[test]
fn bot_lifecycle_hooks_run_at_start_reload_and_stop() {
    let data = TempDir::new("js-mount");
    let flow = |greeting: &str| {
        json!([node(
            "start",
            &[
                "readCounts {}",
                &say(&format!(
                    "{greeting} mounts {{{{temp.m}}}} unmounts {{{{temp.u}}}} {{{{temp.e}}}}"
                ))
            ],
            None,
            json!([])
        )])
    };
    js_bot(data.path(), flow("first"), json!({}));
    kv_reader(
        data.path(),
        "readCounts",
        &[
            ("'mounts'", "m"),
            ("'unmounts'", "u"),
            ("'mountError'", "e"),
        ],
    );
    let hooks = data.path().join("global/hooks");
    // `botId` is in scope, `event` is not: these hooks run outside any conversation.
    write(
        &hooks,
        "after_bot_mount/count.js",
        "await bp.kvs.set(botId, 'mounts', ((await bp.kvs.get(botId, 'mounts')) || 0) + 1)\n\
         try { await bp.events.replyToEvent({}, []) } catch (e) { await bp.kvs.set(botId, 'mountError', typeof event + ': ' + e.message) }\n",
    );
    write(
        &hooks,
        "after_bot_unmount/count.js",
        "await bp.kvs.set(botId, 'unmounts', ((await bp.kvs.get(botId, 'unmounts')) || 0) + 1)\n",
    );
    let mut server = Server::start(data.path(), &[]);
    let mount_error =
        "undefined: bp.events.replyToEvent: after_bot_mount runs outside any conversation";
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u1", "hi")),
        [format!("first mounts 1 unmounts  {mount_error}")]
    );
    // An edited bot is reloaded: unmounted, then mounted again, and answers once mounted.
    js_bot(data.path(), flow("edited"), json!({}));
    let mut answer = Vec::new();
    assert!(
        wait_until(std::time::Duration::from_secs(30), || {
            answer = texts_of(&converse(server.port, BOT, "u2", "hi"));
            answer[0].starts_with("edited")
        }),
        "{}",
        server.log()
    );
    assert_eq!(
        answer,
        [format!("edited mounts 2 unmounts 1 {mount_error}")]
    );
    // Stopping unmounts; the next start mounts.
    server.stop_gracefully();
    let server = Server::start(data.path(), &[]);
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u3", "hi")),
        [format!("edited mounts 3 unmounts 2 {mount_error}")]
    );
}

#[test]
fn a_suggestions_election_hook_changes_what_is_elected() {
    let data = TempDir::new("js-suggest");
    js_bot(
        data.path(),
        json!([node(
            "start",
            &[&say("the flow answers {{event.preview}}")],
            None,
            json!([])
        )]),
        json!({}),
    );
    let qna = json!({"id": "hours0000a_opening_hours", "data": {
        "questions": ["What are your opening hours?", "When are you open?", "Opening hours",
            "When do you open?", "What time do you open?", "Are you open on Sunday?"],
        "answers": ["We open at nine."],
        "redirectFlow": "", "redirectNode": "", "action": "text", "category": "global", "enabled": true}});
    write(
        &data.path().join("bots").join(BOT),
        "qna/hours0000a_opening_hours.json",
        &qna.to_string(),
    );
    // Drops the elected answer when the user says "please" (the flow answers), else adds to it.
    write(
        data.path(),
        "global/hooks/before_suggestions_election/pick.js",
        "for (const s of suggestions) {\n\
           if (s.decision.status !== 'elected') continue\n\
           if (event.preview.includes('please')) s.decision = { status: 'dropped', reason: 'the hook prefers the flow' }\n\
           else s.payloads = s.payloads.map(p => p.type === 'text' ? { ...p, text: p.text + ' (' + sessionId + ', ' + (event.suggestions === suggestions) + ')' } : p)\n\
         }\n",
    );
    let server = Server::start(data.path(), &[]);
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u1", "When are you open?")),
        ["We open at nine. (api::u1, true)"],
        "{}",
        server.log()
    );
    assert_eq!(
        texts_of(&converse(
            server.port,
            BOT,
            "u2",
            "When are you open please?"
        )),
        ["the flow answers When are you open please?"]
    );
}

/// `dialog.janitorInterval` short, so timeouts run within the test.
fn fast_janitor(data: &Path) {
    let global = json!({
        "httpServer": {"host": "localhost", "port": 3000, "bodyLimit": "100kb"},
        "dialog": {"janitorInterval": "200ms", "timeoutInterval": "2m", "sessionTimeoutInterval": "30m"},
        "converse": {"timeout": "5s", "maxMessageLength": 360, "enableUnsecuredEndpoint": true}
    });
    write(data, "global/botpress.config.json", &global.to_string());
}

#[test]
fn a_session_timeout_hook_runs_before_the_timeout_and_can_move_it() {
    let data = TempDir::new("js-timeout");
    fast_janitor(data.path());
    let set_user = |value: &str| {
        format!(
            "builtin/setVariable {}",
            json!({"type": "user", "name": "timedOut", "value": value})
        )
    };
    js_bot(
        data.path(),
        json!([
            node(
                "start",
                &[
                    "readLast {}",
                    &say("waiting[{{user.timedOut}}|{{temp.last}}]")
                ],
                Some(&[]),
                json!([{"condition": "true", "node": "END"}])
            ),
            node(
                "timeout",
                &[&say("plain timeout"), &set_user("plain")],
                None,
                json!([])
            ),
            json!({"id": "n-elsewhere", "name": "elsewhere", "onEnter": [say("elsewhere")],
                "onReceive": [], "next": [], "timeout": "elsewhereTimeout"}),
            node(
                "elsewhereTimeout",
                &[&say("moved timeout"), &set_user("moved by the hook")],
                None,
                json!([])
            )
        ]),
        json!({"dialog": {"timeoutInterval": "1s"}}),
    );
    action_file(
        data.path(),
        "readLast",
        "temp.last = await bp.kvs.get(event.botId, 'last-' + event.target)\n",
    );
    write(
        data.path(),
        "global/hooks/before_session_timeout/note.js",
        "await bp.kvs.set(event.botId, 'last-' + event.target, event.type + ' at ' + event.state.context.currentNode)\n\
         if (event.target === 'moved') await bp.dialog.jumpTo(event.target, event, 'main.flow.json', 'elsewhere')\n",
    );
    let server = Server::start(data.path(), &[]);
    for user in ["stays", "moved"] {
        assert_eq!(
            texts_of(&converse(server.port, BOT, user, "hi")),
            ["waiting[|]"]
        );
    }
    let nowhere = format!("bot \"{BOT}\": timeout replies for channel api have nowhere to go");
    assert!(
        wait_until(std::time::Duration::from_secs(30), || server
            .log()
            .matches(&nowhere)
            .count()
            >= 2),
        "{}",
        server.log()
    );
    assert_eq!(
        texts_of(&converse(server.port, BOT, "stays", "back")),
        ["waiting[plain|timeout at start]"]
    );
    assert_eq!(
        texts_of(&converse(server.port, BOT, "moved", "back")),
        ["waiting[moved by the hook|timeout at start]"]
    );
}

#[test]
fn a_conversation_end_hook_can_carry_the_conversation_on() {
    let data = TempDir::new("js-end");
    js_bot(
        data.path(),
        json!([
            // A transition with no destination ends the flow (Botpress 12.5 on).
            node(
                "start",
                &[&say("hello")],
                None,
                json!([{"condition": "true", "node": ""}])
            ),
            node(
                "survey",
                &[&say("rate us?")],
                Some(&[]),
                json!([{"condition": "true", "node": "thanks"}])
            ),
            node(
                "thanks",
                &[&say("thanks for {{event.payload.text}}")],
                None,
                json!([{"condition": "true", "node": "END"}])
            ),
            // No transition: the flow ends when its instructions are done.
            node("bye", &[&say("bye")], None, json!([]))
        ]),
        // Botpress 12.26 added the hook.
        json!({"version": "12.26.0"}),
    );
    write(
        data.path(),
        "global/hooks/before_conversation_end/survey.js",
        "const ended = event.state.context.currentNode\n\
         event.state.user.ends = (event.state.user.ends || '') + ended + ';'\n\
         if (!event.state.user.surveyed) {\n\
           event.state.user.surveyed = true\n\
           await bp.dialog.jumpTo(event.threadId, event, 'main.flow.json', 'survey')\n\
         } else if (ended === 'thanks') {\n\
           await bp.dialog.jumpTo(event.threadId, event, 'main.flow.json', 'bye')\n\
         }\n",
    );
    let server = Server::start(data.path(), &[]);
    let t = token(data.path(), &[]);
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u1", "hi")),
        ["hello", "rate us?"]
    );
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u1", "5 stars")),
        ["thanks for 5 stars", "bye"]
    );
    let state = state_after(server.port, BOT, "u1", "hi again", &t);
    // The hook ran at each end (no destination, END, the last instruction) and the third turn
    // ended at once: the hook did not move it.
    assert_eq!(state["user"]["ends"], "start;thanks;bye;start;", "{state}");
    assert_eq!(state["context"], json!({}), "{state}");
}

#[test]
fn actions_jump_and_read_configuration_and_unhonoured_calls_throw_by_name() {
    let data = TempDir::new("js-jump");
    js_bot(
        data.path(),
        json!([
            node(
                "start",
                &["route {}", &say("never said")],
                None,
                json!([{"condition": "true", "node": "END"}])
            ),
            node(
                "target",
                &[&say(
                    "jumped: {{temp.after}} | {{temp.config}} | {{{temp.errors}}}"
                )],
                None,
                json!([])
            )
        ]),
        json!({}),
    );
    write(
        &data.path().join("bots").join(BOT),
        "config/qna.json",
        r#"{"qnaCategories": "bot-only"}"#,
    );
    action_file(
        data.path(),
        "route",
        "const forBot = await bp.config.getModuleConfigForBot('qna', event.botId)\n\
         const global = await bp.config.getModuleConfig('qna')\n\
         const main = await bp.config.getBotpressConfig()\n\
         temp.config = [forBot.qnaCategories, global.qnaCategories !== 'bot-only', main.dialog.janitorInterval !== undefined, 'appSecret' in main].join(' ')\n\
         const errors = []\n\
         for (const f of [() => bp.dialog.processEvent('s', event), () => bp.config.mergeBotConfig(event.botId, {}), () => bp.dialog.jumpTo('s', event, 'main.flow.json', 'nowhere'), () => bp.config.getModuleConfigForBot('qna', 'other-bot')]) {\n\
           try { await f() } catch (e) { errors.push(e.message) }\n\
         }\n\
         temp.errors = errors.join('; ')\n\
         await bp.dialog.jumpTo(bp.dialog.createId(event), event, 'main.flow.json', 'target')\n\
         temp.after = 'the action finished after jumping, ' + event.state.context.currentNode\n",
    );
    let server = Server::start(data.path(), &[]);
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u1", "hi")),
        ["jumped: the action finished after jumping, target | bot-only true true false | \
          bp.dialog.processEvent is not available in botd; bp.config.mergeBotConfig is not available in botd; \
          bp.dialog.jumpTo: Node \"nowhere\" not found in flow \"main.flow.json\"; \
          bp.config.getModuleConfigForBot: botd scripts can only reach their own bot (\"js-bot\"), not \"other-bot\""],
        "{}",
        server.log()
    );
}

#[test]
fn an_action_computes_from_args_and_an_nlu_entity() {
    let data = TempDir::new("js-entity");
    js_bot(
        data.path(),
        json!([node(
            "start",
            &[
                "bmi {\"height\": \"2\", \"channel\": \"{{event.channel}}\"}",
                &say("{{{temp.reply}}}; weight {{user.weight}}")
            ],
            None,
            json!([{"condition": "true", "node": "END"}])
        )]),
        json!({}),
    );
    action_file(data.path(), "bmi", BMI_ACTION);
    let server = Server::start(data.path(), &[]);
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u1", "I weigh eighty")),
        ["BMI 20 from \"eighty\" on api; weight 80"],
        "{}",
        server.log()
    );
    // `user` is kept across turns; `temp` is not.
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u1", "hello")),
        ["no number in hello; weight 80"]
    );
}

/// Debian's node-lodash, which `make test` installs (tests/deps): a real npm package, copied
/// into the test data folder as `npm install lodash` would place it.
const LODASH: &str = "/usr/share/nodejs/lodash";

#[test]
fn require_loads_a_real_npm_package_from_the_data_folder() {
    let installed = Path::new(LODASH);
    assert!(
        installed.join("package.json").is_file(),
        "{LODASH} is missing: run tests/deps (make test does) to install node-lodash"
    );
    let version = serde_json::from_str::<Value>(
        &std::fs::read_to_string(installed.join("package.json")).unwrap(),
    )
    .unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    let data = TempDir::new("js-lodash");
    copy_dir(installed, &data.path().join("node_modules/lodash"));
    js_bot(
        data.path(),
        json!([node(
            "start",
            &["useLodash {}", &say("{{temp.result}}")],
            None,
            json!([{"condition": "true", "node": "END"}])
        )]),
        json!({}),
    );
    action_file(
        data.path(),
        "useLodash",
        "const _ = require('lodash')\n\
         const sums = _.chunk([1, 2, 3, 4, 5], 2).map(_.sum)\n\
         temp.result = [sums.join(','), _.capitalize(event.preview), _.get(event, 'payload.type'), _.VERSION].join(' ')\n",
    );
    let server = Server::start(data.path(), &[]);
    assert_eq!(
        texts_of(&converse(server.port, BOT, "u1", "hELLO")),
        [format!("3,7,5 Hello text {version}")],
        "{}",
        server.log()
    );
    // botd check finds the package installed and pure JavaScript.
    let (code, out, err) = botd(&["check", "--data", data.path().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("lodash"), "{out}");
}
