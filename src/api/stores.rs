//! Stores: read, list, conditional write and delete. A write runs in two
//! halves: the request half checks everything that can be checked before
//! the body arrives and asks a work thread to stage the upload; the
//! upload half re-checks (another writer may have won meanwhile), publishes
//! the file and commits, following the durability protocol of DESIGN §2.

use super::Released;
use super::logs::{self, PendingAppend};
use super::{App, Session, paging, respond};
use super::{Received, Request, Step};
use crate::auth;
use crate::blobs::{Batch, Staged};
use crate::clock;
use crate::db::{self, Db, stores::Grant, stores::LogState, stores::StoreRow};
use crate::encoding::hex;
use crate::error::{ApiError, CurrentVersion, Shortage};
use crate::http::{Body, Framing, Response};
use crate::limits::MAX_META_BYTES;
use crate::permission::Permission;
use crate::precondition::{self, Precondition, Refusal};
use crate::read_cache::StoreRead;
use crate::router::decode_key;
use crate::uploads::Allowance;
use serde_json::json;
use std::io::Write;
use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock, Weak};

/// What a PUT does to the store's meta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaChange {
    Keep,
    Clear,
    Set(String),
}

/// A write waiting for its body: a store's new body, or a log entry.
#[derive(Debug)]
pub enum PendingWrite {
    Put(PendingPut),
    Append(PendingAppend),
}

impl PendingWrite {
    /// Whether its body is read into memory (a log entry, at most
    /// `MAX_ENTRY_BYTES`) rather than staged in a file.
    pub fn in_memory(&self) -> bool {
        matches!(self, PendingWrite::Append(_))
    }
}

/// A PUT waiting for its body.
#[derive(Debug)]
pub struct PendingPut {
    token_hash: String,
    key: String,
    precondition: Precondition,
    meta: MetaChange,
    /// `Sync-Log-Base: N`: drop the log's entries up to N in the same write.
    compact_to: Option<u64>,
}

/// `GET` / `HEAD /v1/stores/{key}`. What it answers is remembered for
/// the work threads to answer again until the next commit
/// ([`crate::read_cache`]).
pub fn get(app: &mut App, request: &Request, key: &str) -> Result<Step, ApiError> {
    let if_none_match =
        request.head.list_header("if-none-match")?.as_deref().map(precondition::parse_none_match).transpose()?;
    let session = app.authenticate(request)?;
    let (store, grant) = visible_grant(app, key, &session)?;
    let mut read = StoreRead {
        token: store.token,
        seq: store.seq,
        modified: store.modified,
        size: store.size,
        meta: store.meta,
        log_head: store.log.log_head,
        log_base: store.log.log_base,
        permission: grant.permission,
        envelope_seq: grant.envelope_seq,
        file: Weak::new(),
        kept: OnceLock::new(),
    };
    let body = || Ok::<_, ApiError>(Body::File { file: app.open_files.get(&app.blobs, &store.file)?, len: store.size });
    let response = read.answer(if_none_match.as_ref(), body)?;
    if let Body::File { file, .. } = &response.body {
        read.file = Arc::downgrade(file);
    }
    if let Some(at) = app.read_mark {
        app.reads.remember(at, &session.token_hash, session.fresh_until_ms, key, read);
    }
    respond(response)
}

/// `GET /v1/stores[?limit=L][&after=K]`: one page of the caller's stores
/// in key order, written straight from the rows into the answer.
pub fn list(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let (after, limit) = paging::after_and_limit(request.head.query.as_deref(), decode_key)?;
    let session = app.authenticate(request)?;
    let mut body = Vec::with_capacity(256);
    body.extend_from_slice(b"{\"stores\":[");
    let page = paging::Page::new(limit, app.others_waiting);
    let (mut listed, mut more, mut failed) = (0, false, None);
    db::stores::list_page(app.db.conn(), &session.account_id, after.as_deref(), limit, |store| {
        if page.is_full(listed) {
            more = true;
            return ControlFlow::Break(());
        }
        if listed > 0 {
            body.push(b',');
        }
        listed += 1;
        if let Err(err) = serde_json::to_writer(&mut body, &store) {
            failed.get_or_insert(err);
        }
        ControlFlow::Continue(())
    })?;
    if let Some(err) = failed {
        return Err(ApiError::Internal(format!("listing: {err}")));
    }
    write!(body, "],\"more\":{more},\"seq\":{}}}", app.db.current_seq()?).map_err(ApiError::from)?;
    respond(Response::json_bytes(200, body))
}

