//! Slow and greedy clients (SPEC §1 "Slow clients", issue 12): every phase
//! of a connection has a deadline, answers that need no body do not wait
//! for it, connection slots are capped per address, and idle connections
//! are shed before anyone is turned away.

use crate::support::{Conn, Options, Resp, Server};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// A connection from another loopback address (127.0.0.x), so per-address
/// caps can be told apart.
fn connect_from(source: [u8; 4], server: SocketAddr) -> Conn {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&server.into()).unwrap();
    Conn::over(socket.into())
}

/// Whether a fresh connection gets `/v1/health` answered 200.
fn healthy(server: &Server, source: [u8; 4]) -> bool {
    let mut conn = connect_from(source, server.addr);
    conn.send(b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n");
    conn.try_read_response(false).is_some_and(|resp| resp.status == 200)
}

#[test]
fn trickled_json_bodies_get_408_within_the_deadline_and_free_their_slots() {
    let server = Server::start_with(Options::default().env("MAX_CONNECTIONS", "20"));
    let started = Instant::now();
    let mut trickles: Vec<Conn> = (0..20)
        .map(|_| {
            let mut conn = server.connect();
            conn.send(b"POST /v1/accounts HTTP/1.1\r\nHost: t\r\nContent-Length: 60000\r\n\r\n{");
            conn
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    assert!(!healthy(&server, [127, 0, 0, 1]), "every slot is held (none is idle)");
    // Keep feeding a byte now and then: it does not extend the deadline.
    for _ in 0..4 {
        for conn in &mut trickles {
            let _ = conn.stream.write_all(b" ");
        }
        thread::sleep(Duration::from_secs(2));
    }
    let answers: Vec<Option<Resp>> = trickles.iter_mut().map(|conn| conn.try_read_response(false)).collect();
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(13), "answered by the 10 s body deadline: {waited:?}");
    for answer in &answers {
        let answer = answer.as_ref().expect("a 408 before the close");
        assert_eq!((answer.status, answer.error()), (408, "request_timeout".into()));
    }
    // Once the clients hear their answer and go, their slots are free.
    drop(trickles);
    thread::sleep(Duration::from_millis(200));
    assert!(healthy(&server, [127, 0, 0, 1]), "the slots are free again");
}

#[test]
fn a_trickled_head_gets_408_and_a_slow_store_body_is_cut_off_changing_nothing() {
    let server = Server::start();
    let token = server.register("slowpoke");
    let etag = server.put("k", &token, &[], b"kept").etag();
    let mut head = server.connect();
    let mut upload = server.connect();
    upload.send(
        format!(
            "PUT /v1/stores/k HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nIf-Match: {etag}\r\nContent-Length: 100000\r\n\r\n"
        )
        .as_bytes(),
    );
    let started = Instant::now();
    let mut head_answer = None;
    let mut upload_answer = None;
    for i in 0..14 {
        if head_answer.is_none() {
            let _ = head.stream.write_all(&b"GET /v1/health HTTP/1.1\r\nHost: t\r\n"[i % 10..i % 10 + 1]);
        }
        // 100 bytes a second: far below 4 KiB/s.
        let _ = upload.stream.write_all(&[b'x'; 100]);
        thread::sleep(Duration::from_secs(1));
        if i == 11 {
            head.stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            upload.stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            head_answer = head.try_read_response(false);
            upload_answer = upload.try_read_response(false);
            break;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(14));
    assert_eq!(head_answer.map(|r| r.status), Some(408), "a head trickled for over 10 s");
    assert_eq!(upload_answer.map(|r| r.status), Some(408), "a store body under 4 KiB/s after 10 s");
    assert_eq!(server.get("/v1/stores/k", Some(&token)).body, b"kept");
    assert!(crate::support::temp_files(&server.root).is_empty(), "the staged part is gone");
}

#[test]
fn answers_that_need_no_body_do_not_wait_for_it() {
    let server = Server::start_with(Options::default().env("MAX_STORE_BYTES", "1000000"));
    let token = server.register("early");
    // No token, 10 MB announced, nothing of it sent: 413 by header comes
    // first (SPEC §1 order), at once.
    let mut conn = server.connect();
    let started = Instant::now();
    conn.send(b"PUT /v1/stores/x HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert!(started.elapsed() < Duration::from_secs(1));
    // Within the limit but without a token: 401 at once, then closed.
    let mut conn = server.connect();
    let started = Instant::now();
    conn.send(b"PUT /v1/stores/x HTTP/1.1\r\nHost: t\r\nContent-Length: 900000\r\n\r\nsome");
    let resp = conn.read_response(false);
    assert_eq!(resp.status, 401);
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert_eq!(resp.header("Connection"), Some("close"));
    // A small body is drained and the connection kept.
    let mut conn = server.connect();
    let missing = conn.request("PUT", "/v1/stores/x", Some(&token), &[("If-Match", "\"nope\"")], b"tiny");
    assert_eq!(missing.status, 412);
    assert_eq!(conn.request("GET", "/v1/health", None, &[], b"").status, 200, "kept alive after a drained body");
}

#[test]
fn one_address_cannot_take_every_slot() {
    let server =
        Server::start_with(Options::default().env("MAX_CONNECTIONS", "40").env("MAX_CONNECTIONS_PER_ADDRESS", "8"));
    // The greedy address fills its 8 slots with heads that never finish.
    let greedy: Vec<Conn> = (0..8)
        .map(|_| {
            let mut conn = connect_from([127, 0, 0, 2], server.addr);
            conn.send(b"GET /v1/health HTTP/1.1\r\n");
            conn
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    let mut ninth = connect_from([127, 0, 0, 2], server.addr);
    ninth.send(b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n");
    let refused = ninth.try_read_response(false).expect("a 503");
    assert_eq!((refused.status, refused.error()), (503, "unavailable".into()));
    assert!(refused.header("Retry-After").is_some());
    assert!(healthy(&server, [127, 0, 0, 3]), "another address gets in at once");
    drop(greedy);
}

#[test]
fn idle_connections_are_shed_before_anyone_gets_503() {
    let server = Server::start_with(Options::default().env("MAX_CONNECTIONS", "6"));
    // Six keep-alive connections that made one request and now wait.
    let mut kept: Vec<Conn> = (0..6).map(|_| server.connect()).collect();
    for conn in &mut kept {
        assert_eq!(conn.request("GET", "/v1/health", None, &[], b"").status, 200);
    }
    for _ in 0..3 {
        assert!(healthy(&server, [127, 0, 0, 1]), "a kept-alive idle connection made room");
    }
    for conn in &mut kept {
        conn.stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    }
    let shed = kept.iter_mut().map(Conn::is_closed).filter(|&closed| closed).count();
    assert!(shed >= 1, "idle connections were closed to make room");
    // Connections that never send anything count as idle after a second.
    drop(kept);
    thread::sleep(Duration::from_millis(200));
    let _silent: Vec<TcpStream> = (0..6).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    thread::sleep(Duration::from_millis(200));
    assert!(!healthy(&server, [127, 0, 0, 1]), "silent for less than a second: not idle yet");
    thread::sleep(Duration::from_millis(1000));
    assert!(healthy(&server, [127, 0, 0, 1]), "silent for a second: shed");
}

#[test]
fn the_password_hashing_queue_is_bounded() {
    let server = Server::start_with(Options::default().env("PBKDF2_ITERATIONS", "20000").env("TRUST_PROXY", "1"));
    let mut conns: Vec<Conn> = (0..90).map(|_| server.connect()).collect();
    for (i, conn) in conns.iter_mut().enumerate() {
        let body = json!({"id": format!("nobody{i}"), "password": "wrong password"}).to_string();
        conn.send(
            format!(
                "POST /v1/sessions HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 198.51.100.{i}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    let statuses: Vec<u16> = conns.iter_mut().map(|conn| conn.read_response(false).status).collect();
    let hashed = statuses.iter().filter(|&&s| s == 401).count();
    let refused = statuses.iter().filter(|&&s| s == 503).count();
    assert_eq!(hashed + refused, 90, "{statuses:?}");
    assert!(hashed <= 64 && refused >= 26, "at most 64 waiting: {hashed} hashed, {refused} refused");
    let mut buf = [0u8; 1];
    let _ = conns[0].stream.read(&mut buf);
}

#[test]
fn an_upload_fast_at_first_then_trickling_is_cut_off_within_the_window() {
    let server = Server::start();
    let token = server.register("sprinter");
    let mut upload = server.connect();
    upload.send(
        format!(
            "PUT /v1/stores/k HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: 4000000\r\n\r\n"
        )
        .as_bytes(),
    );
    // 2 MiB at once would, as an average since the start, buy 512 s.
    upload.send(&vec![b'x'; 2 * 1024 * 1024]);
    let started = Instant::now();
    upload.stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let answer = loop {
        let _ = upload.stream.write_all(b"x");
        if let Some(answer) = upload.try_read_response(false) {
            break answer;
        }
        assert!(started.elapsed() < Duration::from_secs(45), "still open after 45 s");
        thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(answer.status, 408);
    assert!(started.elapsed() >= Duration::from_secs(25), "the bytes sent bought their 30 s");
    assert_eq!(server.get("/v1/stores/k", Some(&token)).status, 404);
}

#[test]
fn a_reader_slower_than_the_send_pace_is_cut_off() {
    let server = Server::start_with(crate::support::Options::default().env("MAX_STORE_BYTES", "40000000"));
    let token = server.register("reader");
    assert_eq!(server.put("big", &token, &[], &vec![7u8; 32 * 1024 * 1024]).status, 201);
    let mut conn = server.connect();
    conn.send(format!("GET /v1/stores/big HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes());
    conn.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut received = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    // 1 KiB a second (a quarter of the pace) for 50 s; the server stops
    // sending meanwhile. Then what the socket buffers hold is read at
    // once: the answer ends well short of its length.
    while started.elapsed() < Duration::from_secs(50) {
        match std::io::Read::read(&mut conn.stream, &mut buf[..1024]) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
        thread::sleep(Duration::from_secs(1));
    }
    let ended = loop {
        match std::io::Read::read(&mut conn.stream, &mut buf) {
            Ok(0) | Err(_) => break started.elapsed(),
            Ok(n) => received += n,
        }
    };
    assert!(received < 24 * 1024 * 1024, "cut off before the end ({received} bytes)");
    assert!(ended >= Duration::from_secs(10), "the grace was given ({ended:?})");
}

#[test]
fn four_addresses_trickling_heads_do_not_keep_a_fifth_out() {
    // With the default of 32 per address four addresses hold half the
    // slots; an operator who raised it lets them fill the server.
    let server =
        Server::start_with(Options::default().env("MAX_CONNECTIONS", "256").env("MAX_CONNECTIONS_PER_ADDRESS", "64"));
    // 4 × 64 connections fill the server, each with a head still arriving.
    let mut trickling: Vec<Conn> = Vec::new();
    for from in 2..=5u8 {
        for _ in 0..64 {
            let mut conn = connect_from([127, 0, 0, from], server.addr);
            conn.send(b"GET /v1/health HTTP/1.1\r\nHost: t\r\n");
            trickling.push(conn);
        }
    }
    thread::sleep(Duration::from_millis(300));
    let probes: Vec<bool> = (0..20).map(|_| healthy(&server, [127, 0, 0, 6])).collect();
    assert!(probes.iter().all(|&ok| ok), "a fifth address was turned away: {probes:?}");
    let shed = trickling.iter_mut().map(|conn| conn.is_closed()).filter(|&closed| closed).count();
    assert!((1..=20).contains(&shed), "{shed} trickling connections were shed to make room");
}

#[test]
fn behind_a_trusted_proxy_the_connection_cap_applies_to_each_forwarded_client() {
    let server = Server::start_with(Options::default().env("TRUST_PROXY", "1").env("MAX_CONNECTIONS_PER_ADDRESS", "4"));
    let token = server.register("poller");
    let seq = server.get("/v1/changes?since=0", Some(&token)).json()["seq"].as_i64().unwrap();
    let poll = |from: &str| {
        let mut conn = server.connect();
        conn.send(
            format!(
                "GET /v1/changes?since={seq}&wait=30 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nX-Forwarded-For: {from}\r\n\r\n"
            )
            .as_bytes(),
        );
        conn
    };
    let mut held: Vec<Conn> = (0..4).map(|_| poll("198.51.100.1")).collect();
    thread::sleep(Duration::from_millis(300));
    let mut fifth = poll("198.51.100.1");
    let refused = fifth.read_response(false);
    assert_eq!((refused.status, refused.error().as_str()), (503, "unavailable"));
    let mut other = poll("198.51.100.2");
    other.stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    assert!(other.try_read_response(false).is_none(), "another client's long-poll is held, not refused");
    for conn in &mut held {
        conn.stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        assert!(conn.try_read_response(false).is_none(), "the first four are still held");
    }
}

#[test]
fn a_connection_closes_after_its_thousandth_request() {
    let server = Server::start();
    let mut conn = server.connect();
    for n in 1..=1000 {
        let answer = conn.request("GET", "/v1/health", None, &[], b"");
        assert_eq!(answer.status, 200);
        let closing = answer.header("Connection") == Some("close");
        assert_eq!(closing, n == 1000, "request {n}");
    }
    assert!(conn.is_closed());
}

#[test]
fn stalled_small_bodies_hold_no_thread() {
    // 320 connections from 10 addresses each send a head and never its
    // 100-byte body (JSON, and chunked): the bodies are awaited in the
    // waiting room, so the work threads stay free for a victim.
    let server = Server::start();
    let mut stalled = Vec::new();
    for from in 10..20u8 {
        for i in 0..32 {
            let mut conn = connect_from([127, 0, 0, from], server.addr);
            let head = if i % 2 == 0 {
                "POST /v1/accounts HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            } else {
                "POST /v1/accounts HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n{"
            };
            conn.send(head.as_bytes());
            stalled.push(conn);
        }
    }
    thread::sleep(Duration::from_millis(300));
    let threads = std::fs::read_dir(format!("/proc/{}/task", server.pid())).unwrap().count();
    assert!(threads < 40, "{threads} threads for 320 stalled bodies");
    for _ in 0..20 {
        let started = Instant::now();
        assert!(healthy(&server, [127, 0, 0, 30]));
        assert!(started.elapsed() < Duration::from_secs(1), "health took {:?}", started.elapsed());
    }
    // Each still gets its 408 at the body's deadline.
    let mut first = stalled.swap_remove(0);
    assert_eq!(first.try_read_response(false).map(|resp| resp.status), Some(408));
}

#[test]
fn stalled_uploads_and_unread_downloads_hold_no_thread() {
    // 320 connections from 10 addresses with an account: half begin a
    // 1 MB store upload and stall after its first bytes, half ask for a
    // 4 MB store and never read it. Between the pieces a body or an
    // answer waits for its socket in the room, so the work threads stay
    // free for everyone else. (Before, each held a work thread until its
    // pace ran out, and a victim waited 47 s behind them.)
    let server = Server::start();
    let token = server.register("heavy");
    assert_eq!(server.put("big", &token, &[], &vec![3u8; 4 * 1024 * 1024]).status, 201);
    let mut stalled = Vec::new();
    for from in 10..20u8 {
        for i in 0..32 {
            let mut conn = connect_from([127, 0, 0, from], server.addr);
            let request = if i % 2 == 0 {
                format!(
                    "PUT /v1/stores/up-{from}-{i} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
                     Content-Length: 1000000\r\n\r\nfirst bytes"
                )
            } else {
                format!("GET /v1/stores/big HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n")
            };
            conn.send(request.as_bytes());
            stalled.push(conn);
        }
    }
    thread::sleep(Duration::from_millis(500));
    // A thread blocked in a socket's read or write sleeps in the kernel's
    // `wait_woken`; idle work threads wait on a futex, the room in epoll.
    let on_sockets = std::fs::read_dir(format!("/proc/{}/task", server.pid()))
        .unwrap()
        .flatten()
        .filter(|task| std::fs::read_to_string(task.path().join("wchan")).is_ok_and(|at| at == "wait_woken"))
        .count();
    assert_eq!(on_sockets, 0, "threads waiting on a socket for 320 stalled transfers");
    for _ in 0..20 {
        let started = Instant::now();
        assert!(healthy(&server, [127, 0, 0, 30]));
        assert!(started.elapsed() < Duration::from_secs(1), "health took {:?}", started.elapsed());
    }
    let victim_token = server.register("victim");
    assert_eq!(server.put("mine", &victim_token, &[], b"written meanwhile").status, 201);
    // A download that waited is whole once it is read.
    let mut reader = stalled.swap_remove(1);
    reader.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let answer = reader.read_response(false);
    assert_eq!((answer.status, answer.body.len()), (200, 4 * 1024 * 1024));
}

#[test]
fn requests_still_arriving_hold_no_more_than_the_request_memory() {
    // 1,200 connections from 40 addresses each send a head and 62,000 bytes
    // of a 64 KiB JSON body, and stop: 74 MB if the room kept them all.
    let server = Server::start_with(Options::default().env("MAX_CONNECTIONS", "2000"));
    let idle = server.rss_kib();
    let body = vec![b' '; 62_000];
    let mut held = Vec::new();
    for n in 0..1200u32 {
        let mut conn = connect_from([127, 0, 3, 1 + (n / 30) as u8], server.addr);
        conn.send(
            b"POST /v1/accounts HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 65536\r\n\r\n",
        );
        conn.send(&body);
        held.push(conn);
    }
    thread::sleep(Duration::from_millis(500));
    let grown_mib = server.rss_kib().saturating_sub(idle) / 1024;
    // The budget (32 MiB) and 2 KiB of each: 35 MiB, with room for the rest.
    assert!(grown_mib < 48, "{grown_mib} MiB held for 1,200 unfinished requests");
    let refused = held
        .iter_mut()
        .filter_map(|conn| {
            // Refused at once, so any answer is here by now.
            conn.stream.set_nonblocking(true).unwrap();
            conn.try_read_response(false)
        })
        .filter(|resp| resp.status == 503 && resp.header("Retry-After") == Some("1"))
        .count();
    assert!(refused >= 500, "only {refused} of 1,200 refused with 503");
    // A small request (counted from nothing) still gets in meanwhile.
    assert!(healthy(&server, [127, 0, 4, 1]));
    let mut small = connect_from([127, 0, 4, 2], server.addr);
    small.send(
        b"POST /v1/sessions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert_eq!(small.read_response(false).status, 400);
}
