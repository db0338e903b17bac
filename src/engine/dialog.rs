//! The dialog engine (§8.2–8.7): walks the instruction queue of the current node, runs
//! `say` and actions, evaluates transitions and moves between nodes and flows.

use super::actions::{self, Call};
use super::bot::{Bot, BotpressVersion};
use super::content;
use super::event::{iso_time, now_ms};
use super::flow::{build_queue, Instruction, InstructionKind, QueueKind};
use crate::store::{Namespace, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::time::Instant;

/// Where a conversation is (`state.context`), in Botpress's JSON form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DialogContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_flow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_flow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_node: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jump_points: Vec<JumpPoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<Queue>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub has_jumped: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JumpPoint {
    pub flow: String,
    pub node: String,
    /// Botpress 12.9: the conversation has returned to this point with `#` (the jump point
    /// is dropped at the next transition); it tells the engine it came back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub used: bool,
    /// Botpress 12.10: returned with `##`, which plays the calling node again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub execute_node: bool,
}

impl JumpPoint {
    fn new(flow: &str, node: &str) -> JumpPoint {
        JumpPoint {
            flow: flow.to_string(),
            node: node.to_string(),
            used: false,
            execute_node: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    pub instructions: Vec<Instruction>,
}

impl DialogContext {
    pub fn is_empty(&self) -> bool {
        self.current_flow.is_none()
    }
}

/// Why a turn stopped without finishing.
#[derive(Debug, Clone, PartialEq)]
pub enum DialogError {
    /// The dialog engine itself failed (a flow or node that does not exist, a loop): the
    /// bot's error message is sent and the state of the turn is not saved. A failing
    /// instruction is not this: it stops the turn, which is saved ([`instruction_failed`]).
    Failed(String),
    /// The turn ran past its deadline (`converse.timeout`); nothing is saved.
    Timeout,
}

/// Everything one turn reads and changes. `scope` is the object conditions and templates see:
/// `{event, user, session, temp, bot}`.
pub struct Turn<'a> {
    pub bot: &'a Bot,
    pub store: &'a dyn Store,
    pub scope: Value,
    pub context: DialogContext,
    pub channel: String,
    pub bot_url: String,
    /// The running settings (module configuration for `bp.config`).
    pub settings: std::sync::Arc<crate::config::Settings>,
    /// Rendered payloads to send, in order.
    pub outputs: Vec<Value>,
    /// Bot KV writes, applied only when the turn's state is saved.
    pub kv_writes: Vec<(String, Value)>,
    pub deadline: Option<Instant>,
    /// [`super::Event::replies_together`]: whether `builtin/wait` sleeps within the turn or
    /// leaves a pause between the replies.
    pub replies_together: bool,
}

/// The most node entries one turn may make before it is stopped as an infinite loop.
const MAX_STEPS: usize = 200;

impl<'a> Turn<'a> {
    pub fn target(&self) -> String {
        self.scope["event"]["target"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The language content elements are rendered in: `user.language`, else the default.
    pub fn language(&self) -> String {
        super::runtime::user_language(self.bot, &self.scope["user"])
    }

    pub fn kv_get(&self, key: &str) -> Option<Value> {
        if let Some((_, v)) = self.kv_writes.iter().rev().find(|(k, _)| k == key) {
            return Some(v.clone());
        }
        self.store
            .get(Namespace::Kv, &self.bot.id, key)
            .ok()
            .flatten()
    }

    pub fn kv_set(&mut self, key: &str, value: Value) {
        self.kv_writes.push((key.to_string(), value));
    }

    fn check_deadline(&self) -> Result<(), DialogError> {
        match self.deadline {
            Some(d) if Instant::now() >= d => Err(DialogError::Timeout),
            _ => Ok(()),
        }
    }

    /// Where this turn's content is rendered.
    pub fn render_target(&self) -> content::RenderTarget<'_> {
        content::RenderTarget {
            channel: &self.channel,
            bot_url: &self.bot_url,
            botpress: self.bot.botpress_version,
        }
    }

    /// Renders `say <reference> {args}` for the turn's channel and queues the payloads.
    pub fn say(&mut self, reference: &str, args: &Map<String, Value>) -> Result<(), String> {
        let payloads = if let Some(id) = reference.strip_prefix("#!") {
            let element = self
                .bot
                .elements
                .get(id)
                .ok_or_else(|| format!("Content element \"{id}\" not found"))?;
            let lang = self.language();
            let target = content::RenderTarget {
                channel: &self.channel,
                bot_url: &self.bot_url,
                botpress: self.bot.botpress_version,
            };
            content::render_element(
                element,
                args,
                &mut self.scope,
                &lang,
                &self.bot.default_language,
                target,
            )?
        } else if let Some(content_type) = reference.strip_prefix('@') {
            // Inline content of a say_something node: form data with `$lang` keys.
            let lang = self.language();
            let form = content::translate(args, &lang, &self.bot.default_language);
            content::render_type(content_type, &form, &self.scope, self.render_target())?
        } else {
            content::render_type(
                reference.trim_start_matches('#'),
                args,
                &self.scope,
                self.render_target(),
            )?
        };
        self.push_outputs(payloads);
        let incoming = self.scope["event"]["preview"].clone();
        self.add_history(json!({
            "incomingPreview": incoming, "replyConfidence": 1, "replySource": "dialogManager",
            "replyDate": iso_time(now_ms()), "replyPreview": reference
        }));
        Ok(())
    }

    /// Queues payloads, through the channel's outgoing hook (the `api` QuickReplies wrapper
    /// of §11.4).
    pub fn push_outputs(&mut self, payloads: Vec<Value>) {
        for p in payloads {
            self.outputs.push(content::outgoing(&self.channel, p));
        }
    }

    /// Adds a turn-history entry to `session.lastMessages` (trimmed to 5 when saved).
    pub fn add_history(&mut self, entry: Value) {
        let session = &mut self.scope["session"];
        if !session["lastMessages"].is_array() {
            session["lastMessages"] = Value::Array(Vec::new());
        }
        if let Some(list) = session["lastMessages"].as_array_mut() {
            list.push(entry);
            let excess = list.len().saturating_sub(5);
            list.drain(..excess);
        }
    }

    fn run_call(&mut self, text: &str) -> Result<(), String> {
        match actions::parse_call(text)? {
            Call::Say { reference, args } => self.say(&reference, &args),
            Call::Action { name, args } => {
                let ctx = super::template::Context::data(&self.scope);
                let args = match super::template::render_value(&Value::Object(args), &ctx) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                actions::run(&name, &args, self)
            }
        }
    }

    fn end_flow(&mut self) {
        self.context = DialogContext::default();
        self.scope["temp"] = Value::Object(Map::new());
    }
}

/// The nodes a turn entered through transitions, for Botpress 12.1.5's loop guard: the turn
/// goes to the error flow at the transition after a node has been entered three times.
#[derive(Default)]
struct StackTrace {
    entries: Vec<(String, String)>,
    /// Set once the error flow was entered: the guard is off from then on.
    in_error_flow: bool,
}

impl StackTrace {
    fn push(&mut self, flow: &str, node: &str) {
        self.entries.push((flow.to_string(), node.to_string()));
    }

