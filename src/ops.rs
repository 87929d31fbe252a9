//! Operations on a data directory, for the command line: a consistent
//! online backup, and the consistency check between database and files.

use crate::blobs::Blobs;
use crate::db::{self, Db};
use crate::durable::{self, sync_dir};
use crate::secret;
use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

/// Snapshot-and-pin rounds before giving up: a round fails only if the
/// server replaced a store between the snapshot and the pinning.
const BACKUP_ATTEMPTS: usize = 20;
/// `check` leaves unreferenced files younger than this alone: they are most
/// likely uploads in flight on a running server.
pub const CHECK_MIN_AGE: Duration = Duration::from_secs(600);
/// Fresh looks at a suspect store before `check` gives up on it.
const RECHECKS: usize = 100;

/// What a backup wrote.
#[derive(Debug)]
pub struct BackupReport {
    pub stores: usize,
    pub bytes: u64,
}

/// Copies the database (SQLite online backup, given a new generation), the
/// secret and every store file the copy references into `target`, which
/// must be missing or empty, and outside `root` (the data directory, whose
/// start-up clean-up would remove the copied store files). Safe while the server runs; `target` then
/// works as a `STATIC_ROOT`. Every directory it creates is made durable in
/// its parent; on failure it removes what it wrote, leaving `target` as it
/// found it (missing or empty).
pub fn backup(db: &Db, secret: &[u8], blobs: &Blobs, root: &Path, target: &Path) -> Result<BackupReport, String> {
    let shown = target.display();
    if is_within(root, target) {
        return Err(format!(
            "{shown} is inside STATIC_ROOT {}, whose clean-up would remove the copied files; back up to a directory outside it",
            root.display()
        ));
    }
    let existed = match fs::read_dir(target).map(|mut entries| entries.next().is_none()) {
        Ok(true) => true,
        Ok(false) => return Err(format!("{shown} exists and is not empty")),
        Err(err) if err.kind() == io::ErrorKind::NotFound => false,
        Err(err) => return Err(format!("{shown}: {err}")),
    };
    durable::create_dir_all(target).map_err(|err| format!("cannot create {shown}: {err}"))?;
    let copied = copy_into(db, secret, blobs, target);
    if copied.is_err() {
        let cleaned = if existed { empty_dir(target) } else { fs::remove_dir_all(target) };
        if let Err(err) = cleaned {
            eprintln!("sync-node: could not remove the partial backup in {shown}: {err}");
        }
    }
    copied
}

/// Whether `path` (which may not exist yet) is `dir` or below it: its
/// longest existing ancestor resolved (symbolic links, `..`), then the
/// rest applied to that as the kernel will when it is created (a `..`
/// there steps up from what came before it).
fn is_within(dir: &Path, path: &Path) -> bool {
    use std::path::Component;
    let Ok(dir) = dir.canonicalize() else { return false };
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    let resolved = loop {
        match existing.canonicalize() {
            Ok(resolved) => break resolved,
            Err(_) => match (existing.parent(), existing.components().next_back()) {
                (Some(parent), Some(last)) => {
                    rest.push(last);
                    existing = parent;
                }
                _ => return false,
            },
        }
    };
    let mut full = resolved;
    for component in rest.into_iter().rev() {
        match component {
            Component::ParentDir => {
                full.pop();
            }
            Component::Normal(name) => full.push(name),
            _ => {}
        }
    }
    full.starts_with(&dir)
}

fn copy_into(db: &Db, secret: &[u8], blobs: &Blobs, target: &Path) -> Result<BackupReport, String> {
    // Inside one read transaction, pin the files the database references,
    // then copy the database: both describe the same instant. Pinning fails
    // only if the server replaced a store in the instant between.
    let mut attempt = 0;
    let (pinned, files) = loop {
        attempt += 1;
        let snapshot = db.read_snapshot().map_err(|err| format!("reading the database: {err}"))?;
        let files = db::stores::files(&snapshot).map_err(|err| format!("reading the database: {err}"))?;
        match blobs.pin(&files) {
            Ok(pinned) => {
                db.copy_to(&target.join(db::FILE_NAME))?;
                break (pinned, files);
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound && attempt < BACKUP_ATTEMPTS => continue,
            Err(err) => return Err(format!("cannot pin store files: {err}")),
        }
    };
    let bytes = pinned.copy_to(target).map_err(|err| format!("copying store files: {err}"))?;
    write_secret(target, secret).map_err(|err| format!("writing the secret: {err}"))?;
    sync_dir(target).map_err(|err| format!("{}: {err}", target.display()))?;
    Ok(BackupReport { stores: files.len(), bytes })
}

/// Removes everything inside `dir`.
fn empty_dir(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() { fs::remove_dir_all(path)? } else { fs::remove_file(path)? }
    }
    Ok(())
}

fn write_secret(target: &Path, secret: &[u8]) -> io::Result<()> {
    let mut file = durable::create_private_file(&target.join(secret::FILE_NAME))?;
    file.write_all(secret)?;
    file.sync_all()
}

