//! File descriptors: at start the server raises its soft `RLIMIT_NOFILE`
//! to the hard limit, and refuses a `MAX_CONNECTIONS` it could not serve
//! with what it then has. Without this, a server allowed 1,000 connections
//! under the usual soft limit of 1,024 ran out of descriptors with 512 idle
//! ones open, and every request after got 500 "Too many open files".

use rustix::process::{Resource, getrlimit, setrlimit};

/// Descriptors one connection holds: its socket.
pub const PER_CONNECTION: u64 = 1;
/// Descriptors the server holds besides its connections' sockets: a store
/// file streamed or staged by each work thread, the sockets being refused,
/// and the database and its journal, the loop's cache of open store files
/// (64), the listening socket, the waiting room's epoll and bell, the
/// lock, standard streams, a hook's pipes, and some to spare.
pub const RESERVE: u64 = crate::limits::WORK_THREADS as u64 + crate::http::refuser::MAX_WAITING as u64 + 128;

/// The descriptors `max_connections` need.
pub fn needed(max_connections: usize) -> u64 {
    (max_connections as u64).saturating_mul(PER_CONNECTION).saturating_add(RESERVE)
}

/// What the descriptor limit allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    /// The soft limit, raised to the hard one if it was lower.
    pub limit: u64,
    /// The connections served: as asked, or fewer for a default that does
    /// not fit.
    pub connections: usize,
}

/// Raises the soft limit to the hard one, then checks that it covers
/// `max_connections`: a value the operator `set` that does not fit is
/// refused (the error is the operator's one line); the default is lowered
/// to what fits.
pub fn ensure(max_connections: usize, set: bool) -> Result<Allowed, String> {
    let limit = getrlimit(Resource::Nofile);
    let mut soft = limit.current;
    if limit.current != limit.maximum
        && setrlimit(Resource::Nofile, rustix::process::Rlimit { current: limit.maximum, ..limit }).is_ok()
    {
        soft = limit.maximum;
    }
    let have = soft.unwrap_or(u64::MAX);
    fit(max_connections, set, have)
}

fn fit(max_connections: usize, set: bool, have: u64) -> Result<Allowed, String> {
    let need = needed(max_connections);
    let most = usize::try_from(have.saturating_sub(RESERVE) / PER_CONNECTION).unwrap_or(usize::MAX);
    if have >= need {
        return Ok(Allowed { limit: have, connections: max_connections });
    }
    if !set && most >= 1 {
        return Ok(Allowed { limit: have, connections: most });
    }
    Err(format!(
        "MAX_CONNECTIONS={max_connections} needs {need} file descriptors ({PER_CONNECTION} per connection + \
         {RESERVE}), but this process may open only {have}: lower MAX_CONNECTIONS to at most {most}, or raise the \
         limit (ulimit -n, or LimitNOFILE= in the systemd unit)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_fits_the_unit_and_is_lowered_to_fit_a_smaller_limit() {
        let unit = include_str!("../contrib/sync-node.service");
        let line = unit.lines().find_map(|line| line.strip_prefix("LimitNOFILE=")).expect("the unit sets LimitNOFILE");
        let limit: u64 = line.trim().parse().unwrap();
        assert!(needed(10_000) <= limit, "the unit's limit serves the default MAX_CONNECTIONS");
        assert_eq!(fit(10_000, false, 1024).unwrap().connections, 1024 - RESERVE as usize);
        assert!(fit(10_000, true, 1024).unwrap_err().contains("at most 384"));
        assert_eq!(fit(200, true, 1024).unwrap().connections, 200);
    }
}
