//! One serving process per SQLite data dir (SPEC §2): `serve` takes an
//! exclusive OS lock (`flock`, through std's `File::try_lock`) on
//! `backchannel.lock` beside the database before it opens anything, and
//! writes who holds it (pid, host, start time, listen addresses) into the
//! file. A second `serve` finds the lock taken and refuses to start with an
//! error naming that holder: two writers would each run an outbox worker and
//! send every message twice.
//!
//! The kernel drops the lock when the holding process ends, however it ends
//! (SIGKILL included), so a crash never leaves a stale lock behind; the
//! file itself stays, and its text is trusted only while the lock is held.
//! Other commands (`user add`, `sender …`, `backup`) do not take the lock:
//! SQLite lets them share the database with the server.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{now_ms, rfc3339};

/// Who holds a data dir: what the lock file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub started_at: String,
    /// Listener name → address (the bound ones once `serve` has bound
    /// them, the configured ones before).
    pub listen: BTreeMap<String, String>,
}

impl Holder {
    /// This process, listening on `listen`.
    pub fn this_process(listen: BTreeMap<String, String>) -> Holder {
        Holder {
            pid: std::process::id(),
            host: hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "(unknown host)".to_string()),
            started_at: rfc3339(now_ms()),
            listen,
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on host {}, started {}",
            self.pid, self.host, self.started_at
        )?;
        if !self.listen.is_empty() {
            let listen: Vec<String> = self
                .listen
                .iter()
                .map(|(name, addr)| format!("{name} {addr}"))
                .collect();
            write!(f, ", listening on {}", listen.join(", "))?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the data dir is in use: {path} is locked by another `backchannel serve` ({}); \
         only one serve may run on a SQLite data dir — stop that one first, or give this one \
         another data_dir",
        holder_text(.holder)
    )]
    Held {
        path: PathBuf,
        /// What the lock file says, when it could be read.
        holder: Option<Holder>,
    },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn holder_text(holder: &Option<Holder>) -> String {
    match holder {
        Some(h) => h.to_string(),
        None => "holder not recorded yet".to_string(),
    }
}

/// The held lock on a data dir; dropping it (or the process ending)
/// releases it.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    path: PathBuf,
}

/// The lock file of the database at `db_path`.
pub fn lock_path(db_path: &Path) -> PathBuf {
    db_path.with_file_name("backchannel.lock")
}

impl DataDirLock {
    /// Takes the lock of the data dir holding `db_path` (creating the dir
    /// and the lock file if needed) and records `holder`, or says who holds
    /// it. Never waits.
    pub fn acquire(db_path: &Path, holder: &Holder) -> Result<DataDirLock, LockError> {
        let path = lock_path(db_path);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Not truncated on open: until the lock is ours, the text belongs
        // to whoever holds it.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = match file.read_to_string(&mut text) {
                    Ok(_) => serde_json::from_str(&text).ok(),
                    Err(_) => None,
                };
                return Err(LockError::Held { path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let lock = DataDirLock {
            file,
            path: path.clone(),
        };
        lock.record(holder).map_err(io)?;
        Ok(lock)
    }

    /// Rewrites who holds the lock (the bound addresses, once known).
    pub fn record(&self, holder: &Holder) -> std::io::Result<()> {
        let text = serde_json::to_string(holder).map_err(std::io::Error::other)?;
        let mut file = &self.file;
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_names_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("data").join("backchannel.db");
        let listen = BTreeMap::from([("smtp".to_string(), "127.0.0.1:2525".to_string())]);
        let first = DataDirLock::acquire(&db, &Holder::this_process(listen)).expect("first");
        // flock locks belong to the open file: a second open in this
        // process conflicts just as another process would.
        let err = DataDirLock::acquire(&db, &Holder::this_process(BTreeMap::new()))
            .expect_err("second must fail");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("smtp 127.0.0.1:2525"), "{text}");
        assert!(text.contains("backchannel.lock"), "{text}");
        drop(first);
        DataDirLock::acquire(&db, &Holder::this_process(BTreeMap::new())).expect("after drop");
    }
}
