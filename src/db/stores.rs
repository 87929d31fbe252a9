//! SQL for stores and permissions.

use crate::limits::{ENTRY_OVERHEAD, KEY_COPIES, STORE_OVERHEAD};
use crate::permission::Permission;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use std::ops::ControlFlow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRow {
    pub key: String,
    pub file: String,
    pub token: String,
    pub meta: Option<String>,
    pub size: u64,
    pub modified: i64,
    pub seq: i64,
    pub log: LogState,
}

/// What a store counts against each owner's quota (the `charge` column of
/// schema step 8 computes the same): its body and log bytes, its key
/// [`KEY_COPIES`] times, its metadata, [`STORE_OVERHEAD`] and
/// [`ENTRY_OVERHEAD`] per retained entry.
pub fn charge(key: &str, meta: Option<&str>, size: u64, log: LogState) -> u64 {
    size + log.log_bytes
        + KEY_COPIES * key.len() as u64
        + meta.map_or(0, |meta| meta.len() as u64)
        + STORE_OVERHEAD
        + ENTRY_OVERHEAD * log.entries()
}

impl LogState {
    /// Entries retained.
    pub fn entries(self) -> u64 {
        self.log_head.saturating_sub(self.log_base)
    }

    /// What the log counts for (against `MAX_LOG_BYTES`): its bytes and
    /// [`ENTRY_OVERHEAD`] per entry.
    pub fn charge(self) -> u64 {
        self.log_bytes + ENTRY_OVERHEAD * self.entries()
    }
}

impl StoreRow {
    /// What this store counts against each owner's quota.
    pub fn charge(&self) -> u64 {
        charge(&self.key, self.meta.as_deref(), self.size, self.log)
    }
}

/// Where a store's log stands (SPEC §9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LogState {
    /// Index of the last entry ever appended (0: none).
    pub log_head: u64,
    /// Entries up to this index were folded into the body and are gone.
    pub log_base: u64,
    /// Bytes of the retained entries.
    pub log_bytes: u64,
}

/// The columns [`store_row`] reads, as a literal for `concat!`.
macro_rules! store_columns {
    () => {
        "s.store_key, s.store_file, s.store_token, s.store_meta, s.size, s.modified, s.seq, \
         s.log_head, s.log_base, s.log_bytes"
    };
}

fn store_row(row: &Row<'_>) -> rusqlite::Result<StoreRow> {
    Ok(StoreRow {
        key: row.get(0)?,
        file: row.get(1)?,
        token: row.get(2)?,
        meta: row.get(3)?,
        size: row.get(4)?,
        modified: row.get(5)?,
        seq: row.get(6)?,
        log: LogState { log_head: row.get(7)?, log_base: row.get(8)?, log_bytes: row.get(9)? },
    })
}

fn permission(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Permission>> {
    Ok(row.get::<_, Option<String>>(index)?.as_deref().and_then(Permission::parse))
}

/// What an account holds on a store: its permission and the `seq` of its
/// envelope's last change (SPEC §10.2; `None`: no envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub permission: Permission,
    pub envelope_seq: Option<i64>,
}

/// A store and the account's grant on it (if any).
pub fn get_for(conn: &Connection, key: &str, account_id: &str) -> rusqlite::Result<Option<(StoreRow, Option<Grant>)>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        store_columns!(),
        ", p.permission, p.envelope_seq FROM sync_store s
         LEFT JOIN account_permission p ON p.store_key = s.store_key AND p.account_id = ?2
         WHERE s.store_key = ?1"
    ))?
    .query_row(params![key, account_id], |row| {
        let grant = permission(row, 10)?.map(|permission| Grant { permission, envelope_seq: None });
        let envelope_seq: Option<i64> = row.get(11)?;
        Ok((store_row(row)?, grant.map(|g| Grant { envelope_seq, ..g })))
    })
    .optional()
}

