//! Transition conditions (spec §8.5): the small JavaScript subset Botpress v11 flows put in a
//! transition's `condition` (calls to the built-ins of [`super::js_builtins`] included), parsed
//! once at bot load and evaluated on every turn against
//! `{event, user, temp, session, bot}` with JavaScript's own coercion rules, so a bot takes the same
//! branches here as it did in Botpress' VM.
//!
//! Object identity: state arrives as JSON, so every object or array in the scope is a distinct JS
//! object. Two object values are therefore equal (`==` or `===`) only when both sides are the very
//! same node of the scope (`temp.a === temp.a`); equal contents at different paths are not equal,
//! exactly as reference equality behaves in JS.

use super::js_builtins::{self, Global, MathFn, Method, CALLABLE};
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

/// The only globals a condition may name.
const ROOTS: [&str; 5] = ["event", "user", "temp", "session", "bot"];
/// Bounds the AST depth (and so the evaluator's recursion) for absurd inputs.
const MAX_TOKENS: usize = 1000;
/// Bounds the parser's recursion through parentheses and prefix operators.
const MAX_NESTING: usize = 64;

/// A parsed transition condition.
#[derive(Debug, Clone)]
pub struct Condition {
    source: String,
    expr: Expr,
}

impl Condition {
    /// Parses once at bot load. Err(message) names what is wrong, e.g. "unexpected token ')' at
    /// column 12" or "unknown variable 'foo' (conditions can use event, user, temp, session, bot)".
    pub fn parse(source: &str) -> Result<Condition, String> {
        let tokens = lex(source)?;
        let mut parser = Parser {
            tokens,
            pos: 0,
            nesting: 0,
        };
        if parser.peek().tok == Tok::End {
            return Err("empty condition".to_string());
        }
        let expr = parser.parse_or()?;
        parser.eat_punct(";");
        let next = parser.peek();
        if next.tok != Tok::End {
            return Err(unexpected(next));
        }
        Ok(Condition {
            source: source.to_string(),
            expr,
        })
    }

    /// Evaluates against `scope`, a JSON object with keys event, user, temp, session, bot.
    /// A JS TypeError (reading a property of undefined/null) makes the whole condition false, as
    /// Botpress does.
    pub fn eval(&self, scope: &serde_json::Value) -> bool {
        match eval(&self.expr, scope) {
            Ok(v) => v.truthy(),
            Err(TypeError) => false,
        }
    }

    /// The text the condition was parsed from, for messages and logs.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

// ---------------------------------------------------------------------------------------------
// Values

/// A JavaScript value as far as conditions and templates can see one. Objects and arrays stay
/// borrowed from the JSON scope so identity is the node's address.
#[derive(Debug, Clone)]
pub(crate) enum JsVal<'a> {
    Undefined,
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    Obj(&'a Value),
}

/// Reading a property of undefined or null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TypeError;

impl<'a> JsVal<'a> {
    pub(crate) fn from_json(v: &'a Value) -> JsVal<'a> {
        match v {
            Value::Null => JsVal::Null,
            Value::Bool(b) => JsVal::Bool(*b),
            Value::Number(n) => JsVal::Num(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => JsVal::Str(Cow::Borrowed(s)),
            Value::Array(_) | Value::Object(_) => JsVal::Obj(v),
        }
    }

    /// JS ToBoolean.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            JsVal::Undefined | JsVal::Null => false,
            JsVal::Bool(b) => *b,
            JsVal::Num(n) => !(n.is_nan() || *n == 0.0),
            JsVal::Str(s) => !s.is_empty(),
            JsVal::Obj(_) => true,
        }
    }

    /// JS `String(value)`.
    pub(crate) fn to_js_string(&self) -> Cow<'_, str> {
        match self {
            JsVal::Undefined => Cow::Borrowed("undefined"),
            JsVal::Null => Cow::Borrowed("null"),
            JsVal::Bool(true) => Cow::Borrowed("true"),
            JsVal::Bool(false) => Cow::Borrowed("false"),
            JsVal::Num(n) => Cow::Owned(number_to_string(*n)),
            JsVal::Str(s) => Cow::Borrowed(s),
            JsVal::Obj(v) => Cow::Owned(object_to_string(v)),
        }
    }

    /// JS ToNumber.
    pub(crate) fn to_number(&self) -> f64 {
        match self {
            JsVal::Undefined => f64::NAN,
            JsVal::Null => 0.0,
            JsVal::Bool(b) => f64::from(u8::from(*b)),
            JsVal::Num(n) => *n,
            JsVal::Str(s) => string_to_number(s),
            JsVal::Obj(v) => string_to_number(&object_to_string(v)),
        }
    }

    pub(crate) fn type_of(&self) -> &'static str {
        match self {
            JsVal::Undefined => "undefined",
            JsVal::Null | JsVal::Obj(_) => "object",
            JsVal::Bool(_) => "boolean",
            JsVal::Num(_) => "number",
            JsVal::Str(_) => "string",
        }
    }

    /// `value[key]` with a property key already converted to a string.
    pub(crate) fn get(&self, key: &str) -> Result<JsVal<'a>, TypeError> {
        match self {
            JsVal::Undefined | JsVal::Null => Err(TypeError),
            JsVal::Bool(_) | JsVal::Num(_) => Ok(JsVal::Undefined),
            JsVal::Str(s) => Ok(if key == "length" {
                JsVal::Num(s.encode_utf16().count() as f64)
            } else if let Some(i) = array_index(key) {
                // JS strings index by UTF-16 code unit.
                match s.encode_utf16().nth(i) {
                    Some(unit) => JsVal::Str(Cow::Owned(String::from_utf16_lossy(&[unit]))),
                    None => JsVal::Undefined,
                }
            } else {
                JsVal::Undefined
            }),
            JsVal::Obj(Value::Array(items)) => Ok(if key == "length" {
                JsVal::Num(items.len() as f64)
            } else {
                array_index(key)
                    .and_then(|i| items.get(i))
                    .map_or(JsVal::Undefined, JsVal::from_json)
            }),
            JsVal::Obj(Value::Object(map)) => {
                Ok(map.get(key).map_or(JsVal::Undefined, JsVal::from_json))
            }
            JsVal::Obj(_) => Ok(JsVal::Undefined),
        }
    }

    /// Whether `key in value` holds (false for primitives, which are not objects).
    pub(crate) fn has_property(&self, key: &str) -> bool {
        match self {
            JsVal::Obj(Value::Array(items)) => {
                key == "length" || array_index(key).is_some_and(|i| i < items.len())
            }
            JsVal::Obj(Value::Object(map)) => map.contains_key(key),
            _ => false,
        }
    }

    /// Objects become their string form, as JS ToPrimitive does for arrays and plain objects.
    fn to_primitive(&self) -> JsVal<'a> {
        match self {
            JsVal::Obj(v) => JsVal::Str(Cow::Owned(object_to_string(v))),
            other => other.clone(),
        }
    }
}

