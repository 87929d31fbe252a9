//! SPEC §10: identities, sealed grants (envelopes, the list form,
//! `If-Match`, `envelope_seq`) and share links, against the real binary.

use crate::support::{Options, Resp, Server};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::thread;
use std::time::Duration;
use sync_node::encoding::{base64url, hex};

fn put_identity(server: &Server, token: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    server.call("PUT", "/v1/account/identity", Some(token), headers, body)
}

fn grants(server: &Server, token: &str, key: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    server.call("PUT", &format!("/v1/stores/{key}/permissions"), Some(token), &all, body.to_string().as_bytes())
}

/// Registers from a forwarded address (`TRUST_PROXY=1`), past the 10 per address an hour.
fn register_from(server: &Server, id: &str, from: &str) -> String {
    let resp = server.register_from(id, from);
    assert_eq!(resp.status, 201, "{}", resp.text());
    resp.json()["token"].as_str().unwrap().to_owned()
}

fn code(resp: &Resp) -> (u16, String) {
    (resp.status, if resp.body.is_empty() { String::new() } else { resp.error() })
}

fn feed(server: &Server, token: &str, since: i64) -> Value {
    server.get(&format!("/v1/changes?since={since}"), Some(token)).json()
}

#[test]
fn identities_are_published_with_preconditions_kept_by_version_and_looked_up() {
    let server = Server::start();
    let alice = server.register("alice@example.org");
    let bob = server.register("bob@example.org");
    assert_eq!(code(&server.get("/v1/account/identity", Some(&alice))), (404, "not_found".into()));
    assert_eq!(code(&put_identity(&server, &alice, &[], b"")), (400, "bad_request".into()));
    assert_eq!(code(&put_identity(&server, &alice, &[], &[7; 4097])), (413, "payload_too_large".into()));
    assert_eq!(put_identity(&server, "nonsense", &[], b"x").status, 401);
    let first = put_identity(&server, &alice, &[("If-None-Match", "*")], b"identity one");
    assert_eq!(first.status, 201);
    assert_eq!(first.json()["version"], 1);
    let etag = first.etag();
    assert_eq!(
        code(&put_identity(&server, &alice, &[("If-None-Match", "*")], b"again")),
        (412, "precondition_failed".into())
    );
    assert_eq!(code(&put_identity(&server, &alice, &[], b"blind")), (428, "precondition_required".into()));
    let stale = put_identity(&server, &alice, &[("If-Match", "\"0000\"")], b"stale");
    assert_eq!((stale.status, stale.etag()), (412, etag.clone()), "a stale replacement learns the current ETag");
    let second = put_identity(&server, &alice, &[("If-Match", &etag)], b"identity two");
    assert_eq!((second.status, second.json()["version"].as_i64()), (200, Some(2)));

    let own = server.get("/v1/account/identity", Some(&alice));
    assert_eq!((own.body.as_slice(), own.header("Sync-Identity-Version")), (&b"identity two"[..], Some("2")));
    assert_eq!(own.header("Content-Type"), Some("application/octet-stream"));
    let old = server.get("/v1/account/identity?version=1", Some(&alice));
    assert_eq!((old.body.as_slice(), old.etag()), (&b"identity one"[..], etag));
    assert_eq!(server.get("/v1/account/identity?version=0", Some(&alice)).status, 400);
    assert_eq!(server.get("/v1/account/identity?version=x", Some(&alice)).status, 400);

    // Another account looks it up by id (compared as at sign-in).
    let looked = server.get("/v1/accounts/%20ALICE@example.org/identity", Some(&bob));
    assert_eq!((looked.status, looked.body.as_slice()), (200, &b"identity two"[..]));
    assert_eq!(server.get("/v1/accounts/alice@example.org/identity?version=1", Some(&bob)).body, b"identity one");
    assert_eq!(
        code(&server.get("/v1/accounts/alice@example.org/identity?version=3", Some(&bob))),
        (404, "not_found".into())
    );
    let unknown = server.get("/v1/accounts/nobody@example.org/identity", Some(&bob));
    let silent = server.get("/v1/accounts/bob@example.org/identity", Some(&alice));
    assert_eq!(code(&unknown), (404, "no_such_account".into()));
    assert_eq!((unknown.status, unknown.body.clone()), (silent.status, silent.body.clone()), "one answer for both");
    assert_eq!(server.get("/v1/accounts/alice@example.org/identity", None).status, 401);
    let cors = server.get("/v1/accounts/alice@example.org/identity", Some(&bob));
    assert!(cors.header("Access-Control-Expose-Headers").unwrap().contains("Sync-Identity-Version"));

    // Removed with the account.
    server.call(
        "DELETE",
        "/v1/account",
        Some(&alice),
        &[],
        json!({"password": crate::support::PASSWORD}).to_string().as_bytes(),
    );
    assert_eq!(
        code(&server.get("/v1/accounts/alice@example.org/identity", Some(&bob))),
        (404, "no_such_account".into())
    );
}

