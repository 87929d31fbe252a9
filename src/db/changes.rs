//! SQL for the change log: who must hear about which store, as of which
//! `seq`, and the horizon below which tombstones have been forgotten.

use crate::permission::Permission;
use rusqlite::{Connection, OptionalExtension, params};

/// One entry of an account's feed: the store's state now, for that account
/// (`token` and `permission` are `None` for a deleted store or lost access).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub seq: i64,
    pub token: Option<String>,
    pub permission: Option<Permission>,
    /// The store's `log_head` (`None` with the token).
    pub log_head: Option<u64>,
    /// The seq of the account's envelope's last change (SPEC §10.2).
    pub envelope_seq: Option<i64>,
}

/// Records change `seq` of a store for every account with a permission on
/// it; returns those accounts (whose long-polls must wake).
pub fn touch_store(conn: &Connection, key: &str, seq: i64, now: i64) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "INSERT INTO change_log (account_id, store_key, seq, changed)
         SELECT account_id, store_key, ?2, ?3 FROM account_permission WHERE store_key = ?1
         ON CONFLICT (account_id, store_key) DO UPDATE SET seq = excluded.seq, changed = excluded.changed",
    )?
    .execute(params![key, seq, now])?;
    // Not `RETURNING`: see `db::logs` on why hot writes avoid it.
    let mut statement = conn.prepare_cached("SELECT account_id FROM account_permission WHERE store_key = ?1")?;
    let rows = statement.query_map([key], |row| row.get(0))?;
    rows.collect()
}

/// Records change `seq` of a store for one account (a grant or revoke).
pub fn touch_account(conn: &Connection, account_id: &str, key: &str, seq: i64, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO change_log (account_id, store_key, seq, changed) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (account_id, store_key) DO UPDATE SET seq = excluded.seq, changed = excluded.changed",
    )?
    .execute(params![account_id, key, seq, now])?;
    Ok(())
}

/// The account's changes after `since`, in `seq` order, each with the
/// store's current state; `live_only` leaves tombstones out. At most
/// `limit + 1` (the last only tells that more follow).
pub fn feed(
    conn: &Connection,
    account_id: &str,
    since: i64,
    live_only: bool,
    limit: usize,
) -> rusqlite::Result<Vec<Change>> {
    let mut statement = conn.prepare_cached(
        "SELECT c.store_key, c.seq, s.store_token, p.permission, s.log_head, p.envelope_seq FROM change_log c
         LEFT JOIN account_permission p ON p.account_id = c.account_id AND p.store_key = c.store_key
         LEFT JOIN sync_store s ON s.store_key = c.store_key
         WHERE c.account_id = ?1 AND c.seq > ?2 AND (p.permission IS NOT NULL OR NOT ?3)
         ORDER BY c.seq LIMIT ?4",
    )?;
    let rows = statement.query_map(params![account_id, since, live_only, limit.saturating_add(1)], |row| {
        let permission = row.get::<_, Option<String>>(3)?.as_deref().and_then(Permission::parse);
        Ok(Change {
            key: row.get(0)?,
            seq: row.get(1)?,
            token: permission.and(row.get(2)?),
            permission,
            log_head: permission.and(row.get(4)?),
            envelope_seq: permission.and(row.get(5)?),
        })
    })?;
    rows.collect()
}

/// The highest `seq` whose tombstones may have been forgotten: a `since`
/// below it cannot be answered.
pub fn horizon(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT value FROM sync_counter WHERE name = 'horizon'", [], |row| row.get(0))
}

/// Tombstones one account's feed keeps at most ([`cap_tombstones`]).
pub const MAX_TOMBSTONES: usize = 10_000;

