//! The file backend: one JSON file per record under `data/storage/bots/<bot>/<ns>/`, named by
//! the hash of its key and sharded by the hash's first two characters. The record keeps its
//! key inside, so ids round-trip exactly.

use super::{atomic_write, hashed_name, is_valid_bot_id, Namespace, Store};
use serde_json::Value;
use std::io;
use std::path::{Path, PathBuf};

/// The stored form of a record: its key (so ids round-trip exactly) and its value. Borrowed,
/// so writing serialises the value in place instead of copying it first.
#[derive(serde::Serialize)]
struct Record<'a> {
    key: &'a str,
    value: &'a Value,
}

pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// A store rooted at `root` (normally `data/storage`).
    pub fn new(root: &Path) -> FileStore {
        FileStore {
            root: root.to_path_buf(),
        }
    }

    fn ns_dir(&self, ns: Namespace, bot: &str) -> io::Result<PathBuf> {
        if !is_valid_bot_id(bot) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid bot id {bot:?}"),
            ));
        }
        Ok(self.root.join("bots").join(bot).join(ns.dir_name()))
    }

    fn path(&self, ns: Namespace, bot: &str, key: &str) -> io::Result<PathBuf> {
        let name = hashed_name(key);
        Ok(self
            .ns_dir(ns, bot)?
            .join(&name[..2])
            .join(format!("{name}.json")))
    }
}

impl Store for FileStore {
    fn get(&self, ns: Namespace, bot: &str, key: &str) -> io::Result<Option<Value>> {
        let path = self.path(ns, bot, key)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let record: Value = serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        // A different key with the same hash cannot happen in practice, but never hand one
        // conversation another's state.
        if record["key"].as_str() != Some(key) {
            return Ok(None);
        }
        Ok(Some(record["value"].clone()))
    }

    fn put(&self, ns: Namespace, bot: &str, key: &str, value: &Value) -> io::Result<()> {
        let path = self.path(ns, bot, key)?;
        let bytes = serde_json::to_vec(&Record { key, value })?;
        atomic_write(&path, &bytes)
    }

    fn delete(&self, ns: Namespace, bot: &str, key: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(ns, bot, key)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn scan(&self, ns: Namespace, bot: &str, visit: &mut dyn FnMut(&str, Value)) -> io::Result<()> {
        let dir = self.ns_dir(ns, bot)?;
        let shards = match std::fs::read_dir(&dir) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for shard in shards.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                if path.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                let Ok(mut record) = serde_json::from_slice::<Value>(&bytes) else {
                    log::warn!("{}: unreadable state record skipped", path.display());
                    continue;
                };
                if let Some(key) = record["key"].as_str().map(str::to_string) {
                    visit(&key, record["value"].take());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hostile_keys_round_trip_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("botd-store-{}", std::process::id()));
        let store = FileStore::new(&dir);
        let keys = [
            "../../etc/passwd".to_string(),
            "a/b".to_string(),
            "😀".repeat(1024),
            "api::u1".to_string(),
        ];
        for (i, key) in keys.iter().enumerate() {
            store
                .put(Namespace::Sessions, "welcome-bot", key, &json!({"n": i}))
                .unwrap();
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                store.get(Namespace::Sessions, "welcome-bot", key).unwrap(),
                Some(json!({"n": i}))
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
        assert_eq!(seen, expected);
        assert!(!dir.parent().unwrap().join("etc").exists());
        store
            .delete(Namespace::Sessions, "welcome-bot", &keys[0])
            .unwrap();
        assert_eq!(
            store
                .get(Namespace::Sessions, "welcome-bot", &keys[0])
                .unwrap(),
            None
        );
        assert!(store
            .put(Namespace::Users, "../evil", "k", &json!(1))
            .is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
