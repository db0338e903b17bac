//! The PostgreSQL store, for several botd instances on one database (`DATABASE_URL=postgres://…`).
//!
//! **Connections.** A small pool of synchronous connections (the `postgres` crate), made on
//! demand and dropped when broken; a connection that cannot be made is a
//! [`StoreError::unavailable`] error, which Converse and the webhooks answer with 503 and the
//! queues wait out. Nothing here caches state: every instance reads the database.
//!
//! **Commits.** Each [`Batch`] is one transaction on its own connection: PostgreSQL already
//! shares the WAL flush of transactions that commit together, and a batch that fails alone
//! fails alone. A deadlock or serialization failure (two webhook deliveries taking two
//! conversations in opposite orders) is tried again, up to [`RETRIES`] times.
//!
//! **Order per conversation across instances.** [`Store::hold_conversation`] takes a
//! session-level advisory lock on a hash of the conversation, on a connection kept for the
//! length of the turn. PostgreSQL grants waiters of one lock in the order they asked, so the
//! turns of a conversation run one after the other in arrival order, whichever instance
//! received them; a lock held by an instance that dies goes with its connection.
//! Measured on loopback (PostgreSQL 15, this machine under load, 2,000 rounds): the session
//! lock and its unlock are two round trips (1.2–1.4 ms a pair here); a transaction-scoped
//! `pg_advisory_xact_lock` is three with its BEGIN and COMMIT (1.9–2.2 ms), and it would need
//! the whole turn — reads, bot code, commit — inside one transaction on that connection, held
//! open while JavaScript calls remote APIs; a row lock (`INSERT … ON CONFLICT DO NOTHING`, then
//! `SELECT … FOR UPDATE`) writes WAL (96 bytes per lock) and so costs a WAL flush per turn
//! (11–18 ms on this disk). The session lock leaves the commit an ordinary one.
//!
//! **Queues across instances.** Items are rows of `queue_items`; each conversation of a queue
//! has a row in `queue_keys` with its count of items and a lease (`owner`, `lease_until_ms`,
//! on the database's clock). An enqueue locks the conversation's row before its item gets an
//! id, so a conversation's ids grow in commit order. [`Store::claim`] renews this instance's
//! leases, takes conversations with work whose lease ran out (`FOR UPDATE SKIP LOCKED`, so
//! instances never wait for each other), and returns the items of the conversations it holds:
//! one instance handles a conversation at a time, in order, and when it dies (no renewal) the
//! others take its conversations once the lease ends. A commit that queues work sends a
//! `NOTIFY botd_queue` with the queue's name; each instance `LISTEN`s on one connection and
//! wakes its deliveries, which claim at once.
//!
//! **Leaders.** [`Store::try_lead`] takes a session-level advisory lock (`pg_try_advisory_lock`
//! in a key space of its own) on a connection kept while leading: a Telegram bot token is
//! polled by one instance, and when that instance dies its connection closes and another one
//! takes over at its next try.
//!
//! Keys are stored as text and addressed by their SHA-256 (`key_sha`), so a key of any length
//! fits an index, and every id and key is a bound parameter.

use super::{
    hash_id, Batch, Claim, Committed, Durability, Hold, Namespace, Op, Queue, QueuedItem, SeenId,
    Store, StoreError, StoreStats,
};
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Statement};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The schema this botd writes in PostgreSQL (its own numbering: the databases differ).
pub const PG_SCHEMA_VERSION: i64 = 1;

/// A transaction that failed on a deadlock or a serialization conflict is tried this often.
const RETRIES: u32 = 4;
/// How long making a connection may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle connections kept for reuse.
const MAX_IDLE: usize = 16;
/// A pooled connection idle this long is checked (one round trip) before it is used again.
const STALE_AFTER: Duration = Duration::from_secs(5);
/// Expired seen ids are deleted at most this often.
const PRUNE_EVERY_MS: i64 = 60_000;
/// The NOTIFY channel of queued work.
const CHANNEL: &str = "botd_queue";
/// The advisory-lock key spaces (the first int of the two-int form); a conversation uses the
/// one-bigint form, which PostgreSQL keeps apart from the two-int one.
const LEADER_SPACE: i32 = 0x626f_7464; // "botd"
const MIGRATION_LOCK: i64 = 0x626f_7464_6d69_6772; // "botdmigr"

