//! Stores: read, list, conditional write and delete. A write runs in two
//! halves: the request half checks everything that can be checked before
//! the body arrives and asks a connection thread to stage the upload; the
//! upload half re-checks (another writer may have won meanwhile), publishes
//! the file and commits, following the durability protocol of DESIGN §2.

use super::service::MAX_META_BYTES;
use super::{App, Session, paging, respond};
use crate::auth;
use crate::blobs::{Batch, Staged};
use crate::clock;
use crate::db::{self, Db, stores::StoreRow};
use crate::encoding::{hex, http_date};
use crate::error::{ApiError, CurrentVersion, Shortage};
use crate::http::{Body, Framing, Response};
use crate::permission::{self, Permission};
use crate::precondition::{self, Precondition, Refusal};
use crate::router::decode_key;
use crate::server::{Request, Step};
use serde_json::json;
use std::io::Write;
use std::ops::ControlFlow;

/// Store answers may be cached only if revalidated every time (SPEC §1): a
/// browser must never show a stale version or serve a revoked reader.
const REVALIDATE: &str = "private, no-cache";

/// What a PUT does to the store's meta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaChange {
    Keep,
    Clear,
    Set(String),
}

/// A write waiting for its body.
#[derive(Debug)]
pub struct PendingWrite {
    token_hash: String,
    key: String,
    precondition: Precondition,
    meta: MetaChange,
}

/// `GET` / `HEAD /v1/stores/{key}`
pub fn get(app: &mut App, request: &Request, key: &str) -> Result<Step, ApiError> {
    let if_none_match = request.head.header_str("if-none-match")?.map(precondition::parse_none_match).transpose()?;
    let session = app.authenticate(request)?;
    let (store, held) = visible(app, key, &session)?;
    let etag = format!("\"{}\"", store.token);
    if if_none_match.is_some_and(|tags| tags.matches(&store.token)) {
        return respond(Response::new(304).with_header("ETag", etag).with_header("Cache-Control", REVALIDATE));
    }
    let file = app.open_files.get(&app.blobs, &store.file)?;
    let mut response = Response::new(200)
        .with_header("Content-Type", "application/octet-stream")
        .with_header("Cache-Control", REVALIDATE)
        .with_header("ETag", etag)
        .with_header("Sync-Permission", held.as_str())
        .with_header("Sync-Seq", store.seq.to_string())
        .with_header("Last-Modified", http_date(store.modified));
    if let Some(meta) = store.meta {
        response.header("Sync-Meta", meta);
    }
    response.body = Body::File { file, len: store.size };
    respond(response)
}

/// `GET /v1/stores[?limit=L][&after=K]`: one page of the caller's stores
/// in key order, written straight from the rows into the answer.
pub fn list(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let (mut after, mut limit) = (None, paging::MAX_PAGE);
    for (name, value) in paging::pairs(request.head.query.as_deref()) {
        match name {
            "after" => after = Some(decode_key(value)?),
            "limit" => limit = paging::limit(value)?,
            _ => {}
        }
    }
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
    let precondition = precondition::parse_write(head.header_str("if-match")?, head.header_str("if-none-match")?)?;
    let meta = parse_meta(head.header("sync-meta"))?;
    let session = app.authenticate(request)?;
    let existing = check_write(app, &session, &key, &precondition)?;
    // A chunked body's size is checked while it streams and again at the end.
    let declared = if let Framing::Length(n) = head.framing { n } else { 0 };
    check_size(app, &session, &key, existing.as_ref(), &meta, declared, declared)?;
    let then = PendingWrite { token_hash: session.token_hash, key, precondition, meta };
    Ok(Step::Receive { limit: app.config.max_store_bytes, then })
}

/// A write whose row is in the open batch transaction, waiting for the
/// commit.
struct Written {
    store: StoreRow,
    replaced: Option<StoreRow>,
    touched: Vec<String>,
}