/// The highest `seq` below which `account_id`'s own tombstones were
/// forgotten early ([`cap_tombstones`]).
pub fn account_horizon(conn: &Connection, account_id: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT horizon FROM sync_account WHERE id = ?1")?
        .query_row([account_id], |row| row.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}

/// Keeps at most `most` tombstones in `account_id`'s feed: older ones are
/// forgotten now and the account's horizon raised past them. Returns how
/// many were forgotten. (Tombstones are kept 30 days for devices that
/// were away; an account whose stores come and go by the thousand would
/// otherwise make them hold its keys by the megabyte.)
pub fn cap_tombstones(conn: &Connection, account_id: &str) -> rusqlite::Result<usize> {
    keep_tombstones(conn, account_id, MAX_TOMBSTONES)
}

fn keep_tombstones(conn: &Connection, account_id: &str, most: usize) -> rusqlite::Result<usize> {
    let oldest_kept: Option<i64> = conn
        .prepare_cached(
            "SELECT c.seq FROM change_log c WHERE c.account_id = ?1 AND NOT EXISTS (
                 SELECT 1 FROM account_permission p WHERE p.account_id = c.account_id AND p.store_key = c.store_key)
             ORDER BY c.seq DESC LIMIT 1 OFFSET ?2",
        )?
        .query_row(params![account_id, most.saturating_sub(1)], |row| row.get(0))
        .optional()?;
    let Some(oldest_kept) = oldest_kept else { return Ok(0) };
    let mut statement = conn.prepare_cached(
        "DELETE FROM change_log WHERE account_id = ?1 AND seq < ?2 AND NOT EXISTS (
             SELECT 1 FROM account_permission p
             WHERE p.account_id = change_log.account_id AND p.store_key = change_log.store_key)
         RETURNING seq",
    )?;
    let seqs: Vec<i64> =
        statement.query_map(params![account_id, oldest_kept], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?;
    if let Some(highest) = seqs.iter().max() {
        conn.prepare_cached("UPDATE sync_account SET horizon = max(horizon, ?2) WHERE id = ?1")?
            .execute(params![account_id, highest])?;
    }
    Ok(seqs.len())
}

