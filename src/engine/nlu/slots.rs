//! Slot filling (stub, filled in next).

use serde_json::{json, Value};

use super::entities::{EntityExtractor, Extracted};
use super::IntentDef;

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

#[derive(Debug, Clone)]
pub struct SlotTagger {}

impl SlotTagger {
    pub fn train_for_intents(_intents: &[IntentDef], _x: &EntityExtractor) -> Option<SlotTagger> {
        None
    }
    pub fn slots_for(
        &self,
        text: &str,
        def: &IntentDef,
        extracted: &[Extracted],
    ) -> Vec<FoundSlot> {
        slots_from_entities(text, def, extracted)
    }
    pub fn size_bytes(&self) -> usize {
        0
    }
}

pub fn slots_from_entities(text: &str, def: &IntentDef, extracted: &[Extracted]) -> Vec<FoundSlot> {
    let mut out = Vec::new();
    for s in &def.slots {
        if let Some(e) = extracted.iter().find(|e| s.entities.contains(&e.name)) {
            out.push(FoundSlot {
                name: s.name.clone(),
                value: e.value.clone(),
                source: text[e.start..e.end].to_string(),
                entity: Some(e.to_json(text)),
                confidence: e.confidence,
                start: e.start,
                end: e.end,
            });
        }
    }
    out
}