/// `PUT /v1/stores/{key}`: the half before the body.
pub fn put(app: &mut App, request: &Request, key: String) -> Result<Step, ApiError> {
    let head = &request.head;
    let (if_match, if_none_match) = (head.list_header("if-match")?, head.list_header("if-none-match")?);
    let precondition = precondition::parse_write(if_match.as_deref(), if_none_match.as_deref())?;
    let meta = parse_meta(head.single_header("sync-meta")?)?;
    let compact_to = head.header_str("sync-log-base")?.map(parse_log_index).transpose()?;
    let session = app.authenticate(request)?;
    let existing = check_write(app, &session, &key, &precondition)?;
    let log_after = check_compaction(app, &key, existing.as_ref(), compact_to)?;
    // A chunked body's size is checked while it streams and again at the end.
    let declared = if let Framing::Length(n) = head.framing { n } else { 0 };
    check_size(app, &session, &key, existing.as_ref(), &meta, declared, log_after, declared)?;
    let allowance = upload_allowance(app, &session, &key, existing.as_ref(), &meta, log_after)?;
    let then = PendingWrite::Put(PendingPut { token_hash: session.token_hash, key, precondition, meta, compact_to });
    Ok(Step::Receive { limit: app.config.max_store_bytes, then, allowance: Some(allowance) })
}

/// A log index in a header (`Sync-Log-Base`, `If-Log-Head`): a whole number.
pub(super) fn parse_log_index(value: &str) -> Result<u64, ApiError> {
    paging::whole_number(value.trim()).ok_or_else(|| ApiError::bad_request("A log index must be a whole number."))
}

/// The log as it will be after this write: compacted to `compact_to` (which
/// must lie within `log_base..=log_head`, else 400), or as it is.
fn check_compaction(
    app: &App,
    key: &str,
    existing: Option<&StoreRow>,
    compact_to: Option<u64>,
) -> Result<LogState, ApiError> {
    let log = existing.map(|store| store.log).unwrap_or_default();
    let Some(upto) = compact_to else { return Ok(log) };
    if upto < log.log_base || upto > log.log_head {
        return Err(ApiError::bad_request(format!(
            "Sync-Log-Base must lie between the log's base {} and head {}.",
            log.log_base, log.log_head
        )));
    }
    let log_bytes = if upto == log.log_base { log.log_bytes } else { db::logs::bytes_after(app.db.conn(), key, upto)? };
    Ok(LogState { log_base: upto, log_bytes, ..log })
}

/// The half after the bodies arrived, for every store write and log append
/// that finished while the loop was busy (group commit), inside the loop's
/// write transaction. Each is checked against the state the ones before it
/// left (so two writes with the same `If-Match` or `If-Log-Head` cannot
/// both win) and recorded; new store files are renamed into one directory
/// whose one fsync makes them durable before the loop commits. The inner
/// results answer each in the order of `uploads`; the outer error fails
/// the whole batch (nothing of it may be committed).
pub fn finish_uploads(
    app: &mut App,
    uploads: Vec<(PendingWrite, Received)>,
) -> Result<Vec<Result<Step, ApiError>>, ApiError> {
    let batch = match uploads.iter().any(|(then, _)| !then.in_memory()) {
        true => Some(app.blobs.batch()?),
        false => None,
    };
    let mut published = Vec::new();
    let mut unwritten = 0;
    let mut answers = Vec::with_capacity(uploads.len());
    let mut failed = None;
    for (then, received) in uploads {
        let staged = match (then, received, &batch) {
            (PendingWrite::Put(put), Received::File(file), Some(batch)) => {
                stage_put(app, batch, put, file, &mut published)
            }
            (PendingWrite::Append(append), Received::Entry(entry), _) => {
                logs::stage_append(app, append, entry, &mut unwritten)
            }
            _ => Err(ApiError::Internal("a body of the wrong kind for its write".into())),
        };
        match staged {
            Ok(answer) => answers.push(answer),
            Err(err) => {
                failed = Some(err);
                break;
            }
        }
    }
    let failed = match (failed, &batch) {
        (None, Some(batch)) if !published.is_empty() => app.blobs.sync_batch(batch).err().map(ApiError::from),
        (other, _) => other,
    };
    if let Some(err) = failed {
        // The transaction will roll back for sure: no row names these files.
        for file in &published {
            let _ = app.blobs.remove(file);
        }
        return Err(err);
    }
    Ok(answers)
}

