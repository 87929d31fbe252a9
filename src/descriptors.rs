//! File descriptors: at start the server raises its soft `RLIMIT_NOFILE`
//! to the hard limit, and refuses a `MAX_CONNECTIONS` it could not serve
//! with what it then has. Without this, a server allowed 1,000 connections
//! under the usual soft limit of 1,024 ran out of descriptors with 512 idle
//! ones open, and every request after got 500 "Too many open files".

use rustix::process::{Resource, getrlimit, setrlimit};

/// Descriptors one connection may hold: its socket, the register's second
/// handle on it (to shed it), and a store file it streams or stages.
pub const PER_CONNECTION: u64 = 3;
/// Descriptors the server holds besides its connections: the database and
/// its journal, the loop's cache of open store files (64), the listening
/// socket, the lock, standard streams, a hook's pipes, and some to spare.
pub const RESERVE: u64 = 128;

/// The descriptors `max_connections` need.
pub fn needed(max_connections: usize) -> u64 {
    (max_connections as u64).saturating_mul(PER_CONNECTION).saturating_add(RESERVE)
}

/// Raises the soft limit to the hard one, then checks that it covers
/// `max_connections`; the error is the operator's one line.
pub fn ensure(max_connections: usize) -> Result<u64, String> {
    let limit = getrlimit(Resource::Nofile);
    let mut soft = limit.current;
    if limit.current != limit.maximum
        && setrlimit(Resource::Nofile, rustix::process::Rlimit { current: limit.maximum, ..limit }).is_ok()
    {
        soft = limit.maximum;
    }
    let have = soft.unwrap_or(u64::MAX);
    let need = needed(max_connections);
    if have < need {
        return Err(format!(
            "MAX_CONNECTIONS={max_connections} needs {need} file descriptors ({PER_CONNECTION} per connection + \
             {RESERVE}), but this process may open only {have}: lower MAX_CONNECTIONS to at most {}, or raise the \
             limit (ulimit -n, or LimitNOFILE= in the systemd unit)",
            have.saturating_sub(RESERVE) / PER_CONNECTION
        ));
    }
    Ok(have)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_fit_the_usual_soft_limit_and_the_unit() {
        assert!(needed(256) <= 1024, "MAX_CONNECTIONS' default under a soft limit of 1,024");
        let unit = include_str!("../contrib/sync-node.service");
        let line = unit.lines().find_map(|line| line.strip_prefix("LimitNOFILE=")).expect("the unit sets LimitNOFILE");
        let limit: u64 = line.trim().parse().unwrap();
        assert!(needed(1000) <= limit, "the unit's limit serves MAX_CONNECTIONS=1000");
    }
}
