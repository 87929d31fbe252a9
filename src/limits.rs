//! Every fixed limit and deadline a client meets, each defined here once
//! (as SQLite's `sqliteLimit.h` gathers its own): the code enforces these
//! constants, `/v1/info` reports those a client plans by, `sync-node
//! --help` prints [`TABLE`], and a test holds README's "Fixed limits"
//! table to it. What an operator sets is `config::VARIABLES`.
//!
//! This module imports nothing from the crate, so every layer may use it.

use std::time::Duration;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const HOUR: u64 = 3600;

// What one request may carry.

/// Longest store key in bytes, after percent-decoding.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest `Sync-Meta` value in bytes.
pub const MAX_META_BYTES: usize = 8000;
/// Largest JSON body of a control endpoint.
pub const JSON_LIMIT: u64 = 64 * KIB;
/// Largest identity in bytes.
pub const MAX_IDENTITY_BYTES: usize = 4096;
/// Largest envelope in bytes.
pub const MAX_ENVELOPE_BYTES: usize = 4096;
/// The most entries one page of a listing holds (and the default).
pub const MAX_PAGE: usize = 1000;
/// Most changes in one list-form permissions request.
pub const MAX_GRANT_CHANGES: usize = 1000;
/// The largest `MAX_ENTRY_BYTES` allowed: entries are held in memory while
/// they arrive and copied by the loop when read (a read answer holds about
/// 4 MiB at most), so they stay small.
pub const MAX_ENTRY_CAP: u64 = 4 * MIB;
/// Longest request line or header line.
pub const MAX_HEAD_LINE: usize = 8 * 1024;
/// Largest request head.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most header fields of a request.
pub const MAX_HEADERS: usize = 64;

// What one account may hold.

/// Live sessions one account may hold; a new one revokes the one used
/// least recently.
pub const MAX_SESSIONS_PER_ACCOUNT: usize = 100;
/// Long-polls (and, apart, feed streams) one account may hold at once;
/// past it the oldest is answered.
pub const MAX_POLLS_PER_ACCOUNT: usize = 64;
/// Longest wait a long-poll may ask for.
pub const MAX_WAIT_SECONDS: u64 = 60;
/// How long a feed stream lasts; then it ends cleanly and its client
/// resumes.
pub const STREAM_LIFETIME: Duration = Duration::from_secs(HOUR);
/// A stream that has been silent this long gets a comment (SPEC §6.1).
pub const STREAM_KEEP_ALIVE: Duration = Duration::from_secs(25);
/// Most uses one share link may have.
pub const MAX_LINK_USES: i64 = 1000;
/// Most links a store may have made (working, used up or ended: their
/// rows stay until the store goes).
pub const MAX_LINKS_PER_STORE: u64 = 1000;
/// A link's life in days when none is asked for, and the longest.
pub const LINK_DAYS: i64 = 7;
pub const MAX_LINK_DAYS: i64 = 365;
/// Bytes a store counts against its owners' quota besides its own (rows,
/// indexes, change log).
pub const STORE_OVERHEAD: u64 = 1024;
/// Bytes a log entry counts besides its own.
pub const ENTRY_OVERHEAD: u64 = 128;
/// How many times a store's key counts: the store, its grants, their
/// index and its change-log rows each hold a copy.
pub const KEY_COPIES: u64 = 4;
/// What a share link counts besides its envelope and id (the schema's
/// `link_bytes` counts the same).
pub const LINK_OVERHEAD: u64 = 256;

// How often.

/// Accounts one client address may create per hour (SPEC §3).
pub const REGISTRATIONS_PER_HOUR: usize = 10;
/// Successful sign-ins one account may make in an hour (attempts in
/// flight count): correct passwords cost PBKDF2 work too.
pub const SIGN_INS_PER_HOUR: usize = 60;
/// Failed password checks per account, and per client address, within
/// [`FAILURE_WINDOW`] before a lockout.
pub const FAILURES_PER_ACCOUNT: usize = 5;
pub const FAILURES_PER_ADDRESS: usize = 20;
/// Failures are counted over this window, and a first lockout lasts as
/// long; each one that recurs doubles, up to [`MAX_LOCKOUT`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
pub const MAX_LOCKOUT: Duration = Duration::from_secs(24 * HOUR);
/// Password-reset requests one client address may make per hour.
pub const RESET_REQUESTS_PER_HOUR: usize = 10;
/// Reset tokens issued for one account per hour.
pub const RESET_TOKENS_PER_HOUR: usize = 3;
/// How long a reset token works.
pub const RESET_TOKEN_LIFETIME: Duration = Duration::from_secs(HOUR);
/// Reset hooks running at once, and how long one may run.
pub const MAX_HOOKS_RUNNING: usize = 4;
pub const HOOK_TIME_LIMIT: Duration = Duration::from_secs(30);
/// Failed share-link redeems per account, and per address, per hour.
pub const REDEEM_FAILURES_PER_HOUR: usize = 10;
/// Identity publishes per account per day that passed their preconditions.
pub const PUBLISHES_PER_DAY: u64 = 10;
/// Different ids one account may look up identities of per hour.
pub const LOOKUPS_PER_HOUR: usize = 100;

