//! Botpress hooks: `data/global/hooks/<hook>/*.js` (and Botpress 12's per-bot
//! `bots/<id>/hooks/<hook>/*.js`), listed once at bot load and run in file-name order at their
//! point of the turn with `event` and `bp` in scope. As in Botpress, a hook that throws or runs
//! past its deadline is logged and the turn carries on.

use super::{run, Limits, Script};
use crate::engine::dialog::Turn;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The hooks botd calls, at the same points of the pipeline as Botpress.
pub const HOOKS: [&str; 9] = [
    "after_bot_mount",
    "after_bot_unmount",
    "before_incoming_middleware",
    "after_incoming_middleware",
    "before_suggestions_election",
    "before_outgoing_middleware",
    "after_event_processed",
    "before_session_timeout",
    "before_conversation_end",
];

/// What a hook has in scope besides `bp`, as Botpress's hook classes give it.
#[derive(Debug, Clone, Copy)]
pub enum HookArgs<'a> {
    /// `event` (and `botId`): the middleware hooks, `before_session_timeout`,
    /// `before_conversation_end`.
    Event,
    /// `event`, `sessionId` and `suggestions` (which is `event.suggestions`).
    Suggestions { session_id: &'a str },
    /// `botId` only, outside any conversation: `after_bot_mount`, `after_bot_unmount`.
    Bot,
}

impl HookArgs<'_> {
    fn globals(self) -> &'static str {
        match self {
            HookArgs::Event => "globalThis.event = __event; globalThis.botId = __event.botId;",
            HookArgs::Suggestions { .. } => {
                "globalThis.event = __event; globalThis.botId = __event.botId; \
                 globalThis.sessionId = __extra.sessionId; \
                 if (!Array.isArray(__event.suggestions)) __event.suggestions = []; \
                 globalThis.suggestions = __event.suggestions;"
            }
            HookArgs::Bot => "globalThis.botId = __event.botId;",
        }
    }
}

/// The flag that makes the dialog engine skip an event (`bp.IO.WellKnownFlags`).
pub const SKIP_DIALOG_ENGINE: &str = "skip-dialog-engine";

/// The hook files of a bot, by hook name, in the order they run.
#[derive(Debug, Default, Clone)]
pub struct Hooks {
    files: HashMap<String, Vec<PathBuf>>,
}

impl Hooks {
    /// Lists the global hooks, then the bot's own (each folder in file-name order).
    pub fn load(bot_dir: &Path) -> Hooks {
        let mut files = HashMap::new();
        for hook in HOOKS {
            let mut list = Vec::new();
            for dir in [
                super::data_dir(bot_dir).join("global/hooks").join(hook),
                bot_dir.join("hooks").join(hook),
            ] {
                let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.extension().is_some_and(|x| x == "js")
                            && p.file_name()
                                .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
                            && p.is_file()
                    })
                    .collect();
                found.sort();
                list.extend(found);
            }
            if !list.is_empty() {
                files.insert(hook.to_string(), list);
            }
        }
        Hooks { files }
    }

    /// Every hook file, for `botd check`.
    pub fn all(&self) -> impl Iterator<Item = &PathBuf> {
        self.files.values().flatten()
    }

    pub fn has(&self, hook: &str) -> bool {
        self.files.contains_key(hook)
    }
}

/// What a hook leaves behind.
#[derive(Deserialize)]
struct HookState {
    user: Value,
    temp: Value,
    session: Value,
    event: Value,
}

/// Runs every file of `hook` on `event` (changed in place, `state` left out); `user`,
/// `temp` and `session` changes go to the turn's scope.
pub fn run_hook(turn: &mut Turn, hook: &str, event: &mut Value) {
    run_hook_with(turn, hook, event, HookArgs::Event);
}

/// [`run_hook`] with the scope of `args`.
pub fn run_hook_with(turn: &mut Turn, hook: &str, event: &mut Value, args: HookArgs) {
    let Some(files) = turn.bot.hooks.files.get(hook).cloned() else {
        return;
    };
    let limits: Limits = turn.bot.hook_limits;
    for file in files {
        let shown = super::shown_path(&turn.bot.dir, &file);
        let mut deadline = Instant::now() + limits.deadline;
        if let Some(turn_deadline) = turn.deadline {
            deadline = deadline.min(turn_deadline);
        }
        let mut input = json!({
            "event": event,
            "user": turn.scope["user"],
            "temp": turn.scope["temp"],
            "session": turn.scope["session"],
            "context": turn.context,
            "env": super::exposed_env(),
        });
        match args {
            HookArgs::Suggestions { session_id } => {
                input["extra"] = json!({ "sessionId": session_id });
            }
            HookArgs::Bot => input["outside"] = Value::String(hook.to_string()),
            HookArgs::Event => {}
        }
        let script = Script {
            shown: &shown,
            file: &file,
            globals: args.globals(),
        };
        match run::<HookState>(turn, &script, &input, deadline, limits) {
            Ok(mut state) => {
                if let Some(e) = state.event.as_object_mut() {
                    e.remove("state");
                }
                *event = state.event;
                turn.scope["user"] = state.user;
                turn.scope["temp"] = state.temp;
                turn.scope["session"] = state.session;
            }
            Err(e) => log::warn!("bot \"{}\": hook {hook}: {e}", turn.bot.id),
        }
    }
}

/// Whether a hook asked the dialog engine to skip the event.
pub fn skips_dialog(event: &Value) -> bool {
    event["flags"][SKIP_DIALOG_ENGINE]
        .as_bool()
        .unwrap_or(false)
}
