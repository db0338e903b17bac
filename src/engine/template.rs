//! Mustache as Botpress 11 renders it (spec §8.9): mustache.js 2.x semantics for variables,
//! sections, inverted sections and comments.
//!
//! **Only authors' text is a template.** Botpress renders up to three passes so that a template
//! can name an author-written string that is itself a template (an element's `{{text}}` naming
//! the `say` instruction's `"text": "Hi {{user.nickname}}"` argument). Its later passes also
//! re-parse whatever the first one pasted in, so a user who typed `{{bot.x}}` read the bot's
//! store, and a message of `{{{event.preview}}}`s multiplied itself. Here the passes follow
//! where the text came from instead: a value is pasted in literally, and only a value of a
//! [`Context`]'s author-written keys is rendered again, up to the third pass as in Botpress.
//!
//! **Bounded.** One render writes at most [`output_limit`] bytes (the rest is cut, with a warning)
//! and takes a bounded number of steps, so neither a loop over a large list nor any stored value
//! can grow beyond a fixed multiple of the author's template, turn after turn.
//!
//! Not supported: partials (`{{> name}}` renders nothing, as mustache.js does without partials)
//! and delimiter changes (`{{=<% %>=}}` and the rest of the text are left as they are).

use crate::engine::expr::JsVal;
use serde_json::Value;

/// Botpress renders at most three times: the author's template and two levels of author
/// strings named from it.
const MAX_PASSES: usize = 3;
/// Nesting and work are bounded: a few nested sections over arrays would otherwise multiply
/// into billions of steps.
const MAX_SECTION_DEPTH: usize = 32;
const MAX_STEPS: usize = 100_000;
/// The output of one render: at least this much…
const MIN_OUTPUT_LIMIT: usize = 64 * 1024;
/// …or this many bytes per byte of the template, whichever is more.
const OUTPUT_PER_TEMPLATE_BYTE: usize = 16;

/// The most bytes rendering `template` writes: max(64 KiB, 16 × its length).
pub fn output_limit(template: &str) -> usize {
    MIN_OUTPUT_LIMIT.max(template.len().saturating_mul(OUTPUT_PER_TEMPLATE_BYTE))
}

/// What a template is rendered against: an object whose values are data, except those under
/// the top-level keys named as author-written, which are rendered again when they look like
/// templates.
pub struct Context<'c> {
    values: &'c Value,
    authored: Vec<&'c str>,
}

impl<'c> Context<'c> {
    /// Every value is data (action arguments see only event, user, session, temp and bot).
    pub fn data(values: &'c Value) -> Context<'c> {
        Context {
            values,
            authored: Vec::new(),
        }
    }

    /// `values`, whose top-level `authored` keys hold the bot author's own strings (a `say`
    /// instruction's arguments).
    pub fn with_authored(
        values: &'c Value,
        authored: impl IntoIterator<Item = &'c str>,
    ) -> Context<'c> {
        Context {
            values,
            authored: authored.into_iter().collect(),
        }
    }

    fn is_authored(&self, key: &str) -> bool {
        self.authored.contains(&key)
    }
}

/// Renders `{{path}}` (HTML-escaped), `{{{path}}}` and `{{& path}}` (raw) against `ctx`.
///
/// Only text that looks like a template is rendered; "looks like" is `/{{.*}}/`: an opening
/// `{{` with a `}}` later on the same line.
pub fn render(template: &str, ctx: &Context) -> String {
    if !looks_like_template(template) {
        return template.to_string();
    }
    let mut renderer = Renderer {
        ctx,
        out: String::with_capacity(template.len()),
        limit: output_limit(template),
        steps: 0,
        cut: false,
    };
    renderer.render_template(template, 1);
    if renderer.cut {
        log::warn!(
            "a template's output was cut at {} bytes (the limit for a {}-byte template): {:?}",
            renderer.limit,
            template.len(),
            excerpt(template)
        );
    } else if renderer.steps > MAX_STEPS {
        log::warn!(
            "a template was cut after {MAX_STEPS} steps: {:?}",
            excerpt(template)
        );
    }
    renderer.out
}

