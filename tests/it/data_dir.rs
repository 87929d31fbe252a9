//! Who owns the data directory: the server's lock, the command line beside
//! a live server (never a 500, never a stall), commands that create and
//! migrate nothing, schema versions, file modes, backups and their
//! generation, and commits by the command line that wake parked polls.

use crate::support::{
    BIN, Conn, Options, PASSWORD, Resp, Server, database, files_below, request_bytes, store_files, wrapped_command,
    write_stdin,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

// ---------------------------------------------------------------------------
// Running the binary

/// One run of a `sync-node` command, built up and then run.
#[derive(Default)]
struct Cli {
    args: Vec<String>,
    /// `STATIC_ROOT`; unset when `None`.
    root: Option<PathBuf>,
    stdin: Option<String>,
    cwd: Option<PathBuf>,
    /// A command (and its arguments) that runs the binary.
    wrapper: Vec<String>,
}

/// What a command did.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Ran {
    fn describe(&self) -> String {
        format!("exit {} after {:?}\nstdout: {}\nstderr: {}", self.code, self.elapsed, self.stdout, self.stderr)
    }
}

impl Cli {
    fn new(root: Option<&Path>, args: &[&str]) -> Cli {
        Cli {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            root: root.map(Path::to_path_buf),
            ..Cli::default()
        }
    }

    fn stdin(mut self, text: &str) -> Cli {
        self.stdin = Some(text.to_owned());
        self
    }

    fn cwd(mut self, dir: &Path) -> Cli {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    fn wrapped(mut self, wrapper: &[String]) -> Cli {
        self.wrapper = wrapper.to_vec();
        self
    }

    fn run(self) -> Ran {
        let mut command = wrapped_command(&self.wrapper);
        command.args(&self.args).env_clear().env("PBKDF2_ITERATIONS", "1000");
        if let Some(root) = &self.root {
            command.env("STATIC_ROOT", root);
        }
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        command.stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().expect("spawn sync-node");
        if let Some(text) = &self.stdin {
            write_stdin(&mut child, text.as_bytes());
        }
        let output = child.wait_with_output().unwrap();
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: text(output.stdout),
            stderr: text(output.stderr),
            elapsed: started.elapsed(),
        }
    }
}

/// `sync-node account add ID` with the password on stdin.
fn account_add(root: Option<&Path>, id: &str) -> Cli {
    Cli::new(root, &["account", "add", id]).stdin(&format!("{PASSWORD}\n"))
}

/// Starts a server that is expected to stop by itself: its exit code (None
/// if it was still running after `limit`, then killed), stderr and time.
fn start_expecting_exit(root: &Path, port: u16, limit: Duration) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .env_clear()
        .env("PORT", port.to_string())
        .env("BIND", "127.0.0.1")
        .env("STATIC_ROOT", root)
        .env("PBKDF2_ITERATIONS", "1000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sync-node");
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (code, stderr, elapsed)
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The lines of a text that have something on them.
fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|line| !line.trim().is_empty()).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|err| panic!("{}: {err}", path.display())).permissions().mode() & 0o777
}

fn user_version(root: &Path) -> i64 {
    database(root).pragma_query_value(None, "user_version", |row| row.get(0)).unwrap()
}

