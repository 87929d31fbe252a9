//! Reading a new account's password for `sync-node account add`: on a
//! terminal it is asked for twice without echo; otherwise it is the first
//! line of stdin (its line end removed). The terminal's echo comes back
//! however the command ends, Ctrl-C included.

use rustix::termios::{self, LocalModes, OptionalActions, Termios};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io::{self, BufRead, IsTerminal, Write};
use std::thread;

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
    let stdin = io::stdin();
    let failed = |err: io::Error| {
        format!(
            "cannot read the password from the terminal ({err}); pipe it in instead: echo … | sync-node account add ID"
        )
    };
    let saved = termios::tcgetattr(&stdin).map_err(|err| failed(err.into()))?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    let _restorer = Restorer::watch(saved.clone()).map_err(failed)?;
    let _ = io::stderr().write_all(prompt.as_bytes());
    termios::tcsetattr(&stdin, OptionalActions::Now, &quiet).map_err(|err| failed(err.into()))?;
    let line = read_line();
    let restored = termios::tcsetattr(&stdin, OptionalActions::Now, &saved);
    let _ = io::stderr().write_all(b"\n");
    restored.map_err(|err| failed(err.into()))?;
    line.map_err(failed)
}

/// While it lives, a signal that would end the command (Ctrl-C, a hang-up,
/// a kill) first gives the terminal its settings back, then exits with the
/// usual 128 + signal.
struct Restorer(signal_hook::iterator::Handle);

impl Restorer {
    fn watch(saved: Termios) -> io::Result<Restorer> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let handle = signals.handle();
        thread::Builder::new().name("prompt-signals".into()).spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _ = termios::tcsetattr(io::stdin(), OptionalActions::Now, &saved);
                let _ = io::stderr().write_all(b"\n");
                std::process::exit(128 + signal);
            }
        })?;
        Ok(Restorer(handle))
    }
}

impl Drop for Restorer {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn read_line() -> io::Result<String> {
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}
