//! Work the loop does after an answer has gone out, each in its own write
//! transaction: its cost cannot be timed by the client, and the rollback of
//! a refused request cannot undo it.

use super::{App, reset};
use crate::db;
use crate::error::ApiError;
use std::net::IpAddr;

#[derive(Debug)]
pub enum Deferred {
    /// A reset request: for an existing account, issue a token and hand
    /// it to `RESET_HOOK`, if the account's limits allow. Queued for an
    /// unknown id too, to do nothing: every reset request is followed by
    /// the same write, so none can be told apart by what that does (it
    /// empties the read cache, which the caller's next reads would show).
    ResetRequested { account: Option<ResetFor>, address: IpAddr },
    /// A sign-in lockout started: record when it ends, for
    /// `sync-node account list`.
    RecordLockout { account_id: String, until: i64 },
    /// A session used past half its lifetime: extend it (sliding
    /// expiration), in a write of its own rather than inside a read.
    ExtendSession { token_hash: String, until: i64 },
}

/// The existing account a reset request names, and the id it was named by.
#[derive(Debug)]
pub struct ResetFor {
    pub account_id: String,
    pub id: String,
}

impl Deferred {
    pub fn run(self, app: &mut App) -> Result<(), ApiError> {
        match self {
            Deferred::ResetRequested { account: Some(ResetFor { account_id, id }), address } => {
                reset::issue_requested(app, account_id, id, address)
            }
            Deferred::ResetRequested { account: None, .. } => Ok(()),
            Deferred::RecordLockout { account_id, until } => {
                Ok(db::accounts::set_locked_until(app.db.conn(), &account_id, until)?)
            }
            Deferred::ExtendSession { token_hash, until } => {
                Ok(db::sessions::set_expiration(app.db.conn(), &token_hash, until)?)
            }
        }
    }
}
