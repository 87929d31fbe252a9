//! Store reads answered by the work threads without the loop: each
//! must give exactly what the loop would give at that instant. A write, a
//! revocation, a sign-out, an append or a command-line tool's commit ends
//! them at once. `cached_reads` (a `test-hooks` count) shows which answers
//! came from there, so these tests cannot pass with the cache unused.

use crate::support::{Resp, Server, cli, request_bytes, store_files};
use serde_json::json;

fn answered_without_the_loop(server: &Server) -> u64 {
    server.get("/v1/test-hooks/held", None).json()["cached_reads"].as_u64().unwrap()
}

/// `GET` of `key`, and whether the work threads answered it.
fn read(server: &Server, key: &str, token: &str, headers: &[(&str, &str)]) -> (Resp, bool) {
    let before = answered_without_the_loop(server);
    let resp = server.call("GET", &format!("/v1/stores/{key}"), Some(token), headers, b"");
    (resp, answered_without_the_loop(server) > before)
}

/// Reads answered without the loop so far: in all, and on the room
/// thread.
fn answered_so_far(server: &Server) -> (u64, u64) {
    let held = server.get("/v1/test-hooks/held", None).json();
    (held["cached_reads"].as_u64().unwrap(), held["cached_reads_in_room"].as_u64().unwrap())
}

fn grant(server: &Server, token: &str, key: &str, account: &str, permission: serde_json::Value) -> u16 {
    let body = json!({"account": account, "permission": permission}).to_string();
    server.call("PUT", &format!("/v1/stores/{key}/permissions"), Some(token), &[], body.as_bytes()).status
}

#[test]
fn a_repeated_read_is_answered_without_the_loop_exactly_as_the_loop_answered_it() {
    let server = Server::start();
    let token = server.register("reader");
    let etag = server.put("doc", &token, &[("Sync-Meta", "m1")], b"version one").etag();

    let (first, cached) = read(&server, "doc", &token, &[]);
    assert!(!cached, "the first read is the loop's");
    let (second, cached) = read(&server, "doc", &token, &[]);
    assert!(cached, "the same read again is not");
    assert_eq!(first.raw_without_date(), second.raw_without_date());
    assert_eq!(second.body, b"version one");

    // Its 304 too, and HEAD.
    let (not_modified, cached) = read(&server, "doc", &token, &[("If-None-Match", &etag)]);
    assert_eq!((not_modified.status, cached), (304, true));
    let before = answered_without_the_loop(&server);
    let head = server.call("HEAD", "/v1/stores/doc", Some(&token), &[], b"");
    assert_eq!((head.status, head.header("Content-Length")), (200, Some("11")));
    assert!(head.body.is_empty());
    assert_eq!(answered_without_the_loop(&server), before + 1);

    // What it cannot answer as the loop would goes to the loop.
    let (malformed, cached) = read(&server, "doc", &token, &[("If-None-Match", "not a tag")]);
    assert_eq!((malformed.status, cached), (400, false));
    let (unknown, cached) = read(&server, "doc", "a-token-nobody-has", &[]);
    assert_eq!((unknown.status, cached), (401, false));
}

#[test]
fn a_write_is_seen_by_the_next_read_of_every_reader() {
    let server = Server::start();
    let owner = server.register("owner");
    let friend = server.register("friend");
    let etag = server.put("shared", &owner, &[], b"v1").etag();
    assert_eq!(grant(&server, &owner, "shared", "friend", json!("READ")), 204);
    read(&server, "shared", &friend, &[]);
    assert!(read(&server, "shared", &friend, &[("If-None-Match", &etag)]).1);

    let written = server.put("shared", &owner, &[("If-Match", &etag), ("Sync-Meta", "new")], b"v2");
    assert_eq!(written.status, 200);
    let (after, cached) = read(&server, "shared", &friend, &[("If-None-Match", &etag)]);
    assert_eq!((after.status, after.body.as_slice(), cached), (200, &b"v2"[..], false));
    assert_eq!(after.header("Sync-Meta"), Some("new"));
    assert_eq!(after.etag(), written.etag());

    // An append changes no ETag, but the 304 carries the log's new head.
    let (_, cached) = read(&server, "shared", &owner, &[("If-None-Match", &written.etag())]);
    let (again, cached_again) = read(&server, "shared", &owner, &[("If-None-Match", &written.etag())]);
    assert_eq!((again.status, again.header("Sync-Log-Head"), cached, cached_again), (304, None, false, true));
    assert_eq!(server.call("POST", "/v1/stores/shared/log", Some(&owner), &[], b"entry").status, 201);
    let (appended, cached) = read(&server, "shared", &owner, &[("If-None-Match", &written.etag())]);
    assert_eq!((appended.status, appended.header("Sync-Log-Head"), cached), (304, Some("1"), false));
}

