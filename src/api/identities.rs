//! Identities (SPEC §10.1): each account may publish opaque bytes (its
//! public keys, to the clients that read them); every version is kept and
//! numbered. Any signed-in account may look up the identity of an id, at
//! most 100 different ids an hour. The server verifies nothing in them.

use super::{App, DAY, paging, respond};
use super::{Request, Step};
use crate::auth;
use crate::clock;
use crate::db;
use crate::encoding::hex;
use crate::error::ApiError;
use crate::http::Response;
use crate::limits::{MAX_IDENTITY_BYTES, PUBLISHES_PER_DAY};
use crate::precondition;
use serde_json::json;
use std::time::Instant;

/// `PUT /v1/account/identity`
pub fn publish(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let bytes = &request.body;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("An identity is 1 or more bytes."));
    }
    if bytes.len() > MAX_IDENTITY_BYTES {
        return Err(ApiError::PayloadTooLarge("identity"));
    }
    let head = &request.head;
    let precondition = precondition::parse_write(
        head.list_header("if-match")?.as_deref(),
        head.list_header("if-none-match")?.as_deref(),
    )?;
    let session = app.authenticate(request)?;
    let conn = app.db.conn();
    let latest = db::identities::latest(conn, &session.account_id)?;
    precondition::decide(&precondition, latest.as_ref().map(|(_, token)| token.as_str())).map_err(|refusal| match (
        refusal, &latest,
    ) {
        (precondition::Refusal::Failed, Some((_, token))) => ApiError::PreconditionFailedAt(token.clone()),
        (precondition::Refusal::Failed, None) => ApiError::PreconditionFailed(None),
        (precondition::Refusal::Required, _) => ApiError::PreconditionRequired,
    })?;
    let now = clock::now_ms();
    if db::identities::published_since(conn, &session.account_id, now - DAY.as_millis() as i64)? >= PUBLISHES_PER_DAY {
        return Err(ApiError::TooManyRequests { retry_after_secs: 3600 });
    }
    let version = latest.map_or(1, |(version, _)| version + 1);
    let token = hex(&auth::random_bytes::<32>()?);
    db::identities::insert(conn, &session.account_id, version, bytes, &token, now)?;
    let status = if version == 1 { 201 } else { 200 };
    respond(
        Response::json(status, &json!({ "version": version, "token": token }))
            .with_header("ETag", format!("\"{token}\"")),
    )
}

/// `GET /v1/account/identity[?version=N]`: the caller's own.
pub fn own(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let version = parse_version(request.head.query.as_deref())?;
    let session = app.authenticate(request)?;
    let identity = db::identities::get(app.db.conn(), &session.account_id, version)?.ok_or(ApiError::NotFound)?;
    respond(answer(identity))
}

/// `GET /v1/accounts/{id}/identity[?version=N]`: another account's.
pub fn lookup(app: &mut App, request: &Request, id: &str) -> Result<Step, ApiError> {
    let version = parse_version(request.head.query.as_deref())?;
    let session = app.authenticate(request)?;
    // Checked before the lookup, keyed by the id's hash, so a locked-out caller learns nothing.
    let normalised = auth::normalise_id(id).ok();
    let account_id = normalised.as_deref().map(|id| auth::account_hash(&app.secret, id));
    let asked = account_id.clone().unwrap_or_default();
    app.identity_lookups
        .admit(&session.account_id, &asked, Instant::now())
        .map_err(|wait| ApiError::TooManyRequests { retry_after_secs: wait.as_secs().max(1) })?;
    let account_id = account_id.ok_or(ApiError::NoSuchAccount)?;
    let conn = app.db.conn();
    // One answer for an unknown id and an id with no identity.
    if db::identities::latest(conn, &account_id)?.is_none() {
        return Err(ApiError::NoSuchAccount);
    }
    let identity = db::identities::get(conn, &account_id, version)?.ok_or(ApiError::NotFound)?;
    respond(answer(identity))
}

fn answer(identity: db::identities::Identity) -> Response {
    Response::bytes(200, identity.bytes)
        .with_header("Content-Type", "application/octet-stream")
        .with_header("Cache-Control", "private, no-cache")
        .with_header("ETag", format!("\"{}\"", identity.token))
        .with_header("Sync-Identity-Version", identity.version.to_string())
}

/// `version`: a whole number ≥ 1 (else 400); absent: the latest.
fn parse_version(query: Option<&str>) -> Result<Option<i64>, ApiError> {
    let mut version = None;
    for (name, value) in paging::pairs(query) {
        if name == "version" {
            let number = paging::whole_number(value)
                .filter(|n| *n >= 1)
                .ok_or_else(|| ApiError::bad_request("version must be a whole number of at least 1."))?;
            version = Some(i64::try_from(number).unwrap_or(i64::MAX));
        }
    }
    Ok(version)
}
