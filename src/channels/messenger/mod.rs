//! Facebook Messenger (§4): the webhook, the page ↔ bot mapping, the Messenger profile and the
//! Send API, with nothing lost between them.
//!
//! The pipeline, each step committed to the store before the next one starts:
//! 1. the webhook checks the signature, and in one transaction queues each event whose id
//!    (`mid`, remembered [`DEDUPE_WINDOW`]) is new on the **inbound** queue and remembers the
//!    id, then answers `200 EVENT_RECEIVED` — it never waits for a turn or a Graph call;
//! 2. an inbound delivery thread plays the turn (`Engine::turn_with`); the turn's state, the
//!    removal of its inbound item and its rendered payloads, as Graph calls on the
//!    **outbound** queue, are one transaction;
//! 3. an outbound delivery thread makes the Graph calls, one conversation strictly in order,
//!    conversations in parallel; a typing delay is a pause of that conversation only.
//!
//! Guarantee: an event answered with 200 is played exactly once and its replies are sent,
//! across restarts and Graph outages. After a crash (power cut, SIGKILL) only the one Graph
//! call of a conversation that was in flight (sent, but not yet removed from the queue) can
//! be made again. Duplicate webhook deliveries never play a turn twice.

pub mod graph;
pub mod render;
pub mod signature;
pub mod webhook;

use crate::channels::delivery::{Delivery, Job, Outcome};
use crate::config::units;
use crate::engine::runtime::Destination;
use crate::engine::{Engine, Event, TurnError};
use crate::http::Route;
use crate::store::{Batch, Committed, Queue, Store};
use graph::{backoff, Failure, Graph};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use webhook::Webhook;

/// How long message ids are remembered (Facebook retries for up to 36 hours).
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(48 * 3600);
/// A turn whose state cannot be committed is tried this many times, then dead-lettered.
const MAX_STORAGE_ATTEMPTS: u32 = 12;
/// Threads playing turns, and threads calling the Graph API.
const INBOUND_THREADS: usize = 4;
const OUTBOUND_THREADS: usize = 8;
const MODULE: &str = "channel-messenger";

/// The global part of the configuration (`data/global/config/channel-messenger.json`).
#[derive(Debug, Clone)]
pub struct GlobalConfig {
    pub app_secret: String,
    pub verify_token: String,
    pub graph_base: String,
    pub graph_version: String,
    pub max_body: u64,
    pub require_sha256: bool,
}

/// What one bot's merged configuration says.
#[derive(Debug, Clone)]
struct BotConfig {
    token: String,
    typing_delay: bool,
    greeting: Option<String>,
    get_started: Option<String>,
    persistent_menu: Vec<Value>,
}

/// What the webhook and the delivery threads share.
pub struct Core {
    engine: Arc<Engine>,
    graph: Graph,
    bots: HashMap<String, BotConfig>,
    /// page id → bot id, filled by the `GET /me` lookups.
    pages: RwLock<HashMap<String, String>>,
    /// Lookups still trying (network errors, 5xx).
    pending_lookups: AtomicUsize,
}

impl Core {
    fn bot_for_page(&self, page_id: &str) -> Option<String> {
        self.pages
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(page_id)
            .cloned()
    }

    fn lookups_pending(&self) -> bool {
        self.pending_lookups.load(Ordering::SeqCst) > 0
    }
}

/// The running channel.
pub struct Messenger {
    core: Arc<Core>,
    inbound: Arc<Delivery>,
    outbound: Arc<Delivery>,
    route: Option<Arc<Webhook>>,
    stopping: Arc<AtomicBool>,
}

fn text(map: &Map<String, Value>, key: &str) -> String {
    map.get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string()
}

fn flag(map: &Map<String, Value>, key: &str, default: bool) -> bool {
    map.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// One event on the inbound queue (`messenger-in`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboundEvent {
    pub bot: String,
    pub psid: String,
    /// The Botpress event type (`message`, `postback`, `quick_reply`).
    #[serde(default = "message_kind")]
    pub kind: String,
    pub payload: Value,
}

fn message_kind() -> String {
    "message".into()
}

/// One item of the outbound queue (`messenger-out`): Graph calls made in order, then a pause
/// of the conversation (a typing delay).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboundItem {
    pub bot: String,
    pub psid: String,
    pub calls: Vec<Value>,
    #[serde(rename = "pauseMs", default)]
    pub pause_ms: u64,
}

/// The key of one conversation in the queues.
pub fn conversation_key(bot: &str, psid: &str) -> String {
    format!("{bot}/{psid}")
}

