//! Password reset: `POST /v1/password-reset` answers 202 whether or not the
//! id exists, and only after the answer is on its way issues the token and
//! hands it to `RESET_HOOK`; `POST /v1/password-reset/confirm` takes a
//! single-use, one-hour token and a new password, and revokes every session.

use super::{AfterPassword, App, Deferred, ResetFor, json_body, respond};
use super::{Request, Step};
use crate::auth::{self, PasswordJob};
use crate::clock;
use crate::db;
use crate::error::ApiError;
use crate::hook::ResetHook;
use crate::http::Response;
use crate::limits::{MAX_HOOKS_RUNNING, RESET_TOKEN_LIFETIME};
use crate::log;
use serde::Deserialize;
use serde_json::json;
use std::net::IpAddr;
use std::time::Instant;

#[derive(Deserialize)]
struct ResetRequest {
    id: String,
}

#[derive(Deserialize)]
struct ResetConfirmation {
    id: String,
    token: String,
    new_password: String,
}

/// `POST /v1/password-reset`
pub fn request_reset(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    if app.reset_hook.is_none() {
        return Err(ApiError::NotConfigured);
    }
    let body: ResetRequest = json_body(request)?;
    let id = auth::normalise_id(&body.id)?;
    // Every request counts, whether or not the id exists.
    let address = app.client_address(request);
    App::take_place(&mut app.reset_requests, address)
        .inspect_err(|_| log::warn(format_args!("reset-limit address={address} (10 reset requests an hour)")))?;
    app.reset_requests.commit(&address, Instant::now());
    let account_id = auth::account_hash(&app.secret, &id);
    let exists = db::accounts::exists(app.db.conn(), &account_id)?;
    let account = exists.then(|| ResetFor { account_id, id: body.id.trim().to_owned() });
    app.deferred.push(Deferred::ResetRequested { account, address });
    respond(Response::json(202, &json!({})))
}

/// After the answer to a reset request for an existing account, inside the
/// loop's write transaction: a new token replaces the one already handed
/// out only if the account has had fewer than 3 this hour and the hook has
/// a place to run now; otherwise the request is dropped, with a log line
/// (the client got 202 either way).
pub(super) fn issue_requested(app: &mut App, account_id: String, id: String, address: IpAddr) -> Result<(), ApiError> {
    let now = Instant::now();
    if app.reset_tokens.reserve(&account_id, now).is_err() {
        log::info(format_args!("reset-dropped reason=account-limit (3 tokens an hour) last-address={address}"));
        return Ok(());
    }
    let Some(slot) = app.reset_hook.as_ref().and_then(ResetHook::reserve) else {
        app.reset_tokens.release(&account_id);
        // WARN: mail is being lost; the address may be the owner's.
        log::warn(format_args!(
            "reset-dropped reason=hook-busy ({MAX_HOOKS_RUNNING} RESET_HOOK runs already) last-address={address}"
        ));
        return Ok(());
    };
    app.reset_tokens.commit(&account_id, now);
    let token = issue_token(app.db.conn(), &account_id)?;
    app.after_commit.run_reset_hook(slot, id, token);
    Ok(())
}

/// A new one-hour token for the account, replacing any older one.
pub fn issue_token(conn: &rusqlite::Connection, account_id: &str) -> Result<String, ApiError> {
    let token = auth::new_token()?;
    db::resets::replace(
        conn,
        account_id,
        &auth::token_hash(&token),
        clock::now_ms() + RESET_TOKEN_LIFETIME.as_millis() as i64,
    )?;
    Ok(token)
}

/// `POST /v1/password-reset/confirm`
pub fn confirm(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let body: ResetConfirmation = json_body(request)?;
    let (account_id, address) = app.attempt_identity(request, &body.id, &body.new_password)?;
    let ticket = app.admit_password_attempt(&account_id, address)?;
    let token_hash = auth::token_hash(&body.token);
    if !token_is_valid(app, &account_id, &token_hash)? {
        app.failed_attempt(&account_id, address);
        return Err(rejected());
    }
    let job = PasswordJob::Hash { password: body.new_password, iterations: app.config.pbkdf2_iterations };
    Ok(Step::Password { job, then: AfterPassword::ResetConfirm { account_id, token_hash, address }, ticket })
}

pub fn finish_confirm(
    app: &mut App,
    account_id: &str,
    token_hash: &str,
    address: IpAddr,
    phc: Result<String, ApiError>,
) -> Result<Step, ApiError> {
    // Single use: another confirmation may have spent the token meanwhile.
    if !token_is_valid(app, account_id, token_hash)? {
        app.failed_attempt(account_id, address);
        return Err(rejected());
    }
    let phc = phc?;
    let conn = app.db.conn();
    db::accounts::set_password(conn, account_id, &phc)?;
    db::resets::delete(conn, account_id)?;
    db::sessions::delete_all(conn, account_id)?;
    app.after_commit.revoked(account_id.to_owned());
    app.throttle.success(account_id, address);
    respond(Response::new(204))
}

fn token_is_valid(app: &App, account_id: &str, token_hash: &str) -> Result<bool, ApiError> {
    Ok(match db::resets::get(app.db.conn(), account_id)? {
        Some((stored, expiration)) => {
            (expiration > clock::now_ms()) & auth::constant_time_eq(stored.as_bytes(), token_hash.as_bytes())
        }
        None => false,
    })
}

fn rejected() -> ApiError {
    ApiError::bad_request("The reset token is wrong, used or expired.")
}
