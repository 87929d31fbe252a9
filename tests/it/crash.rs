//! Crash safety: `kill -9` in the middle of a storm of conditional writes,
//! then a restart on the same data directory.

use crate::support::{Conn, Options, Server, cli, request_bytes, store_files, temp_files};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WRITERS: u64 = 6;

/// Kill rounds of the mixed test: 20 by default (about 20 s), more with
/// `SYNC_NODE_CRASH_ROUNDS` (`scripts/kill9-rounds.sh` runs 100).
fn rounds() -> usize {
    std::env::var("SYNC_NODE_CRASH_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(20)
}
const SIZES: [usize; 5] = [0, 17, 10 * 1024, 300 * 1024, 2 * 1024 * 1024];

/// The body of `version` of `writer`'s store: a header naming both, then a
/// pattern only that version has, so a torn or mixed file cannot pass.
fn body(writer: u64, version: u64) -> Vec<u8> {
    let size = SIZES[((writer + version * 3) % SIZES.len() as u64) as usize].max(16);
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&writer.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend((16..size).map(|i| (i as u64).wrapping_mul(31).wrapping_add(writer * 7 + version * 13) as u8));
    out
}

/// What one writer knows when the server dies.
#[derive(Default, Debug)]
struct Writer {
    acked: Option<(u64, String)>,
    in_flight: Option<u64>,
}

fn storm(addr: SocketAddr, token: &str, writer: u64, start: Option<(u64, String)>, stop: &AtomicBool) -> Writer {
    let mut state = Writer { acked: start, in_flight: None };
    let mut conn = Conn::open(addr);
    while !stop.load(Ordering::Relaxed) {
        let version = state.acked.as_ref().map_or(1, |(v, _)| v + 1);
        let precondition = match &state.acked {
            Some((_, etag)) => ("If-Match", etag.clone()),
            None => ("If-None-Match", "*".to_owned()),
        };
        state.in_flight = Some(version);
        let path = format!("/v1/stores/w{writer}");
        let mut request = format!(
            "PUT {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n{}: {}\r\nContent-Length: {}\r\n\r\n",
            precondition.0,
            precondition.1,
            body(writer, version).len()
        )
        .into_bytes();
        request.extend_from_slice(&body(writer, version));
        if std::io::Write::write_all(&mut conn.stream, &request).is_err() {
            break;
        }
        match conn.try_read_response(false) {
            Some(resp) => {
                assert!(resp.status == 200 || resp.status == 201, "writer {writer}: {} {}", resp.status, resp.text());
                state.acked = Some((version, resp.etag()));
                state.in_flight = None;
            }
            None => break,
        }
    }
    state
}

fn pseudo_random(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Runs one writer per entry of `starts` (each from its own last known
/// state) until the server is killed at a random moment between 0.2 and
/// 1.2 s, restarts the server on `root`, and returns what each writer knew.
fn kill_mid_storm<S, T>(
    server: &mut Server,
    root: &std::path::Path,
    starts: &[S],
    seed: &mut u64,
    writer: impl Fn(SocketAddr, u64, S, &AtomicBool) -> T + Send + Sync + 'static,
) -> Vec<T>
where
    S: Clone + Send + 'static,
    T: Send + 'static,
{
    let writer = Arc::new(writer);
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = starts
        .iter()
        .enumerate()
        .map(|(w, start)| {
            let (addr, start, stop, writer) = (server.addr, start.clone(), Arc::clone(&stop), Arc::clone(&writer));
            thread::spawn(move || writer(addr, w as u64, start, &stop))
        })
        .collect();
    thread::sleep(Duration::from_millis(200 + pseudo_random(seed) % 1000));
    server.kill();
    stop.store(true, Ordering::Relaxed);
    let outcomes = handles.into_iter().map(|h| h.join().unwrap()).collect();
    *server = Server::start_in(root, Options::default());
    outcomes
}

#[test]
fn kill_9_mid_storm_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let mut server = Server::start_in(&root, Options::default());
    let token: Arc<str> = server.register("crash").into();
    let mut seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut known: Vec<Option<(u64, String)>> = vec![None; WRITERS as usize];
    for round in 0..3 {
        let writer_token = Arc::clone(&token);
        let writers = kill_mid_storm(&mut server, &root, &known, &mut seed, move |addr, w, start, stop| {
            storm(addr, &writer_token, w, start, stop)
        });
        for (w, state) in writers.iter().enumerate() {
            let resp = server.get(&format!("/v1/stores/w{w}"), Some(&token));
            if resp.status == 404 {
                assert!(state.acked.is_none(), "round {round} writer {w}: an acknowledged create was lost");
                known[w] = None;
                continue;
            }
            assert_eq!(resp.status, 200, "round {round} writer {w}: sessions survive");
            let version = u64::from_le_bytes(resp.body[8..16].try_into().unwrap());
            assert_eq!(resp.body, body(w as u64, version), "round {round} writer {w}: complete, untorn");
            assert_eq!(resp.header("Content-Length").unwrap(), resp.body.len().to_string());
            match &state.acked {
                Some((acked, etag)) if *acked == version => assert_eq!(&resp.etag(), etag),
                _ => assert_eq!(
                    Some(version),
                    state.in_flight,
                    "round {round} writer {w}: neither acknowledged nor in flight"
                ),
            }
            known[w] = Some((version, resp.etag()));
        }
        assert!(temp_files(&root).is_empty(), "round {round}: no temp files after restart");
        let live = known.iter().filter(|k| k.is_some()).count();
        assert_eq!(store_files(&root).len(), live, "round {round}: no orphan files after restart");
    }
}

/// What one cycling writer last had acknowledged for its key.
#[derive(Debug, Clone, PartialEq)]
enum Known {
    Absent,
    Present { version: u64, etag: String, shared: bool },
}

/// The next operation in a writer's cycle: create, update, share, update, delete.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Create(u64),
    Update(u64),
    Share,
    Delete,
}

fn next_op(known: &Known, step: u64) -> Op {
    match known {
        Known::Absent => Op::Create(step),
        Known::Present { shared: false, version, .. } if version % 2 == 1 => Op::Update(step),
        Known::Present { shared: false, .. } => Op::Share,
        Known::Present { shared: true, version, .. } if version % 3 != 0 => Op::Update(step),
        Known::Present { .. } => Op::Delete,
    }
}

fn cycle(addr: SocketAddr, owner: &str, writer: u64, start: Known, stop: &AtomicBool) -> (Known, Option<Op>) {
    let mut known = start;
    let mut conn = Conn::open(addr);
    let mut step = match &known {
        Known::Present { version, .. } => version + 1,
        Known::Absent => writer * 1_000_000 + 1,
    };
    while !stop.load(Ordering::Relaxed) {
        let op = next_op(&known, step);
        step += 1;
        let path = format!("/v1/stores/m{writer}");
        let etag = match &known {
            Known::Present { etag, .. } => etag.clone(),
            Known::Absent => String::new(),
        };
        let (method, path, headers, payload): (&str, String, Vec<(&str, &str)>, Vec<u8>) = match op {
            Op::Create(v) => ("PUT", path, vec![("If-None-Match", "*")], body(writer, v)),
            Op::Update(v) => ("PUT", path, vec![("If-Match", &etag)], body(writer, v)),
            Op::Share => {
                ("PUT", format!("{path}/permissions"), vec![], br#"{"account":"friend","permission":"READ"}"#.to_vec())
            }
            Op::Delete => ("DELETE", path, vec![("If-Match", &etag)], Vec::new()),
        };
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {owner}\r\nContent-Length: {}\r\n",
            payload.len()
        );
        for (name, value) in &headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(&payload);
        if std::io::Write::write_all(&mut conn.stream, &request).is_err() {
            return (known, Some(op));
        }
        let Some(resp) = conn.try_read_response(false) else { return (known, Some(op)) };
        assert!(resp.status / 100 == 2, "writer {writer} {op:?}: {} {}", resp.status, resp.text());
        known = match (op, known) {
            (Op::Create(version) | Op::Update(version), Known::Present { shared, .. }) => {
                Known::Present { version, etag: resp.etag(), shared }
            }
            (Op::Create(version), Known::Absent) => Known::Present { version, etag: resp.etag(), shared: false },
            (Op::Share, Known::Present { version, etag, .. }) => Known::Present { version, etag, shared: true },
            (Op::Delete, _) => Known::Absent,
            (op, known) => panic!("{op:?} after {known:?}"),
        };
    }
    (known, None)
}

#[test]
fn kill_9_during_creates_updates_deletes_and_shares() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let mut server = Server::start_in(&root, Options::default());
    let owner: Arc<str> = server.register("owner").into();
    let friend = server.register("friend");
    let mut seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut known = vec![Known::Absent; WRITERS as usize];
    let mut acknowledged_rounds = 0;
    for round in 0..rounds() {
        let writer_token = Arc::clone(&owner);
        let outcomes = kill_mid_storm(&mut server, &root, &known, &mut seed, move |addr, w, start, stop| {
            cycle(addr, &writer_token, w, start, stop)
        });
        acknowledged_rounds += usize::from(outcomes.iter().any(|(acked, _)| *acked != Known::Absent));
        for (w, (acked, in_flight)) in outcomes.into_iter().enumerate() {
            let path = format!("/v1/stores/m{w}");
            let resp = server.get(&path, Some(&owner));
            let shared_now = server.get(&path, Some(&friend)).status == 200;
            let now = match resp.status {
                404 => Known::Absent,
                200 => {
                    let version = u64::from_le_bytes(resp.body[8..16].try_into().unwrap());
                    assert_eq!(resp.body, body(w as u64, version), "round {round} m{w}: complete, untorn");
                    Known::Present { version, etag: resp.etag(), shared: shared_now }
                }
                other => panic!("round {round} m{w}: {other}"),
            };
            let explained_by_ack = match (&acked, &now) {
                (Known::Absent, Known::Absent) => true,
                (Known::Present { version: a, etag: e, shared: s }, Known::Present { version, etag, shared }) => {
                    a == version && e == etag && s == shared
                }
                _ => false,
            };
            let explained_by_flight = match (in_flight, &acked, &now) {
                (Some(Op::Create(v) | Op::Update(v)), _, Known::Present { version, .. }) => v == *version,
                (Some(Op::Share), Known::Present { version: a, .. }, Known::Present { version, shared: true, .. }) => {
                    a == version
                }
                (Some(Op::Delete), _, Known::Absent) => true,
                _ => false,
            };
            assert!(
                explained_by_ack || explained_by_flight,
                "round {round} m{w}: acked {acked:?}, in flight {in_flight:?}, now {now:?}"
            );
            known[w] = now;
        }
        let (code, stdout, _) = cli(&root, &["check"], &[]);
        assert_eq!(code, 0, "round {round}: {stdout}");
        assert!(temp_files(&root).is_empty(), "round {round}: no temp files after restart");
        let live = known.iter().filter(|k| **k != Known::Absent).count();
        assert_eq!(store_files(&root).len(), live, "round {round}: no orphan files after restart");
    }
    assert!(acknowledged_rounds * 2 > rounds(), "most rounds got writes acknowledged before the kill");
}

