//! The SQLite store: one database file, `data/storage/botd.sqlite`, in WAL mode with
//! `synchronous=FULL` (a commit that returned survives a power cut).
//!
//! Two connections: one writes, one reads. Writes go through a [`GroupCommit`]: batches that
//! are ready together are applied in one transaction and cost one fsync of the WAL between
//! them. If the group cannot commit as a whole (one batch refused, a full disk, an I/O
//! error), its batches are committed again one by one, so each gets its own answer and a
//! refused batch never fails the others. Reads use the other connection and never wait for a
//! commit's fsync (WAL lets them read the last commit).
//!
//! A group of [`Durability::Soon`] batches only (removals of sent replies) commits with
//! `synchronous=NORMAL`: its frames are written to the WAL, where a crash of botd cannot lose
//! them, but not fsynced. The next durable commit's fsync covers them (the WAL is one file,
//! written in order, and SQLite replays only an unbroken prefix of it after a power cut), and
//! when none comes within [`SYNC_WITHIN`] a syncer thread makes one of its own.
//!
//! Checkpoints (copying the WAL back into the database, two more fsyncs) are run by the
//! leader of a group once the WAL holds [`CHECKPOINT_PAGES`], after its followers were
//! answered, instead of by SQLite inside a commit. The store counts its commits and
//! checkpoints ([`StoreStats`]), which `/status` shows and the bench reads.
//!
//! The file and its `-wal`/`-shm` companions are created 0600, the folder 0700: they hold
//! conversations.

use super::group::GroupCommit;
use super::{
    create_dir_durable, create_private, restrict_mode, schema, Batch, Committed, Durability,
    Namespace, Op, Queue, QueuedItem, SeenId, Store, StoreError, StoreStats, SYNC_WITHIN,
};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The database's file name inside `data/storage/`.
pub const DATABASE_FILE: &str = "botd.sqlite";

/// How long a statement waits for another connection's lock (`botd check`, an operator's
/// `sqlite3`) before it fails as busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Expired seen ids are deleted at most this often, inside a commit that adds some.
const PRUNE_EVERY_MS: i64 = 60_000;
/// The WAL is checkpointed once it holds this many pages (SQLite's own default).
const CHECKPOINT_PAGES: i64 = 1000;

pub struct SqliteStore {
    writer: Arc<Mutex<Writer>>,
    reader: Mutex<Connection>,
    group: GroupCommit,
    shown: String,
    last_prune_ms: AtomicI64,
    /// Pages in the WAL after the last commit (told by the WAL hook).
    wal_pages: Arc<AtomicI64>,
    counters: Arc<Counters>,
    syncer: Arc<Syncer>,
    syncer_thread: Option<JoinHandle<()>>,
}

/// The writing connection, and whether the WAL holds commits not fsynced yet.
struct Writer {
    conn: Connection,
    /// The connection's `synchronous` setting is FULL (else NORMAL, for deferred groups).
    full_sync: bool,
    /// Some deferred commit is not covered by an fsync yet.
    unsynced: bool,
}

impl std::ops::Deref for Writer {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl Writer {
    /// `synchronous` FULL for a group with a durable batch, NORMAL for a deferred one.
    fn set_full_sync(&mut self, full: bool) -> rusqlite::Result<()> {
        if self.full_sync != full {
            let mode = if full { "FULL" } else { "NORMAL" };
            self.conn
                .execute_batch(&format!("PRAGMA synchronous = {mode}"))?;
            self.full_sync = full;
        }
        Ok(())
    }
}

/// When the syncer must make the deferred commits durable, and whether the store closes.
#[derive(Default)]
struct Syncer {
    state: Mutex<SyncerState>,
    wake: Condvar,
}

#[derive(Default)]
struct SyncerState {
    due: Option<Instant>,
    stopping: bool,
}

impl Syncer {
    fn lock(&self) -> MutexGuard<'_, SyncerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a durable commit within [`SYNC_WITHIN`] (unless one is asked already).
    fn schedule(&self) {
        let mut state = self.lock();
        if state.due.is_none() {
            state.due = Some(Instant::now() + SYNC_WITHIN);
            self.wake.notify_one();
        }
    }

