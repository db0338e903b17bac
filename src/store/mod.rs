//! Runtime state behind a narrow, transactional interface, on an embedded SQLite database
//! (`sqlite`) or, with `DATABASE_URL`, on PostgreSQL shared by several instances (`postgres`,
//! the cargo feature of that name): JSON records addressed by typed keys (namespace, bot,
//! key), FIFO queues per channel with an order that survives restarts, and ids already seen
//! with an expiry. Every change is an [`Op`] in a [`Batch`]; a batch is committed whole or
//! not at all, and a batch is plain data, so batches that are ready together share one
//! commit (see `group`): the fsyncs per turn fall as load rises.
//!
//! A record or queue item that does not parse is moved to a quarantine (with one error log
//! line naming it) and reads as absent, so the conversation goes on from a fresh state.
//!
//! What several instances need is part of the interface, and costs nothing on a store no
//! other process shares: holding a conversation across instances
//! ([`Store::hold_conversation`]), leading a role ([`Store::try_lead`]), and claiming a
//! queue's conversations with leases ([`Store::claim`], [`Store::watch`], [`Store::release`]).

mod group;
mod import;
#[cfg(feature = "postgres")]
mod postgres;
mod schema;
mod sqlite;

pub use import::move_aside;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PG_SCHEMA_VERSION};
pub use schema::SCHEMA_VERSION;
pub use sqlite::{backup_database, check_database, CheckReport, SqliteStore, DATABASE_FILE};

/// The database `DATABASE_URL` names (process environment or `data/.env`): `None` when it is
/// unset (then SQLite in `data/storage/`), an error when it is not a PostgreSQL URL.
pub fn database_url(env: &crate::config::dotenv::Env) -> Result<Option<String>, String> {
    let Some(url) = env.get("DATABASE_URL") else {
        return Ok(None);
    };
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Some(url.to_string()));
    }
    let scheme = url.split("://").next().unwrap_or(url);
    Err(format!(
        "DATABASE_URL: \"{scheme}://…\" is not a database botd uses: set it to a PostgreSQL URL (postgres://user:password@host:5432/botd), or remove it to use SQLite in data/storage"
    ))
}

/// Opens the store the environment chooses: PostgreSQL when `DATABASE_URL` is set, SQLite
/// in `storage_dir` otherwise. The error is one sentence naming the database.
pub fn open(
    env: &crate::config::dotenv::Env,
    storage_dir: &Path,
) -> Result<Arc<dyn Store>, String> {
    match database_url(env)? {
        None => Ok(Arc::new(SqliteStore::open(storage_dir)?)),
        Some(url) => open_postgres(&url),
    }
}

#[cfg(feature = "postgres")]
fn open_postgres(url: &str) -> Result<Arc<dyn Store>, String> {
    Ok(Arc::new(PostgresStore::open(url)?))
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(_url: &str) -> Result<Arc<dyn Store>, String> {
    Err(NO_POSTGRES.to_string())
}

#[cfg(not(feature = "postgres"))]
const NO_POSTGRES: &str = "DATABASE_URL is a PostgreSQL URL, but this botd was built without PostgreSQL support: build it with `cargo build --release --features postgres` (`make build` does), or remove DATABASE_URL to use SQLite";

/// `botd check` on the database the environment chooses (see [`open`]).
pub fn check(env: &crate::config::dotenv::Env, storage_dir: &Path) -> CheckReport {
    let failed = |line: String| CheckReport {
        lines: vec![line],
        summary: String::new(),
        sound: false,
    };
    match database_url(env) {
        Err(e) => failed(e),
        Ok(None) => check_database(storage_dir),
        #[cfg(feature = "postgres")]
        Ok(Some(url)) => postgres::check_database(&url),
        #[cfg(not(feature = "postgres"))]
        Ok(Some(_)) => failed(NO_POSTGRES.to_string()),
    }
}

use serde_json::Value;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What kind of record a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// Dialog sessions: context, temp, session data and their expiry times.
    Sessions,
    /// User attributes (`state.user`), per bot, channel and user id.
    Users,
    /// The bot's key-value store (`state.bot` is the entry `global`).
    Kv,
    /// A channel's own state for a bot (Telegram's getUpdates offset); never seen by bots.
    Channel,
}

