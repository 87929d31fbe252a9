//! `GET /v1/changes?since=N[&wait=S]`: the account's change feed, the
//! long-poll that parks on the loop until a commit touches the account,
//! and the feed as a stream of server-sent events (SPEC §6.1): held like a
//! long-poll, sent an event for each batch of changes instead of answered.

use super::paging;
use super::{App, Handled, Session};
use super::{Reply, Request, Step};
use crate::clock;
use crate::db::{self, changes::Change};
use crate::error::{ApiError, Forgotten};
use crate::http::Response;
use crate::limits::{MAX_PAGE, MAX_WAIT_SECONDS, STREAM_LIFETIME};
use crate::polls::{Parked, Poll};
use serde::Serialize;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Pages a stream is sent in one go; one further behind catches up in
/// turns with the loop's other work.
const PAGES_AT_ONCE: usize = 4;

#[derive(Debug, PartialEq, Eq)]
struct FeedQuery {
    since: i64,
    wait: u64,
    limit: usize,
}

/// `GET /v1/changes`
pub fn changes(app: &mut App, request: &Request) -> Result<Handled, ApiError> {
    if wants_stream(request) {
        return stream(app, request);
    }
    let query = parse_query(request.head.query.as_deref())?;
    let session = app.authenticate(request)?;
    let current = app.db.current_seq()?;
    // since=0 lists what is accessible now and needs no tombstones, and
    // neither do the later pages of such a walk: their cursors were handed
    // out by this server, and stay good below the pruning horizon.
    let walking = query.since == 0 || app.walks.continues(&session.account_id, query.since);
    let horizon =
        db::changes::horizon(app.db.conn())?.max(db::changes::account_horizon(app.db.conn(), &session.account_id)?);
    let forgotten = !walking && query.since < horizon;
    if forgotten || query.since > current {
        return Err(ApiError::Gone(Forgotten::ChangeLog));
    }
    let changes = db::changes::feed(app.db.conn(), &session.account_id, query.since, query.since == 0, query.limit)?;
    if changes.is_empty() && query.wait > 0 {
        let deadline = Instant::now() + Duration::from_secs(query.wait);
        let Session { account_id, token_hash, .. } = session;
        return Ok(Handled::Park(Poll { account_id, token_hash, since: query.since, limit: query.limit, deadline }));
    }
    let more_after = (changes.len() > query.limit).then(|| changes[query.limit - 1].seq);
    if let Some(cursor) = more_after.filter(|_| walking) {
        app.walks.remember(&session.account_id, cursor);
    }
    Ok(Handled::Step(Step::Respond(feed_response(current, &app.generation, changes, query.limit))))
}

/// Whether the client asks for the feed as a stream (`Accept:
/// text/event-stream`).
fn wants_stream(request: &Request) -> bool {
    request.head.header("accept").is_some_and(|accept| {
        accept.split(|&b| b == b',').any(|kind| {
            let kind = kind.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
            kind.eq_ignore_ascii_case(b"text/event-stream")
        })
    })
}

/// `GET /v1/changes` as a stream: the pending pages at once, then held.
fn stream(app: &mut App, request: &Request) -> Result<Handled, ApiError> {
    let since = stream_since(request)?;
    let session = app.authenticate(request)?;
    let current = app.db.current_seq()?;
    let walking = since == 0 || app.walks.continues(&session.account_id, since);
    let horizon =
        db::changes::horizon(app.db.conn())?.max(db::changes::account_horizon(app.db.conn(), &session.account_id)?);
    if (!walking && since < horizon) || since > current {
        return Ok(Handled::Stream { poll: None, events: GONE_EVENT.to_vec(), more: false });
    }
    let Session { account_id, token_hash, .. } = session;
    let deadline = Instant::now() + STREAM_LIFETIME + Duration::from_secs(60);
    let mut poll = Poll { account_id, token_hash, since, limit: MAX_PAGE, deadline };
    let (events, more) = app.stream_pages(&mut poll, &mut Memo::default())?;
    Ok(Handled::Stream { poll: Some(poll), events, more })
}

/// The event that ends a stream whose cursor the server no longer covers.
const GONE_EVENT: &[u8] = b"event: gone\ndata: {}\n\n";

/// A stream's starting point: `Last-Event-ID` if sent, else `since`.
fn stream_since(request: &Request) -> Result<i64, ApiError> {
    let bad = || ApiError::bad_request("Last-Event-ID must be a whole number ≥ 0.");
    if let Some(last) = request.head.header("last-event-id") {
        let last = std::str::from_utf8(last).map_err(|_| bad())?.trim();
        return paging::whole_number(last).map(|n| i64::try_from(n).unwrap_or(i64::MAX)).ok_or_else(bad);
    }
    parse_query(request.head.query.as_deref()).map(|query| query.since)
}

