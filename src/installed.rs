//! Commands on an installed server act as its service does. A package (or
//! `install.sh`) keeps the service's configuration in one environment file,
//! `/etc/sync-node/sync-node.conf`, which the unit reads with
//! `EnvironmentFile=`. A command that root runs (`sudo sync-node account
//! list`) without a `STATIC_ROOT` of its own takes that file's variables
//! (where its own environment does not set them) and runs as the owner of
//! the data directory the file names, so whatever it creates there belongs
//! to the service. The data directory's owner runs such a command with the
//! file's variables as it is. Anyone else, or any command given a
//! `STATIC_ROOT`, works as it always did (`./data` by default).

use crate::exit::Failure;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// Where a package puts the service's configuration.
pub const CONFIG_FILE: &str = "/etc/sync-node/sync-node.conf";
/// Names another file than [`CONFIG_FILE`] (for tests and unusual installs).
pub const CONFIG_FILE_VARIABLE: &str = "SYNC_NODE_CONFIG";

/// The service's configuration, as a command run by root or by the
/// service's user takes it.
#[derive(Debug, PartialEq, Eq)]
pub struct Service {
    pub file: PathBuf,
    /// The file's variables the command's own environment does not set.
    pub variables: Vec<(String, String)>,
    pub data_dir: PathBuf,
}

/// What a command does about an installed service's configuration.
#[derive(Debug, PartialEq, Eq)]
pub enum Adoption {
    /// Work as always: no configuration file, or the command was given its
    /// own `STATIC_ROOT`, or it is run by someone other than root or the
    /// service's user.
    AsAlways,
    /// Run again with the file's variables: as this user and group when
    /// root runs the command, as it is when the data directory's owner
    /// does. (Run again rather than changed in place: the environment is
    /// what a reset hook inherits too.)
    RunAgain { service: Service, user: Option<(u32, u32)> },
}

/// Decides, from the process environment and the file system, how a
/// command takes the service's configuration.
pub fn decide() -> Result<Adoption, Failure> {
    if std::env::var_os("STATIC_ROOT").is_some_and(|root| !root.is_empty()) {
        return Ok(Adoption::AsAlways);
    }
    let file = config_file();
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Adoption::AsAlways),
        // Someone who may not read it is not the service's operator.
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => return Ok(Adoption::AsAlways),
        Err(err) => return Err(Failure::config(format!("{}: {err}", file.display()))),
    };
    let all = parse(&text).map_err(|problem| Failure::config(format!("{}: {problem}", file.display())))?;
    let Some(data_dir) = data_dir_of(&all) else {
        return Err(Failure::config(format!(
            "{} does not set STATIC_ROOT, the service's data directory: add STATIC_ROOT=/var/lib/sync-node",
            file.display()
        )));
    };
    let variables = all.into_iter().filter(|(name, _)| std::env::var_os(name).is_none()).collect();
    let service = Service { file, variables, data_dir };
    let me = rustix::process::geteuid().as_raw();
    let (uid, gid) = match std::fs::metadata(&service.data_dir) {
        Ok(meta) => (meta.uid(), meta.gid()),
        Err(_) if me != 0 => return Ok(Adoption::AsAlways),
        Err(err) => {
            return Err(Failure::failed(format!(
                "the service's data directory {} (STATIC_ROOT in {}) cannot be used: {err}; start the service \
                 first (systemctl start sync-node)",
                service.data_dir.display(),
                service.file.display()
            )));
        }
    };
    Ok(if me == uid {
        Adoption::RunAgain { service, user: None }
    } else if me == 0 {
        Adoption::RunAgain { service, user: Some((uid, gid)) }
    } else {
        Adoption::AsAlways
    })
}

/// Acts on the decision: runs this program again with `args`, the file's
/// variables and perhaps as the service's user (returns only if that
/// cannot be done).
pub fn adopt(adoption: Adoption, args: &[OsString]) -> Result<(), Failure> {
    let Adoption::RunAgain { service, user } = adoption else {
        return Ok(());
    };
    let program = std::env::current_exe()
        .map_err(|err| Failure::failed(format!("cannot find this program to run it again: {err}")))?;
    let mut command = Command::new(&program);
    command.args(args).envs(service.variables);
    match user {
        Some((uid, gid)) => {
            eprintln!(
                "sync-node: using the service's configuration {}, as the owner of {} (uid {uid})",
                service.file.display(),
                service.data_dir.display()
            );
            // As root, std also drops every supplementary group.
            command.uid(uid).gid(gid);
        }
        None => eprintln!("sync-node: using the service's configuration {}", service.file.display()),
    }
    let err = command.exec();
    let hint = if err.kind() == std::io::ErrorKind::PermissionDenied {
        " (the data directory's owner must be able to run it: install it where it can, such as /usr/bin)"
    } else {
        ""
    };
    Err(Failure::failed(format!("cannot run {} again: {err}{hint}", program.display())))
}

