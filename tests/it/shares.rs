//! Fair shares (issue 21): what one client, registered or not, from a few
//! addresses, can hold of the server's hashing places, memory, disk, loop
//! and connection slots — and that others are still served meanwhile.

use crate::support::{Options, PASSWORD, Server};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// `POST /v1/sessions` for `id` as if from `from` (behind `TRUST_PROXY=1`).
fn sign_in_from(server: &Server, id: &str, from: &str) -> u16 {
    let body = json!({"id": id, "password": PASSWORD}).to_string();
    let headers = [("Content-Type", "application/json"), ("X-Forwarded-For", from)];
    server.call("POST", "/v1/sessions", None, &headers, body.as_bytes()).status
}

#[test]
fn correct_sign_ins_from_four_addresses_leave_hashing_places_for_others() {
    let options = Options::default().env("TRUST_PROXY", "1").env("PBKDF2_ITERATIONS", "20000");
    let server = Arc::new(Server::start_with(options));
    let attackers: Vec<(String, String)> = (0..4)
        .flat_map(|a| (0..4).map(move |n| (format!("198.51.100.{}", a + 1), format!("attacker{a}x{n}"))))
        .collect();
    for (from, id) in &attackers {
        assert_eq!(server.register_from(id, from).status, 201);
    }
    assert_eq!(server.register_from("victim", "203.0.113.9").status, 201);
    let stop = Arc::new(AtomicBool::new(false));
    // Each attacker account signs in on 5 connections at once, over and over
    // (80 at once in all, more than the 64 places).
    let flood: Vec<_> = attackers
        .iter()
        .flat_map(|who| std::iter::repeat_n(who.clone(), 5))
        .map(|(from, id)| {
            let (server, stop) = (Arc::clone(&server), Arc::clone(&stop));
            thread::spawn(move || {
                let mut answered = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Refusals are cheap; this test is about the places, not
                    // about a flood of requests.
                    if sign_in_from(&server, &id, &from) != 201 {
                        thread::sleep(Duration::from_millis(20));
                    }
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let victim: Vec<u16> = (0..6).map(|_| sign_in_from(&server, "victim", "203.0.113.9")).collect();
    stop.store(true, Ordering::Relaxed);
    let attempts: usize = flood.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(attempts > 80, "the flood ran ({attempts} attempts)");
    assert_eq!(victim, vec![201; 6], "the victim signed in every time while the flood ran");
}

#[test]
fn successful_sign_ins_of_one_account_are_limited_per_hour() {
    let server = Server::start();
    server.register("busy");
    let statuses: Vec<u16> = (0..60).map(|_| sign_in_from(&server, "busy", "192.0.2.1")).collect();
    assert_eq!(statuses, vec![201; 60], "the sign-ins an hour allows");
    let refused = server.post_json("/v1/sessions", None, &json!({"id": "busy", "password": PASSWORD}));
    assert_eq!((refused.status, refused.error().as_str()), (429, "too_many_requests"));
    assert!(refused.header("Retry-After").is_some());
    server.register("other");
    assert_eq!(sign_in_from(&server, "other", "192.0.2.1"), 201, "another account is not affected");
}

#[test]
fn quota_counts_keys_metadata_and_every_log_entry() {
    let server = Server::start_with(Options::default().env("QUOTA_BYTES", "40000"));
    let token = server.register("hoarder");
    let meta = "m".repeat(8000);
    let key = "k".repeat(1000);
    // An empty store with a long key and long metadata counts for them.
    let mut created = 0;
    while created < 10 {
        let put = server.put(&format!("{key}{created}"), &token, &[("Sync-Meta", &meta)], b"");
        if put.status == 507 {
            assert_eq!(put.error(), "insufficient_storage");
            break;
        }
        assert_eq!(put.status, 201, "{}", put.text());
        created += 1;
    }
    let charge = 4 * 1001 + 8000 + 1024;
    assert_eq!(created, 40000 / charge, "empty stores with long keys and metadata fill the quota");
    let account = server.get("/v1/account", Some(&token)).json();
    assert_eq!(account["bytes_used"], created * charge);
    assert_eq!(account["store_count"], created);
    // Deleting one gives its charge back; 1-byte entries count 129 bytes each.
    let etag = server.get(&format!("/v1/stores/{key}0"), Some(&token)).etag();
    let gone = server.call("DELETE", &format!("/v1/stores/{key}0"), Some(&token), &[("If-Match", &etag)], b"");
    assert_eq!(gone.status, 204);
    let free = 40000 - (created - 1) * charge;
    let put = server.put("doc", &token, &[], b"");
    assert_eq!(put.status, 201);
    let room = (free - 1024 - 12) / 129;
    for n in 0..room {
        let appended = server.call("POST", "/v1/stores/doc/log", Some(&token), &[], b"x");
        assert_eq!(appended.status, 201, "entry {n}: {}", appended.text());
    }
    let refused = server.call("POST", "/v1/stores/doc/log", Some(&token), &[], b"x");
    assert_eq!((refused.status, refused.error().as_str()), (507, "insufficient_storage"));
    let account = server.get("/v1/account", Some(&token)).json();
    assert_eq!(account["bytes_used"], (created - 1) * charge + 1024 + 12 + room * 129);
}

#[test]
fn stores_per_account_are_capped() {
    let server = Server::start_with(Options::default().env("MAX_STORES_PER_ACCOUNT", "3"));
    let token = server.register("collector");
    for n in 0..3 {
        assert_eq!(server.put(&format!("s{n}"), &token, &[], b"x").status, 201);
    }
    let refused = server.put("s3", &token, &[], b"x");
    assert_eq!((refused.status, refused.error().as_str()), (507, "insufficient_storage"));
    assert!(refused.text().contains("stores"), "{}", refused.text());
    let etag = server.get("/v1/stores/s0", Some(&token)).etag();
    assert_eq!(server.put("s0", &token, &[("If-Match", &etag)], b"y").status, 200, "replacing one is fine");
    let etag = server.get("/v1/stores/s1", Some(&token)).etag();
    assert_eq!(server.call("DELETE", "/v1/stores/s1", Some(&token), &[("If-Match", &etag)], b"").status, 204);
    assert_eq!(server.put("s3", &token, &[], b"x").status, 201, "room again after a deletion");
}

#[test]
fn a_new_session_past_the_cap_revokes_the_one_used_least_recently() {
    let mut server = Server::start();
    let first = server.register("many");
    let root = server.root.clone();
    let options = Options::default();
    server.kill();
    {
        let db = crate::support::database(&root);
        let account: String = db.query_row("SELECT account_id FROM sync_session", [], |row| row.get(0)).unwrap();
        // 99 more sessions, all expiring sooner than the first one (used
        // less recently: a session is extended as it is used).
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        for n in 0..99 {
            db.execute(
                "INSERT INTO sync_session (token, account_id, expiration) VALUES (?1, ?2, ?3)",
                rusqlite::params![format!("{n:064x}"), account, now + 86_400_000 + n],
            )
            .unwrap();
        }
    }
    let server = Server::start_in(&root, options);
    assert_eq!(server.get("/v1/account", Some(&first)).status, 200, "the first session works while under the cap");
    // The inserted one expiring first is revoked by the 101st.
    let second = server.post_json("/v1/sessions", None, &json!({"id": "many", "password": PASSWORD}));
    assert_eq!(second.status, 201);
    let db = crate::support::database(&root);
    let count: i64 = db.query_row("SELECT count(*) FROM sync_session", [], |row| row.get(0)).unwrap();
    assert_eq!(count, 100);
    let gone: i64 = db
        .query_row("SELECT count(*) FROM sync_session WHERE token = ?1", [format!("{:064x}", 0)], |row| row.get(0))
        .unwrap();
    assert_eq!(gone, 0, "the session used least recently went");
    assert_eq!(server.get("/v1/account", Some(&first)).status, 200);
}

/// Gives the store `key` (with one entry appended through the API) a log of
/// `entries` more rows, written straight into the stopped server's database.
fn lengthen_log(root: &std::path::Path, key: &str, entries: u64) {
    let mut db = crate::support::database(root);
    let tx = db.transaction().unwrap();
    let (log_id, head, total): (i64, u64, u64) = tx
        .query_row("SELECT log_id, log_head, log_total FROM sync_store WHERE store_key = ?1", [key], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .unwrap();
    {
        let mut insert =
            tx.prepare("INSERT INTO store_entry (log_id, idx, cum, bytes) VALUES (?1, ?2, ?3, x'00')").unwrap();
        for n in 1..=entries {
            insert.execute(rusqlite::params![log_id, head + n, total + n]).unwrap();
        }
    }
    tx.execute(
        "UPDATE sync_store SET log_head = log_head + ?2, log_bytes = log_bytes + ?2, log_total = log_total + ?2
         WHERE store_key = ?1",
        rusqlite::params![key, entries],
    )
    .unwrap();
    tx.commit().unwrap();
}

/// The slowest of `health` answers asked for one after another while `busy` holds.
fn slowest_health(server: &Server, busy: impl Fn() -> bool) -> (Duration, usize) {
    let mut conn = server.connect();
    let (mut slowest, mut asked) = (Duration::ZERO, 0);
    while busy() && asked < 5000 {
        let started = std::time::Instant::now();
        assert_eq!(conn.request("GET", "/v1/health", None, &[], b"").status, 200);
        slowest = slowest.max(started.elapsed());
        asked += 1;
    }
    (slowest, asked)
}

#[test]
fn deleting_or_compacting_a_long_log_does_not_hold_the_loop() {
    let mut server = Server::start();
    let token = server.register("logger");
    for key in ["gone", "folded"] {
        assert_eq!(server.put(key, &token, &[], b"body").status, 201);
        assert_eq!(server.call("POST", &format!("/v1/stores/{key}/log"), Some(&token), &[], b"e").status, 201);
    }
    let root = server.root.clone();
    server.kill();
    lengthen_log(&root, "gone", 300_000);
    lengthen_log(&root, "folded", 300_000);
    let server = Server::start_in(&root, Options::default());
    let entries = || -> i64 {
        crate::support::database(&root).query_row("SELECT count(*) FROM store_entry", [], |row| row.get(0)).unwrap()
    };
    assert_eq!(entries(), 600_002);
    let etag = server.get("/v1/stores/gone", Some(&token)).etag();
    let deleted = server.call("DELETE", "/v1/stores/gone", Some(&token), &[("If-Match", &etag)], b"");
    assert_eq!(deleted.status, 204);
    assert_eq!(server.get("/v1/stores/gone", Some(&token)).status, 404, "gone for readers at once");
    let etag = server.get("/v1/stores/folded", Some(&token)).etag();
    let compacted = server.put("folded", &token, &[("If-Match", &etag), ("Sync-Log-Base", "300001")], b"folded body");
    assert_eq!(compacted.status, 200, "{}", compacted.text());
    let folded = server.get("/v1/stores/folded", Some(&token));
    assert_eq!(folded.header("Sync-Log-Base"), Some("300001"), "compacted at once");
    let (slowest, asked) = slowest_health(&server, || entries() > 0);
    assert_eq!(entries(), 0, "the dropped entries were all deleted ({asked} health checks meanwhile)");
    assert!(asked > 10, "the deletion took a while ({asked} health checks)");
    assert!(slowest < Duration::from_millis(250), "health waited {slowest:?} behind the deletion");
    assert_eq!(crate::support::cli(&root, &["check"], &[]).0, 0, "check agrees with the counters and logs");
}

#[test]
fn log_entries_arriving_slowly_hold_no_more_than_the_entry_budget() {
    let server = Server::start_with(Options::default().env("TRUST_PROXY", "1"));
    let attacker = server.register("slowpoke");
    let victim = server.register("victim");
    assert_eq!(server.put("doc", &attacker, &[], b"").status, 201);
    assert_eq!(server.put("mine", &victim, &[], b"").status, 201);
    let before = server.rss_kib();
    let entry = 1024 * 1024 - 40;
    let mut held = Vec::new();
    let mut refused = 0;
    for n in 0..64 {
        let mut conn = server.connect();
        let head = format!(
            "POST /v1/stores/doc/log HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {attacker}\r\n\
             X-Forwarded-For: 198.51.100.{}\r\nContent-Length: {entry}\r\n\r\n",
            n % 4 + 1
        );
        conn.send(head.as_bytes());
        // All but the last byte, then silence.
        let _ = std::io::Write::write_all(&mut conn.stream, &vec![b'x'; entry - 1]);
        conn.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        match conn.try_read_response(false) {
            Some(resp) => {
                assert_eq!((resp.status, resp.error().as_str()), (503, "unavailable"));
                assert!(resp.header("Retry-After").is_some());
                refused += 1;
            }
            None => held.push(conn),
        }
    }
    assert!(held.len() <= 4 * 4, "each address holds at most its 4 MiB share: {} held", held.len());
    assert_eq!(refused + held.len(), 64);
    let grown = server.rss_kib().saturating_sub(before);
    assert!(grown < 48 * 1024, "RSS grew {grown} KiB while entries were held");
    let body = vec![b'v'; entry];
    let headers = [("X-Forwarded-For", "203.0.113.7")];
    let appended = server.call("POST", "/v1/stores/mine/log", Some(&victim), &headers, &body);
    assert_eq!(appended.status, 201, "another address still appends a 1 MiB entry");
}

/// A chunked `PUT` of `total` bytes, sent as fast as the server takes it;
/// the status it got (the server may answer before the end).
fn chunked_put(addr: std::net::SocketAddr, key: &str, token: &str, total: usize) -> u16 {
    let mut conn = crate::support::Conn::open(addr);
    conn.send(
        format!(
            "PUT /v1/stores/{key} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .as_bytes(),
    );
    let chunk = vec![b'u'; 256 * 1024];
    let mut sent = 0;
    while sent < total {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if std::io::Write::write_all(&mut conn.stream, &framed).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = std::io::Write::write_all(&mut conn.stream, b"0\r\n\r\n");
    conn.try_read_response(false).map_or(0, |resp| resp.status)
}

/// Runs `uploads` at once while sampling `measure` every few milliseconds;
/// their statuses and the largest and smallest samples.
fn while_uploading(uploads: Vec<Box<dyn FnOnce() -> u16 + Send>>, measure: impl Fn() -> u64) -> (Vec<u16>, u64, u64) {
    let threads: Vec<_> = uploads.into_iter().map(thread::spawn).collect();
    let (mut most, mut least) = (0, u64::MAX);
    while threads.iter().any(|t| !t.is_finished()) {
        let sample = measure();
        (most, least) = (most.max(sample), least.min(sample));
        thread::sleep(Duration::from_millis(5));
    }
    (threads.into_iter().map(|t| t.join().unwrap()).collect(), most, least)
}

const MIB: usize = 1024 * 1024;

#[test]
fn chunked_uploads_count_against_the_quota_as_they_arrive() {
    let server = Server::start_with(Options::default().env("QUOTA_BYTES", &(10 * MIB).to_string()));
    let token = server.register("chunky");
    let uploads: Vec<Box<dyn FnOnce() -> u16 + Send>> = (0..6)
        .map(|n| {
            let (addr, token) = (server.addr, token.clone());
            Box::new(move || chunked_put(addr, &format!("s{n}"), &token, 20 * MIB)) as Box<dyn FnOnce() -> u16 + Send>
        })
        .collect();
    let staged =
        || crate::support::temp_files(&server.root).iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum();
    let (statuses, most, _) = while_uploading(uploads, staged);
    assert_eq!(statuses, vec![507; 6], "six 20 MiB bodies against a 10 MiB quota");
    assert!(most <= (10 + 6) as u64 * MIB as u64, "the uploads in flight staged {most} bytes at once");
    assert_eq!(server.get("/v1/account", Some(&token)).json()["bytes_used"], 0);
    assert_eq!(server.put("fits", &token, &[], &vec![1u8; 5 * MIB]).status, 201, "the room came back");
}

#[test]
fn a_small_chunked_upload_fits_the_little_quota_left() {
    // With less than the megabyte a chunked body reserves ahead left, a
    // body that fits was once refused 507 (found by an attack round).
    let server = Server::start_with(Options::default().env("QUOTA_BYTES", "10000000"));
    let token = server.register("nearly-full");
    assert_eq!(server.put("big", &token, &[], &vec![1u8; 9_200_000]).status, 201);
    let mut conn = server.connect();
    let request = format!(
        "PUT /v1/stores/small HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\n\r\n3e8\r\n{}\r\n0\r\n\r\n",
        "c".repeat(1000)
    );
    conn.send(request.as_bytes());
    let answer = conn.read_response(false);
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(server.get("/v1/stores/small", Some(&token)).body, vec![b'c'; 1000]);
}

#[test]
fn uploads_in_flight_never_take_the_disk_below_min_free_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_tmpfs) = crate::support::Tmpfs::mount(&dir.path().join("small"), "64m") else {
        eprintln!("SKIPPED uploads_in_flight_never_take_the_disk…: this test needs permission to mount a tmpfs (root)");
        return;
    };
    let root = dir.path().join("small").join("data");
    let server = Server::start_in(&root, Options::default().env("MIN_FREE_BYTES", &(16 * MIB).to_string()));
    let tokens: Vec<String> = (0..6).map(|n| server.register(&format!("filler{n}"))).collect();
    let victim = server.register("victim");
    let uploads: Vec<Box<dyn FnOnce() -> u16 + Send>> = tokens
        .into_iter()
        .enumerate()
        .map(|(n, token)| {
            let addr = server.addr;
            Box::new(move || chunked_put(addr, &format!("big{n}"), &token, 20 * MIB)) as Box<dyn FnOnce() -> u16 + Send>
        })
        .collect();
    let free = || {
        let stats = rustix::fs::statvfs(&root).unwrap();
        stats.f_bavail * stats.f_frsize
    };
    let (statuses, _, least) = while_uploading(uploads, free);
    assert!(statuses.iter().all(|&s| s == 201 || s == 507), "{statuses:?}");
    assert!(statuses.iter().filter(|&&s| s == 507).count() >= 4, "120 MiB do not fit in 48: {statuses:?}");
    assert!(least >= 15 * MIB as u64, "free space fell to {least} bytes, under MIN_FREE_BYTES");
    assert_eq!(server.put("small", &victim, &[], b"still room").status, 201);
}

#[test]
fn a_replaced_version_that_readers_hold_counts_against_its_owner_until_they_let_go() {
    let server = Server::start_with(Options::default().env("QUOTA_BYTES", &(40 * MIB).to_string()));
    let token = server.register("pinned");
    let etag = server.put("big", &token, &[], &vec![1u8; 16 * MIB]).etag();
    // A reader that takes a few bytes and then nothing: the server still
    // has most of the old version to send when it is replaced.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut reader = crate::support::Conn::over(socket.into());
    reader.send(format!("GET /v1/stores/big HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes());
    let mut first = [0u8; 1024];
    std::io::Read::read_exact(&mut reader.stream, &mut first).unwrap();
    assert_eq!(server.put("big", &token, &[("If-Match", &etag)], &vec![2u8; 16 * MIB]).status, 200);
    let used = server.get("/v1/account", Some(&token)).json()["bytes_used"].as_u64().unwrap();
    assert!(used >= 32 * MIB as u64, "the version being read counts too: {used}");
    let refused = server.put("more", &token, &[], &vec![3u8; 10 * MIB]);
    assert_eq!((refused.status, refused.error().as_str()), (507, "insufficient_storage"));
    drop(reader);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let used = server.get("/v1/account", Some(&token)).json()["bytes_used"].as_u64().unwrap();
        if used < 17 * MIB as u64 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still counted after the reader left: {used}");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.put("more", &token, &[], &vec![3u8; 10 * MIB]).status, 201);
}

#[test]
fn deleting_an_account_of_thousands_of_stores_does_not_hold_the_loop() {
    let server = Server::start();
    let token = server.register("leaving");
    let member = server.register("member");
    let stores = 3000;
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let (addr, token) = (server.addr, token.clone());
            thread::spawn(move || {
                let mut conn = crate::support::Conn::open(addr);
                for n in (t..stores).step_by(8) {
                    assert_eq!(conn.request("PUT", &format!("/v1/stores/s{n}"), Some(&token), &[], b"x").status, 201);
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|t| t.join().unwrap());
    let share = json!({"account": "member", "permission": "READ"}).to_string();
    assert_eq!(server.call("PUT", "/v1/stores/s7/permissions", Some(&token), &[], share.as_bytes()).status, 204);
    let since = server.get("/v1/changes?since=0", Some(&member)).json()["seq"].as_i64().unwrap();
    let root = server.root.clone();
    let left = || -> i64 {
        crate::support::database(&root).query_row("SELECT count(*) FROM sync_store", [], |row| row.get(0)).unwrap()
    };
    assert_eq!(left(), stores as i64);
    // Health is asked for from before the deletion until its last store is gone.
    let deleting = AtomicBool::new(true);
    let (slowest, asked) = thread::scope(|scope| {
        let watcher = scope.spawn(|| slowest_health(&server, || deleting.load(Ordering::Relaxed)));
        thread::sleep(Duration::from_millis(100));
        let body = json!({"password": PASSWORD}).to_string();
        let gone = server.call("DELETE", "/v1/account", Some(&token), &[], body.as_bytes());
        assert_eq!(gone.status, 204);
        assert_eq!(server.get("/v1/account", Some(&token)).status, 401, "its sessions end at once");
        let sign_in = server.post_json("/v1/sessions", None, &json!({"id": "leaving", "password": PASSWORD}));
        assert_eq!(sign_in.status, 401, "and it cannot sign in while its stores go");
        while left() > 0 {
            thread::sleep(Duration::from_millis(20));
        }
        deleting.store(false, Ordering::Relaxed);
        watcher.join().unwrap()
    });
    // (A debug build beside the whole suite on two cores, where one health
    // check has taken 272 ms: the release bench measures the 10 ms target;
    // deleting it all at once held health over a second.)
    assert!(slowest < Duration::from_millis(500), "health waited {slowest:?} behind the deletion ({asked} asked)");
    let feed = server.get(&format!("/v1/changes?since={since}"), Some(&member)).json();
    assert_eq!(feed["changes"][0]["key"], "s7", "the member heard of the shared store's deletion");
    assert_eq!(feed["changes"][0]["token"], serde_json::Value::Null, "a tombstone");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.post_json("/v1/accounts", None, &json!({"id": "leaving", "password": PASSWORD})).status != 201 {
        assert!(std::time::Instant::now() < deadline, "the id was never free again");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(crate::support::cli(&root, &["check"], &[]).0, 0);
}

/// `POST /v1/stores/{key}/links` for link `n` with an envelope of `bytes`
/// (a multiple of 3: whole base64 groups).
fn make_link(server: &Server, key: &str, token: &str, n: usize, bytes: usize) -> crate::support::Resp {
    let envelope = "A".repeat(bytes / 3 * 4);
    let body = json!({
        "link": format!("link-{n:012}"),
        "verifier_hash": "0".repeat(64),
        "permission": "READ",
        "envelope": envelope,
    });
    server.post_json(&format!("/v1/stores/{key}/links"), Some(token), &body)
}

#[test]
fn share_links_count_against_the_quota_and_are_capped_per_store() {
    let server = Server::start_with(Options::default().env("QUOTA_BYTES", "100000"));
    let token = server.register("linker");
    assert_eq!(server.put("s", &token, &[], b"x").status, 201);
    let before = server.get("/v1/account", Some(&token)).json()["bytes_used"].as_u64().unwrap();
    let mut made = 0;
    let refused = loop {
        let resp = make_link(&server, "s", &token, made, 3999);
        if resp.status != 201 {
            break resp;
        }
        made += 1;
        assert!(made < 100, "links never counted");
    };
    assert_eq!((refused.status, refused.error().as_str()), (507, "insufficient_storage"));
    let cost = 3999 + 17 + 256;
    assert_eq!(made as u64, (100_000 - before) / cost, "each link counts its envelope, id and 256 bytes");
    let after = server.get("/v1/account", Some(&token)).json()["bytes_used"].as_u64().unwrap();
    assert_eq!(after, before + made as u64 * cost);
    // Without a quota, a store still makes at most 1,000 links.
    let free = Server::start();
    let token = free.register("linker");
    assert_eq!(free.put("s", &token, &[], b"x").status, 201);
    for n in 0..1000 {
        assert_eq!(make_link(&free, "s", &token, n, 15).status, 201, "link {n}");
    }
    let capped = make_link(&free, "s", &token, 1000, 15);
    assert_eq!((capped.status, capped.error().as_str()), (507, "insufficient_storage"));
    let listed = free.get("/v1/stores/s/links", Some(&token)).json();
    assert_eq!(listed["links"].as_array().unwrap().len(), 1000);
}

#[test]
fn a_feed_below_its_accounts_own_horizon_is_gone() {
    let mut server = Server::start();
    let token = server.register("churner");
    let other = server.register("bystander");
    for key in ["a", "b", "c"] {
        assert_eq!(server.put(key, &token, &[], b"x").status, 201);
    }
    let seq = server.get("/v1/changes?since=0", Some(&token)).json()["seq"].as_i64().unwrap();
    let root = server.root.clone();
    server.kill();
    // What forgetting its oldest tombstones past the cap leaves behind.
    crate::support::database(&root)
        .execute("UPDATE sync_account SET horizon = ?1 WHERE stores_owned = 3", [seq - 1])
        .unwrap();
    let server = Server::start_in(&root, Options::default());
    let old = server.get(&format!("/v1/changes?since={}", seq - 2), Some(&token));
    assert_eq!((old.status, old.error().as_str()), (410, "gone"));
    assert_eq!(server.get(&format!("/v1/changes?since={}", seq - 1), Some(&token)).status, 200);
    assert_eq!(server.get("/v1/changes?since=0", Some(&token)).status, 200, "a walk from 0 needs no tombstones");
    assert_eq!(server.get("/v1/changes?since=1", Some(&other)).status, 200, "other accounts are not affected");
}
