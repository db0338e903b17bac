//! Linear classifiers over sparse features: multinomial logistic regression (softmax) trained
//! by SGD with L2, one-vs-rest squared-hinge SVMs trained by dual coordinate descent (their
//! margins put through a softmax with a temperature fitted on held-out training data), or
//! both with their probabilities averaged (the default). A one-hidden-layer perceptron can
//! join or replace them (measured on the benchmark's dev sets, not used by default).
//!
//! Softmax gives calibrated-ish probabilities that sum to 1 over the classes of one context,
//! which the confidence threshold of §10 needs. Weights are kept only for feature buckets
//! seen in training and stored as bfloat16 to keep models small.

use super::features::Sparse;

/// Which loss the linear model is trained with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Solver {
    /// Multinomial logistic regression by SGD.
    Sgd,
    /// One-vs-rest L2-regularised squared-hinge SVM by dual coordinate descent (the
    /// LIBLINEAR / LinearSVC solver), margins turned into probabilities by a softmax whose
    /// temperature is fitted on held-out training data.
    Svm,
    /// Both, probabilities averaged.
    Both,
}

/// Training knobs. `l2` is per-example regularisation (λ in `λ/2·|w|²` per example).
#[derive(Debug, Clone, Copy)]
pub struct TrainConfig {
    pub solver: Solver,
    /// SVM: the cost C of `½|w|² + C·Σ max(0, 1 − y·w·x)²`.
    pub c: f32,
    /// SVM: stop when the projected-gradient spread falls below this.
    pub tol: f32,
    /// SVM: cap on passes over the data per class.
    pub max_iter: usize,
    /// SVM: folds used to fit the softmax temperature (held-out margins).
    pub calib_folds: usize,
    /// SVM: when > 0, scale each feature per class by its naive-Bayes log-count ratio
    /// (NBSVM, Wang & Manning 2012) with this smoothing; `nb_abs` scales by |r| instead of r.
    pub nb: f32,
    pub nb_abs: bool,
    pub epochs: usize,
    pub l2: f32,
    pub learning_rate: f32,
    /// Weigh each class by `n / (classes · n_class)` so that small classes are not drowned.
    pub balanced: bool,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            solver: Solver::Both,
            c: 1.0,
            tol: 0.1,
            max_iter: 200,
            calib_folds: 3,
            nb: 0.0,
            nb_abs: false,
            epochs: 20,
            l2: 1e-5,
            learning_rate: 0.5,
            balanced: true,
            seed: 42,
        }
    }
}

/// A small deterministic PRNG (xorshift64*), enough for shuffling and sampling.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    // Round to nearest even on the dropped 16 bits.
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

