//! What ships in contrib/: the reset hook mails exactly one address, and
//! the systemd unit has the settings the docs promise.

use std::process::Command;

/// Runs the hook with a fake sendmail; returns what it was asked to send
/// (its arguments, then the mail) or `None`, and the hook's stderr.
fn run_hook(id: &str) -> (Option<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let sent = dir.path().join("sent");
    let fake = dir.path().join("sendmail");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\n{{ printf 'ARGS:'; printf ' [%s]' \"$@\"; echo; cat; }} > {}\n", sent.display()),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/reset-hook-msmtp.sh"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SENDMAIL", &fake)
        .env("SYNC_NODE_MAIL_FROM", "sync@example.org")
        .env("SYNC_NODE_ID", id)
        .env("SYNC_NODE_TOKEN", "the-token")
        .output()
        .unwrap();
    assert!(output.status.success(), "the hook never fails the server: {output:?}");
    (std::fs::read_to_string(&sent).ok(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn the_reset_hook_mails_exactly_one_address() {
    let (sent, _) = run_hook("ada.lovelace+sync@example.org");
    let sent = sent.expect("a plain address gets its mail");
    assert!(sent.starts_with("ARGS: [-i] [--] [ada.lovelace+sync@example.org]\n"), "{sent}");
    assert!(sent.contains("From: sync@example.org\n") && sent.contains("the-token"), "{sent}");
    for id in [
        "a@example.org,b@example.org",
        "a@example.org, b@example.org",
        "a@example.org\nBcc: b@example.org",
        "Ada <a@example.org>",
        "a@b@example.org",
        "not-an-address",
        "a@localhost",
        "-oQ/tmp/x@example.org ",
        "",
    ] {
        let (sent, err) = run_hook(id);
        assert!(sent.is_none(), "{id:?} got mail: {sent:?}");
        assert!(err.contains("not sending"), "{id:?}: {err}");
    }
}

#[test]
fn a_failing_mailer_does_not_put_the_address_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mailer = dir.path().join("mailer");
    std::fs::write(&mailer, "#!/bin/sh\necho \"recipient $3 not accepted\" >&2\nexit 1\n").unwrap();
    Command::new("chmod").arg("+x").arg(&mailer).status().unwrap();
    let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/reset-hook-msmtp.sh"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SENDMAIL", &mailer)
        .env("SYNC_NODE_MAIL_FROM", "sync@example.org")
        .env("SYNC_NODE_ID", "private.person@example.org")
        .env("SYNC_NODE_TOKEN", "t")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("failed"), "{stderr}");
    assert!(!stderr.contains("private.person"), "{stderr}");
}

#[test]
fn the_reset_hook_needs_a_sender() {
    let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/reset-hook-msmtp.sh"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SENDMAIL", "/bin/false")
        .env("SYNC_NODE_ID", "a@example.org")
        .env("SYNC_NODE_TOKEN", "t")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("SYNC_NODE_MAIL_FROM"));
}

#[test]
fn the_systemd_unit_restarts_on_3_only_and_hardens() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/sync-node.service")).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    for expected in [
        "RestartPreventExitStatus=1 2",
        "Restart=on-failure",
        "UMask=0077",
        "After=network-online.target",
        "Wants=network-online.target",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
    ] {
        assert!(lines.contains(&expected), "missing {expected}");
    }
}

#[test]
fn the_readme_walk_through_works_when_pasted() {
    let server = crate::support::Server::start();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("### A walk through with curl").nth(1).expect("the section");
    let script = section.split("```sh\n").nth(1).and_then(|rest| rest.split("\n```").next()).expect("its sh block");
    let script = script.replace("S=http://localhost:8080", &format!("S=http://{}", server.addr));
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new("bash").args(["-euc", &script]).current_dir(dir.path()).output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out}\n{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].contains("\"seq\":1") && lines[1] == "version 1", "{out}");
    assert!(lines[2].contains("\"size\":18") && lines[3].contains("precondition_failed"), "{out}");
    assert!(lines[4].contains("\"seq\":3"), "the merged write wins: {out}");
}
