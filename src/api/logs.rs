//! Store logs (SPEC §9): `POST /v1/stores/{key}/log` appends one entry (its
//! body read into memory on a work thread, then group-committed
//! with other writes), and `GET /v1/stores/{key}/log` reads the retained
//! entries after an index, framed as 8-byte index, 4-byte length, bytes.
//! Compaction is a store PUT with `Sync-Log-Base` (see `stores`).

use super::stores::{Owners, PendingWrite, check_free_disk, check_quota, parse_log_index, refused, visible};
use super::{App, Session, paging, respond};
use super::{Request, Step};
use crate::auth;
use crate::clock;
use crate::db::{self, Db, stores::StoreRow};
use crate::error::{ApiError, Forgotten};
use crate::http::{Body, Framing, RequestHead, Response};
use crate::limits::{COUNTED_FROM, ENTRY_OVERHEAD};
use crate::permission::Permission;
use crate::precondition::{self, Precondition, Refusal};
use serde_json::json;

/// About how many bytes one answer of a log read holds at most (always at
/// least one entry).
const MAX_READ_BYTES: usize = 4 * 1024 * 1024;

/// An entry this small that has already arrived with its head goes straight
/// to group commit, whose checks are the whole of an append's: one trip
/// through the loop instead of two. Any other entry is checked first (so a
/// refusal never waits for the body) and then read.
pub const SMALL_ENTRY: u64 = 64 * 1024;

/// The append a request head asks for, to be committed with its entry
/// (see [`SMALL_ENTRY`]), which has already arrived with the head: so no
/// early answer (401, 404, 412 …) would have saved waiting for it. `None`
/// when a header is malformed (the usual path then answers 400).
pub fn small_append(head: &RequestHead, key: String) -> Option<PendingWrite> {
    let (expected_head, precondition) = append_conditions(head).ok()?;
    // No or a malformed token: the commit's session check answers 401.
    let token_hash = super::bearer_token(head).map(auth::token_hash).unwrap_or_default();
    Some(PendingWrite::Append(PendingAppend { token_hash, key, expected_head, precondition }))
}

/// An append's conditions: `If-Log-Head`, and `If-Match` / `If-None-Match`
/// on the store's body (an append does not change the body's token, so
/// `If-Match` says "only while the body is still this version").
fn append_conditions(head: &RequestHead) -> Result<(Option<u64>, Precondition), ApiError> {
    let expected_head = head.header_str("if-log-head")?.map(parse_log_index).transpose()?;
    let (if_match, if_none_match) = (head.list_header("if-match")?, head.list_header("if-none-match")?);
    let precondition = precondition::parse_write(if_match.as_deref(), if_none_match.as_deref())?;
    Ok((expected_head, precondition))
}

/// An append waiting for its entry.
#[derive(Debug)]
pub struct PendingAppend {
    token_hash: String,
    key: String,
    /// `If-Log-Head: H`: append only if `log_head` is still H.
    expected_head: Option<u64>,
    /// `If-Match` / `If-None-Match` on the body's token (none required).
    precondition: Precondition,
}

/// `POST /v1/stores/{key}/log`: the half before the entry.
pub fn append(app: &mut App, request: &Request, key: String) -> Result<Step, ApiError> {
    let (expected_head, precondition) = append_conditions(&request.head)?;
    let declared = match request.head.framing {
        Framing::None => return Err(ApiError::bad_request("A log entry is 1 or more bytes.")),
        Framing::Length(n) => n,
        Framing::Chunked => 0,
    };
    let session = app.authenticate(request)?;
    let store = check_append(app, &session, &key, expected_head, &precondition)?;
    check_entry_size(app, &store, declared, declared)?;
    let then = PendingWrite::Append(PendingAppend { token_hash: session.token_hash, key, expected_head, precondition });
    Ok(Step::Receive { limit: app.config.max_entry_bytes, then, allowance: None })
}

/// Visibility, WRITE, `If-Log-Head` (in the SPEC's order), then the
/// body's `If-Match` / `If-None-Match` if given.
fn check_append(
    app: &App,
    session: &Session,
    key: &str,
    expected_head: Option<u64>,
    precondition: &Precondition,
) -> Result<StoreRow, ApiError> {
    let (store, held) = visible(app, key, session)?;
    super::require(Some(held), Permission::Write)?;
    if expected_head.is_some_and(|head| head != store.log.log_head) {
        return Err(refused(Refusal::Failed, &store));
    }
    if *precondition != Precondition::None {
        precondition::decide(precondition, Some(&store.token)).map_err(|refusal| refused(refusal, &store))?;
    }
    Ok(store)
}

