//! Content (§11): stored content elements, the builtin content types and their renderers for
//! the `api`, `messenger` and `telegram` channels, and the `api` QuickReplies wrapper (§11.4).

use super::template;
use super::Problem;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// The content types botd renders.
pub const CONTENT_TYPES: [&str; 6] = [
    "builtin_text",
    "builtin_image",
    "builtin_card",
    "builtin_carousel",
    "builtin_single-choice",
    "builtin_action-button",
];

#[derive(Debug, Clone)]
pub struct ContentElement {
    pub id: String,
    pub content_type: String,
    pub form_data: Map<String, Value>,
}

/// What loading `content-elements/` gave: the elements, the errors (unreadable files) and the
/// warnings (content types botd does not render: their elements load, and saying one fails).
pub struct LoadedElements {
    pub elements: HashMap<String, ContentElement>,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

/// Reads `content-elements/<contentType>.json` files (arrays of `{id, formData, …}`).
pub fn load_elements(dir: &Path, shown_root: &str) -> LoadedElements {
    let mut elements = HashMap::new();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return LoadedElements {
            elements,
            errors: problems,
            warnings,
        };
    };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(content_type) = file.strip_suffix(".json") else {
            continue;
        };
        let shown = format!("{shown_root}/content-elements/{file}");
        if !CONTENT_TYPES.contains(&content_type) {
            warnings.push(Problem::new(
                &shown,
                format!("content type \"{content_type}\" is not one botd can render; a flow that says one of these elements fails with the bot's error message"),
            ));
        }
        let json = match crate::config::read_json(&path) {
            Ok(j) => j,
            Err(p) => {
                problems.push(Problem::new(&shown, p.message));
                continue;
            }
        };
        let Some(list) = json.as_array() else {
            problems.push(Problem::new(&shown, "must be an array of content elements"));
            continue;
        };
        for (i, item) in list.iter().enumerate() {
            let id = item.get("id").and_then(Value::as_str);
            let form = item.get("formData").and_then(Value::as_object);
            match (id, form) {
                (Some(id), Some(form)) => {
                    elements.insert(
                        id.to_string(),
                        ContentElement {
                            id: id.to_string(),
                            content_type: content_type.to_string(),
                            form_data: form.clone(),
                        },
                    );
                }
                _ => problems.push(Problem::new(
                    &shown,
                    format!("[{i}] needs an \"id\" string and a \"formData\" object"),
                )),
            }
        }
    }
    LoadedElements {
        elements,
        errors: problems,
        warnings,
    }
}

/// The element's properties for `lang`: `prop$<lang>`, else `prop$<default>`, else the plain
/// `prop` key (botd's fix of §11.1: template elements without suffixes render).
pub fn translate(form: &Map<String, Value>, lang: &str, default_lang: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in form {
        if !key.contains('$') {
            out.insert(key.clone(), value.clone());
        }
    }
    for wanted in [default_lang, lang] {
        let suffix = format!("${wanted}");
        for (key, value) in form {
            if let Some(prop) = key.strip_suffix(&suffix) {
                if !prop.is_empty() {
                    out.insert(prop.to_string(), value.clone());
                }
            }
        }
    }
    out
}

