//! System entities computed natively, named after Duckling's dimensions: `numeral`,
//! `ordinal`, `email`, `url`, `phoneNumber`, `amountOfMoney`, `percentage`, `duration` and
//! `time` (English expressions, resolved in UTC against the caller's clock).
//!
//! Why not Duckling: botd runs offline on small machines; a hand-written extractor covers
//! what bots actually ask for (amounts, dates, times, contacts) in microseconds.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::{json, Value};

use super::Extracted;
use crate::engine::event::{civil_from_days, days_from_civil};

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("built-in regex"))
}

fn entity(
    name: &str,
    start: usize,
    end: usize,
    value: Value,
    unit: &str,
    extras: Value,
) -> Extracted {
    Extracted {
        name: name.to_string(),
        kind: "system",
        confidence: 1.0,
        start,
        end,
        value,
        unit: unit.to_string(),
        extras,
        sensitive: false,
    }
}

/// JSON number: integers without a fraction print as integers.
fn num(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// A number found in the text, with whether it was an ordinal.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Number {
    start: usize,
    end: usize,
    value: f64,
    ordinal: bool,
}

fn unit_word(w: &str) -> Option<f64> {
    const UNITS: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    UNITS.iter().position(|u| *u == w).map(|i| i as f64)
}

fn tens_word(w: &str) -> Option<f64> {
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    TENS.iter()
        .position(|u| *u == w)
        .map(|i| (i as f64 + 2.0) * 10.0)
}

fn scale_word(w: &str) -> Option<f64> {
    match w {
        "thousand" => Some(1e3),
        "million" => Some(1e6),
        "billion" => Some(1e9),
        _ => None,
    }
}

fn ordinal_word(w: &str) -> Option<f64> {
    const ORD: [&str; 20] = [
        "zeroth",
        "first",
        "second",
        "third",
        "fourth",
        "fifth",
        "sixth",
        "seventh",
        "eighth",
        "ninth",
        "tenth",
        "eleventh",
        "twelfth",
        "thirteenth",
        "fourteenth",
        "fifteenth",
        "sixteenth",
        "seventeenth",
        "eighteenth",
        "nineteenth",
    ];
    const TENS: [&str; 8] = [
        "twentieth",
        "thirtieth",
        "fortieth",
        "fiftieth",
        "sixtieth",
        "seventieth",
        "eightieth",
        "ninetieth",
    ];
    if let Some(i) = ORD.iter().position(|u| *u == w) {
        return Some(i as f64);
    }
    if let Some(i) = TENS.iter().position(|u| *u == w) {
        return Some((i as f64 + 2.0) * 10.0);
    }
    match w {
        "hundredth" => Some(100.0),
        "thousandth" => Some(1000.0),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Last {
    None,
    Unit,
    Tens,
    Hundred,
    Scale,
    And,
}

/// English number words: "twenty-one", "one hundred and five", "a thousand", "twenty-first".
fn word_numbers(lower: &str) -> Vec<Number> {
    static WORD: OnceLock<Regex> = OnceLock::new();
    let words: Vec<(usize, usize, &str)> = re(&WORD, r"[a-z]+")
        .find_iter(lower)
        .map(|m| (m.start(), m.end(), m.as_str()))
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let (mut total, mut current) = (0f64, 0f64);
        let mut last = Last::None;
        let mut j = i;
        let mut end_ok = None; // (index after last consumed token, value, ordinal)
        while j < words.len() {
            let (s, _, w) = words[j];
            if j > i {
                let gap = &lower[words[j - 1].1..s];
                if !(gap.chars().all(char::is_whitespace) || gap == "-") || gap.is_empty() {
                    break;
                }
            }
            let next_is_multiplier = words
                .get(j + 1)
                .is_some_and(|n| n.2 == "hundred" || scale_word(n.2).is_some());
            if let Some(v) = ordinal_word(w) {
                // An ordinal ends the number: "twenty-first", "hundredth".
                let ok = match last {
                    Last::None | Last::Scale | Last::And => v < 100.0 || last == Last::None,
                    Last::Tens => v < 10.0 && v > 0.0,
                    Last::Hundred => v < 100.0,
                    Last::Unit => v >= 100.0,
                };
                if ok {
                    let value = if v >= 100.0 {
                        (total + current.max(1.0)) * v
                    } else {
                        total + current + v
                    };
                    end_ok = Some((j + 1, value, true));
                }
                break;
            }
            if let Some(v) = unit_word(w) {
                if matches!(last, Last::Unit)
                    || (last == Last::Tens && v >= 10.0)
                    || (last == Last::Tens && v == 0.0)
                {
                    break;
                }
                current += v;
                last = Last::Unit;
            } else if let Some(v) = tens_word(w) {
                if matches!(last, Last::Unit | Last::Tens) {
                    break;
                }
                current += v;
                last = Last::Tens;
            } else if w == "hundred" {
                if matches!(last, Last::Hundred) || current >= 100.0 {
                    break;
                }
                current = current.max(1.0) * 100.0;
                last = Last::Hundred;
            } else if let Some(v) = scale_word(w) {
                if last == Last::And {
                    break;
                }
                total += current.max(1.0) * v;
                current = 0.0;
                last = Last::Scale;
            } else if w == "and" && matches!(last, Last::Hundred | Last::Scale) {
                last = Last::And;
                j += 1;
                continue;
            } else if (w == "a" || w == "an") && last == Last::None && next_is_multiplier {
                current = 1.0;
                last = Last::Unit;
                j += 1;
                // "a" alone is no number; only accept it with what follows.
                continue;
            } else {
                break;
            }
            j += 1;
            end_ok = Some((j, total + current, false));
        }
        match end_ok {
            Some((after, value, ordinal)) => {
                out.push(Number {
                    start: words[i].0,
                    end: words[after - 1].1,
                    value,
                    ordinal,
                });
                i = after;
            }
            None => i += 1,
        }
    }
    out
}

/// Numbers written with digits ("1,000.50", "42", "3.5") and digit ordinals ("21st").
fn digit_numbers(lower: &str) -> Vec<Number> {
    static DIGITS: OnceLock<Regex> = OnceLock::new();
    let mut out = Vec::new();
    let bytes = lower.as_bytes();
    for m in re(&DIGITS, r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?").find_iter(lower) {
        let before = lower[..m.start()].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '.' || c == ',') {
            continue;
        }
        let rest = &lower[m.end()..];
        let value: f64 = match m.as_str().replace(',', "").parse() {
            Ok(v) => v,
            Err(_) => continue,
        };
        let suffix: String = rest.chars().take_while(|c| c.is_alphabetic()).collect();
        if !suffix.is_empty() {
            if ["st", "nd", "rd", "th"].contains(&suffix.as_str()) && value.fract() == 0.0 {
                out.push(Number {
                    start: m.start(),
                    end: m.end() + 2,
                    value,
                    ordinal: true,
                });
            }
            continue;
        }
        // "1.5." at the end of a sentence is fine, "1.2.3" is not a number.
        if bytes.get(m.end()) == Some(&b'.')
            && bytes.get(m.end() + 1).is_some_and(u8::is_ascii_digit)
        {
            continue;
        }
        out.push(Number {
            start: m.start(),
            end: m.end(),
            value,
            ordinal: false,
        });
    }
    out
}

