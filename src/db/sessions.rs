//! SQL for sessions. Tokens are stored as hashes only.

use rusqlite::{Connection, OptionalExtension, params};

pub fn insert(conn: &Connection, token_hash: &str, account_id: &str, expiration: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO sync_session (token, account_id, expiration) VALUES (?1, ?2, ?3)")?
        .execute(params![token_hash, account_id, expiration])?;
    Ok(())
}

/// The account and expiration of a session.
pub fn get(conn: &Connection, token_hash: &str) -> rusqlite::Result<Option<(String, i64)>> {
    conn.prepare_cached("SELECT account_id, expiration FROM sync_session WHERE token = ?1")?
        .query_row([token_hash], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
}

pub fn set_expiration(conn: &Connection, token_hash: &str, expiration: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE sync_session SET expiration = ?2 WHERE token = ?1")?
        .execute(params![token_hash, expiration])?;
    Ok(())
}

pub fn delete(conn: &Connection, token_hash: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM sync_session WHERE token = ?1")?.execute([token_hash])?;
    Ok(())
}

pub fn delete_all(conn: &Connection, account_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM sync_session WHERE account_id = ?1")?.execute([account_id])?;
    Ok(())
}

/// Keeps the account's `most` sessions that expire last (those used
/// latest: a session is extended as it is used) and removes the others;
/// how many went.
pub fn keep_latest(conn: &Connection, account_id: &str, most: usize) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM sync_session WHERE account_id = ?1 AND token NOT IN
           (SELECT token FROM sync_session WHERE account_id = ?1 ORDER BY expiration DESC LIMIT ?2)",
    )?
    .execute(params![account_id, most])
}

/// Removes sessions that expired before `now`.
pub fn delete_expired(conn: &Connection, now: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM sync_session WHERE expiration <= ?1")?.execute([now])
}

/// Removes every session of the account except `keep`.
pub fn delete_others(conn: &Connection, account_id: &str, keep: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM sync_session WHERE account_id = ?1 AND token <> ?2")?
        .execute([account_id, keep])?;
    Ok(())
}
