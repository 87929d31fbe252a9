//! Starts the real `sync-node` binary on an ephemeral port with a temporary
//! `STATIC_ROOT`, and speaks raw HTTP/1.1 to it.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_sync-node");
pub const PASSWORD: &str = "correct horse battery";

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub root: PathBuf,
    _dir: Option<tempfile::TempDir>,
    log: Arc<Mutex<String>>,
}

/// How to start a server.
#[derive(Default, Clone)]
pub struct Options {
    pub env: Vec<(String, String)>,
    /// A command (and its arguments) that runs the binary, e.g. `prlimit`.
    pub wrapper: Vec<String>,
}

impl Options {
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let mut server = Server::start_in(&root, options);
        server._dir = Some(dir);
        server
    }

    /// Starts on an existing (or new) root that outlives the server.
    pub fn start_in(root: &Path, options: Options) -> Server {
        let mut command = wrapped_command(&options.wrapper);
        command
            .env_clear()
            .env("PORT", "0")
            .env("BIND", "127.0.0.1")
            .env("STATIC_ROOT", root)
            .env("PBKDF2_ITERATIONS", "1000")
            .envs(options.env.iter().map(|(n, v)| (n, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn sync-node");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default().to_owned();
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                thread::sleep(Duration::from_millis(100));
                panic!("sync-node did not start: {}", log.lock().unwrap());
            }
        };
        Server { child, addr, root: root.to_path_buf(), _dir: None, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server has written to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once `done` says it holds what the caller waits for (its
    /// lines are read from a pipe by another thread, so one written just
    /// before an answer can arrive after it), or after 10 s as it is.
    pub fn log_when(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if done(&log) || std::time::Instant::now() > deadline {
                return log;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (e.g. "TERM") and waits for the process to end:
    /// its exit code and how long it took.
    pub fn stop_with(&mut self, signal: &str) -> (Option<i32>, Duration) {
        let started = std::time::Instant::now();
        let sent = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().unwrap();
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        (status.code(), started.elapsed())
    }

    /// Waits until the loop holds at least `polls` long-polls and
    /// `streams` streams (an observable count, not a guessed sleep).
    pub fn wait_held(&self, polls: u64, streams: u64) {
        let until = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let held = self.get("/v1/test-hooks/held", None).json();
            if held["polls"].as_u64() >= Some(polls) && held["streams"].as_u64() >= Some(streams) {
                return;
            }
            assert!(std::time::Instant::now() < until, "held {held}, waited for {polls} polls and {streams} streams");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn connect(&self) -> Conn {
        Conn::open(self.addr)
    }

    /// One request on a new connection. No answer is a failure that shows
    /// how the connection ended and what the server logged.
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut conn = self.connect();
        conn.send(&request_bytes(method, path, token, headers, body));
        conn.try_read_response(method == "HEAD").unwrap_or_else(|| {
            panic!("no answer to {method} {path}: {}; the server's log:\n{}", conn.ending(), self.log())
        })
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.call("GET", path, token, &[], b"")
    }

    pub fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.call("POST", path, token, &[("Content-Type", "application/json")], body.to_string().as_bytes())
    }

    /// Registers `id` and returns its session token.
    pub fn register(&self, id: &str) -> String {
        let resp = self.post_json("/v1/accounts", None, &serde_json::json!({"id": id, "password": PASSWORD}));
        assert_eq!(resp.status, 201, "register {id}: {}", resp.text());
        resp.json()["token"].as_str().unwrap().to_owned()
    }

    /// `POST /v1/accounts` for `id` as if from `from` (its `X-Forwarded-For`,
    /// which counts only behind `TRUST_PROXY`).
    pub fn register_from(&self, id: &str, from: &str) -> Resp {
        let body = serde_json::json!({"id": id, "password": PASSWORD}).to_string();
        self.call(
            "POST",
            "/v1/accounts",
            None,
            &[("Content-Type", "application/json"), ("X-Forwarded-For", from)],
            body.as_bytes(),
        )
    }

    /// `PUT /v1/stores/{key}` with extra headers.
    pub fn put(&self, key: &str, token: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.call("PUT", &format!("/v1/stores/{key}"), Some(token), headers, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A parsed answer.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The whole answer as received, head and body.
    pub raw: Vec<u8>,
}

impl Resp {
    /// The whole answer but its `Date` line: two answers a second apart
    /// that must be identical otherwise (no enumeration) compare equal.
    pub fn raw_without_date(&self) -> Vec<u8> {
        let text = String::from_utf8_lossy(&self.raw);
        text.split_inclusive("\r\n").filter(|line| !line.starts_with("Date: ")).collect::<String>().into_bytes()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The error code of a JSON error answer.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    pub fn etag(&self) -> String {
        self.header("ETag").expect("ETag").to_owned()
    }
}

pub struct Conn {
    pub stream: TcpStream,
    pending: Vec<u8>,
    /// Why the last read got nothing (None: the server closed).
    read_error: Option<std::io::ErrorKind>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        Conn::over(TcpStream::connect(addr).unwrap())
    }

    /// Wraps a connected stream.
    pub fn over(stream: TcpStream) -> Conn {
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn { stream, pending: Vec::new(), read_error: None }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let bytes = request_bytes(method, path, token, headers, body);
        self.send(&bytes);
        self.read_response(method == "HEAD")
    }

    /// Reads one answer; `None` if the server closed first.
    pub fn try_read_response(&mut self, head_only: bool) -> Option<Resp> {
        let head_end = loop {
            if let Some(end) = find(&self.pending, b"\r\n\r\n") {
                break end + 4;
            }
            if !self.fill() {
                return None;
            }
        };
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut slots);
        parsed.parse(&self.pending[..head_end]).expect("response head parses");
        let status = parsed.code.unwrap();
        let headers: Vec<(String, String)> =
            parsed.headers.iter().map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned())).collect();
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
        let body_len = if head_only || status == 304 || status == 204 || status / 100 == 1 { 0 } else { length };
        while self.pending.len() < head_end + body_len {
            assert!(self.fill(), "connection closed inside a body");
        }
        let raw: Vec<u8> = self.pending.drain(..head_end + body_len).collect();
        let body = raw[head_end..].to_vec();
        Some(Resp { status, headers, body, raw })
    }

    pub fn read_response(&mut self, head_only: bool) -> Resp {
        match self.try_read_response(head_only) {
            Some(resp) => resp,
            None => panic!("expected an answer before the connection ended: {}", self.ending()),
        }
    }

    /// How the connection ended, for a failure message.
    pub fn ending(&self) -> String {
        self.read_error.map_or("the server closed it".into(), |kind| format!("the read failed ({kind:?})"))
    }

    /// Whether the server has closed this connection (EOF or reset).
    pub fn is_closed(&mut self) -> bool {
        self.pending.clear();
        !self.fill()
    }

    fn fill(&mut self) -> bool {
        let mut buf = [0u8; 65536];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                // A signal (a child of another test exiting) is no answer: read again.
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    self.read_error = Some(err.kind());
                    return false;
                }
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    return true;
                }
            }
        }
    }
}

