//! One pipeline for the push channels (Messenger, Telegram):
//!
//! ```text
//! webhook / poller ──commit──▶ inbound queue ──turn──▶ Engine ──commit──▶ outbound queue ──▶ API client
//!                                    (key bot/conversation)        (same key)
//! ```
//!
//! A channel supplies what is its own — the parser (a queued event → an engine [`Event`]),
//! the renderer (a turn's payloads → API calls) and the API client (one queued reply → its
//! calls made) — by implementing [`PushChannel`]; everything else is here, once: the two
//! durable [`Delivery`] queues, the typed queue records ([`InboundRecord`],
//! [`OutboundRecord`]) with one key builder ([`conversation_key`]), the turn and its commit,
//! and the retries (the curve and `Retry-After` of [`retry`]).
//!
//! **A turn is one commit**: its state, the removal of the inbound item that caused it and
//! the replies it queued (`Engine::turn_with`, the same turn and group commit Converse uses).
//! A turn whose commit fails is tried again on the back-off curve, at most
//! [`MAX_TURN_ATTEMPTS`] times, then dead-lettered; one that SQLite refuses for good at once.
//!
//! **A reply** is removed from the outbound queue only once its API accepted it (or refused
//! it for good): a failure that may pass is tried again after the server's `Retry-After`,
//! else on the curve (counted per conversation, failures in a row); a reply that could not be
//! sent for [`MAX_REPLY_AGE`] is given up with a log line.
//!
//! **Proactive messages** (`channels/proactive`) come in through the sink, marked: each of
//! their replies says which message it belongs to and whether it is the last, and the
//! outbound handler reports what became of it (the first refusal fails the message, the last
//! reply sent sends it). For channels whose rules count from the user's last message
//! ([`PushChannel::sent_at`]), that time is stored per conversation in each turn's commit.
//!
//! **Records** are JSON in the store. A record of the previous release (each channel had its
//! own shape and key names) is still read: [`PushChannel::legacy_inbound`] and
//! [`PushChannel::legacy_outbound`] turn it into the current one.

use crate::channels::delivery::{Delivery, Job, Outcome, Staged};
use crate::channels::proactive::{self, DeliveryError, ItemMark};
use crate::channels::retry::{self, Failure};
use crate::engine::event::now_ms;
use crate::engine::runtime::{ProactiveMark, ProactiveSink, Staging};
use crate::engine::{Destination, Engine, Event, TurnError};
use crate::store::{Batch, Committed, Namespace, Queue, SeenId, Store, StoreError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A turn whose state cannot be committed is tried this many times, then dead-lettered.
pub const MAX_TURN_ATTEMPTS: u32 = 12;
/// A reply that could not be sent for this long is given up (Messenger's standard messaging
/// window and Telegram's update retention are 24 hours too).
pub const MAX_REPLY_AGE: Duration = Duration::from_secs(24 * 3600);

/// The queue key of one conversation of a bot: its items are handled one at a time, in order.
pub fn conversation_key(bot: &str, conversation: &str) -> String {
    format!("{bot}/{conversation}")
}

/// One event on an inbound queue: what the webhook or the poller accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundRecord<E> {
    pub bot: String,
    /// The conversation on the channel (a Messenger PSID, a Telegram chat id).
    pub conversation: String,
    /// When it was accepted (unix ms; 0 in records of releases that did not say).
    pub at: i64,
    pub event: E,
}

/// One reply on an outbound queue: API calls made in order, then a pause of the
/// conversation (a typing delay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundRecord<C> {
    pub bot: String,
    pub conversation: String,
    /// When it was queued (unix ms; 0 when a previous release did not say).
    pub at: i64,
    pub calls: Vec<C>,
    #[serde(default)]
    pub pause_ms: u64,
    /// Set on the replies of a message of the proactive API, whose outcome is reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proactive: Option<ItemMark>,
}

