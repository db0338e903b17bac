//! System entities (stub, filled in next).

use super::Extracted;

pub fn extract(_text: &str, _now_ms: i64) -> Vec<Extracted> {
    Vec::new()
}
