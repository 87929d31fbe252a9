//! Graceful shutdown (SPEC §8): SIGTERM or SIGINT stops accepting, answers
//! held long-polls with no changes, lets requests in flight finish for up
//! to 10 s, and exits 0; an upload cut off changes nothing.

use crate::support::{Conn, Options, Server, cli};
use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn sigterm_answers_polls_finishes_uploads_in_time_and_cuts_off_the_stalled_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let mut server = Server::start_in(&root, Options::default());
    let token = server.register("stopping");
    assert_eq!(server.put("before", &token, &[], b"kept").status, 201);
    let since = server.get("/v1/changes?since=0", Some(&token)).json()["seq"].as_i64().unwrap();

    let pollers: Vec<_> = (0..3)
        .map(|_| {
            let (addr, token) = (server.addr, token.clone());
            thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let resp = conn.request("GET", &format!("/v1/changes?since={since}&wait=60"), Some(&token), &[], b"");
                (resp, Instant::now())
            })
        })
        .collect();
    // An upload that is half sent when the signal comes and completes soon after.
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let mut finishing = Conn::open(server.addr);
    let head = format!(
        "PUT /v1/stores/finishing HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    finishing.send(head.as_bytes());
    finishing.send(&body[..10_000]);
    // One that stalls for good.
    let mut stalled = Conn::open(server.addr);
    let head = format!(
        "PUT /v1/stores/stalled HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: 10000\r\n\r\n"
    );
    stalled.send(head.as_bytes());
    stalled.send(&[7u8; 100]);
    server.wait_held(3, 0);
    // The uploads' bytes reach the server.
    thread::sleep(Duration::from_millis(300));

    let addr = server.addr;
    let signalled = Instant::now();
    let finisher = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "no longer accepting");
        finishing.stream.write_all(&body[10_000..]).unwrap();
        let resp = finishing.read_response(false);
        let closes = finishing.is_closed();
        (resp, closes, body)
    });
    let (code, took) = server.stop_with("TERM");
    assert_eq!(code, Some(0), "{}", server.log());
    assert!(took < Duration::from_secs(12), "stopped after {took:?}");
    assert!(took >= Duration::from_secs(9), "waited for the stalled upload until the grace ran out: {took:?}");

    for poller in pollers {
        let (resp, answered) = poller.join().unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["changes"].as_array().unwrap().len(), 0, "{}", resp.text());
        assert!(answered.duration_since(signalled) < Duration::from_secs(2), "polls are answered at once");
    }
    let (resp, closes, body) = finisher.join().unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert!(closes, "the connection closes after its answer");

    let restarted = Server::start_in(&root, Options::default());
    let finished = restarted.get("/v1/stores/finishing", Some(&token));
    assert_eq!((finished.status, finished.body), (200, body), "the finished upload is durable");
    assert_eq!(restarted.get("/v1/stores/stalled", Some(&token)).status, 404, "the cut-off upload changed nothing");
    assert_eq!(restarted.get("/v1/stores/before", Some(&token)).body, b"kept");
    drop(restarted);
    let (code, stdout, _) = cli(&root, &["check"], &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(!stdout.contains("leftover"), "{stdout}");
}

#[test]
fn sigint_with_idle_connections_exits_0_at_once() {
    let mut server = Server::start();
    let token = server.register("idle");
    // Keep-alive connections that are between requests do not hold the exit.
    let mut idle: Vec<Conn> = (0..5).map(|_| server.connect()).collect();
    for conn in &mut idle {
        assert_eq!(conn.request("GET", "/v1/account", Some(&token), &[], b"").status, 200);
    }
    let (code, took) = server.stop_with("INT");
    assert_eq!(code, Some(0), "{}", server.log());
    assert!(took < Duration::from_secs(2), "stopped after {took:?}");
    let log = server.log_when(|log| log.contains("stopped"));
    assert!(log.contains("stopped"), "{log}");
}
