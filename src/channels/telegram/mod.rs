//! The Telegram channel (§5, with the 11.8.1 quirks fixed): long polling per bot, updates
//! spooled before they are confirmed, one turn at a time per chat, replies sent in order per
//! chat and paced as Telegram asks.
//!
//! ```text
//! poller (1 thread per bot) ──push──▶ inbound Delivery (key bot/chat) ──turn──▶ Engine
//!                                                     │
//!            janitor (proactive sink) ──push──▶ outbound Delivery (key bot/chat) ──▶ Bot API
//! ```
//!
//! Both deliveries are queues of the store (`telegram-in`, `telegram-out`) and survive a
//! restart; a turn's state, the removal of its update and its replies are one commit.
//! Delivery guarantee (see `docs/telegram.md`): every update Telegram hands out is handled at
//! least once, and a reply is sent at least once; a crash can repeat only what was in flight
//! at that moment.

pub mod api;
pub mod poller;
pub mod render;
pub mod send;
pub mod throttle;

use crate::channels::delivery::{Delivery, Job, Outcome};
use crate::config::{units, Settings};
use crate::engine::{Destination, Engine, Event, TurnError};
use crate::store::{Batch, Committed, Queue};
use api::Api;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use throttle::{Limits, Throttle};

const INBOUND_THREADS: usize = 4;
const OUTBOUND_THREADS: usize = 4;

/// One bot's Telegram configuration (module `channel-telegram`, merged as §6).
#[derive(Debug, Clone)]
pub struct BotConfig {
    pub bot_id: String,
    pub token: String,
    pub api_base: String,
    pub poll_timeout: Duration,
    pub parse_mode: String,
    pub typing_delay: bool,
    pub throttle: bool,
}

impl BotConfig {
    /// The configuration of `bot_id` when Telegram is on for it. `enabled` is read from the
    /// bot's own file when it has the key; a bot file with a `botToken` and no `enabled` counts
    /// as enabled (the Botpress docs' one-line example); otherwise the merged value decides.
    pub fn load(settings: &Settings, bot_id: &str) -> Option<BotConfig> {
        let dir = settings.data_dir.join("bots").join(bot_id);
        let (merged, problems) = settings.module_config("channel-telegram", Some(&dir));
        for p in problems {
            log::warn!("{p}");
        }
        let own: Map<String, Value> =
            match crate::config::read_json(&dir.join("config").join("channel-telegram.json")) {
                Ok(Value::Object(map)) => map,
                _ => Map::new(),
            };
        let token = merged
            .get("botToken")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_string();
        let enabled = match own.get("enabled") {
            Some(v) => v.as_bool() == Some(true),
            None if own
                .get("botToken")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.trim().is_empty()) =>
            {
                true
            }
            None => merged.get("enabled").and_then(Value::as_bool) == Some(true),
        };
        if !enabled {
            return None;
        }
        if token.is_empty() {
            log::warn!("bot \"{bot_id}\": Telegram is enabled but there is no botToken; Telegram stays off for this bot");
            return None;
        }
        let text = |key: &str, default: &str| {
            merged
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_string()
        };
        let flag = |key: &str| merged.get(key).and_then(Value::as_bool).unwrap_or(true);
        let poll_timeout =
            units::parse_duration(&text("pollTimeout", "25s")).unwrap_or(Duration::from_secs(25));
        Some(BotConfig {
            bot_id: bot_id.to_string(),
            token,
            api_base: text("apiBase", "https://api.telegram.org"),
            // Telegram takes whole seconds, at most 50.
            poll_timeout: Duration::from_secs(poll_timeout.as_secs().clamp(1, 50)),
            parse_mode: text("parseMode", "Markdown"),
            typing_delay: flag("typingDelay"),
            throttle: flag("throttle"),
        })
    }
}

/// What the threads of one bot share.
pub struct BotRuntime {
    pub config: BotConfig,
    pub api: Api,
    pub throttle: Option<Throttle>,
    /// Held by the poller while it spools a batch and writes the offset; inbound workers pass
    /// through it before handling an update (see `poller`).
    pub gate: Mutex<()>,
}

/// The running channel.
pub struct Telegram {
    inbound: Arc<Delivery>,
    outbound: Arc<Delivery>,
    stop: Arc<AtomicBool>,
    pollers: Vec<JoinHandle<()>>,
}

