//! The actions botd runs natively (§8.4, §8.6): every action of Botpress's `builtin` module
//! (11.9.7, plus 12's `resetSession`, `switchLanguage` and `removeVariable`), the choice skill's, the slot and API-call skills' (in
//! [`super::skills`]) and the analytics module's metrics. Any other name is a custom
//! JavaScript action, run by [`super::js`] from the bot's `actions/` or `data/global/actions/`;
//! the load report names those with no file, and calling one fails its instruction as an
//! unknown action does in Botpress (logged; the turn stops there and is saved).

use super::content::ContentElement;
use super::dialog::Turn;
use super::flow::Flow;
use super::Problem;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Every action botd implements.
pub const NATIVE_ACTIONS: [&str; 23] = [
    "builtin/setVariable",
    "builtin/removeVariable",
    "builtin/setGlobalVariable",
    "builtin/getGlobalVariable",
    "builtin/resetGlobalVariable",
    "builtin/incrementNumberOfConversations",
    "builtin/getNumberOfConversations",
    "builtin/appendContext",
    "builtin/removeContext",
    "builtin/resetContext",
    "builtin/resetSession",
    "builtin/switchLanguage",
    "builtin/wait",
    "basic-skills/choice_parse_answer",
    "basic-skills/choice_invalid_answer",
    "basic-skills/slot_fill",
    "basic-skills/slot_not_found",
    "basic-skills/slot_reset",
    "basic-skills/slot_update_contexts",
    "basic-skills/call_api",
    "analytics/increment",
    "analytics/decrement",
    "analytics/set",
];

/// Actions Botpress's own modules ship that botd does not run (they need a service botd
/// does not have); the load report says so rather than calling them custom JavaScript.
const MISSING_STANDARD_ACTIONS: [(&str, &str); 6] = [
    (
        "builtin/sendFeedback",
        "saves feedback on a Botpress 12 NDU workflow's event, which botd neither runs nor stores",
    ),
    (
        "builtin/storeFileLocally",
        "downloads a file into Botpress's media storage, which botd does not write to",
    ),
    (
        "basic-skills/send_email",
        "sends mail through an SMTP server, which botd has no configuration for",
    ),
    (
        "channel-web/sendDataToChat",
        "talks to Botpress's web chat, a channel botd does not have",
    ),
    (
        "hitlnext/handoff",
        "hands the conversation to an agent of Botpress's HITL module, which botd does not have",
    ),
    (
        "misunderstood/flag",
        "flags a message for Botpress's misunderstood-messages module, which botd does not have",
    ),
];

/// One `onEnter`/`onReceive` item, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `say #!element-id {args}` or `say #content_type {args}`.
    Say {
        reference: String,
        args: Map<String, Value>,
    },
    /// `module/action {args}`.
    Action {
        name: String,
        args: Map<String, Value>,
    },
}

/// Parses an instruction's text: the name up to the first space, JSON args after it.
pub fn parse_call(text: &str) -> Result<Call, String> {
    let text = text.trim();
    let (head, rest) = text.split_once(' ').unwrap_or((text, ""));
    if head == "say" {
        let rest = rest.trim_start();
        let (reference, args) = rest.split_once(' ').unwrap_or((rest, ""));
        if reference.is_empty() {
            return Err("`say` needs a content element (#!id) or a content type (#type)".into());
        }
        Ok(Call::Say {
            reference: reference.to_string(),
            args: parse_args(args)?,
        })
    } else if head.is_empty() {
        Err("empty instruction".into())
    } else {
        Ok(Call::Action {
            name: head.to_string(),
            args: parse_args(rest)?,
        })
    }
}

fn parse_args(text: &str) -> Result<Map<String, Value>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!("arguments must be a JSON object: {text}")),
        Err(e) => Err(format!("arguments are not valid JSON ({e}): {text}")),
    }
}

