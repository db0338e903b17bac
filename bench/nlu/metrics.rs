//! Scores: intent accuracy and F1, entity span F1, medians and spreads.

use std::collections::BTreeMap;

use crate::data::Span;

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

pub fn f1(tp: usize, fp: usize, fn_: usize) -> f64 {
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

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Mean and (population) standard deviation.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n;
    (m, var.sqrt())
}
