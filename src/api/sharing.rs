//! `GET` / `PUT /v1/stores/{key}/permissions`: owners grant, change and
//! revoke READ, WRITE and OWN. A grant or revoke is a change of the store
//! for the affected account only: it takes a new `seq` in that account's
//! feed and leaves the store's own `seq` and token alone.

use super::stores::{Owners, check_quota, visible};
use super::{App, respond};
use crate::auth;
use crate::clock;
use crate::db::{self, Db};
use crate::error::ApiError;
use crate::http::Response;
use crate::permission::{self, Permission};
use crate::server::{Request, Step};
use serde_json::{Value, json};

/// `GET /v1/stores/{key}/permissions`
pub fn list(app: &mut App, request: &Request, key: &str) -> Result<Step, ApiError> {
    let session = app.authenticate(request)?;
    let (_, held) = visible(app, key, &session)?;
    permission::require(Some(held), Permission::Own)?;
    let permissions: Vec<Value> = db::stores::permissions(app.db.conn(), key)?
        .into_iter()
        .map(|(account, permission)| {
            json!({ "you": account == session.account_id, "account": account, "permission": permission.as_str() })
        })
        .collect();
    respond(Response::json(200, &json!({ "permissions": permissions })))
}

/// `PUT /v1/stores/{key}/permissions`
pub fn set(app: &mut App, request: &Request, key: &str) -> Result<Step, ApiError> {
    let (id, wanted) = parse_grant(&request.body)?;
    let session = app.authenticate(request)?;
    let (store, held) = visible(app, key, &session)?;
    permission::require(Some(held), Permission::Own)?;
    let grantee = resolve_account(app, &id)?;
    let current = db::stores::permission_of(app.db.conn(), &grantee, key)?;
    if current == wanted {
        return respond(Response::new(204));
    }
    if current == Some(Permission::Own) && db::stores::owners(app.db.conn(), key)?.len() == 1 {
        return Err(ApiError::LastOwner);
    }
    if wanted == Some(Permission::Own) {
        // A store counts with its log against every owner's quota.
        check_quota(app, Owners::Just(&grantee), 0, store.size + store.log.log_bytes)?;
    }
    let conn = app.db.conn();
    let seq = Db::next_seq(conn)?;
    match wanted {
        Some(permission) => db::stores::set_permission(conn, &grantee, key, permission)?,
        None => db::stores::revoke(conn, &grantee, key)?,
    }
    db::changes::touch_account(conn, &grantee, key, seq, clock::now_ms())?;
    app.after_commit.wake([grantee]);
    respond(Response::new(204))
}

/// The account named by an id, or by the account hash that listings show.
fn resolve_account(app: &App, id: &str) -> Result<String, ApiError> {
    let normalised = auth::normalise_id(id).map_err(|_| ApiError::NoSuchAccount)?;
    let by_id = auth::account_hash(&app.secret, &normalised);
    if db::accounts::exists(app.db.conn(), &by_id)? {
        return Ok(by_id);
    }
    let is_hash = normalised.len() == 64 && normalised.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hash && db::accounts::exists(app.db.conn(), &normalised)? {
        return Ok(normalised);
    }
    Err(ApiError::NoSuchAccount)
}

/// `{"account": "<id>", "permission": "READ"|"WRITE"|"OWN"|null}`; both
/// fields are required.
fn parse_grant(body: &[u8]) -> Result<(String, Option<Permission>), ApiError> {
    let bad = |why: &str| ApiError::bad_request(why.to_owned());
    let value: Value = serde_json::from_slice(body).map_err(|err| bad(&format!("Invalid JSON body: {err}.")))?;
    let account = value.get("account").and_then(Value::as_str).ok_or_else(|| bad("account must be a string."))?;
    let permission = match value.get("permission") {
        Some(Value::Null) => None,
        Some(Value::String(name)) => {
            Some(Permission::parse(name).ok_or_else(|| bad("permission must be READ, WRITE, OWN or null."))?)
        }
        _ => return Err(bad("permission must be READ, WRITE, OWN or null.")),
    };
    Ok((account.to_owned(), permission))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_bodies() {
        assert_eq!(
            parse_grant(br#"{"account":"bob","permission":"READ"}"#).unwrap(),
            ("bob".into(), Some(Permission::Read))
        );
        assert_eq!(parse_grant(br#"{"account":"bob","permission":null}"#).unwrap(), ("bob".into(), None));
        for bad in [
            &br#"{"account":"bob"}"#[..],
            br#"{"permission":"OWN"}"#,
            br#"{"account":"bob","permission":"own"}"#,
            br#"{"account":1,"permission":"OWN"}"#,
            br#"{"account":"bob","permission":3}"#,
            b"[]",
            b"",
        ] {
            assert!(parse_grant(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
