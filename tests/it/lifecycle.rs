//! Password change, account deletion, password reset, throttling.

use crate::support::{Options, PASSWORD, Server, database, store_files};
use serde_json::json;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

fn login(server: &Server, id: &str, password: &str) -> crate::support::Resp {
    server.post_json("/v1/sessions", None, &json!({"id": id, "password": password}))
}

fn token_of(resp: &crate::support::Resp) -> String {
    resp.json()["token"].as_str().unwrap().to_owned()
}

#[test]
fn change_password_keeps_this_session_only() {
    let server = Server::start();
    let current = server.register("changer");
    let other = token_of(&login(&server, "changer", PASSWORD));
    let change = |token: &str, old: &str, new: &str| {
        let body = json!({"password": old, "new_password": new}).to_string();
        server.call("PUT", "/v1/account/password", Some(token), &[], body.as_bytes())
    };
    let wrong = change(&current, "not the password", "new password 1");
    assert_eq!((wrong.status, wrong.error().as_str()), (403, "wrong_password"));
    assert_eq!(change(&current, PASSWORD, "short").status, 400);
    assert_eq!(change("bogus", PASSWORD, "new password 1").status, 401);
    assert_eq!(change(&current, PASSWORD, "new password 1").status, 204);
    assert_eq!(server.get("/v1/account", Some(&current)).status, 200, "this session stays");
    assert_eq!(server.get("/v1/account", Some(&other)).status, 401, "every other session is revoked");
    assert_eq!(login(&server, "changer", PASSWORD).status, 401);
    assert_eq!(login(&server, "changer", "new password 1").status, 201);
}

#[test]
fn deleting_an_account_removes_what_it_alone_owned() {
    let server = Server::start();
    let leaver = server.register("leaver");
    let friend = server.register("friend");
    server.put("alone", &leaver, &[], b"mine only");
    server.put("shared-read", &leaver, &[], b"friend reads");
    server.put("co-owned", &leaver, &[], b"both own");
    server.put("friends", &friend, &[], b"friend's");
    let grant = |token: &str, key: &str, account: &str, permission: &str| {
        let body = json!({"account": account, "permission": permission}).to_string();
        let resp = server.call("PUT", &format!("/v1/stores/{key}/permissions"), Some(token), &[], body.as_bytes());
        assert_eq!(resp.status, 204);
    };
    grant(&leaver, "shared-read", "friend", "READ");
    grant(&leaver, "co-owned", "friend", "OWN");
    grant(&friend, "friends", "leaver", "WRITE");
    assert_eq!(store_files(&server.root).len(), 4);
    let since = server.get("/v1/changes?since=0", Some(&friend)).json()["seq"].as_i64().unwrap();

    let delete = |password: &str| {
        server.call("DELETE", "/v1/account", Some(&leaver), &[], json!({"password": password}).to_string().as_bytes())
    };
    let wrong = delete("wrong password");
    assert_eq!((wrong.status, wrong.error().as_str()), (403, "wrong_password"));
    assert_eq!(delete(PASSWORD).status, 204);
    assert_eq!(server.get("/v1/account", Some(&leaver)).status, 401, "sessions are gone");
    assert_eq!(login(&server, "leaver", PASSWORD).status, 401);
    assert_eq!(store_files(&server.root).len(), 2, "solely-owned files are deleted");
    assert_eq!(server.get("/v1/stores/shared-read", Some(&friend)).status, 404);
    assert_eq!(server.get("/v1/stores/co-owned", Some(&friend)).body, b"both own");
    let perms = server.get("/v1/stores/friends/permissions", Some(&friend)).json();
    assert_eq!(perms["permissions"].as_array().unwrap().len(), 1, "its permissions are gone");
    let feed = server.get(&format!("/v1/changes?since={since}"), Some(&friend)).json();
    assert_eq!(
        feed["changes"],
        json!([{"key": "shared-read", "seq": since + 2, "token": null, "permission": null, "log_head": null, "envelope_seq": null}])
    );
    assert_eq!(server.post_json("/v1/accounts", None, &json!({"id": "leaver", "password": PASSWORD})).status, 201);
}

#[test]
fn reset_without_a_hook_is_not_configured() {
    let server = Server::start();
    let resp = server.post_json("/v1/password-reset", None, &json!({"id": "anyone"}));
    assert_eq!((resp.status, resp.error().as_str()), (501, "not_configured"));
    assert_eq!(server.get("/v1/info", None).json()["password_reset"], false);
}