#[test]
fn identity_publishes_and_lookups_are_rate_limited() {
    let server = Server::start();
    let alice = server.register("alice@example.org");
    let bob = server.register("bob@example.org");
    put_identity(&server, &bob, &[], b"bob");
    let mut etag: Option<String> = None;
    for n in 0..10 {
        let headers: Vec<(&str, &str)> = etag.as_deref().map(|e| vec![("If-Match", e)]).unwrap_or_default();
        let resp = put_identity(&server, &alice, &headers, format!("v{n}").as_bytes());
        assert!(resp.status == 200 || resp.status == 201, "publish {n}: {}", resp.status);
        etag = Some(resp.etag());
    }
    let eleventh = put_identity(&server, &alice, &[("If-Match", etag.as_deref().unwrap())], b"v10");
    assert_eq!(code(&eleventh), (429, "too_many_requests".into()));
    assert!(eleventh.header("Retry-After").is_some());
    assert_eq!(
        code(&put_identity(&server, &alice, &[("If-Match", "\"stale\"")], b"x")).0,
        412,
        "preconditions come first"
    );

    for n in 0..99 {
        assert_eq!(server.get(&format!("/v1/accounts/id{n}@example.org/identity"), Some(&alice)).status, 404);
    }
    assert_eq!(server.get("/v1/accounts/bob@example.org/identity", Some(&alice)).status, 200, "the 100th id");
    assert_eq!(
        code(&server.get("/v1/accounts/bob2@example.org/identity", Some(&alice))),
        (429, "too_many_requests".into())
    );
    assert_eq!(
        server.get("/v1/accounts/BOB@example.org/identity", Some(&alice)).status,
        200,
        "an id already looked up"
    );
    assert_eq!(server.get("/v1/accounts/bob2@example.org/identity", Some(&bob)).status, 404, "per account");
}