/// Load-time check of every onEnter/onReceive: custom actions, unknown content elements,
/// unparseable arguments. Each problem names flow and node.
pub fn check_flow_calls(
    flows: &HashMap<String, Flow>,
    elements: &HashMap<String, ContentElement>,
    shown_root: &str,
    bot_dir: &std::path::Path,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut names: Vec<&String> = flows.keys().collect();
    names.sort();
    for name in names {
        let flow = &flows[name];
        let shown = format!("{shown_root}/flows/{name}");
        let catch_all = flow
            .catch_all_on_receive
            .iter()
            .map(|c| ("catchAll".to_string(), c));
        let nodes = flow.nodes.iter().flat_map(|n| {
            n.on_enter
                .iter()
                .chain(n.on_receive.iter().flatten())
                .chain(n.say_inline.iter())
                .map(move |c| (format!("node \"{}\"", n.name), c))
        });
        for (place, text) in catch_all.chain(nodes) {
            match parse_call(text) {
                Err(e) => problems.push(Problem::new(&shown, format!("{place}: {e}"))),
                Ok(Call::Action { name, .. })
                    if !NATIVE_ACTIONS.contains(&name.as_str())
                        && super::js::find_action(bot_dir, &name).is_none() =>
                {
                    let why = match MISSING_STANDARD_ACTIONS.iter().find(|(n, _)| *n == name) {
                        Some((_, reason)) => {
                            format!("is a Botpress action botd does not have (it {reason})")
                        }
                        None => format!("is custom JavaScript, but there is no actions/{name}.js in the bot nor in data/global/actions/"),
                    };
                    problems.push(Problem::new(
                        &shown,
                        format!("{place}: action \"{name}\" {why}; this node's instruction will fail (logged, the turn stops there)"),
                    ))
                }
                Ok(Call::Say { reference, .. }) => {
                    if let Some(id) = reference.strip_prefix("#!") {
                        match elements.get(id) {
                            None => problems.push(Problem::new(&shown, format!("{place}: content element \"{id}\" does not exist"))),
                            Some(e) if !super::content::CONTENT_TYPES.contains(&e.content_type.as_str()) => problems.push(Problem::new(
                                &shown,
                                format!("{place}: content element \"{id}\" is a \"{}\", which botd cannot render; this node's instruction will fail (logged, the turn stops there)", e.content_type),
                            )),
                            Some(_) => {}
                        }
                    } else {
                        let t = reference.trim_start_matches(['#', '@']);
                        if !super::content::CONTENT_TYPES.contains(&t) {
                            problems.push(Problem::new(
                                &shown,
                                format!("{place}: content type \"{t}\" is not one botd can render"),
                            ));
                        }
                    }
                }
                Ok(_) => {}
            }
        }
    }
    problems
}

