//! Content (§11): stored content elements, the content types botd knows, and the work every
//! channel shares: translation, templating, variations, media URLs. What a content type looks
//! like on a channel is that channel's business: each channel module registers its renderer
//! ([`register_channel`]), and the engine knows no channel by name.

use super::bot::BotpressVersion;
use super::template;
use super::Problem;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{OnceLock, RwLock};

/// The content types botd renders: Botpress 11.9's builtin ones, the extensions module's
/// `dropdown`, and Botpress 12's video, audio, file and location.
pub const CONTENT_TYPES: [&str; 11] = [
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
                format!("content type \"{content_type}\" is not one botd can render; a flow that says one of these elements fails there (logged, the turn stops)"),
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
    // Botpress's `formData[prop$lang] || formData[prop$defaultLang]`: the user's language
    // when its value is truthy, else the default language's.
    for (wanted, only_truthy) in [(default_lang, false), (lang, true)] {
        let suffix = format!("${wanted}");
        for (key, value) in form {
            if let Some(prop) = key.strip_suffix(&suffix) {
                if !prop.is_empty() && (!only_truthy || truthy(value)) {
                    out.insert(prop.to_string(), value.clone());
                }
            }
        }
    }
    out
}

/// Content ready for a channel: its type and its data (form data translated and templated,
/// a variation picked, the say's args and `BOT_URL` merged in). Channels render it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentPayload {
    pub content_type: String,
    pub data: Map<String, Value>,
    /// The Botpress release of the bot, whose renderers the channel follows.
    pub botpress: BotpressVersion,
}

/// Where rendered content goes: the channel, the bot's public URL (for media), and the
/// Botpress release whose renderers apply.
#[derive(Debug, Clone, Copy)]
pub struct RenderTarget<'a> {
    pub channel: &'a str,
    pub bot_url: &'a str,
    pub botpress: BotpressVersion,
}

impl ContentPayload {
    /// A payload of `content_type` with `data` (an object) for an 11.9.7 bot: the renderers'
    /// unit tests build their inputs with it.
    #[cfg(test)]
    pub fn for_test(content_type: &str, data: Value) -> ContentPayload {
        ContentPayload {
            content_type: content_type.into(),
            data: data.as_object().expect("an object").clone(),
            botpress: BotpressVersion(11, 9, 7),
        }
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(Value::as_str)
    }

    pub fn get(&self, key: &str) -> &Value {
        self.data.get(key).unwrap_or(&Value::Null)
    }
}

/// How one channel shows content, registered by the channel's module: Botpress's renderer of
/// each content type for that channel, and the channel's outgoing hook (the `api` channel
/// wraps quick replies).
#[derive(Clone, Copy)]
pub struct ChannelRenderer {
    pub render: fn(&ContentPayload) -> Result<Vec<Value>, String>,
    pub outgoing: fn(Value) -> Value,
}

fn renderers() -> &'static RwLock<HashMap<String, ChannelRenderer>> {
    static RENDERERS: OnceLock<RwLock<HashMap<String, ChannelRenderer>>> = OnceLock::new();
    RENDERERS.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Makes `renderer` the way content is shown on `channel`.
pub fn register_channel(channel: &str, renderer: ChannelRenderer) {
    renderers()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(channel.to_string(), renderer);
}

fn renderer_for(channel: &str) -> Option<ChannelRenderer> {
    renderers()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(channel)
        .copied()
}

/// Renders `data` as `content_type` for `channel` (§11.3), with the channel's registered
/// renderer; a channel without one shows nothing.
pub fn render(
    content_type: &str,
    data: &Map<String, Value>,
    target: RenderTarget,
) -> Result<Vec<Value>, String> {
    if !CONTENT_TYPES.contains(&content_type) {
        return Err(format!(
            "content type \"{content_type}\" is not one botd can render"
        ));
    }
    let Some(renderer) = renderer_for(target.channel) else {
        log::debug!("no content renderer for channel \"{}\"", target.channel);
        return Ok(Vec::new());
    };
    (renderer.render)(&ContentPayload {
        content_type: content_type.to_string(),
        data: data.clone(),
        botpress: target.botpress,
    })
}

