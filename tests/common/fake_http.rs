//! The HTTP server under the tests' fakes of remote APIs (Facebook's Graph API, Telegram's
//! Bot API, APIs a bot's code calls): one thread per connection, keep-alive, a handler that
//! may block (a long poll). botd keeps pools of connections to those APIs; a server with a
//! fixed or racy thread pool (tiny_http's could leave a new connection unserved while kept
//! ones were open) would show up as a reply that never arrives.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One request as the fake received it.
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.url.split('?').next().unwrap_or("")
    }

    /// The query string (empty when there is none).
    pub fn query(&self) -> &str {
        self.url.split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    /// A header's value (names compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the fake answers.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: value.to_string().into_bytes(),
        }
    }

    /// A plain-text body.
    pub fn text(status: u16, text: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: text.as_bytes().to_vec(),
        }
    }

    /// Sets a header (replacing one of the same name).
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Handler = dyn Fn(Request) -> Response + Send + Sync;

/// A running fake server on 127.0.0.1; stops accepting and closes its connections on drop.
pub struct FakeHttp {
    pub port: u16,
    stopping: Arc<AtomicBool>,
}

impl FakeHttp {
    pub fn start(handler: impl Fn(Request) -> Response + Send + Sync + 'static) -> FakeHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stopping = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let stop = stopping.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (handler, stop) = (handler.clone(), stop.clone());
                std::thread::spawn(move || serve(stream, &*handler, &stop));
            }
        });
        FakeHttp { port, stopping }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Answers the requests of one connection until the client closes it or the fake stops.
fn serve(stream: TcpStream, handler: &Handler, stopping: &AtomicBool) {
    // Short reads, so that an idle kept connection notices the stop.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader, stopping) {
        let close = request
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let response = handler(request);
        let mut head = format!(
            "HTTP/1.1 {} {}\r\n",
            response.status,
            reason(response.status)
        );
        for (k, v) in &response.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&response.body);
        if writer.write_all(&out).is_err() || close {
            return;
        }
    }
}

/// Reads one request; `None` when the connection ends, is malformed, or the fake stops.
fn read_request(reader: &mut BufReader<TcpStream>, stopping: &AtomicBool) -> Option<Request> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        append_line(reader, &mut head, stopping)?;
    }
    let mut parsed_headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut parsed_headers);
    if !matches!(parsed.parse(&head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let mut request = Request {
        method: parsed.method?.to_string(),
        url: parsed.path?.to_string(),
        headers: parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
    };
    let chunked = request
        .header("Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let line = read_line(reader, stopping)?;
            let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            read_exact(reader, &mut chunk, stopping)?;
            if size == 0 {
                break;
            }
            request.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = request.header("Content-Length") {
        let mut body = vec![0; length.trim().parse().ok()?];
        read_exact(reader, &mut body, stopping)?;
        request.body = body;
    }
    Some(request)
}

/// Appends one line (through its `\n`) to `buf`, waiting out read timeouts until the stop.
fn append_line(
    reader: &mut BufReader<TcpStream>,
    buf: &mut Vec<u8>,
    stopping: &AtomicBool,
) -> Option<()> {
    let start = buf.len();
    while buf.len() == start || !buf.ends_with(b"\n") {
        if stopping.load(Ordering::SeqCst) {
            return None;
        }
        match reader.read_until(b'\n', buf) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => continue,
            Err(_) => return None,
        }
    }
    Some(())
}

fn read_line(reader: &mut BufReader<TcpStream>, stopping: &AtomicBool) -> Option<String> {
    let mut line = Vec::new();
    append_line(reader, &mut line, stopping)?;
    String::from_utf8(line).ok()
}

fn read_exact(
    reader: &mut BufReader<TcpStream>,
    buf: &mut [u8],
    stopping: &AtomicBool,
) -> Option<()> {
    let mut filled = 0;
    while filled < buf.len() {
        if stopping.load(Ordering::SeqCst) {
            return None;
        }
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(e) if is_timeout(&e) => continue,
            Err(_) => return None,
        }
    }
    Some(())
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
