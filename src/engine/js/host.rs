//! The Rust side of the scripts' SDK: the synchronous calls (`log`, `resolve`) answered on
//! the spot, and the requests that need the turn (KV, rendering, replies, HTTP), queued by
//! the script and performed by [`perform`] between job runs.

use super::super::content;
use super::super::dialog::{self, Turn};
use super::modules::Roots;
use rquickjs::{Ctx, Function};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What a context's host functions share.
pub struct Host {
    bot: String,
    shown: String,
    roots: Roots,
    next_id: u64,
    requests: Vec<(u64, Request)>,
    /// `setTimeout`s not yet fired: id and when it is due.
    timers: Vec<(u64, Instant)>,
}

/// A request a script made through `__later`, settled once performed.
#[derive(Debug, Deserialize)]
#[serde(tag = "op")]
pub enum Request {
    #[serde(rename = "kvGet")]
    KvGet { key: String },
    #[serde(rename = "kvSet")]
    KvSet { key: String, value: Value },
    #[serde(rename = "kvDelete")]
    KvDelete { key: String },
    #[serde(rename = "render")]
    Render {
        #[serde(rename = "contentId")]
        content_id: String,
        #[serde(default)]
        args: Map<String, Value>,
        state: ScopeState,
    },
    #[serde(rename = "reply")]
    Reply { payloads: Vec<Value> },
    #[serde(rename = "http")]
    Http(HttpRequest),
    #[serde(rename = "jump")]
    Jump {
        flow: String,
        #[serde(default)]
        node: Option<String>,
    },
    #[serde(rename = "moduleConfig")]
    ModuleConfig {
        module: String,
        #[serde(rename = "forBot")]
        for_bot: bool,
    },
    #[serde(rename = "botpressConfig")]
    BotpressConfig,
}

/// The script's `user`, `temp` and `session` at the time of a request.
#[derive(Debug, Deserialize)]
pub struct ScopeState {
    user: Value,
    temp: Value,
    session: Value,
}

#[derive(Debug, Deserialize)]
pub struct HttpRequest {
    method: String,
    url: String,
    #[serde(default)]
    headers: Map<String, Value>,
    #[serde(default)]
    body: Option<String>,
    /// axios's `timeout` in ms; 0 is none (the call's deadline still holds).
    #[serde(default)]
    timeout: u64,
}

#[derive(Deserialize)]
struct LogLine {
    level: String,
    message: String,
}

#[derive(Deserialize)]
struct Timer {
    id: u64,
}

#[derive(Deserialize)]
struct Sleep {
    ms: u64,
}

#[derive(Deserialize)]
struct Resolve {
    dir: String,
    spec: String,
}

impl Host {
    pub fn new(bot: String, shown: String, roots: Roots) -> Host {
        Host {
            bot,
            shown,
            roots,
            next_id: 1,
            requests: Vec::new(),
            timers: Vec::new(),
        }
    }

    pub fn take_requests(&mut self) -> Vec<(u64, Request)> {
        std::mem::take(&mut self.requests)
    }

    /// Removes and returns the timer due first.
    pub fn next_timer(&mut self) -> Option<(u64, Instant)> {
        let at = (0..self.timers.len()).min_by_key(|&i| (self.timers[i].1, self.timers[i].0))?;
        Some(self.timers.remove(at))
    }

    /// A synchronous call: `{"value": …}` or `{"error": "…"}`.
    fn call(&mut self, op: &str, arg: &str) -> Value {
        let answer = match op {
            "log" => serde_json::from_str::<LogLine>(arg)
                .map_err(|e| e.to_string())
                .map(|l| {
                    let level = match l.level.as_str() {
                        "error" => log::Level::Error,
                        "warn" => log::Level::Warn,
                        "debug" => log::Level::Debug,
                        _ => log::Level::Info,
                    };
                    log::log!(level, "bot \"{}\": {}: {}", self.bot, self.shown, l.message);
                    Value::Null
                }),
            "resolve" => serde_json::from_str::<Resolve>(arg)
                .map_err(|e| e.to_string())
                .and_then(|r| self.roots.resolve(&r.dir, &r.spec)),
            "clearTimer" => serde_json::from_str::<Timer>(arg)
                .map_err(|e| e.to_string())
                .map(|t| {
                    self.timers.retain(|(id, _)| *id != t.id);
                    Value::Null
                }),
            other => Err(format!("unknown host call {other}")),
        };
        match answer {
            Ok(v) => json!({ "value": v }),
            Err(e) => json!({ "error": e }),
        }
    }

    /// Queues a request; its id comes back to the script, which waits for `__settle(id)`.
    fn later(&mut self, op: &str, arg: &str) -> Result<u64, String> {
        if op == "sleep" {
            let sleep: Sleep = serde_json::from_str(arg).map_err(|e| e.to_string())?;
            let id = self.next_id;
            self.next_id += 1;
            let due = Instant::now() + Duration::from_millis(sleep.ms);
            self.timers.push((id, due));
            return Ok(id);
        }
        let mut value: Value = serde_json::from_str(arg).map_err(|e| e.to_string())?;
        if !value.is_object() {
            value = json!({});
        }
        value["op"] = Value::String(op.to_string());
        let request: Request = serde_json::from_value(value).map_err(|e| format!("{op}: {e}"))?;
        let id = self.next_id;
        self.next_id += 1;
        self.requests.push((id, request));
        Ok(id)
    }
}