impl Namespace {
    /// The table (and, in the old file store, the folder) of this namespace.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::Sessions => "sessions",
            Namespace::Users => "users",
            Namespace::Kv => "kv",
            Namespace::Channel => "channel_state",
        }
    }

    /// What one record is called in log lines.
    pub fn record_name(self) -> &'static str {
        match self {
            Namespace::Sessions => "session",
            Namespace::Users => "user",
            Namespace::Kv => "bot KV entry",
            Namespace::Channel => "channel state",
        }
    }

    /// The namespaces of conversation state (the previous release's file store had these).
    pub const ALL: [Namespace; 3] = [Namespace::Sessions, Namespace::Users, Namespace::Kv];
}

/// The durable queues of the push channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    MessengerIn,
    MessengerOut,
    TelegramIn,
    TelegramOut,
}

impl Queue {
    pub fn name(self) -> &'static str {
        match self {
            Queue::MessengerIn => "messenger-in",
            Queue::MessengerOut => "messenger-out",
            Queue::TelegramIn => "telegram-in",
            Queue::TelegramOut => "telegram-out",
        }
    }
}

/// An id remembered for deduplication until `expires_ms` (unix ms). The id itself is never
/// stored: only the first 64 bits of its SHA-256, within a scope (e.g. `messenger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenId {
    pub scope: &'static str,
    pub hash: i64,
    pub expires_ms: i64,
}

impl SeenId {
    pub fn new(scope: &'static str, id: &str, expires_ms: i64) -> SeenId {
        SeenId {
            scope,
            hash: hash_id(id) as i64,
            expires_ms,
        }
    }
}

/// The 64-bit hash an id is remembered as (the same as the previous release's `seen.log`).
pub fn hash_id(id: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// One change. Ids and keys are always bound as parameters, never written into SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Put {
        ns: Namespace,
        bot: String,
        key: String,
        value: Value,
    },
    Delete {
        ns: Namespace,
        bot: String,
        key: String,
    },
    /// Appends `item` to `queue` under `key` (a conversation); with `unless_seen`, only when
    /// that id is not remembered yet (and then it is remembered, in the same commit).
    Enqueue {
        queue: Queue,
        key: String,
        item: Value,
        unless_seen: Option<SeenId>,
    },
    /// Removes a finished item.
    Dequeue { queue: Queue, id: u64 },
    /// Removes the item whose handling this batch records (a turn): the batch fails with a
    /// permanent error when the item is gone, which happens only when another instance
    /// already handled it, so an event is never played twice.
    Finish { queue: Queue, id: u64 },
    /// Moves an item that failed for good to the dead letters, with why.
    DeadLetter {
        queue: Queue,
        id: u64,
        reason: String,
    },
    /// Moves a record that cannot be used to the quarantine, with why.
    Quarantine {
        ns: Namespace,
        bot: String,
        key: String,
        reason: String,
    },
}

/// Changes committed together: all of them, or none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub ops: Vec<Op>,
    pub durability: Durability,
}

/// When a committed batch is on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Before [`Store::commit`] returns (one fsync, shared by the batches of a group).
    #[default]
    Now,
    /// Within [`SYNC_WITHIN`] of the commit: the commit returns once the change is written
    /// and visible, without waiting for the disk. A crash of botd itself never loses it (the
    /// system already holds what was written); a power cut or a system crash in that window
    /// may, and then a later commit is lost with it, never an earlier one. Only for changes
    /// whose loss makes botd repeat work already done — the removal of a reply already
    /// sent, which then goes out again like an API call that was in flight — never for what
    /// a client was told is saved.
    Soon,
}

