//! Training on one set and scoring another, and the benchmark's runs (RESULTS.md §5).

use std::path::Path;
use std::time::Instant;

use botd::engine::nlu::slots::{lowercase_keep_offsets, SequenceTagger, TaggedExample};
use botd::engine::nlu::{IntentTraining, Nlu, NluConfig, NONE_INTENT};

use crate::data::{
    few_shot_sample, intents_from_examples, load_examples, select, Clinc, Example, Span,
};
use crate::metrics::{median, EntityCounts, IntentCounts};

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
    /// The intent predicted for each test utterance, in order.
    pub predictions: Vec<String>,
    /// The three best classes of each test utterance with their confidences (for `--errors`).
    pub top3: Vec<String>,
}

/// The intent the evaluation counts: the best class, with the synthesised `none` class only
/// allowed when the data set itself has a `None` intent.
fn predicted_label(nlu: &Nlu, text: &str, has_none: bool, none_label: &str) -> String {
    let scores = nlu.predict_intents(text, &[]).intents;
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
    result.predictions = predicted.clone();
    result.top3 = test
        .iter()
        .map(|ex| {
            let p = nlu.predict_intents(&ex.text, &[]);
            let best: Vec<String> = p
                .intents
                .iter()
                .take(3)
                .map(|s| format!("{} {:.2}", s.name, s.confidence))
                .collect();
            format!("[{}] scope {:?}", best.join(", "), p.scope)
        })
        .collect();
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

/// HWU64 10-fold results.
pub struct KFold {
    pub intents: IntentCounts,
    pub entities: EntityCounts,
    pub fold_acc: Vec<f64>,
    pub train_secs: Vec<f64>,
    pub tagger_secs: Vec<f64>,
    pub intent_us: Vec<f64>,
    pub understand_us: Vec<f64>,
    pub tag_us: Vec<f64>,
    pub model_bytes: usize,
    pub tagger_bytes: usize,
}

pub fn run_kfold(rows: &[Example], opts: &IntentTraining) -> KFold {
    let folds: Vec<u64> = {
        let mut f: Vec<u64> = rows.iter().filter_map(|r| r.fold).collect();
        f.sort_unstable();
        f.dedup();
        f
    };
    // Two folds at a time: the benchmark machine has two cores.
    let results: Vec<(u64, RunResult)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|lane| {
                let folds = &folds;
                scope.spawn(move || {
                    let mut out = Vec::new();
                    for &k in folds.iter().skip(lane).step_by(2) {
                        let train: Vec<Example> =
                            rows.iter().filter(|r| r.fold != Some(k)).cloned().collect();
                        let test: Vec<Example> =
                            rows.iter().filter(|r| r.fold == Some(k)).cloned().collect();
                        let r = run_split(&train, &test, opts, true);
                        eprintln!(
                            "  fold {k}: accuracy {:.4}, entity overlap F1 {:.4}",
                            r.intents.accuracy(),
                            r.entities.map_or(0.0, |e| e.overlap_f1())
                        );
                        out.push((k, r));
                    }
                    out
                })
            })
            .collect();
        let mut all: Vec<(u64, RunResult)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        all.sort_by_key(|(k, _)| *k);
        all
    });
    let mut kf = KFold {
        intents: IntentCounts::default(),
        entities: EntityCounts::default(),
        fold_acc: Vec::new(),
        train_secs: Vec::new(),
        tagger_secs: Vec::new(),
        intent_us: Vec::new(),
        understand_us: Vec::new(),
        tag_us: Vec::new(),
        model_bytes: 0,
        tagger_bytes: 0,
    };
    for (_, r) in &results {
        kf.intents.merge(&r.intents);
        if let Some(e) = &r.entities {
            kf.entities.merge(e);
        }
        kf.fold_acc.push(r.intents.accuracy());
        kf.train_secs.push(r.train_secs);
        kf.tagger_secs.push(r.tagger_train_secs);
        kf.intent_us.push(r.intent_us);
        kf.understand_us.push(r.understand_us);
        kf.tag_us.push(r.tag_us);
        kf.model_bytes = kf.model_bytes.max(r.model_bytes);
        kf.tagger_bytes = kf.tagger_bytes.max(r.tagger_bytes);
    }
    kf
}