impl GlobalConfig {
    pub fn read(map: &Map<String, Value>) -> GlobalConfig {
        let size = text(map, "maxBodySize");
        let max_body = units::parse_size(if size.is_empty() { "1mb" } else { &size })
            .unwrap_or_else(|e| {
                log::warn!("Messenger: maxBodySize: {e}; using 1mb");
                1024 * 1024
            });
        let base = text(map, "graphApiBase");
        let version = text(map, "graphApiVersion");
        GlobalConfig {
            app_secret: text(map, "appSecret"),
            verify_token: text(map, "verifyToken"),
            graph_base: if base.is_empty() {
                "https://graph.facebook.com".into()
            } else {
                base
            },
            graph_version: if version.is_empty() {
                "v23.0".into()
            } else {
                version
            },
            max_body,
            require_sha256: flag(map, "requireSha256", false),
        }
    }
}

impl Messenger {
    /// Starts the channel when configured: `None` when no bot enables Messenger and the
    /// webhook secrets are not set. Never waits for the Graph API.
    pub fn start(engine: Arc<Engine>) -> Option<Messenger> {
        let settings = engine.settings();
        let global_file = settings
            .data_dir
            .join("global")
            .join("config")
            .join(format!("{MODULE}.json"));
        let (global_map, problems) = settings.module_config(MODULE, None);
        for p in problems {
            log::warn!("{p}");
        }
        let config = GlobalConfig::read(&global_map);
        let mut bots = HashMap::new();
        for id in engine.bot_ids() {
            let Some(bot) = engine.bot(&id) else { continue };
            let (map, _) = settings.module_config(MODULE, Some(&bot.dir));
            if !flag(&map, "enabled", false) {
                continue;
            }
            let token = text(&map, "accessToken");
            if token.is_empty() {
                log::error!(
                    "Messenger: bot \"{id}\" is enabled but has no accessToken ({}); skipped",
                    bot.dir
                        .join("config")
                        .join(format!("{MODULE}.json"))
                        .display()
                );
                continue;
            }
            let greeting = Some(text(&map, "greeting")).filter(|s| !s.is_empty());
            let get_started = Some(text(&map, "getStarted")).filter(|s| !s.is_empty());
            let persistent_menu = map
                .get("persistentMenu")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let typing_delay = flag(&map, "typingDelay", true);
            bots.insert(
                id,
                BotConfig {
                    token,
                    typing_delay,
                    greeting,
                    get_started,
                    persistent_menu,
                },
            );
        }
        let secrets = !config.app_secret.is_empty() && !config.verify_token.is_empty();
        if !secrets {
            if bots.is_empty() && config.app_secret.is_empty() && config.verify_token.is_empty() {
                log::debug!("Messenger is off: no bot enables it");
                return None;
            }
            log::warn!(
                "Messenger: appSecret and verifyToken must both be set in {} (or BP_CHANNEL-MESSENGER_APPSECRET and BP_CHANNEL-MESSENGER_VERIFYTOKEN); no webhook is registered",
                global_file.display()
            );
        }

        let core = Arc::new(Core {
            graph: Graph::new(&config.graph_base, &config.graph_version),
            engine: engine.clone(),
            pending_lookups: AtomicUsize::new(bots.len()),
            bots,
            pages: RwLock::new(HashMap::new()),
        });
        let started = Self::start_deliveries(&core, engine.store());
        let (inbound, outbound) = match started {
            Ok(parts) => parts,
            Err(e) => {
                log::error!("Messenger: cannot open its queues: {e}; Messenger is off");
                return None;
            }
        };
        let route = if secrets {
            let url = format!(
                "{}/api/v1/bots/___/mod/channel-messenger/webhook",
                settings.http.external_url
            );
            log::info!("Messenger webhook URL is {url}");
            if !url.starts_with("https://") {
                log::warn!("Messenger: the webhook URL is not https; Facebook only calls https URLs (set EXTERNAL_URL)");
            }
            Some(Arc::new(Webhook {
                core: core.clone(),
                inbound: inbound.clone(),
                config: Arc::new(config),
            }))
        } else {
            None
        };
        let stopping = Arc::new(AtomicBool::new(false));
        for bot_id in core.bots.keys() {
            let (core, stopping, bot_id) = (core.clone(), stopping.clone(), bot_id.clone());
            let spawned = std::thread::Builder::new()
                .name("messenger-page".into())
                .spawn(move || find_page(&core, &bot_id, &stopping));
            if let Err(e) = spawned {
                log::error!("Messenger: cannot start the page lookup: {e}");
            }
        }
        Some(Messenger {
            core,
            inbound,
            outbound,
            route,
            stopping,
        })
    }