/// How long a [`Durability::Soon`] commit may stay off the disk (PostgreSQL's own bound for
/// `synchronous_commit = off` is three `wal_writer_delay`s, 600 ms by default).
pub const SYNC_WITHIN: Duration = Duration::from_millis(50);

/// Which [`Op::Enqueue`] of a batch an id is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(usize);

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// A batch whose commit may reach the disk a little later ([`Durability::Soon`]).
    pub fn soon() -> Batch {
        Batch {
            ops: Vec::new(),
            durability: Durability::Soon,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn put(&mut self, ns: Namespace, bot: &str, key: &str, value: Value) {
        self.ops.push(Op::Put {
            ns,
            bot: bot.to_string(),
            key: key.to_string(),
            value,
        });
    }

    pub fn delete(&mut self, ns: Namespace, bot: &str, key: &str) {
        self.ops.push(Op::Delete {
            ns,
            bot: bot.to_string(),
            key: key.to_string(),
        });
    }

    pub fn enqueue(
        &mut self,
        queue: Queue,
        key: &str,
        item: Value,
        unless_seen: Option<SeenId>,
    ) -> Ticket {
        self.ops.push(Op::Enqueue {
            queue,
            key: key.to_string(),
            item,
            unless_seen,
        });
        Ticket(self.ops.len() - 1)
    }

    pub fn dequeue(&mut self, queue: Queue, id: u64) {
        self.ops.push(Op::Dequeue { queue, id });
    }

    pub fn finish(&mut self, queue: Queue, id: u64) {
        self.ops.push(Op::Finish { queue, id });
    }

    pub fn dead_letter(&mut self, queue: Queue, id: u64, reason: &str) {
        self.ops.push(Op::DeadLetter {
            queue,
            id,
            reason: reason.to_string(),
        });
    }

    pub fn quarantine(&mut self, ns: Namespace, bot: &str, key: &str, reason: &str) {
        self.ops.push(Op::Quarantine {
            ns,
            bot: bot.to_string(),
            key: key.to_string(),
            reason: reason.to_string(),
        });
    }
}

/// What a commit gave back: the id of each enqueued item (`None` when its id was seen).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Committed {
    ids: Vec<Option<u64>>,
}

impl Committed {
    pub fn new(ids: Vec<Option<u64>>) -> Committed {
        Committed { ids }
    }

    pub fn id(&self, ticket: Ticket) -> Option<u64> {
        self.ids.get(ticket.0).copied().flatten()
    }
}

/// One item of a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedItem {
    pub id: u64,
    pub key: String,
    pub item: Value,
}

/// A storage failure. `permanent` when trying again cannot help (a constraint, a damaged
/// database, a value too big); otherwise (disk full, I/O error, busy) a retry may succeed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreError {
    pub message: String,
    pub permanent: bool,
    /// The database cannot be reached at all (a PostgreSQL server down or restarting): the
    /// request is answered 503, and queued work waits until it is back.
    pub unavailable: bool,
}

impl StoreError {
    pub fn transient(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            permanent: false,
            unavailable: false,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            permanent: false,
            unavailable: true,
        }
    }

    pub fn permanent(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            permanent: true,
            unavailable: false,
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

impl From<StoreError> for io::Error {
    fn from(e: StoreError) -> io::Error {
        io::Error::other(e.message)
    }
}

/// What a store did since it opened, for `/status` and the bench.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Durable commits (each one fsync of the WAL, whatever number of batches it held).
    pub commits: u64,
    /// Commits of [`Durability::Soon`] batches only, which did not wait for the disk (made
    /// durable by the next durable commit, or by one of their own within [`SYNC_WITHIN`]).
    #[serde(rename = "deferredCommits")]
    pub deferred_commits: u64,
    /// Batches committed (turns, webhook deliveries, removals of finished items).
    pub batches: u64,
    /// Checkpoints that copied the WAL into the database (two fsyncs each).
    pub checkpoints: u64,
    /// Groups that could not commit together and were committed one batch at a time.
    #[serde(rename = "failedGroups")]
    pub failed_groups: u64,
    /// The fsyncs these cost: one per commit, two per checkpoint.
    pub fsyncs: u64,
}

