//! The one error type of the API and its mapping to HTTP status and SPEC
//! error code. Every failure a client can see goes through [`ApiError`]; the
//! mapping lives in one exhaustive match so codes cannot drift.

use crate::http::Response;
use serde_json::{Value, json};
use std::fmt;
use std::io;

/// The state of a store as shown in a 412 answer to a caller who may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentVersion {
    pub token: String,
    pub size: u64,
    pub modified: i64,
    pub seq: i64,
    pub meta: Option<String>,
    pub log_head: u64,
    pub log_base: u64,
}

#[derive(Debug, Clone)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized,
    InvalidCredentials,
    Forbidden(&'static str),
    WrongPassword,
    NotFound,
    NoSuchAccount,
    MethodNotAllowed {
        allow: &'static str,
    },
    AccountExists,
    LastOwner,
    /// `410 gone`: a feed cursor older than the retained change log, or a
    /// log cursor outside the retained entries.
    Gone(Forgotten),
    /// The request head or body did not arrive in time; the connection
    /// is closed after the answer.
    RequestTimeout,
    PreconditionFailed(Option<CurrentVersion>),
    /// `412` with only the `ETag` of what is current (an identity, SPEC §10.1).
    PreconditionFailedAt(String),
    /// `409 link_exists`: a share link id that is taken (SPEC §10.3).
    LinkExists,
    PayloadTooLarge(&'static str),
    UriTooLong,
    PreconditionRequired,
    TooManyRequests {
        retry_after_secs: u64,
    },
    HeadersTooLarge,
    /// A bug or an I/O failure. The text is logged, never sent.
    Internal(String),
    NotConfigured,
    Unavailable {
        retry_after_secs: u64,
    },
    HttpVersionNotSupported,
    InsufficientStorage(Shortage),
}

/// What a `410 gone` cursor pointed past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgotten {
    ChangeLog,
    LogEntries,
}

/// What a `507 insufficient_storage` ran out of (its message says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortage {
    /// An owner's `QUOTA_BYTES`.
    Quota,
    /// Free space on the server's disk (`MIN_FREE_BYTES`, or the disk is full).
    Disk,
    /// The owner's `MAX_STORES_PER_ACCOUNT`.
    Stores,
    /// The store's 1,000 share links.
    Links,
}

impl std::fmt::Display for Shortage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no room: {self:?}")
    }
}

/// What the HTTP layer refused, as the API error it answers.
impl From<crate::http::Rejection> for ApiError {
    fn from(rejection: crate::http::Rejection) -> ApiError {
        use crate::http::Rejection;
        match rejection {
            Rejection::BadRequest(message) => ApiError::BadRequest(message),
            Rejection::UriTooLong => ApiError::UriTooLong,
            Rejection::HeadersTooLarge => ApiError::HeadersTooLarge,
            Rejection::HttpVersionNotSupported => ApiError::HttpVersionNotSupported,
            Rejection::PayloadTooLarge(what) => ApiError::PayloadTooLarge(what),
            Rejection::RequestTimeout => ApiError::RequestTimeout,
            Rejection::NoRoom => ApiError::Unavailable { retry_after_secs: 1 },
        }
    }
}

