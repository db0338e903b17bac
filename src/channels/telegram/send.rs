//! Sending (§5.3, with the 11.8.1 quirks fixed): the payloads a turn rendered for `telegram`
//! become a list of Bot API calls ([`plan`], the channel's renderer), one per reply on the
//! pipeline's outbound queue keyed by chat; [`send_reply`] (the channel's API client) makes
//! them.
//!
//! - `typing` → `sendChatAction(typing)`, then a pause of the Botpress delay (1000 ms when the
//!   value is missing or not a number, else at least 500 ms; `true` is 500 ms), renewed every
//!   4.5 s for long delays, capped at 30 s; no pause when `typingDelay` is false.
//! - text → `sendMessage` with `parse_mode` (unless `markdown: false`), quick replies as a
//!   one-time reply keyboard; no `reply_markup` without quick replies; texts over 4096
//!   characters are split.
//! - carousel/card → for every card: `sendPhoto` (`sendAnimation` for a .gif) when it has a
//!   picture, then `*title*\nsubtitle` with an inline keyboard (url buttons; postback and
//!   say-something buttons as `callback_data`, at most 64 bytes).
//! - image → `sendPhoto` (`sendAnimation` for a .gif) with the title as caption.

use super::api::ApiError;
use super::throttle::Held;
use super::{BotConfig, BotRuntime};
use crate::channels::pipeline::{OutboundRecord, Reply, Sent};
use crate::channels::retry::Failure;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Longest Telegram text message, in characters.
const MAX_TEXT: usize = 4096;
/// Longest `callback_data`, in bytes.
const MAX_CALLBACK_DATA: usize = 64;
/// A chat action shows for about 5 s; longer delays renew it this often.
const TYPING_RENEW: Duration = Duration::from_millis(4500);
const MAX_TYPING: Duration = Duration::from_secs(30);
/// One Bot API call of a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BotCall {
    pub method: String,
    pub params: Value,
    /// A text with `parse_mode` that is sent again without it if Telegram refuses it (400).
    #[serde(default)]
    pub fallback: bool,
}

