//! The event loop: one thread owns the database and all state, takes one
//! [`Event`] at a time from one channel, and answers each with a [`Step`]
//! for the connection that sent it (delivered by address). It never waits on a client or on
//! PBKDF2; a panic in a handler answers 500 and the loop goes on.

use crate::api::{self, App, Event, Handled, PendingWrite, Received, Reply, Request, Step};
use crate::error::ApiError;
use crate::inbox::Inbox;
use crate::lifecycle::Lifecycle;
use crate::log;
use crate::router::Route;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Most uploads committed in one transaction.
const MAX_GROUP_COMMIT: usize = 64;
/// Most reads sharing one transaction.
const MAX_READ_BATCH: usize = 64;
/// How often expired sessions and old tombstones are pruned.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(600);
/// How often the loop looks for commits by command-line tools while
/// long-polls are parked and no event comes.
const OUTSIDE_COMMIT_CHECK: Duration = Duration::from_secs(1);
/// The pause between two chunks of dropped log entries deleted by the
/// loop ([`App::reap`]): requests are served in between.
const REAP_PAUSE: Duration = Duration::from_millis(10);
/// How long a graceful shutdown lets requests in flight finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often a shutdown looks whether requests are still in flight.
const DRAIN_TICK: Duration = Duration::from_millis(20);

