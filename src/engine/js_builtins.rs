//! The JavaScript built-ins a transition condition may call: the globals `Number`, `String`,
//! `Boolean`, `parseInt`, `parseFloat`, `isNaN`, the `Math` functions, the common string and
//! array methods, and regular expression literals (for `.test`). Each follows the ECMAScript
//! algorithm, coercions included, because Botpress evaluates conditions as JavaScript and the
//! editor writes `Number(temp['skill-choice-invalid-count']) >= Number(3)`.

use super::expr::{is_decimal_literal, is_js_space, strict_eq, string_to_number, JsVal, TypeError};
use std::borrow::Cow;

/// What the refusal messages list as callable.
pub(crate) const CALLABLE: &str = "conditions can call Number, String, Boolean, parseInt, parseFloat, isNaN, Math.abs/ceil/floor/round/trunc/sign/sqrt/pow/min/max/random, the methods includes, startsWith, endsWith, indexOf, toLowerCase, toUpperCase, trim, and /regex/.test(text)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Global {
    Number,
    String,
    Boolean,
    ParseInt,
    ParseFloat,
    IsNaN,
    Math(MathFn),
}

impl Global {
    pub(crate) fn from_name(name: &str) -> Option<Global> {
        Some(match name {
            "Number" => Global::Number,
            "String" => Global::String,
            "Boolean" => Global::Boolean,
            "parseInt" => Global::ParseInt,
            "parseFloat" => Global::ParseFloat,
            "isNaN" => Global::IsNaN,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MathFn {
    Abs,
    Ceil,
    Floor,
    Round,
    Trunc,
    Sign,
    Sqrt,
    Pow,
    Min,
    Max,
    Random,
}

impl MathFn {
    pub(crate) fn from_name(name: &str) -> Option<MathFn> {
        Some(match name {
            "abs" => MathFn::Abs,
            "ceil" => MathFn::Ceil,
            "floor" => MathFn::Floor,
            "round" => MathFn::Round,
            "trunc" => MathFn::Trunc,
            "sign" => MathFn::Sign,
            "sqrt" => MathFn::Sqrt,
            "pow" => MathFn::Pow,
            "min" => MathFn::Min,
            "max" => MathFn::Max,
            "random" => MathFn::Random,
            _ => return None,
        })
    }
}

/// `Math.PI` and `Math.E`.
pub(crate) fn math_constant(name: &str) -> Option<f64> {
    match name {
        "PI" => Some(std::f64::consts::PI),
        "E" => Some(std::f64::consts::E),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Includes,
    StartsWith,
    EndsWith,
    IndexOf,
    ToLowerCase,
    ToUpperCase,
    Trim,
}

impl Method {
    pub(crate) fn from_name(name: &str) -> Option<Method> {
        Some(match name {
            "includes" => Method::Includes,
            "startsWith" => Method::StartsWith,
            "endsWith" => Method::EndsWith,
            "indexOf" => Method::IndexOf,
            "toLowerCase" => Method::ToLowerCase,
            "toUpperCase" => Method::ToUpperCase,
            "trim" => Method::Trim,
            _ => return None,
        })
    }
}

fn arg<'v, 'a>(args: &'v [JsVal<'a>], i: usize) -> Cow<'v, JsVal<'a>> {
    args.get(i)
        .map_or(Cow::Owned(JsVal::Undefined), Cow::Borrowed)
}

fn owned(s: String) -> JsVal<'static> {
    JsVal::Str(Cow::Owned(s))
}

/// Calls a global function.
pub(crate) fn call<'a>(global: Global, args: &[JsVal<'a>]) -> JsVal<'a> {
    let first = arg(args, 0);
    match global {
        Global::Number => JsVal::Num(if args.is_empty() {
            0.0
        } else {
            first.to_number()
        }),
        Global::String => {
            if args.is_empty() {
                owned(String::new())
            } else {
                owned(first.to_js_string().into_owned())
            }
        }
        Global::Boolean => JsVal::Bool(first.truthy()),
        Global::ParseInt => JsVal::Num(parse_int(&first.to_js_string(), &arg(args, 1))),
        Global::ParseFloat => JsVal::Num(parse_float(&first.to_js_string())),
        Global::IsNaN => JsVal::Bool(first.to_number().is_nan()),
        Global::Math(f) => JsVal::Num(math(f, args)),
    }
}

