//! Grants (SPEC §5, §10.2): owners grant, change and revoke READ, WRITE
//! and OWN, each grant with an optional sealed envelope (opaque bytes the
//! grantee alone can read back), one change or a list of up to 1000 made
//! all or nothing, optionally only while the store's body is a given
//! version. A grant or envelope change is a change of the store for the
//! affected account only: it takes a new `seq` in that account's feed and
//! leaves the store's own `seq` and token alone.

use super::stores::{Owners, check_quota, refused, visible};
use super::{App, respond};
use super::{Request, Step};
use crate::auth;
use crate::db::{self, Db};
use crate::encoding::unbase64url;
use crate::error::ApiError;
use crate::http::Response;
use crate::limits::{MAX_ENVELOPE_BYTES, MAX_GRANT_CHANGES};
use crate::permission::Permission;
use crate::precondition::{self, Precondition};
use crate::read_cache::REVALIDATE;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};

/// One grant change as asked: the account as named, the permission
/// wanted (`None`: revoke) and a new envelope, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GrantChange {
    account: String,
    permission: Option<Permission>,
    envelope: Option<Vec<u8>>,
}

/// `GET /v1/stores/{key}/permissions`
pub fn list(app: &mut App, request: &Request, key: &str) -> Result<Step, ApiError> {
    let session = app.authenticate(request)?;
    let (_, held) = visible(app, key, &session)?;
    super::require(Some(held), Permission::Own)?;
    let permissions: Vec<Value> = db::stores::permissions(app.db.conn(), key)?
        .into_iter()
        .map(|(account, grant)| {
            json!({
                "you": account == session.account_id,
                "account": account,
                "permission": grant.permission.as_str(),
                "envelope_seq": grant.envelope_seq,
            })
        })
        .collect();
    respond(Response::json(200, &json!({ "permissions": permissions })))
}

/// `GET /v1/stores/{key}/envelope`: the caller's own envelope.
pub fn envelope(app: &mut App, request: &Request, key: &str) -> Result<Step, ApiError> {
    let session = app.authenticate(request)?;
    visible(app, key, &session)?;
    let (bytes, seq) = db::stores::envelope(app.db.conn(), &session.account_id, key)?.ok_or(ApiError::NotFound)?;
    respond(
        Response::bytes(200, bytes)
            .with_header("Content-Type", "application/octet-stream")
            .with_header("Cache-Control", REVALIDATE)
            .with_header("Sync-Envelope-Seq", seq.to_string()),
    )
}

/// `PUT /v1/stores/{key}/permissions`: one change, or `{"changes": […]}`.
pub fn set(app: &mut App, request: &Request, key: &str) -> Result<Step, ApiError> {
    let changes = parse_grants(&request.body)?;
    let if_match = request.head.list_header("if-match")?;
    if request.head.header("if-none-match").is_some() {
        return Err(ApiError::bad_request("If-None-Match is not allowed on a grant."));
    }
    let precondition = precondition::parse_write(if_match.as_deref(), None)?;
    let session = app.authenticate(request)?;
    // SPEC §10's order: visibility (the store, then the accounts named),
    // permission, preconditions, then the state the list would leave.
    let (store, held) = visible(app, key, &session)?;
    let grantees = changes.iter().map(|change| resolve_account(app, &change.account)).collect::<Result<Vec<_>, _>>()?;
    if grantees.iter().collect::<HashSet<_>>().len() != grantees.len() {
        return Err(ApiError::bad_request("An account is named twice in the list."));
    }
    super::require(Some(held), Permission::Own)?;
    if !matches!(precondition, Precondition::None) {
        precondition::decide(&precondition, Some(&store.token)).map_err(|refusal| refused(refusal, &store))?;
    }
    // Judge the list as a whole, on the state it would leave.
    let conn = app.db.conn();
    let current: HashMap<String, Permission> =
        db::stores::permissions(conn, key)?.into_iter().map(|(account, grant)| (account, grant.permission)).collect();
    let mut after = current.clone();
    for (grantee, change) in grantees.iter().zip(&changes) {
        match change.permission {
            Some(permission) => after.insert(grantee.clone(), permission),
            None => after.remove(grantee),
        };
    }
    if !after.values().any(|p| *p == Permission::Own) {
        return Err(ApiError::LastOwner);
    }
    for grantee in &grantees {
        if after.get(grantee) == Some(&Permission::Own) && current.get(grantee) != Some(&Permission::Own) {
            // A store counts with its log against every owner's quota.
            check_quota(app, Owners::Just(grantee), 0, store.charge())?;
        }
    }
    let effective: Vec<(&String, &GrantChange)> = grantees
        .iter()
        .zip(&changes)
        .filter(|(grantee, change)| current.get(*grantee) != change.permission.as_ref() || change.envelope.is_some())
        .collect();
    if effective.is_empty() {
        return respond(Response::new(204));
    }
    let seq = Db::next_seq(conn)?;
    for (grantee, change) in &effective {
        let conn = app.db.conn();
        match change.permission {
            Some(permission) => {
                db::stores::set_permission(conn, grantee, key, permission)?;
                if let Some(envelope) = &change.envelope {
                    db::stores::set_envelope(conn, grantee, key, envelope, seq)?;
                }
            }
            None => db::stores::revoke(conn, grantee, key)?,
        }
        app.announce_grant_change(grantee, key, seq, change.permission.is_none())?;
    }
    respond(Response::new(204))
}

