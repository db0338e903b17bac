//! How each content type looks on Messenger: Botpress's `renderMessenger` of the builtin types
//! (Send API message bodies after a typing payload: always in 11.8, when `typing` is set in 12,
//! where images also became image attachments), and what Messenger cannot show (dropdowns,
//! locations, media titles) degraded to text and quick replies.

use crate::channels::render::{bot_url, carousel_items, choice_payload, choices, typing};
use crate::engine::content::{resolve_url, ContentPayload};
use serde_json::{json, Value};

/// Messenger's limits on quick replies.
const MAX_QUICK_REPLIES: usize = 13;
const MAX_QUICK_REPLY_TITLE: usize = 20;

pub fn render(payload: &ContentPayload) -> Result<Vec<Value>, String> {
    let botpress_12 = payload.botpress.0 >= 12;
    let mut out = Vec::new();
    if botpress_12 {
        typing(payload, &mut out);
    } else {
        // Botpress 11.8's renderers always start with a typing payload, `typing: false`
        // included; an absent value is left out, which the sender reads as the 1000 ms default.
        out.push(match payload.get("typing") {
            Value::Null => json!({"type": "typing"}),
            value => json!({"type": "typing", "value": value}),
        });
    }
    let base = bot_url(payload);
    match payload.content_type.as_str() {
        "builtin_text" => out.push(json!({"text": payload.text("text").unwrap_or("")})),
        "builtin_image" => {
            let url = resolve_url(base, payload.text("image").unwrap_or(""));
            if botpress_12 {
                out.push(json!({"attachment": {"type": "image", "payload": {"is_reusable": true, "url": url}}}));
            } else {
                out.push(json!({"attachment": {"type": "template", "payload": {
                    "template_type": "generic", "elements": [{"title": payload.get("title"), "image_url": url}]}}}));
            }
        }
        "builtin_card" | "builtin_carousel" => {
            let elements = carousel_items(payload)
                .iter()
                .map(|card| card_element(card, base))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(json!({"attachment": {"type": "template", "payload": {"template_type": "generic", "elements": elements}}}));
        }
        "builtin_single-choice" => {
            let replies: Vec<Value> = choices(payload)
                .iter()
                .map(|c| json!({"content_type": "text", "title": c["title"], "payload": choice_payload(c)}))
                .collect();
            out.push(json!({"text": payload.text("text").unwrap_or(""), "quick_replies": replies}));
        }
        "builtin_action-button" => return Ok(Vec::new()),
        // Botpress shows nothing for a dropdown on Messenger; its options become quick replies.
        "dropdown" => {
            let options = payload
                .get("options")
                .as_array()
                .cloned()
                .unwrap_or_default();
            let replies: Vec<Value> = options
                .iter()
                .take(MAX_QUICK_REPLIES)
                .filter_map(|o| {
                    let label = o["label"]
                        .as_str()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())?;
                    let value = o["value"]
                        .as_str()
                        .filter(|v| !v.is_empty())
                        .unwrap_or(label);
                    Some(json!({"content_type": "text",
                        "title": label.chars().take(MAX_QUICK_REPLY_TITLE).collect::<String>(),
                        "payload": value}))
                })
                .collect();
            let mut message = json!({"text": payload.text("message").unwrap_or("")});
            if !replies.is_empty() {
                message["quick_replies"] = Value::Array(replies);
            }
            out.push(message);
        }
        "builtin_video" | "builtin_audio" | "builtin_file" => {
            let kind = payload.content_type.trim_start_matches("builtin_");
            let url = resolve_url(base, payload.text(kind).unwrap_or(""));
            // An attachment has no caption: the title goes first, as text.
            if let Some(title) = payload.text("title").filter(|t| !t.is_empty()) {
                out.push(json!({ "text": title }));
            }
            out.push(
                json!({"attachment": {"type": kind, "payload": {"url": url, "is_reusable": true}}}),
            );
        }
        // The Send API has no location message: the place as text with a map link.
        "builtin_location" => out.push(json!({ "text": location_text(payload) })),
        other => {
            return Err(format!(
                "content type \"{other}\" has no Messenger renderer"
            ))
        }
    }
    Ok(out)
}

/// A location's title, address and a map link, one per line.
pub fn location_text(payload: &ContentPayload) -> String {
    let number = |key: &str| {
        payload
            .get(key)
            .as_f64()
            .or_else(|| payload.text(key).and_then(|s| s.trim().parse().ok()))
    };
    let mut lines: Vec<String> = ["title", "address"]
        .iter()
        .filter_map(|k| {
            payload
                .text(k)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        })
        .collect();
    if let (Some(lat), Some(lng)) = (number("latitude"), number("longitude")) {
        lines.push(format!(
            "https://www.google.com/maps/search/?api=1&query={lat},{lng}"
        ));
    }
    lines.join("\n")
}

