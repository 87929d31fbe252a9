//! The handlers, by resource, and what they share: the [`App`] state the loop
//! owns, authentication of a request, JSON bodies, and the continuations of
//! requests that wait for a work thread (PBKDF2, uploads).

mod accounts;
mod changes;
mod deferred;
mod identities;
mod links;
mod logs;
mod paging;
mod reset;
mod service;
mod sessions;
mod sharing;
mod stores;

pub use crate::exchange::{Received, Request};
pub use accounts::{create as create_account, delete_account};
pub use deferred::{Deferred, ResetFor};
pub use logs::{SMALL_ENTRY, small_append};
pub use reset::issue_token as issue_reset_token;
pub use stores::{PendingWrite, finish_uploads};

use crate::auth::{self, PasswordOutcome};
use crate::blobs::{Blobs, OpenFiles};
use crate::clock;
use crate::config::Config;
use crate::cors;
use crate::db::commits::CommitMark;
use crate::db::{self, Db};
use crate::error::ApiError;
use crate::hashing::{Hashing, Ticket};
use crate::hook::{HookSlot, ResetHook};
use crate::http::budget::MemoryBudget;
use crate::http::{RequestHead, Response};
use crate::log;
use crate::permission::Permission;
use crate::polls::{Poll, Polls};
use crate::ratelimit::{DistinctLimit, RateLimit};
use crate::read_cache::ReadCache;
use crate::router::Route;

use crate::throttle::Throttle;
use serde::de::DeserializeOwned;
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Instant;

/// Keys each rate-limit table keeps at most.
pub const RATE_LIMIT_KEYS: usize = 10_000;
/// Dropped log entries deleted at once by [`App::reap`], and about how
/// many of their bytes at most.
pub const REAP_ROWS: usize = 2_000;
pub const REAP_BYTES: u64 = 8 * 1024 * 1024;
/// Stores of an account being deleted that [`App::reap`] deletes at once.
pub const REAP_STORES: usize = 50;
pub const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);
pub const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

/// How long deletions and lost access stay in the change feed.
const TOMBSTONE_RETENTION_MS: i64 = 30 * 86_400_000;
/// Longest bearer token we look up.
const MAX_TOKEN_CHARS: usize = 128;

/// Everything the loop owns.
pub struct App {
    pub config: Arc<Config>,
    /// The data directory's generation (SPEC §2).
    pub generation: String,
    pub db: Db,
    pub blobs: Blobs,
    /// Key of the account-id hashes.
    pub secret: Vec<u8>,
    /// Verified against for unknown ids, so they cost what known ones do.
    pub decoy_hash: String,
    /// Long-polls waiting for a change.
    pub polls: Polls<Reply>,
    /// Held streams of the feed (SPEC §6.1), with their cursors.
    pub streams: Polls<Reply>,
    /// Accounts with a stream that has more pages to be sent.
    pub streams_behind: Vec<String>,
    /// Cursors of feed walks that began at `since=0`.
    pub walks: changes::Walks,
    /// Handles of recently read store files.
    pub open_files: OpenFiles,
    pub throttle: Throttle,
    /// Accounts created per client address (SPEC §3: 10 an hour).
    pub registrations: RateLimit<IpAddr>,
    /// Successful sign-ins by account (a place is reserved as an attempt
    /// starts, kept by a match, given back by a mismatch).
    pub sign_ins: RateLimit<String>,
    /// Reset requests per client address (10 an hour).
    pub reset_requests: RateLimit<IpAddr>,
    /// Reset tokens issued per account (3 an hour).
    pub reset_tokens: RateLimit<String>,
    /// Different ids each account looked up identities of (100 an hour).
    pub identity_lookups: DistinctLimit<String, String>,
    /// Failed share-link redeems per account and per address (10 an hour).
    pub redeem_failures_by_account: RateLimit<String>,
    pub redeem_failures_by_address: RateLimit<IpAddr>,
    pub reset_hook: Option<ResetHook>,
    /// Places for PBKDF2 jobs.
    pub hashing: Arc<Hashing>,
    /// Work to do once the current answer has been sent.
    pub deferred: Vec<Deferred>,
    /// What the open write transaction leaves to do once it commits.
    pub after_commit: AfterCommit,
    /// The database's `data_version` when the loop last looked: it changes
    /// when a command-line tool commits.
    pub data_version: Option<i64>,
    /// Shutting down: long-polls are answered at once instead of parked.
    pub stopping: bool,
    /// Removed store files that readers still hold, counted against their
    /// owners' quota until released.
    pub pinned: Vec<Pinned>,
    /// Work left by a deletion or compaction may wait: an account being
    /// deleted, log entries in `log_garbage`. The loop does it a chunk at
    /// a time ([`App::reap`]). A hint: set by whatever may have left some.
    pub garbage: bool,
    /// Other requests are waiting behind the one being handled: a listing
    /// then ends its page at the time budget ([`paging::Page`]).
    pub others_waiting: bool,
    /// The memory answers being sent may hold: a log page is no larger
    /// than what is left of it.
    pub answers: MemoryBudget,
    /// Store reads the work threads answer again until the next commit.
    pub reads: Arc<ReadCache>,
    /// The commit mark taken before the open read transaction began
    /// (`None` outside one): what its answers are remembered as of.
    pub read_mark: Option<CommitMark>,
}