/// Checks one upload and records it in the open transaction, answering
/// 201 or 200 (sent once the loop has committed; then the replaced file
/// goes and long-polls wake). The inner error refuses this upload alone;
/// the outer one means a statement failed half-way, so nothing of the
/// batch may be committed.
fn stage_put(
    app: &mut App,
    batch: &Batch,
    then: PendingPut,
    staged: Staged,
    published: &mut Vec<String>,
) -> Result<Result<Step, ApiError>, ApiError> {
    let checked = (|| {
        let session = app.session_by_hash(&then.token_hash)?;
        let existing = check_write(app, &session, &then.key, &then.precondition)?;
        let log = check_compaction(app, &then.key, existing.as_ref(), then.compact_to)?;
        check_size(app, &session, &then.key, existing.as_ref(), &then.meta, staged.size, log, 0)?;
        let token = hex(&auth::random_bytes::<32>()?);
        Ok((session, existing, token))
    })();
    let (session, existing, token) = match checked {
        Ok(checked) => checked,
        Err(err) => return Ok(Err(err)),
    };
    let size = staged.size;
    let file = match app.blobs.publish(staged, batch) {
        Ok(file) => file,
        Err(err) => return Ok(Err(err.into())),
    };
    published.push(file.clone());
    let meta = match then.meta {
        MetaChange::Keep => existing.as_ref().and_then(|old| old.meta.clone()),
        MetaChange::Clear => None,
        MetaChange::Set(meta) => Some(meta),
    };
    let log = existing.as_ref().map(|old| old.log).unwrap_or_default();
    let mut store = StoreRow { key: then.key, file, token, meta, size, modified: clock::now_ms(), seq: 0, log };
    let conn = app.db.conn();
    store.seq = Db::next_seq(conn)?;
    db::stores::upsert(conn, &store)?;
    if let Some(upto) = then.compact_to {
        store.log = db::logs::compact(conn, &store.key, upto)?;
        app.garbage = true;
    }
    if existing.is_none() {
        db::stores::set_permission(conn, &session.account_id, &store.key, Permission::Own)?;
    }
    app.announce_store_change(&store.key, store.seq, store.modified)?;
    let status = if existing.is_none() { 201 } else { 200 };
    let body = json!({
        "key": store.key,
        "token": store.token,
        "size": store.size,
        "modified": store.modified,
        "seq": store.seq,
        "log_head": store.log.log_head,
        "log_base": store.log.log_base,
        "log_bytes": store.log.log_bytes,
    });
    if let Some(old) = existing {
        let released = released(app, &store.key, old.size)?;
        app.after_commit.remove_file(old.file, released);
    }
    Ok(Ok(Step::Respond(Response::json(status, &body).with_header("ETag", format!("\"{}\"", store.token)))))
}

/// `DELETE /v1/stores/{key}`
pub fn delete(app: &mut App, request: &Request, key: &str) -> Result<Step, ApiError> {
    let head = &request.head;
    if head.header("if-none-match").is_some() {
        return Err(ApiError::bad_request("If-None-Match is not allowed on DELETE."));
    }
    let precondition = precondition::parse_write(head.list_header("if-match")?.as_deref(), None)?;
    let session = app.authenticate(request)?;
    let (store, held) = visible(app, key, &session)?;
    super::require(Some(held), Permission::Own)?;
    precondition::decide(&precondition, Some(&store.token)).map_err(|refusal| refused(refusal, &store))?;
    let released = released(app, key, store.size)?;
    let seq = Db::next_seq(app.db.conn())?;
    // Everyone who could see the store hears of its deletion.
    let touched = app.announce_store_change(key, seq, clock::now_ms())?;
    db::stores::delete(app.db.conn(), key)?;
    for account in &touched {
        db::changes::cap_tombstones(app.db.conn(), account)?;
    }
    app.garbage = true;
    app.after_commit.remove_file(store.file, released);
    respond(Response::new(204))
}

