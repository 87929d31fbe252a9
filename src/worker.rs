//! A connection thread: one connection's life as a sequence of phases,
//! each with its own deadline — read a head (10 s from its first byte),
//! answer at once if the loop can without the body, read a JSON body
//! (10 s), stream a store body (at least 1 KiB/s after 10 s), wait for the
//! loop, write the answer, then keep alive or close. Whatever a client
//! does — trickle, stall, vanish — blocks only this thread, and not for
//! longer than the phase allows.

use crate::api::{self, JSON_LIMIT, Received};
use crate::api::{Event, Reply, Request, Step};
use crate::blobs::Blobs;
use crate::config::Config;
use crate::cors;
use crate::error::{ApiError, Shortage, is_out_of_space};
use crate::hashing::Hashing;
use crate::http::budget::{MemoryBudget, OverBudget};
use crate::http::conn::{ExtraHeaders, HeadError};
use crate::http::listener::Slot;
use crate::http::request::share_of;
use crate::http::{BodyError, Connection, Framing, Limits, Pace, Response, SendOptions};
use crate::lifecycle::Lifecycle;
use crate::log;
use crate::router::{self, Route};
use crate::uploads::{Allowance, Uploads, shortage_of};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// A request body this small is read and discarded when the answer does not
/// need it, so the connection can be kept alive.
const DRAIN_LIMIT: u64 = 64 * 1024;
/// How long discarding such a body may take before the connection is closed.
const DRAIN_PACE: Pace = Pace::Within(Duration::from_secs(2));
/// A JSON body must arrive within this long of its head (SPEC §1).
const JSON_PACE: Pace = Pace::Within(Duration::from_secs(10));
/// A store or log body must arrive at 4 KiB/s or more once 10 s have
/// passed, sliding: bytes sent early buy at most 30 s (far less than the 10
/// minutes after which `sync-node check --repair` takes a staged file for
/// a leftover).
const UPLOAD_PACE: Pace =
    Pace::AtLeast { grace: Duration::from_secs(10), bytes_per_second: 4096, most_ahead: Duration::from_secs(30) };

/// How often a thread waiting on the loop checks that its client is still there.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// What every connection thread shares.
pub struct Shared {
    pub events: Sender<Event>,
    pub lifecycle: Arc<Lifecycle>,
    pub config: Arc<Config>,
    pub blobs: Blobs,
    pub limits: Limits,
    pub hashing: Arc<Hashing>,
    /// The memory answers being sent may hold, all connections together.
    pub answers: MemoryBudget,
    /// The memory log entries being received may hold.
    pub entries: MemoryBudget,
    /// The disk and quota room store uploads in flight hold.
    pub uploads: Uploads,
}

