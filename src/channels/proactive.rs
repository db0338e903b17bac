//! The proactive messages API: the bot speaks first, to one user on one channel.
//!
//! - `POST /api/v1/bots/{botId}/proactive/{channel}/{userId}/messages`: payloads (in the
//!   channel's own form), a content element (`contentId`) or a content type with its form
//!   data (`contentType`, `args`), rendered with the user's state;
//! - `POST /api/v1/bots/{botId}/proactive/{channel}/{userId}/flows`: a flow (and node) played
//!   for the user as if the conversation had jumped there; their answer continues it;
//! - `GET /api/v1/bots/{botId}/proactive/messages/{id}`: what became of a message.
//!
//! `{channel}` is `messenger`, `telegram` or `api` (Converse). Callers authenticate with one
//! of the bot's own keys (`bot.config.json` → `proactive.apiKeys`) in `X-BP-Api-Key`: the API
//! is off for a bot without keys. What the bot says goes through the channel's durable
//! outbound queue, in the same commit as the state it changed, so it is sent in order with
//! that user's other replies; a Converse user gets it at the front of their next answer (it
//! waits in the store until then). Messenger's policy is enforced here: within 24 hours of
//! the user's last message the page writes freely, up to 7 days only a human agent may
//! (`"tag": "HUMAN_AGENT"`), later not at all (`409`).
//!
//! A call is answered `202` with the message id and its status (`queued`, `waiting` for a
//! Converse user, `sent`, `failed` with the channel's error, e.g. Telegram's 403 for a bot
//! the user blocked); `?wait=5s` (at most [`MAX_WAIT`]) waits for the outcome and answers
//! `200` once it is known. An `Idempotency-Key` header makes a retried call send once: the
//! key is remembered [`IDEMPOTENCY_TTL`] with the request it came with, in the commit that
//! queued the message; the same key with another request is `422`.

use super::converse::{check_api_key, API_KEY_HEADER};
use crate::engine::bot::Bot;
use crate::engine::event::{iso_time, now_ms, session_id};
use crate::engine::locks::ConversationLocks;
use crate::engine::proactive::{SpeakError, Speech};
use crate::engine::runtime::{Destination, ProactiveMark};
use crate::engine::Engine;
use crate::http::{self, Reply, Route};
use crate::store::{Batch, Namespace, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long the status of a message can be asked for.
pub const STATUS_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest `?wait=` a call may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// Messages kept for one Converse user at most, until their next request.
pub const MAILBOX_LIMIT: usize = 50;
/// Messenger: the page writes freely this long after the user's last message…
pub const MESSENGER_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// …and a human agent (`HUMAN_AGENT` tag) this long.
pub const HUMAN_AGENT_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// The one message tag the API accepts.
pub const HUMAN_AGENT: &str = "HUMAN_AGENT";
const CHANNELS: [&str; 3] = ["api", "messenger", "telegram"];

/// What a queue item of a proactive message carries, so its channel reports the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemMark {
    pub id: String,
    /// The message's last item: once it is sent, the message is.
    pub last: bool,
}

/// The marks of `count` items of the message `mark` (the last one says so).
pub fn item_marks(mark: &ProactiveMark, count: usize) -> impl Iterator<Item = ItemMark> + '_ {
    (0..count).map(move |i| ItemMark {
        id: mark.id.clone(),
        last: i + 1 == count,
    })
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// On the channel's outbound queue.
    Queued,
    /// Kept for a Converse user until their next request.
    Waiting,
    /// Handed to the channel's API (or into a Converse answer).
    Sent,
    /// The channel refused it for good (see `error`).
    Failed,
}

impl State {
    /// Whether a wait for the outcome is over: sent, failed, or kept for a Converse user
    /// (nothing happens to it before their next request).
    fn is_settled(self) -> bool {
        self != State::Queued
    }
}

/// Why a channel refused a message for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryError {
    /// The HTTP status the channel's API answered, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    pub description: String,
}

/// The stored status of one message (`channel_state`, key `proactive/status/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    id: String,
    bot_id: String,
    channel: String,
    user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    status: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<DeliveryError>,
    created_on: String,
    updated_on: String,
    expires_ms: i64,
}

impl Status {
    /// The status as the API shows it.
    fn view(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.remove("expiresMs");
        }
        v
    }
}