/// The store and the caller's permission; 404 when either is missing.
pub(super) fn visible(app: &App, key: &str, session: &Session) -> Result<(StoreRow, Permission), ApiError> {
    visible_grant(app, key, session).map(|(store, grant)| (store, grant.permission))
}

/// The store and the caller's grant (permission and envelope seq); 404
/// when either is missing.
pub(super) fn visible_grant(app: &App, key: &str, session: &Session) -> Result<(StoreRow, Grant), ApiError> {
    match db::stores::get_for(app.db.conn(), key, &session.account_id)? {
        Some((store, Some(grant))) => Ok((store, grant)),
        _ => Err(ApiError::NotFound),
    }
}

/// Visibility, permission and precondition of a write, in the SPEC's order.
/// Returns the current version (`None`: the write creates the store).
fn check_write(
    app: &App,
    session: &Session,
    key: &str,
    precondition: &Precondition,
) -> Result<Option<StoreRow>, ApiError> {
    let Some((store, held)) = db::stores::get_for(app.db.conn(), key, &session.account_id)? else {
        precondition::decide(precondition, None).map_err(|_| ApiError::PreconditionFailed(None))?;
        return Ok(None);
    };
    if held.is_none() && matches!(precondition, Precondition::None | Precondition::Absent) {
        return Err(ApiError::Forbidden("That key is taken by a store you cannot see."));
    }
    super::require(held.map(|grant| grant.permission), Permission::Write)?;
    precondition::decide(precondition, Some(&store.token)).map_err(|refusal| refused(refusal, &store))?;
    Ok(Some(store))
}

/// Meta, quota and free-disk limits for a write of `size` bytes with the
/// log as `log` leaves it, of which `unwritten` are not on the disk yet
/// (all before the upload, none after). A new store must also fit under
/// the owner's `MAX_STORES_PER_ACCOUNT`.
#[allow(clippy::too_many_arguments)]
fn check_size(
    app: &App,
    session: &Session,
    key: &str,
    existing: Option<&StoreRow>,
    meta: &MetaChange,
    size: u64,
    log: LogState,
    unwritten: u64,
) -> Result<(), ApiError> {
    if size > app.config.max_store_bytes {
        return Err(ApiError::PayloadTooLarge("store"));
    }
    if matches!(meta, MetaChange::Set(text) if text.len() > MAX_META_BYTES) {
        return Err(ApiError::PayloadTooLarge("Sync-Meta value"));
    }
    let charge = db::stores::charge(key, new_meta(meta, existing), size, log);
    match existing {
        Some(store) => check_quota(app, Owners::OfStore(key), store.charge(), charge)?,
        None => {
            let (owned, _) = db::accounts::usage(app.db.conn(), &session.account_id)?;
            if owned >= app.config.max_stores_per_account {
                return Err(ApiError::InsufficientStorage(Shortage::Stores));
            }
            check_quota(app, Owners::Just(&session.account_id), 0, charge)?
        }
    }
    check_free_disk(app, unwritten)
}

/// How many body bytes the quota of the owner with the least room has
/// room for (the body streams against it, beside that owner's other
/// uploads in flight).
fn upload_allowance(
    app: &App,
    session: &Session,
    key: &str,
    existing: Option<&StoreRow>,
    meta: &MetaChange,
    log: LogState,
) -> Result<Allowance, ApiError> {
    let Some(quota) = app.config.quota_bytes else {
        return Ok(Allowance { account: session.account_id.clone(), quota_room: None });
    };
    let owners = match existing {
        Some(_) => db::stores::owners(app.db.conn(), key)?,
        None => vec![session.account_id.clone()],
    };
    let without_body = db::stores::charge(key, new_meta(meta, existing), 0, log);
    let old = existing.map_or(0, StoreRow::charge);
    let mut rooms = Vec::with_capacity(owners.len());
    for owner in owners {
        let (_, used) = app.bytes_used(&owner)?;
        rooms.push((quota.saturating_sub(used.saturating_sub(old).saturating_add(without_body)), owner));
    }
    let (room, account) = rooms.into_iter().min().unwrap_or((0, session.account_id.clone()));
    Ok(Allowance { account, quota_room: Some(room) })
}

