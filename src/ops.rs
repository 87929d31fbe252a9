//! Operations on a data directory, for the command line: a consistent
//! online backup, and the consistency check between database and files.

use crate::blobs::{Blobs, sync_dir};
use crate::db::{self, Db};
use crate::secret;
use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// Snapshot-and-pin rounds before giving up: a round fails only if the
/// server replaced a store between the snapshot and the pinning.
const BACKUP_ATTEMPTS: usize = 20;
/// `check` leaves unreferenced files younger than this alone: they are most
/// likely uploads in flight on a running server.
pub const CHECK_MIN_AGE: Duration = Duration::from_secs(600);

/// What a backup wrote.
#[derive(Debug)]
pub struct BackupReport {
    pub stores: usize,
    pub bytes: u64,
}

/// Copies the database (SQLite online backup), the secret and every store
/// file the copy references into `target`, which must be missing or empty.
/// Safe while the server runs; `target` then works as a `STATIC_ROOT`.
pub fn backup(db: &Db, secret: &[u8], blobs: &Blobs, target: &Path) -> Result<BackupReport, String> {
    let empty = match fs::read_dir(target) {
        Ok(mut entries) => entries.next().is_none(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => true,
        Err(err) => return Err(format!("{}: {err}", target.display())),
    };
    if !empty {
        return Err(format!("{} exists and is not empty", target.display()));
    }
    fs::create_dir_all(target).map_err(|err| format!("cannot create {}: {err}", target.display()))?;
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

fn write_secret(target: &Path, secret: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(target.join(secret::FILE_NAME))?;
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
}

impl CheckReport {
    /// Consistent: every row has its file at the right size, and no orphan
    /// or leftover remains (or they were just removed).
    pub fn consistent(&self) -> bool {
        self.missing.is_empty()
            && self.wrong_size.is_empty()
            && (self.repaired || (self.orphans.is_empty() && self.leftovers.is_empty()))
    }
}

/// Compares every store row with its file and looks for files no row
/// references; with `repair`, removes those (files modified in the last
/// [`CHECK_MIN_AGE`] are left alone).
pub fn check(db: &Db, blobs: &Blobs, repair: bool) -> Result<CheckReport, String> {
    let inventory = db::stores::inventory(db.conn()).map_err(|err| format!("reading the database: {err}"))?;
    let mut report = CheckReport { stores: inventory.len(), repaired: repair, ..CheckReport::default() };
    let mut referenced = HashSet::new();
    for (key, file, size) in inventory {
        match blobs.size_of(&file) {
            Ok(actual) if actual == size => {}
            Ok(actual) => report.wrong_size.push((key, size, actual)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => report.missing.push(key),
            Err(err) => return Err(format!("store file {file}: {err}")),
        }
        referenced.insert(file);
    }
    let sweep = blobs.sweep(&referenced, !repair, CHECK_MIN_AGE).map_err(|err| format!("scanning files: {err}"))?;
    report.orphans = sweep.orphans;
    report.leftovers = sweep.temp_files;
    report.recent = sweep.recent;
    Ok(report)
}