/// Cursors handed to feed walks that began at `since=0`, remembered for an
/// hour (at most [`Walks::CAPACITY`]), so the next page is served even if
/// pruning has since raised the horizon past it: a walk from 0 never needed
/// the forgotten tombstones, and without this an account with more live
/// stores than a page below the horizon could never finish one.
#[derive(Debug, Default)]
pub struct Walks {
    cursors: HashMap<(String, i64), Instant>,
}

impl Walks {
    const CAPACITY: usize = 4096;
    const LIFETIME: Duration = Duration::from_secs(3600);

    fn remember(&mut self, account_id: &str, cursor: i64) {
        let now = Instant::now();
        if self.cursors.len() >= Self::CAPACITY {
            self.cursors.retain(|_, at| now.saturating_duration_since(*at) < Self::LIFETIME);
            if self.cursors.len() >= Self::CAPACITY
                && let Some(oldest) = self.cursors.iter().min_by_key(|(_, at)| **at).map(|(key, _)| key.clone())
            {
                self.cursors.remove(&oldest);
            }
        }
        self.cursors.insert((account_id.to_owned(), cursor), now);
    }

    fn continues(&self, account_id: &str, cursor: i64) -> bool {
        self.cursors.get(&(account_id.to_owned(), cursor)).is_some_and(|at| at.elapsed() < Self::LIFETIME)
    }
}

impl App {
    /// Parks a long-poll; one evicted to keep the bounds is answered now,
    /// and so is every poll while the server shuts down.
    pub fn park(&mut self, reply: Reply, poll: Poll) {
        if self.stopping {
            return self.answer(Parked { reply, poll }, &mut Memo::default());
        }
        if let Some(evicted) = self.polls.park(reply, poll) {
            self.answer(evicted, &mut Memo::default());
        }
    }

    /// Holds a stream that has sent its first pages (sent here); a stream
    /// that ends at once (gone, or the server stopping) is not held.
    pub fn hold_stream(&mut self, reply: Reply, poll: Option<Poll>, events: Vec<u8>, more: bool) {
        let Some(poll) = poll.filter(|_| !self.stopping) else {
            reply.send(Step::Stream { events, ends: true, held: None });
            return;
        };
        if !reply.send(Step::Stream { events, ends: false, held: None }) {
            return;
        }
        if more {
            // More pages than one go takes: the rest follows in turns.
            self.catch_up_later(&poll);
        }
        if let Some(evicted) = self.streams.park(reply, poll) {
            evicted.reply.send(Step::Stream { events: Vec::new(), ends: true, held: None });
        }
    }

    /// Answers every parked poll now, and ends every stream (the server is
    /// shutting down).
    pub fn expire_all_polls(&mut self) {
        let memo = &mut Memo::default();
        for parked in self.polls.take_all() {
            self.answer(parked, memo);
        }
        for parked in self.streams.take_all() {
            parked.reply.send(Step::Stream { events: Vec::new(), ends: true, held: None });
        }
    }

    /// Wakes the long-polls and streams of accounts a commit just touched.
    pub fn notify(&mut self, accounts: &[String]) {
        let memo = &mut Memo::default();
        for parked in self.polls.take_for(accounts) {
            self.answer(parked, memo);
        }
        for parked in self.streams.take_for(accounts) {
            self.feed_stream(parked, memo);
        }
    }

    /// Streams that were sent all the pages one go allows and have more
    /// waiting: they get their next pages now.
    pub fn catch_up_streams(&mut self) {
        let accounts = std::mem::take(&mut self.streams_behind);
        let memo = &mut Memo::default();
        for parked in self.streams.take_for(&accounts) {
            self.feed_stream(parked, memo);
        }
    }

    fn catch_up_later(&mut self, poll: &Poll) {
        if !self.streams_behind.contains(&poll.account_id) {
            self.streams_behind.push(poll.account_id.clone());
        }
    }

    /// Sends a held stream what it has not been sent yet, and holds it
    /// again; one whose session is gone ends with nothing more sent, one
    /// whose connection is gone is forgotten.
    fn feed_stream(&mut self, mut parked: Parked<Reply>, memo: &mut Memo) {
        let (events, more) = match self.stream_pages(&mut parked.poll, memo) {
            Ok(pages) => pages,
            Err(_) => {
                parked.reply.send(Step::Stream { events: Vec::new(), ends: true, held: None });
                return;
            }
        };
        if !events.is_empty() && !parked.reply.send(Step::Stream { events, ends: false, held: None }) {
            return;
        }
        if more {
            self.catch_up_later(&parked.poll);
        }
        if let Some(evicted) = self.streams.park(parked.reply, parked.poll) {
            evicted.reply.send(Step::Stream { events: Vec::new(), ends: true, held: None });
        }
    }