/// What a write leaves to do once its transaction has committed — remove
/// the files the database no longer references, wake the long-polls of the
/// accounts it touched, start the reset hook — and nothing of it if the
/// commit fails: a file is never removed while a row may still name it.
#[derive(Debug, Default)]
pub struct AfterCommit {
    files: Vec<(String, Released)>,
    wake: Vec<String>,
    recheck: Vec<String>,
    reset_hooks: Vec<(HookSlot, String, String)>,
    registered: Vec<IpAddr>,
}

impl AfterCommit {
    /// An account was created from `address`: its reserved registration
    /// place counts from now on (only once the account is committed).
    pub fn registered(&mut self, address: IpAddr) {
        self.registered.push(address);
    }

    /// Removes a superseded store file; while readers still hold it, its
    /// bytes count against `released`'s owners.
    pub fn remove_file(&mut self, name: String, released: Released) {
        self.files.push((name, released));
    }

    pub fn wake(&mut self, accounts: impl IntoIterator<Item = String>) {
        self.wake.extend(accounts);
    }

    /// Sessions of `account` were revoked: its parked polls of those
    /// sessions are answered 401 now (the others keep waiting).
    pub fn revoked(&mut self, account: String) {
        self.recheck.push(account);
    }

    /// Hands `token` for `id` to the reset hook, in its reserved place.
    pub fn run_reset_hook(&mut self, slot: HookSlot, id: String, token: String) {
        self.reset_hooks.push((slot, id, token));
    }
}

/// Whom a removed store file still counts against while readers hold it.
#[derive(Debug, Default)]
pub struct Released {
    pub bytes: u64,
    pub owners: Vec<String>,
}

/// A removed store file that slow readers still hold: its space is not
/// free until the last lets go (or is cut off at the send pace), and it
/// counts against its owners' quota until then.
#[derive(Debug)]
pub struct Pinned {
    released: Released,
    file: Weak<std::fs::File>,
}

/// A check of the signed-in caller's current password, before a change
/// that needs it.
#[derive(Debug)]
pub struct CurrentPassword {
    pub token_hash: String,
    pub account_id: String,
    pub address: IpAddr,
    /// The hash the password is checked against.
    pub phc: String,
    /// The account's credential version then: if it has changed by the
    /// time the check is done, a password change or reset won the race,
    /// and this request must not proceed.
    pub credential: i64,
}

/// Where a request resumes once its PBKDF2 work is done. Each carries what
/// it must re-check before it commits.
#[derive(Debug)]
pub enum AfterPassword {
    /// Create the account with the new hash (a registration place of
    /// `address` is reserved: see [`AfterPassword::registering`]).
    Register {
        account_id: String,
        address: IpAddr,
        /// The hash of the invitation to spend, with `REGISTRATION=invite`.
        invite: Option<String>,
    },
    /// Sign in if the password matched the account's hash `phc` (`None`:
    /// an unknown id, checked against the decoy) and the account's
    /// credential version is still `credential`.
    Login {
        account_id: String,
        phc: Option<String>,
        credential: i64,
        address: IpAddr,
    },
    ChangePassword(CurrentPassword),
    DeleteAccount(CurrentPassword),
    /// Set the new hash if the reset token is still unspent.
    ResetConfirm {
        account_id: String,
        token_hash: String,
        address: IpAddr,
    },
}

impl AfterPassword {
    /// The address whose registration place this continuation holds.
    pub fn registering(&self) -> Option<IpAddr> {
        match self {
            AfterPassword::Register { address, .. } => Some(*address),
            _ => None,
        }
    }
}

