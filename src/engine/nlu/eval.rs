//! Evaluation on labelled sets and the benchmark of RESULTS.md §5 (`botd nlu-eval`,
//! `botd nlu-bench`).
//!
//! Labelled-set formats accepted by [`load_examples`]:
//! - JSONL, one object a line: `{"text": "...", "intent": "...", "entities": [{"entity",
//!   "start", "end"}], "fold"?: n, "training"?: bool}`; `start`/`end` are character offsets,
//!   `end` exclusive (the `hwu64_folds.jsonl` shape).
//! - Braun et al. JSON: `{"sentences": [{"text", "intent", "entities": [{"entity", "start",
//!   "stop"}], "training": bool}]}`; `start`/`stop` are inclusive whitespace-token indices.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use super::slots::{lowercase_keep_offsets, SequenceTagger, TaggedExample};
use super::{IntentDef, IntentTraining, Nlu, NluConfig, NONE_INTENT};

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

/// Micro/macro scores of a set of predictions.
#[derive(Debug, Clone, Default)]
pub struct IntentCounts {
    pub correct: usize,
    pub total: usize,
    /// Per gold/predicted label: (true positives, false positives, false negatives).
    pub per_class: BTreeMap<String, (usize, usize, usize)>,
}

impl IntentCounts {
    pub fn add(&mut self, gold: &str, predicted: &str) {
        self.total += 1;
        if gold == predicted {
            self.correct += 1;
            self.per_class.entry(gold.to_string()).or_default().0 += 1;
        } else {
            self.per_class.entry(predicted.to_string()).or_default().1 += 1;
            self.per_class.entry(gold.to_string()).or_default().2 += 1;
        }
    }
    pub fn merge(&mut self, o: &IntentCounts) {
        self.correct += o.correct;
        self.total += o.total;
        for (k, v) in &o.per_class {
            let e = self.per_class.entry(k.clone()).or_default();
            e.0 += v.0;
            e.1 += v.1;
            e.2 += v.2;
        }
    }
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }
    /// Micro-F1 over classes; equals accuracy for single-label prediction.
    pub fn micro_f1(&self) -> f64 {
        let (tp, fp, fn_) = self
            .per_class
            .values()
            .fold((0, 0, 0), |a, v| (a.0 + v.0, a.1 + v.1, a.2 + v.2));
        f1(tp, fp, fn_)
    }
    /// Macro-F1 over the gold labels seen in the test set.
    pub fn macro_f1(&self) -> f64 {
        let gold: Vec<_> = self
            .per_class
            .values()
            .filter(|(tp, _, fn_)| tp + fn_ > 0)
            .collect();
        gold.iter().map(|v| f1(v.0, v.1, v.2)).sum::<f64>() / gold.len().max(1) as f64
    }
}

fn f1(tp: usize, fp: usize, fn_: usize) -> f64 {
    if tp == 0 {
        return 0.0;
    }
    let p = tp as f64 / (tp + fp) as f64;
    let r = tp as f64 / (tp + fn_) as f64;
    2.0 * p * r / (p + r)
}

/// Entity scores: type + overlapping span, and type + exact span.
#[derive(Debug, Clone, Copy, Default)]
pub struct EntityCounts {
    pub overlap: (usize, usize, usize),
    pub exact: (usize, usize, usize),
}

