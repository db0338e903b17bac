//! The actions of Botpress's `basic-skills` module that the slot and API-call skills generate
//! (11.8–12.x): `slot_fill`, `slot_not_found`, `slot_reset`, `slot_update_contexts`,
//! `call_api`, and the slot hook that runs after every incoming message. Each has the
//! arguments, outputs and state effects of Botpress's JavaScript, read from its source, for
//! the bot's Botpress version: slots live in `session.extractedSlots` in 11 and
//! `session.slots` in 12, which also adds `turnExpiry` and (12.20) `temp.tryFillSlotCount`.

use super::actions::set_context_list;
use super::bot::BotpressVersion;
use super::dialog::Turn;
use super::event::now_ms;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

/// The most a `call_api` request may take; Converse's own deadline may cut it shorter.
pub const CALL_API_TIMEOUT: Duration = Duration::from_secs(10);

/// `slot_not_found` never lets more than this many attempts through, whatever the skill says.
const SLOT_RETRY_HARD_LIMIT: f64 = 10.0;

fn text_arg(args: &Map<String, Value>, key: &str) -> Option<String> {
    match args.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    }
}

/// The session's slots (`extractedSlots`, or `slots` in Botpress 12), made an object if they
/// are not one (the hook does it in Botpress).
fn extracted_slots(version: BotpressVersion, scope: &mut Value) -> &mut Map<String, Value> {
    if !scope["session"].is_object() {
        scope["session"] = json!({});
    }
    let session = &mut scope["session"];
    let key = version.slots_key();
    if !session[key].is_object() {
        session[key] = json!({});
    }
    session[key].as_object_mut().expect("just made an object")
}

/// The after-incoming slot hook (`05_extract_slots`): counts a turn on every stored slot and
/// drops those past their `expiresAfterTurns`, then stores each slot the NLU filled, unless
/// the stored one says it may not be overwritten.
pub fn extract_slots_hook(version: BotpressVersion, session: &mut Value, nlu: &Value) {
    let key = version.slots_key();
    if !session[key].is_object() {
        session[key] = json!({});
    }
    let Some(slots) = session[key].as_object_mut() else {
        return;
    };
    for slot in slots.values_mut() {
        if let Some(turns) = slot.get("turns").and_then(Value::as_f64) {
            slot["turns"] = json!(turns + 1.0);
        }
    }
    // Botpress 12 also ignores a negative expiry.
    slots.retain(|_, slot| {
        let (Some(turns), Some(expiry)) = (
            slot.get("turns").and_then(Value::as_f64),
            slot.get("expiresAfterTurns").and_then(Value::as_f64),
        ) else {
            return true;
        };
        (version.0 >= 12 && expiry <= -1.0) || turns < expiry
    });
    let filled = nlu["slots"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values());
    for slot in filled {
        // NLU gives a list, best first, when it is not sure.
        let slot = match slot {
            Value::Array(list) => match list.first() {
                Some(s) => s,
                None => continue,
            },
            s => s,
        };
        if !super::content::truthy(&slot["value"]) {
            continue;
        }
        let Some(name) = slot["name"].as_str() else {
            continue;
        };
        if slots
            .get(name)
            .is_some_and(|s| s["overwritable"] == json!(false))
        {
            continue;
        }
        let mut stored = slot.as_object().cloned().unwrap_or_default();
        stored.insert("timestamp".into(), json!(now_ms()));
        stored.insert("turns".into(), json!(0));
        stored.insert("overwritable".into(), json!(true));
        stored.insert("expiresAfterTurns".into(), json!(false));
        slots.insert("notFound".into(), json!(0));
        slots.insert(name.to_string(), Value::Object(stored));
    }
}