/// The database's clock in unix ms: leases are compared on one clock, whatever the
/// instances' clocks say.
const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Migration N (1-based) takes the database from version N-1 to N.
const MIGRATIONS: &[&str] = &[
    // 1: records, queues with their per-conversation leases, seen ids, quarantine, dead letters.
    "
    CREATE TABLE sessions (
        bot TEXT NOT NULL, key_sha BYTEA NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        updated_ms BIGINT NOT NULL, PRIMARY KEY (bot, key_sha)
    );
    CREATE TABLE users (
        bot TEXT NOT NULL, key_sha BYTEA NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        updated_ms BIGINT NOT NULL, PRIMARY KEY (bot, key_sha)
    );
    CREATE TABLE kv (
        bot TEXT NOT NULL, key_sha BYTEA NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        updated_ms BIGINT NOT NULL, PRIMARY KEY (bot, key_sha)
    );
    CREATE TABLE channel_state (
        bot TEXT NOT NULL, key_sha BYTEA NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        updated_ms BIGINT NOT NULL, PRIMARY KEY (bot, key_sha)
    );
    CREATE TABLE queue_items (
        id BIGSERIAL PRIMARY KEY, queue TEXT NOT NULL, key_sha BYTEA NOT NULL, key TEXT NOT NULL,
        item TEXT NOT NULL, created_ms BIGINT NOT NULL
    );
    CREATE INDEX queue_items_by_key ON queue_items (queue, key_sha, id);
    CREATE TABLE queue_keys (
        queue TEXT NOT NULL, key_sha BYTEA NOT NULL, key TEXT NOT NULL,
        pending BIGINT NOT NULL, owner TEXT, lease_until_ms BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (queue, key_sha)
    );
    CREATE INDEX queue_keys_by_owner ON queue_keys (queue, owner);
    CREATE TABLE seen_ids (
        scope TEXT NOT NULL, hash BIGINT NOT NULL, expires_ms BIGINT NOT NULL,
        PRIMARY KEY (scope, hash)
    );
    CREATE INDEX seen_ids_by_expiry ON seen_ids (expires_ms);
    CREATE TABLE quarantine (
        id BIGSERIAL PRIMARY KEY, kind TEXT NOT NULL, bot TEXT NOT NULL, key TEXT NOT NULL,
        raw BYTEA, reason TEXT NOT NULL, at_ms BIGINT NOT NULL
    );
    CREATE TABLE dead_letters (
        id BIGSERIAL PRIMARY KEY, queue TEXT NOT NULL, key TEXT NOT NULL, item TEXT NOT NULL,
        reason TEXT NOT NULL, at_ms BIGINT NOT NULL
    );
    ",
];

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The SHA-256 a key is addressed by.
fn key_sha(key: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes()).to_vec()
}

/// The URL without its password (nor its parameters, which may hold one), for log lines
/// and `botd check`.
pub fn shown_url(url: &str) -> String {
    let url = url.split('?').next().unwrap_or(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return "postgres://…".into();
    };
    match rest.split_once('@') {
        Some((auth, host)) => {
            let user = auth.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_string(),
    }
}

/// Whether an error is a failed or broken connection rather than an answer of the server.
fn is_unreachable(e: &postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 08: connection exceptions; 57P01-3: the server is shutting down or starting.
        return code.starts_with("08") || code.starts_with("57P");
    }
    if e.is_closed() {
        return true;
    }
    let text = e.to_string();
    text.starts_with("error connecting")
        || text.starts_with("error communicating")
        || text.starts_with("timeout waiting")
        || text.starts_with("connection closed")
}

/// Whether trying the same transaction again may succeed at once.
fn is_conflict(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// One connection and the statements it has prepared.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
    /// When it went back to the pool.
    idle_since: Instant,
}

impl Conn {
    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.execute(&s, params)
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query(&s, params)
    }
}

/// The connections of one store.
struct Pool {
    config: postgres::Config,
    shown: String,
    idle: Mutex<Vec<Conn>>,
    /// Whether the last attempt to reach the database failed (logged once per outage).
    down: AtomicBool,
}

impl Pool {
    fn connect(&self) -> Result<Conn, StoreError> {
        match self.config.connect(NoTls) {
            Ok(client) => {
                if self.down.swap(false, Ordering::SeqCst) {
                    log::info!("{}: the database is reachable again", self.shown);
                }
                Ok(Conn {
                    client,
                    statements: HashMap::new(),
                    idle_since: Instant::now(),
                })
            }
            Err(e) => {
                if !self.down.swap(true, Ordering::SeqCst) {
                    log::error!("{}: cannot reach the database: {e}", self.shown);
                }
                Err(StoreError::unavailable(format!(
                    "{}: the database cannot be reached ({e})",
                    self.shown
                )))
            }
        }
    }

