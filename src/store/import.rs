//! The one-time import of the previous release's file store, so an upgrade loses no
//! conversation: records under `storage/bots/<bot>/<sessions|users|kv>/`, the spools
//! `storage/{messenger,telegram}/{inbound,outbound}/` and `storage/messenger/seen.log`.
//!
//! Everything goes into the database in one transaction together with a marker; only then
//! are the old folders moved to `storage/imported-files/`. A crash between the two leaves the
//! marker, so the next start moves the folders without importing them twice. A file that
//! does not parse goes to the quarantine with its bytes and one log line.

use super::sqlite::DATABASE_FILE;
use super::{create_dir_durable, is_valid_bot_id, Namespace, Queue};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::Value;
use std::path::{Path, PathBuf};

const MARKER: &str = "imported_files";
const IMPORTED_DIR: &str = "imported-files";
/// The previous release remembered Messenger ids this long after they were seen.
const SEEN_WINDOW_MS: i64 = 48 * 3600 * 1000;

/// The old spool folders (relative to `storage/`) and the queue each one becomes.
const SPOOLS: [(&str, Queue); 4] = [
    ("messenger/inbound", Queue::MessengerIn),
    ("messenger/outbound", Queue::MessengerOut),
    ("telegram/inbound", Queue::TelegramIn),
    ("telegram/outbound", Queue::TelegramOut),
];
const SEEN_LOG: &str = "messenger/seen.log";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the old store left, relative to `storage/`.
fn leftovers(storage: &Path) -> Vec<&'static str> {
    let mut found = Vec::new();
    if storage.join("bots").is_dir() {
        found.push("bots");
    }
    for (dir, _) in SPOOLS {
        if storage.join(dir).is_dir() {
            found.push(dir);
        }
    }
    if storage.join(SEEN_LOG).is_file() {
        found.push(SEEN_LOG);
    }
    found
}

/// Imports the old file store under `storage` when there is one and it was not imported yet,
/// then moves it aside.
pub fn import_old_files(conn: &mut Connection, storage: &Path, shown: &str) -> Result<(), String> {
    let found = leftovers(storage);
    if found.is_empty() {
        return Ok(());
    }
    let done: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE name = ?1", [MARKER], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| format!("{shown}: {e}"))?;
    if done.is_none() {
        let counts = (|| -> rusqlite::Result<Counts> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let counts = import_all(&tx, storage)?;
            tx.execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)",
                params![MARKER, now_ms().to_string()],
            )?;
            tx.commit()?;
            Ok(counts)
        })()
        .map_err(|e| {
            format!(
                "{shown}: cannot import the file store of the previous release from {}: {e}; nothing was imported and the files are untouched",
                storage.display()
            )
        })?;
        log::info!(
            "{shown}: imported the previous release's file store: {} sessions, {} users, {} bot KV entries, {} queued items, {} seen ids{}",
            counts.records[0],
            counts.records[1],
            counts.records[2],
            counts.queued,
            counts.seen,
            if counts.quarantined > 0 {
                format!(", {} damaged files quarantined", counts.quarantined)
            } else {
                String::new()
            }
        );
    }
    move_aside(storage, &found).map_err(|e| {
        format!(
            "{shown}: imported, but cannot move the old files to {}: {e}",
            storage.join(IMPORTED_DIR).display()
        )
    })
}

#[derive(Default)]
struct Counts {
    records: [usize; 3],
    queued: usize,
    seen: usize,
    quarantined: usize,
}

