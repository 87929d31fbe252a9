//! THE route table: every endpoint of the API, as one match on the method
//! and the path segments. Unknown paths are 404, known paths with another
//! method 405 with `Allow`. Store keys are percent-decoded and validated here.

use crate::error::ApiError;
use crate::limits::MAX_KEY_BYTES;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Preflight,
    Health,
    Info,
    Register,
    /// `GET /v1/accounts/{id}/salt`: the account's passphrase-KDF salt (no auth).
    KdfSalt(String),
    Login,
    Logout,
    LogoutEverywhere,
    Account,
    ChangePassword,
    DeleteAccount,
    ResetRequest,
    ResetConfirm,
    ListStores,
    GetStore(String),
    PutStore(String),
    DeleteStore(String),
    AppendLog(String),
    ReadLog(String),
    GetPermissions(String),
    SetPermission(String),
    GetEnvelope(String),
    PublishIdentity,
    OwnIdentity,
    /// `GET /v1/accounts/{id}/identity`: the id as percent-decoded.
    Identity(String),
    CreateLink(String),
    ListLinks(String),
    /// The store key and the link id.
    DeleteLink(String, String),
    RedeemLink(String),
    Changes,
    /// Panics in its handler: only in builds with the `test-hooks` feature,
    /// which the integration tests enable and no normal build has.
    #[cfg(feature = "test-hooks")]
    TestPanic,
    /// How many long-polls and streams the loop holds, so tests wait for
    /// a count instead of a guessed sleep (`test-hooks` builds only).
    #[cfg(feature = "test-hooks")]
    TestHeld,
}

impl Route {
    /// The route's path pattern, without the store key (for the access log).
    pub fn pattern(&self) -> &'static str {
        match self {
            Route::Preflight => "/v1/*",
            Route::Health => "/v1/health",
            Route::Info => "/v1/info",
            Route::Register => "/v1/accounts",
            Route::KdfSalt(_) => "/v1/accounts/{id}/salt",
            Route::Login | Route::LogoutEverywhere => "/v1/sessions",
            Route::Logout => "/v1/sessions/current",
            Route::Account | Route::DeleteAccount => "/v1/account",
            Route::ChangePassword => "/v1/account/password",
            Route::ResetRequest => "/v1/password-reset",
            Route::ResetConfirm => "/v1/password-reset/confirm",
            Route::ListStores => "/v1/stores",
            Route::GetStore(_) | Route::PutStore(_) | Route::DeleteStore(_) => "/v1/stores/{key}",
            Route::AppendLog(_) | Route::ReadLog(_) => "/v1/stores/{key}/log",
            Route::GetPermissions(_) | Route::SetPermission(_) => "/v1/stores/{key}/permissions",
            Route::GetEnvelope(_) => "/v1/stores/{key}/envelope",
            Route::PublishIdentity | Route::OwnIdentity => "/v1/account/identity",
            Route::Identity(_) => "/v1/accounts/{id}/identity",
            Route::CreateLink(_) | Route::ListLinks(_) => "/v1/stores/{key}/links",
            Route::DeleteLink(..) => "/v1/stores/{key}/links/{link}",
            Route::RedeemLink(_) => "/v1/links/{link}/redeem",
            Route::Changes => "/v1/changes",
            #[cfg(feature = "test-hooks")]
            Route::TestPanic => "/v1/test-hooks/panic",
            #[cfg(feature = "test-hooks")]
            Route::TestHeld => "/v1/test-hooks/held",
        }
    }

    /// Whether the body is streamed to disk on the loop's instruction
    /// instead of being read into memory up front.
    pub fn streams_body(&self) -> bool {
        matches!(self, Route::PutStore(_) | Route::AppendLog(_))
    }

    /// Whether the handler only reads the database (apart from extending
    /// the caller's session), so its statements can share one read
    /// transaction with other reads. For a request that continues later
    /// (after PBKDF2 or an upload) this is about the first half only: the
    /// continuation is a write of its own, which re-checks what it needs.
    /// Exhaustive, so a new route must say which it is.
    pub fn reads_only(&self) -> bool {
        match self {
            Route::Preflight
            | Route::Health
            | Route::Info
            | Route::KdfSalt(_)
            | Route::Register
            | Route::Login
            | Route::Account
            | Route::ChangePassword
            | Route::DeleteAccount
            | Route::ResetRequest
            | Route::ResetConfirm
            | Route::ListStores
            | Route::GetStore(_)
            | Route::PutStore(_)
            | Route::AppendLog(_)
            | Route::ReadLog(_)
            | Route::GetPermissions(_)
            | Route::GetEnvelope(_)
            | Route::OwnIdentity
            | Route::Identity(_)
            | Route::ListLinks(_)
            | Route::Changes => true,
            Route::Logout
            | Route::LogoutEverywhere
            | Route::DeleteStore(_)
            | Route::SetPermission(_)
            | Route::PublishIdentity
            | Route::CreateLink(_)
            | Route::DeleteLink(..)
            | Route::RedeemLink(_) => false,
            #[cfg(feature = "test-hooks")]
            Route::TestPanic => false,
            #[cfg(feature = "test-hooks")]
            Route::TestHeld => true,
        }
    }
}

