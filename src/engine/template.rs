//! Mustache as Botpress 11 renders it (spec §8.9): mustache.js 2.x semantics for variables,
//! sections, inverted sections and comments, applied up to three times while the text still looks
//! like a template, because Botpress expands values that themselves contain `{{…}}`.
//!
//! Not supported: partials (`{{> name}}` renders nothing, as mustache.js does without partials)
//! and delimiter changes (`{{=<% %>=}}` and the rest of the text are left as they are).

use crate::engine::expr::JsVal;
use serde_json::Value;

/// Botpress renders at most three times.
const MAX_PASSES: usize = 3;
/// Later passes render text users typed, so nesting and work are bounded: a few nested sections
/// over arrays would otherwise multiply into billions of steps.
const MAX_SECTION_DEPTH: usize = 32;
const MAX_STEPS: usize = 100_000;
const MAX_OUTPUT: usize = 1 << 20;

/// Renders `{{path}}` (HTML-escaped), `{{{path}}}` and `{{& path}}` (raw) against `ctx`,
/// repeating up to 3 passes while the output still contains "{{".
///
/// "Contains" is Botpress' own test, `/{{.*}}/`: an opening `{{` with a `}}` later on the same line.
pub fn render(template: &str, ctx: &serde_json::Value) -> String {
    let mut text: Option<String> = None;
    for _ in 0..MAX_PASSES {
        let current = text.as_deref().unwrap_or(template);
        if !looks_like_template(current) {
            break;
        }
        text = Some(render_once(current, ctx));
    }
    text.unwrap_or_else(|| template.to_string())
}