/// What a log writer knows its store holds: the body it last wrote (and its
/// ETag), the log's base and head, and the entries it had acknowledged.
#[derive(Debug, Clone, Default)]
struct LogKnown {
    body: Vec<u8>,
    etag: String,
    base: u64,
    head: u64,
    entries: std::collections::BTreeMap<u64, Vec<u8>>,
}

/// A request that was in flight when the server died.
#[derive(Debug, Clone)]
enum LogOp {
    Append(Vec<u8>),
    Compact { upto: u64, body: Vec<u8> },
}

/// Appends (and now and then compacts) until the server dies; returns what
/// was acknowledged and what was in flight.
fn append_storm(
    addr: SocketAddr,
    token: &str,
    writer: u64,
    start: LogKnown,
    stop: &AtomicBool,
) -> (LogKnown, Option<LogOp>) {
    let mut known = start;
    let mut conn = Conn::open(addr);
    let mut step = known.head * 7 + writer;
    while !stop.load(Ordering::Relaxed) {
        step += 1;
        let op = if step.is_multiple_of(9) && known.head > known.base {
            let body = format!("w{writer} folded to {}", known.head).into_bytes();
            LogOp::Compact { upto: known.head, body }
        } else {
            LogOp::Append(format!("w{writer} entry {step} {}", "x".repeat((step % 50) as usize)).into_bytes())
        };
        let request = match &op {
            LogOp::Append(entry) => {
                request_bytes("POST", &format!("/v1/stores/log{writer}/log"), Some(token), &[], entry)
            }
            LogOp::Compact { upto, body } => {
                let base = upto.to_string();
                request_bytes(
                    "PUT",
                    &format!("/v1/stores/log{writer}"),
                    Some(token),
                    &[("If-Match", &known.etag), ("Sync-Log-Base", &base)],
                    body,
                )
            }
        };
        if std::io::Write::write_all(&mut conn.stream, &request).is_err() {
            return (known, Some(op));
        }
        let Some(resp) = conn.try_read_response(false) else { return (known, Some(op)) };
        assert!(resp.status / 100 == 2, "writer {writer} {op:?}: {} {}", resp.status, resp.text());
        match op {
            LogOp::Append(entry) => {
                let index = resp.json()["index"].as_u64().unwrap();
                assert_eq!(index, known.head + 1, "writer {writer}: indexes follow one another");
                known.head = index;
                known.entries.insert(index, entry);
            }
            LogOp::Compact { upto, body } => {
                known.base = upto;
                known.body = body;
                known.etag = resp.etag();
                known.entries.retain(|index, _| *index > upto);
            }
        }
    }
    (known, None)
}