/// The account named by an id, or by the account hash that listings show.
pub(super) fn resolve_account(app: &App, id: &str) -> Result<String, ApiError> {
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

/// An envelope or a verifier: unpadded base64url of 1.. bytes (400), at
/// most `max` bytes (413).
pub(super) fn decode_sealed(value: &Value, what: &'static str, max: usize) -> Result<Vec<u8>, ApiError> {
    let bad = || ApiError::bad_request(format!("{what} must be non-empty unpadded base64url."));
    let bytes = value.as_str().and_then(unbase64url).ok_or_else(bad)?;
    if bytes.is_empty() {
        return Err(bad());
    }
    if bytes.len() > max {
        return Err(ApiError::PayloadTooLarge(what));
    }
    Ok(bytes)
}

/// `{"account", "permission", "envelope"?}` or `{"changes": [that, …]}`
/// (1 to 1000 changes, no account named twice).
fn parse_grants(body: &[u8]) -> Result<Vec<GrantChange>, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|err| ApiError::bad_request(format!("Invalid JSON body: {err}.")))?;
    let Some(object) = value.as_object() else { return Err(ApiError::bad_request("The body must be a JSON object.")) };
    let Some(list) = object.get("changes") else { return Ok(vec![parse_change(object)?]) };
    let list = list.as_array().ok_or_else(|| ApiError::bad_request("changes must be a list."))?;
    if list.is_empty() || list.len() > MAX_GRANT_CHANGES {
        return Err(ApiError::bad_request(format!("changes must hold 1 to {MAX_GRANT_CHANGES} changes.")));
    }
    let changes = list
        .iter()
        .map(|change| {
            change
                .as_object()
                .ok_or_else(|| ApiError::bad_request("Each change must be an object."))
                .and_then(parse_change)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let named: HashSet<String> = changes.iter().map(|c| c.account.trim().to_ascii_lowercase()).collect();
    if named.len() != changes.len() {
        return Err(ApiError::bad_request("An account is named twice in the list."));
    }
    Ok(changes)
}

fn parse_change(object: &Map<String, Value>) -> Result<GrantChange, ApiError> {
    let bad = |why: &str| ApiError::bad_request(why.to_owned());
    let account = object.get("account").and_then(Value::as_str).ok_or_else(|| bad("account must be a string."))?;
    let permission = match object.get("permission") {
        Some(Value::Null) => None,
        Some(Value::String(name)) => {
            Some(Permission::parse(name).ok_or_else(|| bad("permission must be READ, WRITE, OWN or null."))?)
        }
        _ => return Err(bad("permission must be READ, WRITE, OWN or null.")),
    };
    let envelope = match object.get("envelope") {
        None => None,
        Some(Value::Null) => return Err(bad("envelope must not be null (leave it out to keep the envelope).")),
        Some(_) if permission.is_none() => return Err(bad("A revocation takes no envelope.")),
        Some(value) => Some(decode_sealed(value, "envelope", MAX_ENVELOPE_BYTES)?),
    };
    Ok(GrantChange { account: account.to_owned(), permission, envelope })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &[u8]) -> Result<GrantChange, ApiError> {
        let mut all = parse_grants(body)?;
        assert_eq!(all.len(), 1);
        Ok(all.remove(0))
    }

    #[test]
    fn grant_bodies() {
        assert_eq!(
            one(br#"{"account":"bob","permission":"READ"}"#).unwrap(),
            GrantChange { account: "bob".into(), permission: Some(Permission::Read), envelope: None }
        );
        assert_eq!(one(br#"{"account":"bob","permission":null}"#).unwrap().permission, None);
        assert_eq!(
            one(br#"{"account":"bob","permission":"OWN","envelope":"AQID"}"#).unwrap().envelope,
            Some(vec![1, 2, 3])
        );
        for bad in [
            &br#"{"account":"bob"}"#[..],
            br#"{"permission":"OWN"}"#,
            br#"{"account":"bob","permission":"own"}"#,
            br#"{"account":1,"permission":"OWN"}"#,
            br#"{"account":"bob","permission":3}"#,
            br#"{"account":"bob","permission":"READ","envelope":null}"#,
            br#"{"account":"bob","permission":"READ","envelope":""}"#,
            br#"{"account":"bob","permission":"READ","envelope":"AQI="}"#,
            br#"{"account":"bob","permission":"READ","envelope":"a+b/"}"#,
            br#"{"account":"bob","permission":null,"envelope":"AQID"}"#,
            br#"{"changes":[]}"#,
            br#"{"changes":{}}"#,
            br#"{"changes":[{"account":"bob","permission":"READ"},{"account":" BOB","permission":"WRITE"}]}"#,
            b"[]",
            b"",
        ] {
            assert!(matches!(parse_grants(bad), Err(ApiError::BadRequest(_))), "{}", String::from_utf8_lossy(bad));
        }
        let big = format!(r#"{{"account":"bob","permission":"READ","envelope":"{}"}}"#, "A".repeat(5464));
        assert!(matches!(parse_grants(big.as_bytes()), Err(ApiError::PayloadTooLarge(_))));
        let many: Vec<String> =
            (0..=MAX_GRANT_CHANGES).map(|i| format!(r#"{{"account":"a{i}","permission":"READ"}}"#)).collect();
        assert!(parse_grants(format!(r#"{{"changes":[{}]}}"#, many.join(",")).as_bytes()).is_err());
        assert_eq!(parse_grants(format!(r#"{{"changes":[{}]}}"#, many[1..].join(",")).as_bytes()).unwrap().len(), 1000);
    }
}
