//! Slot filling: an averaged structured perceptron over BIO tags (Viterbi decoding), trained
//! at load from utterances marked `[text](slotName)`, with the intent as a feature.
//!
//! One tagger serves the whole bot; decoding is restricted to the slots of the chosen intent
//! (or, for benchmark data, to the labels seen with that intent in training), which keeps
//! both the tag space and the Viterbi cost small.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::classifier::Rng;
use super::entities::list::tokenize;
use super::entities::{EntityExtractor, Extracted};
use super::features::fnv1a;
use super::{strip_slot_markup, IntentDef};

/// A training sentence: text (already lower-cased), its intent and labelled byte spans.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedExample {
    pub text: String,
    pub intent: String,
    pub spans: Vec<(String, usize, usize)>,
}

/// A span found by the tagger, byte offsets into the tagged text.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedSpan {
    pub label: String,
    pub start: usize,
    pub end: usize,
    pub confidence: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct TaggerConfig {
    pub epochs: usize,
    pub use_intent: bool,
    pub seed: u64,
}

impl Default for TaggerConfig {
    fn default() -> Self {
        TaggerConfig {
            epochs: 10,
            use_intent: true,
            seed: 7,
        }
    }
}

/// Lower-cases without moving any byte offset (characters whose lower case has another
/// length stay as they are), so that spans found in it apply to the original text.
pub fn lowercase_keep_offsets(text: &str) -> String {
    text.chars()
        .map(|c| {
            let mut l = c.to_lowercase();
            match (l.next(), l.next()) {
                (Some(x), None) if x.len_utf8() == c.len_utf8() => x,
                _ => c,
            }
        })
        .collect()
}

fn shape(word: &str) -> String {
    let mut out = String::new();
    for c in word.chars() {
        let s = if c.is_ascii_digit() {
            'd'
        } else if c.is_uppercase() {
            'X'
        } else if c.is_alphabetic() {
            'x'
        } else {
            c
        };
        // Collapse runs: "dddd" → "d".
        if !out.ends_with(s) {
            out.push(s);
        }
    }
    out
}

fn prefix(w: &str, n: usize) -> &str {
    match w.char_indices().nth(n) {
        Some((b, _)) => &w[..b],
        None => w,
    }
}

fn suffix(w: &str, n: usize) -> &str {
    let count = w.chars().count();
    if count <= n {
        return w;
    }
    let (b, _) = w.char_indices().nth(count - n).unwrap_or((0, ' '));
    &w[b..]
}

/// Hashed feature keys of every token of a sentence.
fn token_features(words: &[&str], intent: Option<&str>) -> Vec<Vec<u64>> {
    let at = |i: isize| -> &str {
        if i < 0 {
            "<s>"
        } else if i as usize >= words.len() {
            "</s>"
        } else {
            words[i as usize]
        }
    };
    let mut out = Vec::with_capacity(words.len());
    for (i, &w) in words.iter().enumerate() {
        let ii = i as isize;
        let mut f = Vec::with_capacity(20);
        let mut push = |tpl: u64, s: &str| f.push(fnv1a(tpl, s.as_bytes()));
        push(1, "");
        push(2, w);
        push(3, prefix(w, 3));
        push(4, suffix(w, 3));
        push(5, suffix(w, 2));
        push(6, &shape(w));
        push(7, at(ii - 1));
        push(8, at(ii + 1));
        push(9, at(ii - 2));
        push(10, at(ii + 2));
        push(11, &format!("{}|{}", at(ii - 1), w));
        push(12, &format!("{}|{}", w, at(ii + 1)));
        push(13, suffix(at(ii - 1), 3));
        push(14, suffix(at(ii + 1), 3));
        if let Some(intent) = intent {
            push(15, intent);
            push(16, &format!("{intent}|{w}"));
            push(17, &format!("{intent}|{}", at(ii - 1)));
        }
        out.push(f);
    }
    out
}

