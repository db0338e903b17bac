//! Who may use the public HTTP routes and how often: the Converse limits and API keys (global
//! in `botpress.config.json` → `converse`, per bot in `bot.config.json` → `converse`), the
//! proxies whose `X-Forwarded-For` is believed and the browser origins allowed
//! (`httpServer.trustedProxies`, `httpServer.allowedOrigins`). Each reader names the file and
//! the field of anything it refuses.

use crate::engine::Problem;
use crate::ratelimit::Rate;
use serde_json::Value;
use std::net::IpAddr;

/// `converse.rateLimit`: off (both `None`) unless configured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConverseLimits {
    /// `perUser`: one bucket per bot and user id.
    pub per_user: Option<Rate>,
    /// `perClient`: one bucket per bot and client address.
    pub per_client: Option<Rate>,
}

/// How many buckets each of the per-user and per-client maps keeps at most.
pub const MAX_TRACKED: usize = 10_000;

/// The Converse part that both files may hold: `rateLimit` and `apiKeys`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConverseAccess {
    pub limits: ConverseLimits,
    /// Keys the public route accepts in `X-BP-Api-Key`; none configured: no key needed.
    pub api_keys: Vec<String>,
}

impl ConverseAccess {
    /// Reads `section` (the `converse` object of `file`). A field with a problem is left out
    /// (so, in a bot's file, the global setting applies to it).
    pub fn read(section: Option<&Value>, file: &str, problems: &mut Vec<Problem>) -> Self {
        let Some(section) = section.filter(|v| !v.is_null()) else {
            return ConverseAccess::default();
        };
        let mut access = ConverseAccess::default();
        match section.get("rateLimit") {
            None | Some(Value::Null) => {}
            Some(Value::Object(limit)) => {
                for key in limit.keys() {
                    if key != "perUser" && key != "perClient" {
                        problems.push(Problem::new(
                            file,
                            format!("converse.rateLimit.{key} is unknown (perUser, perClient)"),
                        ));
                    }
                }
                access.limits.per_user = rate(
                    limit.get("perUser"),
                    "converse.rateLimit.perUser",
                    file,
                    problems,
                );
                access.limits.per_client = rate(
                    limit.get("perClient"),
                    "converse.rateLimit.perClient",
                    file,
                    problems,
                );
            }
            Some(_) => problems.push(Problem::new(file, "converse.rateLimit must be an object")),
        }
        access.api_keys = api_keys(section.get("apiKeys"), "converse.apiKeys", file, problems);
        access
    }
}

/// A list of API keys (`field` of `file`): strings, none empty (an empty one is left out).
pub fn api_keys(
    value: Option<&Value>,
    field: &str,
    file: &str,
    problems: &mut Vec<Problem>,
) -> Vec<String> {
    let mut keys = strings(value, field, file, problems);
    if keys.iter().any(|k| k.trim().is_empty()) {
        problems.push(Problem::new(file, format!("{field}: a key is empty")));
        keys.retain(|k| !k.trim().is_empty());
    }
    keys
}

/// `{"burst": 5, "every": "2s"}`: `burst` requests at once, then one every `every`.
fn rate(
    value: Option<&Value>,
    field: &str,
    file: &str,
    problems: &mut Vec<Problem>,
) -> Option<Rate> {
    let value = value.filter(|v| !v.is_null())?;
    let bad = |problems: &mut Vec<Problem>, why: &str| {
        problems.push(Problem::new(file, format!("{field}: {why}")));
        None
    };
    let Some(map) = value.as_object() else {
        return bad(
            problems,
            "must be an object like {\"burst\": 5, \"every\": \"2s\"}",
        );
    };
    if let Some(other) = map.keys().find(|k| *k != "burst" && *k != "every") {
        return bad(problems, &format!("unknown key \"{other}\" (burst, every)"));
    }
    let burst = match map.get("burst").and_then(Value::as_u64) {
        Some(n) if (1..=1_000_000).contains(&n) => n as u32,
        _ => return bad(problems, "burst must be a whole number from 1 to 1000000"),
    };
    let every = match map
        .get("every")
        .and_then(Value::as_str)
        .map(super::units::parse_duration)
    {
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Err(e)) => return bad(problems, &format!("every: {e}")),
        _ => return bad(problems, "every must be a duration above zero, like \"2s\""),
    };
    Some(Rate { burst, every })
}

fn strings(
    value: Option<&Value>,
    field: &str,
    file: &str,
    problems: &mut Vec<Problem>,
) -> Vec<String> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(_) => {
            problems.push(Problem::new(
                file,
                format!("{field} must be a list of strings"),
            ));
            Vec::new()
        }
    }
}

