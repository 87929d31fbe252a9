//! The database: opening with the pragmas our durability needs, the
//! `user_version` migration ladder, and (in the submodules) every SQL
//! statement the server runs. Only this module contains SQL.

pub mod accounts;
pub mod changes;
pub mod commits;
pub mod identities;
pub mod invites;
pub mod links;
pub mod logs;
pub mod resets;
mod schema;
pub mod sessions;
pub mod stores;

use crate::durable;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, Transaction};
use std::path::Path;
use std::time::Duration;

/// The database file inside `STATIC_ROOT`.
pub const FILE_NAME: &str = "sync-node.db";

pub struct Db {
    conn: Connection,
}

/// How long the server's connection waits for a lock a command-line tool
/// holds before the request gets 503: the loop must never stall for long.
const SERVER_BUSY_WAIT: Duration = Duration::from_millis(10);
/// How long a command-line tool waits for the server's write lock, which
/// is only ever held for one short transaction.
const TOOL_BUSY_WAIT: Duration = Duration::from_secs(10);
/// Prepared statements kept: every statement the server runs, with room.
const STATEMENT_CACHE: usize = 96;
/// The WAL is truncated to this size after a checkpoint resets it.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

impl Db {
    /// The server's connection: creates the file (mode 0600, its directory
    /// entry made durable) if missing, and upgrades the schema. Refuses a
    /// file that is not a database or comes from a newer version.
    pub fn open_for_server(path: &Path) -> Result<Db, String> {
        let describe = |err: std::io::Error| format!("database {}: {err}", path.display());
        if !path.exists() {
            durable::create_private_file(path).map_err(describe)?;
            durable::sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(describe)?;
        }
        let mut conn = connect(path, SERVER_BUSY_WAIT)?;
        schema::migrate(&mut conn).map_err(|err| format!("database {}: {err}", path.display()))?;
        Ok(Db { conn })
    }

