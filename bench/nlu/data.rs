//! Labelled sets: loading, splitting and sampling.
//!
//! Formats accepted by [`load_examples`]:
//! - JSONL, one object a line: `{"text": "...", "intent": "...", "entities": [{"entity",
//!   "start", "end"}], "fold"?: n, "training"?: bool}`; `start`/`end` are character offsets,
//!   `end` exclusive (the `hwu64_folds.jsonl` shape).
//! - Braun et al. JSON: `{"sentences": [{"text", "intent", "entities": [{"entity", "start",
//!   "stop"}], "training": bool}]}`; `start`/`stop` are inclusive whitespace-token indices.

use std::collections::BTreeMap;
use std::path::Path;

use botd::engine::nlu::classifier::Rng;
use botd::engine::nlu::IntentDef;
use serde_json::Value;

/// An entity span of a labelled example, byte offsets into `text`.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub entity: String,
    pub start: usize,
    pub end: usize,
}

/// One labelled utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: String,
    pub intent: String,
    pub entities: Vec<Span>,
    pub fold: Option<u64>,
    pub training: Option<bool>,
}

fn char_to_byte(text: &str, c: usize) -> usize {
    text.char_indices().nth(c).map_or(text.len(), |(b, _)| b)
}

fn parse_jsonl_line(v: &Value) -> Option<Example> {
    let text = v.get("text")?.as_str()?.to_string();
    let intent = v.get("intent")?.as_str()?.to_string();
    let mut entities = Vec::new();
    for e in v
        .get("entities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(s), Some(en)) = (
            e.get("entity").and_then(Value::as_str),
            e.get("start").and_then(Value::as_u64),
            e.get("end").and_then(Value::as_u64),
        ) else {
            continue;
        };
        entities.push(Span {
            entity: name.to_string(),
            start: char_to_byte(&text, s as usize),
            end: char_to_byte(&text, en as usize),
        });
    }
    Some(Example {
        text,
        intent,
        entities,
        fold: v.get("fold").and_then(Value::as_u64),
        training: v.get("training").and_then(Value::as_bool),
    })
}

fn parse_braun_sentence(v: &Value) -> Option<Example> {
    let text = v.get("text")?.as_str()?.to_string();
    let intent = v.get("intent")?.as_str()?.to_string();
    let tokens: Vec<(usize, usize)> = {
        let mut out = Vec::new();
        let mut pos = 0;
        for t in text.split_whitespace() {
            let s = pos + text[pos..].find(t).unwrap_or(0);
            pos = s + t.len();
            out.push((s, pos));
        }
        out
    };
    let mut entities = Vec::new();
    for e in v
        .get("entities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(s), Some(st)) = (
            e.get("entity").and_then(Value::as_str),
            e.get("start").and_then(Value::as_u64),
            e.get("stop").and_then(Value::as_u64),
        ) else {
            continue;
        };
        if let (Some(a), Some(b)) = (tokens.get(s as usize), tokens.get(st as usize)) {
            entities.push(Span {
                entity: name.to_string(),
                start: a.0,
                end: b.1,
            });
        }
    }
    Some(Example {
        text,
        intent,
        entities,
        fold: None,
        training: v.get("training").and_then(Value::as_bool),
    })
}

/// Reads a labelled set (JSONL or Braun JSON, see the module doc).
pub fn load_examples(path: &Path) -> Result<Vec<Example>, String> {
    let raw = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Ok(v) = serde_json::from_str::<Value>(&raw) {
        if let Some(sentences) = v.get("sentences").and_then(Value::as_array) {
            return Ok(sentences.iter().filter_map(parse_braun_sentence).collect());
        }
        if let Some(arr) = v.as_array() {
            return Ok(arr.iter().filter_map(parse_jsonl_line).collect());
        }
    }
    let mut out = Vec::new();
    for (i, line) in raw.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        match parse_jsonl_line(&v) {
            Some(ex) => out.push(ex),
            None => {
                return Err(format!(
                    "{}:{}: expected an object with `text` and `intent`",
                    path.display(),
                    i + 1
                ))
            }
        }
    }
    Ok(out)
}

