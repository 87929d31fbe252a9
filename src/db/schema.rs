//! The schema as a ladder of migrations: `PRAGMA user_version` says how many
//! steps a file has taken; the missing ones run in one transaction.

use rusqlite::Connection;

/// Step N (1-based) takes a file from version N-1 to N. Never edit a step
/// that has shipped; add one.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, sessions, reset tokens, stores, permissions, the counter.
    "CREATE TABLE sync_account (
        id TEXT PRIMARY KEY NOT NULL,
        password TEXT NOT NULL,
        key_salt TEXT NOT NULL UNIQUE,
        created INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE sync_session (
        token TEXT PRIMARY KEY NOT NULL,
        account_id TEXT NOT NULL REFERENCES sync_account(id) ON DELETE CASCADE,
        expiration INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sync_session_account ON sync_session(account_id);
    CREATE TABLE password_reset_token (
        account_id TEXT PRIMARY KEY NOT NULL REFERENCES sync_account(id) ON DELETE CASCADE,
        token TEXT NOT NULL UNIQUE,
        expiration INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE sync_store (
        store_key TEXT PRIMARY KEY NOT NULL,
        store_file TEXT NOT NULL UNIQUE,
        store_token TEXT NOT NULL,
        store_meta TEXT,
        size INTEGER NOT NULL,
        modified INTEGER NOT NULL,
        seq INTEGER NOT NULL
    );
    CREATE TABLE account_permission (
        account_id TEXT NOT NULL REFERENCES sync_account(id) ON DELETE CASCADE,
        store_key TEXT NOT NULL REFERENCES sync_store(store_key) ON DELETE CASCADE,
        permission TEXT NOT NULL CHECK (permission IN ('READ', 'WRITE', 'OWN')),
        PRIMARY KEY (account_id, store_key)
    ) WITHOUT ROWID;
    CREATE INDEX account_permission_store ON account_permission(store_key);
    CREATE TABLE sync_counter (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO sync_counter (name, value) VALUES ('seq', 0);",
    // 2: the change log (one row per account and store: the seq of the
    // latest change that account must hear about) and its pruning horizon.
    "CREATE TABLE change_log (
        account_id TEXT NOT NULL REFERENCES sync_account(id) ON DELETE CASCADE,
        store_key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        changed INTEGER NOT NULL,
        PRIMARY KEY (account_id, store_key)
    ) WITHOUT ROWID;
    CREATE INDEX change_log_feed ON change_log(account_id, seq);
    INSERT INTO change_log (account_id, store_key, seq, changed)
        SELECT p.account_id, p.store_key, s.seq, s.modified
        FROM account_permission p JOIN sync_store s ON s.store_key = p.store_key;
    INSERT INTO sync_counter (name, value) VALUES ('horizon', 0);",
    // 3: settings of the data directory; its generation is random, and a
    // copy made by `sync-node backup` gets a new one.
    "CREATE TABLE sync_setting (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;
    INSERT INTO sync_setting (name, value) VALUES ('generation', lower(hex(randomblob(16))));",
    // 4: the credential version of an account, bumped by every password
    // change and reset (not by a hash upgrade at sign-in): a continuation
    // compares it before it commits.
    "ALTER TABLE sync_account ADD COLUMN credential INTEGER NOT NULL DEFAULT 0;",
    // 5: store logs (SPEC §9): entries keyed by store and index, and each
    // store's head, base and retained bytes.
    "ALTER TABLE sync_store ADD COLUMN log_head INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sync_store ADD COLUMN log_base INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sync_store ADD COLUMN log_bytes INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE store_log (
        store_key TEXT NOT NULL REFERENCES sync_store(store_key) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        bytes BLOB NOT NULL,
        PRIMARY KEY (store_key, idx)
    );",
    // 6: invitations (SPEC §3), stored as hashes of their codes; and when
    // an account's sign-in lockout ends (written by the server when one
    // starts, read by `sync-node account list`).
    "CREATE TABLE sync_invite (
        code TEXT PRIMARY KEY NOT NULL,
        uses_left INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        created INTEGER NOT NULL
    ) WITHOUT ROWID;
    ALTER TABLE sync_account ADD COLUMN locked_until INTEGER NOT NULL DEFAULT 0;",
    // 7: identities and sealed grants (SPEC §10): every published version
    // of an account's identity; a grant's envelope and the seq of its last
    // change; share links, with the hash of their verifier, taken ids
    // kept (uses_left 0) until their store goes.
    "CREATE TABLE account_identity (
        account_id TEXT NOT NULL REFERENCES sync_account(id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        bytes BLOB NOT NULL,
        token TEXT NOT NULL,
        created INTEGER NOT NULL,
        PRIMARY KEY (account_id, version)
    ) WITHOUT ROWID;
    ALTER TABLE account_permission ADD COLUMN envelope BLOB;
    ALTER TABLE account_permission ADD COLUMN envelope_seq INTEGER;
    CREATE TABLE store_link (
        link TEXT PRIMARY KEY NOT NULL,
        store_key TEXT NOT NULL REFERENCES sync_store(store_key) ON DELETE CASCADE,
        verifier_hash TEXT NOT NULL,
        permission TEXT NOT NULL CHECK (permission IN ('READ', 'WRITE')),
        envelope BLOB NOT NULL,
        uses_left INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        created INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX store_link_store ON store_link(store_key);",
    // 8: quota counts what is stored (issue 21). Each store's `charge`
    // (db::stores::charge gives the same formula): its body and log bytes,
    // its key four times (it is stored in four places: the store, each
    // grant, its index and each change-log row), its metadata, 1,024 bytes
    // a store and 128 an entry, and its share links (`link_bytes`: each
    // its envelope, id and 256; a link's row stays until its store goes;
    // not part of db::stores::charge, which a write does not change).
    // Every owner's `bytes_used` and
    // `stores_owned` are counters kept by triggers, not sums per request.
    // Log entries are keyed by the store incarnation's `log_id` and carry
    // the running total of their log's bytes (`cum`), so compaction and
    // deletion change one row at once; the entries they drop are listed
    // in `log_garbage` and deleted in bounded chunks afterwards. An account
    // being deleted is marked `deleting` (it cannot sign in) while its
    // stores go, likewise in chunks. An account keeps at most 10,000
    // tombstones in its feed; older ones are forgotten early, raising its
    // own `horizon` (its devices below it resync, as below the global one).
    "ALTER TABLE sync_store ADD COLUMN log_id INTEGER;
    ALTER TABLE sync_store ADD COLUMN log_total INTEGER NOT NULL DEFAULT 0;
    UPDATE sync_store SET log_id = rowid;
    CREATE UNIQUE INDEX sync_store_log_id ON sync_store(log_id);
    CREATE TABLE store_entry (
        log_id INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        cum INTEGER NOT NULL,
        bytes BLOB NOT NULL,
        PRIMARY KEY (log_id, idx)
    );
    INSERT INTO store_entry (log_id, idx, cum, bytes)
        SELECT s.log_id, l.idx,
               sum(length(l.bytes)) OVER (PARTITION BY l.store_key ORDER BY l.idx ROWS UNBOUNDED PRECEDING),
               l.bytes
        FROM store_log l JOIN sync_store s ON s.store_key = l.store_key;
    UPDATE sync_store SET log_total = log_bytes;
    DROP TABLE store_log;
    CREATE TABLE log_garbage (log_id INTEGER PRIMARY KEY NOT NULL, upto INTEGER NOT NULL);
    ALTER TABLE sync_store ADD COLUMN link_bytes INTEGER NOT NULL DEFAULT 0;
    UPDATE sync_store SET link_bytes = (SELECT coalesce(sum(length(l.envelope) + length(l.link) + 256), 0)
                                        FROM store_link l WHERE l.store_key = sync_store.store_key);
    ALTER TABLE sync_store ADD COLUMN charge INTEGER GENERATED ALWAYS AS (
        size + log_bytes + 4 * length(CAST(store_key AS BLOB)) + coalesce(length(CAST(store_meta AS BLOB)), 0)
        + 1024 + 128 * (log_head - log_base) + link_bytes
    ) VIRTUAL;
    CREATE TRIGGER link_added AFTER INSERT ON store_link BEGIN
        UPDATE sync_store SET link_bytes = link_bytes + length(NEW.envelope) + length(NEW.link) + 256
        WHERE store_key = NEW.store_key;
    END;
    ALTER TABLE sync_account ADD COLUMN deleting INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sync_account ADD COLUMN horizon INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sync_account ADD COLUMN bytes_used INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sync_account ADD COLUMN stores_owned INTEGER NOT NULL DEFAULT 0;
    UPDATE sync_account SET
        bytes_used = (SELECT coalesce(sum(s.charge), 0) FROM account_permission p
                      JOIN sync_store s ON s.store_key = p.store_key
                      WHERE p.account_id = sync_account.id AND p.permission = 'OWN'),
        stores_owned = (SELECT count(*) FROM account_permission p
                        WHERE p.account_id = sync_account.id AND p.permission = 'OWN');
    CREATE TRIGGER store_charge_changed AFTER UPDATE ON sync_store WHEN NEW.charge <> OLD.charge BEGIN
        UPDATE sync_account SET bytes_used = bytes_used + NEW.charge - OLD.charge
        WHERE id IN (SELECT account_id FROM account_permission WHERE store_key = NEW.store_key AND permission = 'OWN');
    END;
    CREATE TRIGGER store_deleted BEFORE DELETE ON sync_store BEGIN
        UPDATE sync_account SET bytes_used = bytes_used - OLD.charge, stores_owned = stores_owned - 1
        WHERE id IN (SELECT account_id FROM account_permission WHERE store_key = OLD.store_key AND permission = 'OWN');
    END;
    CREATE TRIGGER owner_added AFTER INSERT ON account_permission WHEN NEW.permission = 'OWN' BEGIN
        UPDATE sync_account SET stores_owned = stores_owned + 1,
            bytes_used = bytes_used + (SELECT charge FROM sync_store WHERE store_key = NEW.store_key)
        WHERE id = NEW.account_id;
    END;
    CREATE TRIGGER owner_removed AFTER DELETE ON account_permission
    WHEN OLD.permission = 'OWN' AND EXISTS (SELECT 1 FROM sync_store WHERE store_key = OLD.store_key) BEGIN
        UPDATE sync_account SET stores_owned = stores_owned - 1,
            bytes_used = bytes_used - (SELECT charge FROM sync_store WHERE store_key = OLD.store_key)
        WHERE id = OLD.account_id;
    END;
    CREATE TRIGGER owner_changed AFTER UPDATE OF permission ON account_permission
    WHEN (OLD.permission = 'OWN') <> (NEW.permission = 'OWN') BEGIN
        UPDATE sync_account SET
            stores_owned = stores_owned + (CASE WHEN NEW.permission = 'OWN' THEN 1 ELSE -1 END),
            bytes_used = bytes_used + (CASE WHEN NEW.permission = 'OWN' THEN 1 ELSE -1 END)
                * (SELECT charge FROM sync_store WHERE store_key = NEW.store_key)
        WHERE id = NEW.account_id;
    END;",
];

