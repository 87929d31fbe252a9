//! Noticing commits without a connection: the first copy of the WAL-index
//! header in `<database>-shm` changes with every commit, from any process
//! (SQLite's "walformat": 48 bytes at offset 0 holding the change counter,
//! the last valid frame, the salts and checksums; a commit appends frames
//! or restarts the WAL with new salts, and publishes itself by rewriting
//! that copy last). Work threads compare it with the mark a cache was
//! filled at, in a microsecond, so a commit by the loop or by a
//! command-line tool makes every earlier answer stale at the instant it
//! becomes visible.

use rustix::fs::{Mode, OFlags};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes of one copy of the WAL-index header.
const HEADER_BYTES: usize = 48;

/// The database's commit state as of one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitMark([u8; HEADER_BYTES]);

/// Reads [`CommitMark`]s of one database.
#[derive(Debug)]
pub struct CommitWatch {
    shm: File,
}

impl CommitWatch {
    /// Opens the shared-memory file of the database at `path`, which an
    /// open WAL-mode connection (the server's) keeps in place; the loop
    /// empties the read cache before it closes that connection.
    pub fn open(path: &Path) -> io::Result<CommitWatch> {
        // SQLite puts it beside the file a symbolic link names.
        let mut shm = std::fs::canonicalize(path)?.into_os_string();
        shm.push("-shm");
        // Without an access time to update, reading the mark (on the room
        // thread too) never writes to the file system's journal. Only the
        // file's owner may ask for that (EPERM otherwise: a plain open).
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOATIME;
        let shm = match rustix::fs::open(&shm, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(_) => File::open(&shm)?,
        };
        Ok(CommitWatch { shm })
    }

    /// The current mark; `None` if it cannot be read (nothing can then be
    /// shown to be unchanged).
    pub fn mark(&self) -> Option<CommitMark> {
        let mut header = [0; HEADER_BYTES];
        self.shm.read_exact_at(&mut header, 0).ok()?;
        Some(CommitMark(header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    #[test]
    fn every_commit_of_any_connection_changes_the_mark_and_reads_do_not() {
        let dir = std::env::temp_dir().join(format!("sync-node-commits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("test.db");
        let server = Db::open_for_server(&path).unwrap();
        let watch = CommitWatch::open(&path).unwrap();
        let mut seen = vec![watch.mark().unwrap()];
        let tool = Db::open_existing(&path).unwrap();
        for round in 0..40 {
            let db = if round % 2 == 0 { &server } else { &tool };
            db.write(|conn| conn.execute("UPDATE sync_counter SET value = value + 1 WHERE name = 'seq'", [])).unwrap();
            let mark = watch.mark().unwrap();
            assert!(!seen.contains(&mark), "commit {round} left the mark as it was");
            seen.push(mark);
            db.current_seq().unwrap();
            assert_eq!(watch.mark().unwrap(), mark, "a read changed the mark");
            if round % 10 == 9 {
                // A checkpoint lets the next commit restart the WAL.
                server.checkpoint().unwrap();
                assert_eq!(watch.mark().unwrap(), mark, "a checkpoint changed the mark");
            }
        }
        drop((server, tool));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