/// One entry of a listing, borrowed from its row.
#[derive(Debug, Serialize)]
pub struct Listed<'a> {
    pub key: &'a str,
    pub token: &'a str,
    pub size: u64,
    pub modified: i64,
    pub seq: i64,
    pub permission: &'a str,
    pub meta: Option<&'a str>,
    #[serde(flatten)]
    pub log: LogState,
    pub envelope_seq: Option<i64>,
}

/// Hands `each` the stores the account has a permission on, by key
/// (bytewise), after `after` (if given), until it says stop: at most
/// `limit + 1` (the last only tells that more follow). Rows are lent, not
/// copied, so a page of a thousand costs the loop no allocation per store.
pub fn list_page(
    conn: &Connection,
    account_id: &str,
    after: Option<&str>,
    limit: usize,
    mut each: impl FnMut(Listed<'_>) -> ControlFlow<()>,
) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(
        "SELECT s.store_key, s.store_token, s.size, s.modified, s.seq, p.permission, s.store_meta,
                s.log_head, s.log_base, s.log_bytes, p.envelope_seq
         FROM account_permission p JOIN sync_store s ON s.store_key = p.store_key
         WHERE p.account_id = ?1 AND p.store_key > ?2
         ORDER BY p.store_key LIMIT ?3",
    )?;
    // Keys are never empty, so "" comes before every one of them.
    let mut rows = statement.query(params![account_id, after.unwrap_or(""), limit.saturating_add(1)])?;
    while let Some(row) = rows.next()? {
        let text = |index: usize| -> rusqlite::Result<&str> {
            row.get_ref(index)?.as_str().map_err(|err| {
                rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(err))
            })
        };
        let meta = match row.get_ref(6)? {
            rusqlite::types::ValueRef::Null => None,
            _ => Some(text(6)?),
        };
        let listed = Listed {
            key: text(0)?,
            token: text(1)?,
            size: row.get(2)?,
            modified: row.get(3)?,
            seq: row.get(4)?,
            permission: text(5)?,
            meta,
            log: LogState { log_head: row.get(7)?, log_base: row.get(8)?, log_bytes: row.get(9)? },
            envelope_seq: row.get(10)?,
        };
        if each(listed).is_break() {
            break;
        }
    }
    Ok(())
}

/// The stores the account is the only owner of.
pub fn solely_owned(conn: &Connection, account_id: &str, most: usize) -> rusqlite::Result<Vec<StoreRow>> {
    let mut statement = conn.prepare_cached(concat!(
        "SELECT ",
        store_columns!(),
        " FROM account_permission p JOIN sync_store s ON s.store_key = p.store_key
         WHERE p.account_id = ?1 AND p.permission = 'OWN' AND NOT EXISTS (
             SELECT 1 FROM account_permission o
             WHERE o.store_key = p.store_key AND o.permission = 'OWN' AND o.account_id <> ?1)
         LIMIT ?2"
    ))?;
    let rows = statement.query_map(params![account_id, most.min(i64::MAX as usize) as i64], store_row)?;
    rows.collect()
}

/// The accounts that OWN a store.
pub fn owners(conn: &Connection, key: &str) -> rusqlite::Result<Vec<String>> {
    let mut statement =
        conn.prepare_cached("SELECT account_id FROM account_permission WHERE store_key = ?1 AND permission = 'OWN'")?;
    let rows = statement.query_map([key], |row| row.get(0))?;
    rows.collect()
}

/// Inserts or replaces the store row (its body, meta and token; the log
/// columns are written by [`crate::db::logs`]).
pub fn upsert(conn: &Connection, store: &StoreRow) -> rusqlite::Result<()> {
    // A new store's log is keyed by the seq that created it (unique: every
    // store change takes the next one).
    conn.prepare_cached(
        "INSERT INTO sync_store (store_key, store_file, store_token, store_meta, size, modified, seq, log_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
         ON CONFLICT (store_key) DO UPDATE SET store_file = excluded.store_file,
           store_token = excluded.store_token, store_meta = excluded.store_meta,
           size = excluded.size, modified = excluded.modified, seq = excluded.seq",
    )?
    .execute(params![store.key, store.file, store.token, store.meta, store.size, store.modified, store.seq])?;
    Ok(())
}