/// What a renderer makes of a turn's payloads: calls that go out together, then a pause.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<C> {
    pub calls: Vec<C>,
    pub pause: Duration,
}

/// What an API client did with one reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    /// Every call was accepted (or skipped as not worth keeping the reply for).
    Done,
    /// Not sent yet, and not a failure: pacing asks to wait this long (a throttle).
    Wait(Duration),
    /// A call failed.
    Failed(Failure),
    /// The API refused a call for good, with its HTTP status (Telegram's 403 for a bot the
    /// user blocked): dropped like [`Failure::GiveUp`], and reported as it was said.
    Refused(DeliveryError),
}

/// What a push channel supplies to the pipeline.
pub trait PushChannel: Send + Sync + 'static {
    /// A received event as it is queued (parsed by the webhook or the poller).
    type Event: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// One API call of a reply.
    type Call: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The channel's name in log lines (`Messenger`).
    const NAME: &'static str;
    /// The engine's name for the channel (`messenger`), whose proactive replies it sends.
    const CHANNEL: &'static str;
    const INBOUND: Queue;
    const OUTBOUND: Queue;

    /// Whether this channel runs for `bot` now (a queued item of any other bot is dropped).
    fn serves(&self, bot: &str) -> bool;
    /// Called before the turn of an event, with the attempt (from 1): what the channel does
    /// on receipt (Telegram stops the spinner of a tapped button).
    fn received(&self, _record: &InboundRecord<Self::Event>, _attempt: u32) {}
    /// The parser: the engine event for a queued event; `None` when there is nothing to play
    /// (the channel logs why).
    fn event(&self, record: &InboundRecord<Self::Event>) -> Option<Event>;
    /// The renderer: the replies that deliver `payloads` to `conversation`; `answering` when
    /// they answer a received event (not a timeout).
    fn render(
        &self,
        bot: &str,
        conversation: &str,
        payloads: &[Value],
        answering: bool,
    ) -> Vec<Reply<Self::Call>>;
    /// The conversation replies to `destination` go to.
    fn conversation_of(&self, destination: &Destination) -> String;
    /// When the user sent a received event (unix ms), for channels whose rules count from
    /// the user's last message (Messenger's 24-hour window): it is stored per conversation,
    /// in the turn's commit.
    fn sent_at(&self, _record: &InboundRecord<Self::Event>) -> Option<i64> {
        None
    }
    /// Adapts the calls of a message of the proactive API (Messenger: why the page writes,
    /// and its `tag`).
    fn mark_proactive(&self, _calls: &mut Vec<Self::Call>, _mark: &ProactiveMark) {}
    /// The API client: makes the calls of one reply.
    fn send(&self, reply: &OutboundRecord<Self::Call>) -> Sent;
    /// An inbound item in the previous release's shape, read as a record.
    fn legacy_inbound(_item: &Value) -> Option<InboundRecord<Self::Event>> {
        None
    }
    /// An outbound item in the previous release's shape, read as a record.
    fn legacy_outbound(_item: &Value) -> Option<OutboundRecord<Self::Call>> {
        None
    }
}

/// A queued inbound item, in the current shape or the previous release's.
pub fn read_inbound<C: PushChannel>(item: &Value) -> Result<InboundRecord<C::Event>, String> {
    InboundRecord::deserialize(item)
        .or_else(|e| C::legacy_inbound(item).ok_or(e))
        .map_err(|e| e.to_string())
}

/// A queued outbound item, in the current shape or the previous release's.
pub fn read_outbound<C: PushChannel>(item: &Value) -> Result<OutboundRecord<C::Call>, String> {
    OutboundRecord::deserialize(item)
        .or_else(|e| C::legacy_outbound(item).ok_or(e))
        .map_err(|e| e.to_string())
}

fn to_item<T: Serialize>(record: &T) -> Value {
    // Records are plain strings, numbers and JSON values: serializing cannot fail.
    serde_json::to_value(record).unwrap_or_default()
}

