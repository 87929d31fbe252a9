//! SQL for password-reset tokens: at most one per account, stored as a hash.

use rusqlite::{Connection, OptionalExtension, params};

/// Stores a new token for the account, replacing any older one.
pub fn replace(conn: &Connection, account_id: &str, token_hash: &str, expiration: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO password_reset_token (account_id, token, expiration) VALUES (?1, ?2, ?3)
         ON CONFLICT (account_id) DO UPDATE SET token = excluded.token, expiration = excluded.expiration",
    )?
    .execute(params![account_id, token_hash, expiration])?;
    Ok(())
}

/// The account's token hash and expiration.
pub fn get(conn: &Connection, account_id: &str) -> rusqlite::Result<Option<(String, i64)>> {
    conn.prepare_cached("SELECT token, expiration FROM password_reset_token WHERE account_id = ?1")?
        .query_row([account_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
}

pub fn delete(conn: &Connection, account_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM password_reset_token WHERE account_id = ?1")?.execute([account_id])?;
    Ok(())
}

/// Removes tokens that expired before `now`.
pub fn delete_expired(conn: &Connection, now: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM password_reset_token WHERE expiration <= ?1")?.execute([now])
}