/// Runs a native action; `args` have already been templated.
pub fn run(name: &str, args: &Map<String, Value>, turn: &mut Turn) -> Result<(), String> {
    let text = |key: &str| -> Option<String> {
        match args.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        }
    };
    match name {
        "builtin/setVariable" => {
            let kind =
                text("type").ok_or("setVariable needs a \"type\" (user, session, temp or bot)")?;
            let var = text("name").ok_or("setVariable needs a \"name\"")?;
            let value = args.get("value").cloned().unwrap_or(Value::Null);
            if kind == "bot" {
                let mut global = turn
                    .kv_get("global")
                    .unwrap_or_else(|| Value::Object(Map::new()));
                if !global.is_object() {
                    global = Value::Object(Map::new());
                }
                global[var.as_str()] = value;
                turn.scope["bot"] = global.clone();
                turn.kv_set("global", global);
                return Ok(());
            }
            if !["user", "session", "temp"].contains(&kind.as_str()) {
                return Err(format!(
                    "setVariable: unknown type \"{kind}\" (use user, session, temp or bot)"
                ));
            }
            let obj = object_mut(&mut turn.scope, &kind);
            // `value === 'null' || value === '' || typeof value === 'undefined'` erases; a
            // JSON null is a value (kept as null).
            let empty = args.get("value").is_none()
                || value.as_str().is_some_and(|s| s.is_empty() || s == "null");
            if empty {
                obj.remove(&var);
            } else {
                obj.insert(var, value);
            }
        }
        "builtin/removeVariable" => {
            // Botpress 12.28: the bot variable becomes the string 'null'; any other is deleted.
            let kind = text("type").unwrap_or_else(|| "undefined".into());
            let var = text("name").unwrap_or_else(|| "undefined".into());
            if kind == "bot" {
                let mut global = turn
                    .kv_get("global")
                    .filter(Value::is_object)
                    .unwrap_or_else(|| Value::Object(Map::new()));
                global[var.as_str()] = Value::String("null".into());
                turn.scope["bot"] = global.clone();
                turn.kv_set("global", global);
            } else if ["user", "session", "temp"].contains(&kind.as_str()) {
                object_mut(&mut turn.scope, &kind).remove(&var);
            } else {
                return Err(format!(
                    "removeVariable: unknown type \"{kind}\" (use user, session, temp or bot)"
                ));
            }
        }
        "builtin/setGlobalVariable" => {
            let var = text("name").unwrap_or_else(|| "undefined".into());
            let value = args.get("value").cloned().unwrap_or(Value::Null);
            let expiry = text("expiry").unwrap_or_else(|| "never".into());
            let expiry = if expiry == "never" {
                Value::String(expiry)
            } else {
                // An expiry `ms` cannot read makes an invalid date: the value never reads back.
                Value::String(ms_duration(&expiry).map_or_else(
                    || "Invalid date".to_string(),
                    |after| super::event::iso_time(super::event::now_ms() + after),
                ))
            };
            turn.kv_set(
                &global_storage_key(&var),
                json!({"value": value, "expiry": expiry}),
            );
            if let Some(output) = text("output").filter(|o| !o.is_empty()) {
                object_mut(&mut turn.scope, "temp").insert(output, value);
            }
        }
        "builtin/getGlobalVariable" => {
            let var = text("name").unwrap_or_else(|| "undefined".into());
            let output = text("output").unwrap_or_else(|| "undefined".into());
            let value = turn
                .kv_get(&global_storage_key(&var))
                .and_then(unbox_with_expiry);
            let temp = object_mut(&mut turn.scope, "temp");
            // `temp[output] = undefined` leaves no key once the state is saved as JSON.
            match value {
                Some(v) => temp.insert(output, v),
                None => temp.remove(&output),
            };
        }
        "builtin/resetGlobalVariable" => {
            let prefix = global_storage_key(&text("name").unwrap_or_else(|| "undefined".into()));
            let mut keys: Vec<String> = turn
                .kv_writes
                .iter()
                .map(|(k, _)| k.clone())
                .filter(|k| k.starts_with(&prefix))
                .collect();
            turn.store
                .scan(crate::store::Namespace::Kv, &turn.bot.id, &mut |k, _| {
                    if k.starts_with(&prefix) {
                        keys.push(k.to_string());
                    }
                })
                .map_err(|e| format!("resetGlobalVariable: {e}"))?;
            keys.sort();
            keys.dedup();
            // A null entry reads back as no value, as a removed key does.
            for key in keys {
                turn.kv_set(&key, Value::Null);
            }
        }
        "builtin/resetSession" => {
            const KEPT: [&str; 2] = ["lastMessages", "nluContexts"];
            for part in ["temp", "session"] {
                object_mut(&mut turn.scope, part).retain(|k, _| KEPT.contains(&k.as_str()));
            }
        }
        "analytics/increment" | "analytics/decrement" | "analytics/set" => {
            // Botpress posts `{name: "<metric>~<group>", count}` to its analytics module;
            // botd keeps the metric in the bot's KV store. `increment` names it `name`, the
            // other two `metric`, as in Botpress.
            let metric_key = if name == "analytics/increment" {
                "name"
            } else {
                "metric"
            };
            let metric = format!(
                "{}~{}",
                text(metric_key).unwrap_or_else(|| "undefined".into()),
                text("group").unwrap_or_else(|| "undefined".into())
            );
            let count = match args.get("count") {
                None | Some(Value::Null) => 1.0,
                Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
                Some(Value::String(s)) => super::expr::string_to_number(s),
                Some(_) => f64::NAN,
            };
            if !count.is_finite() {
                return Err(format!("{name}: count must be a number"));
            }
            let key = format!("analytics/custom_metrics/{metric}");
            let current = turn.kv_get(&key).and_then(|v| v.as_f64()).unwrap_or(0.0);
            let next = match name {
                "analytics/increment" => current + count,
                "analytics/decrement" => current - count,
                _ => count,
            };
            turn.kv_set(&key, json!(next));
        }
        "basic-skills/slot_fill" => super::skills::slot_fill(args, turn)?,
        "basic-skills/slot_not_found" => super::skills::slot_not_found(args, turn)?,
        "basic-skills/slot_reset" => super::skills::slot_reset(args, turn)?,
        "basic-skills/slot_update_contexts" => super::skills::slot_update_contexts(args, turn)?,
        "basic-skills/call_api" => super::skills::call_api(args, turn)?,
        "builtin/incrementNumberOfConversations" | "builtin/getNumberOfConversations" => {
            let key = format!("storage/users/{}/numberOfConversations", turn.target());
            let current = turn.kv_get(&key).and_then(|v| v.as_f64());
            let value = if name.ends_with("incrementNumberOfConversations") {
                let next = current.map_or(0.0, |n| n + 1.0);
                turn.kv_set(&key, Value::from(next as i64));
                next
            } else {
                current.unwrap_or(0.0)
            };
            if let Some(output) = text("output") {
                object_mut(&mut turn.scope, "temp").insert(output, Value::from(value as i64));
            }
        }
        "builtin/appendContext" => {
            let contexts = text("contexts").ok_or("appendContext needs \"contexts\"")?;
            let ttl = text("ttl").unwrap_or_else(|| "1".into());
            let ttl = ttl
                .trim()
                .parse::<f64>()
                .map_or(1000, |n| (n as i64).clamp(-1, 1_000_000));
            let session = object_mut(&mut turn.scope, "session");
            let mut merged: Vec<(String, i64)> = context_list(session);
            merged.extend(contexts.trim().split(',').map(|c| (c.to_string(), ttl)));
            let mut result: Vec<(String, i64)> = Vec::new();
            for (ctx, ttl) in merged {
                match result.iter_mut().find(|(c, _)| *c == ctx) {
                    Some(existing) => existing.1 = existing.1.max(ttl),
                    None => result.push((ctx, ttl)),
                }
            }
            set_context_list(session, result);
        }
        "builtin/removeContext" => {
            let contexts = text("contexts").ok_or("removeContext needs \"contexts\"")?;
            let remove: Vec<&str> = contexts.trim().split(',').collect();
            let session = object_mut(&mut turn.scope, "session");
            let kept = context_list(session)
                .into_iter()
                .filter(|(c, _)| !remove.contains(&c.as_str()))
                .collect();
            set_context_list(session, kept);
        }
        "builtin/resetContext" => {
            set_context_list(object_mut(&mut turn.scope, "session"), Vec::new());
        }
        "builtin/wait" => wait(args.get("delay"), turn)?,
        "builtin/switchLanguage" => {
            // Botpress 12.2: `event.state.user.language = args.lang` (kept even when it is not
            // one of the bot's languages; content then falls back to the default one).
            let lang = args.get("lang").cloned().unwrap_or(Value::Null);
            let user = object_mut(&mut turn.scope, "user");
            match lang {
                Value::Null => user.remove("language"),
                other => user.insert("language".into(), other),
            };
        }
        "basic-skills/choice_parse_answer" => choice_parse_answer(args, turn)?,
        "basic-skills/choice_invalid_answer" => {
            // Skills from Botpress 12.5 on pass a randomId that suffixes the counter.
            let key = match text("randomId") {
                Some(id) => format!("skill-choice-invalid-count-{id}"),
                None => "skill-choice-invalid-count".to_string(),
            };
            let temp = object_mut(&mut turn.scope, "temp");
            let count = temp.get(&key).and_then(Value::as_f64).unwrap_or(0.0);
            temp.insert(key, Value::from(count as i64 + 1));
        }
        other => {
            // A custom action: the bot's `actions/<name>.js` or `data/global/actions/`.
            return match super::js::find_action(&turn.bot.dir, other) {
                Some(file) => {
                    let limits = turn.bot.action_limits;
                    super::js::run_action(turn, &file, args, limits)
                }
                None => Err(format!("Action \"{other}\" not found")),
            };
        }
    }
    Ok(())
}