/// Conversation state and channel queues. A commit is atomic, and durable when it returns
/// unless its batch says [`Durability::Soon`].
pub trait Store: Send + Sync {
    /// A record; `None` when absent (or just quarantined because it does not parse).
    fn get(&self, ns: Namespace, bot: &str, key: &str) -> Result<Option<Value>, StoreError>;
    /// Calls `visit(key, value)` for every readable record of `ns` for `bot` (the janitor).
    /// `visit` runs while the store is busy reading: it must not call the store itself.
    fn scan(
        &self,
        ns: Namespace,
        bot: &str,
        visit: &mut dyn FnMut(&str, Value),
    ) -> Result<(), StoreError>;
    /// Applies every op of `batch` in one transaction.
    fn commit(&self, batch: Batch) -> Result<Committed, StoreError>;
    /// Every item of `queue`, oldest first (items that do not parse are quarantined).
    fn pending(&self, queue: Queue) -> Result<Vec<QueuedItem>, StoreError>;
    /// What the store did since it opened.
    fn stats(&self) -> StoreStats;

    /// Whether other botd instances may use this store at the same time (PostgreSQL). Then
    /// queues are drained through [`Store::claim`], not from what this process pushed.
    fn shared(&self) -> bool {
        false
    }

    /// Holds the conversation `key` against every other instance until the hold is dropped,
    /// waiting (in arrival order) until `deadline`; `None` when the deadline passed first.
    /// Inside one process the engine's own FIFO locks already order turns, so a store that
    /// no other process shares holds nothing.
    fn hold_conversation(
        &self,
        _key: &str,
        _deadline: Option<Instant>,
    ) -> Result<Option<Box<dyn Hold>>, StoreError> {
        Ok(Some(Box::new(LocalHold)))
    }

    /// Tries to become the one instance doing `role` (polling a Telegram bot): `None` when
    /// another instance leads. The hold lasts until dropped, or until [`Hold::held`] says it
    /// was lost (the connection that held it broke).
    fn try_lead(&self, _role: &str) -> Result<Option<Box<dyn Hold>>, StoreError> {
        Ok(Some(Box::new(LocalHold)))
    }

    /// Renews this instance's leases on `queue`'s conversations, takes conversations with
    /// work that nobody holds (or whose holder stopped renewing), and returns every item of
    /// the conversations it now holds, oldest first. Only for a [`Store::shared`] store.
    fn claim(&self, queue: Queue, _lease: Duration) -> Result<Claim, StoreError> {
        Err(StoreError::permanent(format!(
            "queue {}: claims are only for a database shared by several instances",
            queue.name()
        )))
    }

    /// Gives up this instance's leases on `queue` (a graceful stop), so the other instances
    /// take its conversations at once instead of when the leases end.
    fn release(&self, _queue: Queue) -> Result<(), StoreError> {
        Ok(())
    }

    /// Calls `wake` whenever another instance (or this one) queued work on `queue`, and once
    /// the database is reachable again after it was not. Only a shared store calls it.
    fn watch(&self, _queue: Queue, _wake: Arc<dyn Fn() + Send + Sync>) {}

    /// What the store is, for the start-up log line (`SQLite data/storage/botd.sqlite`).
    fn describe(&self) -> String;
}

/// What [`Store::claim`] gave: the conversations held (their keys) and all their items.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claim {
    pub held: Vec<String>,
    pub items: Vec<QueuedItem>,
}

/// Something held against the other instances: a conversation, a leadership.
pub trait Hold: Send {
    /// Whether it is still held (a leadership is lost with its database connection).
    fn held(&mut self) -> bool {
        true
    }
}