/// `basic-skills/slot_fill {slotName, entities}`: the first NLU entity of one of the named
/// types fills the slot when it is empty; `any` takes the whole text, but only when the NLU
/// found no entity at all (as Botpress's branches do).
pub fn slot_fill(args: &Map<String, Value>, turn: &mut Turn) -> Result<(), String> {
    let slot_name = text_arg(args, "slotName").unwrap_or_else(|| "undefined".into());
    let entities_arg = text_arg(args, "entities").ok_or("slot_fill needs \"entities\"")?;
    let wanted: Vec<&str> = entities_arg.split(',').collect();
    let event = &turn.scope["event"];
    let found: Vec<Value> = event["nlu"]["entities"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let candidates: Vec<Value> = if !found.is_empty() {
        found
            .into_iter()
            .filter(|e| e["name"].as_str().is_some_and(|n| wanted.contains(&n)))
            .collect()
    } else if wanted.contains(&"any") {
        let text = event["payload"]["text"]
            .as_str()
            .filter(|t| !t.is_empty())
            .or_else(|| event["preview"].as_str())
            .unwrap_or("")
            .to_string();
        let length = text.encode_utf16().count();
        vec![
            json!({"name": "any", "type": "any", "meta": {"start": 0, "end": length},
            "data": {"extras": {}, "value": text}}),
        ]
    } else {
        Vec::new()
    };
    let version = turn.bot.botpress_version;
    // Botpress 12 takes the expiry from the skill (`turnExpiry`); 11 has none.
    let expiry = if version.0 >= 12 {
        args.get("turnExpiry").cloned()
    } else {
        Some(json!(false))
    };
    let slots = extracted_slots(version, &mut turn.scope);
    for entity in candidates {
        if slots.get(&slot_name).is_some_and(super::content::truthy) {
            continue;
        }
        let value = entity["data"]["value"].clone();
        let mut slot = json!({"name": slot_name, "value": value, "entity": entity,
            "timestamp": now_ms(), "turns": 0, "overwritable": true});
        if let Some(e) = &expiry {
            slot["expiresAfterTurns"] = e.clone();
        }
        slots.insert(slot_name.clone(), slot);
        slots.insert("notFound".into(), json!(0));
    }
    Ok(())
}

/// `basic-skills/slot_not_found {retryAttempts}`: counts a failed attempt in
/// `session.extractedSlots.notFound`; at the limit, `temp.notExtracted = "true"`.
pub fn slot_not_found(args: &Map<String, Value>, turn: &mut Turn) -> Result<(), String> {
    let attempts = args.get("retryAttempts").map_or(f64::NAN, |v| match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => super::expr::string_to_number(s),
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Null => 0.0,
        _ => f64::NAN,
    });
    let limit = attempts.min(SLOT_RETRY_HARD_LIMIT);
    let version = turn.bot.botpress_version;
    let slots = extracted_slots(version, &mut turn.scope);
    let mut count = slots.get("notFound").and_then(Value::as_f64).unwrap_or(0.0);
    if count == 0.0 {
        count = 1.0;
    }
    slots.insert("notFound".into(), json!(count));
    // From 12.20 the attempts are counted in temp; an unset count compares false.
    let tries = if version.counts_slot_tries_in_temp() {
        turn.scope["temp"]["tryFillSlotCount"]
            .as_f64()
            .unwrap_or(f64::NAN)
    } else {
        count
    };
    let temp = super::actions::object_mut(&mut turn.scope, "temp");
    // NaN compares false: Botpress then goes straight to "not extracted".
    if tries < limit {
        if version.counts_slot_tries_in_temp() {
            temp.insert("tryFillSlotCount".into(), json!(tries + 1.0));
        } else {
            extracted_slots(version, &mut turn.scope).insert("notFound".into(), json!(count + 1.0));
        }
    } else {
        temp.insert("notExtracted".into(), json!("true"));
    }
    Ok(())
}

/// `basic-skills/slot_reset {slotName}`: forgets the slot.
pub fn slot_reset(args: &Map<String, Value>, turn: &mut Turn) -> Result<(), String> {
    let slot_name = text_arg(args, "slotName").unwrap_or_else(|| "undefined".into());
    extracted_slots(turn.bot.botpress_version, &mut turn.scope).remove(&slot_name);
    Ok(())
}

/// `basic-skills/slot_update_contexts {intentName}`: the session listens to the intent's
/// contexts, each for 1000 turns (replacing the contexts it had).
pub fn slot_update_contexts(args: &Map<String, Value>, turn: &mut Turn) -> Result<(), String> {
    let intent = text_arg(args, "intentName").ok_or("slot_update_contexts needs \"intentName\"")?;
    let contexts = turn
        .bot
        .intent_contexts
        .get(&intent)
        .ok_or_else(|| format!("intent \"{intent}\" does not exist"))?
        .clone();
    let session = super::actions::object_mut(&mut turn.scope, "session");
    set_context_list(session, contexts.into_iter().map(|c| (c, 1000)).collect());
    if turn.bot.botpress_version.counts_slot_tries_in_temp() {
        let temp = super::actions::object_mut(&mut turn.scope, "temp");
        temp.insert("tryFillSlotCount".into(), json!(1));
        for flag in ["extracted", "notExtracted", "alreadyExtracted"] {
            temp.insert(flag.into(), json!(false));
        }
    }
    Ok(())
}

/// What `call_api` stores in `memory.variable`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResult {
    /// `{body, status}` after a 2xx answer, `{status}` otherwise (the status code, or a
    /// network error code such as `ECONNREFUSED`).
    pub stored: Value,
    pub valid: bool,
}

