//! A durable FIFO of JSON items in one folder: what a channel has accepted but not finished
//! (webhook deliveries, replies not yet sent). Each item is its own atomically written file,
//! named by a sequence number that keeps growing across restarts, so `pending` returns items
//! in the order they were pushed.

use super::atomic_write;
use serde_json::Value;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Spool {
    dir: PathBuf,
    last: Mutex<u64>,
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`.
    pub fn open(dir: &Path) -> io::Result<Spool> {
        super::create_dir_durable(dir)?;
        let last = list_ids(dir)?.last().copied().unwrap_or(0);
        Ok(Spool {
            dir: dir.to_path_buf(),
            last: Mutex::new(last),
        })
    }

    /// Makes `item` durable and returns its id (ids grow with every push).
    pub fn push(&self, item: &Value) -> io::Result<u64> {
        let bytes = serde_json::to_vec(item)?;
        // The lock spans the write so that ids become visible in the order they were taken.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let id = now.max(*last + 1);
        atomic_write(&self.path(id), &bytes)?;
        *last = id;
        Ok(id)
    }

    /// Every item still in the spool, oldest first. Unreadable files are logged and skipped.
    pub fn pending(&self) -> io::Result<Vec<(u64, Value)>> {
        let mut out = Vec::new();
        for id in list_ids(&self.dir)? {
            let path = self.path(id);
            match std::fs::read(&path).map(|b| serde_json::from_slice::<Value>(&b)) {
                Ok(Ok(v)) => out.push((id, v)),
                Ok(Err(e)) => log::warn!("{}: unreadable spool item skipped: {e}", path.display()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Removes a finished item.
    pub fn remove(&self, id: u64) -> io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.json"))
    }
}

fn list_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_order_across_reopen() {
        let dir = std::env::temp_dir().join(format!("botd-spool-{}", std::process::id()));
        let spool = Spool::open(&dir).unwrap();
        let a = spool.push(&json!("a")).unwrap();
        let b = spool.push(&json!("b")).unwrap();
        assert!(b > a);
        drop(spool);
        let spool = Spool::open(&dir).unwrap();
        let c = spool.push(&json!("c")).unwrap();
        assert!(c > b);
        spool.remove(a).unwrap();
        let items: Vec<Value> = spool
            .pending()
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(items, vec![json!("b"), json!("c")]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
