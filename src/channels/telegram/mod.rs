//! The Telegram channel (§5, with the 11.8.1 quirks fixed): long polling per bot, updates
//! spooled before they are confirmed, one turn at a time per chat, replies sent in order per
//! chat and paced as Telegram asks.
//!
//! It runs on the push channels' [`Pipeline`]: the poller (one thread per bot) commits
//! updates to the inbound queue (`telegram-in`, key bot/chat); the pipeline plays each turn
//! ([`event_for`] is the parser) and queues its replies ([`send::plan`] is the renderer) on
//! the outbound queue (`telegram-out`), sent by [`send::send_reply`] (the API client). Both
//! queues survive a restart; a turn's state, the removal of its update and its replies are
//! one commit.
//! Delivery guarantee (see `docs/telegram.md`): every update Telegram hands out is handled at
//! least once, and a reply is sent at least once; a crash can repeat only what was in flight
//! at that moment.

pub mod api;
pub mod poller;
pub mod render;
pub mod send;
pub mod throttle;
pub mod webhook;

use crate::channels::pipeline::{
    self, InboundRecord, OutboundRecord, Pipeline, PushChannel, Reply, Sent,
};
use crate::channels::retry::Stop;
use crate::config::{units, Settings};
use crate::engine::{Destination, Engine, Event};
use crate::store::Queue;
use api::Api;
use send::BotCall;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;
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
    /// How updates arrive: long polling (the default) or Telegram calling botd's webhook.
    pub mode: Mode,
}

