//! The request head: request line and headers, parsed with `httparse` (the parser hyper uses)
//! under botd's limits, and the framing of the body that follows it. Everything here works on
//! bytes already read: no I/O, so every rule is a table test and a property test.

use super::limits::Limits;

/// The request methods botd routes; anything else is kept by name and answered by the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Other(String),
}

impl Method {
    fn parse(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other(name) => name,
        }
    }
}

/// A parsed request line and its headers.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: Method,
    /// The request target as sent: path and query, not decoded.
    pub target: String,
    /// `true` for HTTP/1.1, `false` for HTTP/1.0.
    pub http11: bool,
    headers: Vec<(String, String)>,
}

impl Head {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in the order sent (for lists spread over several lines).
    pub fn all<'h>(&'h self, name: &'h str) -> impl Iterator<Item = &'h str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client asked to keep the connection open after this request. An HTTP/1.0
    /// request with `Transfer-Encoding` has faulty framing (RFC 9112 §6.1): never kept.
    pub fn keep_alive(&self) -> bool {
        if !self.http11 && self.header("Transfer-Encoding").is_some() {
            return false;
        }
        let has = |token: &str| {
            self.all("Connection")
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if self.http11 {
            !has("close")
        } else {
            has("keep-alive")
        }
    }

    /// Whether the client waits for `100 Continue` before it sends the body.
    pub fn expects_continue(&self) -> bool {
        self.http11
            && self
                .header("Expect")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
    }

    /// How the body is delimited (RFC 9112 §6.3), refusing every ambiguous shape: both
    /// `Content-Length` and `Transfer-Encoding` (the request-smuggling shape), differing or
    /// malformed lengths, and codings other than a single `chunked`.
    pub fn framing(&self) -> Result<Framing, Refusal> {
        let codings: Vec<&str> = self
            .all("Transfer-Encoding")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let lengths: Vec<&str> = self.all("Content-Length").map(str::trim).collect();
        if !codings.is_empty() && !lengths.is_empty() {
            return Err(Refusal::new(
                400,
                "both Content-Length and Transfer-Encoding are present",
            ));
        }
        if !codings.is_empty() {
            return match codings.as_slice() {
                [one] if one.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
                _ => Err(Refusal::new(
                    501,
                    "only the chunked transfer coding is supported",
                )),
            };
        }
        let Some(first) = lengths.first() else {
            return Ok(Framing::Length(0));
        };
        if lengths.iter().any(|l| l != first) {
            return Err(Refusal::new(400, "Content-Length headers disagree"));
        }
        // Digits only: no sign, no spaces, no lists; a value that does not fit u64 is refused
        // rather than wrapped.
        if first.is_empty() || first.len() > 19 || !first.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Refusal::new(400, "Content-Length is not a length"));
        }
        first
            .parse::<u64>()
            .map(Framing::Length)
            .map_err(|_| Refusal::new(400, "Content-Length is not a length"))
    }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

/// A request refused from its head: the status to answer, and why (for the message and the
/// log). The connection is always closed after one, because what follows it cannot be trusted
/// to start a new request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub why: String,
}

impl Refusal {
    pub fn new(status: u16, why: &str) -> Refusal {
        Refusal {
            status,
            why: why.to_string(),
        }
    }
}

/// The path and query of an absolute-form target (`http://host/path?q`, RFC 9112 §3.2.2),
/// which servers must accept; any other target as it is.
fn origin_form(target: &str) -> &str {
    let lower = |p: &str| target.len() >= p.len() && target[..p.len()].eq_ignore_ascii_case(p);
    let rest = if lower("http://") {
        &target[7..]
    } else if lower("https://") {
        &target[8..]
    } else {
        return target;
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
        // `http://host?q` has an empty path: "/" is implied, but the query would be lost with
        // a borrowed slice; such targets are refused as not a path.
        Some(_) => "",
        None => "/",
    }
}

/// Header slots kept on the stack while parsing (more, when the limits allow more, go on the heap).
const STACK_HEADER_SLOTS: usize = 128;

