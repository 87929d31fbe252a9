//! The handlers, by resource, and what they share: the [`App`] state the loop
//! owns, authentication of a request, JSON bodies, and the continuations of
//! requests that wait for a connection thread (PBKDF2, uploads).

mod accounts;
mod changes;
mod service;
mod sharing;
mod stores;

pub use accounts::{AfterPassword, create as create_account};
pub use stores::PendingWrite;

use crate::auth::{self, PasswordOutcome};
use crate::blobs::{Blobs, Staged};
use crate::clock;
use crate::config::Config;
use crate::cors;
use crate::db::{self, Db};
use crate::error::ApiError;
use crate::http::Response;
use crate::polls::{Poll, Polls};
use crate::router::Route;
use crate::server::{Reply, Request, Step};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Largest JSON body of a control endpoint.
pub const JSON_LIMIT: u64 = 64 * 1024;
/// How long deletions and lost access stay in the change feed.
const TOMBSTONE_RETENTION_MS: i64 = 30 * 86_400_000;
/// Longest bearer token we look up.
const MAX_TOKEN_CHARS: usize = 128;

/// Everything the loop owns.
pub struct App {
    pub config: Arc<Config>,
    pub db: Db,
    pub blobs: Blobs,
    /// Key of the account-id hashes.
    pub secret: Vec<u8>,
    /// Verified against for unknown ids, so they cost what known ones do.
    pub decoy_hash: String,
    /// Long-polls waiting for a change.
    pub polls: Polls<Reply>,
}

/// What a request comes to on the loop.
#[derive(Debug)]
pub enum Handled {
    /// Send this step to the connection thread now.
    Step(Step),
    /// Hold the request until a change or its deadline.
    Park(Poll),
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Session {
    pub account_id: String,
    pub token_hash: String,
}

impl App {
    /// Dispatches a request to its handler.
    pub fn handle(&mut self, route: Result<Route, ApiError>, request: Request) -> Result<Handled, ApiError> {
        let step = match route? {
            Route::Changes => return changes::changes(self, &request),
            Route::Preflight => respond(cors::preflight()),
            Route::Health => service::health(),
            Route::Info => service::info(&self.config),
            Route::Register => accounts::register(self, &request),
            Route::Login => accounts::login(self, &request),
            Route::Logout => accounts::logout(self, &request),
            Route::LogoutEverywhere => accounts::logout_everywhere(self, &request),
            Route::Account => accounts::show(self, &request),
            Route::ListStores => stores::list(self, &request),
            Route::GetStore(key) => stores::get(self, &request, &key),
            Route::PutStore(key) => stores::put(self, &request, key),
            Route::DeleteStore(key) => stores::delete(self, &request, &key),
            Route::GetPermissions(key) => sharing::list(self, &request, &key),
            Route::SetPermission(key) => sharing::set(self, &request, &key),
        };
        step.map(Handled::Step)
    }

    pub fn after_password(&mut self, then: AfterPassword, outcome: PasswordOutcome) -> Result<Step, ApiError> {
        accounts::after_password(self, then, outcome)
    }

    pub fn finish_upload(&mut self, then: PendingWrite, staged: Staged) -> Result<Step, ApiError> {
        stores::finish_upload(self, then, staged)
    }

    /// The session behind `Authorization: Bearer …`, extended when past half
    /// its lifetime (at most one write per session per half-lifetime).
    pub fn authenticate(&mut self, request: &Request) -> Result<Session, ApiError> {
        let token = bearer_token(request).ok_or(ApiError::Unauthorized)?;
        self.session_by_hash(&auth::token_hash(token))
    }

    /// The live session stored under `token_hash`, extended when due.
    pub fn session_by_hash(&mut self, token_hash: &str) -> Result<Session, ApiError> {
        let (account_id, expiration) = db::sessions::get(self.db.conn(), token_hash)?.ok_or(ApiError::Unauthorized)?;
        let now = clock::now_ms();
        if expiration <= now {
            return Err(ApiError::Unauthorized);
        }
        let lifetime = self.session_lifetime_ms();
        if expiration - now < lifetime / 2 {
            db::sessions::set_expiration(self.db.conn(), token_hash, now + lifetime)?;
        }
        Ok(Session { account_id, token_hash: token_hash.to_owned() })
    }

    /// Prunes expired sessions and tombstones older than the retention.
    pub fn maintain(&mut self) -> Result<(), ApiError> {
        let now = clock::now_ms();
        db::sessions::delete_expired(self.db.conn(), now)?;
        db::changes::prune(self.db.conn(), now - TOMBSTONE_RETENTION_MS)?;
        Ok(())
    }

    pub fn session_lifetime_ms(&self) -> i64 {
        i64::from(self.config.session_ttl_days) * 86_400_000
    }
}

fn bearer_token(request: &Request) -> Option<&str> {
    let value = std::str::from_utf8(request.head.header("authorization")?).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_TOKEN_CHARS).then_some(token)
}

/// Parses a JSON body into `T`; any mismatch is 400.
pub fn json_body<T: DeserializeOwned>(request: &Request) -> Result<T, ApiError> {
    serde_json::from_slice(&request.body).map_err(|err| ApiError::bad_request(format!("Invalid JSON body: {err}.")))
}

pub fn respond(response: Response) -> Result<Step, ApiError> {
    Ok(Step::Respond(response))
}
