//! `nlu`: the NLU's evaluation and benchmark tools, outside the server (`cargo run --release
//! --example nlu -- <eval|bench|dev> ...`; `make bench-nlu` runs `bench`). They use only the
//! public API of the `botd` library: a running bot needs none of this.

mod data;
mod metrics;
mod report;
mod run;

use std::path::Path;
use std::time::Instant;

use botd::engine::nlu::IntentTraining;

use crate::data::{load_examples, select, Example};
use crate::metrics::{mean_std, median, IntentCounts};
use crate::run::{run_braun, run_few_shot, run_kfold, run_split};

const USAGE: &str = "usage: cargo run --release --example nlu -- COMMAND
  eval --train FILE --test FILE [--fold N] [--errors] [--set k=v]...
                                             train on one labelled set, score it on another
                                             (--errors: list the misclassified utterances)
  bench [--data DIR] [--out FILE]            the benchmark of ../shared/nlu-bench (bench/NLU.md)
  dev [--data DIR] [--set k=v]...            development scores (no test folds)
  clinc-dev [--data DIR] [--set k=v]...      CLINC150 out-of-scope scores on val/oos_val only";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let code = match args.first().map(String::as_str) {
        Some("eval") => cmd_eval(rest),
        Some("bench") => cmd_bench(rest),
        Some("dev") => cmd_dev(rest),
        Some("clinc-dev") => cmd_clinc_dev(rest),
        Some("-h") | Some("--help") | Some("help") => {
            println!("{USAGE}");
            0
        }
        _ => {
            eprintln!("{USAGE}");
            2
        }
    };
    std::process::exit(code);
}

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// `eval --train FILE --test FILE [--fold N]`: trains on one labelled set, tests on
/// the other and prints the scores. When a file has `training` flags (Braun) or `fold`
/// numbers (HWU64), the train side keeps the training rows (folds ≠ N) and the test side the
/// test rows (fold N), so the same file can be given twice.
fn cmd_eval(args: &[String]) -> i32 {
    let (Some(train_path), Some(test_path)) =
        (arg_value(args, "--train"), arg_value(args, "--test"))
    else {
        eprintln!("{USAGE}");
        return 2;
    };
    let fold = arg_value(args, "--fold")
        .and_then(|f| f.parse().ok())
        .unwrap_or(1);
    let load = |p: &str| load_examples(Path::new(p));
    let (train, test) = match (load(&train_path), load(&test_path)) {
        (Ok(a), Ok(b)) => (select(a, true, fold), select(b, false, fold)),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("eval: {e}");
            return 1;
        }
    };
    if train.is_empty() || test.is_empty() {
        eprintln!("eval: empty training or test set");
        return 1;
    }
    let opts = match settings(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("eval: {e}");
            return 2;
        }
    };
    let r = run_split(&train, &test, &opts, true);
    if args.iter().any(|a| a == "--errors") {
        for ((ex, p), top) in test.iter().zip(&r.predictions).zip(&r.top3) {
            if &ex.intent != p {
                println!("{:<24} → {:<24} {}\n    {top}", ex.intent, p, ex.text);
            }
        }
    }
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
        println!("tagger size        {:.2} MB", r.tagger_bytes as f64 / 1e6);
    }
    println!("intent             {:.1} µs/utterance", r.intent_us);
    println!("understand         {:.1} µs/utterance", r.understand_us);
    println!("training           {:.2} s", r.train_secs);
    println!("model size         {:.2} MB", r.model_bytes as f64 / 1e6);
    0
}