    /// Waits until a sync is due (`true`) or the store closes (`false`).
    fn wait_due(&self) -> bool {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return false;
            }
            match state.due {
                Some(due) if Instant::now() >= due => {
                    state.due = None;
                    return true;
                }
                Some(due) => {
                    let left = due.saturating_duration_since(Instant::now());
                    state = self
                        .wake
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

/// Makes the deferred commits durable if no durable commit did: one small durable write (the
/// time of the sync in `meta`), whose fsync of the WAL covers every frame before it.
fn sync_deferred(writer: &Mutex<Writer>, counters: &Counters) -> rusqlite::Result<()> {
    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
    if !w.unsynced {
        return Ok(());
    }
    w.set_full_sync(true)?;
    w.conn
        .prepare_cached(
            "INSERT INTO meta (name, value) VALUES ('synced_at_ms', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )?
        .execute([now_ms().to_string()])?;
    w.unsynced = false;
    counters.commits.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// What the store did since it opened.
#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    deferred_commits: AtomicU64,
    batches: AtomicU64,
    checkpoints: AtomicU64,
    failed_groups: AtomicU64,
}

/// One batch applied: the ids it enqueued and the records it quarantined (logged once the
/// commit holds).
type Applied = (Vec<Option<u64>>, Vec<Quarantined>);
type Quarantined = (Namespace, String, String, String, i64);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Whether retrying the same statement could ever succeed.
fn is_permanent(e: &rusqlite::Error) -> bool {
    match e.sqlite_error_code() {
        Some(code) => matches!(
            code,
            ErrorCode::ConstraintViolation
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::TooBig
                | ErrorCode::TypeMismatch
                | ErrorCode::ApiMisuse
                | ErrorCode::InternalMalfunction
        ),
        // Conversions and misuse on our side: the same input fails the same way.
        None => true,
    }
}

/// The bytes of a stored JSON value, or why it cannot be one.
fn json_bytes(v: ValueRef<'_>) -> Result<Vec<u8>, String> {
    match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => Ok(b.to_vec()),
        ValueRef::Null => Err("the value is NULL".into()),
        ValueRef::Integer(_) | ValueRef::Real(_) => Err("the value is a number column".into()),
    }
}

fn parse(raw: Result<Vec<u8>, String>) -> Result<Value, String> {
    let bytes = raw?;
    serde_json::from_slice(&bytes).map_err(|e| format!("invalid JSON: {e}"))
}

impl SqliteStore {
    /// Opens `storage_dir/botd.sqlite`, creating folder and file private, applying the
    /// migrations, and importing the previous release's file store once. The error is one
    /// sentence naming the file.
    pub fn open(storage_dir: &Path) -> Result<SqliteStore, String> {
        let path = storage_dir.join(DATABASE_FILE);
        let shown = path.display().to_string();
        let folder = |e: std::io::Error| format!("{}: {e}", storage_dir.display());
        create_dir_durable(storage_dir).map_err(folder)?;
        // Made by an older release, or by hand: tightened; a folder or file owned by someone
        // else stays as it is (botd can still use it), with a warning.
        if let Err(e) = restrict_mode(storage_dir, 0o700) {
            log::warn!(
                "{}: cannot make it private (0700): {e}",
                storage_dir.display()
            );
        }
        // SQLite gives its -wal and -shm files the mode of the database file.
        match create_private(&path) {
            Ok(file) => {
                file.sync_all().map_err(|e| format!("{shown}: {e}"))?;
                std::fs::File::open(storage_dir)
                    .and_then(|d| d.sync_all())
                    .map_err(folder)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("{shown}: {e}")),
        }
        restrict_private(&path);
        let mut writer = Connection::open(&path).map_err(|e| format!("{shown}: {e}"))?;
        configure(&writer).map_err(|e| format!("{shown}: {e}"))?;
        schema::migrate(&mut writer, &shown)?;
        super::import::import_old_files(&mut writer, storage_dir, &shown)?;
        restrict_private(&path);
        // The WAL hook replaces SQLite's automatic checkpoint: the leader of a group runs it.
        let wal_pages = Arc::new(AtomicI64::new(0));
        let told = wal_pages.clone();
        writer
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
                told.store(i64::from(pages), Ordering::Relaxed);
                Ok(())
            }))
            .map_err(|e| format!("{shown}: {e}"))?;
        let reader = Connection::open(&path).map_err(|e| format!("{shown}: {e}"))?;
        configure(&reader).map_err(|e| format!("{shown}: {e}"))?;
        let writer = Arc::new(Mutex::new(Writer {
            conn: writer,
            full_sync: true,
            unsynced: false,
        }));
        let counters = Arc::new(Counters::default());
        let syncer = Arc::new(Syncer::default());
        let syncer_thread = {
            let (writer, counters, syncer) = (writer.clone(), counters.clone(), syncer.clone());
            let label = shown.clone();
            std::thread::Builder::new()
                .name("store-sync".into())
                .spawn(move || {
                    while syncer.wait_due() {
                        if let Err(e) = sync_deferred(&writer, &counters) {
                            log::warn!("{label}: cannot sync the latest removals ({e}); trying again in a second");
                            std::thread::sleep(Duration::from_secs(1));
                            syncer.schedule();
                        }
                    }
                })
                .map_err(|e| format!("{shown}: cannot start its sync thread: {e}"))?
        };
        Ok(SqliteStore {
            writer,
            reader: Mutex::new(reader),
            group: GroupCommit::default(),
            shown,
            last_prune_ms: AtomicI64::new(0),
            wal_pages,
            counters,
            syncer,
            syncer_thread: Some(syncer_thread),
        })
    }

