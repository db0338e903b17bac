//! The bots' JavaScript (custom actions, §8.4 of Botpress), run in QuickJS through rquickjs.
//!
//! Every call gets a fresh runtime and context (a fraction of a millisecond), so nothing a
//! script leaves behind reaches another conversation, and limits are per call: a deadline
//! enforced by QuickJS's interrupt handler, a heap cap and a stack cap. The context has no
//! file system, process or sockets: only the SDK of `prelude.js`, whose work that needs the
//! turn (KV, rendering, replies, HTTP) is queued by the script and performed here, between
//! runs of the job queue, with the turn borrowed mutably — the JS side never holds a Rust
//! reference, which is what lets closures registered in QuickJS stay `'static`.

mod bytecode;
pub mod hooks;
mod host;
mod modules;

use super::dialog::Turn;
use rquickjs::context::EvalOptions;
use rquickjs::module::WriteOptions;
use rquickjs::{Context, Ctx, Function, Module, Runtime};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use super::Problem;
pub use hooks::{run_hook, run_hook_with, skips_dialog, HookArgs, Hooks};
pub use modules::{missing_packages, Roots, NODE_BUILTINS};

/// How much one script call may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub deadline: Duration,
    pub memory_bytes: usize,
    pub stack_bytes: usize,
}

impl Limits {
    /// Botpress's action timeout (5 s, which Botpress itself does not enforce).
    pub const ACTION: Limits = Limits {
        deadline: Duration::from_secs(5),
        memory_bytes: 32 << 20,
        // Well under the 2 MiB of a worker thread's stack, leaving room for botd's own frames.
        stack_bytes: 512 << 10,
    };
    /// Botpress's hook timeout (1 s).
    pub const HOOK: Limits = Limits {
        deadline: Duration::from_secs(1),
        ..Limits::ACTION
    };
}

/// What an action sees besides the SDK globals (`bp`, `printObject`, `process`, `console`):
/// globals rather than parameters, as in Botpress's VM, so a script may declare its own
/// `const axios = require('axios')` or `let user`.
const ACTION_GLOBALS: &str = "globalThis.event = __event; globalThis.user = __state.user; globalThis.temp = __state.temp; globalThis.session = __state.session; globalThis.args = __args;";

/// Where a bot's action `name` is: the bot's `actions/`, then `data/global/actions/`.
pub fn find_action(bot_dir: &Path, name: &str) -> Option<PathBuf> {
    if name
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return None;
    }
    let file = format!("{name}.js");
    let own = bot_dir.join("actions").join(&file);
    if own.is_file() {
        return Some(own);
    }
    let global = data_dir(bot_dir).join("global").join("actions").join(&file);
    global.is_file().then_some(global)
}

/// `data/` from `data/bots/<id>`.
pub fn data_dir(bot_dir: &Path) -> PathBuf {
    bot_dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `botd check` for the scripts below `dir` (its `actions/` and `hooks/`): each file compiled,
/// syntax errors with file and line, and the packages it requires that cannot be loaded.
pub fn check_scripts(dir: &Path, shown_root: &str, roots: &Roots) -> Vec<Problem> {
    let mut files = Vec::new();
    for sub in ["actions", "hooks"] {
        script_files(&dir.join(sub), &mut files);
    }
    files.sort();
    let mut problems = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(dir)
            .unwrap_or(&file)
            .display()
            .to_string();
        let shown = format!("{shown_root}/{rel}");
        let source = match std::fs::read_to_string(&file) {
            Ok(s) => s,
            Err(e) => {
                problems.push(Problem::new(&shown, e.to_string()));
                continue;
            }
        };
        if let Err(e) = check_syntax(&source, &shown) {
            // `path:line: SyntaxError: …` becomes the problem's path and message.
            let (at, message) = e
                .strip_prefix(&shown)
                .and_then(|rest| {
                    let line: String = rest
                        .strip_prefix(':')?
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    let message = rest[1 + line.len()..].trim_start_matches(": ");
                    Some((format!("{shown}:{line}"), message.to_string()))
                })
                .unwrap_or_else(|| (shown.clone(), e.clone()));
            problems.push(Problem::new(
                at,
                format!("{message}; this script will fail when it runs"),
            ));
        }
        for (_, why) in missing_packages(roots, &source) {
            problems.push(Problem::new(&shown, why));
        }
    }
    problems
}