/// The Bot API calls that deliver `responses` to `chat`, in order: one reply each, so that
/// the throttle paces every message and a retry repeats nothing else.
pub fn plan(cfg: &BotConfig, chat: &str, responses: &[Value]) -> Vec<Reply<BotCall>> {
    let mut steps = Vec::new();
    let chat_id = chat_id_value(chat);
    let step = |steps: &mut Vec<Reply<BotCall>>,
                method: &str,
                params: Value,
                pause: Duration,
                fallback: bool| {
        steps.push(Reply {
            calls: vec![BotCall {
                method: method.to_string(),
                params,
                fallback,
            }],
            pause,
        });
    };
    for payload in responses {
        if let Some(pause) = crate::engine::pause_of(payload) {
            // `builtin/wait`: a reply that calls nothing, then the chat waits.
            steps.push(Reply {
                calls: Vec::new(),
                pause,
            });
            continue;
        }
        let kind = payload["type"].as_str().unwrap_or("text");
        match kind {
            "typing" => {
                let mut left = crate::channels::typing_delay(payload.get("value")).min(MAX_TYPING);
                loop {
                    let pause = if cfg.typing_delay {
                        left.min(TYPING_RENEW)
                    } else {
                        Duration::ZERO
                    };
                    step(
                        &mut steps,
                        "sendChatAction",
                        json!({"chat_id": chat_id, "action": "typing"}),
                        pause,
                        false,
                    );
                    left = left.saturating_sub(TYPING_RENEW);
                    if !cfg.typing_delay || left.is_zero() {
                        break;
                    }
                }
            }
            "text" | "default" => {
                let text = payload["text"].as_str().unwrap_or("");
                if text.trim().is_empty() {
                    log::debug!(
                        "bot \"{}\": an empty text is not sent to Telegram",
                        cfg.bot_id
                    );
                    continue;
                }
                let parse_mode = if payload["markdown"] == Value::Bool(false) {
                    ""
                } else {
                    cfg.parse_mode.as_str()
                };
                let keyboard = reply_keyboard(&payload["quick_replies"]);
                let chunks = split_text(text, MAX_TEXT);
                let last = chunks.len() - 1;
                for (i, chunk) in chunks.into_iter().enumerate() {
                    let mut params = json!({"chat_id": chat_id, "text": chunk});
                    if !parse_mode.is_empty() {
                        params["parse_mode"] = json!(parse_mode);
                    }
                    if i == last {
                        if let Some(k) = &keyboard {
                            params["reply_markup"] = k.clone();
                        }
                    }
                    step(
                        &mut steps,
                        "sendMessage",
                        params,
                        Duration::ZERO,
                        !parse_mode.is_empty(),
                    );
                }
            }
            "carousel" => {
                for card in payload["elements"].as_array().into_iter().flatten() {
                    if let Some(picture) = card["picture"].as_str().filter(|p| !p.is_empty()) {
                        let (method, params) = media(chat_id.clone(), picture, None);
                        step(&mut steps, method, params, Duration::ZERO, false);
                    }
                    let title = card["title"].as_str().unwrap_or("");
                    let subtitle = card["subtitle"].as_str().unwrap_or("");
                    let (text, markdown) = match (title.is_empty(), subtitle.is_empty()) {
                        (false, false) => (format!("*{title}*\n{subtitle}"), true),
                        (false, true) => (format!("*{title}*"), true),
                        (true, false) => (subtitle.to_string(), false),
                        (true, true) => (String::new(), false),
                    };
                    let keyboard = inline_keyboard(&card["buttons"]);
                    if text.is_empty() && keyboard.is_none() {
                        continue;
                    }
                    // A keyboard needs a text to hang on.
                    let text = if text.is_empty() {
                        "\u{2063}".to_string()
                    } else {
                        text
                    };
                    let mut params = json!({"chat_id": chat_id, "text": text});
                    if markdown && !cfg.parse_mode.is_empty() {
                        params["parse_mode"] = json!("Markdown");
                    }
                    if let Some(k) = keyboard {
                        params["reply_markup"] = k;
                    }
                    let fallback = params.get("parse_mode").is_some();
                    step(&mut steps, "sendMessage", params, Duration::ZERO, fallback);
                }
            }
            "image" => {
                let Some(url) = payload["url"].as_str().filter(|u| !u.is_empty()) else {
                    continue;
                };
                let (method, params) = media(chat_id.clone(), url, payload["title"].as_str());
                step(&mut steps, method, params, Duration::ZERO, false);
            }
            "video" | "audio" | "file" => {
                let Some(url) = payload["url"].as_str().filter(|u| !u.is_empty()) else {
                    continue;
                };
                let (method, field) = match kind {
                    "video" => ("sendVideo", "video"),
                    "audio" => ("sendAudio", "audio"),
                    _ => ("sendDocument", "document"),
                };
                let mut params = json!({"chat_id": chat_id});
                params[field] = json!(url);
                if let Some(c) = payload["title"].as_str().filter(|c| !c.is_empty()) {
                    params["caption"] = json!(truncate_chars(c, 1024));
                }
                step(&mut steps, method, params, Duration::ZERO, false);
            }
            "location" => {
                let (Some(latitude), Some(longitude)) =
                    (number(&payload["latitude"]), number(&payload["longitude"]))
                else {
                    log::warn!(
                        "bot \"{}\": a location without latitude and longitude is not sent",
                        cfg.bot_id
                    );
                    continue;
                };
                let title = payload["title"].as_str();
                let address = payload["address"].as_str();
                // A venue shows the place's name and address; it needs both.
                if let (Some(t), Some(a)) = (title, address) {
                    step(
                        &mut steps,
                        "sendVenue",
                        json!({"chat_id": chat_id, "latitude": latitude,
                        "longitude": longitude, "title": t, "address": a}),
                        Duration::ZERO,
                        false,
                    );
                    continue;
                }
                step(
                    &mut steps,
                    "sendLocation",
                    json!({"chat_id": chat_id, "latitude": latitude,
                    "longitude": longitude}),
                    Duration::ZERO,
                    false,
                );
                // The one of title and address there is follows as text.
                if let Some(label) = title.or(address) {
                    step(
                        &mut steps,
                        "sendMessage",
                        json!({"chat_id": chat_id, "text": label}),
                        Duration::ZERO,
                        false,
                    );
                }
            }
            other => log::debug!(
                "bot \"{}\": a \"{other}\" payload has no Telegram form and is not sent",
                cfg.bot_id
            ),
        }
    }
    steps
}

/// A coordinate, as a number or a numeric string.
fn number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// A chat id as Telegram wants it: a number when it is one.
fn chat_id_value(chat: &str) -> Value {
    chat.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::String(chat.to_string()))
}

