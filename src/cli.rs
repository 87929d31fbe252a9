//! The command line: `serve` (the default), `account add` / `list` /
//! `delete`, `reset-token`, `invite`, `backup`, `check`, `--help` and
//! `--version`. Errors
//! become exit codes here (SPEC §8): 2 for usage and configuration, 1 for
//! a command that could not do its job, 3 for a start that may succeed
//! later. Every command but `serve` opens an existing data directory only
//! and works beside a running server, in short write transactions.

use crate::api;
use crate::auth;
use crate::blobs::Blobs;
use crate::clock;
use crate::config::{Config, Registration, VARIABLES};
use crate::datadir::DataDir;
use crate::db;
use crate::encoding::rfc3339;
use crate::error::ApiError;
use crate::exit::Failure;
use crate::installed;
use crate::limits;
use crate::ops;
use crate::prompt;
use crate::serve;
use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

fn usage() -> String {
    let mut text = format!(
        "sync-node {} — a sync server for local-first apps\n\n\
         Usage:\n  \
         sync-node [serve]           run the server\n  \
         sync-node account add ID    create an account; the password is the first line of stdin\n                              \
         (on a terminal it is asked for twice, without echo)\n  \
         sync-node account list      one line per account: account hash, created, stores owned, bytes used,\n                              \
         live sessions, locked out or not (no ids: the server does not keep them)\n  \
         sync-node account delete ID delete an account as DELETE /v1/account would\n  \
         sync-node reset-token ID    print a one-hour password-reset token for the account\n  \
         sync-node invite [--uses N] [--days D]\n                              \
         print a new invitation code (for REGISTRATION=invite); single use and valid\n                              \
         7 days unless --uses / --days say otherwise\n  \
         sync-node backup DIR        copy database, secret and store files into DIR (missing or empty,\n                              \
         outside STATIC_ROOT); safe while the server runs; DIR then works as a STATIC_ROOT\n  \
         sync-node check [--repair]  check that every store has its file at the right size and list\n                              \
         orphan and leftover files; --repair removes those; exit 0 only when consistent\n  \
         sync-node --version         print the version\n  \
         sync-node --help            print this help\n\n\
         Commands other than serve need an existing STATIC_ROOT and work beside a running server;\n\
         each says on stderr which data directory it used. On an installed server, a command root\n\
         runs without STATIC_ROOT takes the service's /etc/sync-node/sync-node.conf (SYNC_NODE_CONFIG\n\
         names another) and runs as the owner of the data directory it names.\n\
         An ID or DIR that starts with '-' goes after '--' (sync-node account add -- -odd-id);\n\
         --help anywhere shows this help.\n\
         SIGTERM or SIGINT stops the server gracefully (up to 10 s).\n\
         Exit codes: 0 done, 1 could not do it (e.g. STATIC_ROOT missing or in use),\n\
         2 usage or configuration error, 3 a start failure that may pass (port in use).\n\n\
         Configuration (environment variables):\n",
        env!("CARGO_PKG_VERSION")
    );
    for (name, default, meaning) in VARIABLES {
        text.push_str(&format!("  {name:<18} {meaning} (default: {default})\n"));
    }
    text.push_str("\nFixed limits:\n");
    for limit in limits::TABLE {
        text.push_str(&format!("  {}: {}\n", limit.what, limit.shown()));
    }
    text
}

