//! Starting the server: check the environment, lock the data directory,
//! bind, open the database, converge the disk to it, then run the accept
//! thread and the loop. Every failure here is a [`Failure`] with the exit
//! code SPEC §7 gives it.

use crate::api::Event;
use crate::api::{self, AfterCommit, App};
use crate::auth;
use crate::blobs::{Blobs, OpenFiles};
use crate::config::{Config, CorsOrigins, Registration};
use crate::cors;
use crate::datadir::{self, DataDir};
use crate::db;
use crate::db::commits::CommitWatch;
use crate::error::ApiError;
use crate::exit::Failure;
use crate::hashing::{self, Hashing};
use crate::hook::ResetHook;
use crate::http::Limits;
use crate::http::budget::MemoryBudget;
use crate::http::listener::{self, Caps, Register};
use crate::http::pool::Pool;
use crate::http::refuser::Refuser;
use crate::http::room::Room;
use crate::lifecycle::Lifecycle;
use crate::limits::{
    ANSWER_MEMORY, ENTRY_MEMORY, HASHING_PLACES, HASHING_PLACES_PER_ACCOUNT, HASHING_PLACES_PER_ADDRESS,
    LOOKUPS_PER_HOUR, MAX_POLLS_PER_ACCOUNT, MEMORY_PER_ADDRESS, REDEEM_FAILURES_PER_HOUR, REGISTRATIONS_PER_HOUR,
    REQUEST_MEMORY, RESET_REQUESTS_PER_HOUR, RESET_TOKENS_PER_HOUR, SIGN_INS_PER_HOUR, WORK_THREADS,
};
use crate::log;
use crate::polls::Polls;
use crate::ratelimit::{DistinctLimit, RateLimit};
use crate::read_cache::ReadCache;
use crate::server;
use crate::throttle::Throttle;
use crate::uploads::Uploads;
use crate::worker::{self, Shared};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

/// Store files the loop keeps open for reading.
const OPEN_FILES: usize = 64;

