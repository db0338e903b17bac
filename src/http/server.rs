//! The tiny_http server and its fixed pool of worker threads. tiny_http accepts connections on
//! its own threads; our workers take complete requests from it, so no more than `workers`
//! handlers ever run at once.

use super::router::{self, AppState};
use super::Reply;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// A running server; `stop` lets requests in flight finish.
pub struct Running {
    server: Arc<tiny_http::Server>,
    workers: Vec<JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
    pub addr: SocketAddr,
}

/// Binds `host:port` (`localhost` means 127.0.0.1; port 0 picks a free one) and starts
/// `workers` threads answering requests.
pub fn serve(
    state: Arc<AppState>,
    host: &str,
    port: u16,
    workers: usize,
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
    let server =
        tiny_http::Server::http(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or("the server is not listening on an IP address")?;
    let server = Arc::new(server);
    let stopping = Arc::new(AtomicBool::new(false));
    let workers = (0..workers.max(1))
        .map(|i| {
            let (server, state, stopping) = (server.clone(), state.clone(), stopping.clone());
            std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || work(&server, &state, &stopping))
                .map_err(|e| format!("cannot start a worker thread: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Running {
        server,
        workers,
        stopping,
        addr,
    })
}

fn work(server: &tiny_http::Server, state: &AppState, stopping: &AtomicBool) {
    while !stopping.load(Ordering::SeqCst) {
        let mut request = match server.recv() {
            Ok(r) => r,
            Err(_) => break,
        };
        let started = Instant::now();
        // A bug in a handler answers 500 instead of taking a worker out of the fixed pool.
        let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            router::route(state, &mut request)
        }))
        .unwrap_or_else(|_| Reply::error(500, "InternalError", "Unexpected error"));
        respond(request, reply, started);
    }
}

fn respond(request: tiny_http::Request, reply: Reply, started: Instant) {
    let mut response = tiny_http::Response::from_data(reply.body).with_status_code(reply.status);
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let mut headers = vec![
        ("Content-Type".to_string(), reply.content_type),
        ("X-Response-Time".to_string(), format!("{elapsed:.3}ms")),
        ("Access-Control-Allow-Origin".to_string(), "*".to_string()),
    ];
    headers.extend(reply.headers);
    for (name, value) in headers {
        if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(h);
        }
    }
    if let Err(e) = request.respond(response) {
        log::debug!("client went away before the answer was sent: {e}");
    }
}

impl Running {
    /// Stops taking requests, lets the workers finish what they are doing, and returns when
    /// they have.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            self.server.unblock();
        }
        for w in self.workers {
            let _ = w.join();
        }
    }
}
