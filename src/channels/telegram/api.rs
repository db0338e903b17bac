//! A small, blocking Bot API client: `POST {apiBase}/bot{token}/{method}` with a JSON body,
//! answers read as Telegram's `{ok, result}` / `{ok:false, error_code, description,
//! parameters.retry_after}` envelope. The token is part of every URL, so every error text this
//! module hands out has it redacted.

use serde_json::Value;
use std::time::Duration;

/// What went wrong with one call.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// Telegram (or whatever answers at `apiBase`) answered with an error.
    Telegram {
        status: u16,
        description: String,
        /// `parameters.retry_after` of a 429, in seconds.
        retry_after: Option<u64>,
    },
    /// No answer: connection refused, timeout, TLS, an unreadable body… (token redacted).
    Network(String),
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Telegram { status, .. } => Some(*status),
            ApiError::Network(_) => None,
        }
    }

    /// A bad token: Telegram answers 401 Unauthorized, or 404 Not Found for a malformed one.
    pub fn is_bad_token(&self) -> bool {
        matches!(self.status(), Some(401) | Some(404))
    }

    /// Worth trying again later: no answer, a 5xx or a 429.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Network(_) => true,
            ApiError::Telegram { status, .. } => *status == 429 || *status >= 500,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Telegram {
                status,
                description,
                ..
            } => write!(f, "Telegram answered {status}: {description}"),
            ApiError::Network(e) => write!(f, "Bot API unreachable: {e}"),
        }
    }
}

/// One bot's client. Cheap to share between threads.
pub struct Api {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Api {
    pub fn new(api_base: &str, token: &str) -> Api {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .user_agent(concat!("botd/", env!("CARGO_PKG_VERSION")))
            // One kept-alive connection per sending thread and one for polling: with ureq's
            // default of one per host, concurrent calls would open new TLS connections.
            .max_idle_connections_per_host(super::OUTBOUND_THREADS + 1)
            .build();
        Api {
            agent,
            base: api_base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// Calls `method` with `params`; `timeout` bounds the whole call (for `getUpdates` it
    /// must be above the long-polling timeout). Returns `result`.
    pub fn call(&self, method: &str, params: &Value, timeout: Duration) -> Result<Value, ApiError> {
        let url = format!("{}/bot{}/{method}", self.base, self.token);
        let answer = self.agent.post(&url).timeout(timeout).send_json(params);
        match answer {
            Ok(response) => {
                let status = response.status();
                let body: Value = response
                    .into_json()
                    .map_err(|e| ApiError::Network(self.redact(&e.to_string())))?;
                if body["ok"].as_bool() == Some(true) {
                    Ok(body["result"].clone())
                } else {
                    Err(envelope_error(status, &body))
                }
            }
            Err(ureq::Error::Status(status, response)) => {
                let body: Value = response.into_json().unwrap_or(Value::Null);
                Err(envelope_error(status, &body))
            }
            Err(e) => Err(ApiError::Network(self.redact(&e.to_string()))),
        }
    }

    /// `text` without this bot's token.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.token)
    }
}

fn envelope_error(status: u16, body: &Value) -> ApiError {
    let status = body["error_code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .unwrap_or(status);
    let description = body["description"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("HTTP {status}"));
    let retry_after = body["parameters"]["retry_after"].as_u64();
    ApiError::Telegram {
        status,
        description,
        retry_after,
    }
}

/// Removes `token` and any `/bot<something>/` URL segment from `text`.
pub fn redact(text: &str, token: &str) -> String {
    let mut out = if token.is_empty() {
        text.to_string()
    } else {
        text.replace(token, "<token>")
    };
    let mut from = 0;
    while let Some(pos) = out[from..].find("/bot").map(|p| p + from) {
        let start = pos + 4;
        let end = out[start..]
            .find(['/', ' ', '"', '?'])
            .map_or(out.len(), |e| e + start);
        if end > start && &out[start..end] != "<token>" {
            out.replace_range(start..end, "<token>");
        }
        from = start;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_are_redacted() {
        let msg = "http://127.0.0.1:1/bot123:ABC-def/getUpdates: Connection refused";
        assert_eq!(
            redact(msg, "123:ABC-def"),
            "http://127.0.0.1:1/bot<token>/getUpdates: Connection refused"
        );
        // Even a token we were not told about (another bot's) goes.
        assert_eq!(
            redact("https://api.telegram.org/bot999:XYZ/sendMessage", "123:ABC"),
            "https://api.telegram.org/bot<token>/sendMessage"
        );
        assert_eq!(redact("no url here", "t0k"), "no url here");
    }

    #[test]
    fn error_envelopes() {
        let e = envelope_error(
            429,
            &json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 3", "parameters": {"retry_after": 3}}),
        );
        assert_eq!(
            e,
            ApiError::Telegram {
                status: 429,
                description: "Too Many Requests: retry after 3".into(),
                retry_after: Some(3)
            }
        );
        assert!(e.is_transient());
        let e = envelope_error(401, &Value::Null);
        assert!(e.is_bad_token() && !e.is_transient());
        assert!(
            !envelope_error(400, &json!({"description": "Bad Request: chat not found"}))
                .is_transient()
        );
    }
}