/// `builtin/wait {delay}`: Botpress 11.9.7 and 12 wait `setTimeout(resolve, args.delay ||
/// 1000)` before the next instruction. Node reads the delay as a number and takes anything
/// below 1 ms, above 2^31 - 1 ms or not a number as 1 ms. When the channel answers with all the
/// replies at once (Converse), the turn sleeps, at most until its deadline (past it, the turn
/// times out as any slow turn does); otherwise the wait is a pause between the replies, kept
/// by the channel's delivery without holding a thread.
fn wait(delay: Option<&Value>, turn: &mut Turn) -> Result<(), String> {
    let delay = wait_delay(delay);
    if !turn.replies_together {
        turn.outputs.push(super::pause_payload(delay));
        return Ok(());
    }
    let until = std::time::Instant::now() + delay;
    match turn.deadline {
        Some(deadline) if deadline < until => {
            std::thread::sleep(deadline.saturating_duration_since(std::time::Instant::now()));
            Err(format!(
                "the wait of {} ms goes past the turn's deadline",
                delay.as_millis()
            ))
        }
        _ => {
            std::thread::sleep(delay);
            Ok(())
        }
    }
}

/// The delay `builtin/wait` waits: `args.delay || 1000`, as Node's `setTimeout` reads it.
fn wait_delay(delay: Option<&Value>) -> std::time::Duration {
    let given = delay.filter(|d| super::content::truthy(d));
    let ms = match given {
        None => 1000.0,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => super::expr::string_to_number(s),
        Some(Value::Bool(true)) => 1.0,
        Some(_) => f64::NAN,
    };
    let ms = if (1.0..=2_147_483_647.0).contains(&ms) {
        ms.trunc()
    } else {
        1.0
    };
    std::time::Duration::from_millis(ms as u64)
}