/// `PUT /v1/stores/{key}`, the half after the bodies are staged, for every
/// upload that finished while the loop was busy (group commit), inside the
/// loop's write transaction. Each is checked against the state the ones
/// before it left (so two writes with the same `If-Match` cannot both
/// win), renamed into one directory, and recorded; one directory fsync
/// then makes every rename durable before the loop commits. The inner
/// results answer each upload in the order of `uploads`; the outer error
/// fails the whole batch (nothing of it may be committed).
pub fn finish_uploads(
    app: &mut App,
    uploads: Vec<(PendingWrite, Staged)>,
) -> Result<Vec<Result<Step, ApiError>>, ApiError> {
    let batch = app.blobs.batch()?;
    let mut outcomes: Vec<Result<Written, ApiError>> = Vec::with_capacity(uploads.len());
    let mut failed = None;
    for (then, staged) in uploads {
        match stage_write(app, &batch, then, staged) {
            Ok(outcome) => outcomes.push(outcome),
            Err(err) => {
                failed = Some(err);
                break;
            }
        }
    }
    let failed = match failed {
        None if outcomes.iter().any(Result::is_ok) => app.blobs.sync_batch(&batch).err().map(ApiError::from),
        other => other,
    };
    if let Some(err) = failed {
        // The transaction will roll back for sure: no row names these files.
        for written in outcomes.iter().flatten() {
            let _ = app.blobs.remove(&written.store.file);
        }
        return Err(err);
    }
    Ok(outcomes.into_iter().map(|outcome| outcome.map(|written| answer_write(app, written))).collect())
}

/// Checks one upload and records it in the open transaction. The inner
/// error refuses this upload alone; the outer one means a statement failed
/// half-way, so nothing of the batch may be committed.
fn stage_write(
    app: &mut App,
    batch: &Batch,
    then: PendingWrite,
    staged: Staged,
) -> Result<Result<Written, ApiError>, ApiError> {
    let checked = (|| {
        let session = app.session_by_hash(&then.token_hash)?;
        let existing = check_write(app, &session, &then.key, &then.precondition)?;
        check_size(app, &session, &then.key, existing.as_ref(), &then.meta, staged.size, 0)?;
        Ok((session, existing))
    })();
    let (session, existing) = match checked {
        Ok(checked) => checked,
        Err(err) => return Ok(Err(err)),
    };
    let size = staged.size;
    let token = match auth::random_bytes::<32>() {
        Ok(bytes) => hex(&bytes),
        Err(err) => return Ok(Err(err)),
    };
    let file = match app.blobs.publish(staged, batch) {
        Ok(file) => file,
        Err(err) => return Ok(Err(err.into())),
    };
    let meta = match then.meta {
        MetaChange::Keep => existing.as_ref().and_then(|old| old.meta.clone()),
        MetaChange::Clear => None,
        MetaChange::Set(meta) => Some(meta),
    };
    let mut store = StoreRow { key: then.key, file, token, meta, size, modified: clock::now_ms(), seq: 0 };
    match record_write(app.db.conn(), &session, &mut store, existing.is_none()) {
        Ok(touched) => Ok(Ok(Written { store, replaced: existing, touched })),
        Err(err) => {
            let _ = app.blobs.remove(&store.file);
            Err(err)
        }
    }
}

/// The next seq, the store row, OWN for a creator, and the change log of
/// everyone with access; returns those accounts.
fn record_write(
    conn: &rusqlite::Connection,
    session: &Session,
    store: &mut StoreRow,
    created: bool,
) -> Result<Vec<String>, ApiError> {
    store.seq = Db::next_seq(conn)?;
    db::stores::upsert(conn, store)?;
    if created {
        db::stores::set_permission(conn, &session.account_id, &store.key, Permission::Own)?;
    }
    Ok(db::changes::touch_store(conn, &store.key, store.seq, store.modified)?)
}

