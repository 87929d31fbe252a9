//! The feed as a stream of server-sent events (SPEC §6.1): pending pages
//! at once, an event per commit, resuming with `Last-Event-ID`, `gone`,
//! keep-alive comments, revocation, shutdown and CORS.

use crate::support::{Conn, Options, Server, request_bytes};
use serde_json::{Value, json};
use std::io::Read;
use std::time::{Duration, Instant};

/// One stream as its client reads it.
struct Stream {
    conn: Conn,
    buffered: Vec<u8>,
    head: String,
}

/// What arrives on a stream.
#[derive(Debug, PartialEq)]
enum Item {
    Event {
        id: Option<i64>,
        kind: String,
        data: Value,
    },
    Comment(String),
    /// The server closed the connection.
    End,
    /// Nothing arrived within the wait.
    Silence,
}

impl Stream {
    fn open(server: &Server, token: &str, query: &str, headers: &[(&str, &str)]) -> Stream {
        let mut conn = server.connect();
        let mut all = vec![("Accept", "text/event-stream")];
        all.extend_from_slice(headers);
        conn.send(&request_bytes("GET", &format!("/v1/changes{query}"), Some(token), &all, b""));
        let mut stream = Stream { conn, buffered: Vec::new(), head: String::new() };
        let end = loop {
            if let Some(end) = stream.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            assert!(
                stream.read_more(Duration::from_secs(10)),
                "no head: {:?}",
                String::from_utf8_lossy(&stream.buffered)
            );
        };
        stream.head = String::from_utf8(stream.buffered.drain(..end).collect()).unwrap();
        stream
    }

    fn read_more(&mut self, wait: Duration) -> bool {
        self.conn.stream.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 65536];
        match self.conn.stream.read(&mut chunk) {
            Ok(n @ 1..) => {
                self.buffered.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// The next event or comment, waiting at most `wait` for it.
    fn next(&mut self, wait: Duration) -> Item {
        let until = Instant::now() + wait;
        loop {
            if let Some(end) = self.buffered.windows(2).position(|w| w == b"\n\n") {
                let block = String::from_utf8(self.buffered.drain(..end + 2).collect()).unwrap();
                return parse(&block);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Item::Silence;
            }
            self.conn.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.conn.stream.read(&mut chunk) {
                Ok(0) => return Item::End,
                Ok(n) => self.buffered.extend_from_slice(&chunk[..n]),
                Err(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Item::Silence;
                }
                Err(_) => return Item::End,
            }
        }
    }

    fn next_event(&mut self) -> (i64, Value) {
        match self.next(Duration::from_secs(10)) {
            Item::Event { id: Some(id), kind, data } if kind == "changes" => (id, data),
            other => panic!("expected a changes event, got {other:?}"),
        }
    }
}

fn parse(block: &str) -> Item {
    if let Some(comment) = block.strip_prefix(':') {
        return Item::Comment(comment.trim().to_owned());
    }
    let (mut id, mut kind, mut data) = (None, String::new(), Value::Null);
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("id: ") {
            id = Some(value.parse().unwrap());
        } else if let Some(value) = line.strip_prefix("event: ") {
            kind = value.to_owned();
        } else if let Some(value) = line.strip_prefix("data: ") {
            data = serde_json::from_str(value).unwrap();
        }
    }
    Item::Event { id, kind, data }
}

fn keys(data: &Value) -> Vec<&str> {
    data["changes"].as_array().unwrap().iter().map(|change| change["key"].as_str().unwrap()).collect()
}

#[test]
fn a_stream_sends_what_is_pending_then_an_event_per_commit_and_resumes_exactly() {
    let server = Server::start();
    let token = server.register("streamer");
    assert_eq!(server.put("a", &token, &[], b"1").status, 201);
    let mut stream = Stream::open(&server, &token, "?since=0", &[]);
    assert!(stream.head.starts_with("HTTP/1.1 200"), "{}", stream.head);
    for header in ["Content-Type: text/event-stream", "Cache-Control: no-store", "X-Accel-Buffering: no"] {
        assert!(stream.head.contains(header), "{header} in {}", stream.head);
    }
    let (first, data) = stream.next_event();
    assert_eq!((keys(&data), data["seq"].as_i64(), data["more"].as_bool()), (vec!["a"], Some(first), Some(false)));
    assert_eq!(stream.next(Duration::from_millis(300)), Item::Silence, "no event with empty changes");
    assert_eq!(server.put("b", &token, &[], b"2").status, 201);
    let (second, data) = stream.next_event();
    assert_eq!(keys(&data), vec!["b"]);
    assert!(second > first);
    drop(stream);
    // Two commits while away: a stream resumed from the last id sees both, and nothing before.
    assert_eq!(server.put("c", &token, &[], b"3").status, 201);
    assert_eq!(server.put("d", &token, &[], b"4").status, 201);
    let last = second.to_string();
    let mut resumed = Stream::open(&server, &token, "", &[("Last-Event-ID", &last)]);
    let (_, data) = resumed.next_event();
    assert_eq!(keys(&data), vec!["c", "d"], "Last-Event-ID takes the place of since");
}

#[test]
fn pending_changes_come_in_pages_and_a_lost_cursor_is_gone() {
    let server = Server::start();
    let token = server.register("pager");
    // 1,001 grants' worth of changes: more than one page (max_page 1000).
    for i in 0..1001 {
        assert_eq!(server.put(&format!("k{i}"), &token, &[], b"x").status, 201);
    }
    let mut stream = Stream::open(&server, &token, "?since=0&limit=5", &[]);
    let (page_one, data) = stream.next_event();
    assert_eq!((keys(&data).len(), data["more"].as_bool()), (1000, Some(true)), "limit does not apply to streams");
    assert_eq!(data["seq"].as_i64(), Some(page_one));
    let (_, data) = stream.next_event();
    assert_eq!((keys(&data), data["more"].as_bool()), (vec!["k1000"], Some(false)));
    let mut gone = Stream::open(&server, &token, "?since=999999", &[]);
    assert_eq!(gone.next(Duration::from_secs(5)), Item::Event { id: None, kind: "gone".into(), data: json!({}) });
    assert_eq!(gone.next(Duration::from_secs(5)), Item::End, "the stream ends after gone");
    let bad = server.call(
        "GET",
        "/v1/changes",
        Some(&token),
        &[("Accept", "text/event-stream"), ("Last-Event-ID", "x")],
        b"",
    );
    assert_eq!(bad.status, 400);
}

#[test]
fn signing_out_ends_the_stream_at_once_with_nothing_more_sent() {
    let server = Server::start();
    let token = server.register("leaver");
    let mut stream = Stream::open(&server, &token, "?since=0", &[]);
    server.wait_held(0, 1);
    let started = Instant::now();
    assert_eq!(server.call("DELETE", "/v1/sessions/current", Some(&token), &[], b"").status, 204);
    assert_eq!(stream.next(Duration::from_secs(5)), Item::End);
    assert!(started.elapsed() < Duration::from_secs(2), "ended at once: {:?}", started.elapsed());
}

#[test]
fn a_silent_stream_gets_a_comment_every_25_seconds() {
    let server = Server::start();
    let token = server.register("quiet");
    let mut stream = Stream::open(&server, &token, "?since=0", &[]);
    let started = Instant::now();
    assert_eq!(stream.next(Duration::from_secs(30)), Item::Comment("keep-alive".into()));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(24) && waited < Duration::from_secs(27), "{waited:?}");
    assert_eq!(server.put("late", &token, &[], b"x").status, 201);
    assert_eq!(keys(&stream.next_event().1), vec!["late"], "still live after the comment");
}

