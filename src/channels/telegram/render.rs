//! How each content type looks on Telegram: Botpress's `renderTelegram` (the web form for
//! text, cards, carousels and choices; `image` for images), and the Botpress 12 media and
//! location types as the Bot API's own messages. Dropdowns become a reply keyboard. The
//! sender ([`super::send`]) turns these payloads into Bot API calls.

use crate::channels::render::{bot_url, typing, web};
use crate::engine::content::{resolve_url, ContentPayload};
use serde_json::{json, Value};

pub fn render(payload: &ContentPayload) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    match payload.content_type.as_str() {
        "builtin_image" | "builtin_video" | "builtin_audio" | "builtin_file" => {
            typing(payload, &mut out);
            let kind = payload.content_type.trim_start_matches("builtin_");
            let url = resolve_url(bot_url(payload), payload.text(kind).unwrap_or(""));
            let mut media = json!({"type": kind, "url": url});
            if let Some(title) = payload.text("title") {
                media["title"] = json!(title);
            }
            out.push(media);
        }
        "builtin_location" => {
            typing(payload, &mut out);
            let mut location = json!({"type": "location",
                "latitude": payload.get("latitude"), "longitude": payload.get("longitude")});
            for key in ["title", "address"] {
                if let Some(v) = payload.text(key).filter(|v| !v.is_empty()) {
                    location[key] = json!(v);
                }
            }
            out.push(location);
        }
        // Botpress shows nothing for a dropdown on Telegram; its options become a keyboard.
        "dropdown" => {
            typing(payload, &mut out);
            let replies: Vec<Value> = payload
                .get("options")
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| {
                    let label = o["label"]
                        .as_str()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())?;
                    let value = o["value"]
                        .as_str()
                        .filter(|v| !v.is_empty())
                        .unwrap_or(label);
                    Some(json!({"title": label, "payload": value}))
                })
                .collect();
            out.push(
                json!({"type": "text", "text": payload.text("message").unwrap_or(""),
                "quick_replies": replies}),
            );
        }
        _ => return web(payload),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(content_type: &str, data: Value) -> ContentPayload {
        ContentPayload::for_test(content_type, data)
    }

    #[test]
    fn images_and_media_carry_their_absolute_url() {
        let image = payload(
            "builtin_image",
            json!({"image": "/api/v1/bots/b/media/c.gif", "title": "Cat", "typing": true, "BOT_URL": "https://b.example"}),
        );
        assert_eq!(
            render(&image).unwrap(),
            vec![
                json!({"type": "typing", "value": true}),
                json!({"type": "image", "url": "https://b.example/api/v1/bots/b/media/c.gif", "title": "Cat"})
            ]
        );
        for kind in ["video", "audio", "file"] {
            let mut data = json!({"BOT_URL": "https://b.example"});
            data[kind] = json!("https://cdn.example/m");
            assert_eq!(
                render(&payload(&format!("builtin_{kind}"), data)).unwrap(),
                vec![json!({"type": kind, "url": "https://cdn.example/m"})]
            );
        }
    }

    #[test]
    fn location_dropdown_and_the_web_forms() {
        let location = payload(
            "builtin_location",
            json!({"latitude": 45.5, "longitude": -73.6, "title": "Office", "address": ""}),
        );
        assert_eq!(
            render(&location).unwrap(),
            vec![
                json!({"type": "location", "latitude": 45.5, "longitude": -73.6, "title": "Office"})
            ]
        );
        let dropdown = payload(
            "dropdown",
            json!({"message": "Which?", "options": [{"label": "A", "value": "a"}, {"label": "B"}]}),
        );
        assert_eq!(
            render(&dropdown).unwrap(),
            vec![json!({"type": "text", "text": "Which?", "quick_replies": [
                {"title": "A", "payload": "a"}, {"title": "B", "payload": "B"}]})]
        );
        let text = payload("builtin_text", json!({"text": "Hi"}));
        assert_eq!(render(&text).unwrap(), web(&text).unwrap());
    }
}
