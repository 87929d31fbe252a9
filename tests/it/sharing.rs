//! Sharing: grants at each level, what each level may do, revocation.

use crate::support::{Options, Server};
use serde_json::{Value, json};

fn grant(server: &Server, token: &str, key: &str, account: &str, permission: Value) -> crate::support::Resp {
    let body = json!({"account": account, "permission": permission}).to_string();
    server.call("PUT", &format!("/v1/stores/{key}/permissions"), Some(token), &[], body.as_bytes())
}

fn status(resp: crate::support::Resp) -> (u16, String) {
    let code = if resp.body.is_empty() { String::new() } else { resp.error() };
    (resp.status, code)
}

#[test]
fn each_level_allows_exactly_what_it_should() {
    let server = Server::start();
    let owner = server.register("owner");
    let friend = server.register("friend");
    let etag = server.put("shared", &owner, &[("Sync-Meta", "m")], b"v1").etag();
    let path = "/v1/stores/shared";
    let perms = "/v1/stores/shared/permissions";

    // No permission yet: the store does not exist for the friend.
    assert_eq!(server.get(path, Some(&friend)).status, 404);
    assert_eq!(status(server.get(perms, Some(&friend))), (404, "not_found".into()));

    // READ: read and list, nothing else.
    assert_eq!(grant(&server, &owner, "shared", "FRIEND", json!("READ")).status, 204);
    let read = server.get(path, Some(&friend));
    assert_eq!((read.status, read.body.as_slice()), (200, &b"v1"[..]));
    assert_eq!(read.header("Sync-Permission"), Some("READ"));
    let listed = server.get("/v1/stores", Some(&friend)).json();
    assert_eq!(listed["stores"][0]["permission"], "READ");
    assert_eq!(listed["stores"][0]["meta"], "m");
    assert_eq!(status(server.put("shared", &friend, &[("If-Match", &etag)], b"x")), (403, "forbidden".into()));
    assert_eq!(
        status(server.call("DELETE", path, Some(&friend), &[("If-Match", "*")], b"")),
        (403, "forbidden".into())
    );
    assert_eq!(status(server.get(perms, Some(&friend))), (403, "forbidden".into()));
    assert_eq!(status(grant(&server, &friend, "shared", "friend", json!("OWN"))), (403, "forbidden".into()));

    // WRITE: also replace data and meta; still no delete or sharing.
    assert_eq!(grant(&server, &owner, "shared", "friend", json!("WRITE")).status, 204);
    let written = server.put("shared", &friend, &[("If-Match", &etag), ("Sync-Meta", "by friend")], b"v2");
    assert_eq!(written.status, 200);
    assert_eq!(server.get(path, Some(&owner)).body, b"v2");
    assert_eq!(
        status(server.call("DELETE", path, Some(&friend), &[("If-Match", "*")], b"")),
        (403, "forbidden".into())
    );
    assert_eq!(status(grant(&server, &friend, "shared", "owner", json!(null))), (403, "forbidden".into()));

    // OWN: everything, including managing permissions.
    assert_eq!(grant(&server, &owner, "shared", "friend", json!("OWN")).status, 204);
    let list = server.get(perms, Some(&friend));
    assert_eq!(list.status, 200);
    let entries = list.json()["permissions"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2);
    let friend_hash = server.get("/v1/account", Some(&friend)).json()["account"].clone();
    let me = entries.iter().find(|e| e["you"] == true).unwrap();
    assert_eq!((&me["account"], &me["permission"]), (&friend_hash, &json!("OWN")));
    assert!(entries.iter().all(|e| e["account"].as_str().unwrap().len() == 64));

    // An owner may revoke another owner, named by the hash the list shows.
    let owner_hash = server.get("/v1/account", Some(&owner)).json()["account"].as_str().unwrap().to_owned();
    assert_eq!(grant(&server, &friend, "shared", &owner_hash, json!(null)).status, 204);
    assert_eq!(server.get(path, Some(&owner)).status, 404, "revocation hides the store");
    assert_eq!(server.call("DELETE", path, Some(&friend), &[("If-Match", "*")], b"").status, 204);
}

#[test]
fn refusals() {
    // "s" counts 8 + 4 + 1,024 bytes, "mine" 3 + 16 + 1,024: both fit, not together.
    let server = Server::start_with(Options::default().env("QUOTA_BYTES", "2070"));
    let owner = server.register("owner");
    let other = server.register("other");
    server.put("s", &owner, &[], b"12345678");
    server.put("mine", &other, &[], b"123");
    assert_eq!(status(grant(&server, &owner, "s", "ghost", json!("READ"))), (404, "no_such_account".into()));
    assert_eq!(status(grant(&server, &owner, "missing", "other", json!("READ"))), (404, "not_found".into()));
    assert_eq!(status(grant(&server, &owner, "s", "owner", json!(null))), (409, "last_owner".into()));
    assert_eq!(status(grant(&server, &owner, "s", "owner", json!("WRITE"))), (409, "last_owner".into()));
    assert_eq!(status(grant(&server, &owner, "s", "other", json!("OWN"))), (507, "insufficient_storage".into()));
    assert_eq!(status(grant(&server, &owner, "s", "other", json!("admin"))), (400, "bad_request".into()));
    let no_permission_field = json!({"account": "other"}).to_string();
    let resp = server.call("PUT", "/v1/stores/s/permissions", Some(&owner), &[], no_permission_field.as_bytes());
    assert_eq!(status(resp), (400, "bad_request".into()));
    assert_eq!(status(grant(&server, "bad-token", "s", "other", json!("READ"))), (401, "unauthorized".into()));
    assert_eq!(grant(&server, &owner, "s", "other", json!("WRITE")).status, 204);
    assert_eq!(server.get("/v1/stores/s", Some(&other)).status, 200);
    let account = server.get("/v1/account", Some(&other)).json();
    assert_eq!(account["store_count"], 1, "only owned stores count");
}

#[test]
fn deleting_a_shared_store_removes_it_for_everyone() {
    let server = Server::start();
    let owner = server.register("owner");
    let reader = server.register("reader");
    server.put("doomed", &owner, &[], b"x");
    grant(&server, &owner, "doomed", "reader", json!("READ"));
    let before = server.get("/v1/changes?since=0", Some(&reader)).json()["seq"].as_i64().unwrap();
    assert_eq!(server.call("DELETE", "/v1/stores/doomed", Some(&owner), &[("If-Match", "*")], b"").status, 204);
    assert_eq!(server.get("/v1/stores/doomed", Some(&reader)).status, 404);
    let feed = server.get(&format!("/v1/changes?since={before}"), Some(&reader)).json();
    assert_eq!(
        feed["changes"],
        json!([{"key": "doomed", "seq": before + 1, "token": null, "permission": null, "log_head": null, "envelope_seq": null}])
    );
}
