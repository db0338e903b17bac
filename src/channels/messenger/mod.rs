//! Facebook Messenger (§4): the webhook, the page ↔ bot mapping, the Messenger profile and the
//! Send API, with nothing lost between them.
//!
//! It runs on the push channels' [`Pipeline`], each step committed to the store before the
//! next one starts:
//! 1. the webhook checks the signature, and in one transaction queues each event whose id
//!    (`mid`, remembered [`DEDUPE_WINDOW`]) is new on the **inbound** queue and remembers the
//!    id, then answers `200 EVENT_RECEIVED` — it never waits for a turn or a Graph call;
//! 2. the pipeline plays the turn; the turn's state, the removal of its inbound item and its
//!    replies (rendered by [`plan`] as Graph calls) on the **outbound** queue are one
//!    transaction;
//! 3. the pipeline makes the Graph calls ([`Graph`]), one conversation strictly in order,
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

use crate::channels::pipeline::{
    InboundRecord, OutboundRecord, Pipeline, PushChannel, Reply, Sent,
};
use crate::channels::retry::{self, Failure, Stop};
use crate::config::units;
use crate::engine::event::now_ms;
use crate::engine::runtime::{Destination, ProactiveMark};
use crate::engine::{Engine, Event};
use crate::http::Route;
use crate::store::Queue;
use graph::Graph;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use webhook::Webhook;

/// How long message ids are remembered (Facebook retries for up to 36 hours).
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(48 * 3600);
/// Threads playing turns, and threads calling the Graph API. Both mostly wait (for a
/// commit's fsync, for Facebook's answer, 100 ms and more), so there are more of them than
/// cores: turns waiting together share one commit, and a slow Graph API still lets other
/// conversations' replies go.
const INBOUND_THREADS: usize = 16;
const OUTBOUND_THREADS: usize = 32;
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

/// What the webhook and the pipeline share: the channel's parser, renderer and API client.
pub struct Core {
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
    pipeline: Arc<Pipeline<Core>>,
    route: Option<Arc<Webhook>>,
    stop: Arc<Stop>,
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

/// A received event as the inbound queue (`messenger-in`) holds it; the record's
/// conversation is the sender's PSID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessengerEvent {
    /// The Botpress event type (`message`, `callback`).
    pub kind: String,
    pub payload: Value,
    /// When the user sent it (Facebook's `timestamp`, unix ms; 0 when unknown): the start of
    /// the 24-hour window the proactive API enforces.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sent_at: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The previous release's inbound item: `{bot, psid, kind, payload}`.
#[derive(Deserialize)]
struct LegacyInbound {
    bot: String,
    psid: String,
    #[serde(default = "message_kind")]
    kind: String,
    payload: Value,
}

fn message_kind() -> String {
    "message".into()
}

/// The previous release's outbound item: `{bot, psid, calls, pauseMs}`.
#[derive(Deserialize)]
struct LegacyOutbound {
    bot: String,
    psid: String,
    calls: Vec<Value>,
    #[serde(rename = "pauseMs", default)]
    pause_ms: u64,
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
            pending_lookups: AtomicUsize::new(bots.len()),
            bots,
            pages: RwLock::new(HashMap::new()),
        });
        let pipeline = match Pipeline::start(
            &engine,
            core.clone(),
            "messenger",
            (INBOUND_THREADS, OUTBOUND_THREADS),
        ) {
            Ok(p) => Arc::new(p),
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
                pipeline: pipeline.clone(),
                config: Arc::new(config),
            }))
        } else {
            None
        };
        let stop = Arc::new(Stop::new());
        for bot_id in core.bots.keys() {
            let (core, stop, bot_id) = (core.clone(), stop.clone(), bot_id.clone());
            let spawned = std::thread::Builder::new()
                .name("messenger-page".into())
                .spawn(move || find_page(&core, &bot_id, &stop));
            if let Err(e) = spawned {
                log::error!("Messenger: cannot start the page lookup: {e}");
            }
        }
        Some(Messenger {
            pipeline,
            route,
            stop,
        })
    }

    /// The webhook route, when the secrets are set.
    pub fn route(&self) -> Option<Arc<dyn Route>> {
        self.route.clone().map(|r| r as Arc<dyn Route>)
    }

    /// Items not finished yet: (events to play, Graph calls to make).
    pub fn pending(&self) -> (usize, usize) {
        self.pipeline.pending()
    }

    /// Stops after the work in hand; the rest stays queued for the next start.
    pub fn stop(&self) {
        self.stop.stop();
        self.pipeline.stop();
    }
}

impl PushChannel for Core {
    type Event = MessengerEvent;
    /// A Send API body (`{recipient, message}` or `{recipient, sender_action}`), verbatim.
    type Call = Value;
    const NAME: &'static str = "Messenger";
    const CHANNEL: &'static str = "messenger";
    const INBOUND: Queue = Queue::MessengerIn;
    const OUTBOUND: Queue = Queue::MessengerOut;

