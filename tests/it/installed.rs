//! What the binary does differently on an installed server: root's
//! commands take the service's configuration file and run as the data
//! directory's owner; anyone with a `STATIC_ROOT` of their own works as
//! always; a failed first start leaves nothing behind; a fresh server open
//! to anyone on a public interface says so.

use crate::support::{BIN, Options, PASSWORD, Server, cli};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `nobody` on Debian: a user that owns nothing here.
const SERVICE_UID: u32 = 65534;

/// Runs `sync-node ARGS` as a packaged install's operator would: no
/// `STATIC_ROOT`, the configuration file named by `SYNC_NODE_CONFIG`. The
/// program is a copy beside that file, where the service's user may run
/// it (as it may `/usr/bin/sync-node`; the build's own directory may be
/// private to the one who built it).
fn operator(config: &Path, args: &[&str], input: &str) -> Output {
    let program = config.with_file_name("sync-node");
    if !program.exists() {
        std::fs::copy(BIN, &program).unwrap();
    }
    let mut child = Command::new(&program)
        .args(args)
        .env_clear()
        .env("SYNC_NODE_CONFIG", config)
        .env("PBKDF2_ITERATIONS", "1000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every entry at and below `dir` with its owner.
fn owners(dir: &Path) -> Vec<(String, u32)> {
    let mut out = vec![(dir.display().to_string(), std::fs::metadata(dir).unwrap().uid())];
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(owners(&path));
        } else {
            out.push((path.display().to_string(), entry.metadata().unwrap().uid()));
        }
    }
    out
}

fn chown_all(dir: &Path, uid: u32) {
    let status = Command::new("chown").arg("-R").arg(format!("{uid}:{uid}")).arg(dir).status().unwrap();
    assert!(status.success());
}

/// A data directory made by a server that has stopped, owned by `nobody`,
/// and a configuration file naming it; the temp directory is traversable.
fn installed_service() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("data");
    let mut server = Server::start_in(&root, Options::default());
    server.stop_with("TERM");
    chown_all(&root, SERVICE_UID);
    let config = dir.path().join("sync-node.conf");
    std::fs::write(
        &config,
        format!("# as the package writes it\nSTATIC_ROOT={}\nREGISTRATION=invite\nBIND=127.0.0.1\n", root.display()),
    )
    .unwrap();
    (dir, root, config)
}

#[test]
fn roots_commands_act_on_the_services_data_as_its_owner_with_its_configuration() {
    if effective_uid() != 0 {
        eprintln!("SKIPPED: only root can run a command as another user (run the suite as root to check this)");
        return;
    }
    let (dir, root, config) = installed_service();
    let added = operator(&config, &["account", "add", "alice"], &format!("{PASSWORD}\n"));
    assert!(added.status.success(), "{}", text(&added.stderr));
    let said = text(&added.stderr);
    assert!(said.contains(&format!("using the service's configuration {}", config.display())), "{said}");
    assert!(said.contains(&format!("uid {SERVICE_UID}")), "{said}");
    assert!(said.contains(&format!("data directory {}", root.display())), "{said}");
    // REGISTRATION=invite came from the file: no note that it is not set.
    let invited = operator(&config, &["invite"], "");
    assert!(invited.status.success(), "{}", text(&invited.stderr));
    assert!(!text(&invited.stderr).to_lowercase().contains("registration"), "{}", text(&invited.stderr));
    // What the commands made (the WAL, a backup) belongs to the service.
    let backup = dir.path().join("backup");
    let copied = operator(&config, &["backup", backup.to_str().unwrap()], "");
    // The backup's parent is root's: the service's user may not write there.
    assert_eq!(copied.status.code(), Some(1), "{}", text(&copied.stderr));
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chown_all(&shared, SERVICE_UID);
    let backup = shared.join("backup");
    let copied = operator(&config, &["backup", backup.to_str().unwrap()], "");
    assert!(copied.status.success(), "{}", text(&copied.stderr));
    for (path, owner) in owners(&root).into_iter().chain(owners(&backup)) {
        assert_eq!(owner, SERVICE_UID, "{path} belongs to the service");
    }
    let listed = operator(&config, &["account", "list"], "");
    assert_eq!(text(&listed.stdout).lines().count(), 1, "{}", text(&listed.stderr));
}

#[test]
fn a_command_given_its_own_static_root_ignores_the_services_configuration() {
    let (_dir, _root, config) = installed_service();
    let mine = Server::start();
    let (code, out, err) = cli(&mine.root, &["account", "list"], &[("SYNC_NODE_CONFIG", config.to_str().unwrap())]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "my own (empty) data directory: {out}");
    assert!(!err.contains("service's configuration"), "{err}");
}

#[test]
fn a_configuration_file_the_service_might_read_otherwise_is_refused_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sync-node.conf");
    std::fs::write(&config, "STATIC_ROOT=/var/lib/sync-node\nexport BIND=127.0.0.1\n").unwrap();
    let ran = operator(&config, &["account", "list"], "");
    assert_eq!(ran.status.code(), Some(2), "{}", text(&ran.stderr));
    let said = text(&ran.stderr);
    assert!(said.contains(&format!("{}: line 2", config.display())), "{said}");
    std::fs::write(&config, "BIND=127.0.0.1\n").unwrap();
    let ran = operator(&config, &["account", "list"], "");
    assert_eq!(ran.status.code(), Some(2));
    assert!(text(&ran.stderr).contains("does not set STATIC_ROOT"), "{}", text(&ran.stderr));
}

/// Starts a server on `root` whose port is `taken`: its exit code and
/// what it said.
fn start_on_taken_port(root: &Path, taken: &TcpListener) -> (Option<i32>, String) {
    let output = Command::new(BIN)
        .env_clear()
        .env("STATIC_ROOT", root)
        .env("BIND", "127.0.0.1")
        .env("PORT", taken.local_addr().unwrap().port().to_string())
        .output()
        .unwrap();
    (output.status.code(), text(&output.stderr))
}

#[test]
fn a_start_that_finds_its_port_taken_leaves_no_new_directory_behind() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("new");
    let (code, said) = start_on_taken_port(&root, &taken);
    assert_eq!(code, Some(3), "{said}");
    assert!(!root.exists(), "left behind: {:?}", std::fs::read_dir(&root).map(|d| d.count()));
    // A directory that was there already stays, without a lock file.
    std::fs::create_dir(&root).unwrap();
    let (code, said) = start_on_taken_port(&root, &taken);
    assert_eq!(code, Some(3), "{said}");
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
}

#[test]
fn a_fresh_server_open_to_anyone_on_a_public_interface_says_so_once() {
    let warning = "may create an account";
    let open = Server::start_with(Options::default().env("BIND", "0.0.0.0"));
    let log = open.log();
    assert_eq!(log.matches(warning).count(), 1, "{log}");
    assert!(log.lines().any(|line| line.contains(" WARN ") && line.contains("REGISTRATION=invite")), "{log}");
    let root = open.root.clone();
    let mut open = open;
    open.stop_with("TERM");
    // Started again on the same data, it has said it already.
    let again = Server::start_in(&root, Options::default().env("BIND", "0.0.0.0"));
    assert!(!again.log().contains(warning), "{}", again.log());
    for options in [
        Options::default(),
        Options::default().env("BIND", "0.0.0.0").env("REGISTRATION", "invite"),
        Options::default().env("BIND", "::1"),
    ] {
        let quiet = Server::start_with(options);
        assert!(!quiet.log().contains(warning), "{}", quiet.log());
    }
}

/// This test process's effective user.
fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}
