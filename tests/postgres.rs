//! Several botd instances on one PostgreSQL database (a private cluster the tests start).
//! First the store's behaviour, the same on SQLite and PostgreSQL; then what only a shared
//! database has (holds across instances, leases, leaders); then real botd processes behind a
//! round-robin proxy.
#![cfg(feature = "postgres")]

mod common;

use botd::store::{Batch, Namespace, PostgresStore, Queue, SeenId, SqliteStore, Store};
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