#[test]
fn revocation_sign_out_and_deletion_take_effect_at_once() {
    let server = Server::start();
    let owner = server.register("owner");
    let friend = server.register("friend");
    server.put("shared", &owner, &[], b"secret").etag();
    assert_eq!(grant(&server, &owner, "shared", "friend", json!("READ")), 204);
    let warm = |token: &str| {
        read(&server, "shared", token, &[]);
        assert!(read(&server, "shared", token, &[]).1, "warmed");
    };

    warm(&friend);
    assert_eq!(grant(&server, &owner, "shared", "friend", json!(null)), 204);
    assert_eq!(read(&server, "shared", &friend, &[]).0.status, 404, "a revoked reader reads nothing");

    warm(&owner);
    assert_eq!(server.call("DELETE", "/v1/sessions/current", Some(&owner), &[], b"").status, 204);
    assert_eq!(read(&server, "shared", &owner, &[]).0.status, 401, "a signed-out session reads nothing");
}

#[test]
fn a_command_line_tools_commit_ends_them_too() {
    let server = Server::start();
    let token = server.register("leaving");
    server.put("doc", &token, &[], b"data");
    read(&server, "doc", &token, &[]);
    assert!(read(&server, "doc", &token, &[]).1);

    let (code, _, err) = cli(&server.root, &["account", "delete", "leaving"], &[]);
    assert_eq!(code, 0, "{err}");
    let (after, cached) = read(&server, "doc", &token, &[]);
    assert_eq!((after.status, cached), (401, false), "the deleted account's session is gone at once");
}

#[test]
fn any_other_connections_commit_ends_them_even_when_the_loop_writes_nothing_after_it() {
    // A 304 needs no open file, and deleting a session row leaves the loop
    // nothing to do: only the commit itself can end the cached answer.
    let server = Server::start();
    let token = server.register("reader");
    let etag = server.put("doc", &token, &[], b"data").etag();
    let current = [("If-None-Match", etag.as_str())];
    read(&server, "doc", &token, &current);
    assert!(read(&server, "doc", &token, &current).1);

    crate::support::database(&server.root).execute("DELETE FROM sync_session", []).unwrap();
    let (after, cached) = read(&server, "doc", &token, &current);
    assert_eq!((after.status, cached), (401, false));
}

#[test]
fn a_reset_request_does_the_same_to_them_whether_or_not_the_account_exists() {
    // Found by review: only a request for an existing account was followed
    // by a write, which empties the cache, so the caller's next reads told
    // whether an id is an account.
    let server = Server::start_with(crate::support::Options::default().env("RESET_HOOK", "/bin/true"));
    server.register("victim");
    let attacker = server.register("attacker");
    let keys: Vec<String> = (0..20).map(|n| format!("k{n}")).collect();
    for key in &keys {
        assert_eq!(server.put(key, &attacker, &[], b"x").status, 201);
    }
    let cached_after_reset_request = |id: &str| -> u64 {
        for key in &keys {
            read(&server, key, &attacker, &[]);
        }
        let resp = server.post_json("/v1/password-reset", None, &json!({"id": id}));
        assert_eq!(resp.status, 202, "{}", resp.text());
        let before = answered_without_the_loop(&server);
        for key in &keys {
            assert_eq!(server.call("GET", &format!("/v1/stores/{key}"), Some(&attacker), &[], b"").status, 200);
        }
        answered_without_the_loop(&server) - before
    };
    assert_eq!(cached_after_reset_request("nobody-by-that-name"), cached_after_reset_request("victim"));
}

