//! One long-polling thread per enabled bot: `deleteWebhook` once, then `getUpdates` with
//! `timeout`, `offset` and `allowed_updates ["message","callback_query"]`, forever.
//!
//! **Offsets.** An update is confirmed to Telegram by the next `getUpdates` whose `offset` is
//! above its id. The poller asks for that offset only after the whole batch is on the inbound
//! queue and its highest id is the stored offset, both in **one commit** (the store's channel
//! state; the previous release's `storage/telegram/<bot>/offset.json` is imported at start).
//! While it commits, the bot's `gate` is held and the inbound workers wait for it. After a
//! crash, the next start resumes from the stored offset (or the newest update still queued,
//! if an imported queue is newer); nothing Telegram gave us is lost (it is queued, or
//! Telegram gives it again) and nothing handled is asked for again.
//!
//! **Random ids.** `update_id`s grow by one, but after a week without updates Telegram picks
//! the next one at random, possibly lower. botd never drops an update because of its id: it
//! only filters through `offset`, and it stops sending an offset once the last one is older
//! than Telegram's 24-hour retention (after a long idle, or a stored offset older than that),
//! because by then Telegram holds nothing we have seen and a stale offset could hide a new,
//! lower id.
//!
//! **Errors** never spin: back-off 1 s → 60 s; 429 waits `retry_after`; 409 (another poller
//! with this token, or a webhook) logs one clear line per episode and keeps backing off; 401
//! or 404 (bad token) logs once and ends this bot's poller only.
//!
//! **Odd answers** get the same back-off, because a server that answers at once would
//! otherwise be polled thousands of times a second: a `result` that is not a list, a batch in
//! which no update can be used, and an empty list that came back well before the long-poll
//! timeout. An update botd cannot use (not an object, no integer `update_id`, an id that is
//! negative or leaves no room for the next offset, or one below the offset asked for, which a
//! server ignoring offsets gives back) is skipped with a log line naming why; the good updates
//! of its batch are handled, and offsets never overflow.

use super::api::ApiError;
use super::{BotRuntime, TelegramBots};
use crate::channels::pipeline::{InboundRecord, Pipeline};
use crate::channels::retry::{backoff, Stop};
use crate::engine::event::now_ms;
use crate::store::{self, Hold, Namespace, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often an instance that does not poll a bot tries to take the lead.
pub const LEAD_RETRY: Duration = Duration::from_secs(2);

/// Telegram keeps an update at most this long.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// One update of a `getUpdates` answer that botd can handle and confirm.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub id: i64,
    pub body: Value,
}

impl Update {
    /// The `offset` that confirms this update: its id plus one (ids are below `i64::MAX`).
    pub fn next_offset(&self) -> i64 {
        self.id.saturating_add(1)
    }
}

/// A `getUpdates` result, read: the updates to handle, and why each other one was skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub updates: Vec<Update>,
    pub skipped: Vec<String>,
}

impl Batch {
    /// Moves updates below `offset` to the skipped ones: Telegram only returns ids from the
    /// offset on, so these were confirmed already, and a server that gives them back anyway
    /// would have them answered again and again.
    pub fn skip_below(&mut self, offset: i64) {
        let (kept, old): (Vec<Update>, Vec<Update>) =
            self.updates.drain(..).partition(|u| u.id >= offset);
        self.updates = kept;
        for u in old {
            self.skipped.push(format!(
                "update {} is below the offset {offset} asked for (it was confirmed already)",
                u.id
            ));
        }
    }
}

/// Reads a `getUpdates` result. `Err` says why it is not a list of updates at all.
pub fn parse_batch(result: &Value) -> Result<Batch, String> {
    let Some(items) = result.as_array() else {
        return Err(format!("the result is {}, not a list", json_kind(result)));
    };
    let mut batch = Batch::default();
    for (i, item) in items.iter().enumerate() {
        match usable_id(item) {
            Ok(id) => batch.updates.push(Update {
                id,
                body: item.clone(),
            }),
            Err(why) => batch.skipped.push(format!("update {i} of the batch {why}")),
        }
    }
    Ok(batch)
}

