//! The data directory (`STATIC_ROOT`) and who may use it. The server
//! creates it (mode 0700, durable in its parent) and holds an exclusive
//! lock on it for its whole life, taken before anything else in it is read
//! or changed, so a second server on the same directory stops having
//! touched nothing. Every other command opens an existing directory only:
//! it never creates one, never migrates its database, and works beside a
//! running server.

use crate::db::{self, Db};
use crate::durable;
use crate::exit::Failure;
use crate::secret;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file a server locks (`flock`) for as long as it runs.
pub const LOCK_FILE: &str = "sync-node.lock";

/// The server's exclusive hold on a data directory; released when the
/// process ends (or this is dropped).
#[derive(Debug)]
pub struct Claim {
    _lock: File,
    root: PathBuf,
    /// This claim created the directory.
    created: bool,
}

/// An open data directory: its database and the key of the id hashes.
pub struct DataDir {
    pub db: Db,
    pub secret: Vec<u8>,
}

/// Creates `root` if missing and locks it for this server. Exit 1 when
/// another server holds it; exit 2 when it cannot be created or written.
pub fn claim(root: &Path) -> Result<Claim, Failure> {
    let shown = root.display();
    let created = durable::create_dir_all(root)
        .map_err(|err| Failure::config(format!("STATIC_ROOT: cannot create {shown}: {err}")))?;
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(durable::PRIVATE_FILE)
        .open(root.join(LOCK_FILE))
        .and_then(|lock| {
            lock.set_permissions(fs::Permissions::from_mode(durable::PRIVATE_FILE))?;
            Ok(lock)
        })
        .map_err(|err| Failure::config(format!("STATIC_ROOT: {shown} is not writable: {err}")))?;
    match lock.try_lock() {
        Ok(()) => Ok(Claim { _lock: lock, root: root.to_path_buf(), created }),
        Err(TryLockError::WouldBlock) => Err(Failure::failed(format!(
            "STATIC_ROOT {shown} is in use by another sync-node server; stop it first (nothing was changed)"
        ))),
        Err(TryLockError::Error(err)) => Err(Failure::config(format!("STATIC_ROOT: cannot lock {shown}: {err}"))),
    }
}

impl Claim {
    /// A start that failed before the database was made takes back what
    /// it made: the lock file, and the directory if it created it. (Once a
    /// port in use left a new directory holding only a lock file, which
    /// every command then called a directory with no database.)
    pub fn withdraw(self) {
        if self.root.join(db::FILE_NAME).exists() {
            return;
        }
        let _ = fs::remove_file(self.root.join(LOCK_FILE));
        if self.created {
            let _ = fs::remove_dir(&self.root);
        }
    }
}

impl DataDir {
    /// For the server, once it holds the [`Claim`]: checks the directory is
    /// writable, loads the secret (or creates it, for a new data directory
    /// only), opens (or creates) and upgrades the database.
    pub fn open_for_server(root: &Path, _claim: &Claim) -> Result<DataDir, Failure> {
        let fail = |problem: String| Failure::config(format!("STATIC_ROOT: {problem}"));
        let probe = root.join(".write-test");
        fs::write(&probe, b"").map_err(|err| fail(format!("{} is not writable: {err}", root.display())))?;
        let _ = fs::remove_file(&probe);
        let database = root.join(db::FILE_NAME);
        let secret = secret::load_or_create(root, !database.exists()).map_err(fail)?;
        let db = Db::open_for_server(&database).map_err(fail)?;
        Ok(DataDir { db, secret })
    }

    /// For every other command: an existing data directory with a database
    /// of this version's schema and its secret; exit 1 otherwise, having
    /// created nothing.
    pub fn open_existing(root: &Path) -> Result<DataDir, Failure> {
        let database = root.join(db::FILE_NAME);
        if !database.is_file() {
            let what = if root.is_dir() { "has no sync-node database" } else { "does not exist" };
            return Err(Failure::failed(format!(
                "STATIC_ROOT {} {what}; point STATIC_ROOT at the server's data directory (only the server creates one)",
                root.display()
            )));
        }
        let db = Db::open_existing(&database).map_err(Failure::failed)?;
        let secret = secret::load(root).map_err(Failure::failed)?;
        Ok(DataDir { db, secret })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("new/data");
        let first = claim(&root).unwrap();
        assert_eq!(fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o700);
        let second = claim(&root).unwrap_err();
        assert_eq!(second.code, 1);
        assert!(second.message.contains("in use"), "{second}");
        drop(first);
        claim(&root).unwrap();
    }

    #[test]
    fn commands_need_an_existing_directory_and_create_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("typo");
        assert_eq!(DataDir::open_existing(&missing).err().unwrap().code, 1);
        assert!(!missing.exists());
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert_eq!(DataDir::open_existing(&empty).err().unwrap().code, 1);
        assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);

        let root = dir.path().join("data");
        let held = claim(&root).unwrap();
        let served = DataDir::open_for_server(&root, &held).unwrap();
        let opened = DataDir::open_existing(&root).unwrap();
        assert_eq!(opened.secret, served.secret);
        for file in [db::FILE_NAME, secret::FILE_NAME, LOCK_FILE] {
            assert_eq!(fs::metadata(root.join(file)).unwrap().permissions().mode() & 0o777, 0o600, "{file}");
        }
    }
}