/// `basic-skills/call_api {url, method, body, headers, memory, variable}`: headers and body
/// are rendered as templates over `{event, user, temp, session}` (the URL is not, as in
/// Botpress); the response goes to `<memory>.<variable>` and `temp.valid` says whether the
/// call succeeded.
pub fn call_api(args: &Map<String, Value>, turn: &mut Turn) -> Result<(), String> {
    let memory = text_arg(args, "memory").ok_or("call_api needs \"memory\"")?;
    if !["user", "session", "temp"].contains(&memory.as_str()) {
        return Err(format!(
            "call_api: memory \"{memory}\" must be user, session or temp"
        ));
    }
    let variable = text_arg(args, "variable").ok_or("call_api needs \"variable\"")?;
    let url = text_arg(args, "url").ok_or("call_api needs \"url\"")?;
    let method = text_arg(args, "method").unwrap_or_else(|| "get".into());
    let ctx = json!({
        "event": turn.scope["event"], "user": turn.scope["user"],
        "temp": turn.scope["temp"], "session": turn.scope["session"],
    });
    let headers = args
        .get("headers")
        .map(|h| super::template::render_value(h, &super::template::Context::data(&ctx)));
    let body = args
        .get("body")
        .filter(|b| !b.is_null())
        .map(|b| super::template::render_value(b, &super::template::Context::data(&ctx)));
    let timeout = match turn.deadline {
        Some(d) => d
            .saturating_duration_since(Instant::now())
            .min(CALL_API_TIMEOUT),
        None => CALL_API_TIMEOUT,
    };
    let result = request(&method, &url, headers.as_ref(), body.as_ref(), timeout);
    if !result.valid {
        log::error!(
            "bot \"{}\": Error: {} while calling resource \"{url}\"",
            turn.bot.id,
            result.stored["status"]
                .as_str()
                .map_or_else(|| result.stored["status"].to_string(), str::to_string)
        );
    }
    super::actions::object_mut(&mut turn.scope, &memory).insert(variable, result.stored);
    super::actions::object_mut(&mut turn.scope, "temp").insert("valid".into(), json!(result.valid));
    Ok(())
}

/// The HTTP request of `call_api`, as axios makes it: a string body is sent as it is (with
/// axios's `application/x-www-form-urlencoded` default for POST, PUT and PATCH), an object
/// body as JSON; a JSON answer is parsed, any other answer kept as text.
pub fn request(
    method: &str,
    url: &str,
    headers: Option<&Value>,
    body: Option<&Value>,
    timeout: Duration,
) -> ApiResult {
    let method = method.to_uppercase();
    let agent = ureq::AgentBuilder::new().timeout(timeout).build();
    let mut req = agent.request(&method, url);
    let mut has_content_type = false;
    for (name, value) in headers.and_then(Value::as_object).into_iter().flatten() {
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        has_content_type |= name.eq_ignore_ascii_case("content-type");
        req = req.set(name, &value);
    }
    let sends_body = ["POST", "PUT", "PATCH"].contains(&method.as_str());
    let answer = match body {
        Some(Value::String(s)) => {
            if !has_content_type && sends_body {
                req = req.set("Content-Type", "application/x-www-form-urlencoded");
            }
            req.send_string(s)
        }
        Some(other) => {
            if !has_content_type {
                req = req.set("Content-Type", "application/json;charset=utf-8");
            }
            req.send_string(&other.to_string())
        }
        None => req.call(),
    };
    match answer {
        Ok(response) => {
            let status = response.status();
            let text = response.into_string().unwrap_or_default();
            let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
            ApiResult {
                stored: json!({"body": body, "status": status}),
                valid: true,
            }
        }
        Err(ureq::Error::Status(status, _)) => ApiResult {
            stored: json!({ "status": status }),
            valid: false,
        },
        Err(ureq::Error::Transport(t)) => ApiResult {
            stored: json!({ "status": transport_code(&t) }),
            valid: false,
        },
    }
}

/// The Node.js error code axios reports for a failed connection.
fn transport_code(t: &ureq::Transport) -> &'static str {
    use ureq::ErrorKind;
    match t.kind() {
        ErrorKind::Dns => "ENOTFOUND",
        ErrorKind::ConnectionFailed => "ECONNREFUSED",
        ErrorKind::InvalidUrl | ErrorKind::UnknownScheme => "ERR_INVALID_URL",
        ErrorKind::Io => {
            let timed_out = std::error::Error::source(t)
                .and_then(|e| e.downcast_ref::<std::io::Error>())
                .is_some_and(|e| {
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                    )
                });
            if timed_out {
                "ECONNABORTED"
            } else {
                "ECONNRESET"
            }
        }
        _ => "EPROTO",
    }
}