fn math(f: MathFn, args: &[JsVal]) -> f64 {
    let x = arg(args, 0).to_number();
    match f {
        MathFn::Abs => x.abs(),
        MathFn::Ceil => x.ceil(),
        MathFn::Floor => x.floor(),
        // Halves go up (towards +Infinity), unlike Rust's `round`.
        MathFn::Round => {
            if !x.is_finite() {
                x
            } else {
                let f = x.floor();
                if x - f >= 0.5 {
                    f + 1.0
                } else {
                    f
                }
            }
        }
        MathFn::Trunc => x.trunc(),
        MathFn::Sign => {
            if x.is_nan() || x == 0.0 {
                x
            } else {
                x.signum()
            }
        }
        MathFn::Sqrt => x.sqrt(),
        MathFn::Pow => {
            let y = arg(args, 1).to_number();
            // JS: NaN exponents, and ±1 to an infinite power, give NaN; Rust gives 1.
            if y.is_nan() || (x.abs() == 1.0 && y.is_infinite()) {
                f64::NAN
            } else {
                x.powf(y)
            }
        }
        MathFn::Min | MathFn::Max => {
            let mut acc = if f == MathFn::Min {
                f64::INFINITY
            } else {
                f64::NEG_INFINITY
            };
            for a in args {
                let n = a.to_number();
                if n.is_nan() {
                    return f64::NAN;
                }
                acc = if f == MathFn::Min {
                    acc.min(n)
                } else {
                    acc.max(n)
                };
            }
            acc
        }
        MathFn::Random => super::random::below(1 << 53) as f64 / (1u64 << 53) as f64,
    }
}

/// ToIntegerOrInfinity.
fn to_integer(v: &JsVal) -> f64 {
    let n = v.to_number();
    if n.is_nan() {
        0.0
    } else {
        n.trunc()
    }
}

/// A position argument clamped to `0..=len`; `undefined` gives `default`.
fn position(v: &JsVal, len: usize, default: usize) -> usize {
    if matches!(v, JsVal::Undefined) {
        return default;
    }
    to_integer(v).clamp(0.0, len as f64) as usize
}

/// ECMAScript `parseInt(string, radix)`.
pub(crate) fn parse_int(text: &str, radix: &JsVal) -> f64 {
    let s = text.trim_start_matches(is_js_space);
    let (sign, s) = match s.as_bytes().first() {
        Some(b'-') => (-1.0, &s[1..]),
        Some(b'+') => (1.0, &s[1..]),
        _ => (1.0, s),
    };
    let r = radix.to_number();
    // ToInt32.
    let mut r = if r.is_finite() {
        (r.trunc() as i64 as u32) as i32
    } else {
        0
    };
    let mut strip_prefix = true;
    if r != 0 {
        if !(2..=36).contains(&r) {
            return f64::NAN;
        }
        strip_prefix = r == 16;
    } else {
        r = 10;
    }
    let mut digits = s;
    if strip_prefix && (s.starts_with("0x") || s.starts_with("0X")) {
        digits = &s[2..];
        r = 16;
    }
    let end = digits
        .char_indices()
        .find(|(_, c)| !c.is_digit(r as u32))
        .map_or(digits.len(), |(i, _)| i);
    let digits = &digits[..end];
    if digits.is_empty() {
        return f64::NAN;
    }
    let value = if r == 10 {
        digits.parse::<f64>().unwrap_or(f64::NAN)
    } else {
        digits.chars().fold(0.0, |acc, c| {
            acc * f64::from(r) + f64::from(c.to_digit(r as u32).unwrap_or(0))
        })
    };
    sign * value
}

