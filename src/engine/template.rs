//! Placeholder until the template branch lands.
use serde_json::Value;
pub fn render(template: &str, _ctx: &Value) -> String {
    template.to_string()
}
pub fn render_value(value: &Value, _ctx: &Value) -> Value {
    value.clone()
}