/// What a request comes to on the loop.
#[derive(Debug)]
pub enum Handled {
    /// Send this step to the connection now.
    Step(Step),
    /// Hold the request until a change or its deadline.
    Park(Poll),
    /// Begin a stream of the feed with these events, and hold it (none:
    /// it ends after them); `more` pages are waiting to follow.
    Stream { poll: Option<Poll>, events: Vec<u8>, more: bool },
}

/// What the loop answers a connection with, carrying this API's continuations.
pub type Step = crate::exchange::Step<PendingWrite, AfterPassword>;
/// The way back to one request on its connection.
pub type Reply = crate::exchange::Reply<PendingWrite, AfterPassword>;
/// What a connection tells the loop.
pub type Event = crate::exchange::Event<PendingWrite, AfterPassword>;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Session {
    pub account_id: String,
    pub token_hash: String,
    /// From then on the session is due for its sliding extension.
    pub fresh_until_ms: i64,
}

impl App {
    /// Dispatches a request to its handler. The loop runs read-only routes
    /// inside a transaction it shares between the reads waiting together.
    pub fn handle(&mut self, route: Route, request: Request) -> Result<Handled, ApiError> {
        let step = match route {
            Route::Changes => return changes::changes(self, &request),
            Route::Preflight => respond(cors::preflight()),
            Route::Health => service::health(),
            Route::Info => service::info(&self.config, &self.generation),
            Route::Register => accounts::register(self, &request),
            Route::KdfSalt(id) => accounts::kdf_salt(self, &id),
            Route::Login => sessions::login(self, &request),
            Route::Logout => sessions::logout(self, &request),
            Route::LogoutEverywhere => sessions::logout_everywhere(self, &request),
            Route::Account => accounts::show(self, &request),
            Route::ChangePassword => accounts::change_password(self, &request),
            Route::DeleteAccount => accounts::delete(self, &request),
            Route::ResetRequest => reset::request_reset(self, &request),
            Route::ResetConfirm => reset::confirm(self, &request),
            Route::ListStores => stores::list(self, &request),
            Route::GetStore(key) => stores::get(self, &request, &key),
            Route::PutStore(key) => stores::put(self, &request, key),
            Route::AppendLog(key) => logs::append(self, &request, key),
            Route::ReadLog(key) => logs::read(self, &request, &key),
            Route::DeleteStore(key) => stores::delete(self, &request, &key),
            Route::GetPermissions(key) => sharing::list(self, &request, &key),
            Route::SetPermission(key) => sharing::set(self, &request, &key),
            Route::GetEnvelope(key) => sharing::envelope(self, &request, &key),
            Route::PublishIdentity => identities::publish(self, &request),
            Route::OwnIdentity => identities::own(self, &request),
            Route::Identity(id) => identities::lookup(self, &request, &id),
            Route::CreateLink(key) => links::create(self, &request, &key),
            Route::ListLinks(key) => links::list(self, &request, &key),
            Route::DeleteLink(key, link) => links::delete(self, &request, &key, &link),
            Route::RedeemLink(link) => links::redeem(self, &request, &link),
            #[cfg(feature = "test-hooks")]
            Route::TestPanic => panic!("panic injected by the test-hooks feature"),
            #[cfg(feature = "test-hooks")]
            Route::TestHeld => Ok(Step::Respond(crate::http::Response::json(
                200,
                &serde_json::json!({
                    "polls": self.polls.count(),
                    "streams": self.streams.count(),
                    "cached_reads": self.reads.answered.load(std::sync::atomic::Ordering::Relaxed),
                    "cached_reads_in_room": self.reads.answered_in_room.load(std::sync::atomic::Ordering::Relaxed),
                }),
            ))),
        };
        step.map(Handled::Step)
    }

    pub fn after_password(&mut self, then: AfterPassword, outcome: PasswordOutcome) -> Result<Step, ApiError> {
        match (then, outcome) {
            (AfterPassword::Register { account_id, address, invite }, PasswordOutcome::Hashed(phc)) => {
                accounts::finish_register(self, &account_id, address, invite.as_deref(), phc)
            }
            (AfterPassword::ResetConfirm { account_id, token_hash, address }, PasswordOutcome::Hashed(phc)) => {
                reset::finish_confirm(self, &account_id, &token_hash, address, phc)
            }
            (AfterPassword::Login { account_id, phc, credential, .. }, outcome) => {
                sessions::finish_login(self, &account_id, phc, credential, outcome)
            }
            (AfterPassword::ChangePassword(check), outcome) => accounts::finish_change_password(self, check, outcome),
            (AfterPassword::DeleteAccount(check), outcome) => accounts::finish_delete(self, check, outcome),
            (then, outcome) => Err(ApiError::Internal(format!("password step {then:?} got {outcome:?}"))),
        }
    }