#[test]
fn envelopes_travel_with_grants_and_only_to_their_grantee() {
    let server = Server::start();
    let owner = server.register("owner@example.org");
    let friend = server.register("friend@example.org");
    let other = server.register("other@example.org");
    let token = server.put("doc", &owner, &[("Sync-Meta", "m")], b"body").etag();
    let before = server.get("/v1/stores/doc", Some(&owner));
    let store_seq = before.header("Sync-Seq").unwrap().to_owned();
    let cursor = feed(&server, &friend, 0)["seq"].as_i64().unwrap();

    // A long-poll of the friend wakes for the grant.
    let poll = {
        let addr = server.addr;
        let friend = friend.clone();
        thread::spawn(move || {
            let mut conn = crate::support::Conn::open(addr);
            conn.request("GET", &format!("/v1/changes?since={cursor}&wait=20"), Some(&friend), &[], b"").json()
        })
    };
    thread::sleep(Duration::from_millis(300));
    let sealed = base64url(b"sealed store key for friend");
    let granted = grants(
        &server,
        &owner,
        "doc",
        &[],
        &json!({"account": "friend@example.org", "permission": "READ", "envelope": sealed}),
    );
    assert_eq!(granted.status, 204);
    let woke = poll.join().unwrap();
    let entry = &woke["changes"][0];
    assert_eq!((entry["key"].as_str(), entry["permission"].as_str()), (Some("doc"), Some("READ")));
    let envelope_seq = entry["envelope_seq"].as_i64().unwrap();
    assert_eq!(entry["seq"].as_i64(), Some(envelope_seq));

    let own = server.get("/v1/stores/doc/envelope", Some(&friend));
    assert_eq!(own.body, b"sealed store key for friend");
    assert_eq!(own.header("Sync-Envelope-Seq"), Some(envelope_seq.to_string().as_str()));
    assert_eq!(own.header("Cache-Control"), Some("private, no-cache"));
    assert_eq!(
        code(&server.get("/v1/stores/doc/envelope", Some(&owner))),
        (404, "not_found".into()),
        "the owner has none"
    );
    assert_eq!(code(&server.get("/v1/stores/doc/envelope", Some(&other))), (404, "not_found".into()));
    let read = server.get("/v1/stores/doc", Some(&friend));
    assert_eq!(read.header("Sync-Envelope-Seq"), Some(envelope_seq.to_string().as_str()));
    assert_eq!(server.get("/v1/stores/doc", Some(&owner)).header("Sync-Envelope-Seq"), None);
    assert_eq!(
        server.get("/v1/stores", Some(&friend)).json()["stores"][0]["envelope_seq"].as_i64(),
        Some(envelope_seq)
    );
    assert_eq!(server.get("/v1/stores", Some(&owner)).json()["stores"][0]["envelope_seq"], Value::Null);
    let perms = server.get("/v1/stores/doc/permissions", Some(&owner)).json();
    let seqs: Vec<Value> = perms["permissions"].as_array().unwrap().iter().map(|p| p["envelope_seq"].clone()).collect();
    assert!(seqs.contains(&json!(envelope_seq)) && seqs.contains(&Value::Null), "{perms}");

    // A re-seal with the same bytes is a change: new seq for the friend, store untouched.
    assert_eq!(
        grants(
            &server,
            &owner,
            "doc",
            &[],
            &json!({"account": "friend@example.org", "permission": "READ", "envelope": sealed})
        )
        .status,
        204
    );
    let resealed = feed(&server, &friend, envelope_seq);
    let newer = resealed["changes"][0]["envelope_seq"].as_i64().unwrap();
    assert!(newer > envelope_seq);
    let after = server.get("/v1/stores/doc", Some(&owner));
    assert_eq!(
        (after.etag(), after.header("Sync-Seq").unwrap()),
        (token.clone(), store_seq.as_str()),
        "token and seq stay"
    );
    // A grant without an envelope keeps the one it had; same permission, no envelope: nothing changes.
    assert_eq!(
        grants(&server, &owner, "doc", &[], &json!({"account": "friend@example.org", "permission": "WRITE"})).status,
        204
    );
    assert_eq!(server.get("/v1/stores/doc/envelope", Some(&friend)).body, b"sealed store key for friend");
    let quiet = feed(&server, &friend, 0)["seq"].as_i64().unwrap();
    assert_eq!(
        grants(&server, &owner, "doc", &[], &json!({"account": "friend@example.org", "permission": "WRITE"})).status,
        204
    );
    assert_eq!(feed(&server, &friend, quiet)["changes"].as_array().unwrap().len(), 0);

    // Malformed envelopes.
    for (body, status) in [
        (json!({"account": "friend@example.org", "permission": "READ", "envelope": null}), 400),
        (json!({"account": "friend@example.org", "permission": "READ", "envelope": ""}), 400),
        (json!({"account": "friend@example.org", "permission": "READ", "envelope": "AQI="}), 400),
        (json!({"account": "friend@example.org", "permission": null, "envelope": "AQID"}), 400),
        (json!({"account": "friend@example.org", "permission": "READ", "envelope": base64url(&[1; 4097])}), 413),
    ] {
        assert_eq!(grants(&server, &owner, "doc", &[], &body).status, status, "{body}");
    }
    assert_eq!(
        grants(
            &server,
            &owner,
            "doc",
            &[],
            &json!({"account": "friend@example.org", "permission": "READ", "envelope": base64url(&[1; 4096])})
        )
        .status,
        204
    );

    // Revocation takes the envelope with it; the friend's feed shows the tombstone.
    assert_eq!(
        grants(&server, &owner, "doc", &[], &json!({"account": "friend@example.org", "permission": null})).status,
        204
    );
    assert_eq!(server.get("/v1/stores/doc/envelope", Some(&friend)).status, 404);
    let gone = feed(&server, &friend, newer);
    let last = gone["changes"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["token"].clone(), last["envelope_seq"].clone()), (Value::Null, Value::Null));
    let info = server.get("/v1/info", None).json();
    assert_eq!((info["max_identity_bytes"].as_u64(), info["max_envelope_bytes"].as_u64()), (Some(4096), Some(4096)));
}

