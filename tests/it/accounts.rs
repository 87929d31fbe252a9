//! Accounts and sessions.

use crate::support::{Options, PASSWORD, Server, cli_input, files_below};
use serde_json::json;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn register_login_logout() {
    let server = Server::start();
    let reg = server.post_json("/v1/accounts", None, &json!({"id": " Alice@Example.org ", "password": PASSWORD}));
    assert_eq!(reg.status, 201);
    assert_eq!(reg.header("Cache-Control"), Some("no-store"));
    let body = reg.json();
    let salt = body["key_salt"].as_str().unwrap();
    assert_eq!(salt.len(), 64);
    assert!(salt.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(body["expires"].as_i64().unwrap() > 0);
    let first = body["token"].as_str().unwrap().to_owned();

    let again = server.post_json("/v1/accounts", None, &json!({"id": "alice@example.ORG", "password": PASSWORD}));
    assert_eq!((again.status, again.error().as_str()), (409, "account_exists"));

    let login = server.post_json("/v1/sessions", None, &json!({"id": "ALICE@example.org", "password": PASSWORD}));
    assert_eq!(login.status, 201);
    assert_eq!(login.json()["key_salt"], salt);
    let second = login.json()["token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);

    let account = server.get("/v1/account", Some(&first));
    assert_eq!(account.status, 200);
    let account = account.json();
    assert_eq!(account["key_salt"], salt);
    assert_eq!(account["store_count"], 0);
    assert_eq!(account["bytes_used"], 0);
    assert_eq!(account["quota_bytes"], serde_json::Value::Null);
    assert_eq!(account["account"].as_str().unwrap().len(), 64);

    assert_eq!(server.call("DELETE", "/v1/sessions/current", Some(&first), &[], b"").status, 204);
    let gone = server.get("/v1/account", Some(&first));
    assert_eq!((gone.status, gone.error().as_str()), (401, "unauthorized"));
    assert_eq!(gone.header("WWW-Authenticate"), Some("Bearer"));
    assert_eq!(server.get("/v1/account", Some(&second)).status, 200);

    let third = server
        .post_json("/v1/sessions", None, &json!({"id": "alice@example.org", "password": PASSWORD}))
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(server.call("DELETE", "/v1/sessions", Some(&second), &[], b"").status, 204);
    assert_eq!(server.get("/v1/account", Some(&second)).status, 401);
    assert_eq!(server.get("/v1/account", Some(&third)).status, 401);
}

#[test]
fn bad_tokens_are_401() {
    let server = Server::start();
    for header in ["", "Bearer", "Bearer ", "Basic abc", "Bearer nonsense", &format!("Bearer {}", "a".repeat(500))] {
        let resp = server.call("GET", "/v1/account", None, &[("Authorization", header)], b"");
        assert_eq!((resp.status, resp.error().as_str()), (401, "unauthorized"), "{header:?}");
    }
    assert_eq!(server.get("/v1/stores", None).status, 401);
}

#[test]
fn invalid_bodies_are_400() {
    let server = Server::start();
    for body in [
        "",
        "not json",
        "[]",
        "{}",
        r#"{"id":"a"}"#,
        r#"{"id":5,"password":"password123"}"#,
        r#"{"id":"a","password":12345678}"#,
        r#"{"id":"   ","password":"password123"}"#,
        r#"{"id":"a\u0007b","password":"password123"}"#,
        r#"{"id":"a","password":"short"}"#,
        &format!(r#"{{"id":"{}","password":"password123"}}"#, "x".repeat(257)),
        &format!(r#"{{"id":"a","password":"{}"}}"#, "x".repeat(1025)),
        &format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
    ] {
        for path in ["/v1/accounts", "/v1/sessions"] {
            let resp = server.call("POST", path, None, &[], body.as_bytes());
            assert_eq!((resp.status, resp.error().as_str()), (400, "bad_request"), "{path} {body:.60}");
        }
    }
    let big = format!(r#"{{"id":"a","password":"{}"}}"#, "x".repeat(70_000));
    assert_eq!(server.call("POST", "/v1/accounts", None, &[], big.as_bytes()).status, 413);
}

#[test]
fn unknown_id_and_wrong_password_answer_identically() {
    let server = Server::start();
    server.register("known");
    let wrong = server.post_json("/v1/sessions", None, &json!({"id": "known", "password": "wrong password"}));
    let unknown = server.post_json("/v1/sessions", None, &json!({"id": "unknown", "password": "wrong password"}));
    assert_eq!((wrong.status, wrong.error().as_str()), (401, "invalid_credentials"));
    assert_eq!(wrong.raw_without_date(), unknown.raw_without_date(), "byte-identical answers (but the time)");
}

#[test]
fn the_plain_id_is_stored_nowhere() {
    let server = Server::start();
    let token = server.register("Distinctive.Name@Example.org");
    server.put("k", &token, &[], b"data");
    drop(server.get("/v1/account", Some(&token)));
    let needles = ["distinctive.name@example.org", "Distinctive.Name@Example.org", "Distinctive"];
    for file in files_below(&server.root) {
        let bytes = std::fs::read(&file).unwrap();
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} found in {}",
                file.display()
            );
        }
    }
}

#[test]
fn closed_registration_and_the_cli() {
    let server = Server::start_with(Options::default().env("REGISTRATION", "closed"));
    let resp = server.post_json("/v1/accounts", None, &json!({"id": "someone", "password": PASSWORD}));
    assert_eq!((resp.status, resp.error().as_str()), (403, "forbidden"));

    let add = |id: &str, stdin: &str| cli_input(&server.root, &["account", "add", id], &[], stdin);
    // The CLI works on the same STATIC_ROOT while the server runs.
    assert_eq!(add("Operator", &format!("{PASSWORD}\nignored second line\n")).0, 0);
    let again = add("operator", &format!("{PASSWORD}\n"));
    assert_eq!(again.0, 1);
    assert!(again.2.contains("exists"), "{}", again.2);
    assert_eq!(add("short", "abc\n").0, 1);

    let login = server.post_json("/v1/sessions", None, &json!({"id": "operator", "password": PASSWORD}));
    assert_eq!(login.status, 201, "{}", login.text());
}

#[test]
fn a_slow_login_does_not_stall_other_requests() {
    // 200,000 iterations: slow enough to watch natively, and under the
    // emulation of scripts/test-arm.sh still inside the client's 30 s.
    let server = Server::start_with(Options::default().env("PBKDF2_ITERATIONS", "200000"));
    let addr = server.addr;
    let started = Instant::now();
    let login = thread::spawn(move || {
        let mut conn = crate::support::Conn::open(addr);
        let body = json!({"id": "nobody", "password": PASSWORD}).to_string();
        conn.request("POST", "/v1/sessions", None, &[], body.as_bytes())
    });
    thread::sleep(Duration::from_millis(20));
    let mut worst = Duration::ZERO;
    while !login.is_finished() {
        let t = Instant::now();
        assert_eq!(server.get("/v1/health", None).status, 200);
        worst = worst.max(t.elapsed());
        thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    assert_eq!(login.join().unwrap().status, 401);
    assert!(worst < Duration::from_millis(500), "health took {worst:?} during a {took:?} login");
}

#[test]
fn the_kdf_salt_is_per_id_stable_and_says_nothing_about_registration() {
    let server = Server::start();
    server.register("salted@example.org");
    let salt = |id: &str| {
        let resp = server.get(&format!("/v1/accounts/{id}/salt"), None);
        assert_eq!(resp.status, 200, "{id}");
        assert_eq!(resp.header("Access-Control-Allow-Origin"), Some("*"));
        let salt = resp.json()["salt"].as_str().unwrap().to_owned();
        assert_eq!(salt.len(), 64);
        assert!(salt.bytes().all(|b| b.is_ascii_hexdigit()));
        salt
    };
    let known = salt("salted@example.org");
    assert_eq!(salt("%20Salted@EXAMPLE.org"), known, "the id is normalised as at sign-in");
    let unknown = salt("nobody@example.org");
    assert_ne!(unknown, known);
    assert_eq!(salt("nobody@example.org"), unknown, "an unknown id has a stable salt too");
    let account = server.get("/v1/account", Some(&server.register("other@example.org"))).json();
    assert_ne!(salt("other@example.org"), account["account"].as_str().unwrap());
    assert_ne!(salt("other@example.org"), account["key_salt"].as_str().unwrap());
    assert_eq!(server.get("/v1/accounts/%01/salt", None).status, 400);
    assert_eq!(server.call("POST", "/v1/accounts/x/salt", None, &[], b"").status, 405);
}

#[test]
fn a_session_used_past_half_its_lifetime_is_extended_after_the_answer() {
    let mut server = Server::start();
    let token = server.register("slider");
    let root = server.root.clone();
    server.kill();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let day = 86_400_000;
    crate::support::database(&root).execute("UPDATE sync_session SET expiration = ?1", [now + day]).unwrap();
    let server = Server::start_in(&root, crate::support::Options::default());
    assert_eq!(server.get("/v1/account", Some(&token)).status, 200);
    assert_eq!(server.get("/v1/stores", Some(&token)).status, 200);
    let expiration: i64 =
        crate::support::database(&root).query_row("SELECT expiration FROM sync_session", [], |row| row.get(0)).unwrap();
    assert!(expiration > now + 29 * day, "extended to the full 30 days: {}", (expiration - now) / day);
}
