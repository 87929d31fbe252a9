//! Sync Node: a small, frugal sync server for local-first apps.
//!
//! Clients keep opaque (encrypted) blobs called stores; the server never
//! looks inside, and never lets a write silently overwrite a newer version.
//! One loop thread owns the SQLite connection and all state ([`server`]);
//! the waiting room and work threads do the socket I/O, and a pool of its
//! own runs PBKDF2 ([`worker`], [`http`]).
//! See ARCHITECTURE.md for the code map and invariants.

pub mod api;
pub mod auth;
pub mod blobs;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cors;
pub mod datadir;
pub mod db;
pub mod descriptors;
pub mod durable;
pub mod encoding;
pub mod error;
pub mod exchange;
pub mod exit;
pub mod hashing;
pub mod hook;
pub mod http;
pub mod inbox;
pub mod installed;
pub mod lifecycle;
pub mod limits;
pub mod log;
pub mod ops;
pub mod permission;
pub mod polls;
pub mod precondition;
pub mod prompt;
pub mod ratelimit;
pub mod read_cache;
pub mod router;
pub mod secret;
pub mod serve;
pub mod server;
pub mod tally;
pub mod throttle;
pub mod uploads;
pub mod worker;