    fn read_conn(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_conn(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits a group: all batches in one transaction; when the group cannot commit as a
    /// whole (one batch refused, a full disk), each batch alone, so each gets its own answer
    /// and one refused batch never fails the others. One result per batch, in order.
    fn run_group(&self, batches: Vec<Batch>) -> Vec<Result<Committed, StoreError>> {
        let now = now_ms();
        let mut conn = self.write_conn();
        let applied = match self.commit_group(&mut conn, &batches, now) {
            Ok(applied) => applied.into_iter().map(Ok).collect(),
            Err(e) if batches.len() == 1 => vec![Err(e)],
            Err(e) => {
                self.counters.failed_groups.fetch_add(1, Ordering::Relaxed);
                log::debug!(
                    "{}: a group of {} batches did not commit ({e}); committing them one by one",
                    self.shown,
                    batches.len()
                );
                batches
                    .iter()
                    .map(|b| self.commit_group(&mut conn, std::slice::from_ref(b), now))
                    .map(|r| r.map(|mut one| one.pop().expect("one result per batch")))
                    .collect()
            }
        };
        drop(conn);
        applied
            .into_iter()
            .map(|r| {
                r.map(|(ids, quarantined)| {
                    for (ns, bot, key, reason, id) in quarantined {
                        self.log_quarantine(ns, &bot, &key, &reason, id);
                    }
                    Committed::new(ids)
                })
            })
            .collect()
    }

    /// One transaction for `batches`, all or nothing: any error (a batch refused for good,
    /// a full disk) rolls the whole transaction back. No savepoint per batch: refusals are
    /// rare, and a savepoint costs two statements and a copy of every page it touches in the
    /// sub-journal on every commit; [`SqliteStore::run_group`] retries the batches one by one
    /// instead.
    fn commit_group(
        &self,
        writer: &mut Writer,
        batches: &[Batch],
        now: i64,
    ) -> Result<Vec<Applied>, StoreError> {
        let durable = batches.iter().any(|b| b.durability == Durability::Now);
        writer.set_full_sync(durable).map_err(|e| self.err(e))?;
        let tx = writer
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let mut results = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut quarantined = Vec::new();
            let ids = batch
                .ops
                .iter()
                .map(|op| apply(&tx, op, now, &mut quarantined))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| self.err(e))?;
            results.push((ids, quarantined));
        }
        let remembers = batches.iter().flat_map(|b| &b.ops).any(|op| {
            matches!(
                op,
                Op::Enqueue {
                    unless_seen: Some(_),
                    ..
                }
            )
        });
        if remembers && now - self.last_prune_ms.load(Ordering::Relaxed) >= PRUNE_EVERY_MS {
            tx.prepare_cached("DELETE FROM seen_ids WHERE expires_ms <= ?1")
                .and_then(|mut s| s.execute([now]))
                .map_err(|e| self.err(e))?;
            self.last_prune_ms.store(now, Ordering::Relaxed);
        }
        tx.commit().map_err(|e| self.err(e))?;
        if durable {
            // The WAL's fsync covers every frame before this commit's too.
            writer.unsynced = false;
            self.counters.commits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters
                .deferred_commits
                .fetch_add(1, Ordering::Relaxed);
            if !writer.unsynced {
                writer.unsynced = true;
                self.syncer.schedule();
            }
        }
        self.counters
            .batches
            .fetch_add(results.len() as u64, Ordering::Relaxed);
        Ok(results)
    }

    /// Copies the WAL back into the database once it is long enough. Passive: it never waits
    /// for a reader, and what it cannot copy now is copied next time.
    fn checkpoint_if_due(&self) {
        if self.wal_pages.load(Ordering::Relaxed) < CHECKPOINT_PAGES {
            return;
        }
        let conn = self.write_conn();
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(2)) {
            Ok(copied) => {
                self.wal_pages.store(0, Ordering::Relaxed);
                if copied > 0 {
                    self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => log::warn!("{}: checkpoint failed: {e}", self.shown),
        }
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError {
            permanent: is_permanent(&e),
            unavailable: false,
            message: format!("{}: {e}", self.shown),
        }
    }

    /// Moves a damaged record aside in its own transaction and says so in one log line.
    fn quarantine_now(
        &self,
        conn: &mut Connection,
        ns: Namespace,
        bot: &str,
        key: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let id = quarantine_record(&tx, ns, bot, key, reason, now_ms()).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        if let Some(id) = id {
            self.log_quarantine(ns, bot, key, reason, id);
        }
        Ok(())
    }

    fn log_quarantine(&self, ns: Namespace, bot: &str, key: &str, reason: &str, id: i64) {
        log::error!(
            "{}: the {} {key:?} of bot \"{bot}\" cannot be used ({reason}); moved to quarantine #{id} (see `botd check`), the conversation goes on from a fresh state",
            self.shown,
            ns.record_name()
        );
    }
}

impl Drop for SqliteStore {
    /// The deferred commits are made durable before the store closes.
    fn drop(&mut self) {
        self.syncer.lock().stopping = true;
        self.syncer.wake.notify_all();
        if let Some(thread) = self.syncer_thread.take() {
            let _ = thread.join();
        }
        if let Err(e) = sync_deferred(&self.writer, &self.counters) {
            log::warn!(
                "{}: cannot sync the latest removals at close: {e}",
                self.shown
            );
        }
    }
}

/// WAL, full sync, the busy timeout. Also used by `botd check`.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("SQLite kept journal mode {mode:?} instead of WAL");
    }
    // The writer's checkpoints are run by the group commit; the reader commits only the
    // rare quarantine, so SQLite's automatic checkpoint is off on both.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0")
}

