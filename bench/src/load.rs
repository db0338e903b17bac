//! The load generator: keep-alive HTTP/1.1 clients, and a closed loop of N users where each
//! sends its next request when the previous answer has arrived. Every loop ends at a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One keep-alive connection to 127.0.0.1:port; reconnects after an error.
pub struct Client {
    port: u16,
    conn: Option<BufReader<TcpStream>>,
}

/// An HTTP answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Client {
    pub fn new(port: u16) -> Client {
        Client { port, conn: None }
    }

    pub fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, String> {
        self.request("POST", path, headers, body)
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, String> {
        let result = self.try_request(method, path, headers, body);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, String> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(("127.0.0.1", self.port))
                .map_err(|e| format!("connect: {e}"))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(15)))
                .map_err(|e| e.to_string())?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut().ok_or("no connection")?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        conn.get_mut()
            .write_all(&out)
            .map_err(|e| format!("send: {e}"))?;

        let mut line = String::new();
        conn.read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            conn.read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.to_ascii_lowercase().contains("chunked");
                } else if k.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close");
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line)
                    .map_err(|e| format!("read: {e}"))?;
                let size = usize::from_str_radix(line.trim(), 16).map_err(|_| "bad chunk size")?;
                if size == 0 {
                    line.clear();
                    conn.read_line(&mut line)
                        .map_err(|e| format!("read: {e}"))?;
                    break;
                }
                let start = body.len();
                body.resize(start + size + 2, 0);
                conn.read_exact(&mut body[start..])
                    .map_err(|e| format!("read: {e}"))?;
                body.truncate(start + size);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            conn.read_exact(&mut body)
                .map_err(|e| format!("read: {e}"))?;
        } else {
            conn.read_to_end(&mut body)
                .map_err(|e| format!("read: {e}"))?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok(Answer { status, body })
    }
}

/// Collects the latencies of one user's requests that started after the warm-up and ended
/// before the deadline.
pub struct Recorder {
    from: Instant,
    until: Instant,
    pub latencies_us: Vec<u32>,
}

impl Recorder {
    /// Times `f`; the sample counts when it lies inside the measured window.
    pub fn timed<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.sample(start, Instant::now());
        out
    }

    /// Records a latency measured elsewhere (e.g. webhook post → reply seen by the fake API).
    pub fn sample(&mut self, start: Instant, end: Instant) {
        if start >= self.from && end <= self.until {
            self.latencies_us
                .push(end.duration_since(start).as_micros().min(u32::MAX as u128) as u32);
        }
    }

    pub fn past_deadline(&self) -> bool {
        Instant::now() >= self.until
    }
}

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub users: usize,
    pub samples: usize,
    pub errors: u64,
    pub first_error: Option<String>,
    pub per_second: f64,
    pub p50_us: u32,
    pub p99_us: u32,
    pub max_us: u32,
}

impl LoadResult {
    pub fn p50_ms(&self) -> f64 {
        self.p50_us as f64 / 1000.0
    }
    pub fn p99_ms(&self) -> f64 {
        self.p99_us as f64 / 1000.0
    }
}

/// Runs `users` closed-loop users for `warmup + measure`. `make(i)` builds user `i`'s step,
/// which plays one scenario (e.g. one conversation) timing what it wants through the
/// [`Recorder`]; an `Err` counts as an error and the user goes on.
pub fn closed_loop<S>(
    users: usize,
    warmup: Duration,
    measure: Duration,
    make: impl Fn(usize) -> S + Sync,
) -> LoadResult
where
    S: FnMut(&mut Recorder) -> Result<(), String>,
{
    let start = Instant::now();
    let from = start + warmup;
    let until = from + measure;
    let outcomes: Vec<(Vec<u32>, u64, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..users)
            .map(|i| {
                let make = &make;
                s.spawn(move || {
                    let mut step = make(i);
                    let mut rec = Recorder {
                        from,
                        until,
                        latencies_us: Vec::new(),
                    };
                    let (mut errors, mut first_error) = (0u64, None);
                    while !rec.past_deadline() {
                        if let Err(e) = step(&mut rec) {
                            if Instant::now() >= from && Instant::now() < until {
                                errors += 1;
                            }
                            first_error.get_or_insert(e);
                            // Never spin on a dead server.
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                    (rec.latencies_us, errors, first_error)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut all = Vec::new();
    let mut result = LoadResult {
        users,
        ..Default::default()
    };
    for (lat, errors, first) in outcomes {
        all.extend(lat);
        result.errors += errors;
        if result.first_error.is_none() {
            result.first_error = first;
        }
    }
    all.sort_unstable();
    result.samples = all.len();
    result.per_second = all.len() as f64 / measure.as_secs_f64();
    result.p50_us = percentile(&all, 50.0);
    result.p99_us = percentile(&all, 99.0);
    result.max_us = all.last().copied().unwrap_or(0);
    result
}

/// The `p`th percentile of sorted samples (nearest rank); 0 when empty.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Recorder {
    /// A recorder that keeps nothing (for seeding).
    pub fn discard() -> Recorder {
        let now = Instant::now();
        Recorder {
            from: now + Duration::from_secs(1 << 30),
            until: now,
            latencies_us: Vec::new(),
        }
    }
}
