//! Starting the server: check the environment, open the data directory,
//! converge the disk to the database, bind, then run the accept thread and
//! the loop. Every failure here is a [`StartupError`] (exit code 2).

use crate::api::App;
use crate::auth;
use crate::blobs::{Blobs, OpenFiles};
use crate::config::Config;
use crate::cors;
use crate::db::{self, Db};
use crate::error::ApiError;
use crate::hook::ResetHook;
use crate::http::Limits;
use crate::http::listener;
use crate::polls::Polls;
use crate::secret;
use crate::server;
use crate::throttle::Throttle;
use crate::worker::{self, Gate, Shared};
use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

/// Store files the loop keeps open for reading.
const OPEN_FILES: usize = 64;
/// Long-polls one account may hold at once; past it the oldest is answered.
const MAX_POLLS_PER_ACCOUNT: usize = 64;

/// Why the server could not start; the message names what to fix.
#[derive(Debug)]
pub struct StartupError(pub String);

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The data directory, opened for the server or the CLI.
pub struct DataDir {
    pub db: Db,
    pub secret: Vec<u8>,
}

/// Creates `STATIC_ROOT` if missing, checks it is writable, loads the secret
/// and opens the database.
pub fn open_data_dir(root: &Path) -> Result<DataDir, StartupError> {
    let fail = |problem: String| StartupError(format!("STATIC_ROOT: {problem}"));
    fs::create_dir_all(root).map_err(|err| fail(format!("cannot create {}: {err}", root.display())))?;
    let probe = root.join(".write-test");
    fs::write(&probe, b"").map_err(|err| fail(format!("{} is not writable: {err}", root.display())))?;
    let _ = fs::remove_file(&probe);
    let secret = secret::load_or_create(root).map_err(fail)?;
    let db = Db::open(&root.join(db::FILE_NAME)).map_err(fail)?;
    Ok(DataDir { db, secret })
}

/// Runs the server until the process is stopped.
pub fn serve(config: Config) -> Result<(), StartupError> {
    if let Some(hook) = &config.reset_hook
        && !hook.is_file()
    {
        return Err(StartupError(format!("RESET_HOOK: {} is not a file", hook.display())));
    }
    let data = open_data_dir(&config.static_root)?;
    let blobs = Blobs::open(&config.static_root)
        .map_err(|err| StartupError(format!("STATIC_ROOT: cannot prepare store directories: {err}")))?;
    let referenced: HashSet<String> = db::stores::files(data.db.conn())
        .map_err(|err| StartupError(format!("STATIC_ROOT: cannot read the database: {err}")))?
        .into_iter()
        .collect();
    let swept = blobs
        .sweep(&referenced, false, Duration::ZERO)
        .map_err(|err| StartupError(format!("STATIC_ROOT: cannot clean up store files: {err}")))?;
    if !swept.temp_files.is_empty() || !swept.orphans.is_empty() {
        eprintln!(
            "sync-node: removed {} unfinished upload(s) and {} unreferenced store file(s)",
            swept.temp_files.len(),
            swept.orphans.len()
        );
    }
    let address = SocketAddr::new(config.bind, config.port);
    let tcp =
        TcpListener::bind(address).map_err(|err| StartupError(format!("PORT: cannot listen on {address}: {err}")))?;
    let bound = tcp.local_addr().map_err(|err| StartupError(format!("PORT: {err}")))?;
    let decoy_hash = auth::decoy_hash(config.pbkdf2_iterations).map_err(|err| StartupError(err.to_string()))?;

    let config = Arc::new(config);
    let (events, inbox) = mpsc::channel();
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let shared = Arc::new(Shared {
        events,
        config: Arc::clone(&config),
        blobs: blobs.clone(),
        limits: Limits::default(),
        hashing: Gate::new(cores),
    });
    let refusal = refusal_bytes(&config);
    let max_connections = config.max_connections;
    thread::Builder::new()
        .name("accept".into())
        .spawn(move || {
            listener::accept_loop(tcp, max_connections, refusal, move |stream, peer| {
                worker::serve_connection(stream, peer, &shared);
            });
        })
        .map_err(|err| StartupError(format!("cannot start the accept thread: {err}")))?;
    eprintln!(
        "sync-node {} listening on http://{bound} (data in {})",
        env!("CARGO_PKG_VERSION"),
        config.static_root.display()
    );
    let polls = Polls::new(MAX_POLLS_PER_ACCOUNT, config.max_connections);
    let reset_hook = config.reset_hook.clone().map(ResetHook::new);
    let app = App {
        config,
        db: data.db,
        blobs,
        secret: data.secret,
        decoy_hash,
        polls,
        open_files: OpenFiles::new(OPEN_FILES),
        throttle: Throttle::default(),
        reset_hook,
        deferred: Vec::new(),
    };
    server::run(app, inbox);
    Ok(())
}

/// The canned answer past the connection cap.
fn refusal_bytes(config: &Config) -> Arc<[u8]> {
    let response = ApiError::Unavailable { retry_after_secs: 1 }.into_response();
    let mut bytes = Vec::new();
    response.write_head(&mut bytes, &cors::headers(&config.cors_origins, None), false);
    bytes.extend_from_slice(response.body_bytes());
    bytes.into()
}