/// Intent definitions (context `global`) from labelled examples, intents in name order.
pub fn intents_from_examples(train: &[Example]) -> Vec<IntentDef> {
    let mut by_intent: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for ex in train {
        by_intent
            .entry(&ex.intent)
            .or_default()
            .push(ex.text.clone());
    }
    by_intent
        .into_iter()
        .map(|(name, utterances)| IntentDef {
            name: name.to_string(),
            contexts: vec!["global".to_string()],
            utterances,
            slots: vec![],
        })
        .collect()
}

/// Splits a set for `eval`: Braun-shaped rows by their `training` flag, rows with a
/// `fold` by `--fold` (default 1), anything else wholly.
pub fn select(rows: Vec<Example>, want_training: bool, fold: u64) -> Vec<Example> {
    if rows.iter().any(|r| r.training.is_some()) {
        rows.into_iter()
            .filter(|r| r.training == Some(want_training))
            .collect()
    } else if rows.iter().any(|r| r.fold.is_some()) {
        rows.into_iter()
            .filter(|r| (r.fold == Some(fold)) != want_training)
            .collect()
    } else {
        rows
    }
}

/// `per_intent` training rows per intent (intents in name order), drawn with our own PRNG
/// seeded by `seed` (the draws differ from Python's `random.sample`; the protocol is the same).
pub fn few_shot_sample(train: &[Example], per_intent: usize, seed: u64) -> Vec<Example> {
    let mut by_intent: BTreeMap<&str, Vec<&Example>> = BTreeMap::new();
    for ex in train {
        by_intent.entry(&ex.intent).or_default().push(ex);
    }
    let mut rng = Rng::new(seed + 1);
    let mut out = Vec::new();
    for (_, mut list) in by_intent {
        let k = per_intent.min(list.len());
        // Partial Fisher-Yates: the first k after swapping are a uniform sample.
        for i in 0..k {
            let j = i + rng.below(list.len() - i);
            list.swap(i, j);
        }
        out.extend(list[..k].iter().map(|e| (*e).clone()));
    }
    out
}

/// CLINC150 "full" (Larson et al. 2019): in-scope and out-of-scope parts of each split;
/// out-of-scope rows have the intent `oos`.
pub struct Clinc {
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    pub test: Vec<Example>,
    pub oos_train: Vec<Example>,
    pub oos_val: Vec<Example>,
    pub oos_test: Vec<Example>,
}

/// Reads `data_full.json`: `{"train": [[text, intent], ...], "oos_train": ..., ...}`.
pub fn load_clinc(path: &Path) -> Result<Clinc, String> {
    let raw = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&raw).map_err(|e| format!("{}: {e}", path.display()))?;
    let part = |name: &str| -> Result<Vec<Example>, String> {
        let rows = v
            .get(name)
            .and_then(Value::as_array)
            .ok_or(format!("{}: no `{name}` array", path.display()))?;
        rows.iter()
            .map(|r| {
                match (
                    r.get(0).and_then(Value::as_str),
                    r.get(1).and_then(Value::as_str),
                ) {
                    (Some(text), Some(intent)) => Ok(Example {
                        text: text.to_string(),
                        intent: intent.to_string(),
                        entities: Vec::new(),
                        fold: None,
                        training: None,
                    }),
                    _ => Err(format!(
                        "{}: `{name}` rows must be [text, intent]",
                        path.display()
                    )),
                }
            })
            .collect()
    };
    Ok(Clinc {
        train: part("train")?,
        val: part("val")?,
        test: part("test")?,
        oos_train: part("oos_train")?,
        oos_val: part("oos_val")?,
        oos_test: part("oos_test")?,
    })
}