impl Telegram {
    /// Starts Telegram for every loaded bot that has it enabled, and registers the proactive
    /// sink. `None` when no bot uses Telegram (or the spools cannot be opened).
    pub fn start(engine: Arc<Engine>) -> Option<Telegram> {
        let settings = engine.settings();
        let mut runtimes: HashMap<String, Arc<BotRuntime>> = HashMap::new();
        for id in engine.bot_ids() {
            if let Some(config) = BotConfig::load(&settings, &id) {
                let throttle = config.throttle.then(|| Throttle::new(Limits::TELEGRAM));
                let api = Api::new(&config.api_base, &config.token);
                runtimes.insert(
                    id,
                    Arc::new(BotRuntime {
                        config,
                        api,
                        throttle,
                        gate: Mutex::new(()),
                    }),
                );
            }
        }
        if runtimes.is_empty() {
            return None;
        }
        let root = settings.data_dir.join("storage").join("telegram");
        let runtimes = Arc::new(runtimes);
        match Self::start_with(engine.clone(), runtimes.clone(), &root) {
            Ok(t) => Some(t),
            Err(e) => {
                log::error!("Telegram cannot start: {}: {e}", root.display());
                None
            }
        }
    }

    fn start_with(
        engine: Arc<Engine>,
        runtimes: Arc<HashMap<String, Arc<BotRuntime>>>,
        root: &Path,
    ) -> std::io::Result<Telegram> {
        // What the inbound queue still holds, per bot: where polling resumes after a crash.
        let store = engine.store();
        let mut spooled: HashMap<String, poller::Resume> = HashMap::new();
        for queued in store.pending(Queue::TelegramIn)? {
            let Ok(item) = poller::InboundUpdate::deserialize(&queued.item) else {
                continue;
            };
            if let Some(update_id) = item.update["update_id"].as_i64() {
                spooled.insert(
                    item.bot,
                    poller::Resume {
                        update_id,
                        at_ms: item.at,
                    },
                );
            }
        }

        // Outbound first: replies left from before a restart are queued before new ones.
        let failures: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let outbound = {
            let runtimes = runtimes.clone();
            Arc::new(Delivery::start(
                store.clone(),
                Queue::TelegramOut,
                OUTBOUND_THREADS,
                "tg-send",
                Box::new(move |job| {
                    let (key, step) = (job.key, job.item);
                    let Some(rt) = step["bot"].as_str().and_then(|b| runtimes.get(b)) else {
                        log::warn!("a Telegram reply for bot {} is dropped: Telegram is not enabled for it", step["bot"]);
                        return Outcome::Drop;
                    };
                    let mut count = failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(key)
                        .copied()
                        .unwrap_or(0);
                    let outcome = send::send_step(&rt.api, rt.throttle.as_ref(), step, &mut count);
                    let mut map = failures.lock().unwrap_or_else(|e| e.into_inner());
                    if count == 0 {
                        map.remove(key);
                    } else {
                        map.insert(key.to_string(), count);
                    }
                    outcome
                }),
            )?)
        };
        let inbound = {
            let (runtimes, engine, outbound) = (runtimes.clone(), engine.clone(), outbound.clone());
            Arc::new(Delivery::start(
                store.clone(),
                Queue::TelegramIn,
                INBOUND_THREADS,
                "tg-turn",
                Box::new(move |job| handle_update(&engine, &runtimes, &outbound, job)),
            )?)
        };

        {
            let (runtimes, outbound) = (runtimes.clone(), outbound.clone());
            engine.set_proactive_sink(
                "telegram",
                Arc::new(move |dest: &Destination, payloads: Vec<Value>, batch: &mut Batch| {
                    let mut staged = outbound.staged();
                    match runtimes.get(&dest.bot_id) {
                        Some(rt) => {
                            let chat = dest.thread_id.clone().unwrap_or_else(|| dest.target.clone());
                            for step in send::plan(&rt.config, &chat, &payloads) {
                                outbound.stage(&mut staged, batch, &chat_key(&dest.bot_id, &chat), step, None);
                            }
                        }
                        None => log::info!("bot \"{}\": timeout replies for Telegram are dropped: Telegram is not enabled for this bot", dest.bot_id),
                    }
                    let outbound = outbound.clone();
                    Box::new(move |committed: &Committed| {
                        outbound.schedule(staged, committed);
                    })
                }),
            );
        }

        let stop = Arc::new(AtomicBool::new(false));
        let mut pollers = Vec::new();
        for (id, rt) in runtimes.iter() {
            let p = poller::Poller {
                rt: rt.clone(),
                inbound: inbound.clone(),
                stop: stop.clone(),
                store: store.clone(),
                storage: root.parent().unwrap_or(root).to_path_buf(),
                spooled: spooled.get(id).copied(),
            };
            pollers.push(
                std::thread::Builder::new()
                    .name(format!("tg-poll-{id}"))
                    .spawn(move || p.run())?,
            );
        }
        let mut ids: Vec<&String> = runtimes.keys().collect();
        ids.sort();
        log::info!(
            "Telegram enabled for: {}",
            ids.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Telegram {
            inbound,
            outbound,
            stop,
            pollers,
        })
    }