/// ECMAScript `parseFloat(string)`: the longest prefix that is a decimal literal.
pub(crate) fn parse_float(text: &str) -> f64 {
    let s = text.trim_start_matches(is_js_space);
    for (prefix, value) in [
        ("Infinity", f64::INFINITY),
        ("+Infinity", f64::INFINITY),
        ("-Infinity", f64::NEG_INFINITY),
    ] {
        if s.starts_with(prefix) {
            return value;
        }
    }
    let b = s.as_bytes();
    // Longest prefix first; the literal is ASCII, so byte positions are char boundaries.
    let ascii_len = b
        .iter()
        .position(|c| !(c.is_ascii_digit() || b"+-.eE".contains(c)))
        .unwrap_or(b.len());
    (1..=ascii_len)
        .rev()
        .find(|&end| is_decimal_literal(&b[..end]))
        .map_or(f64::NAN, |end| string_to_number(&s[..end]))
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn find_units(hay: &[u16], needle: &[u16], from: usize) -> Option<usize> {
    if needle.is_empty() {
        return Some(from.min(hay.len()));
    }
    (from..=hay.len().saturating_sub(needle.len())).find(|&i| hay[i..].starts_with(needle))
}

/// `object.method(args)`. Calling a method a value does not have is a TypeError, which makes
/// the condition false, as in Botpress.
pub(crate) fn call_method<'a>(
    object: &JsVal<'a>,
    method: Method,
    args: &[JsVal<'a>],
) -> Result<JsVal<'a>, TypeError> {
    match object {
        JsVal::Str(s) => Ok(string_method(s, method, args)),
        JsVal::Obj(serde_json::Value::Array(items)) => {
            let wanted = arg(args, 0);
            let from = |len: usize| {
                let n = to_integer(&arg(args, 1));
                if n < 0.0 {
                    (len as f64 + n).max(0.0) as usize
                } else {
                    n.min(len as f64) as usize
                }
            };
            let start = from(items.len());
            let found = items.iter().enumerate().skip(start).find(|(_, item)| {
                let item = JsVal::from_json(item);
                match method {
                    // SameValueZero: NaN finds NaN.
                    Method::Includes => {
                        strict_eq(&item, &wanted)
                            || matches!((&item, &*wanted), (JsVal::Num(a), JsVal::Num(b)) if a.is_nan() && b.is_nan())
                    }
                    _ => strict_eq(&item, &wanted),
                }
            });
            match method {
                Method::Includes => Ok(JsVal::Bool(found.is_some())),
                Method::IndexOf => Ok(JsVal::Num(found.map_or(-1.0, |(i, _)| i as f64))),
                _ => Err(TypeError),
            }
        }
        _ => Err(TypeError),
    }
}

fn string_method<'a>(s: &str, method: Method, args: &[JsVal<'a>]) -> JsVal<'a> {
    let search = || utf16(&arg(args, 0).to_js_string());
    let units = || utf16(s);
    match method {
        Method::ToLowerCase => owned(s.to_lowercase()),
        Method::ToUpperCase => owned(s.to_uppercase()),
        Method::Trim => owned(s.trim_matches(is_js_space).to_string()),
        Method::Includes => {
            let hay = units();
            let from = position(&arg(args, 1), hay.len(), 0);
            JsVal::Bool(find_units(&hay, &search(), from).is_some())
        }
        Method::IndexOf => {
            let hay = units();
            let from = position(&arg(args, 1), hay.len(), 0);
            JsVal::Num(find_units(&hay, &search(), from).map_or(-1.0, |i| i as f64))
        }
        Method::StartsWith => {
            let hay = units();
            let from = position(&arg(args, 1), hay.len(), 0);
            JsVal::Bool(hay[from..].starts_with(&search()))
        }
        Method::EndsWith => {
            let hay = units();
            let end = position(&arg(args, 1), hay.len(), hay.len());
            JsVal::Bool(hay[..end].ends_with(&search()))
        }
    }
}