fn media(chat_id: Value, url: &str, caption: Option<&str>) -> (&'static str, Value) {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let (method, field) = if path.to_ascii_lowercase().ends_with(".gif") {
        ("sendAnimation", "animation")
    } else {
        ("sendPhoto", "photo")
    };
    let mut params = json!({"chat_id": chat_id});
    params[field] = json!(url);
    if let Some(c) = caption.filter(|c| !c.is_empty()) {
        params["caption"] = json!(truncate_chars(c, 1024));
    }
    (method, params)
}

/// Items as rows: when the first item is itself a list, each item is a row; else one row.
fn rows(items: &Value) -> Vec<Vec<Value>> {
    let Some(list) = items.as_array().filter(|l| !l.is_empty()) else {
        return Vec::new();
    };
    if list[0].is_array() {
        list.iter()
            .map(|row| row.as_array().cloned().unwrap_or_default())
            .filter(|r| !r.is_empty())
            .collect()
    } else {
        vec![list.clone()]
    }
}

/// Quick replies as a one-time reply keyboard (a tap sends the title back as text).
fn reply_keyboard(quick_replies: &Value) -> Option<Value> {
    let keyboard: Vec<Vec<Value>> = rows(quick_replies)
        .into_iter()
        .map(|row| {
            row.iter()
                .filter_map(|b| b["title"].as_str().filter(|t| !t.is_empty()))
                .map(|t| json!({"text": t}))
                .collect::<Vec<_>>()
        })
        .filter(|row| !row.is_empty())
        .collect();
    (!keyboard.is_empty())
        .then(|| json!({"keyboard": keyboard, "one_time_keyboard": true, "resize_keyboard": true}))
}

/// A card's buttons as an inline keyboard: url buttons open the link, the others send
/// `callback_data` (the postback payload, or the text a say-something button says).
fn inline_keyboard(buttons: &Value) -> Option<Value> {
    let keyboard: Vec<Vec<Value>> = rows(buttons)
        .into_iter()
        .map(|row| row.iter().filter_map(inline_button).collect::<Vec<_>>())
        .filter(|row| !row.is_empty())
        .collect();
    (!keyboard.is_empty()).then(|| json!({"inline_keyboard": keyboard}))
}

fn inline_button(button: &Value) -> Option<Value> {
    let title = button["title"].as_str().filter(|t| !t.is_empty())?;
    if let Some(url) = button["url"].as_str().filter(|u| !u.is_empty()) {
        return Some(json!({"text": title, "url": url}));
    }
    let data = [&button["payload"], &button["text"]]
        .into_iter()
        .find_map(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Null | Value::String(_) => None,
            other => Some(other.to_string()),
        })
        .unwrap_or_else(|| title.to_string());
    Some(json!({"text": title, "callback_data": truncate_bytes(&data, MAX_CALLBACK_DATA)}))
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// `text` in pieces of at most `max` characters (never empty: at least one piece).
fn split_text(text: &str, max: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        return vec![text.to_string()];
    }
    chars.chunks(max).map(|c| c.iter().collect()).collect()
}

/// Is `method` a message (paced by the throttle), rather than a chat action?
fn is_message(method: &str) -> bool {
    method != "sendChatAction"
}

/// Makes the calls of one reply, paced by the bot's throttle.
pub fn send_reply(rt: &BotRuntime, reply: &OutboundRecord<BotCall>) -> Sent {
    for call in &reply.calls {
        match send_call(rt, &reply.bot, call) {
            Sent::Done => {}
            other => return other,
        }
    }
    Sent::Done
}