    fn start_deliveries(
        core: &Arc<Core>,
        store: Arc<dyn Store>,
    ) -> std::io::Result<(Arc<Delivery>, Arc<Delivery>)> {
        let outbound = {
            let core = core.clone();
            Arc::new(Delivery::start(
                store.clone(),
                Queue::MessengerOut,
                OUTBOUND_THREADS,
                "messenger-out",
                Box::new(move |job| send(&core, job.item, job.attempt)),
            )?)
        };
        let inbound = {
            let (core, outbound) = (core.clone(), outbound.clone());
            Arc::new(Delivery::start(
                store,
                Queue::MessengerIn,
                INBOUND_THREADS,
                "messenger-in",
                Box::new(move |job| play(&core, &outbound, job)),
            )?)
        };
        Ok((inbound, outbound))
    }

    /// The webhook route, when the secrets are set.
    pub fn route(&self) -> Option<Arc<dyn Route>> {
        self.route.clone().map(|r| r as Arc<dyn Route>)
    }

    /// Where the engine's proactive replies (timeouts) for `messenger` go: the outbound
    /// queue, in the commit of the timeout's state.
    pub fn proactive_sink(&self) -> crate::engine::runtime::ProactiveSink {
        let (core, outbound) = (self.core.clone(), self.outbound.clone());
        Arc::new(
            move |dest: &Destination, payloads: Vec<Value>, batch: &mut Batch| {
                let typing = core.bots.get(&dest.bot_id).is_none_or(|b| b.typing_delay);
                let key = conversation_key(&dest.bot_id, &dest.target);
                let mut staged = outbound.staged();
                for item in plan(&dest.bot_id, &dest.target, &payloads, false, typing) {
                    outbound.stage(&mut staged, batch, &key, item, None);
                }
                let outbound = outbound.clone();
                Box::new(move |committed: &Committed| {
                    outbound.schedule(staged, committed);
                })
            },
        )
    }

    /// Items not finished yet: (events to play, Graph calls to make).
    pub fn pending(&self) -> (usize, usize) {
        (self.inbound.pending(), self.outbound.pending())
    }

    /// Stops after the work in hand; the rest stays queued for the next start.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.inbound.stop();
        self.outbound.stop();
    }
}

/// The Graph calls for one turn's payloads, grouped into queue items. Each item makes at most
/// one `message` call, last, so that retrying an item can only repeat sender actions. An item
/// ending in `typing_on` carries the typing pause (§4.5), which holds up only this
/// conversation.
pub fn plan(
    bot: &str,
    psid: &str,
    payloads: &[Value],
    mark_seen: bool,
    typing_delay: bool,
) -> Vec<Value> {
    let action = |a: &str| json!({"recipient": {"id": psid}, "sender_action": a});
    let mut items = Vec::new();
    let mut calls = Vec::new();
    let mut flush = |calls: &mut Vec<Value>, pause: u64| {
        let item = OutboundItem {
            bot: bot.to_string(),
            psid: psid.to_string(),
            calls: std::mem::take(calls),
            pause_ms: pause,
        };
        items.push(serde_json::to_value(item).unwrap_or_default());
    };
    if mark_seen {
        calls.push(action("mark_seen"));
    }
    let mut typing = false;
    for payload in payloads {
        if typing {
            calls.push(action("typing_off"));
            typing = false;
        }
        if payload.get("type").and_then(Value::as_str) == Some("typing") {
            calls.push(action("typing_on"));
            let pause = if typing_delay {
                crate::channels::typing_delay(payload.get("value")).as_millis() as u64
            } else {
                0
            };
            // Without a pause, the calls stay in the item of the message that follows: one
            // queue item (and one removal) fewer.
            if pause > 0 {
                flush(&mut calls, pause);
            }
            typing = true;
        } else {
            calls.push(json!({"recipient": {"id": psid}, "message": payload}));
            flush(&mut calls, 0);
        }
    }
    if typing {
        calls.push(action("typing_off"));
    }
    if !calls.is_empty() {
        flush(&mut calls, 0);
    }
    items
}