/// Serves one connection until it closes.
pub fn serve_connection(stream: TcpStream, peer: SocketAddr, slot: Slot, shared: &Shared) {
    let mut conn = Connection::new(stream, shared.limits, slot);
    let (steps_tx, steps) = mpsc::channel();
    // The CORS headers for the Origin this connection last sent.
    let mut cors_memo: Option<(Option<Vec<u8>>, ExtraHeaders)> = None;
    loop {
        let head = match conn.read_head() {
            Ok(head) => head,
            Err(HeadError::Closed) => return,
            Err(HeadError::Reject(err)) => {
                let options = SendOptions {
                    extra: cors::headers(&shared.config.cors_origins, conn.partial_head_origin()).into(),
                    ..Default::default()
                };
                let response = ApiError::from(err).into_response();
                if shared.config.access_log {
                    // No head to read a method, route or forwarded address from.
                    log::access(peer.ip(), "-", "(malformed)", response.status, response.body_len(), Duration::ZERO);
                }
                let _ = conn.send(response, &options);
                return conn.linger_close();
            }
        };
        let origin = head.header("origin");
        let extra = match &cors_memo {
            Some((memo_origin, extra)) if memo_origin.as_deref() == origin => Arc::clone(extra),
            _ => {
                let extra: ExtraHeaders = cors::headers(&shared.config.cors_origins, origin).into();
                cors_memo = Some((origin.map(<[u8]>::to_vec), Arc::clone(&extra)));
                extra
            }
        };
        let mut options = SendOptions { head_only: head.is_head(), keep_alive: head.keep_alive, extra };
        let (framing, expect_continue) = (head.framing, head.expect_continue);
        let route = router::route(&head.method, &head.path);
        // The client as every per-address limit keys it (an IPv6 /64; the
        // forwarded client behind a trusted proxy).
        let client = share_of(head.client_address(peer.ip(), &shared.config.trust_proxy));
        // Behind a trusted proxy the connection counts against the client
        // it forwards, within that client's cap.
        if !conn.slot().speaks_for(client) {
            options.keep_alive = false;
            let _ = conn.send(ApiError::Unavailable { retry_after_secs: 1 }.into_response(), &options);
            return conn.linger_close();
        }
        let access = shared.config.access_log.then(|| Access {
            address: client,
            method: head.method.clone(),
            route: route.as_ref().map_or("(no route)", Route::pattern),
            started: Instant::now(),
        });
        let access = access.as_ref();
        let streams_body = matches!(&route, Ok(route) if route.streams_body());
        // SPEC §1: a declared length over the limit is refused first, before
        // authentication, and without reading the body.
        if let (Ok(route), Framing::Length(declared)) = (&route, framing)
            && route.streams_body()
            && declared > body_limit(route, &shared.config)
        {
            let what = if matches!(route, Route::AppendLog(_)) { "log entry" } else { "store" };
            return refuse_body(conn, BodyError::TooLarge, what, options, access);
        }
        let mut body_unread = framing != Framing::None;
        let mut continue_sent = false;
        // A small log entry that came with its head goes straight to group
        // commit (nothing is waited for that an early answer would spare).
        let small_append = match (&route, framing) {
            (Ok(Route::AppendLog(key)), Framing::Length(n))
                if n <= api::SMALL_ENTRY && !expect_continue && conn.buffered() >= n =>
            {
                api::small_append(&head, key.clone())
            }
            _ => None,
        };
        let mut body = Vec::new();
        if small_append.is_some() {
            match conn.read_body(framing, api::SMALL_ENTRY, UPLOAD_PACE) {
                Ok(bytes) => body = bytes,
                Err(err) => return refuse_body(conn, err, "log entry", options, access),
            }
            body_unread = false;
        } else if !streams_body && body_unread {
            if expect_continue {
                continue_sent = conn.send_continue().is_ok();
            }
            match conn.read_body(framing, JSON_LIMIT, JSON_PACE) {
                Ok(bytes) => body = bytes,
                Err(err) => return refuse_body(conn, err, "request body", options, access),
            }
            body_unread = false;
        }
        let reply = Reply::new(steps_tx.clone(), shared.answers.clone(), options.head_only, client);
        let event = match small_append {
            Some(then) => Event::Uploaded { reply, then, received: Received::Entry(body) },
            None => Event::Request { reply, route, request: Request { head, body, peer: peer.ip() } },
        };
        let _in_flight = shared.lifecycle.request();
        if shared.events.send(event).is_err() {
            return;
        }
        // The memory a log entry received for this request holds, until
        // its answer (the entry is committed or refused by then).
        let mut entry_memory = None;
        let response = loop {
            let step = match steps.recv_timeout(LIVENESS_CHECK) {
                Ok(step) => step,
                // A held request (a long-poll) whose client has gone frees its thread now.
                Err(RecvTimeoutError::Timeout) if conn.peer_closed() => return,
                Err(RecvTimeoutError::Timeout) => {
                    conn.slot().waiting();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            match step {
                Step::Respond(response) => break response,
                Step::Receive { limit, then, allowance } => {
                    if expect_continue && !continue_sent {
                        continue_sent = conn.send_continue().is_ok();
                    }
                    let what = if then.in_memory() { "log entry" } else { "store" };
                    if then.in_memory() {
                        // Reserved before a byte is read: the declared
                        // length, or the most a chunked entry may grow to.
                        let most = if let Framing::Length(n) = framing { n } else { limit };
                        match shared.entries.take(usize::try_from(most).unwrap_or(usize::MAX), client) {
                            Ok(held) => entry_memory = held,
                            Err(OverBudget) => return refuse_body(conn, BodyError::NoRoom, what, options, access),
                        }
                    }
                    match receive(&mut conn, framing, limit, allowance, shared) {
                        Ok(received) => {
                            body_unread = false;
                            let event = Event::Uploaded {
                                reply: Reply::new(steps_tx.clone(), shared.answers.clone(), options.head_only, client),
                                then,
                                received,
                            };
                            if shared.events.send(event).is_err() {
                                return;
                            }
                        }
                        Err(err) => return refuse_body(conn, err, what, options, access),
                    }
                }
                Step::Password { job, then, ticket } => {
                    let outcome = shared.hashing.run(ticket, || job.run());
                    let event = Event::PasswordDone {
                        reply: Reply::new(steps_tx.clone(), shared.answers.clone(), options.head_only, client),
                        then,
                        outcome,
                    };
                    if shared.events.send(event).is_err() {
                        return;
                    }
                }
            }
        };
        // An answer given without the body (401, 404, 412 …) goes out at
        // once. A small body is then discarded so the connection can be
        // kept; a large one closes it. A server shutting down closes each
        // connection after its answer.
        let drain = body_unread
            && matches!(framing, Framing::Length(n) if n <= DRAIN_LIMIT)
            && (!expect_continue || continue_sent);
        options.keep_alive &= (!body_unread || drain) && !shared.lifecycle.stopping() && !conn.worn_out();
        let (status, bytes) = (response.status, sent_bytes(&response, &options));
        drop(entry_memory);
        let sent = conn.send(response, &options);
        if let Some(access) = access {
            access.log(status, bytes);
        }
        if sent.is_err() {
            return;
        }
        if !options.keep_alive {
            if body_unread {
                conn.linger_close();
            }
            return;
        }
        if body_unread && conn.copy_body(framing, DRAIN_LIMIT, &mut io::sink(), DRAIN_PACE).is_err() {
            return;
        }
    }
}

/// The largest body a streaming route takes.
fn body_limit(route: &Route, config: &Config) -> u64 {
    match route {
        Route::PutStore(_) => config.max_store_bytes,
        Route::AppendLog(_) => config.max_entry_bytes,
        _ => JSON_LIMIT,
    }
}

/// Receives a body: into memory (a log entry, made durable by the
/// commit), or streamed into a staged file made durable here, reserving
/// its bytes within `allowance` as they arrive.
fn receive(
    conn: &mut Connection,
    framing: Framing,
    limit: u64,
    allowance: Option<Allowance>,
    shared: &Shared,
) -> Result<Received, BodyError> {
    let Some(allowance) = allowance else {
        return conn.read_body(framing, limit, UPLOAD_PACE).map(Received::Entry);
    };
    let declared = if let Framing::Length(n) = framing { Some(n) } else { None };
    let mut reserved =
        shared.uploads.reserve(allowance, declared).map_err(|short| BodyError::Sink(io::Error::other(short)))?;
    let mut staging = shared.blobs.stage().map_err(BodyError::Sink)?;
    conn.copy_body(framing, limit, &mut reserved.writer(&mut staging), UPLOAD_PACE)?;
    staging.finish().map(Received::File).map_err(BodyError::Sink)
}

/// Answers a body that could not (or will not) be read, if the client can
/// still hear it, and closes the connection.
fn refuse_body(
    mut conn: Connection,
    err: BodyError,
    what: &'static str,
    mut options: SendOptions,
    access: Option<&Access>,
) {
    let error = match err {
        BodyError::TooLarge => ApiError::PayloadTooLarge(what),
        BodyError::Malformed => ApiError::bad_request("Malformed chunked body."),
        BodyError::TimedOut => ApiError::RequestTimeout,
        BodyError::NoRoom => ApiError::Unavailable { retry_after_secs: 1 },
        BodyError::Sink(err) => match shortage_of(&err) {
            Some(shortage) => ApiError::InsufficientStorage(shortage),
            None if is_out_of_space(&err) => ApiError::InsufficientStorage(Shortage::Disk),
            None => ApiError::Internal(format!("staging an upload: {err}")),
        },
        BodyError::Socket(_) => return,
    };
    options.keep_alive = false;
    let response: Response = error.into_response();
    let (status, bytes) = (response.status, sent_bytes(&response, &options));
    let sent = conn.send(response, &options);
    if let Some(access) = access {
        access.log(status, bytes);
    }
    if sent.is_ok() {
        conn.linger_close();
    }
}

/// A request as the access log tells it (`ACCESS_LOG=1`): never its key,
/// query or headers.
struct Access {
    address: IpAddr,
    method: String,
    route: &'static str,
    started: Instant,
}

impl Access {
    /// The line for an answer that has been sent.
    fn log(&self, status: u16, bytes: u64) {
        log::access(self.address, &self.method, self.route, status, bytes, self.started.elapsed());
    }
}

/// Body bytes an answer sends (none for a HEAD).
fn sent_bytes(response: &Response, options: &SendOptions) -> u64 {
    if options.head_only { 0 } else { response.body_len() }
}