/// Every `.js` file below `dir`, leaving out `node_modules`.
fn script_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "node_modules") {
                script_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "js") {
            out.push(p);
        }
    }
}

/// The path shown in messages: relative to the data folder.
fn shown_path(bot_dir: &Path, file: &Path) -> String {
    let data = data_dir(bot_dir);
    file.strip_prefix(&data)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// The wrapper that makes a file's top-level `return` and `await` legal, as Botpress's VM
/// does: the file's first line stays line 1, so error positions are the file's own.
fn wrap(source: &str) -> String {
    format!("(async function () {{{source}\n}})")
}

/// Compiles `source` without running it; the error names the line.
pub fn check_syntax(source: &str, shown: &str) -> Result<(), String> {
    let rt = Runtime::new().map_err(|e| e.to_string())?;
    let ctx = Context::full(&rt).map_err(|e| e.to_string())?;
    ctx.with(|ctx| {
        let result: rquickjs::Result<rquickjs::Value> =
            ctx.eval_with_options(wrap(source), options(shown));
        result.map(|_| ()).map_err(|e| describe(&ctx, e, shown))
    })
}

fn options(filename: &str) -> EvalOptions {
    let mut o = EvalOptions::default();
    o.strict = false;
    o.filename = Some(filename.to_string());
    o
}

/// A JS failure as `file:line: message`.
fn describe(ctx: &Ctx, error: rquickjs::Error, shown: &str) -> String {
    if !matches!(error, rquickjs::Error::Exception) {
        return format!("{shown}: {error}");
    }
    let caught = ctx.catch();
    let (message, stack) = match caught.as_exception() {
        Some(e) => (
            e.message().unwrap_or_default(),
            e.stack().unwrap_or_default(),
        ),
        None => (
            caught
                .as_string()
                .and_then(|s| s.to_string().ok())
                .unwrap_or_else(|| format!("{caught:?}")),
            String::new(),
        ),
    };
    let name = caught
        .as_object()
        .and_then(|o| o.get::<_, String>("name").ok())
        .unwrap_or_else(|| "Error".into());
    format!("{}: {name}: {message}", position(&stack, shown))
}

/// `file:line` of the first stack frame in `shown` (QuickJS writes `at f (file:line:col)`).
fn position(stack: &str, shown: &str) -> String {
    stack
        .lines()
        .find_map(|l| {
            let at = l.find(shown)?;
            let rest = &l[at + shown.len()..];
            let line: String = rest
                .strip_prefix(':')?
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            (!line.is_empty()).then(|| format!("{shown}:{line}"))
        })
        .unwrap_or_else(|| shown.to_string())
}

/// Botpress's transition code (TransitionStrategy.runCode): the condition as a return
/// statement, a TypeError (a property of undefined) reading as false.
fn condition_code(source: &str) -> String {
    format!(
        "(function () {{ try {{ return {source}; }} catch (err) {{ if (err instanceof TypeError) return false; throw err }} }})"
    )
}

/// Whether a condition the native evaluator refuses compiles as JavaScript.
pub fn check_condition(source: &str) -> Result<(), String> {
    let rt = Runtime::new().map_err(|e| e.to_string())?;
    let ctx = Context::full(&rt).map_err(|e| e.to_string())?;
    ctx.with(|ctx| {
        let result: rquickjs::Result<rquickjs::Value> =
            ctx.eval_with_options(condition_code(source), options("condition"));
        result.map(|_| ()).map_err(|e| {
            let full = describe(&ctx, e, "condition");
            full.strip_prefix("condition: ")
                .map(str::to_string)
                .unwrap_or(full)
        })
    })
}

/// Evaluates a transition condition as the JavaScript it is, against `scope`
/// (`{event, user, temp, session, bot}`), for the conditions the native evaluator refuses.
pub fn eval_condition(source: &str, scope: &Value, limits: Limits) -> Result<bool, String> {
    let deadline = Instant::now() + limits.deadline;
    let rt = Runtime::new().map_err(|e| e.to_string())?;
    rt.set_memory_limit(limits.memory_bytes);
    rt.set_max_stack_size(limits.stack_bytes);
    rt.set_interrupt_handler(Some(Box::new(move || Instant::now() >= deadline)));
    let ctx = Context::full(&rt).map_err(|e| e.to_string())?;
    ctx.with(|ctx| {
        let run = || -> rquickjs::Result<bool> {
            ctx.globals().set("__input", scope.to_string())?;
            let _: rquickjs::Value = ctx.eval(
                "(function () { const s = JSON.parse(globalThis.__input); delete globalThis.__input; \
                 for (const k of ['event', 'user', 'temp', 'session', 'bot']) globalThis[k] = s[k]; \
                 if (globalThis.temp === undefined || globalThis.temp === null) globalThis.temp = {}; \
                 if (globalThis.event && typeof globalThis.event === 'object' && globalThis.event.state === undefined) \
                 globalThis.event.state = { user: globalThis.user, temp: globalThis.temp, session: globalThis.session, bot: globalThis.bot }; })()",
            )?;
            let f: Function = ctx.eval_with_options(condition_code(source), options("condition"))?;
            let v: rquickjs::Value = f.call(())?;
            // JavaScript's truthiness, asked of the engine itself.
            let not: Function = ctx.eval("(v => !v)")?;
            let falsy: bool = not.call((v,))?;
            Ok(!falsy)
        };
        run().map_err(|e| {
            if Instant::now() >= deadline {
                format!(
                    "stopped: ran past its deadline of {} ms",
                    limits.deadline.as_millis()
                )
            } else {
                let full = describe(&ctx, e, "condition");
                full.strip_prefix("condition: ")
                    .map(str::to_string)
                    .unwrap_or(full)
            }
        })
    })
}

/// What the prelude reports when the script's promise settles.
#[derive(Deserialize, Default)]
struct Outcome {
    #[serde(default)]
    done: bool,
    #[serde(default)]
    error: Option<ScriptError>,
}

#[derive(Deserialize)]
struct ScriptError {
    #[serde(default)]
    name: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    stack: String,
}

/// What a script leaves in the scope once it finished.
#[derive(Deserialize)]
struct State {
    user: Value,
    temp: Value,
    session: Value,
}

/// Runs the custom action at `file` with `args` (already templated) on `turn`; `user`,
/// `temp` and `session` changes are kept, replies and KV writes join the turn's.
pub fn run_action(
    turn: &mut Turn,
    file: &Path,
    args: &Map<String, Value>,
    limits: Limits,
) -> Result<(), String> {
    let shown = shown_path(&turn.bot.dir, file);
    let mut deadline = Instant::now() + limits.deadline;
    if let Some(turn_deadline) = turn.deadline {
        deadline = deadline.min(turn_deadline);
    }
    let input = json!({
        "event": turn.scope["event"],
        "user": turn.scope["user"],
        "temp": turn.scope["temp"],
        "session": turn.scope["session"],
        "context": turn.context,
        "args": args,
        "env": exposed_env(),
    });
    let script = Script {
        shown: &shown,
        file,
        globals: ACTION_GLOBALS,
    };
    let state: State = run(turn, &script, &input, deadline, limits)?;
    turn.scope["user"] = state.user;
    turn.scope["temp"] = state.temp;
    turn.scope["session"] = state.session;
    Ok(())
}

/// The SDK prelude compiled once per process: loading its bytecode costs a fifth of parsing
/// its source (x86-64: 0.39 ms for a fresh context with the SDK instead of 1.3 ms).
static PRELUDE: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();

/// Evaluates `prelude.js` in `ctx`, from the bytecode compiled on first use.
fn load_prelude<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<()> {
    let bytes = PRELUDE.get_or_init(|| {
        let rt = Runtime::new().map_err(|e| e.to_string())?;
        let compiler = Context::full(&rt).map_err(|e| e.to_string())?;
        compiler.with(|c| {
            Module::declare(c.clone(), "botd:prelude", include_str!("prelude.js"))
                .and_then(|m| m.write(WriteOptions::default()))
                .map_err(|e| format!("the SDK prelude does not compile: {e}"))
        })
    });
    let bytes = match bytes {
        Ok(b) => b.as_slice(),
        Err(e) => return Err(rquickjs::Exception::throw_message(ctx, e)),
    };
    // SAFETY: the bytes are what this process's own QuickJS wrote from our own source just
    // above (JS_WriteObject), so they are valid bytecode for this engine; they live in a
    // static, as the ROM-data reading of `Module::load` requires them to outlive the runtime.
    let module = unsafe { Module::load(ctx.clone(), bytes) }?;
    let (_module, _settled) = module.eval()?;
    Ok(())
}

/// One file to run: how it is wrapped and called.
struct Script<'s> {
    shown: &'s str,
    file: &'s Path,
    /// Statements setting the globals the script sees.
    globals: &'s str,
}

