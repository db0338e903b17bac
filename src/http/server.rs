//! The server: one thread accepts connections, one small thread per open connection reads
//! requests under the limits (so a slow or hostile client only ever holds its own thread), and
//! a fixed pool of worker threads runs the handlers on complete requests. At most `workers`
//! handlers run at once, and none of them ever waits on a client.

use super::connection;
use super::head::Head;
use super::limits::Limits;
use super::Reply;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A complete request, as a handler sees it.
#[derive(Debug)]
pub struct Request {
    pub head: Head,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
}

impl Request {
    pub fn method(&self) -> &super::Method {
        &self.head.method
    }

    /// The target as sent: path and query.
    pub fn url(&self) -> &str {
        &self.head.target
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
}

/// How a request is taken, decided from its head before any of its body is read.
pub enum Admission {
    /// Read a body of at most this many bytes (413 above it), then handle the request.
    Body { limit: u64 },
    /// Answer this without reading the body (and close the connection if one was declared).
    Answer(Reply),
}

/// What the server runs requests through.
pub trait Handler: Send + Sync {
    /// Runs on the connection's thread: must be quick and must not block.
    fn admit(&self, head: &Head) -> Admission;
    /// Runs on a worker thread; may block (a dialog turn, a disk write).
    fn handle(&self, request: &Request) -> Reply;
    /// The CORS headers of an answer to a request from `origin` (its `Origin` header); every
    /// answer gets them, refusals included. Quick: runs on the connection's thread.
    fn cors(&self, _origin: Option<&str>) -> Vec<(String, String)> {
        vec![("Access-Control-Allow-Origin".into(), "*".into())]
    }
}

pub(super) enum Job {
    Handle(Request, SyncSender<Reply>),
    Exit,
}

/// What the acceptor, the connections and the workers share.
pub(super) struct Shared {
    pub handler: Arc<dyn Handler>,
    pub limits: Limits,
    pub stopping: AtomicBool,
    /// Open connections, counted by the acceptor and released by each connection's thread.
    pub open: AtomicUsize,
    pub jobs: Sender<Job>,
}

/// A running server; `stop` lets requests in flight finish.
pub struct Running {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    pub addr: SocketAddr,
}

/// Binds `host:port` (`localhost` means 127.0.0.1; port 0 picks a free one) and starts the
/// acceptor and `workers` handler threads.
pub fn serve(
    handler: Arc<dyn Handler>,
    host: &str,
    port: u16,
    workers: usize,
    limits: Limits,
) -> Result<Running, String> {
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host \"{host}\": {e}"))?
        .next()
        .ok_or_else(|| format!("host \"{host}\" has no address"))?;
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let (jobs, queue) = mpsc::channel();
    let shared = Arc::new(Shared {
        handler,
        limits,
        stopping: AtomicBool::new(false),
        open: AtomicUsize::new(0),
        jobs,
    });
    let queue = Arc::new(Mutex::new(queue));
    let workers = (0..workers.max(1))
        .map(|i| {
            let (shared, queue) = (shared.clone(), queue.clone());
            std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || work(&shared, &queue))
                .map_err(|e| format!("cannot start a worker thread: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept(&listener, &shared))
            .map_err(|e| format!("cannot start the accepting thread: {e}"))?;
    }
    Ok(Running {
        shared,
        workers,
        addr,
    })
}

/// The whole answer to a connection over the cap, written without waiting.
fn busy_answer() -> Vec<u8> {
    let reply = Reply::error(503, "ServiceUnavailable", "Too many open connections");
    let body = match reply.body {
        super::Body::Bytes(b) => b,
        super::Body::File { .. } => Vec::new(),
    };
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: {}\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
        reply.content_type,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Connections refused over the cap, kept a moment by one thread so their answer is not lost
/// to a reset: they are read and dropped until the client closes or a second passes.
struct Refused {
    streams: Vec<(TcpStream, Instant)>,
}

/// Refused connections lingering at once; beyond this the oldest is dropped.
const MAX_LINGERING: usize = 256;

impl Refused {
    fn start() -> Option<Sender<TcpStream>> {
        let (tx, rx) = mpsc::channel::<TcpStream>();
        let spawned = std::thread::Builder::new()
            .name("http-refused".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                Refused {
                    streams: Vec::new(),
                }
                .run(&rx)
            });
        spawned.ok().map(|_| tx)
    }

    fn run(mut self, rx: &Receiver<TcpStream>) {
        let mut chunk = [0u8; 4096];
        loop {
            let wait = if self.streams.is_empty() {
                Duration::from_secs(3600)
            } else {
                Duration::from_millis(50)
            };
            match rx.recv_timeout(wait) {
                Ok(stream) => {
                    if self.streams.len() >= MAX_LINGERING {
                        self.streams.remove(0);
                    }
                    self.streams
                        .push((stream, Instant::now() + Duration::from_secs(1)));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            self.streams.retain_mut(|(stream, until)| {
                if now >= *until {
                    return false;
                }
                loop {
                    match stream.read(&mut chunk) {
                        Ok(0) => return false,
                        Ok(_) => continue,
                        Err(e) => return e.kind() == std::io::ErrorKind::WouldBlock,
                    }
                }
            });
        }
    }
}

fn accept(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut errors = ErrorLog::default();
    let busy = busy_answer();
    let refused = Refused::start();
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ECONNABORTED…: the listener is fine, the moment is
                // not. Pause briefly so a full descriptor table does not become a busy loop.
                errors.note(&e);
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let open = shared.open.fetch_add(1, Ordering::SeqCst);
        if open >= shared.limits.max_connections {
            shared.open.fetch_sub(1, Ordering::SeqCst);
            log::debug!("connection refused: {open} open, the cap");
            refuse_busy(stream, &busy, refused.as_ref());
            continue;
        }
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let conn_shared = shared.clone();
        let started = std::thread::Builder::new()
            .name("http-conn".into())
            // Connections only read, parse and write: handlers run on the workers.
            .stack_size(256 * 1024)
            .spawn(move || {
                let _open = OpenGuard(&conn_shared.open);
                connection::serve(stream, peer, &conn_shared);
            });
        if let Err(e) = started {
            shared.open.fetch_sub(1, Ordering::SeqCst);
            log::warn!("cannot start a connection thread: {e}");
        }
    }
}

fn refuse_busy(mut stream: TcpStream, busy: &[u8], refused: Option<&Sender<TcpStream>>) {
    let _ = stream.set_nonblocking(true);
    let _ = stream.write(busy);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    if let Some(refused) = refused {
        let _ = refused.send(stream);
    }
}

/// Releases a connection's place when its thread ends, however it ends.
struct OpenGuard<'a>(&'a AtomicUsize);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accept errors, logged at most once every ten seconds with how many there were.
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl ErrorLog {
    fn note(&mut self, e: &std::io::Error) {
        self.unlogged += 1;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            log::warn!(
                "accepting connections failed ({} time(s) since the last report): {e}; still accepting",
                self.unlogged
            );
            self.last = Some(Instant::now());
            self.unlogged = 0;
        }
    }
}

