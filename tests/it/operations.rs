//! The operational commands: account delete, reset-token, backup, check.

use crate::support::{Conn, Options, PASSWORD, Server, cli, database, store_files};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, SystemTime};

#[test]
fn account_delete_and_reset_token_from_the_command_line() {
    let server = Server::start();
    let token = server.register("cli-user");
    server.put("data", &token, &[], b"x");
    let (code, stdout, _) = cli(&server.root, &["reset-token", "CLI-User"], &[]);
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 1);
    let reset = stdout.trim();
    let confirm = json!({"id": "cli-user", "token": reset, "new_password": "from the cli"});
    assert_eq!(server.post_json("/v1/password-reset/confirm", None, &confirm).status, 204);
    assert_eq!(
        server.post_json("/v1/sessions", None, &json!({"id": "cli-user", "password": "from the cli"})).status,
        201
    );
    assert_eq!(cli(&server.root, &["reset-token", "nobody"], &[]).0, 1);

    assert_eq!(cli(&server.root, &["account", "delete", "nobody"], &[]).0, 1);
    let (code, _, stderr) = cli(&server.root, &["account", "delete", "cli-user"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(store_files(&server.root).is_empty(), "its stores' files are removed");
    assert_eq!(
        server.post_json("/v1/sessions", None, &json!({"id": "cli-user", "password": "from the cli"})).status,
        401
    );
}

/// Body of version `v` of store `k{n}`: complete bodies are recognisable.
fn body(n: usize, v: u64) -> Vec<u8> {
    let mut out = format!("store {n} version {v}:").into_bytes();
    out.resize(1000 + (v as usize % 7) * 20_000, b'a' + (v % 26) as u8);
    out
}

fn check_body(n: usize, data: &[u8]) {
    let text = String::from_utf8_lossy(&data[..data.len().min(40)]).into_owned();
    let v: u64 = text.split("version ").nth(1).unwrap().split(':').next().unwrap().parse().unwrap();
    assert_eq!(data, body(n, v), "store {n} is complete");
}

#[test]
fn a_backup_taken_under_writes_serves_every_acknowledged_store() {
    let server = Server::start();
    let token = server.register("backed-up");
    for n in 0..8 {
        assert_eq!(server.put(&format!("k{n}"), &token, &[], &body(n, 0)).status, 201);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (addr, token, stop) = (server.addr, token.clone(), Arc::clone(&stop));
            thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let mut v = 1;
                while !stop.load(Ordering::Relaxed) {
                    for n in (w..8).step_by(4) {
                        let resp = conn.request(
                            "PUT",
                            &format!("/v1/stores/k{n}"),
                            Some(&token),
                            &[("If-Match", "*")],
                            &body(n, v),
                        );
                        assert_eq!(resp.status, 200);
                    }
                    v += 1;
                }
                v
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("backup");
    let (code, stdout, stderr) = cli(&server.root, &["backup", target.to_str().unwrap()], &[]);
    stop.store(true, Ordering::Relaxed);
    let rounds: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(rounds.iter().all(|&r| r > 1), "writes ran during the backup: {rounds:?}");

    assert_eq!(cli(&target, &["check"], &[]).0, 0, "the copy is consistent");
    let copy = Server::start_in(&target, Options::default());
    let stores = copy.get("/v1/stores", Some(&token));
    assert_eq!(stores.status, 200, "sessions survive in the copy");
    assert_eq!(stores.json()["stores"].as_array().unwrap().len(), 8);
    for n in 0..8 {
        let resp = copy.get(&format!("/v1/stores/k{n}"), Some(&token));
        assert_eq!(resp.status, 200);
        check_body(n, &resp.body);
    }
    assert_eq!(copy.post_json("/v1/sessions", None, &json!({"id": "backed-up", "password": PASSWORD})).status, 201);

    let (code, _, stderr) = cli(&server.root, &["backup", target.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "a non-empty target is refused: {stderr}");
}

#[test]
fn check_finds_orphans_missing_and_truncated_files_and_repairs_what_it_can() {
    let server = Server::start();
    let token = server.register("checked");
    for key in ["intact", "deleted", "truncated"] {
        server.put(key, &token, &[], &[7u8; 100]);
    }
    assert_eq!(cli(&server.root, &["check"], &[]).0, 0);
    let file_of = |key: &str| -> String {
        database(&server.root)
            .query_row("SELECT store_file FROM sync_store WHERE store_key = ?1", [key], |row| row.get(0))
            .unwrap()
    };
    let stores = server.root.join("stores");
    std::fs::remove_file(stores.join(file_of("deleted"))).unwrap();
    std::fs::write(stores.join(file_of("truncated")), [7u8; 10]).unwrap();
    for prefix in ["ab", "cd"] {
        std::fs::create_dir_all(stores.join(prefix)).unwrap();
    }
    let orphan = stores.join("ab").join("ab0123456789abcdef0123456789abcd");
    std::fs::write(&orphan, b"nobody's").unwrap();
    let fresh = stores.join("cd").join("cd0123456789abcdef0123456789abcd");
    std::fs::write(&fresh, b"in flight?").unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&orphan).unwrap().set_modified(hour_ago).unwrap();

    let (code, stdout, _) = cli(&server.root, &["check"], &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("missing file: store \"deleted\""), "{stdout}");
    assert!(stdout.contains("wrong size: store \"truncated\" should have 100 bytes, its file has 10"), "{stdout}");
    assert!(stdout.contains("orphan file found: stores/ab/ab0123456789abcdef0123456789abcd"), "{stdout}");
    assert!(stdout.contains("1 unreferenced file(s) younger than 10 minutes"), "{stdout}");
    assert!(orphan.exists(), "check alone changes nothing");

    let (code, stdout, _) = cli(&server.root, &["check", "--repair"], &[]);
    assert_eq!(code, 1, "missing and truncated files cannot be repaired: {stdout}");
    assert!(!orphan.exists() && fresh.exists());
    for key in ["deleted", "truncated"] {
        assert_eq!(
            server.call("DELETE", &format!("/v1/stores/{key}"), Some(&token), &[("If-Match", "*")], b"").status,
            204
        );
    }
    assert_eq!(cli(&server.root, &["check"], &[]).0, 0);
    assert_eq!(server.get("/v1/stores/intact", Some(&token)).body, vec![7u8; 100]);
}