/// A reserving upload carries its shortage inside an I/O error.
impl std::error::Error for Shortage {}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest(message.into())
    }

    /// Status code and SPEC error code: the one place they are decided.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            ApiError::BadRequest(_) => (400, "bad_request"),
            ApiError::Unauthorized => (401, "unauthorized"),
            ApiError::InvalidCredentials => (401, "invalid_credentials"),
            ApiError::Forbidden(_) => (403, "forbidden"),
            ApiError::WrongPassword => (403, "wrong_password"),
            ApiError::NotFound => (404, "not_found"),
            ApiError::NoSuchAccount => (404, "no_such_account"),
            ApiError::MethodNotAllowed { .. } => (405, "method_not_allowed"),
            ApiError::AccountExists => (409, "account_exists"),
            ApiError::LastOwner => (409, "last_owner"),
            ApiError::Gone(_) => (410, "gone"),
            ApiError::RequestTimeout => (408, "request_timeout"),
            ApiError::PreconditionFailed(_) | ApiError::PreconditionFailedAt(_) => (412, "precondition_failed"),
            ApiError::LinkExists => (409, "link_exists"),
            ApiError::PayloadTooLarge(_) => (413, "payload_too_large"),
            ApiError::UriTooLong => (414, "uri_too_long"),
            ApiError::PreconditionRequired => (428, "precondition_required"),
            ApiError::TooManyRequests { .. } => (429, "too_many_requests"),
            ApiError::HeadersTooLarge => (431, "headers_too_large"),
            ApiError::Internal(_) => (500, "internal"),
            ApiError::NotConfigured => (501, "not_configured"),
            ApiError::Unavailable { .. } => (503, "unavailable"),
            ApiError::HttpVersionNotSupported => (505, "http_version_not_supported"),
            ApiError::InsufficientStorage(_) => (507, "insufficient_storage"),
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::BadRequest(text) => text.clone(),
            ApiError::Unauthorized => "A valid session token is required.".into(),
            ApiError::InvalidCredentials => "Unknown id or wrong password.".into(),
            ApiError::Forbidden(why) => (*why).into(),
            ApiError::WrongPassword => "The current password is wrong.".into(),
            ApiError::NotFound => "Not found.".into(),
            ApiError::NoSuchAccount => "No account has that id.".into(),
            ApiError::MethodNotAllowed { allow } => {
                format!("Method not allowed here; allowed: {allow}.")
            }
            ApiError::AccountExists => "An account with that id exists.".into(),
            ApiError::LastOwner => "A store must keep at least one owner.".into(),
            ApiError::Gone(Forgotten::ChangeLog) => {
                "That sequence number is older than the retained change log; list again with since=0.".into()
            }
            ApiError::Gone(Forgotten::LogEntries) => {
                "Those log entries were folded into the body or do not exist yet; read the body, then the log after its Sync-Log-Base.".into()
            }
            ApiError::RequestTimeout => "The request did not arrive in time.".into(),
            ApiError::PreconditionFailed(_) => "The store is not at the version the precondition names.".into(),
            ApiError::PreconditionFailedAt(_) => "It is not at the version the precondition names.".into(),
            ApiError::LinkExists => "That link id is taken.".into(),
            ApiError::PayloadTooLarge(what) => format!("The {what} is larger than the server accepts."),
            ApiError::UriTooLong => "The request line is too long.".into(),
            ApiError::PreconditionRequired => "Writing an existing store needs If-Match.".into(),
            ApiError::TooManyRequests { .. } => "Too many attempts; retry later.".into(),
            ApiError::HeadersTooLarge => "The request head is too large.".into(),
            ApiError::Internal(_) => "Internal server error.".into(),
            ApiError::NotConfigured => "Password reset is not configured on this server.".into(),
            ApiError::Unavailable { .. } => "The server is busy; retry later.".into(),
            ApiError::HttpVersionNotSupported => "Only HTTP/1.0 and HTTP/1.1 are supported.".into(),
            ApiError::InsufficientStorage(Shortage::Quota) => {
                "The write would put a store owner over the account quota.".into()
            }
            ApiError::InsufficientStorage(Shortage::Disk) => {
                "The server's disk is too full for this write; try again later or ask the operator.".into()
            }
            ApiError::InsufficientStorage(Shortage::Stores) => {
                "This account owns as many stores as the server allows; delete one first.".into()
            }
            ApiError::InsufficientStorage(Shortage::Links) => {
                "This store has made as many share links as it may (1000).".into()
            }
        }
    }

    /// The JSON error answer, with the headers the SPEC ties to each code.
    pub fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(detail) = &self {
            crate::log::error(format_args!("internal error: {detail}"));
        }
        let mut body = json!({ "error": code, "message": self.message() });
        let mut response = Response::new(status);
        match self {
            ApiError::Unauthorized => response.header("WWW-Authenticate", "Bearer"),
            ApiError::MethodNotAllowed { allow } => response.header("Allow", allow),
            ApiError::TooManyRequests { retry_after_secs } | ApiError::Unavailable { retry_after_secs } => {
                response.header("Retry-After", retry_after_secs.to_string())
            }
            ApiError::PreconditionFailedAt(token) => response.header("ETag", format!("\"{token}\"")),
            ApiError::PreconditionFailed(Some(current)) => {
                response.header("ETag", format!("\"{}\"", current.token));
                body["current"] = current_json(&current);
            }
            _ => {}
        }
        response.with_json(&body)
    }
}

fn current_json(current: &CurrentVersion) -> Value {
    json!({
        "token": current.token,
        "size": current.size,
        "modified": current.modified,
        "seq": current.seq,
        "meta": current.meta,
        "log_head": current.log_head,
        "log_base": current.log_base,
    })
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (status, code) = self.status_and_code();
        write!(f, "{status} {code}")
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => ApiError::InsufficientStorage(Shortage::Disk),
            // A command-line tool holds the write lock for a moment.
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                ApiError::Unavailable { retry_after_secs: 1 }
            }
            _ => ApiError::Internal(format!("database: {err}")),
        }
    }
}

impl From<io::Error> for ApiError {
    fn from(err: io::Error) -> Self {
        if is_out_of_space(&err) {
            ApiError::InsufficientStorage(Shortage::Disk)
        } else {
            ApiError::Internal(format!("i/o: {err}"))
        }
    }
}

/// ENOSPC or EDQUOT: the disk (or the user's disk quota) is full.
pub fn is_out_of_space(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak_details() {
        let response = ApiError::Internal("/secret/path: EIO".into()).into_response();
        let body = String::from_utf8(response.body_bytes().to_vec()).unwrap();
        assert_eq!(response.status, 500);
        assert!(!body.contains("/secret/path"));
        assert!(body.contains("\"internal\""));
    }

    #[test]
    fn out_of_space_maps_to_507() {
        let err: ApiError = io::Error::from(io::ErrorKind::StorageFull).into();
        assert_eq!(err.status_and_code(), (507, "insufficient_storage"));
    }

    #[test]
    fn a_full_database_is_507_and_a_busy_one_503() {
        let full = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
        assert_eq!(ApiError::from(full).status_and_code().0, 507);
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        let busy = ApiError::from(busy).into_response();
        assert_eq!((busy.status, busy.header_value("Retry-After")), (503, Some("1")));
    }

    #[test]
    fn precondition_failed_carries_current_version() {
        let current =
            CurrentVersion { token: "ab".into(), size: 3, modified: 5, seq: 7, meta: None, log_head: 2, log_base: 1 };
        let response = ApiError::PreconditionFailed(Some(current)).into_response();
        assert_eq!(response.header_value("ETag"), Some("\"ab\""));
        let body: Value = serde_json::from_slice(response.body_bytes()).unwrap();
        assert_eq!(body["current"]["seq"], 7);
        assert_eq!(body["error"], "precondition_failed");
    }
}