/// `bench [--data ../shared/nlu-bench] [--out bench/NLU.md]`: every data set with
/// the protocol of RESULTS.md §5; writes our numbers beside the published ones.
fn cmd_bench(args: &[String]) -> i32 {
    let data = arg_value(args, "--data").unwrap_or_else(|| "../shared/nlu-bench".to_string());
    let out = arg_value(args, "--out").unwrap_or_else(|| "bench/NLU.md".to_string());
    let data = Path::new(&data);
    let opts = IntentTraining::default();
    let started = Instant::now();
    let rows = match load_examples(&data.join("hwu64/hwu64_folds.jsonl")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: {e}");
            return 1;
        }
    };
    eprintln!("HWU64 10-fold ({} utterances)", rows.len());
    let kf = run_kfold(&rows, &opts);
    eprintln!("HWU64 few-shot (fold 1, seeds 0-4)");
    let fs = run_few_shot(&rows, &opts);
    eprintln!("Braun corpora");
    let braun = match run_braun(&data.join("braun"), &opts) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bench: {e}");
            return 1;
        }
    };
    eprintln!("CLINC150 (without and with oos_train; thresholds on val/oos_val)");
    let clinc = match crate::data::load_clinc(&data.join("clinc150/data_full.json")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench: {e}");
            return 1;
        }
    };
    // The two trainings side by side: the machine has two cores.
    let clinc_runs: Vec<crate::run::ClincRun> = std::thread::scope(|scope| {
        let handles: Vec<_> = [false, true]
            .into_iter()
            .map(|with| {
                let (clinc, opts) = (&clinc, &opts);
                scope.spawn(move || crate::run::run_clinc(clinc, opts, with))
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let md = crate::report::render_markdown(
        &kf,
        &fs,
        &braun,
        &clinc_runs,
        started.elapsed().as_secs_f64(),
    );
    if let Some(parent) = Path::new(&out).parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(e) = std::fs::write(&out, &md) {
        eprintln!("bench: cannot write {out}: {e}");
        return 1;
    }
    print!("{md}");
    0
}

// ---------------------------------------------------------------------------------------------
// Development runs (never on test folds)

/// Applies `key=value` overrides to the training options (for `dev`).
fn apply_setting(opts: &mut IntentTraining, kv: &str) -> Result<(), String> {
    use botd::engine::nlu::classifier::Solver;
    let (k, v) = kv
        .split_once('=')
        .ok_or(format!("expected key=value: {kv}"))?;
    let f = || v.parse::<f32>().map_err(|e| format!("{kv}: {e}"));
    let u = || v.parse::<usize>().map_err(|e| format!("{kv}: {e}"));
    match k {
        "solver" => {
            opts.train.solver = match v {
                "sgd" => Solver::Sgd,
                "svm" => Solver::Svm,
                "both" => Solver::Both,
                _ => return Err(format!("unknown solver {v}")),
            }
        }
        "c" => opts.train.c = f()?,
        "tol" => opts.train.tol = f()?,
        "max_iter" => opts.train.max_iter = u()?,
        "calib" => opts.train.calib_folds = u()?,
        "nb" => opts.train.nb = f()?,
        "nb_abs" => opts.train.nb_abs = v == "1",
        "balanced" => opts.train.balanced = v == "1",
        "epochs" => opts.train.epochs = u()?,
        "seed_salt" => opts.seed_salt = v.parse::<u64>().map_err(|e| format!("{kv}: {e}"))?,
        "l2" => opts.train.l2 = f()?,
        "synth_none" => opts.synth_none = v == "1",
        "scope_loss" => opts.scope_loss = f()?,
        "meaning_loss" => opts.meaning_loss = f()?,
        "synthetic_weight" => opts.synthetic_weight = f()?,
        "none_weight" => opts.none_weight = f()?,
        "word_weight" => opts.features.word_weight = f()?,
        "vector_weight" => opts.features.vector_weight = f()?,
        "char_weight" => opts.features.char_weight = f()?,
        "bits" => opts.features.buckets = 1 << u()?,
        "word_hi" => opts.features.word_ngrams.1 = u()?,
        "char_lo" => opts.features.char_ngrams.0 = u()?,
        "char_hi" => opts.features.char_ngrams.1 = u()?,
        _ => return Err(format!("unknown setting {k}")),
    }
    Ok(())
}

/// `dev [--data DIR] [--set key=value]... [--braun-test]`: development scores that
/// never look at a test fold. HWU64: inside fold 1's training data, train on folds 2-10
/// minus v and validate on v = 2, 3, 4 (3,228 utterances). Braun: 5-fold cross-validation
/// over each corpus' *training* rows. `--braun-test` also prints the Braun test score (for
/// the final report only).
fn cmd_dev(args: &[String]) -> i32 {
    let data = arg_value(args, "--data").unwrap_or_else(|| "../shared/nlu-bench".to_string());
    let data = Path::new(&data);
    let opts = match settings(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("dev: {e}");
            return 2;
        }
    };
    let skip_hwu = args.iter().any(|a| a == "--no-hwu");
    if !skip_hwu {
        let rows = match load_examples(&data.join("hwu64/hwu64_folds.jsonl")) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("dev: {e}");
                return 1;
            }
        };
        let mut counts = IntentCounts::default();
        let mut secs = Vec::new();
        let mut bytes = 0;
        let mut us = Vec::new();
        for v in [2u64, 3, 4] {
            let train: Vec<Example> = rows
                .iter()
                .filter(|r| r.fold != Some(1) && r.fold != Some(v))
                .cloned()
                .collect();
            let test: Vec<Example> = rows.iter().filter(|r| r.fold == Some(v)).cloned().collect();
            let r = run_split(&train, &test, &opts, false);
            println!("hwu64 dev fold {v}: {:.4}", r.intents.accuracy());
            counts.merge(&r.intents);
            secs.push(r.train_secs);
            bytes = bytes.max(r.model_bytes);
            us.push(r.intent_us);
        }
        println!(
            "hwu64 dev (3 folds): {:.4}  train {:.2} s  model {:.2} MB  {:.1} µs",
            counts.accuracy(),
            mean_std(&secs).0,
            bytes as f64 / 1e6,
            median(us)
        );
    }
    let braun_test = args.iter().any(|a| a == "--braun-test");
    let mut cv = IntentCounts::default();
    let mut test_counts = IntentCounts::default();
    for corpus in ["ChatbotCorpus", "AskUbuntuCorpus", "WebApplicationsCorpus"] {
        let rows = match load_examples(&data.join(format!("braun/{corpus}.json"))) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("dev: {e}");
                return 1;
            }
        };
        let train = select(rows.clone(), true, 0);
        let mut c = IntentCounts::default();
        for f in 0..5 {
            let tr: Vec<Example> = train
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 5 != f)
                .map(|(_, e)| e.clone())
                .collect();
            let te: Vec<Example> = train
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 5 == f)
                .map(|(_, e)| e.clone())
                .collect();
            c.merge(&run_split(&tr, &te, &opts, false).intents);
        }
        print!("{corpus} train-CV {}/{}", c.correct, c.total);
        cv.merge(&c);
        if braun_test {
            let r = run_split(&train, &select(rows, false, 0), &opts, false);
            print!("  test {}/{}", r.intents.correct, r.intents.total);
            test_counts.merge(&r.intents);
        }
        println!();
    }
    print!(
        "braun train-CV: {:.4} ({}/{})",
        cv.accuracy(),
        cv.correct,
        cv.total
    );
    if braun_test {
        print!(
            "  test: {:.4} ({}/{})",
            test_counts.accuracy(),
            test_counts.correct,
            test_counts.total
        );
    }
    println!();
    0
}