/// Renders every string inside `value` (objects and arrays recursively), leaving other values alone.
pub fn render_value(value: &serde_json::Value, ctx: &serde_json::Value) -> serde_json::Value {
    match value {
        Value::String(s) => Value::String(render(s, ctx)),
        Value::Array(items) => Value::Array(items.iter().map(|v| render_value(v, ctx)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render_value(v, ctx)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn looks_like_template(s: &str) -> bool {
    s.split(['\n', '\r', '\u{2028}', '\u{2029}']).any(|line| {
        line.find("{{")
            .is_some_and(|i| line[i + 2..].contains("}}"))
    })
}

/// One pass. A malformed template renders up to the offending tag (or the outermost section that
/// never closes), and the rest is copied literally, rather than failing the whole message.
fn render_once(template: &str, ctx: &Value) -> String {
    let (tokens, rest) = match parse(template) {
        Ok(tokens) => (tokens, ""),
        Err(at) => match parse(&template[..at]) {
            Ok(tokens) => (tokens, &template[at..]),
            Err(_) => (Vec::new(), template),
        },
    };
    let mut renderer = Renderer {
        tokens: &tokens,
        out: String::with_capacity(template.len()),
        steps: 0,
    };
    let mut stack = vec![JsVal::from_json(ctx)];
    renderer.render(0, tokens.len(), &mut stack);
    let mut out = renderer.out;
    out.push_str(rest);
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Token<'t> {
    Text(&'t str),
    Var {
        name: &'t str,
        escape: bool,
    },
    /// `end` is the index of the matching `Close`.
    Section {
        name: &'t str,
        inverted: bool,
        end: usize,
    },
    Close,
}

fn is_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

fn skip_space(s: &str, mut i: usize) -> usize {
    while let Some(c) = s[i..].chars().next().filter(|&c| is_space(c)) {
        i += c.len_utf8();
    }
    i
}

/// Tokenises like mustache.js `parseTemplate`, including its removal of "standalone" lines: a line
/// holding only whitespace and section, comment or partial tags leaves no whitespace or newline
/// behind. Err(byte offset) is where literal copying has to start.
fn parse(template: &str) -> Result<Vec<Token<'_>>, usize> {
    let mut tokens = Vec::new();
    // (token index, name, tag start) of the sections still open.
    let mut open: Vec<(usize, &str, usize)> = Vec::new();
    let mut pos = 0;
    let mut line_start = 0; // first token of the current line
    let mut has_tag = false;
    let mut non_space = false;
    loop {
        let tag_at = template[pos..]
            .find("{{")
            .map_or(template.len(), |i| pos + i);
        let mut text = &template[pos..tag_at];
        while !text.is_empty() {
            let (piece, rest) = match text.find('\n') {
                Some(nl) => text.split_at(nl + 1),
                None => (text, ""),
            };
            if !piece.chars().all(is_space) {
                non_space = true;
            }
            tokens.push(Token::Text(piece));
            if piece.ends_with('\n') {
                if has_tag && !non_space {
                    for t in &mut tokens[line_start..] {
                        if let Token::Text(s) = t {
                            *s = "";
                        }
                    }
                }
                has_tag = false;
                non_space = false;
                line_start = tokens.len();
            }
            text = rest;
        }
        if tag_at == template.len() {
            break;
        }
        let fail = |open: &[(usize, &str, usize)]| open.first().map_or(tag_at, |o| o.2);
        let mut i = skip_space(template, tag_at + 2);
        let kind = template[i..]
            .chars()
            .next()
            .filter(|c| "#^/>{&=!".contains(*c));
        if kind.is_some() {
            i = skip_space(template, i + 1);
        }
        let close = if kind == Some('{') { "}}}" } else { "}}" };
        let Some(len) = template[i..].find(close) else {
            return Err(fail(&open));
        };
        let name = template[i..i + len].trim_end_matches(is_space);
        has_tag = true;
        match kind {
            None => {
                tokens.push(Token::Var { name, escape: true });
                non_space = true;
            }
            Some('{' | '&') => {
                tokens.push(Token::Var {
                    name,
                    escape: false,
                });
                non_space = true;
            }
            Some(c @ ('#' | '^')) => {
                if open.len() >= MAX_SECTION_DEPTH {
                    return Err(fail(&open));
                }
                open.push((tokens.len(), name, tag_at));
                tokens.push(Token::Section {
                    name,
                    inverted: c == '^',
                    end: 0,
                });
            }
            Some('/') => match open.last() {
                Some(&(index, opened, _)) if opened == name => {
                    open.pop();
                    let end = tokens.len();
                    if let Token::Section { end: e, .. } = &mut tokens[index] {
                        *e = end;
                    }
                    tokens.push(Token::Close);
                }
                _ => return Err(fail(&open)),
            },
            Some('=') => return Err(fail(&open)),
            _ => {} // comments and partials
        }
        pos = i + len + close.len();
    }
    match open.first() {
        Some(o) => Err(o.2),
        None => Ok(tokens),
    }
}

struct Renderer<'r, 't> {
    tokens: &'r [Token<'t>],
    out: String,
    steps: usize,
}

impl Renderer<'_, '_> {
    fn exhausted(&self) -> bool {
        self.steps > MAX_STEPS || self.out.len() > MAX_OUTPUT
    }

    /// Renders tokens[from..to] with `stack` as the context stack (innermost last).
    fn render<'a>(&mut self, from: usize, to: usize, stack: &mut Vec<JsVal<'a>>) {
        let mut i = from;
        while i < to {
            self.steps += 1;
            if self.exhausted() {
                return;
            }
            match self.tokens[i] {
                Token::Text(s) => self.out.push_str(s),
                Token::Var { name, escape } => {
                    let value = lookup(stack, name);
                    if !matches!(value, JsVal::Undefined | JsVal::Null) {
                        let s = value.to_js_string();
                        if escape {
                            escape_html(&mut self.out, &s);
                        } else {
                            self.out.push_str(&s);
                        }
                    }
                }
                Token::Section {
                    name,
                    inverted,
                    end,
                } => {
                    let value = lookup(stack, name);
                    let empty_list = matches!(value, JsVal::Obj(Value::Array(a)) if a.is_empty());
                    if inverted {
                        if !value.truthy() || empty_list {
                            self.render(i + 1, end, stack);
                        }
                    } else if value.truthy() {
                        match value {
                            JsVal::Obj(Value::Array(items)) => {
                                for item in items {
                                    stack.push(JsVal::from_json(item));
                                    self.render(i + 1, end, stack);
                                    stack.pop();
                                    if self.exhausted() {
                                        break;
                                    }
                                }
                            }
                            // `true` keeps the current context; objects, strings and numbers
                            // become the context.
                            JsVal::Bool(_) => self.render(i + 1, end, stack),
                            other => {
                                stack.push(other);
                                self.render(i + 1, end, stack);
                                stack.pop();
                            }
                        }
                    }
                    i = end;
                }
                Token::Close => {}
            }
            i += 1;
        }
    }
}

/// mustache.js `Context.lookup`: `.` is the current context; otherwise the innermost context that
/// has the name wins, and when none has it the value read from the outermost one is used (which
/// is how `{{text.length}}` on a string still works).
fn lookup<'a>(stack: &[JsVal<'a>], name: &str) -> JsVal<'a> {
    if name == "." {
        return stack.last().cloned().unwrap_or(JsVal::Undefined);
    }
    let dotted = name.find('.').is_some_and(|i| i > 0);
    let mut value = JsVal::Undefined;
    for view in stack.iter().rev() {
        let hit;
        if dotted {
            let mut current = view.clone();
            let mut parts = name.split('.').peekable();
            let mut last_hit = false;
            while let Some(part) = parts.next() {
                if matches!(current, JsVal::Undefined | JsVal::Null) {
                    break;
                }
                if parts.peek().is_none() {
                    last_hit = current.has_property(part);
                }
                current = current.get(part).unwrap_or(JsVal::Undefined);
            }
            hit = last_hit;
            value = current;
        } else {
            hit = view.has_property(name);
            value = view.get(name).unwrap_or(JsVal::Undefined);
        }
        if hit {
            break;
        }
    }
    value
}