impl EntityCounts {
    /// Scores predicted spans against gold spans of one utterance; one gold entity is matched
    /// at most once.
    pub fn add(&mut self, gold: &[Span], predicted: &[Span]) {
        for (exact, counts) in [(false, &mut self.overlap), (true, &mut self.exact)] {
            let mut used = vec![false; gold.len()];
            let mut tp = 0;
            for p in predicted {
                let hit = gold.iter().enumerate().find(|(i, g)| {
                    !used[*i]
                        && g.entity == p.entity
                        && if exact {
                            g.start == p.start && g.end == p.end
                        } else {
                            g.start < p.end && p.start < g.end
                        }
                });
                if let Some((i, _)) = hit {
                    used[i] = true;
                    tp += 1;
                }
            }
            counts.0 += tp;
            counts.1 += predicted.len() - tp;
            counts.2 += gold.len() - tp;
        }
    }
    pub fn merge(&mut self, o: &EntityCounts) {
        for (a, b) in [(&mut self.overlap, o.overlap), (&mut self.exact, o.exact)] {
            a.0 += b.0;
            a.1 += b.1;
            a.2 += b.2;
        }
    }
    pub fn overlap_f1(&self) -> f64 {
        f1(self.overlap.0, self.overlap.1, self.overlap.2)
    }
    pub fn exact_f1(&self) -> f64 {
        f1(self.exact.0, self.exact.1, self.exact.2)
    }
    pub fn overlap_pr(&self) -> (f64, f64) {
        let (tp, fp, fn_) = self.overlap;
        (
            tp as f64 / (tp + fp).max(1) as f64,
            tp as f64 / (tp + fn_).max(1) as f64,
        )
    }
}

/// The outcome of training on one set and testing on another.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    pub intents: IntentCounts,
    pub entities: Option<EntityCounts>,
    pub train_secs: f64,
    pub tagger_train_secs: f64,
    /// Median microseconds to classify one utterance (intent only).
    pub intent_us: f64,
    /// Median microseconds of `understand` (intent, language, entities, slots).
    pub understand_us: f64,
    pub tag_us: f64,
    pub model_bytes: usize,
    pub tagger_bytes: usize,
}