    fn serves(&self, bot: &str) -> bool {
        self.bots.contains_key(bot)
    }

    fn event(&self, record: &InboundRecord<MessengerEvent>) -> Option<Event> {
        let e = &record.event;
        Some(Event::new(
            &record.bot,
            "messenger",
            &e.kind,
            &record.conversation,
            e.payload.clone(),
        ))
    }

    fn render(
        &self,
        bot: &str,
        psid: &str,
        payloads: &[Value],
        answering: bool,
    ) -> Vec<Reply<Value>> {
        let typing = self.bots.get(bot).is_none_or(|b| b.typing_delay);
        plan(psid, payloads, answering, typing)
    }

    fn conversation_of(&self, destination: &Destination) -> String {
        destination.target.clone()
    }

    /// Facebook's timestamp of the event, never later than when the webhook took it.
    fn sent_at(&self, record: &InboundRecord<MessengerEvent>) -> Option<i64> {
        let received = if record.at > 0 { record.at } else { now_ms() };
        let sent = record.event.sent_at;
        Some(if sent > 0 {
            sent.min(received)
        } else {
            received
        })
    }

    /// Within the 24-hour window a proactive message is an `UPDATE`; with a tag (a human
    /// agent, up to 7 days) it is a `MESSAGE_TAG` and goes without sender actions, which
    /// Messenger refuses outside the window (the typing pauses stay).
    fn mark_proactive(&self, calls: &mut Vec<Value>, mark: &ProactiveMark) {
        if mark.tag.is_some() {
            calls.retain(|c| c.get("sender_action").is_none());
        }
        for call in calls.iter_mut().filter(|c| c.get("message").is_some()) {
            match &mark.tag {
                Some(tag) => {
                    call["messaging_type"] = json!("MESSAGE_TAG");
                    call["tag"] = json!(tag);
                }
                None => call["messaging_type"] = json!("UPDATE"),
            }
        }
    }

    fn send(&self, reply: &OutboundRecord<Value>) -> Sent {
        let Some(config) = self.bots.get(&reply.bot) else {
            return Sent::Failed(Failure::GiveUp(
                "the bot has no Messenger configuration".into(),
            ));
        };
        for call in &reply.calls {
            match self.graph.send(&config.token, call) {
                Ok(_) => {}
                Err(Failure::GiveUp(why)) if call.get("message").is_none() => {
                    log::warn!(
                        "Messenger: bot \"{}\": sender action skipped: {why}",
                        reply.bot
                    );
                }
                Err(failure) => return Sent::Failed(failure),
            }
        }
        Sent::Done
    }

    fn legacy_inbound(item: &Value) -> Option<InboundRecord<MessengerEvent>> {
        let old = LegacyInbound::deserialize(item).ok()?;
        Some(InboundRecord {
            bot: old.bot,
            conversation: old.psid,
            at: 0,
            event: MessengerEvent {
                kind: old.kind,
                payload: old.payload,
                sent_at: 0,
            },
        })
    }

    fn legacy_outbound(item: &Value) -> Option<OutboundRecord<Value>> {
        let old = LegacyOutbound::deserialize(item).ok()?;
        Some(OutboundRecord {
            bot: old.bot,
            conversation: old.psid,
            at: 0,
            calls: old.calls,
            pause_ms: old.pause_ms,
            proactive: None,
        })
    }
}

/// The Graph calls for one turn's payloads to `psid`, grouped into replies. Each reply makes
/// at most one `message` call, last, so that retrying a reply can only repeat sender actions.
/// A reply ending in `typing_on` carries the typing pause (§4.5), which holds up only this
/// conversation. `mark_seen` first when the payloads answer a received message.
pub fn plan(
    psid: &str,
    payloads: &[Value],
    mark_seen: bool,
    typing_delay: bool,
) -> Vec<Reply<Value>> {
    let action = |a: &str| json!({"recipient": {"id": psid}, "sender_action": a});
    let mut replies = Vec::new();
    let mut calls = Vec::new();
    let mut flush = |calls: &mut Vec<Value>, pause: Duration| {
        replies.push(Reply {
            calls: std::mem::take(calls),
            pause,
        });
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
        if let Some(pause) = crate::engine::pause_of(payload) {
            // `builtin/wait`: what came before goes out, then the conversation waits.
            flush(&mut calls, pause);
        } else if payload.get("type").and_then(Value::as_str) == Some("typing") {
            calls.push(action("typing_on"));
            // Without a pause, the calls stay in the reply of the message that follows: one
            // queue item (and one removal) fewer.
            if typing_delay {
                flush(
                    &mut calls,
                    crate::channels::typing_delay(payload.get("value")),
                );
            }
            typing = true;
        } else {
            calls.push(json!({"recipient": {"id": psid}, "message": payload}));
            flush(&mut calls, Duration::ZERO);
        }
    }
    if typing {
        calls.push(action("typing_off"));
    }
    if !calls.is_empty() {
        flush(&mut calls, Duration::ZERO);
    }
    replies
}

