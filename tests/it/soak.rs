//! The soak: mixed load from 32 clients for `SOAK_SECONDS` (default 60).
//! Not part of `cargo test`; run it with
//! `SOAK_SECONDS=60 cargo test --release --test it soak -- --ignored --nocapture`.

use crate::support::{Conn, Server};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const CLIENTS: usize = 32;

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    server_errors: AtomicU64,
}

fn body(client: usize, round: u64) -> Vec<u8> {
    let size = [1024, 4096, 16_384, 65_536][(round % 4) as usize];
    let mut out = format!("client {client} round {round} ").into_bytes();
    out.resize(size, (round % 251) as u8);
    out
}

/// One client: its own store written with If-Match and read back by token,
/// plus listings, feed reads and short-lived stores.
fn client(
    addr: std::net::SocketAddr,
    token: String,
    index: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> (String, Vec<u8>) {
    let mut conn = Conn::open(addr);
    let key = format!("/v1/stores/c{index}");
    let count = |resp: &crate::support::Resp| {
        tally.requests.fetch_add(1, Ordering::Relaxed);
        if resp.status >= 500 {
            tally.server_errors.fetch_add(1, Ordering::Relaxed);
        }
    };
    let first = body(index, 0);
    let created = conn.request("PUT", &key, Some(&token), &[("If-None-Match", "*")], &first);
    count(&created);
    assert_eq!(created.status, 201);
    let (mut etag, mut last) = (created.etag(), first);
    let mut round = 1;
    let mut since = 0;
    while !stop.load(Ordering::Relaxed) {
        let next = body(index, round);
        let put = conn.request("PUT", &key, Some(&token), &[("If-Match", &etag)], &next);
        count(&put);
        assert_eq!(put.status, 200, "client {index}: no one else writes this store");
        (etag, last) = (put.etag(), next);
        let got = conn.request("GET", &key, Some(&token), &[], b"");
        count(&got);
        assert_eq!((got.etag(), got.body.len()), (etag.clone(), last.len()), "client {index}: own write read back");
        assert!(got.body == last, "client {index}: own write read back intact");
        let changes = conn.request("GET", &format!("/v1/changes?since={since}"), Some(&token), &[], b"");
        count(&changes);
        since = changes.json()["seq"].as_i64().unwrap();
        if round % 10 == 0 {
            let temp = format!("/v1/stores/t{index}-{round}");
            let resp = conn.request("PUT", &temp, Some(&token), &[], b"short-lived");
            count(&resp);
            let resp = conn.request("DELETE", &temp, Some(&token), &[("If-Match", &resp.etag())], b"");
            count(&resp);
            let resp = conn.request("GET", "/v1/stores", Some(&token), &[], b"");
            count(&resp);
        }
        round += 1;
    }
    (etag, last)
}

#[test]
#[ignore = "a 60 s soak; run on purpose (see the module doc)"]
fn soak() {
    let seconds: u64 = std::env::var("SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let server = Server::start();
    let tokens: Vec<String> = (0..CLIENTS / 4).map(|a| server.register(&format!("soak{a}"))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (addr, token, stop, tally) =
                (server.addr, tokens[i / 4].clone(), Arc::clone(&stop), Arc::clone(&tally));
            thread::spawn(move || client(addr, token, i, stop, tally))
        })
        .collect();
    let warm_up = Duration::from_secs((seconds / 6).clamp(1, 10));
    thread::sleep(warm_up);
    let rss_warm = server.rss_kib();
    let mut samples = vec![rss_warm];
    while started.elapsed() < Duration::from_secs(seconds) {
        thread::sleep(Duration::from_secs(5).min(Duration::from_secs(seconds).saturating_sub(started.elapsed())));
        samples.push(server.rss_kib());
    }
    let rss_end = server.rss_kib();
    eprintln!("soak: RSS every 5 s after warm-up (KiB): {samples:?}");
    stop.store(true, Ordering::Relaxed);
    let finals: Vec<(String, Vec<u8>)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let elapsed = started.elapsed().as_secs_f64();

    for (i, (etag, last)) in finals.iter().enumerate() {
        let resp = server.get(&format!("/v1/stores/c{i}"), Some(&tokens[i / 4]));
        assert_eq!(&resp.etag(), etag, "client {i}: its last acknowledged write is the current version");
        assert!(&resp.body == last, "client {i}: intact");
    }
    let requests = tally.requests.load(Ordering::Relaxed);
    let errors = tally.server_errors.load(Ordering::Relaxed);
    eprintln!(
        "soak: {CLIENTS} clients, {elapsed:.0} s, {requests} requests ({:.0}/s), {errors} 5xx, RSS after warm-up {rss_warm} KiB, at end {rss_end} KiB ({:+.1} %)",
        requests as f64 / elapsed,
        (rss_end as f64 / rss_warm as f64 - 1.0) * 100.0
    );
    assert_eq!(errors, 0);
    assert!(rss_end as f64 <= rss_warm as f64 * 1.2, "RSS grew from {rss_warm} to {rss_end} KiB");
    let health = server.get("/v1/health", None);
    assert_eq!(health.json(), json!({"status": "ok"}));
}
