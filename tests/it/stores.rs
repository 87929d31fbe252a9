//! Stores: reads, conditional writes, meta, limits, permissions.

use crate::support::{Conn, Options, Server, store_files, temp_files};
use std::thread;
use std::time::{Duration, Instant};

fn path(key: &str) -> String {
    format!("/v1/stores/{key}")
}

#[test]
fn create_read_replace_delete() {
    let server = Server::start();
    let token = server.register("owner");
    let created = server.put("notes", &token, &[("Sync-Meta", "bWV0YQ==")], b"first");
    assert_eq!(created.status, 201);
    let body = created.json();
    assert_eq!(body["key"], "notes");
    assert_eq!(body["size"], 5);
    let first = body["token"].as_str().unwrap().to_owned();
    assert_eq!(first.len(), 64);
    assert!(first.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(created.etag(), format!("\"{first}\""));
    let seq = body["seq"].as_i64().unwrap();
    assert!(seq >= 1);

    let read = server.get(&path("notes"), Some(&token));
    assert_eq!(read.status, 200);
    assert_eq!(read.body, b"first");
    assert_eq!(read.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(read.etag(), format!("\"{first}\""));
    assert_eq!(read.header("Sync-Meta"), Some("bWV0YQ=="));
    assert_eq!(read.header("Sync-Permission"), Some("OWN"));
    assert_eq!(read.header("Sync-Seq"), Some(seq.to_string().as_str()));
    assert!(read.header("Last-Modified").unwrap().ends_with(" GMT"));

    let head = server.call("HEAD", &path("notes"), Some(&token), &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("5"));
    assert!(head.body.is_empty());

    let replaced = server.put("notes", &token, &[("If-Match", &read.etag())], b"second");
    assert_eq!(replaced.status, 200);
    let second = replaced.json();
    assert_ne!(second["token"], first.as_str());
    assert!(second["seq"].as_i64().unwrap() > seq);
    assert_eq!(server.get(&path("notes"), Some(&token)).body, b"second");

    let list = server.get("/v1/stores", Some(&token)).json();
    assert_eq!(list["seq"], second["seq"]);
    assert_eq!(list["stores"].as_array().unwrap().len(), 1);
    let entry = &list["stores"][0];
    assert_eq!(entry["key"], "notes");
    assert_eq!(entry["token"], second["token"]);
    assert_eq!(entry["size"], 6);
    assert_eq!(entry["permission"], "OWN");
    assert_eq!(entry["meta"], "bWV0YQ==", "meta kept when the header is absent");
    assert_eq!(entry["modified"], second["modified"]);

    let account = server.get("/v1/account", Some(&token)).json();
    // The body, the key four times, the metadata and 1,024 bytes.
    assert_eq!((account["store_count"].as_i64(), account["bytes_used"].as_i64()), (Some(1), Some(6 + 20 + 8 + 1024)));

    let deleted = server.call("DELETE", &path("notes"), Some(&token), &[("If-Match", "*")], b"");
    assert_eq!(deleted.status, 204);
    assert_eq!(server.get(&path("notes"), Some(&token)).status, 404);
    assert!(store_files(&server.root).is_empty(), "the file is removed");
    let after = server.get("/v1/stores", Some(&token)).json();
    assert!(after["seq"].as_i64().unwrap() > second["seq"].as_i64().unwrap(), "a delete takes a seq");
}

#[test]
fn every_precondition_cell_for_put() {
    let server = Server::start();
    let token = server.register("writer");
    let put = |key: &str, headers: &[(&str, &str)]| server.put(key, &token, headers, b"data");

    // Store missing.
    assert_eq!(put("a", &[]).status, 201);
    assert_eq!(put("b", &[("If-None-Match", "*")]).status, 201);
    let failed = put("c", &[("If-Match", "\"0000\"")]);
    assert_eq!((failed.status, failed.error().as_str()), (412, "precondition_failed"));
    assert!(failed.json().get("current").is_none() && failed.header("ETag").is_none());
    assert_eq!(put("c", &[("If-Match", "*")]).status, 412);
    assert_eq!(server.get(&path("c"), Some(&token)).status, 404, "a failed write creates nothing");

    // Store exists.
    let required = put("a", &[]);
    assert_eq!((required.status, required.error().as_str()), (428, "precondition_required"));
    let current = server.get(&path("a"), Some(&token)).etag();
    let exists = put("a", &[("If-None-Match", "*")]);
    assert_eq!(exists.status, 412);
    assert_eq!(exists.etag(), current);
    let stale = put("a", &[("If-Match", "\"stale\"")]);
    assert_eq!(stale.status, 412);
    assert_eq!(stale.etag(), current);
    let now = put("a", &[("If-Match", &current)]);
    assert_eq!(now.status, 200);
    assert_eq!(put("a", &[("If-Match", "*")]).status, 200);
    assert_eq!(put("a", &[("If-Match", &format!("\"x\", {}", now.etag()))]).status, 412, "stale list");

    for bad in
        [&[("If-Match", "unquoted")][..], &[("If-None-Match", "\"tag\"")], &[("If-Match", "*"), ("If-None-Match", "*")]]
    {
        assert_eq!(put("a", bad).status, 400, "{bad:?}");
    }
}

#[test]
fn a_conflict_answer_carries_the_current_version() {
    let server = Server::start();
    let token = server.register("merger");
    let first = server.put("doc", &token, &[("Sync-Meta", "v1")], b"one");
    let second = server.put("doc", &token, &[("If-Match", &first.etag())], b"two!");
    // A device still holding the first version tries to write.
    let conflict = server.put("doc", &token, &[("If-Match", &first.etag())], b"three");
    assert_eq!(conflict.status, 412);
    let current = &conflict.json()["current"];
    assert_eq!(current["token"], second.json()["token"]);
    assert_eq!(current["size"], 4);
    assert_eq!(current["seq"], second.json()["seq"]);
    assert_eq!(current["modified"], second.json()["modified"]);
    assert_eq!(current["meta"], "v1");
    assert_eq!(server.get(&path("doc"), Some(&token)).body, b"two!", "unchanged");
}

#[test]
fn every_precondition_cell_for_delete() {
    let server = Server::start();
    let token = server.register("deleter");
    let etag = server.put("k", &token, &[], b"x").etag();
    let delete = |headers: &[(&str, &str)]| server.call("DELETE", &path("k"), Some(&token), headers, b"");
    assert_eq!(delete(&[]).status, 428);
    assert_eq!(delete(&[("If-None-Match", "*")]).status, 400);
    let stale = delete(&[("If-Match", "\"nope\"")]);
    assert_eq!(stale.status, 412);
    assert_eq!(stale.etag(), etag);
    assert_eq!(stale.json()["current"]["size"], 1);
    assert_eq!(delete(&[("If-Match", &etag)]).status, 204);
    for headers in [&[][..], &[("If-Match", "*")], &[("If-Match", &etag)]] {
        assert_eq!(delete(headers).status, 404, "missing store: {headers:?}");
    }
}

#[test]
fn conditional_reads() {
    let server = Server::start();
    let token = server.register("reader");
    let etag = server.put("k", &token, &[], b"body").etag();
    let get = |inm: &str| server.call("GET", &path("k"), Some(&token), &[("If-None-Match", inm)], b"");
    let not_modified = get(&etag);
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.etag(), etag);
    assert!(not_modified.body.is_empty());
    assert_eq!(get("*").status, 304);
    assert_eq!(get(&format!("W/{etag}")).status, 304);
    assert_eq!(get("\"other\"").status, 200);
    assert_eq!(get("garbage").status, 400);
}

#[test]
fn meta_is_set_kept_cleared_and_limited() {
    let server = Server::start();
    let token = server.register("meta");
    let meta_of = |key: &str| server.get(&path(key), Some(&token)).header("Sync-Meta").map(str::to_owned);
    let etag = server.put("m", &token, &[("Sync-Meta", "hello world")], b"1").etag();
    assert_eq!(meta_of("m").as_deref(), Some("hello world"));
    let etag = server.put("m", &token, &[("If-Match", &etag)], b"2").etag();
    assert_eq!(meta_of("m").as_deref(), Some("hello world"), "absent header keeps meta");
    let etag = server.put("m", &token, &[("If-Match", &etag), ("Sync-Meta", "")], b"3").etag();
    assert_eq!(meta_of("m"), None, "empty header clears meta");
    let at_limit = "m".repeat(8000);
    let etag = server.put("m", &token, &[("If-Match", &etag), ("Sync-Meta", &at_limit)], b"4").etag();
    assert_eq!(meta_of("m").unwrap().len(), 8000);
    let too_long = "m".repeat(8001);
    let resp = server.put("m", &token, &[("If-Match", &etag), ("Sync-Meta", &too_long)], b"5");
    assert_eq!((resp.status, resp.error().as_str()), (413, "payload_too_large"));
    let mut conn = server.connect();
    conn.send(format!("PUT /v1/stores/m HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nIf-Match: {etag}\r\nSync-Meta: caf\u{e9}\r\nContent-Length: 1\r\n\r\n6").as_bytes());
    assert_eq!(conn.read_response(false).status, 400);
    let read = server.get(&path("m"), Some(&token));
    assert_eq!((read.body.as_slice(), read.etag()), (&b"4"[..], etag), "refused writes change nothing");
}

#[test]
fn odd_keys_stay_keys() {
    let server = Server::start();
    let token = server.register("keys");
    for (encoded, decoded) in [
        ("..%2F..%2Fescape", "../../escape"),
        ("..", ".."),
        ("%2Fetc%2Fpasswd", "/etc/passwd"),
        ("%E2%9C%93%20%E6%97%A5%E6%9C%AC", "✓ 日本"),
        ("a+b%2Bc", "a+b+c"),
    ] {
        let resp = server.put(encoded, &token, &[], decoded.as_bytes());
        assert_eq!(resp.status, 201, "{encoded}");
        assert_eq!(resp.json()["key"], decoded);
        assert_eq!(server.get(&path(encoded), Some(&token)).body, decoded.as_bytes());
    }
    let parent = server.root.parent().unwrap();
    assert!(!parent.join("escape").exists());
    let keys: Vec<String> = server.get("/v1/stores", Some(&token)).json()["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_owned())
        .collect();
    assert!(keys.contains(&"✓ 日本".to_owned()) && keys.contains(&"../../escape".to_owned()));
    assert_eq!(store_files(&server.root).len(), 5);
}

#[test]
fn binary_large_and_empty_bodies_round_trip() {
    let server = Server::start();
    let token = server.register("bytes");
    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    assert_eq!(server.put("big", &token, &[], &big).status, 201);
    assert_eq!(server.get(&path("big"), Some(&token)).body, big);
    let created = server.put("empty", &token, &[], b"");
    assert_eq!((created.status, created.json()["size"].as_i64()), (201, Some(0)));
    let read = server.get(&path("empty"), Some(&token));
    assert_eq!((read.status, read.body.len()), (200, 0));

    let mut conn = server.connect();
    conn.send(format!("PUT /v1/stores/chunked HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").as_bytes());
    assert_eq!(conn.read_response(false).status, 201);
    assert_eq!(server.get(&path("chunked"), Some(&token)).body, b"hello world");
}

#[test]
fn too_large_uploads_change_nothing_and_leave_nothing() {
    let server = Server::start_with(Options::default().env("MAX_STORE_BYTES", "1000"));
    let token = server.register("limits");
    let etag = server.put("s", &token, &[], b"original").etag();
    // Declared too large: refused before the body is read.
    let resp = server.put("s", &token, &[("If-Match", &etag)], &[7u8; 1001]);
    assert_eq!((resp.status, resp.error().as_str()), (413, "payload_too_large"));
    // Chunked and too large: refused while streaming.
    let mut conn = server.connect();
    conn.send(format!("PUT /v1/stores/s HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nIf-Match: {etag}\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes());
    for _ in 0..3 {
        conn.send(format!("{:x}\r\n{}\r\n", 400, "z".repeat(400)).as_bytes());
    }
    assert_eq!(conn.read_response(false).status, 413);
    let read = server.get(&path("s"), Some(&token));
    assert_eq!((read.body.as_slice(), read.etag()), (&b"original"[..], etag));
    assert!(temp_files(&server.root).is_empty(), "no staged file left");
    assert_eq!(store_files(&server.root).len(), 1);
    assert_eq!(server.put("exact", &token, &[], &[1u8; 1000]).status, 201);
}

#[test]
fn quota_gives_507_and_changes_nothing() {
    // Each store counts its body, its key four times and 1,024 bytes: 60 and
    // 40 bytes of body fill the quota (1,088 + 1,068).
    let server = Server::start_with(Options::default().env("QUOTA_BYTES", "2156"));
    let token = server.register("quota");
    let etag = server.put("a", &token, &[], &[1u8; 60]).etag();
    let over = server.put("b", &token, &[], &[2u8; 41]);
    assert_eq!((over.status, over.error().as_str()), (507, "insufficient_storage"));
    assert_eq!(server.get(&path("b"), Some(&token)).status, 404);
    assert_eq!(server.put("b", &token, &[], &[2u8; 40]).status, 201);
    // Replacing counts the new size instead of the old one.
    assert_eq!(server.put("a", &token, &[("If-Match", &etag)], &[3u8; 61]).status, 507);
    assert_eq!(server.put("a", &token, &[("If-Match", &etag)], &[3u8; 50]).status, 200);
    let account = server.get("/v1/account", Some(&token)).json();
    assert_eq!((account["bytes_used"].as_i64(), account["quota_bytes"].as_i64()), (Some(2146), Some(2156)));
    assert_eq!(store_files(&server.root).len(), 2);
    assert!(temp_files(&server.root).is_empty());
}

#[test]
fn other_accounts_see_nothing() {
    let server = Server::start();
    let alice = server.register("alice");
    let mallory = server.register("mallory");
    let etag = server.put("private", &alice, &[], b"secret").etag();
    let get = server.get(&path("private"), Some(&mallory));
    assert_eq!((get.status, get.error().as_str()), (404, "not_found"));
    assert_eq!(server.call("HEAD", &path("private"), Some(&mallory), &[], b"").status, 404);
    let taken = server.put("private", &mallory, &[], b"mine");
    assert_eq!((taken.status, taken.error().as_str()), (403, "forbidden"));
    assert_eq!(server.put("private", &mallory, &[("If-None-Match", "*")], b"mine").status, 403);
    for if_match in ["*", etag.as_str()] {
        let resp = server.put("private", &mallory, &[("If-Match", if_match)], b"mine");
        assert_eq!(resp.status, 404, "no ETag or state leaks");
        assert!(resp.header("ETag").is_none());
        assert_eq!(server.call("DELETE", &path("private"), Some(&mallory), &[("If-Match", if_match)], b"").status, 404);
    }
    assert_eq!(server.get("/v1/stores", Some(&mallory)).json()["stores"], serde_json::json!([]));
    assert_eq!(server.get(&path("private"), Some(&alice)).body, b"secret");
}

#[test]
fn a_client_that_never_reads_a_large_answer_stalls_nobody() {
    let server = Server::start();
    let token = server.register("big");
    assert_eq!(server.put("huge", &token, &[], &vec![9u8; 32 * 1024 * 1024]).status, 201);
    let mut sleepers: Vec<Conn> = (0..4).map(|_| server.connect()).collect();
    for conn in &mut sleepers {
        conn.send(
            format!("GET /v1/stores/huge HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes(),
        );
    }
    thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(server.get("/v1/stores", Some(&token)).status, 200);
        assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    }
}

#[test]
fn of_simultaneous_writes_with_one_etag_exactly_one_wins() {
    let server = Server::start();
    let token = server.register("racer");
    let mut etag = server.put("contested", &token, &[], b"v0").etag();
    for round in 0..5 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
        let racers: Vec<_> = (0..16)
            .map(|i| {
                let (addr, token, etag, barrier) = (server.addr, token.clone(), etag.clone(), barrier.clone());
                thread::spawn(move || {
                    let mut conn = Conn::open(addr);
                    let body = format!("round {round} writer {i}");
                    let head = format!(
                        "PUT /v1/stores/contested HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nIf-Match: {etag}\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    barrier.wait();
                    conn.send(format!("{head}{body}").as_bytes());
                    (conn.read_response(false), body)
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let winners: Vec<_> = results.iter().filter(|(resp, _)| resp.status == 200).collect();
        assert_eq!(winners.len(), 1, "round {round}: {:?}", results.iter().map(|(r, _)| r.status).collect::<Vec<_>>());
        assert!(results.iter().all(|(resp, _)| resp.status == 200 || resp.status == 412));
        let current = server.get("/v1/stores/contested", Some(&token));
        assert_eq!(current.body, winners[0].1.as_bytes());
        etag = current.etag();
        assert_eq!(etag, winners[0].0.etag());
    }
}

#[test]
fn reads_racing_writes_never_go_back_and_a_writer_reads_its_own_write() {
    let server = Server::start();
    let token = server.register("busy");
    let mut etag = server.put("hot", &token, &[], b"0").etag();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..8)
        .map(|i| {
            let (addr, token, done) = (server.addr, token.clone(), done.clone());
            thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let (mut last, mut reads) = (0u64, 0);
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    // Other reads in the same batches: a list and a miss.
                    if i % 2 == 0 {
                        assert_eq!(conn.request("GET", "/v1/stores", Some(&token), &[], b"").status, 200);
                        assert_eq!(conn.request("GET", "/v1/stores/missing", Some(&token), &[], b"").status, 404);
                    }
                    let resp = conn.request("GET", "/v1/stores/hot", Some(&token), &[], b"");
                    assert_eq!(resp.status, 200);
                    let seen: u64 = resp.text().parse().unwrap();
                    assert!(seen >= last, "reader {i} saw version {seen} after {last}");
                    (last, reads) = (seen, reads + 1);
                }
                reads
            })
        })
        .collect();
    let mut writer = server.connect();
    for version in 1..=60u64 {
        let body = version.to_string();
        let resp = writer.request("PUT", "/v1/stores/hot", Some(&token), &[("If-Match", &etag)], body.as_bytes());
        assert_eq!(resp.status, 200, "{}", resp.text());
        etag = resp.etag();
        let read = writer.request("GET", "/v1/stores/hot", Some(&token), &[], b"");
        assert_eq!((read.text(), read.etag()), (body, etag.clone()));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    assert_eq!(server.get("/v1/stores/hot", Some(&token)).text(), "60");
}
