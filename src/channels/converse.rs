//! The Converse API (§2 with the fixes of §14): `POST /api/v1/bots/{botId}/converse/{userId}`
//! and `…/{userId}/secured`. One synchronous turn per request, so the answer holds exactly
//! this turn's replies — never another user's or bot's, never missing one.
//!
//! Before a turn, the gate: per-client and per-user token buckets (`converse.rateLimit`,
//! answered `429` with `Retry-After`) and, on the public route, the API keys
//! (`converse.apiKeys`, sent as `X-BP-Api-Key`). Both are read from `botpress.config.json` and
//! may be set per bot in `bot.config.json`; the settings are read per request, so a reload
//! applies at once.
//!
//! Messages the proactive API kept for the user are taken in the commit of their next turn
//! and come first in its `responses`.

use super::proactive;
use crate::config::access::{self, ConverseAccess, MAX_TRACKED};
use crate::engine::bot::Bot;
use crate::engine::event::now_ms;
use crate::engine::{Engine, Event, TurnError};
use crate::http::{self, jwt, Reply, Route};
use crate::ratelimit::Buckets;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The header that carries a Converse API key. Not `Authorization`: that one carries the
/// secured route's JWT, and a page may need both apart.
pub const API_KEY_HEADER: &str = "X-BP-Api-Key";

pub struct Converse {
    engine: Arc<Engine>,
    users: Mutex<Buckets<(String, String)>>,
    clients: Mutex<Buckets<(String, IpAddr)>>,
    /// Each bot's own `converse` settings, by bot id, with the fingerprint of the files they
    /// were read from (read again when the bot is reloaded).
    bots: Mutex<HashMap<String, (u64, Arc<ConverseAccess>)>>,
}

impl Converse {
    pub fn new(engine: Arc<Engine>) -> Converse {
        Converse {
            engine,
            users: Mutex::new(Buckets::new(MAX_TRACKED)),
            clients: Mutex::new(Buckets::new(MAX_TRACKED)),
            bots: Mutex::new(HashMap::new()),
        }
    }

    /// `bot.config.json` → `converse` of a loaded bot; a bad field is logged once (file and
    /// field) and left to the global setting.
    fn bot_access(&self, bot: &Bot) -> Arc<ConverseAccess> {
        let mut bots = self.bots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((fingerprint, access)) = bots.get(&bot.id) {
            if *fingerprint == bot.fingerprint {
                return access.clone();
            }
        }
        let path = bot.dir.join("bot.config.json");
        let shown = path.display().to_string();
        let mut problems = Vec::new();
        let section = crate::config::read_json(&path)
            .map_err(|p| problems.push(p))
            .ok()
            .and_then(|v| v.get("converse").cloned());
        let access = Arc::new(ConverseAccess::read(
            section.as_ref(),
            &shown,
            &mut problems,
        ));
        for p in problems {
            log::warn!("{p} (the global setting applies instead)");
        }
        bots.insert(bot.id.clone(), (bot.fingerprint, access.clone()));
        access
    }