/// A channel's running pipeline.
pub struct Pipeline<C: PushChannel> {
    channel: Arc<C>,
    inbound: Arc<Delivery>,
    outbound: Arc<Delivery>,
}

/// Failures in a row per conversation key, for the back-off of its replies.
type Failures = Mutex<HashMap<String, u32>>;

impl<C: PushChannel> Pipeline<C> {
    /// Starts both queues (what they still hold from before a restart first) with `threads`
    /// (inbound, outbound) workers named `name-in-N` and `name-out-N`, and registers the
    /// channel's proactive sink with the engine.
    pub fn start(
        engine: &Arc<Engine>,
        channel: Arc<C>,
        name: &str,
        threads: (usize, usize),
    ) -> io::Result<Pipeline<C>> {
        let store = engine.store();
        // Outbound first: replies left from before a restart are queued before new ones.
        let outbound = {
            let (channel, store) = (channel.clone(), store.clone());
            let failures = Failures::default();
            Arc::new(Delivery::start(
                store.clone(),
                C::OUTBOUND,
                threads.1,
                &format!("{name}-out"),
                Box::new(move |job| {
                    let outcome = send(channel.as_ref(), &failures, job);
                    report(store.as_ref(), job, &outcome);
                    outcome.0
                }),
            )?)
        };
        let inbound = {
            let (engine, channel, outbound) = (engine.clone(), channel.clone(), outbound.clone());
            Arc::new(Delivery::start(
                store,
                C::INBOUND,
                threads.0,
                &format!("{name}-in"),
                Box::new(move |job| play(&engine, channel.as_ref(), &outbound, job)),
            )?)
        };
        let pipeline = Pipeline {
            channel,
            inbound,
            outbound,
        };
        engine.set_proactive_sink(C::CHANNEL, pipeline.proactive_sink());
        Ok(pipeline)
    }

    pub fn channel(&self) -> &Arc<C> {
        &self.channel
    }

    /// An empty set of staged inbound items.
    pub fn staged(&self) -> Staged {
        self.inbound.staged()
    }

    /// Adds a received event of `bot` in `conversation` to `batch` (only when `unless_seen`
    /// is not remembered yet); [`Pipeline::commit`] commits and schedules it.
    pub fn stage(
        &self,
        staged: &mut Staged,
        batch: &mut Batch,
        record: &InboundRecord<C::Event>,
        unless_seen: Option<SeenId>,
    ) {
        let key = conversation_key(&record.bot, &record.conversation);
        self.inbound
            .stage(staged, batch, &key, to_item(record), unless_seen);
    }

    /// Commits `batch` with the staged events, then schedules them; returns how many were
    /// queued (not those whose id was seen). When this returns `Ok`, they survive a crash.
    pub fn commit(&self, batch: Batch, staged: Staged) -> Result<usize, StoreError> {
        self.inbound.commit(batch, staged)
    }

    /// Adds to `batch` the replies that deliver `payloads` to `conversation` of `bot`;
    /// schedule them with [`Pipeline::schedule_replies`] once the batch is committed.
    pub fn stage_replies(
        &self,
        batch: &mut Batch,
        bot: &str,
        conversation: &str,
        payloads: &[Value],
        answering: bool,
    ) -> Staged {
        stage_replies(
            self.channel.as_ref(),
            &self.outbound,
            batch,
            bot,
            conversation,
            payloads,
            answering,
            None,
        )
        .0
    }

    /// Hands the replies staged in a committed batch to the senders.
    pub fn schedule_replies(&self, staged: Staged, committed: &Committed) {
        self.outbound.schedule(staged, committed);
    }

