//! Several botd instances on one PostgreSQL database (a private cluster the tests start).
//! First the store's behaviour, the same on SQLite and PostgreSQL; then what only a shared
//! database has (holds across instances, leases, leaders); then real botd processes behind a
//! round-robin proxy.
#![cfg(feature = "postgres")]

mod common;

use botd::store::{Batch, Namespace, PostgresStore, Queue, SeenId, SqliteStore, Store};
use common::fake_http::{FakeHttp, Response};
use common::pg;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Both stores, fresh: the behaviour tests run on each.
fn both(tag: &str) -> Vec<(Arc<dyn Store>, Option<common::TempDir>)> {
    let dir = common::TempDir::new(tag);
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let url = pg::shared().database(tag);
    let postgres: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).unwrap());
    vec![(sqlite, Some(dir)), (postgres, None)]
}

#[test]
fn records_round_trip_with_hostile_keys_on_both() {
    for (store, _dir) in both("records") {
        let keys = [
            "../../etc/passwd".to_string(),
            "a'; DROP TABLE sessions; --".to_string(),
            // Longer than an index entry may be: keys are addressed by their hash.
            "😀".repeat(1024),
            "api::u1".to_string(),
        ];
        let mut batch = Batch::new();
        for (i, key) in keys.iter().enumerate() {
            batch.put(
                Namespace::Sessions,
                "welcome-bot",
                key,
                json!({"n": i, "z": 1, "a": 2}),
            );
        }
        store.commit(batch).unwrap();
        for (i, key) in keys.iter().enumerate() {
            let got = store.get(Namespace::Sessions, "welcome-bot", key).unwrap();
            // The JSON comes back as it was written, key order included.
            assert_eq!(
                serde_json::to_string(&got).unwrap(),
                format!("{{\"n\":{i},\"z\":1,\"a\":2}}"),
                "{}",
                store.describe()
            );
            assert_eq!(
                store.get(Namespace::Users, "welcome-bot", key).unwrap(),
                None
            );
            assert_eq!(
                store.get(Namespace::Sessions, "other-bot", key).unwrap(),
                None
            );
        }
        let mut seen = Vec::new();
        store
            .scan(Namespace::Sessions, "welcome-bot", &mut |k, _| {
                seen.push(k.to_string())
            })
            .unwrap();
        seen.sort();
        let mut expected = keys.to_vec();
        expected.sort();
        assert_eq!(seen, expected, "{}", store.describe());
        let mut batch = Batch::new();
        batch.delete(Namespace::Sessions, "welcome-bot", &keys[0]);
        store.commit(batch).unwrap();
        assert_eq!(
            store
                .get(Namespace::Sessions, "welcome-bot", &keys[0])
                .unwrap(),
            None
        );
    }
}

#[test]
fn queues_keep_order_and_seen_ids_dedupe_on_both() {
    for (store, _dir) in both("queues") {
        let shown = store.describe();
        let later = now_ms() + 60_000;
        let mut batch = Batch::new();
        let a = batch.enqueue(
            Queue::MessengerIn,
            "k",
            json!("a"),
            Some(SeenId::new("t", "m1", later)),
        );
        let dup = batch.enqueue(
            Queue::MessengerIn,
            "k",
            json!("dup"),
            Some(SeenId::new("t", "m1", later)),
        );
        let b = batch.enqueue(Queue::MessengerIn, "k", json!("b"), None);
        let committed = store.commit(batch).unwrap();
        let (a, b) = (committed.id(a).unwrap(), committed.id(b).unwrap());
        assert!(committed.id(dup).is_none() && b > a, "{shown}");
        // Seen in an earlier commit: skipped too; an expired id counts as new.
        let mut batch = Batch::new();
        let again = batch.enqueue(
            Queue::MessengerIn,
            "k",
            json!("again"),
            Some(SeenId::new("t", "m1", later)),
        );
        let old = SeenId {
            expires_ms: now_ms() - 1,
            ..SeenId::new("t", "m2", 0)
        };
        batch.enqueue(Queue::TelegramIn, "z", json!(0), Some(old));
        let committed = store.commit(batch).unwrap();
        assert!(committed.id(again).is_none(), "{shown}");
        let mut batch = Batch::new();
        let c = batch.enqueue(
            Queue::MessengerIn,
            "k",
            json!("c"),
            Some(SeenId::new("t", "m2", later)),
        );
        batch.dequeue(Queue::MessengerIn, a);
        let committed = store.commit(batch).unwrap();
        assert!(committed.id(c).unwrap() > b, "{shown}");
        let items: Vec<Value> = store
            .pending(Queue::MessengerIn)
            .unwrap()
            .into_iter()
            .map(|i| i.item)
            .collect();
        assert_eq!(items, vec![json!("b"), json!("c")], "{shown}");
        assert_eq!(
            store.pending(Queue::TelegramIn).unwrap().len(),
            1,
            "{shown}"
        );
    }
}

