//! Durable file-system steps shared by the server and the command line:
//! fsync of a directory's entries, directories created with a mode and made
//! durable in their parents, and private (0600) files — whatever the umask.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory Sync Node creates.
pub const PRIVATE_DIR: u32 = 0o700;
/// Mode of the database, the secret and the lock file.
pub const PRIVATE_FILE: u32 = 0o600;

/// Makes a directory's entries (creations, renames, removals) durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// The directory holding `path` ("." for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Creates `path` and every missing directory above it, each with mode
/// [`PRIVATE_DIR`] (not narrowed or widened by the umask), and fsyncs each
/// new directory's parent, so none of them can vanish in a power cut after
/// something inside it was acknowledged. Returns whether `path` was created.
pub fn create_dir_all(path: &Path) -> io::Result<bool> {
    if path.is_dir() {
        return Ok(false);
    }
    let parent = parent_of(path);
    if path.parent().is_some() {
        create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(PRIVATE_DIR).create(path) {
        Ok(()) => {
            fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_DIR))?;
            sync_dir(parent)?;
            Ok(true)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(err) => Err(err),
    }
}

/// Creates a new file with mode [`PRIVATE_FILE`] whatever the umask; fails
/// if it exists. The caller makes its directory entry durable.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new().write(true).create_new(true).mode(PRIVATE_FILE).open(path)?;
    file.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_files_are_private_and_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        assert!(create_dir_all(&deep).unwrap());
        assert!(!create_dir_all(&deep).unwrap(), "already there");
        for level in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&dir.path().join(level)), PRIVATE_DIR, "{level}");
        }
        let file = deep.join("f");
        create_private_file(&file).unwrap();
        assert_eq!(mode(&file), PRIVATE_FILE);
        assert_eq!(create_private_file(&file).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(create_dir_all(&file.join("x")).is_err());
        assert!(create_dir_all(&file).is_err());
    }
}