    /// A command-line tool's connection to an existing database of exactly
    /// this version's schema; never creates or upgrades anything.
    pub fn open_existing(path: &Path) -> Result<Db, String> {
        let conn = connect(path, TOOL_BUSY_WAIT)?;
        schema::check_current(&conn).map_err(|err| format!("database {}: {err}", path.display()))?;
        Ok(Db { conn })
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The global change counter's next value; call inside the transaction
    /// that makes the change.
    /// (No `RETURNING`: see [`logs`] on why hot writes avoid it.)
    pub fn next_seq(tx: &Connection) -> rusqlite::Result<i64> {
        tx.prepare_cached("UPDATE sync_counter SET value = value + 1 WHERE name = 'seq'")?.execute([])?;
        tx.prepare_cached("SELECT value FROM sync_counter WHERE name = 'seq'")?.query_row([], |row| row.get(0))
    }

    /// Opens a read transaction around a batch of requests, so they share
    /// one snapshot and one set of file locks; [`Db::end_read`] ends it.
    pub fn begin_read(&self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("BEGIN")?.execute([]).map(drop)
    }

    /// Opens a write transaction, taking the write lock at once (so a
    /// command-line tool holding it makes this fail fast with `SQLITE_BUSY`
    /// instead of failing half-way through the work).
    pub fn begin_write(&self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([]).map(drop)
    }

    /// Ends a read transaction (it wrote nothing: writes go through
    /// `BEGIN IMMEDIATE` and [`Db::commit`]).
    pub fn end_read(&self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([]).map(drop)
    }

    pub fn commit(&self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([]).map(drop)
    }

    /// Rolls back whatever transaction is open (after a failed statement,
    /// a failed commit or a panicking handler).
    pub fn roll_back(&self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// A command-line tool's write: `work` in one `BEGIN IMMEDIATE`
    /// transaction, committed if it succeeds, rolled back otherwise.
    pub fn write<T, E: From<rusqlite::Error>>(&self, work: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E> {
        self.begin_write()?;
        let outcome = work(&self.conn).and_then(|value| Ok(self.commit().map(|()| value)?));
        self.roll_back();
        outcome
    }

    /// Starts a read transaction: until it is dropped, every read on this
    /// connection (including [`Db::copy_to`]) sees one instant.
    pub fn read_snapshot(&self) -> rusqlite::Result<Transaction<'_>> {
        self.conn.unchecked_transaction()
    }

    /// Writes a copy of the database as this connection sees it to `path`
    /// (a new file, mode 0600) with SQLite's online backup API, in one
    /// step, gives the copy a new generation, and fsyncs it.
    pub fn copy_to(&self, path: &Path) -> Result<(), String> {
        let describe = |err: rusqlite::Error| format!("backup to {}: {err}", path.display());
        durable::create_private_file(path).map_err(|err| format!("{}: {err}", path.display()))?;
        {
            let mut copy = Connection::open(path).map_err(describe)?;
            {
                let backup = rusqlite::backup::Backup::new(&self.conn, &mut copy).map_err(describe)?;
                // -1: every page in one step, so the copy is the snapshot this
                // connection sees, never restarted half-way.
                while backup.step(-1).map_err(describe)? != rusqlite::backup::StepResult::Done {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            copy.pragma_update(None, "synchronous", "FULL").map_err(describe)?;
            copy.execute(NEW_GENERATION, []).map_err(describe)?;
        }
        std::fs::File::open(path).and_then(|file| file.sync_all()).map_err(|err| format!("{}: {err}", path.display()))
    }

    /// The global change counter.
    pub fn current_seq(&self) -> rusqlite::Result<i64> {
        self.conn.prepare_cached("SELECT value FROM sync_counter WHERE name = 'seq'")?.query_row([], |row| row.get(0))
    }

    /// The data directory's generation: random, new in every backup copy.
    pub fn generation(&self) -> rusqlite::Result<String> {
        self.conn.query_row("SELECT value FROM sync_setting WHERE name = 'generation'", [], |row| row.get(0))
    }

    /// Changes whenever another connection (a command-line tool) commits.
    pub fn data_version(&self) -> rusqlite::Result<i64> {
        self.conn.prepare_cached("PRAGMA data_version")?.query_row([], |row| row.get(0))
    }

    /// Copies what the WAL holds into the database file, as far as readers
    /// allow, without waiting for them.
    pub fn checkpoint(&self) -> rusqlite::Result<()> {
        self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
    }
}

/// Gives a database a new random generation.
const NEW_GENERATION: &str = "UPDATE sync_setting SET value = lower(hex(randomblob(16))) WHERE name = 'generation'";

/// Opens an existing (or just created, empty) file with the pragmas our
/// durability needs.
fn connect(path: &Path, busy_wait: Duration) -> Result<Connection, String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let describe = |err: rusqlite::Error| format!("database {}: {err}", path.display());
    let conn = Connection::open_with_flags(path, flags).map_err(describe)?;
    conn.busy_timeout(busy_wait).map_err(describe)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Without the query planner stability guarantee, SQLite (built with
    // STAT4) re-prepares every join that has a bound parameter on every
    // run: a parse per request, measured at 15 % of the loop's time.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(describe)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(describe)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(describe)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(describe)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT).map_err(describe)?;
    // A 1 MiB page cache (SQLite's default is 2 MiB): the hot pages of a
    // personal server fit, and the footprint stays small on a Pi.
    conn.pragma_update(None, "cache_size", -1024).map_err(describe)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn opens_migrates_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let db = Db::open_for_server(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(db.current_seq().unwrap(), 0);
        let generation = db.generation().unwrap();
        assert_eq!(generation.len(), 32);
        let seqs = db.write(|tx| Ok::<_, rusqlite::Error>([Db::next_seq(tx)?, Db::next_seq(tx)?])).unwrap();
        assert_eq!(seqs, [1, 2]);
        let failed: Result<(), rusqlite::Error> = db.write(|tx| {
            Db::next_seq(tx)?;
            Err(rusqlite::Error::QueryReturnedNoRows)
        });
        assert!(failed.is_err());
        drop(db);
        let db = Db::open_existing(&path).unwrap();
        assert_eq!(db.current_seq().unwrap(), 2, "a failed write is rolled back");
        assert_eq!(db.generation().unwrap(), generation, "fixed for the life of the directory");
    }

    #[test]
    fn a_copy_gets_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_server(&dir.path().join(FILE_NAME)).unwrap();
        let copy = dir.path().join("copy.db");
        db.copy_to(&copy).unwrap();
        assert_eq!(std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777, 0o600);
        let copied = Db::open_existing(&copy).unwrap();
        assert_ne!(copied.generation().unwrap(), db.generation().unwrap());
        assert_eq!(copied.current_seq().unwrap(), db.current_seq().unwrap());
    }

    #[test]
    fn another_connections_commit_changes_the_data_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let server = Db::open_for_server(&path).unwrap();
        let before = server.data_version().unwrap();
        server.write(|tx| Db::next_seq(tx).map(drop)).unwrap();
        assert_eq!(server.data_version().unwrap(), before, "its own commits do not count");
        Db::open_existing(&path).unwrap().write(|tx| Db::next_seq(tx).map(drop)).unwrap();
        assert_ne!(server.data_version().unwrap(), before);
    }

    #[test]
    fn a_held_write_lock_fails_the_server_fast() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let server = Db::open_for_server(&path).unwrap();
        let tool = Db::open_existing(&path).unwrap();
        tool.begin_write().unwrap();
        let started = std::time::Instant::now();
        let err = server.begin_write().unwrap_err();
        assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(server.current_seq().is_ok(), "reads go on");
        tool.roll_back();
        server.begin_write().unwrap();
        server.roll_back();
    }

    #[test]
    fn joins_with_parameters_are_prepared_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_server(&dir.path().join(FILE_NAME)).unwrap();
        assert!(db.conn().db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG).unwrap());
        let join = "SELECT s.seq FROM account_permission p JOIN sync_store s ON s.store_key = p.store_key WHERE p.account_id = ?1";
        for _ in 0..3 {
            db.conn()
                .prepare_cached(join)
                .unwrap()
                .query_map(["a"], |row| row.get::<_, i64>(0))
                .unwrap()
                .for_each(drop);
        }
        let statement = db.conn().prepare_cached(join).unwrap();
        assert_eq!(statement.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    #[test]
    fn refuses_garbage_and_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![0x42u8; 8192]).unwrap();
        assert!(Db::open_for_server(&garbage).is_err());
        assert_eq!(std::fs::read(&garbage).unwrap(), vec![0x42u8; 8192], "left untouched");

        let newer = dir.path().join("newer.db");
        drop(Db::open_for_server(&newer).unwrap());
        Connection::open(&newer).unwrap().pragma_update(None, "user_version", 999).unwrap();
        let err = Db::open_for_server(&newer).err().unwrap();
        assert!(err.contains("newer"), "{err}");
        let err = Db::open_existing(&newer).err().unwrap();
        assert!(err.contains("newer"), "{err}");

        let older = dir.path().join("older.db");
        drop(Db::open_for_server(&older).unwrap());
        Connection::open(&older).unwrap().pragma_update(None, "user_version", 1).unwrap();
        let err = Db::open_existing(&older).err().unwrap();
        assert!(err.contains("upgrade"), "{err}");
        let version = |path: &Path| -> i64 {
            Connection::open(path).unwrap().pragma_query_value(None, "user_version", |row| row.get(0)).unwrap()
        };
        assert_eq!(version(&older), 1, "a command never migrates");
    }
}
