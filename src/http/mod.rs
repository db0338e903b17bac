//! HTTP: the tiny_http server with its fixed pool of worker threads, routing, body limits and
//! the JSON error envelope of §3.1. Handlers live with their channel; this module only
//! carries requests to them and answers back.

pub mod jwt;
mod router;
mod server;

pub use router::{AppState, Route};
pub use server::{serve, Running};

use serde_json::{json, Value};
use std::io::Read;

/// A complete answer to a request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json; charset=utf-8".into(),
            body: serde_json::to_vec(value).unwrap_or_default(),
            headers: Vec::new(),
        }
    }

    /// Plain text sent as Express does (`text/html; charset=utf-8`), for Botpress-compatible
    /// validation messages.
    pub fn express_text(status: u16, text: &str) -> Reply {
        Reply::bytes(status, "text/html; charset=utf-8", text.as_bytes().to_vec())
    }

    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type: content_type.into(),
            body,
            headers: Vec::new(),
        }
    }

    /// The error envelope of §3.1.
    pub fn error(status: u16, kind: &str, message: &str) -> Reply {
        let code = match status {
            400 => "BP_0040",
            401 => "BP_0041",
            402 => "BP_0042",
            403 => "BP_0043",
            404 => "BP_0044",
            409 => "BP_0049",
            413 => "BP_0413",
            500 => "BP_0050",
            504 => "BP_0504",
            _ => "BP_000",
        };
        Reply::json(
            status,
            &json!({"statusCode": status, "errorCode": code, "type": kind, "message": message, "docs": "https://botpress.io/docs"}),
        )
    }

    pub fn not_found(what: &str) -> Reply {
        Reply::error(404, "NotFoundError", &format!("Not Found: {what}"))
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// An error of Express's body-parser as Botpress's final handler answers it (§3.1): the
/// error has a `statusCode` and a `type` but no `errorCode`, so the code is `BP_000` and the
/// message "Unexpected error".
pub fn body_parser_error(status: u16, kind: &str) -> Reply {
    Reply::json(
        status,
        &json!({"statusCode": status, "errorCode": "BP_000", "type": kind, "message": "Unexpected error", "docs": "https://botpress.io/docs"}),
    )
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    TooLarge,
    Io(std::io::Error),
}

impl BodyError {
    pub fn reply(&self, limit: u64) -> Reply {
        match self {
            BodyError::TooLarge => {
                log::debug!("request body over the limit of {limit} bytes");
                body_parser_error(413, "entity.too.large")
            }
            BodyError::Io(e) => Reply::error(
                400,
                "BadRequestError",
                &format!("Bad Request: could not read the body: {e}"),
            ),
        }
    }
}

/// Reads a request body of at most `limit` bytes. A declared length over the limit is refused
/// before anything is read; a chunked body is cut off one byte past it.
pub fn read_body(request: &mut tiny_http::Request, limit: u64) -> Result<Vec<u8>, BodyError> {
    if request.body_length().is_some_and(|n| n as u64 > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(BodyError::Io)?;
    if body.len() as u64 > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(body)
}

/// Decodes `%XX` escapes of a path segment or query value (`+` is a space in queries only).
/// `None` when the decoded bytes are not UTF-8, so two different raw ids can never decode to
/// the same text.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len()
                && text.is_char_boundary(i + 1)
                && text.is_char_boundary(i + 3) =>
            {
                match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The query string of a URL as decoded (name, value) pairs.
pub fn query_pairs(url: &str) -> Vec<(String, String)> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let decode = |t: &str| percent_decode(t, true).unwrap_or_else(|| t.to_string());
            (decode(k), decode(v))
        })
        .collect()
}

/// The value of a request header, by case-insensitive name.
pub fn header(request: &tiny_http::Request, name: &str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        let cases = [
            ("a%2Fb", false, Some("a/b")),
            ("..%2F..%2Fetc", false, Some("../../etc")),
            ("%F0%9F%98%80", false, Some("😀")),
            ("100%", false, Some("100%")),
            ("%zz", false, Some("%zz")),
            ("a+b", true, Some("a b")),
            ("a+b", false, Some("a+b")),
            // Invalid UTF-8 is refused, never replaced (%FF%FE and %FE%FF must not collide).
            ("%FF%FE", false, None),
            ("%C0%C1", false, None),
        ];
        for (text, plus, expected) in cases {
            assert_eq!(percent_decode(text, plus).as_deref(), expected, "{text}");
        }
        let q = query_pairs("/x?hub.mode=subscribe&hub.challenge=12%2034&empty");
        assert_eq!(
            q,
            vec![
                ("hub.mode".into(), "subscribe".into()),
                ("hub.challenge".into(), "12 34".into()),
                ("empty".into(), "".into())
            ]
        );
    }
}
