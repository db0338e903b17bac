//! The engine: the loaded bots, and one turn at a time per conversation (NLU → decision →
//! dialog → render → save).

use super::actions::{context_list, set_context_list};
use super::bot::{self, Bot, BotpressVersion};
use super::decision::{decide, default_decision};
use super::dialog::{self, DialogContext, DialogError, Turn};
use super::event::{default_nlu, iso_time, new_event_id, now_ms, object, Event};
use super::janitor::TimeoutIndex;
use super::js;
use super::locks::ConversationLocks;
use super::qna;
use super::state;
use super::Problem;
use crate::config::Settings;
use crate::store::{Batch, Committed, Namespace, Store, StoreError};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

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
    /// State could not be read or written; nothing of the turn was saved.
    Storage(StoreError),
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

/// Where a conversation lives on its channel, for replies nobody asked for (timeouts, the
/// proactive API).
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub bot_id: String,
    pub channel: String,
    pub target: String,
    pub thread_id: Option<String>,
    /// Set for a message of the proactive API: its id, whose outcome the channel reports.
    pub proactive: Option<ProactiveMark>,
}

/// A message of the proactive API, as the channel that sends it sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProactiveMark {
    /// The message id the caller asks the outcome of.
    pub id: String,
    /// A tag the channel's rules require for this message (Messenger's `HUMAN_AGENT`).
    pub tag: Option<String>,
}

/// Queues payloads the engine produces on its own (timeout nodes, the proactive API) for a
/// channel: the sink adds them to the batch that also holds the conversation's state and
/// says how many queue items that made; `Err` says why the channel cannot take them (not
/// enabled for the bot).
pub type ProactiveSink =
    Arc<dyn Fn(&Destination, Vec<Value>, &mut Batch) -> Result<Staging, String> + Send + Sync>;

/// What a sink staged: how many queue items, and what schedules them once committed.
pub struct Staging {
    pub items: usize,
    pub schedule: AfterCommit,
}

/// What to do once a batch is committed (schedule the items it queued).
pub type AfterCommit = Box<dyn FnOnce(&Committed) + Send>;

pub struct Engine {
    /// Replaced whole by a live reload; readers keep the `Arc` they took for a whole turn.
    settings: RwLock<Arc<Settings>>,
    pub(super) store: Arc<dyn Store>,
    pub(super) bots: RwLock<HashMap<String, Arc<Bot>>>,
    pub(super) locks: ConversationLocks,
    pub(super) timeouts: Mutex<TimeoutIndex>,
    pub(super) sinks: RwLock<HashMap<String, ProactiveSink>>,
    /// Fingerprints of bot folders that failed to load, so a broken bot is reported once per
    /// edit rather than on every check.
    failed: Mutex<HashMap<String, u64>>,
    /// Whether the bots are mounted (`botd run`): bot lifecycle hooks run from then on.
    mounted: std::sync::atomic::AtomicBool,
}

impl Engine {
    /// Loads every bot folder of the data directory. Problems are returned to be logged or
    /// printed; bots that could not load are left out.
    pub fn new(settings: Arc<Settings>, store: Arc<dyn Store>) -> (Engine, Vec<Problem>) {
        let engine = Engine {
            settings: RwLock::new(settings),
            store,
            bots: RwLock::new(HashMap::new()),
            locks: ConversationLocks::default(),
            timeouts: Mutex::new(TimeoutIndex::default()),
            sinks: RwLock::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            mounted: std::sync::atomic::AtomicBool::new(false),
        };
        let problems = engine.load_bots();
        (engine, problems)
    }

    /// The running settings: a live reload replaces them, so take them once per piece of work.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes a reloaded configuration. With `reload_bots`, every bot is loaded again under it
    /// (their defaults come from it); a bot whose load fails keeps its running version.
    pub fn replace_settings(&self, settings: Arc<Settings>, reload_bots: bool) -> Vec<Problem> {
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
        if !reload_bots {
            return Vec::new();
        }
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.reload(true)
    }