    /// Where the engine's replies nobody asked for (timeouts, the proactive API) go: the
    /// outbound queue, in the commit of the conversation's state. A message of the proactive
    /// API is marked, so that its outcome is reported.
    pub fn proactive_sink(&self) -> ProactiveSink {
        let (channel, outbound) = (self.channel.clone(), self.outbound.clone());
        Arc::new(
            move |dest: &Destination, payloads: Vec<Value>, batch: &mut Batch| {
                if !channel.serves(&dest.bot_id) {
                    return Err(format!(
                        "{} is not enabled for bot \"{}\"",
                        C::NAME,
                        dest.bot_id
                    ));
                }
                let conversation = channel.conversation_of(dest);
                let (staged, items) = stage_replies(
                    channel.as_ref(),
                    &outbound,
                    batch,
                    &dest.bot_id,
                    &conversation,
                    &payloads,
                    false,
                    dest.proactive.as_ref(),
                );
                let outbound = outbound.clone();
                Ok(Staging {
                    items,
                    schedule: Box::new(move |committed: &Committed| {
                        outbound.schedule(staged, committed);
                    }),
                })
            },
        )
    }

    /// Items not finished yet: (events to play, replies to send).
    pub fn pending(&self) -> (usize, usize) {
        (self.inbound.pending(), self.outbound.pending())
    }

    /// Stops after the work in hand; the rest stays queued for the next start.
    pub fn stop(&self) {
        self.inbound.stop();
        self.outbound.stop();
    }
}

/// Stages the replies of `payloads`; returns them and how many there are.
#[allow(clippy::too_many_arguments)]
fn stage_replies<C: PushChannel>(
    channel: &C,
    outbound: &Delivery,
    batch: &mut Batch,
    bot: &str,
    conversation: &str,
    payloads: &[Value],
    answering: bool,
    proactive: Option<&ProactiveMark>,
) -> (Staged, usize) {
    let key = conversation_key(bot, conversation);
    let at = now_ms();
    let mut staged = outbound.staged();
    let replies = channel.render(bot, conversation, payloads, answering);
    let count = replies.len();
    for (i, mut reply) in replies.into_iter().enumerate() {
        let mark = proactive.map(|mark| {
            channel.mark_proactive(&mut reply.calls, mark);
            ItemMark {
                id: mark.id.clone(),
                last: i + 1 == count,
            }
        });
        let record = OutboundRecord {
            bot: bot.to_string(),
            conversation: conversation.to_string(),
            at,
            calls: reply.calls,
            pause_ms: reply.pause.as_millis() as u64,
            proactive: mark,
        };
        outbound.stage(&mut staged, batch, &key, to_item(&record), None);
    }
    (staged, count)
}

