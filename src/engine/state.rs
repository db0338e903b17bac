//! Conversation state (§8.8): `user`, `session`, `temp`, `context` and the bot KV, loaded
//! from the store for one turn and saved back, all in one batch, when the turn succeeds.
//! A stored record of the wrong shape is quarantined and the turn starts from a fresh one.

use super::dialog::DialogContext;
use crate::store::{Batch, Namespace, Store, StoreError};
use serde_json::{json, Map, Value};

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

/// Moves a record of the wrong shape aside (the store logs it).
fn quarantine(
    store: &dyn Store,
    ns: Namespace,
    bot: &str,
    key: &str,
    reason: &str,
) -> Result<(), StoreError> {
    let mut batch = Batch::new();
    batch.quarantine(ns, bot, key, reason);
    store.commit(batch).map(|_| ())
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
) -> Result<SessionRecord, StoreError> {
    let record = match store.get(Namespace::Sessions, bot, session_id)? {
        Some(v) => {
            let parsed = SessionRecord::from_json(v);
            if parsed.is_none() {
                quarantine(
                    store,
                    Namespace::Sessions,
                    bot,
                    session_id,
                    "not a session record (no channel and target)",
                )?;
            }
            parsed
        }
        None => None,
    };
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

/// Adds the session to the turn's batch.
pub fn save_session(batch: &mut Batch, bot: &str, session_id: &str, record: &SessionRecord) {
    batch.put(Namespace::Sessions, bot, session_id, record.to_json());
}

pub fn user_key(channel: &str, target: &str) -> String {
    format!("{channel}::{target}")
}

pub fn load_user(
    store: &dyn Store,
    bot: &str,
    channel: &str,
    target: &str,
) -> Result<Value, StoreError> {
    let key = user_key(channel, target);
    match store.get(Namespace::Users, bot, &key)? {
        Some(v) if v.is_object() => Ok(v),
        Some(_) => {
            quarantine(store, Namespace::Users, bot, &key, "not a JSON object")?;
            Ok(json!({}))
        }
        None => Ok(json!({})),
    }
}

/// The bot-wide KV entry `global` (`state.bot`), read on every turn.
pub fn load_bot_kv(store: &dyn Store, bot: &str) -> Result<Option<Value>, StoreError> {
    match store.get(Namespace::Kv, bot, "global")? {
        Some(v) if v.is_object() => Ok(Some(v)),
        Some(_) => {
            quarantine(store, Namespace::Kv, bot, "global", "not a JSON object")?;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Adds the user attributes to the turn's batch, dropping null values as Botpress does.
pub fn save_user(batch: &mut Batch, bot: &str, channel: &str, target: &str, user: &Value) {
    let cleaned: Map<String, Value> = user
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    batch.put(
        Namespace::Users,
        bot,
        &user_key(channel, target),
        Value::Object(cleaned),
    );
}