/// The id of an update botd can confirm, or why it cannot.
fn usable_id(item: &Value) -> Result<i64, String> {
    if !item.is_object() {
        return Err(format!("is {}, not an object", json_kind(item)));
    }
    let Some(id) = item.get("update_id").and_then(Value::as_i64) else {
        return Err(match item.get("update_id") {
            None => "has no update_id".to_string(),
            Some(v) => format!("has an update_id that is not an integer ({v})"),
        });
    };
    if id < 0 {
        // A negative offset means "the last N updates" to Telegram, not "after this one".
        return Err(format!("has a negative update_id ({id})"));
    }
    if id == i64::MAX {
        return Err(format!("has update_id {id}, which leaves no next offset"));
    }
    Ok(id)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Where polling resumes: the highest `update_id` known durable, and when it was received.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resume {
    pub update_id: i64,
    pub at_ms: i64,
}

/// The key of a bot's offset in the store's channel state.
pub const OFFSET_KEY: &str = "telegram-offset";

/// The stored offset: the highest `update_id` committed, and when its batch arrived (unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct OffsetRecord {
    update_id: i64,
    at: i64,
}

pub struct Poller {
    pub rt: Arc<BotRuntime>,
    pub pipeline: Arc<Pipeline<TelegramBots>>,
    pub store: Arc<dyn Store>,
    pub stop: Arc<Stop>,
    /// `storage/`: where the previous release's `telegram/<bot>/offset.json` is imported from.
    pub storage: PathBuf,
    /// The newest update of this bot still in the inbound spool at start.
    pub spooled: Option<Resume>,
}

impl Poller {
    /// Polls while this instance leads for the bot's token (one instance at a time across
    /// the instances sharing a database; always, on a store of its own). A follower tries to
    /// take the lead every [`LEAD_RETRY`], so when the leader dies, polling goes on within
    /// that time (its connection, and with it its lock, is gone at once).
    pub fn run(self) {
        let bot = self.rt.config.bot_id.clone();
        let role = format!("telegram-poll\u{0}{}", self.rt.config.token);
        let mut following = false;
        let mut failing = false;
        while !self.stopped() {
            match self.store.try_lead(&role) {
                Ok(Some(mut lead)) => {
                    if following {
                        log::info!("bot \"{bot}\": this instance polls Telegram now");
                    }
                    following = false;
                    failing = false;
                    if !self.poll(lead.as_mut()) {
                        return;
                    }
                }
                Ok(None) => {
                    if !following {
                        log::info!("bot \"{bot}\": another botd instance polls Telegram for this bot; this one takes over if it stops");
                        following = true;
                    }
                }
                Err(e) => {
                    if !failing {
                        log::warn!(
                            "bot \"{bot}\": cannot ask who polls Telegram ({e}); trying again"
                        );
                        failing = true;
                    }
                }
            }
            self.sleep(LEAD_RETRY);
        }
    }