// What the server spends at once.

/// PBKDF2 jobs handed out (running or waiting for a core) at most, places
/// one client address may hold (four addresses leave a quarter), and
/// places the jobs of one account may hold.
pub const HASHING_PLACES: usize = 64;
pub const HASHING_PLACES_PER_ADDRESS: usize = 12;
pub const HASHING_PLACES_PER_ACCOUNT: usize = 4;
/// Threads that work on connections with something to do.
pub const WORK_THREADS: usize = 256;
/// The most bytes answers waiting to be sent may hold at once (answers
/// of up to [`COUNTED_FROM`] bytes do not count: the connection cap
/// bounds them), and the most log entries being received may.
pub const ANSWER_MEMORY: usize = 32 * MIB as usize;
pub const ENTRY_MEMORY: usize = 32 * MIB as usize;
pub const COUNTED_FROM: usize = 64 * KIB as usize;
/// The most of either that one client address may hold (and of requests
/// arriving).
pub const MEMORY_PER_ADDRESS: usize = 4 * MIB as usize;
/// The most bytes requests still arriving may hold (heads, and the small
/// bodies read with them), beyond the first [`UNCOUNTED_REQUEST`] bytes
/// of each: ten thousand connections sending 80 KiB each would otherwise
/// hold 800 MiB.
pub const REQUEST_MEMORY: usize = 32 * MIB as usize;
pub const UNCOUNTED_REQUEST: usize = 2 * KIB as usize;

// Deadlines of a connection.

/// From the first byte of a head to its blank line (slowloris).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may wait for its next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A JSON body, from its head to its last byte (SPEC §1).
pub const JSON_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How fast a store or log body must arrive and an answer be taken, once
/// [`TRANSFER_GRACE`] has passed: each byte earns 1/[`TRANSFER_PACE`] s,
/// at most [`TRANSFER_MOST_AHEAD`] ahead of the present.
pub const TRANSFER_PACE: u64 = 4096;
pub const TRANSFER_GRACE: Duration = Duration::from_secs(10);
pub const TRANSFER_MOST_AHEAD: Duration = Duration::from_secs(30);
/// How long discarding a small body the answer did not need may take.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection closes after its answer once it has carried this many
/// requests, or been open this long (as nginx's `keepalive_requests` and
/// `keepalive_time`).
pub const MAX_REQUESTS: u64 = 1000;
pub const MAX_LIFETIME: Duration = Duration::from_secs(HOUR);

/// One row of [`TABLE`].
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub what: &'static str,
    pub value: u64,
    pub unit: Unit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Count,
    Seconds,
    BytesPerSecond,
}

impl Limit {
    /// The value as people read it: `64 KiB`, `8000 bytes`, `15 min`.
    pub fn shown(&self) -> String {
        let value = self.value;
        match self.unit {
            Unit::Bytes if value >= MIB && value.is_multiple_of(MIB) => format!("{} MiB", value / MIB),
            Unit::Bytes if value >= KIB && value.is_multiple_of(KIB) => format!("{} KiB", value / KIB),
            Unit::Bytes => format!("{value} bytes"),
            Unit::Count => value.to_string(),
            Unit::Seconds if value >= HOUR && value.is_multiple_of(HOUR) => format!("{} h", value / HOUR),
            Unit::Seconds if value >= 60 && value.is_multiple_of(60) => format!("{} min", value / 60),
            Unit::Seconds => format!("{value} s"),
            Unit::BytesPerSecond => format!("{} KiB/s", value / KIB),
        }
    }
}

const fn bytes(what: &'static str, value: usize) -> Limit {
    Limit { what, value: value as u64, unit: Unit::Bytes }
}

const fn count(what: &'static str, value: usize) -> Limit {
    Limit { what, value: value as u64, unit: Unit::Count }
}

const fn time(what: &'static str, value: Duration) -> Limit {
    Limit { what, value: value.as_secs(), unit: Unit::Seconds }
}

