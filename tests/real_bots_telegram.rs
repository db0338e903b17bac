//! A real Botpress 12 bot (`../shared/botpress-bots/bluebot`) played over Telegram through a
//! fake Bot API on loopback: QnA answers that are content elements, single choices as reply
//! keyboards and carousels as one message per card, the way Botpress's Telegram renderers
//! show them (web renderers' text, quick replies as a keyboard).

mod common;

use common::fake_bot_api::FakeBotApi;
use common::*;
use serde_json::{json, Value};
use std::path::Path;

const TOKEN: &str = "555:BLUEtoken";

fn bluebot_on_telegram(data: &Path, fake: &FakeBotApi) {
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/botpress-bots/bluebot"),
        &data.join("bots/bluebot"),
    );
    write(
        data,
        "global/config/channel-telegram.json",
        &json!({"apiBase": format!("http://127.0.0.1:{}", fake.port), "pollTimeout": "1s", "typingDelay": false}).to_string(),
    );
    write(
        data,
        "bots/bluebot/config/channel-telegram.json",
        &json!({"enabled": true, "botToken": TOKEN}).to_string(),
    );
}

fn message(text: &str) -> (String, Value) {
    (
        "sendMessage".into(),
        json!({"chat_id": 77, "text": text, "parse_mode": "Markdown"}),
    )
}

fn keyboard_message(text: &str, buttons: &[&str]) -> (String, Value) {
    let row: Vec<Value> = buttons.iter().map(|b| json!({ "text": b })).collect();
    let (method, mut params) = message(text);
    params["reply_markup"] =
        json!({"keyboard": [row], "one_time_keyboard": true, "resize_keyboard": true});
    (method, params)
}

#[test]
fn bluebot_plays_over_telegram() {
    let fake = FakeBotApi::start();
    let data = TempDir::new("bluebot-telegram");
    bluebot_on_telegram(data.path(), &fake);
    let server = Server::start(data.path(), &[]);

    fake.text(77, "hi");
    let greeting = fake.wait_sent(77, 0, 3);
    assert_eq!(
        greeting,
        vec![
            message(":-)"),
            message(
                "Hello, welcome to ABC Insurance Virtual Assistant. How can I assist you today? "
            ),
            keyboard_message(
                "Are you here with issues regarding",
                &[" Health insurance", "Vehicle insurance"]
            ),
        ],
        "{}",
        server.log()
    );

    fake.text(77, "1");
    let health = fake.wait_sent(77, 3, 1);
    assert_eq!(
        health,
        vec![keyboard_message(
            "In our new health policy we covered all medical-day care treatment such as skin treatment  and Lasik surgery. The policy  covers a time period of 5 years. ",
            &["Benefits", "Documents Required", "Insurance renuwal ", "Back"]
        )]
    );

    // A carousel of three cards without pictures or buttons: one message per card, the title
    // in bold, then the closing text.
    fake.text(77, "Benefits");
    let cards = fake.wait_sent(77, 4, 4);
    assert_eq!(
        cards,
        vec![
            message("*Cummilative Benifits*\nAn additional sum insured of 10% of annual sum insuured provided on each renewal for every claim-free year upto a maximum of 50%."),
            message("*Health Checkup cupon*\n1 cupon per indiviual policy and 2 cupon per floater policy will be offered."),
            message("*Tax Benifits*\nIncome tax exception for ₹1,00,000"),
            message("If you have any  Q&A please ask. Or type reboot to restart."),
        ]
    );
}
