//! The ceiling of `make bench`: a bare tiny_http server built like botd's (tiny_http accepting
//! connections, a fixed pool of worker threads taking complete requests) that reads the body
//! and answers one fixed JSON body. Whatever botd does beyond this is the price of being a bot.
//!
//! `bench-ceiling [--workers N] [--seconds S]`: listens on 127.0.0.1 with an ephemeral port,
//! logs `listening on http://ADDR` on stderr, and exits after S seconds (default 600) at most.

use std::io::Read;
use std::time::{Duration, Instant};

/// The same size and shape as botd's answer to the welcome-bot's first turn.
const BODY: &[u8] = br#"{"responses":[{"type":"typing","value":true},{"type":"text","markdown":true,"text":"May I know your name please?"}]}"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    // botd's default: two workers per core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = value("--workers").unwrap_or(2 * cores as u64).max(1) as usize;
    let limit = Duration::from_secs(value("--seconds").unwrap_or(600));
    let server = match tiny_http::Server::http("127.0.0.1:0") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench-ceiling: cannot listen: {e}");
            std::process::exit(1);
        }
    };
    eprintln!(
        "bench-ceiling listening on http://{} ({workers} workers)",
        server.server_addr()
    );
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while started.elapsed() < limit {
                    let mut request = match server.recv_timeout(Duration::from_millis(200)) {
                        Ok(Some(r)) => r,
                        Ok(None) => continue,
                        Err(_) => break,
                    };
                    let mut body = Vec::new();
                    let _ = request.as_reader().take(100 * 1024).read_to_end(&mut body);
                    let mut response = tiny_http::Response::from_data(BODY);
                    if let Ok(h) = tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"application/json; charset=utf-8"[..],
                    ) {
                        response.add_header(h);
                    }
                    let _ = request.respond(response);
                }
            });
        }
    });
}