    /// Long polling while `lead` holds. True when the lead was lost (try to take it again),
    /// false when polling ends (the stop, a bad token).
    fn poll(&self, lead: &mut dyn Hold) -> bool {
        let bot = self.rt.config.bot_id.clone();
        let stored = match self.stored_offset() {
            Ok(stored) => stored,
            Err(e) => {
                log::error!("bot \"{bot}\": cannot read the Telegram offset ({e}); polling waits and tries again");
                return true;
            }
        };
        let resume = latest(stored, self.spooled);
        if resume.is_some_and(|r| !is_fresh(r, now_ms())) {
            log::info!("bot \"{bot}\": the stored Telegram offset is older than 24 h; taking whatever Telegram holds");
        }
        let mut offset = resume
            .filter(|r| is_fresh(*r, now_ms()))
            .and_then(|r| resume_offset(r.update_id));
        if !self.delete_webhook() {
            return false;
        }
        log::info!("bot \"{bot}\": Telegram long polling started");
        let poll = self.rt.config.poll_timeout;
        let mut last_batch = Instant::now();
        let mut failures = 0u32;
        let mut conflict_logged = false;
        let mut webhook_retried = false;
        while !self.stopped() {
            if !lead.held() {
                log::warn!("bot \"{bot}\": this instance lost the Telegram polling lead (its database connection broke); it polls again once it leads again");
                return true;
            }
            if offset.is_some() && last_batch.elapsed() > RETENTION {
                offset = None;
            }
            let mut params = json!({"timeout": poll.as_secs(), "allowed_updates": ["message", "callback_query"], "limit": 100});
            if let Some(o) = offset {
                params["offset"] = json!(o);
            }
            let asked = Instant::now();
            let answer = self
                .rt
                .api
                .call("getUpdates", &params, poll + Duration::from_secs(15));
            let mut batch = match answer.map(|result| parse_batch(&result)) {
                Ok(Ok(batch)) => batch,
                Ok(Err(why)) => {
                    failures += 1;
                    if failures == 1 {
                        log::warn!(
                            "bot \"{bot}\": getUpdates answered something that is not a list of updates ({why}); retrying with back-off"
                        );
                    } else {
                        log::debug!("bot \"{bot}\": getUpdates answered no list again ({why})");
                    }
                    self.sleep(backoff(failures));
                    continue;
                }
                Err(e) if e.is_bad_token() => {
                    log::error!(
                        "bot \"{bot}\": Telegram refused the bot token ({e}); check botToken in data/bots/{bot}/config/channel-telegram.json. Telegram is stopped for this bot."
                    );
                    return false;
                }
                Err(ApiError::Telegram {
                    status: 429,
                    retry_after,
                    ..
                }) => {
                    let wait = Duration::from_secs(retry_after.unwrap_or(5).clamp(1, 3600));
                    log::warn!(
                        "bot \"{bot}\": getUpdates: Telegram asks to wait {} s (429)",
                        wait.as_secs()
                    );
                    self.sleep(wait);
                    continue;
                }
                Err(ApiError::Telegram {
                    status: 409,
                    description,
                    ..
                }) => {
                    failures += 1;
                    if !conflict_logged {
                        log::warn!(
                            "bot \"{bot}\": Telegram answered 409 Conflict ({description}): another program is polling with this bot token (a second botd? another bot framework?) or a webhook is set. Still retrying with back-off."
                        );
                        conflict_logged = true;
                    }
                    if description.to_ascii_lowercase().contains("webhook") && !webhook_retried {
                        webhook_retried = true;
                        self.delete_webhook();
                    }
                    self.sleep(backoff(failures));
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        log::warn!(
                            "bot \"{bot}\": getUpdates failed ({e}); retrying with back-off"
                        );
                    } else {
                        log::debug!("bot \"{bot}\": getUpdates failed again ({e})");
                    }
                    self.sleep(backoff(failures));
                    continue;
                }
            };
            conflict_logged = false;
            if let Some(o) = offset {
                batch.skip_below(o);
            }
            for why in &batch.skipped {
                log::warn!("bot \"{bot}\": a Telegram update is skipped: {why}");
            }
            if batch.updates.is_empty() {
                // Nothing usable, or nothing long before the long poll's end: a server that
                // answers like this at once would be asked again at once.
                let early = asked.elapsed() < poll / 2;
                if batch.skipped.is_empty() && !early {
                    if failures > 0 {
                        log::info!("bot \"{bot}\": Telegram polling works again");
                    }
                    failures = 0;
                    continue;
                }
                failures += 1;
                if batch.skipped.is_empty() && failures == 1 {
                    log::warn!(
                        "bot \"{bot}\": getUpdates answered an empty list at once instead of waiting up to {} s; retrying with back-off",
                        poll.as_secs()
                    );
                }
                self.sleep(backoff(failures));
                continue;
            }
            if failures > 0 {
                log::info!("bot \"{bot}\": Telegram polling works again");
            }
            failures = 0;
            last_batch = Instant::now();
            match self.accept(&batch.updates) {
                Some(next) => offset = Some(next),
                None => {
                    failures += 1;
                    self.sleep(backoff(failures));
                }
            }
        }
        false
    }

    /// Queues a batch and records its highest id as the offset, in one commit, with the gate
    /// held. Returns the offset that confirms it, or `None` when it could not be committed
    /// (nothing of it was: Telegram gives the batch again).
    fn accept(&self, updates: &[Update]) -> Option<i64> {
        let bot = &self.rt.config.bot_id;
        let _gate = self.rt.gate.lock().unwrap_or_else(|e| e.into_inner());
        let at = now_ms();
        let highest = updates.iter().max_by_key(|u| u.id)?;
        let mut batch = store::Batch::new();
        let mut staged = self.pipeline.staged();
        for update in updates {
            let record = InboundRecord {
                bot: bot.clone(),
                conversation: super::update_chat(&update.body),
                at,
                event: update.body.clone(),
            };
            self.pipeline.stage(&mut staged, &mut batch, &record, None);
        }
        let record = OffsetRecord {
            update_id: highest.id,
            at,
        };
        batch.put(
            Namespace::Channel,
            bot,
            OFFSET_KEY,
            serde_json::to_value(record).unwrap_or_default(),
        );
        match self.pipeline.commit(batch, staged) {
            Ok(_) => Some(highest.next_offset()),
            Err(e) => {
                log::error!(
                    "bot \"{bot}\": cannot queue a batch of {} Telegram update(s) ({e}); Telegram will give it again",
                    updates.len()
                );
                None
            }
        }
    }

    /// The offset in the store. A previous release's `offset.json` is imported first (the
    /// later of the two is kept) and then moved to `storage/imported-files/`.
    fn stored_offset(&self) -> Result<Option<Resume>, String> {
        let bot = &self.rt.config.bot_id;
        let read = |store: &dyn Store| -> Result<Option<Resume>, String> {
            let value = store
                .get(Namespace::Channel, bot, OFFSET_KEY)
                .map_err(|e| e.to_string())?;
            Ok(value
                .and_then(|v| serde_json::from_value::<OffsetRecord>(v).ok())
                .map(|r| Resume {
                    update_id: r.update_id,
                    at_ms: r.at,
                }))
        };
        let in_store = read(self.store.as_ref())?;
        let rel = format!("telegram/{bot}/offset.json");
        let file = self.storage.join(&rel);
        if !file.exists() {
            return Ok(in_store);
        }
        let from_file = read_offset(&file);
        let newest = latest(in_store, from_file);
        if newest != in_store {
            if let Some(r) = newest {
                let mut batch = store::Batch::new();
                let record = OffsetRecord {
                    update_id: r.update_id,
                    at: r.at_ms,
                };
                batch.put(
                    Namespace::Channel,
                    bot,
                    OFFSET_KEY,
                    serde_json::to_value(record).unwrap_or_default(),
                );
                self.store.commit(batch).map_err(|e| e.to_string())?;
            }
        }
        match crate::store::move_aside(&self.storage, &[rel.as_str()]) {
            Ok(()) => log::info!(
                "bot \"{bot}\": the Telegram offset of {} is now in the database",
                file.display()
            ),
            Err(e) => log::warn!(
                "bot \"{bot}\": the offset of {} is imported, but the file cannot be moved aside ({e})",
                file.display()
            ),
        }
        Ok(newest)
    }

    /// `deleteWebhook`, so that polling works. False when the token is bad (polling ends).
    fn delete_webhook(&self) -> bool {
        let bot = &self.rt.config.bot_id;
        match self.rt.api.call(
            "deleteWebhook",
            &json!({"drop_pending_updates": false}),
            Duration::from_secs(15),
        ) {
            Ok(_) => true,
            Err(e) if e.is_bad_token() => {
                log::error!(
                    "bot \"{bot}\": Telegram refused the bot token ({e}); check botToken in data/bots/{bot}/config/channel-telegram.json. Telegram is stopped for this bot."
                );
                false
            }
            Err(e) => {
                log::warn!("bot \"{bot}\": deleteWebhook failed ({e}); polling anyway");
                true
            }
        }
    }

    fn stopped(&self) -> bool {
        self.stop.is_stopped()
    }

    fn sleep(&self, d: Duration) {
        self.stop.sleep(d);
    }
}

