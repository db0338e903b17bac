//! The database schema and its migrations. The version lives in the `schema_version` table;
//! botd applies the migrations above it at start, each in its own transaction, and refuses a
//! database newer than it knows (written by a later release) rather than guess at it.

use rusqlite::{Connection, OptionalExtension};

/// The schema this botd writes.
pub const SCHEMA_VERSION: i64 = 2;

/// Migration N (1-based) takes a database from version N-1 to N.
const MIGRATIONS: &[&str] = &[
    // 1: records, queues, seen ids, quarantine, dead letters.
    "
    CREATE TABLE sessions (
        bot TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, updated_ms INTEGER NOT NULL,
        PRIMARY KEY (bot, key)
    ) WITHOUT ROWID;
    CREATE TABLE users (
        bot TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, updated_ms INTEGER NOT NULL,
        PRIMARY KEY (bot, key)
    ) WITHOUT ROWID;
    CREATE TABLE kv (
        bot TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, updated_ms INTEGER NOT NULL,
        PRIMARY KEY (bot, key)
    ) WITHOUT ROWID;
    -- AUTOINCREMENT: ids never go back, even after the newest item is removed, so the order
    -- of a conversation's items is the order of their ids across restarts.
    CREATE TABLE queue_items (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL, key TEXT NOT NULL, item TEXT NOT NULL, created_ms INTEGER NOT NULL
    );
    CREATE INDEX queue_items_by_queue ON queue_items (queue, id);
    CREATE TABLE seen_ids (
        scope TEXT NOT NULL, hash INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
        PRIMARY KEY (scope, hash)
    ) WITHOUT ROWID;
    CREATE INDEX seen_ids_by_expiry ON seen_ids (expires_ms);
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL, bot TEXT NOT NULL, key TEXT NOT NULL,
        raw BLOB, reason TEXT NOT NULL, at_ms INTEGER NOT NULL
    );
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL, key TEXT NOT NULL, item TEXT NOT NULL,
        reason TEXT NOT NULL, at_ms INTEGER NOT NULL
    );
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    ",
    // 2: a channel's own state per bot (Telegram's getUpdates offset, which used to be
    // `storage/telegram/<bot>/offset.json`), so it commits with the updates it confirms.
    "
    CREATE TABLE channel_state (
        bot TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, updated_ms INTEGER NOT NULL,
        PRIMARY KEY (bot, key)
    ) WITHOUT ROWID;
    ",
];

/// The version of the schema in `conn`: 0 for a database botd never set up.
pub fn version(conn: &Connection) -> rusqlite::Result<i64> {
    let has_table: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(0);
    }
    Ok(conn
        .query_row("SELECT max(version) FROM schema_version", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()?
        .flatten()
        .unwrap_or(0))
}

/// Brings `conn` to [`SCHEMA_VERSION`]. `shown` names the file in the refusal.
pub fn migrate(conn: &mut Connection, shown: &str) -> Result<(), String> {
    let current =
        version(conn).map_err(|e| format!("{shown}: cannot read its schema version: {e}"))?;
    if current > SCHEMA_VERSION {
        return Err(format!(
            "{shown}: the database is at schema version {current}, newer than this botd {} knows (version {SCHEMA_VERSION}); it was written by a newer botd. Run that release again, or restore a backup taken before the upgrade; botd does not start on it",
            env!("CARGO_PKG_VERSION")
        ));
    }
    if current < 0 {
        return Err(format!(
            "{shown}: the schema version {current} is not one botd ever wrote; the database is not botd's"
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let to = i as i64 + 1;
        let mut apply = || -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
            )?;
            tx.execute("DELETE FROM schema_version", [])?;
            tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [to])?;
            tx.commit()
        };
        apply().map_err(|e| format!("{shown}: migration to schema version {to} failed: {e}"))?;
        log::info!("{shown}: database schema at version {to}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_database_migrates_and_newer_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(version(&conn).unwrap(), 0);
        migrate(&mut conn, "mem").unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        // Idempotent.
        migrate(&mut conn, "mem").unwrap();
        conn.execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        let err = migrate(&mut conn, "mem").unwrap_err();
        assert!(
            err.contains("schema version 99") && err.contains("newer"),
            "{err}"
        );
    }

    #[test]
    fn version_zero_table_is_migrated() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            .unwrap();
        migrate(&mut conn, "mem").unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
    }
}
