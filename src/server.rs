//! The event loop: one thread owns the database and all state, takes one
//! [`Event`] at a time from one channel, and answers each with a [`Step`]
//! for the connection thread that sent it. It never waits on a client or on
//! PBKDF2; a panic in a handler answers 500 and the loop goes on.

use crate::api::{self, AfterPassword, App, Handled, PendingWrite};
use crate::auth::{PasswordJob, PasswordOutcome};
use crate::blobs::Staged;
use crate::error::ApiError;
use crate::http::{RequestHead, Response};
use crate::router::Route;
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// Most uploads committed in one transaction.
const MAX_GROUP_COMMIT: usize = 64;
/// How often expired sessions and old tombstones are pruned.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(600);

/// A request as the loop sees it: the head and (except for uploads, which
/// are streamed later) the whole body.
#[derive(Debug)]
pub struct Request {
    pub head: RequestHead,
    pub body: Vec<u8>,
    pub peer: IpAddr,
}

/// What the loop tells a connection thread to do next.
#[derive(Debug)]
pub enum Step {
    /// Write this answer; the request is done.
    Respond(Response),
    /// Stream the body into a staged file of at most `limit` bytes, then
    /// send [`Event::Uploaded`] with `then`.
    Receive { limit: u64, then: PendingWrite },
    /// Run PBKDF2, then send [`Event::PasswordDone`] with `then`.
    Password { job: PasswordJob, then: AfterPassword },
}

/// The way back to one connection thread.
#[derive(Debug, Clone)]
pub struct Reply(pub Sender<Step>);

impl Reply {
    /// A vanished connection simply drops the step.
    pub fn send(&self, step: Step) {
        let _ = self.0.send(step);
    }
}

/// Everything the loop reacts to.
#[derive(Debug)]
pub enum Event {
    Request { reply: Reply, route: Result<Route, ApiError>, request: Request },
    Uploaded { reply: Reply, then: PendingWrite, staged: Staged },
    PasswordDone { reply: Reply, then: AfterPassword, outcome: PasswordOutcome },
}

/// Runs until every sender is gone. Between events it answers long-polls
/// whose wait is over and, every few minutes, prunes what has expired.
pub fn run(mut app: App, events: Receiver<Event>) {
    let mut next_maintenance = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_maintenance {
            if let Err(err) = guarded(|| app.maintain()) {
                eprintln!("sync-node: maintenance failed: {err:?}");
            }
            next_maintenance = now + MAINTENANCE_INTERVAL;
        }
        app.expire_polls(now);
        let wake = app.next_poll_deadline().map_or(next_maintenance, |deadline| deadline.min(next_maintenance));
        match events.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(event) => handle(&mut app, event, &events),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn handle(app: &mut App, event: Event, events: &Receiver<Event>) {
    let (reply, outcome) = match event {
        Event::Request { reply, route, request } => match guarded(|| app.handle(route, request)) {
            Ok(Handled::Park(poll)) => return app.park(reply, poll),
            Ok(Handled::Step(step)) => (reply, Ok(step)),
            Err(err) => (reply, Err(err)),
        },
        Event::Uploaded { reply, then, staged } => return finish_uploads(app, (reply, then, staged), events),
        Event::PasswordDone { reply, then, outcome } => (reply, guarded(|| app.after_password(then, outcome))),
    };
    reply.send(outcome.unwrap_or_else(|err| Step::Respond(err.into_response())));
    app.db.roll_back_leftover();
    api::run_deferred(app);
}

/// Group commit: the uploads already waiting behind `first` are committed
/// with it in one transaction. Other events met on the way are handled
/// afterwards, in their order.
fn finish_uploads(app: &mut App, first: (Reply, PendingWrite, Staged), events: &Receiver<Event>) {
    let mut uploads = vec![first];
    let mut others = Vec::new();
    while uploads.len() < MAX_GROUP_COMMIT {
        match events.try_recv() {
            Ok(Event::Uploaded { reply, then, staged }) => uploads.push((reply, then, staged)),
            Ok(other) => others.push(other),
            Err(_) => break,
        }
    }
    let (replies, work): (Vec<Reply>, Vec<_>) =
        uploads.into_iter().map(|(reply, then, staged)| (reply, (then, staged))).unzip();
    let count = replies.len();
    let outcomes = guarded(|| Ok(app.finish_uploads(work)))
        .unwrap_or_else(|err| (0..count).map(|_| Err(ApiError::Internal(err.to_string()))).collect());
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        reply.send(outcome.unwrap_or_else(|err| Step::Respond(err.into_response())));
    }
    app.db.roll_back_leftover();
    for event in others {
        handle(app, event, events);
    }
}

/// Contains a handler panic: its transaction rolls back when dropped, and
/// the client gets 500 `internal`.
fn guarded<T>(handler: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
    catch_unwind(AssertUnwindSafe(handler)).unwrap_or_else(|_| Err(ApiError::Internal("a handler panicked".into())))
}
