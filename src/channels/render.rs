//! Botpress's `web`/`api` renderers of every content type: what Converse answers, and the form
//! the Telegram sender reads. Also the `api` channel's outgoing QuickReplies wrapper (§11.4),
//! and the registration of every channel's renderer with the engine.

use crate::engine::bot::BotpressVersion;
use crate::engine::content::{self, resolve_url, truthy, ChannelRenderer, ContentPayload};
use serde_json::{json, Map, Value};

/// Registers the renderer of every channel botd has. Called once at start, before any turn.
pub fn register_all() {
    let api = ChannelRenderer {
        render: web,
        outgoing: wrap_quick_replies,
    };
    content::register_channel("api", api);
    content::register_channel("web", api);
    content::register_channel(
        "messenger",
        ChannelRenderer {
            render: super::messenger::render::render,
            outgoing: std::convert::identity,
        },
    );
    content::register_channel(
        "telegram",
        ChannelRenderer {
            render: super::telegram::render::render,
            outgoing: std::convert::identity,
        },
    );
}

/// The typing indicator Botpress's web renderers put first when `typing` is truthy.
pub fn typing(payload: &ContentPayload, out: &mut Vec<Value>) {
    let value = payload.get("typing");
    if truthy(value) {
        out.push(json!({"type": "typing", "value": value}));
    }
}

pub fn bot_url(payload: &ContentPayload) -> &str {
    payload.text("BOT_URL").unwrap_or("")
}

/// The web renderer (`render` in Botpress's content types). From Botpress 12.22 every type
/// but the action button renders as its universal payload.
pub fn web(payload: &ContentPayload) -> Result<Vec<Value>, String> {
    if payload.botpress >= BotpressVersion(12, 22, 0) {
        return Ok(if payload.content_type == "builtin_action-button" {
            Vec::new()
        } else {
            vec![universal(payload)]
        });
    }
    let mut out = Vec::new();
    match payload.content_type.as_str() {
        "builtin_text" => {
            typing(payload, &mut out);
            out.push(json!({"type": "text", "markdown": true, "text": payload.text("text").unwrap_or("")}));
        }
        "builtin_image" => {
            typing(payload, &mut out);
            let url = resolve_url(bot_url(payload), payload.text("image").unwrap_or(""));
            let mut file = json!({"type": "file", "url": url});
            // Botpress 12.1 added the image's title.
            if payload.botpress >= BotpressVersion(12, 1, 0) {
                if let Some(title) = payload.data.get("title") {
                    file["title"] = title.clone();
                }
            }
            out.push(file);
        }
        "builtin_card" | "builtin_carousel" => {
            typing(payload, &mut out);
            let elements = carousel_items(payload)
                .iter()
                .map(|card| web_card(card, bot_url(payload)))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(json!({"text": " ", "type": "carousel", "elements": elements}));
        }
        "builtin_single-choice" => {
            typing(payload, &mut out);
            let replies: Vec<Value> = choices(payload)
                .iter()
                .map(|c| {
                    let mut reply = defined(json!({}), c, &["title"]);
                    reply["payload"] = choice_payload(c);
                    reply
                })
                .collect();
            let data = Value::Object(payload.data.clone());
            let mut choice = defined(json!({}), &data, &["text"]);
            choice["quick_replies"] = Value::Array(replies);
            out.push(defined(choice, &data, &["typing"]));
        }
        // Botpress renders action buttons only inside cards.
        "builtin_action-button" => {}
        "dropdown" => {
            typing(payload, &mut out);
            out.push(defined(
                json!({"type": "custom", "module": "extensions", "component": "Dropdown"}),
                &Value::Object(payload.data.clone()),
                &[
                    "message",
                    "buttonText",
                    "displayInKeyboard",
                    "options",
                    "allowCreation",
                    "allowMultiple",
                    "width",
                ],
            ));
        }
        "builtin_video" | "builtin_audio" | "builtin_file" | "builtin_location" => {
            out.push(universal(payload));
        }
        other => return Err(format!("content type \"{other}\" has no web renderer")),
    }
    Ok(out)
}

