//! Botpress 12 folders over HTTP Converse: say_something nodes with inline per-language
//! content, editor conditions with calls, the 12.1.5 loop guard and error flow, a sub-flow
//! return under the previousNode rule, and per-language QnA whose answer is a content element.
//! Expected transcripts follow Botpress 12's dialog engine (`dialog-engine.ts`,
//! `queue-builder.ts`) and QnA module (`setup.ts`).

mod common;

use common::*;
use serde_json::{json, Value};

fn text(t: &str) -> Value {
    json!({"type": "text", "markdown": true, "text": t})
}

fn say(text: &str) -> String {
    format!("say #builtin_text {}", json!({ "text": text }))
}

fn node(name: &str, on_enter: &[String], on_receive: Option<&[&str]>, next: Value) -> Value {
    json!({"id": format!("id-{name}"), "name": name, "onEnter": on_enter,
        "onReceive": on_receive, "next": next})
}

fn flow_bot(data: &std::path::Path) {
    let bot = "bots/bp12-flows";
    write(
        data,
        &format!("{bot}/bot.config.json"),
        r#"{"name":"flows","version":"12.2.0","defaultLanguage":"en","languages":["en","fr"]}"#,
    );
    let entry = json!({"id": "id-entry", "name": "entry", "type": "say_something",
        "content": {"contentType": "builtin_text", "formData": {
            "text$en": "Welcome {{event.payload.text}}!", "text$fr": "Bienvenue !", "typing$en": true}},
        "onEnter": [], "onReceive": null, "next": [{"condition": "true", "node": "ask"}]});
    let main = json!({"version": "0.0.1", "startNode": "entry", "nodes": [
        entry,
        node("ask", &[say("Say a number, loop, or sub")], Some(&[]), json!([
            {"condition": "Number(event.payload.text) > 10", "node": "big"},
            {"condition": "event.payload.text.trim().toLowerCase().startsWith('loop')", "node": "loop-a"},
            {"condition": "/^sub$/i.test(event.payload.text)", "node": "callsub"},
            {"condition": "true", "node": "small"}])),
        node("big", &[say("big")], None, json!([{"condition": "true", "node": "END"}])),
        node("small", &[say("small")], None, json!([{"condition": "true", "node": "END"}])),
        node("loop-a", &[say("a")], None, json!([{"condition": "true", "node": "loop-b"}])),
        node("loop-b", &[say("b")], None, json!([{"condition": "true", "node": "loop-a"}])),
        {"id": "id-callsub", "name": "callsub", "type": "skill-call", "flow": "sub.flow.json",
         "onEnter": null, "onReceive": null, "next": [{"condition": "true", "node": "END"}]}
    ]});
    write(
        data,
        &format!("{bot}/flows/main.flow.json"),
        &main.to_string(),
    );
    let sub = json!({"version": "0.0.1", "startNode": "entry", "nodes": [
        node("entry", &[say("question?")], None, json!([{"condition": "true", "node": "s2"}])),
        node("s2", &[], Some(&[]), json!([{"condition": "true", "node": "#"}]))
    ]});
    write(
        data,
        &format!("{bot}/flows/sub.flow.json"),
        &sub.to_string(),
    );
    let error = json!({"version": "0.0.1", "startNode": "entry", "nodes": [
        node("entry", &[say("Sorry, a loop")], None, json!([]))
    ]});
    write(
        data,
        &format!("{bot}/flows/error.flow.json"),
        &error.to_string(),
    );
}