/// A canonical array index ("0", "17"; not "01", "-1" or "1.0").
fn array_index(key: &str) -> Option<usize> {
    let bytes = key.as_bytes();
    if bytes.is_empty()
        || !bytes.iter().all(u8::is_ascii_digit)
        || (bytes.len() > 1 && bytes[0] == b'0')
    {
        return None;
    }
    key.parse().ok()
}

/// `String(obj)`: arrays join their elements with "," (null and undefined as ""), plain objects
/// are "[object Object]".
fn object_to_string(v: &Value) -> String {
    let mut out = String::new();
    push_object_string(&mut out, v);
    out
}

fn push_object_string(out: &mut String, v: &Value) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match item {
                    Value::Null => {}
                    Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                    Value::Number(n) => {
                        out.push_str(&number_to_string(n.as_f64().unwrap_or(f64::NAN)))
                    }
                    Value::String(s) => out.push_str(s),
                    Value::Array(_) | Value::Object(_) => push_object_string(out, item),
                }
            }
        }
        Value::Object(_) => out.push_str("[object Object]"),
        other => out.push_str(&JsVal::from_json(other).to_js_string()),
    }
}

/// JS `Number.prototype.toString()` for base 10: shortest round-trip digits, plain notation for
/// exponents in [-7, 21), exponent notation outside.
pub(crate) fn number_to_string(n: f64) -> String {
    if n.is_nan() {
        return "NaN".to_string();
    }
    if n == 0.0 {
        return "0".to_string(); // also -0
    }
    if n.is_infinite() {
        return if n > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        return format!("{}", n as i64);
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "1.5e-7".
    let sci = format!("{:e}", n.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let point = exp + 1; // digits * 10^(point - k)
    let mut out = String::new();
    if n < 0.0 {
        out.push('-');
    }
    if k <= point && point <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (point - k) as usize));
    } else if 0 < point && point <= 21 {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    } else if -6 < point && point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if point - 1 < 0 { '-' } else { '+' });
        out.push_str(&(point - 1).abs().to_string());
    }
    out
}

pub(crate) fn is_js_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

/// JS ToNumber on a string: trimmed, "" is 0, decimal or 0x/0o/0b literals, Infinity; anything
/// else is NaN (Rust's parser would also take "inf" and "nan", so the grammar is checked first).
pub(crate) fn string_to_number(s: &str) -> f64 {
    let t = s.trim_matches(is_js_space);
    if t.is_empty() {
        return 0.0;
    }
    match t {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    let b = t.as_bytes();
    if b.len() > 2 && b[0] == b'0' {
        let radix = match b[1] {
            b'x' | b'X' => 16,
            b'o' | b'O' => 8,
            b'b' | b'B' => 2,
            _ => 0,
        };
        if radix != 0 {
            let mut value = 0.0f64;
            for c in t[2..].chars() {
                match c.to_digit(radix) {
                    Some(d) => value = value * f64::from(radix) + f64::from(d),
                    None => return f64::NAN,
                }
            }
            return value;
        }
    }
    if is_decimal_literal(b) {
        t.parse().unwrap_or(f64::NAN)
    } else {
        f64::NAN
    }
}

/// `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`
pub(crate) fn is_decimal_literal(b: &[u8]) -> bool {
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut mantissa_digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        mantissa_digits += i - frac_start;
    }
    if mantissa_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == b.len()
}

pub(crate) fn strict_eq(a: &JsVal, b: &JsVal) -> bool {
    match (a, b) {
        (JsVal::Undefined, JsVal::Undefined) | (JsVal::Null, JsVal::Null) => true,
        (JsVal::Bool(x), JsVal::Bool(y)) => x == y,
        (JsVal::Num(x), JsVal::Num(y)) => x == y,
        (JsVal::Str(x), JsVal::Str(y)) => x == y,
        (JsVal::Obj(x), JsVal::Obj(y)) => std::ptr::eq(*x, *y),
        _ => false,
    }
}

/// JS abstract equality (`==`).
fn loose_eq(a: &JsVal, b: &JsVal) -> bool {
    use JsVal::*;
    match (a, b) {
        (Undefined | Null, Undefined | Null) => true,
        (Undefined | Null, _) | (_, Undefined | Null) => false,
        (Bool(_), Bool(_)) | (Num(_), Num(_)) | (Str(_), Str(_)) | (Obj(_), Obj(_)) => {
            strict_eq(a, b)
        }
        (Bool(x), _) => loose_eq(&Num(f64::from(u8::from(*x))), b),
        (_, Bool(y)) => loose_eq(a, &Num(f64::from(u8::from(*y)))),
        (Num(x), Str(s)) | (Str(s), Num(x)) => *x == string_to_number(s),
        (Obj(_), _) => loose_eq(&a.to_primitive(), b),
        (_, Obj(_)) => loose_eq(a, &b.to_primitive()),
    }
}