    fn get(&self) -> Result<Conn, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(mut conn) if !conn.client.is_closed() => {
                // One idle for a while may have been closed by a server restart meanwhile.
                if conn.idle_since.elapsed() < STALE_AFTER
                    || conn.client.is_valid(Duration::from_secs(1)).is_ok()
                {
                    Ok(conn)
                } else {
                    self.clear();
                    self.connect()
                }
            }
            _ => self.connect(),
        }
    }

    /// Gives a connection back, unless it broke or the pool has enough.
    fn put(&self, mut conn: Conn) {
        if conn.client.is_closed() {
            return;
        }
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Drops every idle connection (after one was found broken: the others likely are).
    fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn err(&self, e: postgres::Error) -> StoreError {
        let message = match e.as_db_error() {
            Some(db) => format!("{}: {} ({})", self.shown, db.message(), db.code().code()),
            None => format!("{}: {e}", self.shown),
        };
        if is_unreachable(&e) {
            self.clear();
            return StoreError::unavailable(message);
        }
        let permanent = match e.code() {
            // Data exceptions, constraints, syntax and access rules: the same batch fails
            // the same way again.
            Some(code) => {
                let c = code.code();
                c.starts_with("22") || c.starts_with("23") || c.starts_with("42")
            }
            // Conversions on our side.
            None => true,
        };
        StoreError {
            message,
            permanent,
            unavailable: false,
        }
    }
}

/// The deliveries to wake per queue.
type Watchers = Mutex<Vec<(Queue, Arc<dyn Fn() + Send + Sync>)>>;

pub struct PostgresStore {
    pool: Arc<Pool>,
    /// This process among the instances: the owner of its leases.
    instance: String,
    last_prune_ms: AtomicI64,
    commits: AtomicU64,
    deferred_commits: AtomicU64,
    watchers: Arc<Watchers>,
    listening: AtomicBool,
}

impl PostgresStore {
    /// Connects to `url`, creates or migrates the schema (one instance at a time, under an
    /// advisory lock) and refuses a schema newer than this botd knows. The error is one
    /// sentence naming the database (without its password).
    pub fn open(url: &str) -> Result<PostgresStore, String> {
        let shown = shown_url(url);
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| format!("DATABASE_URL ({shown}): not a PostgreSQL URL: {e}"))?;
        if config.get_ssl_mode() == postgres::config::SslMode::Require {
            return Err(format!("DATABASE_URL ({shown}): sslmode=require is not supported: botd talks to PostgreSQL without TLS; use a local socket, a private network or a TLS tunnel, and sslmode=disable or prefer"));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .application_name("botd");
        let pool = Arc::new(Pool {
            config,
            shown: shown.clone(),
            idle: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
        });
        let mut conn = pool.connect().map_err(|e| e.message)?;
        migrate(&mut conn, &shown)?;
        pool.put(conn);
        let instance = format!(
            "{}-{}-{:x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "botd".into()),
            std::process::id(),
            hash_id(&format!("{}/{:?}", now_ms(), Instant::now())) & 0xffff_ffff
        );
        Ok(PostgresStore {
            pool,
            instance,
            last_prune_ms: AtomicI64::new(0),
            commits: AtomicU64::new(0),
            deferred_commits: AtomicU64::new(0),
            watchers: Arc::default(),
            listening: AtomicBool::new(false),
        })
    }

    /// Runs `f` on a pooled connection; the connection goes back unless it broke.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.get()?;
        let result = f(&mut conn);
        match result {
            Ok(v) => {
                self.pool.put(conn);
                Ok(v)
            }
            Err(e) => {
                let e = self.pool.err(e);
                if !conn.client.is_closed() && !e.unavailable {
                    // Leave no transaction open on a connection that goes back.
                    if conn.client.batch_execute("ROLLBACK").is_ok() {
                        self.pool.put(conn);
                    }
                }
                Err(e)
            }
        }
    }

    /// `f` inside one transaction, tried again on a deadlock or serialization conflict.
    fn transaction<T>(
        &self,
        mut f: impl FnMut(&mut Conn) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut conflict = false;
            let result = self.with_conn(|conn| {
                conn.client.batch_execute("BEGIN")?;
                let value = f(conn).inspect_err(|e| conflict = is_conflict(e))?;
                conn.client
                    .batch_execute("COMMIT")
                    .inspect_err(|e| conflict = is_conflict(e))?;
                Ok(value)
            });
            match result {
                Err(_) if conflict && attempt < RETRIES => {
                    std::thread::sleep(Duration::from_millis(5 * u64::from(attempt)));
                }
                other => return other,
            }
        }
    }

    /// Moves a record that does not parse to the quarantine, with one log line.
    fn quarantine_now(
        &self,
        ns: Namespace,
        bot: &str,
        key: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let id = self.transaction(|conn| quarantine_record(conn, ns, bot, key, reason, now))?;
        if let Some(id) = id {
            log_quarantine(&self.pool.shown, ns, bot, key, reason, id);
        }
        Ok(())
    }

    /// Starts the thread that LISTENs for queued work, once.
    fn start_listener(&self) {
        if self.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let (pool, watchers) = (self.pool.clone(), self.watchers.clone());
        let started = std::thread::Builder::new()
            .name("pg-listen".into())
            .spawn(move || listen(&pool, &watchers));
        if let Err(e) = started {
            log::error!("cannot start the PostgreSQL listener ({e}); queues are polled every second instead");
        }
    }
}

