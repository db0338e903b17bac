//! The ceiling of `make bench`: a bare server on botd's own HTTP layer (the same acceptor,
//! connection threads, limits and fixed pool of workers) that reads the body and answers one
//! fixed JSON body. Whatever botd does beyond this is the price of being a bot.
//!
//! `bench-ceiling [--workers N] [--seconds S]`: listens on 127.0.0.1 with an ephemeral port,
//! logs `listening on http://ADDR` on stderr, and exits after S seconds (default 600) at most.

use botd::http::{self, Admission, Handler, Head, Reply, Request};
use std::sync::Arc;
use std::time::Duration;

/// The same size and shape as botd's answer to the welcome-bot's first turn.
const BODY: &[u8] = br#"{"responses":[{"type":"typing","value":true},{"type":"text","markdown":true,"text":"May I know your name please?"}]}"#;

struct Fixed;

impl Handler for Fixed {
    fn admit(&self, _head: &Head) -> Admission {
        // botd's default body limit.
        Admission::Body { limit: 100 * 1024 }
    }

    fn handle(&self, _request: &Request) -> Reply {
        Reply::bytes(200, "application/json; charset=utf-8", BODY.to_vec())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    // botd's default workers per core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = value("--workers")
        .unwrap_or((botd::config::WORKERS_PER_CORE * cores) as u64)
        .max(1) as usize;
    let limit = Duration::from_secs(value("--seconds").unwrap_or(600));
    let running = match http::serve(
        Arc::new(Fixed),
        "127.0.0.1",
        0,
        workers,
        http::Limits::default(),
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench-ceiling: cannot listen: {e}");
            std::process::exit(1);
        }
    };
    eprintln!(
        "bench-ceiling listening on http://{} ({workers} workers)",
        running.addr
    );
    std::thread::sleep(limit);
    running.stop();
}