fn import_all(tx: &Transaction<'_>, storage: &Path) -> rusqlite::Result<Counts> {
    let now = now_ms();
    let mut counts = Counts::default();
    let quarantine = |label: &str, raw: &[u8], why: &str, counts: &mut Counts| {
        counts.quarantined += 1;
        log::error!(
            "{}: damaged file of the previous release ({why}); moved to the quarantine of {DATABASE_FILE} (see `botd check`)",
            storage.join(label).display()
        );
        tx.execute(
            "INSERT INTO quarantine (kind, bot, key, raw, reason, at_ms) VALUES ('imported file', '', ?1, ?2, ?3, ?4)",
            params![label, raw, why, now],
        )
        .map(|_| ())
    };

    for bot in sorted_entries(&storage.join("bots")) {
        let Some(bot_id) = bot.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if !is_valid_bot_id(&bot_id) || !bot.is_dir() {
            continue;
        }
        for (i, ns) in Namespace::ALL.into_iter().enumerate() {
            for shard in sorted_entries(&bot.join(ns.name())) {
                for file in sorted_entries(&shard) {
                    if file.extension().and_then(|e| e.to_str()) != Some("json") {
                        continue;
                    }
                    let label = relative(storage, &file);
                    let raw = std::fs::read(&file).unwrap_or_default();
                    match old_record(&raw) {
                        Ok((key, value)) => {
                            tx.execute(
                                &format!(
                                    "INSERT INTO {} (bot, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
                                     ON CONFLICT (bot, key) DO UPDATE SET value = excluded.value",
                                    ns.name()
                                ),
                                params![bot_id, key, value.to_string(), now],
                            )?;
                            counts.records[i] += 1;
                        }
                        Err(why) => quarantine(&label, &raw, &why, &mut counts)?,
                    }
                }
            }
        }
    }

    for (dir, queue) in SPOOLS {
        let mut files: Vec<(u64, PathBuf)> = sorted_entries(&storage.join(dir))
            .into_iter()
            .filter_map(|p| {
                let id = p
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                Some((id, p))
            })
            .collect();
        files.sort();
        for (_, file) in files {
            let label = relative(storage, &file);
            let raw = std::fs::read(&file).unwrap_or_default();
            match old_spool_item(&raw) {
                Ok((key, item)) => {
                    if queue == Queue::MessengerIn {
                        // The previous release kept these ids claimed while the event waited.
                        if let Some(seen) = item["seen"].as_str() {
                            remember(tx, super::hash_id(seen) as i64, now + SEEN_WINDOW_MS)?;
                        }
                    }
                    tx.execute(
                        "INSERT INTO queue_items (queue, key, item, created_ms) VALUES (?1, ?2, ?3, ?4)",
                        params![queue.name(), key, item.to_string(), now],
                    )?;
                    counts.queued += 1;
                }
                Err(why) => quarantine(&label, &raw, &why, &mut counts)?,
            }
        }
    }

    if let Ok(text) = std::fs::read_to_string(storage.join(SEEN_LOG)) {
        let mut live: std::collections::HashMap<u64, i64> = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(h) = line.strip_prefix('-') {
                if let Ok(h) = u64::from_str_radix(h.trim(), 16) {
                    live.remove(&h);
                }
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(h), Some(t)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let (Ok(h), Ok(secs)) = (u64::from_str_radix(h, 16), t.parse::<i64>()) {
                let expires = secs.saturating_mul(1000).saturating_add(SEEN_WINDOW_MS);
                if expires > now {
                    live.entry(h).or_insert(expires);
                }
            }
        }
        for (h, expires) in live {
            remember(tx, h as i64, expires)?;
            counts.seen += 1;
        }
    }
    Ok(counts)
}

fn remember(tx: &Transaction<'_>, hash: i64, expires: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO seen_ids (scope, hash, expires_ms) VALUES ('messenger', ?1, ?2)
         ON CONFLICT (scope, hash) DO UPDATE SET expires_ms = max(expires_ms, excluded.expires_ms)",
        params![hash, expires],
    )
    .map(|_| ())
}

/// `{"key": "...", "value": ...}`, the old record file.
fn old_record(raw: &[u8]) -> Result<(String, Value), String> {
    let mut v: Value = serde_json::from_slice(raw).map_err(|e| format!("invalid JSON: {e}"))?;
    let key = v["key"].as_str().ok_or("no \"key\" string")?.to_string();
    let value = v.get_mut("value").map(Value::take).ok_or("no \"value\"")?;
    Ok((key, value))
}