/// Options from `--set key=value` arguments.
fn settings(args: &[String]) -> Result<IntentTraining, String> {
    let mut opts = IntentTraining::default();
    for (i, a) in args.iter().enumerate() {
        if a == "--set" {
            if let Some(kv) = args.get(i + 1) {
                apply_setting(&mut opts, kv)?;
            }
        }
    }
    Ok(opts)
}

/// `clinc-dev [--data DIR] [--set key=value]... [--oos-train]`: CLINC150 trained on `train`
/// (and `oos_train`), scored on `val`/`oos_val` only, for choosing the out-of-scope settings.
fn cmd_clinc_dev(args: &[String]) -> i32 {
    let data = arg_value(args, "--data").unwrap_or_else(|| "../shared/nlu-bench".to_string());
    let opts = match settings(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("clinc-dev: {e}");
            return 2;
        }
    };
    let clinc = match crate::data::load_clinc(&Path::new(&data).join("clinc150/data_full.json")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("clinc-dev: {e}");
            return 1;
        }
    };
    let with = args.iter().any(|a| a == "--oos-train");
    let r = crate::run::run_clinc(&clinc, &opts, with);
    println!(
        "val plain in-scope {:.4} | val runtime: in-scope {:.4} oos recall {:.4} | val tuned (t = {:.3}): in-scope {:.4} oos recall {:.4} | train {:.1} s, {:.1} µs, {:.2} MB",
        r.plain_val,
        r.runtime_val.in_scope_acc,
        r.runtime_val.oos_recall,
        r.threshold,
        r.tuned_val.in_scope_acc,
        r.tuned_val.oos_recall,
        r.train_secs,
        r.intent_us,
        r.model_bytes as f64 / 1e6
    );
    0
}
