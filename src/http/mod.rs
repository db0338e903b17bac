//! HTTP: botd's own HTTP/1.1 server (heads parsed by `httparse`, every size and time limited,
//! a fixed pool of worker threads for handlers), routing, and the JSON error envelope of §3.1.
//! Handlers live with their channel; this module only carries requests to them and answers
//! back.

mod body;
mod connection;
mod head;
pub mod jwt;
mod limits;
mod router;
mod server;

pub use head::{Head, Method};
pub use limits::Limits;
pub use router::{AppState, Route, RouteSlot};
pub use server::{serve, Admission, Handler, Request, Running};

use serde_json::{json, Value};

/// A complete answer to a request.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Body,
    pub headers: Vec<(String, String)>,
}

/// What an answer carries: bytes, or a file streamed from disk with its length.
#[derive(Debug)]
pub enum Body {
    Bytes(Vec<u8>),
    File { file: std::fs::File, len: u64 },
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json; charset=utf-8".into(),
            body: Body::Bytes(serde_json::to_vec(value).unwrap_or_default()),
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
            body: Body::Bytes(body),
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
            422 => "BP_0422",
            429 => "BP_0429",
            500 => "BP_0050",
            503 => "BP_0503",
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
