//! Placeholder until the NLU branch lands: the same API, answering the default "none" result.

use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct IntentDef {
    pub name: String,
    pub contexts: Vec<String>,
    pub utterances: Vec<String>,
    pub slots: Vec<SlotDef>,
}
#[derive(Debug, Clone)]
pub struct SlotDef {
    pub name: String,
    pub entities: Vec<String>,
}
#[derive(Debug, Clone)]
pub struct EntityDef {
    pub name: String,
}
pub struct NluConfig {
    pub confidence_threshold: f64,
}
pub struct Nlu;
pub fn load_bot_nlu_files(
    _bot_dir: &Path,
) -> (Vec<IntentDef>, Vec<EntityDef>, Vec<crate::engine::Problem>) {
    (Vec::new(), Vec::new(), Vec::new())
}
impl Nlu {
    pub fn train(_i: &[IntentDef], _e: &[EntityDef], _c: &NluConfig) -> Nlu {
        Nlu
    }
    pub fn understand(&self, _text: &str, included: &[String], _now_ms: i64) -> Value {
        crate::engine::event::default_nlu(included)
    }
    pub fn mask_sensitive(&self, text: &str, _nlu: &Value) -> String {
        text.to_string()
    }
}
