//! Converse throttled and restricted, and the live reload, against the real binary on
//! loopback: per-user and per-client limits answering `429` with a `Retry-After` a client can
//! trust, `X-Forwarded-For` believed only from a trusted proxy, API keys on the public route,
//! allowed origins, and SIGHUP with a valid and a broken configuration while conversations go
//! on.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "access-test-secret-0123456789abcdefghij";
const BOT: &str = "welcome-bot";

/// Writes `botpress.config.json` with a fixed secret and `extra` merged in at the top level.
fn global(data: &Path, extra: Value) {
    let mut config = json!({"appSecret": SECRET});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    write(data, "global/botpress.config.json", &config.to_string());
}

fn say(port: u16, user: &str, headers: &[(&str, &str)]) -> Answer {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(
        port,
        "POST",
        &format!("/api/v1/bots/{BOT}/converse/{user}"),
        &all,
        br#"{"type":"text","text":"hi"}"#,
    )
}

/// The error envelope of a refusal, checked field by field.
fn assert_refused(a: &Answer, status: u16, code: &str, kind: &str) {
    assert_eq!(a.status, status, "{}", a.text());
    let body = a.json();
    assert_eq!(body["statusCode"], json!(status));
    assert_eq!(body["errorCode"], json!(code));
    assert_eq!(body["type"], json!(kind));
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

/// Sends until the first 429 (at most `tries`); returns the successes before it and the 429.
fn until_refused(mut send: impl FnMut(usize) -> Answer, tries: usize) -> (usize, Option<Answer>) {
    for i in 0..tries {
        let a = send(i);
        if a.status == 429 {
            return (i, Some(a));
        }
        assert_eq!(a.status, 200, "{}", a.text());
    }
    (tries, None)
}

fn retry_after(a: &Answer) -> u64 {
    a.header("Retry-After")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no whole-second Retry-After: {:?}", a.headers))
}

#[test]
fn per_user_limit_answers_429_then_lets_the_user_back_after_retry_after() {
    let data = data_copy("access-user");
    global(
        data.path(),
        json!({"converse": {"rateLimit": {"perUser": {"burst": 2, "every": "3s"}}}}),
    );
    let server = Server::start(data.path(), &[]);
    let (ok, refused) = until_refused(|_| say(server.port, "alice", &[]), 6);
    let refused = refused.expect("the per-user limit never answered 429");
    assert!((1..=2).contains(&ok), "{ok} answers before the limit");
    assert_refused(&refused, 429, "BP_0429", "TooManyRequests");
    let wait = retry_after(&refused);
    assert!((1..=3).contains(&wait), "Retry-After {wait}");
    // Another user of the same client is not held back by alice's bucket.
    assert_eq!(say(server.port, "bob", &[]).status, 200);
    // Waiting exactly what Retry-After said is enough.
    std::thread::sleep(Duration::from_secs(wait));
    let back = say(server.port, "alice", &[]);
    assert_eq!(back.status, 200, "{}", back.text());
    assert!(!texts(&back.json()).is_empty());
}

#[test]
fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let limit = json!({"converse": {"rateLimit": {"perClient": {"burst": 3, "every": "20s"}}}});
    // Behind a trusted proxy (the test client is 127.0.0.1): the client is the XFF address.
    let data = data_copy("access-xff");
    let mut config = limit.clone();
    config["httpServer"] = json!({"trustedProxies": ["127.0.0.1"]});
    global(data.path(), config);
    let server = Server::start(data.path(), &[]);
    let from = |ip: &str, user: usize| {
        // The client's own claim on the left is ignored: the proxy appended the real address.
        let xff = format!("198.51.100.77, {ip}");
        say(
            server.port,
            &format!("u{user}"),
            &[("X-Forwarded-For", &xff)],
        )
    };
    let (ok, refused) = until_refused(|i| from("203.0.113.1", i), 8);
    assert_eq!(ok, 3, "one client's burst");
    assert_refused(&refused.unwrap(), 429, "BP_0429", "TooManyRequests");
    assert_eq!(
        from("203.0.113.2", 100).status,
        200,
        "another client has its own bucket"
    );

    // Not behind a trusted proxy: XFF is the client's word and changes nothing.
    let data = data_copy("access-noxff");
    global(data.path(), limit);
    let server = Server::start(data.path(), &[]);
    let (ok, refused) = until_refused(
        |i| {
            let xff = format!("203.0.113.{}", 10 + i);
            say(server.port, &format!("u{i}"), &[("X-Forwarded-For", &xff)])
        },
        8,
    );
    assert_eq!(ok, 3, "every request counted against the peer");
    assert!(refused.is_some());
}

