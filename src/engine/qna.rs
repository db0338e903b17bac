//! QnA (§9.2): `qna/*.json` entries, the NLU intents they become (`__qna__<id>` in their
//! category's context), and the suggestions they make for an understood message.

use super::nlu::IntentDef;
use super::Problem;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct QnaEntry {
    pub id: String,
    /// Questions and answers by language: Botpress 12 keys them by language, an 11 entry's
    /// plain lists are the default language's.
    pub questions: BTreeMap<String, Vec<String>>,
    pub answers: BTreeMap<String, Vec<String>>,
    /// `text`, `redirect` or `text_redirect`.
    pub action: String,
    pub redirect_flow: Option<String>,
    pub redirect_node: Option<String>,
    /// The NLU contexts the entry is trained in: Botpress 12.8's `contexts`, or the older
    /// `category || 'global'`.
    pub contexts: Vec<String>,
    pub enabled: bool,
}

/// What an elected QnA does: answer, and/or jump into a flow.
#[derive(Debug, Clone)]
pub struct Suggestion {
    pub confidence: f64,
    pub source: String,
    pub source_details: String,
    /// The answer text, rendered later with the bot's text renderer for the event's channel.
    pub answer: Option<String>,
    pub redirect: Option<(String, Option<String>)>,
}

pub const INTENT_PREFIX: &str = "__qna__";

/// What loading `qna/` gave. Errors are unreadable files; warnings are entries Botpress loads
/// but that cannot answer (no questions or answers in the default language, a redirect without
/// a flow): they are left out of training.
pub struct LoadedQna {
    pub entries: Vec<QnaEntry>,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

/// Reads `qna/*.json`. Questions and answers may be plain lists (the default language's) or
/// per-language objects, of which the bot's `languages` are kept.
pub fn load(dir: &Path, shown_root: &str, lang: &str, languages: &[String]) -> LoadedQna {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let Ok(read) = std::fs::read_dir(dir) else {
        return LoadedQna {
            entries,
            errors: problems,
            warnings,
        };
    };
    let mut paths: Vec<_> = read
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for path in paths {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        let shown = format!("{shown_root}/qna/{file}");
        let json = match crate::config::read_json(&path) {
            Ok(j) => j,
            Err(p) => {
                problems.push(Problem::new(&shown, p.message));
                continue;
            }
        };
        let id = json["id"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| file.trim_end_matches(".json").to_string());
        let data = &json["data"];
        if !data.is_object() {
            problems.push(Problem::new(
                &shown,
                "\"data\" must be an object with questions and answers",
            ));
            continue;
        }
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let list = |key: &str| -> BTreeMap<String, Vec<String>> {
            let by_lang: BTreeMap<String, Vec<String>> = match &data[key] {
                Value::Object(per_lang) => per_lang
                    .iter()
                    .filter(|(l, _)| languages.contains(l) || l.as_str() == lang)
                    .map(|(l, v)| (l.clone(), strings(v)))
                    .collect(),
                other => [(lang.to_string(), strings(other))].into(),
            };
            by_lang.into_iter().filter(|(_, v)| !v.is_empty()).collect()
        };
        let action = data["action"].as_str().unwrap_or("text").to_string();
        if !["text", "redirect", "text_redirect"].contains(&action.as_str()) {
            warnings.push(Problem::new(
                &shown,
                format!("data.action must be text, redirect or text_redirect, not \"{action}\"; the entry is left out"),
            ));
            continue;
        }
        let entry = QnaEntry {
            id,
            questions: list("questions"),
            answers: list("answers"),
            redirect_flow: data["redirectFlow"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            redirect_node: data["redirectNode"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            contexts: match data["contexts"].as_array() {
                Some(list) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                // Botpress trains an entry in `category || 'global'`.
                None => vec![data["category"]
                    .as_str()
                    .filter(|c| !c.is_empty())
                    .unwrap_or("global")
                    .to_string()],
            },
            enabled: data["enabled"].as_bool().unwrap_or(true),
            action,
        };
        let left_out =
            |message: String| Problem::new(&shown, format!("{message}; the entry is left out"));
        // Botpress trains each language on its own questions; an entry with none in the
        // default language is still asked in the others, and answers in the default language
        // when it has no answer in the one asked.
        if !entry.questions.contains_key(lang) {
            if entry.questions.is_empty() {
                warnings.push(left_out(format!(
                    "data.questions has no question in the default language \"{lang}\""
                )));
                continue;
            }
            warnings.push(Problem::new(
                &shown,
                format!(
                    "data.questions has no question in the default language \"{lang}\"; the entry is matched only in {}",
                    entry.questions.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if entry.action.contains("text") && !entry.answers.contains_key(lang) {
            if entry.answers.is_empty() {
                warnings.push(left_out(format!(
                    "data.answers has no answer in the default language \"{lang}\""
                )));
                continue;
            }
            warnings.push(Problem::new(
                &shown,
                format!(
                    "data.answers has no answer in the default language \"{lang}\"; asked in another language, it answers nothing"
                ),
            ));
        }
        if entry.action.contains("redirect") && entry.redirect_flow.is_none() {
            warnings.push(left_out(
                "data.redirectFlow is empty but data.action redirects".into(),
            ));
            continue;
        }
        entries.push(entry);
    }
    LoadedQna {
        entries,
        errors: problems,
        warnings,
    }
}

/// The NLU intents of the enabled entries that have questions in `lang`.
pub fn intents(entries: &[QnaEntry], lang: &str) -> Vec<IntentDef> {
    entries
        .iter()
        .filter(|e| e.enabled)
        .filter_map(|e| {
            Some(IntentDef {
                name: format!("{INTENT_PREFIX}{}", e.id),
                contexts: e.contexts.clone(),
                utterances: e.questions.get(lang)?.clone(),
                slots: Vec::new(),
            })
        })
        .collect()
}

/// One suggestion per `__qna__` intent in `nlu.intents` whose entry is enabled, answering in
/// `lang`, or in `default_lang` when the entry has no answer in `lang` (Botpress 12.10's rule;
/// before it, Botpress failed on such an entry).
pub fn suggest(
    entries: &[QnaEntry],
    nlu: &Value,
    lang: &str,
    default_lang: &str,
) -> Vec<Suggestion> {
    let mut out = Vec::new();
    for intent in nlu["intents"].as_array().into_iter().flatten() {
        let Some(name) = intent["name"].as_str() else {
            continue;
        };
        let Some(id) = name.strip_prefix(INTENT_PREFIX) else {
            continue;
        };
        let Some(entry) = entries.iter().find(|e| e.id == id && e.enabled) else {
            continue;
        };
        let answers = entry
            .answers
            .get(lang)
            .or_else(|| entry.answers.get(default_lang));
        let answer = match answers {
            Some(answers) if entry.action.contains("text") => {
                let i = super::random::below(answers.len() as u64) as usize;
                answers.get(i).cloned()
            }
            _ => None,
        };
        let redirect = if entry.action.contains("redirect") {
            entry
                .redirect_flow
                .clone()
                .map(|f| (f, entry.redirect_node.clone()))
        } else {
            None
        };
        if answer.is_none() && redirect.is_none() {
            continue;
        }
        out.push(Suggestion {
            confidence: intent["confidence"].as_f64().unwrap_or(0.0),
            source: "qna".into(),
            source_details: name.to_string(),
            answer,
            redirect,
        });
    }
    out
}

pub fn redirect_payload(flow: &str, node: &Option<String>) -> Value {
    json!({"type": "redirect", "flow": flow, "node": node})
}