/// The log as the restarted server has it: base, head, entries.
fn server_log(server: &Server, token: &str, writer: u64) -> (u64, u64, Vec<(u64, Vec<u8>)>) {
    let mut entries = Vec::new();
    let mut after = String::new();
    loop {
        let resp = server.get(&format!("/v1/stores/log{writer}/log{after}"), Some(token));
        assert_eq!(resp.status, 200, "{}", resp.text());
        let mut rest = resp.body.as_slice();
        while !rest.is_empty() {
            let index = u64::from_be_bytes(rest[..8].try_into().unwrap());
            let len = u32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
            entries.push((index, rest[12..12 + len].to_vec()));
            rest = &rest[12 + len..];
        }
        let (base, head) = (
            resp.header("Sync-Log-Base").unwrap().parse().unwrap(),
            resp.header("Sync-Log-Head").unwrap().parse().unwrap(),
        );
        if resp.header("Sync-Log-More").is_none() {
            return (base, head, entries);
        }
        after = format!("?after={}", entries.last().unwrap().0);
    }
}

#[test]
fn kill_9_during_appends_and_compactions_loses_no_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let mut server = Server::start_in(&root, Options::default());
    let token: Arc<str> = server.register("appender").into();
    let mut known: Vec<LogKnown> = (0..4)
        .map(|w| {
            let resp = server.put(&format!("log{w}"), &token, &[], b"initial");
            LogKnown { body: b"initial".to_vec(), etag: resp.etag(), ..LogKnown::default() }
        })
        .collect();
    let mut seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    for round in 0..rounds() / 2 {
        let writer_token = Arc::clone(&token);
        let outcomes = kill_mid_storm(&mut server, &root, &known, &mut seed, move |addr, w, start, stop| {
            append_storm(addr, &writer_token, w, start, stop)
        });
        for (w, (acked, in_flight)) in outcomes.into_iter().enumerate() {
            let (base, head, entries) = server_log(&server, &token, w as u64);
            let body = server.get(&format!("/v1/stores/log{w}"), Some(&token));
            let compacted = match &in_flight {
                Some(LogOp::Compact { upto, body: new_body }) if base == *upto && base != acked.base => {
                    assert_eq!(&body.body, new_body, "round {round} log{w}: the compaction's body came with it");
                    true
                }
                _ => false,
            };
            if !compacted {
                assert_eq!(base, acked.base, "round {round} log{w}: base");
                assert_eq!(body.body, acked.body, "round {round} log{w}: body");
            }
            let indexes: Vec<u64> = entries.iter().map(|(index, _)| *index).collect();
            assert_eq!(indexes, ((base + 1)..=head).collect::<Vec<_>>(), "round {round} log{w}: no gaps");
            for (index, entry) in &entries {
                match acked.entries.get(index) {
                    Some(expected) => assert_eq!(entry, expected, "round {round} log{w}: entry {index} byte for byte"),
                    None => {
                        assert_eq!(*index, acked.head + 1, "round {round} log{w}: only the entry in flight is new");
                        assert!(matches!(&in_flight, Some(LogOp::Append(e)) if e == entry), "round {round} log{w}");
                    }
                }
            }
            for index in acked.entries.keys().filter(|index| **index > base) {
                assert!(indexes.contains(index), "round {round} log{w}: acknowledged entry {index} lost");
            }
            known[w] = LogKnown {
                body: body.body.clone(),
                etag: body.etag(),
                base,
                head,
                entries: entries.into_iter().collect(),
            };
        }
        let (code, stdout, _) = cli(&root, &["check"], &[]);
        assert_eq!(code, 0, "round {round}: {stdout}");
    }
}

