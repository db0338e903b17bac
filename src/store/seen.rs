//! A persistent, bounded set of ids already seen, for deduplicating webhook deliveries across
//! retries and restarts. Ids are hashed (an id is never a file name or stored as given), kept
//! for a time window, and written to an append-only log (`<hash> <unix secs>` per line, `-<hash>`
//! to take one back) that is compacted when it has grown to twice the live entries.
//!
//! Memory is bounded: at most `cap` entries; past it the oldest go first (logged once).

use super::atomic_write;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct SeenSet {
    path: PathBuf,
    window: u64,
    cap: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    /// hash → time it was first seen (unix seconds).
    times: HashMap<u64, u64>,
    /// Insertion order, for pruning (entries taken back stay here until pruned).
    order: VecDeque<(u64, u64)>,
    /// Claims whose work is not durable yet: never written, never compacted in.
    uncommitted: HashSet<u64>,
    /// Log lines not yet written.
    unwritten: Vec<String>,
    file: Option<File>,
    file_lines: usize,
    warned_cap: bool,
}

/// The 64-bit hash an id is kept as.
pub fn hash_id(id: &str) -> u64 {
    let digest = Sha256::digest(id.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl SeenSet {
    /// Opens (or creates) the set logged in `path`, keeping ids for `window`, at most `cap`.
    pub fn open(path: &Path, window: Duration, cap: usize) -> io::Result<SeenSet> {
        let set = SeenSet {
            path: path.to_path_buf(),
            window: window.as_secs().max(1),
            cap: cap.max(1),
            inner: Mutex::new(Inner {
                times: HashMap::new(),
                order: VecDeque::new(),
                uncommitted: HashSet::new(),
                unwritten: Vec::new(),
                file: None,
                file_lines: 0,
                warned_cap: false,
            }),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let now = now_secs();
        let mut times: HashMap<u64, u64> = HashMap::new();
        for line in text.lines() {
            if let Some(h) = line.strip_prefix('-') {
                if let Ok(h) = u64::from_str_radix(h.trim(), 16) {
                    times.remove(&h);
                }
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(h), Some(t)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let (Ok(h), Ok(t)) = (u64::from_str_radix(h, 16), t.parse::<u64>()) {
                if now.saturating_sub(t) < set.window {
                    times.entry(h).or_insert(t);
                }
            }
        }
        let mut live: Vec<(u64, u64)> = times.into_iter().map(|(h, t)| (t, h)).collect();
        live.sort_unstable();
        {
            let mut inner = set.lock();
            for (t, h) in live {
                inner.times.insert(h, t);
                inner.order.push_back((h, t));
            }
            set.prune(&mut inner, now);
            set.compact(&mut inner)?;
        }
        Ok(set)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `id` in memory; `true` when it was not seen before. The claim stops concurrent
    /// duplicates at once but is written to disk only after [`SeenSet::commit`] (once the work
    /// it stands for is durable) and [`SeenSet::flush`].
    pub fn claim(&self, id: &str) -> bool {
        let h = hash_id(id);
        let now = now_secs();
        let mut inner = self.lock();
        self.prune(&mut inner, now);
        if inner.times.contains_key(&h) {
            return false;
        }
        inner.times.insert(h, now);
        inner.order.push_back((h, now));
        inner.uncommitted.insert(h);
        true
    }

    /// Queues a claim for writing: the work it stands for is durable now.
    pub fn commit(&self, id: &str) {
        let h = hash_id(id);
        let mut inner = self.lock();
        if inner.uncommitted.remove(&h) {
            if let Some(t) = inner.times.get(&h).copied() {
                inner.unwritten.push(format!("{h:016x} {t}\n"));
            }
        }
    }

    /// Takes back a claim whose work could not be accepted after all.
    pub fn release(&self, id: &str) {
        let h = hash_id(id);
        let mut inner = self.lock();
        if inner.times.remove(&h).is_none() {
            return;
        }
        if inner.uncommitted.remove(&h) {
            return;
        }
        let line = format!("{h:016x} ");
        if let Some(pos) = inner.unwritten.iter().position(|l| l.starts_with(&line)) {
            inner.unwritten.remove(pos);
        } else {
            inner.unwritten.push(format!("-{h:016x}\n"));
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().times.contains_key(&hash_id(id))
    }

    pub fn len(&self) -> usize {
        self.lock().times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the claims made so far to disk (append and fsync). When it returns `Ok`, every
    /// claim made before the call survives a crash.
    pub fn flush(&self) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.unwritten.is_empty() {
            return Ok(());
        }
        if inner.file_lines > 2 * inner.times.len() + 1024 {
            // Compaction writes every live entry, the unwritten ones included.
            inner.unwritten.clear();
            return self.compact(&mut inner);
        }
        let text: String = inner.unwritten.concat();
        let lines = inner.unwritten.len();
        if inner.file.is_none() {
            inner.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let file = inner.file.as_mut().expect("opened");
        let written = file
            .write_all(text.as_bytes())
            .and_then(|_| file.sync_data());
        if let Err(e) = written {
            // The file may now end in a partial line; start it over from memory next time.
            inner.file = None;
            inner.file_lines = usize::MAX / 4;
            return Err(e);
        }
        inner.unwritten.clear();
        inner.file_lines += lines;
        Ok(())
    }

    /// Rewrites the log with the live entries only.
    fn compact(&self, inner: &mut Inner) -> io::Result<()> {
        let mut text = String::with_capacity(inner.times.len() * 28);
        for (h, t) in &inner.order {
            if inner.times.get(h) == Some(t) && !inner.uncommitted.contains(h) {
                text.push_str(&format!("{h:016x} {t}\n"));
            }
        }
        inner.file = None;
        atomic_write(&self.path, text.as_bytes())?;
        inner.file = Some(OpenOptions::new().append(true).open(&self.path)?);
        inner.file_lines = inner.times.len();
        inner.unwritten.clear();
        Ok(())
    }

    fn prune(&self, inner: &mut Inner, now: u64) {
        while let Some(&(h, t)) = inner.order.front() {
            let expired = now.saturating_sub(t) >= self.window;
            let current = inner.times.get(&h) == Some(&t);
            if !current {
                inner.order.pop_front();
                continue;
            }
            if !expired && inner.times.len() <= self.cap {
                break;
            }
            if !expired && !inner.warned_cap {
                inner.warned_cap = true;
                log::warn!(
                    "{}: more than {} ids seen within the deduplication window; the oldest are forgotten early",
                    self.path.display(),
                    self.cap
                );
            }
            inner.order.pop_front();
            inner.times.remove(&h);
            inner.uncommitted.remove(&h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("botd-seen-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("seen.log")
    }

    #[test]
    fn survives_reopen_and_release() {
        let path = temp("reopen");
        let set = SeenSet::open(&path, Duration::from_secs(3600), 1000).unwrap();
        assert!(set.claim("m1"));
        assert!(!set.claim("m1"));
        assert!(set.claim("../../etc/passwd"));
        assert!(set.claim("m3"));
        assert!(set.claim("not-committed"));
        for id in ["m1", "../../etc/passwd", "m3"] {
            set.commit(id);
        }
        set.flush().unwrap();
        set.release("m3");
        set.flush().unwrap();
        drop(set);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("m1") && !text.contains("passwd"),
            "ids are hashed: {text}"
        );
        let set = SeenSet::open(&path, Duration::from_secs(3600), 1000).unwrap();
        assert!(set.contains("m1") && set.contains("../../etc/passwd"));
        assert!(!set.contains("m3"));
        assert!(
            !set.contains("not-committed"),
            "a claim is written only once committed"
        );
        assert!(!set.claim("m1"));
        assert!(set.claim("m3"));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn bounded_and_compacted() {
        let path = temp("cap");
        let set = SeenSet::open(&path, Duration::from_secs(3600), 100).unwrap();
        for i in 0..5000 {
            assert!(set.claim(&format!("m{i}")));
            set.commit(&format!("m{i}"));
            if i % 10 == 0 {
                set.flush().unwrap();
            }
        }
        set.flush().unwrap();
        assert!(set.len() <= 101);
        assert!(set.contains("m4999") && !set.contains("m0"));
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 2 * 101 + 1024 + 20, "{lines} lines");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn expired_entries_are_dropped_on_open() {
        let path = temp("window");
        let old = now_secs() - 7200;
        std::fs::write(
            &path,
            format!(
                "{:016x} {old}\n{:016x} {}\ngarbage\n",
                hash_id("old"),
                hash_id("new"),
                now_secs()
            ),
        )
        .unwrap();
        let set = SeenSet::open(&path, Duration::from_secs(3600), 100).unwrap();
        assert!(!set.contains("old"));
        assert!(set.contains("new"));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