/// Finds the page of `bot_id` (`GET /me`), retrying network errors and 5xx with backoff, then
/// sets up its Messenger profile.
fn find_page(core: &Core, bot_id: &str, stop: &Stop) {
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
                if !stop.sleep(retry::delay(attempt, after)) {
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
        set_up_profile(core, bot_id, config, stop);
    }
}

/// §4.6: greeting, Get Started and persistent menu; absent greeting and menu are deleted.
fn set_up_profile(core: &Core, bot_id: &str, config: &BotConfig, stop: &Stop) {
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
                    if !stop.sleep(retry::delay(attempt, after)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Replies as the JSON shape the assertions read: `{calls, pauseMs}`.
    fn plan_json(psid: &str, payloads: &[Value], seen: bool, typing: bool) -> Vec<Value> {
        plan(psid, payloads, seen, typing)
            .into_iter()
            .map(|r| json!({"calls": r.calls, "pauseMs": r.pause.as_millis() as u64}))
            .collect()
    }

    #[test]
    fn a_wait_pauses_after_what_came_before() {
        let payloads = vec![
            json!({"text": "a"}),
            crate::engine::pause_payload(Duration::from_millis(700)),
            json!({"type": "typing", "value": true}),
            json!({"text": "b"}),
        ];
        let items = plan_json("U1", &payloads, false, false);
        let shape: Vec<(usize, u64)> = items
            .iter()
            .map(|i| {
                (
                    i["calls"].as_array().unwrap().len(),
                    i["pauseMs"].as_u64().unwrap(),
                )
            })
            .collect();
        // "a"; the pause (no call); typing_on, typing_off, "b" (no typing delay here).
        assert_eq!(shape, [(1, 0), (0, 700), (3, 0)]);
        assert_eq!(items[0]["calls"][0]["message"]["text"], "a");
        assert_eq!(items[2]["calls"][2]["message"]["text"], "b");
    }

    #[test]
    fn plans_calls_in_order() {
        let payloads = vec![
            json!({"type": "typing", "value": true}),
            json!({"text": "a"}),
            json!({"type": "typing"}),
            json!({"text": "b"}),
        ];
        let items = plan_json("U1", &payloads, true, true);
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
        let undelayed = plan_json("U", &payloads, false, false);
        assert_eq!(undelayed.len(), 2);
        assert!(undelayed.iter().all(|i| i["pauseMs"] == 0));
        assert_eq!(undelayed[0]["calls"][0]["sender_action"], "typing_on");
        assert_eq!(undelayed[0]["calls"][2]["message"]["text"], "a");
        assert_eq!(plan("U", &[], true, true).len(), 1);
        assert!(plan("U", &[], false, true).is_empty());
        let trailing = plan_json("U", &[json!({"type": "typing"})], false, false);
        assert_eq!(trailing.len(), 1);
        assert_eq!(trailing[0]["calls"][1]["sender_action"], "typing_off");
        let trailing = plan_json("U", &[json!({"type": "typing"})], false, true);
        assert_eq!(trailing.len(), 2);
        assert_eq!(trailing[1]["calls"][0]["sender_action"], "typing_off");
    }
}

#[cfg(test)]
mod legacy_tests {
    use super::*;
    use crate::channels::pipeline::{read_inbound, read_outbound};

    #[test]
    fn the_previous_release_items_are_read() {
        let old_in = json!({"bot": "welcome-bot", "psid": "U-old", "kind": "callback",
            "payload": {"text": "GET_STARTED"}});
        let record = read_inbound::<Core>(&old_in).unwrap();
        assert_eq!(
            (record.bot.as_str(), record.conversation.as_str(), record.at),
            ("welcome-bot", "U-old", 0)
        );
        assert_eq!(
            record.event,
            MessengerEvent {
                kind: "callback".into(),
                payload: json!({"text": "GET_STARTED"}),
                sent_at: 0,
            }
        );
        // Items of the release before had no kind: a message.
        let older = json!({"bot": "b", "psid": "U", "payload": {"text": "hi"}});
        assert_eq!(read_inbound::<Core>(&older).unwrap().event.kind, "message");
        let old_out = json!({"bot": "welcome-bot", "psid": "U-out",
            "calls": [{"recipient": {"id": "U-out"}, "message": {"text": "left"}}], "pauseMs": 700});
        let reply = read_outbound::<Core>(&old_out).unwrap();
        assert_eq!(
            (
                reply.conversation.as_str(),
                reply.pause_ms,
                reply.calls.len()
            ),
            ("U-out", 700, 1)
        );
        assert!(read_outbound::<Core>(&json!({"bot": "b", "calls": 3})).is_err());
    }
}
