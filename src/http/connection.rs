//! One client connection, on its own thread: wait for a request (keep-alive idle timeout), read
//! its head and body under the limits and their deadlines, hand it to the worker pool, write the
//! answer, and keep the connection or close it. Anything that breaks the framing (a refused
//! head, an oversized or late body) is answered and closed, since what follows cannot be
//! trusted to start a new request.

use super::body::{Chunked, ChunkedBody};
use super::head::{self, Framing, Head, Method, Refusal};
use super::server::{Admission, Job, Request, Shared};
use super::{Body, Reply};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Reads wait at most this long, so deadlines and a stop are noticed while a client is silent.
const TICK: Duration = Duration::from_millis(500);
const READ_CHUNK: usize = 16 * 1024;
/// After a refusal: how long, and how much, of what the client still sends is read and dropped.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 << 20;
/// The idle and head timeouts while more than three quarters of the connection places are taken.
const CROWDED_TIMEOUT: Duration = Duration::from_secs(2);
/// A buffer grown past this by one request is given back before the next.
const KEPT_BUFFER: usize = 64 * 1024;

/// Reads and drops what arrives on `stream` until the client closes, `time` passes or `bytes`
/// were dropped (the stream's read timeout bounds each read).
pub(super) fn linger(stream: &mut TcpStream, time: Duration, bytes: usize) {
    let deadline = Instant::now() + time;
    let mut chunk = [0u8; READ_CHUNK];
    let mut dropped = 0;
    while Instant::now() < deadline && dropped < bytes {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => dropped += n,
            Err(e) if waiting(&e) => {}
            Err(_) => return,
        }
    }
}

/// Whether a read or write only ran out of its tick (or was interrupted): try again.
fn waiting(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

pub(super) fn serve(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    // Answers go out in one write; without NODELAY a second small write could wait for the
    // client's delayed ACK.
    let setup = stream
        .set_nodelay(true)
        .and_then(|_| stream.set_read_timeout(Some(TICK)))
        .and_then(|_| stream.set_write_timeout(Some(TICK)));
    if let Err(e) = setup {
        log::debug!("connection from {peer} dropped: {e}");
        return;
    }
    let mut conn = Connection {
        stream,
        buf: Vec::new(),
        shared,
    };
    while let Some(head) = conn.next_head() {
        let started = Instant::now();
        let request = match conn.read_request(head, peer) {
            Next::Handle(request) => request,
            Next::Answered => continue,
            Next::Close => return,
        };
        let keep = request.head.keep_alive() && !shared.stopping.load(Ordering::SeqCst);
        let head_only = request.head.method == Method::Head;
        let origin = request.header("Origin").map(str::to_string);
        let (answer, wait) = std::sync::mpsc::sync_channel(1);
        if shared.jobs.send(Job::Handle(request, answer)).is_err() {
            return;
        }
        let Ok(reply) = wait.recv() else {
            return;
        };
        let written = conn.write(reply, origin.as_deref(), started, keep, head_only);
        if written.is_err() || !keep {
            return;
        }
    }
}

struct Connection<'s> {
    stream: TcpStream,
    /// Bytes read and not yet used: the start of the next request (pipelining) or its body.
    buf: Vec<u8>,
    shared: &'s Shared,
}

/// What to do after a head was read.
enum Next {
    Handle(Request),
    /// Answered from the head alone, and the connection can carry the next request.
    Answered,
    Close,
}

enum ReadEnd {
    /// The client closed, or the connection failed.
    Gone,
    /// The deadline passed.
    Late,
    /// The server is stopping.
    Stopping,
}