/// An `Idempotency-Key` remembered (key `proactive/idempotency/{sha256 of the key}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Remembered {
    /// SHA-256 of the request it came with (path and canonical body).
    request: String,
    message: String,
    expires_ms: i64,
}

/// The messages kept for a Converse user (key `proactive/mailbox/{sessionId}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Mailbox {
    messages: Vec<Kept>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kept {
    id: String,
    payloads: Vec<Value>,
}

fn status_key(id: &str) -> String {
    format!("proactive/status/{id}")
}

fn idempotency_key(key: &str) -> String {
    format!(
        "proactive/idempotency/{}",
        hex::encode(Sha256::digest(key.as_bytes()))
    )
}

fn mailbox_key(session: &str) -> String {
    format!("proactive/mailbox/{session}")
}

fn read<T: for<'de> Deserialize<'de>>(store: &dyn Store, bot: &str, key: &str) -> Option<T> {
    match store.get(Namespace::Channel, bot, key) {
        Ok(Some(v)) => serde_json::from_value(v).ok(),
        Ok(None) => None,
        Err(e) => {
            log::warn!("bot \"{bot}\": cannot read {key}: {e}");
            None
        }
    }
}

/// Wakes the calls that wait for an outcome (`?wait=`): a counter bumped at each outcome.
static OUTCOMES: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

/// Records what became of an item of a proactive message: a failure fails the message, the
/// last item sent sends it. Called by the channels' outbound handlers; its own small commit
/// (proactive messages are few next to replies).
pub fn report(store: &dyn Store, bot: &str, mark: &ItemMark, failure: Option<DeliveryError>) {
    if failure.is_none() && !mark.last {
        return;
    }
    let key = status_key(&mark.id);
    let Some(mut status) = read::<Status>(store, bot, &key) else {
        return;
    };
    if status.status == State::Failed {
        return;
    }
    status.status = if failure.is_some() {
        State::Failed
    } else {
        State::Sent
    };
    status.error = failure;
    status.updated_on = iso_time(now_ms());
    let mut batch = Batch::new();
    batch.put(
        Namespace::Channel,
        bot,
        &key,
        serde_json::to_value(&status).unwrap_or_default(),
    );
    if let Err(e) = store.commit(batch) {
        log::warn!(
            "bot \"{bot}\": the outcome of proactive message {} is not recorded: {e}",
            mark.id
        );
    }
    let (count, wake) = &OUTCOMES;
    *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    wake.notify_all();
}

/// Takes the messages kept for a Converse user into `batch` (their removal, their status
/// `sent`): the payloads go at the front of the answer being committed with it. Call under
/// the conversation's lock (inside the turn).
pub fn take_mailbox(store: &dyn Store, bot: &str, session: &str, batch: &mut Batch) -> Vec<Value> {
    let key = mailbox_key(session);
    let Some(mailbox) = read::<Mailbox>(store, bot, &key) else {
        return Vec::new();
    };
    batch.delete(Namespace::Channel, bot, &key);
    let now = iso_time(now_ms());
    let mut payloads = Vec::new();
    for kept in mailbox.messages {
        if let Some(mut status) = read::<Status>(store, bot, &status_key(&kept.id)) {
            status.status = State::Sent;
            status.updated_on = now.clone();
            let value = serde_json::to_value(&status).unwrap_or_default();
            batch.put(Namespace::Channel, bot, &status_key(&kept.id), value);
        }
        payloads.extend(kept.payloads);
    }
    payloads
}

/// Deletes the statuses and idempotency keys that expired (run with the session sweep).
pub fn sweep(engine: &Engine) {
    let now = now_ms();
    let store = engine.store();
    for bot in engine.bot_ids() {
        let mut expired = Vec::new();
        let scanned = store.scan(Namespace::Channel, &bot, &mut |key, value| {
            let ours =
                key.starts_with("proactive/status/") || key.starts_with("proactive/idempotency/");
            let expires = value["expiresMs"].as_i64().unwrap_or(0);
            if ours && expires != 0 && expires <= now {
                expired.push(key.to_string());
            }
        });
        if let Err(e) = scanned {
            log::warn!("bot \"{bot}\": cannot scan proactive message records: {e}");
            continue;
        }
        if expired.is_empty() {
            continue;
        }
        let mut batch = Batch::new();
        for key in &expired {
            batch.delete(Namespace::Channel, &bot, key);
        }
        if let Err(e) = store.commit(batch) {
            log::warn!("bot \"{bot}\": cannot delete expired proactive message records: {e}");
        }
    }
}