/// Botpress 12's universal payload (`extractPayload`): the type without its `builtin_` prefix
/// and the data, less the state and `BOT_URL`.
pub fn universal(payload: &ContentPayload) -> Value {
    let mut out = Map::new();
    out.insert(
        "type".into(),
        json!(payload.content_type.trim_start_matches("builtin_")),
    );
    for (k, v) in &payload.data {
        if !["event", "temp", "user", "session", "bot", "BOT_URL", "type"].contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// A card is a carousel of one.
pub fn carousel_items(payload: &ContentPayload) -> Vec<Value> {
    if payload.content_type == "builtin_card" {
        vec![Value::Object(payload.data.clone())]
    } else {
        payload.get("items").as_array().cloned().unwrap_or_default()
    }
}

pub fn choices(payload: &ContentPayload) -> Vec<Value> {
    payload
        .get("choices")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A choice's value, upper-cased, as the payload its button sends.
pub fn choice_payload(choice: &Value) -> Value {
    match &choice["value"] {
        Value::String(s) => Value::String(s.to_uppercase()),
        Value::Null => Value::Null,
        other => Value::String(other.to_string().to_uppercase()),
    }
}

fn web_card(card: &Value, bot_url: &str) -> Result<Value, String> {
    let picture = card["image"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(|s| resolve_url(bot_url, s));
    let mut buttons = Vec::new();
    for a in card["actions"].as_array().into_iter().flatten() {
        let button = match a["action"].as_str() {
            Some("Say something") => {
                defined(json!({"type": "say_something"}), a, &["title", "text"])
            }
            Some("Open URL") => {
                let mut b = defined(json!({"type": "open_url"}), a, &["title"]);
                if let Some(url) = a.get("url") {
                    b["url"] = match url.as_str() {
                        Some(u) => json!(u.replace("BOT_URL", bot_url)),
                        None => url.clone(),
                    };
                }
                b
            }
            Some("Postback") => defined(json!({"type": "postback"}), a, &["title", "payload"]),
            other => {
                return Err(format!(
                    "Webchat carousel does not support {other:?} action-buttons"
                ))
            }
        };
        buttons.push(button);
    }
    let mut element = defined(json!({}), card, &["title"]);
    element["picture"] = json!(picture);
    element = defined(element, card, &["subtitle"]);
    element["buttons"] = Value::Array(buttons);
    Ok(element)
}

/// `target` with the `keys` that `source` has: JSON.stringify leaves out what JavaScript has
/// as undefined (a key the file does not have), where serde would write null.
fn defined(mut target: Value, source: &Value, keys: &[&str]) -> Value {
    for key in keys {
        if let Some(v) = source.get(*key) {
            target[*key] = v.clone();
        }
    }
    target
}

/// The channel-web hook of §11.4 for `api`: a payload with `quick_replies` becomes a `custom`
/// QuickReplies wrapper.
pub fn wrap_quick_replies(payload: Value) -> Value {
    let Value::Object(mut map) = payload else {
        return payload;
    };
    let Some(replies) = map.remove("quick_replies") else {
        return Value::Object(map);
    };
    let mut wrapped = Map::new();
    wrapped.insert(
        "type".into(),
        map.remove("type")
            .unwrap_or_else(|| Value::String("text".into())),
    );
    wrapped.extend(map);
    json!({"type": "custom", "module": "channel-web", "component": "QuickReplies",
           "quick_replies": replies, "wrapped": wrapped})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(content_type: &str, data: Value) -> ContentPayload {
        ContentPayload::for_test(content_type, data)
    }

    #[test]
    fn text_with_and_without_typing() {
        assert_eq!(
            web(&payload(
                "builtin_text",
                json!({"text": "Hi", "typing": true})
            ))
            .unwrap(),
            vec![
                json!({"type": "typing", "value": true}),
                json!({"type": "text", "markdown": true, "text": "Hi"})
            ]
        );
        assert_eq!(
            web(&payload("builtin_text", json!({"text": "Hi"}))).unwrap(),
            vec![json!({"type": "text", "markdown": true, "text": "Hi"})]
        );
    }

    #[test]
    fn single_choice_and_the_api_wrapper() {
        let p = payload(
            "builtin_single-choice",
            json!({"text": "What would you like to know?", "typing": true,
            "choices": [{"title": "What is a Context?", "value": "context"}, {"title": "What is Bot Memory?", "value": "memory"}]}),
        );
        let out = web(&p).unwrap();
        assert_eq!(
            wrap_quick_replies(out[1].clone()),
            json!({"type": "custom", "module": "channel-web", "component": "QuickReplies",
                "quick_replies": [{"title": "What is a Context?", "payload": "CONTEXT"}, {"title": "What is Bot Memory?", "payload": "MEMORY"}],
                "wrapped": {"type": "text", "text": "What would you like to know?", "typing": true}})
        );
        // Without typing, the key is left out (undefined in JavaScript).
        let quiet = payload(
            "builtin_single-choice",
            json!({"text": "Pick", "choices": [{"title": "A", "value": "a"}]}),
        );
        assert_eq!(
            web(&quiet).unwrap(),
            vec![json!({"text": "Pick", "quick_replies": [{"title": "A", "payload": "A"}]})]
        );
        let plain = json!({"type": "text", "text": "x"});
        assert_eq!(wrap_quick_replies(plain.clone()), plain);
    }

    #[test]
    fn images_cards_and_carousels() {
        let url = "https://bot.example.com";
        let image = payload(
            "builtin_image",
            json!({"image": "/api/v1/bots/b/media/cat.png", "title": "Cat", "typing": false, "BOT_URL": url}),
        );
        assert_eq!(
            web(&image).unwrap(),
            vec![
                json!({"type": "file", "url": "https://bot.example.com/api/v1/bots/b/media/cat.png"})
            ]
        );
        let v12 = ContentPayload {
            botpress: BotpressVersion(12, 1, 6),
            ..image
        };
        assert_eq!(
            web(&v12).unwrap(),
            vec![
                json!({"type": "file", "title": "Cat", "url": "https://bot.example.com/api/v1/bots/b/media/cat.png"})
            ]
        );
        let card = payload(
            "builtin_card",
            json!({"title": "T", "subtitle": "S", "image": "https://x/y.gif", "BOT_URL": url,
            "actions": [{"action": "Open URL", "title": "Go", "url": "BOT_URL/page"}, {"action": "Postback", "title": "P", "payload": "PB"},
                        {"action": "Say something", "title": "S", "text": "hello"}]}),
        );
        assert_eq!(
            web(&card).unwrap(),
            vec![json!({"text": " ", "type": "carousel", "elements": [{
                "title": "T", "picture": "https://x/y.gif", "subtitle": "S", "buttons": [
                    {"type": "open_url", "title": "Go", "url": "https://bot.example.com/page"},
                    {"type": "postback", "title": "P", "payload": "PB"},
                    {"type": "say_something", "title": "S", "text": "hello"}]}]})]
        );
        let bad = payload(
            "builtin_carousel",
            json!({"items": [{"title": "T", "actions": [{"action": "Dance"}]}]}),
        );
        assert!(web(&bad).unwrap_err().contains("Dance"));
        assert_eq!(
            web(&payload("builtin_action-button", json!({"title": "x"}))).unwrap(),
            Vec::<Value>::new()
        );
    }

    #[test]
    fn botpress_12_22_renders_universal_payloads() {
        let v = |content_type: &str, data: Value| ContentPayload {
            botpress: BotpressVersion(12, 26, 0),
            ..payload(content_type, data)
        };
        assert_eq!(
            web(&v(
                "builtin_text",
                json!({"text": "Hi", "variations": ["Hey"], "typing": true, "BOT_URL": "u", "event": {}, "skill": "x"})
            ))
            .unwrap(),
            vec![
                json!({"type": "text", "text": "Hi", "variations": ["Hey"], "typing": true, "skill": "x"})
            ]
        );
        assert_eq!(
            web(&v(
                "builtin_single-choice",
                json!({"text": "Pick", "choices": [{"title": "A", "value": "a"}]})
            ))
            .unwrap(),
            vec![
                json!({"type": "single-choice", "text": "Pick", "choices": [{"title": "A", "value": "a"}]})
            ]
        );
        assert_eq!(
            web(&v("builtin_card", json!({"title": "T"}))).unwrap(),
            vec![json!({"type": "card", "title": "T"})]
        );
        assert_eq!(
            web(&v("builtin_action-button", json!({"title": "T"}))).unwrap(),
            Vec::<Value>::new()
        );
    }

    #[test]
    fn dropdown_is_the_extensions_component() {
        let p = payload(
            "dropdown",
            json!({"message": "Pick", "buttonText": "Go", "options": [{"label": "A", "value": "a"}],
            "width": 200, "displayInKeyboard": true, "typing": true}),
        );
        assert_eq!(
            web(&p).unwrap(),
            vec![
                json!({"type": "typing", "value": true}),
                json!({"type": "custom", "module": "extensions", "component": "Dropdown",
                "message": "Pick", "buttonText": "Go", "displayInKeyboard": true,
                "options": [{"label": "A", "value": "a"}], "width": 200})
            ]
        );
    }

    #[test]
    fn botpress_12_media_and_location_are_universal_payloads() {
        let url = "https://bot.example.com";
        for (kind, field) in [
            ("builtin_video", "video"),
            ("builtin_audio", "audio"),
            ("builtin_file", "file"),
        ] {
            let p = payload(
                kind,
                json!({field: "/api/v1/bots/b/media/m.bin", "title": "M", "typing": true, "BOT_URL": url, "user": {}}),
            );
            let mut expected = json!({"type": field, "title": "M", "typing": true});
            expected[field] = json!("/api/v1/bots/b/media/m.bin");
            assert_eq!(web(&p).unwrap(), vec![expected], "{kind}");
        }
        let p = payload(
            "builtin_location",
            json!({"latitude": 45.5, "longitude": -73.6, "address": "1 Main St", "title": "Office", "BOT_URL": url}),
        );
        assert_eq!(
            web(&p).unwrap(),
            vec![
                json!({"type": "location", "latitude": 45.5, "longitude": -73.6, "address": "1 Main St", "title": "Office"})
            ]
        );
    }
}
