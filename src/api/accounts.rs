//! Accounts: register, the account summary, password change and account
//! deletion. PBKDF2 runs in its own pool; the loop resumes in the
//! `finish_*` functions with the continuation it handed out.

use super::{AfterPassword, App, CurrentPassword, Session, json_body, respond};
use super::{Request, Step};
use crate::auth::{self, PasswordJob, PasswordOutcome};
use crate::clock;
use crate::config::Registration;
use crate::db::{self, Db};
use crate::encoding::hex;
use crate::error::ApiError;
use crate::hashing::Ticket;
use crate::http::Response;
use crate::log;
use serde::Deserialize;
use serde_json::json;
use std::net::IpAddr;

#[derive(Deserialize)]
pub(super) struct Credentials {
    pub id: String,
    pub password: String,
}

#[derive(Deserialize)]
struct NewAccount {
    id: String,
    password: String,
    /// A code from `sync-node invite` (needed with `REGISTRATION=invite`).
    #[serde(default)]
    invite: Option<String>,
}

#[derive(Deserialize)]
struct PasswordChange {
    password: String,
    new_password: String,
}

#[derive(Deserialize)]
struct Confirmation {
    password: String,
}

/// `POST /v1/accounts`
pub fn register(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let new: NewAccount = json_body(request)?;
    let id = auth::normalise_id(&new.id)?;
    auth::check_password(&new.password)?;
    let account_id = auth::account_hash(&app.secret, &id);
    let address = app.client_address(request);
    let ticket = app.hashing_ticket(address, &account_id)?;
    // Before the id is looked up: without a valid invitation, nothing is
    // learnt about which ids exist.
    let invite = match app.config.registration {
        Registration::Open => None,
        Registration::Closed => return Err(ApiError::Forbidden("Registration is closed on this server.")),
        Registration::Invite => {
            let code = new.invite.as_deref().map(str::trim).filter(|code| !code.is_empty());
            let code = code.ok_or(ApiError::Forbidden("An invitation is needed to register on this server."))?;
            let code_hash = auth::token_hash(code);
            if !db::invites::usable(app.db.conn(), &code_hash, clock::now_ms())? {
                return Err(ApiError::Forbidden(UNUSABLE_INVITE));
            }
            Some(code_hash)
        }
    };
    if db::accounts::exists(app.db.conn(), &account_id)? {
        return Err(ApiError::AccountExists);
    }
    // Before any hashing; registrations in flight hold their place.
    App::take_place(&mut app.registrations, address)
        .inspect_err(|_| log::warn(format_args!("registration-limit address={address} (10 registrations an hour)")))?;
    let job = PasswordJob::Hash { password: new.password, iterations: app.config.pbkdf2_iterations };
    Ok(Step::Password { job, then: AfterPassword::Register { account_id, address, invite }, ticket })
}

const UNUSABLE_INVITE: &str = "The invitation is unknown, used up or expired.";