/// The answer (201 or 200), sent once the loop has committed; then the
/// replaced file goes and long-polls wake.
fn answer_write(app: &mut App, written: Written) -> Step {
    let Written { store, replaced, touched } = written;
    let status = if replaced.is_none() { 201 } else { 200 };
    let body = json!({
        "key": store.key,
        "token": store.token,
        "size": store.size,
        "modified": store.modified,
        "seq": store.seq,
    });
    if let Some(old) = replaced {
        app.after_commit.remove_file(old.file);
    }
    app.after_commit.wake(touched);
    Step::Respond(Response::json(status, &body).with_header("ETag", format!("\"{}\"", store.token)))
}

/// `DELETE /v1/stores/{key}`
pub fn delete(app: &mut App, request: &Request, key: &str) -> Result<Step, ApiError> {
    let head = &request.head;
    if head.header("if-none-match").is_some() {
        return Err(ApiError::bad_request("If-None-Match is not allowed on DELETE."));
    }
    let precondition = precondition::parse_write(head.header_str("if-match")?, None)?;
    let session = app.authenticate(request)?;
    let (store, held) = visible(app, key, &session)?;
    permission::require(Some(held), Permission::Own)?;
    precondition::decide(&precondition, Some(&store.token)).map_err(|refusal| refused(refusal, &store))?;
    let conn = app.db.conn();
    let seq = Db::next_seq(conn)?;
    // Everyone who could see the store hears of its deletion.
    let touched = db::changes::touch_store(conn, key, seq, clock::now_ms())?;
    db::stores::delete(conn, key)?;
    app.after_commit.remove_file(store.file);
    app.after_commit.wake(touched);
    respond(Response::new(204))
}

/// The store and the caller's permission; 404 when either is missing.
pub(super) fn visible(app: &App, key: &str, session: &Session) -> Result<(StoreRow, Permission), ApiError> {
    match db::stores::get_for(app.db.conn(), key, &session.account_id)? {
        Some((store, Some(held))) => Ok((store, held)),
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
    permission::require(held, Permission::Write)?;
    precondition::decide(precondition, Some(&store.token)).map_err(|refusal| refused(refusal, &store))?;
    Ok(Some(store))
}

/// Meta, quota and free-disk limits for a write of `size` bytes, of which
/// `unwritten` are not on the disk yet (all before the upload, none after).
fn check_size(
    app: &App,
    session: &Session,
    key: &str,
    existing: Option<&StoreRow>,
    meta: &MetaChange,
    size: u64,
    unwritten: u64,
) -> Result<(), ApiError> {
    if size > app.config.max_store_bytes {
        return Err(ApiError::PayloadTooLarge("store"));
    }
    if matches!(meta, MetaChange::Set(text) if text.len() > MAX_META_BYTES) {
        return Err(ApiError::PayloadTooLarge("Sync-Meta value"));
    }
    match existing {
        Some(store) => check_quota(app, &db::stores::owners(app.db.conn(), key)?, store.size, size)?,
        None => check_quota(app, std::slice::from_ref(&session.account_id), 0, size)?,
    }
    check_free_disk(app, unwritten)
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

/// Whether each of `owners` stays within the quota when a store they own
/// goes from `old_size` to `new_size` bytes (507 otherwise).
pub(super) fn check_quota(app: &App, owners: &[String], old_size: u64, new_size: u64) -> Result<(), ApiError> {
    let Some(quota) = app.config.quota_bytes else { return Ok(()) };
    for owner in owners {
        let (_, used) = db::accounts::usage(app.db.conn(), owner)?;
        if used.saturating_sub(old_size).saturating_add(new_size) > quota {
            return Err(ApiError::InsufficientStorage(Shortage::Quota));
        }
    }
    Ok(())
}

fn refused(refusal: Refusal, store: &StoreRow) -> ApiError {
    match refusal {
        Refusal::Required => ApiError::PreconditionRequired,
        Refusal::Failed => ApiError::PreconditionFailed(Some(CurrentVersion {
            token: store.token.clone(),
            size: store.size,
            modified: store.modified,
            seq: store.seq,
            meta: store.meta.clone(),
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