/// The later of the stored offset and the newest spooled update; within one batch (same
/// time) the higher id.
fn latest(stored: Option<Resume>, spooled: Option<Resume>) -> Option<Resume> {
    match (stored, spooled) {
        (Some(a), Some(b)) => Some(if (b.at_ms, b.update_id) > (a.at_ms, a.update_id) {
            b
        } else {
            a
        }),
        (a, b) => a.or(b),
    }
}

/// The offset after a stored or spooled id; none for an id no update can have (negative, or
/// one a damaged file set to the largest integer).
fn resume_offset(update_id: i64) -> Option<i64> {
    update_id.checked_add(1).filter(|_| update_id >= 0)
}

/// Could Telegram still hold updates below this one unconfirmed? (It keeps them 24 h.)
fn is_fresh(r: Resume, now_ms: i64) -> bool {
    now_ms - r.at_ms < RETENTION.as_millis() as i64
}

fn read_offset(path: &std::path::Path) -> Option<Resume> {
    let bytes = std::fs::read(path).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some(Resume {
        update_id: v["update_id"].as_i64()?,
        at_ms: v["at"].as_i64().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_point() {
        let r = |update_id, at_ms| Resume { update_id, at_ms };
        // A crash between spooling a batch and writing offset.json: the spool is newer.
        assert_eq!(
            latest(Some(r(10, 1_000)), Some(r(15, 2_000))),
            Some(r(15, 2_000))
        );
        // Normal: the file is as new as anything spooled.
        assert_eq!(
            latest(Some(r(15, 2_000)), Some(r(12, 2_000))),
            Some(r(15, 2_000))
        );
        // After a random reset the newer record wins even with a lower id.
        assert_eq!(
            latest(Some(r(900, 1_000)), Some(r(7, 5_000))),
            Some(r(7, 5_000))
        );
        assert_eq!(latest(None, Some(r(7, 5))), Some(r(7, 5)));
        assert_eq!(latest(None, None), None);
        let day = RETENTION.as_millis() as i64;
        assert!(is_fresh(r(1, 0), day - 1));
        assert!(!is_fresh(r(1, 0), day));
    }

    #[test]
    fn batches_are_read_and_bad_updates_skipped() {
        let good = json!({"update_id": 5, "message": {"chat": {"id": 1}}});
        let batch = parse_batch(&json!([
            good,
            {"message": {}},
            {"update_id": "6"},
            {"update_id": 1.5},
            {"update_id": -3},
            {"update_id": i64::MAX},
            {"update_id": u64::MAX},
            7,
            null,
            {"update_id": i64::MAX - 1}
        ]))
        .unwrap();
        let ids: Vec<i64> = batch.updates.iter().map(|u| u.id).collect();
        assert_eq!(ids, [5, i64::MAX - 1]);
        assert_eq!(batch.updates[0].body, good);
        assert_eq!(batch.updates[1].next_offset(), i64::MAX);
        assert_eq!(
            batch.skipped,
            [
                "update 1 of the batch has no update_id",
                "update 2 of the batch has an update_id that is not an integer (\"6\")",
                "update 3 of the batch has an update_id that is not an integer (1.5)",
                "update 4 of the batch has a negative update_id (-3)",
                "update 5 of the batch has update_id 9223372036854775807, which leaves no next offset",
                "update 6 of the batch has an update_id that is not an integer (18446744073709551615)",
                "update 7 of the batch is a number, not an object",
                "update 8 of the batch is null, not an object",
            ]
        );
        assert_eq!(parse_batch(&json!([])), Ok(Batch::default()));
        for (result, kind) in [
            (json!({}), "an object"),
            (json!(null), "null"),
            (json!("[]"), "a string"),
            (json!(true), "a boolean"),
        ] {
            assert_eq!(
                parse_batch(&result),
                Err(format!("the result is {kind}, not a list"))
            );
        }
    }

    #[test]
    fn updates_below_the_offset_are_skipped() {
        let mut batch =
            parse_batch(&json!([{"update_id": 9}, {"update_id": 10}, {"update_id": 11}])).unwrap();
        batch.skip_below(10);
        let ids: Vec<i64> = batch.updates.iter().map(|u| u.id).collect();
        assert_eq!(ids, [10, 11]);
        assert_eq!(
            batch.skipped,
            ["update 9 is below the offset 10 asked for (it was confirmed already)"]
        );
    }

    #[test]
    fn resume_offsets_never_overflow() {
        assert_eq!(resume_offset(41), Some(42));
        assert_eq!(resume_offset(0), Some(1));
        assert_eq!(resume_offset(i64::MAX), None);
        assert_eq!(resume_offset(-1), None);
        assert_eq!(resume_offset(i64::MIN), None);
    }

    #[test]
    fn offsets_read_back() {
        let dir = std::env::temp_dir().join(format!("botd-tg-offset-{}", std::process::id()));
        let path = dir.join("offset.json");
        assert_eq!(read_offset(&path), None);
        crate::store::atomic_write(&path, br#"{"update_id": 42, "at": 7}"#).unwrap();
        assert_eq!(
            read_offset(&path),
            Some(Resume {
                update_id: 42,
                at_ms: 7
            })
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