/// The averaged structured perceptron.
#[derive(Debug, Clone)]
pub struct SequenceTagger {
    labels: Vec<String>,
    /// Tags: 0 = O, 1 + 2k = B-label k, 2 + 2k = I-label k.
    tags: usize,
    rows: HashMap<u64, u32>,
    weights: Vec<f32>,
    /// `(tags + 1) × tags`: previous tag (last row = sentence start) → tag.
    transitions: Vec<f32>,
    /// After training: per feature, its non-zero (tag, weight) pairs; replaces the dense
    /// rows, which are mostly zeros.
    sparse: Option<SparseWeights>,
    /// Labels seen with each intent in training.
    labels_by_intent: HashMap<String, Vec<usize>>,
    use_intent: bool,
}

#[derive(Debug, Clone, Default)]
struct SparseWeights {
    rows: HashMap<u64, (u32, u32)>,
    entries: Vec<(u16, f32)>,
}

/// A training sentence ready for the perceptron: token features, gold tags, allowed tags.
type Prepared = (Vec<Vec<u64>>, Vec<usize>, Vec<usize>);

struct Trainer {
    weights: Vec<f32>,
    acc: Vec<f32>,
    trans: Vec<f32>,
    trans_acc: Vec<f32>,
}

impl SequenceTagger {
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn train(examples: &[TaggedExample], cfg: &TaggerConfig) -> SequenceTagger {
        let mut labels: Vec<String> = examples
            .iter()
            .flat_map(|e| e.spans.iter().map(|s| s.0.clone()))
            .collect();
        labels.sort();
        labels.dedup();
        let tags = 1 + 2 * labels.len();
        let mut labels_by_intent: HashMap<String, Vec<usize>> = HashMap::new();
        for e in examples {
            let list = labels_by_intent.entry(e.intent.clone()).or_default();
            for s in &e.spans {
                let k = labels.binary_search(&s.0).unwrap_or(0);
                if !list.contains(&k) {
                    list.push(k);
                }
            }
        }
        let mut tagger = SequenceTagger {
            labels,
            tags,
            rows: HashMap::new(),
            weights: Vec::new(),
            transitions: vec![0.0; (tags + 1) * tags],
            labels_by_intent,
            use_intent: cfg.use_intent,
            sparse: None,
        };
        // Precompute features and gold tags once.
        let prepared: Vec<Prepared> = examples
            .iter()
            .map(|e| {
                let tokens = tokenize(&e.text);
                let words: Vec<&str> = tokens.iter().map(|t| t.norm.as_str()).collect();
                let feats = token_features(&words, cfg.use_intent.then_some(e.intent.as_str()));
                let mut gold = vec![0usize; tokens.len()];
                for (label, s, en) in &e.spans {
                    let k = tagger.labels.binary_search(label).unwrap_or(0);
                    let mut first = true;
                    for (i, t) in tokens.iter().enumerate() {
                        if t.start < *en && *s < t.end {
                            gold[i] = if first { 1 + 2 * k } else { 2 + 2 * k };
                            first = false;
                        }
                    }
                }
                let allowed = tagger.allowed_tags(Some(&e.intent), None);
                (feats, gold, allowed)
            })
            .collect();
        let mut tr = Trainer {
            weights: Vec::new(),
            acc: Vec::new(),
            trans: vec![0.0; (tags + 1) * tags],
            trans_acc: vec![0.0; (tags + 1) * tags],
        };
        let mut order: Vec<usize> = (0..prepared.len()).collect();
        let mut rng = Rng::new(cfg.seed);
        let mut c = 1.0f32;
        for _ in 0..cfg.epochs {
            rng.shuffle(&mut order);
            for &i in &order {
                let (feats, gold, allowed) = &prepared[i];
                if feats.is_empty() {
                    continue;
                }
                tagger.weights = std::mem::take(&mut tr.weights);
                tagger.transitions = std::mem::take(&mut tr.trans);
                let (pred, _) = tagger.viterbi(feats, allowed);
                tr.weights = std::mem::take(&mut tagger.weights);
                tr.trans = std::mem::take(&mut tagger.transitions);
                if &pred != gold {
                    tagger.update(&mut tr, feats, gold, &pred, c);
                }
                c += 1.0;
            }
        }
        // Averaging: w − acc / c; then keep only the non-zero weights of each feature.
        let mut sparse = SparseWeights::default();
        for (&f, &r) in &tagger.rows {
            let r = r as usize;
            let start = sparse.entries.len() as u32;
            for t in 0..tags {
                let w = tr.weights[r * tags + t] - tr.acc[r * tags + t] / c;
                if w.abs() > 1e-4 {
                    sparse.entries.push((t as u16, w));
                }
            }
            let len = sparse.entries.len() as u32 - start;
            if len > 0 {
                sparse.rows.insert(f, (start, len));
            }
        }
        tagger.rows = HashMap::new();
        tagger.weights = Vec::new();
        tagger.sparse = Some(sparse);
        tagger.transitions = tr
            .trans
            .iter()
            .zip(&tr.trans_acc)
            .map(|(w, a)| w - a / c)
            .collect();
        tagger
    }

