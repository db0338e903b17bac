//! Flows (§8.1): `flows/**/*.flow.json` parsed and checked once when the bot loads, and the
//! instruction queue (§8.2) the dialog engine walks through.

use super::expr::Condition;
use super::Problem;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Flow {
    /// Path relative to `flows/`, e.g. `main.flow.json` or `skills/choice-62d44d.flow.json`.
    pub name: String,
    pub start_node: String,
    pub catch_all_on_receive: Vec<String>,
    pub catch_all_next: Vec<Transition>,
    pub timeout_node: Option<String>,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub name: String,
    /// `Some(flow)` for a `skill-call` node: entering it calls that sub-flow.
    pub skill_flow: Option<String>,
    pub on_enter: Vec<String>,
    /// `None` means the node does not wait; `Some(vec![])` waits and runs nothing.
    pub on_receive: Option<Vec<String>>,
    pub next: Vec<Transition>,
    /// The node to go to when the conversation times out here.
    pub timeout: Option<String>,
    /// A Botpress 12 `say_something` node's inline content, said after onEnter (and after
    /// the wait and onReceive, when the node has them) as a `say @<type> {formData}`.
    pub say_inline: Option<String>,
    /// The node's `type` when it is one of the NDU kinds (`trigger`, `success`, `failure`),
    /// reported at load.
    pub ndu_kind: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Transition {
    pub condition: String,
    pub target: String,
}

impl Flow {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// One step of the queue, with Botpress's JSON form (kept in `context.queue`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instruction {
    #[serde(rename = "type")]
    pub kind: InstructionKind,
    #[serde(rename = "fn", default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstructionKind {
    OnEnter,
    OnReceive,
    Wait,
    Transition,
}

impl Instruction {
    fn call(kind: InstructionKind, function: &str) -> Instruction {
        Instruction {
            kind,
            function: Some(function.to_string()),
            node: None,
        }
    }

    fn transition(t: &Transition) -> Instruction {
        Instruction {
            kind: InstructionKind::Transition,
            function: Some(t.condition.clone()),
            node: Some(t.target.clone()),
        }
    }
}

/// Which parts of a node the queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// onEnter, wait + onReceive, transitions.
    Full,
    /// After a jump (§8.7): the flow's catchAll transitions first, then as `Full`.
    AfterJump,
    /// After returning from a sub-flow: the node's transitions only.
    TransitionsOnly,
}

/// Builds the instruction queue for `node` in `flow` (§8.2).
pub fn build_queue(flow: &Flow, node: &Node, kind: QueueKind) -> Vec<Instruction> {
    let mut queue = Vec::new();
    if kind == QueueKind::AfterJump {
        queue.extend(flow.catch_all_next.iter().map(Instruction::transition));
    }
    if kind != QueueKind::TransitionsOnly {
        queue.extend(
            node.on_enter
                .iter()
                .map(|f| Instruction::call(InstructionKind::OnEnter, f)),
        );
        if let Some(on_receive) = &node.on_receive {
            queue.push(Instruction {
                kind: InstructionKind::Wait,
                function: None,
                node: None,
            });
            for f in flow.catch_all_on_receive.iter().chain(on_receive) {
                queue.push(Instruction::call(InstructionKind::OnReceive, f));
            }
        }
        if let Some(say) = &node.say_inline {
            queue.push(Instruction::call(InstructionKind::OnEnter, say));
        }
    }
    queue.extend(
        flow.catch_all_next
            .iter()
            .filter(|t| t.target != node.name)
            .map(Instruction::transition),
    );
    queue.extend(node.next.iter().map(Instruction::transition));
    queue
}