/// The room thread's `read_bytes`: what it made the disk read.
fn room_thread_disk_reads(server: &Server) -> u64 {
    for task in std::fs::read_dir(format!("/proc/{}/task", server.pid())).unwrap().map_while(Result::ok) {
        if std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim() == "room" {
            let io = std::fs::read_to_string(task.path().join("io")).unwrap();
            let line = io.lines().find(|line| line.starts_with("read_bytes:")).unwrap();
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
    panic!("no room thread");
}

/// The room thread answers a cached read itself from a copy of its body
/// that a work thread kept, and never touches a store file: not to read it (not
/// even to start reading ahead), not to update its access time. A work
/// thread answers one that came pipelined behind another. All alike.
#[test]
fn the_room_thread_and_a_work_thread_answer_a_cached_read_alike() {
    let server = Server::start();
    let token = server.register("reader");
    let body = vec![7u8; 60 * 1024];
    server.put("doc", &token, &[], &body);
    let loops = read(&server, "doc", &token, &[]).0;
    assert_eq!(loops.body, body);

    // HEAD needs no body: the room thread's at once.
    let before = answered_so_far(&server);
    let head = server.call("HEAD", "/v1/stores/doc", Some(&token), &[], b"");
    assert_eq!((head.status, head.header("Content-Length")), (200, Some("61440")));
    assert_eq!(answered_so_far(&server), (before.0 + 1, before.1 + 1), "HEAD on the room thread");
    // The first GET reads the file on a work thread and keeps the body.
    let before = answered_so_far(&server);
    let at_work = read(&server, "doc", &token, &[]).0;
    assert_eq!(answered_so_far(&server), (before.0 + 1, before.1), "answered at work");
    assert_eq!(at_work.raw_without_date(), loops.raw_without_date());

    // Then the room thread, from the copy, with the store file out of the
    // page cache, and it and the commit mark's file (`-shm`, read for every
    // answer) last read days ago: relatime would update them on a read.
    let [file] = &store_files(&server.root)[..] else { panic!("one store file") };
    rustix::fs::fadvise(std::fs::File::open(file).unwrap(), 0, None, rustix::fs::Advice::DontNeed).unwrap();
    let shm = server.root.join("sync-node.db-shm");
    for aged in [file, &shm] {
        assert!(
            std::process::Command::new("touch").args(["-a", "-d", "3 days ago"]).arg(aged).status().unwrap().success()
        );
    }
    let accessed = || [file, &shm].map(|path| std::fs::metadata(path).unwrap().accessed().unwrap());
    let (before, disk_reads, last_read) = (answered_so_far(&server), room_thread_disk_reads(&server), accessed());
    let in_room = read(&server, "doc", &token, &[]).0;
    assert_eq!(answered_so_far(&server), (before.0 + 1, before.1 + 1), "answered on the room thread");
    assert_eq!(in_room.raw_without_date(), loops.raw_without_date());
    assert_eq!(room_thread_disk_reads(&server), disk_reads, "the room thread read from the disk");
    assert_eq!(accessed(), last_read, "the room thread updated an access time (a journal write)");

    // Two in one write: the second waits for the first, then a work thread takes it.
    let before = answered_so_far(&server);
    let mut conn = server.connect();
    let one = request_bytes("GET", "/v1/stores/doc", Some(&token), &[], b"");
    conn.send(&[one.clone(), one].concat());
    let (first, second) = (conn.read_response(false), conn.read_response(false));
    assert_eq!(answered_so_far(&server), (before.0 + 2, before.1 + 1), "one in the room, one at work");
    assert_eq!(first.raw_without_date(), loops.raw_without_date());
    assert_eq!(second.raw_without_date(), loops.raw_without_date());
}

/// A `HEAD` the room thread answers from the length alone is the loop's,
/// for a store with a body and an empty one.
#[test]
fn a_head_answered_from_the_length_alone_is_the_loops() {
    let server = Server::start();
    let token = server.register("reader");
    for (key, body) in [("doc", &b"some bytes"[..]), ("empty", &b""[..])] {
        server.put(key, &token, &[("Sync-Meta", "m")], body);
        let before = answered_so_far(&server);
        let loops = server.call("HEAD", &format!("/v1/stores/{key}"), Some(&token), &[], b"");
        assert_eq!(answered_so_far(&server), before, "the first HEAD is the loop's");
        let in_room = server.call("HEAD", &format!("/v1/stores/{key}"), Some(&token), &[], b"");
        assert_eq!(answered_so_far(&server), (before.0 + 1, before.1 + 1), "the second is the room's");
        assert_eq!(in_room.raw_without_date(), loops.raw_without_date(), "{key}");
        let got = server.call("GET", &format!("/v1/stores/{key}"), Some(&token), &[], b"");
        assert_eq!(got.header("Content-Length"), in_room.header("Content-Length"));
    }
}