/// The record (`channel_state`) of when the user of a conversation on `channel` last wrote,
/// for channels that say (Messenger, read by the 24-hour rule).
pub fn last_inbound_key(channel: &str, conversation: &str) -> String {
    format!("{channel}/lastInbound/{conversation}")
}

/// The tag a Messenger message needs now, or why it may not be sent (`409`).
fn messenger_rule(
    store: &dyn Store,
    bot: &str,
    psid: &str,
    tag: Option<&str>,
    now: i64,
) -> Result<Option<String>, Reply> {
    let conflict = |m: String| Err(Reply::error(409, "ConflictError", &m));
    let last = store
        .get(
            Namespace::Channel,
            bot,
            &last_inbound_key("messenger", psid),
        )
        .map_err(|e| {
            log::error!("bot \"{bot}\": {e}");
            Reply::error(500, "StorageError", "Unexpected error")
        })?
        .and_then(|v| v["at"].as_i64());
    let Some(at) = last else {
        return conflict(format!(
            "Conflict: Messenger user \"{psid}\" has never written to this bot's page, and Messenger lets a page write only to people who wrote to it first"
        ));
    };
    let age = Duration::from_millis(now.saturating_sub(at).max(0) as u64);
    let hours = age.as_secs() / 3600;
    if age <= MESSENGER_WINDOW {
        return Ok(None);
    }
    if age <= HUMAN_AGENT_WINDOW {
        return match tag {
            Some(t) => Ok(Some(t.to_string())),
            None => conflict(format!(
                "Conflict: the user's last message is {hours} hours old; outside Messenger's 24-hour window only a human agent may write, with \"tag\": \"{HUMAN_AGENT}\", until 7 days after it"
            )),
        };
    }
    conflict(format!(
        "Conflict: the user's last message is {} days old; Messenger allows no message more than 7 days after it, not even a human agent's",
        hours / 24
    ))
}

/// The route of the three calls.
pub struct Proactive {
    engine: Arc<Engine>,
    /// One call at a time per `Idempotency-Key`.
    keys: ConversationLocks,
    /// Each bot's `proactive.apiKeys`, by bot id.
    bots: Mutex<HashMap<String, BotKeys>>,
}

/// A bot's keys, with the fingerprint of the files they were read from (read again when the
/// bot is reloaded).
type BotKeys = (u64, Arc<Vec<String>>);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Call<'p> {
    Messages {
        bot: &'p str,
        channel: &'p str,
        user: &'p str,
    },
    Flows {
        bot: &'p str,
        channel: &'p str,
        user: &'p str,
    },
    Status {
        bot: &'p str,
        id: &'p str,
    },
}

impl<'p> Call<'p> {
    fn parse(path: &'p str) -> Option<Call<'p>> {
        let segments: Vec<&str> = path.split('/').collect();
        match segments.as_slice() {
            ["", "api", "v1", "bots", bot, "proactive", "messages", id] => {
                Some(Call::Status { bot, id })
            }
            ["", "api", "v1", "bots", bot, "proactive", channel, user, "messages"] => {
                Some(Call::Messages { bot, channel, user })
            }
            ["", "api", "v1", "bots", bot, "proactive", channel, user, "flows"] => {
                Some(Call::Flows { bot, channel, user })
            }
            _ => None,
        }
    }

    fn bot(&self) -> &'p str {
        match self {
            Call::Messages { bot, .. } | Call::Flows { bot, .. } | Call::Status { bot, .. } => bot,
        }
    }
}

/// A checked request body.
#[derive(Debug, Clone, PartialEq)]
struct Ask {
    speech: Speech,
    tag: Option<String>,
    thread_id: Option<String>,
}

impl Proactive {
    pub fn new(engine: Arc<Engine>) -> Proactive {
        Proactive {
            engine,
            keys: ConversationLocks::default(),
            bots: Mutex::new(HashMap::new()),
        }
    }