#[test]
fn the_list_form_is_all_or_nothing_in_one_seq_and_if_match_guards_a_rekey() {
    let server = Server::start();
    let owner = server.register("owner@example.org");
    for id in ["a@example.org", "b@example.org", "c@example.org"] {
        server.register(id);
    }
    let token = server.put("doc", &owner, &[], b"v1").etag();
    let members = |server: &Server| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> =
            server.get("/v1/stores/doc/permissions", Some(&owner)).json()["permissions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p["permission"].as_str().unwrap().to_owned(), p["envelope_seq"].to_string()))
                .collect();
        out.sort();
        out
    };
    let list = json!({"changes": [
        {"account": "a@example.org", "permission": "READ", "envelope": "AQID"},
        {"account": "b@example.org", "permission": "WRITE", "envelope": "BAUG"},
        {"account": "c@example.org", "permission": "OWN"},
    ]});
    assert_eq!(grants(&server, &owner, "doc", &[("If-Match", &token)], &list).status, 204);
    let after = members(&server);
    let seqs: std::collections::HashSet<&str> =
        after.iter().map(|(_, s)| s.as_str()).filter(|s| *s != "null").collect();
    assert_eq!(seqs.len(), 1, "one seq for the whole list: {after:?}");

    // All or nothing: an unknown account, a duplicate, no owner left, a stale If-Match change nothing.
    let before = members(&server);
    for (body, headers, status, error) in [
        (
            json!({"changes": [{"account": "a@example.org", "permission": null}, {"account": "nobody@example.org", "permission": "READ"}]}),
            vec![],
            404,
            "no_such_account",
        ),
        (
            json!({"changes": [{"account": "a@example.org", "permission": null}, {"account": " A@example.org", "permission": "READ"}]}),
            vec![],
            400,
            "bad_request",
        ),
        (
            json!({"changes": [{"account": "owner@example.org", "permission": null}, {"account": "c@example.org", "permission": "READ"}]}),
            vec![],
            409,
            "last_owner",
        ),
        (
            json!({"changes": [{"account": "a@example.org", "permission": null}]}),
            vec![("If-Match", "\"0000\"")],
            412,
            "precondition_failed",
        ),
        (json!({"changes": []}), vec![], 400, "bad_request"),
    ] {
        let resp = grants(&server, &owner, "doc", &headers, &body);
        assert_eq!(code(&resp), (status, error.to_owned()), "{body}");
        if status == 412 {
            assert_eq!(resp.json()["current"]["token"].as_str(), Some(token.trim_matches('"')));
        }
        assert_eq!(members(&server), before, "{body} changed something");
    }
    // A re-key: new body under If-Match, then the list guarded by the new body's token.
    let rekeyed = server.put("doc", &owner, &[("If-Match", &token)], b"v2 under a new key").etag();
    let rekey = json!({"changes": [
        {"account": "a@example.org", "permission": null},
        {"account": "b@example.org", "permission": "WRITE", "envelope": "BwgJ"},
        {"account": "c@example.org", "permission": "OWN", "envelope": "CgsM"},
    ]});
    assert_eq!(grants(&server, &owner, "doc", &[("If-Match", &token)], &rekey).status, 412, "a write slipped between");
    assert_eq!(grants(&server, &owner, "doc", &[("If-Match", &rekeyed)], &rekey).status, 204);
    assert_eq!(members(&server).len(), 3);
}

