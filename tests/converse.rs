//! Acceptance of the issue "Server, configuration and the Converse API": every error case
//! with its exact status and body, the secured route, concurrency, first start, environment
//! overrides, converse.timeout and the graceful stop.

mod common;

use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const ASK_NAME: &str = "May I know your name please?";
const DOCS: &str = "https://botpress.io/docs";

fn public(bot: &str, user: &str) -> String {
    format!("/api/v1/bots/{bot}/converse/{user}")
}

fn post_raw(port: u16, path: &str, body: &str) -> Answer {
    request(
        port,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// A Joi-style plain-text 400, as Express sends it.
fn assert_plain(a: &Answer, status: u16, body: &str) {
    assert_eq!((a.status, a.text().as_str()), (status, body));
    assert_eq!(
        a.header("Content-Type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert!(a
        .header("X-Response-Time")
        .is_some_and(|v| v.ends_with("ms")));
}

fn envelope(status: u16, code: &str, kind: &str, message: &str) -> Value {
    json!({"statusCode": status, "errorCode": code, "type": kind, "message": message, "docs": DOCS})
}

fn assert_envelope(a: &Answer, expected: Value) {
    assert_eq!(
        a.status as u64,
        expected["statusCode"].as_u64().unwrap(),
        "{}",
        a.text()
    );
    assert_eq!(a.json(), expected);
    assert!(a
        .header("Content-Type")
        .is_some_and(|c| c.starts_with("application/json")));
    assert!(a
        .header("X-Response-Time")
        .is_some_and(|v| v.ends_with("ms")));
}

fn config_with(extra: Value) -> String {
    let mut base = json!({
        "httpServer": {"host": "localhost", "port": 3000, "bodyLimit": "100kb"},
        "dialog": {"janitorInterval": "10s", "timeoutInterval": "2m", "sessionTimeoutInterval": "30m"},
        "converse": {"timeout": "5s", "maxMessageLength": 360, "enableUnsecuredEndpoint": true},
        "appSecret": "test-secret-0123456789-0123456789-abcdef"
    });
    merge(&mut base, extra);
    serde_json::to_string_pretty(&base).unwrap()
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

fn data_with_config(tag: &str, extra: Value) -> TempDir {
    let data = data_copy(tag);
    write(
        data.path(),
        "global/botpress.config.json",
        &config_with(extra),
    );
    data
}

// ---------------------------------------------------------------- request rules (§2.2)

#[test]
fn public_route_validation_errors() {
    let data = data_copy("joi");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let path = public("welcome-bot", "joi-user");
    let required = r#"child "text" fails because ["text" is required]"#;
    assert_plain(&post_raw(p, &path, "{}"), 400, required);
    assert_plain(&post_raw(p, &path, r#"{"type":"text"}"#), 400, required);
    assert_plain(&post_raw(p, &path, ""), 400, required);
    assert_plain(
        &post_raw(p, &path, r#"{"text":""}"#),
        400,
        r#"child "text" fails because ["text" is not allowed to be empty]"#,
    );
    assert_plain(
        &post_raw(p, &path, r#"{"text":5}"#),
        400,
        r#"child "text" fails because ["text" must be a string]"#,
    );
    assert_plain(
        &post_raw(p, &path, r#"{"text":["a"]}"#),
        400,
        r#"child "text" fails because ["text" must be a string]"#,
    );
    assert_plain(
        &post_raw(p, &path, r#"{"type":"quick_reply","text":"Yes"}"#),
        400,
        r#"child "type" fails because ["type" must be one of [text]]"#,
    );
    assert_plain(
        &post_raw(p, &path, r#"{"type":5,"text":"Yes"}"#),
        400,
        r#"child "type" fails because ["type" must be a string]"#,
    );
    assert_plain(
        &post_raw(p, &path, r#"{"text":"Yes","payload":"YES"}"#),
        400,
        r#""payload" is not allowed"#,
    );
    assert_plain(
        &post_raw(p, &path, r#"{"payload":"YES","text":"Yes"}"#),
        400,
        r#""payload" is not allowed"#,
    );
    // Joi checks the schema's keys first: a missing text wins over an unknown key.
    assert_plain(&post_raw(p, &path, r#"{"payload":"YES"}"#), 400, required);
    assert_plain(
        &post_raw(p, &path, r#"{"text":"x","includedContexts":"global"}"#),
        400,
        r#"child "includedContexts" fails because ["includedContexts" must be an array]"#,
    );
    assert_plain(
        &post_raw(p, &path, "[1,2]"),
        400,
        r#""value" must be an object"#,
    );
    // Nothing of that reached the bot: the first real message still asks the name.
    assert_eq!(
        responses(&converse(p, "welcome-bot", "joi-user", "hi")),
        typed_text(ASK_NAME)
    );
    // includedContexts is accepted.
    let a = post_raw(
        p,
        &public("welcome-bot", "ctx-user"),
        r#"{"text":"hi","includedContexts":["global"]}"#,
    );
    assert_eq!(responses(&a), typed_text(ASK_NAME));
}

#[test]
fn include_on_the_public_route() {
    let data = data_copy("include");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let body = json!({"type": "text", "text": "hi"}).to_string();
    let unauth = "Unauthenticated converse API can only return 'responses'";
    for include in [
        "state",
        "nlu",
        "responses,state",
        "responses%2Cnlu",
        "decision",
        "",
        "responses,",
    ] {
        let path = format!("{}?include={include}", public("welcome-bot", "inc-user"));
        let a = post_raw(p, &path, &body);
        if include.is_empty() {
            // `include=` is falsy in Express: no check, responses only.
            assert_eq!(
                a.json(),
                json!({"responses": typed_text(ASK_NAME)}),
                "empty include"
            );
            continue;
        }
        assert_plain(&a, 401, unauth);
    }
    // Validation comes before the include check.
    let a = post_raw(
        p,
        &format!("{}?include=state", public("welcome-bot", "inc-user")),
        "{}",
    );
    assert_plain(
        &a,
        400,
        r#"child "text" fails because ["text" is required]"#,
    );
    // `responses`, in any case, is fine.
    for include in ["responses", "RESPONSES", "Responses"] {
        let a = post_raw(
            p,
            &format!(
                "{}?include={include}",
                public("welcome-bot", &format!("ok-{include}"))
            ),
            &body,
        );
        assert_eq!(a.json(), json!({"responses": typed_text(ASK_NAME)}));
    }
}

#[test]
fn max_message_length_unknown_bots_and_malformed_json() {
    let data = data_copy("limits");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let path = public("welcome-bot", "len-user");
    let at_limit = "é".repeat(360);
    let a = post_json(p, &path, &json!({"text": at_limit}));
    assert_eq!(responses(&a), typed_text(ASK_NAME));
    let a = post_json(p, &path, &json!({"text": "x".repeat(361)}));
    assert_envelope(
        &a,
        envelope(
            400,
            "BP_0040",
            "BadRequestError",
            "Bad Request: Text must be a valid string of less than 360 chars",
        ),
    );

    let not_found = |bot: &str| {
        envelope(
            404,
            "BP_0044",
            "NotFoundError",
            &format!("Not Found: bot \"{bot}\" does not exist"),
        )
    };
    assert_envelope(
        &converse(p, "no-such-bot", "u", "hi"),
        not_found("no-such-bot"),
    );
    for bad in ["ab", "-bad-", "a.b.c", "%2E%2E", "bad%20id", "___"] {
        let a = post_json(p, &public(bad, "u"), &json!({"text": "hi"}));
        assert_eq!(a.status, 404, "{bad}: {}", a.text());
        assert_eq!(a.json()["errorCode"], "BP_0044", "{bad}");
        assert_eq!(a.json()["type"], "NotFoundError", "{bad}");
    }
    // The secured route of an unknown bot is 404 too (after authentication).
    let t = token(data.path(), &[]);
    assert_envelope(
        &secured(p, "no-such-bot", "u", &json!({"text": "hi"}), "", &t),
        not_found("no-such-bot"),
    );

    // Malformed JSON: body-parser's error through the §3.1 handler.
    for body in [r#"{"text": "hi""#, "not json", r#"{"text":"hi"} trailing"#] {
        let a = post_raw(p, &path, body);
        assert_envelope(
            &a,
            envelope(400, "BP_000", "entity.parse.failed", "Unexpected error"),
        );
    }
    // Wrong method.
    let a = request(p, "GET", &path, &[], b"");
    assert_eq!(a.status, 405);

    // A user id that is not UTF-8 once decoded is refused, so %FF%FE and %FE%FF can never
    // share a conversation.
    for raw in ["%FF%FE", "%FE%FF", "%C0%C1"] {
        let a = post_json(p, &public("welcome-bot", raw), &json!({"text": "hi"}));
        assert_envelope(
            &a,
            envelope(
                400,
                "BP_0040",
                "BadRequestError",
                "Bad Request: the user id is not valid UTF-8 once percent-decoded",
            ),
        );
    }
}

#[test]
fn unsecured_endpoint_can_be_disabled_globally() {
    let data = data_with_config(
        "noinsecure",
        json!({"converse": {"enableUnsecuredEndpoint": false}}),
    );
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let a = converse(p, "welcome-bot", "u1", "hi");
    assert_envelope(
        &a,
        envelope(
            403,
            "BP_0043",
            "ForbiddenError",
            "Forbidden: the unsecured Converse endpoint is disabled for this bot",
        ),
    );
    let t = token(data.path(), &[]);
    let a = secured(p, "welcome-bot", "u1", &json!({"text": "hi"}), "", &t);
    assert_eq!(a.json(), json!({"responses": typed_text(ASK_NAME)}));
}

#[test]
fn unsecured_endpoint_can_be_disabled_per_bot() {
    let data = data_copy("noinsecurebot");
    copy_dir(
        &data.path().join("bots/welcome-bot"),
        &data.path().join("bots/closed-bot"),
    );
    let cfg_path = data.path().join("bots/closed-bot/bot.config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["converse"] = json!({"enableUnsecuredEndpoint": false});
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    assert_eq!(converse(p, "closed-bot", "u1", "hi").status, 403);
    assert_eq!(
        converse(p, "closed-bot", "u1", "hi").json()["type"],
        "ForbiddenError"
    );
    assert_eq!(
        responses(&converse(p, "welcome-bot", "u1", "hi")),
        typed_text(ASK_NAME)
    );
    let t = token(data.path(), &[]);
    assert_eq!(
        secured(p, "closed-bot", "u1", &json!({"text": "hi"}), "", &t).json(),
        json!({"responses": typed_text(ASK_NAME)})
    );

    // And the other way round: globally off, on for one bot.
    drop(server);
    write(
        data.path(),
        "global/botpress.config.json",
        &config_with(json!({"converse": {"enableUnsecuredEndpoint": false}})),
    );
    cfg["converse"] = json!({"enableUnsecuredEndpoint": true});
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let server = Server::start(data.path(), &[]);
    assert_eq!(
        responses(&converse(server.port, "closed-bot", "u2", "hi")),
        typed_text(ASK_NAME)
    );
    assert_eq!(converse(server.port, "welcome-bot", "u2", "hi").status, 403);
}

// ---------------------------------------------------------------- body limits

/// Sends `raw` bytes and reads one complete HTTP answer (by Content-Length), without waiting
/// for the connection to close.
fn exchange(port: u16, raw: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(raw);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return parse_answer(&buf[..end + 4 + len]);
            }
        }
        let n = stream.read(&mut chunk).unwrap_or_else(|e| {
            panic!(
                "no complete answer ({e}); got {:?}",
                String::from_utf8_lossy(&buf)
            )
        });
        assert!(
            n > 0,
            "connection closed early; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn bodies_over_the_limit_get_413() {
    let data = data_with_config("bodylimit", json!({"httpServer": {"bodyLimit": "1kb"}}));
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let path = public("welcome-bot", "big-user");
    let too_large = envelope(413, "BP_000", "entity.too.large", "Unexpected error");

    // Honest Content-Length over the limit.
    let big = json!({"text": "x".repeat(1100)}).to_string();
    assert_envelope(&post_raw(p, &path, &big), too_large.clone());
    // Just under the limit passes the body check (then the 360 rule applies).
    let under = json!({"text": "x".repeat(900)}).to_string();
    assert_eq!(post_raw(p, &path, &under).status, 400);

    // A Content-Length of 10 MB with a few bytes sent: the answer comes without the body.
    let head = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n{{\"text\":");
    assert_envelope(&exchange(p, head.as_bytes()), too_large.clone());

    // A Content-Length that lies the other way (claims less than sent) is cut at that length.
    let lie = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{big}");
    assert_envelope(
        &exchange(p, lie.as_bytes()),
        envelope(400, "BP_000", "entity.parse.failed", "Unexpected error"),
    );

    // Chunked bodies: complete and over the limit, and endless (never terminated).
    let mut chunked = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    for piece in big.as_bytes().chunks(100) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    let mut endless = chunked.clone();
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_envelope(&exchange(p, &chunked), too_large.clone());
    endless.extend_from_slice(b"64\r\n");
    endless.extend_from_slice(&[b'x'; 100]);
    endless.extend_from_slice(b"\r\n");
    assert_envelope(&exchange(p, &endless), too_large);

    // A small chunked body works.
    let small = br#"{"text":"hi"}"#;
    let mut ok = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", small.len()).into_bytes();
    ok.extend_from_slice(small);
    ok.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(responses(&exchange(p, &ok)), typed_text(ASK_NAME));
    // The server is still healthy.
    assert_eq!(request(p, "GET", "/status", &[], b"").status, 200);
}

// ---------------------------------------------------------------- other routes

#[test]
fn status_schemas_media_and_response_time() {
    let data = data_copy("routes");
    let png = b"\x89PNG\r\n\x1a\nfake-png-bytes".to_vec();
    std::fs::write(data.path().join("bots/welcome-bot/media/cat.png"), &png).unwrap();
    std::fs::write(
        data.path().join("bots/welcome-bot/media/photo.JPG"),
        b"jpeg",
    )
    .unwrap();
    std::fs::write(
        data.path().join("bots/welcome-bot/media/anim.gif"),
        b"GIF89a",
    )
    .unwrap();
    std::fs::write(
        data.path().join("bots/welcome-bot/media/.hidden.png"),
        b"secret",
    )
    .unwrap();
    std::fs::write(data.path().join("bots/welcome-bot/media/blob"), b"blob").unwrap();
    write(data.path(), "bots/welcome-bot/media/sub/inner.png", "inner");
    write(data.path(), "outside.png", "outside");
    std::os::unix::fs::symlink(
        data.path().join("outside.png"),
        data.path().join("bots/welcome-bot/media/link.png"),
    )
    .unwrap();
    let server = Server::start(data.path(), &[]);
    let p = server.port;

    let a = request(p, "GET", "/status", &[], b"");
    assert_eq!(a.status, 200);
    assert!(a
        .header("Content-Type")
        .unwrap()
        .starts_with("application/json"));
    let s = a.json();
    assert_eq!(s["status"], "ok");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["uptimeSeconds"].is_u64());
    assert_eq!(s["bots"], json!(["welcome-bot"]));
    assert!(a
        .header("X-Response-Time")
        .is_some_and(|v| v.ends_with("ms") && v.trim_end_matches("ms").parse::<f64>().is_ok()));

    for module in [
        "basic-skills",
        "channel-messenger",
        "channel-telegram",
        "nlu",
        "qna",
    ] {
        let a = request(
            p,
            "GET",
            &format!("/assets/modules/{module}/config.schema.json"),
            &[],
            b"",
        );
        assert_eq!(a.status, 200, "{module}");
        let schema = a.json();
        assert_eq!(schema["type"], "object");
        let props = schema["properties"].as_object().unwrap();
        // Every key of the generated global file is in the schema with its default.
        let file: Value = serde_json::from_str(
            &std::fs::read_to_string(data.path().join(format!("global/config/{module}.json")))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            file["$schema"],
            format!("../../../assets/modules/{module}/config.schema.json")
        );
        for (k, v) in file.as_object().unwrap() {
            if k == "$schema" {
                continue;
            }
            assert_eq!(&props[k]["default"], v, "{module}.{k}");
            assert!(
                (props[k]["type"].is_string()
                    || props[k]["type"]
                        .as_array()
                        .is_some_and(|l| l.iter().all(Value::is_string)))
                    && props[k]["description"].is_string(),
                "{module}.{k}"
            );
        }
        for (k, prop) in props {
            if let Some(d) = prop.get("default") {
                assert_eq!(&file[k], d, "{module}.{k} default missing from the file");
            }
        }
    }
    assert_eq!(
        request(
            p,
            "GET",
            "/assets/modules/nope/config.schema.json",
            &[],
            b""
        )
        .status,
        404
    );
    assert_eq!(
        request(
            p,
            "GET",
            "/assets/modules/..%2F..%2Fglobal/config.schema.json",
            &[],
            b""
        )
        .status,
        404
    );
    assert_eq!(s["status"], "ok");
    let nlu_defaults = request(p, "GET", "/assets/modules/nlu/config.schema.json", &[], b"").json();
    assert_eq!(
        nlu_defaults["properties"]["confidenceTreshold"]["default"],
        0.7
    );

    let media = |file: &str| {
        request(
            p,
            "GET",
            &format!("/api/v1/bots/welcome-bot/media/{file}"),
            &[],
            b"",
        )
    };
    let a = media("cat.png");
    assert_eq!(
        (
            a.status,
            a.header("Content-Type").as_deref(),
            a.body.clone()
        ),
        (200, Some("image/png"), png)
    );
    assert_eq!(
        media("photo.JPG").header("Content-Type").as_deref(),
        Some("image/jpeg")
    );
    assert_eq!(
        media("anim.gif").header("Content-Type").as_deref(),
        Some("image/gif")
    );
    assert_eq!(
        media("blob").header("Content-Type").as_deref(),
        Some("application/octet-stream")
    );
    assert!(media("cat.png").header("X-Response-Time").is_some());
    for bad in [
        "../bot.config.json",
        "..%2Fbot.config.json",
        "%2E%2E%2Fbot.config.json",
        "..%5Cbot.config.json",
        "sub%2Finner.png",
        "sub/inner.png",
        ".hidden.png",
        "link.png",
        "missing.png",
        "",
        "..",
        "%2E%2E",
        "..%2F..%2F..%2Foutside.png",
    ] {
        let a = media(bad);
        assert_eq!(a.status, 404, "{bad}: {}", a.text());
        assert_eq!(a.json()["errorCode"], "BP_0044", "{bad}");
    }
    for path in [
        "/api/v1/bots/..%2F..%2Fglobal/media/botpress.config.json",
        "/api/v1/bots/../media/cat.png",
        "/api/v1/bots/no-such-bot/media/cat.png",
    ] {
        assert_eq!(request(p, "GET", path, &[], b"").status, 404, "{path}");
    }
    let a = request(p, "GET", "/nothing/here", &[], b"");
    assert_eq!(a.status, 404);
    assert!(a.header("X-Response-Time").is_some());
}

// ---------------------------------------------------------------- secured route (§2.3)

fn b64(data: &[u8]) -> String {
    botd::http::jwt::b64url(data)
}

fn craft(secret: &str, claims: Value) -> String {
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = b64(claims.to_string().as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{header}.{claims}").as_bytes());
    format!("{header}.{claims}.{}", b64(&mac.finalize().into_bytes()))
}

fn app_secret(data: &Path) -> String {
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("global/botpress.config.json")).unwrap(),
    )
    .unwrap();
    cfg["appSecret"].as_str().unwrap().to_string()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn secured_route_tokens_and_includes() {
    let data = data_copy("secured");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let secret = app_secret(data.path());
    assert_eq!(secret.len(), 40);
    let valid = token(data.path(), &[]);
    let hi = json!({"type": "text", "text": "hi"});
    let path = "/api/v1/bots/welcome-bot/converse/sec-user/secured";
    let unauthorized = |m: &str| envelope(401, "BP_0041", "UnauthorizedError", m);

    // The four 401 messages.
    let a = request(
        p,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        hi.to_string().as_bytes(),
    );
    assert_envelope(
        &a,
        unauthorized("Unauthorized: Authorization header is missing"),
    );
    let a = request(
        p,
        "POST",
        path,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Basic {valid}")),
        ],
        hi.to_string().as_bytes(),
    );
    assert_envelope(&a, unauthorized("Unauthorized: Unknown scheme \"Basic\""));
    let a = request(
        p,
        "POST",
        path,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer"),
        ],
        hi.to_string().as_bytes(),
    );
    assert_envelope(
        &a,
        unauthorized("Unauthorized: Authentication token is missing"),
    );
    let invalid = unauthorized("Unauthorized: Invalid authentication token");
    let now = now_secs();
    let bad_tokens = [
        "garbage".to_string(),
        craft(
            &secret,
            json!({"email": "a@b.c", "isSuperAdmin": true, "iat": now - 100, "exp": now - 10, "aud": "web-login"}),
        ),
        craft(
            &secret,
            json!({"email": "a@b.c", "isSuperAdmin": true, "iat": now, "exp": now + 3600, "aud": "collaborators"}),
        ),
        craft(
            &secret,
            json!({"email": "a@b.c", "isSuperAdmin": true, "iat": now, "exp": now + 3600}),
        ),
        craft(
            "another-secret-of-forty-characters-xxxxx",
            json!({"email": "a@b.c", "iat": now, "exp": now + 3600, "aud": "web-login"}),
        ),
        {
            // A valid token with one signature character changed.
            let mut t = valid.clone();
            let last = t.pop().unwrap();
            t.push(if last == 'A' { 'B' } else { 'A' });
            t
        },
        {
            // alg none.
            let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
            let claims = b64(json!({"exp": now + 3600, "aud": "web-login"})
                .to_string()
                .as_bytes());
            format!("{header}.{claims}.")
        },
    ];
    for t in &bad_tokens {
        assert_envelope(
            &secured(p, "welcome-bot", "sec-user", &hi, "state", t),
            invalid.clone(),
        );
    }
    // The scheme is case-insensitive; a hand-made token with the right secret works.
    let crafted = craft(
        &secret,
        json!({"email": "a@b.c", "isSuperAdmin": true, "iat": now, "exp": now + 60, "aud": "web-login"}),
    );
    let a = request(
        p,
        "POST",
        path,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("bearer {crafted}")),
        ],
        hi.to_string().as_bytes(),
    );
    assert_eq!(a.json(), json!({"responses": typed_text(ASK_NAME)}));
    // Nothing above touched the conversation except that last turn: the bot now waits for a name.
    let a = secured(
        p,
        "welcome-bot",
        "sec-user",
        &json!({"text": "Ada"}),
        "nlu,state,suggestions,decision",
        &valid,
    );
    assert_eq!(a.status, 200);
    let body = a.json();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["responses", "nlu", "state", "suggestions", "decision"]
    );
    assert_eq!(body["responses"].as_array().unwrap().len(), 6);
    let state = &body["state"];
    for k in ["user", "context", "session", "temp"] {
        assert!(state[k].is_object(), "state.{k} in {state}");
    }
    assert_eq!(state["user"], json!({"nickname": "Ada"}));
    assert_eq!(state["context"], json!({}));
    assert_eq!(state["temp"], json!({"$r": 0}));
    let last = state["session"]["lastMessages"].as_array().unwrap();
    assert!(!last.is_empty() && last.len() <= 5);
    assert_eq!(last.last().unwrap()["incomingPreview"], "Ada");
    assert_eq!(last.last().unwrap()["replySource"], "dialogManager");
    assert!(body["nlu"]["intent"]["name"].is_string(), "{}", body["nlu"]);
    assert!(
        body["nlu"]["intents"].is_array() && body["nlu"]["entities"].is_array(),
        "{}",
        body["nlu"]
    );
    assert_eq!(body["nlu"]["errored"], false);
    assert_eq!(body["suggestions"], json!([]));
    assert_eq!(
        body["decision"],
        json!({"decision": {"reason": "no suggestion matched", "status": "elected"}, "confidence": 1, "payloads": [],
               "source": "decisionEngine", "sourceDetails": "execute default flow"})
    );

    // Mid-flow state: context with the queue waiting in ask-name.
    let a = secured(p, "welcome-bot", "sec-user-2", &hi, "state", &valid);
    let ctx = &a.json()["state"]["context"];
    assert_eq!(ctx["currentFlow"], "main.flow.json");
    assert_eq!(ctx["currentNode"], "ask-name");
    assert_eq!(ctx["previousNode"], "entry");
    assert_eq!(
        ctx["queue"]["instructions"][0],
        json!({"type": "on-receive", "fn": "builtin/setVariable {\"type\":\"user\",\"name\":\"nickname\",\"value\":\"{{event.payload.text}}\"}"})
    );

    // include is not trimmed: `nlu, state` gives nlu only.
    let a = secured(p, "welcome-bot", "sec-user-3", &hi, "nlu,%20state", &valid);
    let keys: Vec<String> = a.json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["responses", "nlu"]);
    // No include: responses only. Upper case works.
    assert_eq!(
        secured(p, "welcome-bot", "sec-user-4", &hi, "", &valid).json(),
        json!({"responses": typed_text(ASK_NAME)})
    );
    let a = secured(p, "welcome-bot", "sec-user-5", &hi, "STATE", &valid);
    assert!(a.json()["state"].is_object());

    // The secured route takes any object (no Joi), e.g. a quick reply with a payload.
    let a = secured(
        p,
        "welcome-bot",
        "sec-user-6",
        &json!({"type": "quick_reply", "text": "Yes", "payload": "YES"}),
        "",
        &valid,
    );
    assert_eq!(a.json(), json!({"responses": typed_text(ASK_NAME)}));

    // botd token --ttl: a token made with the secret the server uses; a 1-second token
    // with a crafted past expiry is refused above; the CLI's ttl is written into exp.
    let short = token(data.path(), &["--ttl", "90s", "--email", "x@y.z"]);
    let claims: Value = serde_json::from_slice(
        &botd::http::jwt::b64url_decode(short.split('.').nth(1).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], "web-login");
    assert_eq!(claims["email"], "x@y.z");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        90
    );
    assert_eq!(
        secured(p, "welcome-bot", "sec-user-7", &hi, "", &short).status,
        200
    );
}

// ---------------------------------------------------------------- concurrency

fn greeting_of(text: &str) -> Option<String> {
    for prefix in ["👋, ", "Hello, ", "Welcome to Botpress, "] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.strip_suffix('!').map(str::to_string);
        }
    }
    None
}

#[test]
fn fifty_users_twenty_messages_each() {
    let data = data_copy("load");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let barrier = Arc::new(Barrier::new(50));
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let user = format!("load-user-{i}");
                let name = format!("Name{i}x");
                barrier.wait();
                assert_eq!(
                    responses(&converse(p, "welcome-bot", &user, "hi")),
                    typed_text(ASK_NAME),
                    "{user}"
                );
                for turn in 2..=20 {
                    let text = if turn == 2 {
                        name.clone()
                    } else {
                        format!("message {turn}")
                    };
                    let r = responses(&converse(p, "welcome-bot", &user, &text));
                    let t = texts(&json!({"responses": r}));
                    assert_eq!(
                        greeting_of(&t[0]).as_deref(),
                        Some(name.as_str()),
                        "{user} turn {turn}: {t:?}"
                    );
                    if turn == 2 {
                        assert_eq!(r.len(), 6, "{user}: {t:?}");
                        assert_eq!(t[1], "This is the first time we speak 🤖");
                    } else {
                        assert_eq!(r.len(), 4, "{user}: {t:?}");
                        assert_eq!(
                            t[1],
                            format!("We already spoke {} times!", turn - 2),
                            "{user}"
                        );
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a user thread failed");
    }
}

#[test]
fn five_simultaneous_requests_for_one_user_form_the_sequence() {
    let data = data_copy("sameuser");
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let barrier = Arc::new(Barrier::new(5));
    let handles: Vec<_> = (0..5)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let r = responses(&converse(p, "welcome-bot", "crowded", "Zoe"));
                texts(&json!({"responses": r}))
            })
        })
        .collect();
    let mut answers: Vec<Vec<String>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Normalise the random greeting, then compare with the only valid sequence.
    for a in &mut answers {
        if let Some(first) = a.first_mut() {
            if greeting_of(first).as_deref() == Some("Zoe") {
                *first = "<greeting>".into();
            }
        }
    }
    answers.sort();
    let mut expected: Vec<Vec<String>> = vec![
        vec![ASK_NAME.into()],
        vec![
            "<greeting>".into(),
            "This is the first time we speak 🤖".into(),
            "Try saying something like \"forget my name\"!".into(),
        ],
        vec!["<greeting>".into(), "We already spoke 1 times!".into()],
        vec!["<greeting>".into(), "We already spoke 2 times!".into()],
        vec!["<greeting>".into(), "We already spoke 3 times!".into()],
    ];
    expected.sort();
    assert_eq!(answers, expected);
}

// ---------------------------------------------------------------- first start and configuration

#[test]
fn first_start_creates_files_and_a_second_start_leaves_them_alone() {
    let data = data_copy("firststart");
    let server = Server::start(data.path(), &[]);
    drop(server);
    let cfg_path = data.path().join("global/botpress.config.json");
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let http = &cfg["httpServer"];
    assert_eq!(http["host"], "localhost");
    assert_eq!(http["port"], 3000);
    assert_eq!(http["bodyLimit"], "100kb");
    assert!(
        http.get("externalUrl").is_some() && http.get("workers").is_some(),
        "{http}"
    );
    assert_eq!(
        cfg["dialog"],
        json!({"janitorInterval": "10s", "timeoutInterval": "2m", "sessionTimeoutInterval": "30m"})
    );
    assert_eq!(
        cfg["converse"],
        json!({"timeout": "5s", "maxMessageLength": 360, "enableUnsecuredEndpoint": true})
    );
    let secret = cfg["appSecret"].as_str().unwrap();
    assert_eq!(secret.chars().count(), 40);
    assert!(
        secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "{secret}"
    );
    for module in [
        "basic-skills",
        "channel-messenger",
        "channel-telegram",
        "nlu",
        "qna",
    ] {
        let file: Value = serde_json::from_str(
            &std::fs::read_to_string(data.path().join(format!("global/config/{module}.json")))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            file["$schema"],
            format!("../../../assets/modules/{module}/config.schema.json")
        );
    }
    // Another data dir gets another secret.
    let other = data_copy("firststart2");
    drop(Server::start(other.path(), &[]));
    assert_ne!(app_secret(other.path()), secret);

    // Edit the files; a second start must not rewrite them, and must use them.
    let mut edited = cfg.clone();
    edited["converse"]["maxMessageLength"] = json!(10);
    edited["custom"] = json!("kept");
    let edited_text = format!("{}\n", serde_json::to_string(&edited).unwrap());
    std::fs::write(&cfg_path, &edited_text).unwrap();
    let qna_path = data.path().join("global/config/qna.json");
    let qna_text = "{\"$schema\": \"../../../assets/modules/qna/config.schema.json\", \"qnaCategories\": \"global,extra\"}";
    std::fs::write(&qna_path, qna_text).unwrap();
    let nlu_path = data.path().join("global/config/nlu.json");
    std::fs::remove_file(&nlu_path).unwrap();
    let server = Server::start(data.path(), &[]);
    assert_eq!(std::fs::read_to_string(&cfg_path).unwrap(), edited_text);
    assert_eq!(std::fs::read_to_string(&qna_path).unwrap(), qna_text);
    assert!(nlu_path.exists(), "a deleted module file is created again");
    let a = converse(server.port, "welcome-bot", "u1", "0123456789a");
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json()["message"],
        "Bad Request: Text must be a valid string of less than 10 chars"
    );
    assert_eq!(
        converse(server.port, "welcome-bot", "u1", "0123456789").status,
        200
    );
}

#[test]
fn runtime_files_are_ignored_by_git() {
    let out = std::process::Command::new("git")
        .args([
            "check-ignore",
            "data/storage/x.json",
            "data/global/botpress.config.json",
            "data/global/config/nlu.json",
            "data/.env",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        4,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn image_bot(data: &Path) {
    write(
        data,
        "bots/image-bot/bot.config.json",
        r#"{"id":"image-bot","name":"Image","defaultLanguage":"en","languages":["en"]}"#,
    );
    write(
        data,
        "bots/image-bot/flows/main.flow.json",
        r#"{"version":"0.0.1","startNode":"entry","nodes":[
            {"id":"n0001","name":"entry","onEnter":["say #builtin_image {\"image\":\"/api/v1/bots/image-bot/media/cat.png\",\"title\":\"Cat\"}"],"onReceive":null,"next":[]}
        ]}"#,
    );
    write(data, "bots/image-bot/media/cat.png", "png");
}

fn image_url(port: u16) -> String {
    let r = responses(&converse(port, "image-bot", "u", "hi"));
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["type"], "file");
    r[0]["url"].as_str().unwrap().to_string()
}

#[test]
fn environment_overrides() {
    let data = data_with_config(
        "env",
        json!({"httpServer": {"port": 1, "externalUrl": "https://from-config.example"}}),
    );
    image_bot(data.path());
    // PORT wins over httpServer.port (1 would fail to bind); externalUrl from the file.
    let server = Server::start(data.path(), &[]);
    assert_eq!(
        image_url(server.port),
        "https://from-config.example/api/v1/bots/image-bot/media/cat.png"
    );
    drop(server);

    // data/.env beats the file; the process environment beats .env.
    write(
        data.path(),
        ".env",
        "# test\nEXTERNAL_URL=\"https://from-dotenv.example\"\nBP_HOST=127.0.0.3\n",
    );
    let server = Server::start(data.path(), &[("BP_HOST", "127.0.0.2")]);
    let expected = format!("listening on http://127.0.0.2:{} ", server.port);
    assert!(
        wait_until(Duration::from_secs(5), || server.log().contains(&expected)),
        "{}",
        server.log()
    );
    assert!(TcpStream::connect(("127.0.0.2", server.port)).is_ok());
    drop(server);
    let server = Server::start(data.path(), &[("BP_HOST", "127.0.0.1")]);
    assert_eq!(
        image_url(server.port),
        "https://from-dotenv.example/api/v1/bots/image-bot/media/cat.png"
    );
    drop(server);
    let server = Server::start(
        data.path(),
        &[
            ("EXTERNAL_URL", "https://from-env.example/"),
            ("BP_HOST", "127.0.0.1"),
        ],
    );
    assert_eq!(
        image_url(server.port),
        "https://from-env.example/api/v1/bots/image-bot/media/cat.png"
    );
    drop(server);

    // Module overrides are validated against the schema, under both spellings.
    for name in [
        "BP_CHANNEL-MESSENGER_TYPINGDELAY",
        "BP_CHANNEL_MESSENGER_TYPINGDELAY",
    ] {
        let server = Server::start(data.path(), &[("BP_HOST", "127.0.0.1"), (name, "maybe")]);
        let status = request(server.port, "GET", "/status", &[], b"").json();
        assert_eq!(status["bots"], json!([]), "{name}");
        assert!(
            server
                .log()
                .contains(&format!("{name}: \"maybe\" is not true or false")),
            "{}",
            server.log()
        );
        drop(server);
        let server = Server::start(data.path(), &[("BP_HOST", "127.0.0.1"), (name, "false")]);
        assert_eq!(
            request(server.port, "GET", "/status", &[], b"").json()["bots"],
            json!(["image-bot", "welcome-bot"])
        );
    }
    // In .env too.
    write(data.path(), ".env", "BP_NLU_CONFIDENCETRESHOLD=high\n");
    let server = Server::start(data.path(), &[]);
    assert!(
        server
            .log()
            .contains("BP_NLU_CONFIDENCETRESHOLD: \"high\" is not a number"),
        "{}",
        server.log()
    );
    assert_eq!(
        request(server.port, "GET", "/status", &[], b"").json()["bots"],
        json!([])
    );
}

#[test]
fn converse_timeout_answers_504_and_saves_nothing() {
    let data = data_with_config("timeout504", json!({"converse": {"timeout": "0ms"}}));
    let server = Server::start(data.path(), &[]);
    let p = server.port;
    let expected = envelope(
        504,
        "BP_0504",
        "GatewayTimeout",
        "The turn took longer than converse.timeout (0 ms); nothing was saved",
    );
    assert_envelope(&converse(p, "welcome-bot", "slow", "hi"), expected.clone());
    assert_envelope(&converse(p, "welcome-bot", "slow", "Sylvain"), expected);
    drop(server);
    assert_eq!(rows_of(data.path(), "sessions", "welcome-bot"), 0);
    write(
        data.path(),
        "global/botpress.config.json",
        &config_with(json!({})),
    );
    let server = Server::start(data.path(), &[]);
    // Neither turn was saved: the conversation starts from the beginning.
    assert_eq!(
        responses(&converse(server.port, "welcome-bot", "slow", "hi")),
        typed_text(ASK_NAME)
    );
}

/// One request that may fail (server stopping): `None` instead of a panic.
fn try_converse(port: u16, user: &str, text: &str) -> Option<Answer> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    let body = json!({"text": text}).to_string();
    let head = format!(
        "POST /api/v1/bots/welcome-bot/converse/{user} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    raw.windows(4)
        .any(|w| w == b"\r\n\r\n")
        .then(|| parse_answer(&raw))
}

#[test]
fn sigterm_mid_load_loses_no_acknowledged_turn() {
    let data = data_copy("sigterm");
    let mut server = Server::start(data.path(), &[]);
    let p = server.port;
    let acked_total = Arc::new(AtomicUsize::new(0));
    let users = 8;
    let handles: Vec<_> = (0..users)
        .map(|i| {
            let acked_total = acked_total.clone();
            std::thread::spawn(move || {
                let user = format!("term-{i}");
                let mut acked = 0usize;
                for turn in 1..=400 {
                    let text = match turn {
                        1 => "hi".to_string(),
                        2 => format!("Name{i}"),
                        n => format!("m{n}"),
                    };
                    match try_converse(p, &user, &text) {
                        Some(a) if a.status == 200 => {
                            acked += 1;
                            acked_total.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(60), || acked_total
        .load(Ordering::SeqCst)
        >= 80));
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    let acked: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        acked.iter().all(|&k| k < 400),
        "the load did not run into the stop: {acked:?}"
    );

    let server = Server::start(data.path(), &[]);
    for (i, &k) in acked.iter().enumerate() {
        let r = responses(&converse(
            server.port,
            "welcome-bot",
            &format!("term-{i}"),
            "after restart",
        ));
        let t = texts(&json!({"responses": r}));
        match k {
            0 => assert!(
                t == [ASK_NAME] || greeting_of(&t[0]).is_none(),
                "user {i}: {t:?}"
            ),
            // "hi" acknowledged: waiting for the name, so this message is taken as the name
            // (or the name turn was also saved, unacknowledged).
            1 => assert!(
                greeting_of(&t[0]).as_deref() == Some("after restart")
                    || greeting_of(&t[0]) == Some(format!("Name{i}")),
                "user {i}: {t:?}"
            ),
            k => {
                assert_eq!(
                    greeting_of(&t[0]),
                    Some(format!("Name{i}")),
                    "user {i}: {t:?}"
                );
                // After k acknowledged turns the counter says k-1 (k if one more turn was
                // saved but its answer never arrived).
                let said = t[1]
                    .strip_prefix("We already spoke ")
                    .and_then(|s| s.strip_suffix(" times!"))
                    .and_then(|n| n.parse::<usize>().ok());
                assert!(
                    said == Some(k - 1) || said == Some(k),
                    "user {i} had {k} acknowledged turns: {t:?}"
                );
            }
        }
    }
}