    /// `bot.config.json` → `proactive.apiKeys`; a bad field is logged once and no key counts.
    fn api_keys(&self, bot: &Bot) -> Arc<Vec<String>> {
        let mut bots = self.bots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((fingerprint, keys)) = bots.get(&bot.id) {
            if *fingerprint == bot.fingerprint {
                return keys.clone();
            }
        }
        let path = bot.dir.join("bot.config.json");
        let shown = path.display().to_string();
        let mut problems = Vec::new();
        let section = crate::config::read_json(&path)
            .map_err(|p| problems.push(p))
            .ok()
            .and_then(|v| v.pointer("/proactive/apiKeys").cloned());
        let keys = Arc::new(crate::config::access::api_keys(
            section.as_ref(),
            "proactive.apiKeys",
            &shown,
            &mut problems,
        ));
        for p in problems {
            log::warn!("{p}");
        }
        bots.insert(bot.id.clone(), (bot.fingerprint, keys.clone()));
        keys
    }

    fn authenticate(&self, request: &http::Request, bot: &Bot) -> Result<(), Reply> {
        let keys = self.api_keys(bot);
        if keys.is_empty() {
            return Err(Reply::error(
                403,
                "ForbiddenError",
                &format!("Forbidden: the proactive API is off for bot \"{}\": it needs proactive.apiKeys in its bot.config.json", bot.id),
            ));
        }
        let keys: Vec<&String> = keys.iter().collect();
        check_api_key(request.header(API_KEY_HEADER), &keys, "proactive API")
    }
}

impl Route for Proactive {
    fn admit(&self, head: &http::Head) -> Option<http::Admission> {
        let call = Call::parse(head.path())?;
        let method = &head.method;
        Some(match call {
            Call::Status { .. } if matches!(method, http::Method::Get | http::Method::Head) => {
                http::Admission::Body { limit: 0 }
            }
            Call::Status { .. } => http::Admission::Answer(Reply::error(
                405,
                "MethodNotAllowed",
                "The status of a proactive message is read with GET",
            )),
            _ if *method == http::Method::Post => http::Admission::Body {
                limit: self.engine.settings().http.body_limit,
            },
            _ => http::Admission::Answer(Reply::error(
                405,
                "MethodNotAllowed",
                "The proactive API only accepts POST here",
            )),
        })
    }

    fn handle(&self, request: &http::Request) -> Reply {
        let Some(call) = Call::parse(request.head.path()) else {
            return Reply::not_found("proactive route");
        };
        let Some(bot) = self.engine.bot(call.bot()) else {
            return Reply::not_found(&format!("bot \"{}\" does not exist", call.bot()));
        };
        if let Err(reply) = self.authenticate(request, &bot) {
            return reply;
        }
        let (channel, user, flows) = match call {
            Call::Status { id, .. } => return self.status(&bot, id, request),
            Call::Messages { channel, user, .. } => (channel, user, false),
            Call::Flows { channel, user, .. } => (channel, user, true),
        };
        if !CHANNELS.contains(&channel) {
            return Reply::not_found(&format!(
                "channel \"{channel}\": the proactive API speaks on {}",
                CHANNELS.join(", ")
            ));
        }
        let Some(user) = http::percent_decode(user, false).filter(|u| !u.is_empty()) else {
            return Reply::error(
                400,
                "BadRequestError",
                "Bad Request: the user id is empty or not valid UTF-8 once percent-decoded",
            );
        };
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(v) => v,
            Err(_) if request.body.is_empty() => Value::Object(Map::new()),
            Err(_) => return http::body_parser_error(400, "entity.parse.failed"),
        };
        let checked = match body.as_object() {
            Some(map) if flows => check_flow(map, &bot),
            Some(map) => check_messages(map, &bot),
            None => Err("\"value\" must be an object".to_string()),
        };
        let ask = match checked.and_then(|ask| check_channel(ask, channel)) {
            Ok(ask) => ask,
            Err(message) => {
                return Reply::error(400, "BadRequestError", &format!("Bad Request: {message}"))
            }
        };
        let wait = match wait_of(request.url()) {
            Ok(w) => w,
            Err(message) => {
                return Reply::error(400, "BadRequestError", &format!("Bad Request: {message}"))
            }
        };
        let idempotency = request
            .header("Idempotency-Key")
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let Some(idempotency) = idempotency else {
            let reply = self.speak(&bot, channel, &user, ask, None);
            return self.waited(&bot, reply, wait);
        };
        if idempotency.len() > 255 {
            return Reply::error(
                400,
                "BadRequestError",
                "Bad Request: the Idempotency-Key header is longer than 255 characters",
            );
        }
        let fingerprint = hex::encode(Sha256::digest(
            format!("{}\u{0}{body}", request.head.path()).as_bytes(),
        ));
        // One call per key at a time: a retry sent while the first is still running waits
        // for it, then replays its answer.
        let _guard = self.keys.lock(&format!("{}\u{0}{idempotency}", bot.id));
        let store = self.engine.store();
        let remembered = read::<Remembered>(store.as_ref(), &bot.id, &idempotency_key(idempotency))
            .filter(|r| r.expires_ms > now_ms());
        if let Some(r) = remembered {
            if r.request != fingerprint {
                return Reply::error(
                    422,
                    "UnprocessableEntity",
                    "Unprocessable Entity: this Idempotency-Key was used with another request; use a new key for a new message",
                );
            }
            let reply = match read::<Status>(store.as_ref(), &bot.id, &status_key(&r.message)) {
                Some(status) => Reply::json(202, &status.view()),
                None => Reply::json(202, &json!({"id": r.message, "botId": bot.id})),
            };
            let reply = self.waited(&bot, reply, wait);
            return reply.with_header("Idempotent-Replayed", "true");
        }
        let reply = self.speak(
            &bot,
            channel,
            &user,
            ask,
            Some((idempotency_key(idempotency), fingerprint)),
        );
        self.waited(&bot, reply, wait)
    }
}