/// Inbound handler: plays one event; its state, its removal from the inbound queue and its
/// replies on the outbound queue are one commit.
fn play(core: &Core, outbound: &Delivery, job: &Job) -> Outcome {
    let item = match InboundEvent::deserialize(job.item) {
        Ok(item) => item,
        Err(e) => return Outcome::DeadLetter(format!("not a queued Messenger event: {e}")),
    };
    let (bot, psid) = (item.bot.as_str(), item.psid.as_str());
    let event = Event::new(bot, "messenger", &item.kind, psid, item.payload.clone());
    let typing = core.bots.get(bot).is_none_or(|b| b.typing_delay);
    let mut staged = outbound.staged();
    let played = core.engine.turn_with(event, None, &mut |out, batch| {
        batch.finish(job.queue, job.id);
        for call in plan(bot, psid, &out.responses, true, typing) {
            outbound.stage(&mut staged, batch, &conversation_key(bot, psid), call, None);
        }
    });
    match played {
        Ok((_, committed)) => {
            outbound.schedule(staged, &committed);
            Outcome::Removed
        }
        Err(TurnError::UnknownBot(_)) => {
            log::warn!(
                "Messenger: bot \"{bot}\" is not loaded any more; an event for it is dropped"
            );
            Outcome::Drop
        }
        Err(TurnError::Storage(e)) if e.permanent || job.attempt >= MAX_STORAGE_ATTEMPTS => {
            Outcome::DeadLetter(format!(
                "bot \"{bot}\": the turn cannot be saved after {} attempt(s): {e}",
                job.attempt
            ))
        }
        Err(e) => {
            log::error!(
                "Messenger: bot \"{bot}\": {e}; trying again (nothing of the turn was saved)"
            );
            Outcome::Retry(backoff(job.attempt).max(Duration::from_secs(1)))
        }
    }
}

/// Outbound handler: makes the Graph calls of one queued item.
fn send(core: &Core, item: &Value, attempt: u32) -> Outcome {
    let item = match OutboundItem::deserialize(item) {
        Ok(item) => item,
        Err(e) => return Outcome::DeadLetter(format!("not a queued Messenger reply: {e}")),
    };
    let bot = item.bot.as_str();
    let Some(config) = core.bots.get(bot) else {
        log::warn!("Messenger: a reply of bot \"{bot}\" is dropped: the bot has no Messenger configuration now");
        return Outcome::Drop;
    };
    for call in &item.calls {
        match core.graph.send(&config.token, call) {
            Ok(_) => {}
            Err(Failure::Retry { after, why }) => {
                if attempt == 1 || attempt.is_multiple_of(10) {
                    log::warn!("Messenger: bot \"{bot}\": {why}; trying again (attempt {attempt})");
                }
                return Outcome::Retry(after.unwrap_or_else(|| backoff(attempt)));
            }
            Err(Failure::GiveUp(why)) => {
                if call.get("message").is_some() {
                    log::error!(
                        "Messenger: bot \"{bot}\": a reply to {} is dropped: {why}",
                        item.psid
                    );
                    return Outcome::Drop;
                }
                log::warn!("Messenger: bot \"{bot}\": sender action skipped: {why}");
            }
        }
    }
    match item.pause_ms {
        0 => Outcome::Done,
        ms => Outcome::Pause(Duration::from_millis(ms)),
    }
}

/// Finds the page of `bot_id` (`GET /me`), retrying network errors and 5xx with backoff, then
/// sets up its Messenger profile.
fn find_page(core: &Core, bot_id: &str, stopping: &AtomicBool) {
    let config = &core.bots[bot_id];
    let mut attempt = 0u32;
    let found = loop {
        attempt += 1;
        match core.graph.me(&config.token) {
            Ok(me) => match me.get("id").and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            }) {
                Some(page) => break Some((page, me["name"].as_str().unwrap_or("").to_string())),
                None => {
                    log::error!("Messenger: bot \"{bot_id}\": GET /me answered without a page id; Messenger is off for this bot");
                    break None;
                }
            },
            Err(Failure::GiveUp(why)) => {
                log::error!("Messenger: bot \"{bot_id}\": cannot find its Facebook page: {why}; Messenger is off for this bot (check accessToken)");
                break None;
            }
            Err(Failure::Retry { after, why }) => {
                if attempt == 1 || attempt.is_multiple_of(10) {
                    log::warn!("Messenger: bot \"{bot_id}\": cannot reach the Graph API yet: {why}; trying again");
                }
                let wait = after.unwrap_or_else(|| {
                    Duration::from_secs(1 << attempt.min(8)).min(Duration::from_secs(300))
                });
                if !sleep_unless(stopping, wait) {
                    core.pending_lookups.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
            }
        }
    };
    if let Some((page, name)) = &found {
        let mut pages = core.pages.write().unwrap_or_else(|e| e.into_inner());
        match pages.get(page) {
            Some(other) => log::error!("Messenger: bots \"{other}\" and \"{bot_id}\" use the same page {page}; only \"{other}\" answers it"),
            None => {
                pages.insert(page.clone(), bot_id.to_string());
                log::info!("Messenger: bot \"{bot_id}\" answers page {page} ({name})");
            }
        }
    }
    core.pending_lookups.fetch_sub(1, Ordering::SeqCst);
    if found.is_some() {
        set_up_profile(core, bot_id, config, stopping);
    }
}

