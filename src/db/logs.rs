//! SQL for store logs (SPEC §9): entries in `store_entry` keyed by their
//! store incarnation's `log_id` and index, each with the running total of
//! its log's bytes (`cum`); each store's `log_head`, `log_base`,
//! `log_bytes` and `log_total` on its row. Compaction and deletion change
//! the store's row at once and list the entries they drop in
//! `log_garbage`; [`reap`] deletes those in bounded chunks.

use super::stores::LogState;
use rusqlite::{Connection, OptionalExtension, params};

/// Appends `entry` as the store's next index, makes `seq` the store's
/// `seq`, and returns the log's new state.
pub fn append(conn: &Connection, key: &str, entry: &[u8], seq: i64) -> rusqlite::Result<LogState> {
    conn.prepare_cached(
        "UPDATE sync_store SET log_head = log_head + 1, log_bytes = log_bytes + ?2, log_total = log_total + ?2,
           seq = ?3 WHERE store_key = ?1",
    )?
    .execute(params![key, entry.len() as u64, seq])?;
    let state = state(conn, key)?;
    conn.prepare_cached(
        "INSERT INTO store_entry (log_id, idx, cum, bytes)
         SELECT log_id, log_head, log_total, ?2 FROM sync_store WHERE store_key = ?1",
    )?
    .execute(params![key, entry])?;
    Ok(state)
}

/// Folds the entries up to `upto` into a new body: the log's base moves
/// and its bytes shrink at once (from the running totals); the entries
/// are left for [`reap`]. Returns the log's new state.
pub fn compact(conn: &Connection, key: &str, upto: u64) -> rusqlite::Result<LogState> {
    let dropped_to = bytes_after(conn, key, upto)?;
    conn.prepare_cached("UPDATE sync_store SET log_base = ?2, log_bytes = ?3 WHERE store_key = ?1 AND log_base < ?2")?
        .execute(params![key, upto, dropped_to])?;
    conn.prepare_cached(
        "INSERT INTO log_garbage (log_id, upto) SELECT log_id, log_base FROM sync_store WHERE store_key = ?1
         ON CONFLICT (log_id) DO UPDATE SET upto = max(upto, excluded.upto)",
    )?
    .execute([key])?;
    state(conn, key)
}

/// The store's log state as of this transaction. (Writes read it back with
/// a SELECT rather than `RETURNING`: SQLite gathers returned rows in a
/// temporary b-tree, whose page cache is allocated and freed per statement,
/// which made glibc shrink and regrow the heap on every append.)
fn state(conn: &Connection, key: &str) -> rusqlite::Result<LogState> {
    conn.prepare_cached("SELECT log_head, log_base, log_bytes FROM sync_store WHERE store_key = ?1")?
        .query_row([key], |row| Ok(LogState { log_head: row.get(0)?, log_base: row.get(1)?, log_bytes: row.get(2)? }))
}

/// Bytes of the entries above `upto` (what a compaction to `upto` keeps),
/// from the running totals: one row read, however long the log.
pub fn bytes_after(conn: &Connection, key: &str, upto: u64) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "SELECT CASE WHEN ?2 <= s.log_base THEN s.log_bytes
                     ELSE s.log_total - (SELECT e.cum FROM store_entry e WHERE e.log_id = s.log_id AND e.idx = ?2) END
         FROM sync_store s WHERE s.store_key = ?1",
    )?
    .query_row(params![key, upto], |row| row.get::<_, Option<u64>>(0))
    .optional()
    .map(|bytes| bytes.flatten().unwrap_or(0))
}

/// Deletes up to `rows` entries that compaction or deletion dropped, of
/// at most about `bytes` together (at least one: freeing a large entry's
/// pages is the cost), and says whether any are left.
pub fn reap(conn: &Connection, rows: usize, bytes: u64) -> rusqlite::Result<bool> {
    let Some((log_id, upto)) = conn
        .prepare_cached("SELECT log_id, upto FROM log_garbage LIMIT 1")?
        .query_row([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))
        .optional()?
    else {
        return Ok(false);
    };
    let deleted = conn
        .prepare_cached(
            "DELETE FROM store_entry WHERE log_id = ?1 AND idx IN
               (SELECT idx FROM store_entry WHERE log_id = ?1 AND idx <= ?2
                  AND cum <= (SELECT cum FROM store_entry WHERE log_id = ?1 ORDER BY idx LIMIT 1) + ?4
                ORDER BY idx LIMIT ?3)",
        )?
        .execute(params![log_id, upto, rows, bytes])?;
    let left = conn
        .prepare_cached("SELECT 1 FROM store_entry WHERE log_id = ?1 AND idx <= ?2")?
        .exists(params![log_id, upto])?;
    if !left {
        conn.prepare_cached("DELETE FROM log_garbage WHERE log_id = ?1 AND upto = ?2")?
            .execute(params![log_id, upto])?;
    }
    Ok(deleted > 0 || garbage_left(conn)?)
}

/// Whether any dropped entries wait for [`reap`].
pub fn garbage_left(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM log_garbage LIMIT 1")?.exists([])
}

