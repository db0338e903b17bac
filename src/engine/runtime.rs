//! The engine: the loaded bots, one turn at a time per conversation (NLU → decision → dialog →
//! render → save), and the janitor that expires contexts and sessions (§8.10).

use super::actions::{context_list, set_context_list};
use super::bot::{self, Bot};
use super::dialog::{self, DialogContext, DialogError, Turn};
use super::event::{default_nlu, iso_time, new_event_id, now_ms, parse_iso_ms, Event};
use super::qna;
use super::state;
use super::Problem;
use crate::config::Settings;
use crate::store::{Namespace, Store};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// What one turn produced, for the channel that asked.
#[derive(Debug, Clone)]
pub struct TurnOutput {
    /// Rendered payloads for the event's channel, in order.
    pub responses: Vec<Value>,
    pub nlu: Value,
    /// `{user, context, session, temp[, bot]}` after the turn.
    pub state: Value,
    pub suggestions: Value,
    pub decision: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TurnError {
    /// No loaded bot has this id.
    UnknownBot(String),
    /// The turn ran past its deadline; nothing was saved.
    Timeout,
    /// State could not be read or written; nothing was half-saved.
    Storage(String),
}

impl std::fmt::Display for TurnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TurnError::UnknownBot(id) => write!(f, "bot \"{id}\" not found"),
            TurnError::Timeout => f.write_str("the turn took longer than converse.timeout"),
            TurnError::Storage(e) => write!(f, "state storage failed: {e}"),
        }
    }
}

/// Where a conversation lives on its channel, for replies nobody asked for (timeouts).
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub bot_id: String,
    pub channel: String,
    pub target: String,
    pub thread_id: Option<String>,
}

/// Delivers payloads the engine produces on its own (timeout nodes) to a channel.
pub type ProactiveSink = Arc<dyn Fn(&Destination, Vec<Value>) + Send + Sync>;

pub struct Engine {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    bots: RwLock<HashMap<String, Arc<Bot>>>,
    locks: ConversationLocks,
    timeouts: Mutex<TimeoutIndex>,
    sinks: RwLock<HashMap<String, ProactiveSink>>,
    /// Fingerprints of bot folders that failed to load, so a broken bot is reported once per
    /// edit rather than on every check.
    failed: Mutex<HashMap<String, u64>>,
}

/// Minimum confidence for a suggestion to be elected (§9.1).
const MIN_CONFIDENCE: f64 = 0.3;
/// A suggestion from the same source as the last reply is dropped within this window.
const NO_REPEAT_MS: i64 = 20_000;

impl Engine {
    /// Loads every bot folder of the data directory. Problems are returned to be logged or
    /// printed; bots that could not load are left out.
    pub fn new(settings: Arc<Settings>, store: Arc<dyn Store>) -> (Engine, Vec<Problem>) {
        let engine = Engine {
            settings,
            store,
            bots: RwLock::new(HashMap::new()),
            locks: ConversationLocks::default(),
            timeouts: Mutex::new(TimeoutIndex::default()),
            sinks: RwLock::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        };
        let problems = engine.load_bots();
        (engine, problems)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn load_bots(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut loaded = HashMap::new();
        for id in bot::list_bot_dirs(&self.settings.data_dir) {
            let fingerprint = bot::fingerprint(&self.settings.data_dir.join("bots").join(&id));
            let outcome = bot::load_bot(&self.settings, &id);
            problems.extend(outcome.errors);
            problems.extend(outcome.warnings);
            match outcome.bot {
                Some(b) => {
                    loaded.insert(id, Arc::new(b));
                }
                None => {
                    self.failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, fingerprint);
                }
            }
        }
        *self.bots.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        problems
    }