/// The listener: one connection with `LISTEN botd_queue`; every notification wakes the
/// deliveries of its queue. When the connection breaks it is made again (every second while
/// the database is away), and every delivery is woken once it is back, to claim what was
/// queued meanwhile.
fn listen(pool: &Pool, watchers: &Watchers) {
    let wake = |queue: Option<&str>| {
        let list = watchers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (q, wake) in list {
            if queue.is_none_or(|name| name == q.name()) {
                wake();
            }
        }
    };
    loop {
        let mut conn = match pool.connect() {
            Ok(conn) => conn,
            Err(_) => {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if let Err(e) = conn.client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            log::warn!("{}: LISTEN failed ({e}); trying again", pool.shown);
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        wake(None);
        loop {
            let next = conn
                .client
                .notifications()
                .timeout_iter(Duration::from_secs(5))
                .next()
                .map(|n| n.map(|n| n.payload().to_string()));
            match next {
                Ok(Some(queue)) => wake(Some(&queue)),
                // Quiet for a while: make sure the connection still works.
                Ok(None) if conn.client.is_valid(Duration::from_secs(3)).is_ok() => {}
                _ => break,
            }
            if conn.client.is_closed() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The migrations above the database's version, each in its own transaction, with an
/// advisory lock so that instances starting together do not race.
fn migrate(conn: &mut Conn, shown: &str) -> Result<(), String> {
    let fail = |what: &str, e: postgres::Error| match e.as_db_error() {
        Some(db) => format!("{shown}: {what}: {} ({})", db.message(), db.code().code()),
        None => format!("{shown}: {what}: {e}"),
    };
    let mut tx = conn
        .client
        .transaction()
        .map_err(|e| fail("cannot start the migration", e))?;
    // Everything under the lock, the version table too: instances starting together would
    // otherwise race to create it.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(|e| fail("cannot lock the schema", e))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(|e| fail("cannot create the schema_version table", e))?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0)::bigint FROM schema_version",
            &[],
        )
        .and_then(|r| r.try_get(0))
        .map_err(|e| fail("cannot read its schema version", e))?;
    if current > PG_SCHEMA_VERSION {
        return Err(format!(
            "{shown}: the database is at schema version {current}, newer than this botd {} knows (version {PG_SCHEMA_VERSION}); it was written by a newer botd. Run that release again, or restore a backup taken before the upgrade; botd does not start on it",
            env!("CARGO_PKG_VERSION")
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        let to = i as i32 + 1;
        tx.batch_execute(sql)
            .and_then(|_| tx.execute("DELETE FROM schema_version", &[]))
            .and_then(|_| tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&to]))
            .map_err(|e| fail(&format!("migration to schema version {to} failed"), e))?;
        log::info!("{shown}: database schema at version {to}");
    }
    tx.commit()
        .map_err(|e| fail("the migration did not commit", e))
}

fn log_quarantine(shown: &str, ns: Namespace, bot: &str, key: &str, reason: &str, id: i64) {
    log::error!(
        "{shown}: the {} {key:?} of bot \"{bot}\" cannot be used ({reason}); moved to quarantine #{id} (see `botd check`), the conversation goes on from a fresh state",
        ns.record_name()
    );
}

fn quarantine_record(
    conn: &mut Conn,
    ns: Namespace,
    bot: &str,
    key: &str,
    reason: &str,
    now: i64,
) -> Result<Option<i64>, postgres::Error> {
    let table = ns.name();
    let sha = key_sha(key);
    let rows = conn.query(
        &format!(
            "WITH moved AS (DELETE FROM {table} WHERE bot = $2 AND key_sha = $3 RETURNING key, value)
             INSERT INTO quarantine (kind, bot, key, raw, reason, at_ms)
             SELECT $1, $2, key, convert_to(value, 'UTF8'), $4, $5 FROM moved RETURNING id"
        ),
        &[&ns.record_name(), &bot, &sha, &reason, &now],
    )?;
    Ok(rows.first().map(|r| r.get(0)))
}

/// Removes one item and counts it off its conversation; the number of items removed.
fn remove_item(conn: &mut Conn, queue: Queue, id: u64) -> Result<u64, postgres::Error> {
    let rows = conn.query(
        "WITH gone AS (DELETE FROM queue_items WHERE id = $1 AND queue = $2 RETURNING queue, key_sha)
         UPDATE queue_keys k SET pending = k.pending - 1 FROM gone
         WHERE k.queue = gone.queue AND k.key_sha = gone.key_sha RETURNING 1",
        &[&(id as i64), &queue.name()],
    )?;
    Ok(rows.len() as u64)
}

/// Applies one op; the id of an enqueued item.
fn apply(
    conn: &mut Conn,
    op: &Op,
    now: i64,
    quarantined: &mut Vec<(Namespace, String, String, String, i64)>,
    queued: &mut Vec<Queue>,
) -> Result<Result<Option<u64>, String>, postgres::Error> {
    match op {
        Op::Put {
            ns,
            bot,
            key,
            value,
        } => {
            let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
            conn.execute(
                &format!(
                    "INSERT INTO {} (bot, key_sha, key, value, updated_ms) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (bot, key_sha) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
                    ns.name()
                ),
                &[bot, &key_sha(key), key, &text, &now],
            )?;
            Ok(Ok(None))
        }
        Op::Delete { ns, bot, key } => {
            conn.execute(
                &format!("DELETE FROM {} WHERE bot = $1 AND key_sha = $2", ns.name()),
                &[bot, &key_sha(key)],
            )?;
            Ok(Ok(None))
        }
        Op::Enqueue {
            queue,
            key,
            item,
            unless_seen,
        } => {
            if let Some(seen) = unless_seen {
                if !remember(conn, seen, now)? {
                    return Ok(Ok(None));
                }
            }
            let sha = key_sha(key);
            // The conversation's row first: its lock orders the ids of one conversation.
            conn.execute(
                "INSERT INTO queue_keys (queue, key_sha, key, pending) VALUES ($1, $2, $3, 1)
                 ON CONFLICT (queue, key_sha) DO UPDATE SET pending = queue_keys.pending + 1",
                &[&queue.name(), &sha, key],
            )?;
            let text = serde_json::to_string(item).unwrap_or_else(|_| "null".into());
            let row = conn.query(
                "INSERT INTO queue_items (queue, key_sha, key, item, created_ms) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&queue.name(), &sha, key, &text, &now],
            )?;
            if !queued.contains(queue) {
                queued.push(*queue);
            }
            Ok(Ok(row.first().map(|r| r.get::<_, i64>(0) as u64)))
        }
        Op::Dequeue { queue, id } => {
            remove_item(conn, *queue, *id)?;
            Ok(Ok(None))
        }
        Op::Finish { queue, id } => {
            if remove_item(conn, *queue, *id)? == 0 {
                return Ok(Err(format!(
                    "item #{id} of queue {} was handled already (by another instance)",
                    queue.name()
                )));
            }
            Ok(Ok(None))
        }
        Op::DeadLetter { queue, id, reason } => {
            conn.execute(
                "INSERT INTO dead_letters (queue, key, item, reason, at_ms)
                 SELECT queue, key, item, $3, $4 FROM queue_items WHERE id = $1 AND queue = $2",
                &[&(*id as i64), &queue.name(), reason, &now],
            )?;
            remove_item(conn, *queue, *id)?;
            Ok(Ok(None))
        }
        Op::Quarantine {
            ns,
            bot,
            key,
            reason,
        } => {
            if let Some(id) = quarantine_record(conn, *ns, bot, key, reason, now)? {
                quarantined.push((*ns, bot.clone(), key.clone(), reason.clone(), id));
            }
            Ok(Ok(None))
        }
    }
}

/// Remembers `seen` unless it is remembered and not expired; true when it was new. Two
/// instances offered the same id at once: the second waits for the first's commit, then
/// finds it.
fn remember(conn: &mut Conn, seen: &SeenId, now: i64) -> Result<bool, postgres::Error> {
    let changed = conn.execute(
        "INSERT INTO seen_ids (scope, hash, expires_ms) VALUES ($1, $2, $3)
         ON CONFLICT (scope, hash) DO UPDATE SET expires_ms = excluded.expires_ms
         WHERE seen_ids.expires_ms <= $4",
        &[&seen.scope, &seen.hash, &seen.expires_ms, &now],
    )?;
    Ok(changed > 0)
}

fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
}

impl Store for PostgresStore {
    fn get(&self, ns: Namespace, bot: &str, key: &str) -> Result<Option<Value>, StoreError> {
        let sha = key_sha(key);
        let raw: Option<String> = self.with_conn(|conn| {
            let rows = conn.query(
                &format!(
                    "SELECT value FROM {} WHERE bot = $1 AND key_sha = $2",
                    ns.name()
                ),
                &[&bot, &sha],
            )?;
            rows.first().map(|r| r.try_get(0)).transpose()
        })?;
        match raw.map(|t| parse(&t)) {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(why)) => {
                self.quarantine_now(ns, bot, key, &why)?;
                Ok(None)
            }
        }
    }

    fn scan(
        &self,
        ns: Namespace,
        bot: &str,
        visit: &mut dyn FnMut(&str, Value),
    ) -> Result<(), StoreError> {
        let rows: Vec<(String, String)> = self.with_conn(|conn| {
            conn.query(
                &format!("SELECT key, value FROM {} WHERE bot = $1", ns.name()),
                &[&bot],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
        })?;
        let mut damaged = Vec::new();
        for (key, text) in rows {
            match parse(&text) {
                Ok(v) => visit(&key, v),
                Err(why) => damaged.push((key, why)),
            }
        }
        for (key, why) in damaged {
            self.quarantine_now(ns, bot, &key, &why)?;
        }
        Ok(())
    }

    fn commit(&self, batch: Batch) -> Result<Committed, StoreError> {
        if batch.is_empty() {
            return Ok(Committed::default());
        }
        let now = now_ms();
        let prune = batch.ops.iter().any(|op| {
            matches!(
                op,
                Op::Enqueue {
                    unless_seen: Some(_),
                    ..
                }
            )
        }) && now - self.last_prune_ms.load(Ordering::Relaxed) >= PRUNE_EVERY_MS;
        let mut refused: Option<String> = None;
        let mut quarantined = Vec::new();
        let deferred = batch.durability == Durability::Soon;
        let ids = self.transaction(|conn| {
            refused = None;
            quarantined.clear();
            if deferred {
                // PostgreSQL's own deferred durability: the server's WAL writer flushes it
                // within three wal_writer_delays, and a later commit never survives an
                // earlier one's loss.
                conn.client
                    .batch_execute("SET LOCAL synchronous_commit TO OFF")?;
            }
            let mut queued = Vec::new();
            let mut ids = Vec::with_capacity(batch.ops.len());
            for op in &batch.ops {
                match apply(conn, op, now, &mut quarantined, &mut queued)? {
                    Ok(id) => ids.push(id),
                    Err(why) => {
                        refused = Some(why);
                        conn.client.batch_execute("ROLLBACK")?;
                        conn.client.batch_execute("BEGIN")?;
                        return Ok(Vec::new());
                    }
                }
            }
            if prune {
                conn.execute("DELETE FROM seen_ids WHERE expires_ms <= $1", &[&now])?;
            }
            for queue in queued {
                conn.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &queue.name()])?;
            }
            Ok(ids)
        })?;
        if let Some(why) = refused {
            return Err(StoreError::permanent(format!("{}: {why}", self.pool.shown)));
        }
        if prune {
            self.last_prune_ms.store(now, Ordering::Relaxed);
        }
        if deferred {
            self.deferred_commits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
        for (ns, bot, key, reason, id) in quarantined {
            log_quarantine(&self.pool.shown, ns, &bot, &key, &reason, id);
        }
        Ok(Committed::new(ids))
    }

    fn pending(&self, queue: Queue) -> Result<Vec<QueuedItem>, StoreError> {
        let rows: Vec<(i64, String, String)> = self.with_conn(|conn| {
            conn.query(
                "SELECT id, key, item FROM queue_items WHERE queue = $1 ORDER BY id",
                &[&queue.name()],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
        })?;
        self.items(queue, rows)
    }

    fn stats(&self) -> StoreStats {
        let commits = self.commits.load(Ordering::Relaxed);
        let deferred_commits = self.deferred_commits.load(Ordering::Relaxed);
        StoreStats {
            commits,
            deferred_commits,
            batches: commits + deferred_commits,
            checkpoints: 0,
            failed_groups: 0,
            // Counted by the server, not here: one WAL flush per commit at most.
            fsyncs: commits,
        }
    }

    fn shared(&self) -> bool {
        true
    }

    fn hold_conversation(
        &self,
        key: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<Box<dyn Hold>>, StoreError> {
        let lock = hash_id(key) as i64;
        let mut conn = self.pool.get()?;
        let wait_ms = match deadline {
            None => 0,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now()).as_millis() as i64;
                if left <= 0 {
                    self.pool.put(conn);
                    return Ok(None);
                }
                left
            }
        };
        let taken = (|| -> Result<(), postgres::Error> {
            // lock_timeout 0 waits for ever; a whole number of ms, not from input.
            conn.client
                .batch_execute(&format!("SET lock_timeout = {wait_ms}"))?;
            conn.execute("SELECT pg_advisory_lock($1)", &[&lock])?;
            Ok(())
        })();
        match taken {
            Ok(()) => Ok(Some(Box::new(AdvisoryHold {
                pool: self.pool.clone(),
                conn: Some(conn),
                unlock: Unlock::Conversation(lock),
            }))),
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                self.pool.put(conn);
                Ok(None)
            }
            Err(e) => Err(self.pool.err(e)),
        }
    }

    fn try_lead(&self, role: &str) -> Result<Option<Box<dyn Hold>>, StoreError> {
        let lock = hash_id(role) as i32;
        let mut conn = self.pool.get()?;
        let taken = conn
            .query(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&LEADER_SPACE, &lock],
            )
            .and_then(|rows| rows[0].try_get::<_, bool>(0));
        match taken {
            Ok(true) => Ok(Some(Box::new(AdvisoryHold {
                pool: self.pool.clone(),
                conn: Some(conn),
                unlock: Unlock::Leader(lock),
            }))),
            Ok(false) => {
                self.pool.put(conn);
                Ok(None)
            }
            Err(e) => Err(self.pool.err(e)),
        }
    }

    fn claim(&self, queue: Queue, lease: Duration) -> Result<Claim, StoreError> {
        let lease_ms = lease.as_millis() as i64;
        let me = self.instance.as_str();
        let name = queue.name();
        let (held, rows) = self.transaction(|conn| {
            // Rows an enqueue holds right now are skipped (renewed at the next claim, well
            // within the lease): a claim never waits for, nor deadlocks with, a commit.
            conn.execute(
                &format!(
                    "UPDATE queue_keys SET lease_until_ms = {DB_NOW} + $3
                     WHERE (queue, key_sha) IN (
                        SELECT queue, key_sha FROM queue_keys WHERE queue = $1 AND owner = $2
                        FOR UPDATE SKIP LOCKED)"
                ),
                &[&name, &me, &lease_ms],
            )?;
            conn.execute(
                &format!(
                    "UPDATE queue_keys SET owner = $2, lease_until_ms = {DB_NOW} + $3
                     WHERE (queue, key_sha) IN (
                        SELECT queue, key_sha FROM queue_keys
                        WHERE queue = $1 AND pending > 0 AND lease_until_ms <= {DB_NOW}
                        LIMIT 512 FOR UPDATE SKIP LOCKED)"
                ),
                &[&name, &me, &lease_ms],
            )?;
            // Conversations with nothing left are let go (an enqueue meanwhile has locked the
            // row and raised `pending`, which this re-checks).
            conn.execute(
                "DELETE FROM queue_keys WHERE (queue, key_sha) IN (
                    SELECT queue, key_sha FROM queue_keys
                    WHERE queue = $1 AND owner = $2 AND pending <= 0 FOR UPDATE SKIP LOCKED)
                 AND pending <= 0",
                &[&name, &me],
            )?;
            let held: Vec<String> = conn
                .query(
                    "SELECT key FROM queue_keys WHERE queue = $1 AND owner = $2",
                    &[&name, &me],
                )?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            let rows: Vec<(i64, String, String)> = conn
                .query(
                    "SELECT i.id, i.key, i.item FROM queue_items i
                     JOIN queue_keys k ON k.queue = i.queue AND k.key_sha = i.key_sha
                     WHERE k.queue = $1 AND k.owner = $2 ORDER BY i.id",
                    &[&name, &me],
                )?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Result<_, postgres::Error>>()?;
            Ok((held, rows))
        })?;
        Ok(Claim {
            held,
            items: self.items(queue, rows)?,
        })
    }

    fn release(&self, queue: Queue) -> Result<(), StoreError> {
        let me = self.instance.as_str();
        self.with_conn(|conn| {
            conn.execute(
                "UPDATE queue_keys SET lease_until_ms = 0 WHERE queue = $1 AND owner = $2",
                &[&queue.name(), &me],
            )
        })
        .map(|_| ())
    }

    fn watch(&self, queue: Queue, wake: Arc<dyn Fn() + Send + Sync>) {
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((queue, wake));
        self.start_listener();
    }

    fn describe(&self) -> String {
        format!("PostgreSQL {}", self.pool.shown)
    }
}