fn qna_bot(data: &std::path::Path) {
    let bot = "bots/bp12-qna";
    write(
        data,
        &format!("{bot}/bot.config.json"),
        r#"{"name":"qna","version":"12.1.6","defaultLanguage":"en","languages":["en","fr"]}"#,
    );
    write(
        data,
        &format!("{bot}/flows/main.flow.json"),
        r#"{"version":"0.0.1","startNode":"entry","nodes":[{"id":"n0001","name":"entry","onEnter":[],"onReceive":null,"next":[]}]}"#,
    );
    write(
        data,
        &format!("{bot}/content-elements/builtin_text.json"),
        r#"[{"id":"builtin_text-hours","formData":{"text$en":"We open at 9, {{user.name}}.","text$fr":"Nous ouvrons à 9h.","typing$en":true}}]"#,
    );
    write(
        data,
        &format!("{bot}/qna/hours.json"),
        r##"{"id":"hours","data":{"questions":{"en":["What are your opening hours?","When do you open?","opening hours"],"fr":["Quand ouvrez-vous ?"]},
            "answers":{"en":["#!builtin_text-hours"],"fr":["#!builtin_text-hours"]},"action":"text","category":"global","enabled":true,
            "redirectFlow":"","redirectNode":""}}"##,
    );
    // Botpress 12.8 on: `contexts` in place of `category`.
    write(
        data,
        &format!("{bot}/qna/secret.json"),
        r#"{"id":"secret","data":{"questions":{"en":["Is there a secret menu?","secret menu"]},"answers":{"en":["Ask for the blue pizza."]},
            "action":"text","contexts":["vip","global"],"enabled":true}}"#,
    );
    write(
        data,
        &format!("{bot}/qna/bye.json"),
        r#"{"id":"bye","data":{"questions":{"en":["Goodbye","See you later","bye"]},"answers":{"en":["Bye!"]},
            "action":"text","category":"","enabled":true}}"#,
    );
}

#[test]
fn say_something_nodes_and_editor_conditions() {
    let data = TempDir::new("bp12-flows");
    flow_bot(data.path());
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "bp12-flows";
    let expected = vec![
        json!({"type": "typing", "value": true}),
        text("Welcome hi!"),
        text("Say a number, loop, or sub"),
    ];
    assert_eq!(responses(&converse(p, bot, "u1", "hi")), expected);
    assert_eq!(
        responses(&converse(p, bot, "u1", " 15 ")),
        vec![text("big")]
    );
    assert_eq!(responses(&converse(p, bot, "u1", "hi")), expected);
    assert_eq!(responses(&converse(p, bot, "u1", "3")), vec![text("small")]);
}

#[test]
fn the_loop_guard_stops_at_the_third_entry_and_plays_the_error_flow() {
    let data = TempDir::new("bp12-loop");
    flow_bot(data.path());
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "bp12-flows";
    converse(p, bot, "u2", "hi");
    // loop-a is entered a third time; the next transition goes to error.flow.json instead.
    assert_eq!(
        responses(&converse(p, bot, "u2", "Loop!")),
        ["a", "b", "a", "b", "a", "Sorry, a loop"]
            .iter()
            .map(|t| text(t))
            .collect::<Vec<_>>()
    );
    assert!(
        server.log().contains("Infinite loop detected. (main.flow.json (loop-a) --> main.flow.json (loop-b) --> main.flow.json (loop-a))"),
        "{}",
        server.log()
    );
    // The error flow ended the conversation: the next message starts over.
    assert_eq!(
        responses(&converse(p, bot, "u2", "hi"))[1],
        text("Welcome hi!")
    );
}

#[test]
fn returning_to_a_skill_call_node_of_a_plain_flow_asks_again() {
    let data = TempDir::new("bp12-sub");
    flow_bot(data.path());
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "bp12-flows";
    converse(p, bot, "u3", "hi");
    assert_eq!(
        responses(&converse(p, bot, "u3", "SUB")),
        vec![text("question?")]
    );
    // `#` leaves previousNode at the sub-flow's "entry" (not the calling node), so the
    // skill-call node is not "exited" and calls the sub-flow again, once.
    for answer in ["yes", "no"] {
        assert_eq!(
            responses(&converse(p, bot, "u3", answer)),
            vec![text("question?")],
            "{answer}"
        );
    }
}