/// Registers `__host`, `__later` and `__compileModule` in the context's globals.
pub fn install<'js>(ctx: &Ctx<'js>, host: &Rc<RefCell<Host>>) -> rquickjs::Result<()> {
    let g = ctx.globals();
    let h = host.clone();
    g.set(
        "__host",
        Function::new(ctx.clone(), move |op: String, arg: String| {
            h.borrow_mut().call(&op, &arg).to_string()
        })?,
    )?;
    let h = host.clone();
    g.set(
        "__later",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, op: String, arg: String| -> rquickjs::Result<u64> {
                h.borrow_mut()
                    .later(&op, &arg)
                    .map_err(|e| rquickjs::Exception::throw_message(&ctx, &e))
            },
        )?,
    )?;
    g.set(
        "__compileModule",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, source: String, path: String| -> rquickjs::Result<Function<'js>> {
                ctx.eval_with_options(
                    format!("(function (exports, require, module, __filename, __dirname) {{{source}\n}})"),
                    super::options(&path),
                )
            },
        )?,
    )?;
    Ok(())
}

/// How long one HTTP request may take at most, inside the call's deadline.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Performs `request` on the turn; the value settles the script's promise.
pub fn perform(turn: &mut Turn, request: &Request, deadline: Instant) -> Result<Value, String> {
    match request {
        Request::KvGet { key } => Ok(turn.kv_get(key).unwrap_or(Value::Null)),
        Request::KvSet { key, value } => {
            turn.kv_set(key, value.clone());
            Ok(Value::Null)
        }
        Request::KvDelete { key } => {
            // The store has no delete inside a turn's batch; null reads back as absent.
            turn.kv_set(key, Value::Null);
            Ok(Value::Null)
        }
        Request::Render {
            content_id,
            args,
            state,
        } => {
            turn.scope["user"] = state.user.clone();
            turn.scope["temp"] = state.temp.clone();
            turn.scope["session"] = state.session.clone();
            render(turn, content_id, args)
        }
        Request::Reply { payloads } => {
            turn.push_outputs(payloads.clone());
            Ok(Value::Null)
        }
        Request::Http(r) => http(r, deadline),
        Request::Jump { flow, node } => {
            // Botpress's jumpTo: the same move as a QnA redirect, applied to the turn.
            dialog::jump_to(turn.bot, &mut turn.context, flow, node.as_deref()).map_err(
                |e| match e {
                    dialog::DialogError::Failed(m) => format!("bp.dialog.jumpTo: {m}"),
                    dialog::DialogError::Timeout => {
                        "bp.dialog.jumpTo: the turn ran out of time".into()
                    }
                },
            )?;
            serde_json::to_value(&turn.context).map_err(|e| e.to_string())
        }
        Request::ModuleConfig { module, for_bot } => {
            let bot_dir = for_bot.then_some(turn.bot.dir.as_path());
            Ok(Value::Object(
                turn.settings.module_config(module, bot_dir).0,
            ))
        }
        Request::BotpressConfig => botpress_config(turn),
    }
}

/// `bp.config.getBotpressConfig`: `data/global/botpress.config.json` as botd read it, without
/// `appSecret`, which signs the tokens of every bot's secured routes and is no bot's to read.
fn botpress_config(turn: &Turn) -> Result<Value, String> {
    let path = turn
        .settings
        .data_dir
        .join("global")
        .join("botpress.config.json");
    let mut config = crate::config::read_json(&path)
        .map_err(|p| format!("bp.config.getBotpressConfig: {}", p.message))?;
    if let Some(map) = config.as_object_mut() {
        map.remove("appSecret");
        map.remove("$schema");
    }
    Ok(config)
}

/// `bp.cms.renderElement`: `#!id` (or `!id`) is a content element, anything else a content
/// type rendered from `args`; the payloads are for the turn's channel.
fn render(turn: &mut Turn, content_id: &str, args: &Map<String, Value>) -> Result<Value, String> {
    let id = content_id
        .strip_prefix("#!")
        .or_else(|| content_id.strip_prefix('!'));
    let payloads = match id {
        Some(id) => {
            let element = turn.bot.elements.get(id).ok_or_else(|| {
                format!("bp.cms.renderElement: content element \"{id}\" not found")
            })?;
            let lang = turn.language();
            let default_language = turn.bot.default_language.clone();
            let target = content::RenderTarget {
                channel: &turn.channel,
                bot_url: &turn.bot_url,
                botpress: turn.bot.botpress_version,
            };
            content::render_element(
                element,
                args,
                &mut turn.scope,
                &lang,
                &default_language,
                target,
            )?
        }
        None => content::render_type(
            content_id.trim_start_matches('#'),
            args,
            &turn.scope,
            turn.render_target(),
        )?,
    };
    Ok(Value::Array(payloads))
}

/// One HTTP request through ureq; any status comes back (axios rejects from 400 on in JS).
fn http(r: &HttpRequest, deadline: Instant) -> Result<Value, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut timeout = HTTP_TIMEOUT.min(left);
    if r.timeout > 0 {
        timeout = timeout.min(Duration::from_millis(r.timeout));
    }
    let agent = ureq::AgentBuilder::new().timeout(timeout).build();
    let mut req = agent.request(&r.method, &r.url);
    for (name, value) in &r.headers {
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        req = req.set(name, &value);
    }
    let result = match &r.body {
        Some(body) => req.send_string(body),
        None => req.call(),
    };
    let response = match result {
        Ok(resp) | Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => return Err(format!("{} {}: {e}", r.method, r.url)),
    };
    let status = response.status();
    let status_text = response.status_text().to_string();
    let mut headers = Map::new();
    for name in response.headers_names() {
        if let Some(v) = response.header(&name) {
            headers.insert(name.to_ascii_lowercase(), Value::String(v.to_string()));
        }
    }
    let body = response
        .into_string()
        .map_err(|e| format!("{} {}: reading the body: {e}", r.method, r.url))?;
    Ok(json!({"status": status, "statusText": status_text, "headers": headers, "body": body}))
}