/// How a bot receives its updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// botd asks with `getUpdates` (no public address needed).
    Polling,
    /// Telegram posts each update to `url`, with `secret` in the
    /// `X-Telegram-Bot-Api-Secret-Token` header; `secret` is `None` when the configuration
    /// has none (botd makes one and keeps it in the database).
    Webhook { url: String, secret: Option<String> },
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
        let file = dir.join("config").join("channel-telegram.json");
        let mode = match text("mode", "polling").as_str() {
            "polling" => Mode::Polling,
            "webhook" => {
                let secret = text("webhookSecret", "");
                if !secret.is_empty() && !webhook::is_valid_secret(&secret) {
                    log::error!(
                        "{}: webhookSecret: Telegram accepts 1 to 256 characters among A-Z, a-z, 0-9, _ and -; Telegram stays off for bot \"{bot_id}\"",
                        file.display()
                    );
                    return None;
                }
                Mode::Webhook {
                    url: webhook::url(&settings.http.external_url, bot_id),
                    secret: Some(secret).filter(|s| !s.is_empty()),
                }
            }
            other => {
                log::error!(
                    "{}: mode: {other:?} is neither \"polling\" nor \"webhook\"; Telegram stays off for bot \"{bot_id}\"",
                    file.display()
                );
                return None;
            }
        };
        Some(BotConfig {
            bot_id: bot_id.to_string(),
            token,
            api_base: text("apiBase", "https://api.telegram.org"),
            // Telegram takes whole seconds, at most 50.
            poll_timeout: Duration::from_secs(poll_timeout.as_secs().clamp(1, 50)),
            parse_mode: text("parseMode", "Markdown"),
            typing_delay: flag("typingDelay"),
            throttle: flag("throttle"),
            mode,
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

/// The Telegram bots botd runs: the channel's parser, renderer and API client.
pub struct TelegramBots {
    runtimes: HashMap<String, Arc<BotRuntime>>,
}

/// The running channel.
pub struct Telegram {
    pipeline: Arc<Pipeline<TelegramBots>>,
    /// The webhook route, when a bot is in webhook mode.
    route: Option<Arc<webhook::Webhook>>,
    stop: Arc<Stop>,
    /// The pollers, and the threads setting webhooks up.
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
        match Self::start_with(engine.clone(), TelegramBots { runtimes }, &root) {
            Ok(t) => Some(t),
            Err(e) => {
                log::error!("Telegram cannot start: {}: {e}", root.display());
                None
            }
        }
    }

    fn start_with(
        engine: Arc<Engine>,
        bots: TelegramBots,
        root: &Path,
    ) -> std::io::Result<Telegram> {
        // What the inbound queue still holds, per bot: where polling resumes after a crash.
        let store = engine.store();
        let mut spooled: HashMap<String, poller::Resume> = HashMap::new();
        for queued in store.pending(Queue::TelegramIn)? {
            let Ok(record) = pipeline::read_inbound::<TelegramBots>(&queued.item) else {
                continue;
            };
            if let Some(update_id) = record.event["update_id"].as_i64() {
                spooled.insert(
                    record.bot,
                    poller::Resume {
                        update_id,
                        at_ms: record.at,
                    },
                );
            }
        }
        let bots = Arc::new(bots);
        let pipeline = Arc::new(Pipeline::start(
            &engine,
            bots.clone(),
            "tg",
            (INBOUND_THREADS, OUTBOUND_THREADS),
        )?);

        let stop = Arc::new(Stop::new());
        let mut pollers = Vec::new();
        let mut secrets = HashMap::new();
        for (id, rt) in bots.runtimes.iter() {
            if let Mode::Webhook { url, secret } = &rt.config.mode {
                let secret = match webhook::secret(store.as_ref(), id, secret.as_deref()) {
                    Ok(s) => s,
                    Err(e) => {
                        log::error!("bot \"{id}\": cannot keep a Telegram webhook secret ({e}); Telegram is stopped for this bot");
                        continue;
                    }
                };
                secrets.insert(id.clone(), secret.clone());
                let (rt, url, stop) = (rt.clone(), url.clone(), stop.clone());
                pollers.push(
                    std::thread::Builder::new()
                        .name(format!("tg-hook-{id}"))
                        .spawn(move || webhook::register(&rt, &url, &secret, &stop))?,
                );
                continue;
            }
            let p = poller::Poller {
                rt: rt.clone(),
                pipeline: pipeline.clone(),
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
        let mut ids: Vec<&String> = bots.runtimes.keys().collect();
        ids.sort();
        log::info!(
            "Telegram enabled for: {}",
            ids.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let route = (!secrets.is_empty()).then(|| {
            Arc::new(webhook::Webhook {
                secrets,
                pipeline: pipeline.clone(),
            })
        });
        Ok(Telegram {
            pipeline,
            route,
            stop,
            pollers,
        })
    }

    /// The webhook route of the bots in webhook mode, if any.
    pub fn route(&self) -> Option<Arc<dyn crate::http::Route>> {
        self.route.clone().map(|r| r as Arc<dyn crate::http::Route>)
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
        self.stop.stop();
        let until = Instant::now() + grace;
        for handle in self.pollers {
            while !handle.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
        self.pipeline.stop();
    }
}

/// The previous release's inbound item: `{bot, update, at}`.
#[derive(Deserialize)]
struct LegacyInbound {
    bot: String,
    update: Value,
    #[serde(default)]
    at: i64,
}

/// The previous release's outbound item, one call: `{bot, chat, method, params, pause_ms,
/// fallback, at}`.
#[derive(Deserialize)]
struct LegacyOutbound {
    bot: String,
    chat: String,
    method: String,
    params: Value,
    #[serde(default)]
    pause_ms: u64,
    #[serde(default)]
    fallback: bool,
    #[serde(default)]
    at: i64,
}

impl PushChannel for TelegramBots {
    /// A Telegram update, as `getUpdates` gave it.
    type Event = Value;
    type Call = BotCall;
    const NAME: &'static str = "Telegram";
    const CHANNEL: &'static str = "telegram";
    const INBOUND: Queue = Queue::TelegramIn;
    const OUTBOUND: Queue = Queue::TelegramOut;

    fn serves(&self, bot: &str) -> bool {
        self.runtimes.contains_key(bot)
    }

    /// Waits until the poller has recorded the offset of the update's batch, and answers a
    /// button tap's callback query (on the first attempt only).
    fn received(&self, record: &InboundRecord<Value>, attempt: u32) {
        let Some(rt) = self.runtimes.get(&record.bot) else {
            return;
        };
        drop(rt.gate.lock().unwrap_or_else(|e| e.into_inner()));
        let id = record.event["callback_query"]["id"].as_str();
        if let (Some(id), 1) = (id, attempt) {
            // Stops the spinner on the button; best effort (a late answer is refused, harmlessly).
            if let Err(e) = rt.api.call(
                "answerCallbackQuery",
                &json!({"callback_query_id": id}),
                Duration::from_secs(10),
            ) {
                log::debug!("bot \"{}\": answerCallbackQuery failed: {e}", record.bot);
            }
        }
    }

    fn event(&self, record: &InboundRecord<Value>) -> Option<Event> {
        let found = event_for(&record.bot, &record.event);
        if found.is_none() {
            log::debug!(
                "bot \"{}\": a Telegram update of an unhandled kind is skipped",
                record.bot
            );
        }
        found.map(|(event, _)| event)
    }

    fn render(
        &self,
        bot: &str,
        chat: &str,
        payloads: &[Value],
        _answering: bool,
    ) -> Vec<Reply<BotCall>> {
        match self.runtimes.get(bot) {
            Some(rt) => send::plan(&rt.config, chat, payloads),
            None => Vec::new(),
        }
    }

    fn conversation_of(&self, destination: &Destination) -> String {
        destination
            .thread_id
            .clone()
            .unwrap_or_else(|| destination.target.clone())
    }

    fn send(&self, reply: &OutboundRecord<BotCall>) -> Sent {
        match self.runtimes.get(&reply.bot) {
            Some(rt) => send::send_reply(rt, reply),
            None => Sent::Done,
        }
    }

    fn legacy_inbound(item: &Value) -> Option<InboundRecord<Value>> {
        let old = LegacyInbound::deserialize(item).ok()?;
        Some(InboundRecord {
            conversation: update_chat(&old.update),
            bot: old.bot,
            at: old.at,
            event: old.update,
        })
    }

    fn legacy_outbound(item: &Value) -> Option<OutboundRecord<BotCall>> {
        let old = LegacyOutbound::deserialize(item).ok()?;
        Some(OutboundRecord {
            bot: old.bot,
            conversation: old.chat,
            at: old.at,
            calls: vec![BotCall {
                method: old.method,
                params: old.params,
                fallback: old.fallback,
            }],
            pause_ms: old.pause_ms,
        })
    }
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
        let event = Event::new(bot_id, "telegram", kind, &target, message.clone())
            .with_thread(Some(chat))
            .replies_as_they_come();
        return Some((event, None));
    }
    if let Some(query) = update.get("callback_query").filter(|q| q.is_object()) {
        let target = id_string(&query["from"]["id"])?;
        let chat = id_string(&query["message"]["chat"]["id"]).unwrap_or_else(|| target.clone());
        let data = query["data"].as_str().unwrap_or("");
        let payload = json!({"type": "callback", "text": data, "data": data, "id": query["id"],
            "from": query["from"], "message": query["message"]});
        let event = Event::new(bot_id, "telegram", "callback", &target, payload)
            .with_thread(Some(chat))
            .replies_as_they_come();
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

    #[test]
    fn the_previous_release_items_are_read() {
        let update = json!({"update_id": 41, "message": {"message_id": 1, "from": {"id": 7},
            "chat": {"id": -99}, "text": "hi"}});
        let old_in = json!({"bot": "welcome-bot", "update": update, "at": 1234});
        let record = pipeline::read_inbound::<TelegramBots>(&old_in).unwrap();
        assert_eq!(
            (record.bot.as_str(), record.conversation.as_str(), record.at),
            ("welcome-bot", "-99", 1234)
        );
        assert_eq!(record.event, update);
        let old_out = json!({"bot": "welcome-bot", "chat": "-99", "method": "sendMessage",
            "params": {"chat_id": -99, "text": "*hi*", "parse_mode": "Markdown"},
            "pause_ms": 0, "fallback": true, "at": 99});
        let reply = pipeline::read_outbound::<TelegramBots>(&old_out).unwrap();
        assert_eq!(
            (reply.conversation.as_str(), reply.at, reply.pause_ms),
            ("-99", 99, 0)
        );
        assert_eq!(
            reply.calls,
            vec![BotCall {
                method: "sendMessage".into(),
                params: json!({"chat_id": -99, "text": "*hi*", "parse_mode": "Markdown"}),
                fallback: true
            }]
        );
    }
}
