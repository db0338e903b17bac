//! Acceptance of issue #11 on the five real bot folders of `../shared/botpress-bots/`: each is
//! copied into a temporary data folder at run time, served by the real binary, and played over
//! HTTP Converse. The expected transcripts were written from each bot's flow and content files
//! and Botpress's own code (choice, slot and API-call skills, the dialog engine of the bot's
//! Botpress version), not from botd's output.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

fn shared_bot(folder: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/botpress-bots")
        .join(folder)
}

/// A data folder holding a copy of one shared bot, under its folder name as bot id.
fn data_with(folder: &str) -> TempDir {
    let data = TempDir::new(folder);
    copy_dir(&shared_bot(folder), &data.path().join("bots").join(folder));
    data
}

fn say(port: u16, bot: &str, user: &str, text: &str) -> Vec<Value> {
    responses(&converse(port, bot, user, text))
}

/// `builtin_single-choice` for the `api` channel: typing, then the channel-web QuickReplies
/// wrapper with the choices' values upper-cased as payloads.
fn choice(text: &str, choices: &[(&str, &str)]) -> Vec<Value> {
    let replies: Vec<Value> = choices
        .iter()
        .map(|(title, value)| json!({"title": title, "payload": value.to_uppercase()}))
        .collect();
    vec![
        json!({"type": "typing", "value": true}),
        json!({"type": "custom", "module": "channel-web", "component": "QuickReplies",
            "quick_replies": replies, "wrapped": {"type": "text", "text": text, "typing": true}}),
    ]
}

fn texts_of(parts: &[&str]) -> Vec<Value> {
    parts.iter().flat_map(|t| typed_text(t)).collect()
}

