//! Reading a new account's password for `sync-node account add`: on a
//! terminal it is asked for twice without echo; otherwise it is the first
//! line of stdin (its line end removed).

use rustix::termios::{self, LocalModes, OptionalActions};
use std::io::{self, BufRead, IsTerminal, Write};

pub fn new_password() -> Result<String, String> {
    if !io::stdin().is_terminal() {
        return read_line().map_err(|err| format!("cannot read the password from stdin: {err}"));
    }
    let first = ask_quietly("Password for the new account: ")?;
    let second = ask_quietly("The same password again: ")?;
    if first != second {
        return Err("the two passwords differ; nothing was created".into());
    }
    Ok(first)
}

/// Asks on stderr and reads a line from the terminal with echo off.
fn ask_quietly(prompt: &str) -> Result<String, String> {
    let _ = io::stderr().write_all(prompt.as_bytes());
    let stdin = io::stdin();
    let failed = |err: io::Error| format!("cannot read the password from the terminal: {err}");
    let saved = termios::tcgetattr(&stdin).map_err(|err| failed(err.into()))?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    termios::tcsetattr(&stdin, OptionalActions::Now, &quiet).map_err(|err| failed(err.into()))?;
    let line = read_line();
    let restored = termios::tcsetattr(&stdin, OptionalActions::Now, &saved);
    let _ = io::stderr().write_all(b"\n");
    restored.map_err(|err| failed(err.into()))?;
    line.map_err(failed)
}

fn read_line() -> io::Result<String> {
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}
