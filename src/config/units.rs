//! Durations (`"5s"`, `"2m"`, `"30m"`, `"6h"`) and sizes (`"100kb"`, `"1mb"`) as Botpress writes
//! them in its configuration files.

use std::time::Duration;

/// Parses `"250ms"`, `"5s"`, `"2m"`, `"30m"`, `"6h"`, `"1d"`, `"2 weeks"`; a bare number is
/// milliseconds, as the `ms` package reads it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text)?;
    let factor_ms = match unit.as_str() {
        "" | "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        "w" | "week" | "weeks" => 604_800_000.0,
        _ => {
            return Err(format!(
                "\"{text}\" is not a duration (use e.g. \"5s\", \"2m\", \"6h\")"
            ))
        }
    };
    Ok(Duration::from_millis((number * factor_ms).round() as u64))
}

/// Parses `"100kb"`, `"1mb"`, `"512b"`, or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text)?;
    let factor = match unit.as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1024.0,
        "mb" | "m" => 1024.0 * 1024.0,
        "gb" | "g" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "\"{text}\" is not a size (use e.g. \"100kb\", \"1mb\")"
            ))
        }
    };
    Ok((number * factor).round() as u64)
}

fn split_number(text: &str) -> Result<(f64, String), String> {
    let trimmed = text.trim();
    let end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let number: f64 = trimmed[..end]
        .parse()
        .map_err(|_| format!("\"{text}\" does not start with a number"))?;
    Ok((number, trimmed[end..].trim().to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("5s", 5_000),
            ("2m", 120_000),
            ("30m", 1_800_000),
            ("6h", 21_600_000),
            ("10s", 10_000),
            ("250ms", 250),
            ("1500", 1500),
            ("1.5s", 1500),
            ("2 weeks", 1_209_600_000),
            ("1d", 86_400_000),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_duration(text).unwrap().as_millis(), ms, "{text}");
        }
        for bad in ["", "s", "5 parsecs", "abc", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        let cases = [
            ("100kb", 102_400),
            ("1mb", 1_048_576),
            ("512", 512),
            ("64KB", 65_536),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text).unwrap(), bytes, "{text}");
        }
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1tb").is_err());
    }
}