/// A generic-template element. Botpress throws on `Say something` buttons; botd sends them
/// as postback buttons (a tap comes back as a `callback` event with that text), which is what
/// the author meant.
fn card_element(card: &Value, bot_url: &str) -> Result<Value, String> {
    let image = card["image"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(|s| resolve_url(bot_url, s));
    let mut buttons = Vec::new();
    for a in card["actions"].as_array().into_iter().flatten() {
        let button = match a["action"].as_str() {
            Some("Open URL") => json!({"type": "web_url", "title": a["title"],
                "url": a["url"].as_str().map(|u| u.replace("BOT_URL", bot_url))}),
            Some("Postback") => {
                json!({"type": "postback", "title": a["title"], "payload": a["payload"]})
            }
            Some("Say something") => {
                json!({"type": "postback", "title": a["title"], "payload": a["text"]})
            }
            other => {
                return Err(format!(
                    "card action {other:?} cannot be rendered for Messenger"
                ))
            }
        };
        buttons.push(button);
    }
    let mut element =
        json!({"title": card["title"], "image_url": image, "subtitle": card["subtitle"]});
    if !buttons.is_empty() {
        element["buttons"] = Value::Array(buttons);
    }
    Ok(element)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(content_type: &str, data: Value) -> ContentPayload {
        ContentPayload::for_test(content_type, data)
    }

    #[test]
    fn text_always_has_a_typing_payload() {
        assert_eq!(
            render(&payload(
                "builtin_text",
                json!({"text": "Hi", "typing": true})
            ))
            .unwrap(),
            vec![
                json!({"type": "typing", "value": true}),
                json!({"text": "Hi"})
            ]
        );
        assert_eq!(
            render(&payload("builtin_text", json!({"text": "Hi"}))).unwrap()[0],
            json!({"type": "typing"})
        );
    }

    #[test]
    fn botpress_12_types_only_when_asked_and_sends_image_attachments() {
        let v12 = |content_type: &str, data: Value| ContentPayload {
            botpress: crate::engine::bot::BotpressVersion(12, 1, 6),
            ..payload(content_type, data)
        };
        assert_eq!(
            render(&v12("builtin_text", json!({"text": "Hi"}))).unwrap(),
            vec![json!({"text": "Hi"})]
        );
        assert_eq!(
            render(&v12(
                "builtin_image",
                json!({"image": "/m/c.png", "typing": true, "BOT_URL": "https://b.example"})
            ))
            .unwrap(),
            vec![
                json!({"type": "typing", "value": true}),
                json!({"attachment": {"type": "image", "payload": {"is_reusable": true, "url": "https://b.example/m/c.png"}}})
            ]
        );
    }

    #[test]
    fn single_choice_is_quick_replies() {
        let p = payload(
            "builtin_single-choice",
            json!({"text": "Pick", "choices": [{"title": "What is a Context?", "value": "context"}]}),
        );
        assert_eq!(
            render(&p).unwrap()[1],
            json!({"text": "Pick", "quick_replies": [{"content_type": "text", "title": "What is a Context?", "payload": "CONTEXT"}]})
        );
    }

    #[test]
    fn cards_are_generic_templates() {
        let card = payload(
            "builtin_card",
            json!({"title": "T", "subtitle": "S", "image": "/m/y.png", "BOT_URL": "https://b.example",
            "actions": [{"action": "Open URL", "title": "Go", "url": "BOT_URL/page"}, {"action": "Say something", "title": "Hi", "text": "hello"}]}),
        );
        assert_eq!(
            render(&card).unwrap()[1],
            json!({"attachment": {"type": "template", "payload": {"template_type": "generic", "elements": [{
                "title": "T", "image_url": "https://b.example/m/y.png", "subtitle": "S", "buttons": [
                    {"type": "web_url", "title": "Go", "url": "https://b.example/page"},
                    {"type": "postback", "title": "Hi", "payload": "hello"}]}]}}})
        );
        let image = payload(
            "builtin_image",
            json!({"image": "https://x/c.png", "title": "Cat"}),
        );
        assert_eq!(
            render(&image).unwrap()[1]["attachment"]["payload"]["elements"][0],
            json!({"title": "Cat", "image_url": "https://x/c.png"})
        );
    }

    #[test]
    fn what_messenger_cannot_show_degrades_to_text() {
        let dropdown = payload(
            "dropdown",
            json!({"message": "Which one?", "options": [{"label": "Health Insurance", "value": ""}, {"label": " Vehicle Insurance"}, {"label": "A very long option label indeed", "value": "long"}]}),
        );
        assert_eq!(
            render(&dropdown).unwrap()[1],
            json!({"text": "Which one?", "quick_replies": [
                {"content_type": "text", "title": "Health Insurance", "payload": "Health Insurance"},
                {"content_type": "text", "title": "Vehicle Insurance", "payload": "Vehicle Insurance"},
                {"content_type": "text", "title": "A very long option l", "payload": "long"}]})
        );
        let location = payload(
            "builtin_location",
            json!({"latitude": 45.5, "longitude": -73.6, "address": "1 Main St", "title": "Office"}),
        );
        assert_eq!(
            render(&location).unwrap()[1],
            json!({"text": "Office\n1 Main St\nhttps://www.google.com/maps/search/?api=1&query=45.5,-73.6"})
        );
        let video = payload(
            "builtin_video",
            json!({"video": "/api/v1/bots/b/media/v.mp4", "title": "Tour", "typing": false, "BOT_URL": "https://b.example"}),
        );
        assert_eq!(
            render(&video).unwrap(),
            vec![
                json!({"type": "typing", "value": false}),
                json!({"text": "Tour"}),
                json!({"attachment": {"type": "video", "payload": {"url": "https://b.example/api/v1/bots/b/media/v.mp4", "is_reusable": true}}})
            ]
        );
        for (kind, field) in [("builtin_audio", "audio"), ("builtin_file", "file")] {
            let mut data = json!({"BOT_URL": "https://b.example"});
            data[field] = json!("https://cdn.example/x");
            let out = render(&payload(kind, data)).unwrap();
            assert_eq!(
                out[1],
                json!({"attachment": {"type": field, "payload": {"url": "https://cdn.example/x", "is_reusable": true}}}),
                "{kind}"
            );
        }
    }
}
