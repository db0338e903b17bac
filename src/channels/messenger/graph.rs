//! A small, blocking Graph API client for the Messenger Platform: the page lookup (`GET /me`),
//! the Send API (`POST /me/messages`) and the Messenger profile. The base URL and version come
//! from the configuration, so tests can point it at a local fake.
//!
//! Failures are sorted into "try again later" (network errors, 5xx, HTTP 429 and the Graph
//! throttling codes 4, 17, 32 and 613, honouring `Retry-After`) and "give up" (any other
//! 4xx). No message ever contains the access token or a URL carrying it.

pub use crate::channels::retry::Failure;
use serde_json::Value;
use std::time::Duration;

/// Graph error codes that mean "throttled": application, user, page and API-call limits.
const THROTTLE_CODES: [i64; 4] = [4, 17, 32, 613];

pub struct Graph {
    agent: ureq::Agent,
    base: String,
    version: String,
}

impl Graph {
    pub fn new(base: &str, version: &str) -> Graph {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .user_agent(concat!("botd/", env!("CARGO_PKG_VERSION")))
            // One kept-alive connection per sending thread: with ureq's default of one per
            // host, every concurrent reply but one would open a new TLS connection.
            .max_idle_connections_per_host(super::OUTBOUND_THREADS)
            .build();
        Graph {
            agent,
            base: base.trim_end_matches('/').to_string(),
            version: version.trim_matches('/').to_string(),
        }
    }

    /// `GET /me`: the page the token belongs to (`id`, `name`).
    pub fn me(&self, token: &str) -> Result<Value, Failure> {
        self.call("GET", "me", token, None)
    }

    /// `POST /me/messages` with `body` (a message or a sender action).
    pub fn send(&self, token: &str, body: &Value) -> Result<Value, Failure> {
        self.call("POST", "me/messages", token, Some(body))
    }

    /// `POST /me/messenger_profile`.
    pub fn set_profile(&self, token: &str, body: &Value) -> Result<Value, Failure> {
        self.call("POST", "me/messenger_profile", token, Some(body))
    }

    /// `DELETE /me/messenger_profile` with `{"fields": [...]}`.
    pub fn delete_profile(&self, token: &str, fields: &[&str]) -> Result<Value, Failure> {
        self.call(
            "DELETE",
            "me/messenger_profile",
            token,
            Some(&serde_json::json!({"fields": fields})),
        )
    }

    fn call(
        &self,
        method: &str,
        endpoint: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let url = format!(
            "{}/{}/{endpoint}?access_token={}",
            self.base,
            self.version,
            encode(token)
        );
        let request = self.agent.request(method, &url);
        let result = match body {
            Some(b) => request.send_json(b),
            None => request.call(),
        };
        let what = format!("{method} /{endpoint}");
        match result {
            Ok(response) => Ok(response.into_json::<Value>().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(status, response)) => {
                let retry_after = response.header("Retry-After").map(str::to_string);
                let text = response.into_string().unwrap_or_default();
                Err(redact(
                    classify(&what, status, retry_after.as_deref(), &text),
                    token,
                ))
            }
            Err(ureq::Error::Transport(t)) => {
                // Not `t.to_string()`: that names the URL, and the URL carries the token.
                let why = format!(
                    "{what}: {} ({})",
                    t.kind(),
                    t.message().unwrap_or("no detail")
                );
                Err(redact(Failure::Retry { after: None, why }, token))
            }
        }
    }
}

/// Sorts an HTTP error answer of the Graph API.
pub fn classify(what: &str, status: u16, retry_after: Option<&str>, body: &str) -> Failure {
    let error = serde_json::from_str::<Value>(body)
        .ok()
        .map(|v| v["error"].clone())
        .unwrap_or(Value::Null);
    let code = error["code"].as_i64();
    let detail = match error["message"].as_str() {
        Some(m) => format!(
            "{m} (code {}{})",
            code.unwrap_or(0),
            error["error_subcode"]
                .as_i64()
                .map(|s| format!(", subcode {s}"))
                .unwrap_or_default()
        ),
        None => body.chars().take(200).collect(),
    };
    let why = format!("{what}: HTTP {status}: {detail}");
    let after = retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)));
    let throttled = code.is_some_and(|c| THROTTLE_CODES.contains(&c));
    if status == 429 || status >= 500 || throttled {
        // Throttling lasts; do not hammer the page's budget.
        let after = after.or(if throttled || status == 429 {
            Some(Duration::from_secs(5))
        } else {
            None
        });
        Failure::Retry { after, why }
    } else {
        Failure::GiveUp(why)
    }
}

fn redact(failure: Failure, token: &str) -> Failure {
    let clean = |s: String| {
        if token.is_empty() {
            s
        } else {
            s.replace(token, "<token>")
                .replace(&encode(token), "<token>")
        }
    };
    match failure {
        Failure::Retry { after, why } => Failure::Retry {
            after,
            why: clean(why),
        },
        Failure::GiveUp(why) => Failure::GiveUp(clean(why)),
    }
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_failures() {
        let graph_error = |code: i64| {
            format!(r#"{{"error":{{"message":"m","type":"OAuthException","code":{code}}}}}"#)
        };
        assert!(matches!(
            classify("x", 500, None, ""),
            Failure::Retry { after: None, .. }
        ));
        assert_eq!(
            classify("x", 429, Some("7"), ""),
            Failure::Retry {
                after: Some(Duration::from_secs(7)),
                why: "x: HTTP 429: ".into()
            }
        );
        for code in [4, 17, 32, 613] {
            assert!(
                matches!(
                    classify("x", 400, None, &graph_error(code)),
                    Failure::Retry { after: Some(_), .. }
                ),
                "{code}"
            );
        }
        let f = classify("POST /me/messages", 400, None, &graph_error(100));
        assert_eq!(
            f,
            Failure::GiveUp("POST /me/messages: HTTP 400: m (code 100)".into())
        );
        assert!(matches!(
            classify("x", 403, None, "nope"),
            Failure::GiveUp(_)
        ));
    }

    #[test]
    fn never_shows_the_token() {
        let f = redact(
            Failure::GiveUp("bad token EAAb/c+d in EAAb%2Fc%2Bd".into()),
            "EAAb/c+d",
        );
        assert_eq!(f.why(), "bad token <token> in <token>");
    }
}
