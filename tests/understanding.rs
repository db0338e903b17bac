//! Acceptance points that need NLU (intents and QnA). They must pass once NLU lands; before
//! that, the only allowed failure is "intent not recognised".

mod common;

use common::*;
use serde_json::{json, Value};

const ASK_NAME: &str = "May I know your name please?";
const FORGOTTEN: &str = "Alright, I have forgotten your name.";
const HOW_IT_WORKS: &str = "(To see how this works, double-click anywhere on the flow and go to the \"Transitions\" panel)";

fn pair(a: &str, b: &str) -> Vec<Value> {
    let mut v = typed_text(a);
    v.extend(typed_text(b));
    v
}

/// The NLU intent of `text` for `bot`, from the secured route (a turn of its own user).
fn intent_of(port: u16, bot: &str, text: &str, contexts: &[&str], token: &str) -> String {
    let body = json!({"type": "text", "text": text, "includedContexts": contexts});
    let a = secured(port, bot, "nlu-probe", &body, "nlu", token);
    a.json()["nlu"]["intent"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn welcome_bot_steps_4_and_5_forget_my_name() {
    let data = data_copy("und-wb");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let t = token(data.path(), &[]);
    assert_eq!(
        intent_of(p, "welcome-bot", "forget my name", &["global"], &t),
        "forget",
        "intent not recognised"
    );

    assert_eq!(
        responses(&converse(p, "welcome-bot", "u42", "hi")),
        typed_text(ASK_NAME)
    );
    assert_eq!(
        responses(&converse(p, "welcome-bot", "u42", "Sylvain")).len(),
        6
    );
    assert_eq!(
        texts(&json!({"responses": responses(&converse(p, "welcome-bot", "u42", "hello"))}))[1],
        "We already spoke 1 times!"
    );
    // 4. forget my name → catchAll → forget-my-name; the nickname is deleted.
    let a = secured(
        p,
        "welcome-bot",
        "u42",
        &json!({"type": "text", "text": "forget my name"}),
        "state",
        &t,
    );
    assert_eq!(a.json()["responses"], json!(pair(FORGOTTEN, HOW_IT_WORKS)));
    assert_eq!(a.json()["state"]["user"], json!({}));
    assert_eq!(a.json()["state"]["context"], json!({}));
    // 5. The next message asks the name again.
    assert_eq!(
        responses(&converse(p, "welcome-bot", "u42", "hello again")),
        typed_text(ASK_NAME)
    );

    // A first message classified as `forget` goes straight to forget-my-name (catchAll first).
    assert_eq!(
        responses(&converse(p, "welcome-bot", "u43", "forget my name")),
        pair(FORGOTTEN, HOW_IT_WORKS)
    );
}

fn bot_1181(tag: &str) -> TempDir {
    let data = TempDir::new(tag);
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bots/welcome-bot-1181");
    copy_dir(&src, &data.path().join("bots/welcome-bot-1181"));
    data
}

#[test]
fn welcome_bot_1181_qna_redirect_and_text_answers() {
    let data = bot_1181("und-1181");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let t = token(data.path(), &[]);
    let bot = "welcome-bot-1181";
    assert_eq!(
        intent_of(p, bot, "forget my name", &["memory"], &t),
        "__qna__xr9uskkhv0_forget_my_name",
        "intent not recognised"
    );

    // A redirect QnA jumps to memory.flow.json#forget-my-name.
    let body = json!({"text": "forget my name", "includedContexts": ["memory"]});
    let a = secured(p, bot, "q1", &body, "decision,state", &t);
    assert_eq!(a.json()["responses"], json!(pair(FORGOTTEN, HOW_IT_WORKS)));
    assert_eq!(a.json()["state"]["context"], json!({}));

    // A text QnA answers outside a flow; the decision names it.
    let body = json!({"text": "Where do monkeys live?", "includedContexts": ["monkeys"]});
    let a = secured(p, bot, "q2", &body, "decision", &t);
    assert_eq!(
        a.json()["responses"],
        json!(typed_text("Most monkey species can be found in the tropical rain forests of Asia, Africa, Europe and Central and South America."))
    );
    assert_eq!(a.json()["decision"]["source"], "qna");
    assert_eq!(
        a.json()["decision"]["sourceDetails"],
        "__qna__pgedex03mc_where_do_monkeys_live"
    );
    assert_eq!(a.json()["decision"]["decision"]["status"], "elected");
    // The QnA answer did not start the flow: the next message gets the welcome.
    let r = responses(&converse(p, bot, "q2", "hi"));
    assert_eq!(
        r[1]["text"],
        "Hi, I'm Welcome Bot! My task is to help you understand how Botpress works."
    );

    // Inside a flow, QnA is not elected (the choice skill gets the message instead).
    let body = json!({"text": "Where do monkeys live?", "includedContexts": ["monkeys"]});
    let a = secured(p, bot, "q2", &body, "decision", &t);
    assert_eq!(a.json()["decision"]["source"], "decisionEngine");
}

#[test]
fn welcome_bot_nlu_names_the_intents() {
    let data = data_copy("und-intents");
    let server = Server::start(data.path(), &[]);
    let t = token(data.path(), &[]);
    let p = server.port;
    assert_eq!(
        intent_of(p, "welcome-bot", "hi bot", &["global"], &t),
        "hello"
    );
    assert_eq!(
        intent_of(p, "welcome-bot", "please forget my name", &["global"], &t),
        "forget"
    );
    // A name is neither a greeting nor a request to forget.
    assert_eq!(
        intent_of(p, "welcome-bot", "Sylvain", &["global"], &t),
        "none"
    );
    let body = json!({"type": "text", "text": "hi bot"});
    let nlu = secured(p, "welcome-bot", "nlu-shape", &body, "nlu", &t).json()["nlu"].clone();
    assert_eq!(nlu["intent"]["context"], "global");
    assert!(nlu["intent"]["confidence"].as_f64().unwrap() >= 0.7);
    assert_eq!(nlu["intents"][0]["name"], "hello");
    assert_eq!(nlu["includedContexts"], json!(["global"]));
    assert_eq!(nlu["errored"], false);
}

/// The animal QnA is answered only once the flow has put the user in the `monkeys` context.
#[test]
fn welcome_bot_1181_animal_qna_only_in_its_context() {
    let data = bot_1181("und-animals");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let t = token(data.path(), &[]);
    let bot = "welcome-bot-1181";
    let question = json!({"type": "text", "text": "Where do monkeys live?"});
    let monkeys = "__qna__pgedex03mc_where_do_monkeys_live";

    // Outside the context: no QnA answer, the flow starts instead.
    let a = secured(p, bot, "stranger", &question, "decision,nlu", &t).json();
    assert_ne!(a["decision"]["sourceDetails"], monkeys);
    assert_eq!(
        a["responses"][1]["text"],
        "Hi, I'm Welcome Bot! My task is to help you understand how Botpress works."
    );

    // Topic choice → contexts → animal choice → monkey: the flow appends the monkeys context.
    let user = "zoo-visitor";
    let first = responses(&converse(p, bot, user, "hi"));
    assert_eq!(first[3]["component"], "QuickReplies");
    let topic = responses(&converse(p, bot, user, "context"));
    let animal_question = topic.iter().any(|r| {
        r["wrapped"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Let's talk about animals"))
    });
    assert!(animal_question, "the animal choice is asked: {topic:?}");
    converse(p, bot, user, "monkey");
    let a = secured(p, bot, user, &question, "decision,state", &t).json();
    assert_eq!(a["decision"]["sourceDetails"], monkeys);
    assert_eq!(a["decision"]["decision"]["status"], "elected");
    assert_eq!(
        a["responses"],
        json!(typed_text("Most monkey species can be found in the tropical rain forests of Asia, Africa, Europe and Central and South America."))
    );
    let contexts: Vec<&str> = a["state"]["session"]["nluContexts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["context"].as_str())
        .collect();
    assert!(contexts.contains(&"monkeys"), "{contexts:?}");
}

/// A bot taught only banking, written into the test's own data folder.
fn banking_bot(tag: &str) -> TempDir {
    let data = TempDir::new(tag);
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bots/flowtest");
    let bot = data.path().join("bots/flowtest");
    copy_dir(&src, &bot);
    let intents: [(&str, &[&str]); 4] = [
        (
            "check_balance",
            &[
                "what is my account balance",
                "how much money do i have",
                "show me my balance",
                "how much is in my checking account",
                "what's left in my savings account",
                "tell me my current balance",
                "balance please",
                "how much cash is in my bank account",
                "can you check my balance",
                "what is the balance on my account",
                "do i have enough money in my account",
                "check the balance of my savings",
            ],
        ),
        (
            "transfer_money",
            &[
                "transfer 50 dollars to my savings",
                "send money to my mother",
                "move money from checking to savings",
                "i want to wire money to john",
                "make a transfer to my landlord",
                "send 100 euros to alice",
                "pay my friend 20 dollars",
                "transfer funds between my accounts",
                "can you send money to my brother",
                "i need to transfer money",
                "wire 300 dollars to this account",
                "move 40 dollars into checking",
            ],
        ),
        (
            "lost_card",
            &[
                "i lost my credit card",
                "my debit card was stolen",
                "block my card please",
                "i can't find my bank card",
                "someone stole my wallet with my card",
                "freeze my credit card",
                "cancel my lost card",
                "my card is missing",
                "report a stolen card",
                "i need a replacement card, mine is gone",
                "lock my debit card",
                "my visa card got stolen",
            ],
        ),
        (
            "opening_hours",
            &[
                "when is the bank open",
                "what are your opening hours",
                "is the branch open on saturday",
                "what time does the bank close",
                "are you open on sundays",
                "when does the branch open tomorrow",
                "opening times of the bank",
                "until what time is the branch open",
                "is the bank open today",
                "what hours is the office open",
                "when can i visit the branch",
                "does the bank close at lunch",
            ],
        ),
    ];
    for (name, utterances) in intents {
        let body =
            json!({"name": name, "contexts": ["global"], "utterances": utterances, "slots": []});
        write(&bot, &format!("intents/{name}.json"), &body.to_string());
    }
    data
}

/// Out-of-scope detection: messages from other domains get `none`, with no `none` examples
/// written by the bot's author; banking messages the bot never saw keep their intents.
#[test]
fn a_one_domain_bot_answers_none_to_other_domains() {
    let data = banking_bot("und-scope");
    let server = Server::start(data.path(), &[]);
    let t = token(data.path(), &[]);
    let p = server.port;
    for (text, want) in [
        ("how much money is in my account", "check_balance"),
        ("please send 25 dollars to my sister", "transfer_money"),
        ("my card has been stolen", "lost_card"),
        ("what time do you open on monday", "opening_hours"),
    ] {
        assert_eq!(
            intent_of(p, "flowtest", text, &["global"], &t),
            want,
            "{text}"
        );
    }
    for text in [
        "what is a good recipe for lasagna",
        "who won the football game last night",
        "play some jazz music",
        "how tall is mount everest",
        "will it rain in paris tomorrow",
        "tell me a joke about cats",
    ] {
        assert_eq!(
            intent_of(p, "flowtest", text, &["global"], &t),
            "none",
            "{text}"
        );
    }
    // Botpress's fields keep their shape: `intents` still ranks the bot's intents with their
    // confidences, only `intent` says `none`.
    let body = json!({"type": "text", "text": "play some jazz music"});
    let nlu = secured(p, "flowtest", "nlu-shape", &body, "nlu", &t).json()["nlu"].clone();
    assert_eq!(nlu["intent"]["name"], "none");
    let names: Vec<&str> = nlu["intents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert!(names.contains(&"check_balance"), "{names:?}");
    assert!(nlu["intents"][0]["confidence"].as_f64().is_some());
}
