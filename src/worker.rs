//! A connection thread: reads requests, hands them to the loop, and does
//! the byte work the loop asks for (answers, uploads, downloads, PBKDF2).
//! Whatever a client does — trickle, stall, vanish — blocks only this thread.

use crate::api::JSON_LIMIT;
use crate::blobs::{Blobs, Staged};
use crate::config::Config;
use crate::cors;
use crate::error::{ApiError, Shortage, is_out_of_space};
use crate::http::conn::{ExtraHeaders, HeadError};
use crate::http::{BodyError, Connection, Framing, Limits, Response, SendOptions};
use crate::lifecycle::Lifecycle;
use crate::router;
use crate::server::{Event, Reply, Request, Step};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A request body this small is read and discarded when the answer does not
/// need it, so the connection can be kept alive.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// How often a thread waiting on the loop checks that its client is still there.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// What every connection thread shares.
pub struct Shared {
    pub events: Sender<Event>,
    pub lifecycle: Arc<Lifecycle>,
    pub config: Arc<Config>,
    pub blobs: Blobs,
    pub limits: Limits,
    pub hashing: Gate,
}

/// Bounds how many PBKDF2 computations run at once, so a flood of logins
/// cannot take every core.
pub struct Gate {
    free: Mutex<usize>,
    released: Condvar,
}

impl Gate {
    pub fn new(permits: usize) -> Gate {
        Gate { free: Mutex::new(permits.max(1)), released: Condvar::new() }
    }

    fn run<T>(&self, work: impl FnOnce() -> T) -> T {
        {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            while *free == 0 {
                free = self.released.wait(free).unwrap_or_else(|e| e.into_inner());
            }
            *free -= 1;
        }
        let result = work();
        *self.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.released.notify_one();
        result
    }
}

/// Serves one connection until it closes.
pub fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let mut conn = Connection::new(stream, shared.limits);
    let (steps_tx, steps) = mpsc::channel();
    // The CORS headers for the Origin this connection last sent.
    let mut cors_memo: Option<(Option<Vec<u8>>, ExtraHeaders)> = None;
    loop {
        let head = match conn.read_head() {
            Ok(head) => head,
            Err(HeadError::Closed) => return,
            Err(HeadError::Reject(err)) => {
                let options = SendOptions {
                    extra: cors::headers(&shared.config.cors_origins, None).into(),
                    ..Default::default()
                };
                let _ = conn.send(err.into_response(), &options);
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
        let mut body_unread = framing != Framing::None;
        let mut continue_sent = false;
        let mut body = Vec::new();
        if !matches!(&route, Ok(route) if route.streams_body()) && body_unread {
            if expect_continue {
                continue_sent = conn.send_continue().is_ok();
            }
            match conn.read_body(framing, JSON_LIMIT) {
                Ok(bytes) => body = bytes,
                Err(err) => return refuse_body(conn, err, "request body", options),
            }
            body_unread = false;
        }
        let request = Request { head, body, peer: peer.ip() };
        let _in_flight = shared.lifecycle.request();
        if shared.events.send(Event::Request { reply: Reply(steps_tx.clone()), route, request }).is_err() {
            return;
        }
        let response = loop {
            let step = match steps.recv_timeout(LIVENESS_CHECK) {
                Ok(step) => step,
                // A held request (a long-poll) whose client has gone frees its thread now.
                Err(RecvTimeoutError::Timeout) if conn.peer_closed() => return,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            match step {
                Step::Respond(response) => break response,
                Step::Receive { limit, then } => {
                    if expect_continue && !continue_sent {
                        continue_sent = conn.send_continue().is_ok();
                    }
                    match receive(&mut conn, framing, limit, &shared.blobs) {
                        Ok(staged) => {
                            body_unread = false;
                            let event = Event::Uploaded { reply: Reply(steps_tx.clone()), then, staged };
                            if shared.events.send(event).is_err() {
                                return;
                            }
                        }
                        Err(err) => return refuse_body(conn, err, "store", options),
                    }
                }
                Step::Password { job, then } => {
                    let outcome = shared.hashing.run(|| job.run());
                    let event = Event::PasswordDone { reply: Reply(steps_tx.clone()), then, outcome };
                    if shared.events.send(event).is_err() {
                        return;
                    }
                }
            }
        };
        if body_unread {
            body_unread = !(matches!(framing, Framing::Length(n) if n <= DRAIN_LIMIT)
                && (!expect_continue || continue_sent)
                && conn.copy_body(framing, DRAIN_LIMIT, &mut io::sink()).is_ok());
        }
        // A server shutting down closes each connection after its answer.
        options.keep_alive &= !body_unread && !shared.lifecycle.stopping();
        if conn.send(response, &options).is_err() {
            return;
        }
        if !options.keep_alive {
            if body_unread {
                conn.linger_close();
            }
            return;
        }
    }
}

/// Streams an upload into a staged file and makes it durable.
fn receive(conn: &mut Connection, framing: Framing, limit: u64, blobs: &Blobs) -> Result<Staged, BodyError> {
    let mut staging = blobs.stage().map_err(BodyError::Sink)?;
    conn.copy_body(framing, limit, &mut staging)?;
    staging.finish().map_err(BodyError::Sink)
}

/// Answers a body that could not be read (if the client can still hear it)
/// and closes the connection.
fn refuse_body(mut conn: Connection, err: BodyError, what: &'static str, mut options: SendOptions) {
    let error = match err {
        BodyError::TooLarge => ApiError::PayloadTooLarge(what),
        BodyError::Malformed => ApiError::bad_request("Malformed chunked body."),
        BodyError::Sink(err) if is_out_of_space(&err) => ApiError::InsufficientStorage(Shortage::Disk),
        BodyError::Sink(err) => ApiError::Internal(format!("staging an upload: {err}")),
        BodyError::Socket(_) => return,
    };
    options.keep_alive = false;
    let response: Response = error.into_response();
    if conn.send(response, &options).is_ok() {
        conn.linger_close();
    }
}
