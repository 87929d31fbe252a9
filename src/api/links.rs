//! Share links (SPEC §10.3): a grant to whoever presents a secret the
//! owner passed on out of band. The server keeps the link id, SHA-256 of
//! the verifier and an envelope sealed under the link's key; it never sees
//! the secret. Every failed redeem gets one answer, and 10 failures an
//! hour from an account or an address lock that account or address out.

use super::sharing::decode_sealed;
use super::stores::{Owners, check_free_disk, check_quota, visible};
use super::{App, DAY, respond};
use super::{Request, Step};
use crate::auth::constant_time_eq;
use crate::clock;
use crate::db::{self, Db, links::Link};
use crate::encoding::{base64url, hex};
use crate::error::{ApiError, Shortage};
use crate::http::Response;
use crate::limits::{LINK_DAYS, LINK_OVERHEAD, MAX_ENVELOPE_BYTES, MAX_LINK_DAYS, MAX_LINK_USES, MAX_LINKS_PER_STORE};
use crate::permission::Permission;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Instant;

/// A link id: 16 to 64 characters of A–Z a–z 0–9 _ -.
pub fn valid_link_id(link: &str) -> bool {
    (16..=64).contains(&link.len()) && link.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `POST /v1/stores/{key}/links`
pub fn create(app: &mut App, request: &Request, key: &str) -> Result<Step, ApiError> {
    let now = clock::now_ms();
    let mut link = parse_link(&request.body, now)?;
    let session = app.authenticate(request)?;
    let (_, held) = visible(app, key, &session)?;
    super::require(Some(held), Permission::Own)?;
    let conn = app.db.conn();
    if db::links::taken(conn, &link.link)? {
        return Err(ApiError::LinkExists);
    }
    // A link's row stays until its store goes: bounded per store, counted
    // against the owners' quota, refused when the disk is low.
    if db::links::count(conn, key)? >= MAX_LINKS_PER_STORE {
        return Err(ApiError::InsufficientStorage(Shortage::Links));
    }
    let cost = (link.envelope.len() + link.link.len()) as u64 + LINK_OVERHEAD;
    check_quota(app, Owners::OfStore(key), 0, cost)?;
    check_free_disk(app, cost)?;
    link.key = key.to_owned();
    db::links::insert(app.db.conn(), &link)?;
    respond(Response::json(201, &json!({ "link": link.link, "expires": link.expires, "uses": link.uses_left })))
}

/// `GET /v1/stores/{key}/links`: the links that still work, no secrets.
pub fn list(app: &mut App, request: &Request, key: &str) -> Result<Step, ApiError> {
    let session = app.authenticate(request)?;
    let (_, held) = visible(app, key, &session)?;
    super::require(Some(held), Permission::Own)?;
    let links: Vec<Value> = db::links::working(app.db.conn(), key, clock::now_ms())?
        .into_iter()
        .map(|link| {
            json!({
                "link": link.link,
                "permission": link.permission.as_str(),
                "uses": link.uses_left,
                "expires": link.expires,
                "created": link.created,
            })
        })
        .collect();
    respond(Response::json(200, &json!({ "links": links })))
}

/// `DELETE /v1/stores/{key}/links/{link}`
pub fn delete(app: &mut App, request: &Request, key: &str, link: &str) -> Result<Step, ApiError> {
    let session = app.authenticate(request)?;
    let (_, held) = visible(app, key, &session)?;
    super::require(Some(held), Permission::Own)?;
    if !db::links::end(app.db.conn(), key, link)? {
        return Err(ApiError::NotFound);
    }
    respond(Response::new(204))
}

/// `POST /v1/links/{link}/redeem`
pub fn redeem(app: &mut App, request: &Request, link: &str) -> Result<Step, ApiError> {
    let body: Value = serde_json::from_slice(&request.body)
        .map_err(|err| ApiError::bad_request(format!("Invalid JSON body: {err}.")))?;
    let verifier = decode_sealed(body.get("verifier").unwrap_or(&Value::Null), "verifier", usize::MAX)?;
    let session = app.authenticate(request)?;
    let address = app.client_address(request);
    let now = Instant::now();
    let locked = |wait: std::time::Duration| ApiError::TooManyRequests { retry_after_secs: wait.as_secs().max(1) };
    app.redeem_failures_by_account.reserve(&session.account_id, now).map_err(locked)?;
    if let Err(wait) = app.redeem_failures_by_address.reserve(&address, now) {
        app.redeem_failures_by_account.release(&session.account_id);
        return Err(locked(wait));
    }
    let outcome = grant_by_link(app, &session.account_id, link, &verifier);
    if matches!(outcome, Err(ApiError::NotFound)) {
        app.redeem_failures_by_account.commit(&session.account_id, now);
        app.redeem_failures_by_address.commit(&address, now);
    } else {
        app.redeem_failures_by_account.release(&session.account_id);
        app.redeem_failures_by_address.release(&address);
    }
    outcome
}

/// The grant a working link and the right verifier give; `NotFound` for
/// every failure alike.
fn grant_by_link(app: &mut App, account_id: &str, link: &str, verifier: &[u8]) -> Result<Step, ApiError> {
    let conn = app.db.conn();
    let now = clock::now_ms();
    let Some(found) = valid_link_id(link).then(|| db::links::get(conn, link)).transpose()?.flatten() else {
        return Err(ApiError::NotFound);
    };
    let hash = hex(&Sha256::digest(verifier));
    let usable = found.uses_left > 0 && found.expires > now;
    if !(constant_time_eq(hash.as_bytes(), found.verifier_hash.as_bytes()) && usable) {
        return Err(ApiError::NotFound);
    }
    if !db::links::spend(conn, link, now)? {
        return Err(ApiError::NotFound);
    }
    let held = db::stores::permission_of(conn, account_id, &found.key)?;
    let permission = match held {
        Some(held) if held >= found.permission => held,
        _ => {
            let seq = Db::next_seq(conn)?;
            db::stores::set_permission(conn, account_id, &found.key, found.permission)?;
            app.announce_grant_change(account_id, &found.key, seq, false)?;
            found.permission
        }
    };
    respond(Response::json(
        200,
        &json!({ "key": found.key, "permission": permission.as_str(), "envelope": base64url(&found.envelope) }),
    ))
}

/// `{"link","verifier_hash","permission","envelope"[,"uses"][,"expires"]}`
fn parse_link(body: &[u8], now: i64) -> Result<Link, ApiError> {
    let bad = |why: &str| ApiError::bad_request(why.to_owned());
    let value: Value = serde_json::from_slice(body).map_err(|err| bad(&format!("Invalid JSON body: {err}.")))?;
    let link = value.get("link").and_then(Value::as_str).filter(|l| valid_link_id(l));
    let link = link.ok_or_else(|| bad("link must be 16 to 64 characters of A-Z a-z 0-9 _ -."))?;
    let verifier_hash = value.get("verifier_hash").and_then(Value::as_str);
    let verifier_hash = verifier_hash
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| bad("verifier_hash must be 64 hex characters (SHA-256 of the verifier's bytes)."))?;
    let permission = match value.get("permission").and_then(Value::as_str) {
        Some("READ") => Permission::Read,
        Some("WRITE") => Permission::Write,
        _ => return Err(bad("permission must be READ or WRITE.")),
    };
    let envelope = decode_sealed(value.get("envelope").unwrap_or(&Value::Null), "envelope", MAX_ENVELOPE_BYTES)?;
    let uses = match value.get("uses") {
        None => 1,
        Some(uses) => {
            uses.as_i64().filter(|u| (1..=MAX_LINK_USES).contains(u)).ok_or_else(|| bad("uses must be 1 to 1000."))?
        }
    };
    let day = DAY.as_millis() as i64;
    let expires = match value.get("expires") {
        None => now + LINK_DAYS * day,
        Some(expires) => expires
            .as_i64()
            .filter(|e| *e > now && *e <= now + MAX_LINK_DAYS * day)
            .ok_or_else(|| bad("expires must be in the future and at most 365 days ahead (ms since the epoch)."))?,
    };
    Ok(Link {
        link: link.to_owned(),
        key: String::new(),
        verifier_hash: verifier_hash.to_ascii_lowercase(),
        permission,
        envelope,
        uses_left: uses,
        expires,
        created: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_ids_and_bodies() {
        assert!(valid_link_id("abcdefghijklmnop"));
        assert!(valid_link_id(&"A-_9".repeat(16)));
        assert!(!valid_link_id("short"));
        assert!(!valid_link_id(&"a".repeat(65)));
        assert!(!valid_link_id("abcdefghijklmnop!"));
        let hash = "a".repeat(64);
        let ok =
            format!(r#"{{"link":"abcdefghijklmnop","verifier_hash":"{hash}","permission":"READ","envelope":"AQID"}}"#);
        let link = parse_link(ok.as_bytes(), 1_000).unwrap();
        assert_eq!((link.uses_left, link.expires, link.envelope), (1, 1_000 + 7 * 86_400_000, vec![1, 2, 3]));
        for bad in [
            ok.replace("READ", "OWN"),
            ok.replace("abcdefghijklmnop", "abc"),
            ok.replace(&hash, "zz"),
            ok.replace("AQID", ""),
            ok.replace(r#""envelope":"AQID""#, r#""envelope":"AQID","uses":0"#),
            ok.replace(r#""envelope":"AQID""#, r#""envelope":"AQID","uses":1001"#),
            ok.replace(r#""envelope":"AQID""#, r#""envelope":"AQID","expires":999"#),
            ok.replace(r#""envelope":"AQID""#, r#""envelope":"AQID","expires":100000000000"#),
        ] {
            assert!(parse_link(bad.as_bytes(), 1_000).is_err(), "{bad}");
        }
    }
}