/// The database and its companions 0600 (an older umask may have made them wider).
fn restrict_private(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        if let Err(e) = restrict_mode(&p, 0o600) {
            log::warn!("{}: cannot make it private (0600): {e}", p.display());
        }
    }
}

/// Moves one record into `quarantine`; its id, or `None` when there was no such record.
pub(super) fn quarantine_record(
    tx: &Connection,
    ns: Namespace,
    bot: &str,
    key: &str,
    reason: &str,
    now: i64,
) -> rusqlite::Result<Option<i64>> {
    let table = ns.name();
    let moved = tx.execute(
        &format!(
            "INSERT INTO quarantine (kind, bot, key, raw, reason, at_ms)
             SELECT ?1, bot, key, CAST(value AS BLOB), ?4, ?5 FROM {table} WHERE bot = ?2 AND key = ?3"
        ),
        params![ns.record_name(), bot, key, reason, now],
    )?;
    if moved == 0 {
        return Ok(None);
    }
    let id = tx.last_insert_rowid();
    tx.execute(
        &format!("DELETE FROM {table} WHERE bot = ?1 AND key = ?2"),
        params![bot, key],
    )?;
    Ok(Some(id))
}

/// Remembers `seen` unless it is remembered and not expired; true when it was new.
fn remember(tx: &Connection, seen: &SeenId, now: i64) -> rusqlite::Result<bool> {
    let changed = tx
        .prepare_cached(
            "INSERT INTO seen_ids (scope, hash, expires_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (scope, hash) DO UPDATE SET expires_ms = excluded.expires_ms
         WHERE seen_ids.expires_ms <= ?4",
        )?
        .execute(params![seen.scope, seen.hash, seen.expires_ms, now])?;
    Ok(changed > 0)
}

/// Applies one op; the id of an enqueued item.
fn apply(
    tx: &Connection,
    op: &Op,
    now: i64,
    quarantined: &mut Vec<Quarantined>,
) -> rusqlite::Result<Option<u64>> {
    match op {
        Op::Put {
            ns,
            bot,
            key,
            value,
        } => {
            let text = serde_json::to_string(value)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            tx.prepare_cached(&format!(
                "INSERT INTO {} (bot, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (bot, key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
                ns.name()
            ))?
            .execute(params![bot, key, text, now])?;
            Ok(None)
        }
        Op::Delete { ns, bot, key } => {
            tx.prepare_cached(&format!(
                "DELETE FROM {} WHERE bot = ?1 AND key = ?2",
                ns.name()
            ))?
            .execute(params![bot, key])?;
            Ok(None)
        }
        Op::Enqueue {
            queue,
            key,
            item,
            unless_seen,
        } => {
            if let Some(seen) = unless_seen {
                if !remember(tx, seen, now)? {
                    return Ok(None);
                }
            }
            let text = serde_json::to_string(item)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            tx.prepare_cached(
                "INSERT INTO queue_items (queue, key, item, created_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![queue.name(), key, text, now])?;
            Ok(Some(tx.last_insert_rowid() as u64))
        }
        Op::Dequeue { queue, id } => {
            tx.prepare_cached("DELETE FROM queue_items WHERE id = ?1 AND queue = ?2")?
                .execute(params![*id as i64, queue.name()])?;
            Ok(None)
        }
        Op::Finish { queue, id } => {
            let removed = tx
                .prepare_cached("DELETE FROM queue_items WHERE id = ?1 AND queue = ?2")?
                .execute(params![*id as i64, queue.name()])?;
            if removed == 0 {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
                    Some(format!(
                        "item #{id} of queue {} was handled already",
                        queue.name()
                    )),
                ));
            }
            Ok(None)
        }
        Op::DeadLetter { queue, id, reason } => {
            tx.prepare_cached(
                "INSERT INTO dead_letters (queue, key, item, reason, at_ms)
                 SELECT queue, key, item, ?3, ?4 FROM queue_items WHERE id = ?1 AND queue = ?2",
            )?
            .execute(params![*id as i64, queue.name(), reason, now])?;
            tx.prepare_cached("DELETE FROM queue_items WHERE id = ?1 AND queue = ?2")?
                .execute(params![*id as i64, queue.name()])?;
            Ok(None)
        }
        Op::Quarantine {
            ns,
            bot,
            key,
            reason,
        } => {
            if let Some(id) = quarantine_record(tx, *ns, bot, key, reason, now)? {
                quarantined.push((*ns, bot.clone(), key.clone(), reason.clone(), id));
            }
            Ok(None)
        }
    }
}

