//! Invitations (`REGISTRATION=invite`, `sync-node invite`) and
//! `sync-node account list` (SPEC §3, §8).

use crate::support::{Options, PASSWORD, Server, cli, database};
use serde_json::json;
use std::thread;

fn invite(server: &Server, args: &[&str]) -> String {
    let (code, out, err) = cli(&server.root, &[&["invite"], args].concat(), &[("REGISTRATION", "invite")]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "the code alone on one line: {out:?}");
    lines[0].to_owned()
}

fn register(server: &Server, id: &str, invite: Option<&str>) -> (u16, String) {
    let mut body = json!({"id": id, "password": PASSWORD});
    if let Some(code) = invite {
        body["invite"] = json!(code);
    }
    let resp = server.post_json("/v1/accounts", None, &body);
    (resp.status, if resp.status == 201 { String::new() } else { resp.error() })
}

#[test]
fn registration_needs_a_usable_invitation() {
    let server = Server::start_with(Options::default().env("REGISTRATION", "invite"));
    assert_eq!(server.get("/v1/info", None).json()["registration"], "invite");
    let single = invite(&server, &[]);
    assert_eq!(register(&server, "no-code", None), (403, "forbidden".into()));
    assert_eq!(register(&server, "bad-code", Some("not-a-code")), (403, "forbidden".into()));
    assert_eq!(register(&server, "first", Some(&single)).0, 201);
    assert_eq!(register(&server, "second", Some(&single)), (403, "forbidden".into()), "single use");
    // A used-up code says nothing about which ids exist.
    assert_eq!(register(&server, "first", Some(&single)), (403, "forbidden".into()));

    let three = invite(&server, &["--uses", "3", "--days", "1"]);
    for id in ["a", "b", "c"] {
        assert_eq!(register(&server, id, Some(&three)).0, 201);
    }
    assert_eq!(register(&server, "d", Some(&three)).0, 403);
    assert_eq!(register(&server, "a", Some(&invite(&server, &[]))), (409, "account_exists".into()));

    // An expired code is refused (aged in the database).
    let late = invite(&server, &["--days", "2"]);
    database(&server.root).execute("UPDATE sync_invite SET expires = 1 WHERE expires > 0 AND uses_left = 1 AND created = (SELECT max(created) FROM sync_invite)", []).unwrap();
    assert_eq!(register(&server, "late", Some(&late)), (403, "forbidden".into()));

    // Only hashes are stored.
    let stored: Vec<String> = database(&server.root)
        .prepare("SELECT code FROM sync_invite")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!stored.iter().any(|hash| hash == &single || hash == &three || hash == &late));
}

#[test]
fn racing_registrations_spend_a_single_use_code_once() {
    let server = Server::start_with(Options::default().env("REGISTRATION", "invite"));
    let code = invite(&server, &[]);
    let statuses: Vec<u16> = thread::scope(|scope| {
        let racers: Vec<_> = (0..8)
            .map(|i| {
                scope.spawn({
                    let (server, code) = (&server, &code);
                    move || register(server, &format!("racer-{i}"), Some(code)).0
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 403), "{statuses:?}");
}

#[test]
fn invite_options_are_checked() {
    let server = Server::start();
    for args in [&["--uses"][..], &["--uses", "0"], &["--days", "x"], &["--forever"], &["--days", "4000"]] {
        let (code, out, err) = cli(&server.root, &[&["invite"], args].concat(), &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty());
    }
    // Outside invite mode the code is made, with a note saying it is not asked for.
    let (code, out, err) = cli(&server.root, &["invite"], &[]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1);
    assert!(err.contains("REGISTRATION=invite"), "{err}");
    assert_eq!(register(&server, "open", None).0, 201, "open registration needs no code");
}

#[test]
fn account_list_shows_usage_sessions_and_lockouts_without_ids() {
    let server = Server::start();
    let token = server.register("lister@example.org");
    server.call("PUT", "/v1/stores/listed", Some(&token), &[], b"12345");
    server.call("POST", "/v1/stores/listed/log", Some(&token), &[], b"678");
    server.register("idle@example.org");
    // Five wrong passwords lock the second account out.
    for _ in 0..5 {
        let resp =
            server.post_json("/v1/sessions", None, &json!({"id": "idle@example.org", "password": "wrong password"}));
        assert_eq!(resp.status, 401);
    }
    assert_eq!(
        server.post_json("/v1/sessions", None, &json!({"id": "idle@example.org", "password": PASSWORD})).status,
        429
    );
    let (code, out, err) = cli(&server.root, &["account", "list"], &[]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(!out.contains("lister") && !out.contains("idle@"), "no ids: {out}");
    let field = |line: &str, name: &str| {
        line.split(' ')
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {line}"))
            .to_owned()
    };
    let (first, second) = (lines[0], lines[1]);
    assert_eq!(field(first, "account").len(), 64);
    assert!(field(first, "created").ends_with('Z') && field(first, "created").contains('T'));
    assert_eq!(
        (field(first, "stores"), field(first, "bytes"), field(first, "sessions")),
        ("1".into(), "8".into(), "1".into())
    );
    assert_eq!(field(first, "locked"), "no");
    assert_eq!((field(second, "stores"), field(second, "sessions")), ("0".into(), "1".into()));
    assert!(field(second, "locked").ends_with('Z'), "locked until a time: {second}");
    // Lockouts live in the server's memory: after a restart there are none.
    let mut server = server;
    let root = server.root.clone();
    assert_eq!(server.stop_with("TERM").0, Some(0));
    let restarted = Server::start_in(&root, Options::default());
    let (_, out, _) = cli(&restarted.root, &["account", "list"], &[]);
    assert!(out.lines().all(|l| l.ends_with("locked=no")), "{out}");
    let lockout = format!("WARN account-lockout account={} seconds=900", field(second, "account"));
    let log = server.log_when(|log| log.contains(&lockout));
    assert!(log.contains(&lockout), "{log}");
}