/// The choice skill's answer parser: a number picks that choice (when the `basic-skills`
/// configuration's `matchNumbers`), then `intent:` keywords against the NLU intent (when its
/// `matchNLU`), then any keyword contained in what the user wrote. The skill's own `config`
/// argument (retries, repeat the question) is not read here, as in Botpress.
fn choice_parse_answer(args: &Map<String, Value>, turn: &mut Turn) -> Result<(), String> {
    let match_numbers = turn.bot.choice.match_numbers;
    let match_nlu = turn.bot.choice.match_nlu;
    let event = &turn.scope["event"];
    let preview = event["preview"].as_str().unwrap_or("").to_lowercase();
    let user_text = event["payload"]["text"]
        .as_str()
        .unwrap_or("")
        .to_lowercase();
    let choice_value = event["payload"]["payload"]
        .as_str()
        .unwrap_or("")
        .to_lowercase();
    let intent = event["nlu"]["intent"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let keywords: Vec<(String, Vec<String>)> = args
        .get("keywords")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(value, kws)| {
                    let list = kws
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default();
                    (value.clone(), list)
                })
                .collect()
        })
        .unwrap_or_default();

    let mut choice: Option<Value> = None;
    if match_numbers {
        if let Some(n) = choice_number(&preview) {
            let element = args
                .get("contentId")
                .and_then(Value::as_str)
                .and_then(|id| turn.bot.elements.get(id));
            if let Some(element) = element {
                let lang = turn.language();
                let form = super::content::translate(
                    &element.form_data,
                    &lang,
                    &turn.bot.default_language,
                );
                choice = form
                    .get("choices")
                    .and_then(|c| c.get(n.wrapping_sub(1)))
                    .and_then(|c| c.get("value"))
                    .filter(|v| super::content::truthy(v))
                    .cloned();
            }
        }
    }
    if choice.is_none() && match_nlu {
        choice = keywords
            .iter()
            .find(|(_, kws)| {
                kws.iter().any(|k| {
                    k.get(..7)
                        .is_some_and(|p| p.eq_ignore_ascii_case("intent:"))
                        && k[7..] == intent
                })
            })
            .map(|(v, _)| Value::String(v.clone()));
    }
    // Botpress 12.10.8 on looks for a keyword equal to the answer before one it contains.
    if choice.is_none() && turn.bot.botpress_version >= super::bot::BotpressVersion(12, 10, 8) {
        choice = keywords
            .iter()
            .find(|(_, kws)| {
                kws.iter().any(|k| {
                    let k = k.to_lowercase();
                    preview == k || user_text == k || choice_value == k
                })
            })
            .map(|(v, _)| Value::String(v.clone()));
    }
    if choice.is_none() {
        choice = keywords
            .iter()
            .find(|(_, kws)| {
                kws.iter().any(|k| {
                    let k = k.to_lowercase();
                    preview.contains(&k) || user_text.contains(&k) || choice_value.contains(&k)
                })
            })
            .map(|(v, _)| Value::String(v.clone()));
    }
    let suffix = args
        .get("randomId")
        .and_then(Value::as_str)
        .map(|r| format!("-{r}"))
        .unwrap_or_default();
    let temp = object_mut(&mut turn.scope, "temp");
    match choice {
        Some(value) => {
            temp.insert(format!("skill-choice-valid{suffix}"), Value::Bool(true));
            temp.insert(format!("skill-choice-ret{suffix}"), value);
        }
        None => {
            temp.insert(format!("skill-choice-valid{suffix}"), Value::Bool(false));
        }
    }
    Ok(())
}