pub struct FewShot {
    pub shots: usize,
    pub acc: Vec<f64>,
    pub macro_f1: Vec<f64>,
}

pub fn run_few_shot(rows: &[Example], opts: &IntentTraining) -> Vec<FewShot> {
    let train: Vec<Example> = rows.iter().filter(|r| r.fold != Some(1)).cloned().collect();
    let test: Vec<Example> = rows.iter().filter(|r| r.fold == Some(1)).cloned().collect();
    [10usize, 30]
        .iter()
        .map(|&shots| {
            let runs: Vec<RunResult> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..5u64)
                    .map(|seed| {
                        let (train, test) = (&train, &test);
                        scope.spawn(move || {
                            let sample = few_shot_sample(train, shots, seed);
                            run_split(&sample, test, opts, false)
                        })
                    })
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            FewShot {
                shots,
                acc: runs.iter().map(|r| r.intents.accuracy()).collect(),
                macro_f1: runs.iter().map(|r| r.intents.macro_f1()).collect(),
            }
        })
        .collect()
}

pub struct BraunRun {
    pub corpus: String,
    pub n_train: usize,
    pub result: RunResult,
}

pub fn run_braun(dir: &Path, opts: &IntentTraining) -> Result<Vec<BraunRun>, String> {
    let mut out = Vec::new();
    for corpus in ["ChatbotCorpus", "AskUbuntuCorpus", "WebApplicationsCorpus"] {
        let rows = load_examples(&dir.join(format!("{corpus}.json")))?;
        let train = select(rows.clone(), true, 0);
        let test = select(rows, false, 0);
        let result = run_split(&train, &test, opts, false);
        out.push(BraunRun {
            corpus: corpus.to_string(),
            n_train: train.len(),
            result,
        });
    }
    Ok(out)
}

/// CLINC150 in Larson et al.'s protocol, one way of training (with or without `oos_train`).
pub struct ClincRun {
    pub with_oos_train: bool,
    /// `nlu.intent` as a bot gets it: the floor learned from training data alone, Botpress's
    /// confidence rule; nothing tuned on `val`.
    pub runtime: OosScore,
    pub runtime_val: OosScore,
    /// The best real intent unless the scope margin is under a threshold picked on
    /// `val`/`oos_val` (the paper's threshold protocol).
    pub tuned: OosScore,
    pub tuned_val: OosScore,
    /// In-scope `val` accuracy of the best real intent, with no threshold.
    pub plain_val: f64,
    pub threshold: f32,
    pub intent_us: f64,
    pub model_bytes: usize,
    pub train_secs: f64,
}

/// In-scope accuracy (out-of-scope predictions count as wrong) and out-of-scope recall.
#[derive(Debug, Clone, Copy, Default)]
pub struct OosScore {
    pub in_scope_acc: f64,
    pub oos_recall: f64,
}

/// Per utterance: gold (`None` for out-of-scope), the runtime's intent, the best real
/// intent and the scope margin.
struct Scored {
    gold: Option<String>,
    runtime: String,
    best: String,
    top_none: bool,
    scope: f32,
}

fn score_all(
    nlu: &Nlu,
    in_scope: &[Example],
    oos: &[Example],
    times: &mut Vec<f64>,
) -> Vec<Scored> {
    let mut out = Vec::new();
    for (ex, is_oos) in in_scope
        .iter()
        .map(|e| (e, false))
        .chain(oos.iter().map(|e| (e, true)))
    {
        let t = Instant::now();
        let p = nlu.predict_intents(&ex.text, &[]);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        let best = p
            .intents
            .iter()
            .find(|s| s.name != NONE_INTENT)
            .map_or(String::new(), |s| s.name.clone());
        out.push(Scored {
            gold: (!is_oos).then(|| ex.intent.clone()),
            runtime: nlu.choose(&p).name,
            top_none: p.intents.first().is_some_and(|s| s.name == NONE_INTENT),
            best,
            scope: p.scope.unwrap_or(f32::INFINITY),
        });
    }
    out
}

