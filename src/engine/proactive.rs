//! The bot speaks first: payloads, a `say` or a flow played for one user without a message
//! from them, with that user's real state (templates see `user`, `session`, `temp`, `bot`).
//!
//! It runs under the conversation's lock, like a turn, so it never interleaves with one of
//! that user's turns; its state changes and what the caller stages (the channel's queue
//! items, a status record) are one batch. A flow started this way leaves the conversation
//! at the node where it waits, so the user's answer continues that flow.

use super::dialog::{self, DialogError};
use super::event::{default_nlu, now_ms, object, session_id, Event};
use super::runtime::{event_json, outgoing_hooks, Destination, Engine};
use super::state;
use crate::store::{Batch, Committed, Namespace, StoreError};
use serde_json::{json, Map, Value};
use std::time::Instant;

/// What the bot says first.
#[derive(Debug, Clone, PartialEq)]
pub enum Speech {
    /// Payloads already in the channel's own form, sent as they are.
    Payloads(Vec<Value>),
    /// A `say`: a content element (`#!builtin_text-abc`) or a content type with its form data
    /// (`builtin_text` and `{"text": …}`), rendered for the channel.
    Say {
        reference: String,
        args: Map<String, Value>,
    },
    /// The flow, at `node` or its start node, played as if the conversation had jumped there.
    Flow { flow: String, node: Option<String> },
}

/// What the caller of [`Engine::speak_first`] adds to its batch: the channel's queue items
/// for the rendered payloads, or why it cannot take them.
pub type StageFirstWords<'a> = dyn FnMut(&[Value], &mut Batch) -> Result<(), String> + 'a;

/// Why the bot could not speak first.
#[derive(Debug, Clone, PartialEq)]
pub enum SpeakError {
    UnknownBot(String),
    /// The conversation stayed busy (or the flow ran) past the deadline; nothing was saved.
    Timeout,
    /// A flow, node or content element does not exist or failed; nothing was saved.
    Failed(String),
    /// The caller refused what was produced (its channel cannot take it); nothing was saved.
    Refused(String),
    Storage(StoreError),
}

impl Engine {
    /// Plays `speech` for `dest`. `then` gets the rendered payloads and the batch that holds
    /// the state changes, and adds what must be committed with them (or refuses). Returns the
    /// payloads and what the commit gave back.
    pub fn speak_first(
        &self,
        dest: &Destination,
        speech: Speech,
        deadline: Option<Instant>,
        then: &mut StageFirstWords,
    ) -> Result<(Vec<Value>, Committed), SpeakError> {
        let bot = self
            .bot(&dest.bot_id)
            .ok_or_else(|| SpeakError::UnknownBot(dest.bot_id.clone()))?;
        let thread = dest.thread_id.as_deref();
        let session = session_id(&dest.channel, &dest.target, thread);
        let key = format!("{}\u{0}{session}", bot.id);
        let Some(_guard) = self.locks.lock_until(&key, deadline) else {
            return Err(SpeakError::Timeout);
        };
        let now = now_ms();
        let store = self.store.as_ref();
        let io = SpeakError::Storage;
        let (channel, target) = (dest.channel.as_str(), dest.target.as_str());
        let mut record =
            state::load_session(store, &bot.id, &session, channel, target, thread, now)
                .map_err(io)?;
        let user = state::load_user(store, &bot.id, channel, target).map_err(io)?;
        let user_before = user.clone();
        let mut event = Event::new(&bot.id, channel, "proactive", target, json!({}))
            .with_thread(dest.thread_id.clone());
        let nlu = default_nlu(&event.included_contexts);
        let mut scope = object([
            ("event", event_json(&bot, &mut event, &nlu, now)),
            ("user", user),
            ("session", std::mem::take(&mut record.session)),
            ("temp", record.temp.clone()),
        ]);
        if let Some(kv) = state::load_bot_kv(store, &bot.id).map_err(io)? {
            scope["bot"] = kv;
        }
        let mut turn = self.new_turn(&bot, scope, record.context.clone(), channel, deadline);
        let failed = |e: DialogError| match e {
            DialogError::Timeout => SpeakError::Timeout,
            DialogError::Failed(m) => SpeakError::Failed(m),
        };
        let plays_flow = matches!(speech, Speech::Flow { .. });
        match speech {
            Speech::Payloads(payloads) => turn.outputs.extend(payloads),
            Speech::Say { reference, args } => {
                turn.say(&reference, &args).map_err(SpeakError::Failed)?
            }
            Speech::Flow { flow, node } => {
                dialog::jump_to(&bot, &mut turn.context, &flow, node.as_deref()).map_err(failed)?;
                dialog::process(&mut turn).map_err(failed)?;
            }
        }
        outgoing_hooks(&mut turn, false);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(SpeakError::Timeout);
        }

        let mut batch = Batch::new();
        if turn.scope["user"] != user_before {
            state::save_user(&mut batch, &bot.id, channel, target, &turn.scope["user"]);
        }
        for (key, value) in &turn.kv_writes {
            batch.put(Namespace::Kv, &bot.id, key, value.clone());
        }
        record.session = turn.scope["session"].take();
        record.session_expiry = now + bot.session_timeout_interval.as_millis() as i64;
        if plays_flow {
            record.context = turn.context.clone();
            record.temp = turn.scope["temp"].take();
            record.context_expiry = if record.context.is_empty() {
                0
            } else {
                now + bot.timeout_interval.as_millis() as i64
            };
        }
        state::save_session(&mut batch, &bot.id, &session, &record);
        then(&turn.outputs, &mut batch).map_err(SpeakError::Refused)?;
        let committed = store.commit(batch).map_err(io)?;
        // Indexed once committed, as after a turn: the flow's wait may time out.
        self.timeouts.lock().unwrap_or_else(|e| e.into_inner()).set(
            &bot.id,
            &session,
            record.context_expiry,
        );
        Ok((turn.outputs, committed))
    }
}