/// mustache.js's escape map, character for character.
fn escape_html(out: &mut String, s: &str) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let entity = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            b'/' => "&#x2F;",
            b'`' => "&#x60;",
            b'=' => "&#x3D;",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(entity);
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "user": {
                "nickname": "Bob", "name": "O'Brien", "age": 3, "ratio": 1.5, "big": 1e21,
                "ok": true, "no": false, "zero": 0, "empty": "", "nothing": null,
                "tags": ["a", "b", 3, null, true], "none": [], "nested": [[1, 2], [3]],
                "obj": { "a": 1 }, "chars": "&<>\"'/`=", "emoji": "😀 ça va", "html": "<b>&</b>",
                "loop": "{{user.loop}}", "indirect": "{{user.nickname}}", "twice": "{{user.indirect}}",
                "thrice": "{{user.twice}}", "raw": "{{{user.html}}}",
                "people": [{ "name": "Ann", "age": 30 }, { "name": "Cy" }]
            },
            "temp": { "$r": 0, "choice": "memory" },
            "event": { "payload": { "text": "hi there" } }
        })
    }

    #[test]
    fn renders_like_botpress() {
        let ctx = ctx();
        let cases: &[(&str, &str)] = &[
            // plain text and the no-template fast path
            ("", ""),
            ("no tags here", "no tags here"),
            ("a { b } c", "a { b } c"),
            // paths, whitespace inside tags
            ("Hi {{user.nickname}}!", "Hi Bob!"),
            ("{{ user.nickname }}", "Bob"),
            ("{{temp.$r}}", "0"),
            ("{{event.payload.text}}", "hi there"),
            ("{{event.payload.text.length}}", "8"),
            ("{{user.tags.1}}", "b"),
            // missing values, null
            ("[{{user.missing}}]", "[]"),
            ("[{{nope.deeper.still}}]", "[]"),
            ("[{{user.nothing}}]", "[]"),
            ("[{{{user.missing}}}]", "[]"),
            // escaping, one case per character
            ("{{user.name}}", "O&#39;Brien"),
            ("{{user.html}}", "&lt;b&gt;&amp;&lt;&#x2F;b&gt;"),
            (
                "{{user.chars}}",
                "&amp;&lt;&gt;&quot;&#39;&#x2F;&#x60;&#x3D;",
            ),
            ("{{{user.chars}}}", "&<>\"'/`="),
            ("{{.}}", "[object Object]"),
            ("{{event.payload.text}}", "hi there"),
            // raw forms
            ("{{{user.name}}}", "O'Brien"),
            ("{{& user.html}}", "<b>&</b>"),
            ("{{{ user.html }}}", "<b>&</b>"),
            ("{{&user.name}}", "O'Brien"),
            // emoji and non-ASCII around and inside values
            ("👋 {{user.emoji}} é", "👋 😀 ça va é"),
            // numbers, booleans, arrays, objects
            ("{{user.age}}", "3"),
            ("{{user.ratio}}", "1.5"),
            ("{{user.big}}", "1e+21"),
            ("{{user.ok}}/{{user.no}}", "true/false"),
            ("{{{user.ok}}}/{{{user.no}}}", "true/false"),
            ("{{user.zero}}", "0"),
            ("{{user.tags}}", "a,b,3,,true"),
            ("{{user.nested}}", "1,2,3"),
            ("{{user.none}}", ""),
            ("{{user.obj}}", "[object Object]"),
            // the three-pass rule
            ("{{user.indirect}}", "Bob"),
            ("{{user.twice}}", "Bob"),
            ("{{user.thrice}}", "{{user.nickname}}"),
            ("{{user.loop}}", "{{user.loop}}"),
            ("{{{user.raw}}}", "<b>&</b>"),
            // comments
            ("a{{! a comment }}b", "ab"),
            ("a{{!}}b", "ab"),
            // sections
            ("{{#user.ok}}yes{{/user.ok}}", "yes"),
            ("{{#user.no}}yes{{/user.no}}", ""),
            ("{{#user.zero}}yes{{/user.zero}}", ""),
            ("{{#user.empty}}yes{{/user.empty}}", ""),
            ("{{#user.nothing}}yes{{/user.nothing}}", ""),
            ("{{#user.missing}}yes{{/user.missing}}", ""),
            ("{{#user.none}}yes{{/user.none}}", ""),
            ("{{#user.tags}}<{{.}}>{{/user.tags}}", "<a><b><3><><true>"),
            (
                "{{#user.people}}{{name}}:{{age}};{{/user.people}}",
                "Ann:30;Cy:;",
            ),
            (
                "{{#user.people}}{{name}}-{{user.nickname}} {{/user.people}}",
                "Ann-Bob Cy-Bob ",
            ),
            ("{{#user.obj}}a={{a}}{{/user.obj}}", "a=1"),
            ("{{#user.nickname}}<{{.}}>{{/user.nickname}}", "<Bob>"),
            // mustache.js falls through to the root, which has no `length`, for primitives.
            ("{{#user.nickname}}[{{length}}]{{/user.nickname}}", "[]"),
            (
                "{{#user.ok}}{{#user.tags}}{{.}}{{/user.tags}}{{/user.ok}}",
                "ab3true",
            ),
            // inverted sections
            ("{{^user.missing}}none{{/user.missing}}", "none"),
            ("{{^user.none}}empty{{/user.none}}", "empty"),
            ("{{^user.zero}}zero{{/user.zero}}", "zero"),
            ("{{^user.ok}}no{{/user.ok}}", ""),
            ("{{^user.tags}}no{{/user.tags}}", ""),
            // standalone section lines leave no blank lines behind
            ("A\n{{#user.ok}}\nB\n{{/user.ok}}\nC", "A\nB\nC"),
            ("A\n  {{! note }}  \nC", "A\nC"),
            ("A {{#user.ok}}\nB{{/user.ok}}", "A \nB"),
            // malformed templates: rendered up to the problem, the rest literally
            ("Hi {{user.nickname", "Hi {{user.nickname"),
            ("{{user.nickname}} {{oops", "Bob {{oops"),
            ("{{{user.name}}", "{{{user.name}}"),
            ("{{user.nickname}} {{#user.ok}}x", "Bob {{#user.ok}}x"),
            (
                "{{user.nickname}} {{/user.ok}} {{user.age}}",
                "Bob {{/user.ok}} {{user.age}}",
            ),
            ("{{#user.ok}}a{{/user.no}}b", "{{#user.ok}}a{{/user.no}}b"),
            (
                "{{#user.ok}}{{#user.no}}{{/user.ok}}",
                "{{#user.ok}}{{#user.no}}{{/user.ok}}",
            ),
            ("{{=<% %>=}} <% x %>", "{{=<% %>=}} <% x %>"),
            ("}} {{", "}} {{"),
            ("{{> partial}}x", "x"),
        ];
        for (template, expected) in cases {
            assert_eq!(render(template, &ctx), *expected, "{template:?}");
        }
    }

    #[test]
    fn renders_values_recursively() {
        let ctx = ctx();
        let value = json!({
            "type": "text", "text": "Hi {{user.nickname}}", "count": 2, "flag": true, "none": null,
            "{{user.nickname}}": ["{{user.age}}", 1, { "deep": "{{{user.name}}}" }]
        });
        let expected = json!({
            "type": "text", "text": "Hi Bob", "count": 2, "flag": true, "none": null,
            "{{user.nickname}}": ["3", 1, { "deep": "O'Brien" }]
        });
        assert_eq!(render_value(&value, &ctx), expected);
        assert_eq!(render_value(&json!(5), &ctx), json!(5));
        assert_eq!(
            render_value(&json!("{{temp.choice}}"), &ctx),
            json!("memory")
        );
    }

    #[test]
    fn only_renders_what_looks_like_a_template() {
        let cases: &[(&str, bool)] = &[
            ("{{a}}", true),
            ("x {{ a }} y", true),
            ("{{", false),
            ("}} {{", false),
            ("{{a\n}}", false),
            ("{{a}\n}", false),
            ("line\n{{a}}", true),
        ];
        for (s, expected) in cases {
            assert_eq!(looks_like_template(s), *expected, "{s:?}");
        }
        // A multi-line tag is not a template by Botpress' test, so it is left alone.
        assert_eq!(render("{{user.nickname\n}}", &ctx()), "{{user.nickname\n}}");
    }

    #[test]
    fn bounds_hostile_templates() {
        let ctx = json!({ "l": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] });
        // Ten nested loops over ten items would be 10^10 steps.
        let open = "{{#l}}".repeat(10);
        let close = "{{/l}}".repeat(10);
        let out = render(&format!("{open}x{close}"), &ctx);
        assert!(out.len() <= MAX_STEPS, "{}", out.len());
        // Too deep to nest at all: copied literally.
        let deep = format!("{}x{}", "{{#l}}".repeat(40), "{{/l}}".repeat(40));
        assert_eq!(render(&deep, &ctx), deep);
        // Many small tags are fine.
        let many = "{{l.0}}".repeat(10_000);
        assert_eq!(render(&many, &ctx), "1".repeat(10_000));
    }
}
