//! Store logs (SPEC §9): appends, reads, compaction, limits, permissions,
//! and how logs show in listings, the feed, quotas, backups and check.

use crate::support::{Conn, Options, Resp, Server, cli};
use serde_json::{Value, json};
use std::thread;
use std::time::{Duration, Instant};

fn append(server: &Server, key: &str, token: &str, headers: &[(&str, &str)], entry: &[u8]) -> Resp {
    server.call("POST", &format!("/v1/stores/{key}/log"), Some(token), headers, entry)
}

/// The entries of a log answer: (index, bytes).
fn frames(body: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let index = u64::from_be_bytes(rest[..8].try_into().unwrap());
        let len = u32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
        out.push((index, rest[12..12 + len].to_vec()));
        rest = &rest[12 + len..];
    }
    out
}

fn read(server: &Server, key: &str, token: &str, query: &str) -> Resp {
    server.get(&format!("/v1/stores/{key}/log{query}"), Some(token))
}

#[test]
fn appends_take_the_next_index_and_a_new_seq_but_leave_the_body_alone() {
    let server = Server::start();
    let token = server.register("logger");
    let put = server.put("doc", &token, &[], b"snapshot").json();
    assert_eq!(
        (put["log_head"].as_u64(), put["log_base"].as_u64(), put["log_bytes"].as_u64()),
        (Some(0), Some(0), Some(0))
    );
    let before = server.get("/v1/stores/doc", Some(&token));
    assert_eq!(before.header("Sync-Log-Head"), None, "no log headers before the first entry");
    let first = append(&server, "doc", &token, &[], b"update one");
    assert_eq!(first.status, 201, "{}", first.text());
    let first = first.json();
    assert_eq!(
        (first["key"].as_str(), first["index"].as_u64(), first["log_head"].as_u64()),
        (Some("doc"), Some(1), Some(1))
    );
    assert_eq!(first["log_bytes"], 10);
    let second = append(&server, "doc", &token, &[], b"two").json();
    assert_eq!((second["index"].as_u64(), second["log_bytes"].as_u64()), (Some(2), Some(13)));
    assert!(second["seq"].as_i64() > first["seq"].as_i64());

    let after = server.get("/v1/stores/doc", Some(&token));
    assert_eq!((after.etag(), after.body.as_slice()), (before.etag(), &b"snapshot"[..]), "token and body unchanged");
    assert_eq!(after.header("Last-Modified"), before.header("Last-Modified"));
    assert_eq!(after.header("Sync-Seq").unwrap(), second["seq"].to_string(), "the store's seq is the append's");
    assert_eq!((after.header("Sync-Log-Head"), after.header("Sync-Log-Base")), (Some("2"), Some("0")));

    let listed = server.get("/v1/stores", Some(&token)).json();
    let entry = &listed["stores"][0];
    assert_eq!(
        (entry["log_head"].as_u64(), entry["log_base"].as_u64(), entry["log_bytes"].as_u64()),
        (Some(2), Some(0), Some(13))
    );
    let feed = server.get(&format!("/v1/changes?since={}", first["seq"]), Some(&token)).json();
    let change = &feed["changes"][0];
    assert_eq!((change["key"].as_str(), change["log_head"].as_u64()), (Some("doc"), Some(2)));
    assert_eq!(format!("\"{}\"", change["token"].as_str().unwrap()), before.etag(), "same token, higher head");

    let log = read(&server, "doc", &token, "");
    assert_eq!(log.status, 200);
    assert_eq!(log.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(log.header("Cache-Control"), Some("private, no-cache"));
    assert_eq!(
        (log.header("Sync-Log-Head"), log.header("Sync-Log-Base"), log.header("Sync-Log-More")),
        (Some("2"), Some("0"), None)
    );
    assert_eq!(frames(&log.body), vec![(1, b"update one".to_vec()), (2, b"two".to_vec())]);
    assert_eq!(frames(&read(&server, "doc", &token, "?after=1").body), vec![(2, b"two".to_vec())]);
    let paged = read(&server, "doc", &token, "?limit=1");
    assert_eq!((frames(&paged.body).len(), paged.header("Sync-Log-More")), (1, Some("1")));
    assert!(read(&server, "doc", &token, "?after=2").body.is_empty(), "nothing after the head");
    assert_eq!(read(&server, "doc", &token, "?after=3").status, 410, "after the head");
    assert_eq!(read(&server, "doc", &token, "?after=x").status, 400);
    assert_eq!(read(&server, "doc", &token, "?limit=0").status, 400);
    // Whole numbers however large: a limit above max_page is max_page, a
    // cursor above the head is 410.
    assert_eq!(read(&server, "doc", &token, "?limit=18446744073709551616").status, 200);
    assert_eq!(read(&server, "doc", &token, "?after=18446744073709551616").status, 410);
    let head = server.call("HEAD", "/v1/stores/doc/log", Some(&token), &[], b"");
    assert_eq!((head.status, head.header("Sync-Log-Head")), (200, Some("2")));
    // A HEAD (which loads no entry) announces what the GET sends.
    for query in ["", "?limit=1", "?after=1", "?after=2"] {
        let get = read(&server, "doc", &token, query);
        let head = server.call("HEAD", &format!("/v1/stores/doc/log{query}"), Some(&token), &[], b"");
        let length = get.body.len().to_string();
        assert_eq!(head.header("Content-Length"), Some(length.as_str()), "{query}");
        assert_eq!(head.header("Sync-Log-More"), get.header("Sync-Log-More"), "{query}");
    }
}

#[test]
fn if_log_head_sizes_and_permissions() {
    let server = Server::start_with(
        Options::default().env("MAX_ENTRY_BYTES", "100").env("MAX_LOG_BYTES", "800").env("MAX_STORE_BYTES", "1000"),
    );
    let owner = server.register("owner");
    let reader = server.register("reader");
    server.put("doc", &owner, &[], b"x");
    assert_eq!(append(&server, "doc", &owner, &[("If-Log-Head", "0")], b"first").status, 201);
    let stale = append(&server, "doc", &owner, &[("If-Log-Head", "0")], b"again");
    assert_eq!(stale.status, 412);
    assert_eq!(stale.json()["current"]["log_head"], 1);
    assert!(stale.header("ETag").is_some());
    assert_eq!(append(&server, "doc", &owner, &[("If-Log-Head", "1")], b"second").status, 201);
    assert_eq!(append(&server, "doc", &owner, &[("If-Log-Head", "one")], b"x").status, 400);
    assert_eq!(append(&server, "doc", &owner, &[], b"").status, 400, "an entry has at least one byte");
    assert_eq!(append(&server, "doc", &owner, &[], &[7u8; 101]).status, 413, "over MAX_ENTRY_BYTES");
    let mut conn = server.connect();
    conn.send(
        format!("POST /v1/stores/doc/log HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {owner}\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n{}\r\n0\r\n\r\n", "y".repeat(101)).as_bytes(),
    );
    assert_eq!(conn.read_response(false).status, 413, "a chunked entry over the limit");
    for _ in 0..2 {
        assert_eq!(append(&server, "doc", &owner, &[], &[1u8; 100]).status, 201);
    }
    let full = append(&server, "doc", &owner, &[], &[1u8; 100]);
    // 5 + 6 + 100 + 100 bytes and 128 for each entry: 723; one more is 951.
    assert_eq!(full.status, 413, "the log would outgrow MAX_LOG_BYTES");
    assert!(full.json()["message"].as_str().unwrap().contains("compact"), "{}", full.text());

    let share = json!({"account": "reader", "permission": "READ"});
    assert_eq!(
        server.call("PUT", "/v1/stores/doc/permissions", Some(&owner), &[], share.to_string().as_bytes()).status,
        204
    );
    assert_eq!(read(&server, "doc", &reader, "").status, 200, "READ reads the log");
    assert_eq!(append(&server, "doc", &reader, &[], b"no").status, 403, "READ does not append");
    let stranger = server.register("stranger");
    assert_eq!(append(&server, "doc", &stranger, &[], b"no").status, 404);
    assert_eq!(read(&server, "doc", &stranger, "").status, 404);
    assert_eq!(append(&server, "missing", &owner, &[], b"no").status, 404, "the store must exist");
    assert_eq!(append(&server, "doc", "not-a-token", &[], b"no").status, 401);
    let info = server.get("/v1/info", None).json();
    assert_eq!((info["max_entry_bytes"].as_u64(), info["max_log_bytes"].as_u64()), (Some(100), Some(800)));
}

#[test]
fn compaction_drops_what_it_folded_and_keeps_what_came_after() {
    let server = Server::start();
    let token = server.register("compactor");
    let etag = server.put("doc", &token, &[], b"v0").etag();
    for i in 1..=5 {
        assert_eq!(append(&server, "doc", &token, &[], format!("e{i}").as_bytes()).status, 201);
    }
    // Preconditions first: a stale If-Match is 412 whatever N is.
    assert_eq!(server.put("doc", &token, &[("If-Match", "\"stale\""), ("Sync-Log-Base", "99")], b"v1").status, 412);
    assert_eq!(server.put("doc", &token, &[("Sync-Log-Base", "3")], b"v1").status, 428);
    assert_eq!(server.put("doc", &token, &[("If-Match", &etag), ("Sync-Log-Base", "6")], b"v1").status, 400);
    assert_eq!(server.put("doc", &token, &[("If-Match", &etag), ("Sync-Log-Base", "x")], b"v1").status, 400);
    let compacted = server.put("doc", &token, &[("If-Match", &etag), ("Sync-Log-Base", "3")], b"v1 = v0+e1..e3");
    assert_eq!(compacted.status, 200, "{}", compacted.text());
    let body = compacted.json();
    assert_eq!(
        (body["log_head"].as_u64(), body["log_base"].as_u64(), body["log_bytes"].as_u64()),
        (Some(5), Some(3), Some(4))
    );
    let etag = compacted.etag();
    assert_eq!(read(&server, "doc", &token, "?after=2").status, 410, "folded away: re-read the body");
    assert_eq!(frames(&read(&server, "doc", &token, "").body), vec![(4, b"e4".to_vec()), (5, b"e5".to_vec())]);
    assert_eq!(append(&server, "doc", &token, &[], b"e6").json()["index"], 6, "the head never goes back");
    assert_eq!(
        server.put("doc", &token, &[("If-Match", &etag), ("Sync-Log-Base", "2")], b"v2").status,
        400,
        "below the base"
    );
    // A plain write leaves the log alone.
    let plain = server.put("doc", &token, &[("If-Match", &etag)], b"v2").json();
    assert_eq!((plain["log_base"].as_u64(), plain["log_head"].as_u64()), (Some(3), Some(6)));
    let (code, stdout, _) = cli(&server.root, &["check"], &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("3 log entries (6 bytes)"), "{stdout}");
}

#[test]
fn two_compactions_racing_one_wins_and_appends_meanwhile_survive() {
    let server = Server::start();
    let token = server.register("racer");
    let etag = server.put("doc", &token, &[], b"v0").etag();
    for i in 1..=4 {
        append(&server, "doc", &token, &[], format!("e{i}").as_bytes());
    }
    let mut a = server.connect();
    let mut b = server.connect();
    let request = |n: &str| {
        format!(
            "PUT /v1/stores/doc HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nIf-Match: {etag}\r\nSync-Log-Base: {n}\r\nContent-Length: 2\r\n\r\nvX"
        )
    };
    a.send(request("4").as_bytes());
    b.send(request("2").as_bytes());
    let appended = append(&server, "doc", &token, &[], b"e5").json();
    let statuses = [a.read_response(false).status, b.read_response(false).status];
    let mut sorted = statuses;
    sorted.sort();
    assert_eq!(sorted, [200, 412], "exactly one compaction wins");
    let base = if statuses[0] == 200 { 4 } else { 2 };
    let log = frames(&read(&server, "doc", &token, "").body);
    let indexes: Vec<u64> = log.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, ((base + 1)..=5).collect::<Vec<_>>(), "no gaps, nothing lost after the base");
    assert_eq!(appended["index"], 5);
}