/// Forgets tombstones (entries whose account no longer has a permission)
/// last changed before `before`, and raises the horizon past them.
/// Returns how many were forgotten.
pub fn prune(conn: &Connection, before: i64) -> rusqlite::Result<usize> {
    let mut statement = conn.prepare_cached(
        "DELETE FROM change_log WHERE changed < ?1 AND NOT EXISTS (
             SELECT 1 FROM account_permission p
             WHERE p.account_id = change_log.account_id AND p.store_key = change_log.store_key)
         RETURNING seq",
    )?;
    let seqs: Vec<i64> = statement.query_map([before], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?;
    if let Some(highest) = seqs.iter().max() {
        conn.execute("UPDATE sync_counter SET value = max(value, ?1) WHERE name = 'horizon'", [highest])?;
    }
    Ok(seqs.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::stores::{self, StoreRow};
    use crate::db::{Db, FILE_NAME, accounts};

    fn store(key: &str, seq: i64) -> StoreRow {
        StoreRow {
            key: key.into(),
            file: format!("00/00{seq:030x}"),
            token: format!("t{seq}"),
            meta: None,
            size: 1,
            modified: 0,
            seq,
            log: Default::default(),
        }
    }

    fn keys(changes: &[Change]) -> Vec<(&str, i64, bool)> {
        changes.iter().map(|c| (c.key.as_str(), c.seq, c.permission.is_some())).collect()
    }

    #[test]
    fn an_account_keeps_its_newest_tombstones_and_its_horizon_passes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_server(&dir.path().join(FILE_NAME)).unwrap();
        let conn = db.conn();
        accounts::insert(conn, "a", "x", "salt-a", 0).unwrap();
        stores::upsert(conn, &store("live", 1)).unwrap();
        stores::set_permission(conn, "a", "live", Permission::Own).unwrap();
        touch_store(conn, "live", 1, 100).unwrap();
        // Five stores made and deleted: seqs 2..=11, tombstones at 3, 5, 7, 9, 11.
        for n in 0..5 {
            let key = format!("gone{n}");
            stores::upsert(conn, &store(&key, 2 + 2 * n)).unwrap();
            stores::set_permission(conn, "a", &key, Permission::Own).unwrap();
            touch_store(conn, &key, 2 + 2 * n, 100).unwrap();
            touch_store(conn, &key, 3 + 2 * n, 100).unwrap();
            stores::delete(conn, &key).unwrap();
        }
        assert_eq!(keep_tombstones(conn, "a", 2).unwrap(), 3, "the three oldest are forgotten");
        assert_eq!(account_horizon(conn, "a").unwrap(), 7, "past the newest forgotten");
        let kept = feed(conn, "a", 7, false, 100).unwrap();
        assert_eq!(keys(&kept), vec![("gone3", 9, false), ("gone4", 11, false)]);
        assert_eq!(keys(&feed(conn, "a", 0, true, 100).unwrap()), vec![("live", 1, true)], "live entries stay");
        assert_eq!(keep_tombstones(conn, "a", 2).unwrap(), 0, "nothing more while at the cap");
        assert_eq!(account_horizon(conn, "b-unknown").unwrap(), 0);
    }

    #[test]
    fn feed_shows_latest_state_once_and_prunes_old_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_server(&dir.path().join(FILE_NAME)).unwrap();
        let conn = db.conn();
        for id in ["a", "b"] {
            accounts::insert(conn, id, "x", &format!("salt-{id}"), 0).unwrap();
        }
        // a creates k1 (seq 1) and k2 (seq 2), shares k1 with b (seq 3), writes k1 (seq 4).
        stores::upsert(conn, &store("k1", 1)).unwrap();
        stores::set_permission(conn, "a", "k1", Permission::Own).unwrap();
        assert_eq!(touch_store(conn, "k1", 1, 100).unwrap(), vec!["a".to_owned()]);
        stores::upsert(conn, &store("k2", 2)).unwrap();
        stores::set_permission(conn, "a", "k2", Permission::Own).unwrap();
        touch_store(conn, "k2", 2, 100).unwrap();
        stores::set_permission(conn, "b", "k1", Permission::Read).unwrap();
        touch_account(conn, "b", "k1", 3, 100).unwrap();
        stores::upsert(conn, &store("k1", 4)).unwrap();
        let mut woken = touch_store(conn, "k1", 4, 100).unwrap();
        woken.sort();
        assert_eq!(woken, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(keys(&feed(conn, "a", 0, true, 100).unwrap()), vec![("k2", 2, true), ("k1", 4, true)]);
        assert_eq!(keys(&feed(conn, "b", 3, false, 100).unwrap()), vec![("k1", 4, true)]);
        assert_eq!(feed(conn, "b", 0, false, 100).unwrap()[0].token.as_deref(), Some("t4"));

        // a deletes k2 (seq 5): a tombstone for a, invisible to b.
        touch_store(conn, "k2", 5, 200).unwrap();
        stores::delete(conn, "k2").unwrap();
        let a_feed = feed(conn, "a", 4, false, 100).unwrap();
        assert_eq!(
            a_feed,
            vec![Change {
                key: "k2".into(),
                seq: 5,
                token: None,
                permission: None,
                log_head: None,
                envelope_seq: None
            }]
        );
        assert!(feed(conn, "a", 0, true, 100).unwrap().iter().all(|c| c.key != "k2"), "since=0 has no tombstones");
        assert!(feed(conn, "b", 0, false, 100).unwrap().iter().all(|c| c.key != "k2"));

        // Pruning forgets only old tombstones and raises the horizon.
        assert_eq!(prune(conn, 150).unwrap(), 0);
        assert_eq!(horizon(conn).unwrap(), 0);
        assert_eq!(prune(conn, 250).unwrap(), 1);
        assert_eq!(horizon(conn).unwrap(), 5);
        assert_eq!(keys(&feed(conn, "a", 0, false, 100).unwrap()), vec![("k1", 4, true)], "live entries stay");
    }
}
