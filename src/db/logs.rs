//! SQL for store logs (SPEC §9): entries in `store_log` keyed by store and
//! index, and each store's `log_head`, `log_base` and `log_bytes` on its
//! row. Deleting a store deletes its entries (foreign key cascade).

use super::stores::LogState;
use rusqlite::{Connection, params};
use std::ops::ControlFlow;

/// Appends `entry` as the store's next index, makes `seq` the store's
/// `seq`, and returns the log's new state.
pub fn append(conn: &Connection, key: &str, entry: &[u8], seq: i64) -> rusqlite::Result<LogState> {
    let state = conn
        .prepare_cached(
            "UPDATE sync_store SET log_head = log_head + 1, log_bytes = log_bytes + ?2, seq = ?3
             WHERE store_key = ?1 RETURNING log_head, log_base, log_bytes",
        )?
        .query_row(params![key, entry.len() as u64, seq], |row| {
            Ok(LogState { log_head: row.get(0)?, log_base: row.get(1)?, log_bytes: row.get(2)? })
        })?;
    conn.prepare_cached("INSERT INTO store_log (store_key, idx, bytes) VALUES (?1, ?2, ?3)")?.execute(params![
        key,
        state.log_head,
        entry
    ])?;
    Ok(state)
}

/// Drops the entries up to `upto` (folded into a new body) and returns the
/// log's new state.
pub fn compact(conn: &Connection, key: &str, upto: u64) -> rusqlite::Result<LogState> {
    conn.prepare_cached("DELETE FROM store_log WHERE store_key = ?1 AND idx <= ?2")?.execute(params![key, upto])?;
    conn.prepare_cached(
        "UPDATE sync_store SET log_base = ?2,
           log_bytes = (SELECT coalesce(sum(length(bytes)), 0) FROM store_log WHERE store_key = ?1)
         WHERE store_key = ?1 RETURNING log_head, log_base, log_bytes",
    )?
    .query_row(params![key, upto], |row| {
        Ok(LogState { log_head: row.get(0)?, log_base: row.get(1)?, log_bytes: row.get(2)? })
    })
}

/// Bytes of the entries above `upto` (what a compaction to `upto` keeps).
pub fn bytes_after(conn: &Connection, key: &str, upto: u64) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT coalesce(sum(length(bytes)), 0) FROM store_log WHERE store_key = ?1 AND idx > ?2")?
        .query_row(params![key, upto], |row| row.get(0))
}

/// Hands `each` the retained entries with an index above `after`, in
/// order, until it says stop (at most `limit + 1`).
pub fn read(
    conn: &Connection,
    key: &str,
    after: u64,
    limit: usize,
    mut each: impl FnMut(u64, &[u8]) -> ControlFlow<()>,
) -> rusqlite::Result<()> {
    let mut statement = conn
        .prepare_cached("SELECT idx, bytes FROM store_log WHERE store_key = ?1 AND idx > ?2 ORDER BY idx LIMIT ?3")?;
    let mut rows = statement.query(params![key, after, limit.saturating_add(1)])?;
    while let Some(row) = rows.next()? {
        let index: u64 = row.get(0)?;
        if each(index, row.get_ref(1)?.as_blob()?).is_break() {
            break;
        }
    }
    Ok(())
}

/// What [`audit`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// Stores whose log row disagrees with their entries (count, bytes, or
    /// a gap between base and head).
    pub mismatched: Vec<String>,
    pub entries: u64,
    pub bytes: u64,
}

/// For `check`: every store's log row against its entries.
pub fn audit(conn: &Connection) -> rusqlite::Result<Audit> {
    let mut statement = conn.prepare(
        "SELECT s.store_key, s.log_head, s.log_base, s.log_bytes, count(l.idx), coalesce(sum(length(l.bytes)), 0),
                coalesce(min(l.idx), 0), coalesce(max(l.idx), 0)
         FROM sync_store s LEFT JOIN store_log l ON l.store_key = s.store_key
         GROUP BY s.store_key ORDER BY s.store_key",
    )?;
    let mut rows = statement.query([])?;
    let mut audit = Audit::default();
    while let Some(row) = rows.next()? {
        let state = LogState { log_head: row.get(1)?, log_base: row.get(2)?, log_bytes: row.get(3)? };
        let (count, sum, first, last): (u64, u64, u64, u64) = (row.get(4)?, row.get(5)?, row.get(6)?, row.get(7)?);
        audit.entries += count;
        audit.bytes += sum;
        let expected = state.log_head - state.log_base.min(state.log_head);
        let contiguous = count == 0 || (first == state.log_base + 1 && last == state.log_head);
        if count != expected || sum != state.log_bytes || !contiguous {
            audit.mismatched.push(row.get(0)?);
        }
    }
    Ok(audit)
}
