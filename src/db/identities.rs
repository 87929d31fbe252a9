//! SQL for identities (SPEC §10.1): every published version of an
//! account's identity, numbered 1, 2, 3 … per account.

use rusqlite::{Connection, OptionalExtension, params};

/// One published version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub version: i64,
    pub bytes: Vec<u8>,
    pub token: String,
}

/// The account's latest identity, or the one of `version`.
pub fn get(conn: &Connection, account_id: &str, version: Option<i64>) -> rusqlite::Result<Option<Identity>> {
    let row = |row: &rusqlite::Row<'_>| Ok(Identity { version: row.get(0)?, bytes: row.get(1)?, token: row.get(2)? });
    match version {
        Some(version) => conn
            .prepare_cached("SELECT version, bytes, token FROM account_identity WHERE account_id = ?1 AND version = ?2")?
            .query_row(params![account_id, version], row)
            .optional(),
        None => conn
            .prepare_cached(
                "SELECT version, bytes, token FROM account_identity WHERE account_id = ?1 ORDER BY version DESC LIMIT 1",
            )?
            .query_row([account_id], row)
            .optional(),
    }
}

/// The latest version's number and token, without its bytes.
pub fn latest(conn: &Connection, account_id: &str) -> rusqlite::Result<Option<(i64, String)>> {
    conn.prepare_cached(
        "SELECT version, token FROM account_identity WHERE account_id = ?1 ORDER BY version DESC LIMIT 1",
    )?
    .query_row([account_id], |row| Ok((row.get(0)?, row.get(1)?)))
    .optional()
}

pub fn insert(
    conn: &Connection,
    account_id: &str,
    version: i64,
    bytes: &[u8],
    token: &str,
    created: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO account_identity (account_id, version, bytes, token, created) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![account_id, version, bytes, token, created])?;
    Ok(())
}

/// How many versions the account published since `since` (ms).
pub fn published_since(conn: &Connection, account_id: &str, since: i64) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT count(*) FROM account_identity WHERE account_id = ?1 AND created >= ?2")?
        .query_row(params![account_id, since], |row| row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, FILE_NAME, accounts};

    #[test]
    fn versions_are_kept_and_the_latest_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_server(&dir.path().join(FILE_NAME)).unwrap();
        let conn = db.conn();
        accounts::insert(conn, "a", "x", "salt-a", 0).unwrap();
        assert_eq!(get(conn, "a", None).unwrap(), None);
        insert(conn, "a", 1, b"one", "t1", 10).unwrap();
        insert(conn, "a", 2, b"two", "t2", 20).unwrap();
        assert_eq!(get(conn, "a", None).unwrap().unwrap().bytes, b"two");
        assert_eq!(get(conn, "a", Some(1)).unwrap().unwrap().token, "t1");
        assert_eq!(get(conn, "a", Some(3)).unwrap(), None);
        assert_eq!(latest(conn, "a").unwrap(), Some((2, "t2".into())));
        assert_eq!(published_since(conn, "a", 15).unwrap(), 1);
    }
}
