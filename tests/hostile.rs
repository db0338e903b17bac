//! Hostile clients against the real server over loopback sockets: oversized and malformed
//! heads, lying lengths, the request-smuggling shape, stalled heads and bodies, too many
//! connections, a full descriptor table, and slow readers of large media. After each attack
//! the process is alive and a normal `/status` and Converse turn are answered within 2 s.

mod common;

use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const ASK_NAME: &str = "May I know your name please?";

/// Written before the first start, so the server runs with short, testable timeouts and a small
/// connection cap (the defaults are in the README; these only change the numbers).
fn data_with_limits(tag: &str, http: serde_json::Value) -> TempDir {
    let data = data_copy(tag);
    write(
        data.path(),
        "global/botpress.config.json",
        &json!({ "httpServer": http }).to_string(),
    );
    data
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Everything the server sends until it closes (or 10 s pass).
fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    raw
}

/// How many HTTP answers a byte stream holds.
fn answers_in(raw: &[u8]) -> usize {
    String::from_utf8_lossy(raw).matches("HTTP/1.1 ").count()
}

/// `/status` and a first Converse turn, each answered within 2 s on a fresh connection.
fn assert_healthy(server: &mut Server, user: &str) {
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "botd exited: {}",
        server.log()
    );
    for (method, path, body) in [
        ("GET", "/status".to_string(), String::new()),
        (
            "POST",
            format!("/api/v1/bots/welcome-bot/converse/{user}"),
            json!({"type": "text", "text": "hi"}).to_string(),
        ),
    ] {
        let mut s = connect(server.port);
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        let raw = read_all(&mut s);
        assert!(
            !raw.is_empty(),
            "{method} {path}: no answer within 2 s: {}",
            server.log()
        );
        let answer = parse_answer(&raw);
        assert_eq!(answer.status, 200, "{method} {path}: {}", answer.text());
        if method == "POST" {
            assert_eq!(responses(&answer), typed_text(ASK_NAME));
        }
    }
}

/// Peak resident memory of the server process, from /proc.
fn peak_rss_kb(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn declared_lengths_beyond_memory_are_refused_unread() {
    let data = data_copy("hostile-length");
    let mut server = Server::start(data.path(), &[]);
    // 100 GB on a route without a body, and on Converse (limit 100 kb).
    for path in ["/status", "/api/v1/bots/welcome-bot/converse/u1"] {
        let mut s = connect(server.port);
        s.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 107374182400\r\n\r\nabcdef"
            )
            .as_bytes(),
        )
        .unwrap();
        let raw = read_all(&mut s);
        let expected = if path == "/status" { 404 } else { 413 };
        assert_eq!(parse_answer(&raw).status, expected, "{path}");
        assert_eq!(answers_in(&raw), 1);
    }
    // u64::MAX, four times (each used to panic a worker away).
    for _ in 0..4 {
        let mut s = connect(server.port);
        s.write_all(
            b"POST /api/v1/bots/welcome-bot/converse/u2 HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\nabc",
        )
        .unwrap();
        let answer = parse_answer(&read_all(&mut s));
        assert_eq!(answer.status, 400, "{}", answer.text());
        assert_eq!(answer.json()["statusCode"], 400);
    }
    // The declared body over the limit is refused before any of it is sent.
    let mut s = connect(server.port);
    s.write_all(
        b"POST /api/v1/bots/welcome-bot/converse/u3 HTTP/1.1\r\nHost: x\r\nContent-Length: 204800\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let answer = parse_answer(&read_all(&mut s));
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["type"], "entity.too.large");
    assert_healthy(&mut server, "after-length");
    server.stop_gracefully();
}