/// Every entry below `dir` (directories too) but `skip`: relative path,
/// whether a directory, size, mtime.
fn listing(dir: &Path, skip: &[&str]) -> BTreeMap<String, (bool, u64, SystemTime)> {
    fn walk(base: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<String, (bool, u64, SystemTime)>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = path.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if skip.contains(&name.as_str()) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            out.insert(name, (meta.is_dir(), meta.len(), meta.modified().unwrap()));
            if meta.is_dir() {
                walk(base, &path, skip, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, skip, &mut out);
    out
}

/// Every entry below `dir` with its content (files) and mode.
fn contents(dir: &Path) -> BTreeMap<String, (Option<Vec<u8>>, u32, i64)> {
    let mut out = BTreeMap::new();
    for (name, (is_dir, _, _)) in listing(dir, &[]) {
        let path = dir.join(&name);
        let meta = std::fs::metadata(&path).unwrap();
        let data = (!is_dir).then(|| std::fs::read(&path).unwrap());
        out.insert(name, (data, meta.mode() & 0o7777, meta.mtime_nsec() + meta.mtime() * 1_000_000_000));
    }
    out
}

// ---------------------------------------------------------------------------
// HTTP that survives closed connections

/// One request on a kept-alive connection (opened if there is none); `None`
/// when the connection closed without an answer (it is then dropped).
fn exchange(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Resp> {
    let open = conn.get_or_insert_with(|| Conn::open(addr));
    if open.stream.write_all(&request_bytes(method, path, token, headers, body)).is_err() {
        *conn = None;
        return None;
    }
    let resp = open.try_read_response(method == "HEAD");
    let close = resp.as_ref().is_none_or(|r| r.header("Connection").is_some_and(|v| v.eq_ignore_ascii_case("close")));
    if close {
        *conn = None;
    }
    resp
}

/// Every status an HTTP call in a test saw, shared between threads.
#[derive(Default)]
struct Seen(Mutex<BTreeMap<u16, u64>>);

impl Seen {
    fn record(&self, status: u16) {
        *self.0.lock().unwrap().entry(status).or_default() += 1;
    }

    fn count(&self, status: u16) -> u64 {
        self.0.lock().unwrap().get(&status).copied().unwrap_or_default()
    }

    fn all(&self) -> BTreeMap<u16, u64> {
        self.0.lock().unwrap().clone()
    }
}

/// A request repeated while the answer is 503 (the database was busy).
fn retrying(server: &Server, seen: &Seen, method: &str, path: &str, token: Option<&str>, body: &Value) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp =
            server.call(method, path, token, &[("Content-Type", "application/json")], body.to_string().as_bytes());
        seen.record(resp.status);
        if resp.status != 503 || Instant::now() > deadline {
            return resp;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Writers: threads that replace their own stores until stopped

const WRITERS: usize = 4;

/// Body of version `v` of writer `w`'s key `k`: sizes vary, contents are
/// recognisable.
fn body(w: usize, k: usize, v: u64) -> Vec<u8> {
    let mut out = format!("writer {w} key {k} version {v}:").into_bytes();
    out.resize(200 + (v as usize * 7919 + k * 131) % 30_000, b'a' + ((v + k as u64) % 26) as u8);
    out
}

fn key(w: usize, k: usize) -> String {
    format!("w{w}-k{k}")
}

/// What one writer saw.
struct WriterReport {
    /// Per key: the last acknowledged body, and a body whose answer was
    /// lost (it may or may not have been written).
    last: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    acked: u64,
    lost: u64,
}

struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    threads: Vec<JoinHandle<WriterReport>>,
    token: String,
    keys: usize,
}

impl Writers {
    /// Registers an account, creates `keys` stores per writer, and starts
    /// [`WRITERS`] threads replacing them with `If-Match: *`; a 503 is
    /// retried after 20 ms.
    fn start(server: &Server, keys: usize, seen: &Arc<Seen>) -> Writers {
        let token = server.register("writer");
        let mut initial = Vec::new();
        for w in 0..WRITERS {
            let mut bodies = Vec::new();
            for k in 0..keys {
                let resp = server.put(&key(w, k), &token, &[], &body(w, k, 0));
                assert_eq!(resp.status, 201, "{}", resp.text());
                bodies.push(body(w, k, 0));
            }
            initial.push(bodies);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let threads = initial
            .into_iter()
            .enumerate()
            .map(|(w, bodies)| {
                let (addr, token, stop, seen, acked) =
                    (server.addr, token.clone(), Arc::clone(&stop), Arc::clone(seen), Arc::clone(&acked));
                thread::spawn(move || {
                    let mut report =
                        WriterReport { last: bodies.into_iter().map(|b| (b, None)).collect(), acked: 0, lost: 0 };
                    let mut conn = None;
                    let mut v = 0;
                    while !stop.load(Ordering::Relaxed) {
                        v += 1;
                        let k = v as usize % keys;
                        let data = body(w, k, v);
                        let path = format!("/v1/stores/{}", key(w, k));
                        match exchange(&mut conn, addr, "PUT", &path, Some(&token), &[("If-Match", "*")], &data) {
                            Some(resp) => {
                                seen.record(resp.status);
                                match resp.status {
                                    200 => {
                                        report.last[k] = (data, None);
                                        report.acked += 1;
                                        acked.fetch_add(1, Ordering::Relaxed);
                                    }
                                    503 => thread::sleep(Duration::from_millis(20)),
                                    _ => thread::sleep(Duration::from_millis(5)),
                                }
                            }
                            None => {
                                report.lost += 1;
                                report.last[k].1 = Some(data);
                            }
                        }
                    }
                    report
                })
            })
            .collect();
        Writers { stop, acked, threads, token, keys }
    }

    /// Writes acknowledged so far, by all writers.
    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until the writers have had `n` more writes acknowledged.
    fn wait_for(&self, n: u64) {
        let target = self.acked() + n;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.acked() < target {
            assert!(Instant::now() < deadline, "the writers made no progress");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the writers and checks that every key serves its last
    /// acknowledged body byte for byte.
    fn stop_and_verify(mut self, server: &Server) -> Vec<WriterReport> {
        self.stop.store(true, Ordering::Relaxed);
        let reports: Vec<WriterReport> =
            std::mem::take(&mut self.threads).into_iter().map(|t| t.join().unwrap()).collect();
        for (w, report) in reports.iter().enumerate() {
            assert!(report.acked >= 2, "writer {w} wrote ({} acknowledged)", report.acked);
            assert_eq!(report.lost, 0, "writer {w}: connections closed without an answer to a PUT");
            for k in 0..self.keys {
                let resp = server.get(&format!("/v1/stores/{}", key(w, k)), Some(&self.token));
                assert_eq!(resp.status, 200, "{}", resp.text());
                let (acked, unsure) = &report.last[k];
                assert!(
                    resp.body == *acked || unsure.as_ref() == Some(&resp.body),
                    "store {} serves {:?}…, not its last acknowledged body {:?}…",
                    key(w, k),
                    String::from_utf8_lossy(&resp.body[..resp.body.len().min(40)]),
                    String::from_utf8_lossy(&acked[..40.min(acked.len())]),
                );
            }
        }
        reports
    }
}

impl Drop for Writers {
    /// Stops the writers before the server goes (when a test fails early).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Asserts that no HTTP answer was a 500 (or anything but `allowed`).
fn assert_statuses(seen: &Seen, allowed: &[u16]) {
    let all = seen.all();
    assert_eq!(seen.count(500), 0, "answers seen: {all:?}");
    assert!(all.keys().all(|status| allowed.contains(status)), "unexpected answers: {all:?}");
}

// ---------------------------------------------------------------------------
// 1. A second server on a live directory

#[test]
fn a_second_server_on_a_live_directory_exits_1_at_once_and_disturbs_no_write() {
    let server = Server::start();
    let seen = Arc::new(Seen::default());
    let writers = Writers::start(&server, 4, &seen);
    writers.wait_for(8);
    for attempt in 0..15 {
        let port = if attempt % 2 == 0 { server.addr.port() } else { 0 };
        let (code, stderr, elapsed) = start_expecting_exit(&server.root, port, Duration::from_secs(2));
        assert_eq!(code, Some(1), "attempt {attempt} (PORT={port}) after {elapsed:?}: {stderr}");
        assert!(elapsed < Duration::from_secs(2), "attempt {attempt} took {elapsed:?}");
        let said = lines(&stderr);
        assert_eq!(said.len(), 1, "attempt {attempt}: one line: {stderr}");
        assert!(said[0].contains("STATIC_ROOT") && said[0].contains("in use"), "attempt {attempt}: {stderr}");
        writers.wait_for(1);
    }
    writers.stop_and_verify(&server);
    eprintln!("answers: {:?}", seen.all());
    assert_statuses(&seen, &[200, 201, 503]);
    let check = Cli::new(Some(&server.root), &["check"]).run();
    assert_eq!(check.code, 0, "{}", check.describe());
    assert_eq!(server.get("/v1/health", None).status, 200, "the first server still serves");
}

// ---------------------------------------------------------------------------
// 2. The command line beside a busy server

#[test]
fn commands_beside_a_busy_server_all_succeed_without_a_500_or_a_stalled_health_check() {
    let server = Server::start();
    let seen = Arc::new(Seen::default());
    let writers = Writers::start(&server, 4, &seen);
    let stop_probe = Arc::new(AtomicBool::new(false));
    let probe = {
        let (addr, stop) = (server.addr, Arc::clone(&stop_probe));
        thread::spawn(move || {
            let (mut slowest, mut probes) = (Duration::ZERO, 0);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let resp = Conn::open(addr).request("GET", "/v1/health", None, &[], b"");
                slowest = slowest.max(started.elapsed());
                probes += 1;
                assert_eq!(resp.status, 200, "health: {}", resp.text());
                thread::sleep(Duration::from_millis(10));
            }
            (slowest, probes)
        })
    };
    writers.wait_for(8);

    let backups = tempfile::tempdir().unwrap();
    let mut commands = 0;
    for i in 0..7 {
        let id = format!("cli-{i}");
        let ran = account_add(Some(&server.root), &id).run();
        assert_eq!(ran.code, 0, "account add {id}: {}", ran.describe());
        // The new account signs in over HTTP and writes a store, so that
        // the deletion below has a file to remove.
        let signed_in =
            retrying(&server, &seen, "POST", "/v1/sessions", None, &json!({"id": id, "password": PASSWORD}));
        assert_eq!(signed_in.status, 201, "sign-in right after `account add {id}` exited 0: {}", signed_in.text());
        let token = signed_in.json()["token"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let resp = server.put("own", &token, &[], b"owned by a cli account");
            seen.record(resp.status);
            if resp.status == 201 {
                break;
            }
            assert!(resp.status == 503 && Instant::now() < deadline, "{} {}", resp.status, resp.text());
            thread::sleep(Duration::from_millis(20));
        }
        let ran = Cli::new(Some(&server.root), &["reset-token", &id]).run();
        assert_eq!(ran.code, 0, "reset-token {id}: {}", ran.describe());
        assert_eq!(lines(&ran.stdout).len(), 1, "{}", ran.describe());
        let ran = Cli::new(Some(&server.root), &["check"]).run();
        assert_eq!(ran.code, 0, "check: {}", ran.describe());
        let target = backups.path().join(format!("backup-{i}"));
        let ran = Cli::new(Some(&server.root), &["backup", target.to_str().unwrap()]).run();
        assert_eq!(ran.code, 0, "backup: {}", ran.describe());
        let ran = Cli::new(Some(&server.root), &["account", "delete", &id]).run();
        assert_eq!(ran.code, 0, "account delete {id}: {}", ran.describe());
        commands += 5;
        writers.wait_for(1);
    }
    assert!(commands >= 30);

    stop_probe.store(true, Ordering::Relaxed);
    let (slowest, probes) = probe.join().unwrap();
    eprintln!("answers: {:?}; slowest of {probes} health probes: {slowest:?}", seen.all());
    writers.stop_and_verify(&server);
    assert_statuses(&seen, &[200, 201, 503]);
    assert!(probes > 10, "the health probe ran ({probes} probes)");
    assert!(slowest < Duration::from_secs(1), "GET /v1/health took up to {slowest:?}");
    for i in 0..7 {
        let resp = server.post_json("/v1/sessions", None, &json!({"id": format!("cli-{i}"), "password": PASSWORD}));
        assert_eq!(resp.status, 401, "cli-{i} was deleted");
    }
    let last = backups.path().join("backup-6");
    let ran = Cli::new(Some(&last), &["check"]).run();
    assert_eq!(ran.code, 0, "a backup taken under writes is consistent: {}", ran.describe());
}

// ---------------------------------------------------------------------------
// 3. check beside writes

#[test]
fn check_beside_writers_never_reports_a_store_whose_file_a_write_replaced() {
    let server = Server::start();
    let seen = Arc::new(Seen::default());
    let writers = Writers::start(&server, 16, &seen);
    writers.wait_for(8);
    for round in 0..10 {
        let before = writers.acked();
        let ran = Cli::new(Some(&server.root), &["check"]).run();
        assert!(
            !ran.stdout.contains("missing file") && !ran.stdout.contains("wrong size"),
            "round {round}: {}",
            ran.describe()
        );
        assert_eq!(ran.code, 0, "round {round}: {}", ran.describe());
        assert!(ran.stdout.contains("64 store(s) checked"), "{}", ran.describe());
        if writers.acked() == before {
            writers.wait_for(1);
        }
    }
    writers.stop_and_verify(&server);
    assert_statuses(&seen, &[200, 201, 503]);
}

// ---------------------------------------------------------------------------
// 4. Backups

fn info(server: &Server) -> Value {
    let resp = server.get("/v1/info", None);
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()
}

fn generation(server: &Server) -> String {
    let generation = info(server)["generation"].as_str().expect("generation in /v1/info").to_owned();
    assert_eq!(generation.len(), 32, "{generation}");
    assert!(generation.bytes().all(|b| b.is_ascii_hexdigit()), "{generation}");
    generation
}

#[test]
fn a_backup_of_a_directory_without_stores_starts_as_a_server() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("copy");
    let ran = Cli::new(Some(&server.root), &["backup", target.to_str().unwrap()]).run();
    assert_eq!(ran.code, 0, "{}", ran.describe());
    let copy = Server::start_in(&target, Options::default());
    assert_eq!(info(&copy)["name"], "sync-node");
    assert_ne!(generation(&copy), generation(&server));
    assert_eq!(copy.get("/v1/health", None).status, 200);
    let token = copy.register("after-restore");
    assert_eq!(copy.put("first", &token, &[], b"works").status, 201);
}

#[test]
fn a_backup_into_a_non_empty_directory_exits_1_and_leaves_it_as_it_was() {
    let server = Server::start();
    let token = server.register("someone");
    assert_eq!(server.put("data", &token, &[], b"some data").status, 201);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("occupied");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("precious.txt"), b"do not touch").unwrap();
    std::fs::create_dir(target.join("sub")).unwrap();
    std::fs::write(target.join("sub").join("more"), b"nor this").unwrap();
    let state = |dir: &Path| (contents(dir), mode(dir), std::fs::metadata(dir).unwrap().modified().unwrap());
    let before = state(&target);
    let ran = Cli::new(Some(&server.root), &["backup", target.to_str().unwrap()]).run();
    assert_eq!(ran.code, 1, "{}", ran.describe());
    assert_eq!(state(&target), before, "the directory is unchanged");

    // An existing empty directory is fine.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let ran = Cli::new(Some(&server.root), &["backup", empty.to_str().unwrap()]).run();
    assert_eq!(ran.code, 0, "{}", ran.describe());
    assert_eq!(Cli::new(Some(&empty), &["check"]).run().code, 0);
}

/// A copy inside the data directory would have its store files removed as
/// unreferenced by the server's next start: refused, nothing written.
#[test]
fn a_backup_into_the_data_directory_itself_exits_1_and_writes_nothing() {
    let server = Server::start();
    let token = server.register("someone");
    assert_eq!(server.put("data", &token, &[], b"some data").status, 201);
    let before = files_below(&server.root);
    for target in ["copy", "stores/zz", "stores/../copy", "missing/../copy"] {
        let ran = Cli::new(Some(&server.root), &["backup", server.root.join(target).to_str().unwrap()]).run();
        assert_eq!(ran.code, 1, "{target}: {}", ran.describe());
        assert!(ran.stderr.contains("inside STATIC_ROOT"), "{target}: {}", ran.describe());
    }
    let through_link = tempfile::tempdir().unwrap();
    let link = through_link.path().join("link");
    std::os::unix::fs::symlink(&server.root, &link).unwrap();
    let ran = Cli::new(Some(&server.root), &["backup", link.join("copy").to_str().unwrap()]).run();
    assert_eq!(ran.code, 1, "through a symbolic link: {}", ran.describe());
    assert_eq!(files_below(&server.root), before, "nothing was written");
}

#[test]
fn a_restored_copy_has_a_new_generation_and_the_same_accounts_sessions_and_stores() {
    let server = Server::start();
    let alice = server.register("alice");
    let signed_in = server.post_json("/v1/sessions", None, &json!({"id": "alice", "password": PASSWORD}));
    assert_eq!(signed_in.status, 201);
    let alice2 = signed_in.json()["token"].as_str().unwrap().to_owned();
    let bob = server.register("bob");
    assert_eq!(server.put("notes", &alice, &[("Sync-Meta", "m1")], b"alice's notes").status, 201);
    assert_eq!(server.put("photos", &alice, &[], &[9u8; 5000]).status, 201);
    assert_eq!(server.put("bobs", &bob, &[], b"bob's").status, 201);
    let grant = json!({"account": "bob", "permission": "READ"}).to_string();
    assert_eq!(server.call("PUT", "/v1/stores/notes/permissions", Some(&alice), &[], grant.as_bytes()).status, 204);

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("restored");
    let ran = Cli::new(Some(&server.root), &["backup", target.to_str().unwrap()]).run();
    assert_eq!(ran.code, 0, "{}", ran.describe());
    let copy = Server::start_in(&target, Options::default());

    let (original, restored) = (generation(&server), generation(&copy));
    assert_ne!(original, restored, "a restored copy has a new generation");
    for (at, expected) in [(&server, &original), (&copy, &restored)] {
        for token in [&alice, &bob] {
            let feed = at.get("/v1/changes?since=0", Some(token));
            assert_eq!(feed.status, 200, "{}", feed.text());
            assert_eq!(feed.json()["generation"].as_str(), Some(expected.as_str()), "{}", feed.text());
        }
    }
    for token in [&alice, &alice2, &bob] {
        let listed = |at: &Server| {
            let resp = at.get("/v1/stores", Some(token));
            assert_eq!(resp.status, 200, "the session works: {}", resp.text());
            resp.json()["stores"].clone()
        };
        assert_eq!(listed(&copy), listed(&server), "the same stores, tokens and permissions");
    }
    for (key, token) in [("notes", &alice), ("photos", &alice2), ("bobs", &bob), ("notes", &bob)] {
        let (a, b) = (
            server.get(&format!("/v1/stores/{key}"), Some(token)),
            copy.get(&format!("/v1/stores/{key}"), Some(token)),
        );
        assert_eq!((b.status, &b.body, b.header("ETag")), (200, &a.body, a.header("ETag")), "{key}");
    }
    for id in ["alice", "bob"] {
        let resp = copy.post_json("/v1/sessions", None, &json!({"id": id, "password": PASSWORD}));
        assert_eq!(resp.status, 201, "{id} signs in to the copy: {}", resp.text());
    }
    assert_eq!(copy.put("notes", &alice, &[("If-Match", "*")], b"edited in the copy").status, 200);
    assert_eq!(server.get("/v1/stores/notes", Some(&alice)).body, b"alice's notes", "the copy is separate");
}

// ---------------------------------------------------------------------------
// 5. No data directory: nothing is created

/// The five commands that need a data directory, each with a backup target
/// in `targets` (which must stay missing).
fn every_command(targets: &Path) -> Vec<(String, Cli)> {
    let backup = targets.join("backup");
    let backup = backup.to_str().unwrap();
    vec![
        ("account add".into(), account_add(None, "someone")),
        ("account delete".into(), Cli::new(None, &["account", "delete", "someone"])),
        ("reset-token".into(), Cli::new(None, &["reset-token", "someone"])),
        ("check".into(), Cli::new(None, &["check"])),
        ("check --repair".into(), Cli::new(None, &["check", "--repair"])),
        ("backup".into(), Cli::new(None, &["backup", backup])),
    ]
}

#[test]
fn commands_without_a_data_directory_exit_1_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo").join("data");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let targets = dir.path().join("targets");
    std::fs::create_dir(&targets).unwrap();
    for root in [Some(missing.as_path()), Some(empty.as_path()), None] {
        for (name, mut cli) in every_command(&targets) {
            let cwd = tempfile::tempdir().unwrap();
            cli.root = root.map(Path::to_path_buf);
            let ran = cli.cwd(cwd.path()).run();
            let shown = root.map_or("unset (./data)".into(), |r| r.display().to_string());
            assert_eq!(ran.code, 1, "{name} with STATIC_ROOT {shown}: {}", ran.describe());
            assert!(ran.stderr.contains("STATIC_ROOT"), "{name}: a line naming STATIC_ROOT: {}", ran.describe());
            assert!(!dir.path().join("typo").exists(), "{name} created the missing STATIC_ROOT {shown}");
            assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "{name} wrote into the empty STATIC_ROOT");
            assert_eq!(std::fs::read_dir(&targets).unwrap().count(), 0, "{name} created the backup target");
            let made: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().flatten().map(|e| e.path()).collect();
            assert!(made.is_empty(), "{name} with STATIC_ROOT {shown} created {made:?} in its working directory");
        }
    }
}

// ---------------------------------------------------------------------------
// 6. Another schema version

#[test]
fn commands_refuse_a_database_of_another_schema_version_and_leave_it_so() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    {
        let server = Server::start_in(&root, Options::default());
        let token = server.register("versioned");
        assert_eq!(server.put("kept", &token, &[], b"kept").status, 201);
    }
    let counts = |root: &Path| -> (i64, i64, i64) {
        let db = database(root);
        let count = |sql: &str| db.query_row(sql, [], |row| row.get(0)).unwrap();
        (
            count("SELECT count(*) FROM sync_account"),
            count("SELECT count(*) FROM sync_store"),
            count("SELECT value FROM sync_counter WHERE name = 'seq'"),
        )
    };
    let before = counts(&root);
    let files = store_files(&root);
    let targets = dir.path().join("targets");
    std::fs::create_dir(&targets).unwrap();
    for version in [2, 99] {
        database(&root).pragma_update(None, "user_version", version).unwrap();
        for (name, mut cli) in every_command(&targets) {
            if name != "account add" {
                cli.args =
                    cli.args.iter().map(|a| if a == "someone" { "versioned".into() } else { a.clone() }).collect();
            }
            cli.root = Some(root.clone());
            let ran = cli.run();
            assert_eq!(ran.code, 1, "{name} on schema version {version}: {}", ran.describe());
            let said = lines(&ran.stderr);
            assert!(said.iter().any(|line| line.contains("schema")), "{name}: {}", ran.describe());
            assert_eq!(user_version(&root), version, "{name} changed the schema version");
            assert_eq!(counts(&root), before, "{name} changed the database");
            assert_eq!(store_files(&root), files, "{name} changed the store files");
            assert_eq!(std::fs::read_dir(&targets).unwrap().count(), 0, "{name} created the backup target");
        }
    }
}

// ---------------------------------------------------------------------------
// 7. File modes whatever the umask

/// The uid the tests run as (the owner of `/proc/self`).
fn euid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// What runs the binary under `umask`, as an unprivileged user when the
/// tests run as root: root ignores file modes, so a file or directory the
/// server made unusable for itself would go unnoticed. That user may not
/// reach the build directory (a clone in a private directory), so it runs
/// a copy of the binary placed in `dir`; the original path, passed as
/// `$0`, is ignored.
fn umask_wrapper(umask: &str, dir: &Path) -> Vec<String> {
    let mut wrapper = Vec::new();
    let mut program = PathBuf::from(BIN);
    if euid() == 0 && Path::new("/usr/bin/setpriv").exists() {
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
        let tools = dir.join("bin");
        std::fs::create_dir(&tools).unwrap();
        std::fs::set_permissions(&tools, std::fs::Permissions::from_mode(0o755)).unwrap();
        program = tools.join("sync-node");
        std::fs::copy(BIN, &program).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        wrapper.extend(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"].map(String::from));
    }
    wrapper.extend(["sh".into(), "-c".into(), format!("umask {umask}; exec '{}' \"$@\"", program.display())]);
    wrapper
}

/// Directories below `dir`, recursively.
fn dirs_below(dir: &Path) -> Vec<PathBuf> {
    listing(dir, &[]).into_iter().filter(|(_, (is_dir, _, _))| *is_dir).map(|(name, _)| dir.join(name)).collect()
}

/// Adds to `problems` every directory of `root` (itself included) that is
/// not 0700, every one of `files` that is not 0600, and a WAL that others
/// may read.
fn check_private(root: &Path, files: &[&str], what: &str, problems: &mut Vec<String>) {
    let mut expect = |path: &Path, wanted: u32| {
        let got = mode(path);
        if got != wanted {
            problems.push(format!("{what}: {} is {got:04o}, not {wanted:04o}", path.display()));
        }
    };
    expect(root, 0o700);
    let dirs = dirs_below(root);
    assert!(dirs.iter().any(|d| d.ends_with("stores")), "{what}: stores/ exists");
    let prefixes = dirs.iter().filter(|d| d.parent().is_some_and(|p| p.ends_with("stores"))).count();
    assert!(prefixes > 0, "{what}: a stores/xx/ directory exists");
    for dir in &dirs {
        expect(dir, 0o700);
    }
    for file in files {
        expect(&root.join(file), 0o600);
    }
    for file in ["sync-node.db-wal", "sync-node.db-shm"] {
        let path = root.join(file);
        if path.exists() && mode(&path) & 0o077 != 0 {
            problems.push(format!("{what}: {} is {:04o}", path.display(), mode(&path)));
        }
    }
}

fn modes_under_umask(umask: &str) {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = umask_wrapper(umask, dir.path());
    let options = Options { wrapper: wrapper.clone(), ..Options::default() };
    let root = dir.path().join("parent").join("data");
    let server = Server::start_in(&root, options.clone());
    let token = server.register("private");
    assert_eq!(server.put("secretive", &token, &[], b"only for me").status, 201);
    assert_eq!(server.get("/v1/stores/secretive", Some(&token)).body, b"only for me");
    let mut problems = Vec::new();
    check_private(
        &dir.path().join("parent"),
        &[],
        &format!("umask {umask}, a parent the server created"),
        &mut problems,
    );
    check_private(
        &root,
        &["sync-node.db", "secret", "sync-node.lock"],
        &format!("umask {umask}, data dir"),
        &mut problems,
    );
    if !root.join("tmp").is_dir() {
        problems.push(format!("umask {umask}: no tmp/"));
    }

    let target = dir.path().join("backups").join("copy");
    let ran = Cli::new(Some(&root), &["backup", target.to_str().unwrap()]).wrapped(&wrapper).run();
    if ran.code == 0 {
        check_private(&dir.path().join("backups"), &[], &format!("umask {umask}, backup's parent"), &mut problems);
        check_private(&target, &["sync-node.db", "secret"], &format!("umask {umask}, backup"), &mut problems);
        let check = Cli::new(Some(&target), &["check"]).wrapped(&wrapper).run();
        if check.code != 0 {
            problems.push(format!("umask {umask}: check of the backup: {}", check.describe()));
        }
    } else {
        problems.push(format!("umask {umask}: sync-node backup: {}", ran.describe()));
    }

    drop(server);
    let restarted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Server::start_in(&root, options.clone())));
    match restarted {
        Ok(again) => {
            let body = again.get("/v1/stores/secretive", Some(&token)).body;
            if body != b"only for me" {
                problems.push(format!("umask {umask}: after a restart: {}", String::from_utf8_lossy(&body)));
            }
        }
        Err(_) => problems.push(format!("umask {umask}: the server does not start again on its own directory")),
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn everything_is_private_under_umask_000() {
    modes_under_umask("000");
}

/// A restrictive umask is a hardening an operator may choose: the server
/// must start and work under it (restarts and backups included), and its
/// modes are still exactly 0700 and 0600, not narrowed to read-only ones it
/// could not use on its next start. (Run as an unprivileged user: root
/// would not notice.)
#[test]
fn everything_is_private_and_usable_under_umask_0277() {
    modes_under_umask("0277");
}

// ---------------------------------------------------------------------------
// 8. Three servers, one directory

#[test]
fn of_three_servers_on_one_directory_only_the_first_serves_and_the_others_change_nothing() {
    let first = Server::start();
    let token = first.register("first");
    assert_eq!(first.put("there", &token, &[], b"before the others").status, 201);
    thread::sleep(Duration::from_millis(50));
    let before = listing(&first.root, &["sync-node.lock"]);
    let mut ports = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        let (code, stderr, elapsed) = start_expecting_exit(&first.root, port, Duration::from_secs(5));
        assert_eq!(code, Some(1), "a server on port {port} after {elapsed:?}: {stderr}");
        assert!(stderr.contains("STATIC_ROOT") && stderr.contains("in use"), "{stderr}");
        ports.push(port);
    }
    assert_eq!(listing(&first.root, &["sync-node.lock"]), before, "the others changed the directory");
    for port in ports {
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing serves on port {port}");
    }
    assert_eq!(first.get("/v1/stores/there", Some(&token)).body, b"before the others");
}

// ---------------------------------------------------------------------------
// 9. A commit by the command line wakes a parked poll

#[test]
fn deleting_an_account_from_the_command_line_wakes_the_polls_of_those_it_shared_with() {
    let server = Server::start();
    let a = server.register("sharer");
    let b = server.register("reader");
    assert_eq!(server.put("shared", &a, &[], b"for b").status, 201);
    assert_eq!(server.put("private", &a, &[], b"for a").status, 201);
    let grant = json!({"account": "reader", "permission": "READ"}).to_string();
    assert_eq!(server.call("PUT", "/v1/stores/shared/permissions", Some(&a), &[], grant.as_bytes()).status, 204);
    let feed = server.get("/v1/changes?since=0", Some(&b));
    assert_eq!(feed.status, 200);
    let since = feed.json()["seq"].as_i64().unwrap();
    assert_eq!(store_files(&server.root).len(), 2);

    let (tx, rx) = std::sync::mpsc::channel();
    let addr = server.addr;
    let poller = thread::spawn(move || {
        let resp = Conn::open(addr).request("GET", &format!("/v1/changes?since={since}&wait=20"), Some(&b), &[], b"");
        let _ = tx.send(Instant::now());
        resp
    });
    thread::sleep(Duration::from_millis(500));
    assert!(rx.try_recv().is_err(), "the poll is held while nothing changes");

    let ran = Cli::new(Some(&server.root), &["account", "delete", "sharer"]).run();
    let deleted = Instant::now();
    assert_eq!(ran.code, 0, "{}", ran.describe());
    let answered = rx.recv_timeout(Duration::from_secs(25)).expect("the poll is answered");
    let resp = poller.join().unwrap();
    let waited = answered.saturating_duration_since(deleted);
    assert!(
        waited < Duration::from_secs(2),
        "the poll was answered {waited:?} after the deletion committed (wait=20): {}",
        resp.text()
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let changes = resp.json()["changes"].clone();
    let shared: Vec<&Value> = changes.as_array().unwrap().iter().filter(|c| c["key"] == "shared").collect();
    assert_eq!(shared.len(), 1, "{changes}");
    assert_eq!(shared[0]["token"], Value::Null, "{changes}");
    assert_eq!(shared[0]["permission"], Value::Null, "{changes}");
    assert!(store_files(&server.root).is_empty(), "the deleted account's store files are gone");
    assert!(files_below(&server.root.join("stores")).is_empty());
}

#[test]
/// A request sent after a command committed sees that commit, even when it
/// joins a batch of reads that was already being answered.
fn a_sign_in_right_after_account_add_sees_the_account_while_reads_stream() {
    let server = Server::start();
    let token = server.register("reader");
    assert_eq!(server.put("x", &token, &[], b"x").status, 201);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..6)
        .map(|_| {
            let (addr, token, stop) = (server.addr, token.clone(), Arc::clone(&stop));
            thread::spawn(move || {
                let mut conn = Conn::open(addr);
                while !stop.load(Ordering::Relaxed) {
                    let read = conn.request("GET", "/v1/stores/x", Some(&token), &[], b"");
                    assert_eq!(read.status, 200);
                    // A connection closes after its 1,000th request.
                    if read.header("Connection") == Some("close") {
                        conn = Conn::open(addr);
                    }
                }
            })
        })
        .collect();
    let mut stale = Vec::new();
    for i in 0..30 {
        let id = format!("u{i}");
        let ran = account_add(Some(&server.root), &id).run();
        assert_eq!(ran.code, 0);
        let resp = server.post_json("/v1/sessions", None, &json!({"id": id, "password": PASSWORD}));
        if resp.status != 201 {
            stale.push((i, resp.status, resp.text()));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(stale.is_empty(), "{} of 30 sign-ins right after account add failed: {stale:?}", stale.len());
}