/// Parses the head at the start of `buf`. `Ok(None)` asks for more bytes; `Ok(Some((head,
/// n)))` means the head ended after `n` bytes. Limits are checked on what has arrived, so a
/// head that will be too long is refused as soon as it is, not once it is complete.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Head, usize)>, Refusal> {
    // Empty lines before a request line are allowed (RFC 9112 §2.2); a few, not a way around
    // the request-line limit.
    let skip = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if skip > 16 {
        return Err(Refusal::new(400, "too many empty lines before the request"));
    }
    let bytes = &buf[skip..];
    let line_end = bytes.iter().position(|b| *b == b'\n');
    if line_end.unwrap_or(bytes.len()) > limits.max_request_line {
        return Err(Refusal::new(414, "the request line is too long"));
    }
    // The header slots live on the stack for the usual limits: a heap vector of 100 slots
    // (3.2 KB, past the thread caches of malloc) per parse attempt showed in the profile.
    let mut on_stack = [httparse::EMPTY_HEADER; STACK_HEADER_SLOTS];
    let mut on_heap = Vec::new();
    let slots: &mut [httparse::Header] = if limits.max_headers <= STACK_HEADER_SLOTS {
        &mut on_stack[..limits.max_headers]
    } else {
        on_heap.resize(limits.max_headers, httparse::EMPTY_HEADER);
        &mut on_heap
    };
    let mut request = httparse::Request::new(slots);
    match request.parse(bytes) {
        Ok(httparse::Status::Partial) => {
            if bytes.len() >= limits.max_head {
                Err(Refusal::new(431, "the request head is too large"))
            } else {
                Ok(None)
            }
        }
        Ok(httparse::Status::Complete(n)) => {
            if n > limits.max_head {
                return Err(Refusal::new(431, "the request head is too large"));
            }
            let head = Head {
                method: Method::parse(request.method.unwrap_or("")),
                target: origin_form(request.path.unwrap_or("")).to_string(),
                http11: request.version == Some(1),
                headers: request
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
            };
            if !head.target.starts_with('/') && head.target != "*" {
                return Err(Refusal::new(400, "the request target is not a path"));
            }
            // RFC 9112 §3.2: exactly one Host in an HTTP/1.1 request.
            if head.http11 && head.all("Host").count() != 1 {
                return Err(Refusal::new(
                    400,
                    "an HTTP/1.1 request needs exactly one Host header",
                ));
            }
            Ok(Some((head, skip + n)))
        }
        Err(httparse::Error::TooManyHeaders) => {
            Err(Refusal::new(431, "the request has too many headers"))
        }
        Err(e) => Err(Refusal::new(400, &format!("malformed request head: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn head(text: &str) -> Head {
        parse(text.as_bytes(), &limits()).unwrap().unwrap().0
    }

    #[test]
    fn parses_a_request_head() {
        let raw = "\r\nPOST /api/v1/bots/b/converse/u?include=nlu HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nbody";
        let (h, n) = parse(raw.as_bytes(), &limits()).unwrap().unwrap();
        assert_eq!(&raw[n..], "body");
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.path(), "/api/v1/bots/b/converse/u");
        assert_eq!(h.target, "/api/v1/bots/b/converse/u?include=nlu");
        assert_eq!(h.header("content-length"), Some("12"));
        assert_eq!(h.framing(), Ok(Framing::Length(12)));
        assert!(h.keep_alive());
    }

    #[test]
    fn partial_heads_ask_for_more() {
        for cut in [
            "",
            "GET",
            "GET / HTTP/1.1\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert!(
                parse(cut.as_bytes(), &limits()).unwrap().is_none(),
                "{cut:?}"
            );
        }
    }

    #[test]
    fn limits_are_answered_with_their_status() {
        let l = limits();
        let long_url = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(l.max_request_line));
        assert_eq!(parse(long_url.as_bytes(), &l).unwrap_err().status, 414);
        // Refused before the line ends: the URL alone is already over the limit.
        let unfinished = format!("GET /{}", "a".repeat(l.max_request_line + 1));
        assert_eq!(parse(unfinished.as_bytes(), &l).unwrap_err().status, 414);
        let big_header = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(l.max_head));
        assert_eq!(parse(big_header.as_bytes(), &l).unwrap_err().status, 431);
        let many: String = (0..=l.max_headers)
            .map(|i| format!("X{i}: 1\r\n"))
            .collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(many.as_bytes(), &l).unwrap_err().status, 431);
        assert_eq!(parse(b"GARBAGE\r\n\r\n", &l).unwrap_err().status, 400);
        assert_eq!(
            parse(b"GET x HTTP/1.1\r\nHost: a\r\n\r\n", &l)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n", &l).unwrap_err().status,
            400
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &l)
                .unwrap_err()
                .status,
            400
        );
        // Blank lines before the request line do not get a long line past its limit.
        let padded = format!(
            "{}GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "\r\n".repeat(12),
            "a".repeat(l.max_request_line)
        );
        assert_eq!(parse(padded.as_bytes(), &l).unwrap_err().status, 400);
        let padded = format!(
            "{}GET /{} HTTP/1.1",
            "\r\n".repeat(4),
            "a".repeat(l.max_request_line)
        );
        assert_eq!(parse(padded.as_bytes(), &l).unwrap_err().status, 414);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let cases = [
            ("Content-Length: 5\r\nTransfer-Encoding: chunked", Err(400)),
            ("Transfer-Encoding: chunked\r\nContent-Length: 5", Err(400)),
            ("Content-Length: 5\r\nContent-Length: 6", Err(400)),
            (
                "Content-Length: 5\r\nContent-Length: 5",
                Ok(Framing::Length(5)),
            ),
            ("Content-Length: -1", Err(400)),
            ("Content-Length: +5", Err(400)),
            ("Content-Length: 5, 5", Err(400)),
            ("Content-Length: 18446744073709551615", Err(400)),
            ("Content-Length: 99999999999999999999", Err(400)),
            (
                "Content-Length: 107374182400",
                Ok(Framing::Length(107374182400)),
            ),
            ("Content-Length: ", Err(400)),
            ("Transfer-Encoding: gzip, chunked", Err(501)),
            ("Transfer-Encoding: identity", Err(501)),
            ("Transfer-Encoding: Chunked", Ok(Framing::Chunked)),
            ("X-Other: 1", Ok(Framing::Length(0))),
        ];
        for (headers, expected) in cases {
            let h = head(&format!("POST / HTTP/1.1\r\nHost: a\r\n{headers}\r\n\r\n"));
            assert_eq!(h.framing().map_err(|r| r.status), expected, "{headers}");
        }
    }

    #[test]
    fn absolute_form_targets_are_read_as_paths() {
        let h =
            head("GET http://bot.example.com/status?x=1 HTTP/1.1\r\nHost: bot.example.com\r\n\r\n");
        assert_eq!(h.target, "/status?x=1");
        assert_eq!(
            head("GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n").target,
            "/"
        );
        assert_eq!(head("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").target, "*");
    }

    #[test]
    fn keep_alive_follows_the_version() {
        assert!(!head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        assert!(!head(
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .keep_alive());
        assert!(
            head("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n").expects_continue()
        );
    }

    /// Random and mutated heads never panic, and whatever is accepted is within the limits.
    #[test]
    fn random_heads_never_panic() {
        let l = Limits {
            max_request_line: 64,
            max_head: 256,
            max_headers: 8,
            ..Limits::default()
        };
        let seeds: [&[u8]; 4] = [
            b"POST /api/v1/bots/b/converse/u HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /status HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        const NOISE: &[u8] = b"\r\n:; \0\x7f\xff0aZ";
        let mut rng = crate::engine::random::XorShift::new(0x5eed_1234);
        for round in 0..20_000 {
            let mut bytes = seeds[round % seeds.len()].to_vec();
            for _ in 0..1 + rng.below(6) {
                let at = rng.below(bytes.len() + 1);
                match rng.below(4) {
                    0 if at < bytes.len() => bytes[at] = rng.below(256) as u8,
                    1 => bytes.insert(at, NOISE[rng.below(NOISE.len())]),
                    2 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {
                        let n = rng.below(300);
                        bytes.splice(at..at, std::iter::repeat_n(b'a', n));
                    }
                }
            }
            if let Ok(Some((h, n))) = parse(&bytes, &l) {
                assert!(n <= bytes.len());
                assert!(h.target.len() <= l.max_request_line);
                let _ = h.framing();
                let _ = h.keep_alive();
            }
        }
    }
}
