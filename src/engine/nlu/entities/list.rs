//! List entities: occurrences and their synonyms, matched token by token (multi-token aware),
//! exactly after lower-casing and stripping punctuation, or fuzzily for long tokens.

use serde_json::{json, Value};

use super::Extracted;
use crate::engine::nlu::Occurrence;

/// Lowest confidence a (fuzzy) match is reported with.
const MIN_CONFIDENCE: f64 = 0.65;
/// Lowest similarity of one fuzzily matched token.
const MIN_TOKEN_SIMILARITY: f64 = 0.75;
/// Tokens this long or shorter must match exactly even when the entity is fuzzy.
const FUZZY_MIN_LEN: usize = 4;

/// A whitespace token: its normalised form and its byte span in the original text.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub norm: String,
    pub start: usize,
    pub end: usize,
}

/// Splits on whitespace, strips leading/trailing punctuation and lower-cases.
pub fn tokenize(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut pos = 0;
    for raw in text.split_whitespace() {
        let start = pos + text[pos..].find(raw).unwrap_or(0);
        pos = start + raw.len();
        let trimmed_start = raw.trim_start_matches(|c: char| !c.is_alphanumeric());
        let lead = raw.len() - trimmed_start.len();
        let trimmed = trimmed_start.trim_end_matches(|c: char| !c.is_alphanumeric());
        if trimmed.is_empty() {
            continue;
        }
        out.push(Token {
            norm: trimmed.to_lowercase(),
            start: start + lead,
            end: start + lead + trimmed.len(),
        });
    }
    out
}

fn normalize_phrase(s: &str) -> Vec<String> {
    tokenize(s).into_iter().map(|t| t.norm).collect()
}

/// Levenshtein distance over characters.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// 1 − distance / longer length.
pub fn similarity(a: &str, b: &str) -> f64 {
    let n = a.chars().count().max(b.chars().count());
    if n == 0 {
        return 1.0;
    }
    1.0 - levenshtein(a, b) as f64 / n as f64
}

#[derive(Debug, Clone)]
struct Alias {
    occurrence: String,
    tokens: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ListEntity {
    name: String,
    fuzzy: bool,
    aliases: Vec<Alias>,
    sensitive: bool,
}

impl ListEntity {
    pub fn new(name: &str, fuzzy: bool, occurrences: &[Occurrence], sensitive: bool) -> ListEntity {
        let mut aliases = Vec::new();
        for o in occurrences {
            for phrase in std::iter::once(&o.name).chain(o.synonyms.iter()) {
                let tokens = normalize_phrase(phrase);
                if !tokens.is_empty() {
                    aliases.push(Alias {
                        occurrence: o.name.clone(),
                        tokens,
                    });
                }
            }
        }
        ListEntity {
            name: name.to_string(),
            fuzzy,
            aliases,
            sensitive,
        }
    }

    /// How well `alias` matches the tokens starting at `at` (None below the minimum).
    fn score(&self, alias: &Alias, tokens: &[Token], at: usize) -> Option<f64> {
        if at + alias.tokens.len() > tokens.len() {
            return None;
        }
        let mut total = 0.0;
        let mut weight = 0.0;
        for (k, want) in alias.tokens.iter().enumerate() {
            let got = &tokens[at + k].norm;
            let len = want.chars().count().max(got.chars().count()) as f64;
            let sim = if got == want {
                1.0
            } else if self.fuzzy
                && got.chars().count() > FUZZY_MIN_LEN
                && want.chars().count() > FUZZY_MIN_LEN
            {
                let s = similarity(got, want);
                if s < MIN_TOKEN_SIMILARITY {
                    return None;
                }
                s
            } else {
                return None;
            };
            total += sim * len;
            weight += len;
        }
        let conf = total / weight;
        (conf >= MIN_CONFIDENCE).then_some(conf)
    }

    pub fn extract(&self, tokens: &[Token]) -> Vec<Extracted> {
        // Candidates (start token, token count, confidence, occurrence), best first:
        // longer, then more confident; then keep the non-overlapping ones greedily.
        let mut cands: Vec<(usize, usize, f64, &str)> = Vec::new();
        for at in 0..tokens.len() {
            for a in &self.aliases {
                if let Some(c) = self.score(a, tokens, at) {
                    cands.push((at, a.tokens.len(), c, &a.occurrence));
                }
            }
        }
        cands.sort_by(|x, y| {
            (y.1 as f64 * y.2)
                .total_cmp(&(x.1 as f64 * x.2))
                .then(y.2.total_cmp(&x.2))
                .then(x.0.cmp(&y.0))
        });
        let mut taken = vec![false; tokens.len()];
        let mut out = Vec::new();
        for (at, len, conf, occ) in cands {
            if taken[at..at + len].iter().any(|t| *t) {
                continue;
            }
            taken[at..at + len].iter_mut().for_each(|t| *t = true);
            out.push(Extracted {
                name: self.name.clone(),
                kind: "list",
                confidence: (conf * 1000.0).round() / 1000.0,
                start: tokens[at].start,
                end: tokens[at + len - 1].end,
                value: Value::String(occ.to_string()),
                unit: "string".to_string(),
                extras: json!({"occurence": occ}),
                sensitive: self.sensitive,
            });
        }
        out.sort_by_key(|e| e.start);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cities(fuzzy: bool) -> ListEntity {
        ListEntity::new(
            "city",
            fuzzy,
            &[
                Occurrence {
                    name: "New York".into(),
                    synonyms: vec!["NYC".into(), "big apple".into()],
                },
                Occurrence {
                    name: "Montreal".into(),
                    synonyms: vec![],
                },
            ],
            false,
        )
    }

    fn run(e: &ListEntity, text: &str) -> Vec<(String, String, f64)> {
        e.extract(&tokenize(text))
            .into_iter()
            .map(|x| {
                (
                    text[x.start..x.end].to_string(),
                    x.value.as_str().unwrap().to_string(),
                    x.confidence,
                )
            })
            .collect()
    }

    #[test]
    fn tokenize_strips_punctuation_and_keeps_offsets() {
        let t = tokenize("Hi, (New) York!");
        assert_eq!(t.len(), 3);
        assert_eq!((t[1].norm.as_str(), t[1].start, t[1].end), ("new", 5, 8));
        assert_eq!((t[2].norm.as_str(), t[2].start, t[2].end), ("york", 10, 14));
    }

    #[test]
    fn exact_matches_names_and_synonyms() {
        let e = cities(false);
        let table: &[(&str, &[(&str, &str)])] = &[
            ("fly me to new york please", &[("new york", "New York")]),
            (
                "NYC or Montreal?",
                &[("NYC", "New York"), ("Montreal", "Montreal")],
            ),
            ("the Big Apple.", &[("Big Apple", "New York")]),
            ("montreall", &[]),
            ("york", &[]),
        ];
        for (text, want) in table {
            let got = run(&e, text);
            let got: Vec<(&str, &str)> = got
                .iter()
                .map(|(a, b, _)| (a.as_str(), b.as_str()))
                .collect();
            assert_eq!(&got, want, "{text}");
        }
    }

    #[test]
    fn fuzzy_only_for_long_tokens() {
        let e = cities(true);
        let got = run(&e, "montreall");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, "Montreal");
        assert!(got[0].2 >= 0.65 && got[0].2 < 1.0);
        // "nyk" is short: no fuzzy match for "nyc".
        assert!(run(&e, "nyk").is_empty());
        assert!(run(&e, "toronto").is_empty());
    }

    #[test]
    fn levenshtein_table() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
    }
}
