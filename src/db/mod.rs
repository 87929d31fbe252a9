//! The database: opening with the pragmas our durability needs, the
//! `user_version` migration ladder, and (in the submodules) every SQL
//! statement the server runs. Only this module contains SQL.

pub mod accounts;
pub mod changes;
pub mod resets;
mod schema;
pub mod sessions;
pub mod stores;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, Transaction};
use std::path::Path;

/// The database file inside `STATIC_ROOT`.
pub const FILE_NAME: &str = "sync-node.db";

pub struct Db {
    conn: Connection,
}

impl Db {
    /// Opens (creating if missing) and upgrades the database. Refuses a
    /// file that is not a database or comes from a newer version.
    pub fn open(path: &Path) -> Result<Db, String> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let describe = |err: rusqlite::Error| format!("database {}: {err}", path.display());
        let mut conn = Connection::open_with_flags(path, flags).map_err(describe)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(describe)?;
        // Without the query planner stability guarantee, SQLite (built with
        // STAT4) re-prepares every join that has a bound parameter on every
        // run: a parse per request, measured at 15 % of the loop's time.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(describe)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(describe)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(describe)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(describe)?;
        // A 1 MiB page cache (SQLite's default is 2 MiB): the hot pages of a
        // personal server fit, and the footprint stays small on a Pi.
        conn.pragma_update(None, "cache_size", -1024).map_err(describe)?;
        schema::migrate(&mut conn).map_err(|err| format!("database {}: {err}", path.display()))?;
        Ok(Db { conn })
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Starts the transaction that one mutating request commits.
    pub fn transaction(&mut self) -> rusqlite::Result<Transaction<'_>> {
        self.conn.transaction()
    }

    /// The global change counter's next value; call inside the transaction
    /// that makes the change.
    pub fn next_seq(tx: &Connection) -> rusqlite::Result<i64> {
        tx.prepare_cached("UPDATE sync_counter SET value = value + 1 WHERE name = 'seq' RETURNING value")?
            .query_row([], |row| row.get(0))
    }

    /// Opens a transaction around a request's statements, so they share one
    /// snapshot and one set of file locks; [`Db::commit`] ends it.
    pub fn begin(&self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("BEGIN")?.execute([]).map(drop)
    }

    pub fn commit(&self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([]).map(drop)
    }

    /// Rolls back a transaction that a panicking handler left open.
    pub fn roll_back_leftover(&self) {
        if !self.conn.is_autocommit() {
            eprintln!("sync-node: rolling back a transaction left open");
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Starts a read transaction: until it is dropped, every read on this
    /// connection (including [`Db::copy_to`]) sees one instant.
    pub fn read_snapshot(&self) -> rusqlite::Result<Transaction<'_>> {
        self.conn.unchecked_transaction()
    }

    /// Writes a copy of the database as this connection sees it to `path`
    /// with SQLite's online backup API, in one step, and fsyncs it.
    pub fn copy_to(&self, path: &Path) -> Result<(), String> {
        let describe = |err: rusqlite::Error| format!("backup to {}: {err}", path.display());
        {
            let mut copy = Connection::open(path).map_err(describe)?;
            let backup = rusqlite::backup::Backup::new(&self.conn, &mut copy).map_err(describe)?;
            // -1: every page in one step, so the copy is the snapshot this
            // connection sees, never restarted half-way.
            while backup.step(-1).map_err(describe)? != rusqlite::backup::StepResult::Done {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        std::fs::File::open(path).and_then(|file| file.sync_all()).map_err(|err| format!("{}: {err}", path.display()))
    }

    /// The global change counter.
    pub fn current_seq(&self) -> rusqlite::Result<i64> {
        self.conn.query_row("SELECT value FROM sync_counter WHERE name = 'seq'", [], |row| row.get(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_migrates_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut db = Db::open(&path).unwrap();
        assert_eq!(db.current_seq().unwrap(), 0);
        let tx = db.transaction().unwrap();
        assert_eq!(Db::next_seq(&tx).unwrap(), 1);
        assert_eq!(Db::next_seq(&tx).unwrap(), 2);
        tx.commit().unwrap();
        drop(db);
        let db = Db::open(&path).unwrap();
        assert_eq!(db.current_seq().unwrap(), 2);
    }

    #[test]
    fn joins_with_parameters_are_prepared_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(FILE_NAME)).unwrap();
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
    fn refuses_garbage_and_newer_files() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![0x42u8; 8192]).unwrap();
        assert!(Db::open(&garbage).is_err());
        assert_eq!(std::fs::read(&garbage).unwrap(), vec![0x42u8; 8192], "left untouched");

        let newer = dir.path().join("newer.db");
        drop(Db::open(&newer).unwrap());
        Connection::open(&newer).unwrap().pragma_update(None, "user_version", 999).unwrap();
        let err = Db::open(&newer).err().unwrap();
        assert!(err.contains("newer"), "{err}");
    }
}
