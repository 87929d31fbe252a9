//! Pagination of `GET /v1/stores` and `GET /v1/changes` (SPEC §4, §6):
//! `limit`, `after`, `more`, and cursors that continue exactly.

use crate::support::Server;
use serde_json::Value;
use std::collections::BTreeSet;

fn keys(page: &Value) -> Vec<String> {
    page["stores"].as_array().unwrap().iter().map(|s| s["key"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn store_listings_page_in_bytewise_key_order() {
    let server = Server::start();
    let token = server.register("pager");
    // Keys whose bytewise order differs from a case-folded or numeric one.
    let mut all: Vec<String> = (0..23).map(|i| format!("k{i}")).collect();
    all.extend(["B".into(), "a".into(), "é".into(), "z z".into()]);
    for key in &all {
        let path = key.replace(' ', "%20").replace('é', "%C3%A9");
        assert_eq!(server.put(&path, &token, &[], key.as_bytes()).status, 201, "{key}");
    }
    let mut expected = all.clone();
    expected.sort();
    let first = server.get("/v1/stores?limit=10", Some(&token)).json();
    assert_eq!(first["more"], true);
    let seq = first["seq"].clone();
    let mut seen = keys(&first);
    let mut after = seen.last().unwrap().clone();
    loop {
        let encoded: String = after.bytes().map(|b| format!("%{b:02X}")).collect();
        let page = server.get(&format!("/v1/stores?after={encoded}&limit=10"), Some(&token)).json();
        seen.extend(keys(&page));
        if page["more"] == false {
            break;
        }
        after = seen.last().unwrap().clone();
    }
    assert_eq!(seen, expected, "every store once, in bytewise order");
    assert_eq!(seq, server.get("/v1/stores", Some(&token)).json()["seq"]);
    let whole = server.get("/v1/stores", Some(&token)).json();
    assert_eq!((whole["more"].as_bool(), keys(&whole)), (Some(false), expected.clone()));
    let capped = server.get("/v1/stores?limit=5000", Some(&token)).json();
    assert_eq!(keys(&capped).len(), all.len(), "a limit above max_page is max_page");
    assert_eq!(server.get("/v1/info", None).json()["max_page"], 1000);
    for bad in ["limit=0", "limit=-1", "limit=x", "after=", "after=%FF", "after=%ZZ"] {
        let resp = server.get(&format!("/v1/stores?{bad}"), Some(&token));
        assert_eq!(resp.status, 400, "{bad}: {}", resp.text());
    }
}

#[test]
fn feed_pages_continue_exactly_where_they_stopped() {
    let server = Server::start();
    let token = server.register("feeder");
    for i in 0..12 {
        assert_eq!(server.put(&format!("s{i}"), &token, &[], b"x").status, 201);
    }
    for i in (0..12).step_by(3) {
        assert_eq!(
            server.call("DELETE", &format!("/v1/stores/s{i}"), Some(&token), &[("If-Match", "*")], b"").status,
            204
        );
    }
    let everything = server.get("/v1/changes?since=0&limit=1000", Some(&token)).json();
    let mut since = 0;
    let mut collected = Vec::new();
    let mut pages = 0;
    loop {
        let page = server.get(&format!("/v1/changes?since={since}&limit=3"), Some(&token)).json();
        let changes = page["changes"].as_array().unwrap();
        assert!(changes.len() <= 3);
        collected.extend(changes.iter().cloned());
        pages += 1;
        since = page["seq"].as_i64().unwrap();
        if page["more"] == false {
            assert_eq!(page["seq"], everything["seq"], "the last page's seq is the counter");
            break;
        }
        assert_eq!(page["seq"], changes.last().unwrap()["seq"], "a page with more stops at its last change");
    }
    // The first page (since=0) lists live stores only; the pages after it
    // (since > 0) also carry the tombstones of stores deleted after their
    // cursor, which a client that never saw those stores can ignore.
    let (live, tombstones): (Vec<Value>, Vec<Value>) = collected.iter().cloned().partition(|c| !c["token"].is_null());
    assert_eq!(&live, everything["changes"].as_array().unwrap());
    let deleted: BTreeSet<&str> = tombstones.iter().map(|c| c["key"].as_str().unwrap()).collect();
    assert_eq!(deleted, BTreeSet::from(["s0", "s3", "s6", "s9"]));
    assert_eq!(pages, 4, "8 live stores and 4 tombstones in pages of 3");
    let seqs: BTreeSet<i64> = collected.iter().map(|c| c["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs.len(), collected.len(), "no change twice");
    // With tombstones (since > 0) they page the same way.
    let since_start = server.get("/v1/changes?since=1&limit=4", Some(&token)).json();
    assert_eq!(since_start["more"], true);
    assert_eq!(server.get("/v1/changes?since=0&limit=0", Some(&token)).status, 400);
}

/// Review finding: once pruning raised the horizon past old live entries,
/// a paged since=0 walk got 410 on its second page and could never finish.
#[test]
fn a_walk_from_zero_finishes_after_old_tombstones_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let server = crate::support::Server::start_in(&root, crate::support::Options::default());
    let token = server.register("old-timer");
    for key in ["k1", "k2", "k3", "k4", "k5"] {
        assert_eq!(server.put(key, &token, &[], b"x").status, 201);
    }
    assert_eq!(server.call("DELETE", "/v1/stores/k2", Some(&token), &[("If-Match", "*")], b"").status, 204);
    drop(server);
    // Thirty-one days pass: the deletion's tombstone is pruned at the next start.
    let month_ago = (std::time::SystemTime::now() - std::time::Duration::from_secs(31 * 86_400))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    crate::support::database(&root).execute("UPDATE change_log SET changed = ?1", [month_ago]).unwrap();
    let server = crate::support::Server::start_in(&root, crate::support::Options::default());
    let mut since = 0;
    let mut keys = Vec::new();
    for _ in 0..10 {
        let resp = server.get(&format!("/v1/changes?since={since}&limit=1"), Some(&token));
        assert_eq!(resp.status, 200, "page after since={since}: {}", resp.text());
        let page = resp.json();
        keys.extend(page["changes"].as_array().unwrap().iter().map(|c| c["key"].as_str().unwrap().to_owned()));
        since = page["seq"].as_i64().unwrap();
        if page["more"] == false {
            break;
        }
    }
    assert_eq!(keys, ["k1", "k3", "k4", "k5"]);
    // A stale cursor below the horizon that no walk was given is still 410.
    assert_eq!(server.get("/v1/changes?since=2", Some(&token)).status, 410);
}

/// A listing page can be larger than one client address's share of the
/// memory for unsent answers (8 MiB): 1,000 stores with 400-byte keys and
/// 8,000 bytes of metadata each make a page of about 8.6 MB, which is still
/// served when asked for alone.
#[test]
fn a_page_larger_than_an_address_share_is_served_when_asked_for_alone() {
    let server = Server::start();
    let token = server.register("lister");
    let (meta, long) = ("m".repeat(8000), "k".repeat(400));
    for i in 0..1000 {
        let resp = server.put(&format!("{i:04}-{long}"), &token, &[("Sync-Meta", &meta)], b"x");
        assert_eq!(resp.status, 201, "{}", resp.text());
    }
    let page = server.get("/v1/stores", Some(&token));
    assert_eq!(page.status, 200, "{}", page.text().chars().take(200).collect::<String>());
    assert!(page.body.len() > 8 * 1024 * 1024, "{} bytes", page.body.len());
    assert_eq!(page.json()["stores"].as_array().unwrap().len(), 1000);
}