/// JS relational comparison: two strings compare by UTF-16 code units, anything else as numbers,
/// where NaN makes every comparison false.
fn relational(op: Op, a: &JsVal, b: &JsVal) -> bool {
    let (a, b) = (a.to_primitive(), b.to_primitive());
    let ord = match (&a, &b) {
        (JsVal::Str(x), JsVal::Str(y)) => Some(x.encode_utf16().cmp(y.encode_utf16())),
        _ => a.to_number().partial_cmp(&b.to_number()),
    };
    let Some(ord) = ord else { return false };
    match op {
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax

#[derive(Debug, Clone)]
enum Expr {
    Lit(Lit),
    /// An array literal of constants (`['yes', 'yeah']`), kept as the JSON array it is.
    Array(Value),
    Root(&'static str),
    Member(Box<Expr>, Key),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Typeof(Box<Expr>),
    Binary(Op, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    /// `Number(x)`, `Math.floor(x)`, …: one of the globals of [`Global`].
    Call(Global, Vec<Expr>),
    /// `value.includes(x)`, …: a string or array method of [`Method`].
    Method(Box<Expr>, Method, Vec<Expr>),
    /// `/pattern/flags.test(value)`.
    RegexTest(Box<regex::Regex>, Box<Expr>),
}

#[derive(Debug, Clone)]
enum Lit {
    Undefined,
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
}

#[derive(Debug, Clone)]
enum Key {
    /// `.name`, or a literal inside brackets, already converted to its property key.
    Name(String),
    Computed(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StrictEq,
    StrictNe,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    Punct(&'static str),
    /// `/pattern/flags`, where a value may start.
    Regex(String, String),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// 1-based column, counted in characters.
    col: usize,
}

/// Longest first, so "===" wins over "==" and "=".
const PUNCTS: [&str; 32] = [
    "===", "!==", "==", "!=", "<=", ">=", "&&", "||", "??", "=>", "<", ">", "!", "(", ")", "[",
    "]", ".", "-", ";", "=", "+", "*", "/", "%", "?", ":", ",", "&", "|", "{", "}",
];

fn is_ident_start(c: char) -> bool {
    c == '$' || c == '_' || c.is_alphabetic()
}

fn is_ident_part(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c.is_alphanumeric()
}

fn lex(source: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if is_js_space(c) {
            i += 1;
            continue;
        }
        if tokens.len() >= MAX_TOKENS {
            return Err(format!(
                "condition is too long (more than {MAX_TOKENS} tokens)"
            ));
        }
        if c == '/' && !ends_value(tokens.last()) {
            let (pattern, flags, next) = lex_regex(&chars, i)?;
            tokens.push(Token {
                tok: Tok::Regex(pattern, flags),
                col,
            });
            i = next;
        } else if c == '\'' || c == '"' {
            let (s, next) = lex_string(&chars, i)?;
            tokens.push(Token {
                tok: Tok::Str(s),
                col,
            });
            i = next;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let (n, next) = lex_number(&chars, i)?;
            tokens.push(Token {
                tok: Tok::Num(n),
                col,
            });
            i = next;
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident_part(chars[i]) {
                i += 1;
            }
            tokens.push(Token {
                tok: Tok::Ident(chars[start..i].iter().collect()),
                col,
            });
        } else if let Some(p) = PUNCTS.iter().find(|p| {
            p.chars()
                .enumerate()
                .all(|(k, pc)| chars.get(i + k) == Some(&pc))
        }) {
            tokens.push(Token {
                tok: Tok::Punct(p),
                col,
            });
            i += p.len();
        } else {
            return Err(format!("unexpected character '{c}' at column {col}"));
        }
    }
    tokens.push(Token {
        tok: Tok::End,
        col: chars.len() + 1,
    });
    Ok(tokens)
}

/// Whether `/` after this token divides (it follows a value) rather than opens a regex.
fn ends_value(last: Option<&Token>) -> bool {
    matches!(
        last.map(|t| &t.tok),
        Some(Tok::Num(_) | Tok::Str(_) | Tok::Ident(_) | Tok::Regex(..) | Tok::Punct(")" | "]"))
    )
}

/// A regular expression literal: the pattern up to the closing `/` (not inside `[...]`, not
/// escaped), then its flags.
fn lex_regex(chars: &[char], start: usize) -> Result<(String, String, usize), String> {
    let mut i = start + 1;
    let mut in_class = false;
    let mut pattern = String::new();
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(format!(
                "unterminated regular expression starting at column {}",
                start + 1
            ));
        };
        match c {
            '\\' => {
                pattern.push(c);
                if let Some(&e) = chars.get(i + 1) {
                    pattern.push(e);
                }
                i += 2;
                continue;
            }
            '[' => in_class = true,
            ']' => in_class = false,
            '/' if !in_class => break,
            '\n' | '\r' => {
                return Err(format!(
                    "unterminated regular expression starting at column {}",
                    start + 1
                ))
            }
            _ => {}
        }
        pattern.push(c);
        i += 1;
    }
    i += 1;
    let flags_start = i;
    while chars.get(i).is_some_and(|&c| is_ident_part(c)) {
        i += 1;
    }
    let flags: String = chars[flags_start..i].iter().collect();
    Ok((pattern, flags, i))
}

fn lex_number(chars: &[char], start: usize) -> Result<(f64, usize), String> {
    let col = start + 1;
    let mut i = start;
    let radix = match (chars[i], chars.get(i + 1)) {
        ('0', Some('x' | 'X')) => 16,
        ('0', Some('o' | 'O')) => 8,
        ('0', Some('b' | 'B')) => 2,
        _ => 10,
    };
    if radix != 10 {
        i += 2;
    }
    while i < chars.len() {
        let c = chars[i];
        let more = if radix != 10 {
            c.is_ascii_alphanumeric()
        } else {
            c.is_ascii_digit()
                || c == '.'
                || ((c == 'e' || c == 'E') && i > start)
                || ((c == '+' || c == '-') && matches!(chars[i - 1], 'e' | 'E'))
        };
        if !more {
            break;
        }
        i += 1;
    }
    let text: String = chars[start..i].iter().collect();
    if chars.get(i).is_some_and(|&c| is_ident_start(c)) {
        return Err(format!(
            "invalid number '{text}{}' at column {col}",
            chars[i]
        ));
    }
    let value = if radix != 10 {
        let v = string_to_number(&text);
        (text.len() > 2 && !v.is_nan()).then_some(v)
    } else if text.len() > 1 && text.starts_with('0') && text.as_bytes()[1].is_ascii_digit() {
        return Err(format!(
            "numbers with a leading zero ('{text}' at column {col}) are not supported"
        ));
    } else {
        is_decimal_literal(text.as_bytes()).then(|| string_to_number(&text))
    };
    match value {
        Some(v) => Ok((v, i)),
        None => Err(format!("invalid number '{text}' at column {col}")),
    }
}

fn lex_string(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let quote = chars[start];
    let unterminated = || format!("unterminated string starting at column {}", start + 1);
    let mut out = String::new();
    // UTF-16 units of the current run of \u escapes, so surrogate pairs combine.
    let mut units: Vec<u16> = Vec::new();
    let mut i = start + 1;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(unterminated());
        };
        if c != '\\' && !units.is_empty() {
            out.push_str(&String::from_utf16_lossy(&units));
            units.clear();
        }
        match c {
            c if c == quote => return Ok((out, i + 1)),
            '\n' | '\r' => return Err(unterminated()),
            '\\' => {
                let Some(&e) = chars.get(i + 1) else {
                    return Err(unterminated());
                };
                i += 2;
                let hex = |from: usize, len: usize| -> Option<u32> {
                    let s: String = chars.get(from..from + len)?.iter().collect();
                    u32::from_str_radix(&s, 16).ok()
                };
                let bad = || format!("invalid escape sequence in string at column {}", i - 1);
                let simple = match e {
                    'n' => Some('\n'),
                    't' => Some('\t'),
                    'r' => Some('\r'),
                    'b' => Some('\u{8}'),
                    'f' => Some('\u{c}'),
                    'v' => Some('\u{b}'),
                    '0' if !chars.get(i).is_some_and(char::is_ascii_digit) => Some('\0'),
                    'x' => {
                        let v = hex(i, 2).ok_or_else(bad)?;
                        i += 2;
                        char::from_u32(v)
                    }
                    'u' => {
                        let v = if chars.get(i) == Some(&'{') {
                            let close = (i..chars.len())
                                .find(|&k| chars[k] == '}')
                                .ok_or_else(bad)?;
                            let v = hex(i + 1, close - i - 1)
                                .filter(|&v| v <= 0x10ffff)
                                .ok_or_else(bad)?;
                            i = close + 1;
                            v
                        } else {
                            let v = hex(i, 4).ok_or_else(bad)?;
                            i += 4;
                            v
                        };
                        let mut buf = [0u16; 2];
                        match char::from_u32(v) {
                            Some(ch) => units.extend_from_slice(ch.encode_utf16(&mut buf)),
                            None => units.push(v as u16), // a surrogate half
                        }
                        continue;
                    }
                    // A line continuation adds nothing.
                    '\n' => None,
                    '\r' => {
                        if chars.get(i) == Some(&'\n') {
                            i += 1;
                        }
                        None
                    }
                    // Unknown escapes stand for the character itself, as in sloppy-mode JS.
                    other => Some(other),
                };
                if !units.is_empty() {
                    out.push_str(&String::from_utf16_lossy(&units));
                    units.clear();
                }
                if let Some(ch) = simple {
                    out.push(ch);
                }
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Num(n) => format!("'{}'", number_to_string(*n)),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Ident(name) => format!("'{name}'"),
        Tok::Punct(p) => format!("'{p}'"),
        Tok::Regex(p, f) => format!("regular expression /{p}/{f}"),
        Tok::End => "end of condition".to_string(),
    }
}

fn unexpected(t: &Token) -> String {
    match t.tok {
        Tok::End => "unexpected end of condition".to_string(),
        Tok::Punct("=") => format!(
            "assignment '=' at column {} is not allowed in a condition (use '===' or '==' to compare)",
            t.col
        ),
        _ => format!("unexpected token {} at column {}", describe(&t.tok), t.col),
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    nesting: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        if matches!(self.peek().tok, Tok::Punct(q) if q == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, p: &str) -> Result<(), String> {
        if self.eat_punct(p) {
            Ok(())
        } else {
            let t = self.peek();
            Err(match t.tok {
                Tok::End => format!("missing '{p}' at end of condition"),
                _ => format!(
                    "expected '{p}' but found {} at column {}",
                    describe(&t.tok),
                    t.col
                ),
            })
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(format!(
                "condition is nested too deeply (more than {MAX_NESTING} levels)"
            ));
        }
        Ok(())
    }

    /// `( expr, expr, … )`, the opening parenthesis being the next token.
    fn parse_args(&mut self) -> Result<Vec<Expr>, String> {
        self.expect_punct("(")?;
        self.enter()?;
        let mut args = Vec::new();
        if !self.eat_punct(")") {
            loop {
                args.push(self.parse_or()?);
                if self.eat_punct(")") {
                    break;
                }
                if self.peek().tok == Tok::End {
                    return Err("missing ')' at end of condition".into());
                }
                self.expect_punct(",")?;
            }
        }
        self.nesting -= 1;
        Ok(args)
    }

    fn parse_or(&mut self) -> Result<Expr, String> {
        let mut left = self.parse_and()?;
        while self.eat_punct("||") {
            let right = self.parse_and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_and(&mut self) -> Result<Expr, String> {
        let mut left = self.parse_equality()?;
        while self.eat_punct("&&") {
            let right = self.parse_equality()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_equality(&mut self) -> Result<Expr, String> {
        let mut left = self.parse_relational()?;
        loop {
            let op = match self.peek().tok {
                Tok::Punct("===") => Op::StrictEq,
                Tok::Punct("!==") => Op::StrictNe,
                Tok::Punct("==") => Op::Eq,
                Tok::Punct("!=") => Op::Ne,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.parse_relational()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn parse_relational(&mut self) -> Result<Expr, String> {
        let mut left = self.parse_unary()?;
        loop {
            let op = match self.peek().tok {
                Tok::Punct("<") => Op::Lt,
                Tok::Punct("<=") => Op::Le,
                Tok::Punct(">") => Op::Gt,
                Tok::Punct(">=") => Op::Ge,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.parse_unary()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn parse_unary(&mut self) -> Result<Expr, String> {
        let wrap: fn(Box<Expr>) -> Expr = match &self.peek().tok {
            Tok::Punct("!") => Expr::Not,
            Tok::Punct("-") => Expr::Neg,
            Tok::Ident(name) if name == "typeof" => Expr::Typeof,
            _ => return self.parse_postfix(),
        };
        self.pos += 1;
        self.enter()?;
        let operand = self.parse_unary()?;
        self.nesting -= 1;
        Ok(wrap(Box::new(operand)))
    }

    fn parse_postfix(&mut self) -> Result<Expr, String> {
        let mut expr = self.parse_primary()?;
        loop {
            let t = self.peek().clone();
            match t.tok {
                Tok::Punct(".") => {
                    self.pos += 1;
                    let name = self.next();
                    match name.tok {
                        // `event.state.user` is `user` itself in Botpress (and so for
                        // session, temp and bot).
                        Tok::Ident(n)
                            if matches!(&expr, Expr::Member(o, Key::Name(s))
                                if s == "state" && matches!(**o, Expr::Root("event")))
                                && ROOTS[1..].contains(&n.as_str()) =>
                        {
                            let root = ROOTS.iter().find(|r| **r == n).expect("checked above");
                            expr = Expr::Root(root);
                        }
                        // Reserved words are fine as property names in JS.
                        Tok::Ident(n) => expr = Expr::Member(Box::new(expr), Key::Name(n)),
                        _ => {
                            return Err(format!(
                                "expected a property name after '.' at column {} but found {}",
                                t.col,
                                describe(&name.tok)
                            ))
                        }
                    }
                }
                Tok::Punct("[") => {
                    self.pos += 1;
                    self.enter()?;
                    let key = self.parse_or()?;
                    self.nesting -= 1;
                    self.expect_punct("]")?;
                    let key = match key {
                        Expr::Lit(Lit::Str(s)) => Key::Name(s),
                        Expr::Lit(lit) => Key::Name(lit_value(&lit).to_js_string().into_owned()),
                        other => Key::Computed(Box::new(other)),
                    };
                    expr = Expr::Member(Box::new(expr), key);
                }
                Tok::Punct("(") => {
                    let Expr::Member(object, Key::Name(name)) = expr else {
                        return Err(format!(
                            "only the standard functions and methods can be called in a condition ('(' at column {}); {CALLABLE}",
                            t.col
                        ));
                    };
                    let method = Method::from_name(&name).ok_or_else(|| {
                        format!(
                            "method '{name}' (column {}) cannot be called in a condition; {CALLABLE}",
                            t.col
                        )
                    })?;
                    let args = self.parse_args()?;
                    expr = Expr::Method(object, method, args);
                }
                _ => return Ok(expr),
            }
        }
    }

    fn parse_primary(&mut self) -> Result<Expr, String> {
        let t = self.next();
        match t.tok {
            Tok::Num(n) => Ok(Expr::Lit(Lit::Num(n))),
            Tok::Str(s) => Ok(Expr::Lit(Lit::Str(s))),
            Tok::Regex(pattern, flags) => {
                let regex = js_builtins::compile_regex(&pattern, &flags)
                    .map_err(|e| format!("regular expression at column {}: {e}", t.col))?;
                let is_test =
                    self.eat_punct(".") && matches!(&self.peek().tok, Tok::Ident(n) if n == "test");
                if !is_test {
                    return Err(format!(
                        "a regular expression (column {}) can only be used as /…/.test(text) in a condition",
                        t.col
                    ));
                }
                self.pos += 1;
                let mut args = self.parse_args()?;
                let subject = if args.is_empty() {
                    Expr::Lit(Lit::Undefined)
                } else {
                    args.swap_remove(0)
                };
                Ok(Expr::RegexTest(Box::new(regex), Box::new(subject)))
            }
            Tok::Ident(name) if name == "Math" => {
                self.expect_punct(".")?;
                let member = self.next();
                let Tok::Ident(member) = member.tok else {
                    return Err(format!(
                        "expected a Math function after 'Math.' at column {}",
                        member.col
                    ));
                };
                if let Some(constant) = js_builtins::math_constant(&member) {
                    return Ok(Expr::Lit(Lit::Num(constant)));
                }
                let function = MathFn::from_name(&member).ok_or_else(|| {
                    format!(
                        "'Math.{member}' (column {}) is not available in a condition; {CALLABLE}",
                        t.col
                    )
                })?;
                if !matches!(self.peek().tok, Tok::Punct("(")) {
                    return Err(format!(
                        "'Math.{member}' at column {} must be called",
                        t.col
                    ));
                }
                let args = self.parse_args()?;
                Ok(Expr::Call(Global::Math(function), args))
            }
            Tok::Ident(name) => {
                if matches!(self.peek().tok, Tok::Punct("(")) {
                    let global = Global::from_name(&name).ok_or_else(|| {
                        format!(
                            "function '{name}' (column {}) cannot be called in a condition; {CALLABLE}",
                            t.col
                        )
                    })?;
                    let args = self.parse_args()?;
                    return Ok(Expr::Call(global, args));
                }
                match name.as_str() {
                    "true" => Ok(Expr::Lit(Lit::Bool(true))),
                    "false" => Ok(Expr::Lit(Lit::Bool(false))),
                    "null" => Ok(Expr::Lit(Lit::Null)),
                    "undefined" => Ok(Expr::Lit(Lit::Undefined)),
                    _ => match ROOTS.iter().find(|r| **r == name) {
                        Some(root) => Ok(Expr::Root(root)),
                        None => Err(format!(
                            "unknown variable '{name}' (conditions can use {})",
                            ROOTS.join(", ")
                        )),
                    },
                }
            }
            Tok::Punct("(") => {
                self.enter()?;
                let inner = self.parse_or()?;
                self.nesting -= 1;
                self.expect_punct(")")?;
                Ok(inner)
            }
            Tok::Punct("[") => {
                self.enter()?;
                let mut items = Vec::new();
                if !self.eat_punct("]") {
                    loop {
                        let item = self.parse_or()?;
                        items.push(constant_json(&item).ok_or_else(|| {
                            format!(
                                "an array literal (column {}) can only hold strings, numbers, booleans and null",
                                t.col
                            )
                        })?);
                        if self.eat_punct("]") {
                            break;
                        }
                        if self.peek().tok == Tok::End {
                            return Err("missing ']' at end of condition".into());
                        }
                        self.expect_punct(",")?;
                    }
                }
                self.nesting -= 1;
                Ok(Expr::Array(Value::Array(items)))
            }
            _ => Err(unexpected(&t)),
        }
    }
}

/// A constant expression as JSON: a literal, or a negated number.
fn constant_json(expr: &Expr) -> Option<Value> {
    match expr {
        Expr::Lit(Lit::Null) => Some(Value::Null),
        Expr::Lit(Lit::Bool(b)) => Some(Value::Bool(*b)),
        Expr::Lit(Lit::Num(n)) => serde_json::Number::from_f64(*n).map(Value::Number),
        Expr::Lit(Lit::Str(s)) => Some(Value::String(s.clone())),
        Expr::Neg(inner) => match constant_json(inner)? {
            Value::Number(n) => serde_json::Number::from_f64(-n.as_f64()?).map(Value::Number),
            _ => None,
        },
        _ => None,
    }
}

fn lit_value(lit: &Lit) -> JsVal<'_> {
    match lit {
        Lit::Undefined => JsVal::Undefined,
        Lit::Null => JsVal::Null,
        Lit::Bool(b) => JsVal::Bool(*b),
        Lit::Num(n) => JsVal::Num(*n),
        Lit::Str(s) => JsVal::Str(Cow::Borrowed(s)),
    }
}

fn eval<'a>(expr: &'a Expr, scope: &'a Value) -> Result<JsVal<'a>, TypeError> {
    Ok(match expr {
        Expr::Lit(lit) => lit_value(lit),
        Expr::Array(items) => JsVal::Obj(items),
        Expr::Root(name) => scope.get(*name).map_or(JsVal::Undefined, JsVal::from_json),
        Expr::Member(object, key) => {
            let object = eval(object, scope)?;
            match key {
                Key::Name(name) => object.get(name)?,
                Key::Computed(key) => {
                    let key = eval(key, scope)?;
                    object.get(&key.to_js_string())?
                }
            }
        }
        Expr::Not(e) => JsVal::Bool(!eval(e, scope)?.truthy()),
        Expr::Neg(e) => JsVal::Num(-eval(e, scope)?.to_number()),
        Expr::Typeof(e) => JsVal::Str(Cow::Borrowed(eval(e, scope)?.type_of())),
        Expr::Binary(op, l, r) => {
            let (l, r) = (eval(l, scope)?, eval(r, scope)?);
            JsVal::Bool(match op {
                Op::StrictEq => strict_eq(&l, &r),
                Op::StrictNe => !strict_eq(&l, &r),
                Op::Eq => loose_eq(&l, &r),
                Op::Ne => !loose_eq(&l, &r),
                _ => relational(*op, &l, &r),
            })
        }
        Expr::And(l, r) => {
            let l = eval(l, scope)?;
            if l.truthy() {
                eval(r, scope)?
            } else {
                l
            }
        }
        Expr::Or(l, r) => {
            let l = eval(l, scope)?;
            if l.truthy() {
                l
            } else {
                eval(r, scope)?
            }
        }
        Expr::Call(global, args) => {
            let args = args
                .iter()
                .map(|a| eval(a, scope))
                .collect::<Result<Vec<_>, _>>()?;
            js_builtins::call(*global, &args)
        }
        Expr::Method(object, method, args) => {
            let object = eval(object, scope)?;
            let args = args
                .iter()
                .map(|a| eval(a, scope))
                .collect::<Result<Vec<_>, _>>()?;
            js_builtins::call_method(&object, *method, &args)?
        }
        Expr::RegexTest(regex, subject) => {
            let subject = eval(subject, scope)?;
            JsVal::Bool(regex.is_match(&subject.to_js_string()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Value {
        json!({
            "event": {
                "type": "text",
                "preview": "hello",
                "payload": { "text": "hello" },
                "nlu": { "intent": { "name": "forget", "confidence": 0.9 } },
                "tags": ["a", "b"]
            },
            "user": {
                "nickname": "Bob", "age": 21, "emoji": "😀", "zero": 0, "empty": "",
                "nothing": null, "flag": true, "obj": { "a": 1 }, "list": [1, 2, 3],
                "one": [1], "none": [], "spaced": " 12 ", "abc": "abc", "ten": "10"
            },
            "temp": {
                "$r": 0, "_x": 5, "skill-choice-ret": "memory", "skill-choice-valid": true,
                "skill-choice-invalid-count": 1, "count": 2
            },
            "session": { "lastMessages": [] },
            "bot": { "name": "welcome" }
        })
    }

    #[test]
    fn evaluates_like_javascript() {
        let scope = scope();
        let cases: &[(&str, bool)] = &[
            // literals
            ("true", true),
            ("false", false),
            ("  true ;", true),
            ("null", false),
            ("undefined", false),
            ("0", false),
            ("1.5", true),
            (".5 === 0.5", true),
            ("1e3 === 1000", true),
            ("0x10 === 16", true),
            ("''", false),
            ("'0'", true),
            ("'it\\'s' === \"it's\"", true),
            ("'a\\nb'.length === 3", true),
            ("'\\u00e9' === 'é'", true),
            ("'\\uD83D\\uDE00' === '😀'", true),
            ("'\\x41' === 'A'", true),
            // the conditions real bots use
            ("user.nickname !== undefined", true),
            ("user.missing !== undefined", false),
            ("temp.$r === 0", true),
            ("temp.$r > 0", false),
            ("temp['skill-choice-ret'] == \"memory\"", true),
            ("event.nlu.intent.name === 'forget'", true),
            ("temp['skill-choice-valid'] === true", true),
            ("temp['skill-choice-invalid-count'] <= undefined", false),
            ("event.payload.text.length > 3", true),
            ("typeof user.age === 'number' && user.age >= 18", true),
            // paths
            ("temp._x === 5", true),
            ("event.tags[0] === 'a'", true),
            ("event.tags[\"1\"] === 'b'", true),
            ("event.tags[2] === undefined", true),
            ("user.list[temp.count] === 3", true),
            ("user['obj'].a === 1", true),
            ("bot.name === 'welcome'", true),
            ("user.abc[1] === 'b'", true),
            // missing paths and TypeErrors
            ("user.missing", false),
            ("user.missing.deeper === undefined", false),
            ("!user.missing.deeper", false),
            ("user.nothing.x === undefined", false),
            ("user.missing === undefined", true),
            ("user.missing && user.missing.deeper", false),
            ("!(user.missing && user.missing.deeper)", true),
            ("user.nickname || user.missing.deeper", true),
            ("user.age.toFixed === undefined", true),
            // .length
            ("user.emoji.length === 2", true),
            ("user.list.length === 3", true),
            ("session.lastMessages.length === 0", true),
            ("user.obj.length === undefined", true),
            // strict equality
            ("1 === 1.0", true),
            ("'1' === 1", false),
            ("null === undefined", false),
            ("user.obj === user.obj", true),
            ("user.one === user.one", true),
            ("user.obj !== user.list", true),
            // loose equality
            ("null == undefined", true),
            ("user.nothing == undefined", true),
            ("null == 0", false),
            ("undefined == false", false),
            ("'1' == 1", true),
            ("' 12 ' == 12", true),
            ("'' == 0", true),
            ("'abc' == 0", false),
            ("true == 1", true),
            ("true == '1'", true),
            ("false == ''", true),
            ("user.one == 1", true),
            ("user.none == ''", true),
            ("user.obj == '[object Object]'", true),
            ("user.list == '1,2,3'", true),
            ("user.zero != user.empty", false),
            // relational
            ("'10' < '9'", true),
            ("'10' < 9", false),
            ("user.ten > 9", true),
            ("user.spaced == 12 && user.spaced >= 12", true),
            ("null >= 0", true),
            ("null > 0", false),
            ("undefined < 1", false),
            ("undefined >= 0", false),
            ("user.abc < 1", false),
            ("user.abc >= 1", false),
            ("'a' < 'b'", true),
            ("'B' < 'a'", true),
            ("'\\uFF61' < '😀'", false),
            ("true > false", true),
            ("'' <= 0", true),
            ("user.none < 1", true),
            ("2 >= 2 && 2 <= 2 && !(2 < 2) && !(2 > 2)", true),
            ("-1 < 0", true),
            ("-user.ten === -10", true),
            ("-'abc' < 0", false),
            // logical operators and precedence
            ("!true", false),
            ("!!user.nickname", true),
            ("!user.empty", true),
            ("true || false && false", true),
            ("(true || false) && false", false),
            ("user.zero || user.empty", false),
            ("user.zero || 'x'", true),
            ("1 < 2 === true", true),
            ("!user.flag === false", true),
            ("user.missing || user.nothing || temp.$r", false),
            // typeof
            ("typeof user.missing === 'undefined'", true),
            ("typeof user.nothing === 'object'", true),
            ("typeof user.obj === 'object'", true),
            ("typeof user.list === 'object'", true),
            ("typeof user.flag === 'boolean'", true),
            ("typeof user.nickname === 'string'", true),
            ("typeof typeof 1 === 'string'", true),
            ("typeof user.missing.deeper === 'undefined'", false),
            ("typeof user.nickname.length === 'number'", true),
        ];
        for (source, expected) in cases {
            let condition = Condition::parse(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(condition.eval(&scope), *expected, "{source}");
            assert_eq!(condition.source(), *source);
        }
    }

    #[test]
    fn calls_evaluate_like_javascript() {
        let scope = scope();
        let cases: &[(&str, bool)] = &[
            ("event.state.user.nickname === 'Bob'", true),
            ("event.state.temp['skill-choice-ret'] === 'memory'", true),
            // What the Botpress 12 choice skill writes.
            (
                "Number(temp['skill-choice-invalid-count']) >= Number(3)",
                false,
            ),
            (
                "Number(temp['skill-choice-invalid-count']) >= Number(1)",
                true,
            ),
            ("Number(temp.missing) >= Number(3)", false),
            ("isNaN(Number(temp.missing))", true),
            ("Number() === 0", true),
            ("Number(user.spaced) === 12", true),
            ("Number(user.empty) === 0", true),
            ("Number(user.nothing) === 0", true),
            ("Number(user.list) !== Number(user.list)", true),
            ("Number(user.one) === 1", true),
            ("Number('0x10') === 16", true),
            ("String(user.age) === '21'", true),
            ("String(user.list) === '1,2,3'", true),
            ("String(user.obj) === '[object Object]'", true),
            ("String() === ''", true),
            ("String(temp.missing) === 'undefined'", true),
            ("Boolean(user.empty)", false),
            ("Boolean(user.obj)", true),
            ("parseInt(user.spaced) === 12", true),
            ("parseInt('12abc') === 12", true),
            ("parseInt('ff', 16) === 255", true),
            ("isNaN(parseInt(user.abc))", true),
            ("parseFloat('3.5 kg') === 3.5", true),
            ("isNaN('abc')", true),
            ("isNaN('12')", false),
            ("isNaN(user.nothing)", false),
            ("Math.floor(2.7) === 2", true),
            ("Math.ceil(2.1) === 3", true),
            ("Math.round(2.5) === 3", true),
            ("Math.round(-2.5) === -2", true),
            ("Math.abs(-3) === 3", true),
            ("Math.max(1, '5', 3) === 5", true),
            ("isNaN(Math.max(1, user.abc))", true),
            ("Math.min() === Math.max()", false),
            ("Math.pow(2, 10) === 1024", true),
            ("isNaN(Math.pow(1, temp.missing))", true),
            ("Math.trunc(-4.7) === -4", true),
            ("Math.sign(-3) === -1", true),
            ("Math.sqrt(16) === 4", true),
            ("Math.PI > 3.14 && Math.PI < 3.15", true),
            ("Math.random() < 1 && Math.random() >= 0", true),
            // String methods, with ToString on their arguments and UTF-16 positions.
            ("event.payload.text.includes('ell')", true),
            ("event.payload.text.includes('ell', 2)", false),
            ("event.payload.text.startsWith('he')", true),
            ("event.payload.text.startsWith('ll', 2)", true),
            ("event.payload.text.endsWith('lo')", true),
            ("event.payload.text.endsWith('he', 2)", true),
            ("event.payload.text.indexOf('l') === 2", true),
            ("event.payload.text.indexOf('z') === -1", true),
            ("event.payload.text.indexOf('') === 0", true),
            ("user.nickname.toLowerCase() === 'bob'", true),
            ("user.nickname.toUpperCase() === 'BOB'", true),
            ("user.spaced.trim() === '12'", true),
            ("user.spaced.trim().length === 2", true),
            ("user.ten.includes(1)", true),
            ("user.abc.includes()", false),
            ("'undefined'.includes()", true),
            ("user.emoji.length === 2", true),
            // Array methods compare strictly; includes finds NaN.
            ("user.list.includes(2)", true),
            ("user.list.includes('2')", false),
            ("user.list.indexOf(3) === 2", true),
            ("user.list.indexOf(3, -1) === 2", true),
            ("user.list.indexOf(1, 1) === -1", true),
            ("event.tags.includes('b')", true),
            // A method a value does not have is a TypeError: the condition is false.
            ("user.age.includes(2)", false),
            ("!user.age.includes(2)", false),
            ("user.obj.includes('a')", false),
            ("temp.missing.includes('a')", false),
            ("!temp.missing.trim()", false),
            // Constant array literals.
            (
                "['yes', 'yeah', 'sure'].includes(event.payload.text.replace)",
                false,
            ),
            ("['hello', 'hi'].includes(event.payload.text)", true),
            ("['hello', 'hi'].indexOf(event.preview) === 0", true),
            ("[1, -2, 3].includes(-2)", true),
            ("[].length === 0", true),
            ("[1, 2].length === 2", true),
            ("['1'].includes(1)", false),
            // Regex literals.
            ("/^h.l+o$/.test(event.payload.text)", true),
            ("/^HELLO$/i.test(event.payload.text)", true),
            ("/^HELLO$/.test(event.payload.text)", false),
            ("/\\d+/.test(user.age)", true),
            ("/[a/]b/.test('/b')", true),
            ("/undefined/.test(temp.missing)", true),
            ("/x/g.test('yxy')", true),
            ("!/x/.test('y')", true),
        ];
        for (source, expected) in cases {
            let c = Condition::parse(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(c.eval(&scope), *expected, "{source}");
        }
    }

    #[test]
    fn missing_scope_parts_are_undefined() {
        let scope = json!({ "user": {} });
        let cases: &[(&str, bool)] = &[
            ("temp === undefined", true),
            ("temp.x === undefined", false),
            ("typeof bot === 'undefined'", true),
            ("user.x === undefined", true),
        ];
        for (source, expected) in cases {
            assert_eq!(
                Condition::parse(source).unwrap().eval(&scope),
                *expected,
                "{source}"
            );
        }
    }

    #[test]
    fn rejects_what_is_not_a_condition() {
        let cases: &[(&str, &str)] = &[
            ("", "empty condition"),
            ("   ", "empty condition"),
            ("(user.x === 1", "missing ')'"),
            ("user.x === 1)", "unexpected token ')' at column 13"),
            ("((true)", "missing ')'"),
            (
                "foo === 1",
                "unknown variable 'foo' (conditions can use event, user, temp, session, bot)",
            ),
            ("window.x", "unknown variable 'window'"),
            ("temp.x = 1", "assignment '=' at column 8"),
            (
                "foo()",
                "function 'foo' (column 1) cannot be called in a condition; conditions can call Number",
            ),
            ("event.text.replace('x')", "method 'replace' (column 19) cannot be called"),
            ("Math.hypot(1)", "'Math.hypot' (column 1) is not available"),
            ("Math.floor", "must be called"),
            ("/a/ === 1", "can only be used as /…/.test(text)"),
            ("/(a)\\1/.test(user.x)", "backreferences are not supported"),
            ("/a/.test(user.x", "missing ')'"),
            ("(1)(2)", "only the standard functions and methods can be called"),
            ("Number(1, )", "unexpected token ')'"),
            ("[user.x].includes(1)", "can only hold strings, numbers, booleans and null"),
            ("['a', 'b'", "missing ']'"),
            ("user.x ===", "unexpected end of condition"),
            ("user.", "expected a property name after '.' at column 5"),
            ("user[", "unexpected end of condition"),
            ("user['x'", "missing ']'"),
            ("'abc", "unterminated string starting at column 1"),
            ("temp.x === 'a\\x4'", "invalid escape sequence"),
            ("temp.x # 1", "unexpected character '#' at column 8"),
            ("temp.x + 1 > 2", "unexpected token '+' at column 8"),
            ("1a", "invalid number '1a' at column 1"),
            ("010", "leading zero"),
            ("true; true", "unexpected token 'true' at column 7"),
            ("temp.x ? 1 : 2", "unexpected token '?'"),
            ("user.x user.y", "unexpected token 'user' at column 8"),
        ];
        for (source, expected) in cases {
            match Condition::parse(source) {
                Ok(_) => panic!("{source:?} parsed"),
                Err(e) => assert!(
                    e.contains(expected),
                    "{source:?}: got {e:?}, wanted {expected:?}"
                ),
            }
        }
    }

    #[test]
    fn bounds_absurd_input() {
        let deep = format!("{}true{}", "(".repeat(100), ")".repeat(100));
        assert!(Condition::parse(&deep)
            .unwrap_err()
            .contains("nested too deeply"));
        let nots = format!("{}true", "!".repeat(100));
        assert!(Condition::parse(&nots)
            .unwrap_err()
            .contains("nested too deeply"));
        let long = vec!["true"; 600].join(" && ");
        assert!(Condition::parse(&long).unwrap_err().contains("too long"));
        let ok = vec!["temp.$r === 0"; 100].join(" && ");
        assert!(Condition::parse(&ok).unwrap().eval(&scope()));
    }

    #[test]
    fn formats_numbers_like_javascript() {
        let cases: &[(f64, &str)] = &[
            (3.0, "3"),
            (-3.0, "-3"),
            (1.5, "1.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-0.0, "0"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (-2.5e-8, "-2.5e-8"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (n, expected) in cases {
            assert_eq!(number_to_string(*n), *expected, "{n}");
        }
    }

    #[test]
    fn converts_strings_to_numbers_like_javascript() {
        let cases: &[(&str, f64)] = &[
            ("", 0.0),
            ("  ", 0.0),
            (" 12 ", 12.0),
            ("\n-3.5\t", -3.5),
            ("1.", 1.0),
            (".5", 0.5),
            ("+4", 4.0),
            ("1e3", 1000.0),
            ("0x1F", 31.0),
            ("0b101", 5.0),
            ("0o17", 15.0),
            ("Infinity", f64::INFINITY),
            ("-Infinity", f64::NEG_INFINITY),
        ];
        for (s, expected) in cases {
            assert_eq!(string_to_number(s), *expected, "{s:?}");
        }
        for s in [
            "abc", "1a", "inf", "nan", "infinity", "1e", ".", "-0x10", "0x", "1 2", "--1",
        ] {
            assert!(string_to_number(s).is_nan(), "{s:?}");
        }
    }
}
