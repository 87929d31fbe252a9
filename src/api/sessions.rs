//! Sessions: sign in (throttled before any PBKDF2 work), sign out, sign out
//! everywhere. A successful sign-in also upgrades a hash made with an older
//! `PBKDF2_ITERATIONS`.

use super::accounts::Credentials;
use super::{AfterPassword, App, json_body, respond};
use super::{Request, Step};
use crate::auth::{self, PasswordJob, PasswordOutcome};
use crate::clock;
use crate::db;
use crate::error::ApiError;
use crate::http::Response;
use crate::limits::MAX_SESSIONS_PER_ACCOUNT;
use serde_json::json;
use std::time::Instant;

/// `POST /v1/sessions`
pub fn login(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let credentials: Credentials = json_body(request)?;
    let (account_id, address) = app.attempt_identity(request, &credentials.id, &credentials.password)?;
    app.sign_ins.reserve(&account_id, Instant::now()).map_err(super::too_many)?;
    let ticket = match app.admit_password_attempt(&account_id, address) {
        Ok(ticket) => ticket,
        Err(err) => {
            app.sign_ins.release(&account_id);
            return Err(err);
        }
    };
    let account = db::accounts::get(app.db.conn(), &account_id)?;
    let iterations = app.config.pbkdf2_iterations;
    let (checked_against, then_hash) = match &account {
        Some(account) if auth::hash_iterations(&account.password) != Some(iterations) => {
            (account.password.clone(), Some((credentials.password.clone(), iterations)))
        }
        Some(account) => (account.password.clone(), None),
        None => (app.decoy_hash.clone(), None),
    };
    let job =
        PasswordJob::Verify { password: credentials.password, phc: checked_against, then_hash, pad_to: iterations };
    let credential = account.as_ref().map_or(0, |account| account.credential);
    let phc = account.map(|account| account.password);
    Ok(Step::Password { job, then: AfterPassword::Login { account_id, phc, credential, address }, ticket })
}

/// A sign-in whose password matched gets a session only if the account's
/// credential version is the one it was checked under: a password change,
/// reset or deletion that committed meanwhile wins. A hash upgrade is
/// written only over the hash it replaces.
pub fn finish_login(
    app: &mut App,
    account_id: &str,
    phc: Option<String>,
    credential: i64,
    outcome: PasswordOutcome,
) -> Result<Step, ApiError> {
    let outcome = match outcome {
        PasswordOutcome::Verified { matches, new_hash } => {
            PasswordOutcome::Verified { matches: matches && phc.is_some(), new_hash }
        }
        other => other,
    };
    let upgraded = App::verified(outcome, ApiError::InvalidCredentials)?;
    let checked = phc.ok_or(ApiError::InvalidCredentials)?;
    let account = db::accounts::get(app.db.conn(), account_id)?.ok_or(ApiError::InvalidCredentials)?;
    if account.credential != credential {
        return Err(ApiError::InvalidCredentials);
    }
    if let Some(new_hash) = upgraded {
        db::accounts::upgrade_password(app.db.conn(), account_id, &checked, &new_hash?)?;
    }
    signed_in(app, &account.id, account.key_salt)
}

/// Opens a session: 201 `{"token","expires","key_salt"}`.
pub fn signed_in(app: &mut App, account_id: &str, key_salt: String) -> Result<Step, ApiError> {
    let token = auth::new_token()?;
    let expires = clock::now_ms() + app.session_lifetime_ms();
    db::sessions::insert(app.db.conn(), &auth::token_hash(&token), account_id, expires)?;
    if db::sessions::keep_latest(app.db.conn(), account_id, MAX_SESSIONS_PER_ACCOUNT)? > 0 {
        app.after_commit.revoked(account_id.to_owned());
    }
    let body = json!({ "token": token, "expires": expires, "key_salt": key_salt });
    respond(Response::json(201, &body).with_header("Cache-Control", "no-store"))
}

/// `DELETE /v1/sessions/current`
pub fn logout(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let session = app.authenticate(request)?;
    db::sessions::delete(app.db.conn(), &session.token_hash)?;
    app.after_commit.revoked(session.account_id);
    respond(Response::new(204))
}

/// `DELETE /v1/sessions`
pub fn logout_everywhere(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let session = app.authenticate(request)?;
    db::sessions::delete_all(app.db.conn(), &session.account_id)?;
    app.after_commit.revoked(session.account_id);
    respond(Response::new(204))
}