/// Renders `data` (formData merged with args) as `content_type` for `channel` (§11.3).
/// `bot_url` is EXTERNAL_URL, used to make media paths absolute.
pub fn render(
    content_type: &str,
    data: &Map<String, Value>,
    channel: &str,
    bot_url: &str,
) -> Result<Vec<Value>, String> {
    let channel = match channel {
        "api" | "web" => "api",
        "messenger" => "messenger",
        "telegram" => "telegram",
        _ => return Ok(Vec::new()),
    };
    let typing = data.get("typing").cloned().unwrap_or(Value::Null);
    let typing_payload = |out: &mut Vec<Value>| {
        if channel == "messenger" {
            out.push(typing_json(&typing));
        } else if truthy(&typing) {
            out.push(json!({"type": "typing", "value": typing}));
        }
    };
    let text = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_string);
    let mut out = Vec::new();
    match content_type {
        "builtin_text" => {
            typing_payload(&mut out);
            let body = text("text").unwrap_or_default();
            if channel == "messenger" {
                out.push(json!({"text": body}));
            } else {
                out.push(json!({"type": "text", "markdown": true, "text": body}));
            }
        }
        "builtin_image" => {
            let url = resolve_url(bot_url, &text("image").unwrap_or_default());
            let title = data.get("title").cloned().unwrap_or(Value::Null);
            match channel {
                "api" => {
                    typing_payload(&mut out);
                    out.push(json!({"type": "file", "url": url}));
                }
                "messenger" => {
                    typing_payload(&mut out);
                    out.push(json!({"attachment": {"type": "template", "payload": {
                        "template_type": "generic", "elements": [{"title": title, "image_url": url}]}}}));
                }
                // 11.9's Telegram image: sendPhoto, or sendAnimation for a .gif.
                _ => {
                    typing_payload(&mut out);
                    let mut image = json!({"type": "image", "url": url});
                    if let Some(t) = title.as_str() {
                        image["title"] = Value::String(t.to_string());
                    }
                    out.push(image);
                }
            }
        }
        "builtin_card" => {
            let card = Value::Object(data.clone());
            let mut carousel = Map::new();
            carousel.insert("items".into(), json!([card]));
            return render("builtin_carousel", &carousel, channel, bot_url);
        }
        "builtin_carousel" => {
            let items = data
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            typing_payload(&mut out);
            if channel == "messenger" {
                let elements = items
                    .iter()
                    .map(|card| messenger_card(card, bot_url))
                    .collect::<Result<Vec<_>, _>>()?;
                out.push(json!({"attachment": {"type": "template", "payload": {"template_type": "generic", "elements": elements}}}));
            } else {
                let elements: Vec<Value> =
                    items.iter().map(|card| web_card(card, bot_url)).collect();
                out.push(json!({"text": " ", "type": "carousel", "elements": elements}));
            }
        }
        "builtin_single-choice" => {
            let choices = data
                .get("choices")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            typing_payload(&mut out);
            let body = text("text").unwrap_or_default();
            if channel == "messenger" {
                let replies: Vec<Value> = choices
                    .iter()
                    .map(|c| json!({"content_type": "text", "title": c["title"], "payload": choice_payload(c)}))
                    .collect();
                out.push(json!({"text": body, "quick_replies": replies}));
            } else {
                let replies: Vec<Value> = choices
                    .iter()
                    .map(|c| json!({"title": c["title"], "payload": choice_payload(c)}))
                    .collect();
                out.push(json!({"text": body, "quick_replies": replies, "typing": typing}));
            }
        }
        "builtin_action-button" => {}
        other => {
            return Err(format!(
                "content type \"{other}\" is not one botd can render"
            ))
        }
    }
    Ok(out)
}

/// The messenger typing payload, sent even when typing is false; an undefined value is left
/// out, which the sender reads as the 1000 ms default.
fn typing_json(typing: &Value) -> Value {
    if typing.is_null() {
        json!({"type": "typing"})
    } else {
        json!({"type": "typing", "value": typing})
    }
}

fn choice_payload(choice: &Value) -> Value {
    match &choice["value"] {
        Value::String(s) => Value::String(s.to_uppercase()),
        Value::Null => Value::Null,
        other => Value::String(other.to_string().to_uppercase()),
    }
}