impl PostgresStore {
    /// Queue rows read: the items that parse, the others quarantined with a log line.
    fn items(
        &self,
        queue: Queue,
        rows: Vec<(i64, String, String)>,
    ) -> Result<Vec<QueuedItem>, StoreError> {
        let mut out = Vec::with_capacity(rows.len());
        for (id, key, text) in rows {
            match parse(&text) {
                Ok(item) => out.push(QueuedItem {
                    id: id as u64,
                    key,
                    item,
                }),
                Err(why) => {
                    let now = now_ms();
                    let moved = self.transaction(|conn| {
                        let rows = conn.query(
                            "INSERT INTO quarantine (kind, bot, key, raw, reason, at_ms)
                             SELECT 'queue ' || queue, '', key, convert_to(item, 'UTF8'), $2, $3
                             FROM queue_items WHERE id = $1 RETURNING id",
                            &[&id, &why, &now],
                        )?;
                        remove_item(conn, queue, id as u64)?;
                        Ok(rows.first().map(|r| r.get::<_, i64>(0)))
                    })?;
                    log::error!(
                        "{}: item #{id} of queue {} (conversation {key:?}) cannot be read ({why}); moved to quarantine #{} (see `botd check`), the queue goes on",
                        self.pool.shown,
                        queue.name(),
                        moved.unwrap_or(0)
                    );
                }
            }
        }
        Ok(out)
    }
}