#[test]
fn per_language_qna_answers_with_content_elements_and_empty_categories() {
    let data = TempDir::new("bp12-qna");
    qna_bot(data.path());
    let (code, out, err) = botd(&["check", "--data", data.path().to_str().unwrap()], &[]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    assert_eq!(
        responses(&converse(
            p,
            "bp12-qna",
            "q1",
            "What are your opening hours?"
        )),
        vec![
            json!({"type": "typing", "value": true}),
            text("We open at 9, .")
        ]
    );
    assert_eq!(
        responses(&converse(p, "bp12-qna", "q1", "Is there a secret menu?")),
        vec![
            json!({"type": "typing", "value": true}),
            text("Ask for the blue pizza.")
        ]
    );
    assert_eq!(
        responses(&converse(p, "bp12-qna", "q1", "Goodbye")),
        vec![json!({"type": "typing", "value": true}), text("Bye!")]
    );
}

#[test]
fn check_reports_what_botpress_12_has_and_botd_does_not_run() {
    let data = TempDir::new("bp12-ndu");
    let d = data.path();
    write(
        d,
        "bots/ndu-bot/bot.config.json",
        r#"{"name":"n","version":"12.26.0","defaultLanguage":"en","languages":["en"],"oneflow":true}"#,
    );
    write(
        d,
        "bots/plain-bot/bot.config.json",
        r#"{"name":"p","version":"12.26.0","defaultLanguage":"en","languages":["en"]}"#,
    );
    write(
        d,
        "bots/plain-bot/flows/main.flow.json",
        r#"{"version":"0.0.1","startNode":"entry","nodes":[
            {"id":"n0001","name":"entry","type":"trigger","onEnter":[],"onReceive":null,"next":[]}]}"#,
    );
    let (code, out, err) = botd(&["check", "--data", d.to_str().unwrap()], &[]);
    assert_ne!(code, 0, "the NDU bot cannot load: {out}\n{err}");
    let root = d.display();
    assert!(
        out.contains(&format!("{root}/bots/ndu-bot/bot.config.json: error: oneflow: true makes this a Botpress 12 NDU bot")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{root}/bots/plain-bot/flows/main.flow.json: warning: node \"entry\": type \"trigger\" belongs to Botpress 12's NDU workflows")),
        "{out}"
    );
    assert!(
        err.contains("ndu-bot: cannot load") && err.contains("plain-bot: ok (1 warnings)"),
        "{err}"
    );
}

/// A bot in English and French, made with Botpress `version`.
fn two_language_bot(data: &std::path::Path, version: &str) {
    let bot = "bots/bp12-lang";
    write(
        data,
        &format!("{bot}/bot.config.json"),
        &format!(
            r#"{{"name":"lang","version":"{version}","defaultLanguage":"en","languages":["en","fr"]}}"#
        ),
    );
    let main = json!({"version": "0.0.1", "startNode": "entry", "nodes": [
        node("entry", &[], Some(&[]), json!([
            {"condition": "event.nlu.intent.name === 'greet'", "node": "greet"},
            {"condition": "event.payload.text === 'en français'", "node": "switch"},
            {"condition": "true", "node": "entry"}])),
        node("greet", &["say #!builtin_text-welcome".to_string()], None, json!([])),
        node("switch", &["builtin/switchLanguage {\"lang\":\"fr\"}".to_string(),
            "say #!builtin_text-welcome".to_string()], None, json!([]))
    ]});
    write(
        data,
        &format!("{bot}/flows/main.flow.json"),
        &main.to_string(),
    );
    write(
        data,
        &format!("{bot}/content-elements/builtin_text.json"),
        r#"[{"id":"builtin_text-welcome","formData":{"text$en":"Welcome!","text$fr":"Bienvenue !"}},
            {"id":"builtin_text-menu","formData":{"text$en":"Our menu: pizza.","text$fr":"Notre carte : pizza."}}]"#,
    );
    write(
        data,
        &format!("{bot}/intents/greet.json"),
        r#"{"name":"greet","contexts":["global"],"slots":[],"utterances":{
            "en":["hello","hi there","good morning","hey, how are you"],
            "fr":["bonjour","salut","bonsoir, comment allez-vous","bonjour à tous"]}}"#,
    );
    write(
        data,
        &format!("{bot}/qna/hours.json"),
        r#"{"id":"hours","data":{"action":"text","category":"global","enabled":true,"redirectFlow":"","redirectNode":"",
            "questions":{"en":["What are your opening hours?","When do you open?","What time do you open?"],
                         "fr":["Quelles sont vos heures d'ouverture ?","Quand ouvrez-vous ?","À quelle heure ouvrez-vous ?"]},
            "answers":{"en":["We open at 9."],"fr":["Nous ouvrons à 9h."]}}}"#,
    );
    write(
        data,
        &format!("{bot}/qna/menu.json"),
        r##"{"id":"menu","data":{"action":"text","category":"global","enabled":true,"redirectFlow":"","redirectNode":"",
            "questions":{"en":["Can I see the menu?","What is on the menu?"],"fr":["Puis-je voir la carte ?","Qu'est-ce qu'il y a sur la carte ?"]},
            "answers":{"en":["#!builtin_text-menu"],"fr":["#!builtin_text-menu"]}}}"##,
    );
}