    /// Up to [`PAGES_AT_ONCE`] pages of changes after the stream's cursor
    /// as events, the cursor moved past them, and whether more remain;
    /// 401 if its session is gone.
    fn stream_pages(&self, poll: &mut Poll, memo: &mut Memo) -> Result<(Vec<u8>, bool), ApiError> {
        let mut events = Vec::new();
        for _ in 0..PAGES_AT_ONCE {
            let Some(page) = self.feed_of(poll, memo)?.1 else { return Ok((events, false)) };
            let (seq, more) = (page.seq, page.more);
            events.extend_from_slice(format!("id: {seq}\nevent: changes\ndata: ").as_bytes());
            events.extend_from_slice(&page.body);
            events.extend_from_slice(b"\n\n");
            poll.since = seq;
            if !more {
                return Ok((events, false));
            }
        }
        Ok((events, true))
    }

    /// Answers the long-polls whose wait is over, and forgets streams past
    /// their life (their connections have ended them).
    pub fn expire_polls(&mut self, now: Instant) {
        let memo = &mut Memo::default();
        for parked in self.polls.take_expired(now) {
            self.answer(parked, memo);
        }
        for parked in self.streams.take_expired(now) {
            parked.reply.send(Step::Stream { events: Vec::new(), ends: true, held: None });
        }
    }

    /// The next instant a long-poll's wait (or a stream's life) ends.
    pub fn next_poll_deadline(&self) -> Option<Instant> {
        self.polls.next_deadline().into_iter().chain(self.streams.next_deadline()).min()
    }

    /// Answers the parked polls (of `accounts`, or all) that have
    /// something to report — changes, or that their session is gone —
    /// after a commit that may not have woken them (a command-line tool's,
    /// or a revocation); the others keep waiting.
    pub fn recheck_polls(&mut self, accounts: Option<&[String]>) {
        let polls = match accounts {
            Some(accounts) => self.polls.take_for(accounts),
            None => self.polls.take_all(),
        };
        let memo = &mut Memo::default();
        for parked in polls {
            match self.feed_of(&parked.poll, memo) {
                Ok((_, Some(page))) => {
                    parked.reply.send(Step::Respond(page.response()));
                }
                Ok((_, None)) => self.park(parked.reply, parked.poll),
                Err(err) => {
                    parked.reply.send(Step::Respond(err.into_response()));
                }
            }
        }
        let streams = match accounts {
            Some(accounts) => self.streams.take_for(accounts),
            None => self.streams.take_all(),
        };
        for parked in streams {
            self.feed_stream(parked, memo);
        }
    }

    fn answer(&mut self, parked: Parked<Reply>, memo: &mut Memo) {
        let response = match self.feed_of(&parked.poll, memo) {
            Ok((_, Some(page))) => page.response(),
            Ok((current, None)) => feed_response(current, &self.generation, Vec::new(), 1),
            Err(err) => err.into_response(),
        };
        parked.reply.send(Step::Respond(response));
    }

    /// The counter, then the poll's feed answer if it has changes to
    /// report (read in that order: a change committed in between is not
    /// skipped by the cursor); 401 if its session is gone (revoked,
    /// expired, its account deleted), so a revoked session never hears of
    /// a change made after the revocation.
    /// Devices of one account at one cursor share the page, read once per
    /// `memo` (one pass over the held requests: 10,000 devices of 200
    /// accounts, 200 feed queries instead of 10,000).
    fn feed_of(&self, poll: &Poll, memo: &mut Memo) -> Result<(i64, Option<Rc<FeedAnswer>>), ApiError> {
        match db::sessions::get(self.db.conn(), &poll.token_hash)? {
            Some((account_id, expiration)) if account_id == poll.account_id && expiration > clock::now_ms() => {}
            _ => return Err(ApiError::Unauthorized),
        }
        let current = match memo.current {
            Some(current) => current,
            None => *memo.current.insert(self.db.current_seq()?),
        };
        let key = (poll.account_id.clone(), poll.since, poll.limit);
        if let Some(page) = memo.pages.get(&key) {
            return Ok((current, page.clone()));
        }
        let changes = db::changes::feed(self.db.conn(), &poll.account_id, poll.since, poll.since == 0, poll.limit)?;
        let page = (!changes.is_empty()).then(|| Rc::new(feed_page(current, &self.generation, changes, poll.limit)));
        memo.pages.insert(key, page.clone());
        Ok((current, page))
    }
}

/// A feed page as an answer's body, with its cursor and whether more
/// follow.
struct FeedAnswer {
    body: Vec<u8>,
    seq: i64,
    more: bool,
}

