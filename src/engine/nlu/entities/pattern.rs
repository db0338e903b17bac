//! Pattern entities: a user-written regular expression, matched case-insensitively.

use regex::Regex;
use serde_json::{json, Value};

use super::Extracted;

/// Compiles a bot's pattern. Case-insensitive, like Botpress' default `matchCase: false`.
pub fn compile_pattern(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("(?i){pattern}"))
}

#[derive(Debug, Clone)]
pub struct PatternEntity {
    name: String,
    regex: Regex,
    sensitive: bool,
}

impl PatternEntity {
    pub fn new(name: &str, pattern: &str, sensitive: bool) -> Result<PatternEntity, regex::Error> {
        Ok(PatternEntity {
            name: name.to_string(),
            regex: compile_pattern(pattern)?,
            sensitive,
        })
    }

    pub fn extract(&self, text: &str) -> Vec<Extracted> {
        self.regex
            .find_iter(text)
            .filter(|m| !m.as_str().is_empty())
            .map(|m| Extracted {
                name: self.name.clone(),
                kind: "pattern",
                confidence: 1.0,
                start: m.start(),
                end: m.end(),
                value: Value::String(m.as_str().to_string()),
                unit: "string".to_string(),
                extras: json!({}),
                sensitive: self.sensitive,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_all_matches_case_insensitively() {
        let p = PatternEntity::new("order", r"ord-\d{4}", true).unwrap();
        let found = p.extract("my orders: ORD-1234 and ord-9876.");
        let values: Vec<_> = found.iter().map(|e| e.value.clone()).collect();
        assert_eq!(values, vec![json!("ORD-1234"), json!("ord-9876")]);
        assert_eq!((found[0].start, found[0].end), (11, 19));
        assert!(found[0].sensitive);
    }

    #[test]
    fn invalid_pattern_is_an_error() {
        assert!(compile_pattern("(unclosed").is_err());
    }
}
