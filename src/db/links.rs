//! SQL for share links (SPEC §10.3): per link its store, the hash of its
//! verifier, the permission it grants, its envelope, the uses it has left
//! and when it expires. A deleted or used-up link keeps its row (with no
//! uses left), so its id stays taken while its store exists.

use crate::permission::Permission;
use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub link: String,
    pub key: String,
    pub verifier_hash: String,
    pub permission: Permission,
    pub envelope: Vec<u8>,
    pub uses_left: i64,
    pub expires: i64,
    pub created: i64,
}

fn link_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Link> {
    let permission: String = row.get(3)?;
    Ok(Link {
        link: row.get(0)?,
        key: row.get(1)?,
        verifier_hash: row.get(2)?,
        permission: Permission::parse(&permission).unwrap_or(Permission::Read),
        envelope: row.get(4)?,
        uses_left: row.get(5)?,
        expires: row.get(6)?,
        created: row.get(7)?,
    })
}

const COLUMNS: &str = "link, store_key, verifier_hash, permission, envelope, uses_left, expires, created";

/// Whether the id is taken (by a link of any store, working or not).
/// How many links the store has made (working or not).
pub fn count(conn: &Connection, key: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT count(*) FROM store_link WHERE store_key = ?1")?.query_row([key], |row| row.get(0))
}

pub fn taken(conn: &Connection, link: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM store_link WHERE link = ?1")?.exists([link])
}

pub fn insert(conn: &Connection, link: &Link) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!("INSERT INTO store_link ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"))?
        .execute(params![
            link.link,
            link.key,
            link.verifier_hash,
            link.permission.as_str(),
            link.envelope,
            link.uses_left,
            link.expires,
            link.created
        ])?;
    Ok(())
}

/// A link by id, working or not.
pub fn get(conn: &Connection, link: &str) -> rusqlite::Result<Option<Link>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM store_link WHERE link = ?1"))?
        .query_row([link], link_row)
        .optional()
}

/// The store's links that still work at `now`, oldest first.
pub fn working(conn: &Connection, key: &str, now: i64) -> rusqlite::Result<Vec<Link>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM store_link WHERE store_key = ?1 AND uses_left > 0 AND expires > ?2 ORDER BY created, link"
    ))?;
    let rows = statement.query_map(params![key, now], link_row)?;
    rows.collect()
}

/// Ends a link of the store (its id stays taken); whether it was there.
pub fn end(conn: &Connection, key: &str, link: &str) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached("UPDATE store_link SET uses_left = 0 WHERE store_key = ?1 AND link = ?2")?
        .execute(params![key, link])?;
    Ok(changed == 1)
}

/// Spends one use of a working link; whether it could.
pub fn spend(conn: &Connection, link: &str, now: i64) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE store_link SET uses_left = uses_left - 1 WHERE link = ?1 AND uses_left > 0 AND expires > ?2",
        )?
        .execute(params![link, now])?;
    Ok(changed == 1)
}

/// What SPEC §10 keeps, counted for `sync-node check`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharingCounts {
    pub identities: u64,
    pub envelopes: u64,
    pub links: u64,
}

pub fn counts(conn: &Connection, now: i64) -> rusqlite::Result<SharingCounts> {
    conn.query_row(
        "SELECT (SELECT count(*) FROM account_identity),
                (SELECT count(envelope) FROM account_permission),
                (SELECT count(*) FROM store_link WHERE uses_left > 0 AND expires > ?1)",
        [now],
        |row| Ok(SharingCounts { identities: row.get(0)?, envelopes: row.get(1)?, links: row.get(2)? }),
    )
}