#[test]
fn a_batch_finishing_an_item_handled_already_leaves_nothing_on_both() {
    for (store, _dir) in both("finish") {
        let shown = store.describe();
        let mut batch = Batch::new();
        let t = batch.enqueue(Queue::MessengerIn, "k", json!(1), None);
        let id = store.commit(batch).unwrap().id(t).unwrap();
        let turn = |value: i64| {
            let mut batch = Batch::new();
            batch.put(Namespace::Sessions, "welcome-bot", "s", json!(value));
            batch.finish(Queue::MessengerIn, id);
            store.commit(batch)
        };
        turn(1).unwrap();
        let err = turn(2).unwrap_err();
        assert!(err.permanent && !err.unavailable, "{shown}: {err}");
        assert_eq!(
            store.get(Namespace::Sessions, "welcome-bot", "s").unwrap(),
            Some(json!(1)),
            "{shown}: the second turn left nothing"
        );
        assert!(
            store.pending(Queue::MessengerIn).unwrap().is_empty(),
            "{shown}"
        );
    }
}

#[test]
fn a_damaged_record_is_quarantined_on_postgres() {
    let url = pg::shared().database("damaged");
    let store = PostgresStore::open(&url).unwrap();
    let mut batch = Batch::new();
    batch.put(Namespace::Kv, "welcome-bot", "global", json!({"a": 1}));
    store.commit(batch).unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .execute("UPDATE kv SET value = '{\"a\": ' WHERE key = 'global'", &[])
        .unwrap();
    assert_eq!(
        store.get(Namespace::Kv, "welcome-bot", "global").unwrap(),
        None
    );
    let n: i64 = client
        .query_one("SELECT count(*) FROM quarantine", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[test]
fn the_schema_is_versioned_and_a_newer_one_is_refused() {
    let url = pg::shared().database("schema");
    // Three instances starting at once migrate it once, under the schema lock.
    let opened: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PostgresStore::open(&url).map(|_| ()))
        })
        .collect();
    for t in opened {
        t.join().unwrap().unwrap();
    }
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let rows = client
        .query("SELECT version FROM schema_version", &[])
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        i64::from(rows[0].get::<_, i32>(0)),
        botd::store::PG_SCHEMA_VERSION
    );
    client
        .execute("UPDATE schema_version SET version = 99", &[])
        .unwrap();
    let err = PostgresStore::open(&url).err().unwrap();
    assert!(
        err.contains("schema version 99") && err.contains("newer"),
        "{err}"
    );
    assert!(!err.contains("password"), "{err}");
}

#[test]
fn turns_of_one_conversation_are_held_in_arrival_order_across_instances() {
    let url = pg::shared().database("hold");
    let a: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).unwrap());
    let b: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).unwrap());
    let first = a.hold_conversation("bot\u{0}u1", None).unwrap().unwrap();
    // Another conversation is not held up.
    drop(b.hold_conversation("bot\u{0}u2", None).unwrap().unwrap());
    // Past its deadline, a waiter gives up.
    let soon = Some(Instant::now() + Duration::from_millis(100));
    assert!(b.hold_conversation("bot\u{0}u1", soon).unwrap().is_none());
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..4 {
        let store = if i % 2 == 0 { b.clone() } else { a.clone() };
        let order = order.clone();
        waiters.push(std::thread::spawn(move || {
            let _hold = store
                .hold_conversation("bot\u{0}u1", None)
                .unwrap()
                .unwrap();
            order.lock().unwrap().push(i);
        }));
        // Each one asks once the one before it waits in the server's queue.
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let waiting: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                    &[],
                )
                .unwrap()
                .get(0);
            if waiting == i + 1 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    drop(first);
    for w in waiters {
        w.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
}

#[test]
fn one_leader_at_a_time_and_another_takes_over() {
    let url = pg::shared().database("leader");
    let a = PostgresStore::open(&url).unwrap();
    let b = PostgresStore::open(&url).unwrap();
    let mut lead = a
        .try_lead("telegram:token-1")
        .unwrap()
        .expect("first leader");
    assert!(lead.held());
    assert!(b.try_lead("telegram:token-1").unwrap().is_none());
    // Another role is free.
    assert!(b.try_lead("telegram:token-2").unwrap().is_some());
    drop(lead);
    assert!(b.try_lead("telegram:token-1").unwrap().is_some());
}

