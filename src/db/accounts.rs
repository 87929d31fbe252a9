//! SQL for accounts.

use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub id: String,
    pub password: String,
    pub key_salt: String,
    /// Bumped by every password change and reset.
    pub credential: i64,
}

/// Inserts an account; `false` when the id is taken.
pub fn insert(conn: &Connection, id: &str, password: &str, key_salt: &str, created: i64) -> rusqlite::Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO sync_account (id, password, key_salt, created) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![id, password, key_salt, created])?;
    Ok(inserted == 1)
}

pub fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<AccountRow>> {
    conn.prepare_cached("SELECT id, password, key_salt, credential FROM sync_account WHERE id = ?1 AND deleting = 0")?
        .query_row([id], |row| {
            Ok(AccountRow { id: row.get(0)?, password: row.get(1)?, key_salt: row.get(2)?, credential: row.get(3)? })
        })
        .optional()
}

pub fn exists(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM sync_account WHERE id = ?1")?.exists([id])
}

/// Number of the stores the account OWNs and what they count against its
/// quota ([`super::stores::charge`]): counters kept by the schema's triggers.
pub fn usage(conn: &Connection, id: &str) -> rusqlite::Result<(u64, u64)> {
    conn.prepare_cached("SELECT stores_owned, bytes_used FROM sync_account WHERE id = ?1")?
        .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
        .map(Option::unwrap_or_default)
}

/// For `check`: the accounts whose counters differ from the sums of the
/// stores they own.
pub fn audit_usage(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare(
        "SELECT a.id FROM sync_account a
         LEFT JOIN (SELECT p.account_id, count(*) AS owned, sum(s.charge) AS used FROM account_permission p
                    JOIN sync_store s ON s.store_key = p.store_key WHERE p.permission = 'OWN' GROUP BY p.account_id) u
           ON u.account_id = a.id
         WHERE a.stores_owned <> coalesce(u.owned, 0) OR a.bytes_used <> coalesce(u.used, 0)
         ORDER BY a.id",
    )?;
    let rows = statement.query_map([], |row| row.get(0))?;
    rows.collect()
}

/// A new password (a change or a reset): a new credential version.
pub fn set_password(conn: &Connection, id: &str, password: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE sync_account SET password = ?2, credential = credential + 1 WHERE id = ?1")?
        .execute(params![id, password])?;
    Ok(())
}

/// The same password hashed again (an upgrade to the current cost): only
/// if the hash is still `old` (compare-and-set), so an upgrade never writes
/// over a password changed meanwhile; returns whether it did.
pub fn upgrade_password(conn: &Connection, id: &str, old: &str, new: &str) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached("UPDATE sync_account SET password = ?3 WHERE id = ?1 AND password = ?2")?
        .execute(params![id, old, new])?;
    Ok(changed == 1)
}

/// Records that sign-ins to the account are refused until `until` (ms).
pub fn set_locked_until(conn: &Connection, id: &str, until: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE sync_account SET locked_until = max(locked_until, ?2) WHERE id = ?1")?
        .execute(params![id, until])?;
    Ok(())
}

/// Forgets every recorded lockout (a server starts with none).
pub fn clear_lockouts(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("UPDATE sync_account SET locked_until = 0 WHERE locked_until != 0", [])?;
    Ok(())
}

/// One line of `sync-node account list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSummary {
    pub id: String,
    pub created: i64,
    pub stores_owned: u64,
    pub bytes_used: u64,
    pub sessions: u64,
    pub locked_until: i64,
}

/// Every account, oldest first, with what it owns and its live sessions
/// at `now`.
pub fn list(conn: &Connection, now: i64) -> rusqlite::Result<Vec<AccountSummary>> {
    let mut statement = conn.prepare(
        "SELECT a.id, a.created, a.locked_until,
           (SELECT count(*) FROM account_permission p WHERE p.account_id = a.id AND p.permission = 'OWN'),
           (SELECT coalesce(sum(s.size + s.log_bytes), 0) FROM account_permission p
              JOIN sync_store s ON s.store_key = p.store_key WHERE p.account_id = a.id AND p.permission = 'OWN'),
           (SELECT count(*) FROM sync_session t WHERE t.account_id = a.id AND t.expiration > ?1)
         FROM sync_account a ORDER BY a.created, a.id",
    )?;
    let rows = statement.query_map([now], |row| {
        Ok(AccountSummary {
            id: row.get(0)?,
            created: row.get(1)?,
            locked_until: row.get(2)?,
            stores_owned: row.get(3)?,
            bytes_used: row.get(4)?,
            sessions: row.get(5)?,
        })
    })?;
    rows.collect()
}

/// Starts deleting an account: it can no longer sign in or be signed in as
/// (its sessions, reset token and identity go now, its credential version
/// moves on), while its stores go a chunk at a time ([`deleting`]).
pub fn start_deleting(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE sync_account SET deleting = 1, credential = credential + 1 WHERE id = ?1")?
        .execute([id])?;
    conn.prepare_cached("DELETE FROM sync_session WHERE account_id = ?1")?.execute([id])?;
    conn.prepare_cached("DELETE FROM password_reset_token WHERE account_id = ?1")?.execute([id])?;
    conn.prepare_cached("DELETE FROM account_identity WHERE account_id = ?1")?.execute([id])?;
    Ok(())
}

/// An account whose deletion has started and not ended.
pub fn deleting(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT id FROM sync_account WHERE deleting = 1 LIMIT 1")?
        .query_row([], |row| row.get(0))
        .optional()
}

/// Deletes the account; its sessions, reset token, permissions and change
/// log go with it (foreign keys cascade).
pub fn delete(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM sync_account WHERE id = ?1")?.execute([id])?;
    Ok(())
}