enum Unlock {
    Conversation(i64),
    Leader(i32),
}

/// An advisory lock held on a connection of its own; released (and the connection given
/// back) when dropped. When the connection broke, the server has released the lock already.
struct AdvisoryHold {
    pool: Arc<Pool>,
    conn: Option<Conn>,
    unlock: Unlock,
}

impl Hold for AdvisoryHold {
    /// One round trip on the connection that holds the lock (a leader asks before each
    /// long poll): a broken connection means the server has let the lock go.
    fn held(&mut self) -> bool {
        match self.conn.as_mut() {
            Some(c) => c.client.is_valid(Duration::from_secs(3)).is_ok(),
            None => false,
        }
    }
}

impl Drop for AdvisoryHold {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let released = match self.unlock {
            Unlock::Conversation(k) => conn
                .execute("SELECT pg_advisory_unlock($1)", &[&k])
                .and_then(|_| conn.client.batch_execute("SET lock_timeout = 0")),
            Unlock::Leader(k) => conn
                .execute("SELECT pg_advisory_unlock($1, $2)", &[&LEADER_SPACE, &k])
                .map(|_| ()),
        };
        // A connection whose unlock failed is closed, which releases the lock for sure.
        if released.is_ok() {
            self.pool.put(conn);
        }
    }
}