#[test]
fn share_links_grant_by_a_secret_the_server_never_sees() {
    let server = Server::start_with(Options::default().env("TRUST_PROXY", "1"));
    let owner = server.register("owner@example.org");
    let guest = server.register("guest@example.org");
    server.put("doc", &owner, &[], b"body");
    let verifier = b"the verifier's bytes";
    let hash = hex(&Sha256::digest(verifier));
    let link = "link-id-0123456789";
    let create = |body: Value| server.post_json("/v1/stores/doc/links", Some(&owner), &body);
    let made =
        create(json!({"link": link, "verifier_hash": hash, "permission": "WRITE", "envelope": "AQID", "uses": 2}));
    assert_eq!(made.status, 201);
    assert_eq!(made.json()["uses"], 2);
    let week = made.json()["expires"].as_i64().unwrap() - sync_node::clock::now_ms();
    assert!((6 * 86_400_000..=7 * 86_400_000).contains(&week), "7 days by default");
    assert_eq!(
        code(&create(json!({"link": link, "verifier_hash": hash, "permission": "READ", "envelope": "AQID"}))),
        (409, "link_exists".into())
    );
    assert_eq!(
        create(json!({"link": "x", "verifier_hash": hash, "permission": "READ", "envelope": "AQID"})).status,
        400
    );
    assert_eq!(
        create(json!({"link": "another-link-0001", "verifier_hash": hash, "permission": "OWN", "envelope": "AQID"}))
            .status,
        400
    );
    assert_eq!(
        server
            .post_json(
                "/v1/stores/doc/links",
                Some(&guest),
                &json!({"link": "guest-link-000001", "verifier_hash": hash, "permission": "READ", "envelope": "AQID"})
            )
            .status,
        404
    );

    let listed = server.get("/v1/stores/doc/links", Some(&owner)).json();
    let entry = &listed["links"][0];
    assert_eq!(
        (entry["link"].as_str(), entry["permission"].as_str(), entry["uses"].as_i64()),
        (Some(link), Some("WRITE"), Some(2))
    );
    assert!(entry.get("verifier_hash").is_none() && entry.get("envelope").is_none(), "no secrets listed");

    // Every failure is one answer; the right verifier grants and hands over the envelope.
    let redeem = |token: &str, verifier: &[u8], from: &str| {
        server.call(
            "POST",
            &format!("/v1/links/{link}/redeem"),
            Some(token),
            &[("Content-Type", "application/json"), ("X-Forwarded-For", from)],
            json!({"verifier": base64url(verifier)}).to_string().as_bytes(),
        )
    };
    let wrong = redeem(&guest, b"wrong", "192.0.2.1");
    let unknown = server.call(
        "POST",
        "/v1/links/no-such-link-00000/redeem",
        Some(&guest),
        &[("X-Forwarded-For", "192.0.2.1")],
        json!({"verifier": "AQID"}).to_string().as_bytes(),
    );
    assert_eq!(code(&wrong), (404, "not_found".into()));
    assert_eq!(wrong.body, unknown.body, "the same answer for every failure");
    assert_eq!(
        server.call("POST", &format!("/v1/links/{link}/redeem"), Some(&guest), &[], br#"{"verifier":"a+b"}"#).status,
        400
    );
    assert_eq!(redeem("nonsense", verifier, "192.0.2.1").status, 401);
    let cursor = feed(&server, &guest, 0)["seq"].as_i64().unwrap();
    let ok = redeem(&guest, verifier, "192.0.2.1");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json(), json!({"key": "doc", "permission": "WRITE", "envelope": "AQID"}));
    assert_eq!(feed(&server, &guest, cursor)["changes"][0]["key"], "doc", "a redeem is a grant");
    let perms = server.get("/v1/stores/doc/permissions", Some(&owner)).json();
    assert_eq!(perms["permissions"].as_array().unwrap().len(), 2, "owners see the new member");
    assert_eq!(server.get("/v1/stores/doc/links", Some(&owner)).json()["links"][0]["uses"], 1);

    // Ended links stop working; their ids stay taken while the store exists.
    assert_eq!(server.call("DELETE", &format!("/v1/stores/doc/links/{link}"), Some(&owner), &[], b"").status, 204);
    assert_eq!(redeem(&guest, verifier, "192.0.2.1").status, 404);
    assert_eq!(server.get("/v1/stores/doc/links", Some(&owner)).json()["links"], json!([]));
    assert_eq!(
        create(json!({"link": link, "verifier_hash": hash, "permission": "READ", "envelope": "AQID"})).status,
        409
    );
    assert_eq!(server.call("DELETE", "/v1/stores/doc", Some(&owner), &[("If-Match", "*")], b"").status, 204);
    server.put("doc", &owner, &[], b"again");
    assert_eq!(
        create(json!({"link": link, "verifier_hash": hash, "permission": "READ", "envelope": "AQID"})).status,
        201,
        "removed with the store"
    );
}