/// §4.6: greeting, Get Started and persistent menu; absent greeting and menu are deleted.
fn set_up_profile(core: &Core, bot_id: &str, config: &BotConfig, stopping: &AtomicBool) {
    let mut steps: Vec<(&str, Option<Value>)> = Vec::new();
    match &config.greeting {
        Some(g) => steps.push((
            "greeting",
            Some(json!({"greeting": [{"locale": "default", "text": g}]})),
        )),
        None => steps.push(("greeting", None)),
    }
    if let Some(p) = &config.get_started {
        steps.push(("get_started", Some(json!({"get_started": {"payload": p}}))));
    }
    if config.persistent_menu.is_empty() {
        steps.push(("persistent_menu", None));
    } else {
        steps.push((
            "persistent_menu",
            Some(json!({"persistent_menu": config.persistent_menu})),
        ));
    }
    for (field, body) in steps {
        for attempt in 1..=5u32 {
            let result = match &body {
                Some(b) => core.graph.set_profile(&config.token, b),
                None => core.graph.delete_profile(&config.token, &[field]),
            };
            match result {
                Ok(_) => break,
                Err(Failure::Retry { after, .. }) if attempt < 5 => {
                    if !sleep_unless(stopping, after.unwrap_or_else(|| backoff(attempt + 3))) {
                        return;
                    }
                }
                Err(f) => {
                    log::warn!(
                        "Messenger: bot \"{bot_id}\": profile {field} not set: {}",
                        f.why()
                    );
                    break;
                }
            }
        }
    }
}

/// Sleeps `d` unless stopping; returns false when stopping.
fn sleep_unless(stopping: &AtomicBool, d: Duration) -> bool {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        if stopping.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(end.saturating_duration_since(std::time::Instant::now())),
        );
    }
    !stopping.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_calls_in_order() {
        let payloads = vec![
            json!({"type": "typing", "value": true}),
            json!({"text": "a"}),
            json!({"type": "typing"}),
            json!({"text": "b"}),
        ];
        let items = plan("bot1", "U1", &payloads, true, true);
        let shape: Vec<(Vec<String>, u64)> = items
            .iter()
            .map(|i| {
                let calls = i["calls"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| {
                        c["sender_action"]
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| c["message"]["text"].as_str().unwrap().to_string())
                    })
                    .collect();
                (calls, i["pauseMs"].as_u64().unwrap())
            })
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shape,
            vec![
                (s(&["mark_seen", "typing_on"]), 500),
                (s(&["typing_off", "a"]), 0),
                (s(&["typing_on"]), 1000),
                (s(&["typing_off", "b"]), 0),
            ]
        );
        assert_eq!(
            items[1]["calls"][1],
            json!({"recipient": {"id": "U1"}, "message": {"text": "a"}})
        );
        // No delay when typingDelay is off, so no item ends in a typing_on: one item per
        // message; a bare mark_seen when the turn says nothing.
        let undelayed = plan("b", "U", &payloads, false, false);
        assert_eq!(undelayed.len(), 2);
        assert!(undelayed.iter().all(|i| i["pauseMs"] == 0));
        assert_eq!(undelayed[0]["calls"][0]["sender_action"], "typing_on");
        assert_eq!(undelayed[0]["calls"][2]["message"]["text"], "a");
        assert_eq!(plan("b", "U", &[], true, true).len(), 1);
        assert!(plan("b", "U", &[], false, true).is_empty());
        let trailing = plan("b", "U", &[json!({"type": "typing"})], false, false);
        assert_eq!(trailing.len(), 1);
        assert_eq!(trailing[0]["calls"][1]["sender_action"], "typing_off");
        let trailing = plan("b", "U", &[json!({"type": "typing"})], false, true);
        assert_eq!(trailing.len(), 2);
        assert_eq!(trailing[1]["calls"][0]["sender_action"], "typing_off");
    }
}