/// `1`, `2.`, `#3`, `4)` → the number; the pattern `^[#).!]?(\d{1,2})[#).!]?$`.
fn choice_number(preview: &str) -> Option<usize> {
    let marks = ['#', ')', '.', '!'];
    let s = preview.strip_prefix(marks).unwrap_or(preview);
    let s = s.strip_suffix(marks).unwrap_or(s);
    if (1..=2).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// The `ms` package's reading of a duration ("6 hours", "2d", "1.5h", "500"), in milliseconds.
fn ms_duration(text: &str) -> Option<i64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().ok()?;
    let unit = unit.trim_start_matches(' ').to_ascii_lowercase();
    let factor = match unit.as_str() {
        "" | "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1e3,
        "m" | "min" | "mins" | "minute" | "minutes" => 6e4,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3.6e6,
        "d" | "day" | "days" => 8.64e7,
        "w" | "week" | "weeks" => 6.048e8,
        "y" | "yr" | "yrs" | "year" | "years" => 3.15576e10,
        _ => return None,
    };
    Some((n * factor).round() as i64)
}

/// Botpress's `kvs.getGlobalStorageKey`.
fn global_storage_key(name: &str) -> String {
    format!("storage/global/{name}")
}

/// Botpress's `kvs.getStorageWithExpiry`: the boxed value while it has not expired.
fn unbox_with_expiry(stored: Value) -> Option<Value> {
    let expiry = stored.get("expiry")?;
    let alive = match expiry.as_str() {
        Some("never") => true,
        Some(at) => super::event::parse_iso_ms(at).is_some_and(|t| t > super::event::now_ms()),
        None => false,
    };
    if alive {
        stored.get("value").cloned()
    } else {
        None
    }
}