impl Proactive {
    /// `GET …/proactive/messages/{id}`.
    fn status(&self, bot: &Bot, id: &str, request: &http::Request) -> Reply {
        let wait = match wait_of(request.url()) {
            Ok(w) => w,
            Err(message) => {
                return Reply::error(400, "BadRequestError", &format!("Bad Request: {message}"))
            }
        };
        let store = self.engine.store();
        match read::<Status>(store.as_ref(), &bot.id, &status_key(id)) {
            Some(status) => {
                let reply = Reply::json(200, &status.view());
                let waited = self.waited(bot, reply, wait);
                Reply {
                    status: 200,
                    ..waited
                }
            }
            None => Reply::not_found(&format!(
                "proactive message \"{id}\" of bot \"{}\" (statuses are kept 7 days)",
                bot.id
            )),
        }
    }

    /// With `?wait=`, waits until the message of a `202` has an outcome (then `200`).
    fn waited(&self, bot: &Bot, reply: Reply, wait: Option<Duration>) -> Reply {
        let Some(wait) = wait else { return reply };
        if reply.status != 202 && reply.status != 200 {
            return reply;
        }
        let Some(id) = reply_json(&reply).and_then(|v| v["id"].as_str().map(str::to_string)) else {
            return reply;
        };
        let deadline = Instant::now() + wait;
        let store = self.engine.store();
        let (count, wake) = &OUTCOMES;
        let mut seen = count.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let status = read::<Status>(store.as_ref(), &bot.id, &status_key(&id));
            match status {
                Some(s) if s.status.is_settled() => return Reply::json(200, &s.view()),
                Some(s) if Instant::now() >= deadline => return Reply::json(202, &s.view()),
                None => return reply,
                Some(_) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            seen = wake
                .wait_timeout(seen, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Plays the message or flow for the user and queues what it says; with `remember`, the
    /// idempotency record is committed with it.
    fn speak(
        &self,
        bot: &Bot,
        channel: &str,
        user: &str,
        ask: Ask,
        remember: Option<(String, String)>,
    ) -> Reply {
        let store = self.engine.store();
        let now = now_ms();
        let tag = if channel == "messenger" {
            match messenger_rule(store.as_ref(), &bot.id, user, ask.tag.as_deref(), now) {
                Ok(tag) => tag,
                Err(reply) => return reply,
            }
        } else {
            None
        };
        let sink = match channel {
            "api" => None,
            other => match self.engine.proactive_sink(other) {
                Some(sink) => Some(sink),
                None => {
                    return Reply::error(
                        409,
                        "ConflictError",
                        &format!(
                            "Conflict: the {other} channel is not running (no bot enables it)"
                        ),
                    )
                }
            },
        };
        // A Telegram conversation is a user in a chat: their private chat unless told.
        let thread_id = match channel {
            "telegram" => Some(ask.thread_id.clone().unwrap_or_else(|| user.to_string())),
            _ => None,
        };
        let ask = Ask { thread_id, ..ask };
        let id = new_message_id();
        let dest = Destination {
            bot_id: bot.id.clone(),
            channel: channel.to_string(),
            target: user.to_string(),
            thread_id: ask.thread_id.clone(),
            proactive: Some(ProactiveMark {
                id: id.clone(),
                tag: tag.clone(),
            }),
        };
        let session = session_id(channel, user, ask.thread_id.as_deref());
        let created = iso_time(now);
        let mut status = Status {
            id: id.clone(),
            bot_id: bot.id.clone(),
            channel: channel.to_string(),
            user_id: user.to_string(),
            thread_id: ask.thread_id.clone(),
            tag,
            status: State::Queued,
            error: None,
            created_on: created.clone(),
            updated_on: created,
            expires_ms: now + STATUS_TTL.as_millis() as i64,
        };
        let mut schedule = None;
        let plays_flow = matches!(ask.speech, Speech::Flow { .. });
        let deadline = Instant::now() + self.engine.settings().converse.timeout;
        let spoken = self.engine.speak_first(
            &dest,
            ask.speech,
            Some(deadline),
            &mut |payloads, batch| {
                match &sink {
                    Some(sink) => {
                        let staging = sink(&dest, payloads.to_vec(), batch)?;
                        if staging.items == 0 {
                            status.status = State::Sent;
                        }
                        schedule = Some(staging.schedule);
                    }
                    None => {
                        let key = mailbox_key(&session);
                        let mut mailbox =
                            read::<Mailbox>(store.as_ref(), &bot.id, &key).unwrap_or_default();
                        if mailbox.messages.len() >= MAILBOX_LIMIT {
                            return Err(format!("Conflict: {MAILBOX_LIMIT} proactive messages already wait for this Converse user's next request"));
                        }
                        status.status = if payloads.is_empty() {
                            State::Sent
                        } else {
                            State::Waiting
                        };
                        if !payloads.is_empty() {
                            mailbox.messages.push(Kept {
                                id: id.clone(),
                                payloads: payloads.to_vec(),
                            });
                            let value = serde_json::to_value(&mailbox).unwrap_or_default();
                            batch.put(Namespace::Channel, &bot.id, &key, value);
                        }
                    }
                }
                let value = serde_json::to_value(&status).unwrap_or_default();
                batch.put(Namespace::Channel, &bot.id, &status_key(&id), value);
                if let Some((key, request)) = &remember {
                    let remembered = Remembered {
                        request: request.clone(),
                        message: id.clone(),
                        expires_ms: now + IDEMPOTENCY_TTL.as_millis() as i64,
                    };
                    let value = serde_json::to_value(remembered).unwrap_or_default();
                    batch.put(Namespace::Channel, &bot.id, key, value);
                }
                Ok(())
            },
        );
        match spoken {
            Ok((_, committed)) => {
                if let Some(schedule) = schedule {
                    schedule(&committed);
                }
                Reply::json(202, &status.view())
            }
            Err(SpeakError::UnknownBot(b)) => Reply::not_found(&format!("bot \"{b}\" does not exist")),
            Err(SpeakError::Timeout) => Reply::error(
                504,
                "GatewayTimeout",
                &format!(
                    "The conversation stayed busy longer than converse.timeout ({} ms); nothing was sent or saved",
                    self.engine.settings().converse.timeout.as_millis()
                ),
            ),
            Err(SpeakError::Failed(why)) if !plays_flow => Reply::error(
                400,
                "BadRequestError",
                &format!("Bad Request: the content cannot be rendered: {why}"),
            ),
            Err(SpeakError::Failed(why)) => {
                log::warn!("bot \"{}\": a proactive flow failed: {why}", bot.id);
                Reply::error(
                    500,
                    "InternalServerError",
                    &format!("The bot failed: {why}; nothing was sent or saved"),
                )
            }
            Err(SpeakError::Refused(why)) if why.starts_with("Conflict:") => {
                Reply::error(409, "ConflictError", &why)
            }
            Err(SpeakError::Refused(why)) => Reply::error(
                409,
                "ConflictError",
                &format!("Conflict: {why}; nothing was sent or saved"),
            ),
            Err(SpeakError::Storage(e)) => {
                log::error!("bot \"{}\": {e}", bot.id);
                Reply::error(500, "StorageError", "Unexpected error")
            }
        }
    }
}

fn reply_json(reply: &Reply) -> Option<Value> {
    match &reply.body {
        http::Body::Bytes(bytes) => serde_json::from_slice(bytes).ok(),
        _ => None,
    }
}

/// 32 hex digits, random.
fn new_message_id() -> String {
    let mut bytes = Vec::with_capacity(16);
    for _ in 0..2 {
        let part = crate::engine::random::below(u64::MAX);
        bytes.extend_from_slice(&part.to_be_bytes());
    }
    hex::encode(bytes)
}

/// `?wait=` as a duration (`5s`, `500ms`, or milliseconds), at most [`MAX_WAIT`].
fn wait_of(url: &str) -> Result<Option<Duration>, String> {
    let Some((_, value)) = http::query_pairs(url)
        .into_iter()
        .find(|(k, _)| k == "wait")
    else {
        return Ok(None);
    };
    let parsed = match value.trim().parse::<u64>() {
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => crate::config::units::parse_duration(&value),
    };
    match parsed {
        Ok(d) if d <= MAX_WAIT => Ok(Some(d)),
        Ok(_) => Err(format!("wait must be at most {} s", MAX_WAIT.as_secs())),
        Err(e) => Err(format!("wait: {e}")),
    }
}

/// `child "key" fails because [why]`, as Joi 13 words it.
fn child(key: &str, why: &str) -> String {
    format!("child \"{key}\" fails because [{why}]")
}

fn string_field(body: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => {
            Err(child(key, &format!("\"{key}\" is not allowed to be empty")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(child(key, &format!("\"{key}\" must be a string"))),
    }
}

fn tag_field(body: &Map<String, Value>) -> Result<Option<String>, String> {
    match string_field(body, "tag")? {
        Some(t) if t == HUMAN_AGENT => Ok(Some(t)),
        Some(_) => Err(child(
            "tag",
            &format!("\"tag\" must be one of [{HUMAN_AGENT}]"),
        )),
        None => Ok(None),
    }
}

fn unknown_key(body: &Map<String, Value>, known: &[&str]) -> Result<(), String> {
    match body.keys().find(|k| !known.contains(&k.as_str())) {
        Some(other) => Err(format!("\"{other}\" is not allowed")),
        None => Ok(()),
    }
}

/// The body of `…/messages`: exactly one of `payloads`, `contentId`, `contentType`; `args`
/// with the last two; `tag`, `threadId`. Checked like Joi 13: the schema's keys in order,
/// then unknown keys, then the exclusive peers; the first error only.
fn check_messages(body: &Map<String, Value>, bot: &Bot) -> Result<Ask, String> {
    let payloads = match body.get("payloads") {
        None => None,
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(child(
                "payloads",
                "\"payloads\" must contain at least 1 items",
            ))
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let why = match item {
                    Value::Object(map) => match map.get("type") {
                        Some(Value::String(_)) | None => continue,
                        Some(_) => {
                            "child \"type\" fails because [\"type\" must be a string]".to_string()
                        }
                    },
                    _ => format!("\"{i}\" must be an object"),
                };
                return Err(child(
                    "payloads",
                    &format!("\"payloads\" at position {i} fails because [{why}]"),
                ));
            }
            Some(items.clone())
        }
        Some(_) => return Err(child("payloads", "\"payloads\" must be an array")),
    };
    let content_id = string_field(body, "contentId")?;
    let content_type = string_field(body, "contentType")?;
    let args = match body.get("args") {
        None => None,
        Some(Value::Object(map)) => Some(map.clone()),
        Some(_) => return Err(child("args", "\"args\" must be an object")),
    };
    let tag = tag_field(body)?;
    let thread_id = string_field(body, "threadId")?;
    unknown_key(
        body,
        &[
            "payloads",
            "contentId",
            "contentType",
            "args",
            "tag",
            "threadId",
        ],
    )?;
    let peers = "[payloads, contentId, contentType]";
    let given = [
        payloads.is_some(),
        content_id.is_some(),
        content_type.is_some(),
    ];
    match given.iter().filter(|g| **g).count() {
        0 => return Err(format!("\"value\" must contain at least one of {peers}")),
        1 => {}
        _ => {
            return Err(format!(
                "\"value\" contains a conflict between exclusive peers {peers}"
            ))
        }
    }
    if payloads.is_some() && args.is_some() {
        return Err("\"args\" is only for contentId and contentType".into());
    }
    let args = args.unwrap_or_default();
    let speech = if let Some(payloads) = payloads {
        Speech::Payloads(payloads)
    } else if let Some(id) = content_id {
        if !bot.elements.contains_key(&id) {
            return Err(child(
                "contentId",
                &format!(
                    "content element \"{id}\" does not exist in bot \"{}\"",
                    bot.id
                ),
            ));
        }
        Speech::Say {
            reference: format!("#!{id}"),
            args,
        }
    } else {
        let kind = content_type.unwrap_or_default();
        if kind.starts_with(['#', '@']) {
            return Err(child(
                "contentType",
                "\"contentType\" is a content type name, like builtin_text",
            ));
        }
        Speech::Say {
            reference: kind,
            args,
        }
    };
    Ok(Ask {
        speech,
        tag,
        thread_id,
    })
}

/// The body of `…/flows`: `flow` (required), `node`, `tag`, `threadId`.
fn check_flow(body: &Map<String, Value>, bot: &Bot) -> Result<Ask, String> {
    let Some(flow) = string_field(body, "flow")? else {
        return Err(child("flow", "\"flow\" is required"));
    };
    let node = string_field(body, "node")?;
    let tag = tag_field(body)?;
    let thread_id = string_field(body, "threadId")?;
    unknown_key(body, &["flow", "node", "tag", "threadId"])?;
    let Some(found) = bot.flow(&flow) else {
        return Err(child(
            "flow",
            &format!("flow \"{flow}\" does not exist in bot \"{}\"", bot.id),
        ));
    };
    if let Some(n) = &node {
        if found.node(n).is_none() {
            return Err(child(
                "node",
                &format!("node \"{n}\" does not exist in flow \"{flow}\""),
            ));
        }
    }
    Ok(Ask {
        speech: Speech::Flow { flow, node },
        tag,
        thread_id,
    })
}

/// What each channel allows: `tag` on Messenger only, `threadId` (a group chat) on Telegram
/// only.
fn check_channel(ask: Ask, channel: &str) -> Result<Ask, String> {
    if ask.tag.is_some() && channel != "messenger" {
        return Err("\"tag\" is only for the messenger channel".into());
    }
    if ask.thread_id.is_some() && channel != "telegram" {
        return Err("\"threadId\" (a chat id) is only for the telegram channel".into());
    }
    Ok(ask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            Call::parse("/api/v1/bots/b/proactive/telegram/42/messages"),
            Some(Call::Messages {
                bot: "b",
                channel: "telegram",
                user: "42"
            })
        );
        assert_eq!(
            Call::parse("/api/v1/bots/b/proactive/api/u%2F1/flows"),
            Some(Call::Flows {
                bot: "b",
                channel: "api",
                user: "u%2F1"
            })
        );
        assert_eq!(
            Call::parse("/api/v1/bots/b/proactive/messages/abc"),
            Some(Call::Status {
                bot: "b",
                id: "abc"
            })
        );
        assert_eq!(Call::parse("/api/v1/bots/b/proactive/api/u"), None);
        assert_eq!(Call::parse("/api/v1/bots/b/converse/u"), None);
    }

    #[test]
    fn waits_are_bounded() {
        assert_eq!(wait_of("/x"), Ok(None));
        assert_eq!(wait_of("/x?wait=250"), Ok(Some(Duration::from_millis(250))));
        assert_eq!(wait_of("/x?wait=2s"), Ok(Some(Duration::from_secs(2))));
        assert!(wait_of("/x?wait=1m").is_err());
        assert!(wait_of("/x?wait=soon").is_err());
    }

    #[test]
    fn marks_end_with_the_last_item() {
        let mark = ProactiveMark {
            id: "m".into(),
            tag: None,
        };
        let marks: Vec<bool> = item_marks(&mark, 3).map(|m| m.last).collect();
        assert_eq!(marks, vec![false, false, true]);
        assert_eq!(item_marks(&mark, 0).count(), 0);
    }
}