fn from_bf16(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// A trained softmax classifier.
#[derive(Debug, Clone)]
pub struct Softmax {
    classes: usize,
    /// Sorted feature buckets that have a weight row.
    buckets: Vec<u32>,
    /// Row-major `buckets.len() × classes` weights, bfloat16.
    weights: Vec<u16>,
    bias: Vec<f32>,
    /// Logits are `temperature × (w·x + b)` (1 for SGD; fitted for the SVM).
    temperature: f32,
    /// A second model whose probabilities are averaged with this one's.
    partner: Option<Box<Softmax>>,
}

impl Softmax {
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Trains with the configured solver.
    pub fn train(xs: &[Sparse], ys: &[usize], classes: usize, cfg: &TrainConfig) -> Softmax {
        Softmax::train_held_out(xs, ys, &vec![1.0; classes], cfg).0
    }

    /// [`Softmax::train`], also giving the SVM margins of the training examples that were held
    /// out to fit the temperature (empty for SGD alone, or when there was too little data):
    /// what this model's scores look like on utterances it has not seen.
    ///
    /// `class_scale` has one multiplier per class on its cost (after class balancing): a class
    /// of made-up examples can weigh less than one of real ones.
    pub fn train_held_out(
        xs: &[Sparse],
        ys: &[usize],
        class_scale: &[f32],
        cfg: &TrainConfig,
    ) -> (Softmax, Vec<HeldOut>) {
        match cfg.solver {
            Solver::Sgd => (Softmax::train_sgd(xs, ys, class_scale, cfg), Vec::new()),
            Solver::Svm => Softmax::train_svm(xs, ys, class_scale, cfg),
            Solver::Both => {
                let (mut m, held) = Softmax::train_svm(xs, ys, class_scale, cfg);
                let mut p = Softmax::train_sgd(xs, ys, class_scale, cfg);
                // Both were trained on the same examples, so they have the same rows: the
                // partner keeps none of its own (less memory, one search per prediction).
                if p.buckets == m.buckets {
                    p.buckets = Vec::new();
                }
                m.partner = Some(Box::new(p));
                (m, held)
            }
        }
    }

    fn train_sgd(xs: &[Sparse], ys: &[usize], class_scale: &[f32], cfg: &TrainConfig) -> Softmax {
        let classes = class_scale.len();
        // Re-index examples by row so the training loop does no searching.
        let (buckets, rows) = index_rows(xs);
        let class_weight = class_weights(ys, class_scale, cfg.balanced);

        let mut w = vec![0f32; buckets.len() * classes];
        let mut bias = vec![0f32; classes];
        let mut scale = 1.0f32;
        let mut order: Vec<usize> = (0..xs.len()).collect();
        let mut rng = Rng::new(cfg.seed);
        let mut scores = vec![0f32; classes];
        let mut t = 0f32;
        let eta0 = cfg.learning_rate;
        for _ in 0..cfg.epochs {
            rng.shuffle(&mut order);
            for &i in &order {
                let eta = eta0 / (1.0 + cfg.l2 * eta0 * t);
                t += 1.0;
                let x = &rows[i];
                scores.copy_from_slice(&bias);
                for &(r, v) in x {
                    let r = r as usize;
                    let row = &w[r * classes..(r + 1) * classes];
                    let sv = v * scale;
                    for (s, wv) in scores.iter_mut().zip(row) {
                        *s += sv * wv;
                    }
                }
                softmax_in_place(&mut scores);
                let cw = class_weight[ys[i]];
                scores[ys[i]] -= 1.0;
                // scores now holds the gradient of the loss w.r.t. the logits.
                for g in scores.iter_mut() {
                    *g *= cw;
                }
                scale *= 1.0 - eta * cfg.l2;
                let step = eta / scale;
                for &(r, v) in x {
                    let r = r as usize;
                    let row = &mut w[r * classes..(r + 1) * classes];
                    let sv = step * v;
                    for (wv, g) in row.iter_mut().zip(&scores) {
                        *wv -= sv * g;
                    }
                }
                for (b, g) in bias.iter_mut().zip(&scores) {
                    *b -= eta * g;
                }
                if scale < 1e-6 {
                    for wv in w.iter_mut() {
                        *wv *= scale;
                    }
                    scale = 1.0;
                }
            }
        }
        Softmax {
            classes,
            buckets,
            weights: w.iter().map(|&v| to_bf16(v * scale)).collect(),
            bias,
            temperature: 1.0,
            partner: None,
        }
    }

    /// One-vs-rest SVMs, then a softmax temperature fitted on held-out margins.
    fn train_svm(
        xs: &[Sparse],
        ys: &[usize],
        class_scale: &[f32],
        cfg: &TrainConfig,
    ) -> (Softmax, Vec<HeldOut>) {
        let classes = class_scale.len();
        let (buckets, w, bias) = svm_ovr(xs, ys, class_scale, cfg, None);
        let held = held_out_margins(xs, ys, class_scale, cfg);
        let temperature = if held.is_empty() {
            DEFAULT_TEMPERATURE
        } else {
            fit_temperature(&held)
        };
        let model = Softmax {
            classes,
            buckets,
            weights: w.iter().map(|&v| to_bf16(v)).collect(),
            bias,
            temperature,
            partner: None,
        };
        (model, held)
    }

    /// The weight rows of `x`'s features, with their values (features never seen in
    /// training have no row and count for nothing).
    fn rows_of(&self, x: &Sparse) -> Vec<(usize, f32)> {
        let mut out = Vec::with_capacity(x.len());
        // `x` is sorted like `buckets`: each search starts past the previous row, and a run
        // of consecutive buckets (the dense block) is found without searching.
        let mut from = 0;
        for (b, v) in x {
            let r = if self.buckets.get(from) == Some(b) {
                from
            } else {
                match self.buckets[from..].binary_search(b) {
                    Ok(i) => from + i,
                    Err(i) => {
                        from += i;
                        continue;
                    }
                }
            };
            from = r + 1;
            out.push((r, *v));
        }
        out
    }

    /// `w·x + b` of each class over rows found by [`Softmax::rows_of`].
    fn margins_of_rows(&self, rows: &[(usize, f32)]) -> Vec<f32> {
        let mut scores = self.bias.clone();
        let c = self.classes;
        for &(r, v) in rows {
            let row = &self.weights[r * c..(r + 1) * c];
            for (s, wv) in scores.iter_mut().zip(row) {
                *s += v * from_bf16(*wv);
            }
        }
        scores
    }

    /// `w·x + b` of each class, before the temperature.
    pub fn margins(&self, x: &Sparse) -> Vec<f32> {
        self.margins_of_rows(&self.rows_of(x))
    }

    /// Class probabilities (sum to 1).
    pub fn predict_proba(&self, x: &Sparse) -> Vec<f32> {
        self.predict(x).1
    }

    /// The margins `w·x + b` of this model (the SVM's, in the default ensemble) and the class
    /// probabilities, sharing one search for the feature rows.
    pub fn predict(&self, x: &Sparse) -> (Vec<f32>, Vec<f32>) {
        let rows = self.rows_of(x);
        let margins = self.margins_of_rows(&rows);
        let mut s: Vec<f32> = margins.iter().map(|m| m * self.temperature).collect();
        softmax_in_place(&mut s);
        if let Some(p) = &self.partner {
            // A partner without buckets of its own has this model's rows (see `train_held_out`).
            let mut q = if p.buckets.is_empty() {
                p.margins_of_rows(&rows)
            } else {
                p.margins(x)
            };
            q.iter_mut().for_each(|m| *m *= p.temperature);
            softmax_in_place(&mut q);
            for (a, b) in s.iter_mut().zip(q) {
                *a = (*a + b) / 2.0;
            }
        }
        (margins, s)
    }

    pub fn size_bytes(&self) -> usize {
        self.buckets.len() * 4
            + self.weights.len() * 2
            + self.bias.len() * 4
            + 4
            + self.partner.as_ref().map_or(0, |p| p.size_bytes())
    }
}

/// Examples re-indexed by weight row; u32 keeps an entry at 8 bytes (the SVM's inner loops
/// are bound by memory reads).
type Rows = Vec<Vec<(u32, f32)>>;

/// Sorted distinct buckets of `xs` and the examples re-indexed by position in that list.
fn index_rows(xs: &[Sparse]) -> (Vec<u32>, Rows) {
    let mut buckets: Vec<u32> = xs.iter().flat_map(|x| x.iter().map(|(b, _)| *b)).collect();
    buckets.sort_unstable();
    buckets.dedup();
    let rows = xs
        .iter()
        .map(|x| {
            x.iter()
                .map(|(b, v)| (buckets.binary_search(b).unwrap_or(0) as u32, *v))
                .collect()
        })
        .collect();
    (buckets, rows)
}

/// Per-class cost multipliers: `n / (classes · n_class)` when balancing, else 1, times the
/// class's `class_scale`.
fn class_weights(ys: &[usize], class_scale: &[f32], balanced: bool) -> Vec<f32> {
    let classes = class_scale.len();
    let mut counts = vec![0usize; classes];
    for &y in ys {
        counts[y] += 1;
    }
    counts
        .iter()
        .zip(class_scale)
        .map(|(&c, &scale)| {
            let balance = if balanced && c > 0 {
                ys.len() as f32 / (classes as f32 * c as f32)
            } else {
                1.0
            };
            balance * scale
        })
        .collect()
}

/// Trains the one-vs-rest SVMs on the examples in `subset` (all when `None`). Returns the
/// buckets, row-major `buckets × classes` weights and the biases.
fn svm_ovr(
    xs: &[Sparse],
    ys: &[usize],
    class_scale: &[f32],
    cfg: &TrainConfig,
    subset: Option<&[usize]>,
) -> (Vec<u32>, Vec<f32>, Vec<f32>) {
    let classes = class_scale.len();
    let all: Vec<usize>;
    let idx: &[usize] = match subset {
        Some(s) => s,
        None => {
            all = (0..xs.len()).collect();
            &all
        }
    };
    let sub_xs: Vec<Sparse> = idx.iter().map(|&i| xs[i].clone()).collect();
    let sub_ys: Vec<usize> = idx.iter().map(|&i| ys[i]).collect();
    let (buckets, rows) = index_rows(&sub_xs);
    let cw = class_weights(&sub_ys, class_scale, cfg.balanced);
    let dim = buckets.len();
    let mut w = vec![0f32; dim * classes];
    let mut bias = vec![0f32; classes];
    let mut wk = vec![0f32; dim];
    let mut scale = vec![1f32; dim];
    // Document frequency of each feature per class (for the NB ratios).
    let mut df: Vec<f32> = Vec::new();
    let mut total_df = vec![0f32; dim];
    if cfg.nb > 0.0 {
        df = vec![0f32; dim * classes];
        for (x, &y) in rows.iter().zip(&sub_ys) {
            for &(r, _) in x {
                df[r as usize * classes + y] += 1.0;
                total_df[r as usize] += 1.0;
            }
        }
    }
    for k in 0..classes {
        wk.iter_mut().for_each(|v| *v = 0.0);
        // A class with no examples here never wins: a large negative bias.
        if !sub_ys.contains(&k) {
            bias[k] = -10.0;
            continue;
        }
        if cfg.nb > 0.0 {
            let a = cfg.nb;
            let (mut sp, mut sq) = (0f32, 0f32);
            for r in 0..dim {
                let p = df[r * classes + k];
                sp += p + a;
                sq += total_df[r] - p + a;
            }
            for r in 0..dim {
                let p = df[r * classes + k];
                let q = total_df[r] - p;
                let ratio = ((p + a) / sp).ln() - ((q + a) / sq).ln();
                scale[r] = if cfg.nb_abs { ratio.abs() } else { ratio };
            }
        }
        // The NB ratios scale the features; without them the rows are used as they are.
        let scaled: Rows;
        let class_rows = if cfg.nb > 0.0 {
            scaled = rows
                .iter()
                .map(|x| x.iter().map(|&(r, v)| (r, v * scale[r as usize])).collect())
                .collect();
            &scaled
        } else {
            &rows
        };
        let b = svm_binary(class_rows, &sub_ys, k, &cw, cfg, &mut wk);
        bias[k] = b;
        for (r, v) in wk.iter().enumerate() {
            w[r * classes + k] = *v * scale[r];
        }
    }
    (buckets, w, bias)
}

/// Dual coordinate descent for the L2-regularised squared-hinge loss (Hsieh et al. 2008),
/// with shrinking; the bias is an extra feature of value 1 (regularised, as in LIBLINEAR).
/// Positive class: `ys[i] == k`. Writes the weights into `w`, returns the bias.
fn svm_binary(
    rows: &Rows,
    ys: &[usize],
    k: usize,
    cw: &[f32],
    cfg: &TrainConfig,
    w: &mut [f32],
) -> f32 {
    let n = rows.len();
    let mut b = 0f32;
    let mut alpha = vec![0f32; n];
    let diag: Vec<f32> = ys.iter().map(|&y| 0.5 / (cfg.c * cw[y])).collect();
    let qd: Vec<f32> = rows
        .iter()
        .zip(&diag)
        .map(|(x, d)| x.iter().map(|&(_, v)| v * v).sum::<f32>() + 1.0 + d)
        .collect();
    let sign: Vec<f32> = ys
        .iter()
        .map(|&y| if y == k { 1.0 } else { -1.0 })
        .collect();
    let mut active: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(0x5eed ^ k as u64);
    // No upper bound on α for the squared hinge, so only the lower-bound shrinking test.
    let mut pg_max_old = f32::INFINITY;
    for _ in 0..cfg.max_iter {
        rng.shuffle(&mut active);
        let mut pg_max = f32::NEG_INFINITY;
        let mut pg_min = f32::INFINITY;
        let mut s = 0;
        while s < active.len() {
            let i = active[s];
            let x = &rows[i];
            let y = sign[i];
            let mut dot = b;
            for &(r, v) in x {
                dot += w[r as usize] * v;
            }
            let g = y * dot - 1.0 + diag[i] * alpha[i];
            let pg = if alpha[i] == 0.0 {
                if g > pg_max_old {
                    // Shrink: at the bound and likely to stay there.
                    active.swap_remove(s);
                    continue;
                }
                g.min(0.0)
            } else {
                g
            };
            pg_max = pg_max.max(pg);
            pg_min = pg_min.min(pg);
            if pg.abs() > 1e-12 {
                let old = alpha[i];
                alpha[i] = (old - g / qd[i]).max(0.0);
                let d = (alpha[i] - old) * y;
                for &(r, v) in x {
                    w[r as usize] += d * v;
                }
                b += d;
            }
            s += 1;
        }
        if pg_max - pg_min <= cfg.tol {
            if active.len() == n {
                break;
            }
            // Converged on the active set: check everything once more.
            active = (0..n).collect();
            pg_max_old = f32::INFINITY;
            continue;
        }
        pg_max_old = if pg_max <= 0.0 { f32::INFINITY } else { pg_max };
    }
    b
}

/// The SVM margins of one training example predicted by SVMs that did not see it.
#[derive(Debug, Clone)]
pub struct HeldOut {
    pub margins: Vec<f32>,
    pub class: usize,
}

/// Held-out margins: the training data is split into `cfg.calib_folds` folds, each predicted
/// by SVMs trained on the others (one fold only for large sets). Empty when there is too
/// little data to hold any out.
fn held_out_margins(
    xs: &[Sparse],
    ys: &[usize],
    class_scale: &[f32],
    cfg: &TrainConfig,
) -> Vec<HeldOut> {
    let classes = class_scale.len();
    let folds = cfg.calib_folds;
    if folds < 2 || xs.len() < 2 * folds {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..xs.len()).collect();
    Rng::new(cfg.seed ^ 0xca1b).shuffle(&mut order);
    let mut held: Vec<HeldOut> = Vec::with_capacity(xs.len());
    // With thousands of examples one held-out fold is plenty for a single parameter, and
    // saves two refits.
    let rounds = if xs.len() >= CALIB_ONE_FOLD_FROM {
        1
    } else {
        folds
    };
    for f in 0..rounds {
        let train_idx: Vec<usize> = order
            .iter()
            .enumerate()
            .filter(|(p, _)| p % folds != f)
            .map(|(_, &i)| i)
            .collect();
        let (buckets, w, bias) = svm_ovr(xs, ys, class_scale, cfg, Some(&train_idx));
        let model = Softmax {
            classes,
            buckets,
            weights: w.iter().map(|&v| to_bf16(v)).collect(),
            bias,
            temperature: 1.0,
            partner: None,
        };
        let mut seen = vec![false; classes];
        for &i in &train_idx {
            seen[ys[i]] = true;
        }
        // A class with no example in this round's training part cannot be scored fairly (its
        // margin is the "never wins" bias): such utterances would drag the temperature to
        // its floor, leaving the SVM's probabilities flat for small bots.
        for (_, &i) in order
            .iter()
            .enumerate()
            .filter(|(p, &i)| p % folds == f && seen[ys[i]])
        {
            held.push(HeldOut {
                margins: model.margins(&xs[i]),
                class: ys[i],
            });
        }
    }
    held
}

/// The softmax temperature that minimises the log-loss of held-out margins.
fn fit_temperature(held: &[HeldOut]) -> f32 {
    let nll = |t: f32| -> f64 {
        let mut total = 0f64;
        for HeldOut {
            margins: m,
            class: y,
        } in held
        {
            let max = m.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let z: f64 = m.iter().map(|v| (((v - max) * t) as f64).exp()).sum();
            total += z.ln() - ((m[*y] - max) * t) as f64;
        }
        total
    };
    // Golden-section search on log t over [0.1, 100].
    let (mut lo, mut hi) = (0.1f32.ln(), 100f32.ln());
    let phi = 0.618_034f32;
    let mut a = hi - phi * (hi - lo);
    let mut bb = lo + phi * (hi - lo);
    let (mut fa, mut fb) = (nll(a.exp()), nll(bb.exp()));
    for _ in 0..40 {
        if fa < fb {
            hi = bb;
            bb = a;
            fb = fa;
            a = hi - phi * (hi - lo);
            fa = nll(a.exp());
        } else {
            lo = a;
            a = bb;
            fa = fb;
            bb = lo + phi * (hi - lo);
            fb = nll(bb.exp());
        }
    }
    ((lo + hi) / 2.0).exp()
}

/// From this many examples on, the temperature is fitted on one held-out fold only.
const CALIB_ONE_FOLD_FROM: usize = 2000;

/// Used when there is too little data to hold any out.
const DEFAULT_TEMPERATURE: f32 = 5.0;

pub fn softmax_in_place(s: &mut [f32]) {
    let max = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in s.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if sum > 0.0 {
        for v in s.iter_mut() {
            *v /= sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_round_trip_is_close() {
        for x in [0.0f32, 1.0, -3.25, 0.001234, 123.456] {
            let y = from_bf16(to_bf16(x));
            assert!((x - y).abs() <= x.abs() / 128.0, "{x} {y}");
        }
    }

    #[test]
    fn a_class_with_one_example_leaves_the_svm_confident() {
        // Held out, the lone example of class 2 has no class to be scored against; it must not
        // drag the fitted temperature down until every probability is the same.
        let mut xs: Vec<Sparse> = Vec::new();
        let mut ys = Vec::new();
        for i in 0..6u32 {
            xs.push(vec![(1, 0.9), (10 + i, 0.4)]);
            ys.push(0);
            xs.push(vec![(2, 0.9), (20 + i, 0.4)]);
            ys.push(1);
        }
        xs.push(vec![(3, 1.0)]);
        ys.push(2);
        let cfg = TrainConfig {
            solver: Solver::Svm,
            ..TrainConfig::default()
        };
        let m = Softmax::train(&xs, &ys, 3, &cfg);
        let p = m.predict_proba(&vec![(1, 1.0)]);
        assert!(p[0] > 0.6, "{p:?}");
    }

    #[test]
    fn learns_a_separable_problem() {
        let xs: Vec<Sparse> = vec![vec![(1, 1.0)], vec![(2, 1.0)], vec![(1, 0.9), (3, 0.1)]];
        let ys = vec![0, 1, 0];
        let m = Softmax::train(&xs, &ys, 2, &TrainConfig::default());
        let p = m.predict_proba(&vec![(1, 1.0)]);
        assert!(p[0] > 0.8, "{p:?}");
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        let q = m.predict_proba(&vec![(2, 1.0)]);
        assert!(q[1] > 0.8, "{q:?}");
    }
}