    /// Settles the admitted attempt a finished PBKDF2 job belongs to, before
    /// its continuation opens a transaction (which may fail: a busy
    /// database, a panic), so its place is never left taken: a match resets
    /// the account's failure count, a mismatch counts as a failure. Reset
    /// confirmations settle in their continuation (their verdict is the
    /// token, read there); registrations give back their place if the
    /// continuation fails ([`App::abandon`]).
    pub fn settle(&mut self, then: &AfterPassword, outcome: &PasswordOutcome) {
        let (account_id, address, matches) = match (then, outcome) {
            (AfterPassword::Login { account_id, phc, address, .. }, PasswordOutcome::Verified { matches, .. }) => {
                (account_id, *address, *matches && phc.is_some())
            }
            (
                AfterPassword::ChangePassword(check) | AfterPassword::DeleteAccount(check),
                PasswordOutcome::Verified { matches, .. },
            ) => (&check.account_id, check.address, *matches),
            _ => return,
        };
        if let AfterPassword::Login { .. } = then {
            if matches {
                self.sign_ins.commit(account_id, Instant::now());
            } else {
                self.sign_ins.release(account_id);
            }
        }
        if matches {
            self.throttle.success(account_id, address);
        } else {
            self.failed_attempt(account_id, address);
        }
    }

    /// A password attempt failed: it counts against the account and the
    /// address. A lockout it starts gets a log line (for fail2ban) and, for
    /// an account, is recorded after the answer (for `sync-node account
    /// list`).
    pub fn failed_attempt(&mut self, account_id: &str, address: IpAddr) {
        let started = self.throttle.failure(account_id, address, Instant::now());
        if let Some(lockout) = started.account {
            // Not a line to ban on: the fifth failure may be the owner's own typo.
            log::warn(format_args!(
                "account-lockout account={account_id} seconds={} last-address={address}",
                lockout.as_secs()
            ));
            let until = clock::now_ms().saturating_add(i64::try_from(lockout.as_millis()).unwrap_or(i64::MAX));
            self.deferred.push(Deferred::RecordLockout { account_id: account_id.to_owned(), until });
        }
        if let Some(lockout) = started.address {
            log::warn(format_args!("address-lockout address={address} seconds={}", lockout.as_secs()));
        }
    }

    /// Gives back what a continuation that failed had reserved.
    pub fn abandon(&mut self, registering: Option<IpAddr>) {
        if let Some(address) = registering {
            self.registrations.release(&address);
        }
    }

    /// The verdict of a settled password check: the hash made in the same
    /// trip (if any) on a match, `mismatch` otherwise.
    pub fn verified(
        outcome: PasswordOutcome,
        mismatch: ApiError,
    ) -> Result<Option<Result<String, ApiError>>, ApiError> {
        match outcome {
            PasswordOutcome::Verified { matches: true, new_hash } => Ok(new_hash),
            PasswordOutcome::Verified { matches: false, .. } => Err(mismatch),
            PasswordOutcome::Hashed(_) => Err(ApiError::Internal("a hash where a verification was due".into())),
        }
    }

    /// Checks the id and password of an unauthenticated password attempt
    /// (sign-in, reset confirmation): the account's id hash and the
    /// client's address. Nothing is reserved yet.
    pub fn attempt_identity(&self, request: &Request, id: &str, password: &str) -> Result<(String, IpAddr), ApiError> {
        let id = auth::normalise_id(id)?;
        auth::check_password(password)?;
        Ok((auth::account_hash(&self.secret, &id), self.client_address(request)))
    }

    /// Admits a password attempt past the throttle before any hashing,
    /// with its hashing place.
    pub fn admit_password_attempt(&mut self, account_id: &str, address: IpAddr) -> Result<Ticket, ApiError> {
        let ticket = self.hashing_ticket(address, account_id)?;
        self.admit_attempt(account_id, address)?;
        Ok(ticket)
    }