/// Maps a method and a raw (still percent-encoded) path to its route.
pub fn route(method: &str, path: &str) -> Result<Route, ApiError> {
    let rest = path.strip_prefix("/v1/").ok_or(ApiError::NotFound)?;
    if method == "OPTIONS" {
        return Ok(Route::Preflight);
    }
    let segments: Vec<&str> = rest.split('/').collect();
    // HEAD is GET without a body wherever GET is allowed.
    let get = matches!(method, "GET" | "HEAD");
    let allow = |allow: &'static str| Err(ApiError::MethodNotAllowed { allow });
    match segments.as_slice() {
        ["health"] if get => Ok(Route::Health),
        ["health"] => allow("GET, HEAD"),
        ["info"] if get => Ok(Route::Info),
        ["info"] => allow("GET, HEAD"),
        ["accounts"] if method == "POST" => Ok(Route::Register),
        ["accounts"] => allow("POST"),
        ["accounts", id, "salt"] if get => Ok(Route::KdfSalt(decode_key(id)?)),
        ["accounts", _, "salt"] => allow("GET, HEAD"),
        ["sessions"] => match method {
            "POST" => Ok(Route::Login),
            "DELETE" => Ok(Route::LogoutEverywhere),
            _ => allow("POST, DELETE"),
        },
        ["sessions", "current"] if method == "DELETE" => Ok(Route::Logout),
        ["sessions", "current"] => allow("DELETE"),
        ["account"] => match method {
            "GET" | "HEAD" => Ok(Route::Account),
            "DELETE" => Ok(Route::DeleteAccount),
            _ => allow("GET, HEAD, DELETE"),
        },
        ["account", "password"] if method == "PUT" => Ok(Route::ChangePassword),
        ["account", "password"] => allow("PUT"),
        ["account", "identity"] => match method {
            "GET" | "HEAD" => Ok(Route::OwnIdentity),
            "PUT" => Ok(Route::PublishIdentity),
            _ => allow("GET, HEAD, PUT"),
        },
        ["accounts", id, "identity"] if get => Ok(Route::Identity(decode_key(id)?)),
        ["accounts", _, "identity"] => allow("GET, HEAD"),
        ["links", link, "redeem"] if method == "POST" => Ok(Route::RedeemLink(decode_key(link)?)),
        ["links", _, "redeem"] => allow("POST"),
        ["password-reset"] if method == "POST" => Ok(Route::ResetRequest),
        ["password-reset"] => allow("POST"),
        ["password-reset", "confirm"] if method == "POST" => Ok(Route::ResetConfirm),
        ["password-reset", "confirm"] => allow("POST"),
        ["stores"] if get => Ok(Route::ListStores),
        ["stores"] => allow("GET, HEAD"),
        ["stores", key] => {
            let key = decode_key(key)?;
            match method {
                "GET" | "HEAD" => Ok(Route::GetStore(key)),
                "PUT" => Ok(Route::PutStore(key)),
                "DELETE" => Ok(Route::DeleteStore(key)),
                _ => allow("GET, HEAD, PUT, DELETE"),
            }
        }
        ["stores", key, "log"] => {
            let key = decode_key(key)?;
            match method {
                "GET" | "HEAD" => Ok(Route::ReadLog(key)),
                "POST" => Ok(Route::AppendLog(key)),
                _ => allow("GET, HEAD, POST"),
            }
        }
        ["stores", key, "permissions"] => {
            let key = decode_key(key)?;
            match method {
                "GET" | "HEAD" => Ok(Route::GetPermissions(key)),
                "PUT" => Ok(Route::SetPermission(key)),
                _ => allow("GET, HEAD, PUT"),
            }
        }
        ["stores", key, "envelope"] if get => Ok(Route::GetEnvelope(decode_key(key)?)),
        ["stores", _, "envelope"] => allow("GET, HEAD"),
        ["stores", key, "links"] => {
            let key = decode_key(key)?;
            match method {
                "GET" | "HEAD" => Ok(Route::ListLinks(key)),
                "POST" => Ok(Route::CreateLink(key)),
                _ => allow("GET, HEAD, POST"),
            }
        }
        ["stores", key, "links", link] if method == "DELETE" => {
            Ok(Route::DeleteLink(decode_key(key)?, decode_key(link)?))
        }
        ["stores", _, "links", _] => allow("DELETE"),
        ["changes"] if get => Ok(Route::Changes),
        ["changes"] => allow("GET, HEAD"),
        #[cfg(feature = "test-hooks")]
        ["test-hooks", "panic"] => Ok(Route::TestPanic),
        #[cfg(feature = "test-hooks")]
        ["test-hooks", "held"] => Ok(Route::TestHeld),
        _ => Err(ApiError::NotFound),
    }
}

