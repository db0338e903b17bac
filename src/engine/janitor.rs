//! The janitor (§8.10): runs the documented timeout handling for conversations idle in the
//! middle of a flow — with their real state and channel — and deletes expired sessions.

use super::bot::Bot;
use super::dialog::{self, DialogContext};
use super::event::{default_nlu, now_ms, object, Event};
use super::runtime::{event_json, Destination, Engine};
use super::state;
use crate::store::{Batch, Namespace};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

impl Engine {
    /// Runs due context timeouts (§8.10) and deletes expired sessions. Called by the janitor
    /// thread every `dialog.janitorInterval`.
    pub fn janitor_tick(&self) {
        let now = now_ms();
        loop {
            let due = self
                .timeouts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_due(now);
            let Some((bot_id, session_id)) = due else {
                break;
            };
            if let Err(e) = self.handle_timeout(&bot_id, &session_id, now) {
                log::warn!("bot \"{bot_id}\": timeout handling failed: {e}");
            }
        }
    }

    /// Walks every stored session: deletes expired ones and (re)indexes context expiries.
    pub fn sweep_sessions(&self) {
        let now = now_ms();
        for bot_id in self.bot_ids() {
            let mut expired = Vec::new();
            let mut index = Vec::new();
            let scanned = self
                .store
                .scan(Namespace::Sessions, &bot_id, &mut |key, value| {
                    let session_expiry = value["sessionExpiry"].as_i64().unwrap_or(0);
                    let context_expiry = value["contextExpiry"].as_i64().unwrap_or(0);
                    if session_expiry != 0 && session_expiry <= now {
                        expired.push(key.to_string());
                    } else if context_expiry != 0 {
                        index.push((key.to_string(), context_expiry));
                    }
                });
            if let Err(e) = scanned {
                log::warn!("bot \"{bot_id}\": cannot scan sessions: {e}");
            }
            for key in expired {
                let lock = format!("{bot_id}\u{0}{key}");
                let _guard = self.locks.lock(&lock);
                let Ok(Some(_hold)) = self.store.hold_conversation(&lock, None) else {
                    continue;
                };
                // Look again under the lock: a turn may have just renewed it.
                let still_expired = self
                    .store
                    .get(Namespace::Sessions, &bot_id, &key)
                    .ok()
                    .flatten()
                    .and_then(|v| v["sessionExpiry"].as_i64())
                    .is_some_and(|e| e != 0 && e <= now);
                if still_expired {
                    let mut batch = Batch::new();
                    batch.delete(Namespace::Sessions, &bot_id, &key);
                    if let Err(e) = self.store.commit(batch) {
                        log::warn!("bot \"{bot_id}\": cannot delete an expired session: {e}");
                    }
                }
            }
            let mut timeouts = self.timeouts.lock().unwrap_or_else(|e| e.into_inner());
            for (key, expiry) in index {
                timeouts.set(&bot_id, &key, expiry);
            }
        }
    }

