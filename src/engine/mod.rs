//! The Botpress v11 runtime as plain synchronous code: bot loading, NLU, decision, dialog,
//! content rendering, templating and conditions. Nothing in here knows about HTTP.

pub mod actions;
pub mod bot;
pub mod content;
pub mod decision;
pub mod dialog;
pub mod event;
pub mod expr;
pub mod flow;
pub mod janitor;
pub mod js;
pub mod js_builtins;
pub mod locks;
pub mod nlu;
pub mod qna;
pub mod random;
pub mod runtime;
pub mod skills;
#[cfg(test)]
mod standard_actions_tests;
pub mod state;
pub mod template;

pub use event::Event;
pub use runtime::{Destination, Engine, TurnError, TurnOutput};

use serde_json::{json, Value};
use std::fmt;
use std::time::Duration;

/// The type of the payload that stands for a pause between a turn's replies: what
/// `builtin/wait` leaves on a channel that sends replies as they come (Messenger, Telegram,
/// timeouts). The channel's delivery waits that long before the next reply, holding up only
/// that conversation; the payload itself is never sent.
const PAUSE_TYPE: &str = "__botd_pause";

/// The pause payload for `delay`.
pub fn pause_payload(delay: Duration) -> Value {
    json!({"type": PAUSE_TYPE, "ms": delay.as_millis() as u64})
}

/// The pause a payload stands for, if it is one.
pub fn pause_of(payload: &Value) -> Option<Duration> {
    (payload["type"] == PAUSE_TYPE)
        .then(|| Duration::from_millis(payload["ms"].as_u64().unwrap_or(0)))
}

/// One thing wrong with a bot's files, reported by `botd check` and at load time as
/// `path: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or file and position) the problem is in.
    pub path: String,
    /// What is wrong, in words a bot author understands.
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