    /// The store the channels queue their work in, next to the conversation state.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    fn load_bots(&self) -> Vec<Problem> {
        let settings = self.settings();
        let mut problems = Vec::new();
        let mut loaded = HashMap::new();
        for id in bot::list_bot_dirs(&settings.data_dir) {
            let fingerprint = bot::fingerprint(&settings.data_dir.join("bots").join(&id));
            let outcome = bot::load_bot(&settings, &id);
            let down = not_loaded(&settings, &id, &outcome);
            problems.extend(outcome.errors);
            problems.extend(outcome.warnings);
            problems.extend(down);
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
        self.reload(false)
    }

    /// Reloads changed bots, or every bot when `all`.
    fn reload(&self, all: bool) -> Vec<Problem> {
        let settings = self.settings();
        let mut problems = Vec::new();
        let ids = bot::list_bot_dirs(&settings.data_dir);
        let current: HashMap<String, Arc<Bot>> =
            self.bots.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut next = HashMap::new();
        for id in &ids {
            let dir = settings.data_dir.join("bots").join(id);
            let fingerprint = bot::fingerprint(&dir);
            if let Some(existing) = current.get(id) {
                if existing.fingerprint == fingerprint && !all {
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
            let outcome = bot::load_bot(&settings, id);
            if outcome.bot.is_none() && !outcome.disabled {
                self.failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone(), fingerprint);
            }
            // A bot that keeps running its previous version is not "down".
            let down = not_loaded(&settings, id, &outcome).filter(|_| !current.contains_key(id));
            problems.extend(outcome.errors.iter().cloned());
            problems.extend(outcome.warnings);
            problems.extend(down);
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
        let replaced: Vec<Remount> = current
            .iter()
            .filter(|(id, old)| next.get(*id).is_none_or(|new| !Arc::ptr_eq(old, new)))
            .map(|(id, old)| (Some(old.clone()), next.get(id).cloned()))
            .chain(
                next.iter()
                    .filter(|(id, _)| !current.contains_key(*id))
                    .map(|(_, new)| (None, Some(new.clone()))),
            )
            .collect();
        // Botpress reloads a bot by unmounting and mounting it again; the new version answers
        // once mounted.
        if self.mounted.load(std::sync::atomic::Ordering::SeqCst) {
            for (old, new) in replaced {
                if let Some(old) = old {
                    self.lifecycle_hook(&old, "after_bot_unmount");
                }
                if let Some(new) = new {
                    self.lifecycle_hook(&new, "after_bot_mount");
                }
            }
        }
        *self.bots.write().unwrap_or_else(|e| e.into_inner()) = next;
        problems
    }

    /// Mounts every loaded bot (`after_bot_mount`), as Botpress does when it starts; bots
    /// reloaded from then on are unmounted and mounted again.
    pub fn mount_all(&self) {
        self.mounted
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for id in self.bot_ids() {
            if let Some(bot) = self.bot(&id) {
                self.lifecycle_hook(&bot, "after_bot_mount");
            }
        }
    }

    /// Unmounts every bot (`after_bot_unmount`), when botd stops.
    pub fn unmount_all(&self) {
        if !self
            .mounted
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        for id in self.bot_ids() {
            if let Some(bot) = self.bot(&id) {
                self.lifecycle_hook(&bot, "after_bot_unmount");
            }
        }
    }

    /// Runs `after_bot_mount` or `after_bot_unmount` for `bot`, outside any conversation;
    /// what the hooks wrote to the bot's KV store is committed.
    fn lifecycle_hook(&self, bot: &Bot, hook: &str) {
        if !bot.hooks.has(hook) {
            return;
        }
        let scope = object([
            ("event", json!({ "botId": bot.id })),
            ("user", json!({})),
            ("session", json!({})),
            ("temp", json!({})),
        ]);
        let mut turn = self.new_turn(bot, scope, DialogContext::default(), "", None);
        let mut args = json!({ "botId": bot.id });
        js::run_hook_with(&mut turn, hook, &mut args, js::HookArgs::Bot);
        if turn.kv_writes.is_empty() {
            return;
        }
        let mut batch = Batch::new();
        for (key, value) in turn.kv_writes {
            batch.put(Namespace::Kv, &bot.id, &key, value);
        }
        if let Err(e) = self.store.commit(batch) {
            log::warn!("bot \"{}\": {hook}: cannot save its KV writes: {e}", bot.id);
        }
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

    /// Where proactive replies for `channel` go, when a channel registered one.
    pub fn proactive_sink(&self, channel: &str) -> Option<ProactiveSink> {
        self.sinks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
            .cloned()
    }

    /// Plays one turn. Turns of one conversation run one at a time, in arrival order; other
    /// conversations run in parallel. `deadline` bounds the turn (Converse's timeout).
    pub fn turn(&self, event: Event, deadline: Option<Instant>) -> Result<TurnOutput, TurnError> {
        self.turn_with(event, deadline, &mut |_, _| {})
            .map(|(output, _)| output)
    }

    /// Plays one turn like [`Engine::turn`]; `then` may add to the turn's batch what must be
    /// committed with its state (the removal of the queued event that caused it, the replies
    /// to queue). The whole batch is one transaction: if it fails, nothing of the turn is
    /// saved. Returns the output and what the commit gave back (ids of queued items).
    pub fn turn_with(
        &self,
        event: Event,
        deadline: Option<Instant>,
        then: &mut dyn FnMut(&TurnOutput, &mut Batch),
    ) -> Result<(TurnOutput, Committed), TurnError> {
        let bot = self
            .bot(&event.bot_id)
            .ok_or_else(|| TurnError::UnknownBot(event.bot_id.clone()))?;
        let session_id = event.session_id();
        let key = format!("{}\u{0}{session_id}", bot.id);
        log::debug!("bot \"{}\": a turn waits for its conversation", bot.id);
        let Some(_guard) = self.locks.lock_until(&key, deadline) else {
            return Err(TurnError::Timeout);
        };
        // Then against the other instances sharing the store (nothing when none can).
        let Some(_hold) = self
            .store
            .hold_conversation(&key, deadline)
            .map_err(TurnError::Storage)?
        else {
            return Err(TurnError::Timeout);
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(TurnError::Timeout);
        }
        self.run_turn(&bot, event, &session_id, deadline, then)
    }

    fn run_turn(
        &self,
        bot: &Bot,
        mut event: Event,
        session_id: &str,
        deadline: Option<Instant>,
        then: &mut dyn FnMut(&TurnOutput, &mut Batch),
    ) -> Result<(TurnOutput, Committed), TurnError> {
        let now = now_ms();
        let store = self.store.as_ref();
        let io = TurnError::Storage;
        let thread = event.thread_id.as_deref();
        let (channel, target) = (event.channel.clone(), event.target.clone());
        let mut record =
            state::load_session(store, &bot.id, session_id, &channel, &target, thread, now)
                .map_err(io)?;
        let mut user = state::load_user(store, &bot.id, &channel, &target).map_err(io)?;
        let bot_kv = state::load_bot_kv(store, &bot.id).map_err(io)?;
        let user_before = user.clone();
        let before_incoming =
            self.before_incoming_hooks(bot, &mut event, &mut user, &mut record, deadline);

        let nlu = understand(bot, &event, &record.session, now);
        let mut scope = object([
            ("event", event_json(bot, &mut event, &nlu, now)),
            ("user", user),
            ("session", std::mem::take(&mut record.session)),
            ("temp", record.temp.clone()),
        ]);
        if let Some(kv) = bot_kv {
            scope["bot"] = kv;
        }
        after_incoming(bot, &mut scope["session"], &nlu);

        let in_middle_of_flow = !record.context.is_empty();
        let mut turn = self.new_turn(bot, scope, record.context.clone(), &channel, deadline);
        turn.replies_together = event.replies_together;
        if let Some(effects) = before_incoming {
            turn.scope["event"]["flags"] = effects.flags;
            turn.kv_writes = effects.kv_writes;
            turn.outputs = effects.outputs;
        }
        if bot.hooks.has("after_incoming_middleware") {
            let mut hooked = turn.scope["event"].take();
            js::run_hook(&mut turn, "after_incoming_middleware", &mut hooked);
            turn.scope["event"] = hooked;
        }
        let decided = self.decide_turn(&mut turn, session_id, &nlu, in_middle_of_flow, now);
        let run_dialog = decided.run_dialog
            && !js::skips_dialog(&turn.scope["event"])
            && !["session_reset", "typing", "visit"].contains(&event.kind.as_str());
        let dialog_result = match decided.redirect_error {
            Some(e) => Err(e),
            None if run_dialog => dialog::process(&mut turn),
            None => Ok(()),
        };
        if let Err(e) = dialog_result {
            return self.failed_turn(turn, e, nlu, decided.suggestions, then);
        }
        outgoing_hooks(&mut turn, run_dialog);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(TurnError::Timeout);
        }

        // Persist: user (when it changed), bot KV and the session (§8.8), in one batch.
        let mut batch = Batch::new();
        if turn.scope["user"] != user_before {
            state::save_user(&mut batch, &bot.id, &channel, &target, &turn.scope["user"]);
        }
        for (key, value) in &turn.kv_writes {
            batch.put(Namespace::Kv, &bot.id, key, value.clone());
        }
        record.session = turn.scope["session"].clone();
        record.session_expiry = now + bot.session_timeout_interval.as_millis() as i64;
        // A QnA answer leaves the stored flow position and temp as they were loaded.
        if decided.save_context {
            record.context = turn.context.clone();
            record.temp = turn.scope["temp"].clone();
            record.context_expiry = if record.context.is_empty() {
                0
            } else {
                now + bot.timeout_interval.as_millis() as i64
            };
        }
        state::save_session(&mut batch, &bot.id, session_id, &record);
        let context_expiry = record.context_expiry;

        let mut state_json = object([
            ("user", turn.scope["user"].take()),
            (
                "context",
                serde_json::to_value(&record.context).unwrap_or_default(),
            ),
            ("session", std::mem::take(&mut record.session)),
            ("temp", std::mem::take(&mut record.temp)),
        ]);
        if let Some(kv) = turn.scope.get_mut("bot") {
            state_json["bot"] = kv.take();
        }
        let output = TurnOutput {
            responses: turn.outputs,
            nlu,
            state: state_json,
            suggestions: Value::Array(decided.suggestions),
            decision: decided.decision,
        };
        then(&output, &mut batch);
        let committed = store.commit(batch).map_err(io)?;
        // Indexed only once committed: a timeout must never run for an unsaved context.
        self.timeouts.lock().unwrap_or_else(|e| e.into_inner()).set(
            &bot.id,
            session_id,
            context_expiry,
        );
        Ok((output, committed))
    }

    /// `before_incoming_middleware` hooks, before NLU: they may change the event's type,
    /// payload and preview, set flags and change the state. What they queued (flags, KV
    /// writes, replies) joins the turn.
    fn before_incoming_hooks(
        &self,
        bot: &Bot,
        event: &mut Event,
        user: &mut Value,
        record: &mut state::SessionRecord,
        deadline: Option<Instant>,
    ) -> Option<HookEffects> {
        if !bot.hooks.has("before_incoming_middleware") {
            return None;
        }
        let mut hooked = object([
            ("type", Value::String(event.kind.clone())),
            ("channel", Value::String(event.channel.clone())),
            ("direction", Value::String("incoming".into())),
            ("target", Value::String(event.target.clone())),
            ("botId", Value::String(bot.id.clone())),
            ("payload", event.payload.clone()),
            ("preview", Value::String(event.preview.clone())),
            ("flags", Value::Object(Map::new())),
        ]);
        let scope = object([
            ("user", user.take()),
            ("session", record.session.take()),
            ("temp", record.temp.take()),
        ]);
        let channel = event.channel.clone();
        let context = std::mem::take(&mut record.context);
        let mut turn = self.new_turn(bot, scope, context, &channel, deadline);
        js::run_hook(&mut turn, "before_incoming_middleware", &mut hooked);
        // A hook's bp.dialog.jumpTo moves the conversation the dialog engine will play.
        record.context = std::mem::take(&mut turn.context);
        if let Some(kind) = hooked["type"].as_str() {
            event.kind = kind.to_string();
        }
        if let Some(preview) = hooked["preview"].as_str() {
            event.preview = preview.to_string();
        }
        event.payload = hooked["payload"].take();
        *user = turn.scope["user"].take();
        record.session = turn.scope["session"].take();
        record.temp = turn.scope["temp"].take();
        Some(HookEffects {
            flags: hooked["flags"].take(),
            kv_writes: turn.kv_writes,
            outputs: turn.outputs,
        })
    }

    /// A turn of `bot` starting from `scope` and `context`, rendering for `channel`.
    pub(super) fn new_turn<'a>(
        &'a self,
        bot: &'a Bot,
        scope: Value,
        context: DialogContext,
        channel: &str,
        deadline: Option<Instant>,
    ) -> Turn<'a> {
        let settings = self.settings();
        Turn {
            bot,
            store: self.store.as_ref(),
            scope,
            context,
            channel: channel.to_string(),
            bot_url: settings.http.external_url.clone(),
            settings,
            outputs: Vec::new(),
            kv_writes: Vec::new(),
            deadline,
            // Replies nobody waits for (a timeout's) go out as they come.
            replies_together: false,
        }
    }