    fn handle_timeout(&self, bot_id: &str, session_id: &str, now: i64) -> Result<(), String> {
        let Some(bot) = self.bot(bot_id) else {
            return Ok(());
        };
        let lock = format!("{bot_id}\u{0}{session_id}");
        let _guard = self.locks.lock(&lock);
        // Another instance may run the same timeout: under the hold, the second one finds
        // the context renewed or cleared by the first, so a timeout fires once.
        let _hold = self
            .store
            .hold_conversation(&lock, None)
            .map_err(|e| e.to_string())?;
        let store = self.store.as_ref();
        let Some(raw) = store
            .get(Namespace::Sessions, bot_id, session_id)
            .map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        let context_expiry = raw["contextExpiry"].as_i64().unwrap_or(0);
        if context_expiry == 0 || context_expiry > now {
            // Renewed by a turn since it was indexed.
            self.timeouts.lock().unwrap_or_else(|e| e.into_inner()).set(
                bot_id,
                session_id,
                context_expiry,
            );
            return Ok(());
        }
        let channel = raw["channel"].as_str().unwrap_or("api").to_string();
        let target = raw["target"].as_str().unwrap_or("").to_string();
        let thread_id = raw["threadId"].as_str().map(str::to_string);
        // Load without the expiry rule, which would empty the context we need.
        let mut record = state::load_session(
            store,
            bot_id,
            session_id,
            &channel,
            &target,
            thread_id.as_deref(),
            0,
        )
        .map_err(|e| e.to_string())?;
        let user = state::load_user(store, bot_id, &channel, &target).map_err(|e| e.to_string())?;
        let mut timeout = Event::new(bot_id, &channel, "timeout", &target, json!({}))
            .with_thread(thread_id.clone());
        let nlu = default_nlu(&timeout.included_contexts);
        let event = event_json(&bot, &mut timeout, &nlu, now);
        let mut scope = object([
            ("event", event),
            ("user", user),
            ("session", record.session.clone()),
            ("temp", record.temp.clone()),
        ]);
        if let Ok(Some(kv)) = state::load_bot_kv(store, bot_id) {
            scope["bot"] = kv;
        }
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        let mut turn = self.new_turn(&bot, scope, record.context.clone(), &channel, deadline);
        let mut ran = false;
        // Botpress's processTimeout runs `before_session_timeout` first, on the timeout event
        // with the conversation's state: a hook may change that state, write to the KV store
        // or move the conversation (bp.dialog.jumpTo), which changes the timeout node found.
        let hooked = bot.hooks.has("before_session_timeout");
        if hooked {
            let mut event = turn.scope["event"].clone();
            super::js::run_hook(&mut turn, "before_session_timeout", &mut event);
        }
        if let Some((flow, node)) = find_timeout_node(&bot, &turn.context) {
            dialog::jump_to(&bot, &mut turn.context, &flow, Some(&node))
                .map_err(|e| format!("{e:?}"))?;
            match dialog::process(&mut turn) {
                Ok(()) => ran = true,
                Err(e) => log::warn!("bot \"{bot_id}\": timeout node failed: {e:?}"),
            }
        }
        // After timeout handling the conversation starts over: context and temp go. User, bot
        // KV and session are one commit.
        let mut batch = Batch::new();
        if ran || hooked {
            state::save_user(&mut batch, bot_id, &channel, &target, &turn.scope["user"]);
            for (key, value) in &turn.kv_writes {
                batch.put(Namespace::Kv, bot_id, key, value.clone());
            }
            record.session = turn.scope["session"].clone();
        }
        record.context = DialogContext::default();
        record.temp = json!({});
        record.context_expiry = 0;
        state::save_session(&mut batch, bot_id, session_id, &record);
        // The timeout's replies are queued in the same commit as its state.
        let mut after_commit = None;
        if ran && !turn.outputs.is_empty() {
            let destination = Destination {
                bot_id: bot_id.to_string(),
                channel: channel.clone(),
                target,
                thread_id,
                proactive: None,
            };
            match self.proactive_sink(&channel) {
                Some(sink) => match sink(&destination, turn.outputs, &mut batch) {
                    Ok(staging) => after_commit = Some(staging.schedule),
                    Err(why) => log::info!("bot \"{bot_id}\": timeout replies are dropped: {why}"),
                },
                None => log::info!("bot \"{bot_id}\": timeout replies for channel {channel} have nowhere to go (Converse cannot push)"),
            }
        }
        let committed = store.commit(batch).map_err(|e| e.to_string())?;
        if let Some(schedule) = after_commit {
            schedule(&committed);
        }
        Ok(())
    }
}

/// The timeout destination of §8.10: the node's `timeout`, a node named `timeout`, the flow's
/// `timeoutNode`, then `timeout.flow.json` at its start.
fn find_timeout_node(bot: &Bot, ctx: &DialogContext) -> Option<(String, String)> {
    let flow = bot.flow(ctx.current_flow.as_deref()?)?;
    let node = ctx.current_node.as_deref().and_then(|n| flow.node(n));
    if let Some(t) = node.and_then(|n| n.timeout.as_deref()) {
        if flow.node(t).is_some() {
            return Some((flow.name.clone(), t.to_string()));
        }
    }
    if flow.node("timeout").is_some() {
        return Some((flow.name.clone(), "timeout".into()));
    }
    if let Some(t) = flow
        .timeout_node
        .as_deref()
        .filter(|t| flow.node(t).is_some())
    {
        return Some((flow.name.clone(), t.to_string()));
    }
    bot.flow("timeout.flow.json")
        .map(|f| (f.name.clone(), f.start_node.clone()))
}

/// Context expiries of conversations in the middle of a flow, soonest first.
#[derive(Default)]
pub struct TimeoutIndex {
    by_time: BTreeSet<(i64, String, String)>,
    by_key: HashMap<(String, String), i64>,
}

impl TimeoutIndex {
    pub fn set(&mut self, bot: &str, session: &str, expiry: i64) {
        let key = (bot.to_string(), session.to_string());
        if let Some(old) = self.by_key.remove(&key) {
            self.by_time.remove(&(old, key.0.clone(), key.1.clone()));
        }
        if expiry != 0 {
            self.by_time.insert((expiry, key.0.clone(), key.1.clone()));
            self.by_key.insert(key, expiry);
        }
    }

    pub fn pop_due(&mut self, now: i64) -> Option<(String, String)> {
        let first = self.by_time.first()?.clone();
        if first.0 > now {
            return None;
        }
        self.by_time.remove(&first);
        self.by_key.remove(&(first.1.clone(), first.2.clone()));
        Some((first.1, first.2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_index_orders_and_replaces() {
        let mut index = TimeoutIndex::default();
        index.set("b", "s1", 30);
        index.set("b", "s2", 10);
        index.set("b", "s1", 20);
        assert_eq!(index.pop_due(5), None);
        assert_eq!(index.pop_due(25), Some(("b".into(), "s2".into())));
        assert_eq!(index.pop_due(25), Some(("b".into(), "s1".into())));
        assert_eq!(index.pop_due(100), None);
        index.set("b", "s3", 10);
        index.set("b", "s3", 0);
        assert_eq!(index.pop_due(100), None);
    }
}