    /// A place for a PBKDF2 job for `account_id`, asked for from
    /// `address`, taken before anything else is reserved for the request;
    /// 503 when too many are waiting for a core, or the address's or the
    /// account's share of the places is taken.
    pub fn hashing_ticket(&self, address: IpAddr, account_id: &str) -> Result<Ticket, ApiError> {
        self.hashing.ticket(address, account_id).ok_or(ApiError::Unavailable { retry_after_secs: 1 })
    }

    /// Takes a place of `address` in `limit`, or 429 with `Retry-After`.
    pub fn take_place(limit: &mut RateLimit<IpAddr>, address: IpAddr) -> Result<(), ApiError> {
        limit.reserve(&address, Instant::now()).map_err(too_many)
    }

    /// Reserves a place for a password attempt (it counts as a failure
    /// until [`App::verified`] settles it); 429 with `Retry-After` while
    /// the account or address is locked out or its limit is taken.
    pub fn admit_attempt(&mut self, account_id: &str, address: IpAddr) -> Result<(), ApiError> {
        self.throttle.reserve(account_id, address, Instant::now()).map_err(too_many)
    }

    /// The client's address for rate limits: the peer, or with
    /// `TRUST_PROXY=1` the last entry of the last `X-Forwarded-For` line
    /// (the one our proxy added; a client can forge only earlier ones).
    pub fn client_address(&self, request: &Request) -> IpAddr {
        crate::http::request::share_of(request.head.client_address(request.peer, &self.config.trust_proxy))
    }

    /// The session behind `Authorization: Bearer …`, extended when past half
    /// its lifetime (at most one write per session per half-lifetime).
    pub fn authenticate(&mut self, request: &Request) -> Result<Session, ApiError> {
        let token = bearer_token(&request.head).ok_or(ApiError::Unauthorized)?;
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
        // After the answer, in a write of its own (reads never write; and
        // a full disk must not turn every read into an error), once however
        // many requests of the session are in this batch.
        let fresh_until_ms = expiration - lifetime / 2;
        let due = now >= fresh_until_ms;
        let queued = |work: &Deferred| matches!(work, Deferred::ExtendSession { token_hash: t, .. } if t == token_hash);
        if due && !self.deferred.iter().any(queued) {
            self.deferred.push(Deferred::ExtendSession { token_hash: token_hash.to_owned(), until: now + lifetime });
        }
        Ok(Session { account_id, token_hash: token_hash.to_owned(), fresh_until_ms })
    }

    /// Does what the write that just committed left to do.
    pub fn run_after_commit(&mut self) {
        let AfterCommit { files, wake, recheck, reset_hooks, registered } = std::mem::take(&mut self.after_commit);
        for address in registered {
            self.registrations.commit(&address, Instant::now());
        }
        self.pinned.retain(|pinned| pinned.file.strong_count() > 0);
        for (name, released) in files {
            if let Some(file) = self.open_files.take(&name)
                && !released.owners.is_empty()
            {
                self.pinned.push(Pinned { released, file });
            }
            if let Err(err) = self.blobs.remove(&name) {
                log::error(format_args!("could not remove a store file: {err}"));
            }
        }
        if !wake.is_empty() {
            self.notify(&wake);
        }
        if !recheck.is_empty() {
            self.recheck_polls(Some(&recheck));
        }
        for (slot, id, token) in reset_hooks {
            slot.run(id, token);
        }
    }

    /// Forgets what a write that failed (or rolled back) left to do.
    pub fn discard_after_commit(&mut self) {
        self.after_commit = AfterCommit::default();
    }

    /// Notices commits by a command-line tool: its deletions must not stay
    /// open in the file cache, and its changes may concern parked polls.
    pub fn notice_outside_commits(&mut self) {
        let Ok(version) = self.db.data_version() else { return };
        if self.data_version.replace(version).is_some_and(|seen| seen != version) {
            self.open_files.clear();
            self.recheck_polls(None);
        }
    }

    /// Prunes expired sessions and reset tokens, tombstones older than the
    /// retention, and throttle entries that no longer matter.
    /// Does one chunk of what deletions and compactions left (a few
    /// milliseconds of the loop at most): [`REAP_STORES`] stores of an
    /// account being deleted, else [`REAP_ROWS`] dropped log entries (at
    /// most about [`REAP_BYTES`] of them). So
    /// deleting a large account or a long log never holds the loop.
    pub fn reap(&mut self) -> Result<(), ApiError> {
        let conn = self.db.conn();
        if let Some(account) = db::accounts::deleting(conn)? {
            let deleted = accounts::delete_account(conn, &account, REAP_STORES)?;
            for file in deleted.files {
                // The account is gone: a version still being read counts for nobody.
                self.after_commit.remove_file(file, Default::default());
            }
            self.after_commit.wake(deleted.touched);
            self.garbage = true;
            return Ok(());
        }
        self.garbage = db::logs::reap(conn, REAP_ROWS, REAP_BYTES)?;
        Ok(())
    }