/// The last `STATIC_ROOT` of a file's variables.
fn data_dir_of(variables: &[(String, String)]) -> Option<PathBuf> {
    variables
        .iter()
        .rev()
        .find(|(name, value)| name == "STATIC_ROOT" && !value.is_empty())
        .map(|(_, v)| PathBuf::from(v))
}

/// Reads an environment file as systemd's `EnvironmentFile=` does for the
/// simple cases a configuration needs: `NAME=value` lines, blank lines and
/// comments (`#` or `;`), a value optionally in matching single or double
/// quotes. Anything else is an error naming its line, so that the service
/// and a command never read one file two ways.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let at = || format!("line {}", index + 1);
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("{}: not NAME=value: '{line}'", at()));
        };
        let name = name.trim();
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("{}: '{name}' is not a variable name", at()));
        }
        let value = value.trim();
        let unquoted = match value.as_bytes() {
            [b'"', .., b'"'] | [b'\'', .., b'\''] if value.len() >= 2 => &value[1..value.len() - 1],
            [b'"' | b'\'', ..] => return Err(format!("{}: the quote of {name}'s value is not closed", at())),
            _ => value,
        };
        if unquoted.contains('\\') || unquoted.contains('$') {
            return Err(format!(
                "{}: {name}'s value has '\\' or '$', which systemd and this program might read differently",
                at()
            ));
        }
        out.push((name.to_owned(), unquoted.to_owned()));
    }
    Ok(out)
}

/// The service's configuration file: [`CONFIG_FILE`] unless
/// [`CONFIG_FILE_VARIABLE`] names another.
pub fn config_file() -> PathBuf {
    std::env::var_os(CONFIG_FILE_VARIABLE).map_or_else(|| PathBuf::from(CONFIG_FILE), PathBuf::from)
}

/// The data directory the service's configuration names, if it can be
/// read (for messages that point an ordinary user there).
pub fn service_data_dir() -> Option<PathBuf> {
    data_dir_of(&parse(&std::fs::read_to_string(config_file()).ok()?).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_file_is_read_as_systemd_reads_its_simple_lines() {
        let text = "# comment\n; another\n\nSTATIC_ROOT=/var/lib/sync-node\n  BIND = 127.0.0.1 \n\
                    REGISTRATION=\"invite\"\nSYNC_NODE_MAIL_FROM='Sync <sync@example.org>'\nQUOTA_BYTES=\n";
        assert_eq!(
            parse(text).unwrap(),
            [
                ("STATIC_ROOT", "/var/lib/sync-node"),
                ("BIND", "127.0.0.1"),
                ("REGISTRATION", "invite"),
                ("SYNC_NODE_MAIL_FROM", "Sync <sync@example.org>"),
                ("QUOTA_BYTES", ""),
            ]
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
        );
    }

    #[test]
    fn the_packaged_configuration_is_safe_and_the_unit_falls_back_to_the_same() {
        use crate::config::{Config, Registration};
        let file = parse(include_str!("../contrib/sync-node.conf")).unwrap();
        let config = Config::from_pairs(file.clone()).unwrap();
        assert!(config.bind.is_loopback());
        assert_eq!(config.registration, Registration::Invite);
        assert_eq!(data_dir_of(&file), Some(PathBuf::from("/var/lib/sync-node")));
        // Without the file (EnvironmentFile=-…), the unit's own lines hold.
        let unit = include_str!("../contrib/sync-node.service");
        let defaults: Vec<(String, String)> = unit
            .lines()
            .filter_map(|line| line.strip_prefix("Environment="))
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        let fallback = Config::from_pairs(defaults).unwrap();
        assert!(fallback.bind.is_loopback());
        assert_eq!(fallback.registration, Registration::Invite);
        assert_eq!(fallback.static_root, config.static_root);
        assert!(unit.lines().any(|line| line == "EnvironmentFile=-/etc/sync-node/sync-node.conf"));
        assert!(unit.lines().any(|line| line == "ExecStart=/usr/bin/sync-node serve"));
    }

    #[test]
    fn a_line_the_service_might_read_otherwise_is_refused_with_its_number() {
        for (text, problem) in [
            ("PORT=8080\nexport BIND\n", "line 2: not NAME=value"),
            ("9PORT=1\n", "line 1: '9PORT' is not a variable name"),
            ("A B=1\n", "line 1: 'A B' is not a variable name"),
            ("BIND=\"127.0.0.1\n", "line 1: the quote of BIND's value is not closed"),
            ("STATIC_ROOT=$HOME/data\n", "line 1: STATIC_ROOT's value has"),
            ("X=a\\\nb\n", "line 1: X's value has"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(problem), "{text:?}: {err}");
        }
    }
}