impl Connection<'_> {
    /// One read, waiting at most a tick: `Ok(true)` when bytes arrived, `Ok(false)` when
    /// none did yet.
    fn read_once(&mut self) -> Result<bool, ReadEnd> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Err(ReadEnd::Stopping);
        }
        let mut chunk = [0u8; READ_CHUNK];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(ReadEnd::Gone),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if waiting(&e) => Ok(false),
            Err(_) => Err(ReadEnd::Gone),
        }
    }

    /// Reads once more into the buffer, by `deadline`.
    fn read_more(&mut self, deadline: Instant) -> Result<(), ReadEnd> {
        loop {
            if Instant::now() >= deadline {
                return Err(ReadEnd::Late);
            }
            if self.read_once()? {
                return Ok(());
            }
        }
    }

    /// Whether most connection places are taken: idle and half-sent connections then get short
    /// timeouts, so silent sockets cannot keep everyone else out for long.
    fn crowded(&self) -> bool {
        self.shared.open.load(Ordering::Relaxed) * 4 > self.shared.limits.max_connections * 3
    }

    /// Writes all of `bytes`, giving up when the client takes nothing for the write timeout,
    /// or at once on a stop when `stop_ends` (a file being streamed, not a turn's answer).
    fn send(&mut self, mut bytes: &[u8], stop_ends: bool) -> io::Result<()> {
        let stall = self.shared.limits.write_timeout;
        let mut deadline = Instant::now() + stall;
        while !bytes.is_empty() {
            match self.stream.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    bytes = &bytes[n..];
                    deadline = Instant::now() + stall;
                }
                Err(e) if waiting(&e) => {
                    if Instant::now() >= deadline
                        || (stop_ends && self.shared.stopping.load(Ordering::SeqCst))
                    {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Waits for the next request's head. `None` when the connection is to close: the client
    /// left, stayed idle past the keep-alive timeout, the server is stopping, or the head was
    /// refused (and answered).
    fn next_head(&mut self) -> Option<Head> {
        let limits = &self.shared.limits;
        let idle_since = Instant::now();
        let mut head_since = None;
        // Where the search for the end of the head resumes, so a head sent a byte at a time is
        // still scanned once.
        let mut scanned: usize = 0;
        let mut line_seen = false;
        loop {
            if !self.buf.is_empty() {
                let from = scanned.saturating_sub(3);
                let new = &self.buf[from..];
                let ended =
                    new.windows(2).any(|w| w == b"\n\n") || new.windows(3).any(|w| w == b"\n\r\n");
                let first_line = !line_seen && new.contains(&b'\n');
                line_seen |= first_line;
                let too_long = self.buf.len() >= limits.max_head
                    || (!line_seen && self.buf.len() > limits.max_request_line + 8);
                scanned = self.buf.len();
                if ended || first_line || too_long {
                    match head::parse(&self.buf, limits) {
                        Ok(Some((head, n))) => {
                            self.buf.drain(..n);
                            if self.buf.capacity() > KEPT_BUFFER {
                                self.buf.shrink_to(self.buf.len().max(READ_CHUNK));
                            }
                            return Some(head);
                        }
                        Ok(None) => {}
                        Err(refusal) => {
                            self.refuse(&refusal, false);
                            return None;
                        }
                    }
                }
            }
            let crowded = self.crowded();
            let deadline = if self.buf.is_empty() {
                let limit = if crowded {
                    limits.idle_timeout.min(CROWDED_TIMEOUT)
                } else {
                    limits.idle_timeout
                };
                idle_since + limit
            } else {
                let limit = if crowded {
                    limits.head_timeout.min(CROWDED_TIMEOUT)
                } else {
                    limits.head_timeout
                };
                *head_since.get_or_insert_with(Instant::now) + limit
            };
            if Instant::now() >= deadline {
                if !self.buf.is_empty() {
                    self.refuse(&Refusal::new(408, "the request head took too long"), false);
                }
                return None;
            }
            if self.read_once().is_err() {
                return None;
            }
        }
    }

    /// Admits the request and reads its body.
    fn read_request(&mut self, head: Head, peer: SocketAddr) -> Next {
        let head_only = head.method == Method::Head;
        let framing = match head.framing() {
            Ok(f) => f,
            Err(refusal) => {
                self.refuse(&refusal, head_only);
                return Next::Close;
            }
        };
        let has_body = framing != Framing::Length(0);
        let limit = match self.shared.handler.admit(&head) {
            Admission::Body { limit } => limit,
            Admission::Answer(reply) => {
                // The body was not read, so the connection cannot carry another request.
                if has_body || !head.keep_alive() {
                    self.close_with(reply, head.header("Origin"), head_only);
                    return Next::Close;
                }
                return match self.write(
                    reply,
                    head.header("Origin"),
                    Instant::now(),
                    true,
                    head_only,
                ) {
                    Ok(()) => Next::Answered,
                    Err(_) => Next::Close,
                };
            }
        };
        if let Framing::Length(n) = framing {
            if n > limit {
                self.too_large(limit, head_only);
                return Next::Close;
            }
        }
        if has_body && head.expects_continue() && self.buf.is_empty() {
            let _ = self.send(b"HTTP/1.1 100 Continue\r\n\r\n", true);
        }
        let deadline = Instant::now() + self.shared.limits.body_timeout;
        let body = match framing {
            Framing::Length(n) => {
                // `n` is within the route's limit here, so waiting for it is bounded.
                let n = n as usize;
                while self.buf.len() < n {
                    if let Err(end) = self.read_more(deadline) {
                        self.body_ended(end, head_only);
                        return Next::Close;
                    }
                }
                let rest = self.buf.split_off(n);
                std::mem::replace(&mut self.buf, rest)
            }
            Framing::Chunked => {
                let mut decoder = ChunkedBody::default();
                let mut body = Vec::new();
                loop {
                    match decoder.feed(&self.buf, limit, &mut body) {
                        Chunked::Done(n) => {
                            self.buf.drain(..n);
                            if self.buf.capacity() > KEPT_BUFFER {
                                self.buf.shrink_to(self.buf.len().max(READ_CHUNK));
                            }
                            break body;
                        }
                        Chunked::More => {
                            if let Err(end) = self.read_more(deadline) {
                                self.body_ended(end, head_only);
                                return Next::Close;
                            }
                        }
                        Chunked::TooLarge => {
                            self.too_large(limit, head_only);
                            return Next::Close;
                        }
                        Chunked::Malformed(why) => {
                            self.refuse(&Refusal::new(400, why), head_only);
                            return Next::Close;
                        }
                    }
                }
            }
        };
        Next::Handle(Request { head, body, peer })
    }

    fn body_ended(&mut self, end: ReadEnd, head_only: bool) {
        if let ReadEnd::Late = end {
            self.refuse(
                &Refusal::new(408, "the request body took too long"),
                head_only,
            );
        }
    }

    fn too_large(&mut self, limit: u64, head_only: bool) {
        log::debug!("request body over the limit of {limit} bytes: refused unread");
        self.close_with(
            super::body_parser_error(413, "entity.too.large"),
            None,
            head_only,
        );
    }

    fn refuse(&mut self, refusal: &Refusal, head_only: bool) {
        log::debug!("request refused ({}): {}", refusal.status, refusal.why);
        let kind = match refusal.status {
            408 => "RequestTimeout",
            414 => "URITooLong",
            431 => "RequestHeaderFieldsTooLarge",
            501 => "NotImplemented",
            _ => "BadRequestError",
        };
        self.close_with(
            Reply::error(refusal.status, kind, &refusal.why),
            None,
            head_only,
        );
    }

    /// Answers and closes a connection whose input is not all read. Closing at once would
    /// make the kernel reset the connection over the unread bytes, and a reset can destroy the
    /// answer before the client reads it; so the write side is shut first and what the client
    /// still sends is read and dropped, for a bounded time and amount.
    fn close_with(&mut self, reply: Reply, origin: Option<&str>, head_only: bool) {
        if self
            .write(reply, origin, Instant::now(), false, head_only)
            .is_err()
        {
            return;
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        linger(&mut self.stream, LINGER_TIME, LINGER_BYTES);
    }

    /// Writes one answer, with the CORS headers the handler gives for the request's `Origin`.
    /// Small bodies go out with the head in one write; files are streamed.
    fn write(
        &mut self,
        mut reply: Reply,
        origin: Option<&str>,
        started: Instant,
        keep: bool,
        head_only: bool,
    ) -> io::Result<()> {
        let len = match &reply.body {
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        };
        let mut out = Vec::with_capacity(
            256 + if head_only {
                0
            } else {
                len.min(65536) as usize
            },
        );
        reply.headers.extend(self.shared.handler.cors(origin));
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nDate: {}\r\n",
            reply.status,
            reason(reply.status),
            http_date(crate::engine::event::now_ms()),
        );
        // A 204 or 304 has no content, and says nothing of its length (RFC 9110 §8.6).
        if !matches!(reply.status, 204 | 304) {
            let _ = write!(
                out,
                "Content-Type: {}\r\nContent-Length: {len}\r\n",
                reply.content_type
            );
        }
        let _ = write!(out, "X-Response-Time: {elapsed:.3}ms\r\n");
        for (name, value) in &reply.headers {
            // A header that could split the answer is dropped, never sent.
            if name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                && !value.bytes().any(|b| b == b'\r' || b == b'\n')
            {
                let _ = write!(out, "{name}: {value}\r\n");
            }
        }
        out.extend_from_slice(if keep {
            b"Connection: keep-alive\r\n\r\n"
        } else {
            b"Connection: close\r\n\r\n"
        });
        if head_only {
            return self.send(&out, false);
        }
        match reply.body {
            Body::Bytes(bytes) => {
                out.extend_from_slice(&bytes);
                self.send(&out, false)
            }
            Body::File { file, len } => {
                self.send(&out, false)?;
                let mut file = file.take(len);
                let mut chunk = vec![0u8; 64 * 1024];
                let mut sent = 0;
                while sent < len {
                    let n = file.read(&mut chunk)?;
                    if n == 0 {
                        // The file shrank under us: the length already sent cannot be honoured.
                        return Err(io::Error::other("file shorter than announced"));
                    }
                    self.send(&chunk[..n], true)?;
                    sent += n as u64;
                }
                Ok(())
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// `Tue, 01 Dec 2026 21:05:21 GMT` (RFC 9110 §5.6.7).
fn http_date(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = crate::engine::event::civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1).clamp(0, 11) as usize];
    format!(
        "{weekday}, {d:02} {month} {y} {:02}:{:02}:{:02} GMT",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(1_796_159_121_000),
            "Tue, 01 Dec 2026 21:05:21 GMT"
        );
    }
}
