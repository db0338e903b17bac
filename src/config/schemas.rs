//! The configuration schemas of the modules botd implements. They are the single source of
//! truth for defaults, types and descriptions: the files written at first start, the merge of
//! §6, the validation of `botd check` and `GET /assets/modules/<module>/config.schema.json`
//! all read them from here.

use serde_json::{json, Map, Value};

/// The modules whose configuration botd reads, in the order they are written at first start.
pub const MODULES: [&str; 5] = [
    "basic-skills",
    "channel-messenger",
    "channel-telegram",
    "nlu",
    "qna",
];

/// The JSON schema of `module`, or `None` for a module botd does not have.
pub fn schema(module: &str) -> Option<Value> {
    let properties = match module {
        // Botpress 11.9.7's `modules/basic-skills/src/config.ts` (12 adds the mail transport).
        "basic-skills" => json!({
            "defaultContentElement": {"type": "string", "default": "builtin_single-choice", "description": "The content type Botpress's flow editor offers for a new choice skill; a skill already in a flow names its own element. Unless disableIntegrityCheck, botd check warns when botd cannot render it."},
            "defaultContentRenderer": {"type": "string", "default": "#builtin_single-choice", "description": "Read by Botpress's flow editor only (new choice skills); accepted for compatibility."},
            "defaultMaxAttempts": {"type": "number", "default": 3, "description": "The retries Botpress's flow editor offers for a new choice skill; a skill already in a flow holds its own (its invalid-answer transition)."},
            "disableIntegrityCheck": {"type": "boolean", "default": true, "description": "When false, botd check warns if defaultContentElement is not a content type botd renders (as Botpress logs at start)."},
            "matchNumbers": {"type": "boolean", "default": true, "description": "The choice skill takes an answer such as 1, #2 or 3) as that choice of its element."},
            "matchNLU": {"type": "boolean", "default": true, "description": "The choice skill takes a choice whose keywords include intent:<name> when the NLU understood that intent."},
            "transportConnectionString": {"type": ["string", "object"], "default": "<<change me>>", "description": "Botpress 12's mail transport for basic-skills/send_email, which botd does not run; accepted for compatibility."}
        }),
        "channel-messenger" => json!({
            "enabled": {"type": "boolean", "default": false, "description": "Turns Messenger on for this bot (per bot)."},
            "accessToken": {"type": "string", "description": "Page Access Token of the Facebook Page this bot answers (per bot)."},
            "appSecret": {"type": "string", "description": "App Secret of the Facebook App, used to check X-Hub-Signature-256 (or X-Hub-Signature) on every webhook call (global). Empty: no webhook is registered."},
            "verifyToken": {"type": "string", "description": "The token you type in the Facebook webhook setup; checked on the verification handshake (global). Empty: no webhook is registered."},
            "greeting": {"type": "string", "description": "Messenger profile greeting text (per bot). Absent: the greeting is deleted."},
            "getStarted": {"type": "string", "description": "Payload of the Get Started button (per bot); a tap arrives as a callback event with this text. Absent: left as it is on Facebook."},
            "persistentMenu": {"type": "array", "default": [], "description": "Messenger persistent menu, as the Messenger Platform defines it (per bot). Empty: the menu is deleted."},
            "graphApiBase": {"type": "string", "default": "https://graph.facebook.com", "description": "Base URL of the Graph API (global; change it only for tests or a proxy)."},
            "graphApiVersion": {"type": "string", "default": "v23.0", "description": "Graph API version used for every call (global). Botpress 11 used v3.2, which Facebook has retired."},
            "maxBodySize": {"type": "string", "format": "size", "default": "1mb", "description": "Largest webhook body accepted (global); larger ones get 413. Facebook batches can exceed 300 KB."},
            "requireSha256": {"type": "boolean", "default": false, "description": "Reject webhook calls that carry no X-Hub-Signature-256 header, i.e. accept no SHA-1-only signature (global)."},
            "typingDelay": {"type": "boolean", "default": true, "description": "Wait the Botpress typing delay between typing_on and typing_off (set false for benchmarks). The wait holds up only that conversation."}
        }),
        "channel-telegram" => json!({
            "enabled": {"type": "boolean", "description": "Turns Telegram on for this bot. A file with a botToken and no enabled key counts as enabled."},
            "botToken": {"type": "string", "description": "The token BotFather gave you (per bot). Never logged."},
            "apiBase": {"type": "string", "default": "https://api.telegram.org", "description": "Base URL of the Bot API (change it only for tests or a local Bot API server)."},
            "pollTimeout": {"type": "string", "format": "duration", "default": "25s", "description": "Long-polling timeout of getUpdates (whole seconds, 1 to 50)."},
            "parseMode": {"type": "string", "default": "Markdown", "description": "parse_mode for text messages (Markdown, MarkdownV2, HTML, or empty for plain text); a rejected message is resent as plain text."},
            "typingDelay": {"type": "boolean", "default": true, "description": "Wait the Botpress typing delay after sendChatAction (set false for benchmarks)."},
            "throttle": {"type": "boolean", "default": true, "description": "Pace outgoing messages as Telegram asks: about 1 a second per chat, 20 a minute per group, 30 a second in all (order kept). Set false only for tests or a local Bot API server; a 429 is still honoured."},
            "mode": {"type": "string", "default": "polling", "description": "How updates arrive: \"polling\" (getUpdates; no public address needed) or \"webhook\" (botd calls setWebhook with {EXTERNAL_URL}/api/v1/bots/<bot>/mod/channel-telegram/webhook and Telegram posts each update there)."},
            "webhookSecret": {"type": "string", "description": "The secret_token given to setWebhook and checked on X-Telegram-Bot-Api-Secret-Token (1 to 256 of A-Z a-z 0-9 _ -). Empty: botd makes one and keeps it in the database. Never logged."}
        }),
        "nlu" => json!({
            "confidenceTreshold": {"type": "number", "default": 0.7, "description": "Minimum confidence for an intent to be chosen (the misspelling is Botpress's key name)."},
            "ducklingURL": {"type": "string", "default": "https://duckling.botpress.io", "description": "Accepted for compatibility; botd computes system entities itself and never calls Duckling."},
            "ducklingEnabled": {"type": "boolean", "default": true, "description": "Turns the system entities (numeral, ordinal, time, duration, email, url, phoneNumber, amountOfMoney, percentage) on or off; botd computes them itself, without Duckling."},
            "autoTrainInterval": {"type": "string", "format": "duration", "default": "30s", "description": "Accepted for compatibility; botd retrains when the bot's files change."},
            "preloadModels": {"type": "boolean", "default": false, "description": "Accepted for compatibility; botd always trains when a bot loads."},
            "languageModel": {"type": "string", "default": "en", "description": "Accepted for compatibility; botd needs no language model download."},
            "fastTextOverrides": {"type": "object", "default": {}, "description": "Accepted for compatibility; botd does not use fastText."}
        }),
        "qna" => json!({
            "qnaDir": {"type": "string", "default": "./qna", "description": "Folder of the QnA files, relative to the bot folder."},
            "textRenderer": {"type": "string", "default": "#builtin_text", "description": "Content type used to render answers."},
            "exportCsvEncoding": {"type": "string", "default": "utf8", "description": "Accepted for compatibility (no CSV export in botd)."},
            "qnaMakerKnowledgebase": {"type": "string", "default": "botpress", "description": "Accepted for compatibility; Microsoft QnA Maker is not supported."},
            "qnaMakerApiKey": {"type": "string", "description": "Not supported by botd: setting it is reported as an error."},
            "qnaCategories": {"type": "string", "default": "global", "description": "Accepted for compatibility (the categories the Botpress editor offers); each QnA entry's own category is the NLU context it answers in."}
        }),
        _ => return None,
    };
    Some(json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": module,
        "type": "object",
        "additionalProperties": false,
        "properties": with_schema_key(properties),
    }))
}

fn with_schema_key(properties: Value) -> Value {
    let mut map = match properties {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    map.insert(
        "$schema".into(),
        json!({"type": "string", "description": "Path of this schema, for editors."}),
    );
    Value::Object(map)
}

/// The defaults of `module`'s schema, as an object.
pub fn defaults(module: &str) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(schema) = schema(module) {
        if let Some(props) = schema["properties"].as_object() {
            for (key, prop) in props {
                if let Some(default) = prop.get("default") {
                    out.insert(key.clone(), default.clone());
                }
            }
        }
    }
    out
}