    /// The first node entered at least three times, as `flow (node) --> …` from its first
    /// entry up to its second, as Botpress words it.
    fn loop_path(&self) -> Option<String> {
        let looping = self
            .entries
            .iter()
            .find(|e| self.entries.iter().filter(|x| x == e).count() >= 3)?;
        let mut path = Vec::new();
        let mut seen = 0;
        for e in &self.entries {
            if e == looping {
                seen += 1;
            }
            if seen > 0 {
                path.push(format!("{} ({})", e.0, e.1));
            }
            if seen == 2 {
                break;
            }
        }
        Some(path.join(" --> "))
    }
}

/// Plays the dialog for one event (§8.3) until it waits or the conversation ends.
pub fn process(turn: &mut Turn) -> Result<(), DialogError> {
    let bot = turn.bot;
    let fail = |m: String| DialogError::Failed(m);
    let mut trace = StackTrace::default();
    'nodes: for _ in 0..MAX_STEPS {
        turn.check_deadline()?;
        if turn.context.is_empty() {
            let main = bot
                .flow("main.flow.json")
                .ok_or_else(|| fail("Flow \"main.flow.json\" not found".into()))?;
            turn.context = DialogContext {
                current_flow: Some(main.name.clone()),
                current_node: Some(main.start_node.clone()),
                ..Default::default()
            };
            trace.push(&main.name, &main.start_node);
        }
        let flow_name = turn.context.current_flow.clone().unwrap_or_default();
        let flow = bot
            .flow(&flow_name)
            .ok_or_else(|| fail(format!("Flow \"{flow_name}\" not found")))?;
        let node_name = turn.context.current_node.clone().unwrap_or_default();
        let node = flow.node(&node_name).ok_or_else(|| {
            fail(format!(
                "Node \"{node_name}\" not found in flow \"{flow_name}\""
            ))
        })?;

        if let Some(sub_name) = &node.skill_flow {
            let exiting = exiting_sub_flow(bot, &turn.context, &flow_name, &node_name);
            if !exiting {
                let sub = bot
                    .flow(sub_name)
                    .ok_or_else(|| fail(format!("Flow \"{sub_name}\" not found")))?;
                let mut jump_points = std::mem::take(&mut turn.context.jump_points);
                jump_points.push(JumpPoint::new(&flow_name, &node_name));
                turn.context = DialogContext {
                    current_flow: Some(sub.name.clone()),
                    current_node: Some(sub.start_node.clone()),
                    previous_flow: Some(flow_name),
                    previous_node: Some(node_name),
                    jump_points,
                    ..Default::default()
                };
                continue;
            }
        }

        let resumed = turn.context.queue.is_some() && !turn.context.has_jumped;
        let mut queue: std::collections::VecDeque<Instruction> = if turn.context.has_jumped {
            turn.context.has_jumped = false;
            build_queue(flow, node, QueueKind::AfterJump).into()
        } else if let Some(q) = turn.context.queue.take() {
            q.instructions.into()
        } else {
            build_queue(flow, node, QueueKind::Full).into()
        };
        // Whether an instruction of this queue already ran: Botpress then keeps the queue in
        // the context, so a stop on an empty transition leaves the queue there.
        let mut queue_kept = resumed;

        // Run instructions until one moves us to another node, waits, or the queue ends.
        let target = loop {
            turn.check_deadline()?;
            let Some(instruction) = queue.pop_front() else {
                if conversation_end_jumped(turn) {
                    continue 'nodes;
                }
                turn.end_flow();
                return Ok(());
            };
            let function = instruction.function.clone().unwrap_or_default();
            match instruction.kind {
                InstructionKind::OnEnter | InstructionKind::OnReceive => {
                    if let Err(e) = turn.run_call(&function) {
                        turn.check_deadline()?;
                        instruction_failed(turn, &flow_name, &node_name, &function, &e);
                        stop_at(turn, queue, instruction, queue_kept);
                        return Ok(());
                    }
                    if turn.context.has_jumped {
                        // The action called bp.dialog.jumpTo: the rest of this queue is
                        // dropped and the conversation goes on from the jump's node.
                        continue 'nodes;
                    }
                }
                InstructionKind::Wait => {
                    turn.context.queue = Some(Queue {
                        instructions: queue.into(),
                    });
                    return Ok(());
                }
                InstructionKind::Transition => {
                    let passes = match bot.eval_condition(&function, &turn.scope) {
                        Ok(passes) => passes,
                        Err(e) => {
                            turn.check_deadline()?;
                            instruction_failed(turn, &flow_name, &node_name, &function, &e);
                            stop_at(turn, queue, instruction, queue_kept);
                            return Ok(());
                        }
                    };
                    if passes {
                        let target = instruction.node.clone().unwrap_or_default();
                        if target.is_empty() {
                            // A transition with no destination (the editor's unconnected
                            // port). Botpress 12.5 on ends the flow there (context and temp
                            // cleared), so the next message starts over.
                            if bot.botpress_version >= BotpressVersion(12, 5, 0) {
                                turn.end_flow();
                                return Ok(());
                            }
                            // Before, it stops the turn where it is. Botpress keeps the queue
                            // it resumed from, this transition first, so the next message
                            // meets the same transition; a fresh queue is not kept, and the
                            // next message plays the node again.
                            stop_at(turn, queue, instruction, queue_kept);
                            return Ok(());
                        }
                        break target;
                    }
                }
            }
            queue_kept = true;
        };
        turn.context.queue = None;
        if bot.botpress_version.has_loop_guard() && !trace.in_error_flow {
            if let Some(path) = trace.loop_path() {
                log::warn!("bot \"{}\": Infinite loop detected. ({path})", bot.id);
                trace.in_error_flow = true;
                let error_flow = turn.scope["temp"]["onErrorFlowTo"]
                    .as_str()
                    .filter(|f| !f.is_empty())
                    .unwrap_or("error.flow.json")
                    .to_string();
                transition(turn, &error_flow, &mut trace).map_err(|_| {
                    fail(format!(
                        "Infinite loop detected. ({path}), and the error flow \"{error_flow}\" does not exist"
                    ))
                })?;
                continue;
            }
        }
        if target == "END" && conversation_end_jumped(turn) {
            continue;
        }
        let moved = transition(turn, &target, &mut trace);
        if moved == Ok(Moved::Stopped) {
            // Botpress 12.4: `#` with no flow to return to stops the turn where it is.
            log::debug!(
                "bot \"{}\": no previous flow found, current node is {node_name}",
                bot.id
            );
            return Ok(());
        }
        if let Err(e) = moved {
            // Botpress 12.1.5 on: a failed transition goes to the error flow.
            if !bot.botpress_version.has_loop_guard() || trace.in_error_flow {
                return Err(e);
            }
            log::warn!(
                "bot \"{}\": transition to \"{target}\" failed: {e:?}",
                bot.id
            );
            trace.in_error_flow = true;
            let error_flow = turn.scope["temp"]["onErrorFlowTo"]
                .as_str()
                .filter(|f| !f.is_empty())
                .unwrap_or("error.flow.json")
                .to_string();
            transition(turn, &error_flow, &mut trace)?;
        }
        if turn.context.is_empty() {
            // END: the context is gone, temp stays.
            return Ok(());
        }
    }
    Err(fail(format!(
        "Infinite loop detected: more than {MAX_STEPS} node changes in one turn"
    )))
}

/// Botpress 12.26's `before_conversation_end` hooks, when a flow ends (END, or the last
/// instruction of a node without transitions) outside `timeout.flow.json` and
/// `conversation_end.flow.json`; the context is still the ending flow's. Whether a hook
/// moved the conversation with `bp.dialog.jumpTo`, which then goes on instead of ending.
fn conversation_end_jumped(turn: &mut Turn) -> bool {
    let bot = turn.bot;
    let flow = turn.context.current_flow.as_deref().unwrap_or("");
    if !bot.botpress_version.has_conversation_end()
        || !bot.hooks.has("before_conversation_end")
        || ["timeout.flow.json", "conversation_end.flow.json"].contains(&flow)
    {
        return false;
    }
    let mut event = turn.scope["event"].clone();
    super::js::run_hook(turn, "before_conversation_end", &mut event);
    turn.context.has_jumped
}

/// Botpress's processing error (the dialog engine's `_reportProcessingError`, 11.9.7 to 12.x):
/// an action that throws or is missing, a `say` that cannot render, a condition that throws
/// something other than a `TypeError` is logged as a warning naming flow, node and
/// instruction; the turn stops there and its state is saved, and the user gets nothing more
/// (Botpress sends its error message only when the dialog engine itself fails: a flow or node
/// that does not exist).
fn instruction_failed(turn: &Turn, flow: &str, node: &str, instruction: &str, error: &str) {
    log::warn!(
        "bot \"{}\": flows/{flow}, node \"{node}\": error processing \"{instruction}\": {error}",
        turn.bot.id
    );
}

/// Stops the turn at `instruction`, leaving the queue in the context as Botpress does: when
/// an instruction of this queue already ran (or it was resumed), the queue is kept with this
/// instruction first, so the next message meets it again; a fresh queue is not kept, and the
/// next message plays the node again.
fn stop_at(
    turn: &mut Turn,
    mut queue: std::collections::VecDeque<Instruction>,
    instruction: Instruction,
    queue_kept: bool,
) {
    if queue_kept {
        queue.push_front(instruction);
        turn.context.queue = Some(Queue {
            instructions: queue.into(),
        });
    }
}

/// Whether the conversation is back on a skill-call node from its sub-flow (so the node's
/// transitions run instead of calling the sub-flow again): up to Botpress 12.8, when
/// `previousFlow`/`previousNode` name it; from 12.9, when the jump point returned to with `#`
/// does (12.10: unless it was `##`, which plays the node again).
fn exiting_sub_flow(bot: &Bot, ctx: &DialogContext, flow: &str, node: &str) -> bool {
    if bot.botpress_version < BotpressVersion(12, 9, 0) {
        return ctx.previous_flow.as_deref() == Some(flow)
            && ctx.previous_node.as_deref() == Some(node);
    }
    ctx.jump_points
        .iter()
        .find(|j| j.used)
        .is_some_and(|j| j.flow == flow && j.node == node && !j.execute_node)
}

/// What a transition did.
#[derive(Debug, PartialEq)]
enum Moved {
    /// The conversation is on the target (or the flow ended).
    Entered,
    /// `#` with no flow to return to (Botpress 12.4 on): the turn stops where it is.
    Stopped,
}

/// Moves to `target` (§8.5), noting the node entered in `trace`.
fn transition(turn: &mut Turn, target: &str, trace: &mut StackTrace) -> Result<Moved, DialogError> {
    let bot = turn.bot;
    let version = bot.botpress_version;
    let fail = |m: String| DialogError::Failed(m);
    let ctx = &mut turn.context;
    let current_flow = ctx.current_flow.clone().unwrap_or_default();
    let current_node = ctx.current_node.clone().unwrap_or_default();
    if version >= BotpressVersion(12, 9, 0) {
        ctx.jump_points.retain(|j| !j.used);
    }
    if target == "END" {
        turn.context = DialogContext::default();
    } else if target.contains(".flow.json") {
        let flow = bot
            .flow(target)
            .ok_or_else(|| fail(format!("Flow \"{target}\" not found")))?;
        let mut jump_points = std::mem::take(&mut ctx.jump_points);
        jump_points.push(JumpPoint::new(&current_flow, &current_node));
        *ctx = DialogContext {
            current_flow: Some(flow.name.clone()),
            current_node: Some(flow.start_node.clone()),
            previous_flow: Some(current_flow),
            previous_node: Some(current_node),
            jump_points,
            ..Default::default()
        };
        trace.push(&flow.name, &flow.start_node);
    } else if target.starts_with('#') {
        // `##` (12.10) returns and plays the calling node again; before, it reads as `#`
        // (the node named by `split('#')[1]`, empty).
        let execute_node = version >= BotpressVersion(12, 10, 0) && target.starts_with("##");
        let specific = if execute_node {
            &target[2..]
        } else {
            target.split('#').nth(1).unwrap_or("")
        };
        if ctx.jump_points.is_empty() && version >= BotpressVersion(12, 4, 0) {
            return Ok(Moved::Stopped);
        }
        let jump = if version >= BotpressVersion(12, 9, 0) {
            // The jump point stays, marked used, until the next transition.
            let last = ctx.jump_points.last_mut().expect("not empty");
            last.used = true;
            last.execute_node = execute_node;
            last.clone()
        } else {
            ctx.jump_points.pop().ok_or_else(|| {
                fail(format!(
                    "Cannot return with \"{target}\" from {current_flow}: no parent flow"
                ))
            })?
        };
        let parent = bot
            .flow(&jump.flow)
            .ok_or_else(|| fail(format!("Flow \"{}\" not found", jump.flow)))?;
        let node_name = if specific.is_empty() {
            jump.node.as_str()
        } else {
            specific
        };
        let node = parent.node(node_name).ok_or_else(|| {
            fail(format!(
                "Node \"{node_name}\" not found in flow \"{}\"",
                parent.name
            ))
        })?;
        // previousFlow/previousNode stay as they are (Botpress spreads the old context): after
        // a skill they name the calling node, which is how the engine knows it came back.
        ctx.current_flow = Some(parent.name.clone());
        ctx.current_node = Some(node.name.clone());
        ctx.queue = Some(Queue {
            instructions: build_queue(parent, node, QueueKind::TransitionsOnly),
        });
        trace.push(&parent.name, &node.name);
    } else {
        let flow = bot
            .flow(&current_flow)
            .ok_or_else(|| fail(format!("Flow \"{current_flow}\" not found")))?;
        if flow.node(target).is_none() {
            return Err(fail(format!(
                "Node \"{target}\" not found in flow \"{current_flow}\""
            )));
        }
        if !current_flow.starts_with("skills/") {
            ctx.previous_node = Some(current_node);
        }
        ctx.current_node = Some(target.to_string());
        trace.push(&current_flow, target);
    }
    Ok(Moved::Entered)
}

/// Moves the conversation to `flow` (at `node`, or its start node) with `hasJumped`, as a QnA
/// redirect or a timeout does (§8.7).
pub fn jump_to(
    bot: &Bot,
    ctx: &mut DialogContext,
    flow: &str,
    node: Option<&str>,
) -> Result<(), DialogError> {
    let f = bot
        .flow(flow)
        .ok_or_else(|| DialogError::Failed(format!("Flow \"{flow}\" not found")))?;
    let n = node.unwrap_or(&f.start_node);
    if f.node(n).is_none() {
        return Err(DialogError::Failed(format!(
            "Node \"{n}\" not found in flow \"{flow}\""
        )));
    }
    ctx.current_flow = Some(f.name.clone());
    ctx.current_node = Some(n.to_string());
    ctx.queue = None;
    ctx.has_jumped = true;
    Ok(())
}