#[test]
fn oversized_heads_are_answered_and_bounded_in_memory() {
    let data = data_copy("hostile-head");
    let mut server = Server::start(data.path(), &[]);
    let big = "a".repeat(16 << 20);
    let many: String = (0..200_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: [(String, u16); 3] = [
        (format!("GET /status HTTP/1.1\r\nX-Big: {big}\r\n\r\n"), 431),
        (format!("GET /status HTTP/1.1\r\n{many}\r\n"), 431),
        (format!("GET /{} HTTP/1.1\r\n\r\n", &big[..8 << 20]), 414),
    ];
    for (raw, status) in &cases {
        let mut s = connect(server.port);
        // The server answers and closes long before the whole head is sent.
        let _ = s.write_all(raw.as_bytes());
        let answer = parse_answer(&read_all(&mut s));
        assert_eq!(answer.status, *status, "{}", answer.text());
        assert_eq!(answer.json()["statusCode"], *status);
    }
    // Eight clients sending 40 MB heads at once: each is cut off at the head limit, so the
    // server's memory stays far below the unit's MemoryMax=256M.
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let port = server.port;
            std::thread::spawn(move || {
                let mut s = connect(port);
                let _ = s.write_all(b"GET /status HTTP/1.1\r\nX-Big: ");
                let chunk = vec![b'a'; 1 << 20];
                for _ in 0..40 {
                    if s.write_all(&chunk).is_err() {
                        break;
                    }
                }
                parse_answer(&read_all(&mut s)).status
            })
        })
        .collect();
    for t in senders {
        assert_eq!(t.join().unwrap(), 431);
    }
    let peak = peak_rss_kb(&server);
    assert!(peak < 64 * 1024, "peak RSS {peak} kB");
    assert_healthy(&mut server, "after-heads");
    server.stop_gracefully();
}

#[test]
fn stalled_heads_and_bodies_time_out_without_holding_workers() {
    let data = data_with_limits(
        "hostile-stall",
        json!({"headTimeout": "1s", "bodyTimeout": "1s", "keepAliveTimeout": "1s", "workers": 2}),
    );
    let mut server = Server::start(data.path(), &[]);
    // Six half-sent heads and six bodies that stall, more than there are workers.
    let mut stalled: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut s = connect(server.port);
            s.write_all(b"GET /status HTTP/1.1\r\nHost:").unwrap();
            s
        })
        .collect();
    stalled.extend((0..6).map(|i| {
        let mut s = connect(server.port);
        s.write_all(
            format!("POST /api/v1/bots/welcome-bot/converse/s{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"type\":")
                .as_bytes(),
        )
        .unwrap();
        s
    }));
    // Meanwhile everyone else is answered.
    assert_healthy(&mut server, "during-stall");
    // Then each stalled request is answered 408 and closed.
    for s in &mut stalled {
        let raw = read_all(s);
        assert_eq!(parse_answer(&raw).status, 408);
        assert_eq!(answers_in(&raw), 1);
    }
    // An idle keep-alive connection is closed after the keep-alive timeout.
    let mut s = connect(server.port);
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let raw = read_all(&mut s);
    assert_eq!(answers_in(&raw), 1, "closed after one answer");
    assert_eq!(
        parse_answer(&raw).header("Connection").as_deref(),
        Some("keep-alive")
    );
    // SIGTERM is prompt even while clients stall.
    let _stalling: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut s = connect(server.port);
            s.write_all(
                b"POST /api/v1/bots/welcome-bot/converse/z HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{",
            )
            .unwrap();
            s
        })
        .collect();
    server.stop_gracefully();
}

#[test]
fn both_lengths_and_bad_framing_close_the_connection() {
    let data = data_copy("hostile-smuggle");
    let mut server = Server::start(data.path(), &[]);
    let body = json!({"type": "text", "text": "hi"}).to_string();
    let smuggled = "GET /status HTTP/1.1\r\nHost: x\r\n\r\n";
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n{smuggled}", body.len());
    let cases = [
        format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked",
            chunked.len()
        ),
        format!(
            "Transfer-Encoding: chunked\r\nContent-Length: {}",
            chunked.len()
        ),
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity".to_string(),
        format!("Content-Length: {}\r\nContent-Length: 3", chunked.len()),
        "Content-Length: 12abc".to_string(),
    ];
    for headers in cases {
        let mut s = connect(server.port);
        s.write_all(
            format!("POST /api/v1/bots/welcome-bot/converse/sm HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n{chunked}")
                .as_bytes(),
        )
        .unwrap();
        let raw = read_all(&mut s);
        let answer = parse_answer(&raw);
        assert!(
            [400, 501].contains(&answer.status),
            "{headers}: {}",
            answer.text()
        );
        assert_eq!(
            answers_in(&raw),
            1,
            "{headers}: the smuggled request was served"
        );
    }
    // A proper chunked request still works, and a pipelined one after it is served in turn.
    let mut s = connect(server.port);
    s.write_all(
        format!("POST /api/v1/bots/welcome-bot/converse/ch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\nGET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", body.len())
            .as_bytes(),
    )
    .unwrap();
    let raw = read_all(&mut s);
    assert_eq!(answers_in(&raw), 2);
    assert_eq!(parse_answer(&raw).status, 200);
    assert!(String::from_utf8_lossy(&raw).contains(ASK_NAME));
    assert!(String::from_utf8_lossy(&raw).contains("\"status\":\"ok\""));
    assert_healthy(&mut server, "after-smuggle");
    server.stop_gracefully();
}

