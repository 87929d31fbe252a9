//! The command line: `serve` (the default), `account add`, `--help` and
//! `--version`. Errors become exit codes here: 2 for usage and
//! configuration, 1 for a command that could not do its job.

use crate::api;
use crate::auth;
use crate::config::{Config, VARIABLES};
use crate::error::ApiError;
use crate::serve::{self, StartupError};
use std::ffi::OsString;
use std::io::{self, BufRead};
use std::process::ExitCode;

fn usage() -> String {
    let mut text = format!(
        "sync-node {} — a sync server for local-first apps\n\n\
         Usage:\n  \
         sync-node [serve]           run the server\n  \
         sync-node account add ID    create an account; the password is the first line of stdin\n  \
         sync-node --version         print the version\n  \
         sync-node --help            print this help\n\n\
         Configuration (environment variables):\n",
        env!("CARGO_PKG_VERSION")
    );
    for (name, default, meaning) in VARIABLES {
        text.push_str(&format!("  {name:<18} {meaning} (default: {default})\n"));
    }
    text
}

/// Runs the command named by `args` (without the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args: Option<Vec<String>> = args.into_iter().map(|a| a.into_string().ok()).collect();
    let Some(args) = args else {
        eprintln!("sync-node: arguments must be UTF-8\n\n{}", usage());
        return ExitCode::from(2);
    };
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["--help" | "-h" | "help"] => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        ["--version" | "-V"] => {
            println!("sync-node {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        [] | ["serve"] => with_config(|config| serve::serve(config).map(|()| ExitCode::SUCCESS)),
        ["account", "add", id] => with_config(|config| account_add(&config, id)),
        _ => {
            eprintln!("sync-node: unknown command '{}'\n\n{}", words.join(" "), usage());
            ExitCode::from(2)
        }
    }
}

fn with_config(command: impl FnOnce(Config) -> Result<ExitCode, StartupError>) -> ExitCode {
    let outcome = Config::from_env().map_err(|err| StartupError(err.to_string())).and_then(command);
    outcome.unwrap_or_else(|err| {
        eprintln!("sync-node: {err}");
        ExitCode::from(2)
    })
}

/// `sync-node account add ID`: works whether registration is open or not.
fn account_add(config: &Config, id: &str) -> Result<ExitCode, StartupError> {
    let mut password = String::new();
    if let Err(err) = io::stdin().lock().read_line(&mut password) {
        return Ok(failed(&format!("cannot read the password from stdin: {err}")));
    }
    let password = password.strip_suffix('\n').unwrap_or(&password);
    let password = password.strip_suffix('\r').unwrap_or(password);
    let data = serve::open_data_dir(&config.static_root)?;
    let created = auth::normalise_id(id).and_then(|id| auth::check_password(password).map(|()| id)).and_then(|id| {
        let account_id = auth::account_hash(&data.secret, &id);
        let phc = auth::hash_password(password, config.pbkdf2_iterations)?;
        api::create_account(data.db.conn(), &account_id, &phc)
    });
    Ok(match created {
        Ok(_) => {
            println!("account created");
            ExitCode::SUCCESS
        }
        Err(err) => failed(&describe(&err)),
    })
}

fn describe(err: &ApiError) -> String {
    match err {
        ApiError::AccountExists => "an account with that id exists".into(),
        ApiError::BadRequest(message) => message.clone(),
        other => other.to_string(),
    }
}

fn failed(message: &str) -> ExitCode {
    eprintln!("sync-node: {message}");
    ExitCode::from(1)
}