fn work(shared: &Shared, queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = match queue.lock() {
            Ok(q) => q.recv(),
            Err(_) => return,
        };
        match job {
            Ok(Job::Handle(request, answer)) => {
                // A bug in a handler answers 500 instead of taking a worker out of the pool.
                let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    shared.handler.handle(&request)
                }))
                .unwrap_or_else(|_| Reply::error(500, "InternalError", "Unexpected error"));
                let _ = answer.send(reply);
            }
            Ok(Job::Exit) | Err(_) => return,
        }
    }
}

impl Running {
    /// Stops accepting, closes idle connections, lets requests in flight finish and their
    /// answers go out (for at most the stop grace, whatever clients do), then stops the
    /// workers.
    pub fn stop(self) {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor out of accept().
        let wake = match self.addr {
            SocketAddr::V4(a) if a.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], a.port()))
            }
            SocketAddr::V6(a) if a.ip().is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
            }
            other => other,
        };
        let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(200));
        let deadline = Instant::now() + shared.limits.stop_grace;
        while shared.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in &self.workers {
            let _ = shared.jobs.send(Job::Exit);
        }
        while self.workers.iter().any(|w| !w.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = shared.open.load(Ordering::SeqCst);
        if left > 0 {
            log::warn!("stopped with {left} connection(s) still open past the stop grace");
        }
    }
}
