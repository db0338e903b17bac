//! Placeholder until the expression branch lands.
pub struct Condition {
    source: String,
}
impl Condition {
    pub fn parse(source: &str) -> Result<Condition, String> {
        Ok(Condition { source: source.to_string() })
    }
    pub fn eval(&self, _scope: &serde_json::Value) -> bool {
        self.source.trim() == "true"
    }
    pub fn source(&self) -> &str {
        &self.source
    }
}
impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}