/// `{"key": "...", "item": ...}`, the old spool file.
fn old_spool_item(raw: &[u8]) -> Result<(String, Value), String> {
    let mut v: Value = serde_json::from_slice(raw).map_err(|e| format!("invalid JSON: {e}"))?;
    let key = v["key"].as_str().unwrap_or("").to_string();
    let item = v.get_mut("item").map(Value::take).ok_or("no \"item\"")?;
    Ok((key, item))
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn relative(storage: &Path, path: &Path) -> String {
    path.strip_prefix(storage)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Moves each imported path to `storage/imported-files/<same path>` (never over an earlier
/// copy), then syncs the folders so the move survives a power cut.
pub fn move_aside(storage: &Path, found: &[&str]) -> std::io::Result<()> {
    let target_root = storage.join(IMPORTED_DIR);
    for rel in found {
        let from = storage.join(rel);
        let mut to = target_root.join(rel);
        if to.exists() {
            to = target_root.join(format!("{rel}.{}", now_ms()));
        }
        let parent = to.parent().unwrap_or(&target_root).to_path_buf();
        create_dir_durable(&parent)?;
        std::fs::rename(&from, &to)?;
        std::fs::File::open(&parent)?.sync_all()?;
        if let Some(p) = from.parent() {
            std::fs::File::open(p)?.sync_all()?;
        }
    }
    log::info!(
        "the previous release's files are kept in {} (safe to delete once botd runs well)",
        target_root.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{SqliteStore, Store};
    use super::*;
    use serde_json::json;

    fn write(root: &Path, rel: &str, body: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }

    #[test]
    fn imports_once_and_moves_the_files_aside() {
        let dir = std::env::temp_dir().join(format!("botd-import-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(
            &dir,
            "bots/welcome-bot/sessions/ab/abcd.json",
            &json!({"key": "api::u1", "value": {"context": {}, "channel": "api", "target": "u1"}})
                .to_string(),
        );
        write(
            &dir,
            "bots/welcome-bot/users/cd/cdef.json",
            "{\"key\": \"api::u1\", \"val",
        );
        write(
            &dir,
            "messenger/inbound/00000000000000000002.json",
            &json!({"key": "b/U", "item": {"n": 2, "seen": "P\u{0}m2"}}).to_string(),
        );
        write(
            &dir,
            "messenger/inbound/00000000000000000001.json",
            &json!({"key": "b/U", "item": {"n": 1}}).to_string(),
        );
        let secs = now_ms() / 1000;
        write(
            &dir,
            "messenger/seen.log",
            &format!(
                "{:016x} {secs}\n{:016x} 1\n",
                super::super::hash_id("P\u{0}m1"),
                7u64
            ),
        );
        write(&dir, "telegram/echo-bot/offset.json", "{\"update_id\": 4}");
        write(
            &dir,
            "telegram/inbound/00000000000000000009.json",
            &json!({"key": "echo-bot/7", "item": {"bot": "echo-bot", "update": {"update_id": 4}, "at": 1}})
                .to_string(),
        );
        write(
            &dir,
            "telegram/outbound/00000000000000000010.json",
            &json!({"key": "echo-bot/7", "item": {"bot": "echo-bot", "method": "sendMessage"}})
                .to_string(),
        );
        let store = SqliteStore::open(&dir).unwrap();
        assert_eq!(
            store
                .get(Namespace::Sessions, "welcome-bot", "api::u1")
                .unwrap()
                .unwrap()["target"],
            "u1"
        );
        assert_eq!(
            store
                .get(Namespace::Users, "welcome-bot", "api::u1")
                .unwrap(),
            None
        );
        let items: Vec<Value> = store
            .pending(Queue::MessengerIn)
            .unwrap()
            .into_iter()
            .map(|i| i.item["n"].clone())
            .collect();
        assert_eq!(items, vec![json!(1), json!(2)]);
        let tg_in = store.pending(Queue::TelegramIn).unwrap();
        assert_eq!(tg_in.len(), 1);
        assert_eq!(
            (tg_in[0].key.as_str(), &tg_in[0].item["update"]["update_id"]),
            ("echo-bot/7", &json!(4))
        );
        assert_eq!(store.pending(Queue::TelegramOut).unwrap().len(), 1);
        assert!(!dir.join("telegram/inbound").exists() && !dir.join("telegram/outbound").exists());
        assert!(dir.join("imported-files/bots/welcome-bot").is_dir());
        assert!(dir.join("imported-files/messenger/seen.log").is_file());
        assert!(!dir.join("bots").exists() && !dir.join("messenger/inbound").exists());
        assert!(
            dir.join("telegram/echo-bot/offset.json").is_file(),
            "offsets stay"
        );
        drop(store);
        // A second start imports nothing again, even if old folders came back.
        write(
            &dir,
            "messenger/inbound/00000000000000000003.json",
            &json!({"key": "b/U", "item": {"n": 3}}).to_string(),
        );
        let store = SqliteStore::open(&dir).unwrap();
        assert_eq!(store.pending(Queue::MessengerIn).unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