fn web_card(card: &Value, bot_url: &str) -> Value {
    let picture = card["image"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(|s| resolve_url(bot_url, s));
    let buttons: Vec<Value> = card["actions"]
        .as_array()
        .map(|actions| {
            actions
                .iter()
                .filter_map(|a| match a["action"].as_str() {
                    Some("Say something") => Some(
                        json!({"type": "say_something", "title": a["title"], "text": a["text"]}),
                    ),
                    Some("Open URL") => Some(json!({"type": "open_url", "title": a["title"],
                        "url": a["url"].as_str().map(|u| u.replace("BOT_URL", bot_url))})),
                    Some("Postback") => Some(
                        json!({"type": "postback", "title": a["title"], "payload": a["payload"]}),
                    ),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    json!({"title": card["title"], "picture": picture, "subtitle": card["subtitle"], "buttons": buttons})
}

/// A Messenger generic-template element. Botpress 11.8 throws on `Say something` and
/// `Postback` buttons; botd sends both as Messenger postback buttons instead (a tap comes
/// back as a `callback` event with that text), which is what the author meant.
fn messenger_card(card: &Value, bot_url: &str) -> Result<Value, String> {
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

/// `url.resolve(BOT_URL, path)` for the cases content uses: absolute URLs stay, paths are
/// joined to EXTERNAL_URL.
pub fn resolve_url(bot_url: &str, path: &str) -> String {
    if path.starts_with("http://")
        || path.starts_with("https://")
        || path.starts_with("data:")
        || path.is_empty()
    {
        path.to_string()
    } else if let Some(rest) = path.strip_prefix('/') {
        format!("{}/{rest}", origin(bot_url))
    } else {
        format!("{}/{path}", bot_url.trim_end_matches('/'))
    }
}

fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url.trim_end_matches('/'),
    }
}

/// The channel-web hook of §11.4: for `api`, a payload with `quick_replies` becomes a
/// `custom` QuickReplies wrapper.
pub fn wrap_for_api(payload: Value) -> Value {
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

/// JavaScript truthiness of a JSON value.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// Renders a stored element (`say #!id`): translate, template every string, pick a random
/// variation, render for the channel (§11.1). `scope` holds event/user/session/temp/bot; it
/// is lent to the templates for the call (its objects are moved, not copied) and is as it
/// was on return.
pub fn render_element(
    element: &ContentElement,
    args: &Map<String, Value>,
    scope: &mut Value,
    lang: &str,
    default_lang: &str,
    channel: &str,
    bot_url: &str,
) -> Result<Vec<Value>, String> {
    let ctx = lend_context(args, scope);
    let rendered = render_element_in(element, args, &ctx, lang, default_lang, channel, bot_url);
    give_back(ctx, scope);
    rendered
}

/// Renders a stored element for a QnA answer `#!id`: as Botpress 12 does, the element sees
/// `user`, `session` and `temp` (not the event).
pub fn render_answer_element(
    element: &ContentElement,
    scope: &Value,
    lang: &str,
    default_lang: &str,
    channel: &str,
    bot_url: &str,
) -> Result<Vec<Value>, String> {
    let mut ctx = Map::new();
    for key in ["user", "session", "temp"] {
        ctx.insert(key.into(), scope.get(key).cloned().unwrap_or(json!({})));
    }
    let args = ctx.clone();
    render_element_in(
        element,
        &args,
        &Value::Object(ctx),
        lang,
        default_lang,
        channel,
        bot_url,
    )
}

fn render_element_in(
    element: &ContentElement,
    args: &Map<String, Value>,
    ctx: &Value,
    lang: &str,
    default_lang: &str,
    channel: &str,
    bot_url: &str,
) -> Result<Vec<Value>, String> {
    let form = translate(&element.form_data, lang, default_lang);
    let mut data = match template::render_value(&Value::Object(form), ctx) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    pick_variation(&mut data, ctx);
    let mut merged = Map::new();
    merged.insert("BOT_URL".into(), Value::String(bot_url.to_string()));
    merged.extend(args.clone());
    merged.extend(data);
    render(&element.content_type, &merged, channel, bot_url)
}

/// Renders a content type directly (`say #builtin_text {args}`): the args' strings are
/// templated first.
pub fn render_type(
    content_type: &str,
    args: &Map<String, Value>,
    scope: &Value,
    channel: &str,
    bot_url: &str,
) -> Result<Vec<Value>, String> {
    let ctx = template_context(args, scope);
    let mut data = match template::render_value(&Value::Object(args.clone()), &ctx) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    pick_variation(&mut data, &ctx);
    data.insert("BOT_URL".into(), Value::String(bot_url.to_string()));
    render(content_type, &data, channel, bot_url)
}

/// The objects of the scope templates see, after the args (which they override).
const SCOPE_KEYS: [&str; 5] = ["event", "user", "session", "temp", "bot"];

fn template_context(args: &Map<String, Value>, scope: &Value) -> Value {
    let mut ctx = args.clone();
    if let Value::Object(s) = scope {
        for key in SCOPE_KEYS {
            ctx.insert(key.into(), s.get(key).cloned().unwrap_or(Value::Null));
        }
    }
    Value::Object(ctx)
}

/// The same context as [`template_context`], built by moving the scope's objects out (their
/// places hold `null` meanwhile) rather than copying them: a turn's scope carries the whole
/// event with its NLU and the session, and every `say` used to copy all of it.
fn lend_context(args: &Map<String, Value>, scope: &mut Value) -> Value {
    let mut ctx = args.clone();
    if let Value::Object(s) = scope {
        for key in SCOPE_KEYS {
            ctx.insert(
                key.into(),
                s.get_mut(key).map(Value::take).unwrap_or(Value::Null),
            );
        }
    }
    Value::Object(ctx)
}

/// Puts back what [`lend_context`] moved out, each in its own place.
fn give_back(ctx: Value, scope: &mut Value) {
    if let (Value::Object(mut ctx), Value::Object(s)) = (ctx, scope) {
        for key in SCOPE_KEYS {
            if let (Some(slot), Some(value)) = (s.get_mut(key), ctx.remove(key)) {
                *slot = value;
            }
        }
    }
}

/// One of `[text, …variations]`, chosen at random and rendered again, becomes `text`.
fn pick_variation(data: &mut Map<String, Value>, ctx: &Value) {
    let mut options: Vec<String> = Vec::new();
    if let Some(t) = data.get("text").and_then(Value::as_str) {
        options.push(t.to_string());
    }
    if let Some(vars) = data.get("variations").and_then(Value::as_array) {
        options.extend(
            vars.iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    if options.is_empty() {
        return;
    }
    let pick = &options[super::random::below(options.len() as u64) as usize];
    data.insert("text".into(), Value::String(template::render(pick, ctx)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn text_per_channel() {
        let data = map(json!({"text": "Hi", "typing": true}));
        assert_eq!(
            render("builtin_text", &data, "api", "").unwrap(),
            vec![
                json!({"type": "typing", "value": true}),
                json!({"type": "text", "markdown": true, "text": "Hi"})
            ]
        );
        assert_eq!(
            render("builtin_text", &data, "messenger", "").unwrap(),
            vec![
                json!({"type": "typing", "value": true}),
                json!({"text": "Hi"})
            ]
        );
        let quiet = map(json!({"text": "Hi"}));
        assert_eq!(
            render("builtin_text", &quiet, "telegram", "")
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            render("builtin_text", &quiet, "messenger", "").unwrap()[0],
            json!({"type": "typing"})
        );
        assert!(render("builtin_text", &data, "sms", "").unwrap().is_empty());
    }

    #[test]
    fn single_choice_and_api_wrapper() {
        let data = map(
            json!({"text": "What would you like to know?", "typing": true,
            "choices": [{"title": "What is a Context?", "value": "context"}, {"title": "What is Bot Memory?", "value": "memory"}]}),
        );
        let api = render("builtin_single-choice", &data, "api", "").unwrap();
        assert_eq!(
            wrap_for_api(api[1].clone()),
            json!({"type": "custom", "module": "channel-web", "component": "QuickReplies",
                "quick_replies": [{"title": "What is a Context?", "payload": "CONTEXT"}, {"title": "What is Bot Memory?", "payload": "MEMORY"}],
                "wrapped": {"type": "text", "text": "What would you like to know?", "typing": true}})
        );
        let fb = render("builtin_single-choice", &data, "messenger", "").unwrap();
        assert_eq!(
            fb[1]["quick_replies"][0],
            json!({"content_type": "text", "title": "What is a Context?", "payload": "CONTEXT"})
        );
    }

    #[test]
    fn images_and_cards() {
        let url = "https://bot.example.com";
        let data =
            map(json!({"image": "/api/v1/bots/b/media/cat.png", "title": "Cat", "typing": false}));
        assert_eq!(
            render("builtin_image", &data, "api", url).unwrap(),
            vec![
                json!({"type": "file", "url": "https://bot.example.com/api/v1/bots/b/media/cat.png"})
            ]
        );
        assert_eq!(
            render("builtin_image", &data, "telegram", url).unwrap()[0]["type"],
            "image"
        );
        let card = map(
            json!({"title": "T", "subtitle": "S", "image": "https://x/y.gif",
            "actions": [{"action": "Open URL", "title": "Go", "url": "BOT_URL/page"}, {"action": "Postback", "title": "P", "payload": "PB"}]}),
        );
        let api = render("builtin_card", &card, "api", url).unwrap();
        assert_eq!(api.len(), 1);
        assert_eq!(
            api[0]["elements"][0]["buttons"][0],
            json!({"type": "open_url", "title": "Go", "url": "https://bot.example.com/page"})
        );
        let fb = render("builtin_card", &card, "messenger", url).unwrap();
        assert_eq!(
            fb[1]["attachment"]["payload"]["elements"][0]["buttons"][1],
            json!({"type": "postback", "title": "P", "payload": "PB"})
        );
    }

    #[test]
    fn translation_falls_back_to_plain_keys() {
        let form = map(json!({"text$en": "Hello", "text$fr": "Bonjour", "typing": true}));
        assert_eq!(translate(&form, "fr", "en")["text"], "Bonjour");
        assert_eq!(translate(&form, "de", "en")["text"], "Hello");
        assert_eq!(translate(&form, "de", "en")["typing"], true);
    }
}
