//! SQL for invitations (SPEC §3): each code is stored as its hash, with the
//! uses it has left and when it expires.

use rusqlite::{Connection, params};

pub fn insert(conn: &Connection, code_hash: &str, uses: u32, expires: i64, created: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO sync_invite (code, uses_left, expires, created) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![code_hash, uses, expires, created])?;
    Ok(())
}

/// Whether the code can still be used at `now`.
pub fn usable(conn: &Connection, code_hash: &str, now: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM sync_invite WHERE code = ?1 AND uses_left > 0 AND expires > ?2")?
        .exists(params![code_hash, now])
}

/// Uses the code once, if it can still be used; returns whether it could.
pub fn spend(conn: &Connection, code_hash: &str, now: i64) -> rusqlite::Result<bool> {
    let spent = conn
        .prepare_cached(
            "UPDATE sync_invite SET uses_left = uses_left - 1 WHERE code = ?1 AND uses_left > 0 AND expires > ?2",
        )?
        .execute(params![code_hash, now])?;
    Ok(spent == 1)
}

/// Forgets codes that are used up or expired.
pub fn prune(conn: &Connection, now: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM sync_invite WHERE uses_left <= 0 OR expires <= ?1")?.execute([now])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_spent_as_many_times_as_it_has_uses_and_not_after_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::Db::open_for_server(&dir.path().join(crate::db::FILE_NAME)).unwrap();
        let conn = db.conn();
        insert(conn, "twice", 2, 1_000, 0).unwrap();
        insert(conn, "late", 5, 1_000, 0).unwrap();
        assert!(usable(conn, "twice", 10).unwrap());
        assert!(spend(conn, "twice", 10).unwrap());
        assert!(spend(conn, "twice", 10).unwrap());
        assert!(!spend(conn, "twice", 10).unwrap());
        assert!(!usable(conn, "twice", 10).unwrap());
        assert!(!usable(conn, "late", 1_000).unwrap());
        assert!(!spend(conn, "late", 1_000).unwrap());
        assert!(!usable(conn, "unknown", 10).unwrap());
        assert_eq!(prune(conn, 1_000).unwrap(), 2);
    }
}