/// Runs the command named by `args` (without the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let original = args.clone();
    let args: Option<Vec<String>> = args.into_iter().map(|a| a.into_string().ok()).collect();
    let Some(args) = args else {
        eprintln!("sync-node: arguments must be UTF-8\n\n{}", usage());
        return ExitCode::from(2);
    };
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    // `--help` anywhere before a `--` asks for help, never names an
    // account or a directory.
    let options_end = words.iter().position(|word| *word == "--").unwrap_or(words.len());
    if words[..options_end].iter().any(|word| matches!(*word, "--help" | "-h")) {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
    // An ID or DIR that starts with '-' must follow `--`: a mistyped
    // option never becomes an account or a backup target.
    let operand = match words.as_slice() {
        ["account", "add" | "delete", word] | ["reset-token", word] | ["backup", word] => Some(*word),
        _ => None,
    };
    if let Some(word) = operand.filter(|word| word.starts_with('-') && *word != "--") {
        return usage_error(&format!(
            "'{word}' is not an option of '{}'; an ID or DIR that starts with '-' goes after '--'",
            words[..words.len() - 1].join(" ")
        ));
    }
    // `--` only ever stands before the ID or DIR of these commands (after
    // it, nothing is an option: `check -- --repair` is no repair).
    let takes_operand =
        |command: &[&str]| matches!(command, ["account", "add" | "delete"] | ["reset-token"] | ["backup"]);
    let words: Vec<&str> = match words.as_slice() {
        [command @ .., "--", last] if takes_operand(command) => command.iter().copied().chain([*last]).collect(),
        [command @ .., "--"] if takes_operand(command) => command.to_vec(),
        _ => words,
    };
    if !matches!(words.as_slice(), ["help" | "--version" | "-V"]) {
        // On an installed server, root's commands act as the service does.
        let adopted = installed::decide().and_then(|adoption| installed::adopt(adoption, &original));
        if let Err(failure) = adopted {
            return failure.report();
        }
    }
    match words.as_slice() {
        ["help"] => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        ["--version" | "-V"] => {
            println!("sync-node {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        [] | ["serve"] => with_config(|config| serve::serve(config).map(|()| ExitCode::SUCCESS)),
        ["account", "add", id] => with_config(|config| account_add(&config, id)),
        ["account", "list"] => with_config(|config| account_list(&config)),
        ["account", "delete", id] => with_config(|config| account_delete(&config, id)),
        ["reset-token", id] => with_config(|config| reset_token(&config, id)),
        ["backup", dir] => with_config(|config| backup(&config, Path::new(dir))),
        ["check"] => with_config(|config| check(&config, false)),
        ["check", "--repair"] => with_config(|config| check(&config, true)),
        ["invite", flags @ ..] => match invite_terms(flags) {
            Ok((uses, days)) => with_config(|config| invite(&config, uses, days)),
            Err(problem) => usage_error(&problem),
        },
        ["account", "add" | "delete"] | ["reset-token"] => {
            usage_error(&format!("'{}' needs the account's ID", words.join(" ")))
        }
        ["backup"] => usage_error("'backup' needs the directory to copy into (DIR)"),
        ["account"] => usage_error("'account' needs a subcommand: add ID, list or delete ID"),
        _ => usage_error(&format!("unknown command '{}'", words.join(" "))),
    }
}

fn usage_error(problem: &str) -> ExitCode {
    eprintln!("sync-node: {problem}\n\n{}", usage());
    ExitCode::from(2)
}

/// `--uses N` and `--days D` of `sync-node invite`, in any order.
fn invite_terms(flags: &[&str]) -> Result<(u32, u32), String> {
    let (mut uses, mut days) = (1, 7);
    let mut rest = flags.iter();
    while let Some(flag) = rest.next() {
        let (target, max) = match *flag {
            "--uses" => (&mut uses, 1_000_000),
            "--days" => (&mut days, 3650),
            other => return Err(format!("'invite' does not take '{other}' (only --uses N and --days D)")),
        };
        let value = rest.next().ok_or_else(|| format!("'{flag}' needs a number"))?;
        *target = value
            .parse()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("'{flag} {value}': a whole number from 1 to {max}"))?;
    }
    Ok((uses, days))
}

fn with_config(command: impl FnOnce(Config) -> Result<ExitCode, Failure>) -> ExitCode {
    let outcome = Config::from_env().map_err(|err| Failure::config(err.to_string())).and_then(command);
    outcome.unwrap_or_else(|failure| failure.report())
}

/// The data directory a command works on (never created), named on stderr.
fn open_data(config: &Config) -> Result<DataDir, Failure> {
    let shown = config.static_root.canonicalize().unwrap_or_else(|_| config.static_root.clone());
    eprintln!("sync-node: data directory {}", shown.display());
    DataDir::open_existing(&config.static_root).map_err(|mut failure| {
        // An ordinary user on an installed server: say where its data is.
        if std::env::var_os("STATIC_ROOT").is_none()
            && let Some(service) = installed::service_data_dir()
        {
            failure.message.push_str(&format!(
                " (the installed service's data directory is {}: run the command with sudo)",
                service.display()
            ));
        }
        failure
    })
}

/// `sync-node account add ID`: works whatever `REGISTRATION` says.
fn account_add(config: &Config, id: &str) -> Result<ExitCode, Failure> {
    let data = open_data(config)?;
    // A bad id is said before anyone types a password.
    if let Err(err) = auth::normalise_id(id) {
        return Ok(failed(&describe(&err)));
    }
    let password = match prompt::new_password() {
        Ok(password) => password,
        Err(problem) => return Ok(failed(&problem)),
    };
    let password = password.as_str();
    let created = auth::normalise_id(id).and_then(|id| auth::check_password(password).map(|()| id)).and_then(|id| {
        let account_id = auth::account_hash(&data.secret, &id);
        let phc = auth::hash_password(password, config.pbkdf2_iterations)?;
        data.db.write(|tx| api::create_account(tx, &account_id, &phc))
    });
    Ok(match created {
        Ok(_) => {
            println!("account created");
            ExitCode::SUCCESS
        }
        Err(err) => failed(&describe(&err)),
    })
}

/// `sync-node account list`: one line per account, oldest first.
fn account_list(config: &Config) -> Result<ExitCode, Failure> {
    let data = open_data(config)?;
    let now = clock::now_ms();
    let accounts = match db::accounts::list(data.db.conn(), now) {
        Ok(accounts) => accounts,
        Err(err) => return Ok(failed(&format!("reading the database: {err}"))),
    };
    for a in &accounts {
        let locked = if a.locked_until > now { rfc3339(a.locked_until) } else { "no".into() };
        println!(
            "account={} created={} stores={} bytes={} sessions={} locked={locked}",
            a.id,
            rfc3339(a.created),
            a.stores_owned,
            a.bytes_used,
            a.sessions
        );
    }
    eprintln!("sync-node: {} account(s)", accounts.len());
    Ok(ExitCode::SUCCESS)
}

/// `sync-node invite`: the code alone on one line of stdout.
fn invite(config: &Config, uses: u32, days: u32) -> Result<ExitCode, Failure> {
    let data = open_data(config)?;
    let made = auth::new_token().and_then(|code| {
        let now = clock::now_ms();
        let expires = now + i64::from(days) * 86_400_000;
        data.db.write(|tx| db::invites::insert(tx, &auth::token_hash(&code), uses, expires, now))?;
        Ok(code)
    });
    match made {
        Ok(code) => {
            println!("{code}");
            if config.registration != Registration::Invite {
                eprintln!(
                    "sync-node: note: REGISTRATION is '{}' in this command's environment; the code works only if the server runs with REGISTRATION=invite",
                    config.registration.as_str()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => Ok(failed(&describe(&err))),
    }
}

/// The account an id names, if it exists.
fn existing_account(data: &DataDir, id: &str) -> Result<Option<String>, String> {
    let id = auth::normalise_id(id).map_err(|err| describe(&err))?;
    let account_id = auth::account_hash(&data.secret, &id);
    match db::accounts::exists(data.db.conn(), &account_id) {
        Ok(true) => Ok(Some(account_id)),
        Ok(false) => Ok(None),
        Err(err) => Err(format!("reading the database: {err}")),
    }
}

/// `sync-node account delete ID`
fn account_delete(config: &Config, id: &str) -> Result<ExitCode, Failure> {
    let blobs = Blobs::at(&config.static_root);
    for_account(config, id, |data, account_id| {
        let deleted = data.db.write(|tx| api::delete_account(tx, account_id, usize::MAX))?;
        for file in &deleted.files {
            if let Err(err) = blobs.remove(file) {
                eprintln!("sync-node: could not remove a store file: {err}");
            }
        }
        println!("account deleted");
        Ok(())
    })
}

/// `sync-node reset-token ID`: the token alone on one line of stdout.
fn reset_token(config: &Config, id: &str) -> Result<ExitCode, Failure> {
    for_account(config, id, |data, account_id| {
        println!("{}", data.db.write(|tx| api::issue_reset_token(tx, account_id))?);
        Ok(())
    })
}

/// Runs `command` on the account an id names; an unknown id is exit 1.
fn for_account(
    config: &Config,
    id: &str,
    command: impl FnOnce(&DataDir, &str) -> Result<(), ApiError>,
) -> Result<ExitCode, Failure> {
    let data = open_data(config)?;
    Ok(match existing_account(&data, id) {
        Ok(Some(account_id)) => match command(&data, &account_id) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => failed(&describe(&err)),
        },
        Ok(None) => failed("no account has that id"),
        Err(problem) => failed(&problem),
    })
}

/// `sync-node backup DIR`
fn backup(config: &Config, target: &Path) -> Result<ExitCode, Failure> {
    let data = open_data(config)?;
    let blobs = Blobs::at(&config.static_root);
    Ok(match ops::backup(&data.db, &data.secret, &blobs, &config.static_root, target) {
        Ok(report) => {
            println!("backed up {} store(s), {} bytes, to {}", report.stores, report.bytes, target.display());
            ExitCode::SUCCESS
        }
        Err(problem) => failed(&problem),
    })
}

/// `sync-node check [--repair]`
fn check(config: &Config, repair: bool) -> Result<ExitCode, Failure> {
    let data = open_data(config)?;
    let blobs = Blobs::at(&config.static_root);
    let report = match ops::check(&data.db, &blobs, repair) {
        Ok(report) => report,
        Err(problem) => return Ok(failed(&problem)),
    };
    println!(
        "{} store(s) checked, {} log entr{} ({} bytes)",
        report.stores,
        report.log_entries,
        if report.log_entries == 1 { "y" } else { "ies" },
        report.log_bytes
    );
    println!(
        "{} identity version(s), {} envelope(s), {} working share link(s)",
        report.sharing.identities, report.sharing.envelopes, report.sharing.links
    );
    for key in &report.bad_logs {
        println!("log does not match its entries: store {key:?}");
    }
    for account in &report.bad_usage {
        println!("usage counters do not match the stores owned: account {account}");
    }
    for key in &report.missing {
        println!("missing file: store {key:?}");
    }
    for (key, expected, actual) in &report.wrong_size {
        println!("wrong size: store {key:?} should have {expected} bytes, its file has {actual}");
    }
    let verb = if repair { "removed" } else { "found" };
    for path in &report.orphans {
        println!("orphan file {verb}: {path}");
    }
    for path in &report.leftovers {
        println!("leftover file {verb}: {path}");
    }
    if report.recent > 0 {
        println!("{} unreferenced file(s) younger than 10 minutes left alone (uploads in flight?)", report.recent);
    }
    if report.consistent() {
        println!("consistent");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "NOT consistent{}",
            if repair {
                " (missing or damaged store files cannot be repaired; restore them from a backup)"
            } else {
                ""
            }
        );
        Ok(ExitCode::from(1))
    }
}

fn describe(err: &ApiError) -> String {
    match err {
        ApiError::AccountExists => "an account with that id exists".into(),
        ApiError::BadRequest(message) => message.clone(),
        other => other.to_string(),
    }
}

fn failed(message: &str) -> ExitCode {
    Failure::failed(message).report()
}