    /// Reloads bots whose files changed, adds new ones and drops removed or disabled ones.
    /// A bot whose new files do not load keeps running its last good version.
    pub fn reload_changed(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let ids = bot::list_bot_dirs(&self.settings.data_dir);
        let current: HashMap<String, Arc<Bot>> =
            self.bots.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut next = HashMap::new();
        for id in &ids {
            let dir = self.settings.data_dir.join("bots").join(id);
            let fingerprint = bot::fingerprint(&dir);
            if let Some(existing) = current.get(id) {
                if existing.fingerprint == fingerprint {
                    next.insert(id.clone(), existing.clone());
                    continue;
                }
            }
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            if failed.get(id) == Some(&fingerprint) {
                if let Some(old) = current.get(id) {
                    next.insert(id.clone(), old.clone());
                }
                continue;
            }
            failed.remove(id);
            drop(failed);
            let outcome = bot::load_bot(&self.settings, id);
            if outcome.bot.is_none() && !outcome.disabled {
                self.failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone(), fingerprint);
            }
            problems.extend(outcome.errors.iter().cloned());
            problems.extend(outcome.warnings);
            match (outcome.bot, current.get(id)) {
                (Some(b), _) => {
                    log::info!("bot \"{id}\" (re)loaded");
                    next.insert(id.clone(), Arc::new(b));
                }
                (None, Some(old)) if !outcome.disabled => {
                    log::warn!(
                        "bot \"{id}\": new files do not load, still running the previous version"
                    );
                    next.insert(id.clone(), old.clone());
                }
                _ => {}
            }
        }
        *self.bots.write().unwrap_or_else(|e| e.into_inner()) = next;
        problems
    }

    pub fn bot(&self, id: &str) -> Option<Arc<Bot>> {
        self.bots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub fn bot_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .bots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Registers where proactive replies for `channel` go.
    pub fn set_proactive_sink(&self, channel: &str, sink: ProactiveSink) {
        self.sinks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.to_string(), sink);
    }

    /// Plays one turn. Turns of one conversation run one at a time, in arrival order; other
    /// conversations run in parallel. `deadline` bounds the turn (Converse's timeout).
    pub fn turn(&self, event: Event, deadline: Option<Instant>) -> Result<TurnOutput, TurnError> {
        let bot = self
            .bot(&event.bot_id)
            .ok_or_else(|| TurnError::UnknownBot(event.bot_id.clone()))?;
        let session_id = event.session_id();
        let _guard = self.locks.lock(&format!("{}\u{0}{session_id}", bot.id));
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(TurnError::Timeout);
        }
        self.run_turn(&bot, event, &session_id, deadline)
    }

    fn run_turn(
        &self,
        bot: &Bot,
        event: Event,
        session_id: &str,
        deadline: Option<Instant>,
    ) -> Result<TurnOutput, TurnError> {
        let now = now_ms();
        let store = self.store.as_ref();
        let io = |e: std::io::Error| TurnError::Storage(e.to_string());
        let thread = event.thread_id.as_deref();
        let mut record = state::load_session(
            store,
            &bot.id,
            session_id,
            &event.channel,
            &event.target,
            thread,
            now,
        )
        .map_err(io)?;
        let user = state::load_user(store, &bot.id, &event.channel, &event.target).map_err(io)?;
        let bot_kv = store.get(Namespace::Kv, &bot.id, "global").map_err(io)?;

        // before_incoming: the session's NLU contexts decide what NLU predicts with.
        let session_contexts = record
            .session
            .as_object()
            .map(context_list)
            .unwrap_or_default();
        let included: Vec<String> = if session_contexts.is_empty() {
            event.included_contexts.clone()
        } else {
            session_contexts.iter().map(|(c, _)| c.clone()).collect()
        };
        let skip_nlu = event.preview.is_empty()
            || ["session_reset", "bp_dialog_timeout", "visit", "timeout"]
                .contains(&event.kind.as_str());
        let nlu = if skip_nlu {
            default_nlu(&included)
        } else {
            bot.nlu.understand(&event.preview, &included, now)
        };
        let mut payload = event.payload.clone();
        if !skip_nlu {
            if let Some(text) = payload.get("text").and_then(Value::as_str) {
                let masked = bot.nlu.mask_sensitive(text, &nlu);
                payload["text"] = Value::String(masked);
            }
        }
        let event_json = json!({
            "id": new_event_id(), "type": event.kind, "channel": event.channel, "direction": "incoming",
            "target": event.target, "threadId": event.thread_id, "botId": bot.id, "payload": payload,
            "preview": event.preview, "createdOn": iso_time(now), "nlu": nlu, "credentials": event.credentials,
        });
        let user_before = user.clone();
        let mut scope = json!({"event": event_json, "user": user, "session": record.session, "temp": record.temp.clone()});
        if let Some(kv) = &bot_kv {
            scope["bot"] = kv.clone();
        }

        // after_incoming: contexts lose one turn of life; slots go to the session.
        if !nlu["errored"].as_bool().unwrap_or(false) {
            if let Some(session) = scope["session"].as_object_mut() {
                if session.contains_key("nluContexts") {
                    let kept = context_list(session)
                        .into_iter()
                        .map(|(c, t)| (c, t - 1))
                        .filter(|(_, t)| *t > 0)
                        .collect();
                    set_context_list(session, kept);
                }
            }
        }
        if !scope["session"]["extractedSlots"].is_object() {
            scope["session"]["extractedSlots"] = json!({});
        }
        if let Some(slots) = nlu["slots"].as_object() {
            for (name, slot) in slots {
                scope["session"]["extractedSlots"][name.as_str()] = slot.clone();
            }
        }

        let in_middle_of_flow = !record.context.is_empty();
        let mut turn = Turn {
            bot,
            store,
            scope,
            context: record.context.clone(),
            channel: event.channel.clone(),
            bot_url: self.settings.http.external_url.clone(),
            outputs: Vec::new(),
            kv_writes: Vec::new(),
            deadline,
        };

        // Decision (§9.1).
        let (suggestions, elected) = decide(bot, &nlu, &turn.scope, in_middle_of_flow, now);
        let mut suggestions_json = Vec::new();
        let mut decision = default_decision();
        let mut run_dialog = elected.is_none();
        let mut save_context = true;
        for (s, status, reason) in &suggestions {
            let payloads = self.suggestion_payloads(bot, s, &turn.scope, &event.channel);
            let json = json!({"confidence": s.confidence, "payloads": payloads, "source": s.source,
                "sourceDetails": s.source_details, "decision": {"status": status, "reason": reason}});
            suggestions_json.push(json);
        }
        if let Some(i) = elected {
            let s = &suggestions[i].0;
            decision = suggestions_json[i].clone();
            let payloads: Vec<Value> = decision["payloads"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter(|x| x["type"] != "redirect")
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            turn.push_outputs(payloads);
            let incoming = turn.scope["event"]["preview"].clone();
            turn.add_history(json!({
                "incomingPreview": incoming, "replySource": format!("{} {}", s.source, s.source_details),
                "replyPreview": s.answer.clone().unwrap_or_default(), "replyConfidence": s.confidence,
                "replyDate": iso_time(now),
            }));
            match &s.redirect {
                Some((flow, node)) => {
                    if let Err(e) = dialog::jump_to(bot, &mut turn.context, flow, node.as_deref()) {
                        return self.failed_turn(turn, e, nlu, suggestions_json);
                    }
                    run_dialog = true;
                    decision = default_decision();
                }
                None => save_context = false,
            }
        }
        if ["session_reset", "typing", "visit"].contains(&event.kind.as_str()) {
            run_dialog = false;
        }
        if run_dialog {
            if let Err(e) = dialog::process(&mut turn) {
                return self.failed_turn(turn, e, nlu, suggestions_json);
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(TurnError::Timeout);
        }

        // Persist: user (when it changed), bot KV, then the session (§8.8).
        if turn.scope["user"] != user_before {
            state::save_user(
                store,
                &bot.id,
                &event.channel,
                &event.target,
                &turn.scope["user"],
            )
            .map_err(io)?;
        }
        for (key, value) in &turn.kv_writes {
            store.put(Namespace::Kv, &bot.id, key, value).map_err(io)?;
        }
        record.session = turn.scope["session"].clone();
        record.session_expiry = now + bot.session_timeout_interval.as_millis() as i64;
        if save_context {
            record.context = turn.context.clone();
            record.temp = turn.scope["temp"].clone();
            record.context_expiry = if record.context.is_empty() {
                0
            } else {
                now + bot.timeout_interval.as_millis() as i64
            };
        }
        // Otherwise (a QnA answer) the stored flow position and temp stay as they were loaded.
        state::save_session(store, &bot.id, session_id, &record).map_err(io)?;
        self.timeouts.lock().unwrap_or_else(|e| e.into_inner()).set(
            &bot.id,
            session_id,
            record.context_expiry,
        );

        let mut state_json = json!({"user": turn.scope["user"], "context": record.context, "session": record.session, "temp": record.temp});
        if let Some(kv) = turn.kv_get("global") {
            state_json["bot"] = kv;
        }
        Ok(TurnOutput {
            responses: turn.outputs,
            nlu,
            state: state_json,
            suggestions: Value::Array(suggestions_json),
            decision,
        })
    }

    /// A failed dialog: the bot's error message is sent and nothing is saved (§9.1).
    fn failed_turn(
        &self,
        mut turn: Turn,
        error: DialogError,
        nlu: Value,
        suggestions: Vec<Value>,
    ) -> Result<TurnOutput, TurnError> {
        let message = match error {
            DialogError::Timeout => return Err(TurnError::Timeout),
            DialogError::Failed(m) => m,
        };
        log::warn!("bot \"{}\": {message}", turn.bot.id);
        let (kind, args) = &turn.bot.error_content;
        let rendered =
            super::content::render_type(kind, args, &turn.scope, &turn.channel, &turn.bot_url)
                .unwrap_or_else(|e| {
                    log::warn!(
                        "bot \"{}\": the error message itself cannot be rendered: {e}",
                        turn.bot.id
                    );
                    Vec::new()
                });
        turn.push_outputs(rendered);
        let state = json!({"user": turn.scope["user"], "context": turn.context, "session": turn.scope["session"], "temp": turn.scope["temp"]});
        Ok(TurnOutput {
            responses: turn.outputs,
            nlu,
            state,
            suggestions: Value::Array(suggestions),
            decision: default_decision(),
        })
    }

    fn suggestion_payloads(
        &self,
        bot: &Bot,
        s: &qna::Suggestion,
        scope: &Value,
        channel: &str,
    ) -> Vec<Value> {
        let mut payloads = Vec::new();
        if let Some(answer) = &s.answer {
            let mut args = Map::new();
            args.insert("text".into(), Value::String(answer.clone()));
            args.insert("typing".into(), Value::Bool(true));
            match super::content::render_type(
                &bot.qna_renderer,
                &args,
                scope,
                channel,
                &self.settings.http.external_url,
            ) {
                Ok(p) => payloads.extend(p),
                Err(e) => log::warn!("bot \"{}\": QnA answer cannot be rendered: {e}", bot.id),
            }
        }
        if let Some((flow, node)) = &s.redirect {
            payloads.push(qna::redirect_payload(flow, node));
        }
        payloads
    }

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
                let _guard = self.locks.lock(&format!("{bot_id}\u{0}{key}"));
                // Look again under the lock: a turn may have just renewed it.
                let still_expired = self
                    .store
                    .get(Namespace::Sessions, &bot_id, &key)
                    .ok()
                    .flatten()
                    .and_then(|v| v["sessionExpiry"].as_i64())
                    .is_some_and(|e| e != 0 && e <= now);
                if still_expired {
                    if let Err(e) = self.store.delete(Namespace::Sessions, &bot_id, &key) {
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
        let _guard = self.locks.lock(&format!("{bot_id}\u{0}{session_id}"));
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
        let event = json!({"id": new_event_id(), "type": "timeout", "channel": channel, "direction": "incoming",
            "target": target, "threadId": thread_id, "botId": bot_id, "payload": {}, "preview": "",
            "createdOn": iso_time(now), "nlu": default_nlu(&["global".to_string()])});
        let mut scope =
            json!({"event": event, "user": user, "session": record.session, "temp": record.temp});
        if let Ok(Some(kv)) = store.get(Namespace::Kv, bot_id, "global") {
            scope["bot"] = kv;
        }
        let mut turn = Turn {
            bot: &bot,
            store,
            scope,
            context: record.context.clone(),
            channel: channel.clone(),
            bot_url: self.settings.http.external_url.clone(),
            outputs: Vec::new(),
            kv_writes: Vec::new(),
            deadline: Some(Instant::now() + Duration::from_secs(5)),
        };
        let mut ran = false;
        if let Some((flow, node)) = find_timeout_node(&bot, &record.context) {
            dialog::jump_to(&bot, &mut turn.context, &flow, Some(&node))
                .map_err(|e| format!("{e:?}"))?;
            match dialog::process(&mut turn) {
                Ok(()) => ran = true,
                Err(e) => log::warn!("bot \"{bot_id}\": timeout node failed: {e:?}"),
            }
        }
        // After timeout handling the conversation starts over: context and temp go.
        if ran {
            state::save_user(store, bot_id, &channel, &target, &turn.scope["user"])
                .map_err(|e| e.to_string())?;
            for (key, value) in &turn.kv_writes {
                store
                    .put(Namespace::Kv, bot_id, key, value)
                    .map_err(|e| e.to_string())?;
            }
            record.session = turn.scope["session"].clone();
        }
        record.context = DialogContext::default();
        record.temp = json!({});
        record.context_expiry = 0;
        state::save_session(store, bot_id, session_id, &record).map_err(|e| e.to_string())?;
        if ran && !turn.outputs.is_empty() {
            let destination = Destination {
                bot_id: bot_id.to_string(),
                channel: channel.clone(),
                target,
                thread_id,
            };
            let sink = self
                .sinks
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&channel)
                .cloned();
            match sink {
                Some(sink) => sink(&destination, turn.outputs),
                None => log::info!("bot \"{bot_id}\": timeout replies for channel {channel} have nowhere to go (Converse cannot push)"),
            }
        }
        Ok(())
    }
}

fn default_decision() -> Value {
    json!({"decision": {"reason": "no suggestion matched", "status": "elected"}, "confidence": 1,
           "payloads": [], "source": "decisionEngine", "sourceDetails": "execute default flow"})
}

type Decided = (qna::Suggestion, &'static str, String);

/// Sorts the QnA suggestions and decides each (§9.1). Returns them with status and reason,
/// and the index of the elected one.
fn decide(
    bot: &Bot,
    nlu: &Value,
    scope: &Value,
    in_middle_of_flow: bool,
    now: i64,
) -> (Vec<Decided>, Option<usize>) {
    let mut suggestions = qna::suggest(&bot.qna, nlu);
    suggestions.sort_by(|a, b| {
        b.confidence
            .partial_cmp(&a.confidence)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let last = scope["session"]["lastMessages"]
        .as_array()
        .and_then(|l| l.last())
        .cloned()
        .unwrap_or(Value::Null);
    let last_source = last["replySource"].as_str().unwrap_or("").to_string();
    let last_date = last["replyDate"]
        .as_str()
        .and_then(parse_iso_ms)
        .unwrap_or(0);
    let mut elected = None;
    let mut out = Vec::new();
    for (i, s) in suggestions.into_iter().enumerate() {
        let (status, reason) = if s.confidence < MIN_CONFIDENCE {
            ("dropped", format!("confidence lower than {MIN_CONFIDENCE}"))
        } else if last_source == format!("{} {}", s.source, s.source_details)
            && now - last_date < NO_REPEAT_MS
        {
            (
                "dropped",
                format!("bot would repeat itself (within {NO_REPEAT_MS}ms)"),
            )
        } else if elected.is_some() {
            ("dropped", "best suggestion already elected".to_string())
        } else if in_middle_of_flow {
            (
                "dropped",
                "would have been elected, but already in the middle of a flow".to_string(),
            )
        } else {
            elected = Some(i);
            ("elected", "best remaining suggestion available".to_string())
        };
        out.push((s, status, reason));
    }
    (out, elected)
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
struct TimeoutIndex {
    by_time: BTreeSet<(i64, String, String)>,
    by_key: HashMap<(String, String), i64>,
}

impl TimeoutIndex {
    fn set(&mut self, bot: &str, session: &str, expiry: i64) {
        let key = (bot.to_string(), session.to_string());
        if let Some(old) = self.by_key.remove(&key) {
            self.by_time.remove(&(old, key.0.clone(), key.1.clone()));
        }
        if expiry != 0 {
            self.by_time.insert((expiry, key.0.clone(), key.1.clone()));
            self.by_key.insert(key, expiry);
        }
    }

    fn pop_due(&mut self, now: i64) -> Option<(String, String)> {
        let first = self.by_time.first()?.clone();
        if first.0 > now {
            return None;
        }
        self.by_time.remove(&first);
        self.by_key.remove(&(first.1.clone(), first.2.clone()));
        Some((first.1, first.2))
    }
}

/// FIFO locks per conversation: a ticket lock, so waiting turns run in arrival order; entries
/// are removed when nobody holds or waits for them, so the map never grows without bound.
#[derive(Default)]
struct ConversationLocks {
    map: Mutex<HashMap<String, Arc<Ticket>>>,
}

#[derive(Default)]
struct Ticket {
    state: Mutex<(u64, u64)>,
    turn: Condvar,
}

struct ConversationGuard<'a> {
    locks: &'a ConversationLocks,
    key: String,
    ticket: Arc<Ticket>,
}

impl ConversationLocks {
    fn lock(&self, key: &str) -> ConversationGuard<'_> {
        let (ticket, mine) = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let ticket = map.entry(key.to_string()).or_default().clone();
            let mut state = ticket.state.lock().unwrap_or_else(|e| e.into_inner());
            let mine = state.0;
            state.0 += 1;
            drop(state);
            (ticket, mine)
        };
        let mut state = ticket.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.1 != mine {
            state = ticket.turn.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        drop(state);
        ConversationGuard {
            locks: self,
            key: key.to_string(),
            ticket,
        }
    }
}

impl Drop for ConversationGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = self.ticket.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        if state.0 == state.1 {
            map.remove(&self.key);
        }
        drop(state);
        self.ticket.turn.notify_all();
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

    #[test]
    fn conversation_locks_are_fifo_and_cleaned_up() {
        let locks = Arc::new(ConversationLocks::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = locks.lock("k");
        let mut handles = Vec::new();
        for i in 0..8 {
            let (shared, order) = (locks.clone(), order.clone());
            handles.push(std::thread::spawn(move || {
                let _g = shared.lock("k");
                order.lock().unwrap().push(i);
            }));
            // Let each thread take its ticket before the next one starts.
            while locks.map.lock().unwrap()["k"].state.lock().unwrap().0 < i + 2 {
                std::thread::yield_now();
            }
        }
        drop(first);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
        assert!(locks.map.lock().unwrap().is_empty());
    }
}
