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
pub mod proactive;
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

use std::fmt;

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
