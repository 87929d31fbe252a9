//! The server's log, on stderr: one line per event, `<RFC 3339 UTC time>
//! <LEVEL> <message>`. Lines never carry a token, password, id or store
//! key. Lines an intrusion blocker such as fail2ban acts on are `WARN`,
//! start with a fixed word (`address-lockout`, `registration-limit`,
//! `reset-limit`: limits on one address, which only that address's own
//! requests can reach) and name the client as `address=<ip>`
//! (docs/operations.md has the filter). Lines about an account
//! (`account-lockout`, `reset-dropped`) name the last address only as
//! `last-address=`, since that may be the owner's. With `ACCESS_LOG=1`
//! every answer gets an `INFO access` line too.

use crate::clock;
use crate::encoding::rfc3339;
use std::fmt::Display;
use std::net::IpAddr;
use std::time::Duration;

pub fn info(message: impl Display) {
    line("INFO", message);
}

pub fn warn(message: impl Display) {
    line("WARN", message);
}

pub fn error(message: impl Display) {
    line("ERROR", message);
}

/// One answered request: who, what (the route's pattern, never the key),
/// the status, the body bytes sent and the time from its head to its answer.
pub fn access(address: IpAddr, method: &str, route: &str, status: u16, bytes: u64, took: Duration) {
    info(format_args!("access {address} {method} {route} {status} {bytes} {}us", took.as_micros()));
}

fn line(level: &str, message: impl Display) {
    // One write per line, so lines of different threads never interleave.
    let text = format!("{} {level} {message}\n", rfc3339(clock::now_ms()));
    // A unit test's lines go where the test harness shows them only when
    // that test fails (an ERROR line under a passing test read as a failure).
    #[cfg(test)]
    eprint!("{text}");
    // Never a panic when stderr is gone, as `eprint!` would.
    #[cfg(not(test))]
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), text.as_bytes());
}