/// Compiles a JavaScript regular expression literal for the regex crate. JavaScript's `\d`,
/// `\w` and `\b` are ASCII-only, so they are spelled out; what the regex crate cannot do
/// (backreferences, look-around) is refused with the crate's reason.
pub(crate) fn compile_regex(pattern: &str, flags: &str) -> Result<regex::Regex, String> {
    let mut prefix = String::new();
    for f in flags.chars() {
        match f {
            'i' => prefix.push_str("(?i)"),
            'm' => prefix.push_str("(?m)"),
            's' => prefix.push_str("(?s)"),
            // A literal is a fresh object each time the condition runs, so `g` and `y` start
            // at index 0 and `test` answers as without them; `u` is how botd reads patterns.
            'g' | 'y' | 'u' => {}
            other => return Err(format!("unknown flag '{other}'")),
        }
    }
    let mut out = prefix;
    let mut in_class = false;
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(e) = chars.next() else {
                    return Err("a pattern cannot end with '\\'".into());
                };
                let part = match (e, in_class) {
                    ('d', false) => "[0-9]",
                    ('d', true) => "0-9",
                    ('w', false) => "[0-9A-Za-z_]",
                    ('w', true) => "0-9A-Za-z_",
                    ('D', false) => "[^0-9]",
                    ('W', false) => "[^0-9A-Za-z_]",
                    ('D' | 'W', true) => {
                        return Err(format!("\\{e} inside [...] is not supported"))
                    }
                    ('b', false) => r"(?-u:\b)",
                    ('B', false) => r"(?-u:\B)",
                    ('b', true) => r"\x08",
                    ('/', _) => "/",
                    ('1'..='9', _) => return Err("backreferences are not supported".into()),
                    _ => {
                        out.push('\\');
                        out.push(e);
                        continue;
                    }
                };
                out.push_str(part);
            }
            '[' => {
                in_class = true;
                out.push(c);
            }
            ']' => {
                in_class = false;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    regex::Regex::new(&out).map_err(|e| {
        format!(
            "/{pattern}/{flags} is not supported: {}",
            e.to_string().lines().last().unwrap_or("invalid pattern")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_int_follows_ecmascript() {
        let u = JsVal::Undefined;
        let cases: &[(&str, JsVal, f64)] = &[
            ("42", u.clone(), 42.0),
            ("  -17px", u.clone(), -17.0),
            ("0x1F", u.clone(), 31.0),
            ("1F", JsVal::Num(16.0), 31.0),
            ("0x1F", JsVal::Num(16.0), 31.0),
            ("0x1F", JsVal::Num(10.0), 0.0),
            ("101", JsVal::Num(2.0), 5.0),
            ("3.9", u.clone(), 3.0),
            ("1e3", u.clone(), 1.0),
            ("+5", u.clone(), 5.0),
        ];
        for (text, radix, expected) in cases {
            assert_eq!(parse_int(text, radix), *expected, "{text}");
        }
        for (text, radix) in [("abc", u.clone()), ("", u.clone()), ("7", JsVal::Num(1.0))] {
            assert!(parse_int(text, &radix).is_nan(), "{text}");
        }
    }

    #[test]
    fn parse_float_takes_the_longest_literal() {
        let cases: &[(&str, f64)] = &[
            ("2.75abc", 2.75),
            ("  .5", 0.5),
            ("1e3x", 1000.0),
            ("1e", 1.0),
            ("-2.5e-1", -0.25),
            ("Infinityx", f64::INFINITY),
            ("12.", 12.0),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_float(text), *expected, "{text}");
        }
        assert!(parse_float("x1").is_nan());
        assert!(parse_float("").is_nan());
        assert!(parse_float(".").is_nan());
    }

    #[test]
    fn javascript_regexes_translate() {
        let r = compile_regex(r"^\d{3}-\w+$", "").unwrap();
        assert!(r.is_match("123-abc_9"));
        assert!(!r.is_match("١٢٣-abc"), "\\d is ASCII-only in JavaScript");
        assert!(compile_regex("yes|yeah", "i").unwrap().is_match("YEAH"));
        assert!(compile_regex(r"a\/b", "").unwrap().is_match("a/b"));
        assert!(compile_regex(r"(a)\1", "")
            .unwrap_err()
            .contains("backreference"));
        assert!(compile_regex("(?=a)", "")
            .unwrap_err()
            .contains("not supported"));
        assert!(compile_regex("a", "x")
            .unwrap_err()
            .contains("unknown flag"));
    }
}