impl Store for SqliteStore {
    fn get(&self, ns: Namespace, bot: &str, key: &str) -> Result<Option<Value>, StoreError> {
        let mut conn = self.read_conn();
        let raw = conn
            .prepare_cached(&format!(
                "SELECT value FROM {} WHERE bot = ?1 AND key = ?2",
                ns.name()
            ))
            .and_then(|mut s| {
                s.query_row(params![bot, key], |r| Ok(json_bytes(r.get_ref(0)?)))
                    .optional()
            })
            .map_err(|e| self.err(e))?;
        match raw.map(parse) {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(why)) => {
                self.quarantine_now(&mut conn, ns, bot, key, &why)?;
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
        let mut conn = self.read_conn();
        let mut damaged = Vec::new();
        {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT key, value FROM {} WHERE bot = ?1",
                    ns.name()
                ))
                .map_err(|e| self.err(e))?;
            let mut rows = stmt.query(params![bot]).map_err(|e| self.err(e))?;
            while let Some(row) = rows.next().map_err(|e| self.err(e))? {
                let key: String = row.get(0).map_err(|e| self.err(e))?;
                match parse(json_bytes(row.get_ref(1).map_err(|e| self.err(e))?)) {
                    Ok(v) => visit(&key, v),
                    Err(why) => damaged.push((key, why)),
                }
            }
        }
        for (key, why) in damaged {
            self.quarantine_now(&mut conn, ns, bot, &key, &why)?;
        }
        Ok(())
    }

    fn commit(&self, batch: Batch) -> Result<Committed, StoreError> {
        if batch.is_empty() {
            return Ok(Committed::default());
        }
        let outcome = self
            .group
            .commit(batch, &mut |batches| self.run_group(batches));
        if outcome.led {
            self.checkpoint_if_due();
        }
        outcome.result
    }

    fn stats(&self) -> StoreStats {
        let c = &self.counters;
        let commits = c.commits.load(Ordering::Relaxed);
        let checkpoints = c.checkpoints.load(Ordering::Relaxed);
        StoreStats {
            commits,
            deferred_commits: c.deferred_commits.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            checkpoints,
            failed_groups: c.failed_groups.load(Ordering::Relaxed),
            fsyncs: commits + 2 * checkpoints,
        }
    }

    fn describe(&self) -> String {
        format!("SQLite {}", self.shown)
    }

    fn pending(&self, queue: Queue) -> Result<Vec<QueuedItem>, StoreError> {
        let mut conn = self.read_conn();
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, key, item FROM queue_items WHERE queue = ?1 ORDER BY id",
                )
                .map_err(|e| self.err(e))?;
            let mut rows = stmt.query([queue.name()]).map_err(|e| self.err(e))?;
            while let Some(row) = rows.next().map_err(|e| self.err(e))? {
                let id: i64 = row.get(0).map_err(|e| self.err(e))?;
                let key: String = row.get(1).map_err(|e| self.err(e))?;
                match parse(json_bytes(row.get_ref(2).map_err(|e| self.err(e))?)) {
                    Ok(item) => out.push(QueuedItem {
                        id: id as u64,
                        key,
                        item,
                    }),
                    Err(why) => damaged.push((id, key, why)),
                }
            }
        }
        for (id, key, why) in damaged {
            let moved = (|| -> rusqlite::Result<i64> {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                tx.execute(
                    "INSERT INTO quarantine (kind, bot, key, raw, reason, at_ms)
                     SELECT 'queue ' || queue, '', key, CAST(item AS BLOB), ?2, ?3 FROM queue_items WHERE id = ?1",
                    params![id, why, now_ms()],
                )?;
                let qid = tx.last_insert_rowid();
                tx.execute("DELETE FROM queue_items WHERE id = ?1", [id])?;
                tx.commit()?;
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                Ok(qid)
            })()
            .map_err(|e| self.err(e))?;
            log::error!(
                "{}: item #{id} of queue {} (conversation {key:?}) cannot be read ({why}); moved to quarantine #{moved} (see `botd check`), the queue goes on",
                self.shown,
                queue.name()
            );
        }
        Ok(out)
    }
}

