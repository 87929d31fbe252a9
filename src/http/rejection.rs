//! Why the HTTP layer refuses a request before any route sees it. The
//! layer knows no API errors: `error` maps each of these to its status and
//! SPEC code, in the one place where all are decided.

/// A request head or body the HTTP layer will not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Malformed: the message says how.
    BadRequest(String),
    UriTooLong,
    HeadersTooLarge,
    HttpVersionNotSupported,
    /// A declared length no body may have (the name of what it was).
    PayloadTooLarge(&'static str),
    /// A head that did not arrive in time.
    RequestTimeout,
    /// No memory is left to take the request now (try again soon).
    NoRoom,
}

impl Rejection {
    pub fn bad_request(message: impl Into<String>) -> Rejection {
        Rejection::BadRequest(message.into())
    }
}