fn typed(t: &str) -> Vec<Value> {
    vec![json!({"type": "typing", "value": true}), text(t)]
}

#[test]
fn two_languages_before_12_10_nlu_and_qna_answers_follow_the_detected_language() {
    let data = TempDir::new("bp12-lang-1216");
    two_language_bot(data.path(), "12.1.6");
    let (code, out, err) = botd(&["check", "--data", data.path().to_str().unwrap()], &[]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "bp12-lang";
    // Botpress 12 predicts with the model of the language it detects among the bot's
    // (`_detectLang`), and 12.0–12.9's QnA answers in `event.nlu.language`.
    assert_eq!(
        responses(&converse(
            p,
            bot,
            "a",
            "Quelles sont vos heures d'ouverture ?"
        )),
        typed("Nous ouvrons à 9h.")
    );
    assert_eq!(
        responses(&converse(p, bot, "a2", "What are your opening hours?")),
        typed("We open at 9.")
    );
    let token = token(data.path(), &[]);
    let answer = secured(
        p,
        bot,
        "b",
        &json!({"type": "text", "text": "Quand ouvrez-vous ?"}),
        "nlu",
        &token,
    );
    assert_eq!(answer.json()["nlu"]["language"], "fr", "{}", answer.text());
    assert_eq!(answer.json()["nlu"]["detectedLanguage"], "fr");
    let answer = secured(
        p,
        bot,
        "b",
        &json!({"type": "text", "text": "Guten Morgen, wie geht es dir?"}),
        "nlu",
        &token,
    );
    assert_eq!(
        answer.json()["nlu"]["language"],
        "en",
        "not one of the bot's: the default"
    );
    assert_eq!(answer.json()["nlu"]["detectedLanguage"], "n/a");
    // An element answer: before 12.10 the QnA module renders it with no event, so in the
    // default language whatever the question's.
    assert_eq!(
        responses(&converse(p, bot, "c", "Puis-je voir la carte ?")),
        vec![text("Our menu: pizza.")]
    );
    // Flow content follows `user.language`: unset, the default language, even for a French
    // greeting matched by the French model; `builtin/switchLanguage` sets it.
    assert_eq!(
        responses(&converse(p, bot, "d", "bonjour")),
        Vec::<Value>::new()
    );
    assert_eq!(
        responses(&converse(p, bot, "d", "bonjour à tous")),
        vec![text("Welcome!")]
    );
    converse(p, bot, "d", "hello");
    assert_eq!(
        responses(&converse(p, bot, "d", "en français")),
        vec![text("Bienvenue !")]
    );
    converse(p, bot, "d", "hello");
    assert_eq!(
        responses(&converse(p, bot, "d", "hey, how are you")),
        vec![text("Bienvenue !")]
    );
}

#[test]
fn two_languages_from_12_10_qna_answers_follow_the_user_language() {
    let data = TempDir::new("bp12-lang-1210");
    two_language_bot(data.path(), "12.10.0");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "bp12-lang";
    // 12.10's QnA answers in `user.language ?? defaultLanguage`: the French question is
    // understood in French and answered in English until the user's language is French.
    assert_eq!(
        responses(&converse(
            p,
            bot,
            "a",
            "Quelles sont vos heures d'ouverture ?"
        )),
        typed("We open at 9.")
    );
    converse(p, bot, "e", "hello");
    assert_eq!(
        responses(&converse(p, bot, "e", "en français")),
        vec![text("Bienvenue !")]
    );
    assert_eq!(
        responses(&converse(p, bot, "e", "What are your opening hours?")),
        typed("Nous ouvrons à 9h.")
    );
    // The element answer renders in the user's language.
    assert_eq!(
        responses(&converse(p, bot, "e", "Can I see the menu?")),
        vec![text("Notre carte : pizza.")]
    );
}

/// A bot whose sub-flow returns with `#` or `##`, and whose main flow returns with `#` with
/// no flow to return to.
fn jump_bot(data: &std::path::Path, version: &str) {
    let bot = "bots/bp12-jump";
    write(
        data,
        &format!("{bot}/bot.config.json"),
        &format!(
            r#"{{"name":"jump","version":"{version}","defaultLanguage":"en","languages":["en"]}}"#
        ),
    );
    let main = json!({"version": "0.0.1", "startNode": "entry", "nodes": [
        node("entry", &[say("sub or top?")], Some(&[]), json!([
            {"condition": "event.payload.text === 'sub'", "node": "ask"},
            {"condition": "event.payload.text === 'top'", "node": "top"},
            {"condition": "event.payload.text === 'red'", "node": "red"}])),
        node("red", &[say("red port")], None, json!([{"condition": "true", "node": ""}])),
        {"id": "id-ask", "name": "ask", "type": "skill-call", "skill": "choice",
            "flow": "skills/ask.flow.json", "onEnter": null, "onReceive": null,
            "next": [{"condition": "true", "node": "done"}]},
        node("done", &[say("done")], None, json!([])),
        node("top", &[say("returning")], None, json!([{"condition": "true", "node": "#"}]))
    ]});
    write(
        data,
        &format!("{bot}/flows/main.flow.json"),
        &main.to_string(),
    );
    let ask = json!({"version": "0.0.1", "startNode": "entry", "nodes": [
        node("entry", &[say("question?")], Some(&[]), json!([
            {"condition": "event.payload.text === 'again'", "node": "##"},
            {"condition": "true", "node": "#"}]))
    ]});
    write(
        data,
        &format!("{bot}/flows/skills/ask.flow.json"),
        &ask.to_string(),
    );
}

#[test]
fn from_12_10_a_double_hash_return_plays_the_calling_node_again() {
    for (version, after_again) in [("12.10.5", "question?"), ("12.9.0", "done")] {
        let data = TempDir::new("bp12-jump");
        jump_bot(data.path(), version);
        let (code, out, err) = botd(&["check", "--data", data.path().to_str().unwrap()], &[]);
        assert_eq!((code, out.as_str()), (0, ""), "{version}: {err}");
        let server = Server::start(data.path(), &[]);
        let p = server.port;
        let bot = "bp12-jump";
        assert_eq!(
            responses(&converse(p, bot, "u1", "hi")),
            vec![text("sub or top?")]
        );
        assert_eq!(
            responses(&converse(p, bot, "u1", "sub")),
            vec![text("question?")]
        );
        // `#`: back on the skill-call node (its jump point used), whose transitions run.
        assert_eq!(
            responses(&converse(p, bot, "u1", "yes")),
            vec![text("done")]
        );
        converse(p, bot, "u1", "hi");
        assert_eq!(
            responses(&converse(p, bot, "u1", "sub")),
            vec![text("question?")]
        );
        // `##`: 12.10 plays the calling node again (the sub-flow is asked again); 12.9
        // reads it as `#`.
        assert_eq!(
            responses(&converse(p, bot, "u1", "again")),
            vec![text(after_again)],
            "{version}"
        );
    }
}

#[test]
fn from_12_4_returning_with_no_flow_to_return_to_stops_the_turn() {
    let data = TempDir::new("bp12-jump-top");
    jump_bot(data.path(), "12.10.5");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "bp12-jump";
    converse(p, bot, "u2", "hi");
    // Botpress 12.4 on: "no previous flow found": the turn stops on "top", nothing more is
    // said and no error flow plays; the next message plays "top" again.
    assert_eq!(
        responses(&converse(p, bot, "u2", "top")),
        vec![text("returning")]
    );
    assert_eq!(
        responses(&converse(p, bot, "u2", "anything")),
        vec![text("returning")]
    );
    assert!(
        !server.log().contains("transition to \"#\" failed"),
        "{}",
        server.log()
    );
}

#[test]
fn from_12_5_a_transition_with_no_destination_ends_the_flow() {
    // 12.5 on: `_endFlow` (context and temp cleared), so the next message starts over;
    // before, the turn stops and the next message meets the same transition again.
    for (version, after) in [("12.10.5", vec![text("sub or top?")]), ("12.2.0", vec![])] {
        let data = TempDir::new("bp12-red");
        jump_bot(data.path(), version);
        let server = Server::start(data.path(), &[]);
        let p = server.port;
        let bot = "bp12-jump";
        converse(p, bot, "u3", "hi");
        assert_eq!(
            responses(&converse(p, bot, "u3", "red")),
            vec![text("red port")]
        );
        assert_eq!(responses(&converse(p, bot, "u3", "hi")), after, "{version}");
    }
}