/// A payload as it leaves for `channel`: the channel's outgoing hook applied.
pub fn outgoing(channel: &str, payload: Value) -> Value {
    match renderer_for(channel) {
        Some(r) => (r.outgoing)(payload),
        None => payload,
    }
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
    target: RenderTarget,
) -> Result<Vec<Value>, String> {
    let ctx = lend_context(args, scope);
    let rendered = render_element_in(element, args, &ctx, lang, default_lang, target);
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
    target: RenderTarget,
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
        target,
    )
}

fn render_element_in(
    element: &ContentElement,
    args: &Map<String, Value>,
    ctx: &Value,
    lang: &str,
    default_lang: &str,
    target: RenderTarget,
) -> Result<Vec<Value>, String> {
    let form = translate(&element.form_data, lang, default_lang);
    let ctx = template::Context::with_authored(ctx, authored_keys(args));
    let mut data = match template::render_value(&Value::Object(form), &ctx) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    pick_variation(&mut data);
    let mut merged = Map::new();
    merged.insert("BOT_URL".into(), Value::String(target.bot_url.to_string()));
    merged.extend(args.clone());
    merged.extend(data);
    render(&element.content_type, &merged, target)
}

/// Renders a content type directly (`say #builtin_text {args}`): the args' strings are
/// templated first.
pub fn render_type(
    content_type: &str,
    args: &Map<String, Value>,
    scope: &Value,
    target: RenderTarget,
) -> Result<Vec<Value>, String> {
    let values = template_context(args, scope);
    let ctx = template::Context::with_authored(&values, authored_keys(args));
    let mut data = match template::render_value(&Value::Object(args.clone()), &ctx) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    pick_variation(&mut data);
    data.insert("BOT_URL".into(), Value::String(target.bot_url.to_string()));
    render(content_type, &data, target)
}

/// The objects of the scope templates see, after the args (which they override).
const SCOPE_KEYS: [&str; 5] = ["event", "user", "session", "temp", "bot"];

/// The args that templates see: the author wrote them in the flow (or the QnA file), so a
/// template among them is rendered in turn, as Botpress' later passes do.
fn authored_keys(args: &Map<String, Value>) -> impl Iterator<Item = &str> {
    args.keys()
        .map(String::as_str)
        .filter(|k| !SCOPE_KEYS.contains(k))
}

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

/// One of `[text, …variations]` (already rendered) is chosen at random and becomes `text`.
/// Botpress renders the choice a second time: for authors' text that only adds depth beyond
/// the three levels of nesting, and otherwise re-reads what users typed, so it is left out.
fn pick_variation(data: &mut Map<String, Value>) {
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
    data.insert("text".into(), Value::String(pick.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn translation_falls_back_to_plain_keys() {
        let form = map(json!({"text$en": "Hello", "text$fr": "Bonjour", "typing": true}));
        assert_eq!(translate(&form, "fr", "en")["text"], "Bonjour");
        assert_eq!(translate(&form, "de", "en")["text"], "Hello");
        assert_eq!(translate(&form, "de", "en")["typing"], true);
        // `formData[prop$lang] || formData[prop$defaultLang]`: a falsy value in the user's
        // language falls back to the default language's, property by property.
        let form = map(
            json!({"text$en": "Hi", "text$fr": "", "typing$en": true, "typing$fr": false,
            "variations$en": ["Hey"], "variations$fr": ["Salut"]}),
        );
        let fr = translate(&form, "fr", "en");
        assert_eq!(fr["text"], "Hi");
        assert_eq!(fr["typing"], true);
        assert_eq!(fr["variations"], json!(["Salut"]));
    }

    #[test]
    fn unknown_types_and_channels() {
        let data = map(json!({"text": "Hi"}));
        let target = |channel| RenderTarget {
            channel,
            bot_url: "",
            botpress: BotpressVersion(11, 9, 7),
        };
        assert!(render("custom_widget", &data, target("api"))
            .unwrap_err()
            .contains("\"custom_widget\" is not one botd can render"));
        assert_eq!(
            render("builtin_text", &data, target("no-such-channel")).unwrap(),
            Vec::<Value>::new()
        );
    }

    #[test]
    fn urls_resolve_against_the_bot_url() {
        let base = "https://bot.example.com/sub";
        assert_eq!(
            resolve_url(base, "/api/v1/bots/b/media/x.png"),
            "https://bot.example.com/api/v1/bots/b/media/x.png"
        );
        assert_eq!(resolve_url(base, "http://o/y"), "http://o/y");
    }
}
