//! Acceptance of the issue "Botpress v11 bot runtime": transcripts over the real server,
//! flow features on test bots, state durability and isolation, `botd check`.

mod common;

use common::*;
use serde_json::{json, Value};

const ASK_NAME: &str = "May I know your name please?";
const FIRST_TIME: &str = "This is the first time we speak 🤖";
const TRY_SAYING: &str = "Try saying something like \"forget my name\"!";

fn greetings(name: &str) -> [String; 3] {
    [
        format!("👋, {name}!"),
        format!("Hello, {name}!"),
        format!("Welcome to Botpress, {name}!"),
    ]
}

/// Asserts `payloads` is [typing, text] pairs whose texts are `expected` (each a set of
/// accepted alternatives).
fn assert_texts(payloads: &[Value], expected: &[&[String]]) {
    assert_eq!(payloads.len(), expected.len() * 2, "payloads: {payloads:?}");
    for (pair, accepted) in payloads.chunks(2).zip(expected) {
        assert_eq!(
            pair[0],
            json!({"type": "typing", "value": true}),
            "payloads: {payloads:?}"
        );
        assert_eq!(pair[1]["type"], "text");
        assert_eq!(pair[1]["markdown"], true);
        let text = pair[1]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text in {}", pair[1]));
        assert!(
            accepted.iter().any(|a| a == text),
            "\"{text}\" is none of {accepted:?}"
        );
        assert_eq!(
            pair[1].as_object().unwrap().len(),
            3,
            "unexpected keys in {}",
            pair[1]
        );
    }
}

fn one(s: &str) -> Vec<String> {
    vec![s.to_string()]
}

// ---------------------------------------------------------------- welcome-bot (§12.1)

#[test]
fn welcome_bot_transcript_steps_1_2_3() {
    let data = data_copy("wb");
    let server = Server::start(data.path(), &[]);
    let p = server.port;

    // 1. The first message asks the name: exactly the seed's sample.
    let a = converse(p, "welcome-bot", "user-42", "hi");
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json(),
        json!({"responses": [{"type": "typing", "value": true}, {"type": "text", "markdown": true, "text": ASK_NAME}]})
    );
    assert_eq!(
        a.text(),
        r#"{"responses":[{"type":"typing","value":true},{"type":"text","markdown":true,"text":"May I know your name please?"}]}"#
    );

    // 2. The name: greeting, first time, try saying (6 payloads).
    let r = responses(&converse(p, "welcome-bot", "user-42", "Sylvain"));
    assert_texts(
        &r,
        &[&greetings("Sylvain"), &one(FIRST_TIME), &one(TRY_SAYING)],
    );

    // 3. hello: greeting + "We already spoke 1 times!".
    let r = responses(&converse(p, "welcome-bot", "user-42", "hello"));
    assert_texts(
        &r,
        &[&greetings("Sylvain"), &one("We already spoke 1 times!")],
    );

    // A later message counts up.
    let r = responses(&converse(p, "welcome-bot", "user-42", "how are you"));
    assert_texts(
        &r,
        &[&greetings("Sylvain"), &one("We already spoke 2 times!")],
    );
    let r = responses(&converse(p, "welcome-bot", "user-42", "still here"));
    assert_texts(
        &r,
        &[&greetings("Sylvain"), &one("We already spoke 3 times!")],
    );

    // Another user starts from the beginning.
    assert_eq!(
        responses(&converse(p, "welcome-bot", "someone-else", "hello")),
        typed_text(ASK_NAME)
    );
}

#[test]
fn state_survives_a_restart_mid_conversation() {
    let data = data_copy("restart");
    let mut server = Server::start(data.path(), &[]);
    assert_eq!(
        responses(&converse(server.port, "welcome-bot", "u1", "hi")),
        typed_text(ASK_NAME)
    );
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");

    let server = Server::start(data.path(), &[]);
    // The bot was waiting in ask-name: the name is received, not asked again.
    let r = responses(&converse(server.port, "welcome-bot", "u1", "Sylvain"));
    assert_texts(
        &r,
        &[&greetings("Sylvain"), &one(FIRST_TIME), &one(TRY_SAYING)],
    );
    let r = responses(&converse(server.port, "welcome-bot", "u1", "hello"));
    assert_texts(
        &r,
        &[&greetings("Sylvain"), &one("We already spoke 1 times!")],
    );
}

