//! One element of each standard content type (`tests/bots/content-types`, a Botpress 12.1.6
//! folder), said on each of the three channels. Expected values come from Botpress 12's own
//! renderers (`modules/builtin/src/content-types/*.js`, the extensions module's dropdown, the
//! Telegram channel's client) and, for what a channel has no message for, from the
//! degradations the README documents (text and quick replies, never nothing):
//!
//! - Converse renders as Botpress's `api` channel: the web renderers of 12.1 (a choice wrapped
//!   as channel-web's QuickReplies), and the Botpress 12 media and location types as their
//!   universal payloads (`extractPayload`: the type without `builtin_` and the form data).
//! - Messenger gets the Send API bodies of Botpress's `renderMessenger`; a dropdown becomes quick
//!   replies, a media title a text before the attachment, a location its title, address and map
//!   link.
//! - Telegram gets the Bot API calls of Botpress's Telegram client (text with Markdown, choices
//!   as a reply keyboard, a card's picture then its bold title and inline buttons); one message
//!   per carousel card, dropdowns as a reply keyboard, media and places as the Bot API's own
//!   messages, with the title as caption.
//!
//! One server per channel plays every type in turn; the flow's start node waits, and its
//! transitions on `event.payload.text === '<type>'` say that type's element.

mod common;

use common::fake_bot_api::FakeBotApi;
use common::fake_graph::{post_text, FakeGraph};
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const BOT: &str = "content-types";

/// Every content type the bot has, in the order the tests play them.
const TYPES: [&str; 11] = [
    "builtin_text",
    "builtin_image",
    "builtin_card",
    "builtin_carousel",
    "builtin_single-choice",
    "builtin_action-button",
    "dropdown",
    "builtin_video",
    "builtin_audio",
    "builtin_file",
    "builtin_location",
];

/// A data folder holding only the content-types bot.
fn data_with_bot(tag: &str) -> TempDir {
    let data = TempDir::new(tag);
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bots/content-types"),
        &data.path().join("bots").join(BOT),
    );
    data
}

