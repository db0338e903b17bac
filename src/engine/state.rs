//! Conversation state (§8.8): `user`, `session`, `temp`, `context` and the bot KV, loaded
//! lazily from the store for one turn and saved back when the turn succeeds.

use super::dialog::DialogContext;
use crate::store::{Namespace, Store};
use serde_json::{json, Map, Value};
use std::io;

/// The stored form of a dialog session.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub context: DialogContext,
    pub temp: Value,
    pub session: Value,
    /// Unix ms after which the context (flow position and temp) expires; 0 when there is none.
    pub context_expiry: i64,
    /// Unix ms after which the whole session is deleted.
    pub session_expiry: i64,
    pub channel: String,
    pub target: String,
    pub thread_id: Option<String>,
}

impl SessionRecord {
    pub fn fresh(channel: &str, target: &str, thread_id: Option<&str>) -> SessionRecord {
        SessionRecord {
            context: DialogContext::default(),
            temp: json!({}),
            session: json!({"lastMessages": []}),
            context_expiry: 0,
            session_expiry: 0,
            channel: channel.to_string(),
            target: target.to_string(),
            thread_id: thread_id.map(str::to_string),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "context": self.context, "temp": self.temp, "session": self.session,
            "contextExpiry": self.context_expiry, "sessionExpiry": self.session_expiry,
            "channel": self.channel, "target": self.target, "threadId": self.thread_id,
        })
    }

    fn from_json(v: Value) -> Option<SessionRecord> {
        Some(SessionRecord {
            context: serde_json::from_value(v["context"].clone()).unwrap_or_default(),
            temp: object_or_empty(&v["temp"]),
            session: object_or_empty(&v["session"]),
            context_expiry: v["contextExpiry"].as_i64().unwrap_or(0),
            session_expiry: v["sessionExpiry"].as_i64().unwrap_or(0),
            channel: v["channel"].as_str()?.to_string(),
            target: v["target"].as_str()?.to_string(),
            thread_id: v["threadId"].as_str().map(str::to_string),
        })
    }
}

fn object_or_empty(v: &Value) -> Value {
    if v.is_object() {
        v.clone()
    } else {
        json!({})
    }
}

/// Loads a session; an expired session comes back fresh, an expired context comes back empty
/// (the janitor normally handles both first).
pub fn load_session(
    store: &dyn Store,
    bot: &str,
    session_id: &str,
    channel: &str,
    target: &str,
    thread_id: Option<&str>,
    now: i64,
) -> io::Result<SessionRecord> {
    let record = store
        .get(Namespace::Sessions, bot, session_id)?
        .and_then(SessionRecord::from_json);
    let mut record = match record {
        Some(r) if r.session_expiry == 0 || r.session_expiry > now => r,
        _ => SessionRecord::fresh(channel, target, thread_id),
    };
    if record.context_expiry != 0 && record.context_expiry <= now {
        record.context = DialogContext::default();
        record.temp = json!({});
        record.context_expiry = 0;
    }
    if !record.session["lastMessages"].is_array() {
        record.session["lastMessages"] = json!([]);
    }
    Ok(record)
}

pub fn save_session(
    store: &dyn Store,
    bot: &str,
    session_id: &str,
    record: &SessionRecord,
) -> io::Result<()> {
    store.put(Namespace::Sessions, bot, session_id, &record.to_json())
}

pub fn user_key(channel: &str, target: &str) -> String {
    format!("{channel}::{target}")
}

pub fn load_user(store: &dyn Store, bot: &str, channel: &str, target: &str) -> io::Result<Value> {
    Ok(store
        .get(Namespace::Users, bot, &user_key(channel, target))?
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({})))
}

/// Saves user attributes, dropping null values as Botpress does.
pub fn save_user(
    store: &dyn Store,
    bot: &str,
    channel: &str,
    target: &str,
    user: &Value,
) -> io::Result<()> {
    let cleaned: Map<String, Value> = user
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    store.put(
        Namespace::Users,
        bot,
        &user_key(channel, target),
        &Value::Object(cleaned),
    )
}