/// Copies `storage_dir/botd.sqlite` to `target` with SQLite's online backup, safe while botd
/// serves: the copy is one consistent snapshot (taken in a single step under a read
/// transaction, which in WAL mode never blocks botd's commits), written to a temporary file
/// beside `target`, checked with `PRAGMA integrity_check`, synced, then renamed into place.
/// An existing `target` is never overwritten. Returns a one-line summary.
pub fn backup_database(storage_dir: &Path, target: &Path) -> Result<String, String> {
    let path = storage_dir.join(DATABASE_FILE);
    let shown = path.display().to_string();
    let target_shown = target.display().to_string();
    if !path.exists() {
        return Err(format!("{shown}: no database to back up"));
    }
    if target.exists() {
        return Err(format!(
            "{target_shown}: already exists; botd backup does not overwrite a file"
        ));
    }
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(format!("{}: no such folder", dir.display()));
    }
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("backup");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> Result<String, String> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let source =
            Connection::open_with_flags(&path, flags).map_err(|e| format!("{shown}: {e}"))?;
        source
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| format!("{shown}: {e}"))?;
        // The copy holds conversations: private from its first byte.
        create_private(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut copy = Connection::open(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        {
            let backup = rusqlite::backup::Backup::new(&source, &mut copy)
                .map_err(|e| format!("{shown}: cannot start the backup: {e}"))?;
            // All pages in one step: a stepwise copy restarts whenever botd commits. Busy
            // (a checkpoint or a migration holds the file) is tried again for a while.
            let mut tries = 0;
            loop {
                match backup.step(-1) {
                    Ok(rusqlite::backup::StepResult::Done) => break,
                    Ok(rusqlite::backup::StepResult::More) => continue,
                    Ok(_) if tries < 100 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Ok(_) => return Err(format!("{shown}: busy for 5 s; try the backup again")),
                    Err(e) => return Err(format!("{shown}: backup failed: {e}")),
                }
            }
        }
        let integrity: String = copy
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        if integrity != "ok" {
            return Err(format!(
                "{target_shown}: the copy fails its integrity check ({integrity}); not kept"
            ));
        }
        // One self-contained file: the copy's WAL folded back in.
        copy.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        let count = |table: &str| -> i64 {
            copy.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap_or(0)
        };
        let summary = format!(
            "{target_shown}: backup of {shown} at schema version {}: {} session(s), {} user(s), {} queued item(s); integrity ok",
            schema::version(&copy).unwrap_or(0),
            count("sessions"),
            count("users"),
            count("queue_items")
        );
        drop(copy);
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, target).map_err(|e| format!("{target_shown}: {e}"))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(summary)
    })();
    if result.is_err() {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = tmp.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    } else {
        for suffix in ["-wal", "-shm"] {
            let mut p = tmp.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }
    result
}

/// What `botd check` says about the database: one `path: what is wrong` line per finding
/// (a damaged database, a quarantined record, a dead letter), a summary, and whether the
/// database is sound.
pub struct CheckReport {
    pub lines: Vec<String>,
    pub summary: String,
    pub sound: bool,
}