/// Reads every `*.flow.json` below `flows_dir`. Returns the flows that parsed and the
/// problems found (a flow with a structural problem is left out).
pub fn load_flows(flows_dir: &Path, shown_root: &str) -> (Vec<Flow>, Vec<Problem>) {
    let mut files = Vec::new();
    collect_flow_files(flows_dir, flows_dir, &mut files);
    files.sort();
    let mut flows = Vec::new();
    let mut problems = Vec::new();
    for rel in files {
        let shown = format!("{shown_root}/flows/{rel}");
        match crate::config::read_json(&flows_dir.join(&rel)) {
            Ok(json) => match parse_flow(&rel, &json) {
                Ok(flow) => flows.push(flow),
                Err(message) => problems.push(Problem::new(&shown, message)),
            },
            Err(p) => problems.push(Problem::new(&shown, p.message)),
        }
    }
    (flows, problems)
}

fn collect_flow_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_flow_files(root, &path, out);
        } else if path.to_string_lossy().ends_with(".flow.json") {
            if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
}

/// Parses one flow file with the checks of §8.1.
pub fn parse_flow(name: &str, json: &Value) -> Result<Flow, String> {
    let version = json.get("version").and_then(Value::as_str);
    if !version.is_some_and(|v| v.starts_with("0.")) {
        return Err("\"version\" must be a string starting with \"0.\" (e.g. \"0.0.1\")".into());
    }
    let start_node = json
        .get("startNode")
        .and_then(Value::as_str)
        .ok_or("\"startNode\" must be the name of a node")?
        .to_string();
    let nodes_json = json
        .get("nodes")
        .and_then(Value::as_array)
        .ok_or("\"nodes\" must be an array")?;
    let catch_all = json.get("catchAll").filter(|v| !v.is_null());
    if let Some(c) = catch_all {
        if !c.is_object() {
            return Err("\"catchAll\" must be an object".into());
        }
        if c.get("onEnter").is_some_and(|v| !v.is_null()) {
            return Err("\"catchAll.onEnter\" is not allowed (use onReceive or next)".into());
        }
    }
    let catch_all_on_receive = match catch_all.and_then(|c| c.get("onReceive")) {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => string_list(v).ok_or("\"catchAll.onReceive\" must be a list of strings")?,
    };
    let catch_all_next = match catch_all.and_then(|c| c.get("next")) {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => transitions(v).map_err(|e| format!("catchAll.next: {e}"))?,
    };
    let mut nodes = Vec::new();
    let mut names = HashMap::new();
    for (i, n) in nodes_json.iter().enumerate() {
        let id = n.get("id").and_then(Value::as_str).unwrap_or("");
        let name = n.get("name").and_then(Value::as_str).unwrap_or("");
        let label = if name.is_empty() {
            format!("nodes[{i}]")
        } else {
            format!("node \"{name}\"")
        };
        if id.chars().count() <= 3 {
            return Err(format!(
                "{label}: \"id\" must be a string longer than 3 characters"
            ));
        }
        if name.is_empty() {
            return Err(format!("{label}: \"name\" must be a non-empty string"));
        }
        if names.insert(name.to_string(), i).is_some() {
            return Err(format!("{label}: two nodes have this name"));
        }
        let list = |key: &str| -> Result<Option<Vec<String>>, String> {
            match n.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => string_list(v)
                    .map(Some)
                    .ok_or_else(|| format!("{label}: \"{key}\" must be a list of strings or null")),
            }
        };
        let on_enter = list("onEnter")?.unwrap_or_default();
        let on_receive = list("onReceive")?;
        let next = match n.get("next") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => transitions(v).map_err(|e| format!("{label}: next: {e}"))?,
        };
        let skill_flow = if n.get("type").and_then(Value::as_str) == Some("skill-call") {
            Some(
                n.get("flow")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{label}: a skill-call node needs a \"flow\""))?
                    .to_string(),
            )
        } else {
            None
        };
        let say_inline = match (n.get("type").and_then(Value::as_str), n.get("content")) {
            (Some("say_something"), Some(Value::Object(content))) => {
                let content_type = content
                    .get("contentType")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{label}: content.contentType must be a string"))?;
                let form = content
                    .get("formData")
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Default::default()));
                if !form.is_object() {
                    return Err(format!("{label}: content.formData must be an object"));
                }
                Some(format!("say @{content_type} {form}"))
            }
            _ => None,
        };
        let ndu_kind = n
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| ["trigger", "success", "failure"].contains(t))
            .map(str::to_string);
        nodes.push(Node {
            id: id.to_string(),
            say_inline,
            ndu_kind,
            name: name.to_string(),
            skill_flow,
            on_enter,
            on_receive,
            next,
            timeout: n.get("timeout").and_then(Value::as_str).map(str::to_string),
        });
    }
    if !names.contains_key(&start_node) {
        return Err(format!(
            "\"startNode\" names \"{start_node}\", which is not a node of this flow"
        ));
    }
    Ok(Flow {
        name: name.to_string(),
        start_node,
        catch_all_on_receive,
        catch_all_next,
        timeout_node: json
            .get("timeoutNode")
            .and_then(Value::as_str)
            .map(str::to_string),
        nodes,
    })
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn transitions(v: &Value) -> Result<Vec<Transition>, String> {
    let list = v.as_array().ok_or("must be a list of {condition, node}")?;
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let condition = t.get("condition").and_then(Value::as_str);
            let target = t.get("node").and_then(Value::as_str);
            match (condition, target) {
                (Some(c), Some(n)) => Ok(Transition {
                    condition: c.to_string(),
                    target: n.to_string(),
                }),
                (Some(c), None) => Ok(Transition {
                    condition: c.to_string(),
                    target: String::new(),
                }),
                _ => Err(format!("[{i}] needs a \"condition\" string")),
            }
        })
        .collect()
}