fn hook_script(dir: &Path, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("hook.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(Instant::now() < deadline, "the hook did not run");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reset_through_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let hook = hook_script(
        dir.path(),
        &format!("printf '%s %s\\n' \"$SYNC_NODE_ID\" \"$SYNC_NODE_TOKEN\" >> {}", out.display()),
    );
    let server = Server::start_with(Options::default().env("RESET_HOOK", &hook));
    assert_eq!(server.get("/v1/info", None).json()["password_reset"], true);
    let session = server.register("Forgetful@Example.org");
    server.register("bystander");

    let unknown = server.post_json("/v1/password-reset", None, &json!({"id": "nobody@example.org"}));
    let known = server.post_json("/v1/password-reset", None, &json!({"id": " Forgetful@Example.org "}));
    assert_eq!((known.status, known.json()), (202, json!({})));
    assert_eq!(unknown.raw_without_date(), known.raw_without_date(), "no enumeration");
    let line = wait_for_file(&out);
    let (id, token) = line.trim_end().split_once(' ').unwrap();
    assert_eq!(id, "Forgetful@Example.org");
    assert_eq!(line.lines().count(), 1, "the hook ran for the known id only");

    let confirm = |id: &str, token: &str, new: &str| {
        server.post_json("/v1/password-reset/confirm", None, &json!({"id": id, "token": token, "new_password": new}))
    };
    assert_eq!(confirm("bystander", token, "taken over!").status, 400, "not for another id");
    assert_eq!(confirm("forgetful@example.org", "wrong-token", "new password 2").status, 400);
    assert_eq!(confirm("forgetful@example.org", token, "new password 2").status, 204);
    assert_eq!(server.get("/v1/account", Some(&session)).status, 401, "every session is revoked");
    assert_eq!(login(&server, "forgetful@example.org", "new password 2").status, 201);
    let reused = confirm("forgetful@example.org", token, "new password 3");
    assert_eq!((reused.status, reused.error().as_str()), (400, "bad_request"), "single use");

    // A token older than an hour no longer works.
    server.post_json("/v1/password-reset", None, &json!({"id": "forgetful@example.org"}));
    let line = loop {
        let text = wait_for_file(&out);
        if text.lines().count() == 2 {
            break text;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let token = line.lines().nth(1).unwrap().split_once(' ').unwrap().1.to_owned();
    database(&server.root).execute("UPDATE password_reset_token SET expiration = expiration - 3600001", []).unwrap();
    assert_eq!(confirm("forgetful@example.org", &token, "new password 4").status, 400);
}

#[test]
fn a_hanging_hook_stalls_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hook = hook_script(dir.path(), "sleep 60");
    let server = Server::start_with(Options::default().env("RESET_HOOK", &hook));
    server.register("patient");
    for _ in 0..6 {
        let started = Instant::now();
        assert_eq!(server.post_json("/v1/password-reset", None, &json!({"id": "patient"})).status, 202);
        assert_eq!(server.get("/v1/health", None).status, 200);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

#[test]
fn five_failures_lock_out_even_the_right_password() {
    let server = Server::start();
    server.register("target");
    for _ in 0..5 {
        assert_eq!(login(&server, "target", "wrong password").status, 401);
    }
    let locked = login(&server, "target", PASSWORD);
    assert_eq!((locked.status, locked.error().as_str()), (429, "too_many_requests"));
    let retry: u64 = locked.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    // Unknown ids are counted the same way.
    for _ in 0..5 {
        login(&server, "ghost", "wrong password");
    }
    assert_eq!(login(&server, "ghost", "wrong password").status, 429);
}

#[test]
fn a_success_resets_the_count_and_wrong_passwords_elsewhere_count() {
    let server = Server::start();
    let token = server.register("careful");
    for _ in 0..4 {
        login(&server, "careful", "wrong password");
    }
    assert_eq!(login(&server, "careful", PASSWORD).status, 201);
    for _ in 0..4 {
        login(&server, "careful", "wrong password");
    }
    assert_eq!(login(&server, "careful", PASSWORD).status, 201, "the success reset the count");
    let body = json!({"password": "wrong password", "new_password": "new password 1"}).to_string();
    for _ in 0..5 {
        assert_eq!(server.call("PUT", "/v1/account/password", Some(&token), &[], body.as_bytes()).status, 403);
    }
    assert_eq!(server.call("PUT", "/v1/account/password", Some(&token), &[], body.as_bytes()).status, 429);
    assert_eq!(login(&server, "careful", PASSWORD).status, 429);
}

#[test]
fn twenty_failures_lock_out_an_address_behind_a_trusted_proxy() {
    let server = Server::start_with(Options::default().env("TRUST_PROXY", "1"));
    server.register("someone");
    let attempt = |id: &str, forwarded: &str| {
        let body = json!({"id": id, "password": "wrong password"}).to_string();
        server.call("POST", "/v1/sessions", None, &[("X-Forwarded-For", forwarded)], body.as_bytes())
    };
    for i in 0..20 {
        assert_eq!(attempt(&format!("user{i}"), "203.0.113.9, 198.51.100.7").status, 401);
    }
    let locked = attempt("someone", "203.0.113.9, 198.51.100.7");
    assert_eq!(locked.status, 429);
    assert!(locked.header("Retry-After").is_some());
    assert_eq!(attempt("someone", "198.51.100.7, 203.0.113.10").status, 401, "another address is not locked");
}

#[test]
fn old_hashes_verify_and_are_upgraded_at_login() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let mut server = Server::start_in(&root, Options::default());
    server.register("veteran");
    server.kill();
    let server = Server::start_in(&root, Options::default().env("PBKDF2_ITERATIONS", "2000"));
    let stored =
        || -> String { database(&root).query_row("SELECT password FROM sync_account", [], |row| row.get(0)).unwrap() };
    assert!(stored().starts_with("$pbkdf2-sha256$i=1000,"));
    assert_eq!(login(&server, "veteran", "wrong password").status, 401);
    assert!(stored().starts_with("$pbkdf2-sha256$i=1000,"), "no upgrade on failure");
    assert_eq!(login(&server, "veteran", PASSWORD).status, 201);
    assert!(stored().starts_with("$pbkdf2-sha256$i=2000,"), "{}", stored());
    assert_eq!(login(&server, "veteran", PASSWORD).status, 201);
}
