//! What connections and the loop say to each other: a connection
//! sends the loop an [`Event`] (a request, a body that has arrived, a
//! password checked) with a [`Reply`] to answer through, and the loop
//! answers with a [`Step`]. The continuations a step carries (`W` for a
//! write waiting for its body, `P` for a request waiting for PBKDF2) are
//! the API's own types: this module knows nothing of them, so the API can
//! use it without depending on the loop (`api::Step` and its kin name the
//! concrete types).

use crate::auth::{PasswordJob, PasswordOutcome};
use crate::blobs::Staged;
use crate::error::ApiError;
use crate::hashing::Ticket;
use crate::http::budget::{Held, MemoryBudget, OverBudget};
use crate::http::room::{Address, Mailbox};
use crate::http::{Body, RequestHead, Response};
use crate::router::Route;
use crate::uploads::Allowance;
use std::net::IpAddr;
use std::sync::Arc;

/// A body that has arrived, as its pending write asked: staged in a file
/// (a store), or in memory (a log entry).
#[derive(Debug)]
pub enum Received {
    File(Staged),
    Entry(Vec<u8>),
}

/// A request as the loop sees it: the head and (except for uploads, which
/// are streamed later) the whole body.
#[derive(Debug)]
pub struct Request {
    pub head: RequestHead,
    pub body: Vec<u8>,
    pub peer: IpAddr,
}

/// What the loop tells a connection to do next.
#[derive(Debug)]
pub enum Step<W, P> {
    /// Write this answer; the request is done.
    Respond(Response),
    /// Receive the body (at most `limit` bytes; staged in a file, or in
    /// memory for a log entry), then send [`Event::Uploaded`] with `then`.
    /// A staged body reserves its bytes within `allowance` as it arrives.
    Receive { limit: u64, then: W, allowance: Option<Allowance> },
    /// Run PBKDF2 (in the place `ticket` holds), then send
    /// [`Event::PasswordDone`] with `then`.
    Password { job: PasswordJob, then: P, ticket: Ticket },
    /// Part of a stream of server-sent events (SPEC §6.1): the first
    /// begins the answer; `ends` closes it after these events (none: at
    /// once, with nothing more sent).
    Stream { events: Vec<u8>, ends: bool, held: Option<Held> },
}

/// The way back to one request: its connection's address, wherever the
/// connection is (waiting in the room, or on a work thread).
pub struct Reply<W, P> {
    mailbox: Arc<dyn Mailbox<Step<W, P>>>,
    to: Address,
    answers: MemoryBudget,
    /// It answers a HEAD: no body is sent, so none is kept or counted.
    head_only: bool,
    /// Whose share of the budget its answer takes.
    client: IpAddr,
}

impl<W, P> std::fmt::Debug for Reply<W, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply").field("to", &self.to).field("client", &self.client).finish_non_exhaustive()
    }
}

impl<W, P> Clone for Reply<W, P> {
    fn clone(&self) -> Self {
        Reply {
            mailbox: Arc::clone(&self.mailbox),
            to: self.to,
            answers: self.answers.clone(),
            head_only: self.head_only,
            client: self.client,
        }
    }
}

impl<W, P> Reply<W, P> {
    pub fn new(
        mailbox: Arc<dyn Mailbox<Step<W, P>>>,
        to: Address,
        answers: MemoryBudget,
        head_only: bool,
        client: IpAddr,
    ) -> Self {
        Reply { mailbox, to, answers, head_only, client }
    }

    /// The client address whose share its answer takes.
    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// A vanished connection simply drops the step. A large answer takes
    /// its part of the answers' memory (and of its client's share) here,
    /// before it leaves the loop, and keeps it until sent; when the budget
    /// cannot take it, it is dropped at once and the client gets `503`
    /// instead. The body built for a HEAD is dropped here too (only its
    /// length goes on).
    /// Whether it reached a connection that waits for it (or will take it
    /// when it is back from work): `false` for one that is gone.
    pub fn send(&self, step: Step<W, P>) -> bool {
        let step = match step {
            Step::Respond(mut response) if self.head_only => {
                if let Body::Bytes(bytes) = &response.body {
                    response.body = Body::Unsent(bytes.len() as u64);
                }
                Step::Respond(response)
            }
            Step::Respond(response) => {
                Step::Respond(match self.answers.take(response.body_bytes().len(), self.client) {
                    Ok(held) => response.holding(held),
                    Err(OverBudget) => ApiError::Unavailable { retry_after_secs: 1 }.into_response(),
                })
            }
            // A stream's events count however small (many may wait for a
            // slow reader); beyond the budget the stream ends, and its
            // client resumes with Last-Event-ID.
            Step::Stream { events, ends, .. } if events.is_empty() => Step::Stream { events, ends, held: None },
            Step::Stream { events, ends, .. } => match self.answers.take_counted(events.len(), self.client) {
                Ok(held) => Step::Stream { events, ends, held: Some(held) },
                Err(OverBudget) => Step::Stream { events: Vec::new(), ends: true, held: None },
            },
            other => other,
        };
        self.mailbox.deliver(self.to, step)
    }
}

/// Everything the loop reacts to.
#[derive(Debug)]
pub enum Event<W, P> {
    Request {
        reply: Reply<W, P>,
        route: Result<Route, ApiError>,
        request: Request,
    },
    Uploaded {
        reply: Reply<W, P>,
        then: W,
        received: Received,
    },
    PasswordDone {
        reply: Reply<W, P>,
        then: P,
        outcome: PasswordOutcome,
    },
    /// SIGTERM or SIGINT: stop gracefully.
    Shutdown,
}

impl<W, P> Event<W, P> {
    /// The client it comes from (none for a signal): the loop takes
    /// clients' events in turns.
    pub fn client(&self) -> Option<IpAddr> {
        match self {
            Event::Request { reply, .. } | Event::Uploaded { reply, .. } | Event::PasswordDone { reply, .. } => {
                Some(reply.client())
            }
            Event::Shutdown => None,
        }
    }
}