/// One list-form grant over two members, each member's permission and
/// envelope set together: `generation` is READ/"r…", WRITE/"w…".
fn grant_list(addr: SocketAddr, owner: &str, generation: u64) -> u16 {
    use sync_node::encoding::base64url;
    let (permission, tag) = if generation.is_multiple_of(2) { ("READ", "r") } else { ("WRITE", "w") };
    let changes: Vec<serde_json::Value> = ["m1@example.org", "m2@example.org"]
        .iter()
        .map(|id| serde_json::json!({"account": id, "permission": permission, "envelope": base64url(format!("{tag}{generation}").as_bytes())}))
        .collect();
    let body = serde_json::json!({ "changes": changes }).to_string();
    // The server may be gone (killed): no answer is no acknowledgement.
    let Ok(stream) = std::net::TcpStream::connect(addr) else { return 0 };
    let mut conn = Conn::over(stream);
    let bytes = request_bytes(
        "PUT",
        "/v1/stores/shared/permissions",
        Some(owner),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    if std::io::Write::write_all(&mut conn.stream, &bytes).is_err() {
        return 0;
    }
    conn.try_read_response(false).map_or(0, |resp| resp.status)
}

#[test]
fn kill_9_during_list_form_grants_leaves_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let mut server = Server::start_in(&root, Options::default());
    let owner = server.register("owner@example.org");
    let members: Vec<String> = ["m1@example.org", "m2@example.org"].iter().map(|id| server.register(id)).collect();
    assert_eq!(server.put("shared", &owner, &[], b"body").status, 201);
    let mut seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut granted = 0;
    for round in 0..rounds().min(10) {
        let acknowledged = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let outcomes = kill_mid_storm(&mut server, &root, std::slice::from_ref(&owner), &mut seed, {
            let acknowledged = Arc::clone(&acknowledged);
            move |addr, _, owner: String, stop| {
                let mut generation = 0;
                while !stop.load(Ordering::Relaxed) {
                    generation += 1;
                    if grant_list(addr, &owner, generation) == 204 {
                        acknowledged.store(generation, Ordering::Relaxed);
                    }
                }
            }
        });
        drop(outcomes);
        // Both members are at one generation: the same permission and an envelope of that generation.
        let seen: Vec<(String, String)> = members
            .iter()
            .map(|token| {
                let read = server.get("/v1/stores/shared", Some(token));
                let envelope = server.get("/v1/stores/shared/envelope", Some(token));
                (
                    read.header("Sync-Permission").unwrap_or("none").to_owned(),
                    String::from_utf8_lossy(&envelope.body).into_owned(),
                )
            })
            .collect();
        assert_eq!(seen[0], seen[1], "round {round}: the members differ after a kill: {seen:?}");
        let generation: u64 = seen[0].1[1..].parse().unwrap_or(0);
        assert!(
            generation >= acknowledged.load(Ordering::Relaxed),
            "round {round}: an acknowledged grant was lost: {seen:?}"
        );
        let expected = if generation.is_multiple_of(2) { "READ" } else { "WRITE" };
        assert_eq!(seen[0].0, expected, "round {round}: permission and envelope disagree: {seen:?}");
        granted += acknowledged.load(Ordering::Relaxed);
    }
    assert!(granted > 0, "no grant was ever acknowledged: the test tested nothing");
}
