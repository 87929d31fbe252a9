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

/// The words the shipped fail2ban filter bans on, read from it.
fn banned_words() -> Vec<String> {
    let filter =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/fail2ban/sync-node-filter.conf"))
            .unwrap();
    let regex = filter.lines().find_map(|l| l.strip_prefix("failregex = ")).expect("a failregex");
    let words = regex.split("WARN (?:").nth(1).and_then(|rest| rest.split(')').next()).expect("WARN (?:…)");
    words.split('|').map(str::to_owned).collect()
}

/// What that filter matches in a line: the address (`scripts/test-fail2ban.sh`
/// checks the filter itself with fail2ban-regex).
fn banned_address<'a>(line: &'a str, words: &[String]) -> Option<&'a str> {
    let rest = line.split_once(" WARN ")?.1;
    let (word, rest) = rest.split_once(' ')?;
    words.iter().any(|w| w == word).then_some(())?;
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
    crate::support::send_raw(&server, b"GET /v1/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n");
    // A line is written after its answer is sent, so they may come in any
    // order: wait for all six (the registration's included).
    let log = server.log_when(|log| log.matches(" INFO access ").count() >= 6);
    assert!(log.lines().all(well_formed), "{log}");
    let access: Vec<&str> = log.lines().filter(|l| l.contains(" INFO access ")).collect();
    assert!(access.iter().any(|l| l.contains("access 127.0.0.1 PUT /v1/stores/{key} 201 ")), "{log}");
    let get = access.iter().find(|l| l.contains(" GET /v1/stores/{key} 200 ")).expect("the GET");
    let fields: Vec<&str> = get.split(' ').collect();
    assert_eq!(fields[fields.len() - 2], "5", "body bytes: {get}");
    assert!(fields[fields.len() - 1].ends_with("us"), "microseconds: {get}");
    assert!(access.iter().any(|l| l.contains(" HEAD /v1/stores/{key} 200 0 ")), "HEAD sends no body: {log}");
    assert!(access.iter().any(|l| l.contains(" GET (no route) 404 ")), "{log}");
    assert!(access.iter().any(|l| l.contains(" - (malformed) 400 ")), "a rejected head: {log}");
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
fn per_address_limits_get_a_line_fail2ban_can_match_and_account_lines_do_not() {
    let server = Server::start();
    server.register("target@example.org");
    for _ in 0..5 {
        server.post_json("/v1/sessions", None, &json!({"id": "target@example.org", "password": "guess guess guess"}));
    }
    // Fifteen more failures (unknown ids, four at most each) make twenty from this address.
    for i in 0..15 {
        let resp = server.post_json(
            "/v1/sessions",
            None,
            &json!({"id": format!("nobody-{}", i / 4), "password": "guess guess guess"}),
        );
        assert_eq!(resp.status, 401, "attempt {i}");
    }
    // Nine more registrations from this address make ten in the hour.
    for i in 0..9 {
        server.register(&format!("filler-{i}@example.org"));
    }
    let refused = server.post_json("/v1/accounts", None, &json!({"id": "one-too-many", "password": PASSWORD}));
    assert_eq!(refused.status, 429);
    let log = server.log_when(|log| log.contains("registration-limit"));
    let words = banned_words();
    let flagged: Vec<&str> = log.lines().filter_map(|line| banned_address(line, &words)).collect();
    assert_eq!(flagged, ["127.0.0.1", "127.0.0.1"], "the address lockout and the registration limit: {log}");
    assert!(log.contains("WARN address-lockout address=127.0.0.1 seconds=900"), "{log}");
    assert!(log.contains("WARN registration-limit address=127.0.0.1"), "{log}");
    assert!(log.contains("WARN account-lockout account="), "the account lockout is logged, not banned on: {log}");
    for secret in ["target@example.org", "guess guess guess", "one-too-many"] {
        assert!(!log.contains(secret), "{log}");
    }
}

#[test]
fn behind_a_proxy_lines_name_the_forwarded_address() {
    let server = Server::start_with(Options::default().env("TRUST_PROXY", "1").env("ACCESS_LOG", "1"));
    server.call("GET", "/v1/health", None, &[("X-Forwarded-For", "198.51.100.7")], b"");
    let log = server.log_when(|log| log.contains(" INFO access "));
    assert!(log.contains("access 198.51.100.7 GET /v1/health 200"), "{log}");
}