/// Renders every string inside `value` (objects and arrays recursively), leaving other values alone.
pub fn render_value(value: &Value, ctx: &Context) -> Value {
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

/// The start of a template, for a log line.
fn excerpt(template: &str) -> &str {
    let end = (0..=template.len().min(80))
        .rev()
        .find(|&i| template.is_char_boundary(i))
        .unwrap_or(0);
    &template[..end]
}

fn looks_like_template(s: &str) -> bool {
    s.split(['\n', '\r', '\u{2028}', '\u{2029}']).any(|line| {
        line.find("{{")
            .is_some_and(|i| line[i + 2..].contains("}}"))
    })
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

/// Where a value on the context stack came from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Origin {
    /// The context object itself: its author-written keys are [`Origin::Author`].
    Root,
    /// Written by the bot's author: rendered again when it looks like a template.
    Author,
    /// Anything else (the event, user, session, temp, the bot-wide store): pasted literally.
    Data,
}

/// One context on mustache's stack, with where it came from.
type Frame<'a> = (JsVal<'a>, Origin);

struct Renderer<'c, 'v> {
    ctx: &'c Context<'v>,
    out: String,
    limit: usize,
    steps: usize,
    /// The output reached `limit`.
    cut: bool,
}

impl<'v> Renderer<'_, 'v> {
    fn exhausted(&self) -> bool {
        self.steps > MAX_STEPS || self.cut
    }

    /// Appends as much of `s` as the limit leaves room for (on a character boundary).
    fn push(&mut self, s: &str) {
        let room = self.limit.saturating_sub(self.out.len());
        if s.len() <= room {
            self.out.push_str(s);
            return;
        }
        let end = (0..=room)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        self.out.push_str(&s[..end]);
        self.cut = true;
    }

    /// Renders one author-written template as pass `pass` (1 is the author's template itself).
    /// A malformed template renders up to the offending tag (or the outermost section that
    /// never closes), and the rest is copied literally, rather than failing the whole message.
    fn render_template(&mut self, template: &str, pass: usize) {
        let (tokens, rest) = match parse(template) {
            Ok(tokens) => (tokens, ""),
            Err(at) => match parse(&template[..at]) {
                Ok(tokens) => (tokens, &template[at..]),
                Err(_) => (Vec::new(), template),
            },
        };
        // A later pass sees the whole context again, as Botpress' re-render of the text does.
        let mut stack = vec![(JsVal::from_json(self.ctx.values), Origin::Root)];
        self.render_tokens(&tokens, 0, tokens.len(), &mut stack, pass);
        if !self.exhausted() {
            self.push(rest);
        }
    }

    /// Renders tokens[from..to] with `stack` as the context stack (innermost last).
    fn render_tokens(
        &mut self,
        tokens: &[Token],
        from: usize,
        to: usize,
        stack: &mut Vec<Frame<'v>>,
        pass: usize,
    ) {
        let mut i = from;
        while i < to {
            self.steps += 1;
            if self.exhausted() {
                return;
            }
            match tokens[i] {
                Token::Text(s) => self.push(s),
                Token::Var { name, escape } => {
                    let (value, origin) = self.lookup(stack, name);
                    if !matches!(value, JsVal::Undefined | JsVal::Null) {
                        let raw = value.to_js_string();
                        let again = origin == Origin::Author && pass < MAX_PASSES;
                        let room = self.limit.saturating_sub(self.out.len());
                        if escape && !again && raw.len().saturating_mul(6) <= room {
                            // The common case: escaped straight into the output, which has
                            // room even if every byte became a 6-byte entity.
                            escape_html(&mut self.out, &raw);
                        } else {
                            let text = if escape {
                                let mut escaped = String::with_capacity(raw.len());
                                escape_html(&mut escaped, &raw);
                                std::borrow::Cow::Owned(escaped)
                            } else {
                                raw
                            };
                            // Botpress' next pass re-reads the escaped text; only an author's
                            // string gets one here.
                            if again && looks_like_template(&text) {
                                self.render_template(&text, pass + 1);
                            } else {
                                self.push(&text);
                            }
                        }
                    }
                }
                Token::Section {
                    name,
                    inverted,
                    end,
                } => {
                    let (value, origin) = self.lookup(stack, name);
                    let empty_list = matches!(value, JsVal::Obj(Value::Array(a)) if a.is_empty());
                    if inverted {
                        if !value.truthy() || empty_list {
                            self.render_tokens(tokens, i + 1, end, stack, pass);
                        }
                    } else if value.truthy() {
                        match value {
                            JsVal::Obj(Value::Array(items)) => {
                                for item in items {
                                    stack.push((JsVal::from_json(item), origin));
                                    self.render_tokens(tokens, i + 1, end, stack, pass);
                                    stack.pop();
                                    if self.exhausted() {
                                        break;
                                    }
                                }
                            }
                            // `true` keeps the current context; objects, strings and numbers
                            // become the context.
                            JsVal::Bool(_) => self.render_tokens(tokens, i + 1, end, stack, pass),
                            other => {
                                stack.push((other, origin));
                                self.render_tokens(tokens, i + 1, end, stack, pass);
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

    /// mustache.js `Context.lookup`: `.` is the current context; otherwise the innermost context
    /// that has the name wins, and when none has it the value read from the outermost one is
    /// used (which is how `{{text.length}}` on a string still works). Also tells where the
    /// value came from.
    fn lookup(&self, stack: &[Frame<'v>], name: &str) -> (JsVal<'v>, Origin) {
        let name = event_state_alias(name);
        let origin_in = |view: Origin| match view {
            Origin::Root => {
                let first = name.split('.').next().unwrap_or(name);
                if self.ctx.is_authored(first) {
                    Origin::Author
                } else {
                    Origin::Data
                }
            }
            other => other,
        };
        if name == "." {
            return stack
                .last()
                .map_or((JsVal::Undefined, Origin::Data), |(v, o)| {
                    // The context object as a whole is not an author's string.
                    (
                        v.clone(),
                        if *o == Origin::Root { Origin::Data } else { *o },
                    )
                });
        }
        let dotted = name.find('.').is_some_and(|i| i > 0);
        let mut found = (JsVal::Undefined, Origin::Data);
        for (view, view_origin) in stack.iter().rev() {
            let hit;
            let value;
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
            found = (value, origin_in(*view_origin));
            if hit {
                break;
            }
        }
        found
    }
}

/// `event.state.user…` (and `temp`, `session`, `bot`) names the turn's `user…`: in Botpress
/// the event carries its state, and the template's `user` is that same object.
fn event_state_alias(name: &str) -> &str {
    if let Some(rest) = name.strip_prefix("event.state.") {
        let root = rest.split('.').next().unwrap_or(rest);
        if ["user", "temp", "session", "bot"].contains(&root) {
            return rest;
        }
    }
    name
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
            "event": { "payload": { "text": "hi there {{user.nickname}}" }, "preview": "{{{event.preview}}}" },
            "bot": { "secret": "s3cr3t" },
            // Author-written `say` arguments.
            "loop": "{{loop}}", "indirect": "{{user.nickname}}", "twice": "{{indirect}}",
            "thrice": "{{twice}}", "raw": "{{{user.html}}}", "html": "<b>{{user.nickname}}</b>",
            "slash": "{{#user.ok}}yes{{/user.ok}}", "list": ["{{user.age}}", "{{temp.$r}}"],
            "card": { "title": "{{user.nickname}}", "more": { "deep": "{{indirect}}" } },
            "bigger": "{{{event.preview}}}{{{event.preview}}}"
        })
    }

    const AUTHORED: [&str; 10] = [
        "loop", "indirect", "twice", "thrice", "raw", "html", "slash", "list", "card", "bigger",
    ];

    /// Renders against `ctx` with [`AUTHORED`] as its author-written keys.
    fn render_in(template: &str, ctx: &Value) -> String {
        render(template, &Context::with_authored(ctx, AUTHORED))
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
            // Botpress's event carries its state: `event.state.user` is `user`.
            ("{{event.state.user.nickname}}", "Bob"),
            (
                "{{event.state.temp.choice}}/{{event.state.bot.secret}}",
                "memory/s3cr3t",
            ),
            ("[{{event.state.context}}]", "[]"),
            ("{{event.payload.text}}", "hi there {{user.nickname}}"),
            ("{{event.payload.text.length}}", "26"),
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
            // the three-pass rule, for author-written strings
            ("{{indirect}}", "Bob"),
            ("{{twice}}", "Bob"),
            ("{{thrice}}", "{{user.nickname}}"),
            ("{{loop}}", "{{loop}}"),
            ("{{{raw}}}", "<b>&</b>"),
            ("{{raw}}", "<b>&</b>"),
            // Botpress escapes the author's string, then renders what the escaping left.
            ("{{{html}}}", "<b>Bob</b>"),
            ("{{html}}", "&lt;b&gt;Bob&lt;&#x2F;b&gt;"),
            ("{{{slash}}}", "yes"),
            ("{{slash}}", "{{#user.ok}}yes{{&#x2F;user.ok}}"),
            ("{{list}}", "3,0"),
            ("{{card.title}}/{{card.more.deep}}", "Bob/Bob"),
            ("{{#card}}{{title}}{{/card}}", "Bob"),
            ("{{#list}}[{{.}}]{{/list}}", "[3][0]"),
            // … and never for data: a value is pasted as it is, whatever it holds.
            ("{{user.indirect}}", "{{user.nickname}}"),
            ("{{user.twice}}", "{{user.indirect}}"),
            ("{{user.loop}}", "{{user.loop}}"),
            ("{{{user.raw}}}", "{{{user.html}}}"),
            ("{{{event.payload.text}}}", "hi there {{user.nickname}}"),
            ("{{{event.preview}}}", "{{{event.preview}}}"),
            (
                "{{#user.people}}{{{user.indirect}}}{{/user.people}}",
                "{{user.nickname}}{{user.nickname}}",
            ),
            // An author's string that pastes data: the data stays as it is.
            ("{{{bigger}}}", "{{{event.preview}}}{{{event.preview}}}"),
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
            assert_eq!(render_in(template, &ctx), *expected, "{template:?}");
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
        let ctx = Context::with_authored(&ctx, AUTHORED);
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
        assert_eq!(
            render_in("{{user.nickname\n}}", &ctx()),
            "{{user.nickname\n}}"
        );
    }

    #[test]
    fn bounds_hostile_templates() {
        let values = json!({ "l": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] });
        let ctx = Context::data(&values);
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

    #[test]
    fn output_is_bounded_by_the_template() {
        let big = "é".repeat(100_000);
        let values = json!({ "big": big, "l": vec![0; 1000], "author": "{{{big}}}{{{big}}}" });
        let ctx = Context::with_authored(&values, ["author"]);
        // A long value is cut at the limit, on a character boundary.
        let out = render("{{{big}}}", &ctx);
        assert_eq!(output_limit("{{{big}}}"), 64 * 1024);
        assert_eq!(out, "é".repeat(32 * 1024));
        // A loop over a list pastes until the limit, never past it.
        let template = "{{#l}}{{{big}}}{{/l}}";
        assert!(render(template, &ctx).len() <= output_limit(template));
        // The author's nested template shares its parent's budget.
        assert_eq!(render("{{{author}}}", &ctx).len(), 64 * 1024);
        // A long template gets room in proportion.
        let long = format!("{}{{{{{{big}}}}}}", "x".repeat(20_000));
        assert_eq!(output_limit(&long), 16 * long.len());
        assert_eq!(render(&long, &ctx).len(), 20_000 + big.len());
        // Plain text is never cut, whatever its size.
        let plain = "y".repeat(1 << 20);
        assert_eq!(render(&plain, &ctx), plain);
    }

    #[test]
    fn text_from_users_stays_literal() {
        let typed = [
            "{{event.botId}}",
            "{{{bot.secret}}}",
            "{{#user}}{{nickname}}{{/user}}",
            "{{& user.name}} {{> partial}} {{! comment}} {{=<% %>=}}",
            "{{{event.preview}}}{{{event.preview}}}",
            "{{#event.l}}{{{event.preview}}}{{/event.l}}",
        ];
        for text in typed {
            let values = json!({
                "event": { "botId": "b", "preview": text, "payload": { "text": text }, "l": [1, 2, 3] },
                "user": { "nickname": text, "name": "Bob" }, "bot": { "secret": "s" },
                "text": "{{{event.payload.text}}}"
            });
            let ctx = Context::with_authored(&values, ["text"]);
            for template in [
                "{{{event.preview}}}",
                "{{{event.payload.text}}}",
                "{{{user.nickname}}}",
                "{{{text}}}",
                "{{#user}}{{{nickname}}}{{/user}}",
            ] {
                assert_eq!(render(template, &ctx), text, "{template} with {text}");
            }
            // Escaped once, and only once.
            let mut escaped = String::new();
            escape_html(&mut escaped, text);
            assert_eq!(render("{{event.preview}}", &ctx), escaped);
            // The author's `{{{…}}}` inside the escaped author string still decides.
            assert_eq!(render("{{text}}", &ctx), text);
        }
    }
}