/// One entry of `httpServer.trustedProxies`: an address, or a network as `address/bits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    bits: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Network, String> {
        let (addr, bits) = match text.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("\"{text}\" is not an IP address or address/bits"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("\"{text}\": the prefix length must be 0 to {max}"))?,
        };
        Ok(Network { addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), 32, self.bits)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.bits)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, width: u8, bits: u8) -> bool {
    let shift = u32::from(width - bits);
    a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
}

/// `httpServer.trustedProxies`: networks whose `X-Forwarded-For` names the client.
pub fn read_proxies(
    value: Option<&Value>,
    file: &str,
    problems: &mut Vec<Problem>,
) -> Vec<Network> {
    strings(value, "httpServer.trustedProxies", file, problems)
        .iter()
        .filter_map(|t| {
            Network::parse(t)
                .map_err(|e| {
                    problems.push(Problem::new(
                        file,
                        format!("httpServer.trustedProxies: {e}"),
                    ))
                })
                .ok()
        })
        .collect()
}

/// `httpServer.allowedOrigins`: `None` is any origin (`*`, the default).
pub fn read_origins(
    value: Option<&Value>,
    file: &str,
    problems: &mut Vec<Problem>,
) -> Option<Vec<String>> {
    value.filter(|v| !v.is_null())?;
    let origins = strings(value, "httpServer.allowedOrigins", file, problems);
    if origins.iter().any(|o| o == "*") {
        return None;
    }
    for origin in &origins {
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        if !rest.is_some_and(|r| !r.is_empty() && !r.contains('/')) {
            problems.push(Problem::new(
                file,
                format!("httpServer.allowedOrigins: \"{origin}\" is not an origin like \"https://example.com\" (scheme and host, no path)"),
            ));
        }
    }
    Some(origins)
}

/// The client of a request: the TCP peer, unless the peer is a trusted proxy; then the
/// right-most address of `X-Forwarded-For` that is not a trusted proxy itself (the addresses to
/// its left were written by the client and prove nothing). A value that is not an address ends
/// the walk at the last proxy seen.
pub fn client_address(peer: IpAddr, forwarded_for: &[&str], trusted: &[Network]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for.iter().rev().flat_map(|h| h.rsplit(',')) {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            return client;
        };
        client = ip.to_canonical();
        if !is_trusted(client) {
            return client;
        }
    }
    client
}

/// Whether `origin` is one of `allowed` (scheme and host compare without case).
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_limits_and_names_bad_fields() {
        let mut problems = Vec::new();
        let section = json!({"rateLimit": {"perUser": {"burst": 3, "every": "2s"}}, "apiKeys": ["0123456789abcdef"]});
        let access = ConverseAccess::read(Some(&section), "f.json", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            access.limits.per_user,
            Some(Rate {
                burst: 3,
                every: std::time::Duration::from_secs(2)
            })
        );
        assert_eq!(access.limits.per_client, None);
        let bad = json!({"rateLimit": {"perClient": {"burst": 0, "every": "2s"}, "perIp": {}}, "apiKeys": "k"});
        ConverseAccess::read(Some(&bad), "f.json", &mut problems);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|p| p.starts_with("f.json: converse.rateLimit.perIp")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|p| p.contains("converse.rateLimit.perClient: burst")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|p| p.contains("converse.apiKeys must be a list")),
            "{text:?}"
        );
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let trusted = vec![
            Network::parse("127.0.0.1").unwrap(),
            Network::parse("10.0.0.0/8").unwrap(),
        ];
        // Not a proxy: its header is ignored.
        assert_eq!(
            client_address(ip("192.0.2.9"), &["203.0.113.5"], &trusted),
            ip("192.0.2.9")
        );
        // A proxy: the right-most untrusted address, whatever the client wrote to its left.
        assert_eq!(
            client_address(
                ip("127.0.0.1"),
                &["1.1.1.1, 203.0.113.5, 10.1.2.3"],
                &trusted
            ),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &["1.1.1.1", "203.0.113.7"], &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &[], &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &["junk, 10.0.0.2"], &trusted),
            ip("10.0.0.2")
        );
        // An IPv4-mapped peer is the IPv4 address.
        assert_eq!(
            client_address(ip("::ffff:127.0.0.1"), &["203.0.113.5"], &trusted),
            ip("203.0.113.5")
        );
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("::/0").unwrap().contains(ip("2001:db8::1")));
    }

    #[test]
    fn origins() {
        let mut problems = Vec::new();
        assert_eq!(read_origins(None, "f", &mut problems), None);
        assert_eq!(read_origins(Some(&json!(["*"])), "f", &mut problems), None);
        let list = read_origins(Some(&json!(["https://a.example"])), "f", &mut problems).unwrap();
        assert!(problems.is_empty());
        assert!(origin_allowed("https://A.example", &list));
        assert!(!origin_allowed("https://b.example", &list));
        read_origins(Some(&json!(["https://a.example/path"])), "f", &mut problems);
        assert_eq!(problems.len(), 1);
    }
}