#[test]
fn connections_over_the_cap_get_503_and_the_server_goes_on() {
    let data = data_with_limits("hostile-cap", json!({"maxConnections": 8}));
    let mut server = Server::start(data.path(), &[]);
    let held = hold_places(server.port, 8);
    // The acceptor counts them once it has taken them; give it a moment, boundedly.
    let mut refused = None;
    for _ in 0..50 {
        let mut s = connect(server.port);
        let _ = s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
        let raw = read_all(&mut s);
        if !raw.is_empty() && parse_answer(&raw).status == 503 {
            refused = Some(parse_answer(&raw));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = refused.expect("a connection over the cap is answered 503");
    assert_eq!(refused.json()["statusCode"], 503);
    assert_eq!(refused.header("Retry-After").as_deref(), Some("1"));
    drop(held);
    let healthy = wait_until(Duration::from_secs(5), || {
        request(server.port, "GET", "/status", &[], b"").status == 200
    });
    assert!(healthy, "the server answers again once connections close");
    assert_healthy(&mut server, "after-cap");
    server.stop_gracefully();
}

/// With the descriptor table full, accept() fails (EMFILE); botd logs it, keeps accepting,
/// and answers again once descriptors are free.
#[test]
fn a_full_descriptor_table_does_not_stop_accepting() {
    let data = data_copy("hostile-emfile");
    let mut server = Server::start_with_open_files(data.path(), 64);
    let held: Vec<TcpStream> = (0..120)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", server.port)).ok()?;
            let _ = s.write_all(b"GET /status HTTP/1.1\r\nHost:");
            Some(s)
        })
        .collect();
    assert!(held.len() > 64);
    assert!(
        wait_until(Duration::from_secs(10), || server
            .log()
            .contains("accepting connections failed")),
        "{}",
        server.log()
    );
    drop(held);
    let healthy = wait_until(Duration::from_secs(10), || {
        let mut s = connect(server.port);
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let raw = read_all(&mut s);
        !raw.is_empty() && parse_answer(&raw).status == 200
    });
    assert!(healthy, "botd accepts again: {}", server.log());
    assert_healthy(&mut server, "after-emfile");
    server.stop_gracefully();
}

