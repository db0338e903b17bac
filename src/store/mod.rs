//! Persistence behind a narrow interface: JSON records addressed by (namespace, bot, key),
//! and durable FIFO spools for the channels. The file backend writes atomically (temp file,
//! fsync, rename) and never uses an external id as a file name: keys are hashed.

mod file;
pub mod seen;
pub mod spool;

pub use file::FileStore;
pub use spool::Spool;

use serde_json::Value;
use std::io;
use std::path::Path;

/// What kind of record a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// Dialog sessions: context, temp, session data and their expiry times.
    Sessions,
    /// User attributes (`state.user`), per bot, channel and user id.
    Users,
    /// The bot's key-value store (`state.bot` is the entry `global`).
    Kv,
}

impl Namespace {
    pub fn dir_name(self) -> &'static str {
        match self {
            Namespace::Sessions => "sessions",
            Namespace::Users => "users",
            Namespace::Kv => "kv",
        }
    }
}

/// Conversation state storage. Implementations must make `put` atomic: after a crash a
/// record is either the old or the new value, never a mix.
pub trait Store: Send + Sync {
    fn get(&self, ns: Namespace, bot: &str, key: &str) -> io::Result<Option<Value>>;
    fn put(&self, ns: Namespace, bot: &str, key: &str, value: &Value) -> io::Result<()>;
    fn delete(&self, ns: Namespace, bot: &str, key: &str) -> io::Result<()>;
    /// Calls `visit(key, value)` for every record of `ns` for `bot` (used by the janitor).
    fn scan(&self, ns: Namespace, bot: &str, visit: &mut dyn FnMut(&str, Value)) -> io::Result<()>;
}

/// Writes `bytes` to `path` so that readers see either the old file or the new one: a temp
/// file in the same folder, fsync, rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent folder"))?;
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        unique_counter()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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

/// The file-name-safe form of an external id: hex SHA-256, so `../../etc/passwd`, `a/b` or
/// 4 KB of emoji all become 64 plain characters.
pub fn hashed_name(key: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn hashed_names_are_plain() {
        for key in ["../../etc/passwd", "a/b", &"😀".repeat(1024), ""] {
            let name = hashed_name(key);
            assert_eq!(name.len(), 64);
            assert!(name.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(hashed_name("a"), hashed_name("b"));
    }
}