#[test]
fn two_bots_never_see_each_others_state() {
    let data = data_copy("twobots");
    copy_dir(
        &data.path().join("bots/welcome-bot"),
        &data.path().join("bots/other-bot"),
    );
    let server = Server::start(data.path(), &[]);
    let p = server.port;

    assert_eq!(
        responses(&converse(p, "welcome-bot", "same-user", "hi")),
        typed_text(ASK_NAME)
    );
    let r = responses(&converse(p, "welcome-bot", "same-user", "Alice"));
    assert_texts(
        &r,
        &[&greetings("Alice"), &one(FIRST_TIME), &one(TRY_SAYING)],
    );

    // other-bot: same user id, same channel — no nickname, no flow position, no counter.
    assert_eq!(
        responses(&converse(p, "other-bot", "same-user", "hi")),
        typed_text(ASK_NAME)
    );
    let r = responses(&converse(p, "other-bot", "same-user", "Bob"));
    assert_texts(&r, &[&greetings("Bob"), &one(FIRST_TIME), &one(TRY_SAYING)]);

    let r = responses(&converse(p, "welcome-bot", "same-user", "hello"));
    assert_texts(
        &r,
        &[&greetings("Alice"), &one("We already spoke 1 times!")],
    );
    let r = responses(&converse(p, "other-bot", "same-user", "hello"));
    assert_texts(&r, &[&greetings("Bob"), &one("We already spoke 1 times!")]);

    // The secured state of each bot holds only its own user.
    let t = token(data.path(), &[]);
    assert_eq!(
        state_after(p, "welcome-bot", "same-user", "x", &t)["user"],
        json!({"nickname": "Alice"})
    );
    assert_eq!(
        state_after(p, "other-bot", "same-user", "x", &t)["user"],
        json!({"nickname": "Bob"})
    );
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn hostile_user_ids_are_stored_safely_and_round_trip() {
    let data = data_copy("hostile");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let emoji = "😀".repeat(1024); // 4 KB
    let ids = [
        "../../etc/passwd".to_string(),
        "a/b".to_string(),
        "..".to_string(),
        emoji,
    ];
    for (i, id) in ids.iter().enumerate() {
        let user = percent_encode(id);
        let name = format!("Name{i}");
        assert_eq!(
            responses(&converse(p, "welcome-bot", &user, "hi")),
            typed_text(ASK_NAME),
            "user {id:.20}"
        );
        let r = responses(&converse(p, "welcome-bot", &user, &name));
        assert_texts(&r, &[&greetings(&name), &one(FIRST_TIME), &one(TRY_SAYING)]);
    }
    // Each id kept its own state.
    for (i, id) in ids.iter().enumerate() {
        let r = responses(&converse(p, "welcome-bot", &percent_encode(id), "again"));
        assert_texts(
            &r,
            &[
                &greetings(&format!("Name{i}")),
                &one("We already spoke 1 times!"),
            ],
        );
    }
    // `a%2Fb` is one user id, not the path a/b: the raw form is another route.
    assert_eq!(converse(p, "welcome-bot", "a/b", "hi").status, 404);

    // Nothing was written outside data/storage, and no file name carries the id.
    let files = files_below(data.path());
    for f in &files {
        let s = f.to_string_lossy();
        assert!(
            s.starts_with("storage/") || s.starts_with("bots/") || s.starts_with("global/"),
            "unexpected file {s}"
        );
        assert!(
            !s.contains("passwd") && !s.contains('😀') && !s.contains("a/b/"),
            "id used in a file name: {s}"
        );
    }
    assert!(files.iter().any(|f| f.starts_with("storage")));
    let parent = data.path().parent().unwrap();
    assert!(!parent.join("etc").exists() && !data.path().join("etc").exists());
}

// ---------------------------------------------------------------- botd check

#[test]
fn check_reports_each_problem_on_one_line() {
    let data = TempDir::new("check");
    let d = data.path();
    write(
        d,
        "bots/broken-bot/bot.config.json",
        r#"{"id":"broken-bot","name":"Broken","defaultLanguage":"en","languages":["en"]}"#,
    );
    write(
        d,
        "bots/broken-bot/flows/broken.flow.json",
        r#"{"version":"0.0.1","startNode":"entry","nodes":[{"id":"abcd", "#,
    );
    write(
        d,
        "bots/broken-bot/flows/main.flow.json",
        r#"{"version":"0.0.1","startNode":"entry","nodes":[
            {"id":"n0001","name":"entry","onEnter":[],"onReceive":null,"next":[{"condition":"true","node":"nowhere"}]},
            {"id":"n0002","name":"judge","onEnter":[],"onReceive":null,"next":[{"condition":"user.age >>>> 3","node":"entry"}]},
            {"id":"n0003","name":"custom","onEnter":["myActions/doStuff {\"a\":1}"],"onReceive":null,"next":[]}
        ]}"#,
    );
    let (code, out, err) = botd(&["check", "--data", d.to_str().unwrap()], &[]);
    assert_ne!(code, 0, "stdout: {out}\nstderr: {err}");
    let root = format!("{}/bots/broken-bot/flows", d.display());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "one line per problem, got:\n{out}");
    let find = |prefix: &str, needles: &[&str]| {
        let hits: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with(prefix) && needles.iter().all(|n| l.contains(n)))
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "expected one line `{prefix}` with {needles:?} in:\n{out}"
        );
    };
    find(
        &format!("{root}/broken.flow.json: error: invalid JSON"),
        &[],
    );
    find(
        &format!("{root}/main.flow.json: "),
        &["warning: node \"entry\"", "\"nowhere\"", "does not exist"],
    );
    find(
        &format!("{root}/main.flow.json: "),
        &["node \"judge\"", "user.age >>>> 3"],
    );
    find(
        &format!("{root}/main.flow.json: "),
        &[
            "warning: node \"custom\"",
            "myActions/doStuff",
            "custom JavaScript",
        ],
    );
}