#[test]
fn media_is_streamed_to_slow_readers() {
    let data = data_copy("hostile-media");
    let media = data.path().join("bots/welcome-bot/media");
    std::fs::create_dir_all(&media).unwrap();
    let size: usize = 48 << 20;
    let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    std::fs::write(media.join("big.bin"), &content).unwrap();
    let mut server = Server::start(data.path(), &[]);
    // Four readers that take the answer slowly: the file is never held in memory per request.
    let mut readers: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(server.port);
            s.write_all(b"GET /api/v1/bots/welcome-bot/media/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    let firsts: Vec<Vec<u8>> = readers
        .iter_mut()
        .map(|r| {
            let mut first = vec![0u8; 4096];
            r.read_exact(&mut first).unwrap();
            first
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_healthy(&mut server, "during-media");
    // Read whole, four answers would need four times the file; streamed, the process stays
    // below twice its size even under qemu-user (make test-arm), which adds its own memory.
    let peak = peak_rss_kb(&server);
    assert!(
        peak < 2 * (size as u64 / 1024),
        "peak RSS {peak} kB for a {size}-byte file"
    );
    // The whole file arrives, with its length.
    let mut raw = firsts[0].clone();
    raw.extend(read_all(&mut readers[0]));
    let answer = parse_answer(&raw);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("Content-Length"), Some(size.to_string()));
    assert_eq!(
        answer.body.len(),
        content.len(),
        "the streamed body is the file"
    );
    assert!(answer.body == content, "the streamed body is the file");
    server.stop_gracefully();
}

/// An unsigned Messenger call is refused from its head: the declared megabyte is never waited
/// for.
#[test]
fn unsigned_webhook_calls_are_refused_before_the_body() {
    let data = data_copy("hostile-webhook");
    write(
        data.path(),
        "global/config/channel-messenger.json",
        &json!({"appSecret": "s3cret", "verifyToken": "v", "graphApiBase": "http://127.0.0.1:9"})
            .to_string(),
    );
    write(
        data.path(),
        "bots/welcome-bot/config/channel-messenger.json",
        &json!({"enabled": true, "accessToken": "T"}).to_string(),
    );
    let mut server = Server::start(data.path(), &[]);
    let mut s = connect(server.port);
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"POST /api/v1/bots/welcome-bot/mod/channel-messenger/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{")
        .unwrap();
    let raw = read_all(&mut s);
    assert!(!raw.is_empty(), "answered within 2 s, without the body");
    assert_eq!(parse_answer(&raw).status, 403);
    assert_healthy(&mut server, "after-webhook");
    server.stop_gracefully();
}

/// Chunked framing cannot grow memory: trailer fields and chunk extensions count.
#[test]
fn chunk_trailers_and_extensions_are_bounded() {
    let data = data_copy("hostile-trailers");
    let mut server = Server::start(data.path(), &[]);
    let line = format!("X-T: {}\r\n", "a".repeat(8000));
    let mut s = connect(server.port);
    s.write_all(b"POST /api/v1/bots/welcome-bot/converse/t1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
        .unwrap();
    // The server refuses after a few of these; what it no longer reads may fail to send.
    for _ in 0..4000 {
        if s.write_all(line.as_bytes()).is_err() {
            break;
        }
    }
    assert_eq!(parse_answer(&read_all(&mut s)).status, 400);
    // A kilobyte of extension on every one-byte chunk.
    let mut s = connect(server.port);
    s.write_all(b"POST /api/v1/bots/welcome-bot/converse/t2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = format!("1;{}\r\n \r\n", "e".repeat(1015));
    for _ in 0..20_000 {
        if s.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    assert_eq!(parse_answer(&read_all(&mut s)).status, 413);
    let peak = peak_rss_kb(&server);
    assert!(peak < 64 * 1024, "peak RSS {peak} kB");
    assert_healthy(&mut server, "after-trailers");
    server.stop_gracefully();
}

/// A refusal reaches a client that sent its whole request at once: the server does not reset
/// the connection over the bytes it did not read.
#[test]
fn refusals_reach_clients_that_sent_everything_at_once() {
    let data = data_with_limits("hostile-linger", json!({"maxConnections": 4}));
    let mut server = Server::start(data.path(), &[]);
    let mut request = b"POST /api/v1/bots/welcome-bot/converse/l1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'a', 1_000_000));
    for round in 0..10 {
        let mut s = connect(server.port);
        let writer = {
            let mut s = s.try_clone().unwrap();
            let request = request.clone();
            std::thread::spawn(move || {
                let _ = s.write_all(&request);
            })
        };
        let raw = read_all(&mut s);
        assert!(!raw.is_empty(), "round {round}: the 413 was lost");
        assert_eq!(parse_answer(&raw).status, 413);
        writer.join().unwrap();
    }
    // Over the connection cap, a request sent right after connecting still gets its 503.
    assert!(wait_until(Duration::from_secs(10), || request_status(
        server.port
    ) == Some(200)));
    let held = hold_places(server.port, 4);
    let mut seen = Vec::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            seen.push(request_status(server.port));
            seen.last() == Some(&Some(503))
        }),
        "{seen:?} {}",
        server.log()
    );
    for round in 0..10 {
        let mut s = connect(server.port);
        let _ = s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
        let raw = read_all(&mut s);
        assert!(!raw.is_empty(), "round {round}: the 503 was lost");
        let answer = parse_answer(&raw);
        assert_eq!(answer.status, 503, "round {round}: {}", answer.text());
        assert_eq!(
            answer.header("Content-Length"),
            Some(answer.body.len().to_string())
        );
    }
    drop(held);
    assert!(wait_until(Duration::from_secs(5), || request_status(
        server.port
    ) == Some(200)));
    assert_healthy(&mut server, "after-linger");
    server.stop_gracefully();
}

/// `n` connections busy sending a body (slowly), which keep their places for the body timeout.
/// A connection the server refused (a place still taken by one that was closing) is replaced.
fn hold_places(port: u16, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for i in 0..n * 10 {
        if held.len() == n {
            break;
        }
        let mut s = connect(port);
        s.write_all(
            format!("POST /api/v1/bots/welcome-bot/converse/hold{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{")
                .as_bytes(),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut byte = [0u8; 1];
        // Refused at once, or still waiting for its body: only the second holds a place.
        if s.read(&mut byte).is_err() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            held.push(s);
        }
    }
    assert_eq!(held.len(), n, "could not take {n} places");
    held
}

fn request_status(port: u16) -> Option<u16> {
    let mut s = connect(port);
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let raw = read_all(&mut s);
    (!raw.is_empty()).then(|| parse_answer(&raw).status)
}

/// Silent connections that fill most of the places are closed quickly, so they cannot keep
/// everyone else out for the whole keep-alive timeout.
#[test]
fn silent_connections_are_reclaimed_when_places_run_out() {
    let data = data_with_limits("hostile-crowd", json!({"maxConnections": 8}));
    let mut server = Server::start(data.path(), &[]);
    let silent: Vec<TcpStream> = (0..8).map(|_| connect(server.port)).collect();
    // The keep-alive timeout is 60 s; the crowded one is 2 s.
    assert!(
        wait_until(Duration::from_secs(10), || request_status(server.port)
            == Some(200)),
        "a new client got in"
    );
    drop(silent);
    assert_healthy(&mut server, "after-crowd");
    server.stop_gracefully();
}

#[test]
fn protocol_corners() {
    let data = data_copy("hostile-corners");
    let mut server = Server::start(data.path(), &[]);
    let exchange = |raw: &[u8]| {
        let mut s = connect(server.port);
        s.write_all(raw).unwrap();
        read_all(&mut s)
    };
    // A refused HEAD has no body.
    let raw = exchange(b"HEAD /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n");
    let answer = parse_answer(&raw);
    assert_eq!(answer.status, 501);
    assert!(answer.body.is_empty(), "{}", answer.text());
    // HTTP/1.0 with Transfer-Encoding: answered, then closed (faulty framing).
    let raw = exchange(b"GET /status HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /status HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(answers_in(&raw), 1);
    // Blank lines first do not get a long request line past its limit.
    let mut padded = b"\r\n".repeat(12);
    padded.extend_from_slice(
        format!(
            "GET /status?{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(30_000)
        )
        .as_bytes(),
    );
    assert_eq!(parse_answer(&exchange(&padded)).status, 400);
    // No Host in HTTP/1.1: 400; absolute-form targets are served.
    assert_eq!(
        parse_answer(&exchange(b"GET /status HTTP/1.1\r\n\r\n")).status,
        400
    );
    let raw = exchange(b"GET http://bot.example.com/status HTTP/1.1\r\nHost: bot.example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(parse_answer(&raw).json()["status"], "ok");
    // The CORS preflight: 204 without a length.
    let raw = exchange(b"OPTIONS /api/v1/bots/welcome-bot/converse/u HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let answer = parse_answer(&raw);
    assert_eq!(answer.status, 204);
    assert_eq!(answer.header("Content-Length"), None);
    assert_healthy(&mut server, "after-corners");
    server.stop_gracefully();
}