/// Hands the retained entries with an index above `after`, in order, to
/// `each` until `fits(index, length)` says no. At most `rows` entries are
/// looked at, and each one looked at is loaded: ask for one more than a
/// page holds to learn whether more follow.
pub fn read(
    conn: &Connection,
    key: &str,
    after: u64,
    rows: usize,
    mut fits: impl FnMut(u64, usize) -> bool,
    mut each: impl FnMut(u64, &[u8]),
) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(
        "SELECT e.idx, length(e.bytes), e.bytes FROM sync_store s
         JOIN store_entry e ON e.log_id = s.log_id AND e.idx > max(?2, s.log_base)
         WHERE s.store_key = ?1 ORDER BY e.idx LIMIT ?3",
    )?;
    let mut rows = statement.query(params![key, after, rows])?;
    while let Some(row) = rows.next()? {
        let index: u64 = row.get(0)?;
        if !fits(index, row.get(1)?) {
            break;
        }
        each(index, row.get_ref(2)?.as_blob()?);
    }
    Ok(())
}

/// Like [`read`] without loading any entry: hands the lengths of the
/// retained entries above `after` to `fits` until it says no (at most
/// `limit + 1` are looked at).
pub fn lengths(
    conn: &Connection,
    key: &str,
    after: u64,
    limit: usize,
    mut fits: impl FnMut(u64, usize) -> bool,
) -> rusqlite::Result<()> {
    // Only length() reads the column: SQLite takes it from the record
    // header without reading the entry's pages.
    let mut statement = conn.prepare_cached(
        "SELECT e.idx, length(e.bytes) FROM sync_store s
         JOIN store_entry e ON e.log_id = s.log_id AND e.idx > max(?2, s.log_base)
         WHERE s.store_key = ?1 ORDER BY e.idx LIMIT ?3",
    )?;
    let mut rows = statement.query(params![key, after, limit.saturating_add(1)])?;
    while let Some(row) = rows.next()? {
        if !fits(row.get(0)?, row.get(1)?) {
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
        "SELECT s.store_key, s.log_head, s.log_base, s.log_bytes, count(e.idx), coalesce(sum(length(e.bytes)), 0),
                coalesce(min(e.idx), 0), coalesce(max(e.idx), 0)
         FROM sync_store s LEFT JOIN store_entry e ON e.log_id = s.log_id AND e.idx > s.log_base
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::stores::{self, StoreRow};
    use crate::db::{Db, FILE_NAME};

    /// What a log should be: the head, the base, and the retained entries.
    #[derive(Debug, Default)]
    struct Model {
        head: u64,
        base: u64,
        entries: Vec<(u64, Vec<u8>)>,
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<u8>),
        /// Compact to this fraction of the way from base to head.
        Compact(u8),
        Read {
            after_offset: u8,
            limit: usize,
        },
        /// Delete up to this many dropped entries.
        Reap(usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 1..40).prop_map(Op::Append),
            1 => any::<u8>().prop_map(Op::Compact),
            2 => (any::<u8>(), 1usize..6).prop_map(|(after_offset, limit)| Op::Read { after_offset, limit }),
            1 => (1usize..5).prop_map(Op::Reap),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Indexes only grow, compaction drops exactly the entries up to N,
        /// reads return the retained entries after a cursor in order, and
        /// the row's state always matches the entries (check's audit).
        #[test]
        fn the_log_follows_its_rules(ops in proptest::collection::vec(op(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let db = Db::open_for_server(&dir.path().join(FILE_NAME)).unwrap();
            let conn = db.conn();
            let row = StoreRow {
                key: "k".into(), file: "00/00".into(), token: "t".into(), meta: None,
                size: 0, modified: 0, seq: 0, log: LogState::default(),
            };
            stores::upsert(conn, &row).unwrap();
            let mut model = Model::default();
            for (seq, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Append(entry) => {
                        let state = append(conn, "k", &entry, seq as i64).unwrap();
                        model.head += 1;
                        model.entries.push((model.head, entry));
                        proptest::prop_assert_eq!(state.log_head, model.head);
                    }
                    Op::Compact(fraction) => {
                        let upto = model.base + (model.head - model.base) * u64::from(fraction) / 255;
                        let state = compact(conn, "k", upto).unwrap();
                        model.base = upto;
                        model.entries.retain(|(index, _)| *index > upto);
                        proptest::prop_assert_eq!((state.log_head, state.log_base), (model.head, model.base));
                    }
                    Op::Read { after_offset, limit } => {
                        let after = model.base + u64::from(after_offset) % (model.head - model.base + 1);
                        let mut got = Vec::new();
                        let mut looked = 0;
                        let fits = |_: u64, _: usize| {
                            looked += 1;
                            looked <= limit
                        };
                        read(conn, "k", after, limit.saturating_add(1), fits, |index, bytes| got.push((index, bytes.to_vec()))).unwrap();
                        let expected: Vec<_> =
                            model.entries.iter().filter(|(index, _)| *index > after).take(limit).cloned().collect();
                        proptest::prop_assert_eq!(got, expected);
                    }
                    Op::Reap(rows) => {
                        reap(conn, rows, 40).unwrap();
                    }
                }
                let bytes: u64 = model.entries.iter().map(|(_, entry)| entry.len() as u64).sum();
                let (state, _) = stores::get_for(conn, "k", "nobody").unwrap().unwrap();
                proptest::prop_assert_eq!(state.log, LogState { log_head: model.head, log_base: model.base, log_bytes: bytes });
                proptest::prop_assert_eq!(audit(conn).unwrap().mismatched, Vec::<String>::new());
            }
            // Reaping ends, leaving exactly the retained entries.
            while reap(conn, 7, 100).unwrap() {}
            let stored: u64 = conn.query_row("SELECT count(*) FROM store_entry", [], |row| row.get(0)).unwrap();
            proptest::prop_assert_eq!(stored, model.entries.len() as u64);
        }
    }
}