#[test]
fn a_conversation_is_claimed_by_one_instance_and_taken_over_when_its_lease_ends() {
    let url = pg::shared().database("claim");
    let a = PostgresStore::open(&url).unwrap();
    let b = PostgresStore::open(&url).unwrap();
    let mut batch = Batch::new();
    for i in 0..3 {
        batch.enqueue(Queue::MessengerIn, "k1", json!(i), None);
    }
    batch.enqueue(Queue::MessengerIn, "k2", json!("x"), None);
    a.commit(batch).unwrap();
    let lease = Duration::from_millis(600);
    let first = a.claim(Queue::MessengerIn, lease).unwrap();
    let mut held = first.held.clone();
    held.sort();
    assert_eq!(held, ["k1", "k2"]);
    let items: Vec<Value> = first
        .items
        .iter()
        .filter(|i| i.key == "k1")
        .map(|i| i.item.clone())
        .collect();
    assert_eq!(items, [json!(0), json!(1), json!(2)]);
    // Held by A: B gets nothing while A renews.
    let second = b.claim(Queue::MessengerIn, lease).unwrap();
    assert!(
        second.held.is_empty() && second.items.is_empty(),
        "{second:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    a.claim(Queue::MessengerIn, lease).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert!(b.claim(Queue::MessengerIn, lease).unwrap().held.is_empty());
    // A stops renewing (it died): once the lease is over, B has its conversations.
    let until = Instant::now() + Duration::from_secs(5);
    let taken = loop {
        let claim = b.claim(Queue::MessengerIn, lease).unwrap();
        if !claim.held.is_empty() || Instant::now() > until {
            break claim;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(taken.held.len(), 2, "{taken:?}");
    assert_eq!(taken.items.len(), 4);
    // Finished conversations are let go.
    let mut batch = Batch::new();
    for item in &taken.items {
        batch.dequeue(Queue::MessengerIn, item.id);
    }
    b.commit(batch).unwrap();
    assert!(b.claim(Queue::MessengerIn, lease).unwrap().held.is_empty());
}

// ---------------------------------------------------------------------------------------
// Real instances behind a round-robin proxy
// ---------------------------------------------------------------------------------------

use common::proxy::RoundRobin;

/// `n` botd instances on the database `url`, serving `data`.
fn instances(
    data: &std::path::Path,
    url: &str,
    n: usize,
    env: &[(&str, &str)],
) -> Vec<common::Server> {
    (0..n)
        .map(|_| {
            let mut all = vec![
                ("DATABASE_URL", url),
                ("RUST_LOG", "info,botd::engine::runtime=debug"),
            ];
            all.extend_from_slice(env);
            let server = common::Server::start(data, &all);
            assert!(
                common::wait_until(Duration::from_secs(5), || server
                    .log()
                    .contains("PostgreSQL postgres://botd@127.0.0.1")),
                "{}",
                server.log()
            );
            server
        })
        .collect()
}

fn ports(servers: &[common::Server]) -> Vec<u16> {
    servers.iter().map(|s| s.port).collect()
}

fn greeting_ok(text: &str, name: &str) -> bool {
    [
        format!("👋, {name}!"),
        format!("Hello, {name}!"),
        format!("Welcome to Botpress, {name}!"),
    ]
    .contains(&text.to_string())
}

/// welcome-bot's first two turns for `name` (see `check_welcome` in tests/messenger.rs).
fn introduce(port: u16, user: &str, name: &str) {
    let said = common::texts(&common::converse(port, "welcome-bot", user, "hi").json());
    assert_eq!(said, ["May I know your name please?"]);
    let said = common::texts(&common::converse(port, "welcome-bot", user, name).json());
    assert_eq!(said.len(), 3, "{said:?}");
    assert!(greeting_ok(&said[0], name), "{said:?}");
    assert_eq!(
        said[1..],
        [
            "This is the first time we speak 🤖".to_string(),
            "Try saying something like \"forget my name\"!".to_string()
        ]
    );
}

#[test]
fn a_converse_conversation_continues_across_instances() {
    let url = pg::shared().database("converse");
    let data = common::data_copy("pg-converse");
    let servers = instances(data.path(), &url, 3, &[]);
    let proxy = RoundRobin::start(&ports(&servers));
    introduce(proxy.port, "alice", "Alice");
    for k in 1..=4 {
        let said = common::texts(
            &common::converse(proxy.port, "welcome-bot", "alice", &format!("ok {k}")).json(),
        );
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(greeting_ok(&said[0], "Alice"), "{said:?}");
        assert_eq!(said[1], format!("We already spoke {k} times!"));
    }
    // Six turns, one connection each: every instance played two of them.
    assert_eq!(*proxy.served.lock().unwrap(), [2, 2, 2]);
}

/// Five requests of one user, sent one after the other while the conversation is held (by
/// this test, with the lock botd takes), reach three instances: once let go, they are
/// played in the order they arrived, each on the state the one before left.
#[test]
fn concurrent_requests_of_one_user_over_instances_are_played_in_arrival_order() {
    let url = pg::shared().database("order");
    let data = common::data_copy("pg-order");
    let servers = instances(data.path(), &url, 3, &[]);
    let proxy = RoundRobin::start(&ports(&servers));
    introduce(proxy.port, "bob", "Bob");
    let queued = || -> usize {
        servers
            .iter()
            .map(|s| s.log().matches("a turn waits for its conversation").count())
            .sum()
    };
    let before = queued();
    let key = format!(
        "welcome-bot\u{0}{}",
        botd::engine::event::session_id("api", "bob", None)
    );
    let mut holder = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&(botd::store::hash_id(&key) as i64)],
        )
        .unwrap();
    let mut watcher = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let waiting_in_db = |w: &mut postgres::Client| -> i64 {
        w.query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let mut requests = Vec::new();
    for i in 1..=5usize {
        let port = proxy.port;
        requests.push(std::thread::spawn(move || {
            common::texts(&common::converse(port, "welcome-bot", "bob", &format!("ok {i}")).json())
        }));
        // Arrived: the turn waits for the conversation (the first three in the database,
        // the two behind them in their instance, behind its first).
        assert!(common::wait_until(Duration::from_secs(20), || queued()
            == before + i
            && waiting_in_db(&mut watcher) == i.min(3) as i64));
    }
    drop(holder);
    for (i, request) in requests.into_iter().enumerate() {
        let said = request.join().unwrap();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(greeting_ok(&said[0], "Bob"), "{said:?}");
        assert_eq!(said[1], format!("We already spoke {} times!", i + 1));
    }
}

// ---------------------------------------------------------------------------------------
// Messenger over instances (the fake Graph API follows tests/messenger.rs)
// ---------------------------------------------------------------------------------------

const SECRET: &str = "app-secret-for-tests";
const WEBHOOK: &str = "/api/v1/bots/___/mod/channel-messenger/webhook";

/// The Graph API: `GET /me` names the page, `POST /me/messages` is recorded (in arrival order).
struct FakeGraph {
    _server: FakeHttp,
    port: u16,
    sent: Arc<Mutex<Vec<Value>>>,
    /// While set, `POST /me/messages` answers 500 (Facebook having a bad minute).
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl FakeGraph {
    fn start() -> FakeGraph {
        let sent: Arc<Mutex<Vec<Value>>> = Arc::default();
        let down: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let server = {
            let (sent, down) = (sent.clone(), down.clone());
            FakeHttp::start(move |request| {
                let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
                let answer = match request.path() {
                    "/v23.0/me" => json!({"id": "PW", "name": "Page PW"}),
                    "/v23.0/me/messages" if down.load(std::sync::atomic::Ordering::SeqCst) => {
                        let error = json!({"error": {"message": "An unexpected error has occurred.", "code": 2}});
                        return Response::json(500, &error);
                    }
                    "/v23.0/me/messages" => {
                        sent.lock().unwrap().push(body.clone());
                        json!({"recipient_id": body["recipient"]["id"], "message_id": "m"})
                    }
                    _ => json!({"result": "success"}),
                };
                Response::json(200, &answer)
            })
        };
        FakeGraph {
            port: server.port,
            _server: server,
            sent,
            down,
        }
    }

    fn texts(&self, psid: &str) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c["recipient"]["id"] == psid)
            .filter_map(|c| c["message"]["text"].as_str().map(str::to_string))
            .collect()
    }
}

fn messenger_data(tag: &str, fake: &FakeGraph) -> common::TempDir {
    let data = common::data_copy(tag);
    let global = json!({"appSecret": SECRET, "verifyToken": "v", "graphApiBase": format!("http://127.0.0.1:{}", fake.port), "typingDelay": false});
    common::write(
        data.path(),
        "global/config/channel-messenger.json",
        &global.to_string(),
    );
    common::write(
        data.path(),
        "bots/welcome-bot/config/channel-messenger.json",
        &json!({"enabled": true, "accessToken": "TOKEN-W"}).to_string(),
    );
    data
}

fn start_messenger(data: &std::path::Path, url: &str, n: usize) -> Vec<common::Server> {
    let servers = instances(data, url, n, &[("EXTERNAL_URL", "http://bots.example.org")]);
    for s in &servers {
        assert!(
            common::wait_until(Duration::from_secs(10), || s
                .log()
                .contains("answers page PW")),
            "{}",
            s.log()
        );
    }
    servers
}

/// A signed webhook POST of one text event; the status, or `None` when nobody answered.
fn post_text(port: u16, psid: &str, mid: &str, text: &str) -> Option<u16> {
    use hmac::{Hmac, Mac};
    use std::io::{Read, Write};
    let body = json!({"object": "page", "entry": [{"id": "PW", "time": 1_700_000_000_000i64, "messaging": [
        {"sender": {"id": psid}, "recipient": {"id": "PW"}, "timestamp": 1_700_000_000_000i64, "message": {"mid": mid, "seq": 1, "text": text}}]}]})
    .to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let head = format!(
        "POST {WEBHOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Hub-Signature-256: {signature}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let line = String::from_utf8_lossy(&raw).lines().next()?.to_string();
    line.split_whitespace().nth(1)?.parse().ok()
}

fn welcome_text(u: usize, k: usize) -> String {
    match k {
        1 => "hi".to_string(),
        2 => format!("Name{u}"),
        _ => format!("ok {k}"),
    }
}

/// welcome-bot's transcript for user `u` who sent `n` messages (`hi`, the name, then more):
/// every reply once and in order; the flow's counter ("We already spoke N times!") shows a
/// turn played twice or out of order.
fn check_welcome(texts: &[String], u: usize, n: usize) {
    let name = format!("Name{u}");
    assert_eq!(texts.len(), 4 + 2 * (n - 2), "{name}: {texts:?}");
    assert_eq!(texts[0], "May I know your name please?");
    assert!(greeting_ok(&texts[1], &name), "{name}: {}", texts[1]);
    assert_eq!(texts[2], "This is the first time we speak 🤖");
    for k in 1..=n - 2 {
        assert!(greeting_ok(&texts[2 + 2 * k], &name), "{name}: {texts:?}");
        assert_eq!(
            texts[3 + 2 * k],
            format!("We already spoke {k} times!"),
            "{name}: {texts:?}"
        );
    }
}

/// `users` users send `n` messages each, one after the other per user (the next once the
/// last was acknowledged), through `port`; returns once all are acknowledged. `mid_burst`
/// runs once half of them are.
fn burst(port: u16, users: usize, n: usize, mid_burst: impl FnOnce()) {
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..users)
        .map(|u| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for k in 1..=n {
                    let start = Instant::now();
                    while post_text(
                        port,
                        &format!("U{u}"),
                        &format!("mid.U{u}.{k}"),
                        &welcome_text(u, k),
                    ) != Some(200)
                    {
                        assert!(
                            start.elapsed() < Duration::from_secs(30),
                            "U{u} message {k} never acknowledged"
                        );
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();
    assert!(common::wait_until(Duration::from_secs(60), || acked
        .load(std::sync::atomic::Ordering::SeqCst)
        >= users * n / 2));
    mid_burst();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_messenger_burst_over_instances_plays_every_event_once_in_order() {
    let fake = FakeGraph::start();
    let url = pg::shared().database("burst");
    let data = messenger_data("pg-burst", &fake);
    let servers = start_messenger(data.path(), &url, 3);
    let proxy = RoundRobin::start(&ports(&servers));
    let (users, n) = (6, 8);
    // Facebook sends some deliveries twice: the copies go to other instances.
    burst(proxy.port, users, n, || {
        for u in 0..users {
            assert_eq!(
                post_text(proxy.port, &format!("U{u}"), &format!("mid.U{u}.1"), "hi"),
                Some(200)
            );
        }
    });
    for u in 0..users {
        let last = format!("We already spoke {} times!", n - 2);
        common::wait_until(Duration::from_secs(30), || {
            fake.texts(&format!("U{u}")).contains(&last)
        });
        check_welcome(&fake.texts(&format!("U{u}")), u, n);
    }
    // Every instance received webhook calls.
    assert!(proxy.served.lock().unwrap().iter().all(|n| *n > 0));
}

/// SIGKILL of one instance mid-burst: the others finish what it had queued (once its leases
/// end) — nothing lost, nothing played twice; only a Graph call in flight may repeat.
#[test]
fn sigkill_of_an_instance_mid_burst_loses_nothing_and_plays_nothing_twice() {
    let fake = FakeGraph::start();
    let url = pg::shared().database("kill");
    let data = messenger_data("pg-kill", &fake);
    let mut servers = start_messenger(data.path(), &url, 3);
    let proxy = RoundRobin::start(&ports(&servers));
    let (users, n) = (6, 8);
    let mut watcher = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    burst(proxy.port, users, n, || {
        // Killed while it holds conversations with work queued, which the others take over.
        let owner = format!("%-{}-%", servers[1].child.id());
        let holding = common::wait_until(Duration::from_secs(20), || {
            watcher
                .query_one(
                    "SELECT count(*) FROM queue_keys WHERE owner LIKE $1 AND pending > 0",
                    &[&owner],
                )
                .unwrap()
                .get::<_, i64>(0)
                > 0
        });
        assert!(holding, "instance 1 never held queued work");
        servers[1].kill();
    });
    for u in 0..users {
        let psid = format!("U{u}");
        let last = format!("We already spoke {} times!", n - 2);
        common::wait_until(Duration::from_secs(40), || {
            fake.texts(&psid).contains(&last)
        });
        let texts = fake.texts(&psid);
        let once = distinct(&texts);
        // One reply item per user can have been in flight at the kill.
        assert!(texts.len() - once.len() <= 2, "{psid}: {texts:?}");
        check_welcome(&once, u, n);
    }
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let left: i64 = client
        .query_one("SELECT count(*) FROM queue_items", &[])
        .unwrap()
        .get(0);
    assert!(
        common::wait_until(Duration::from_secs(10), || client
            .query_one("SELECT count(*) FROM queue_items", &[])
            .unwrap()
            .get::<_, i64>(0)
            == 0),
        "{left} items left"
    );
}

// ---------------------------------------------------------------------------------------
// Telegram over instances
// ---------------------------------------------------------------------------------------

/// The Bot API for one token: `getUpdates` with offsets and long polls, answering 409 to a
/// poll while another one is open (as Telegram does), and `sendMessage` recorded in order.
#[derive(Clone, Default)]
struct FakeBotApi {
    state: Arc<(Mutex<BotApiState>, std::sync::Condvar)>,
    /// The server (absent in the copy its handler answers with).
    _server: Option<Arc<FakeHttp>>,
}

#[derive(Default)]
struct BotApiState {
    queue: Vec<Value>,
    next_id: i64,
    polling: bool,
    conflicts: usize,
    polls: Vec<Instant>,
    sent: Vec<(i64, String)>,
    /// The `secret_token` of each `setWebhook`.
    hooks: Vec<String>,
}

impl FakeBotApi {
    fn start() -> (FakeBotApi, u16) {
        let answering = FakeBotApi::default();
        let state = answering.state.clone();
        let server = FakeHttp::start(move |request| {
            let params: Value = serde_json::from_slice(&request.body).unwrap_or(json!({}));
            let method = request.path().rsplit('/').next().unwrap_or("");
            let (status, answer) = answering.answer(method, &params);
            Response::json(status, &answer)
        });
        let port = server.port;
        let fake = FakeBotApi {
            state,
            _server: Some(Arc::new(server)),
        };
        (fake, port)
    }

    fn answer(&self, method: &str, params: &Value) -> (u16, Value) {
        let (lock, cv) = &*self.state;
        let mut state = lock.lock().unwrap();
        match method {
            "getUpdates" => {
                state.polls.push(Instant::now());
                if state.polling {
                    state.conflicts += 1;
                    return (
                        409,
                        json!({"ok": false, "error_code": 409, "description": "Conflict: terminated by other getUpdates request"}),
                    );
                }
                if let Some(offset) = params["offset"].as_i64() {
                    state
                        .queue
                        .retain(|u| u["update_id"].as_i64().unwrap() >= offset);
                }
                let until = Instant::now()
                    + Duration::from_secs(params["timeout"].as_u64().unwrap_or(0).min(2));
                state.polling = true;
                loop {
                    let now = Instant::now();
                    if !state.queue.is_empty() || now >= until {
                        state.polling = false;
                        let batch: Vec<Value> = state.queue.iter().take(20).cloned().collect();
                        return (200, json!({"ok": true, "result": batch}));
                    }
                    state = cv.wait_timeout(state, until - now).unwrap().0;
                }
            }
            "sendMessage" => {
                let chat = params["chat_id"]
                    .as_i64()
                    .or_else(|| params["chat_id"].as_str().and_then(|s| s.parse().ok()))
                    .unwrap_or(0);
                state
                    .sent
                    .push((chat, params["text"].as_str().unwrap_or("").to_string()));
                (
                    200,
                    json!({"ok": true, "result": {"message_id": 1, "chat": {"id": chat}}}),
                )
            }
            "setWebhook" => {
                state
                    .hooks
                    .push(params["secret_token"].as_str().unwrap_or("").to_string());
                (200, json!({"ok": true, "result": true}))
            }
            _ => (200, json!({"ok": true, "result": true})),
        }
    }

    fn text(&self, chat: i64, text: &str) {
        let (lock, cv) = &*self.state;
        let mut state = lock.lock().unwrap();
        state.next_id += 1;
        let id = 5000 + state.next_id;
        state.queue.push(json!({"update_id": id, "message": {"message_id": id, "date": 1_700_000_000,
            "from": {"id": chat, "is_bot": false, "first_name": "T"}, "chat": {"id": chat, "type": "private"}, "text": text}}));
        cv.notify_all();
    }

    fn texts(&self, chat: i64) -> Vec<String> {
        let state = self.state.0.lock().unwrap();
        state
            .sent
            .iter()
            .filter(|(c, _)| *c == chat)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

/// Three instances, one Telegram bot: one of them polls at a time (Telegram would answer a
/// second poller 409); after SIGKILL of that one another polls within 10 s, and every update
/// is answered once and in order per chat.
#[test]
fn telegram_is_polled_by_one_instance_and_taken_over_after_sigkill() {
    let (fake, api_port) = FakeBotApi::start();
    let url = pg::shared().database("telegram");
    let data = common::data_copy("pg-telegram");
    common::write(
        data.path(),
        "global/config/channel-telegram.json",
        &json!({"apiBase": format!("http://127.0.0.1:{api_port}"), "pollTimeout": "1s"})
            .to_string(),
    );
    common::write(
        data.path(),
        "bots/welcome-bot/config/channel-telegram.json",
        &json!({"enabled": true, "botToken": "123:TOKEN"}).to_string(),
    );
    let mut servers = instances(data.path(), &url, 3, &[]);
    let polling = |s: &common::Server| s.log().contains("Telegram long polling started");
    assert!(common::wait_until(Duration::from_secs(20), || servers
        .iter()
        .filter(|s| polling(s))
        .count()
        == 1));
    let (chats, n) = (4i64, 6usize);
    let say = |k: usize| {
        for c in 0..chats {
            fake.text(100 + c, &welcome_text(c as usize, k));
        }
    };
    let answered = |k: usize| {
        (0..chats).all(|c| {
            distinct(&fake.texts(100 + c)).len() >= if k == 1 { 1 } else { 4 + 2 * (k - 2) }
        })
    };
    for k in 1..=3 {
        say(k);
        assert!(
            common::wait_until(Duration::from_secs(20), || answered(k)),
            "turn {k}: {:?}\n{}",
            (0..chats).map(|c| fake.texts(100 + c)).collect::<Vec<_>>(),
            servers
                .iter()
                .map(|s| s.log())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
    }
    // Still one poller (the others wait for the lead).
    assert_eq!(servers.iter().filter(|s| polling(s)).count(), 1);
    let leader = servers.iter().position(polling).unwrap();
    say(4);
    servers[leader].kill();
    let killed = Instant::now();
    // Another instance polls within 10 s.
    let taken = common::wait_until(Duration::from_secs(10), || {
        servers
            .iter()
            .enumerate()
            .any(|(i, s)| i != leader && s.log().contains("this instance polls Telegram now"))
    });
    assert!(taken, "no takeover within 10 s of the SIGKILL");
    assert!(common::wait_until(Duration::from_secs(10), || {
        fake.state
            .0
            .lock()
            .unwrap()
            .polls
            .iter()
            .any(|t| *t > killed)
    }));
    for k in 5..=n {
        say(k);
        assert!(
            common::wait_until(Duration::from_secs(30), || answered(k)),
            "turn {k}"
        );
    }
    for c in 0..chats {
        let texts = fake.texts(100 + c);
        let once = distinct(&texts);
        // A send in flight at the kill may repeat; no turn does.
        assert!(texts.len() - once.len() <= 2, "chat {c}: {texts:?}");
        check_welcome(&once, c as usize, n);
    }
    assert_eq!(
        fake.state.0.lock().unwrap().conflicts,
        0,
        "two instances polled at once"
    );
}

/// `texts` with repeats in a row left out (a send in flight at a SIGKILL is made again).
fn distinct(texts: &[String]) -> Vec<String> {
    let mut once: Vec<String> = Vec::new();
    for t in texts {
        if once.last() != Some(t) {
            once.push(t.clone());
        }
    }
    once
}

/// The database away for 10 s: Converse and the webhook answer 503 with the JSON error
/// envelope, queued replies wait, and everything goes on once it is back, without a restart.
#[test]
fn the_database_away_for_ten_seconds_gets_503_then_everything_resumes() {
    use std::sync::atomic::Ordering;
    let cluster = pg::Cluster::private();
    let url = cluster.database("outage");
    let fake = FakeGraph::start();
    let data = messenger_data("pg-outage", &fake);
    let mut servers = start_messenger(data.path(), &url, 2);
    let proxy = RoundRobin::start(&ports(&servers));
    introduce(proxy.port, "carol", "Carol");
    // Replies that cannot be sent yet stay queued in the database.
    fake.down.store(true, Ordering::SeqCst);
    for u in 0..3 {
        assert_eq!(
            post_text(proxy.port, &format!("U{u}"), &format!("mid.U{u}.1"), "hi"),
            Some(200)
        );
    }
    let mut client = cluster.client(url.rsplit('/').next().unwrap());
    assert!(common::wait_until(Duration::from_secs(20), || client
        .query_one(
            "SELECT count(*) FROM queue_items WHERE queue = 'messenger-out'",
            &[]
        )
        .unwrap()
        .get::<_, i64>(0)
        == 3));
    drop(client);
    cluster.stop();
    let away = Instant::now();
    fake.down.store(false, Ordering::SeqCst);
    for _ in 0..2 {
        let answer = common::converse(proxy.port, "welcome-bot", "carol", "ok 1");
        assert_eq!(answer.status, 503, "{}", answer.text());
        let body = answer.json();
        assert_eq!(body["statusCode"], 503, "{body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains("database"),
            "{body}"
        );
        assert_eq!(post_text(proxy.port, "U9", "mid.U9.1", "hi"), Some(503));
    }
    // Nothing is sent while the database is away: the replies wait in it.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(away.elapsed()));
    cluster.start();
    // Back: the same processes answer, on the state they had.
    let resumed = common::wait_until(Duration::from_secs(30), || {
        common::converse(proxy.port, "welcome-bot", "carol", "ok 1").status == 200
    });
    assert!(resumed, "{}", servers[0].log());
    let said = common::texts(&common::converse(proxy.port, "welcome-bot", "carol", "ok 2").json());
    assert_eq!(
        said.get(1).map(String::as_str),
        Some("We already spoke 2 times!"),
        "{said:?}"
    );
    for u in 0..3 {
        let psid = format!("U{u}");
        assert!(
            common::wait_until(Duration::from_secs(60), || !fake.texts(&psid).is_empty()),
            "{psid}"
        );
        assert_eq!(
            post_text(
                proxy.port,
                &psid,
                &format!("mid.U{u}.2"),
                &format!("Name{u}")
            ),
            Some(200)
        );
        assert!(common::wait_until(Duration::from_secs(30), || distinct(
            &fake.texts(&psid)
        )
        .len()
            >= 4));
        check_welcome(&distinct(&fake.texts(&psid)), u, 2);
    }
    for s in &mut servers {
        assert!(
            s.child.try_wait().unwrap().is_none(),
            "an instance exited: {}",
            s.log()
        );
    }
}

/// A context timeout known to three instances (each one indexed it) fires once: the janitor
/// of each takes the conversation's lock and looks again, and finds it handled.
#[test]
fn a_context_timeout_fires_once_across_instances() {
    let fake = FakeGraph::start();
    let url = pg::shared().database("timeout");
    let data = messenger_data("pg-timeout", &fake);
    common::add_timeout_node(data.path(), "welcome-bot");
    // Long enough for the other two instances to start and index it.
    let config = data.path().join("bots/welcome-bot/bot.config.json");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"1s\"", "\"6s\"");
    std::fs::write(&config, text).unwrap();
    let mut servers = start_messenger(data.path(), &url, 1);
    let users = 4;
    for u in 0..users {
        assert_eq!(
            post_text(
                servers[0].port,
                &format!("T{u}"),
                &format!("mid.T{u}"),
                "hi"
            ),
            Some(200)
        );
    }
    for u in 0..users {
        assert!(common::wait_until(Duration::from_secs(10), || !fake
            .texts(&format!("T{u}"))
            .is_empty()));
    }
    // The others start now: their first session sweep indexes the pending timeouts.
    servers.extend(start_messenger(data.path(), &url, 2));
    let timed_out = |u: usize| {
        fake.texts(&format!("T{u}"))
            .iter()
            .filter(|t| *t == "Still there?")
            .count()
    };
    for u in 0..users {
        assert!(
            common::wait_until(Duration::from_secs(20), || timed_out(u) >= 1),
            "T{u}: {:?}",
            fake.texts(&format!("T{u}"))
        );
    }
    // Ten janitor rounds later, still once.
    std::thread::sleep(Duration::from_secs(2));
    for u in 0..users {
        assert_eq!(
            fake.texts(&format!("T{u}")),
            ["May I know your name please?", "Still there?"]
        );
    }
}

#[test]
fn botd_check_reports_the_database_and_a_bad_url_is_refused() {
    let url = pg::shared().database("check");
    let data = common::data_copy("pg-check");
    let dir = data.path().to_str().unwrap();
    // Before the first start: nothing made yet.
    let (code, _, err) = common::botd(&["check", "--data", dir], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("schema version 0; botd creates or migrates it"),
        "{err}"
    );
    drop(PostgresStore::open(&url).unwrap());
    let (code, _, err) = common::botd(&["check", "--data", dir], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("reachable, schema version 1, 0 queued item(s), 0 quarantined record(s), 0 dead letter(s)"),
        "{err}"
    );
    assert!(!data.path().join("storage/botd.sqlite").exists());
    // Nobody listening there: named, and `check` fails.
    let gone = "postgres://botd:secret@127.0.0.1:1/botd";
    let (code, out, err) = common::botd(&["check", "--data", dir], &[("DATABASE_URL", gone)]);
    assert_eq!(code, 1);
    assert!(
        out.contains("postgres://botd@127.0.0.1:1/botd: cannot reach the database"),
        "{out}"
    );
    assert!(
        !out.contains("secret") && !err.contains("secret"),
        "{out}{err}"
    );
    // `run` refuses to start on it, and on a URL that is not PostgreSQL, with one line.
    let (code, _, err) = common::botd(&["run", "--data", dir], &[("DATABASE_URL", gone)]);
    assert_eq!(code, 1);
    assert!(
        err.contains("the database cannot be reached") && !err.contains("secret"),
        "{err}"
    );
    let (code, _, err) = common::botd(
        &["run", "--data", dir],
        &[("DATABASE_URL", "mysql://u@h/db")],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("DATABASE_URL: \"mysql://…\" is not a database botd uses"),
        "{err}"
    );
}

/// Webhook mode on three instances: they register one secret between them, any of them
/// takes an update (each played once, in order, a repeat acknowledged and not played again
/// even on another instance), and a wrong secret gets 403 from each.
#[test]
fn telegram_webhook_mode_over_instances_shares_one_secret() {
    let (fake, api_port) = FakeBotApi::start();
    let url = pg::shared().database("tghook");
    let data = common::data_copy("pg-tghook");
    common::write(
        data.path(),
        "global/config/channel-telegram.json",
        &json!({"apiBase": format!("http://127.0.0.1:{api_port}")}).to_string(),
    );
    common::write(
        data.path(),
        "bots/welcome-bot/config/channel-telegram.json",
        &json!({"enabled": true, "botToken": "77:HOOK", "mode": "webhook"}).to_string(),
    );
    let env = [("EXTERNAL_URL", "https://bot.example.org")];
    let servers: Vec<common::Server> = (0..3)
        .map(|_| {
            // One after the other, as a deployment starts them; each registers its webhook
            // (counted before the start: the registration may be done when it returns).
            let n = fake.state.0.lock().unwrap().hooks.len();
            let server = instances(data.path(), &url, 1, &env).pop().unwrap();
            assert!(
                common::wait_until(Duration::from_secs(10), || fake
                    .state
                    .0
                    .lock()
                    .unwrap()
                    .hooks
                    .len()
                    > n),
                "{}",
                server.log()
            );
            server
        })
        .collect();
    let hooks = fake.state.0.lock().unwrap().hooks.clone();
    assert_eq!(hooks.len(), 3);
    assert!(
        hooks.iter().all(|h| *h == hooks[0] && h.len() >= 32),
        "{hooks:?}"
    );
    let secret = hooks[0].clone();
    let proxy = RoundRobin::start(&ports(&servers));
    let path = "/api/v1/bots/welcome-bot/mod/channel-telegram/webhook";
    let post = |id: i64, text: &str, secret: &str| {
        let body = json!({"update_id": id, "message": {"message_id": id, "date": 1_700_000_000,
            "from": {"id": 300, "is_bot": false, "first_name": "T"}, "chat": {"id": 300, "type": "private"}, "text": text}})
        .to_string();
        common::request(
            proxy.port,
            "POST",
            path,
            &[
                ("Content-Type", "application/json"),
                ("X-Telegram-Bot-Api-Secret-Token", secret),
            ],
            body.as_bytes(),
        )
    };
    for _ in 0..3 {
        let answer = post(1, "forged", "not-the-secret");
        assert_eq!(answer.status, 403, "{}", answer.text());
        assert_eq!(answer.json()["statusCode"], 403);
    }
    let n = 5;
    for k in 1..=n {
        assert_eq!(
            post(1000 + k as i64, &welcome_text(0, k), &secret).status,
            200
        );
        // Telegram repeats an update it thinks failed; here it reaches the next instance.
        assert_eq!(
            post(1000 + k as i64, &welcome_text(0, k), &secret).status,
            200
        );
    }
    let expected = 4 + 2 * (n - 2);
    assert!(
        common::wait_until(Duration::from_secs(30), || fake.texts(300).len()
            >= expected),
        "{:?}",
        fake.texts(300)
    );
    std::thread::sleep(Duration::from_millis(500));
    check_welcome(&fake.texts(300), 0, n);
}