#[test]
fn quota_long_polls_deletion_and_backups_see_logs() {
    // A store counts 1,024 bytes, its key four times, and 128 per entry.
    let server = Server::start_with(Options::default().env("QUOTA_BYTES", "1400"));
    let token = server.register("quota");
    server.put("doc", &token, &[], &[0u8; 50]);
    assert_eq!(append(&server, "doc", &token, &[], &[1u8; 40]).status, 201);
    assert_eq!(append(&server, "doc", &token, &[], &[1u8; 20]).status, 507, "body plus log over the quota");
    assert_eq!(server.get("/v1/account", Some(&token)).json()["bytes_used"], 50 + 12 + 1024 + 40 + 128);
    // An OWN grant counts the log against the grantee's quota too.
    let other = server.register("other");
    server.put("small", &other, &[], &[0u8; 20]);
    let grant = |permission: &str| {
        let body = json!({"account": "other", "permission": permission}).to_string();
        server.call("PUT", "/v1/stores/doc/permissions", Some(&token), &[], body.as_bytes()).status
    };
    assert_eq!(grant("OWN"), 507, "1,064 for its own store and 1,254 for doc are over 1,400");
    assert_eq!(grant("READ"), 204, "reading costs no quota");

    // A held long-poll wakes on an append.
    let since = server.get("/v1/changes?since=0", Some(&token)).json()["seq"].as_i64().unwrap();
    let addr = server.addr;
    let poll_token = token.clone();
    let poller = std::thread::spawn(move || {
        let mut conn = Conn::open(addr);
        conn.request("GET", &format!("/v1/changes?since={since}&wait=30"), Some(&poll_token), &[], b"").json()
    });
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    append(&server, "doc", &token, &[], b"wake");
    let woken: Value = poller.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(woken["changes"][0]["log_head"], 2);

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy");
    assert_eq!(cli(&server.root, &["backup", copy.to_str().unwrap()], &[]).0, 0);
    let restored = Server::start_in(&copy, Options::default());
    assert_eq!(frames(&read(&restored, "doc", &token, "").body).len(), 2, "the backup holds the log");
    drop(restored);

    assert_eq!(server.call("DELETE", "/v1/stores/doc", Some(&token), &[("If-Match", "*")], b"").status, 204);
    let feed = server.get(&format!("/v1/changes?since={since}"), Some(&token)).json();
    let gone = feed["changes"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((gone["token"].clone(), gone["log_head"].clone()), (Value::Null, Value::Null));
    server.put("doc", &token, &[], b"again");
    assert_eq!(read(&server, "doc", &token, "").header("Sync-Log-Head"), Some("0"), "a new store's log starts at 0");
    let (code, stdout, _) = cli(&server.root, &["check"], &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("0 log entries"), "deleting the store deleted its log: {stdout}");
}

/// Review finding: an entry that has not arrived yet must not be waited for
/// when the answer does not need it — small or not, with or without
/// `Expect: 100-continue`.
#[test]
fn refusals_of_appends_do_not_wait_for_the_entry() {
    let server = Server::start();
    let token = server.register("early");
    server.put("k", &token, &[], b"x");
    for (auth, extra, expected) in [
        (String::new(), "", 401),
        (String::new(), "Expect: 100-continue\r\n", 401),
        (format!("Authorization: Bearer {token}\r\n"), "If-Log-Head: 7\r\n", 412),
    ] {
        let mut conn = server.connect();
        let started = Instant::now();
        conn.send(
            format!("POST /v1/stores/k/log HTTP/1.1\r\nHost: t\r\n{auth}{extra}Content-Length: 1000\r\n\r\n")
                .as_bytes(),
        );
        let resp = conn.read_response(false);
        assert_eq!(resp.status, expected, "{}", resp.text());
        assert!(started.elapsed() < Duration::from_secs(2), "answered at once: {:?}", started.elapsed());
    }
    let gone = read(&server, "k", &token, "?after=5");
    assert_eq!((gone.status, gone.error()), (410, "gone".to_owned()));
    assert!(gone.json()["message"].as_str().unwrap().contains("Sync-Log-Base"), "{}", gone.text());
}

/// Clients that ask for 4 MiB log pages and never read them cannot make the
/// server hold more than its answer budget (32 MiB), nor one address more
/// than its share (8 MiB): past that a large answer is `503` with
/// `Retry-After`, a log of small entries is read in pages that do not
/// count, and the budget comes back as soon as those connections go.
/// (Each such client used to hold two copies of its page.)
#[test]
fn log_pages_nobody_reads_hold_at_most_the_answer_budget() {
    let server = Server::start();
    let token = server.register("hoarder");
    assert_eq!(server.put("doc", &token, &[], b"body").status, 201);
    let entry = vec![0x5a; 1024 * 1024 - 12];
    for _ in 0..4 {
        assert_eq!(append(&server, "doc", &token, &[], &entry).status, 201);
    }
    // And a log of small entries, 1 MiB in all.
    assert_eq!(server.put("notes", &token, &[], b"body").status, 201);
    for _ in 0..100 {
        assert_eq!(append(&server, "notes", &token, &[], &[7u8; 10_000]).status, 201);
    }
    let page = server.get("/v1/stores/doc/log", Some(&token));
    assert_eq!((page.status, page.body.len()), (200, 4 * 1024 * 1024), "one full page");
    let two = server.get("/v1/stores/doc/log?limit=2", Some(&token));
    assert_eq!((frames(&two.body).len(), two.header("Sync-Log-More")), (2, Some("1")));
    let last = frames(&server.get("/v1/stores/doc/log?after=3", Some(&token)).body);
    assert_eq!((last.len(), last[0].0, last[0].1 == entry), (1, 4, true));
    let before = server.rss_kib();

    // Clients on other loopback addresses: 127.0.0.2 to 127.0.0.11.
    let request = format!("GET /v1/stores/doc/log HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n");
    let hoard = |from: u8, count: usize| -> Vec<socket2::Socket> {
        (0..count)
            .map(|_| {
                let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
                socket.set_recv_buffer_size(1024).unwrap();
                socket.bind(&std::net::SocketAddr::from(([127, 0, 0, from], 0)).into()).unwrap();
                socket.connect(&server.addr.into()).unwrap();
                socket.send(request.as_bytes()).unwrap();
                socket
            })
            .collect()
    };
    let status_of = |socket: &socket2::Socket| {
        let mut line = [0u8; 12];
        std::io::Read::read_exact(&mut &*socket, &mut line).unwrap();
        String::from_utf8_lossy(&line[9..]).into_owned()
    };
    let full_page_status = || server.get("/v1/stores/doc/log", Some(&token)).status;

    // One address gets its share (one page), and nobody else notices.
    let greedy = hoard(2, 8);
    let statuses: Vec<String> = greedy.iter().map(status_of).collect();
    assert_eq!(statuses.iter().filter(|status| *status == "200").count(), 1, "{statuses:?}");
    assert_eq!(full_page_status(), 200, "another address still gets full pages");
    drop(greedy);

    // Nine addresses take the whole budget (eight pages: one more address
    // than needed, as a page asked for while others are being sent shrinks).
    let hoarders: Vec<Vec<socket2::Socket>> = (3..=11).map(|from| hoard(from, 2)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let answer = server.get("/v1/stores/doc/log", Some(&token));
        if answer.status == 503 {
            break answer;
        }
        assert_eq!(answer.status, 200);
        assert!(Instant::now() < deadline, "the budget was never taken");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(refused.header("Retry-After"), Some("1"));
    assert_eq!(refused.error(), "unavailable");
    let head = server.call("HEAD", "/v1/stores/doc/log", Some(&token), &[], b"");
    assert_eq!(head.status, 200, "a HEAD keeps no body and counts nothing");
    // It announces what a GET would get now: a page shrunk to one entry.
    assert_eq!((head.header("Content-Length"), head.header("Sync-Log-More")), (Some("1048576"), Some("1")));
    let grown = server.rss_kib().saturating_sub(before);
    assert!(grown < 48 * 1024, "18 unread 4 MiB pages grew the server by {grown} KiB");
    let statuses: Vec<Vec<String>> = hoarders.iter().map(|sockets| sockets.iter().map(status_of).collect()).collect();
    let held: usize = statuses.iter().flatten().filter(|status| *status == "200").count();
    assert!(held <= 8, "at most 32 MiB of pages are held: {statuses:?}");
    assert!(statuses.iter().flatten().all(|status| status == "200" || status == "503"), "{statuses:?}");

    // A log of small entries is still read, in pages that do not count.
    let small = server.get("/v1/stores/notes/log", Some(&token));
    assert_eq!((small.status, small.header("Sync-Log-More")), (200, Some("1")));
    assert!(small.body.len() <= 64 * 1024 && frames(&small.body).len() == 6, "{}", small.body.len());
    // Small answers are not affected.
    assert_eq!(server.get("/v1/stores/doc", Some(&token)).status, 200);

    drop(hoarders);
    let deadline = Instant::now() + Duration::from_secs(10);
    while full_page_status() != 200 {
        assert!(Instant::now() < deadline, "the budget came back when the hoarders left");
        thread::sleep(Duration::from_millis(20));
    }
}

/// `If-Match` on an append is evaluated against the body's token (an append
/// leaves it as it is; a compaction or a PUT changes it), on the small-entry
/// path and on the path that checks before reading a large entry.
#[test]
fn if_match_on_an_append_guards_the_body_version() {
    let server = Server::start();
    let token = server.register("guarded");
    let etag = server.put("doc", &token, &[], b"v1").etag();
    for entry in [vec![1u8; 10], vec![2u8; 100 * 1024]] {
        let fresh = append(&server, "doc", &token, &[("If-Match", &etag)], &entry);
        assert_eq!(fresh.status, 201, "{}", fresh.text());
        assert_eq!(append(&server, "doc", &token, &[("If-Match", "*")], &entry).status, 201);
        let stale = append(&server, "doc", &token, &[("If-Match", "\"not-it\"")], &entry);
        assert_eq!(stale.status, 412, "{}", stale.text());
        assert_eq!(stale.json()["current"]["token"].as_str(), Some(etag.trim_matches('"')));
        assert_eq!(append(&server, "doc", &token, &[("If-None-Match", "*")], &entry).status, 412);
        let both = append(&server, "doc", &token, &[("If-Match", &etag), ("If-None-Match", "*")], &entry);
        assert_eq!(both.status, 400);
    }
    // A compaction makes a new body: appends guarded by the old one fail.
    let compacted = server.put("doc", &token, &[("If-Match", &etag), ("Sync-Log-Base", "4")], b"v1+4");
    assert_eq!(compacted.status, 200, "{}", compacted.text());
    assert_eq!(append(&server, "doc", &token, &[("If-Match", &etag)], b"late").status, 412);
    let now = compacted.etag();
    assert_eq!(append(&server, "doc", &token, &[("If-Match", &now)], b"on top").status, 201);
    let entries = frames(&read(&server, "doc", &token, "").body);
    assert_eq!(entries.iter().map(|(index, _)| *index).collect::<Vec<_>>(), [5], "only the guarded one landed");
}