fn numbers(lower: &str) -> Vec<Number> {
    let mut all = digit_numbers(lower);
    all.extend(word_numbers(lower));
    all.sort_by_key(|n| n.start);
    all
}

// ---------------------------------------------------------------------------------------------
// Calendar arithmetic (proleptic Gregorian, UTC): the engine's own, in `engine::event`.

fn days_in_month(y: i64, m: i64) -> i64 {
    let next = if m == 12 {
        days_from_civil(y + 1, 1, 1)
    } else {
        days_from_civil(y, m + 1, 1)
    };
    next - days_from_civil(y, m, 1)
}

/// ISO-8601 in UTC with milliseconds, e.g. `2026-01-30T17:00:00.000Z`.
pub fn iso(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// Monday = 0 … Sunday = 6.
fn weekday(days: i64) -> i64 {
    (days + 3).rem_euclid(7) // 1970-01-01 was a Thursday.
}

fn month_number(name: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let key = name.get(..3)?;
    MONTHS.iter().position(|m| *m == key).map(|i| i as i64 + 1)
}

fn weekday_number(name: &str) -> Option<i64> {
    const DAYS: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    DAYS.iter().position(|d| *d == name).map(|i| i as i64)
}

// ---------------------------------------------------------------------------------------------
// Durations

fn duration_unit(word: &str) -> Option<(&'static str, i64)> {
    let w = word.trim_end_matches('s');
    Some(match w {
        "second" | "sec" => ("second", 1),
        "minute" | "min" => ("minute", 60),
        "hour" | "hr" | "h" => ("hour", 3600),
        "day" => ("day", 86_400),
        "week" => ("week", 604_800),
        "month" => ("month", 2_592_000),
        "year" => ("year", 31_536_000),
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy)]
struct Duration {
    start: usize,
    end: usize,
    value: f64,
    unit: &'static str,
    seconds: f64,
}

/// "2 hours", "an hour", "thirty minutes", "1.5 days".
fn durations(lower: &str, nums: &[Number]) -> Vec<Duration> {
    static AFTER: OnceLock<Regex> = OnceLock::new();
    static AN: OnceLock<Regex> = OnceLock::new();
    let after = re(&AFTER, r"^\s*([a-z]+)\b");
    let mut out = Vec::new();
    for n in nums.iter().filter(|n| !n.ordinal) {
        if let Some(c) = after.captures(&lower[n.end..]) {
            if let Some((unit, secs)) = duration_unit(&c[1]) {
                out.push(Duration {
                    start: n.start,
                    end: n.end + c.get(0).map_or(0, |m| m.end()),
                    value: n.value,
                    unit,
                    seconds: n.value * secs as f64,
                });
            }
        }
    }
    for c in re(&AN, r"\b(an?|half an?)\s+([a-z]+)\b").captures_iter(lower) {
        let (Some(all), Some(word)) = (c.get(0), c.get(2)) else {
            continue;
        };
        if let Some((unit, secs)) = duration_unit(word.as_str()) {
            let value = if c[1].starts_with("half") { 0.5 } else { 1.0 };
            if !out
                .iter()
                .any(|d| d.start < all.end() && all.start() < d.end)
            {
                out.push(Duration {
                    start: all.start(),
                    end: all.end(),
                    value,
                    unit,
                    seconds: value * secs as f64,
                });
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Times

/// A date or time expression before resolution/merging.
#[derive(Debug, Clone, Copy)]
struct TimePart {
    start: usize,
    end: usize,
    /// Day number (days since epoch) when the part names a day.
    day: Option<i64>,
    /// Milliseconds since midnight when the part names a time of day; `ambiguous` when
    /// "3:30" could be am or pm.
    clock: Option<(i64, bool)>,
    /// Fully resolved instant (relative expressions like "in 2 hours").
    instant: Option<i64>,
    grain: &'static str,
}

fn day_part(start: usize, end: usize, day: i64, grain: &'static str) -> TimePart {
    TimePart {
        start,
        end,
        day: Some(day),
        clock: None,
        instant: None,
        grain,
    }
}

fn date_parts(lower: &str, now_ms: i64) -> Vec<TimePart> {
    static REL: OnceLock<Regex> = OnceLock::new();
    static WEEKDAY: OnceLock<Regex> = OnceLock::new();
    static ISO: OnceLock<Regex> = OnceLock::new();
    static DMY: OnceLock<Regex> = OnceLock::new();
    static MONTH_DAY: OnceLock<Regex> = OnceLock::new();
    static DAY_MONTH: OnceLock<Regex> = OnceLock::new();
    static NEXT_PERIOD: OnceLock<Regex> = OnceLock::new();
    let today = now_ms.div_euclid(DAY_MS);
    let (ty, tm, _) = civil_from_days(today);
    let mut out = Vec::new();
    for m in re(
        &REL,
        r"\b(?:the\s+)?(day after tomorrow|day before yesterday|today|tonight|tomorrow|yesterday|now)\b",
    )
    .find_iter(lower)
    {
        let word = m.as_str().trim_start_matches("the").trim();
        let day = match word {
            "day after tomorrow" => today + 2,
            "day before yesterday" => today - 2,
            "tomorrow" => today + 1,
            "yesterday" => today - 1,
            _ => today,
        };
        if word == "now" {
            out.push(TimePart {
                start: m.start(),
                end: m.end(),
                day: None,
                clock: None,
                instant: Some(now_ms - now_ms.rem_euclid(1000)),
                grain: "second",
            });
        } else if word == "tonight" {
            out.push(TimePart {
                start: m.start(),
                end: m.end(),
                day: Some(day),
                clock: Some((20 * HOUR_MS, false)),
                instant: None,
                grain: "hour",
            });
        } else {
            out.push(day_part(m.start(), m.end(), day, "day"));
        }
    }
    for c in re(
        &WEEKDAY,
        r"\b(?:(next|this|last|coming)\s+)?(monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b",
    )
    .captures_iter(lower)
    {
        let all = c.get(0).unwrap_or_else(|| unreachable!());
        let Some(wd) = weekday_number(&c[2]) else {
            continue;
        };
        let delta = (wd - weekday(today)).rem_euclid(7);
        let day = match c.get(1).map(|m| m.as_str()) {
            // "next friday": the first Friday strictly after today.
            Some("next") | Some("coming") => today + if delta == 0 { 7 } else { delta },
            Some("last") => today - (weekday(today) - wd).rem_euclid(7).max(1),
            // "friday", "this friday": today if it is Friday, else the coming one.
            _ => today + delta,
        };
        out.push(day_part(all.start(), all.end(), day, "day"));
    }
    for c in re(
        &ISO,
        r"\b(\d{4})-(\d{1,2})-(\d{1,2})(?:[t ](\d{1,2}):(\d{2})(?::(\d{2}))?z?)?\b",
    )
    .captures_iter(lower)
    {
        let all = c.get(0).unwrap_or_else(|| unreachable!());
        let p = |i: usize| c.get(i).and_then(|m| m.as_str().parse::<i64>().ok());
        let (Some(y), Some(mo), Some(d)) = (p(1), p(2), p(3)) else {
            continue;
        };
        if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
            continue;
        }
        let day = days_from_civil(y, mo, d);
        match (p(4), p(5)) {
            (Some(h), Some(mi)) if h < 24 && mi < 60 => out.push(TimePart {
                start: all.start(),
                end: all.end(),
                day: Some(day),
                clock: Some(((h * 60 + mi) * 60_000 + p(6).unwrap_or(0) * 1000, false)),
                instant: None,
                grain: "minute",
            }),
            _ => out.push(day_part(all.start(), all.end(), day, "day")),
        }
    }
    for c in re(&DMY, r"\b(\d{1,2})[/.](\d{1,2})[/.](\d{2}|\d{4})\b").captures_iter(lower) {
        let all = c.get(0).unwrap_or_else(|| unreachable!());
        let p = |i: usize| c[i].parse::<i64>().unwrap_or(0);
        let (a, b, mut y) = (p(1), p(2), p(3));
        if y < 100 {
            y += 2000;
        }
        // Day first (d/m/y); when the second number cannot be a month, m/d/y.
        let (d, mo) = if b > 12 && a <= 12 { (b, a) } else { (a, b) };
        if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
            continue;
        }
        out.push(day_part(
            all.start(),
            all.end(),
            days_from_civil(y, mo, d),
            "day",
        ));
    }
    const MONTHS: &str = "january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec";
    let month_day = re(
        &MONTH_DAY,
        &format!(r"\b({MONTHS})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(\d{{4}}))?\b"),
    );
    let day_month = re(
        &DAY_MONTH,
        &format!(
            r"\b(?:the\s+)?(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({MONTHS})\b\.?(?:,?\s+(\d{{4}}))?"
        ),
    );
    for (regex, month_idx, day_idx) in [(month_day, 1, 2), (day_month, 2, 1)] {
        for c in regex.captures_iter(lower) {
            let all = c.get(0).unwrap_or_else(|| unreachable!());
            let (Some(mo), Ok(d)) = (month_number(&c[month_idx]), c[day_idx].parse::<i64>()) else {
                continue;
            };
            let explicit_year = c.get(3).and_then(|m| m.as_str().parse::<i64>().ok());
            let mut y = explicit_year.unwrap_or(ty);
            if d < 1 || d > days_in_month(y, mo) {
                continue;
            }
            // Without a year, the next such date (this year's if it has not passed).
            if explicit_year.is_none() && days_from_civil(y, mo, d) < today {
                y += 1;
                if d > days_in_month(y, mo) {
                    continue;
                }
            }
            if out
                .iter()
                .any(|p| p.start < all.end() && all.start() < p.end)
            {
                continue;
            }
            out.push(day_part(
                all.start(),
                all.end(),
                days_from_civil(y, mo, d),
                "day",
            ));
        }
    }
    for c in re(&NEXT_PERIOD, r"\b(next|last|this)\s+(week|month|year)\b").captures_iter(lower) {
        let all = c.get(0).unwrap_or_else(|| unreachable!());
        let step = match &c[1] {
            "next" => 1,
            "last" => -1,
            _ => 0,
        };
        let (day, grain) = match &c[2] {
            "week" => (today - weekday(today) + 7 * step, "week"),
            "month" => {
                let total = ty * 12 + (tm - 1) + step;
                (
                    days_from_civil(total.div_euclid(12), total.rem_euclid(12) + 1, 1),
                    "month",
                )
            }
            _ => (days_from_civil(ty + step, 1, 1), "year"),
        };
        out.push(day_part(all.start(), all.end(), day, grain));
    }
    out
}

fn clock_parts(lower: &str) -> Vec<TimePart> {
    static AMPM: OnceLock<Regex> = OnceLock::new();
    static HHMM: OnceLock<Regex> = OnceLock::new();
    static NAMED: OnceLock<Regex> = OnceLock::new();
    static AT_HOUR: OnceLock<Regex> = OnceLock::new();
    let mut out: Vec<TimePart> = Vec::new();
    let push = |s: usize,
                e: usize,
                h: i64,
                mi: i64,
                ambiguous: bool,
                grain: &'static str,
                out: &mut Vec<TimePart>| {
        if out.iter().any(|p| p.start < e && s < p.end) {
            return;
        }
        out.push(TimePart {
            start: s,
            end: e,
            day: None,
            clock: Some(((h * 60 + mi) * 60_000, ambiguous)),
            instant: None,
            grain,
        });
    };
    for c in re(
        &AMPM,
        r"\b(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*(a\.?m\.?|p\.?m\.?)(?:\s|$|[,;!?])",
    )
    .captures_iter(lower)
    {
        let all = c.get(0).unwrap_or_else(|| unreachable!());
        let h: i64 = c[1].parse().unwrap_or(99);
        let mi: i64 = c.get(2).map_or(0, |m| m.as_str().parse().unwrap_or(99));
        if !(1..=12).contains(&h) || mi > 59 {
            continue;
        }
        let pm = c[3].starts_with('p');
        let h24 = (h % 12) + if pm { 12 } else { 0 };
        let end = all.start()
            + all
                .as_str()
                .trim_end_matches([' ', ',', ';', '!', '?'])
                .len();
        let grain = if c.get(2).is_some() { "minute" } else { "hour" };
        push(all.start(), end, h24, mi, false, grain, &mut out);
    }
    for c in re(&HHMM, r"\b(?:at\s+)?(\d{1,2}):(\d{2})\b").captures_iter(lower) {
        let all = c.get(0).unwrap_or_else(|| unreachable!());
        let h: i64 = c[1].parse().unwrap_or(99);
        let mi: i64 = c[2].parse().unwrap_or(99);
        if h > 23 || mi > 59 {
            continue;
        }
        push(
            all.start(),
            all.end(),
            h,
            mi,
            (1..=12).contains(&h),
            "minute",
            &mut out,
        );
    }
    for c in re(&NAMED, r"\b(?:at\s+)?(noon|midday|midnight)\b").captures_iter(lower) {
        let all = c.get(0).unwrap_or_else(|| unreachable!());
        let h = if &c[1] == "midnight" { 0 } else { 12 };
        push(all.start(), all.end(), h, 0, false, "hour", &mut out);
    }
    for c in re(&AT_HOUR, r"\bat\s+(\d{1,2})(?:\s+o'?clock)?\b").captures_iter(lower) {
        let all = c.get(0).unwrap_or_else(|| unreachable!());
        let rest = lower[all.end()..].trim_start();
        // "at 5 dollars", "at 3.5%": not a time.
        if rest.starts_with(|ch: char| {
            ch.is_alphanumeric()
                && !rest.starts_with("on")
                && !rest.starts_with("to")
                && !rest.starts_with("tomorrow")
                && !rest.starts_with("today")
        }) || lower[all.end()..].starts_with(['.', ',', '%', ':'])
            && lower[all.end() + 1..].starts_with(|ch: char| ch.is_ascii_digit())
        {
            continue;
        }
        let h: i64 = c[1].parse().unwrap_or(99);
        if h > 23 {
            continue;
        }
        push(
            all.start(),
            all.end(),
            h,
            0,
            (1..=12).contains(&h),
            "hour",
            &mut out,
        );
    }
    out
}

fn relative_parts(lower: &str, durs: &[Duration], now_ms: i64) -> Vec<TimePart> {
    let mut out = Vec::new();
    for d in durs {
        let before = &lower[..d.start];
        let after = &lower[d.end..];
        let ms = (d.seconds * 1000.0) as i64;
        let (start, end, instant) =
            if before.trim_end().ends_with(" in") || before.trim_end() == "in" {
                (before.trim_end().len() - 2, d.end, now_ms + ms)
            } else if after.trim_start().starts_with("ago") {
                let ago = d.end + (after.len() - after.trim_start().len()) + 3;
                (d.start, ago, now_ms - ms)
            } else if after.trim_start().starts_with("from now") {
                let from = d.end + (after.len() - after.trim_start().len()) + 8;
                (d.start, from, now_ms + ms)
            } else {
                continue;
            };
        let instant = match d.unit {
            // Day-sized steps keep the time of day; smaller ones are to the second.
            "second" | "minute" | "hour" => instant - instant.rem_euclid(1000),
            _ => instant,
        };
        out.push(TimePart {
            start,
            end,
            day: None,
            clock: None,
            instant: Some(instant),
            grain: d.unit,
        });
    }
    out
}

/// Joins a date and an adjacent time of day ("next friday at 5pm", "5pm tomorrow") and
/// resolves every part to an instant.
fn times(lower: &str, durs: &[Duration], now_ms: i64) -> Vec<Extracted> {
    let mut dates = date_parts(lower, now_ms);
    dates.extend(relative_parts(lower, durs, now_ms));
    let clocks = clock_parts(lower);
    // Drop clock parts inside date parts (e.g. the time of an ISO timestamp).
    let clocks: Vec<TimePart> = clocks
        .into_iter()
        .filter(|c| !dates.iter().any(|d| d.start < c.end && c.start < d.end))
        .collect();
    let mut used_clock = vec![false; clocks.len()];
    let mut parts: Vec<TimePart> = Vec::new();
    let joinable = |gap: &str| {
        let g = gap.trim();
        g.is_empty() || g == "at" || g == "on" || g == "," || g == "by"
    };
    for d in &dates {
        let mut merged = *d;
        if d.day.is_some() && d.clock.is_none() {
            for (k, c) in clocks.iter().enumerate() {
                if used_clock[k] {
                    continue;
                }
                let gap = if c.start >= d.end {
                    &lower[d.end..c.start]
                } else if c.end <= d.start {
                    &lower[c.end..d.start]
                } else {
                    continue;
                };
                if joinable(gap) {
                    used_clock[k] = true;
                    merged.start = d.start.min(c.start);
                    merged.end = d.end.max(c.end);
                    merged.clock = c.clock;
                    merged.grain = c.grain;
                    break;
                }
            }
        }
        parts.push(merged);
    }
    for (k, c) in clocks.iter().enumerate() {
        if !used_clock[k] {
            parts.push(*c);
        }
    }
    let today = now_ms.div_euclid(DAY_MS);
    let mut out = Vec::new();
    for p in parts {
        let ms = match (p.instant, p.day, p.clock) {
            (Some(i), _, _) => i,
            (None, Some(day), None) => day * DAY_MS,
            (None, Some(day), Some((clock, ambiguous))) => {
                // "friday at 3:30": prefer the afternoon for ambiguous hours before 7.
                let pm = ambiguous && clock < 7 * HOUR_MS;
                day * DAY_MS + clock + if pm { 12 * HOUR_MS } else { 0 }
            }
            (None, None, Some((clock, ambiguous))) => {
                // A bare time of day: its next occurrence (either half of the day when
                // ambiguous).
                let mut candidates = vec![today * DAY_MS + clock, (today + 1) * DAY_MS + clock];
                if ambiguous {
                    candidates.push(today * DAY_MS + clock + 12 * HOUR_MS);
                }
                candidates
                    .into_iter()
                    .filter(|&c| c >= now_ms)
                    .min()
                    .unwrap_or((today + 1) * DAY_MS + clock)
            }
            (None, None, None) => continue,
        };
        out.push(entity(
            "time",
            p.start,
            p.end,
            json!(iso(ms)),
            "",
            json!({"grain": p.grain}),
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Contacts

fn contacts(text: &str, lower: &str, out: &mut Vec<Extracted>) {
    static EMAIL: OnceLock<Regex> = OnceLock::new();
    static URL: OnceLock<Regex> = OnceLock::new();
    static PHONE: OnceLock<Regex> = OnceLock::new();
    static DATE_LIKE: OnceLock<Regex> = OnceLock::new();
    let emails: Vec<(usize, usize)> = re(
        &EMAIL,
        r"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}",
    )
    .find_iter(lower)
    .map(|m| (m.start(), m.end()))
    .collect();
    for &(s, e) in &emails {
        out.push(entity("email", s, e, json!(&text[s..e]), "", json!({})));
    }
    for m in re(
        &URL,
        r"\b(?:https?://|www\.)[^\s<>]+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|fr|de|uk|ca|co|edu|gov|ai|app|dev|info|biz|me|us|eu)(?:/[^\s<>]*)?\b",
    )
    .find_iter(lower)
    {
        if emails.iter().any(|&(s, e)| s <= m.start() && m.end() <= e || (s < m.end() && m.start() < e)) {
            continue;
        }
        let raw = text[m.start()..m.end()].trim_end_matches(['.', ',', ')', '!', '?']);
        out.push(entity(
            "url",
            m.start(),
            m.start() + raw.len(),
            json!(raw),
            "",
            json!({"domain": domain_of(&raw.to_lowercase())}),
        ));
    }
    for m in re(&PHONE, r"\+?\(?\d[\d\s().-]{5,}\d").find_iter(lower) {
        let s = m.as_str();
        let digits = s.chars().filter(char::is_ascii_digit).count();
        let separated = s.contains([' ', '-', '.', '(']);
        // Dates and decimals are not phone numbers.
        let date_like = re(
            &DATE_LIKE,
            r"^\d{4}-\d{1,2}-\d{1,2}$|^\d{1,2}[./]\d{1,2}[./]\d{2,4}$",
        )
        .is_match(s.trim());
        if !(7..=15).contains(&digits)
            || date_like
            || (!separated && !s.starts_with('+') && digits < 10)
        {
            continue;
        }
        if s.matches('.').count() == 1 && !s.contains([' ', '-']) {
            continue;
        }
        let value: String = s
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '+')
            .collect();
        out.push(entity(
            "phoneNumber",
            m.start(),
            m.end(),
            json!(value),
            "",
            json!({}),
        ));
    }
}

fn domain_of(url: &str) -> String {
    let no_scheme = url.split("://").nth(1).unwrap_or(url);
    no_scheme
        .split(['/', '?', '#', ':'])
        .next()
        .unwrap_or("")
        .trim_start_matches("www.")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Amounts

fn currency_word(w: &str) -> Option<&'static str> {
    Some(match w {
        "dollar" | "dollars" | "usd" | "buck" | "bucks" => "USD",
        "euro" | "euros" | "eur" => "EUR",
        "pound" | "pounds" | "gbp" | "quid" => "GBP",
        "yen" | "jpy" => "JPY",
        "cad" => "CAD",
        "aud" => "AUD",
        "chf" | "franc" | "francs" => "CHF",
        "inr" | "rupee" | "rupees" => "INR",
        "cny" | "yuan" | "rmb" => "CNY",
        _ => return None,
    })
}

fn currency_symbol(s: &str) -> Option<(&'static str, usize)> {
    for (sym, code) in [
        ("us$", "USD"),
        ("$", "USD"),
        ("€", "EUR"),
        ("£", "GBP"),
        ("¥", "JPY"),
        ("₹", "INR"),
    ] {
        if s.ends_with(sym) {
            return Some((code, sym.len()));
        }
    }
    None
}

fn amounts(lower: &str, nums: &[Number], out: &mut Vec<Extracted>) {
    static WORD_AFTER: OnceLock<Regex> = OnceLock::new();
    static PCT_AFTER: OnceLock<Regex> = OnceLock::new();
    let word_after = re(&WORD_AFTER, r"^\s*([a-z]+)\b");
    let pct_after = re(&PCT_AFTER, r"^\s*(%|percent\b|per cent\b)");
    for n in nums.iter().filter(|n| !n.ordinal) {
        let before = lower[..n.start].trim_end();
        let gap_before = lower[..n.start].len() - before.len();
        let after = &lower[n.end..];
        if let Some((code, len)) = currency_symbol(before).filter(|_| gap_before <= 1) {
            out.push(entity(
                "amountOfMoney",
                before.len() - len,
                n.end,
                num(n.value),
                code,
                json!({}),
            ));
        } else if let Some(rest) = after.strip_prefix('€').or_else(|| after.strip_prefix(" €"))
        {
            let end = lower.len() - rest.len();
            out.push(entity(
                "amountOfMoney",
                n.start,
                end,
                num(n.value),
                "EUR",
                json!({}),
            ));
        } else if let Some(c) = word_after.captures(after) {
            if let Some(code) = currency_word(&c[1]) {
                let end = n.end + c.get(0).map_or(0, |m| m.end());
                out.push(entity(
                    "amountOfMoney",
                    n.start,
                    end,
                    num(n.value),
                    code,
                    json!({}),
                ));
            }
        }
        if let Some(c) = pct_after.captures(after) {
            let end = n.end + c.get(0).map_or(0, |m| m.end());
            out.push(entity(
                "percentage",
                n.start,
                end,
                num(n.value),
                "%",
                json!({}),
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Every system entity in `text`. `now_ms` (Unix ms, UTC) anchors relative times.
pub fn extract(text: &str, now_ms: i64) -> Vec<Extracted> {
    // Offsets found in the lower-cased copy must hold in the original: keep characters whose
    // lower case changes length as they are.
    let lower = super::super::slots::lowercase_keep_offsets(text);
    let mut out = Vec::new();
    contacts(text, &lower, &mut out);
    let covered_by_contact =
        |s: usize, e: usize, out: &Vec<Extracted>| out.iter().any(|x| x.start < e && s < x.end);
    let nums: Vec<Number> = numbers(&lower)
        .into_iter()
        .filter(|n| !covered_by_contact(n.start, n.end, &out))
        .collect();
    let durs = durations(&lower, &nums);
    let time_entities: Vec<Extracted> = times(&lower, &durs, now_ms)
        .into_iter()
        .filter(|t| !covered_by_contact(t.start, t.end, &out))
        .collect();
    amounts(&lower, &nums, &mut out);
    for d in &durs {
        if covered_by_contact(d.start, d.end, &out) {
            continue;
        }
        out.push(entity(
            "duration",
            d.start,
            d.end,
            num(d.value),
            d.unit,
            json!({"normalized": {"value": num(d.seconds), "unit": "second"}}),
        ));
    }
    let in_time = |n: &Number| {
        time_entities.iter().any(|t| {
            t.start <= n.start
                && n.end <= t.end
                && !durs.iter().any(|d| d.start <= n.start && n.end <= d.end)
        })
    };
    for n in &nums {
        if in_time(n) {
            continue;
        }
        if n.ordinal {
            // "second" in "a second" / "2 second" is a duration unit, not an ordinal.
            if durs.iter().any(|d| d.start < n.end && n.start < d.end) {
                continue;
            }
            out.push(entity(
                "ordinal",
                n.start,
                n.end,
                num(n.value),
                "",
                json!({}),
            ));
        } else {
            out.push(entity(
                "numeral",
                n.start,
                n.end,
                num(n.value),
                "",
                json!({}),
            ));
        }
    }
    out.extend(time_entities);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-28T10:00:00Z, a Wednesday.
    const NOW: i64 = 1_769_594_400_000;

    fn find(text: &str, name: &str) -> Vec<(String, Value, String)> {
        extract(text, NOW)
            .into_iter()
            .filter(|e| e.name == name)
            .map(|e| (text[e.start..e.end].to_string(), e.value, e.unit))
            .collect()
    }

    fn one(text: &str, name: &str) -> (String, Value, String) {
        let got = find(text, name);
        assert_eq!(
            got.len(),
            1,
            "{text:?} {name}: {got:?} (all: {:?})",
            extract(text, NOW)
        );
        got.into_iter().next().unwrap_or_else(|| unreachable!())
    }

    #[test]
    fn now_is_a_wednesday() {
        assert_eq!(iso(NOW), "2026-01-28T10:00:00.000Z");
        assert_eq!(weekday(NOW / DAY_MS), 2);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }

    #[test]
    fn numerals() {
        let table: &[(&str, &str, f64)] = &[
            ("i want 3 apples", "3", 3.0),
            ("it costs 1,000.50 in total", "1,000.50", 1000.5),
            ("about 2.75 km", "2.75", 2.75),
            ("twenty-one people", "twenty-one", 21.0),
            ("one hundred and five", "one hundred and five", 105.0),
            ("a thousand times", "a thousand", 1000.0),
            (
                "two million three hundred thousand",
                "two million three hundred thousand",
                2_300_000.0,
            ),
            ("ninety nine", "ninety nine", 99.0),
            ("seventeen", "seventeen", 17.0),
        ];
        for (text, span, value) in table {
            let (s, v, _) = one(text, "numeral");
            assert_eq!((s.as_str(), v.as_f64().unwrap()), (*span, *value), "{text}");
        }
        assert_eq!(find("one two", "numeral").len(), 2);
        assert!(find("a cat and a dog", "numeral").is_empty());
        assert!(find("version1 x2", "numeral").is_empty());
    }

    #[test]
    fn ordinals() {
        let table: &[(&str, &str, f64)] = &[
            ("the 1st one", "1st", 1.0),
            ("my second try", "second", 2.0),
            ("twenty-first century", "twenty-first", 21.0),
            ("the 22nd", "22nd", 22.0),
            ("one hundredth", "one hundredth", 100.0),
        ];
        for (text, span, value) in table {
            let (s, v, _) = one(text, "ordinal");
            assert_eq!((s.as_str(), v.as_f64().unwrap()), (*span, *value), "{text}");
        }
        assert!(find("wait a second", "ordinal").is_empty());
    }

    #[test]
    fn money_and_percentages() {
        let table: &[(&str, &str, f64, &str)] = &[
            ("it is $20", "$20", 20.0, "USD"),
            ("20 dollars please", "20 dollars", 20.0, "USD"),
            ("pay 1,000.50 USD now", "1,000.50 USD", 1000.5, "USD"),
            ("only €5", "€5", 5.0, "EUR"),
            ("5 euros", "5 euros", 5.0, "EUR"),
            ("5€", "5€", 5.0, "EUR"),
            ("£3.50", "£3.50", 3.5, "GBP"),
            ("twenty dollars", "twenty dollars", 20.0, "USD"),
        ];
        for (text, span, value, unit) in table {
            let (s, v, u) = one(text, "amountOfMoney");
            assert_eq!(
                (s.as_str(), v.as_f64().unwrap(), u.as_str()),
                (*span, *value, *unit),
                "{text}"
            );
        }
        let (s, v, _) = one("up 50% today", "percentage");
        assert_eq!((s.as_str(), v), ("50%", json!(50)));
        let (s, v, _) = one("12.5 percent more", "percentage");
        assert_eq!((s.as_str(), v), ("12.5 percent", json!(12.5)));
    }

    #[test]
    fn durations_with_seconds() {
        let e: Vec<Extracted> = extract("it takes 2 hours", NOW)
            .into_iter()
            .filter(|e| e.name == "duration")
            .collect();
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].value.clone(), e[0].unit.as_str()), (json!(2), "hour"));
        assert_eq!(
            e[0].extras,
            json!({"normalized": {"value": 7200, "unit": "second"}})
        );
        let (s, _, u) = one("call me in 2 hours", "duration");
        assert_eq!((s.as_str(), u.as_str()), ("2 hours", "hour"));
        let (s, v, u) = one("for half an hour", "duration");
        assert_eq!(
            (s.as_str(), v, u.as_str()),
            ("half an hour", json!(0.5), "hour")
        );
        let (_, v, u) = one("thirty minutes", "duration");
        assert_eq!((v, u.as_str()), (json!(30), "minute"));
    }

    #[test]
    fn times() {
        let table: &[(&str, &str, &str)] = &[
            (
                "next friday at 5pm",
                "next friday at 5pm",
                "2026-01-30T17:00:00.000Z",
            ),
            ("in 2 hours", "in 2 hours", "2026-01-28T12:00:00.000Z"),
            ("today", "today", "2026-01-28T00:00:00.000Z"),
            ("see you tomorrow", "tomorrow", "2026-01-29T00:00:00.000Z"),
            ("yesterday", "yesterday", "2026-01-27T00:00:00.000Z"),
            ("on monday", "monday", "2026-02-02T00:00:00.000Z"),
            ("wednesday", "wednesday", "2026-01-28T00:00:00.000Z"),
            (
                "next wednesday",
                "next wednesday",
                "2026-02-04T00:00:00.000Z",
            ),
            ("at 3:30", "at 3:30", "2026-01-28T15:30:00.000Z"),
            ("at 11:15", "at 11:15", "2026-01-28T11:15:00.000Z"),
            ("at 9am", "at 9am", "2026-01-29T09:00:00.000Z"),
            (
                "tomorrow at 3:30",
                "tomorrow at 3:30",
                "2026-01-29T15:30:00.000Z",
            ),
            ("5pm tomorrow", "5pm tomorrow", "2026-01-29T17:00:00.000Z"),
            ("due 2026-01-31", "2026-01-31", "2026-01-31T00:00:00.000Z"),
            ("on 31/01/2026", "31/01/2026", "2026-01-31T00:00:00.000Z"),
            ("on 5/3/26", "5/3/26", "2026-03-05T00:00:00.000Z"),
            ("march 3rd", "march 3rd", "2026-03-03T00:00:00.000Z"),
            ("january 2", "january 2", "2027-01-02T00:00:00.000Z"),
            (
                "the 14th of february 2027",
                "the 14th of february 2027",
                "2027-02-14T00:00:00.000Z",
            ),
            ("3 days ago", "3 days ago", "2026-01-25T10:00:00.000Z"),
            ("next week", "next week", "2026-02-02T00:00:00.000Z"),
            ("next month", "next month", "2026-02-01T00:00:00.000Z"),
            ("at noon", "at noon", "2026-01-28T12:00:00.000Z"),
        ];
        let mut wrong = Vec::new();
        for (text, span, value) in table {
            let got = find(text, "time");
            let want = vec![(span.to_string(), json!(value), String::new())];
            if got != want {
                wrong.push(format!("{text:?}: got {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        // Numbers that are part of a time are not numerals.
        assert!(find("next friday at 5pm", "numeral").is_empty());
        assert!(find("due 2026-01-31", "numeral").is_empty());
        assert!(find("at 5 dollars", "time").is_empty());
    }

    #[test]
    fn contacts_table() {
        let (s, v, _) = one("write to Jane.Doe@example.com.", "email");
        assert_eq!(
            (s.as_str(), v),
            ("Jane.Doe@example.com", json!("Jane.Doe@example.com"))
        );
        let (s, _, _) = one("see https://botpress.com/docs?x=1.", "url");
        assert_eq!(s, "https://botpress.com/docs?x=1");
        let (s, _, _) = one("go to www.example.org now", "url");
        assert_eq!(s, "www.example.org");
        assert!(find("write to jane@example.com", "url").is_empty());
        let (s, v, _) = one("call +1 (555) 123-4567 now", "phoneNumber");
        assert_eq!(
            (s.as_str(), v),
            ("+1 (555) 123-4567", json!("+15551234567"))
        );
        let (_, v, _) = one("my number is 06 12 34 56 78", "phoneNumber");
        assert_eq!(v, json!("0612345678"));
        assert!(find("due 2026-01-31", "phoneNumber").is_empty());
        assert!(find("1,000,000", "phoneNumber").is_empty());
        assert!(find("1234567", "phoneNumber").is_empty());
    }
}