    fn row(&mut self, tr: &mut Trainer, f: u64) -> usize {
        let tags = self.tags;
        let next = self.rows.len() as u32;
        let r = *self.rows.entry(f).or_insert(next) as usize;
        if r == next as usize {
            tr.weights.extend(std::iter::repeat_n(0.0, tags));
            tr.acc.extend(std::iter::repeat_n(0.0, tags));
        }
        r
    }

    fn update(
        &mut self,
        tr: &mut Trainer,
        feats: &[Vec<u64>],
        gold: &[usize],
        pred: &[usize],
        c: f32,
    ) {
        let tags = self.tags;
        for i in 0..gold.len() {
            let (g, p) = (gold[i], pred[i]);
            let (gp, pp) = if i == 0 {
                (tags, tags)
            } else {
                (gold[i - 1], pred[i - 1])
            };
            if g != p {
                for &f in &feats[i] {
                    let r = self.row(tr, f);
                    tr.weights[r * tags + g] += 1.0;
                    tr.acc[r * tags + g] += c;
                    tr.weights[r * tags + p] -= 1.0;
                    tr.acc[r * tags + p] -= c;
                }
            }
            if g != p || gp != pp {
                tr.trans[gp * tags + g] += 1.0;
                tr.trans_acc[gp * tags + g] += c;
                tr.trans[pp * tags + p] -= 1.0;
                tr.trans_acc[pp * tags + p] -= c;
            }
        }
    }

    /// Tags the decoder may use: O plus B/I of the allowed labels.
    fn allowed_tags(&self, intent: Option<&str>, labels: Option<&[String]>) -> Vec<usize> {
        let ks: Vec<usize> = match (labels, intent.and_then(|i| self.labels_by_intent.get(i))) {
            (Some(ls), _) => ls
                .iter()
                .filter_map(|l| self.labels.binary_search(l).ok())
                .collect(),
            (None, Some(ks)) => ks.clone(),
            (None, None) => (0..self.labels.len()).collect(),
        };
        let mut out = vec![0];
        for k in ks {
            out.push(1 + 2 * k);
            out.push(2 + 2 * k);
        }
        out
    }

    fn emissions(&self, feats: &[Vec<u64>], allowed: &[usize]) -> Vec<Vec<f32>> {
        // Position of each tag among the allowed ones (usize::MAX when not allowed).
        let mut slot = vec![usize::MAX; self.tags];
        for (j, &t) in allowed.iter().enumerate() {
            slot[t] = j;
        }
        feats
            .iter()
            .map(|fs| {
                let mut s = vec![0f32; allowed.len()];
                for f in fs {
                    if let Some(sp) = &self.sparse {
                        if let Some(&(start, len)) = sp.rows.get(f) {
                            for &(t, w) in &sp.entries[start as usize..(start + len) as usize] {
                                if let Some(x) = s.get_mut(slot[t as usize]) {
                                    *x += w;
                                }
                            }
                        }
                    } else if let Some(&r) = self.rows.get(f) {
                        let r = r as usize;
                        let row = &self.weights[r * self.tags..(r + 1) * self.tags];
                        for (x, &t) in s.iter_mut().zip(allowed) {
                            *x += row[t];
                        }
                    }
                }
                s
            })
            .collect()
    }