/// Runs until shut down (or every sender is gone). Between events it
/// answers long-polls whose wait is over and, every few minutes, prunes
/// what has expired.
pub fn run(mut app: App, events: Receiver<Event>, lifecycle: &Lifecycle) {
    let mut inbox = Inbox::new(events, Event::client);
    let mut next_maintenance = Instant::now();
    let mut next_reap = Instant::now();
    loop {
        let now = Instant::now();
        if app.garbage && now >= next_reap {
            match write(&mut app, App::reap) {
                Ok(()) => app.run_after_commit(),
                Err(err) => log::error(format_args!("deleting what a deletion or compaction left failed: {err:?}")),
            }
            next_reap = now + REAP_PAUSE;
        }
        if now >= next_maintenance {
            if let Err(err) = write(&mut app, App::maintain) {
                log::error(format_args!("maintenance failed: {err:?}"));
            }
            app.run_after_commit();
            if let Err(err) = app.db.checkpoint() {
                log::error(format_args!("checkpoint failed: {err}"));
            }
            next_maintenance = now + MAINTENANCE_INTERVAL;
        }
        app.expire_polls(now);
        if !app.streams_behind.is_empty() {
            app.catch_up_streams();
        }
        // While polls are parked, look for commits by command-line tools
        // at least once a second: those must wake polls too.
        let wake = match app.next_poll_deadline() {
            Some(deadline) => deadline.min(now + OUTSIDE_COMMIT_CHECK),
            None => next_maintenance,
        };
        let wake = if app.garbage { wake.min(next_reap) } else { wake };
        // Streams with pages still to send get them before the loop sleeps.
        let wake = if app.streams_behind.is_empty() { wake } else { now };
        match inbox.next(wake.min(next_maintenance)) {
            Ok(Event::Shutdown) => break,
            Ok(event) => handle(&mut app, event, &mut inbox),
            Err(RecvTimeoutError::Timeout) => app.notice_outside_commits(),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
    shut_down(app, inbox, lifecycle);
}

/// The graceful end (SPEC §8): stop accepting, answer every held long-poll
/// (with no changes), keep serving what is in flight for up to
/// [`SHUTDOWN_GRACE`], then checkpoint the WAL. Connections close after
/// their current answer; an upload still streaming when time is up changes
/// nothing (its staged file is swept at the next start).
fn shut_down(mut app: App, mut inbox: Inbox<Event>, lifecycle: &Lifecycle) {
    lifecycle.stop();
    app.stopping = true;
    app.expire_all_polls();
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while lifecycle.in_flight() > 0 && Instant::now() < deadline {
        match inbox.next((Instant::now() + DRAIN_TICK).min(deadline)) {
            Ok(Event::Shutdown) | Err(RecvTimeoutError::Timeout) => {}
            Ok(event) => handle(&mut app, event, &mut inbox),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    // Closing the connection may remove the WAL's shared memory, and with
    // it what tells a cached read from a stale one.
    app.reads.forget();
    if lifecycle.in_flight() > 0 {
        log::warn(format_args!(
            "{} request(s) still in flight after {SHUTDOWN_GRACE:?}, cut off",
            lifecycle.in_flight()
        ));
    }
    if let Err(err) = app.db.checkpoint() {
        log::error(format_args!("checkpoint failed: {err}"));
    }
}

fn handle(app: &mut App, event: Event, inbox: &mut Inbox<Event>) {
    app.notice_outside_commits();
    let (reply, outcome) = match event {
        Event::Request { reply, route: Ok(route), request } if route.reads_only() => {
            handle_reads(app, (reply, route, request), inbox);
            return run_deferred(app);
        }
        // A malformed route needs no database (and must not wait for it).
        Event::Request { reply, route: Err(err), .. } => (reply, Err(err)),
        Event::Request { reply, route: Ok(route), request } => (reply, write(app, |app| app.handle(route, request))),
        Event::Uploaded { reply, then, received } => return finish_uploads(app, (reply, then, received), inbox),
        Event::PasswordDone { reply, then, outcome } => {
            app.settle(&then, &outcome);
            let registering = then.registering();
            let continued = write(app, |app| app.after_password(then, outcome).map(Handled::Step));
            if continued.is_err() {
                app.abandon(registering);
            }
            (reply, continued)
        }
        // The caller's to act on.
        Event::Shutdown => return,
    };
    match outcome {
        Ok(Handled::Park(poll)) => app.park(reply, poll),
        Ok(Handled::Stream { poll, events, more }) => app.hold_stream(reply, poll, events, more),
        Ok(Handled::Step(step)) => drop(reply.send(step)),
        Err(err) => drop(reply.send(Step::Respond(err.into_response()))),
    }
    app.run_after_commit();
    run_deferred(app);
}

/// THE write transaction: every change the loop makes goes through here.
/// It takes the write lock at once (`BEGIN IMMEDIATE`; a command-line tool
/// holding it makes this `503`, after a wait of milliseconds), runs `work`,
/// and commits. On any failure — a refused request, a failed statement, a
/// panic, a failed commit — it rolls back and forgets what `work` left in
/// [`App::after_commit`]; on success the caller answers first and then runs
/// that list.
fn write<T>(app: &mut App, work: impl FnOnce(&mut App) -> Result<T, ApiError>) -> Result<T, ApiError> {
    app.db.begin_write()?;
    let outcome = guarded(|| work(app)).and_then(|value| Ok(app.db.commit().map(|()| value)?));
    // The commit mark already makes every remembered read stale; emptying
    // the cache too keeps that from resting on SQLite's shared memory alone.
    app.reads.forget();
    if outcome.is_err() {
        app.db.roll_back();
        app.discard_after_commit();
    }
    outcome
}

/// Runs, each in its own write transaction, the work that reads left for
/// after their answers (so its cost cannot be timed by the client).
fn run_deferred(app: &mut App) {
    for work in std::mem::take(&mut app.deferred) {
        match write(app, |app| work.run(app)) {
            Ok(()) => app.run_after_commit(),
            Err(err) => log::error(format_args!("deferred work failed: {err:?}")),
        }
    }
}

/// Read-only requests share one transaction with the reads waiting right
/// behind them: one snapshot and one round of file locks for the lot, which
/// under load is most of what a read costs the loop. The batch is only what
/// had already arrived before the snapshot is taken, so a request never
/// sees a state older than what was committed (by a command-line tool)
/// before it was sent. Each is answered as soon as it is handled, and the
/// transaction writes nothing (a session's sliding extension is deferred
/// work: a write of its own after the answers).
fn handle_reads(app: &mut App, first: (Reply, Route, Request), inbox: &mut Inbox<Event>) {
    let mut batch = vec![first];
    while batch.len() < MAX_READ_BATCH {
        match inbox.ready() {
            Some(Event::Request { reply, route: Ok(route), request }) if route.reads_only() => {
                batch.push((reply, route, request));
            }
            Some(other) => {
                inbox.put_back([other]);
                break;
            }
            None => break,
        }
    }
    // Taken before the snapshot: answers remembered as of this mark are
    // as new as it or newer, and any commit after it changes the mark.
    let mark = app.reads.mark();
    if let Err(err) = app.db.begin_read() {
        let response = ApiError::from(err);
        for (reply, _, _) in batch {
            reply.send(Step::Respond(response.clone().into_response()));
        }
        return;
    }
    app.read_mark = mark;
    let mut left = batch.len();
    for (reply, route, request) in batch {
        left -= 1;
        // A long listing yields its page early only when others are waiting.
        app.others_waiting = left > 0 || inbox.has_waiting();
        match guarded(|| app.handle(route, request)) {
            Ok(Handled::Park(poll)) => app.park(reply, poll),
            Ok(Handled::Stream { poll, events, more }) => app.hold_stream(reply, poll, events, more),
            Ok(Handled::Step(step)) => drop(reply.send(step)),
            Err(err) => drop(reply.send(Step::Respond(err.into_response()))),
        }
    }
    app.read_mark = None;
    if let Err(err) = app.db.end_read() {
        log::error(format_args!("could not end a batch of reads: {err}"));
    }
    app.db.roll_back();
}

/// Group commit: the uploads already waiting behind `first` are committed
/// with it in one write transaction. Other events met on the way keep
/// their place in the queue.
fn finish_uploads(app: &mut App, first: (Reply, PendingWrite, Received), inbox: &mut Inbox<Event>) {
    let mut uploads = vec![first];
    let mut others = Vec::new();
    while uploads.len() < MAX_GROUP_COMMIT {
        match inbox.ready() {
            Some(Event::Uploaded { reply, then, received }) => uploads.push((reply, then, received)),
            Some(other) => others.push(other),
            None => break,
        }
    }
    inbox.put_back(others);
    let (replies, work): (Vec<Reply>, Vec<_>) =
        uploads.into_iter().map(|(reply, then, received)| (reply, (then, received))).unzip();
    match write(app, |app| api::finish_uploads(app, work)) {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                reply.send(outcome.unwrap_or_else(|err| Step::Respond(err.into_response())));
            }
        }
        Err(err) => {
            for reply in replies {
                reply.send(Step::Respond(err.clone().into_response()));
            }
        }
    }
    app.run_after_commit();
}

/// Contains a handler panic: the client gets 500 `internal` and the loop
/// goes on. A write's transaction rolls back ([`write`]); a batch of reads
/// goes on.
fn guarded<T>(handler: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
    catch_unwind(AssertUnwindSafe(handler)).unwrap_or_else(|_| Err(ApiError::Internal("a handler panicked".into())))
}
