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
            {"id":"n0002","name":"judge","onEnter":[],"onReceive":null,"next":[{"condition":"user.age >>> 3","node":"entry"}]},
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
    find(&format!("{root}/broken.flow.json: invalid JSON"), &[]);
    find(
        &format!("{root}/main.flow.json: "),
        &["node \"entry\"", "\"nowhere\"", "does not exist"],
    );
    find(
        &format!("{root}/main.flow.json: "),
        &["node \"judge\"", "user.age >>> 3"],
    );
    find(
        &format!("{root}/main.flow.json: "),
        &["node \"custom\"", "myActions/doStuff", "custom JavaScript"],
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