    /// Stops polling, then the turns and sends in progress (what is left stays spooled).
    /// A poller inside a long poll is not waited for beyond a second: whatever it still
    /// receives is spooled before it is confirmed, so nothing is lost.
    pub fn stop(self) {
        self.stop_within(Duration::from_secs(1));
    }

    /// [`Telegram::stop`], waiting up to `grace` for the pollers' long polls to end first: a
    /// live reload waits for them all, so that no update is spooled after the workers stopped
    /// and no old poller overlaps the new one.
    pub fn stop_within(self, grace: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let until = Instant::now() + grace;
        for handle in self.pollers {
            while !handle.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
        self.inbound.stop();
        self.outbound.stop();
    }
}

/// The delivery key of a chat of a bot.
pub fn chat_key(bot: &str, chat: &str) -> String {
    format!("{bot}/{chat}")
}

/// The chat an update belongs to (its `chat.id`, or the sender for an inline callback).
pub fn update_chat(update: &Value) -> String {
    let candidates = [
        &update["message"]["chat"]["id"],
        &update["callback_query"]["message"]["chat"]["id"],
        &update["callback_query"]["from"]["id"],
    ];
    candidates
        .into_iter()
        .find_map(id_string)
        .unwrap_or_else(|| "unknown".to_string())
}

fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// An update as the engine's event (§5.2), and the callback query id to answer, if any.
pub fn event_for(bot_id: &str, update: &Value) -> Option<(Event, Option<String>)> {
    if let Some(message) = update.get("message").filter(|m| m.is_object()) {
        let chat = id_string(&message["chat"]["id"])?;
        let target = id_string(&message["from"]["id"]).unwrap_or_else(|| chat.clone());
        let kind = match message["text"].as_str().map(command) {
            Some(Some("start")) => "start",
            Some(Some("help")) => "help",
            _ => "message",
        };
        let event =
            Event::new(bot_id, "telegram", kind, &target, message.clone()).with_thread(Some(chat));
        return Some((event, None));
    }
    if let Some(query) = update.get("callback_query").filter(|q| q.is_object()) {
        let target = id_string(&query["from"]["id"])?;
        let chat = id_string(&query["message"]["chat"]["id"]).unwrap_or_else(|| target.clone());
        let data = query["data"].as_str().unwrap_or("");
        let payload = json!({"type": "callback", "text": data, "data": data, "id": query["id"],
            "from": query["from"], "message": query["message"]});
        let event =
            Event::new(bot_id, "telegram", "callback", &target, payload).with_thread(Some(chat));
        return Some((event, query["id"].as_str().map(str::to_string)));
    }
    None
}

/// The command of a message text: `/start`, `/start@SomeBot`, `/start payload` → `start`.
fn command(text: &str) -> Option<&str> {
    let first = text.split_whitespace().next()?.strip_prefix('/')?;
    let name = first.split('@').next().unwrap_or(first);
    (!name.is_empty()).then_some(name)
}

/// The inbound handler: one update → one turn → its replies queued for sending, in order,
/// on the chat's outbound key, in the same commit as the turn's state and the update's
/// removal.
fn handle_update(
    engine: &Engine,
    runtimes: &HashMap<String, Arc<BotRuntime>>,
    outbound: &Delivery,
    job: &Job,
) -> Outcome {
    let (key, attempt) = (job.key, job.attempt);
    let item = match poller::InboundUpdate::deserialize(job.item) {
        Ok(item) => item,
        Err(e) => {
            return Outcome::DeadLetter(format!("not a queued Telegram update: {e}"));
        }
    };
    let bot = item.bot.as_str();
    let Some(rt) = runtimes.get(bot) else {
        log::warn!(
            "a Telegram update for bot \"{bot}\" is dropped: Telegram is not enabled for it"
        );
        return Outcome::Drop;
    };
    // Wait until the poller has recorded the offset of this update's batch.
    drop(rt.gate.lock().unwrap_or_else(|e| e.into_inner()));
    let update = &item.update;
    let Some((event, callback_id)) = event_for(bot, update) else {
        log::debug!("bot \"{bot}\": a Telegram update of an unhandled kind is skipped");
        return Outcome::Drop;
    };
    if let (Some(id), 1) = (&callback_id, attempt) {
        // Stops the spinner on the button; best effort (a late answer is refused, harmlessly).
        if let Err(e) = rt.api.call(
            "answerCallbackQuery",
            &json!({"callback_query_id": id}),
            Duration::from_secs(10),
        ) {
            log::debug!("bot \"{bot}\": answerCallbackQuery failed: {e}");
        }
    }
    let chat = event
        .thread_id
        .clone()
        .unwrap_or_else(|| event.target.clone());
    let mut staged = outbound.staged();
    let played = engine.turn_with(event, None, &mut |out, batch| {
        batch.finish(job.queue, job.id);
        for step in send::plan(&rt.config, &chat, &out.responses) {
            outbound.stage(&mut staged, batch, key, step, None);
        }
    });
    match played {
        Ok((_, committed)) => {
            outbound.schedule(staged, &committed);
            Outcome::Removed
        }
        Err(TurnError::UnknownBot(_)) => {
            log::warn!("bot \"{bot}\" is not loaded any more; a Telegram update is dropped");
            Outcome::Drop
        }
        Err(TurnError::Storage(e)) if e.permanent => {
            Outcome::DeadLetter(format!("bot \"{bot}\": the turn cannot be saved: {e}"))
        }
        Err(e) if attempt < 8 => {
            log::warn!("bot \"{bot}\": a Telegram turn failed ({e}); trying again");
            Outcome::Retry(send::backoff(attempt))
        }
        Err(e) => Outcome::DeadLetter(format!(
            "bot \"{bot}\": a Telegram turn failed {attempt} times ({e})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_become_events() {
        let msg = |text: &str| json!({"update_id": 5, "message": {"message_id": 1, "from": {"id": 7}, "chat": {"id": -99}, "date": 1, "text": text}});
        for (text, kind) in [
            ("/start", "start"),
            ("/start@MyBot x", "start"),
            ("/help", "help"),
            ("/help@B", "help"),
            ("hi", "message"),
            ("/other", "message"),
        ] {
            let (e, cb) = event_for("b", &msg(text)).unwrap();
            assert_eq!(
                (
                    e.kind.as_str(),
                    e.target.as_str(),
                    e.thread_id.as_deref(),
                    cb
                ),
                (kind, "7", Some("-99"), None),
                "{text}"
            );
            assert_eq!(e.preview, text);
            assert_eq!(e.payload["message_id"], 1);
        }
        let photo = json!({"update_id": 6, "message": {"message_id": 2, "from": {"id": 7}, "chat": {"id": 7}, "photo": [{"file_id": "x"}]}});
        let (e, _) = event_for("b", &photo).unwrap();
        assert_eq!((e.kind.as_str(), e.preview.as_str()), ("message", ""));
        let cb = json!({"update_id": 7, "callback_query": {"id": "q1", "from": {"id": 7}, "data": "PICK", "message": {"chat": {"id": 8}}}});
        let (e, id) = event_for("b", &cb).unwrap();
        assert_eq!(
            (
                e.kind.as_str(),
                e.target.as_str(),
                e.thread_id.as_deref(),
                e.preview.as_str()
            ),
            ("callback", "7", Some("8"), "PICK")
        );
        assert_eq!(id.as_deref(), Some("q1"));
        assert_eq!(update_chat(&cb), "8");
        assert!(event_for("b", &json!({"update_id": 8, "edited_message": {}})).is_none());
    }
}