/// The hold of a store no other process shares: always held.
pub struct LocalHold;

impl Hold for LocalHold {}

/// Writes `bytes` to `path` so that readers see either the old file or the new one, and the
/// new one survives a power cut once this returns: a temp file in the same folder, fsync,
/// rename, then fsync of the folder (which makes the rename itself durable). The file is
/// created 0600: what botd writes holds secrets or conversations.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent folder"))?;
    create_dir_durable(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        unique_counter()
    ));
    let result = (|| {
        let mut file = create_private(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A new file readable by its owner only (0600, whatever the umask lets through less).
pub fn create_private(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// `create_dir_all` with new folders 0700, plus an fsync of every folder that gained an
/// entry, so new folders survive a power cut too. Costs nothing when `dir` already exists.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    let mut existing = dir;
    while let Some(parent) = existing.parent() {
        existing = parent;
        if existing.as_os_str().is_empty() || existing.is_dir() {
            break;
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // Sync from the first folder that already existed down to the parent of `dir`.
    let mut to_sync: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|a| *a != existing)
        .collect();
    to_sync.push(existing);
    for folder in to_sync {
        let folder = if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            folder
        };
        std::fs::File::open(folder)?.sync_all()?;
    }
    Ok(())
}

/// Sets `path` to `mode` when it exists and is more open (files made by an older release).
pub fn restrict_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o777 & !mode != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn unique_counter() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Bot ids allowed to touch a path: Botpress's rule (letters, digits, `_` and `-`, at least
/// four characters, starting and ending with a letter or digit), capped at 64 characters.
pub fn is_valid_bot_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() >= 4
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_chooses_the_store() {
        let env = |url: &str| {
            let file =
                std::env::temp_dir().join(format!("botd-env-{}-{}", std::process::id(), url.len()));
            std::fs::write(&file, format!("DATABASE_URL={url}\n")).unwrap();
            let env = crate::config::dotenv::Env::load(&file).unwrap();
            let _ = std::fs::remove_file(&file);
            env
        };
        if std::env::var_os("DATABASE_URL").is_some() {
            return; // The process environment wins over the file: nothing to learn here.
        }
        assert_eq!(database_url(&env("")).unwrap(), None);
        assert_eq!(
            database_url(&env("postgres://u@h/db")).unwrap().as_deref(),
            Some("postgres://u@h/db")
        );
        let err = database_url(&env("mysql://u@h/db")).unwrap_err();
        assert!(
            err.contains("DATABASE_URL") && err.contains("mysql://"),
            "{err}"
        );
        #[cfg(not(feature = "postgres"))]
        {
            let dir = std::env::temp_dir().join(format!("botd-nopg-{}", std::process::id()));
            let err = open(&env("postgres://u@127.0.0.1:1/db"), &dir)
                .err()
                .unwrap();
            assert!(
                err.contains("without PostgreSQL support") && err.contains("--features postgres"),
                "{err}"
            );
            assert!(!dir.exists(), "no SQLite database was made instead");
        }
    }

    #[test]
    fn bot_id_allowlist() {
        for ok in ["welcome-bot", "abcd", "my_bot-2", "A1B2"] {
            assert!(is_valid_bot_id(ok), "{ok}");
        }
        for bad in [
            "",
            "abc",
            "../x",
            "a/bc",
            "-abc",
            "abc-",
            "a b c",
            "___",
            "..",
            "bot.json",
            &"a".repeat(65),
        ] {
            assert!(!is_valid_bot_id(bad), "{bad}");
        }
    }

    #[test]
    fn private_files_and_folders() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("botd-modes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = dir.join("a").join("b").join("secret.json");
        atomic_write(&file, b"{}").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir.join("a")), 0o700);
        assert_eq!(mode(&dir.join("a").join("b")), 0o700);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict_mode(&file, 0o600).unwrap();
        assert_eq!(mode(&file), 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