pub(crate) fn object_mut<'a>(scope: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !scope[key].is_object() {
        scope[key] = Value::Object(Map::new());
    }
    scope[key].as_object_mut().expect("just made an object")
}

pub fn context_list(session: &Map<String, Value>) -> Vec<(String, i64)> {
    session
        .get("nluContexts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| {
                    Some((
                        c["context"].as_str()?.to_string(),
                        c["ttl"].as_f64().map_or(1, |t| t as i64),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn set_context_list(session: &mut Map<String, Value>, list: Vec<(String, i64)>) {
    let values = list
        .into_iter()
        .map(|(context, ttl)| serde_json::json!({"context": context, "ttl": ttl}))
        .collect();
    session.insert("nluContexts".into(), Value::Array(values));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_the_ms_package_does() {
        for (text, ms) in [
            ("6 hours", Some(21_600_000)),
            ("2d", Some(172_800_000)),
            ("1.5h", Some(5_400_000)),
            ("500", Some(500)),
            ("10 Minutes", Some(600_000)),
            ("1 week", Some(604_800_000)),
            ("soon", None),
            ("5 fortnights", None),
        ] {
            assert_eq!(ms_duration(text), ms, "{text}");
        }
    }

    #[test]
    fn parses_calls() {
        assert_eq!(
            parse_call("say #!builtin_text-z0J9qh").unwrap(),
            Call::Say {
                reference: "#!builtin_text-z0J9qh".into(),
                args: Map::new()
            }
        );
        let Call::Say { args, .. } =
            parse_call(r#"say #builtin_text {"text":"Hello {{user.nickname}}","typing":true}"#)
                .unwrap()
        else {
            panic!("not a say")
        };
        assert_eq!(args["text"], "Hello {{user.nickname}}");
        let Call::Action { name, args } = parse_call(r#"builtin/setVariable {"type":"user","name":"nickname","value":"{{event.payload.text}}"}"#).unwrap() else {
            panic!("not an action")
        };
        assert_eq!(name, "builtin/setVariable");
        assert_eq!(args["name"], "nickname");
        assert!(parse_call("builtin/setVariable {oops")
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(parse_call("say").is_err());
        assert!(parse_call("x [1]").unwrap_err().contains("JSON object"));
    }

    #[test]
    fn wait_delays_read_as_node_reads_them() {
        for (delay, ms) in [
            (None, 1000),
            (Some(json!(null)), 1000),
            (Some(json!("")), 1000),
            (Some(json!(0)), 1000),
            (Some(json!(false)), 1000),
            (Some(json!(250)), 250),
            (Some(json!("250")), 250),
            (Some(json!(" 40 ")), 40),
            (Some(json!(12.9)), 12),
            (Some(json!("0")), 1),
            (Some(json!("soon")), 1),
            (Some(json!(-5)), 1),
            (Some(json!(3_000_000_000u64)), 1),
            (Some(json!(true)), 1),
            (Some(json!({"ms": 5})), 1),
        ] {
            assert_eq!(
                wait_delay(delay.as_ref()),
                std::time::Duration::from_millis(ms),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn choice_numbers() {
        for (text, n) in [
            ("1", Some(1)),
            ("2.", Some(2)),
            ("#3", Some(3)),
            ("4)", Some(4)),
            ("12", Some(12)),
            ("123", None),
            ("one", None),
            ("", None),
            ("#", None),
        ] {
            assert_eq!(choice_number(text), n, "{text}");
        }
    }
}