/// What the bot's flows reference, checked once all flows are loaded: transition targets,
/// sub-flows and conditions. Each problem names the flow file and the node.
pub fn check_references(
    flows: &HashMap<String, Flow>,
    shown_root: &str,
    conditions: &mut HashMap<String, Condition>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut names: Vec<&String> = flows.keys().collect();
    names.sort();
    for flow_name in names {
        let flow = &flows[flow_name];
        let shown = format!("{shown_root}/flows/{flow_name}");
        let mut check = |where_: &str, t: &Transition, problems: &mut Vec<Problem>| {
            if !conditions.contains_key(&t.condition) {
                match Condition::parse(&t.condition) {
                    Ok(c) => {
                        conditions.insert(t.condition.clone(), c);
                    }
                    // Beyond the native subset, the JavaScript engine evaluates it at run
                    // time: only what JavaScript cannot compile is a problem.
                    Err(_) => {
                        if let Err(e) = super::js::check_condition(&t.condition) {
                            problems.push(Problem::new(
                                &shown,
                                format!(
                                    "{where_}: condition `{}` cannot be evaluated: {e}",
                                    t.condition
                                ),
                            ))
                        }
                    }
                }
            }
            let target = t.target.as_str();
            let bad = if target.is_empty() || ["END", "#", "##"].contains(&target) {
                None
            } else if target.contains(".flow.json") {
                (!flows.contains_key(target)).then(|| format!("flow \"{target}\" does not exist"))
            } else if let Some(parent_node) = target
                .strip_prefix("##")
                .or_else(|| target.strip_prefix('#'))
                .filter(|n| !n.is_empty())
            {
                let exists = flows.values().any(|f| f.node(parent_node).is_some());
                (!exists).then(|| format!("no flow has a node \"{parent_node}\" to return to"))
            } else {
                flow.node(target)
                    .is_none()
                    .then(|| format!("node \"{target}\" does not exist in this flow"))
            };
            if let Some(message) = bad {
                problems.push(Problem::new(
                    &shown,
                    format!("{where_}: transition to \"{target}\": {message}"),
                ));
            }
        };
        for t in &flow.catch_all_next {
            check("catchAll", t, &mut problems);
        }
        for node in &flow.nodes {
            if let Some(kind) = &node.ndu_kind {
                problems.push(Problem::new(
                    &shown,
                    format!("node \"{}\": type \"{kind}\" belongs to Botpress 12's NDU workflows, which botd does not run; it plays as a standard node", node.name),
                ));
            }
            for t in &node.next {
                check(&format!("node \"{}\"", node.name), t, &mut problems);
            }
            if let Some(sub) = &node.skill_flow {
                if !flows.contains_key(sub) {
                    problems.push(Problem::new(
                        &shown,
                        format!("node \"{}\": sub-flow \"{sub}\" does not exist", node.name),
                    ));
                }
            }
        }
        if let Some(t) = &flow.timeout_node {
            if flow.node(t).is_none() {
                problems.push(Problem::new(
                    &shown,
                    format!("timeoutNode \"{t}\" is not a node of this flow"),
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Flow {
        parse_flow(
            "main.flow.json",
            &json!({
                "version": "0.0.1", "startNode": "entry",
                "catchAll": {"onReceive": ["log"], "next": [{"condition": "a", "node": "forget"}, {"condition": "b", "node": "entry"}]},
                "nodes": [
                    {"id": "n0000", "name": "entry", "onEnter": ["say x"], "onReceive": ["set y"], "next": [{"condition": "true", "node": "forget"}]},
                    {"id": "n0001", "name": "forget", "onEnter": [], "onReceive": null, "next": []}
                ]
            }),
        )
        .unwrap()
    }

    fn kinds(q: &[Instruction]) -> Vec<String> {
        q.iter()
            .map(|i| {
                format!(
                    "{:?}:{}:{}",
                    i.kind,
                    i.function.clone().unwrap_or_default(),
                    i.node.clone().unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn queue_order_follows_botpress() {
        let flow = sample();
        let entry = flow.node("entry").unwrap();
        assert_eq!(
            kinds(&build_queue(&flow, entry, QueueKind::Full)),
            [
                "OnEnter:say x:",
                "Wait::",
                "OnReceive:log:",
                "OnReceive:set y:",
                "Transition:a:forget",
                "Transition:true:forget"
            ]
        );
        assert_eq!(
            kinds(&build_queue(&flow, entry, QueueKind::AfterJump))[..2],
            ["Transition:a:forget", "Transition:b:entry"]
        );
        assert_eq!(
            kinds(&build_queue(&flow, entry, QueueKind::TransitionsOnly)),
            ["Transition:a:forget", "Transition:true:forget"]
        );
        // A node without onReceive does not wait; catchAll entries targeting itself are left out.
        let forget = flow.node("forget").unwrap();
        assert_eq!(
            kinds(&build_queue(&flow, forget, QueueKind::Full)),
            ["Transition:b:entry"]
        );
    }

    #[test]
    fn instruction_json_matches_botpress() {
        let flow = sample();
        let q = build_queue(&flow, flow.node("entry").unwrap(), QueueKind::Full);
        let text = serde_json::to_string(&q[..2]).unwrap();
        assert_eq!(
            text,
            r#"[{"type":"on-enter","fn":"say x"},{"type":"wait"}]"#
        );
        let back: Vec<Instruction> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, q[..2].to_vec());
    }

    #[test]
    fn structural_problems_are_named() {
        let cases = [
            (json!({"startNode": "a", "nodes": []}), "version"),
            (json!({"version": "0.1", "nodes": []}), "startNode"),
            (
                json!({"version": "0.1", "startNode": "a", "nodes": {}}),
                "nodes",
            ),
            (
                json!({"version": "0.1", "startNode": "a", "catchAll": {"onEnter": ["x"]}, "nodes": []}),
                "catchAll.onEnter",
            ),
            (
                json!({"version": "0.1", "startNode": "a", "nodes": [{"id": "ab", "name": "a"}]}),
                "longer than 3",
            ),
            (
                json!({"version": "0.1", "startNode": "zz", "nodes": [{"id": "abcd", "name": "a"}]}),
                "\"zz\"",
            ),
            (
                json!({"version": "0.1", "startNode": "a", "nodes": [{"id": "abcd", "name": "a", "next": [{"node": "b"}]}]}),
                "condition",
            ),
        ];
        for (json, needle) in cases {
            let err = parse_flow("x.flow.json", &json).unwrap_err();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }
}
