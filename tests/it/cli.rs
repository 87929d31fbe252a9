//! The command line as an operator meets it: missing arguments, which data
//! directory a command used, and `account add` on a terminal.

use crate::support::{BIN, PASSWORD, Server, cli, cli_input};
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn a_missing_argument_is_named() {
    let server = Server::start();
    for (args, names) in [
        (&["account", "add"][..], "ID"),
        (&["account", "delete"], "ID"),
        (&["reset-token"], "ID"),
        (&["backup"], "DIR"),
        (&["account"], "add ID, list or delete ID"),
    ] {
        let (code, out, err) = cli(&server.root, args, &[]);
        assert_eq!(code, 2, "{args:?}");
        assert!(out.is_empty());
        assert!(err.lines().next().unwrap_or("").contains(names), "{args:?}: {err}");
    }
}

/// `--help` after a command shows the help and does nothing else; an
/// operand that looks like an option is a usage error unless it follows
/// `--`. (Once, `backup --help` wrote a backup into `./--help`, and
/// `account add --help` made an account named `--help`.)
#[test]
fn help_anywhere_is_help_and_a_dashed_operand_needs_a_double_dash() {
    let server = Server::start();
    let cwd = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(BIN)
            .args(args)
            .current_dir(cwd.path())
            .env_clear()
            .env("STATIC_ROOT", &server.root)
            .env("PBKDF2_ITERATIONS", "1000")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
    };
    let accounts = || run(&["account", "list"]).1.lines().count();
    for args in [
        &["backup", "--help"][..],
        &["account", "add", "--help"],
        &["account", "delete", "-h"],
        &["reset-token", "--help"],
        &["check", "--repair", "--help"],
        &["invite", "--help"],
        &["serve", "--help"],
    ] {
        let (code, out, _) = run(args);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("Usage:"), "{args:?}: {out}");
    }
    assert_eq!(accounts(), 0, "no account was made");
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0, "no backup was written");

    for args in
        [&["backup", "-x"][..], &["account", "add", "--odd"], &["account", "delete", "-v"], &["reset-token", "-q"]]
    {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty() && err.contains("goes after '--'"), "{args:?}: {err}");
    }
    for args in [&["check", "--", "--repair"][..], &["--", "--version"], &["invite", "--", "--uses", "2"]] {
        let (code, out, err) = run(args);
        assert_eq!((code, out.as_str()), (2, ""), "after '--' nothing is an option: {args:?}: {err}");
    }
    let (code, _, err) = run(&["account", "add", "--"]);
    assert_eq!((code, err.lines().next().unwrap_or("").contains("ID")), (2, true), "{err}");

    let (code, _, err) =
        cli_input(&server.root, &["account", "add", "--", "-dashed-id"], &[], &format!("{PASSWORD}\n"));
    assert_eq!(code, 0, "an id after '--' is taken as it is: {err}");
    let login = server.post_json("/v1/sessions", None, &json!({"id": "-dashed-id", "password": PASSWORD}));
    assert_eq!(login.status, 201, "{}", login.text());
}

#[test]
fn every_command_names_its_data_directory_on_stderr() {
    let server = Server::start();
    server.register("dir@example.org");
    let shown = server.root.canonicalize().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let target = backup.path().join("copy");
    for args in [
        vec!["account", "list"],
        vec!["reset-token", "dir@example.org"],
        vec!["invite"],
        vec!["check"],
        vec!["backup", target.to_str().unwrap()],
    ] {
        let (code, _, err) = cli(&server.root, &args, &[]);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(err.contains(&format!("data directory {}", shown.display())), "{args:?}: {err}");
    }
}

/// Runs `account add ID` under a pseudo-terminal (util-linux `script`)
/// with `typed` as the keyboard; returns the exit code and the terminal's
/// transcript.
fn add_on_a_terminal(server: &Server, id: &str, typed: &str) -> (i32, String) {
    let command = format!("{BIN} account add {id}");
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .env("STATIC_ROOT", &server.root)
        .env("PBKDF2_ITERATIONS", "1000")
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in typed.split_inclusive('\n') {
        // One line per prompt, as a person types.
        std::thread::sleep(std::time::Duration::from_millis(300));
        // The command may have ended already (it refuses what it cannot read).
        let _ = stdin.write_all(line.as_bytes());
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn account_add_on_a_terminal_asks_twice_without_echo() {
    let server = Server::start();
    let (code, screen) = add_on_a_terminal(&server, "typed@example.org", &format!("{PASSWORD}\n{PASSWORD}\n"));
    if screen.contains("os error 38") {
        // qemu-user (scripts/test-arm.sh) does not emulate the terminal
        // ioctl; the command refused rather than echo the password.
        eprintln!("skipped: this kernel or emulator has no terminal settings ioctl");
        return;
    }
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("Password for the new account") && screen.contains("The same password again"), "{screen}");
    assert!(!screen.contains(PASSWORD), "the password was echoed: {screen}");
    let login = server.post_json("/v1/sessions", None, &json!({"id": "typed@example.org", "password": PASSWORD}));
    assert_eq!(login.status, 201);

    let (code, screen) = add_on_a_terminal(&server, "typo@example.org", &format!("{PASSWORD}\n{PASSWORD}x\n"));
    assert_eq!(code, 1, "{screen}");
    assert!(screen.contains("differ"), "{screen}");
    let login = server.post_json("/v1/sessions", None, &json!({"id": "typo@example.org", "password": PASSWORD}));
    assert_eq!(login.status, 401, "nothing was created");
}

#[test]
fn ctrl_c_at_the_password_prompt_gives_the_terminal_its_echo_back() {
    let server = Server::start();
    // The shell ignores SIGINT so that it survives to print the terminal's
    // settings after the command is interrupted.
    let command = format!("trap '' INT; {BIN} account add interrupted@example.org; echo \"exit $?\"; stty -a");
    let mut child = Command::new("script")
        .args(["-qec", &format!("sh -c {}", shell_quote(&command)), "/dev/null"])
        .env_clear()
        .env("STATIC_ROOT", &server.root)
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    // (Ignoring errors: where the command refused at once, script is gone.)
    let _ = stdin.write_all(b"half a pass");
    let _ = stdin.write_all(&[3]); // Ctrl-C
    std::thread::sleep(std::time::Duration::from_millis(800));
    drop(stdin);
    let screen = String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned();
    if screen.contains("os error 38") {
        eprintln!("skipped: this kernel or emulator has no terminal settings ioctl");
        return;
    }
    assert!(screen.contains("exit 130"), "interrupted: {screen}");
    let words: Vec<&str> = screen.split_whitespace().collect();
    assert!(words.contains(&"echo") && !words.contains(&"-echo"), "echo is back on: {screen}");
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}