/// What Botpress's `api` channel answers for each type's element.
fn converse_expected(content_type: &str) -> Vec<Value> {
    match content_type {
        "builtin_text" => vec![json!({"type": "text", "markdown": true, "text": "Plain words"})],
        // 12.1 added the title to the web renderer's file payload.
        "builtin_image" => vec![
            json!({"type": "file", "title": "A cat", "url": "https://cdn.example.com/cat.png"}),
        ],
        "builtin_card" => vec![json!({"text": " ", "type": "carousel", "elements": [{
            "title": "Blue card", "picture": "https://cdn.example.com/card.jpg",
            "subtitle": "Card subtitle", "buttons": [
                {"type": "open_url", "title": "Site", "url": "https://example.org/page"},
                {"type": "postback", "title": "Pick", "payload": "PICKED"}]}]})],
        // No image: `picture: null`.
        "builtin_carousel" => vec![json!({"text": " ", "type": "carousel", "elements": [
            {"title": "First", "picture": null, "subtitle": "One",
             "buttons": [{"type": "open_url", "title": "Read", "url": "https://example.org/one"}]},
            {"title": "Second", "picture": null, "subtitle": "Two",
             "buttons": [{"type": "postback", "title": "Go", "payload": "GO"}]}]})],
        // Values upper-cased as payloads; channel-web wraps quick replies for `api`.
        "builtin_single-choice" => vec![json!({"type": "custom", "module": "channel-web",
            "component": "QuickReplies",
            "quick_replies": [{"title": "Red", "payload": "RED"}, {"title": "Blue", "payload": "BLUE"}],
            "wrapped": {"type": "text", "text": "Pick one"}})],
        // An action button renders as nothing: only the text said after it arrives.
        "builtin_action-button" => {
            vec![json!({"type": "text", "markdown": true, "text": "After the button"})]
        }
        // Keys the element does not have are undefined in JavaScript: left out.
        "dropdown" => vec![json!({"type": "custom", "module": "extensions",
            "component": "Dropdown", "message": "Choose a size", "buttonText": "Go",
            "options": [{"label": "Small", "value": "s"}, {"label": "Large", "value": "l"}]})],
        "builtin_video" => vec![
            json!({"type": "video", "video": "https://cdn.example.com/tour.mp4", "title": "Tour"}),
        ],
        "builtin_audio" => vec![
            json!({"type": "audio", "audio": "https://cdn.example.com/song.mp3", "title": "Song"}),
        ],
        "builtin_file" => vec![
            json!({"type": "file", "file": "https://cdn.example.com/terms.pdf", "title": "Terms"}),
        ],
        "builtin_location" => vec![json!({"type": "location", "latitude": 45.5,
            "longitude": -73.6, "address": "1 Main St", "title": "Office"})],
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn every_content_type_over_converse() {
    let data = data_with_bot("ctypes-converse");
    let server = Server::start(data.path(), &[]);
    // The first message starts the flow, whose start node waits.
    assert_eq!(
        responses(&converse(server.port, BOT, "u1", "hi")),
        Vec::<Value>::new(),
        "{}",
        server.log()
    );
    for content_type in TYPES {
        assert_eq!(
            responses(&converse(server.port, BOT, "u1", content_type)),
            converse_expected(content_type),
            "{content_type}: {}",
            server.log()
        );
    }
}

const SECRET: &str = "ctypes-secret";
const PAGE: &str = "PCTYPES";

/// The Send API messages of Botpress 12's `renderMessenger`, and botd's degradations.
fn messenger_expected(content_type: &str) -> Vec<Value> {
    match content_type {
        "builtin_text" => vec![json!({"text": "Plain words"})],
        // Botpress 12 sends images as image attachments (the title is not shown).
        "builtin_image" => vec![json!({"attachment": {"type": "image", "payload": {
            "is_reusable": true, "url": "https://cdn.example.com/cat.png"}}})],
        "builtin_card" => vec![json!({"attachment": {"type": "template", "payload": {
            "template_type": "generic", "elements": [{
                "title": "Blue card", "image_url": "https://cdn.example.com/card.jpg",
                "subtitle": "Card subtitle", "buttons": [
                    {"type": "web_url", "url": "https://example.org/page", "title": "Site"},
                    {"type": "postback", "title": "Pick", "payload": "PICKED"}]}]}}})],
        "builtin_carousel" => vec![json!({"attachment": {"type": "template", "payload": {
            "template_type": "generic", "elements": [
                {"title": "First", "image_url": null, "subtitle": "One", "buttons": [
                    {"type": "web_url", "url": "https://example.org/one", "title": "Read"}]},
                {"title": "Second", "image_url": null, "subtitle": "Two", "buttons": [
                    {"type": "postback", "title": "Go", "payload": "GO"}]}]}}})],
        "builtin_single-choice" => vec![json!({"text": "Pick one", "quick_replies": [
            {"content_type": "text", "title": "Red", "payload": "RED"},
            {"content_type": "text", "title": "Blue", "payload": "BLUE"}]})],
        "builtin_action-button" => vec![json!({"text": "After the button"})],
        // Botpress shows nothing; botd: the message with the options as quick replies.
        "dropdown" => vec![json!({"text": "Choose a size", "quick_replies": [
            {"content_type": "text", "title": "Small", "payload": "s"},
            {"content_type": "text", "title": "Large", "payload": "l"}]})],
        // An attachment has no caption: the title first, as text.
        "builtin_video" => vec![
            json!({"text": "Tour"}),
            json!({"attachment": {"type": "video", "payload": {
                "url": "https://cdn.example.com/tour.mp4", "is_reusable": true}}}),
        ],
        "builtin_audio" => vec![
            json!({"text": "Song"}),
            json!({"attachment": {"type": "audio", "payload": {
                "url": "https://cdn.example.com/song.mp3", "is_reusable": true}}}),
        ],
        "builtin_file" => vec![
            json!({"text": "Terms"}),
            json!({"attachment": {"type": "file", "payload": {
                "url": "https://cdn.example.com/terms.pdf", "is_reusable": true}}}),
        ],
        // The Send API has no location message: title, address and a map link.
        "builtin_location" => vec![json!({"text":
            "Office\n1 Main St\nhttps://www.google.com/maps/search/?api=1&query=45.5,-73.6"})],
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn every_content_type_over_messenger() {
    let graph = FakeGraph::start(PAGE);
    let data = data_with_bot("ctypes-messenger");
    write(
        data.path(),
        "global/config/channel-messenger.json",
        &json!({"appSecret": SECRET, "verifyToken": "v", "typingDelay": false,
            "graphApiBase": format!("http://127.0.0.1:{}", graph.port)})
        .to_string(),
    );
    write(
        data.path(),
        &format!("bots/{BOT}/config/channel-messenger.json"),
        &json!({"enabled": true, "accessToken": "TOKEN-CTYPES"}).to_string(),
    );
    let server = Server::start(data.path(), &[]);
    assert!(
        wait_until(Duration::from_secs(10), || server
            .log()
            .contains(&format!("answers page {PAGE}"))),
        "{}",
        server.log()
    );
    post_text(server.port, SECRET, PAGE, "m-hi", "hi");
    let mut seen = 0;
    for (i, content_type) in TYPES.into_iter().enumerate() {
        let expected = messenger_expected(content_type);
        post_text(server.port, SECRET, PAGE, &format!("m-{i}"), content_type);
        wait_until(Duration::from_secs(20), || {
            graph.messages().len() >= seen + expected.len()
        });
        let sent = graph.messages();
        assert_eq!(
            sent[seen.min(sent.len())..],
            expected[..],
            "{content_type}: {}",
            server.log()
        );
        seen += expected.len();
    }
}

const TELEGRAM_TOKEN: &str = "777:CTYPEStoken";
const CHAT: i64 = 77;

fn call(method: &str, mut params: Value) -> (String, Value) {
    params["chat_id"] = json!(CHAT);
    (method.to_string(), params)
}

/// A reply keyboard of one row, as Botpress's Telegram client sends quick replies.
fn reply_keyboard(titles: &[&str]) -> Value {
    let row: Vec<Value> = titles.iter().map(|t| json!({ "text": t })).collect();
    json!({"keyboard": [row], "one_time_keyboard": true, "resize_keyboard": true})
}

/// The Bot API calls of Botpress's Telegram client, and botd's forms for the rest.
fn telegram_expected(content_type: &str) -> Vec<(String, Value)> {
    let markdown = |text: &str| {
        call(
            "sendMessage",
            json!({"text": text, "parse_mode": "Markdown"}),
        )
    };
    match content_type {
        "builtin_text" => vec![markdown("Plain words")],
        "builtin_image" => vec![call(
            "sendPhoto",
            json!({"photo": "https://cdn.example.com/cat.png", "caption": "A cat"}),
        )],
        // The picture, then the bold title and subtitle with the buttons inline.
        "builtin_card" => vec![
            call(
                "sendPhoto",
                json!({"photo": "https://cdn.example.com/card.jpg"}),
            ),
            call(
                "sendMessage",
                json!({"text": "*Blue card*\nCard subtitle", "parse_mode": "Markdown",
                "reply_markup": {"inline_keyboard": [[
                    {"text": "Site", "url": "https://example.org/page"},
                    {"text": "Pick", "callback_data": "PICKED"}]]}}),
            ),
        ],
        // One message per card.
        "builtin_carousel" => vec![
            call(
                "sendMessage",
                json!({"text": "*First*\nOne", "parse_mode": "Markdown",
                "reply_markup": {"inline_keyboard": [[{"text": "Read", "url": "https://example.org/one"}]]}}),
            ),
            call(
                "sendMessage",
                json!({"text": "*Second*\nTwo", "parse_mode": "Markdown",
                "reply_markup": {"inline_keyboard": [[{"text": "Go", "callback_data": "GO"}]]}}),
            ),
        ],
        "builtin_single-choice" => vec![call(
            "sendMessage",
            json!({"text": "Pick one", "parse_mode": "Markdown",
                "reply_markup": reply_keyboard(&["Red", "Blue"])}),
        )],
        "builtin_action-button" => vec![markdown("After the button")],
        "dropdown" => vec![call(
            "sendMessage",
            json!({"text": "Choose a size", "parse_mode": "Markdown",
                "reply_markup": reply_keyboard(&["Small", "Large"])}),
        )],
        "builtin_video" => vec![call(
            "sendVideo",
            json!({"video": "https://cdn.example.com/tour.mp4", "caption": "Tour"}),
        )],
        "builtin_audio" => vec![call(
            "sendAudio",
            json!({"audio": "https://cdn.example.com/song.mp3", "caption": "Song"}),
        )],
        "builtin_file" => vec![call(
            "sendDocument",
            json!({"document": "https://cdn.example.com/terms.pdf", "caption": "Terms"}),
        )],
        // A place with a name and an address is a venue.
        "builtin_location" => vec![call(
            "sendVenue",
            json!({"latitude": 45.5, "longitude": -73.6, "title": "Office", "address": "1 Main St"}),
        )],
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn every_content_type_over_telegram() {
    let fake = FakeBotApi::start();
    let data = data_with_bot("ctypes-telegram");
    write(
        data.path(),
        "global/config/channel-telegram.json",
        &json!({"apiBase": format!("http://127.0.0.1:{}", fake.port), "pollTimeout": "1s",
            "typingDelay": false})
        .to_string(),
    );
    write(
        data.path(),
        &format!("bots/{BOT}/config/channel-telegram.json"),
        &json!({"enabled": true, "botToken": TELEGRAM_TOKEN}).to_string(),
    );
    let server = Server::start(data.path(), &[]);
    fake.text(CHAT, "hi");
    let mut seen = 0;
    for content_type in TYPES {
        let expected = telegram_expected(content_type);
        fake.text(CHAT, content_type);
        wait_until(Duration::from_secs(20), || {
            fake.sent(CHAT).len() >= seen + expected.len()
        });
        let sent = fake.sent(CHAT);
        assert_eq!(
            sent[seen.min(sent.len())..],
            expected[..],
            "{content_type}: {}",
            server.log()
        );
        seen += expected.len();
    }
}
