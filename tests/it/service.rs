//! Service endpoints, CORS, configuration and the command line.

use crate::support::{BIN, Options, Server};
use std::process::Command;

#[test]
fn health_and_info() {
    let server = Server::start_with(Options::default().env("QUOTA_BYTES", "5000").env("REGISTRATION", "closed"));
    let health = server.get("/v1/health", None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), serde_json::json!({"status": "ok"}));
    assert_eq!(health.header("Content-Type"), Some("application/json; charset=utf-8"));
    assert_eq!(health.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(health.header("Access-Control-Allow-Origin"), Some("*"));
    assert_eq!(
        health.header("Access-Control-Expose-Headers"),
        Some(
            "ETag, Sync-Meta, Sync-Permission, Sync-Seq, Sync-Log-Head, Sync-Log-Base, Sync-Log-More, Sync-Envelope-Seq, Sync-Identity-Version, Retry-After"
        )
    );
    let info = server.get("/v1/info", None).json();
    assert_eq!(info["name"], "sync-node");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["registration"], "closed");
    assert_eq!(info["password_reset"], false);
    assert_eq!(info["max_store_bytes"], 67_108_864);
    assert_eq!(info["max_meta_bytes"], 8000);
    assert_eq!(info["max_key_bytes"], 1024);
    assert_eq!(info["quota_bytes"], 5000);
    assert_eq!(info["session_ttl_days"], 30);
    assert_eq!(info["max_wait_seconds"], 60);
}

#[test]
fn cors_with_an_origin_list_and_preflight() {
    let server =
        Server::start_with(Options::default().env("CORS_ORIGINS", "https://app.example,http://localhost:3000"));
    let listed = server.call("GET", "/v1/health", None, &[("Origin", "http://localhost:3000")], b"");
    assert_eq!(listed.header("Access-Control-Allow-Origin"), Some("http://localhost:3000"));
    assert_eq!(listed.header("Vary"), Some("Origin"));
    let unlisted = server.call("GET", "/v1/health", None, &[("Origin", "https://evil.example")], b"");
    assert_eq!(unlisted.header("Access-Control-Allow-Origin"), None);
    assert_eq!(unlisted.status, 200);

    let preflight = server.call("OPTIONS", "/v1/stores/some-key", None, &[("Origin", "https://app.example")], b"");
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("Access-Control-Allow-Origin"), Some("https://app.example"));
    assert!(preflight.header("Access-Control-Allow-Methods").unwrap().contains("PUT"));
    assert_eq!(
        preflight.header("Access-Control-Allow-Headers"),
        Some(
            "Authorization, Content-Type, If-Match, If-None-Match, If-Log-Head, Sync-Meta, Sync-Log-Base, Last-Event-ID"
        )
    );
    assert!(preflight.header("Access-Control-Max-Age").is_some());
}

#[test]
fn answers_written_before_routing_carry_cors_headers_too() {
    let options = Options::default().env("CORS_ORIGINS", "https://app.example").env("MAX_CONNECTIONS", "2");
    let server = Server::start_with(options);
    // A full server's 503 is written before any route is known.
    let mut busy: Vec<_> = (0..2).map(|_| server.connect()).collect();
    for conn in &mut busy {
        conn.send(b"GET /v1/health HTTP/1.1\r\nHost: t\r\n");
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut late = server.connect();
    late.send(b"GET /v1/health HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\n\r\n");
    let full = late.read_response(false);
    assert_eq!(full.status, 503);
    assert_eq!(full.header("Access-Control-Allow-Origin"), Some("https://app.example"));
    assert!(full.header("Retry-After").is_some());
    let mut unlisted = server.connect();
    unlisted.send(b"GET /v1/health HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n\r\n");
    let full = unlisted.read_response(false);
    assert_eq!((full.status, full.header("Access-Control-Allow-Origin")), (503, None));
    drop((busy, late, unlisted));
    std::thread::sleep(std::time::Duration::from_millis(200));
    // A head refused before it was parsed (431) names its Origin on the way.
    let mut huge = server.connect();
    let filler = "a".repeat(4000);
    let mut head = String::from("GET /v1/health HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\n");
    for n in 0..6 {
        head.push_str(&format!("X-Filler-{n}: {filler}\r\n"));
    }
    huge.send(head.as_bytes());
    let refused = huge.read_response(false);
    assert_eq!(refused.status, 431);
    assert_eq!(refused.header("Access-Control-Allow-Origin"), Some("https://app.example"));
}

/// Runs the binary with `env` and returns (exit code, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("STATIC_ROOT", dir.path().join("data"))
        .env("PORT", "0")
        .env("BIND", "127.0.0.1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn bad_configuration_exits_2_naming_the_variable() {
    for (name, value) in [
        ("PORT", "eighty"),
        ("BIND", "not-an-ip"),
        ("MAX_STORE_BYTES", "-5"),
        ("QUOTA_BYTES", "lots"),
        ("REGISTRATION", "maybe"),
        ("SESSION_TTL_DAYS", "0"),
        ("CORS_ORIGINS", "nope"),
        ("PBKDF2_ITERATIONS", "10"),
        ("TRUST_PROXY", "true"),
        ("MAX_CONNECTIONS", "0"),
        ("RESET_HOOK", "/nonexistent/hook"),
        ("STATIC_ROOT", "/dev/null/data"),
    ] {
        let (code, stderr) = run(&[], &[(name, value)]);
        assert_eq!(code, 2, "{name}={value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
    }
}

#[test]
fn a_port_in_use_exits_3_so_a_service_manager_retries() {
    let server = Server::start();
    let port = server.addr.port().to_string();
    let (code, stderr) = run(&[], &[("PORT", &port)]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("PORT"), "{stderr}");
    // An address this machine does not have (yet) names BIND too.
    let (code, stderr) = run(&[], &[("BIND", "192.0.2.1")]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("BIND"), "{stderr}");
}

#[test]
fn command_line() {
    let (code, _) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    for word in [
        "serve",
        "account add",
        "account delete",
        "reset-token",
        "backup DIR",
        "check [--repair]",
        "STATIC_ROOT",
        "MAX_CONNECTIONS",
    ] {
        assert!(text.contains(word), "--help mentions {word}");
    }
    let (code, stderr) = run(&["frobnicate"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("Usage"), "{stderr}");
}