/// What `check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub stores: usize,
    /// Keys whose file is missing.
    pub missing: Vec<String>,
    /// Keys whose file has another size than the database says: (key, expected, actual).
    pub wrong_size: Vec<(String, u64, u64)>,
    pub orphans: Vec<String>,
    pub leftovers: Vec<String>,
    pub recent: usize,
    pub repaired: bool,
    /// Log entries retained, and their bytes.
    pub log_entries: u64,
    pub log_bytes: u64,
    /// Stores whose log row disagrees with their entries.
    pub bad_logs: Vec<String>,
    /// Accounts whose usage counters disagree with the stores they own.
    pub bad_usage: Vec<String>,
    /// What SPEC §10 keeps: identity versions, envelopes, working share links.
    pub sharing: db::links::SharingCounts,
}

impl CheckReport {
    /// Consistent: every row has its file at the right size, and no orphan
    /// or leftover remains (or they were just removed).
    pub fn consistent(&self) -> bool {
        self.missing.is_empty()
            && self.wrong_size.is_empty()
            && self.bad_logs.is_empty()
            && self.bad_usage.is_empty()
            && (self.repaired || (self.orphans.is_empty() && self.leftovers.is_empty()))
    }
}

/// Compares every store row with its file and looks for files no row
/// references; with `repair`, removes those (files modified in the last
/// [`CHECK_MIN_AGE`] are left alone: on a live server they are uploads in
/// flight or just published).
///
/// The rows come from one snapshot. A row whose file looks wrong may just
/// have been replaced by a write that committed since (the server removes
/// the old file after its commit), so each suspect is checked again
/// against a fresh read: it is reported only if the same row names the
/// same file before and after the file was found wrong.
pub fn check(db: &Db, blobs: &Blobs, repair: bool) -> Result<CheckReport, String> {
    let reading = |err: rusqlite::Error| format!("reading the database: {err}");
    let snapshot = db.read_snapshot().map_err(reading)?;
    let inventory = db::stores::inventory(&snapshot).map_err(reading)?;
    let logs = db::logs::audit(&snapshot).map_err(reading)?;
    let bad_usage = db::accounts::audit_usage(&snapshot).map_err(reading)?;
    let sharing = db::links::counts(&snapshot, crate::clock::now_ms()).map_err(reading)?;
    drop(snapshot);
    let mut report = CheckReport {
        stores: inventory.len(),
        repaired: repair,
        log_entries: logs.entries,
        log_bytes: logs.bytes,
        bad_logs: logs.mismatched,
        bad_usage,
        sharing,
        ..CheckReport::default()
    };
    let mut referenced = HashSet::new();
    for (key, file, size) in inventory {
        match file_state(blobs, &file, size)? {
            FileState::Right => {}
            _ => match recheck(db, blobs, &key)? {
                FileState::Right => {}
                FileState::Missing => report.missing.push(key),
                FileState::WrongSize(expected, actual) => report.wrong_size.push((key, expected, actual)),
            },
        }
        referenced.insert(file);
    }
    let sweep = blobs.sweep(&referenced, !repair, CHECK_MIN_AGE).map_err(|err| format!("scanning files: {err}"))?;
    report.orphans = sweep.orphans;
    report.leftovers = sweep.temp_files;
    report.recent = sweep.recent;
    Ok(report)
}

/// How a store's file compares with its row.
#[derive(Debug, PartialEq, Eq)]
enum FileState {
    Right,
    Missing,
    WrongSize(u64, u64),
}

fn file_state(blobs: &Blobs, file: &str, size: u64) -> Result<FileState, String> {
    match blobs.size_of(file) {
        Ok(actual) if actual == size => Ok(FileState::Right),
        Ok(actual) => Ok(FileState::WrongSize(size, actual)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(FileState::Missing),
        Err(err) => Err(format!("store file {file}: {err}")),
    }
}

/// A suspect store, looked at again until a row stays the same around the
/// look at its file (a deleted store is fine).
fn recheck(db: &Db, blobs: &Blobs, key: &str) -> Result<FileState, String> {
    let reading = |err: rusqlite::Error| format!("reading the database: {err}");
    let mut row = db::stores::file_of(db.conn(), key).map_err(reading)?;
    for _ in 0..RECHECKS {
        let Some((file, size)) = &row else { return Ok(FileState::Right) };
        let state = file_state(blobs, file, *size)?;
        let again = db::stores::file_of(db.conn(), key).map_err(reading)?;
        if again == row {
            return Ok(state);
        }
        row = again;
    }
    Err(format!("store {key:?} kept changing while it was checked; run check again"))
}

#[cfg(test)]
mod tests {
    use super::is_within;

    #[test]
    fn a_path_is_within_a_directory_however_it_is_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join("stores")).unwrap();
        std::os::unix::fs::symlink(&root, dir.path().join("link")).unwrap();
        for inside in
            ["data", "data/stores", "data/new/deeper", "data/stores/../copy", "link/copy", "missing/../data/copy"]
        {
            assert!(is_within(&root, &dir.path().join(inside)), "{inside}");
        }
        for outside in ["copy", "data-copy", "new/data", "data/../copy", "link/../copy", "data/new/../../copy"] {
            assert!(!is_within(&root, &dir.path().join(outside)), "{outside}");
        }
    }
}