    /// Best tag sequence (BIO-consistent) and the emission scores used.
    fn viterbi(&self, feats: &[Vec<u64>], allowed: &[usize]) -> (Vec<usize>, Vec<Vec<f32>>) {
        let n = feats.len();
        let m = allowed.len();
        let em = self.emissions(feats, allowed);
        let tags = self.tags;
        // An I tag may only follow the B or I of the same label.
        let ok = |prev: Option<usize>, t: usize| -> bool {
            if t == 0 || t % 2 == 1 {
                return true;
            }
            matches!(prev, Some(p) if p != 0 && (p - 1) / 2 == (t - 1) / 2)
        };
        let mut score = vec![f32::NEG_INFINITY; n * m];
        let mut back = vec![0usize; n * m];
        for (j, &t) in allowed.iter().enumerate() {
            if ok(None, t) {
                score[j] = em[0][j] + self.transitions[tags * tags + t];
            }
        }
        for i in 1..n {
            for (j, &t) in allowed.iter().enumerate() {
                let mut best = f32::NEG_INFINITY;
                let mut arg = 0;
                for (k, &p) in allowed.iter().enumerate() {
                    let prev = score[(i - 1) * m + k];
                    if prev == f32::NEG_INFINITY || !ok(Some(p), t) {
                        continue;
                    }
                    let s = prev + self.transitions[p * tags + t];
                    if s > best {
                        best = s;
                        arg = k;
                    }
                }
                if best > f32::NEG_INFINITY {
                    score[i * m + j] = best + em[i][j];
                    back[i * m + j] = arg;
                }
            }
        }
        let mut last = 0;
        for j in 0..m {
            if score[(n - 1) * m + j] > score[(n - 1) * m + last] {
                last = j;
            }
        }
        let mut path = vec![0usize; n];
        let mut j = last;
        for i in (0..n).rev() {
            path[i] = allowed[j];
            j = back[i * m + j];
        }
        (path, em)
    }

    /// Labelled spans in `text` (lower-case it with [`lowercase_keep_offsets`] first).
    /// `labels` restricts the labels (e.g. to an intent's slots); otherwise the labels seen
    /// with `intent` in training are used.
    pub fn tag(&self, text: &str, intent: &str, labels: Option<&[String]>) -> Vec<TaggedSpan> {
        let tokens = tokenize(text);
        if tokens.is_empty() || self.labels.is_empty() {
            return Vec::new();
        }
        let words: Vec<&str> = tokens.iter().map(|t| t.norm.as_str()).collect();
        let feats = token_features(&words, self.use_intent.then_some(intent));
        let allowed = self.allowed_tags(Some(intent), labels);
        if allowed.len() == 1 {
            return Vec::new();
        }
        let (path, em) = self.viterbi(&feats, &allowed);
        let mut out: Vec<TaggedSpan> = Vec::new();
        let mut conf_sum = 0.0;
        let mut conf_n = 0.0;
        for (i, &t) in path.iter().enumerate() {
            // A soft-max over the emission scores of this token stands in for a probability.
            let j = allowed.iter().position(|&a| a == t).unwrap_or(0);
            let max = em[i].iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = em[i].iter().map(|s| (s - max).exp()).sum();
            let p = ((em[i][j] - max).exp() / z) as f64;
            if t == 0 {
                continue;
            }
            let k = (t - 1) / 2;
            let continues = t % 2 == 0
                && out.last().is_some_and(|s| s.label == self.labels[k])
                && i > 0
                && path[i - 1] != 0;
            if continues {
                if let Some(s) = out.last_mut() {
                    s.end = tokens[i].end;
                    conf_sum += p;
                    conf_n += 1.0;
                    s.confidence = conf_sum / conf_n;
                }
            } else {
                conf_sum = p;
                conf_n = 1.0;
                out.push(TaggedSpan {
                    label: self.labels[k].clone(),
                    start: tokens[i].start,
                    end: tokens[i].end,
                    confidence: p,
                });
            }
        }
        for s in &mut out {
            s.confidence = (s.confidence * 1000.0).round() / 1000.0;
        }
        out
    }

