//! Accounts and sessions: register, sign in, sign out, and the account
//! summary. PBKDF2 runs on the connection thread; the loop resumes in
//! [`after_password`] with the continuation it handed out.

use super::{App, json_body, respond};
use crate::auth::{self, PasswordJob, PasswordOutcome};
use crate::clock;
use crate::db;
use crate::encoding::hex;
use crate::error::ApiError;
use crate::http::Response;
use crate::server::{Request, Step};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Credentials {
    id: String,
    password: String,
}

/// Where a request resumes once its PBKDF2 work is done.
#[derive(Debug)]
pub enum AfterPassword {
    /// Create the account with the new hash.
    Register { account_id: String },
    /// Sign in if the password matched; `None`: the id is unknown.
    Login { account_id: Option<String> },
}

/// `POST /v1/accounts`
pub fn register(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let credentials: Credentials = json_body(request)?;
    let id = auth::normalise_id(&credentials.id)?;
    auth::check_password(&credentials.password)?;
    if !app.config.registration_open {
        return Err(ApiError::Forbidden("Registration is closed on this server."));
    }
    let account_id = auth::account_hash(&app.secret, &id);
    if db::accounts::exists(app.db.conn(), &account_id)? {
        return Err(ApiError::AccountExists);
    }
    let job = PasswordJob::Hash { password: credentials.password, iterations: app.config.pbkdf2_iterations };
    Ok(Step::Password { job, then: AfterPassword::Register { account_id } })
}

/// `POST /v1/sessions`
pub fn login(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let credentials: Credentials = json_body(request)?;
    let id = auth::normalise_id(&credentials.id)?;
    auth::check_password(&credentials.password)?;
    let account = db::accounts::get(app.db.conn(), &auth::account_hash(&app.secret, &id))?;
    let (account_id, phc) = match account {
        Some(account) => (Some(account.id), account.password),
        None => (None, app.decoy_hash.clone()),
    };
    let job = PasswordJob::Verify { password: credentials.password, phc };
    Ok(Step::Password { job, then: AfterPassword::Login { account_id } })
}

pub fn after_password(app: &mut App, then: AfterPassword, outcome: PasswordOutcome) -> Result<Step, ApiError> {
    match (then, outcome) {
        (AfterPassword::Register { account_id }, PasswordOutcome::Hashed(phc)) => {
            let key_salt = create(app.db.conn(), &account_id, &phc?)?;
            signed_in(app, &account_id, key_salt)
        }
        (AfterPassword::Login { account_id: Some(account_id) }, PasswordOutcome::Verified(true)) => {
            // The account may have been deleted while its password was checked.
            let account = db::accounts::get(app.db.conn(), &account_id)?.ok_or(ApiError::InvalidCredentials)?;
            signed_in(app, &account.id, account.key_salt)
        }
        (AfterPassword::Login { .. }, PasswordOutcome::Verified(_)) => Err(ApiError::InvalidCredentials),
        (then, outcome) => Err(ApiError::Internal(format!("password step {then:?} got {outcome:?}"))),
    }
}

/// Creates an account with a new random `key_salt`, which it returns.
pub fn create(conn: &rusqlite::Connection, account_id: &str, phc: &str) -> Result<String, ApiError> {
    let key_salt = hex(&auth::random_bytes::<32>()?);
    if db::accounts::insert(conn, account_id, phc, &key_salt, clock::now_ms())? {
        Ok(key_salt)
    } else {
        Err(ApiError::AccountExists)
    }
}

/// Opens a session: 201 `{"token","expires","key_salt"}`.
fn signed_in(app: &mut App, account_id: &str, key_salt: String) -> Result<Step, ApiError> {
    let token = auth::new_token()?;
    let expires = clock::now_ms() + app.session_lifetime_ms();
    db::sessions::insert(app.db.conn(), &auth::token_hash(&token), account_id, expires)?;
    let body = json!({ "token": token, "expires": expires, "key_salt": key_salt });
    respond(Response::json(201, &body).with_header("Cache-Control", "no-store"))
}

/// `DELETE /v1/sessions/current`
pub fn logout(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let session = app.authenticate(request)?;
    db::sessions::delete(app.db.conn(), &session.token_hash)?;
    respond(Response::new(204))
}

/// `DELETE /v1/sessions`
pub fn logout_everywhere(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let session = app.authenticate(request)?;
    db::sessions::delete_all(app.db.conn(), &session.account_id)?;
    respond(Response::new(204))
}

/// `GET /v1/account`
pub fn show(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let session = app.authenticate(request)?;
    let account = db::accounts::get(app.db.conn(), &session.account_id)?.ok_or(ApiError::Unauthorized)?;
    let (store_count, bytes_used) = db::accounts::usage(app.db.conn(), &account.id)?;
    let body = json!({
        "account": account.id,
        "key_salt": account.key_salt,
        "store_count": store_count,
        "bytes_used": bytes_used,
        "quota_bytes": app.config.quota_bytes,
    });
    respond(Response::json(200, &body))
}