/// Every limit above that a client or an operator may meet, in the words
/// `--help` and README show.
pub const TABLE: &[Limit] = &[
    bytes("store key, after percent-decoding", MAX_KEY_BYTES),
    bytes("Sync-Meta value", MAX_META_BYTES),
    bytes("JSON body of a control request", JSON_LIMIT as usize),
    bytes("identity", MAX_IDENTITY_BYTES),
    bytes("envelope", MAX_ENVELOPE_BYTES),
    bytes("largest MAX_ENTRY_BYTES allowed", MAX_ENTRY_CAP as usize),
    count("entries in one page of a listing", MAX_PAGE),
    count("changes in one list-form permissions request", MAX_GRANT_CHANGES),
    bytes("request line or header line", MAX_HEAD_LINE),
    bytes("request head", MAX_HEAD),
    count("header fields of a request", MAX_HEADERS),
    count("live sessions per account (a new one ends the least used)", MAX_SESSIONS_PER_ACCOUNT),
    count("long-polls, and feed streams, per account (a new one ends the oldest)", MAX_POLLS_PER_ACCOUNT),
    time("longest long-poll wait", Duration::from_secs(MAX_WAIT_SECONDS)),
    time("a feed stream's life", STREAM_LIFETIME),
    time("a silent feed stream gets a comment after", STREAM_KEEP_ALIVE),
    count("uses of one share link", MAX_LINK_USES as usize),
    count("share links a store may have made", MAX_LINKS_PER_STORE as usize),
    count("a share link's days when none are asked for", LINK_DAYS as usize),
    count("a share link's days at most", MAX_LINK_DAYS as usize),
    bytes("quota: a store's rows, besides its bytes", STORE_OVERHEAD as usize),
    bytes("quota: a log entry's rows, besides its bytes", ENTRY_OVERHEAD as usize),
    count("quota: copies of a store's key counted", KEY_COPIES as usize),
    bytes("quota: a share link's rows, besides its envelope", LINK_OVERHEAD as usize),
    count("accounts created per client address per hour", REGISTRATIONS_PER_HOUR),
    count("sign-ins per account per hour", SIGN_INS_PER_HOUR),
    count("failed password checks per account before a lockout", FAILURES_PER_ACCOUNT),
    count("failed password checks per client address before a lockout", FAILURES_PER_ADDRESS),
    time("window of those failures, and a first lockout", FAILURE_WINDOW),
    time("longest lockout (each recurrence doubles)", MAX_LOCKOUT),
    count("reset requests per client address per hour", RESET_REQUESTS_PER_HOUR),
    count("reset tokens per account per hour", RESET_TOKENS_PER_HOUR),
    time("a reset token's life", RESET_TOKEN_LIFETIME),
    count("reset hooks running at once", MAX_HOOKS_RUNNING),
    time("a reset hook's time limit", HOOK_TIME_LIMIT),
    count("failed share-link redeems per account, and per address, per hour", REDEEM_FAILURES_PER_HOUR),
    count("identity publishes per account per day", PUBLISHES_PER_DAY as usize),
    count("different identities one account may look up per hour", LOOKUPS_PER_HOUR),
    count("password checks waiting for a core, in all", HASHING_PLACES),
    count("password checks waiting, per client address", HASHING_PLACES_PER_ADDRESS),
    count("password checks waiting, per account", HASHING_PLACES_PER_ACCOUNT),
    count("work threads", WORK_THREADS),
    bytes("memory of answers being sent, in all", ANSWER_MEMORY),
    bytes("memory of log entries being received, in all", ENTRY_MEMORY),
    bytes("memory of requests arriving (heads and small bodies), in all", REQUEST_MEMORY),
    bytes("a request arriving counts against it beyond", UNCOUNTED_REQUEST),
    bytes("memory of any one of these, per client address", MEMORY_PER_ADDRESS),
    time("a request head, from its first byte", HEAD_TIMEOUT),
    time("a connection waiting for its next request", IDLE_TIMEOUT),
    time("a JSON body, from the end of its head", JSON_BODY_TIMEOUT),
    time("a store body, log entry or answer at any pace, first", TRANSFER_GRACE),
    Limit { what: "then at least (sliding)", value: TRANSFER_PACE, unit: Unit::BytesPerSecond },
    time("discarding a body the answer did not need", DRAIN_TIMEOUT),
    count("requests one connection carries", MAX_REQUESTS as usize),
    time("a connection's life", MAX_LIFETIME),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shown_in_the_largest_whole_unit() {
        assert_eq!(bytes("", 8000).shown(), "8000 bytes");
        assert_eq!(bytes("", 64 * 1024).shown(), "64 KiB");
        assert_eq!(bytes("", 4 << 20).shown(), "4 MiB");
        assert_eq!(time("", Duration::from_secs(900)).shown(), "15 min");
        assert_eq!(time("", Duration::from_secs(86_400)).shown(), "24 h");
        assert_eq!(time("", Duration::from_secs(25)).shown(), "25 s");
        assert_eq!(Limit { what: "", value: 4096, unit: Unit::BytesPerSecond }.shown(), "4 KiB/s");
    }

    #[test]
    fn every_row_says_what_it_limits_once() {
        let mut seen = std::collections::HashSet::new();
        for limit in TABLE {
            assert!(!limit.what.is_empty() && !limit.what.contains('|'));
            assert!(seen.insert(limit.what), "{} twice", limit.what);
        }
    }
}