    pub fn size_bytes(&self) -> usize {
        let sparse = self
            .sparse
            .as_ref()
            .map_or(0, |sp| sp.rows.len() * 16 + sp.entries.len() * 8);
        sparse + self.rows.len() * 12 + self.weights.len() * 4 + self.transitions.len() * 4
    }
}

// ---------------------------------------------------------------------------------------------
// Slots of a bot

/// One filled slot; offsets are bytes into the analysed text.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundSlot {
    pub name: String,
    pub value: Value,
    pub source: String,
    pub entity: Option<Value>,
    pub confidence: f64,
    pub start: usize,
    pub end: usize,
}

impl FoundSlot {
    pub fn to_json(&self, text: &str) -> Value {
        let cstart = text.get(..self.start).map_or(0, |s| s.chars().count());
        let cend = cstart
            + text
                .get(self.start..self.end)
                .map_or(0, |s| s.chars().count());
        let mut v = json!({
            "name": self.name,
            "value": self.value,
            "source": self.source,
            "confidence": self.confidence,
            "start": cstart,
            "end": cend,
        });
        if let Some(e) = &self.entity {
            v["entity"] = e.clone();
        }
        v
    }
}

/// The bot's slot tagger.
#[derive(Debug, Clone)]
pub struct SlotTagger {
    tagger: SequenceTagger,
}

fn accepts_any(entities: &[String]) -> bool {
    entities.is_empty() || entities.iter().any(|e| e == "any")
}

impl SlotTagger {
    /// Trains on every utterance with slot markup; `None` when no intent marks any slot.
    pub fn train_for_intents(
        intents: &[IntentDef],
        _extractor: &EntityExtractor,
    ) -> Option<SlotTagger> {
        let mut examples = Vec::new();
        for intent in intents {
            for u in &intent.utterances {
                let (plain, spans) = strip_slot_markup(u);
                examples.push(TaggedExample {
                    text: lowercase_keep_offsets(&plain),
                    intent: intent.name.clone(),
                    spans: spans
                        .into_iter()
                        .map(|s| (s.slot, s.start, s.end))
                        .collect(),
                });
            }
        }
        if !examples.iter().any(|e| !e.spans.is_empty()) {
            return None;
        }
        // Small bots: more passes over few examples.
        let epochs = (2000 / examples.len().max(1)).clamp(10, 50);
        let cfg = TaggerConfig {
            epochs,
            ..Default::default()
        };
        Some(SlotTagger {
            tagger: SequenceTagger::train(&examples, &cfg),
        })
    }

    /// The slots of `def` in `text`: tagged spans checked against the slot's entity types
    /// (an overlapping entity of a listed type supplies the value), then slots the tagger
    /// missed but an entity of their type fills.
    pub fn slots_for(
        &self,
        text: &str,
        def: &IntentDef,
        extracted: &[Extracted],
    ) -> Vec<FoundSlot> {
        let names: Vec<String> = def.slots.iter().map(|s| s.name.clone()).collect();
        let lowered = lowercase_keep_offsets(text);
        let mut out = Vec::new();
        for span in self.tagger.tag(&lowered, &def.name, Some(&names)) {
            let Some(slot) = def.slots.iter().find(|s| s.name == span.label) else {
                continue;
            };
            let source = text[span.start..span.end].to_string();
            if accepts_any(&slot.entities) {
                out.push(FoundSlot {
                    name: slot.name.clone(),
                    value: Value::String(source.clone()),
                    source,
                    entity: None,
                    confidence: span.confidence,
                    start: span.start,
                    end: span.end,
                });
                continue;
            }
            let hit = extracted.iter().find(|e| {
                slot.entities.contains(&e.name) && e.start < span.end && span.start < e.end
            });
            if let Some(e) = hit {
                out.push(slot_from_entity(text, &slot.name, e, Some(span.confidence)));
            }
        }
        for extra in slots_from_entities(text, def, extracted) {
            let filled = out.iter().any(|s| s.name == extra.name);
            let overlaps = out
                .iter()
                .any(|s| s.start < extra.end && extra.start < s.end);
            if !filled && !overlaps {
                out.push(extra);
            }
        }
        out.sort_by_key(|s| s.start);
        out
    }