fn version(conn: &Connection) -> Result<usize, String> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(|err| err.to_string())
}

/// For command-line tools: the file must have exactly this version's
/// schema. They never upgrade it: a server of another version may be
/// running on it.
pub fn check_current(conn: &Connection) -> Result<(), String> {
    let (version, ours) = (version(conn)?, MIGRATIONS.len());
    match version.cmp(&ours) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(format!(
            "schema version {version}, but this sync-node uses {ours}: start this version's server once to \
             upgrade it (commands never change the schema), or use the sync-node that matches the server"
        )),
        std::cmp::Ordering::Greater => Err(format!(
            "schema version {version} is newer than this sync-node understands ({ours}); use the sync-node \
             that matches the server"
        )),
    }
}

/// For the server, holding the data directory's lock: runs the missing
/// steps in one transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), String> {
    let version = version(conn)?;
    if version > MIGRATIONS.len() {
        return Err(format!(
            "schema version {version} is newer than this sync-node understands ({}); run a newer sync-node",
            MIGRATIONS.len()
        ));
    }
    if version == MIGRATIONS.len() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|err| err.to_string())?;
    for (index, step) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(step).map_err(|err| format!("migration {}: {err}", index + 1))?;
        tx.pragma_update(None, "user_version", index + 1).map_err(|err| err.to_string())?;
    }
    tx.commit().map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_of_the_previous_release_is_upgraded_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            // What the released server (schema version 2) left behind.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute("INSERT INTO sync_account (id, password, key_salt, created) VALUES ('a', 'h', 's', 1)", [])
                .unwrap();
        }
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn).unwrap();
        check_current(&conn).unwrap();
        let generation: String =
            conn.query_row("SELECT value FROM sync_setting WHERE name = 'generation'", [], |row| row.get(0)).unwrap();
        assert_eq!(generation.len(), 32);
        let (password, credential): (String, i64) = conn
            .query_row("SELECT password, credential FROM sync_account WHERE id = 'a'", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!((password.as_str(), credential), ("h", 0), "accounts are kept");
        let logs: i64 = conn.query_row("SELECT count(*) FROM store_entry", [], |row| row.get(0)).unwrap();
        assert_eq!(logs, 0);
        let (invites, locked): (i64, i64) = conn
            .query_row("SELECT (SELECT count(*) FROM sync_invite), locked_until FROM sync_account", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!((invites, locked), (0, 0));
        let (identities, links, envelopes): (i64, i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM account_identity), (SELECT count(*) FROM store_link),
                        (SELECT count(envelope) FROM account_permission)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .unwrap();
        assert_eq!((identities, links, envelopes), (0, 0, 0));
        migrate(&mut conn).unwrap();
        assert_eq!(
            conn.query_row("SELECT count(*) FROM sync_setting", [], |row| row.get::<_, i64>(0)).unwrap(),
            1,
            "migrating again changes nothing"
        );
    }

    #[test]
    fn a_database_of_schema_7_gains_charges_counters_and_entries_keyed_by_incarnation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seven.db");
        {
            let conn = Connection::open(&path).unwrap();
            for step in &MIGRATIONS[..7] {
                conn.execute_batch(step).unwrap();
            }
            conn.pragma_update(None, "user_version", 7).unwrap();
            conn.execute_batch(
                "INSERT INTO sync_account (id, password, key_salt, created) VALUES ('a', 'h', 's', 1), ('b', 'h', 't', 1);
                 INSERT INTO sync_store (store_key, store_file, store_token, store_meta, size, modified, seq, log_head, log_base, log_bytes)
                   VALUES ('k', 'f', 'tok', 'm=1', 3, 1, 1, 4, 1, 9), ('é', 'g', 'tok', NULL, 0, 1, 2, 0, 0, 0);
                 INSERT INTO store_log (store_key, idx, bytes) VALUES ('k', 2, x'0102'), ('k', 3, x'030405'), ('k', 4, x'06070809');
                 INSERT INTO account_permission (account_id, store_key, permission)
                   VALUES ('a', 'k', 'OWN'), ('b', 'k', 'OWN'), ('a', 'é', 'OWN'), ('b', 'é', 'READ');",
            )
            .unwrap();
        }
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        migrate(&mut conn).unwrap();
        let usage = |conn: &Connection, id: &str| -> (u64, u64) {
            conn.query_row("SELECT stores_owned, bytes_used FROM sync_account WHERE id = ?1", [id], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap()
        };
        let log = crate::db::stores::LogState { log_head: 4, log_base: 1, log_bytes: 9 };
        let k = crate::db::stores::charge("k", Some("m=1"), 3, log);
        let accented = crate::db::stores::charge("é", None, 0, Default::default());
        assert_eq!(k, 3 + 9 + 4 + 3 + 1024 + 3 * 128);
        assert_eq!(accented, 4 * 2 + 1024, "a key counts in bytes");
        assert_eq!(usage(&conn, "a"), (2, k + accented), "the counters start at the sums");
        assert_eq!(usage(&conn, "b"), (1, k), "a READ grant counts nothing");
        let entries: Vec<(i64, i64)> = conn
            .prepare("SELECT e.idx, e.cum FROM store_entry e JOIN sync_store s ON s.log_id = e.log_id ORDER BY e.idx")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(entries, vec![(2, 2), (3, 5), (4, 9)], "entries keep their index and gain running totals");
        // The triggers keep the counters: a change of size, a new owner, a
        // demotion, a deletion.
        conn.execute("UPDATE sync_store SET size = 103 WHERE store_key = 'k'", []).unwrap();
        assert_eq!(usage(&conn, "b"), (1, k + 100));
        conn.execute("UPDATE account_permission SET permission = 'OWN' WHERE account_id = 'b' AND store_key = 'é'", [])
            .unwrap();
        assert_eq!(usage(&conn, "b"), (2, k + 100 + accented));
        conn.execute(
            "UPDATE account_permission SET permission = 'READ' WHERE account_id = 'a' AND store_key = 'k'",
            [],
        )
        .unwrap();
        assert_eq!(usage(&conn, "a"), (1, accented));
        conn.execute("DELETE FROM sync_store WHERE store_key = 'k'", []).unwrap();
        assert_eq!(usage(&conn, "b"), (1, accented), "a deleted store counts no more, cascades and all");
        conn.execute("DELETE FROM account_permission WHERE account_id = 'b' AND store_key = 'é'", []).unwrap();
        assert_eq!(usage(&conn, "b"), (0, 0));
        assert_eq!(usage(&conn, "a"), (1, accented));
    }

    #[test]
    fn a_database_of_schema_6_with_data_keeps_its_grants_and_gains_section_10() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("six.db");
        {
            let conn = Connection::open(&path).unwrap();
            for step in &MIGRATIONS[..6] {
                conn.execute_batch(step).unwrap();
            }
            conn.pragma_update(None, "user_version", 6).unwrap();
            conn.execute_batch(
                "INSERT INTO sync_account (id, password, key_salt, created) VALUES ('a', 'h', 's', 1), ('b', 'h', 't', 1);
                 INSERT INTO sync_store (store_key, store_file, store_token, size, modified, seq) VALUES ('k', 'f', 'tok', 3, 1, 1);
                 INSERT INTO account_permission (account_id, store_key, permission) VALUES ('a', 'k', 'OWN'), ('b', 'k', 'READ');",
            )
            .unwrap();
        }
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        migrate(&mut conn).unwrap();
        check_current(&conn).unwrap();
        type GrantRow = (String, String, Option<Vec<u8>>, Option<i64>);
        let grants: Vec<GrantRow> = conn
            .prepare(
                "SELECT account_id, permission, envelope, envelope_seq FROM account_permission ORDER BY account_id",
            )
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(grants, vec![("a".into(), "OWN".into(), None, None), ("b".into(), "READ".into(), None, None)]);
        conn.execute(
            "INSERT INTO account_identity (account_id, version, bytes, token, created) VALUES ('b', 1, x'01', 't', 1)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO store_link (link, store_key, verifier_hash, permission, envelope, uses_left, expires, created)
             VALUES ('l', 'k', 'h', 'READ', x'01', 1, 9, 1)",
            [],
        )
        .unwrap();
        conn.execute("DELETE FROM sync_store WHERE store_key = 'k'", []).unwrap();
        conn.execute("DELETE FROM sync_account WHERE id = 'b'", []).unwrap();
        let left: (i64, i64) = conn
            .query_row("SELECT (SELECT count(*) FROM store_link), (SELECT count(*) FROM account_identity)", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!(left, (0, 0), "links go with their store, identities with their account");
    }
}
