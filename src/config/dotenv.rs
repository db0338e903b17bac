//! `data/.env`: `KEY=VALUE` lines read at start. The process environment wins over the file.

use std::collections::HashMap;
use std::path::Path;

/// The environment botd runs with: the process environment over `data/.env`.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// Reads `path` (a missing file is fine) and lays the process environment over it.
    pub fn load(path: &Path) -> Result<Env, String> {
        let mut vars = match std::fs::read_to_string(path) {
            Ok(text) => parse(&text).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        vars.extend(std::env::vars());
        Ok(Env { vars })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Parses `.env` text: comments, blank lines, `export KEY=VALUE`, single or double quotes
/// (double quotes understand `\n`, `\"` and `\\`), and inline `#` comments after unquoted values.
pub fn parse(text: &str) -> Result<HashMap<String, String>, String> {
    let mut vars = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE", index + 1));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "line {}: \"{key}\" is not a variable name",
                index + 1
            ));
        }
        vars.insert(
            key.to_string(),
            unquote(value.trim()).map_err(|e| format!("line {}: {e}", index + 1))?,
        );
    }
    Ok(vars)
}

fn unquote(value: &str) -> Result<String, String> {
    if let Some(rest) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Ok(out),
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some(other) => out.push(other),
                    None => break,
                },
                _ => out.push(c),
            }
        }
        Err("unterminated double quote".into())
    } else if let Some(rest) = value.strip_prefix('\'') {
        rest.find('\'')
            .map(|end| rest[..end].to_string())
            .ok_or_else(|| "unterminated single quote".into())
    } else {
        let end = value.find(" #").unwrap_or(value.len());
        Ok(value[..end].trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let vars = parse(
            "# comment\n\nEXTERNAL_URL=https://bot.example.com\nexport PORT=8080\n\
             A=\"quoted # not a comment\"\nB='single'\nC=plain # trailing\nD=\"line\\nbreak\"\nE=\n",
        )
        .unwrap();
        assert_eq!(vars["EXTERNAL_URL"], "https://bot.example.com");
        assert_eq!(vars["PORT"], "8080");
        assert_eq!(vars["A"], "quoted # not a comment");
        assert_eq!(vars["B"], "single");
        assert_eq!(vars["C"], "plain");
        assert_eq!(vars["D"], "line\nbreak");
        assert_eq!(vars["E"], "");
    }

    #[test]
    fn reports_bad_lines() {
        assert!(parse("JUSTAWORD").unwrap_err().contains("line 1"));
        assert!(parse("OK=1\nX=\"open").unwrap_err().contains("line 2"));
        assert!(parse("BAD KEY=1").is_err());
    }

    #[test]
    fn empty_values_are_absent() {
        let env = Env {
            vars: [("A".to_string(), String::new())].into_iter().collect(),
        };
        assert_eq!(env.get("A"), None);
    }
}