    pub fn size_bytes(&self) -> usize {
        self.tagger.size_bytes()
    }
}

fn slot_from_entity(text: &str, slot: &str, e: &Extracted, tagger_conf: Option<f64>) -> FoundSlot {
    FoundSlot {
        name: slot.to_string(),
        value: e.value.clone(),
        source: text[e.start..e.end].to_string(),
        entity: Some(e.to_json(text)),
        confidence: tagger_conf.map_or(e.confidence, |c| c.max(e.confidence)),
        start: e.start,
        end: e.end,
    }
}

/// Slots filled straight from entities of the slot's listed types (first match each), for
/// bots without slot markup and for slots the tagger missed.
pub fn slots_from_entities(text: &str, def: &IntentDef, extracted: &[Extracted]) -> Vec<FoundSlot> {
    let mut out: Vec<FoundSlot> = Vec::new();
    for s in &def.slots {
        if accepts_any(&s.entities) {
            continue;
        }
        let free = extracted.iter().find(|e| {
            s.entities.contains(&e.name) && !out.iter().any(|o| o.start < e.end && e.start < o.end)
        });
        if let Some(e) = free {
            out.push(slot_from_entity(text, &s.name, e, None));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(text: &str, intent: &str, spans: &[(&str, &str)]) -> TaggedExample {
        let spans = spans
            .iter()
            .map(|(label, value)| {
                let s = text.find(value).unwrap();
                (label.to_string(), s, s + value.len())
            })
            .collect();
        TaggedExample {
            text: text.to_string(),
            intent: intent.to_string(),
            spans,
        }
    }

    #[test]
    fn shape_and_affixes() {
        assert_eq!(shape("Hello"), "Xx");
        assert_eq!(shape("10:30"), "d:d");
        assert_eq!(prefix("héllo", 3), "hél");
        assert_eq!(suffix("héllo", 3), "llo");
        assert_eq!(suffix("ab", 3), "ab");
    }

    #[test]
    fn learns_cities_after_prepositions() {
        let mut data = Vec::new();
        let cities = [
            "paris", "london", "berlin", "rome", "madrid", "new york", "tokyo", "oslo",
        ];
        for (i, c) in cities.iter().enumerate() {
            let d = cities[(i + 3) % cities.len()];
            data.push(ex(
                &format!("fly from {c} to {d}"),
                "flight",
                &[("from", c), ("to", d)],
            ));
            data.push(ex(&format!("i want to go to {d}"), "flight", &[("to", d)]));
            data.push(ex(
                &format!("what is the weather in {c}"),
                "weather",
                &[("place", c)],
            ));
        }
        let t = SequenceTagger::train(&data, &TaggerConfig::default());
        let got = t.tag("fly from lisbon to san diego", "flight", None);
        let labels: Vec<(&str, &str)> = got
            .iter()
            .map(|s| {
                (
                    s.label.as_str(),
                    &"fly from lisbon to san diego"[s.start..s.end],
                )
            })
            .collect();
        assert_eq!(labels[0], ("from", "lisbon"));
        assert_eq!(labels[1].0, "to");
        // Restricted to the intent's labels: no "from"/"to" in the weather intent.
        let w = t.tag("what is the weather in lisbon", "weather", None);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].label, "place");
        assert!(w[0].confidence > 0.0 && w[0].confidence <= 1.0);
    }
}