/// The intent the evaluation counts: the best class, with the synthesised `none` class only
/// allowed when the data set itself has a `None` intent.
fn predicted_label(nlu: &Nlu, text: &str, has_none: bool, none_label: &str) -> String {
    let (scores, _) = nlu.predict_intents(text, &[]);
    scores
        .iter()
        .find(|s| has_none || s.name != NONE_INTENT)
        .map(|s| {
            if s.name == NONE_INTENT {
                none_label.to_string()
            } else {
                s.name.clone()
            }
        })
        .unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Trains on `train` and scores `test` (intents always; entities when `entities` is set and
/// the training data has any).
pub fn run_split(
    train: &[Example],
    test: &[Example],
    opts: &IntentTraining,
    entities: bool,
) -> RunResult {
    let started = Instant::now();
    let defs = intents_from_examples(train);
    let nlu = Nlu::train_with(&defs, &[], &NluConfig::default(), opts);
    let train_secs = started.elapsed().as_secs_f64();
    let none_label = train
        .iter()
        .map(|e| e.intent.as_str())
        .find(|i| i.eq_ignore_ascii_case(NONE_INTENT))
        .unwrap_or(NONE_INTENT)
        .to_string();
    let has_none = train.iter().any(|e| e.intent == none_label);

    let mut result = RunResult {
        train_secs,
        model_bytes: nlu.size_bytes(),
        ..Default::default()
    };
    let mut intent_times = Vec::new();
    let mut predicted = Vec::with_capacity(test.len());
    for ex in test {
        let t = Instant::now();
        let p = predicted_label(&nlu, &ex.text, has_none, &none_label);
        intent_times.push(t.elapsed().as_secs_f64() * 1e6);
        result.intents.add(&ex.intent, &p);
        predicted.push(p);
    }
    result.intent_us = median(intent_times);
    let mut understand_times = Vec::new();
    for ex in test.iter().take(300) {
        let t = Instant::now();
        let _ = nlu.understand(&ex.text, &[], 0);
        understand_times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    result.understand_us = median(understand_times);

    if entities && train.iter().any(|e| !e.entities.is_empty()) {
        let t = Instant::now();
        let tagged: Vec<TaggedExample> = train
            .iter()
            .map(|e| TaggedExample {
                text: lowercase_keep_offsets(&e.text),
                intent: e.intent.clone(),
                spans: e
                    .entities
                    .iter()
                    .map(|s| (s.entity.clone(), s.start, s.end))
                    .collect(),
            })
            .collect();
        let tagger = SequenceTagger::train(&tagged, &Default::default());
        result.tagger_train_secs = t.elapsed().as_secs_f64();
        result.tagger_bytes = tagger.size_bytes();
        let mut counts = EntityCounts::default();
        let mut tag_times = Vec::new();
        for (ex, intent) in test.iter().zip(&predicted) {
            let t = Instant::now();
            let found = tagger.tag(&lowercase_keep_offsets(&ex.text), intent, None);
            tag_times.push(t.elapsed().as_secs_f64() * 1e6);
            let spans: Vec<Span> = found
                .into_iter()
                .map(|f| Span {
                    entity: f.label,
                    start: f.start,
                    end: f.end,
                })
                .collect();
            counts.add(&ex.entities, &spans);
        }
        result.tag_us = median(tag_times);
        result.entities = Some(counts);
    }
    result
}

// ---------------------------------------------------------------------------------------------
// Command line

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Splits a set for `nlu-eval`: Braun-shaped rows by their `training` flag, rows with a
/// `fold` by `--fold` (default 1), anything else wholly.
fn select(rows: Vec<Example>, want_training: bool, fold: u64) -> Vec<Example> {
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

/// `botd nlu-eval --train FILE --test FILE [--fold N]`: trains on one labelled set, tests on
/// the other and prints the scores. When a file has `training` flags (Braun) or `fold`
/// numbers (HWU64), the train side keeps the training rows (folds ≠ N) and the test side the
/// test rows (fold N), so the same file can be given twice.
pub fn cli_nlu_eval(args: &[String]) -> i32 {
    let (Some(train_path), Some(test_path)) =
        (arg_value(args, "--train"), arg_value(args, "--test"))
    else {
        eprintln!("usage: botd nlu-eval --train FILE --test FILE [--fold N]");
        return 2;
    };
    let fold = arg_value(args, "--fold")
        .and_then(|f| f.parse().ok())
        .unwrap_or(1);
    let load = |p: &str| load_examples(Path::new(p));
    let (train, test) = match (load(&train_path), load(&test_path)) {
        (Ok(a), Ok(b)) => (select(a, true, fold), select(b, false, fold)),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("nlu-eval: {e}");
            return 1;
        }
    };
    if train.is_empty() || test.is_empty() {
        eprintln!("nlu-eval: empty training or test set");
        return 1;
    }
    let r = run_split(&train, &test, &IntentTraining::default(), true);
    println!("train utterances   {}", train.len());
    println!("test utterances    {}", test.len());
    println!("accuracy           {:.4}", r.intents.accuracy());
    println!("macro-F1           {:.4}", r.intents.macro_f1());
    println!("micro-F1           {:.4}", r.intents.micro_f1());
    if let Some(e) = &r.entities {
        let (p, rc) = e.overlap_pr();
        println!(
            "entity overlap F1  {:.4} (P {:.3} R {:.3}); exact-span F1 {:.4}",
            e.overlap_f1(),
            p,
            rc,
            e.exact_f1()
        );
        println!("entity tagging     {:.1} µs/utterance", r.tag_us);
        println!("tagger training    {:.2} s", r.tagger_train_secs);
    }
    println!("intent             {:.1} µs/utterance", r.intent_us);
    println!("understand         {:.1} µs/utterance", r.understand_us);
    println!("training           {:.2} s", r.train_secs);
    println!("model size         {:.2} MB", r.model_bytes as f64 / 1e6);
    0
}

/// `botd nlu-bench [--data DIR] [--out FILE]` (stub until the full benchmark lands).
pub fn cli_nlu_bench(_args: &[String]) -> i32 {
    2
}
