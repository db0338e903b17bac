//! The welcome-bot conversation, as the bench plays and checks it: "hi" → the name question,
//! then a name → a greeting with that name and the first-time message.

use crate::load::{Answer, Client, Recorder};
use serde_json::Value;

pub const BOT: &str = "welcome-bot";
pub const ASK_NAME: &str = "May I know your name please?";
pub const FIRST_TIME: &str = "This is the first time we speak 🤖";
pub const HI_BODY: &[u8] = br#"{"type":"text","text":"hi"}"#;
const JSON: (&str, &str) = ("Content-Type", "application/json");

/// Whether `text` is one of the welcome node's greetings (it picks a variation at random).
pub fn is_greeting(text: &str, name: &str) -> bool {
    [
        format!("👋, {name}!"),
        format!("Hello, {name}!"),
        format!("Welcome to Botpress, {name}!"),
    ]
    .iter()
    .any(|g| g == text)
}

/// A user name unique to (`tag`, user `i`, conversation `n`); letters only, so NLU sees a name.
pub fn name_for(i: usize, n: u64) -> String {
    format!("Ann{i}x{n}")
}

/// The texts of a Converse answer.
pub fn texts(answer: &Answer) -> Result<Vec<String>, String> {
    if answer.status != 200 {
        return Err(format!(
            "status {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    let v: Value = serde_json::from_slice(&answer.body).map_err(|e| format!("not JSON: {e}"))?;
    Ok(v["responses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// What the bench talks to.
#[derive(Clone, Copy, PartialEq)]
pub enum Target {
    Botd,
    /// The ceiling server: same requests, and its one fixed answer is checked the same way.
    Ceiling,
}

/// Plays one whole conversation for a new user, timing both requests.
pub fn conversation(
    client: &mut Client,
    target: Target,
    user: &str,
    name: &str,
    rec: &mut Recorder,
) -> Result<(), String> {
    let path = format!("/api/v1/bots/{BOT}/converse/{user}");
    let first = rec.timed(|| client.post(&path, &[JSON], HI_BODY))?;
    let t = texts(&first)?;
    if t.iter().all(|x| x != ASK_NAME) {
        return Err(format!("{user}: \"hi\" answered {t:?}"));
    }
    let body = format!(r#"{{"type":"text","text":"{name}"}}"#);
    let second = rec.timed(|| client.post(&path, &[JSON], body.as_bytes()))?;
    let t = texts(&second)?;
    let ok = match target {
        Target::Botd => {
            t.first().is_some_and(|g| is_greeting(g, name)) && t.iter().any(|x| x == FIRST_TIME)
        }
        Target::Ceiling => t.iter().any(|x| x == ASK_NAME),
    };
    if !ok {
        return Err(format!("{user}: \"{name}\" answered {t:?}"));
    }
    Ok(())
}