/// Whom a version of `key` of `bytes` counts against once removed, while
/// readers still hold it: its owners, when there is a quota to count
/// against.
fn released(app: &App, key: &str, bytes: u64) -> Result<Released, ApiError> {
    let owners = if app.config.quota_bytes.is_some() { db::stores::owners(app.db.conn(), key)? } else { Vec::new() };
    Ok(Released { bytes, owners })
}

/// The metadata a write leaves the store with.
fn new_meta<'a>(meta: &'a MetaChange, existing: Option<&'a StoreRow>) -> Option<&'a str> {
    match meta {
        MetaChange::Keep => existing.and_then(|store| store.meta.as_deref()),
        MetaChange::Clear => None,
        MetaChange::Set(text) => Some(text.as_str()),
    }
}

/// 507 when writing `unwritten` more bytes would leave less than
/// `MIN_FREE_BYTES` free on the data directory's disk.
pub(super) fn check_free_disk(app: &App, unwritten: u64) -> Result<(), ApiError> {
    let free = app.blobs.free_bytes()?;
    if free < app.config.min_free_bytes.saturating_add(unwritten) {
        return Err(ApiError::InsufficientStorage(Shortage::Disk));
    }
    Ok(())
}

/// Whose quota a change counts against (looked up only when a quota is set).
pub(super) enum Owners<'a> {
    /// Every account that OWNs the store with this key.
    OfStore(&'a str),
    /// One account (a creator, a grantee).
    Just(&'a str),
}

/// Whether each of `owners` stays within the quota when a store they own
/// goes from counting `old_charge` to `new_charge` bytes
/// ([`db::stores::charge`]; 507 otherwise).
pub(super) fn check_quota(app: &App, owners: Owners<'_>, old_charge: u64, new_charge: u64) -> Result<(), ApiError> {
    let Some(quota) = app.config.quota_bytes else { return Ok(()) };
    let owners = match owners {
        Owners::OfStore(key) => db::stores::owners(app.db.conn(), key)?,
        Owners::Just(account) => vec![account.to_owned()],
    };
    for owner in &owners {
        let (_, used) = app.bytes_used(owner)?;
        if used.saturating_sub(old_charge).saturating_add(new_charge) > quota {
            return Err(ApiError::InsufficientStorage(Shortage::Quota));
        }
    }
    Ok(())
}

pub(super) fn refused(refusal: Refusal, store: &StoreRow) -> ApiError {
    match refusal {
        Refusal::Required => ApiError::PreconditionRequired,
        Refusal::Failed => ApiError::PreconditionFailed(Some(CurrentVersion {
            token: store.token.clone(),
            size: store.size,
            modified: store.modified,
            seq: store.seq,
            meta: store.meta.clone(),
            log_head: store.log.log_head,
            log_base: store.log.log_base,
        })),
    }
}

/// `Sync-Meta`: absent keeps, empty clears; visible ASCII and spaces only.
fn parse_meta(value: Option<&[u8]>) -> Result<MetaChange, ApiError> {
    match value {
        None => Ok(MetaChange::Keep),
        Some([]) => Ok(MetaChange::Clear),
        Some(bytes) if bytes.iter().all(|&b| b == b' ' || b.is_ascii_graphic()) => {
            Ok(MetaChange::Set(String::from_utf8_lossy(bytes).into_owned()))
        }
        Some(_) => Err(ApiError::bad_request("Sync-Meta may only hold visible ASCII and spaces.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_header() {
        assert_eq!(parse_meta(None).unwrap(), MetaChange::Keep);
        assert_eq!(parse_meta(Some(b"")).unwrap(), MetaChange::Clear);
        assert_eq!(parse_meta(Some(b"a b=")).unwrap(), MetaChange::Set("a b=".into()));
        assert!(parse_meta(Some(b"tab\there")).is_err());
        assert!(parse_meta(Some("é".as_bytes())).is_err());
    }
}
