//! Entity extraction: the bot's list and pattern entities plus native system entities
//! (Duckling's dimensions, computed without Duckling), in the §10 shape.

pub mod list;
pub mod pattern;
pub mod system;

use serde_json::{json, Value};

use super::{EntityDef, EntityKind};

pub use self::pattern::compile_pattern;

/// One entity found in a text. Offsets are byte offsets into the text given to `extract`.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub name: String,
    /// "list", "pattern" or "system".
    pub kind: &'static str,
    pub confidence: f64,
    pub start: usize,
    pub end: usize,
    pub value: Value,
    pub unit: String,
    pub extras: Value,
    pub sensitive: bool,
}

impl Extracted {
    /// The §10 shape; `start`/`end` become character offsets as JavaScript would count them
    /// for text without astral characters.
    pub fn to_json(&self, text: &str) -> Value {
        let source = text.get(self.start..self.end).unwrap_or("");
        let cstart = text.get(..self.start).map_or(0, |s| s.chars().count());
        let cend = cstart + source.chars().count();
        let mut meta = json!({
            "confidence": self.confidence,
            "provider": "native",
            "source": source,
            "start": cstart,
            "end": cend,
            "raw": {},
        });
        if self.sensitive {
            meta["sensitive"] = Value::Bool(true);
        }
        json!({
            "name": self.name,
            "type": self.kind,
            "meta": meta,
            // Unit-less values (numbers, times, emails) have `unit: null`, as Duckling's do.
            "data": {
                "value": self.value,
                "unit": if self.unit.is_empty() { Value::Null } else { Value::String(self.unit.clone()) },
                "extras": self.extras,
            },
        })
    }
}

/// All extractors of one bot.
#[derive(Debug, Clone)]
pub struct EntityExtractor {
    lists: Vec<list::ListEntity>,
    patterns: Vec<pattern::PatternEntity>,
    /// Whether the system entities are extracted (`ducklingEnabled`).
    system: bool,
}

impl EntityExtractor {
    /// Builds the extractors; pattern entities whose regex does not compile are skipped
    /// (the loader reports them as problems).
    pub fn new(defs: &[EntityDef], system: bool) -> EntityExtractor {
        let mut lists = Vec::new();
        let mut patterns = Vec::new();
        for d in defs {
            match &d.kind {
                EntityKind::List { fuzzy, occurrences } => lists.push(list::ListEntity::new(
                    &d.name,
                    *fuzzy,
                    occurrences,
                    d.sensitive,
                )),
                EntityKind::Pattern { regex } => {
                    if let Ok(p) = pattern::PatternEntity::new(&d.name, regex, d.sensitive) {
                        patterns.push(p);
                    }
                }
            }
        }
        EntityExtractor {
            lists,
            patterns,
            system,
        }
    }

    /// Every entity in `text`, in order of position. `now_ms` anchors relative times.
    pub fn extract(&self, text: &str, now_ms: i64) -> Vec<Extracted> {
        let mut out = Vec::new();
        let tokens = list::tokenize(text);
        for l in &self.lists {
            out.extend(l.extract(&tokens));
        }
        for p in &self.patterns {
            out.extend(p.extract(text));
        }
        if self.system {
            out.extend(system::extract(text, now_ms));
        }
        out.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        out
    }
}