fn check_has_no_errors(folder: &str) -> String {
    let data = data_with(folder);
    let (code, out, err) = botd(&["check", "--data", data.path().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(err.contains(&format!("{folder}: ok")), "{err}");
    for line in out.lines() {
        assert!(
            line.contains(": warning: "),
            "only warnings expected, got: {line}"
        );
        assert!(
            line.starts_with(&format!("{}/bots/{folder}/", data.path().display())),
            "a warning names its file: {line}"
        );
    }
    out
}

// ------------------------------------------------------------------ botd check

#[test]
fn check_loads_every_real_bot_without_errors() {
    for folder in [
        "tpl-welcome-bot",
        "tpl-small-talk",
        "pizza-bot",
        "talkativeguy",
    ] {
        let out = check_has_no_errors(folder);
        assert_eq!(out, "", "{folder} has nothing botd cannot run");
    }
    // bluebot ships a dropdown element no flow says: a warning naming the file, nothing else.
    let out = check_has_no_errors("bluebot");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 0, "dropdown is rendered by botd: {out}");
}

#[test]
fn check_warns_with_file_and_field_and_the_bot_still_runs() {
    let data = data_with("tpl-small-talk");
    let bot = data.path().join("bots/tpl-small-talk");
    // An entry without questions in the default language, an element of a type nobody says,
    // and a custom action: each a warning; the bot loads.
    write(
        &bot,
        "qna/fr_only.json",
        r#"{"id":"fr_only","data":{"questions":{"fr":["bonjour"]},"answers":{"fr":["salut"]},"action":"text","category":"global","enabled":true}}"#,
    );
    write(
        &bot,
        "content-elements/custom_widget.json",
        r#"[{"id":"custom_widget-1","formData":{"x":1}}]"#,
    );
    let (code, out, err) = botd(&["check", "--data", data.path().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("tpl-small-talk: ok (2 warnings)"), "{err}");
    let root = format!("{}/bots/tpl-small-talk", data.path().display());
    assert!(
        out.contains(&format!(
            "{root}/qna/fr_only.json: warning: data.questions has no question in the default language \"en\""
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{root}/content-elements/custom_widget.json: warning: content type \"custom_widget\" is not one botd can render"
        )),
        "{out}"
    );
    let server = Server::start(data.path(), &[]);
    assert_eq!(
        say(server.port, "tpl-small-talk", "u1", "Will you marry me?"),
        typed_text(
            "Absolutely, you are number 132 in line. I'll let you know when it's your turn!"
        )
    );
}

#[test]
fn broken_intent_entity_and_qna_files_are_warnings_and_the_bot_still_answers() {
    let data = data_with("tpl-welcome-bot");
    let bot = data.path().join("bots/tpl-welcome-bot");
    // A JavaScript regular expression botd's regex engine cannot compile (look-ahead), a file
    // that is not JSON, and utterances that are not strings.
    write(
        &bot,
        "entities/order_id.json",
        r#"{"id":"order_id","name":"order_id","type":"pattern","pattern":"(?=ORD)ORD-\\d+","occurences":[]}"#,
    );
    write(&bot, "intents/broken.json", "{\"name\": \"broken\",");
    write(&bot, "qna/broken.json", "{\"id\": \"broken\", \"data\": [");
    write(
        &bot,
        "intents/numbers.json",
        r#"{"name":"numbers","contexts":["global"],"utterances":[1,2,3],"slots":[]}"#,
    );
    let (code, out, err) = botd(&["check", "--data", data.path().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("tpl-welcome-bot: ok (4 warnings)"), "{err}");
    let root = format!("{}/bots/tpl-welcome-bot", data.path().display());
    assert!(
        out.lines().any(|l| l
            .starts_with(&format!("{root}/qna/broken.json: warning: invalid JSON"))
            && l.ends_with("; the entry is left out")),
        "{out}"
    );
    for (file, field) in [
        (
            "entities/order_id.json",
            "field `pattern` is not a valid regular expression",
        ),
        ("intents/broken.json", "invalid JSON"),
        (
            "intents/numbers.json",
            "field `utterances` must be an array of strings",
        ),
    ] {
        assert!(
            out.lines().any(
                |l| l.starts_with(&format!("{root}/{file}: warning: {field}"))
                    && l.ends_with("; the NLU is trained without it")
            ),
            "{file}: {out}"
        );
    }
    let server = Server::start(data.path(), &[]);
    assert_eq!(
        say(server.port, "tpl-welcome-bot", "u1", "Hello"),
        welcome_greeting()
    );
}

// ------------------------------------------------------------------ tpl-welcome-bot (11.9.7)

const WELCOME: &str = "Hi, I'm Welcome Bot! My task is to help you understand how Botpress works.";
const TOPICS: &str = "What would you like to know?";
const TOPIC_CHOICES: [(&str, &str); 2] = [
    ("What is a Context?", "context"),
    ("What is Bot Memory?", "memory"),
];
const ANIMALS: &str = "Okay, let's use a simple example. Let's talk about animals. Pick one.";
const ANIMAL_CHOICES: [(&str, &str); 2] = [("Monkey", "monkey"), ("Giraffe", "giraffe")];

fn welcome_greeting() -> Vec<Value> {
    let mut expected = typed_text(WELCOME);
    expected.extend(choice(TOPICS, &TOPIC_CHOICES));
    expected
}

#[test]
fn welcome_bot_memory_path() {
    let data = data_with("tpl-welcome-bot");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "tpl-welcome-bot";
    assert_eq!(say(p, bot, "m1", "Hello"), welcome_greeting());
    // "memory" is a keyword of the second choice.
    assert_eq!(
        say(p, bot, "m1", "memory"),
        texts_of(&[
            "Bot Memory is used by the bot to store information about a conversation. Here's an example.",
            "May I know your name please?"
        ])
    );
    let answer = say(p, bot, "m1", "Alice");
    assert_eq!(answer.len(), 6, "{answer:?}");
    // One of the greeting's three variations, then the first-time lines.
    let greeting = answer[1]["text"].as_str().unwrap();
    assert!(
        ["👋, Alice!", "Hello, Alice!", "Welcome to Botpress, Alice!"].contains(&greeting),
        "{greeting}"
    );
    assert_eq!(
        answer[2..].to_vec(),
        texts_of(&[
            "This is the first time we speak 🤖",
            "Try saying something like \"forget my name\"!"
        ])
    );
}

#[test]
fn welcome_bot_context_path_then_contextual_qna() {
    let data = data_with("tpl-welcome-bot");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "tpl-welcome-bot";
    assert_eq!(say(p, bot, "c1", "Hello"), welcome_greeting());
    // "1" picks the first choice by its number.
    let mut expected = typed_text("A bot could ask questions that are similar but have different meanings. To differentiate between the meanings of these questions, we use Contexts.");
    expected.extend(choice(ANIMALS, &ANIMAL_CHOICES));
    assert_eq!(say(p, bot, "c1", "1"), expected);
    assert_eq!(
        say(p, bot, "c1", "Monkey"),
        texts_of(&[
            "Please ask questions about that animal, like its life span or its habitat.",
            "Tell me if you need help!"
        ])
    );
    // The flow ended; the monkeys context (10 turns) makes its QnA answer.
    assert_eq!(
        say(p, bot, "c1", "Where do monkeys live?"),
        typed_text("Most monkey species can be found in the tropical rain forests of Asia, Africa, Europe and Central and South America.")
    );
}

#[test]
fn welcome_bot_invalid_choice_takes_the_failure_path_and_asks_again() {
    let data = data_with("tpl-welcome-bot");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "tpl-welcome-bot";
    assert_eq!(say(p, bot, "i1", "Hello"), welcome_greeting());
    // The 11.9.7 choice skill's retry condition is `count <= undefined`, always false: the
    // first wrong answer returns to the caller, whose failure transition says "catch" and
    // calls the skill again.
    for _ in 0..2 {
        let mut expected =
            typed_text("Ask me something thats included in the choices. Let's try again.");
        expected.extend(choice(TOPICS, &TOPIC_CHOICES));
        assert_eq!(say(p, bot, "i1", "bananas"), expected);
    }
    assert_eq!(
        say(p, bot, "i1", "What is Bot Memory?")[..2].to_vec(),
        typed_text(
            "Bot Memory is used by the bot to store information about a conversation. Here's an example."
        )
    );
}

// ------------------------------------------------------------------ tpl-small-talk (11.9.7)

#[test]
fn small_talk_answers_its_qna_with_empty_categories() {
    let data = data_with("tpl-small-talk");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "tpl-small-talk";
    // Every entry has `"category": ""`, trained in `global` as Botpress does.
    for (question, answer) in [
        (
            "I love you",
            "People tell me all the time that i'm a lovable little bot :-)",
        ),
        (
            "Will you marry me?",
            "Absolutely, you are number 132 in line. I'll let you know when it's your turn!",
        ),
    ] {
        assert_eq!(
            say(p, bot, "s1", question),
            typed_text(answer),
            "{question}"
        );
    }
    let entries = std::fs::read_dir(shared_bot(bot).join("qna"))
        .unwrap()
        .count();
    assert_eq!(entries, 17);
}

#[test]
fn small_talk_answers_every_entry_by_its_first_question() {
    let data = data_with("tpl-small-talk");
    let server = Server::start(data.path(), &[]);
    let bot = "tpl-small-talk";
    let mut paths: Vec<PathBuf> = std::fs::read_dir(shared_bot(bot).join("qna"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for (i, path) in paths.iter().enumerate() {
        let entry: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let question = entry["data"]["questions"][0].as_str().unwrap();
        let answers: Vec<Vec<Value>> = entry["data"]["answers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| typed_text(a.as_str().unwrap()))
            .collect();
        // A user per question: the same answer twice within 20 s is not repeated.
        let got = say(server.port, bot, &format!("st{i}"), question);
        assert!(
            answers.contains(&got),
            "{}: {question:?} got {got:?}",
            path.display()
        );
    }
}

// ------------------------------------------------------------------ pizza-bot (slot skill)

const PIZZA_HELLO: [&str; 2] = ["Hello there ! I am your pizza bot", "What you want ??"];
const SIZE_QUESTION: &str = "What size pizza you want ?";
const SIZES: [(&str, &str); 3] = [("Large", "large"), ("Medium", "medium"), ("Small", "small")];

#[test]
fn pizza_bot_choice_path() {
    let data = data_with("pizza-bot");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "pizza-bot";
    assert_eq!(say(p, bot, "p1", "hello"), texts_of(&PIZZA_HELLO));
    // provide_none → the size choice.
    assert_eq!(
        say(p, bot, "p1", "I want a pizza"),
        choice(SIZE_QUESTION, &SIZES)
    );
    // A wrong size: the skill returns at once (`<= undefined`), "Failed_size" says so and
    // the choice is asked again.
    let mut expected = typed_text("Please select from below options");
    expected.extend(choice(SIZE_QUESTION, &SIZES));
    assert_eq!(say(p, bot, "p1", "purple"), expected);
    assert_eq!(
        say(p, bot, "p1", "Large"),
        typed_text("What toppings you want ?")
    );
    assert_eq!(
        say(p, bot, "p1", "cheese"),
        texts_of(&["You want cheese pizza", "Pizza will be delivered soon"])
    );
}

#[test]
fn pizza_bot_slots_all_given_at_once() {
    let data = data_with("pizza-bot");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "pizza-bot";
    assert_eq!(say(p, bot, "p2", "hello"), texts_of(&PIZZA_HELLO));
    // provide_all fills both slots from NLU; both slot skills find them already extracted.
    assert_eq!(
        say(p, bot, "p2", "I want large cheese pizza"),
        typed_text("You want large cheese pizza")
    );
}

#[test]
fn pizza_bot_slot_asked_then_filled() {
    let data = data_with("pizza-bot");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "pizza-bot";
    assert_eq!(say(p, bot, "p3", "hello"), texts_of(&PIZZA_HELLO));
    // provide_size: the size slot is there, the topping skill asks (its slot takes `any`).
    let mut expected = texts_of(&["You want small  pizza"]);
    expected.extend(typed_text("What toppings u want ?"));
    assert_eq!(say(p, bot, "p3", "I want small pizza"), expected);
    assert_eq!(
        say(p, bot, "p3", "mushrooms"),
        texts_of(&["Good choice !", "You want small mushrooms pizza"])
    );
}

#[test]
fn pizza_bot_slot_not_found_after_its_retries() {
    let data = data_with("pizza-bot");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "pizza-bot";
    say(p, bot, "p4", "hello");
    let mut expected = texts_of(&["You want small  pizza"]);
    expected.extend(typed_text("What toppings u want ?"));
    assert_eq!(say(p, bot, "p4", "I want small pizza"), expected);
    // A number is an entity, and not `any`'s fallback: nothing fills the slot. slot_not_found
    // counts 1 → 2 → 3, and at 3 (retryAttempts) flags notExtracted, said on the next answer.
    for n in ["42", "43", "44"] {
        assert_eq!(
            say(p, bot, "p4", n),
            typed_text("Ur topping is invalid"),
            "{n}"
        );
    }
    assert_eq!(
        say(p, bot, "p4", "45"),
        typed_text("Not able to find what you are looking for i.e size, topping")
    );
    // END: the next message starts over.
    assert_eq!(say(p, bot, "p4", "hello"), texts_of(&PIZZA_HELLO));
}

// ------------------------------------------------------------------ talkativeguy (call_api)

/// A fake API on loopback: answers every request with `status` and `body`, and records each
/// request's first line and body.
struct FakeApi {
    port: u16,
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeApi {
    fn start(status: u16, body: &'static str) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(20) {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                reader.read_line(&mut first).unwrap();
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
                }
                let mut body_in = vec![0; length];
                reader.read_exact(&mut body_in).unwrap();
                seen.lock().unwrap().push((
                    first.trim().to_string(),
                    String::from_utf8_lossy(&body_in).to_string(),
                ));
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        FakeApi { port, requests }
    }
}

/// The bot's flow calls `http://localhost:8081/getAvailablePromo`; the test copy points that
/// URL at the fake API on loopback instead (the only change made to the bot).
fn talkativeguy_with_api(api_port: u16) -> TempDir {
    let data = data_with("talkativeguy");
    let skill = data
        .path()
        .join("bots/talkativeguy/flows/skills/CallAPI-1b496d.flow.json");
    let flow = std::fs::read_to_string(&skill).unwrap();
    assert!(flow.contains("http://localhost:8081/getAvailablePromo"));
    std::fs::write(
        &skill,
        flow.replace(
            "http://localhost:8081/",
            &format!("http://127.0.0.1:{api_port}/"),
        ),
    )
    .unwrap();
    data
}

#[test]
fn talkativeguy_calls_the_api_and_says_its_answer() {
    let api = FakeApi::start(200, r#"{"promo":"Two pizzas for one today"}"#);
    let data = talkativeguy_with_api(api.port);
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "talkativeguy";
    assert_eq!(
        say(p, bot, "t1", "hi"),
        typed_text("Hi There! May i get your name?")
    );
    assert_eq!(
        say(p, bot, "t1", "Joe"),
        typed_text("Howdy Joe !\nWe have some perks for you. do you wanna to check?")
    );
    assert_eq!(
        say(p, bot, "t1", "yes"),
        texts_of(&["Two pizzas for one today", "Goodbye Joe!"])
    );
    let requests = api.requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        vec![("GET /getAvailablePromo HTTP/1.1".to_string(), String::new())]
    );
}

#[test]
fn talkativeguy_declined_perks_says_goodbye_without_calling() {
    let api = FakeApi::start(200, r#"{"promo":"unused"}"#);
    let data = talkativeguy_with_api(api.port);
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "talkativeguy";
    say(p, bot, "t2", "hi");
    say(p, bot, "t2", "Ann");
    assert_eq!(say(p, bot, "t2", "no"), typed_text("Goodbye Ann!"));
    assert!(api.requests.lock().unwrap().is_empty());
}

#[test]
fn talkativeguy_failed_call_takes_the_failure_transition() {
    let api = FakeApi::start(500, r#"{"error":"down"}"#);
    let data = talkativeguy_with_api(api.port);
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "talkativeguy";
    say(p, bot, "t3", "hi");
    say(p, bot, "t3", "Joe");
    // "On failure" (`!temp.valid`) leads nowhere: Botpress stops there and says nothing.
    assert_eq!(say(p, bot, "t3", "yes"), Vec::<Value>::new());
    assert_eq!(api.requests.lock().unwrap().len(), 1);
    assert!(
        wait_until(std::time::Duration::from_secs(5), || server
            .log()
            .contains("Error: 500 while calling resource")),
        "{}",
        server.log()
    );
}

// ------------------------------------------------------------------ bluebot (Botpress 12.1.6)

const BLUE_WELCOME: &str =
    "Hello, welcome to ABC Insurance Virtual Assistant. How can I assist you today? ";
const BLUE_TOPICS: &str = "Are you here with issues regarding";
const BLUE_TOPIC_CHOICES: [(&str, &str); 2] =
    [(" Health insurance", "1"), ("Vehicle insurance", "2")];
const BLUE_HEALTH: &str = "In our new health policy we covered all medical-day care treatment such as skin treatment  and Lasik surgery. The policy  covers a time period of 5 years. ";
const BLUE_HEALTH_CHOICES: [(&str, &str); 4] = [
    ("Benefits", "1"),
    ("Documents Required", "2"),
    ("Insurance renuwal ", "3"),
    ("Back", "View back."),
];
const BLUE_QNA_HINT: &str = "If you have any  Q&A please ask. Or type reboot to restart.";

/// "hi" is a QnA question whose answer is a content element (`#!builtin_text-fMkCt_`, ":-)")
/// and which redirects to main.flow.json's entry.
fn blue_greeting() -> Vec<Value> {
    let mut expected = texts_of(&[":-)", BLUE_WELCOME]);
    expected.extend(choice(BLUE_TOPICS, &BLUE_TOPIC_CHOICES));
    expected
}

fn card(title: &str, subtitle: &str) -> Value {
    json!({"title": title, "picture": null, "subtitle": subtitle, "buttons": []})
}

#[test]
fn bluebot_health_path_through_nested_choices() {
    let data = data_with("bluebot");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "bluebot";
    assert_eq!(say(p, bot, "b1", "hi"), blue_greeting());
    assert_eq!(
        say(p, bot, "b1", "1"),
        choice(BLUE_HEALTH, &BLUE_HEALTH_CHOICES)
    );
    let mut expected = vec![
        json!({"type": "typing", "value": true}),
        json!({"text": " ", "type": "carousel", "elements": [
            card("Cummilative Benifits", "An additional sum insured of 10% of annual sum insuured provided on each renewal for every claim-free year upto a maximum of 50%."),
            card("Health Checkup cupon", "1 cupon per indiviual policy and 2 cupon per floater policy will be offered."),
            card("Tax Benifits", "Income tax exception for ₹1,00,000"),
        ]}),
    ];
    expected.extend(typed_text(BLUE_QNA_HINT));
    assert_eq!(say(p, bot, "b1", "Benefits"), expected);
}

#[test]
fn bluebot_vehicle_path() {
    let data = data_with("bluebot");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "bluebot";
    assert_eq!(say(p, bot, "b2", "hi"), blue_greeting());
    let mut expected = vec![json!({"text": " ", "type": "carousel", "elements": [
        card("Vehicle insurance", "Get your wheels on the road without any worries. We introduced Vehicle insurance policy  thus we understand how precise is your life. "),
    ]})];
    expected.extend(choice(
        "Vehicle Insurance",
        &[
            ("Register", "Join  our Family to enjoy full previllages."),
            ("Claim", "Value for your lose."),
            ("Benefits", "Income tax exception for upto ₹1,00,000"),
        ],
    ));
    assert_eq!(say(p, bot, "b2", "Vehicle insurance"), expected);
    assert_eq!(
        say(p, bot, "b2", "Claim"),
        typed_text("Driving licence copy, Original FIR copy, original keys.")
    );
}

#[test]
fn bluebot_invalid_answers_then_failure_after_three() {
    let data = data_with("bluebot");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "bluebot";
    assert_eq!(say(p, bot, "b3", "hi"), blue_greeting());
    // The 12 choice skill's "sorry" node says nothing and waits again; the third invalid
    // answer meets `Number(count) >= Number(3)` and returns to the failure transition.
    assert_eq!(say(p, bot, "b3", "zebra"), Vec::<Value>::new());
    assert_eq!(say(p, bot, "b3", "zebra"), Vec::<Value>::new());
    assert_eq!(say(p, bot, "b3", "zebra"), typed_text("Select an option."));
}

#[test]
fn bluebot_qna_answer_then_redirect_to_the_choice() {
    let data = data_with("bluebot");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "bluebot";
    let mut expected = typed_text("Currently there are two types of Insurance available ");
    expected.extend(choice(BLUE_TOPICS, &BLUE_TOPIC_CHOICES));
    assert_eq!(
        say(p, bot, "b4", "What are the insurance available?"),
        expected
    );
}

// ------------------------------------------------------------------ run-time failures

#[test]
fn saying_an_unknown_type_or_calling_a_missing_action_is_logged_and_the_turn_saved() {
    let data = TempDir::new("runtime-failures");
    let d = data.path();
    write(
        d,
        "bots/broken-run/bot.config.json",
        r#"{"name":"b","defaultLanguage":"en","languages":["en"]}"#,
    );
    write(
        d,
        "bots/broken-run/content-elements/custom_widget.json",
        r#"[{"id":"custom_widget-1","formData":{"x":1}}]"#,
    );
    write(
        d,
        "bots/broken-run/flows/main.flow.json",
        r#"{"version":"0.0.1","startNode":"entry","nodes":[
            {"id":"n0001","name":"entry","onEnter":["say #builtin_text {\"text\":\"pick\"}"],"onReceive":[],"next":[
                {"condition":"event.payload.text === 'widget'","node":"widget"},
                {"condition":"true","node":"custom"}]},
            {"id":"n0002","name":"widget","onEnter":["say #!custom_widget-1"],"onReceive":null,"next":[]},
            {"id":"n0003","name":"custom","onEnter":["myModule/doStuff {}"],"onReceive":null,"next":[]}
        ]}"#,
    );
    let (code, out, err) = botd(&["check", "--data", d.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "only warnings: {out}\n{err}");
    let flow = format!("{}/bots/broken-run/flows/main.flow.json", d.display());
    assert!(
        out.contains(&format!("{flow}: warning: node \"widget\": content element \"custom_widget-1\" is a \"custom_widget\", which botd cannot render")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{flow}: warning: node \"custom\": action \"myModule/doStuff\" is custom JavaScript"
        )),
        "{out}"
    );
    let server = Server::start(d, &[]);
    // Botpress's dialog engine catches a failing instruction, logs it, and saves the turn:
    // the user gets nothing more, and the conversation stays on the failing node, whose
    // instructions run again on the next message.
    for (user, answer, node) in [("w", "widget", "widget"), ("c", "other", "custom")] {
        converse(server.port, "broken-run", user, "hi");
        assert_eq!(
            say(server.port, "broken-run", user, answer),
            Vec::<Value>::new(),
            "{node}"
        );
        assert_eq!(
            say(server.port, "broken-run", user, "again"),
            Vec::<Value>::new(),
            "{node}: still on the failing node, not back at the start"
        );
        let needle = format!("flows/main.flow.json, node \"{node}\"");
        assert!(
            wait_until(std::time::Duration::from_secs(5), || server
                .log()
                .contains(&needle)),
            "{needle} in {}",
            server.log()
        );
    }
}

#[test]
fn a_slow_api_call_does_not_hold_up_other_conversations() {
    // The fake API tells the test a request arrived, then answers only when released.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let api_port = listener.local_addr().unwrap().port();
    let (arrived_tx, arrived) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Some(Ok(mut stream)) = listener.incoming().next() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = arrived_tx.send(());
            let _ = released.recv_timeout(std::time::Duration::from_secs(20));
            let body = r#"{"promo":"late"}"#;
            let _ = stream.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    .as_bytes(),
            );
        }
    });
    let data = talkativeguy_with_api(api_port);
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "talkativeguy";
    say(p, bot, "slow", "hi");
    say(p, bot, "slow", "Joe");
    let pending = std::thread::spawn(move || say(p, bot, "slow", "yes"));
    arrived
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the API was called");
    // While that turn waits on the API, another user talks to the same bot.
    assert_eq!(
        say(p, bot, "other", "hi"),
        typed_text("Hi There! May i get your name?")
    );
    assert!(!pending.is_finished(), "the slow turn is still waiting");
    release.send(()).unwrap();
    assert_eq!(pending.join().unwrap(), texts_of(&["late", "Goodbye Joe!"]));
}

#[test]
fn bluebot_every_second_level_choice() {
    let data = data_with("bluebot");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let bot = "bluebot";
    // Health: documents (2) and renewal (3, a card without typing).
    for (user, answer, expected) in [
        (
            "h2",
            "2",
            texts_of(&[
                "Driving licence copy, Original FIR copy, original keys.",
                BLUE_QNA_HINT,
            ]),
        ),
        // (Its keyword is "Insurance renuwal " with a trailing space: only the number works.)
        ("h3", "3", {
            let mut e = vec![json!({"text": " ", "type": "carousel", "elements": [
                card("Insurance Renewal", "Please login to your account.")]})];
            e.extend(typed_text(BLUE_QNA_HINT));
            e
        }),
    ] {
        say(p, bot, user, "hi");
        say(p, bot, user, "1");
        assert_eq!(say(p, bot, user, answer), expected, "{answer}");
    }
    // "Back" is a valid choice ("View back.") that no transition of the calling node takes:
    // its failure transition leads nowhere, so Botpress stops there, says nothing, and meets
    // the same transition on every later message.
    say(p, bot, "h4", "hi");
    say(p, bot, "h4", "1");
    assert_eq!(say(p, bot, "h4", "Back"), Vec::<Value>::new());
    assert_eq!(say(p, bot, "h4", "hi"), Vec::<Value>::new());

    // Vehicle: register (a carousel whose buttons have no text) and benefits (cards without
    // subtitles): the keys JavaScript has as undefined are left out.
    let register = vec![
        json!({"type": "typing", "value": true}),
        json!({"text": " ", "type": "carousel", "elements": [{
            "title": "Join  Our Community", "picture": null,
            "subtitle": "Create a account and enjoy all privellages.",
            "buttons": [{"type": "say_something", "title": "Free Trial for 15 days"},
                        {"type": "say_something", "title": "Premium Mebership"}]}]}),
    ];
    let benefits = vec![
        json!({"type": "typing", "value": true}),
        json!({"text": " ", "type": "carousel", "elements": [
            {"title": "50,000 for fire accidents", "picture": null, "buttons": []},
            {"title": "30,000 for theft", "picture": null, "buttons": []}]}),
    ];
    for (user, answer, expected) in [("v1", "Register", register), ("v3", "3", benefits)] {
        say(p, bot, user, "hi");
        say(p, bot, user, "2");
        assert_eq!(say(p, bot, user, answer), expected, "{answer}");
    }
}

// ------------------------------------------------------------------ builtin/wait

#[test]
fn wait_delays_the_rest_of_the_turn_and_a_wait_past_the_deadline_times_out() {
    let data = TempDir::new("wait-bot");
    let d = data.path();
    write(
        d,
        "global/botpress.config.json",
        r#"{"converse": {"timeout": "2s"}}"#,
    );
    write(
        d,
        "bots/wait-bot/bot.config.json",
        r#"{"name":"w","version":"12.1.6","defaultLanguage":"en","languages":["en"]}"#,
    );
    // Botpress: `await new Promise(resolve => setTimeout(resolve, args.delay || 1000))`.
    write(
        d,
        "bots/wait-bot/flows/main.flow.json",
        r#"{"version":"0.0.1","startNode":"entry","nodes":[
            {"id":"n0001","name":"entry","onEnter":[],"onReceive":[],"next":[
                {"condition":"event.payload.text === 'short'","node":"short"},
                {"condition":"event.payload.text === 'long'","node":"long"},
                {"condition":"true","node":"entry"}]},
            {"id":"n0002","name":"short","onEnter":[
                "say #builtin_text {\"text\":\"one\"}",
                "builtin/wait {\"delay\":\"400\"}",
                "builtin/setVariable {\"type\":\"user\",\"name\":\"waited\",\"value\":\"yes\"}",
                "say #builtin_text {\"text\":\"two {{user.waited}}\"}"],"onReceive":null,"next":[]},
            {"id":"n0003","name":"long","onEnter":[
                "builtin/setVariable {\"type\":\"user\",\"name\":\"long\",\"value\":\"yes\"}",
                "builtin/wait {\"delay\":5000}",
                "say #builtin_text {\"text\":\"never\"}"],"onReceive":null,"next":[]}
        ]}"#,
    );
    let server = Server::start(d, &[]);
    for user in ["u1", "u2"] {
        assert_eq!(
            say(server.port, "wait-bot", user, "hi"),
            Vec::<Value>::new()
        );
    }
    let started = std::time::Instant::now();
    let plain = |t: &str| json!({"type": "text", "markdown": true, "text": t});
    assert_eq!(
        say(server.port, "wait-bot", "u1", "short"),
        vec![plain("one"), plain("two yes")]
    );
    // A lower bound only: the turn cannot have answered before its wait was over.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    // A wait longer than converse.timeout: the turn times out, and nothing of it is saved.
    let answer = converse(server.port, "wait-bot", "u2", "long");
    assert_eq!(answer.status, 504, "{}", answer.text());
    let token = token(d, &[]);
    let state = state_after(server.port, "wait-bot", "u2", "hello", &token);
    assert_eq!(state["user"], json!({}), "{state}");
}
