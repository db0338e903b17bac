//! Multinomial logistic regression (softmax) over sparse features, trained by SGD with L2.
//!
//! Softmax gives calibrated-ish probabilities that sum to 1 over the classes of one context,
//! which the confidence threshold of §10 needs. Weights are kept only for feature buckets
//! seen in training and stored as bfloat16 to keep models small.

use super::features::Sparse;

/// Training knobs. `l2` is per-example regularisation (λ in `λ/2·|w|²` per example).
#[derive(Debug, Clone, Copy)]
pub struct TrainConfig {
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
}

impl Softmax {
    pub fn classes(&self) -> usize {
        self.classes
    }

    pub fn train(xs: &[Sparse], ys: &[usize], classes: usize, cfg: &TrainConfig) -> Softmax {
        let mut buckets: Vec<u32> = xs.iter().flat_map(|x| x.iter().map(|(b, _)| *b)).collect();
        buckets.sort_unstable();
        buckets.dedup();
        // Re-index examples by row so the training loop does no searching.
        let rows: Vec<Vec<(usize, f32)>> = xs
            .iter()
            .map(|x| {
                x.iter()
                    .map(|(b, v)| (buckets.binary_search(b).unwrap_or(0), *v))
                    .collect()
            })
            .collect();
        let mut counts = vec![0usize; classes];
        for &y in ys {
            counts[y] += 1;
        }
        let class_weight: Vec<f32> = counts
            .iter()
            .map(|&c| {
                if cfg.balanced && c > 0 {
                    xs.len() as f32 / (classes as f32 * c as f32)
                } else {
                    1.0
                }
            })
            .collect();

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
        }
    }

    /// Raw scores (logits) of each class.
    pub fn logits(&self, x: &Sparse) -> Vec<f32> {
        let mut scores = self.bias.clone();
        let c = self.classes;
        for (b, v) in x {
            if let Ok(r) = self.buckets.binary_search(b) {
                let row = &self.weights[r * c..(r + 1) * c];
                for (s, wv) in scores.iter_mut().zip(row) {
                    *s += v * from_bf16(*wv);
                }
            }
        }
        scores
    }

    /// Class probabilities (sum to 1).
    pub fn predict_proba(&self, x: &Sparse) -> Vec<f32> {
        let mut s = self.logits(x);
        softmax_in_place(&mut s);
        s
    }

    pub fn size_bytes(&self) -> usize {
        self.buckets.len() * 4 + self.weights.len() * 2 + self.bias.len() * 4
    }
}

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