    /// A change of store `key`, made at `seq`: every account that can see
    /// it hears of it in its feed, and their long-polls wake once the
    /// change commits. Returns those accounts.
    pub fn announce_store_change(&mut self, key: &str, seq: i64, now: i64) -> Result<Vec<String>, ApiError> {
        let touched = db::changes::touch_store(self.db.conn(), key, seq, now)?;
        self.after_commit.wake(touched.iter().cloned());
        Ok(touched)
    }

    /// A change of `account`'s grant on store `key`, made at `seq`: it
    /// hears of it in its feed (a revoked grant leaves a tombstone, within
    /// the account's cap), and its long-polls wake once it commits.
    pub fn announce_grant_change(&mut self, account: &str, key: &str, seq: i64, revoked: bool) -> Result<(), ApiError> {
        db::changes::touch_account(self.db.conn(), account, key, seq, clock::now_ms())?;
        if revoked {
            db::changes::cap_tombstones(self.db.conn(), account)?;
        }
        self.after_commit.wake([account.to_owned()]);
        Ok(())
    }

    /// What `account` counts against its quota: the stores it owns
    /// (counters kept by the database) and removed versions of them that
    /// readers still hold.
    pub fn bytes_used(&self, account: &str) -> Result<(u64, u64), ApiError> {
        let (stores, bytes) = db::accounts::usage(self.db.conn(), account)?;
        let pinned: u64 = self
            .pinned
            .iter()
            .filter(|pinned| pinned.file.strong_count() > 0 && pinned.released.owners.iter().any(|o| o == account))
            .map(|pinned| pinned.released.bytes)
            .sum();
        Ok((stores, bytes + pinned))
    }

    pub fn maintain(&mut self) -> Result<(), ApiError> {
        let now = clock::now_ms();
        self.pinned.retain(|pinned| pinned.file.strong_count() > 0);
        // A command-line tool (account removal) may have dropped entries.
        self.garbage |= db::logs::garbage_left(self.db.conn())? || db::accounts::deleting(self.db.conn())?.is_some();
        db::sessions::delete_expired(self.db.conn(), now)?;
        db::resets::delete_expired(self.db.conn(), now)?;
        self.throttle.prune(Instant::now());
        db::invites::prune(self.db.conn(), now)?;
        db::changes::prune(self.db.conn(), now - TOMBSTONE_RETENTION_MS)?;
        Ok(())
    }

    pub fn session_lifetime_ms(&self) -> i64 {
        i64::from(self.config.session_ttl_days) * 86_400_000
    }
}

/// Whether a caller holding `held` on an existing store may do what needs
/// `needed`: no permission at all hides the store (404), too little is 403.
pub fn require(held: Option<Permission>, needed: Permission) -> Result<Permission, ApiError> {
    match held {
        None => Err(ApiError::NotFound),
        Some(held) if held >= needed => Ok(held),
        Some(_) => Err(ApiError::Forbidden("Your permission on this store does not allow that.")),
    }
}

/// 429 with `Retry-After` in whole seconds (at least 1).
fn too_many(wait: std::time::Duration) -> ApiError {
    ApiError::TooManyRequests { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
}

/// The bearer token, if exactly one well-formed one was sent (two
/// `Authorization` lines are no credentials at all).
pub fn bearer_token(head: &RequestHead) -> Option<&str> {
    let value = std::str::from_utf8(head.single_header("authorization").ok()??).ok()?.trim();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_include_lower_ones() {
        assert!(require(Some(Permission::Own), Permission::Write).is_ok());
        assert!(require(Some(Permission::Write), Permission::Read).is_ok());
        assert_eq!(require(Some(Permission::Read), Permission::Write).unwrap_err().status_and_code().0, 403);
        assert_eq!(require(Some(Permission::Write), Permission::Own).unwrap_err().status_and_code().0, 403);
        assert_eq!(require(None, Permission::Read).unwrap_err().status_and_code().0, 404);
    }
}