/// Checks `storage_dir/botd.sqlite` without changing it: schema version, `PRAGMA
/// integrity_check`, quarantined records and dead letters.
pub fn check_database(storage_dir: &Path) -> CheckReport {
    let path = storage_dir.join(DATABASE_FILE);
    let shown = path.display().to_string();
    let mut report = CheckReport {
        lines: Vec::new(),
        summary: String::new(),
        sound: true,
    };
    if !path.exists() {
        report.summary = format!("{shown}: no database yet (botd creates it at start)");
        return report;
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match Connection::open_with_flags(&path, flags) {
        Ok(c) => c,
        Err(e) => {
            report.lines.push(format!("{shown}: cannot open: {e}"));
            report.sound = false;
            return report;
        }
    };
    let _ = conn.busy_timeout(BUSY_TIMEOUT);
    let fail = |report: &mut CheckReport, line: String| {
        report.lines.push(line);
        report.sound = false;
    };
    match schema::version(&conn) {
        Ok(v) if v > schema::SCHEMA_VERSION => {
            fail(&mut report, format!("{shown}: schema version {v} is newer than this botd knows ({}); botd will not start on it", schema::SCHEMA_VERSION));
            return report;
        }
        Ok(v) if v < schema::SCHEMA_VERSION => {
            report.summary = format!(
                "{shown}: schema version {v}; botd migrates it to {} at its next start",
                schema::SCHEMA_VERSION
            );
            return report;
        }
        Ok(_) => {}
        Err(e) => {
            fail(
                &mut report,
                format!("{shown}: not a readable database: {e}"),
            );
            return report;
        }
    }
    let integrity = (|| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    })();
    match integrity {
        Ok(lines) if lines == ["ok"] => {}
        Ok(lines) => {
            for l in lines {
                fail(&mut report, format!("{shown}: integrity check: {l}"));
            }
        }
        Err(e) => fail(&mut report, format!("{shown}: integrity check failed: {e}")),
    }
    let listed = (|| -> rusqlite::Result<Vec<String>> {
        let mut lines = Vec::new();
        let mut stmt =
            conn.prepare("SELECT id, kind, bot, key, reason FROM quarantine ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(format!(
                "{shown}: quarantine #{}: {} {:?} of bot \"{}\": {}",
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(4)?
            ))
        })?;
        for row in rows {
            lines.push(row?);
        }
        let mut stmt =
            conn.prepare("SELECT id, queue, key, reason FROM dead_letters ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(format!(
                "{shown}: dead letter #{} of queue {} (conversation {:?}): {}",
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?
            ))
        })?;
        for row in rows {
            lines.push(row?);
        }
        Ok(lines)
    })();
    match listed {
        Ok(lines) => {
            let quarantined = lines
                .iter()
                .filter(|l| l.contains(": quarantine #"))
                .count();
            report.summary = format!(
                "{shown}: {}, schema version {}, {quarantined} quarantined record(s), {} dead letter(s)",
                if report.sound { "integrity ok" } else { "integrity check failed" },
                schema::SCHEMA_VERSION,
                lines.len() - quarantined
            );
            report.lines.extend(lines);
        }
        Err(e) => fail(&mut report, format!("{shown}: cannot list quarantine: {e}")),
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("botd-sqlite-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn records_round_trip_with_hostile_keys() {
        let dir = temp("records");
        let store = SqliteStore::open(&dir).unwrap();
        let keys = [
            "../../etc/passwd".to_string(),
            "a'; DROP TABLE sessions; --".to_string(),
            "😀".repeat(1024),
            "api::u1".to_string(),
        ];
        let mut batch = Batch::new();
        for (i, key) in keys.iter().enumerate() {
            batch.put(Namespace::Sessions, "welcome-bot", key, json!({"n": i}));
        }
        store.commit(batch).unwrap();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                store.get(Namespace::Sessions, "welcome-bot", key).unwrap(),
                Some(json!({"n": i}))
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
        assert_eq!(seen.len(), keys.len());
        let mut batch = Batch::new();
        batch.delete(Namespace::Sessions, "welcome-bot", &keys[0]);
        store.commit(batch).unwrap();
        assert_eq!(
            store
                .get(Namespace::Sessions, "welcome-bot", &keys[0])
                .unwrap(),
            None
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn queues_keep_order_and_seen_ids_dedupe() {
        let dir = temp("queues");
        let store = SqliteStore::open(&dir).unwrap();
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
        assert!(committed.id(dup).is_none() && b > a);
        drop(store);
        let store = SqliteStore::open(&dir).unwrap();
        let mut batch = Batch::new();
        assert!(store
            .commit({
                let mut x = Batch::new();
                x.enqueue(
                    Queue::MessengerIn,
                    "k",
                    json!("again"),
                    Some(SeenId::new("t", "m1", later)),
                );
                x
            })
            .unwrap()
            .ids
            .iter()
            .all(Option::is_none));
        // An expired id counts as new.
        let old = SeenId {
            expires_ms: now_ms() - 1,
            ..SeenId::new("t", "m2", 0)
        };
        store
            .commit({
                let mut x = Batch::new();
                x.enqueue(Queue::TelegramIn, "z", json!(0), Some(old));
                x
            })
            .unwrap();
        let c = batch.enqueue(
            Queue::MessengerIn,
            "k",
            json!("c"),
            Some(SeenId::new("t", "m2", later)),
        );
        batch.dequeue(Queue::MessengerIn, a);
        let committed = store.commit(batch).unwrap();
        assert!(committed.id(c).unwrap() > b);
        let items: Vec<Value> = store
            .pending(Queue::MessengerIn)
            .unwrap()
            .into_iter()
            .map(|i| i.item)
            .collect();
        assert_eq!(items, vec![json!("b"), json!("c")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn damaged_rows_are_quarantined() {
        let dir = temp("damaged");
        let store = SqliteStore::open(&dir).unwrap();
        let mut batch = Batch::new();
        batch.put(Namespace::Kv, "welcome-bot", "global", json!({"a": 1}));
        let t = batch.enqueue(Queue::TelegramOut, "k", json!({"x": 1}), None);
        let id = store.commit(batch).unwrap().id(t).unwrap();
        {
            let conn = store.write_conn();
            conn.execute("UPDATE kv SET value = '{\"a\": ' WHERE key = 'global'", [])
                .unwrap();
            conn.execute(
                "UPDATE queue_items SET item = x'00ff' WHERE id = ?1",
                [id as i64],
            )
            .unwrap();
        }
        assert_eq!(
            store.get(Namespace::Kv, "welcome-bot", "global").unwrap(),
            None
        );
        assert!(store.pending(Queue::TelegramOut).unwrap().is_empty());
        drop(store);
        let report = check_database(&dir);
        assert!(report.sound, "{:?}", report.lines);
        assert_eq!(
            report
                .lines
                .iter()
                .filter(|l| l.contains("quarantine #"))
                .count(),
            2,
            "{:?}",
            report.lines
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_batch_in_a_group_fails_alone() {
        let dir = temp("group");
        let store = Arc::new(SqliteStore::open(&dir).unwrap());
        store
            .write_conn()
            .execute_batch(
                "CREATE TRIGGER no_bad BEFORE INSERT ON sessions WHEN NEW.key LIKE 'bad%'
                 BEGIN SELECT RAISE(ABORT, 'full'); END",
            )
            .unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..25)
                        .map(|i| {
                            let key = if i % 5 == 4 {
                                format!("bad{t}/{i}")
                            } else {
                                format!("{t}/{i}")
                            };
                            let mut batch = Batch::new();
                            batch.put(Namespace::Users, "welcome-bot", &key, json!(i));
                            batch.put(Namespace::Sessions, "welcome-bot", &key, json!(i));
                            (key, store.commit(batch).is_ok())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut good = 0;
        for t in threads {
            for (key, ok) in t.join().unwrap() {
                let bad = key.starts_with("bad");
                assert_eq!(ok, !bad, "{key}");
                // A failed batch left nothing, not even the write before the failing one.
                let user = store.get(Namespace::Users, "welcome-bot", &key).unwrap();
                assert_eq!(user.is_some(), !bad, "{key}");
                good += usize::from(!bad);
            }
        }
        let stats = store.stats();
        assert_eq!(stats.batches, good as u64);
        assert!(stats.commits <= stats.batches && stats.fsyncs >= stats.commits);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn deferred_commits_skip_the_fsync_and_reach_the_disk_soon_after() {
        let dir = temp("deferred");
        let store = SqliteStore::open(&dir).unwrap();
        let mut batch = Batch::new();
        let t = batch.enqueue(Queue::MessengerOut, "k", json!({"text": "a"}), None);
        let id = store.commit(batch).unwrap().id(t).unwrap();
        let durable = store.stats().commits;

        let mut removal = Batch::soon();
        removal.dequeue(Queue::MessengerOut, id);
        store.commit(removal).unwrap();
        // Visible at once, counted apart, and no fsync of its own yet.
        assert!(store.pending(Queue::MessengerOut).unwrap().is_empty());
        let stats = store.stats();
        assert_eq!((stats.deferred_commits, stats.commits), (1, durable));
        assert!(store.write_conn().unsynced);

        // The syncer makes it durable within SYNC_WITHIN (bounded wait, generous for CI).
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.write_conn().unsynced && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!store.write_conn().unsynced, "the syncer never synced");
        assert_eq!(store.stats().commits, durable + 1);

        // A durable commit after a deferred one covers it: nothing left for the syncer.
        let mut removal = Batch::soon();
        removal.put(Namespace::Kv, "bot1", "x", json!(1));
        store.commit(removal).unwrap();
        assert!(store.write_conn().unsynced);
        let mut batch = Batch::new();
        batch.put(Namespace::Kv, "bot1", "y", json!(2));
        store.commit(batch).unwrap();
        assert!(!store.write_conn().unsynced);
        assert!(store.write_conn().full_sync);

        drop(store);
        let store = SqliteStore::open(&dir).unwrap();
        assert!(store.pending(Queue::MessengerOut).unwrap().is_empty());
        assert_eq!(
            store.get(Namespace::Kv, "bot1", "x").unwrap(),
            Some(json!(1))
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_leader_checkpoints_so_the_wal_stays_bounded() {
        let dir = temp("checkpoint");
        let store = SqliteStore::open(&dir).unwrap();
        let value = json!({"text": "x".repeat(6000)});
        for i in 0..800 {
            let mut batch = Batch::new();
            batch.put(
                Namespace::Sessions,
                "welcome-bot",
                &format!("k{i}"),
                value.clone(),
            );
            store.commit(batch).unwrap();
        }
        let stats = store.stats();
        assert!(stats.checkpoints > 0, "{stats:?}");
        assert_eq!(stats.fsyncs, stats.commits + 2 * stats.checkpoints);
        // SQLite's WAL restarts from its start after a checkpoint: it never holds much more
        // than CHECKPOINT_PAGES pages (4 KiB each) plus what one commit adds.
        let wal = std::fs::metadata(dir.join("botd.sqlite-wal"))
            .unwrap()
            .len();
        assert!(
            wal < 2 * CHECKPOINT_PAGES as u64 * 4096,
            "WAL of {wal} bytes"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_batch_leaves_nothing() {
        let dir = temp("atomic");
        let store = SqliteStore::open(&dir).unwrap();
        store
            .write_conn()
            .execute_batch(
                "CREATE TRIGGER no_users BEFORE INSERT ON users BEGIN SELECT RAISE(ABORT, 'full'); END",
            )
            .unwrap();
        let mut batch = Batch::new();
        batch.put(Namespace::Sessions, "welcome-bot", "s", json!({}));
        batch.put(Namespace::Users, "welcome-bot", "u", json!({}));
        let err = store.commit(batch).unwrap_err();
        assert!(err.permanent, "{err}");
        assert_eq!(
            store.get(Namespace::Sessions, "welcome-bot", "s").unwrap(),
            None
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