/// The inbound handler: one event → one turn, whose state, the event's removal and the
/// replies are one commit.
fn play<C: PushChannel>(engine: &Engine, channel: &C, outbound: &Delivery, job: &Job) -> Outcome {
    let record = match read_inbound::<C>(job.item) {
        Ok(record) => record,
        Err(e) => return Outcome::DeadLetter(format!("not a queued {} event: {e}", C::NAME)),
    };
    let bot = record.bot.as_str();
    if !channel.serves(bot) {
        log::warn!(
            "{}: an event for bot \"{bot}\" is dropped: {} is not enabled for it",
            C::NAME,
            C::NAME
        );
        return Outcome::Drop;
    }
    channel.received(&record, job.attempt);
    let Some(event) = channel.event(&record) else {
        return Outcome::Drop;
    };
    // A push channel sends each reply as it comes: a `builtin/wait` becomes a pause of this
    // conversation's outbound queue, never a sleep of this thread.
    let event = event.replies_as_they_come();
    let mut staged = None;
    // The user's message time, for rules that count from it; a late retry never moves it back.
    let store = engine.store();
    let last_key = proactive::last_inbound_key(C::CHANNEL, &record.conversation);
    let sent_at = channel.sent_at(&record).filter(|at| {
        let known = store.get(Namespace::Channel, bot, &last_key).ok().flatten();
        *at > known.and_then(|v| v["at"].as_i64()).unwrap_or(0)
    });
    let played = engine.turn_with(event, None, &mut |out, batch| {
        batch.finish(job.queue, job.id);
        if let Some(at) = sent_at {
            batch.put(
                Namespace::Channel,
                bot,
                &last_key,
                serde_json::json!({"at": at}),
            );
        }
        staged = Some(
            stage_replies(
                channel,
                outbound,
                batch,
                bot,
                &record.conversation,
                &out.responses,
                true,
                None,
            )
            .0,
        );
    });
    match played {
        Ok((_, committed)) => {
            if let Some(staged) = staged {
                outbound.schedule(staged, &committed);
            }
            Outcome::Removed
        }
        Err(TurnError::UnknownBot(_)) => {
            log::warn!(
                "{}: bot \"{bot}\" is not loaded any more; an event for it is dropped",
                C::NAME
            );
            Outcome::Drop
        }
        Err(TurnError::Storage(e)) if e.permanent || job.attempt >= MAX_TURN_ATTEMPTS => {
            Outcome::DeadLetter(format!(
                "bot \"{bot}\": the turn cannot be saved after {} attempt(s): {e}",
                job.attempt
            ))
        }
        Err(e) if job.attempt >= MAX_TURN_ATTEMPTS => Outcome::DeadLetter(format!(
            "bot \"{bot}\": the turn failed {} times ({e})",
            job.attempt
        )),
        Err(e) => {
            log::error!(
                "{}: bot \"{bot}\": {e}; trying again (nothing of the turn was saved)",
                C::NAME
            );
            Outcome::Retry(retry::backoff(job.attempt))
        }
    }
}

/// A reply's outcome for the proactive API: the message fails with the first refusal, and
/// is sent with its last reply.
fn report(store: &dyn Store, job: &Job, (outcome, refusal): &(Outcome, Option<DeliveryError>)) {
    let mark = job
        .item
        .get("proactive")
        .and_then(|m| ItemMark::deserialize(m).ok());
    let (Some(mark), Some(bot)) = (mark, job.item["bot"].as_str()) else {
        return;
    };
    match (outcome, refusal) {
        (_, Some(error)) => proactive::report(store, bot, &mark, Some(error.clone())),
        (Outcome::Done | Outcome::Pause(_), None) => proactive::report(store, bot, &mark, None),
        _ => {}
    }
}