/// What `botd check` says about a PostgreSQL database (see `sqlite::check_database`).
pub fn check_database(url: &str) -> super::sqlite::CheckReport {
    let shown = shown_url(url);
    let mut report = super::sqlite::CheckReport {
        lines: Vec::new(),
        summary: String::new(),
        sound: true,
    };
    let mut config: postgres::Config = match url.parse() {
        Ok(c) => c,
        Err(e) => {
            report
                .lines
                .push(format!("DATABASE_URL ({shown}): not a PostgreSQL URL: {e}"));
            report.sound = false;
            return report;
        }
    };
    config.connect_timeout(CONNECT_TIMEOUT);
    let mut client = match config.connect(NoTls) {
        Ok(c) => c,
        Err(e) => {
            report
                .lines
                .push(format!("{shown}: cannot reach the database: {e}"));
            report.sound = false;
            return report;
        }
    };
    let version = client
        .query_opt(
            "SELECT COALESCE(max(version), 0)::bigint FROM schema_version",
            &[],
        )
        .map(|r| r.map_or(0, |r| r.get::<_, i64>(0)));
    let version = match version {
        Ok(v) => v,
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => 0,
        Err(e) => {
            report
                .lines
                .push(format!("{shown}: cannot read the schema version: {e}"));
            report.sound = false;
            return report;
        }
    };
    if version > PG_SCHEMA_VERSION {
        report.lines.push(format!("{shown}: schema version {version} is newer than this botd knows ({PG_SCHEMA_VERSION}); botd will not start on it"));
        report.sound = false;
        return report;
    }
    if version < PG_SCHEMA_VERSION {
        report.summary = format!(
            "{shown}: schema version {version}; botd creates or migrates it to {PG_SCHEMA_VERSION} at its next start"
        );
        return report;
    }
    let server = client
        .query_one("SHOW server_version", &[])
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_default();
    let mut lines = Vec::new();
    let listed = (|| -> Result<(), postgres::Error> {
        for r in client.query(
            "SELECT id, kind, bot, key, reason FROM quarantine ORDER BY id",
            &[],
        )? {
            lines.push(format!(
                "{shown}: quarantine #{}: {} {:?} of bot \"{}\": {}",
                r.get::<_, i64>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(3),
                r.get::<_, String>(2),
                r.get::<_, String>(4)
            ));
        }
        for r in client.query(
            "SELECT id, queue, key, reason FROM dead_letters ORDER BY id",
            &[],
        )? {
            lines.push(format!(
                "{shown}: dead letter #{} of queue {} (conversation {:?}): {}",
                r.get::<_, i64>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, String>(3)
            ));
        }
        Ok(())
    })();
    if let Err(e) = listed {
        report
            .lines
            .push(format!("{shown}: cannot list quarantine: {e}"));
        report.sound = false;
        return report;
    }
    let queued: i64 = client
        .query_one("SELECT count(*) FROM queue_items", &[])
        .map(|r| r.get(0))
        .unwrap_or(0);
    let quarantined = lines
        .iter()
        .filter(|l| l.contains(": quarantine #"))
        .count();
    report.summary = format!(
        "{shown}: PostgreSQL {server} reachable, schema version {PG_SCHEMA_VERSION}, {queued} queued item(s), {quarantined} quarantined record(s), {} dead letter(s)",
        lines.len() - quarantined
    );
    report.lines = lines;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_hold_no_password() {
        assert_eq!(
            shown_url("postgres://botd:s3cret@db:5432/botd?sslmode=disable"),
            "postgres://botd@db:5432/botd"
        );
        assert_eq!(
            shown_url("postgresql://db/botd?user=botd&password=s3cret"),
            "postgresql://db/botd"
        );
        assert_eq!(shown_url("garbage"), "postgres://…");
    }
}