fn oos_score(items: &[Scored], predict: impl Fn(&Scored) -> Option<String>) -> OosScore {
    let (mut ok, mut n_in, mut caught, mut n_oos) = (0usize, 0usize, 0usize, 0usize);
    for s in items {
        let p = predict(s);
        match &s.gold {
            Some(g) => {
                n_in += 1;
                ok += usize::from(p.as_ref() == Some(g));
            }
            None => {
                n_oos += 1;
                caught += usize::from(p.is_none());
            }
        }
    }
    OosScore {
        in_scope_acc: ok as f64 / n_in.max(1) as f64,
        oos_recall: caught as f64 / n_oos.max(1) as f64,
    }
}

fn runtime_label(s: &Scored) -> Option<String> {
    (s.runtime != NONE_INTENT).then(|| s.runtime.clone())
}

/// How much in-scope `val` accuracy the tuned threshold may give up.
pub const TUNED_IN_SCOPE_COST: f64 = 0.01;

/// Trains on `train` (+ `oos_train` as the bot's `none` intent), picks the threshold on
/// `val`/`oos_val` and scores `test`/`oos_test`.
pub fn run_clinc(c: &Clinc, opts: &IntentTraining, with_oos_train: bool) -> ClincRun {
    let mut train = c.train.clone();
    if with_oos_train {
        train.extend(c.oos_train.iter().map(|e| Example {
            intent: NONE_INTENT.to_string(),
            ..e.clone()
        }));
    }
    let started = Instant::now();
    let nlu = Nlu::train_with(
        &intents_from_examples(&train),
        &[],
        &NluConfig::default(),
        opts,
    );
    let train_secs = started.elapsed().as_secs_f64();
    let mut times = Vec::new();
    let val = score_all(&nlu, &c.val, &c.oos_val, &mut Vec::new());
    let test = score_all(&nlu, &c.test, &c.oos_test, &mut times);
    // With `oos_train` the bot's own `none` class may win; without, only real intents count
    // (the paper's threshold protocol).
    let label_at = |t: f32, s: &Scored| -> Option<String> {
        (s.scope >= t && !(with_oos_train && s.top_none)).then(|| s.best.clone())
    };
    // The lowest threshold that keeps in-scope `val` accuracy within 1 point of the
    // unthresholded one, raised while it catches more `oos_val` than it costs: the highest
    // out-of-scope recall at that in-scope cost.
    let plain = oos_score(&val, |s| label_at(f32::NEG_INFINITY, s)).in_scope_acc;
    let mut candidates: Vec<f32> = val
        .iter()
        .map(|s| s.scope)
        .filter(|v| v.is_finite())
        .collect();
    candidates.sort_by(|a, b| a.total_cmp(b));
    candidates.dedup();
    let mut threshold = f32::NEG_INFINITY;
    let mut best = -1.0;
    for &t in candidates.iter().step_by((candidates.len() / 1000).max(1)) {
        let sc = oos_score(&val, |s| label_at(t, s));
        if sc.in_scope_acc + TUNED_IN_SCOPE_COST >= plain && sc.oos_recall > best {
            best = sc.oos_recall;
            threshold = t;
        }
    }
    ClincRun {
        with_oos_train,
        runtime: oos_score(&test, runtime_label),
        runtime_val: oos_score(&val, runtime_label),
        tuned: oos_score(&test, |s| label_at(threshold, s)),
        tuned_val: oos_score(&val, |s| label_at(threshold, s)),
        plain_val: plain,
        threshold,
        intent_us: median(times),
        model_bytes: nlu.size_bytes(),
        train_secs,
    }
}