/// Runs the server until the process is stopped. Start-up goes: lock the
/// data directory (before anything in it is touched), bind the port, open
/// and upgrade the database, converge the disk to it, then serve.
pub fn serve(config: Config) -> Result<(), Failure> {
    if let Some(hook) = &config.reset_hook {
        let executable = hook.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0);
        if !executable {
            return Err(Failure::config(format!("RESET_HOOK: {} is not an executable file", hook.display())));
        }
    }
    let mut config = config;
    let descriptors =
        crate::descriptors::ensure(config.max_connections, config.max_connections_set).map_err(Failure::config)?;
    if descriptors.connections < config.max_connections {
        log::warn(format_args!(
            "the descriptor limit ({}) serves at most {} connections, not the default {}: raise it (LimitNOFILE=) \
             to serve more",
            descriptors.limit, descriptors.connections, config.max_connections
        ));
        config.max_connections = descriptors.connections;
    }
    let claim = datadir::claim(&config.static_root)?;
    let address = SocketAddr::new(config.bind, config.port);
    let tcp = match listener::bind(address) {
        Ok(tcp) => tcp,
        Err(err) => {
            claim.withdraw();
            let message = format!("BIND/PORT: cannot listen on {address}: {err}");
            return Err(match err.kind() {
                io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable => Failure::transient(message),
                _ => Failure::config(message),
            });
        }
    };
    let bound = tcp.local_addr().map_err(|err| Failure::config(format!("PORT: {err}")))?;
    let fresh = !config.static_root.join(db::FILE_NAME).exists();
    let data = DataDir::open_for_server(&config.static_root, &claim)?;
    if fresh && config.registration == Registration::Open && !bound.ip().is_loopback() {
        log::warn(format_args!(
            "anyone who reaches {bound} may create an account and store data (REGISTRATION=open): \
             set REGISTRATION=invite and make invitations with `sync-node invite`, or BIND=127.0.0.1 behind a \
             proxy (docs/operations.md)"
        ));
    }
    let unreadable = |err: rusqlite::Error| Failure::config(format!("STATIC_ROOT: cannot read the database: {err}"));
    let generation = data.db.generation().map_err(unreadable)?;
    // Lockouts live in memory: a new server starts with none.
    data.db.write(db::accounts::clear_lockouts).map_err(unreadable)?;
    let blobs = Blobs::open(&config.static_root)
        .map_err(|err| Failure::config(format!("STATIC_ROOT: cannot prepare store directories: {err}")))?;
    let referenced: HashSet<String> = db::stores::files(data.db.conn()).map_err(unreadable)?.into_iter().collect();
    let swept = blobs
        .sweep(&referenced, false, Duration::ZERO)
        .map_err(|err| Failure::config(format!("STATIC_ROOT: cannot clean up store files: {err}")))?;
    if !swept.temp_files.is_empty() || !swept.orphans.is_empty() {
        log::info(format_args!(
            "removed {} unfinished upload(s) and {} unreferenced store file(s)",
            swept.temp_files.len(),
            swept.orphans.len()
        ));
    }
    // Without the WAL's shared memory every read goes to the loop: slower,
    // never wrong.
    let reads = Arc::new(ReadCache::new(
        CommitWatch::open(&config.static_root.join(db::FILE_NAME))
            .inspect_err(|err| log::warn(format_args!("every read goes through the loop: {err}")))
            .ok(),
    ));
    let decoy_hash = auth::decoy_hash(config.pbkdf2_iterations).map_err(|err| Failure::config(err.to_string()))?;

    let config = Arc::new(config);
    let (events, inbox) = mpsc::channel();
    let lifecycle = Arc::new(Lifecycle::new(bound));
    catch_signals(events.clone())?;
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let hashing = Hashing::new(
        cores,
        hashing::Shares {
            total: HASHING_PLACES,
            per_address: HASHING_PLACES_PER_ADDRESS,
            per_account: HASHING_PLACES_PER_ACCOUNT,
        },
    );
    let answers = MemoryBudget::new(ANSWER_MEMORY, MEMORY_PER_ADDRESS);
    let limits = Limits {
        reads_body_first: |head| {
            crate::router::route(&head.method, &head.path).map_or(true, |route| !route.streams_body())
        },
        ..Limits::default()
    };
    // As many work threads awake as there are cores: their jobs compute.
    let room = Room::start(Pool::awake_at_most(WORK_THREADS, cores), limits)
        .map_err(|err| Failure::config(format!("cannot open the waiting room: {err}")))?;
    let shared = Arc::new(Shared {
        events,
        lifecycle: Arc::clone(&lifecycle),
        config: Arc::clone(&config),
        blobs: blobs.clone(),
        limits,
        hashing: Arc::clone(&hashing),
        hashing_pool: Pool::new(HASHING_PLACES),
        answers: answers.clone(),
        entries: MemoryBudget::new(ENTRY_MEMORY, MEMORY_PER_ADDRESS),
        requests: MemoryBudget::new(REQUEST_MEMORY, MEMORY_PER_ADDRESS),
        uploads: Uploads::new(blobs.clone(), config.min_free_bytes),
        reads: Arc::clone(&reads),
        room,
    });
    let room = Arc::clone(&shared.room);
    let register = Register::new(
        Caps {
            total: config.max_connections,
            per_address: Some(config.max_connections_per_address),
            exempt: config.trust_proxy.clone(),
        },
        Arc::new(move |connection| room.shed(connection)),
    );
    let accepting = Arc::clone(&lifecycle);
    let cors_origins = config.cors_origins.clone();
    let refuser = Refuser::start(move |origin| refusal_bytes(&cors_origins, origin))
        .map_err(|err| Failure::config(format!("cannot start the refusing thread: {err}")))?;
    thread::Builder::new()
        .name("accept".into())
        .spawn(move || {
            let keep_going = || !accepting.stopping();
            listener::accept_loop(tcp, register, &refuser, keep_going, move |stream, peer, slot| {
                worker::admit(stream, peer, slot, &shared);
            });
        })
        .map_err(|err| Failure::config(format!("cannot start the accept thread: {err}")))?;
    log::info(format_args!(
        "sync-node {} listening on http://{bound} (data in {}, registration {}{})",
        env!("CARGO_PKG_VERSION"),
        config.static_root.display(),
        config.registration.as_str(),
        if config.access_log { ", access log on" } else { "" }
    ));
    let max_connections = config.max_connections;
    let polls = Polls::new(MAX_POLLS_PER_ACCOUNT, max_connections);
    let reset_hook = config.reset_hook.clone().map(ResetHook::new);
    let app = App {
        config,
        generation,
        db: data.db,
        blobs,
        secret: data.secret,
        decoy_hash,
        polls,
        streams: Polls::new(MAX_POLLS_PER_ACCOUNT, max_connections),
        streams_behind: Vec::new(),
        walks: Default::default(),
        open_files: OpenFiles::new(OPEN_FILES),
        throttle: Throttle::default(),
        registrations: RateLimit::new(REGISTRATIONS_PER_HOUR, api::HOUR, api::RATE_LIMIT_KEYS),
        sign_ins: RateLimit::new(SIGN_INS_PER_HOUR, api::HOUR, api::RATE_LIMIT_KEYS),
        reset_requests: RateLimit::new(RESET_REQUESTS_PER_HOUR, api::HOUR, api::RATE_LIMIT_KEYS),
        reset_tokens: RateLimit::new(RESET_TOKENS_PER_HOUR, api::HOUR, api::RATE_LIMIT_KEYS),
        identity_lookups: DistinctLimit::new(LOOKUPS_PER_HOUR, api::HOUR, api::RATE_LIMIT_KEYS),
        redeem_failures_by_account: RateLimit::new(REDEEM_FAILURES_PER_HOUR, api::HOUR, api::RATE_LIMIT_KEYS),
        redeem_failures_by_address: RateLimit::new(REDEEM_FAILURES_PER_HOUR, api::HOUR, api::RATE_LIMIT_KEYS),
        reset_hook,
        hashing,
        deferred: Vec::new(),
        after_commit: AfterCommit::default(),
        data_version: None,
        stopping: false,
        garbage: true,
        pinned: Vec::new(),
        others_waiting: false,
        answers,
        reads,
        read_mark: None,
    };
    server::run(app, inbox, &lifecycle);
    log::info("sync-node stopped");
    drop(claim);
    Ok(())
}

/// SIGTERM and SIGINT start a graceful shutdown (SPEC §8): the loop hears
/// of it as an event. The standard library cannot catch signals, and this
/// crate forbids `unsafe`, hence `signal-hook`.
fn catch_signals(events: mpsc::Sender<Event>) -> Result<(), Failure> {
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|err| Failure::config(format!("cannot catch SIGTERM and SIGINT: {err}")))?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGTERM { "SIGTERM" } else { "SIGINT" };
                log::info(format_args!("{name}: stopping (requests in flight get up to 10 s)"));
                if events.send(Event::Shutdown).is_err() {
                    return;
                }
            }
        })
        .map(drop)
        .map_err(|err| Failure::config(format!("cannot start the signal thread: {err}")))
}

/// The canned answer when there is no room for a connection, with the CORS
/// headers for its `Origin` (built for each refusal, so its `Date` is
/// current).
fn refusal_bytes(cors_origins: &CorsOrigins, origin: Option<&[u8]>) -> Vec<u8> {
    let response = ApiError::Unavailable { retry_after_secs: 1 }.into_response();
    let mut bytes = Vec::new();
    response.write_head(&mut bytes, &cors::headers(cors_origins, origin), false);
    bytes.extend_from_slice(response.body_bytes());
    bytes
}