#[test]
fn sigterm_ends_streams_cleanly_and_the_answer_carries_cors() {
    let mut server = Server::start_with(Options::default().env("CORS_ORIGINS", "https://app.example"));
    let token = server.register("stopper");
    let mut stream = Stream::open(&server, &token, "?since=0", &[("Origin", "https://app.example")]);
    assert!(stream.head.contains("Access-Control-Allow-Origin: https://app.example"), "{}", stream.head);
    let preflight = server.call(
        "OPTIONS",
        "/v1/changes",
        None,
        &[("Origin", "https://app.example"), ("Access-Control-Request-Headers", "last-event-id")],
        b"",
    );
    assert!(preflight.header("Access-Control-Allow-Headers").unwrap().contains("Last-Event-ID"));
    server.wait_held(0, 1);
    let (code, took) = server.stop_with("TERM");
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "a held stream does not hold up the shutdown: {took:?}");
    assert_eq!(stream.next(Duration::from_secs(5)), Item::End);
}

#[test]
fn hundreds_of_streams_and_thousands_of_idle_connections_hold_no_thread() {
    let server = Server::start_with(Options::default().env("MAX_CONNECTIONS_PER_ADDRESS", "5000"));
    // 60 streams for each of 8 accounts (an account holds at most 64).
    let tokens: Vec<String> = (0..8).map(|i| server.register(&format!("many{i}"))).collect();
    let mut streams: Vec<Stream> = (0..480).map(|i| Stream::open(&server, &tokens[i % 8], "?since=0", &[])).collect();
    let idle: Vec<Conn> = (0..1500).map(|_| server.connect()).collect();
    // Every connection is in the room: a head sent on a new one is answered.
    assert_eq!(server.get("/v1/health", None).status, 200);
    let threads = std::fs::read_dir(format!("/proc/{}/task", server.pid())).unwrap().count();
    assert!(threads < 40, "{threads} threads for about 2,000 waiting connections");
    let started = Instant::now();
    for (i, token) in tokens.iter().enumerate() {
        assert_eq!(server.put(&format!("news{i}"), token, &[], b"x").status, 201);
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        assert_eq!(keys(&stream.next_event().1), vec![format!("news{}", i % 8)]);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    drop(idle);
}