pub fn finish_register(
    app: &mut App,
    account_id: &str,
    address: IpAddr,
    invite: Option<&str>,
    phc: Result<String, ApiError>,
) -> Result<Step, ApiError> {
    // A failure here gives the place back (the loop calls App::abandon)
    // and rolls the account back. The invitation is spent in the same
    // transaction: registrations racing for its last use get one account.
    let key_salt = create(app.db.conn(), account_id, &phc?)?;
    if let Some(code_hash) = invite
        && !db::invites::spend(app.db.conn(), code_hash, clock::now_ms())?
    {
        return Err(ApiError::Forbidden(UNUSABLE_INVITE));
    }
    app.after_commit.registered(address);
    super::sessions::signed_in(app, account_id, key_salt)
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

/// `GET /v1/account`
/// `GET /v1/accounts/{id}/salt`: the salt a client feeds its passphrase KDF
/// for this id, so that the value it signs in with differs per server and
/// per id and cannot be precomputed without asking this server. A keyed
/// hash of the normalised id under a key derived from the server secret:
/// every id has one, registered or not (no enumeration, no database read),
/// and it stays the same for the life of the data directory.
pub fn kdf_salt(app: &mut App, id: &str) -> Result<Step, ApiError> {
    let id = auth::normalise_id(id)?;
    respond(Response::json(200, &json!({ "salt": auth::kdf_salt(&app.secret, &id) })))
}

pub fn show(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let session = app.authenticate(request)?;
    let account = db::accounts::get(app.db.conn(), &session.account_id)?.ok_or(ApiError::Unauthorized)?;
    let (store_count, bytes_used) = app.bytes_used(&account.id)?;
    let body = json!({
        "account": account.id,
        "key_salt": account.key_salt,
        "store_count": store_count,
        "bytes_used": bytes_used,
        "quota_bytes": app.config.quota_bytes,
    });
    respond(Response::json(200, &body))
}

/// `PUT /v1/account/password`
pub fn change_password(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let change: PasswordChange = json_body(request)?;
    auth::check_password(&change.new_password)?;
    let (check, ticket) = before_password_check(app, request)?;
    let iterations = app.config.pbkdf2_iterations;
    let job = PasswordJob::Verify {
        password: change.password,
        phc: check.phc.clone(),
        then_hash: Some((change.new_password, iterations)),
        pad_to: iterations,
    };
    Ok(Step::Password { job, then: AfterPassword::ChangePassword(check), ticket })
}

pub fn finish_change_password(
    app: &mut App,
    check: CurrentPassword,
    outcome: PasswordOutcome,
) -> Result<Step, ApiError> {
    let (session, new_hash) = confirmed(app, &check, outcome)?;
    let new_hash = new_hash.ok_or_else(|| ApiError::Internal("no new hash after a password change".into()))??;
    db::accounts::set_password(app.db.conn(), &session.account_id, &new_hash)?;
    db::sessions::delete_others(app.db.conn(), &session.account_id, &session.token_hash)?;
    app.after_commit.revoked(session.account_id);
    respond(Response::new(204))
}

/// What checking the current password needs: the session, the client's
/// address, the account's hash; 401 or 429 before any PBKDF2 work (the
/// attempt is admitted past the throttle here).
fn before_password_check(app: &mut App, request: &Request) -> Result<(CurrentPassword, Ticket), ApiError> {
    let session = app.authenticate(request)?;
    let address = app.client_address(request);
    let account = db::accounts::get(app.db.conn(), &session.account_id)?.ok_or(ApiError::Unauthorized)?;
    let ticket = app.hashing_ticket(address, &session.account_id)?;
    app.admit_attempt(&session.account_id, address)?;
    let check = CurrentPassword {
        token_hash: session.token_hash,
        account_id: session.account_id,
        address,
        phc: account.password,
        credential: account.credential,
    };
    Ok((check, ticket))
}

/// `DELETE /v1/account`
pub fn delete(app: &mut App, request: &Request) -> Result<Step, ApiError> {
    let confirmation: Confirmation = json_body(request)?;
    let (check, ticket) = before_password_check(app, request)?;
    let job = PasswordJob::Verify {
        password: confirmation.password,
        phc: check.phc.clone(),
        then_hash: None,
        pad_to: app.config.pbkdf2_iterations,
    };
    Ok(Step::Password { job, then: AfterPassword::DeleteAccount(check), ticket })
}

pub fn finish_delete(app: &mut App, check: CurrentPassword, outcome: PasswordOutcome) -> Result<Step, ApiError> {
    let (session, _) = confirmed(app, &check, outcome)?;
    // Gone at once for sign-ins and sessions; its stores go a chunk at a
    // time between requests (App::reap), so no account holds the loop.
    db::accounts::start_deleting(app.db.conn(), &session.account_id)?;
    app.garbage = true;
    app.after_commit.revoked(session.account_id);
    respond(Response::new(204))
}

/// What deleting (part of) an account left to do after its commit.
#[derive(Debug)]
pub struct DeletedAccount {
    /// Accounts whose feeds changed (they could see a deleted store).
    pub touched: Vec<String>,
    /// Files of the deleted stores, to remove.
    pub files: Vec<String>,
    /// The account itself is gone (its last stores were in this part).
    pub done: bool,
}

/// The verdict (the attempt is already settled), then: the caller's session if it is still live,
/// the current password matched, and the account's credential version is
/// unchanged (else a change or reset won meanwhile: 403), with
/// any hash made in the same trip. A mismatch counts as a failed attempt
/// and is 403 `wrong_password`.
fn confirmed(
    app: &mut App,
    check: &CurrentPassword,
    outcome: PasswordOutcome,
) -> Result<(Session, Option<Result<String, ApiError>>), ApiError> {
    let new_hash = App::verified(outcome, ApiError::WrongPassword)?;
    let session = app.session_by_hash(&check.token_hash)?;
    let current = db::accounts::get(app.db.conn(), &session.account_id)?.ok_or(ApiError::Unauthorized)?;
    if current.credential != check.credential {
        return Err(ApiError::WrongPassword);
    }
    Ok((session, new_hash))
}

/// Deletes up to `most` of the stores an account alone owns, inside the
/// caller's write transaction (leaving tombstones for everyone who could
/// see them), and the account itself (its permissions on other stores,
/// its sessions and reset token) once none is left. The caller removes
/// the files once the transaction has committed.
pub fn delete_account(tx: &rusqlite::Connection, account_id: &str, most: usize) -> Result<DeletedAccount, ApiError> {
    let doomed = db::stores::solely_owned(tx, account_id, most)?;
    let done = doomed.len() < most;
    let now = clock::now_ms();
    let mut touched = Vec::new();
    for store in &doomed {
        let seq = Db::next_seq(tx)?;
        touched.extend(db::changes::touch_store(tx, &store.key, seq, now)?);
        db::stores::delete(tx, &store.key)?;
    }
    if done {
        db::accounts::delete(tx, account_id)?;
    }
    touched.sort();
    touched.dedup();
    touched.retain(|account| account != account_id);
    for account in &touched {
        db::changes::cap_tombstones(tx, account)?;
    }
    Ok(DeletedAccount { touched, files: doomed.into_iter().map(|store| store.file).collect(), done })
}
