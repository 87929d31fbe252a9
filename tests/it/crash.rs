//! Crash safety: `kill -9` in the middle of a storm of conditional writes,
//! then a restart on the same data directory.

use crate::support::{Conn, Options, Server, store_files, temp_files};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WRITERS: u64 = 6;
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
            "PUT {path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n{}: {}\r\nContent-Length: {}\r\n\r\n",
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

#[test]
fn kill_9_mid_storm_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let mut server = Server::start_in(&root, Options::default());
    let token: Arc<str> = server.register("crash").into();
    let mut seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut known: Vec<Option<(u64, String)>> = vec![None; WRITERS as usize];
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (addr, token, stop, start) =
                    (server.addr, Arc::clone(&token), Arc::clone(&stop), known[w as usize].clone());
                thread::spawn(move || storm(addr, &token, w, start, &stop))
            })
            .collect();
        thread::sleep(Duration::from_millis(300 + pseudo_random(&mut seed) % 900));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        let writers: Vec<Writer> = handles.into_iter().map(|h| h.join().unwrap()).collect();

        server = Server::start_in(&root, Options::default());
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