#[test]
fn api_keys_guard_the_public_route_only() {
    let data = data_copy("access-keys");
    global(
        data.path(),
        json!({"converse": {"apiKeys": ["global-key-0123456789"]}}),
    );
    let bot_file = data.path().join("bots").join(BOT).join("bot.config.json");
    let mut bot: Value =
        serde_json::from_str(&std::fs::read_to_string(&bot_file).unwrap()).unwrap();
    bot["converse"] = json!({"apiKeys": ["bot-own-key-abcdefghij"]});
    std::fs::write(&bot_file, bot.to_string()).unwrap();
    let server = Server::start(data.path(), &[]);

    assert_refused(
        &say(server.port, "k1", &[]),
        401,
        "BP_0041",
        "UnauthorizedError",
    );
    let wrong = say(
        server.port,
        "k1",
        &[("X-BP-Api-Key", "global-key-0123456788")],
    );
    assert_refused(&wrong, 403, "BP_0043", "ForbiddenError");
    for key in ["global-key-0123456789", "bot-own-key-abcdefghij"] {
        let a = say(server.port, "k1", &[("X-BP-Api-Key", key)]);
        assert_eq!(a.status, 200, "{key}: {}", a.text());
    }
    // The secured route keeps its JWT and needs no key.
    let token = token(data.path(), &[]);
    let a = secured(server.port, BOT, "k2", &json!({"text": "hi"}), "", &token);
    assert_eq!(a.status, 200, "{}", a.text());
}

#[test]
fn allowed_origins_are_echoed_and_others_get_no_cors() {
    let data = data_copy("access-cors");
    global(
        data.path(),
        json!({"httpServer": {"allowedOrigins": ["https://shop.example"]}}),
    );
    let server = Server::start(data.path(), &[]);
    let allowed = say(server.port, "o1", &[("Origin", "https://shop.example")]);
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.header("Access-Control-Allow-Origin").as_deref(),
        Some("https://shop.example")
    );
    assert_eq!(allowed.header("Vary").as_deref(), Some("Origin"));
    let other = say(server.port, "o2", &[("Origin", "https://evil.example")]);
    assert_eq!(other.header("Access-Control-Allow-Origin"), None);
    assert_eq!(other.header("Vary").as_deref(), Some("Origin"));
    let path = format!("/api/v1/bots/{BOT}/converse/o3");
    let preflight = |origin: &str| {
        request(
            server.port,
            "OPTIONS",
            &path,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
            ],
            b"",
        )
    };
    let ok = preflight("https://shop.example");
    assert_eq!(ok.status, 204);
    assert_eq!(
        ok.header("Access-Control-Allow-Origin").as_deref(),
        Some("https://shop.example")
    );
    assert!(ok
        .header("Access-Control-Allow-Headers")
        .is_some_and(|h| h.contains("X-BP-Api-Key")));
    assert_eq!(
        preflight("https://evil.example").header("Access-Control-Allow-Origin"),
        None
    );

    // Without the setting, any origin, as before.
    let data = data_copy("access-cors-any");
    let server = Server::start(data.path(), &[]);
    let a = say(server.port, "o4", &[("Origin", "https://evil.example")]);
    assert_eq!(
        a.header("Access-Control-Allow-Origin").as_deref(),
        Some("*")
    );
}

fn hangup(server: &Server) {
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// How many times `line` is in the log.
fn logged(server: &Server, line: &str) -> usize {
    server.log().matches(line).count()
}

#[test]
fn sighup_applies_a_valid_configuration_and_keeps_the_running_one_over_a_broken_file() {
    let data = data_copy("access-reload");
    global(data.path(), json!({}));
    let server = Server::start(data.path(), &[]);
    let port = server.port;

    // Conversations go on the whole time, one new user per turn (so no per-user limit
    // applies to them); every one of them must be answered.
    let running = Arc::new(AtomicBool::new(true));
    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let talkers: Vec<_> = (0..2)
        .map(|t| {
            let (running, answered, failed) = (running.clone(), answered.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while running.load(Ordering::SeqCst) && i < 2000 {
                    let a = say(port, &format!("talker{t}-{i}"), &[]);
                    let counter = if a.status == 200 { &answered } else { &failed };
                    counter.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
            })
        })
        .collect();

    // A broken file: refused with file and field, the running configuration stays.
    global(
        data.path(),
        json!({"converse": {"rateLimit": {"perUser": {"burst": 0, "every": "1s"}}}}),
    );
    hangup(&server);
    assert!(
        wait_until(Duration::from_secs(20), || logged(
            &server,
            "the running configuration stays"
        ) == 1),
        "{}",
        server.log()
    );
    let log = server.log();
    assert!(
        log.contains("botpress.config.json: converse.rateLimit.perUser: burst"),
        "{log}"
    );
    for _ in 0..3 {
        assert_eq!(
            say(port, "carol", &[]).status,
            200,
            "no limit may apply yet"
        );
    }

    // A valid file: the limit applies at once, the process is the same.
    global(
        data.path(),
        json!({"converse": {"rateLimit": {"perUser": {"burst": 1, "every": "60s"}}}}),
    );
    hangup(&server);
    assert!(
        wait_until(Duration::from_secs(20), || logged(&server, "reload done")
            == 1),
        "{}",
        server.log()
    );
    assert_eq!(say(port, "dave", &[]).status, 200);
    let refused = say(port, "dave", &[]);
    assert_refused(&refused, 429, "BP_0429", "TooManyRequests");
    assert!(retry_after(&refused) <= 60);

    running.store(false, Ordering::SeqCst);
    for t in talkers {
        t.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "a conversation failed during a reload"
    );
    assert!(answered.load(Ordering::SeqCst) > 0);
}