    /// The limits and the API key, before any turn. `Err` is the answer.
    fn gate(
        &self,
        request: &http::Request,
        bot: &Bot,
        user: &str,
        secured: bool,
    ) -> Result<(), Reply> {
        let settings = self.engine.settings();
        let global = &settings.converse.access;
        let own = self.bot_access(bot);
        let now = Instant::now();
        if let Some(rate) = own.limits.per_client.or(global.limits.per_client) {
            let forwarded: Vec<&str> = request.head.all("X-Forwarded-For").collect();
            let client = access::client_address(
                request.peer.ip(),
                &forwarded,
                &settings.http.trusted_proxies,
            );
            let taken = lock(&self.clients).take(&(bot.id.clone(), client), rate, now);
            taken.map_err(|wait| too_many(wait, "this client"))?;
        }
        if !secured {
            let keys: Vec<&String> = own.api_keys.iter().chain(&global.api_keys).collect();
            if !keys.is_empty() {
                check_api_key(request.header(API_KEY_HEADER), &keys, "Converse API")?;
            }
        }
        if let Some(rate) = own.limits.per_user.or(global.limits.per_user) {
            let taken = lock(&self.users).take(&(bot.id.clone(), user.to_string()), rate, now);
            taken.map_err(|wait| too_many(wait, "this user"))?;
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `429` with `Retry-After` in whole seconds, rounded up (a client that waits that long is
/// let through).
fn too_many(wait: Duration, whom: &str) -> Reply {
    let seconds = wait.as_nanos().div_ceil(1_000_000_000).max(1);
    Reply::error(
        429,
        "TooManyRequests",
        &format!("Too Many Requests: the Converse rate limit for {whom} is reached; try again in {seconds} s"),
    )
    .with_header("Retry-After", &seconds.to_string())
}

/// `401` without a key, `403` with a wrong one (`what` names the API in the answer). Keys are
/// compared as SHA-256 digests, every key and every byte, so the time taken says nothing
/// about how much of a key was right.
pub(crate) fn check_api_key(sent: Option<&str>, keys: &[&String], what: &str) -> Result<(), Reply> {
    let Some(sent) = sent.map(str::trim).filter(|k| !k.is_empty()) else {
        return Err(Reply::error(
            401,
            "UnauthorizedError",
            &format!(
                "Unauthorized: this bot's {what} needs an API key in the {API_KEY_HEADER} header"
            ),
        ));
    };
    let digest = Sha256::digest(sent.as_bytes());
    let mut matched = 0u8;
    for key in keys {
        let want = Sha256::digest(key.as_bytes());
        let diff = digest
            .iter()
            .zip(want.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        matched |= u8::from(diff == 0);
    }
    if matched == 1 {
        Ok(())
    } else {
        Err(Reply::error(
            403,
            "ForbiddenError",
            "Forbidden: the API key is not valid for this bot",
        ))
    }
}

/// The bot id, the user id (still percent-encoded) and whether the secured route was asked.
fn converse_path(path: &str) -> Option<(&str, &str, bool)> {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["", "api", "v1", "bots", bot, "converse", user] => Some((*bot, *user, false)),
        ["", "api", "v1", "bots", bot, "converse", user, "secured"] => Some((*bot, *user, true)),
        _ => None,
    }
}

impl Route for Converse {
    fn admit(&self, head: &http::Head) -> Option<http::Admission> {
        converse_path(head.path())?;
        Some(if head.method == http::Method::Post {
            http::Admission::Body {
                limit: self.engine.settings().http.body_limit,
            }
        } else {
            http::Admission::Answer(Reply::error(
                405,
                "MethodNotAllowed",
                "Converse only accepts POST",
            ))
        })
    }

    fn handle(&self, request: &http::Request) -> Reply {
        let Some((bot_id, user_id, secured)) = converse_path(request.head.path()) else {
            return Reply::not_found("converse route");
        };
        let Some(user_id) = http::percent_decode(user_id, false) else {
            return Reply::error(
                400,
                "BadRequestError",
                "Bad Request: the user id is not valid UTF-8 once percent-decoded",
            );
        };
        self.converse(request, bot_id, &user_id, secured)
    }
}

impl Converse {
    fn converse(
        &self,
        request: &http::Request,
        bot_id: &str,
        user_id: &str,
        secured: bool,
    ) -> Reply {
        let settings = self.engine.settings();
        let body = &request.body;
        let json: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) if body.is_empty() => Value::Object(Map::new()),
            Err(_) => return http::body_parser_error(400, "entity.parse.failed"),
        };
        let Some(bot) = self.engine.bot(bot_id) else {
            return Reply::not_found(&format!("bot \"{bot_id}\" does not exist"));
        };
        if user_id.is_empty() {
            return Reply::error(400, "BadRequestError", "Bad Request: the user id is empty");
        }
        if let Err(reply) = self.gate(request, &bot, user_id, secured) {
            return reply;
        }
        let unsecured_enabled = bot
            .converse_unsecured
            .unwrap_or(settings.converse.enable_unsecured_endpoint);
        if secured || bot.private {
            if let Err(reply) = authenticate(request, &settings.app_secret) {
                return reply;
            }
        }
        if !secured && !unsecured_enabled {
            return Reply::error(
                403,
                "ForbiddenError",
                "Forbidden: the unsecured Converse endpoint is disabled for this bot",
            );
        }
        let Value::Object(mut payload) = json else {
            return Reply::express_text(400, "\"value\" must be an object");
        };
        let include: Vec<String> = http::query_pairs(request.url())
            .into_iter()
            .find(|(k, _)| k == "include")
            // An empty `include` is falsy in Express: as if there was none.
            .filter(|(_, v)| !v.is_empty())
            .map(|(_, v)| v.to_lowercase().split(',').map(str::to_string).collect())
            .unwrap_or_default();
        if !secured {
            if let Err(message) = validate_public(&payload) {
                return Reply::express_text(400, &message);
            }
            if !include.is_empty() && include != ["responses"] {
                return Reply::express_text(
                    401,
                    "Unauthenticated converse API can only return 'responses'",
                );
            }
        }
        let included_contexts = match payload.remove("includedContexts") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => vec!["global".to_string()],
        };
        let kind = match payload.get("type") {
            None | Some(Value::Null) => {
                payload.insert("type".into(), Value::String("text".into()));
                "text".to_string()
            }
            Some(Value::String(t)) => t.clone(),
            Some(_) => {
                return Reply::error(
                    400,
                    "BadRequestError",
                    "Bad Request: \"type\" must be a string",
                )
            }
        };
        let max = settings.converse.max_message_length;
        if kind == "text" {
            let ok = payload
                .get("text")
                .and_then(Value::as_str)
                .is_some_and(|t| t.chars().count() <= max);
            if !ok {
                return Reply::error(
                    400,
                    "BadRequestError",
                    &format!("Bad Request: Text must be a valid string of less than {max} chars"),
                );
            }
        }
        let mut event = Event::new(&bot.id, "api", &kind, user_id, Value::Object(payload));
        event.included_contexts = included_contexts;
        let deadline = Instant::now() + settings.converse.timeout;
        // Proactive messages kept for this user come first, taken in the turn's commit.
        let (store, session) = (self.engine.store(), event.session_id());
        let mut kept = Vec::new();
        let played = self
            .engine
            .turn_with(event, Some(deadline), &mut |_, batch| {
                kept = proactive::take_mailbox(store.as_ref(), &bot.id, &session, batch);
            });
        match played {
            Ok((out, _)) => {
                let mut answer = Map::new();
                kept.extend(out.responses);
                answer.insert("responses".into(), Value::Array(kept));
                let parts: [(&str, Value); 5] = [
                    ("nlu", out.nlu),
                    ("state", out.state),
                    ("suggestions", out.suggestions),
                    ("decision", out.decision),
                    // External-auth credentials (Botpress Pro) are not supported: always null.
                    ("credentials", Value::Null),
                ];
                for (key, value) in parts {
                    if secured && include.iter().any(|i| i == key) {
                        answer.insert(key.into(), value);
                    }
                }
                Reply::json(200, &Value::Object(answer))
            }
            Err(TurnError::UnknownBot(id)) => {
                Reply::not_found(&format!("bot \"{id}\" does not exist"))
            }
            Err(TurnError::Timeout) => Reply::error(
                504,
                "GatewayTimeout",
                &format!(
                    "The turn took longer than converse.timeout ({} ms); nothing was saved",
                    settings.converse.timeout.as_millis()
                ),
            ),
            Err(TurnError::Storage(e)) if e.unavailable => {
                log::warn!("bot \"{}\": {e}", bot.id);
                Reply::error(
                    503,
                    "ServiceUnavailable",
                    "The database cannot be reached; nothing was saved. Send the message again",
                )
                .with_header("Retry-After", "5")
            }
            Err(e @ TurnError::Storage(_)) => {
                log::error!("bot \"{}\": {e}", bot.id);
                Reply::error(500, "StorageError", "Unexpected error")
            }
        }
    }
}

/// The Joi schema of the public route (§2.2): `type` optional and `"text"`, `text` a
/// non-empty string, `includedContexts` an array of strings, nothing else. Like Joi 13, the
/// schema's own keys are checked first (in schema order), then unknown keys, and validation
/// stops at the first error.
fn validate_public(body: &Map<String, Value>) -> Result<(), String> {
    let child = |key: &str, why: String| format!("child \"{key}\" fails because [{why}]");
    match body.get("type") {
        None => {}
        Some(Value::String(t)) if t == "text" => {}
        Some(Value::String(_)) => {
            return Err(child("type", "\"type\" must be one of [text]".into()))
        }
        Some(_) => return Err(child("type", "\"type\" must be a string".into())),
    }
    match body.get("text") {
        None => return Err(child("text", "\"text\" is required".into())),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(child("text", "\"text\" is not allowed to be empty".into()))
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err(child("text", "\"text\" must be a string".into())),
    }
    match body.get("includedContexts") {
        None => {}
        Some(Value::Array(items)) => {
            if let Some(i) = items.iter().position(|v| !v.is_string()) {
                let why = format!(
                    "\"includedContexts\" at position {i} fails because [\"{i}\" must be a string]"
                );
                return Err(child("includedContexts", why));
            }
        }
        Some(_) => {
            return Err(child(
                "includedContexts",
                "\"includedContexts\" must be an array".into(),
            ))
        }
    }
    match body
        .keys()
        .find(|k| !["type", "text", "includedContexts"].contains(&k.as_str()))
    {
        Some(other) => Err(format!("\"{other}\" is not allowed")),
        None => Ok(()),
    }
}

/// `Authorization: Bearer <JWT>` with the four 401 answers of §2.3.
fn authenticate(request: &http::Request, secret: &str) -> Result<Value, Reply> {
    let unauthorized = |m: &str| Reply::error(401, "UnauthorizedError", m);
    let Some(header) = request.header("Authorization") else {
        return Err(unauthorized(
            "Unauthorized: Authorization header is missing",
        ));
    };
    let (scheme, token) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized(&format!(
            "Unauthorized: Unknown scheme \"{scheme}\""
        )));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(unauthorized(
            "Unauthorized: Authentication token is missing",
        ));
    }
    jwt::verify(secret, token, now_ms() / 1000).map_err(|why| {
        log::debug!("converse token refused: {why}");
        unauthorized("Unauthorized: Invalid authentication token")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retry_after_is_rounded_up_and_keys_are_checked() {
        let header = |wait: Duration| {
            let reply = too_many(wait, "x");
            assert_eq!(reply.status, 429);
            reply.headers[0].1.clone()
        };
        assert_eq!(header(Duration::from_millis(1)), "1");
        assert_eq!(header(Duration::from_millis(1000)), "1");
        assert_eq!(header(Duration::from_millis(1001)), "2");
        assert_eq!(header(Duration::from_secs(59)), "59");
        let (a, b) = (
            "first-key-0123456789".to_string(),
            "second-key-0123456789".to_string(),
        );
        let keys = [&a, &b];
        assert!(check_api_key(Some("second-key-0123456789"), &keys, "x").is_ok());
        assert!(check_api_key(Some(" first-key-0123456789 "), &keys, "x").is_ok());
        assert_eq!(check_api_key(None, &keys, "x").unwrap_err().status, 401);
        assert_eq!(check_api_key(Some(""), &keys, "x").unwrap_err().status, 401);
        assert_eq!(
            check_api_key(Some("first-key-012345678"), &keys, "x")
                .unwrap_err()
                .status,
            403
        );
    }

    #[test]
    fn public_body_rules() {
        let check = |v: Value| validate_public(v.as_object().unwrap());
        assert_eq!(check(json!({"type": "text", "text": "hi"})), Ok(()));
        assert_eq!(
            check(json!({"text": "hi", "includedContexts": ["a"]})),
            Ok(())
        );
        assert_eq!(
            check(json!({})),
            Err("child \"text\" fails because [\"text\" is required]".into())
        );
        assert_eq!(
            check(json!({"text": ""})),
            Err("child \"text\" fails because [\"text\" is not allowed to be empty]".into())
        );
        assert_eq!(
            check(json!({"text": 5})),
            Err("child \"text\" fails because [\"text\" must be a string]".into())
        );
        assert_eq!(
            check(json!({"type": "quick_reply", "text": "x"})),
            Err("child \"type\" fails because [\"type\" must be one of [text]]".into())
        );
        assert_eq!(
            check(json!({"text": "x", "payload": "P"})),
            Err("\"payload\" is not allowed".into())
        );
        // Joi checks the schema's keys first, in schema order.
        assert_eq!(
            check(json!({"payload": "P"})),
            Err("child \"text\" fails because [\"text\" is required]".into())
        );
        assert_eq!(
            check(json!({"type": 1, "text": "x"})),
            Err("child \"type\" fails because [\"type\" must be a string]".into())
        );
        assert_eq!(
            check(json!({"text": "x", "includedContexts": ["a", 2]})),
            Err("child \"includedContexts\" fails because [\"includedContexts\" at position 1 fails because [\"1\" must be a string]]".into())
        );
    }
}
