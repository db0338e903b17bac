//! What one client may cost botd: sizes of the request head, the time it may take to send a
//! request, how long an idle connection stays open, and how many connections are open at once.
//! Each limit has its standard answer (414, 431, 413, 408, 503); the README lists them.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Request line (method, target, version): above it, 414.
    pub max_request_line: usize,
    /// The whole head, request line and headers: above it, 431.
    pub max_head: usize,
    /// Number of header fields: above it, 431.
    pub max_headers: usize,
    /// From the first byte of a request to the end of its head: past it, 408 and close.
    pub head_timeout: Duration,
    /// For the whole body once the head is in: past it, 408 and close.
    pub body_timeout: Duration,
    /// A keep-alive connection with no request under way is closed after this.
    pub idle_timeout: Duration,
    /// One answer must be taken by the client within this, or the connection is dropped.
    pub write_timeout: Duration,
    /// Open connections; the next one is answered 503 and closed.
    pub max_connections: usize,
    /// On stop, how long requests in flight have to finish before botd exits anyway.
    pub stop_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request_line: 16 * 1024,
            max_head: 32 * 1024,
            max_headers: 100,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_connections: 1024,
            stop_grace: Duration::from_secs(10),
        }
    }
}