impl Script<'_> {
    /// Where its relative `require`s start.
    fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }
}

/// Action and hook files compiled to bytecode, by path, with the modification time and size
/// they were compiled from: a file is parsed once per edit, not once per call.
static COMPILED: Mutex<Option<HashMap<PathBuf, Compiled>>> = Mutex::new(None);

struct Compiled {
    stamp: (SystemTime, u64),
    bytecode: Arc<Vec<u8>>,
}

/// The wrapped function of `script`, from its cached bytecode when the file has not changed
/// since it was compiled, else compiled (and cached) now.
fn compiled<'js>(ctx: &Ctx<'js>, script: &Script) -> Result<Function<'js>, String> {
    let shown = script.shown;
    let meta = std::fs::metadata(script.file).map_err(|e| format!("{shown}: {e}"))?;
    let stamp = (
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        meta.len(),
    );
    let cached = COMPILED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|m| m.get(script.file))
        .filter(|c| c.stamp == stamp)
        .map(|c| c.bytecode.clone());
    if let Some(bytecode) = cached {
        return bytecode::load(ctx, &bytecode).map_err(|e| describe(ctx, e, shown));
    }
    let source = std::fs::read_to_string(script.file).map_err(|e| format!("{shown}: {e}"))?;
    let bytes =
        bytecode::compile(ctx, &wrap(&source), shown).map_err(|e| describe(ctx, e, shown))?;
    let function = bytecode::load(ctx, &bytes).map_err(|e| describe(ctx, e, shown))?;
    COMPILED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(
            script.file.to_path_buf(),
            Compiled {
                stamp,
                bytecode: Arc::new(bytes),
            },
        );
    Ok(function)
}