impl FeedAnswer {
    fn response(&self) -> Response {
        Response::json_bytes(200, self.body.clone())
    }
}

/// Feed pages read in one pass over held polls and streams (within one
/// turn of the loop, so no commit of the loop's comes between), by
/// account, cursor and page size; and the counter, read once.
#[derive(Default)]
struct Memo {
    current: Option<i64>,
    pages: HashMap<(String, i64, usize), Option<Rc<FeedAnswer>>>,
}

/// A feed page: `changes` holds up to `limit + 1` entries, the last one
/// only to tell that more follow (then `seq` is the last one returned, so
/// `since=seq` continues exactly there).
fn feed_response(current: i64, generation: &str, changes: Vec<Change>, limit: usize) -> Response {
    feed_page(current, generation, changes, limit).response()
}

fn feed_page(current: i64, generation: &str, mut changes: Vec<Change>, limit: usize) -> FeedAnswer {
    let more = changes.len() > limit;
    changes.truncate(limit);
    let seq = match changes.last() {
        Some(last) if more => last.seq,
        _ => current,
    };
    let changes: Vec<FeedEntry<'_>> = changes
        .iter()
        .map(|change| FeedEntry {
            key: &change.key,
            seq: change.seq,
            token: change.token.as_deref(),
            permission: change.permission.map(|p| p.as_str()),
            log_head: change.log_head,
            envelope_seq: change.envelope_seq,
        })
        .collect();
    // Serialising our own plain data types cannot fail.
    let body = serde_json::to_vec(&FeedPage { seq, generation, more, changes }).unwrap_or_default();
    FeedAnswer { body, seq, more }
}

/// A feed answer, serialised from borrowed fields (no map per entry).
#[derive(Serialize)]
struct FeedPage<'a> {
    seq: i64,
    generation: &'a str,
    more: bool,
    changes: Vec<FeedEntry<'a>>,
}

#[derive(Serialize)]
struct FeedEntry<'a> {
    key: &'a str,
    seq: i64,
    token: Option<&'a str>,
    permission: Option<&'static str>,
    log_head: Option<u64>,
    envelope_seq: Option<i64>,
}

/// `since` (required, ≥ 0), `wait` (0..=60, default 0) and `limit`.
fn parse_query(query: Option<&str>) -> Result<FeedQuery, ApiError> {
    let (mut since, mut wait, mut limit) = (None, 0, MAX_PAGE);
    for (name, value) in paging::pairs(query) {
        match name {
            "since" => {
                // Above every counter there is (→ 410) however large.
                let n = paging::whole_number(value).map(|n| i64::try_from(n).unwrap_or(i64::MAX));
                since = Some(n.ok_or_else(|| ApiError::bad_request("since must be a whole number ≥ 0."))?);
            }
            "wait" => {
                wait = paging::whole_number(value)
                    .filter(|&n| n <= MAX_WAIT_SECONDS)
                    .ok_or_else(|| ApiError::bad_request("wait must be a whole number of seconds from 0 to 60."))?;
            }
            "limit" => limit = paging::limit(value)?,
            _ => {}
        }
    }
    let since = since.ok_or_else(|| ApiError::bad_request("since is required."))?;
    Ok(FeedQuery { since, wait, limit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_remember_their_cursors_boundedly() {
        let mut walks = Walks::default();
        walks.remember("a", 7);
        assert!(walks.continues("a", 7));
        assert!(!walks.continues("a", 8) && !walks.continues("b", 7));
        for cursor in 0..(Walks::CAPACITY as i64 + 10) {
            walks.remember("flood", 100 + cursor);
        }
        assert!(walks.cursors.len() <= Walks::CAPACITY);
    }

    #[test]
    fn query_parsing() {
        assert_eq!(parse_query(Some("since=5")).unwrap(), FeedQuery { since: 5, wait: 0, limit: 1000 });
        assert_eq!(
            parse_query(Some("wait=60&since=0&x=y&limit=7")).unwrap(),
            FeedQuery { since: 0, wait: 60, limit: 7 }
        );
        for bad in [
            None,
            Some(""),
            Some("since="),
            Some("since=-1"),
            Some("since=+1"),
            Some("since=abc"),
            Some("since=1&wait=61"),
            Some("since=1&wait=-1"),
            Some("since=1&wait="),
            Some("since=1&limit=0"),
            Some("since=1&limit=x"),
        ] {
            assert_eq!(parse_query(bad).unwrap_err().status_and_code().0, 400, "{bad:?}");
        }
        // A whole number however large: above every counter (→ 410).
        assert_eq!(parse_query(Some("since=99999999999999999999")).unwrap().since, i64::MAX);
    }
}
