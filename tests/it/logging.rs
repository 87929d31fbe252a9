//! The server's log: timestamped, levelled lines; the access log; the lines
//! fail2ban acts on; and nothing secret in any of them.

use crate::support::{Options, PASSWORD, Server};
use serde_json::json;

/// `<RFC 3339 time> <LEVEL> …`
fn well_formed(line: &str) -> bool {
    let mut parts = line.splitn(3, ' ');
    let (time, level) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    time.len() == 24 && time.as_bytes()[10] == b'T' && time.ends_with('Z') && ["INFO", "WARN", "ERROR"].contains(&level)
}

/// What the fail2ban filter in docs/operations.md matches: the address.
fn banned_address(line: &str) -> Option<&str> {
    let rest = line.split_once(" WARN ")?.1;
    let (word, rest) = rest.split_once(' ')?;
    ["lockout", "registration-limit", "reset-limit", "reset-dropped"].contains(&word).then_some(())?;
    rest.strip_prefix("address=")?.split(' ').next()
}

#[test]
fn access_log_lines_name_the_route_never_the_key_or_token() {
    let server = Server::start_with(Options::default().env("ACCESS_LOG", "1"));
    let token = server.register("logged@example.org");
    server.call("PUT", "/v1/stores/very-secret-key", Some(&token), &[], b"hello");
    server.call("GET", "/v1/stores/very-secret-key?x=1", Some(&token), &[], b"");
    server.call("HEAD", "/v1/stores/very-secret-key", Some(&token), &[], b"");
    server.get("/v1/no-such-route", None);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = server.log();
    assert!(log.lines().all(well_formed), "{log}");
    let access: Vec<&str> = log.lines().filter(|l| l.contains(" INFO access ")).collect();
    assert!(access.iter().any(|l| l.contains("access 127.0.0.1 PUT /v1/stores/{key} 201 ")), "{log}");
    let get = access.iter().find(|l| l.contains(" GET /v1/stores/{key} 200 ")).expect("the GET");
    let fields: Vec<&str> = get.split(' ').collect();
    assert_eq!(fields[fields.len() - 2], "5", "body bytes: {get}");
    assert!(fields[fields.len() - 1].ends_with("us"), "microseconds: {get}");
    assert!(access.iter().any(|l| l.contains(" HEAD /v1/stores/{key} 200 0 ")), "HEAD sends no body: {log}");
    assert!(access.iter().any(|l| l.contains(" GET (no route) 404 ")), "{log}");
    for secret in ["very-secret-key", token.as_str(), "logged@example.org", PASSWORD, "x=1"] {
        assert!(!log.contains(secret), "the log shows {secret}: {log}");
    }
}

#[test]
fn no_access_log_unless_asked() {
    let server = Server::start();
    server.get("/v1/health", None);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!server.log().contains(" access "), "{}", server.log());
}

#[test]
fn lockouts_and_registration_limits_get_a_line_fail2ban_can_match() {
    let server = Server::start();
    server.register("target@example.org");
    for _ in 0..5 {
        server.post_json("/v1/sessions", None, &json!({"id": "target@example.org", "password": "guess guess guess"}));
    }
    // Nine more registrations from this address make ten in the hour.
    for i in 0..9 {
        server.register(&format!("filler-{i}@example.org"));
    }
    let refused = server.post_json("/v1/accounts", None, &json!({"id": "one-too-many", "password": PASSWORD}));
    assert_eq!(refused.status, 429);
    let log = server.log();
    let flagged: Vec<&str> = log.lines().filter_map(banned_address).collect();
    assert!(flagged.len() >= 2, "a lockout and a registration limit: {log}");
    assert!(flagged.iter().all(|a| *a == "127.0.0.1"), "{log}");
    assert!(log.contains("WARN registration-limit address=127.0.0.1"), "{log}");
    for secret in ["target@example.org", "guess guess guess", "one-too-many"] {
        assert!(!log.contains(secret), "{log}");
    }
}

#[test]
fn behind_a_proxy_lines_name_the_forwarded_address() {
    let server = Server::start_with(Options::default().env("TRUST_PROXY", "1").env("ACCESS_LOG", "1"));
    server.call("GET", "/v1/health", None, &[("X-Forwarded-For", "198.51.100.7")], b"");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(server.log().contains("access 198.51.100.7 GET /v1/health 200"), "{}", server.log());
}