/// A command that runs the binary, through `wrapper` (a program and its
/// arguments, e.g. `prlimit …`) if one is given.
pub fn wrapped_command(wrapper: &[String]) -> Command {
    match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(BIN);
            command
        }
        None => Command::new(BIN),
    }
}

/// Writes `text` to the child's stdin and closes it. A command may exit
/// before it reads its input (a refusal that comes first, such as a missing
/// data directory), so a closed pipe is not an error here: the caller's
/// assertions on the exit status and output decide.
pub fn write_stdin(child: &mut Child, text: &[u8]) {
    let mut pipe = child.stdin.take().expect("stdin was piped");
    match pipe.write_all(text) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing the command's stdin: {e}"),
        _ => {}
    }
}

/// The bytes of one request (with `Host`, and `Content-Length` when there
/// is a body or the method takes one).
pub fn request_bytes(method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Raw bytes on their own connection (closed for writing after them); the
/// answer, or `None` if the server closed without one.
pub fn send_raw(server: &Server, bytes: &[u8]) -> Option<Resp> {
    let mut conn = server.connect();
    conn.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = conn.stream.write_all(bytes);
    let _ = conn.stream.shutdown(std::net::Shutdown::Write);
    conn.try_read_response(false)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Every file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_below(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Files in `stores/` and `tmp/` of a data directory.
pub fn store_files(root: &Path) -> Vec<PathBuf> {
    files_below(&root.join("stores"))
}

pub fn temp_files(root: &Path) -> Vec<PathBuf> {
    files_below(&root.join("tmp"))
}

/// Runs a `sync-node` command on `root` and returns (exit code, stdout, stderr).
pub fn cli(root: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    finished(cli_command(root, args, env).stdin(Stdio::null()).output().unwrap())
}

/// [`cli`] with `input` on the command's stdin (a password for
/// `account add`, say).
pub fn cli_input(root: &Path, args: &[&str], env: &[(&str, &str)], input: &str) -> (i32, String, String) {
    let mut child = cli_command(root, args, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    write_stdin(&mut child, input.as_bytes());
    finished(child.wait_with_output().unwrap())
}

fn cli_command(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).env_clear().env("STATIC_ROOT", root).env("PBKDF2_ITERATIONS", "1000").envs(env.iter().copied());
    command
}

/// Exit code, stdout and stderr of a finished command.
fn finished(output: std::process::Output) -> (i32, String, String) {
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

/// Opens the server's database directly, to inspect or age rows.
pub fn database(root: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(root.join("sync-node.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// A small tmpfs, unmounted when dropped (`None` where mounting is not
/// allowed: the test says it was skipped).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).output();
        status.ok().filter(|out| out.status.success()).map(|_| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
