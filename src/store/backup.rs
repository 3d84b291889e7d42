//! `backchannel backup PATH` (SPEC §2): a consistent copy of the SQLite
//! store, taken while `serve` runs.
//!
//! SQLite's online backup API copies every page in one step, inside one
//! read transaction: with WAL the server's writer goes on meanwhile and the
//! copy is the database as of one commit. (Copying in several steps would
//! start over after each of the server's commits, and might never finish
//! under load.) The copy is written to a temporary file beside PATH, made a
//! standalone file (rollback journal, no `-wal` beside it), synced, and only
//! then linked to PATH: PATH is never half-written, and an existing PATH is
//! kept unless `force` is given.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// The schema version of the copy (`PRAGMA user_version`).
    pub user_version: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no database at {0} (is data_dir right?)")]
    NoDatabase(PathBuf),
    #[error("{0} already exists; pass --force to replace it")]
    Exists(PathBuf),
    #[error("{path}: {message}")]
    Failed { path: PathBuf, message: String },
}

/// How long the copy waits for the server's writer to let go (it never
/// holds SQLite's locks for long) before giving up.
const BUSY_FOR: Duration = Duration::from_secs(30);

/// Copies the database at `db` to `dest`.
pub fn backup(db: &Path, dest: &Path, force: bool) -> Result<BackupReport, BackupError> {
    if !db.is_file() {
        return Err(BackupError::NoDatabase(db.to_path_buf()));
    }
    if is_the_store(db, dest) {
        return Err(BackupError::Failed {
            path: dest.to_path_buf(),
            message: "that is the live database (or its WAL) itself; write the copy elsewhere"
                .into(),
        });
    }
    if !force && dest.symlink_metadata().is_ok() {
        return Err(BackupError::Exists(dest.to_path_buf()));
    }
    let file_name = dest
        .file_name()
        .ok_or_else(|| BackupError::Failed {
            path: dest.to_path_buf(),
            message: "not a file name".into(),
        })?
        .to_string_lossy()
        .into_owned();
    let tmp = dest.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = copy_to(db, &tmp).and_then(|user_version| {
        publish(&tmp, dest, force)?;
        let bytes = std::fs::metadata(dest)
            .map(|m| m.len())
            .map_err(|e| failed(dest, e))?;
        Ok(BackupReport {
            path: dest.to_path_buf(),
            bytes,
            user_version,
        })
    });
    // Whatever happened, the temporary file (and any journal of it) goes.
    for leftover in [tmp.clone(), journal_of(&tmp)] {
        let _ = std::fs::remove_file(leftover);
    }
    result
}

/// Whether `dest` names the database file or one beside it that SQLite
/// owns (`-wal`, `-shm`, `-journal`).
fn is_the_store(db: &Path, dest: &Path) -> bool {
    let (Ok(db), Some(name)) = (db.canonicalize(), dest.file_name()) else {
        return false;
    };
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let dest = dir.join(name);
    let mut owned = vec![db.clone()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut n = db.as_os_str().to_owned();
        n.push(suffix);
        owned.push(PathBuf::from(n));
    }
    owned.contains(&dest)
}

fn failed(path: &Path, e: impl std::fmt::Display) -> BackupError {
    BackupError::Failed {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn journal_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-journal");
    PathBuf::from(name)
}

/// Copies `db` into a new file at `tmp`; returns its `user_version`.
fn copy_to(db: &Path, tmp: &Path) -> Result<u32, BackupError> {
    let _ = std::fs::remove_file(tmp);
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| failed(db, e))?;
    src.busy_timeout(BUSY_FOR).map_err(|e| failed(db, e))?;
    let mut dst = Connection::open(tmp).map_err(|e| failed(tmp, e))?;
    {
        let copy = Backup::new(&src, &mut dst).map_err(|e| failed(tmp, e))?;
        let deadline = std::time::Instant::now() + BUSY_FOR;
        loop {
            // -1: every page in one step, one read transaction.
            match copy.step(-1).map_err(|e| failed(db, e))? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    if std::time::Instant::now() >= deadline {
                        return Err(failed(db, "the database stayed locked"));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    drop(src);
    // A standalone file: the page copied from a WAL database says WAL;
    // the copy is one file with nothing beside it.
    let mode: String = dst
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(|e| failed(tmp, e))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(failed(tmp, format!("journal_mode stayed {mode}")));
    }
    let check: String = dst
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| failed(tmp, e))?;
    if check != "ok" {
        return Err(failed(tmp, format!("the copy fails its check: {check}")));
    }
    let user_version: u32 = dst
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| failed(tmp, e))?;
    dst.close().map_err(|(_, e)| failed(tmp, e))?;
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| failed(tmp, e))?;
    Ok(user_version)
}

/// Puts the finished copy at `dest`: a hard link never replaces an
/// existing file, a rename does (`force`).
fn publish(tmp: &Path, dest: &Path, force: bool) -> Result<(), BackupError> {
    if force {
        std::fs::rename(tmp, dest).map_err(|e| failed(dest, e))?;
    } else {
        match std::fs::hard_link(tmp, dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(BackupError::Exists(dest.to_path_buf()));
            }
            Err(e) => return Err(failed(dest, e)),
        }
    }
    if let Some(dir) = dest.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