/// `process.env` as Botpress exposes it to scripts: only the `EXPOSED_*` variables.
fn exposed_env() -> Map<String, Value> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("EXPOSED_"))
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

/// Runs `script` in a fresh context until its promise settles, performing its requests on
/// `turn`; returns `__state` (the scope it changed) read as `T`.
fn run<T: for<'de> Deserialize<'de>>(
    turn: &mut Turn,
    script: &Script,
    input: &Value,
    deadline: Instant,
    limits: Limits,
) -> Result<T, String> {
    let shown = script.shown;
    let fail = |what: String| format!("{shown}: {what}");
    let rt = Runtime::new().map_err(|e| fail(e.to_string()))?;
    rt.set_memory_limit(limits.memory_bytes);
    rt.set_max_stack_size(limits.stack_bytes);
    rt.set_interrupt_handler(Some(Box::new(move || Instant::now() >= deadline)));
    let ctx = Context::full(&rt).map_err(|e| fail(e.to_string()))?;
    let host = Rc::new(RefCell::new(host::Host::new(
        turn.bot.id.clone(),
        shown.to_string(),
        modules::Roots::for_bot(&turn.bot.dir),
    )));
    let timed_out = || Instant::now() >= deadline;
    let deadline_message = || {
        fail(format!(
            "stopped: ran past its deadline of {} ms",
            limits.deadline.as_millis()
        ))
    };

    ctx.with(|ctx| -> Result<(), String> {
        host::install(&ctx, &host).map_err(|e| describe(&ctx, e, shown))?;
        ctx.globals()
            .set("__input", input.to_string())
            .map_err(|e| describe(&ctx, e, shown))?;
        load_prelude(&ctx).map_err(|e| describe(&ctx, e, "botd:prelude"))?;
        let function = compiled(&ctx, script)?;
        ctx.globals()
            .set("__fn", function)
            .map_err(|e| describe(&ctx, e, shown))?;
        let dir = script.dir().display().to_string();
        let start = format!(
            "globalThis.require = __makeRequire({dir}); {globals} Promise.resolve().then(() => __fn()).then(() => {{ __outcome.done = true; }}, e => {{ __outcome.done = true; __outcome.error = {{ name: String(e && e.name || 'Error'), message: String(e && e.message !== undefined ? e.message : e), stack: String(e && e.stack || '') }}; }});",
            dir = Value::String(dir),
            globals = script.globals,
        );
        let started: rquickjs::Result<rquickjs::Value> =
            ctx.eval_with_options(start, options("botd:start"));
        started.map_err(|e| describe(&ctx, e, shown))?;
        Ok(())
    })
    .map_err(|e| {
        if timed_out() {
            deadline_message()
        } else {
            e
        }
    })?;

    loop {
        loop {
            match rt.execute_pending_job() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(_) => {
                    // A job that throws outside the script's promise chain: only the
                    // interrupt (which nothing can catch) or memory does that.
                    if timed_out() {
                        return Err(deadline_message());
                    }
                    return Err(fail("stopped: out of memory or an uncaught error".into()));
                }
            }
        }
        let requests = host.borrow_mut().take_requests();
        if requests.is_empty() {
            // Nothing left but timers: wait for the first one due, unless that is past the
            // deadline (the script would be stopped there anyway).
            let Some((id, due)) = host.borrow_mut().next_timer() else {
                break;
            };
            if due >= deadline {
                return Err(deadline_message());
            }
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            ctx.with(|ctx| -> rquickjs::Result<()> {
                let settle: Function = ctx.globals().get("__settle")?;
                settle.call::<_, ()>((id, true, "null"))
            })
            .map_err(|e| fail(format!("firing a timer: {e}")))?;
            continue;
        }
        for (id, request) in requests {
            if timed_out() {
                return Err(deadline_message());
            }
            let (ok, answer) = match host::perform(turn, &request, deadline) {
                Ok(v) => (true, v),
                Err(m) => (false, Value::String(m)),
            };
            ctx.with(|ctx| -> rquickjs::Result<()> {
                let settle: Function = ctx.globals().get("__settle")?;
                settle.call::<_, ()>((id, ok, answer.to_string()))
            })
            .map_err(|e| fail(format!("settling a request: {e}")))?;
        }
    }

    let (outcome, state) = ctx
        .with(|ctx| -> rquickjs::Result<(String, String)> {
            let outcome: String = ctx.eval("JSON.stringify(__outcome)")?;
            let state: String = ctx.eval(
                "JSON.stringify({user: __state.user, temp: __state.temp, session: __state.session, event: __event})",
            )?;
            Ok((outcome, state))
        })
        .map_err(|e| {
            if timed_out() {
                deadline_message()
            } else {
                fail(format!("reading its result: {e}"))
            }
        })?;
    let outcome: Outcome = serde_json::from_str(&outcome).unwrap_or_default();
    if let Some(e) = outcome.error {
        if e.message == "interrupted" || timed_out() {
            return Err(deadline_message());
        }
        let at = position(&e.stack, shown);
        let message = if e.name == "InternalError" && e.message.contains("out of memory") {
            format!(
                "stopped: out of memory (the limit is {} MB)",
                limits.memory_bytes >> 20
            )
        } else if e.message.contains("stack overflow")
            || e.message.contains("Maximum call stack size exceeded")
        {
            "stopped: stack overflow (too deep a recursion)".to_string()
        } else {
            format!("{}: {}", e.name, e.message)
        };
        return Err(format!("{at}: {message}"));
    }
    if !outcome.done {
        return Err(fail(
            "never finished: it awaits a promise nothing will settle".into(),
        ));
    }
    serde_json::from_str(&state).map_err(|e| fail(format!("its state is not JSON: {e}")))
}

#[cfg(test)]
mod tests;