fn send_call(rt: &BotRuntime, bot: &str, call: &BotCall) -> Sent {
    let method = call.method.as_str();
    let mut params = call.params.clone();
    let chat = params["chat_id"].as_i64().unwrap_or(0);
    if let (Some(throttle), true) = (&rt.throttle, is_message(method)) {
        if let Err(wait) = throttle.try_acquire(chat, Instant::now()) {
            return Sent::Wait(wait);
        }
    }
    let timeout = Duration::from_secs(30);
    let mut result = rt.api.call(method, &params, timeout);
    if let Err(ApiError::Telegram {
        status: 400,
        description,
        ..
    }) = &result
    {
        if call.fallback {
            log::debug!("bot \"{bot}\": {method} refused with parse_mode ({description}); sending it as plain text");
            if let Some(map) = params.as_object_mut() {
                map.remove("parse_mode");
            }
            result = rt.api.call(method, &params, timeout);
        }
    }
    match result {
        Ok(_) => Sent::Done,
        Err(ApiError::Telegram {
            status: 429,
            retry_after,
            ..
        }) => {
            let wait = Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 3600));
            let held = rt
                .throttle
                .as_ref()
                .map(|t| t.refused(chat, wait, Instant::now()));
            let whom = match held {
                Some(Held::Bot) => "every chat of the bot".to_string(),
                _ => format!("chat {}", params["chat_id"]),
            };
            log::info!(
                "bot \"{bot}\": Telegram asks to slow down (429); {method} and {whom} wait {} s",
                wait.as_secs()
            );
            Sent::Failed(Failure::Retry {
                after: Some(wait),
                why: format!("{method}: Telegram answered 429"),
            })
        }
        Err(e) if e.is_transient() => Sent::Failed(Failure::Retry {
            after: None,
            why: format!("{method} failed ({e})"),
        }),
        Err(e) if e.is_bad_token() => Sent::Failed(Failure::GiveUp(format!(
            "{method} refused: {e} (is botToken right?)"
        ))),
        Err(e) => Sent::Failed(Failure::GiveUp(format!("{method} refused: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(typing: bool) -> BotConfig {
        BotConfig {
            bot_id: "welcome-bot".into(),
            token: "1:A".into(),
            api_base: "http://x".into(),
            poll_timeout: Duration::from_secs(25),
            parse_mode: "Markdown".into(),
            typing_delay: typing,
            throttle: true,
            mode: super::super::Mode::Polling,
        }
    }

    /// The plan as JSON steps `{method, params, pause_ms, fallback}`, for the assertions.
    fn plan(cfg: &BotConfig, chat: &str, responses: &[Value]) -> Vec<Value> {
        super::plan(cfg, chat, responses)
            .into_iter()
            .map(|r| {
                assert_eq!(r.calls.len(), 1, "one call per reply");
                let c = &r.calls[0];
                json!({"method": c.method, "params": c.params, "fallback": c.fallback,
                    "pause_ms": r.pause.as_millis() as u64})
            })
            .collect()
    }

    #[test]
    fn a_wait_is_a_reply_that_only_pauses_the_chat() {
        let responses = vec![
            json!({"type": "text", "markdown": true, "text": "one"}),
            crate::engine::pause_payload(Duration::from_millis(1500)),
            json!({"type": "text", "markdown": true, "text": "two"}),
        ];
        let replies = super::plan(&cfg(true), "42", &responses);
        let shape: Vec<(Vec<&str>, u64)> = replies
            .iter()
            .map(|r| {
                (
                    r.calls.iter().map(|c| c.method.as_str()).collect(),
                    r.pause.as_millis() as u64,
                )
            })
            .collect();
        // The pause calls nothing: it only holds the chat before "two".
        assert_eq!(
            shape,
            [
                (vec!["sendMessage"], 0),
                (vec![], 1500),
                (vec!["sendMessage"], 0)
            ]
        );
    }

    #[test]
    fn plans_text_keyboards_and_typing() {
        let responses = vec![
            json!({"type": "typing", "value": true}),
            json!({"type": "text", "markdown": true, "text": "Hi"}),
            json!({"text": "Pick", "quick_replies": [{"title": "A", "payload": "A"}, {"title": "B", "payload": "B"}], "typing": true}),
            json!({"type": "text", "markdown": false, "text": "*raw*"}),
            json!({"type": "typing", "value": 10000}),
        ];
        let steps = plan(&cfg(true), "42", &responses);
        assert_eq!(steps[0]["method"], "sendChatAction");
        assert_eq!(steps[0]["pause_ms"], 500);
        assert_eq!(
            steps[1]["params"],
            json!({"chat_id": 42, "text": "Hi", "parse_mode": "Markdown"})
        );
        assert_eq!(steps[1]["fallback"], true);
        assert_eq!(
            steps[2]["params"]["reply_markup"],
            json!({"keyboard": [[{"text": "A"}, {"text": "B"}]], "one_time_keyboard": true, "resize_keyboard": true})
        );
        assert_eq!(steps[3]["params"], json!({"chat_id": 42, "text": "*raw*"}));
        // 10 s of typing: renewed every 4.5 s.
        let pauses: Vec<u64> = steps[4..]
            .iter()
            .map(|s| s["pause_ms"].as_u64().unwrap())
            .collect();
        assert_eq!(pauses, vec![4500, 4500, 1000]);
        // typingDelay false: one chat action, no pause.
        let steps = plan(&cfg(false), "42", &responses);
        assert_eq!(steps.len(), 5);
        assert!(steps.iter().all(|s| s["pause_ms"] == 0));
    }

    #[test]
    fn plans_botpress_12_media_and_locations() {
        let responses = vec![
            json!({"type": "video", "url": "https://b/v.mp4", "title": "Tour"}),
            json!({"type": "audio", "url": "https://b/a.mp3"}),
            json!({"type": "file", "url": "https://b/f.pdf", "title": "Terms"}),
            json!({"type": "location", "latitude": 45.5, "longitude": -73.6, "title": "Office", "address": "1 Main St"}),
            json!({"type": "location", "latitude": "45.5", "longitude": -73.6, "title": "Office"}),
            json!({"type": "location", "title": "Nowhere"}),
        ];
        let steps = plan(&cfg(false), "42", &responses);
        let calls: Vec<(String, Value)> = steps
            .iter()
            .map(|s| {
                (
                    s["method"].as_str().unwrap().to_string(),
                    s["params"].clone(),
                )
            })
            .collect();
        assert_eq!(
            calls,
            vec![
                (
                    "sendVideo".into(),
                    json!({"chat_id": 42, "video": "https://b/v.mp4", "caption": "Tour"})
                ),
                (
                    "sendAudio".into(),
                    json!({"chat_id": 42, "audio": "https://b/a.mp3"})
                ),
                (
                    "sendDocument".into(),
                    json!({"chat_id": 42, "document": "https://b/f.pdf", "caption": "Terms"})
                ),
                (
                    "sendVenue".into(),
                    json!({"chat_id": 42, "latitude": 45.5, "longitude": -73.6, "title": "Office", "address": "1 Main St"})
                ),
                (
                    "sendLocation".into(),
                    json!({"chat_id": 42, "latitude": 45.5, "longitude": -73.6})
                ),
                (
                    "sendMessage".into(),
                    json!({"chat_id": 42, "text": "Office"})
                ),
            ]
        );
    }

    #[test]
    fn plans_cards_and_images() {
        let long = "é".repeat(40);
        let carousel = json!({"type": "carousel", "text": " ", "elements": [{
        "title": "Card", "picture": "http://h/p.png", "subtitle": "Sub",
        "buttons": [
            {"type": "open_url", "title": "Site", "url": "https://example.org"},
            {"type": "postback", "title": "Post", "payload": long},
            {"type": "say_something", "title": "Say", "text": "hello"}
        ]}]});
        let steps = plan(
            &cfg(true),
            "-100",
            &[
                carousel,
                json!({"type": "image", "url": "http://h/a.GIF", "title": "T"}),
            ],
        );
        assert_eq!(steps[0]["method"], "sendPhoto");
        assert_eq!(
            steps[0]["params"],
            json!({"chat_id": -100, "photo": "http://h/p.png"})
        );
        assert_eq!(steps[1]["params"]["text"], "*Card*\nSub");
        let row = &steps[1]["params"]["reply_markup"]["inline_keyboard"][0];
        assert_eq!(
            row[0],
            json!({"text": "Site", "url": "https://example.org"})
        );
        let data = row[1]["callback_data"].as_str().unwrap();
        assert_eq!(data.len(), 64);
        assert_eq!(data, "é".repeat(32));
        assert_eq!(row[2]["callback_data"], "hello");
        assert_eq!(steps[2]["method"], "sendAnimation");
        assert_eq!(
            steps[2]["params"],
            json!({"chat_id": -100, "animation": "http://h/a.GIF", "caption": "T"})
        );
        assert_eq!(truncate_bytes("aé", 2), "a");
    }

    #[test]
    fn long_texts_are_split() {
        let text = "x".repeat(5000);
        let steps = plan(
            &cfg(false),
            "1",
            &[json!({"type": "text", "text": text, "quick_replies": [{"title": "Q"}]})],
        );
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0]["params"]["text"].as_str().unwrap().len(), 4096);
        assert!(steps[0]["params"].get("reply_markup").is_none());
        assert!(steps[1]["params"].get("reply_markup").is_some());
    }
}
