//! The server secret: 32 random bytes in `STATIC_ROOT/secret` (mode 0600),
//! created on first start. It keys the hashes of account ids, so losing it
//! orphans every account: it is never regenerated over an existing file,
//! nor beside an existing database (a restore that left it behind).

use crate::durable::{self, sync_dir};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

pub const FILE_NAME: &str = "secret";
const SECRET_BYTES: usize = 32;

/// Reads the secret (the server, at start), creating it durably if there
/// is none yet in a new data directory (`fresh`: no database yet). Beside
/// an existing database a missing secret is refused, never replaced.
pub fn load_or_create(root: &Path, fresh: bool) -> Result<Vec<u8>, String> {
    match read(root) {
        Err(err) if fresh && err.kind() == io::ErrorKind::NotFound => {
            create(root).map_err(|err| format!("cannot create {}: {err}", root.join(FILE_NAME).display()))
        }
        other => checked(root, other),
    }
}

/// Reads the secret of an existing data directory (a command-line tool).
pub fn load(root: &Path) -> Result<Vec<u8>, String> {
    checked(root, read(root))
}

fn read(root: &Path) -> io::Result<Vec<u8>> {
    fs::read(root.join(FILE_NAME))
}

fn checked(root: &Path, read: io::Result<Vec<u8>>) -> Result<Vec<u8>, String> {
    let path = root.join(FILE_NAME);
    match read {
        Ok(secret) if secret.len() == SECRET_BYTES => Ok(secret),
        Ok(_) => Err(format!(
            "{} is not {SECRET_BYTES} bytes; restore it from a backup (a new one would orphan every account)",
            path.display()
        )),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(format!(
            "{} is missing beside the database; restore it from a backup of this data directory (a new one would orphan every account)",
            path.display()
        )),
        Err(err) => Err(format!("cannot read {}: {err}", path.display())),
    }
}

fn create(root: &Path) -> io::Result<Vec<u8>> {
    let mut secret = vec![0u8; SECRET_BYTES];
    getrandom::fill(&mut secret).map_err(|err| io::Error::other(err.to_string()))?;
    let staging = root.join(format!("{FILE_NAME}.new"));
    let _ = fs::remove_file(&staging);
    let mut file = durable::create_private_file(&staging)?;
    file.write_all(&secret)?;
    file.sync_all()?;
    fs::rename(&staging, root.join(FILE_NAME))?;
    sync_dir(root)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), true).unwrap();
        assert_eq!(first.len(), SECRET_BYTES);
        assert_eq!(load_or_create(dir.path(), true).unwrap(), first);
        assert_eq!(load_or_create(dir.path(), false).unwrap(), first);
        let mode = fs::metadata(dir.path().join(FILE_NAME)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(dir.path()).unwrap(), first);
    }

    #[test]
    fn loading_never_creates() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_err());
        assert!(!dir.path().join(FILE_NAME).exists());
    }

    #[test]
    fn a_damaged_secret_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"short").unwrap();
        assert!(load_or_create(dir.path(), true).is_err());
        assert_eq!(fs::read(dir.path().join(FILE_NAME)).unwrap(), b"short");
    }

    #[test]
    fn a_missing_secret_is_made_only_for_a_new_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let refused = load_or_create(dir.path(), false).unwrap_err();
        assert!(refused.contains("restore it from a backup"), "{refused}");
        assert!(!dir.path().join(FILE_NAME).exists());
    }
}
