//! Telegram's webhook mode (`"mode": "webhook"`), an alternative to long polling: at start
//! botd calls `setWebhook` with its public URL and a secret token, and Telegram then posts
//! every update to `/api/v1/bots/<bot>/mod/channel-telegram/webhook` with the secret in the
//! `X-Telegram-Bot-Api-Secret-Token` header.
//!
//! A call is checked before its body is read: a missing or wrong secret (compared in
//! constant time) gets `403` with the error envelope. The update is committed to the same
//! inbound queue the poller fills, with its `update_id` remembered for [`DEDUPE_WINDOW`] in
//! the same transaction, before the `200` goes back: Telegram repeats an update it got no
//! `2XX` for, and a repeated one is acknowledged but never played twice.
//!
//! The secret is the configuration's `webhookSecret`, or else one botd made (48 characters
//! from the OS's random source) and keeps in the database, so it stays the same across
//! restarts.

use super::api::ApiError;
use super::poller::parse_batch;
use super::{update_chat, BotRuntime, TelegramBots};
use crate::channels::pipeline::{InboundRecord, Pipeline};
use crate::channels::retry::{self, Stop};
use crate::channels::same_secret;
use crate::engine::event::now_ms;
use crate::http::{self, Reply, Route};
use crate::store::{Batch, Namespace, SeenId, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The header Telegram sends the secret token in.
pub const SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";
/// How long update ids are remembered (Telegram keeps an update at most 24 hours).
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(48 * 3600);
/// The key of a generated secret in the store's channel state.
const SECRET_KEY: &str = "telegram-webhook-secret";
/// Largest update accepted; Telegram's are a few kilobytes.
const MAX_BODY: u64 = 1024 * 1024;

/// The webhook URL of `bot` under botd's public address.
pub fn url(external_url: &str, bot: &str) -> String {
    format!(
        "{}/api/v1/bots/{bot}/mod/channel-telegram/webhook",
        external_url.trim_end_matches('/')
    )
}

/// Telegram's rule for `secret_token`: 1 to 256 characters among `A-Z a-z 0-9 _ -`.
pub fn is_valid_secret(secret: &str) -> bool {
    (1..=256).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The bot a webhook path names.
fn bot_of(path: &str) -> Option<&str> {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["", "api", "v1", "bots", bot, "mod", "channel-telegram", "webhook"] if !bot.is_empty() => {
            Some(bot)
        }
        _ => None,
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSecret {
    secret: String,
}

/// The secret of `bot`: `configured` when set, else the one kept in the store, else a new one
/// (committed before it is used, so it never changes behind Telegram's back).
pub fn secret(store: &dyn Store, bot: &str, configured: Option<&str>) -> Result<String, String> {
    if let Some(s) = configured {
        return Ok(s.to_string());
    }
    // Instances sharing a database and starting together make one secret between them: the
    // others read the first one's (each would otherwise register its own with Telegram).
    let _hold = store
        .hold_conversation(&format!("telegram-webhook-secret\u{0}{bot}"), None)
        .map_err(|e| e.to_string())?;
    let kept = store
        .get(Namespace::Channel, bot, SECRET_KEY)
        .map_err(|e| e.to_string())?
        .and_then(|v| StoredSecret::deserialize(v).ok())
        .filter(|s| is_valid_secret(&s.secret));
    if let Some(kept) = kept {
        return Ok(kept.secret);
    }
    let secret = crate::config::random_secret(48)?;
    let mut batch = Batch::new();
    let record = StoredSecret {
        secret: secret.clone(),
    };
    batch.put(
        Namespace::Channel,
        bot,
        SECRET_KEY,
        serde_json::to_value(record).unwrap_or_default(),
    );
    store.commit(batch).map_err(|e| e.to_string())?;
    Ok(secret)
}

/// The route of the bots in webhook mode.
pub struct Webhook {
    /// bot id → its secret; a live reload changes one bot's at a time.
    pub secrets: RwLock<HashMap<String, String>>,
    pub pipeline: Arc<Pipeline<TelegramBots>>,
}

impl Webhook {
    /// Puts `bot` in webhook mode with `secret`, or (`None`) takes it out.
    pub fn set_secret(&self, bot: &str, secret: Option<String>) {
        let mut secrets = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        match secret {
            Some(secret) => secrets.insert(bot.to_string(), secret),
            None => secrets.remove(bot),
        };
    }

    fn has_bot(&self, bot: &str) -> bool {
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        secrets.contains_key(bot)
    }

    fn authentic(&self, bot: &str, head: &http::Head) -> bool {
        let sent = head.header(SECRET_HEADER).unwrap_or("");
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        secrets
            .get(bot)
            .is_some_and(|secret| same_secret(sent, secret))
    }

    /// Commits one update to the inbound queue, unless its id was seen.
    fn receive(&self, bot: &str, body: &[u8]) -> Reply {
        let json: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return Reply::error(
                    400,
                    "entity.parse.failed",
                    &format!("Bad Request: the body is not JSON: {e}"),
                )
            }
        };
        let batch = match parse_batch(&Value::Array(vec![json])) {
            Ok(batch) => batch,
            Err(why) => {
                return Reply::error(400, "BadRequestError", &format!("Bad Request: {why}"))
            }
        };
        let Some(update) = batch.updates.into_iter().next() else {
            let why = batch
                .skipped
                .join("; ")
                .replace("update 0 of the batch", "the update");
            log::warn!("bot \"{bot}\": a Telegram webhook call is refused: {why}");
            return Reply::error(400, "BadRequestError", &format!("Bad Request: {why}"));
        };
        let now = now_ms();
        let record = InboundRecord {
            bot: bot.to_string(),
            conversation: update_chat(&update.body),
            at: now,
            event: update.body,
        };
        let seen = SeenId::new(
            "telegram",
            &format!("{bot}\u{0}{}", update.id),
            now + DEDUPE_WINDOW.as_millis() as i64,
        );
        let (mut batch, mut staged) = (Batch::new(), self.pipeline.staged());
        self.pipeline
            .stage(&mut staged, &mut batch, &record, Some(seen));
        match self.pipeline.commit(batch, staged) {
            Ok(0) => log::debug!(
                "bot \"{bot}\": Telegram sent update {} again; it was played already",
                update.id
            ),
            Ok(_) => {}
            Err(e) => {
                log::error!(
                    "bot \"{bot}\": cannot store a Telegram update ({e}); Telegram will send it again"
                );
                return Reply::error(
                    500,
                    "StorageError",
                    "the update could not be stored; send it again",
                );
            }
        }
        Reply::json(200, &json!({"ok": true}))
    }
}

impl Route for Webhook {
    fn admit(&self, head: &http::Head) -> Option<http::Admission> {
        let bot = bot_of(head.path())?;
        if !self.has_bot(bot) {
            return None;
        }
        Some(if head.method != http::Method::Post {
            http::Admission::Answer(Reply::error(
                405,
                "MethodNotAllowed",
                "the Telegram webhook takes POST",
            ))
        } else if !self.authentic(bot, head) {
            http::Admission::Answer(refused(bot))
        } else {
            http::Admission::Body { limit: MAX_BODY }
        })
    }

    fn handle(&self, request: &http::Request) -> Reply {
        match bot_of(request.head.path()) {
            Some(bot) if self.authentic(bot, &request.head) => self.receive(bot, &request.body),
            Some(bot) => refused(bot),
            None => Reply::not_found("Telegram webhook"),
        }
    }
}

fn refused(bot: &str) -> Reply {
    // Anyone can call the URL: one warning per ten seconds at most, the rest at debug.
    static LAST_WARNING_MS: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    if now - LAST_WARNING_MS.load(Ordering::Relaxed) >= 10_000 {
        LAST_WARNING_MS.store(now, Ordering::Relaxed);
        log::warn!("bot \"{bot}\": a Telegram webhook call without the right {SECRET_HEADER} is refused (further refusals for 10 s at debug level)");
    } else {
        log::debug!("bot \"{bot}\": a Telegram webhook call is refused (secret)");
    }
    Reply::error(
        403,
        "ForbiddenError",
        &format!("Forbidden: the {SECRET_HEADER} header is missing or wrong"),
    )
}

/// Tells Telegram where to post `rt`'s updates (`setWebhook`), trying again what may pass
/// on the back-off curve until it works, Telegram refuses it for good, or botd stops.
pub fn register(rt: &BotRuntime, url: &str, secret: &str, stop: &Stop) {
    let bot = &rt.config.bot_id;
    if !url.starts_with("https://") {
        log::warn!("bot \"{bot}\": the Telegram webhook URL {url} is not https; Telegram only calls https URLs (set EXTERNAL_URL)");
    }
    let params = json!({"url": url, "secret_token": secret,
        "allowed_updates": ["message", "callback_query"], "drop_pending_updates": false});
    let mut failures = 0;
    loop {
        match rt.api.call("setWebhook", &params, Duration::from_secs(15)) {
            Ok(_) => {
                log::info!("bot \"{bot}\": Telegram webhook set to {url}");
                return;
            }
            Err(e) if e.is_bad_token() => {
                log::error!("bot \"{bot}\": Telegram refused the bot token ({e}); check botToken in data/bots/{bot}/config/channel-telegram.json. Telegram is stopped for this bot.");
                return;
            }
            Err(e) if e.is_transient() => {
                failures += 1;
                let after = match &e {
                    ApiError::Telegram {
                        retry_after: Some(s),
                        ..
                    } => Some(Duration::from_secs(*s)),
                    _ => None,
                };
                if failures == 1 {
                    log::warn!("bot \"{bot}\": setWebhook failed ({e}); retrying with back-off");
                }
                if !stop.sleep(retry::delay(failures, after)) {
                    return;
                }
            }
            Err(e) => {
                log::error!("bot \"{bot}\": Telegram refused the webhook {url} ({e}); no update arrives for this bot until the configuration is fixed (EXTERNAL_URL, webhookSecret)");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_secrets_and_urls() {
        assert_eq!(
            bot_of("/api/v1/bots/echo-bot/mod/channel-telegram/webhook"),
            Some("echo-bot")
        );
        assert_eq!(bot_of("/api/v1/bots//mod/channel-telegram/webhook"), None);
        assert_eq!(bot_of("/api/v1/bots/x/mod/channel-messenger/webhook"), None);
        assert!(is_valid_secret("abc_DEF-123"));
        assert!(is_valid_secret(&"a".repeat(256)));
        for bad in ["", "a b", "é", "a/b", &"a".repeat(257)] {
            assert!(!is_valid_secret(bad), "{bad}");
        }
        assert_eq!(
            url("https://bot.example.org/", "b1"),
            "https://bot.example.org/api/v1/bots/b1/mod/channel-telegram/webhook"
        );
    }

    #[test]
    fn a_generated_secret_is_kept() {
        let dir = std::env::temp_dir().join(format!("botd-tg-secret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::store::SqliteStore::open(&dir).unwrap();
        let first = secret(&store, "b1", None).unwrap();
        assert!(is_valid_secret(&first) && first.len() == 48);
        assert_eq!(secret(&store, "b1", None).unwrap(), first);
        assert_ne!(secret(&store, "b2", None).unwrap(), first);
        assert_eq!(secret(&store, "b1", Some("mine")).unwrap(), "mine");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