/// Percent-decodes one path segment into a store key: 1..=1024 bytes of
/// UTF-8 without control characters.
pub fn decode_key(segment: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("Invalid store key: {why}."));
    let raw = segment.as_bytes();
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let digit = |at: usize| raw.get(at).copied().and_then(crate::encoding::hex_digit);
            let (Some(high), Some(low)) = (digit(i + 1), digit(i + 2)) else {
                return Err(bad("broken percent-encoding"));
            };
            bytes.push(high << 4 | low);
            i += 3;
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
        if bytes.len() > MAX_KEY_BYTES {
            return Err(bad("longer than 1024 bytes"));
        }
    }
    if bytes.is_empty() {
        return Err(bad("empty"));
    }
    let key = String::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
    if key.chars().any(char::is_control) {
        return Err(bad("control characters"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(method: &str, path: &str) -> (u16, &'static str) {
        route(method, path).unwrap_err().status_and_code()
    }

    #[test]
    fn known_routes() {
        assert_eq!(route("GET", "/v1/health").unwrap(), Route::Health);
        assert_eq!(route("HEAD", "/v1/info").unwrap(), Route::Info);
        assert_eq!(route("GET", "/v1/accounts/Al%20ice/salt").unwrap(), Route::KdfSalt("Al ice".into()));
        assert_eq!(status("PUT", "/v1/accounts/x/salt"), (405, "method_not_allowed"));
        assert_eq!(route("POST", "/v1/accounts").unwrap(), Route::Register);
        assert_eq!(route("POST", "/v1/sessions").unwrap(), Route::Login);
        assert_eq!(route("DELETE", "/v1/sessions").unwrap(), Route::LogoutEverywhere);
        assert_eq!(route("DELETE", "/v1/sessions/current").unwrap(), Route::Logout);
        assert_eq!(route("GET", "/v1/account").unwrap(), Route::Account);
        assert_eq!(route("DELETE", "/v1/account").unwrap(), Route::DeleteAccount);
        assert_eq!(route("PUT", "/v1/account/password").unwrap(), Route::ChangePassword);
        assert_eq!(route("POST", "/v1/password-reset").unwrap(), Route::ResetRequest);
        assert_eq!(route("POST", "/v1/password-reset/confirm").unwrap(), Route::ResetConfirm);
        assert_eq!(route("GET", "/v1/stores").unwrap(), Route::ListStores);
        assert_eq!(route("PUT", "/v1/stores/a%20b").unwrap(), Route::PutStore("a b".into()));
        assert_eq!(route("HEAD", "/v1/stores/k").unwrap(), Route::GetStore("k".into()));
        assert_eq!(route("DELETE", "/v1/stores/k").unwrap(), Route::DeleteStore("k".into()));
        assert_eq!(route("OPTIONS", "/v1/anything/at/all").unwrap(), Route::Preflight);
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        assert_eq!(status("GET", "/"), (404, "not_found"));
        assert_eq!(status("GET", "/v1"), (404, "not_found"));
        assert_eq!(status("GET", "/v2/health"), (404, "not_found"));
        assert_eq!(status("GET", "/v1/health/x"), (404, "not_found"));
        assert_eq!(status("GET", "/v1/stores/k/x/y"), (404, "not_found"));
        assert_eq!(status("GET", "/v1/stores/k/other"), (404, "not_found"));
        assert_eq!(status("DELETE", "/v1/stores/k/permissions"), (405, "method_not_allowed"));
        assert_eq!(status("POST", "/v1/changes"), (405, "method_not_allowed"));
        assert_eq!(status("OPTIONS", "/v2"), (404, "not_found"));
        assert_eq!(status("POST", "/v1/health"), (405, "method_not_allowed"));
        assert_eq!(status("GET", "/v1/accounts"), (405, "method_not_allowed"));
        assert_eq!(status("PATCH", "/v1/stores/k"), (405, "method_not_allowed"));
        match route("PUT", "/v1/sessions") {
            Err(ApiError::MethodNotAllowed { allow }) => assert_eq!(allow, "POST, DELETE"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_are_decoded_and_validated() {
        assert_eq!(decode_key("..%2F..%2Fx").unwrap(), "../../x");
        assert_eq!(decode_key("%C3%A9t%C3%A9").unwrap(), "été");
        assert_eq!(decode_key("a+b").unwrap(), "a+b");
        assert_eq!(decode_key(&"k".repeat(1024)).unwrap().len(), 1024);
        for bad in ["", "%", "%4", "%zz", "%FF", "a%00b", "%7F", &"k".repeat(1025), &"%41".repeat(1025)] {
            assert_eq!(decode_key(bad).unwrap_err().status_and_code().0, 400, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn routing_any_request_never_panics(method in "[A-Z]{0,8}", path in "\\PC{0,200}") {
            let _ = route(&method, &path);
        }

        #[test]
        fn percent_encoded_keys_round_trip(key in "[^\\x00-\\x1f\\x7f-\\x9f]{1,100}") {
            let encoded: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
            proptest::prop_assert_eq!(decode_key(&encoded).unwrap(), key.clone());
            proptest::prop_assert_eq!(route("PUT", &format!("/v1/stores/{encoded}")).unwrap(), Route::PutStore(key));
        }

        #[test]
        fn decoded_keys_are_always_valid(segment in "(\\PC|%[0-9a-fA-F]{2}|%.?){0,60}") {
            if let Ok(key) = decode_key(&segment) {
                proptest::prop_assert!(!key.is_empty() && key.len() <= MAX_KEY_BYTES);
                proptest::prop_assert!(!key.chars().any(char::is_control));
            }
        }
    }
}
