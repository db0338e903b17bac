//! The Converse API (§2 with the fixes of §14): `POST /api/v1/bots/{botId}/converse/{userId}`
//! and `…/{userId}/secured`. One synchronous turn per request, so the answer holds exactly
//! this turn's replies — never another user's or bot's, never missing one.

use crate::engine::event::now_ms;
use crate::engine::{Engine, Event, TurnError};
use crate::http::{self, jwt, Reply, Route};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Instant;

pub struct Converse {
    engine: Arc<Engine>,
}

impl Converse {
    pub fn new(engine: Arc<Engine>) -> Converse {
        Converse { engine }
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
        match self.engine.turn(event, Some(deadline)) {
            Ok(out) => {
                let mut answer = Map::new();
                answer.insert("responses".into(), Value::Array(out.responses));
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