/// The entry's limits: `MAX_ENTRY_BYTES` (413), a log that would outgrow
/// `MAX_LOG_BYTES` (its bytes and 128 per entry; 413, compact first), the owners' quota and free disk
/// (507). `unwritten` bytes are not on the disk yet.
fn check_entry_size(app: &App, store: &StoreRow, size: u64, unwritten: u64) -> Result<(), ApiError> {
    if size > app.config.max_entry_bytes {
        return Err(ApiError::PayloadTooLarge("log entry"));
    }
    let added = size + ENTRY_OVERHEAD;
    if store.log.charge() + added > app.config.max_log_bytes {
        return Err(ApiError::PayloadTooLarge("store log (compact it: write the body with Sync-Log-Base)"));
    }
    let before = store.charge();
    check_quota(app, Owners::OfStore(&store.key), before, before + added)?;
    check_free_disk(app, unwritten)
}

/// The half after the entry arrived, in the loop's write transaction:
/// re-checks everything (another append may have won meanwhile), records
/// the entry under the next index and a new `seq`, and answers 201.
pub(super) fn stage_append(
    app: &mut App,
    then: PendingAppend,
    entry: Vec<u8>,
    batch_unwritten: &mut u64,
) -> Result<Result<Step, ApiError>, ApiError> {
    let checked = (|| {
        if entry.is_empty() {
            return Err(ApiError::bad_request("A log entry is 1 or more bytes."));
        }
        let session = app.session_by_hash(&then.token_hash)?;
        let store = check_append(app, &session, &then.key, then.expected_head, &then.precondition)?;
        // Not on disk yet, nor are the entries before it in this batch.
        check_entry_size(app, &store, entry.len() as u64, *batch_unwritten + entry.len() as u64)?;
        Ok(())
    })();
    if let Err(err) = checked {
        return Ok(Err(err));
    }
    *batch_unwritten += entry.len() as u64;
    let conn = app.db.conn();
    let seq = Db::next_seq(conn)?;
    let log = db::logs::append(conn, &then.key, &entry, seq)?;
    app.announce_store_change(&then.key, seq, clock::now_ms())?;
    let body = json!({
        "key": then.key,
        "index": log.log_head,
        "log_head": log.log_head,
        "log_bytes": log.log_bytes,
        "seq": seq,
    });
    Ok(Ok(Step::Respond(Response::json(201, &body))))
}

/// Appends one entry to a log answer: 8-byte index, 4-byte length, bytes.
fn frame(body: &mut Vec<u8>, index: u64, bytes: &[u8]) {
    body.extend_from_slice(&index.to_be_bytes());
    body.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    body.extend_from_slice(bytes);
}

/// `GET` / `HEAD /v1/stores/{key}/log[?after=I][&limit=L]`
pub fn read(app: &mut App, request: &Request, key: &str) -> Result<Step, ApiError> {
    let (after, limit) = paging::after_and_limit(request.head.query.as_deref(), parse_log_index)?;
    let session = app.authenticate(request)?;
    let (store, _) = visible(app, key, &session)?;
    let log = store.log;
    let after = after.unwrap_or(log.log_base);
    if after < log.log_base || after > log.log_head {
        return Err(ApiError::Gone(Forgotten::LogEntries));
    }
    let page = paging::Page::new(limit, app.others_waiting);
    // Smaller pages (with Sync-Log-More) while slow readers hold most of
    // the answers' memory, rather than 503s.
    let most_bytes = app.answers.room_for(MAX_READ_BYTES, app.client_address(request));
    let (mut entries, mut framed, mut more) = (0, 0, false);
    let fits = |_: u64, length: usize| {
        let fits = !page.is_full(entries) && (entries == 0 || framed + 12 + length <= most_bytes);
        if fits {
            entries += 1;
            framed += 12 + length;
        } else {
            more = true;
        }
        fits
    };
    let conn = app.db.conn();
    // No more than every retained entry after `after`, framed.
    let at_most = log.log_bytes.saturating_add((log.log_head - after).saturating_mul(12));
    let body = if request.head.is_head() {
        db::logs::lengths(conn, key, after, limit, fits)?;
        Body::Unsent(framed as u64)
    } else if at_most <= COUNTED_FROM as u64 {
        // A small page: one pass into a buffer that never grows.
        let mut body = Vec::with_capacity(at_most as usize);
        let rows = limit.saturating_add(1);
        db::logs::read(conn, key, after, rows, fits, |index, bytes| frame(&mut body, index, bytes))?;
        Body::Bytes(body)
    } else {
        // A large page is held until sent (see http::budget): its extent
        // first, from the entries' lengths alone, so that it is allocated
        // once at its exact size.
        db::logs::lengths(conn, key, after, limit, fits)?;
        let mut body = Vec::with_capacity(framed);
        db::logs::read(conn, key, after, entries, |_, _| true, |index, bytes| frame(&mut body, index, bytes))?;
        Body::Bytes(body)
    };
    let mut response = Response::new(200)
        .with_body(body)
        .with_header("Content-Type", "application/octet-stream")
        .with_header("Cache-Control", crate::read_cache::REVALIDATE)
        .with_header("Sync-Log-Head", log.log_head.to_string())
        .with_header("Sync-Log-Base", log.log_base.to_string());
    if more {
        response.header("Sync-Log-More", "1");
    }
    respond(response)
}