    /// The decision engine's part of a turn (§9.1): every QnA suggestion with its decision,
    /// and for an elected one its answer sent and its redirect applied.
    fn decide_turn(
        &self,
        turn: &mut Turn,
        session_id: &str,
        nlu: &Value,
        in_middle_of_flow: bool,
        now: i64,
    ) -> Decided {
        let bot = turn.bot;
        let last_message = turn.scope["session"]["lastMessages"]
            .as_array()
            .and_then(|l| l.last())
            .cloned()
            .unwrap_or(Value::Null);
        let (suggestions, mut elected) = decide(
            qna::suggest(
                &bot.qna,
                nlu,
                &answer_language(bot, nlu, &turn.scope["user"]),
                &bot.default_language,
            ),
            &last_message,
            in_middle_of_flow,
            now,
            bot.botpress_version.min_qna_confidence(),
        );
        let mut suggestions_json: Vec<Value> = suggestions
            .iter()
            .map(|(s, status, reason)| {
                let payloads = self.suggestion_payloads(bot, s, &turn.scope, &turn.channel);
                json!({"confidence": s.confidence, "payloads": payloads, "source": s.source,
                    "sourceDetails": s.source_details, "decision": {"status": status, "reason": reason}})
            })
            .collect();
        if bot.hooks.has("before_suggestions_election") {
            // Botpress: the hook sees every decided suggestion as `event.suggestions` (and
            // `suggestions`), may change them, and the first one elected then is.
            let mut hooked = turn.scope["event"].take();
            hooked["suggestions"] = Value::Array(suggestions_json);
            js::run_hook_with(
                turn,
                "before_suggestions_election",
                &mut hooked,
                js::HookArgs::Suggestions { session_id },
            );
            suggestions_json = match hooked.as_object_mut().and_then(|e| e.remove("suggestions")) {
                Some(Value::Array(list)) => list,
                _ => Vec::new(),
            };
            turn.scope["event"] = hooked;
            elected = suggestions_json
                .iter()
                .position(|s| s["decision"]["status"] == "elected");
        }
        let mut decided = Decided {
            decision: default_decision(),
            run_dialog: true,
            save_context: true,
            redirect_error: None,
            suggestions: Vec::new(),
        };
        if let Some(i) = elected {
            let chosen = &suggestions_json[i];
            let payloads: Vec<Value> = chosen["payloads"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter(|x| x["type"] != "redirect")
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            // The answer's text, as QnA gave it (what the hook left of it otherwise).
            let source_details = chosen["sourceDetails"].as_str().unwrap_or("");
            let reply_preview = suggestions
                .iter()
                .find(|(s, _, _)| s.source_details == source_details)
                .and_then(|(s, _, _)| s.answer.clone())
                .or_else(|| {
                    payloads
                        .iter()
                        .find_map(|p| p["text"].as_str().map(str::to_string))
                })
                .unwrap_or_default();
            let incoming = turn.scope["event"]["preview"].clone();
            turn.add_history(json!({
                "incomingPreview": incoming,
                "replySource": format!("{} {source_details}", chosen["source"].as_str().unwrap_or("")),
                "replyPreview": reply_preview, "replyConfidence": chosen["confidence"],
                "replyDate": iso_time(now),
            }));
            turn.push_outputs(payloads);
            let redirect = chosen["payloads"]
                .as_array()
                .and_then(|p| p.iter().find(|x| x["type"] == "redirect"))
                .and_then(|r| {
                    let flow = r["flow"].as_str().filter(|f| !f.is_empty())?;
                    Some((flow.to_string(), r["node"].as_str().map(str::to_string)))
                });
            match redirect {
                // A redirect plays the flow from there; the decision shown is the flow's.
                Some((flow, node)) => {
                    decided.redirect_error =
                        dialog::jump_to(bot, &mut turn.context, &flow, node.as_deref()).err();
                }
                None => {
                    decided.decision = chosen.clone();
                    decided.run_dialog = false;
                    decided.save_context = false;
                }
            }
        }
        decided.suggestions = suggestions_json;
        decided
    }

    /// A failed dialog: the bot's error message is sent and nothing of the state is saved
    /// (§9.1); what `then` adds (the event's removal, the error message queued) is.
    fn failed_turn(
        &self,
        mut turn: Turn,
        error: DialogError,
        nlu: Value,
        suggestions: Vec<Value>,
        then: &mut dyn FnMut(&TurnOutput, &mut Batch),
    ) -> Result<(TurnOutput, Committed), TurnError> {
        let message = match error {
            DialogError::Timeout => return Err(TurnError::Timeout),
            DialogError::Failed(m) => m,
        };
        log::warn!("bot \"{}\": {message}", turn.bot.id);
        let (kind, args) = &turn.bot.error_content;
        let rendered = super::content::render_type(kind, args, &turn.scope, turn.render_target())
            .unwrap_or_else(|e| {
                log::warn!(
                    "bot \"{}\": the error message itself cannot be rendered: {e}",
                    turn.bot.id
                );
                Vec::new()
            });
        turn.push_outputs(rendered);
        let state = json!({"user": turn.scope["user"], "context": turn.context, "session": turn.scope["session"], "temp": turn.scope["temp"]});
        let output = TurnOutput {
            responses: turn.outputs,
            nlu,
            state,
            suggestions: Value::Array(suggestions),
            decision: default_decision(),
        };
        let mut batch = Batch::new();
        then(&output, &mut batch);
        let committed = self.store.commit(batch).map_err(TurnError::Storage)?;
        Ok((output, committed))
    }

    fn suggestion_payloads(
        &self,
        bot: &Bot,
        s: &qna::Suggestion,
        scope: &Value,
        channel: &str,
    ) -> Vec<Value> {
        let mut payloads = Vec::new();
        let settings = self.settings();
        let target = super::content::RenderTarget {
            channel,
            bot_url: &settings.http.external_url,
            botpress: bot.botpress_version,
        };
        if let Some(id) = s.answer.as_deref().and_then(|a| a.strip_prefix("#!")) {
            // Botpress 12: an answer that names a content element renders that element, in
            // the user's language from 12.10 (before, the QnA module gave the renderer no
            // event, so the element rendered in the default language).
            let lang = if bot.botpress_version >= BotpressVersion(12, 10, 0) {
                user_language(bot, &scope["user"])
            } else {
                bot.default_language.clone()
            };
            let rendered = bot
                .elements
                .get(id)
                .ok_or_else(|| format!("content element \"{id}\" does not exist"))
                .and_then(|element| {
                    super::content::render_answer_element(
                        element,
                        scope,
                        &lang,
                        &bot.default_language,
                        target,
                    )
                });
            match rendered {
                Ok(p) => payloads.extend(p),
                Err(e) => log::warn!("bot \"{}\": QnA answer cannot be rendered: {e}", bot.id),
            }
        } else if let Some(answer) = &s.answer {
            let mut args = Map::new();
            args.insert("text".into(), Value::String(answer.clone()));
            args.insert("typing".into(), Value::Bool(true));
            match super::content::render_type(&bot.qna_renderer, &args, scope, target) {
                Ok(p) => payloads.extend(p),
                Err(e) => log::warn!("bot \"{}\": QnA answer cannot be rendered: {e}", bot.id),
            }
        }
        if let Some((flow, node)) = &s.redirect {
            payloads.push(qna::redirect_payload(flow, node));
        }
        payloads
    }
}

/// The line that says a bot stays down because of the problems reported with it.
fn not_loaded(settings: &Settings, id: &str, outcome: &bot::LoadOutcome) -> Option<Problem> {
    (outcome.bot.is_none() && !outcome.disabled).then(|| {
        Problem::new(
            format!("{}/bots/{id}", settings.data_dir.display()),
            format!(
                "bot \"{id}\" is not loaded because of the {} problem(s) above (`botd check` lists them)",
                outcome.errors.len()
            ),
        )
    })
}

/// A bot version going (unmounted) and one coming (mounted) in a reload.
type Remount = (Option<Arc<Bot>>, Option<Arc<Bot>>);

/// What the decision engine settled for a turn.
struct Decided {
    /// `event.decision`: the elected suggestion, or "execute default flow".
    decision: Value,
    /// Every suggestion with its decision, as the secured route shows them.
    suggestions: Vec<Value>,
    run_dialog: bool,
    /// False after a QnA text answer: the flow position and temp are not touched.
    save_context: bool,
    /// A redirect to a flow or node that does not exist.
    redirect_error: Option<DialogError>,
}

/// before_incoming + NLU (§1.3, §10): the session's NLU contexts, when it has some, decide
/// what NLU predicts with; events without text, and timeouts, get the default result.
fn understand(bot: &Bot, event: &Event, session: &Value, now: i64) -> Value {
    let session_contexts = session.as_object().map(context_list).unwrap_or_default();
    let included: Vec<String> = if session_contexts.is_empty() {
        event.included_contexts.clone()
    } else {
        session_contexts.into_iter().map(|(c, _)| c).collect()
    };
    let skip = event.preview.is_empty()
        || ["session_reset", "bp_dialog_timeout", "visit", "timeout"]
            .contains(&event.kind.as_str());
    if skip {
        return default_nlu(&included);
    }
    if bot.botpress_version.0 < 12 {
        return bot.nlu.understand(&event.preview, &included, now);
    }
    // Botpress 12 predicts with the model of the language it detects among the bot's.
    let last_messages: Vec<String> = session["lastMessages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["incomingPreview"].as_str().map(str::to_string))
        .collect();
    let (language, detected) = bot.prediction_language(&event.preview, &last_messages);
    let mut nlu = bot
        .nlu_for(&language)
        .understand(&event.preview, &included, now);
    nlu["language"] = Value::String(language);
    nlu["detectedLanguage"] = Value::String(detected);
    nlu
}

/// `event.state.user.language` when it is set, else the bot's default language (what
/// Botpress's `cms.renderElement` translates content elements into).
pub(super) fn user_language(bot: &Bot, user: &Value) -> String {
    user["language"]
        .as_str()
        .filter(|l| !l.is_empty())
        .unwrap_or(&bot.default_language)
        .to_string()
}

/// The language a QnA answer is picked in: Botpress 12.0 to 12.9 take the NLU's language
/// (`n/a`: the default one), 12.10 on the user's language; Botpress 11 bots have one.
fn answer_language(bot: &Bot, nlu: &Value, user: &Value) -> String {
    if bot.botpress_version >= BotpressVersion(12, 10, 0) {
        return user_language(bot, user);
    }
    match nlu["language"].as_str() {
        Some(lang) if bot.botpress_version.0 >= 12 && lang != "n/a" => lang.to_string(),
        _ => bot.default_language.clone(),
    }
}

/// The `event` conditions and templates see (§1.1), with sensitive entities masked in
/// `payload.text`. Takes the payload and credentials out of `event`.
pub(super) fn event_json(bot: &Bot, event: &mut Event, nlu: &Value, now: i64) -> Value {
    let mut payload = std::mem::take(&mut event.payload);
    let has_entities = nlu["entities"].as_array().is_some_and(|e| !e.is_empty());
    if has_entities {
        if let Some(text) = payload.get("text").and_then(Value::as_str) {
            let masked = bot.nlu.mask_sensitive(text, nlu);
            payload["text"] = Value::String(masked);
        }
    }
    object([
        ("id", Value::String(new_event_id())),
        ("type", Value::String(event.kind.clone())),
        ("channel", Value::String(event.channel.clone())),
        ("direction", Value::String("incoming".into())),
        ("target", Value::String(event.target.clone())),
        (
            "threadId",
            event.thread_id.clone().map_or(Value::Null, Value::String),
        ),
        ("botId", Value::String(bot.id.clone())),
        ("payload", payload),
        ("preview", Value::String(event.preview.clone())),
        ("createdOn", Value::String(iso_time(now))),
        ("nlu", nlu.clone()),
        (
            "credentials",
            event.credentials.take().unwrap_or(Value::Null),
        ),
    ])
}

/// after_incoming hooks (§1.3): NLU contexts lose one turn of life (unless NLU failed), and
/// the slots go to `session.extractedSlots` (`session.slots` in Botpress 12).
fn after_incoming(bot: &Bot, session: &mut Value, nlu: &Value) {
    if !nlu["errored"].as_bool().unwrap_or(false) {
        if let Some(map) = session.as_object_mut() {
            if map.contains_key("nluContexts") {
                let kept = context_list(map)
                    .into_iter()
                    .map(|(c, t)| (c, t.saturating_sub(1)))
                    .filter(|(_, t)| *t > 0)
                    .collect();
                set_context_list(map, kept);
            }
        }
    }
    super::skills::extract_slots_hook(bot.botpress_version, session, nlu);
}

/// What `before_incoming_middleware` hooks leave for the turn, which starts after them.
struct HookEffects {
    flags: Value,
    kv_writes: Vec<(String, Value)>,
    outputs: Vec<Value>,
}

/// `before_outgoing_middleware` on every payload of a finished turn (a hook may change it),
/// then `after_event_processed` on the incoming event, which Botpress 11 calls only when the
/// dialog engine processed the event.
pub(super) fn outgoing_hooks(turn: &mut Turn, dialog_ran: bool) {
    let bot = turn.bot;
    if bot.hooks.has("before_outgoing_middleware") {
        let outputs = std::mem::take(&mut turn.outputs);
        for payload in outputs {
            if super::pause_of(&payload).is_some() {
                turn.outputs.push(payload);
                continue;
            }
            let mut hooked = object([
                ("type", payload["type"].clone()),
                ("channel", Value::String(turn.channel.clone())),
                ("direction", Value::String("outgoing".into())),
                ("target", turn.scope["event"]["target"].clone()),
                ("botId", Value::String(bot.id.clone())),
                ("payload", payload),
            ]);
            js::run_hook(turn, "before_outgoing_middleware", &mut hooked);
            turn.outputs.push(hooked["payload"].take());
        }
    }
    if dialog_ran && bot.hooks.has("after_event_processed") {
        let mut hooked = turn.scope["event"].clone();
        js::run_hook(turn, "after_event_processed", &mut hooked);
    }
}