#[test]
fn check_passes_on_the_repository_data() {
    let data = data_copy("checkok");
    let (code, out, err) = botd(&["check", "--data", data.path().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(out, "", "no problem lines expected");
    assert!(err.contains("welcome-bot: ok"), "{err}");
}

// ---------------------------------------------------------------- test bots (tests/bots/)

/// A data directory holding only the named bots of `tests/bots/`, and optionally a global
/// botpress.config.json written before the first start.
fn test_bots(tag: &str, bots: &[&str], global: Option<Value>) -> TempDir {
    let data = TempDir::new(tag);
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bots");
    for b in bots {
        copy_dir(&src.join(b), &data.path().join("bots").join(b));
    }
    if let Some(g) = global {
        write(
            data.path(),
            "global/botpress.config.json",
            &serde_json::to_string_pretty(&g).unwrap(),
        );
    }
    data
}

struct Chat {
    port: u16,
    bot: String,
    user: String,
    token: String,
}

impl Chat {
    /// The texts of one public turn.
    fn say(&self, text: &str) -> Vec<String> {
        texts(&json!({"responses": responses(&converse(self.port, &self.bot, &self.user, text))}))
    }
    /// One secured turn with include=state: (texts, state).
    fn turn(&self, text: &str) -> (Vec<String>, Value) {
        let a = secured(
            self.port,
            &self.bot,
            &self.user,
            &json!({"type": "text", "text": text}),
            "state",
            &self.token,
        );
        assert_eq!(a.status, 200, "{}", a.text());
        let body = a.json();
        (texts(&body), body["state"].clone())
    }
}

/// The flowtest bot on a running server, with a token for the secured route.
struct FlowTest {
    server: Server,
    token: String,
    _data: TempDir,
}

impl FlowTest {
    fn start(tag: &str) -> FlowTest {
        let data = test_bots(tag, &["flowtest"], None);
        let server = Server::start(data.path(), &[]);
        let token = token(data.path(), &[]);
        FlowTest {
            server,
            token,
            _data: data,
        }
    }

    fn chat(&self, user: &str) -> Chat {
        Chat {
            port: self.server.port,
            bot: "flowtest".into(),
            user: user.into(),
            token: self.token.clone(),
        }
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn flowtest_sub_flows_return_with_transitions_only() {
    let flowtest = FlowTest::start("flow-sub");
    let chat = |user: &str| flowtest.chat(user);

    // `#`: back to the calling node, whose onEnter does not run again; then END keeps temp.
    let c = chat("sub-1");
    assert_eq!(c.say("hello"), strings(&["main:entry", "menu"]));
    let (said, state) = c.turn("go sub");
    assert_eq!(said, strings(&["main:call-sub", "sub:entry"]));
    let ctx = &state["context"];
    assert_eq!(ctx["currentFlow"], "sub.flow.json");
    assert_eq!(ctx["currentNode"], "s-entry");
    assert_eq!(ctx["previousFlow"], "main.flow.json");
    assert_eq!(ctx["previousNode"], "call-sub");
    assert_eq!(
        ctx["jumpPoints"],
        json!([{"flow": "main.flow.json", "node": "call-sub"}])
    );
    assert_eq!(ctx["queue"]["instructions"][0]["type"], "on-receive");
    assert_eq!(state["temp"], json!({"visited": "yes", "heard": "go sub"}));
    let (said, state) = c.turn("back");
    assert_eq!(said, strings(&["main:after-sub"]));
    assert_eq!(state["context"], json!({}), "END deletes the context");
    assert_eq!(
        state["temp"],
        json!({"visited": "yes", "heard": "go sub", "returned": "yes"}),
        "END keeps temp"
    );
    // The next message starts again at main.flow.json's start node.
    assert_eq!(c.say("again"), strings(&["main:entry", "menu"]));

    // `#node`: back to the parent at that node, transitions only; a node with no
    // transitions ends the conversation and clears temp.
    let c = chat("sub-2");
    c.say("hello");
    c.say("go sub");
    let (said, state) = c.turn("back to landing");
    assert_eq!(said, strings(&["main:landed"]));
    assert_eq!(state["context"], json!({}));
    assert_eq!(
        state["temp"],
        json!({}),
        "the queue ran out: temp is cleared"
    );

    // Nested sub-flows keep a stack of jump points.
    let c = chat("sub-3");
    c.say("hello");
    c.say("go sub");
    let (said, state) = c.turn("deeper");
    assert_eq!(said, strings(&["deep:entry"]));
    assert_eq!(
        state["context"]["jumpPoints"],
        json!([{"flow": "main.flow.json", "node": "call-sub"}, {"flow": "sub.flow.json", "node": "s-entry"}])
    );
    // `up` returns to s-entry with its transitions only: "up" matches none of them but the
    // final `true`, which re-enters s-entry (its onEnter runs: a normal node transition).
    let (said, state) = c.turn("up");
    assert_eq!(said, strings(&["sub:entry"]));
    assert_eq!(state["context"]["currentFlow"], "sub.flow.json");
    assert_eq!(
        state["context"]["jumpPoints"],
        json!([{"flow": "main.flow.json", "node": "call-sub"}])
    );

    // A flow entered by name with `x.flow.json`; a missing .ui.json is fine.
    let c = chat("sub-4");
    c.say("hello");
    let (said, state) = c.turn("go flow");
    assert_eq!(said, strings(&["other:entry go flow"]));
    assert_eq!(state["context"]["currentFlow"], "other.flow.json");
    assert_eq!(
        state["context"]["jumpPoints"],
        json!([{"flow": "main.flow.json", "node": "menu"}])
    );
}

#[test]
fn flowtest_catch_all_and_no_matching_transition() {
    let flowtest = FlowTest::start("flow-catch");
    let chat = |user: &str| flowtest.chat(user);

    // A normal transition.
    let c = chat("c-1");
    assert_eq!(c.say("hello"), strings(&["main:entry", "menu"]));
    let (said, state) = c.turn("next");
    assert_eq!(said, strings(&["second"]));
    assert_eq!(state["context"]["currentNode"], "second");
    assert_eq!(state["context"]["previousNode"], "menu");
    // catchAll comes before the node's own `true` transition.
    assert_eq!(c.say("go menu"), strings(&["menu"]));

    // At menu, the catchAll entry that targets menu itself is skipped: nothing matches,
    // so the conversation ends (context and temp cleared).
    let (said, state) = c.turn("go menu");
    assert_eq!(said, Vec::<String>::new());
    assert_eq!(state["context"], json!({}));
    assert_eq!(state["temp"], json!({}));
    assert_eq!(c.say("anything"), strings(&["main:entry", "menu"]));

    // No matching transition at all: the conversation ends.
    let c = chat("c-2");
    c.say("hello");
    let (said, state) = c.turn("something unexpected");
    assert_eq!(said, Vec::<String>::new());
    assert_eq!(state["context"], json!({}));
    assert_eq!(state["temp"], json!({}));

    // catchAll.onReceive runs before the node's onReceive on every received message.
    let c = chat("c-3");
    c.say("hello");
    let (_, state) = c.turn("next");
    assert_eq!(state["temp"]["heard"], "next");
}

#[test]
fn flowtest_choice_skill() {
    let flowtest = FlowTest::start("flow-choice");
    let question = json!({"type": "custom", "module": "channel-web", "component": "QuickReplies",
        "quick_replies": [{"title": "Red", "payload": "RED"}, {"title": "Blue", "payload": "BLUE"}],
        "wrapped": {"type": "text", "text": "Pick a color", "typing": false}});
    let cases: &[(&[&str], &str)] = &[
        (&["1"], "you chose red"),
        (&["2"], "you chose blue"),
        (&["2."], "you chose blue"),
        (&["#2"], "you chose blue"),
        (&["1)"], "you chose red"),
        (&["I like crimson things"], "you chose red"),
        (&["AZURE please"], "you chose blue"),
        (&["blue"], "you chose blue"),
        (&["3", "red"], "you chose red"),
        (&["purple", "still no", "1"], "you chose red"),
        (&["purple", "green", "yellow"], "no choice after 3 tries"),
    ];
    for (i, (answers, outcome)) in cases.iter().enumerate() {
        let c = flowtest.chat(&format!("choice-{i}"));
        c.say("hello");
        let r = responses(&converse(
            flowtest.server.port,
            "flowtest",
            &c.user,
            "go choice",
        ));
        assert_eq!(r, vec![question.clone()], "case {answers:?}");
        for (k, answer) in answers.iter().enumerate() {
            let (said, state) = c.turn(answer);
            if k + 1 < answers.len() {
                assert_eq!(
                    said,
                    strings(&["sorry, try again", "Pick a color"]),
                    "case {answers:?}, answer {answer}"
                );
                assert_eq!(
                    state["temp"]["skill-choice-invalid-count"],
                    json!(k + 1),
                    "case {answers:?}"
                );
                assert_eq!(state["temp"]["skill-choice-valid"], false);
                assert_eq!(
                    state["context"]["currentFlow"],
                    "skills/choice-c0l0r5.flow.json"
                );
                assert_eq!(state["context"]["currentNode"], "parse");
            } else {
                assert_eq!(said, strings(&[outcome]), "case {answers:?}");
                assert_eq!(state["context"], json!({}), "case {answers:?}");
                if outcome.starts_with("you chose") {
                    assert_eq!(state["temp"]["skill-choice-valid"], true);
                    assert_eq!(
                        state["temp"]["skill-choice-ret"],
                        outcome.trim_start_matches("you chose ")
                    );
                }
            }
        }
    }
}

#[test]
fn flowtest_variables_and_templating() {
    let flowtest = FlowTest::start("flow-vars");
    let c = flowtest.chat("vars-1");
    c.say("hello");
    assert_eq!(c.say("go vars"), strings(&["who are you?"]));
    let (said, state) = c.turn("O'Brien <b>&</b>");
    let esc = "O&#39;Brien &lt;b&gt;&amp;&lt;&#x2F;b&gt;";
    assert_eq!(
        said,
        vec![format!("esc={esc} raw=O'Brien <b>&</b> user={esc} session=s-O'Brien <b>&</b> temp=tmp bot={esc} n=0 missing=[]")]
    );
    // setVariable stores the {{ }} value escaped, the {{{ }}} value raw.
    assert_eq!(state["user"], json!({"name": esc}));
    assert_eq!(state["session"]["raw"], "s-O'Brien <b>&</b>");
    assert_eq!(state["temp"]["t"], "tmp");
    assert_eq!(state["temp"]["n"], 0);
    assert_eq!(state["bot"], json!({"last": esc}));

    // "null" and "" delete the variable (as a missing value does); a JSON null is a value
    // (`value === 'null' || value === '' || typeof value === 'undefined'` is false for it).
    let (said, state) = c.turn("forget");
    assert_eq!(said, strings(&["unset"]));
    assert_eq!(state["user"], json!({}));
    assert!(
        state["session"].get("raw").is_none(),
        "{}",
        state["session"]
    );
    assert_eq!(
        state["temp"].get("t"),
        Some(&Value::Null),
        "{}",
        state["temp"]
    );

    // The bot variable is shared by every user of the bot; the conversation counter is per user.
    let c2 = flowtest.chat("vars-2");
    c2.say("hello");
    c2.say("go vars");
    let (said, state) = c2.turn("Zed");
    assert!(said[0].ends_with("bot=Zed n=0 missing=[]"), "{said:?}");
    assert_eq!(state["bot"], json!({"last": "Zed"}));
    c.say("hello");
    c.say("go vars");
    let (said, _) = c.turn("O'Brien");
    assert!(
        said[0].ends_with("bot=O&#39;Brien n=1 missing=[]"),
        "{said:?}"
    );
}

#[test]
fn flowtest_a_failing_custom_action_stops_the_turn_and_saves_it() {
    let flowtest = FlowTest::start("flow-custom");
    let c = flowtest.chat("custom-1");
    c.say("hello");
    let (_, before) = c.turn("next");
    assert_eq!(before["context"]["currentNode"], "second");
    // Botpress's dialog engine catches the failing action (`_reportProcessingError`): what
    // the node said before it was sent, nothing follows (no error message), and the state
    // of the turn is saved, the queue still holding the failing action first.
    let r = responses(&converse(
        flowtest.server.port,
        "flowtest",
        "custom-1",
        "go custom",
    ));
    assert_eq!(
        r,
        vec![json!({"type": "text", "markdown": true, "text": "before the custom action"})]
    );
    let (said, after) = c.turn("whatever");
    assert_eq!(said, strings(&[]), "the action fails again, before any say");
    assert_eq!(after["user"], json!({"tainted": "yes"}));
    assert_eq!(after["context"]["currentNode"], "custom");
    let queue = &after["context"]["queue"]["instructions"];
    assert_eq!(queue[0]["fn"], "myActions/doSomething {\"x\":1}", "{queue}");
    assert_eq!(
        queue[1]["fn"],
        "say #builtin_text {\"text\": \"after the custom action\"}"
    );
    assert!(
        flowtest
            .server
            .log()
            .contains("node \"custom\": error processing \"myActions/doSomething {\"x\":1}\""),
        "{}",
        flowtest.server.log()
    );
}

// ---------------------------------------------------------------- timeouts (§8.10)

#[test]
fn timeouts_run_the_documented_timeout_node() {
    let bots = [
        "to-node-prop",
        "to-named-node",
        "to-flow-node",
        "to-flow-file",
        "to-jump",
    ];
    let global = json!({
        "httpServer": {"host": "localhost", "port": 3000, "bodyLimit": "100kb"},
        "dialog": {"janitorInterval": "200ms", "timeoutInterval": "2m", "sessionTimeoutInterval": "30m"},
        "converse": {"timeout": "5s", "maxMessageLength": 360, "enableUnsecuredEndpoint": true}
    });
    let data = test_bots("timeouts", &bots, Some(global));
    let server = Server::start(data.path(), &[]);
    let t = token(data.path(), &[]);
    for bot in bots {
        let c = Chat {
            port: server.port,
            bot: bot.into(),
            user: "sleepy".into(),
            token: t.clone(),
        };
        let (said, state) = c.turn("hi");
        assert_eq!(said, strings(&["entry", "waiting"]), "{bot}");
        assert_eq!(state["context"]["currentNode"], "waiting", "{bot}");
    }
    // The janitor runs the timeout handling for each (Converse cannot push, so it is logged).
    let ran = |bot: &str| {
        server.log().contains(&format!(
            "bot \"{bot}\": timeout replies for channel api have nowhere to go"
        ))
    };
    assert!(
        wait_until(std::time::Duration::from_secs(30), || bots
            .iter()
            .all(|b| ran(b))),
        "{}",
        server.log()
    );
    let expected = [
        ("to-node-prop", "node property"),
        ("to-named-node", "named node"),
        ("to-flow-node", "flow timeoutNode"),
        ("to-flow-file", "timeout.flow.json"),
        ("to-jump", "catchAll after jump"),
    ];
    for (bot, which) in expected {
        let c = Chat {
            port: server.port,
            bot: bot.into(),
            user: "sleepy".into(),
            token: t.clone(),
        };
        let (said, state) = c.turn("back again");
        // The timeout node ran with the conversation's real state (temp.step) and a timeout event.
        assert_eq!(
            state["user"],
            json!({"timedOut": format!("{which} entered timeout")}),
            "{bot}"
        );
        // The context was reset: the conversation starts over.
        assert_eq!(said, strings(&["entry", "waiting"]), "{bot}");
    }
}

// ---------------------------------------------------------------- welcome-bot 11.8.1 (§12.2)

#[test]
fn welcome_bot_1181_first_two_turns() {
    let data = test_bots("wb1181", &["welcome-bot-1181"], None);
    let server = Server::start(data.path(), &[]);
    let a = converse(server.port, "welcome-bot-1181", "u1", "hi");
    assert_eq!(
        a.json(),
        json!({"responses": [
            {"type": "typing", "value": true},
            {"type": "text", "markdown": true, "text": "Hi, I'm Welcome Bot! My task is to help you understand how Botpress works."},
            {"type": "typing", "value": true},
            {"type": "custom", "module": "channel-web", "component": "QuickReplies",
             "quick_replies": [{"title": "What is a Context?", "payload": "CONTEXT"}, {"title": "What is Bot Memory?", "payload": "MEMORY"}],
             "wrapped": {"type": "text", "text": "What would you like to know?", "typing": true}}
        ]})
    );
    let mut expected = typed_text("Bot Memory is used by the bot to store information about a conversation. Here's an example.");
    expected.extend(typed_text(ASK_NAME));
    assert_eq!(
        responses(&converse(server.port, "welcome-bot-1181", "u1", "memory")),
        expected
    );
    // The quick reply's title works as well as its value, and a number picks the choice.
    converse(server.port, "welcome-bot-1181", "u2", "hi");
    assert_eq!(
        responses(&converse(
            server.port,
            "welcome-bot-1181",
            "u2",
            "What is Bot Memory?"
        )),
        expected
    );
    converse(server.port, "welcome-bot-1181", "u3", "hi");
    assert_eq!(
        responses(&converse(server.port, "welcome-bot-1181", "u3", "2")),
        expected
    );
}

/// A context that times out with no timeout node anywhere: the flow position and temp are
/// reset, and the session (its turn history) is kept.
#[test]
fn timeout_without_a_timeout_node_keeps_the_session() {
    let data = data_copy("to-plain");
    write(
        data.path(),
        "global/botpress.config.json",
        &json!({"dialog": {"janitorInterval": "100ms"}}).to_string(),
    );
    let config_path = data.path().join("bots/welcome-bot/bot.config.json");
    let config = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("\"5m\"", "\"300ms\"");
    std::fs::write(&config_path, config).unwrap();
    let server = Server::start(data.path(), &[]);
    let t = token(data.path(), &[]);
    let hi = json!({"type": "text", "text": "hi"});
    let a = secured(server.port, "welcome-bot", "idle", &hi, "state", &t).json();
    assert_eq!(a["state"]["context"]["currentNode"], "ask-name");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    // The context is gone: "hello" starts over and the name is asked again, and the turn
    // history still holds the first "hi".
    let hello = json!({"type": "text", "text": "hello"});
    let a = secured(server.port, "welcome-bot", "idle", &hello, "state", &t).json();
    assert_eq!(a["responses"][1]["text"], "May I know your name please?");
    let history: Vec<&str> = a["state"]["session"]["lastMessages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["incomingPreview"].as_str())
        .collect();
    assert_eq!(history, ["hi", "hello"]);
}