/// The outbound handler: one reply through the channel's API client; with a dropped reply,
/// why.
fn send<C: PushChannel>(
    channel: &C,
    failures: &Failures,
    job: &Job,
) -> (Outcome, Option<DeliveryError>) {
    let record = match read_outbound::<C>(job.item) {
        Ok(record) => record,
        Err(e) => {
            let why = format!("not a queued {} reply: {e}", C::NAME);
            return (Outcome::DeadLetter(why), None);
        }
    };
    let refused = |why: String| {
        Some(DeliveryError {
            code: None,
            description: why,
        })
    };
    let bot = record.bot.as_str();
    if !channel.serves(bot) {
        log::warn!(
            "{}: a reply of bot \"{bot}\" is dropped: {} is not enabled for it now",
            C::NAME,
            C::NAME
        );
        return (
            Outcome::Drop,
            refused(format!("{} is not enabled for the bot now", C::NAME)),
        );
    }
    if record.at > 0 && now_ms() - record.at > MAX_REPLY_AGE.as_millis() as i64 {
        log::warn!(
            "{}: bot \"{bot}\": a reply to {} could not be sent for 24 hours and is given up",
            C::NAME,
            record.conversation
        );
        return (
            Outcome::Drop,
            refused("not sent for 24 hours (the API was unreachable or busy)".into()),
        );
    }
    let forget = || {
        failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(job.key);
    };
    let outcome = match channel.send(&record) {
        Sent::Done => {
            forget();
            match record.pause_ms {
                0 => Outcome::Done,
                ms => Outcome::Pause(Duration::from_millis(ms)),
            }
        }
        Sent::Wait(wait) => Outcome::Retry(wait),
        Sent::Refused(error) => {
            forget();
            log::error!(
                "{}: bot \"{bot}\": a reply to {} is dropped: {}",
                C::NAME,
                record.conversation,
                error.description
            );
            return (Outcome::Drop, Some(error));
        }
        Sent::Failed(Failure::Retry { after, why }) => {
            let failed = {
                let mut map = failures.lock().unwrap_or_else(|e| e.into_inner());
                let n = map.entry(job.key.to_string()).or_insert(0);
                *n += 1;
                *n
            };
            let wait = retry::delay(failed, after);
            if failed == 1 || failed.is_multiple_of(10) {
                log::warn!(
                    "{}: bot \"{bot}\": {why}; trying again in {wait:?} (failure {failed} in a row)",
                    C::NAME
                );
            } else {
                log::debug!("{}: bot \"{bot}\": {why}; next try in {wait:?}", C::NAME);
            }
            Outcome::Retry(wait)
        }
        Sent::Failed(Failure::GiveUp(why)) => {
            forget();
            log::error!(
                "{}: bot \"{bot}\": a reply to {} is dropped: {why}",
                C::NAME,
                record.conversation
            );
            return (Outcome::Drop, refused(why));
        }
    };
    (outcome, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A channel with a legacy shape, to check how records are read.
    struct Fake;

    impl PushChannel for Fake {
        type Event = Value;
        type Call = Value;
        const NAME: &'static str = "Fake";
        const CHANNEL: &'static str = "fake";
        const INBOUND: Queue = Queue::MessengerIn;
        const OUTBOUND: Queue = Queue::MessengerOut;
        fn serves(&self, _: &str) -> bool {
            true
        }
        fn event(&self, _: &InboundRecord<Value>) -> Option<Event> {
            None
        }
        fn render(&self, _: &str, _: &str, _: &[Value], _: bool) -> Vec<Reply<Value>> {
            Vec::new()
        }
        fn conversation_of(&self, d: &Destination) -> String {
            d.target.clone()
        }
        fn send(&self, _: &OutboundRecord<Value>) -> Sent {
            Sent::Done
        }
        fn legacy_inbound(item: &Value) -> Option<InboundRecord<Value>> {
            Some(InboundRecord {
                bot: item["old_bot"].as_str()?.to_string(),
                conversation: "c".into(),
                at: 0,
                event: item["x"].clone(),
            })
        }
    }

    #[test]
    fn records_round_trip_and_legacy_shapes_are_read() {
        let record = InboundRecord {
            bot: "welcome-bot".into(),
            conversation: "U1".into(),
            at: 5,
            event: json!({"text": "hi"}),
        };
        let item = to_item(&record);
        assert_eq!(
            item,
            json!({"bot": "welcome-bot", "conversation": "U1", "at": 5, "event": {"text": "hi"}})
        );
        assert_eq!(read_inbound::<Fake>(&item).unwrap(), record);
        let legacy = read_inbound::<Fake>(&json!({"old_bot": "b", "x": 1})).unwrap();
        assert_eq!((legacy.bot.as_str(), legacy.event), ("b", json!(1)));
        // Neither shape: the current shape's complaint.
        let err = read_inbound::<Fake>(&json!({"bot": "b"})).unwrap_err();
        assert!(err.contains("conversation"), "{err}");
        let out = OutboundRecord {
            bot: "b".into(),
            conversation: "c".into(),
            at: 1,
            calls: vec![json!({"m": 1})],
            pause_ms: 0,
            proactive: None,
        };
        assert_eq!(read_outbound::<Fake>(&to_item(&out)).unwrap(), out);
        assert!(read_outbound::<Fake>(&json!({"bot": "b", "calls": []})).is_err());
        assert_eq!(conversation_key("welcome-bot", "42"), "welcome-bot/42");
    }
}