#[test]
fn redeem_failures_lock_out_an_account_and_an_address() {
    let server = Server::start_with(Options::default().env("TRUST_PROXY", "1"));
    let owner = server.register("owner@example.org");
    server.put("doc", &owner, &[], b"body");
    let verifier = b"right";
    let link = "lockout-link-00001";
    let made = server.post_json(
        "/v1/stores/doc/links",
        Some(&owner),
        &json!({"link": link, "verifier_hash": hex(&Sha256::digest(verifier)), "permission": "READ", "envelope": "AQID", "uses": 10}),
    );
    assert_eq!(made.status, 201);
    let redeem = |token: &str, verifier: &[u8], from: &str| {
        server
            .call(
                "POST",
                &format!("/v1/links/{link}/redeem"),
                Some(token),
                &[("X-Forwarded-For", from)],
                json!({"verifier": base64url(verifier)}).to_string().as_bytes(),
            )
            .status
    };
    // One account from many addresses.
    let guesser = server.register("guesser@example.org");
    for n in 0..10 {
        assert_eq!(redeem(&guesser, b"guess", &format!("198.51.100.{n}")), 404);
    }
    assert_eq!(redeem(&guesser, verifier, "198.51.100.99"), 429, "locked out, the right verifier included");
    // Many accounts from one address.
    let mut tokens = Vec::new();
    for n in 0..11 {
        tokens.push(register_from(&server, &format!("bot{n}@example.org"), &format!("192.0.2.{n}")));
    }
    for token in &tokens[..10] {
        assert_eq!(redeem(token, b"guess", "203.0.113.7"), 404);
    }
    assert_eq!(redeem(&tokens[10], verifier, "203.0.113.7"), 429);
    assert_eq!(redeem(&tokens[10], verifier, "203.0.113.8"), 200, "another address still redeems");
}

#[test]
fn backup_and_check_carry_identities_envelopes_and_links() {
    use crate::support::cli;
    let server = Server::start();
    let owner = server.register("owner@example.org");
    let friend = server.register("friend@example.org");
    assert_eq!(put_identity(&server, &friend, &[], b"friend's keys").status, 201);
    server.put("doc", &owner, &[], b"body");
    assert_eq!(
        grants(
            &server,
            &owner,
            "doc",
            &[],
            &json!({"account": "friend@example.org", "permission": "READ", "envelope": "AQID"})
        )
        .status,
        204
    );
    let hash = hex(&Sha256::digest(b"v"));
    let made = server.post_json(
        "/v1/stores/doc/links",
        Some(&owner),
        &json!({"link": "backed-up-link-01", "verifier_hash": hash, "permission": "READ", "envelope": "BAUG"}),
    );
    assert_eq!(made.status, 201);
    let (code, stdout, _) = cli(&server.root, &["check"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("1 identity version(s), 1 envelope(s), 1 working share link(s)"), "{stdout}");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("copy");
    assert_eq!(cli(&server.root, &["backup", target.to_str().unwrap()], &[]).0, 0);
    let copy = Server::start_in(&target, Options::default());
    assert_eq!(copy.get("/v1/accounts/friend@example.org/identity", Some(&owner)).body, b"friend's keys");
    assert_eq!(copy.get("/v1/stores/doc/envelope", Some(&friend)).body, [1, 2, 3]);
    assert_eq!(copy.get("/v1/stores/doc/links", Some(&owner)).json()["links"][0]["link"], "backed-up-link-01");
}