/// Sets the account's envelope on a store (it must hold a grant), changed at `seq`.
pub fn set_envelope(conn: &Connection, account_id: &str, key: &str, envelope: &[u8], seq: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE account_permission SET envelope = ?3, envelope_seq = ?4 WHERE account_id = ?1 AND store_key = ?2",
    )?
    .execute(params![account_id, key, envelope, seq])?;
    Ok(())
}

/// The account's envelope on a store and the `seq` of its last change.
pub fn envelope(conn: &Connection, account_id: &str, key: &str) -> rusqlite::Result<Option<(Vec<u8>, i64)>> {
    conn.prepare_cached(
        "SELECT envelope, envelope_seq FROM account_permission
         WHERE account_id = ?1 AND store_key = ?2 AND envelope IS NOT NULL",
    )?
    .query_row(params![account_id, key], |row| Ok((row.get(0)?, row.get(1)?)))
    .optional()
}

pub fn set_permission(conn: &Connection, account_id: &str, key: &str, permission: Permission) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO account_permission (account_id, store_key, permission) VALUES (?1, ?2, ?3)
         ON CONFLICT (account_id, store_key) DO UPDATE SET permission = excluded.permission",
    )?
    .execute(params![account_id, key, permission.as_str()])?;
    Ok(())
}

/// The account's permission on a store.
pub fn permission_of(conn: &Connection, account_id: &str, key: &str) -> rusqlite::Result<Option<Permission>> {
    conn.prepare_cached("SELECT permission FROM account_permission WHERE account_id = ?1 AND store_key = ?2")?
        .query_row(params![account_id, key], |row| permission(row, 0))
        .optional()
        .map(Option::flatten)
}

/// Every grant on a store, by account.
pub fn permissions(conn: &Connection, key: &str) -> rusqlite::Result<Vec<(String, Grant)>> {
    let mut statement = conn.prepare_cached(
        "SELECT account_id, permission, envelope_seq FROM account_permission WHERE store_key = ?1 ORDER BY account_id",
    )?;
    let rows = statement.query_map([key], |row| Ok((row.get(0)?, permission(row, 1)?, row.get(2)?)))?;
    let mut out = Vec::new();
    for row in rows {
        if let (account, Some(permission), envelope_seq) = row? {
            out.push((account, Grant { permission, envelope_seq }));
        }
    }
    Ok(out)
}

pub fn revoke(conn: &Connection, account_id: &str, key: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM account_permission WHERE account_id = ?1 AND store_key = ?2")?
        .execute(params![account_id, key])?;
    Ok(())
}

/// Deletes a store and (by cascade) its permissions; its log entries are
/// left for [`super::logs::reap`].
pub fn delete(conn: &Connection, key: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO log_garbage (log_id, upto) SELECT log_id, ?2 FROM sync_store WHERE store_key = ?1 AND log_head > 0
         ON CONFLICT (log_id) DO UPDATE SET upto = excluded.upto",
    )?
    .execute(params![key, i64::MAX])?;
    conn.prepare_cached("DELETE FROM sync_store WHERE store_key = ?1")?.execute([key])?;
    Ok(())
}

/// Every store's key, file and size, by key.
pub fn inventory(conn: &Connection) -> rusqlite::Result<Vec<(String, String, u64)>> {
    let mut statement = conn.prepare("SELECT store_key, store_file, size FROM sync_store ORDER BY store_key")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    rows.collect()
}

/// A store's file and size.
pub fn file_of(conn: &Connection, key: &str) -> rusqlite::Result<Option<(String, u64)>> {
    conn.prepare_cached("SELECT store_file, size FROM sync_store WHERE store_key = ?1")?
        .query_row([key], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
}

/// Every file name the database references.
pub fn files(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare("SELECT store_file FROM sync_store")?;
    let rows = statement.query_map([], |row| row.get(0))?;
    rows.collect()
}
