//! One connection's life as a state machine. Where it waits (for a head,
//! for the loop, for its stream's next event, for its socket while a body
//! arrives or an answer leaves, lingering) it is parked in the waiting
//! room ([`Room`]) and holds no thread; when there is work (a head to
//! parse, bytes of a body that arrived, room for more of an answer) a work
//! thread takes it, does what can be done without waiting, and parks it
//! again:
//!
//! ```text
//!   Request ──head──▶ [parse] ─(JSON body: Receive)─▶ Loop ──Respond──▶ Send ──▶ Request
//!      │                                             │  ▲                 │
//!      └─late: 408──▶ Send ──▶ Linger       Receive  │  │ Uploaded        └─close──▶ Linger
//!                                      Password ─────▼──┘
//!                                          [body: Receive / PBKDF2 pool]
//! ```
//!
//! Phases with their deadlines (all in [`Limits`]): a head 10 s from its
//! first byte, a JSON body 10 s, a store or log body and an answer a
//! sliding 4 KiB/s after 10 s (each wait for the socket carries the pace's
//! deadline; a socket not ready by then is late: 408, or cut off), waiting
//! for the loop none (a hang-up ends it; the loop bounds its long-polls),
//! the next request the idle timeout, lingering 2 s.

use crate::api::{self, PendingWrite, Received};
use crate::api::{Event, Reply, Request, Step};
use crate::auth;
use crate::blobs::Blobs;
use crate::blobs::Staging;
use crate::clock;
use crate::config::Config;
use crate::cors;
use crate::error::{ApiError, Shortage, is_out_of_space};
use crate::hashing::Hashing;
use crate::http::body::Decoder;
use crate::http::budget::{Held, MemoryBudget, OverBudget};
use crate::http::conn::{Clock, ExtraHeaders, Outgoing, Progress, RequestMemory};
use crate::http::listener::Slot;
use crate::http::pool::{self, Pool};
use crate::http::request::share_of;
use crate::http::room::{Address, Mailbox, Next, Presence, Room, Tenant, Wait, Wake};
use crate::http::{Body, BodyError, Connection, Framing, Limits, Pace, Rejection, RequestHead, Response, SendOptions};
use crate::lifecycle::{InFlight, Lifecycle};
use crate::limits::{JSON_LIMIT, STREAM_KEEP_ALIVE, STREAM_LIFETIME};
use crate::log;
use crate::precondition;
use crate::read_cache::{ReadCache, Source};
use crate::router::{self, Route};
use crate::uploads::{Allowance, Reserved, Uploads, shortage_of};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// A request body this small is read and discarded when the answer does not
/// need it, so the connection can be kept alive.
const DRAIN_LIMIT: u64 = 64 * 1024;
/// How long a work thread waits for the loop's answer to a read before it
/// parks the connection in the room: it comes within microseconds, and
/// taking it on the same thread spares two hand-overs. (Waiting so for a
/// client's next request held threads under a write flood, and made no
/// difference to reads.)
const GRACE: Duration = Duration::from_millis(2);

/// What every connection shares.
pub struct Shared {
    pub events: Sender<Event>,
    pub lifecycle: Arc<Lifecycle>,
    pub config: Arc<Config>,
    pub blobs: Blobs,
    pub limits: Limits,
    pub hashing: Arc<Hashing>,
    /// The threads PBKDF2 runs on (as many as there are hashing places:
    /// each waits there for a core in its turn).
    pub hashing_pool: Pool,
    /// The memory answers being sent may hold, all connections together.
    pub answers: MemoryBudget,
    /// The memory log entries being received may hold.
    pub entries: MemoryBudget,
    /// The memory requests still arriving in the room may hold.
    pub requests: MemoryBudget,
    /// The disk and quota room store uploads in flight hold.
    pub uploads: Uploads,
    /// Store reads answered here, as the loop answered them, until the
    /// next commit.
    pub reads: Arc<ReadCache>,
    pub room: Arc<Room<Visit>>,
}

/// One open connection, wherever it is: parked in the room or at work.
pub struct Visit {
    conn: Connection,
    peer: SocketAddr,
    shared: Arc<Shared>,
    /// The CORS headers for the Origin this connection last sent.
    cors_memo: Option<(Option<Vec<u8>>, ExtraHeaders)>,
    /// The request in progress, between its head and its answer.
    exchange: Option<Exchange>,
    /// A body arriving or an answer leaving at its client's pace.
    transfer: Option<Transfer>,
    /// When the stream this connection carries ends (SPEC §6.1).
    stream_ends: Option<Instant>,
    _presence: Presence,
}

/// A request between its head and its answer: what is needed to answer it
/// when the loop is done, on whichever thread that is.
struct Exchange {
    options: SendOptions,
    framing: Framing,
    expect_continue: bool,
    body_unread: bool,
    continue_sent: bool,
    /// The client as every per-address limit keys it.
    client: IpAddr,
    access: Option<Access>,
    /// The memory a log entry received for it holds, until its answer.
    entry_memory: Option<Held>,
    /// A read the loop answers at once (not the feed, which it may
    /// hold): its answer is worth waiting a moment for. (Also waiting for
    /// an upload's go-ahead made a store-replacing flood's p99 for others
    /// 127 ms instead of 48.)
    quick: bool,
    in_flight: InFlight,
}

/// A body or an answer that moves only as fast as its client: between
/// the pieces the connection waits in the room for its socket (holding
/// no thread), until the transfer's pace deadline.
enum Transfer {
    Receive(Box<Receiving>),
    Send(Sending),
}

/// A body arriving.
struct Receiving {
    decoder: Decoder,
    clock: Clock,
    sink: Sink,
    /// What it is, for a refusal ("store", "log entry" …).
    what: &'static str,
    then: AfterBody,
}

/// Where a body's bytes go.
enum Sink {
    Memory(Vec<u8>),
    /// A staged store file, reserving disk and quota as it grows.
    Staged {
        staging: Staging,
        reserved: Reserved,
    },
    /// A small body its answer did not need.
    Discard,
}

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Memory(body) => body.write(bytes),
            // A disk may make a write wait (dirty pages being flushed).
            Sink::Staged { staging, reserved } => pool::blocking(|| reserved.writer(staging).write(bytes)),
            Sink::Discard => Ok(bytes.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink {
    /// What was received, a staged file made durable (its reservation
    /// given back once it is).
    fn finish(self) -> io::Result<Received> {
        match self {
            Sink::Memory(body) => Ok(Received::Entry(body)),
            Sink::Staged { staging, reserved: _reserved } => pool::blocking(|| staging.finish()).map(Received::File),
            Sink::Discard => Ok(Received::Entry(Vec::new())),
        }
    }
}

/// What a whole body leads to.
enum AfterBody {
    /// The request goes to the loop with it (a JSON body), or straight to
    /// group commit (a small log entry that came with its head).
    Request(Box<Headed>),
    /// The upload the loop asked for goes to it.
    Uploaded { then: PendingWrite },
    /// The next request (a small body its answer did not need).
    Drained,
}

/// A request whose body is read before the loop sees it.
struct Headed {
    head: RequestHead,
    route: Result<Route, ApiError>,
    small_append: Option<PendingWrite>,
}

/// An answer (or a stream's events) leaving.
struct Sending {
    out: Outgoing,
    then: AfterSend,
}

/// What comes once an answer is out.
enum AfterSend {
    /// The next request, unless the connection closes; a small body left
    /// unread is discarded first (`unread`), a larger one makes it linger.
    Answered { keep_alive: bool, unread: Option<Framing>, _in_flight: InFlight },
    /// The stream's next events, or its end.
    Streamed { ends: bool },
    /// A refusal: the connection lingers closed.
    Refused,
}

/// Admits a new connection: it waits in the room for its first head.
pub fn admit(stream: TcpStream, peer: SocketAddr, slot: Slot, shared: &Arc<Shared>) {
    let presence = shared.room.presence(slot.id());
    let visit = Visit {
        conn: Connection::new(stream, shared.limits, slot, RequestMemory::new(shared.requests.clone(), peer.ip())),
        peer,
        shared: Arc::clone(shared),
        cors_memo: None,
        exchange: None,
        transfer: None,
        stream_ends: None,
        _presence: presence,
    };
    // A new connection has no mail.
    let _ = shared.room.park(visit, Wait::Request);
}

impl Tenant for Visit {
    type Message = Step;

    fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    fn connection_ref(&self) -> &Connection {
        &self.conn
    }

    /// A read answered since the last commit is answered on the room
    /// thread, sparing two hand-overs between threads: only when nothing
    /// in it can wait (no access log line, no store file to touch — a body only
    /// from the copy a work thread kept — and an answer the socket takes or
    /// the room waits for).
    fn quick(&mut self) -> Option<Next> {
        // Only a store read can be answered here: anything else is told by
        // its first bytes, before its head is parsed a second time.
        if self.shared.config.access_log || !self.conn.begins_with(&[b"GET /v1/stores/", b"HEAD /v1/stores/"]) {
            return None;
        }
        let (head, used) = self.conn.peek_head()?;
        let Ok(Route::GetStore(key)) = router::route(&head.method, &head.path) else { return None };
        if head.framing != Framing::None {
            return None;
        }
        let response = self.answer_from_cache(&head, &key, true)?;
        self.conn.take_peeked(used);
        Some(self.start(head, Some(response)))
    }

    fn resume(mut self, mut wake: Wake<Step>) {
        loop {
            let next = match wake {
                Wake::Head => self.begin(),
                Wake::Ready => self.carry_transfer(),
                // Its socket did not become ready in time: a reader that
                // takes a trickle never makes room enough for that, just
                // as a blocking write would wait in vain.
                Wake::Late if self.transfer.is_some() => self.transfer_late(),
                Wake::Late => self.refuse_head(Rejection::RequestTimeout),
                Wake::Tick => self.keep_streaming(),
                Wake::Message(step) => self.carry_on(step),
            };
            match next {
                Next::Wait(wait) => {
                    let room = Arc::clone(&self.shared.room);
                    // Only some answers come within microseconds: a commit
                    // waits for its turn, the feed may be held, and waiting
                    // for those here only holds threads (120 writers
                    // waiting so put a victim's p99 from 7 to 60 ms).
                    let quick = self.exchange.as_ref().is_some_and(|exchange| exchange.quick);
                    if let Wait::Loop { .. } = wait
                        && quick
                    {
                        pool::blocking(|| room.expect(self.conn.id(), GRACE));
                    }
                    match room.park(self, wait) {
                        Ok(()) => return,
                        Err((visit, step)) => (self, wake) = (visit, Wake::Message(step)),
                    }
                }
                Next::Head => wake = Wake::Head,
                Next::Close => return,
                Next::Linger => return Arc::clone(&self.shared.room).linger(self),
            }
        }
    }
}

impl Visit {
    /// The address the loop answers the current request at.
    fn reply(&self, head_only: bool, client: IpAddr) -> Reply {
        let mailbox: Arc<dyn Mailbox<Step>> = Arc::clone(&self.shared.room) as Arc<dyn Mailbox<Step>>;
        let to = Address { connection: self.conn.id(), number: self.conn.requests() };
        Reply::new(mailbox, to, self.shared.answers.clone(), head_only, client)
    }

    /// The CORS headers for `origin`, built once per connection and origin.
    fn cors_for(&mut self, origin: Option<&[u8]>) -> ExtraHeaders {
        match &self.cors_memo {
            Some((memo_origin, extra)) if memo_origin.as_deref() == origin => Arc::clone(extra),
            _ => {
                let extra: ExtraHeaders = cors::headers(&self.shared.config.cors_origins, origin).into();
                self.cors_memo = Some((origin.map(<[u8]>::to_vec), Arc::clone(&extra)));
                extra
            }
        }
    }

    /// A head that cannot be served (malformed, too large, or late):
    /// answered, then the connection lingers closed.
    fn refuse_head(&mut self, rejection: Rejection) -> Next {
        let options = SendOptions {
            extra: cors::headers(&self.shared.config.cors_origins, self.conn.partial_head_origin()).into(),
            ..Default::default()
        };
        let response = ApiError::from(rejection).into_response();
        if self.shared.config.access_log {
            // No head to read a method, route or forwarded address from.
            log::access(self.peer.ip(), "-", "(malformed)", response.status, response.body_len(), Duration::ZERO);
        }
        let out = self.conn.outgoing(response, &options);
        self.send(out, AfterSend::Refused)
    }

    /// A whole head has arrived: read what the loop needs with it, and
    /// hand the request to the loop.
    fn begin(&mut self) -> Next {
        match self.conn.take_head() {
            Ok(head) => self.start(head, None),
            Err(rejection) => self.refuse_head(rejection),
        }
    }

    /// Starts the exchange of `head`; `cached` is the answer the read
    /// cache gave it already.
    fn start(&mut self, head: RequestHead, cached: Option<Response>) -> Next {
        #[cfg(feature = "test-hooks")]
        let in_room = cached.is_some();
        let shared = Arc::clone(&self.shared);
        let extra = self.cors_for(head.header("origin"));
        let mut options = SendOptions { head_only: head.is_head(), keep_alive: head.keep_alive, extra };
        let (framing, expect_continue) = (head.framing, head.expect_continue);
        let route = router::route(&head.method, &head.path);
        // The client as every per-address limit keys it (an IPv6 /64; the
        // forwarded client behind a trusted proxy).
        let client = share_of(head.client_address(self.peer.ip(), &shared.config.trust_proxy));
        let access = shared.config.access_log.then(|| Access {
            address: client,
            method: head.method.clone(),
            route: route.as_ref().map_or("(no route)", Route::pattern),
            started: Instant::now(),
        });
        self.exchange = Some(Exchange {
            options: options.clone(),
            framing,
            expect_continue,
            body_unread: framing != Framing::None,
            continue_sent: false,
            client,
            access,
            entry_memory: None,
            quick: matches!(&route, Ok(route) if route.reads_only() && !matches!(route, Route::Changes)),
            in_flight: shared.lifecycle.request(),
        });
        // Behind a trusted proxy the connection counts against the client
        // it forwards, within that client's cap.
        if !self.conn.slot().speaks_for(client) {
            options.keep_alive = false;
            let out = self.conn.outgoing(ApiError::Unavailable { retry_after_secs: 1 }.into_response(), &options);
            return self.send(out, AfterSend::Refused);
        }
        if let (Ok(Route::GetStore(key)), Framing::None) = (&route, framing)
            && let Some(response) = cached.or_else(|| self.answer_from_cache(&head, key, false))
            && let Some(exchange) = self.exchange.take()
        {
            #[cfg(feature = "test-hooks")]
            shared.reads.count_answer(in_room);
            return self.answer(exchange, response);
        }
        let streams_body = matches!(&route, Ok(route) if route.streams_body());
        // SPEC §1: a declared length over the limit is refused first, before
        // authentication, and without reading the body.
        if let (Ok(route), Framing::Length(declared)) = (&route, framing)
            && route.streams_body()
            && declared > body_limit(route, &shared.config)
        {
            let what = if matches!(route, Route::AppendLog(_)) { "log entry" } else { "store" };
            return self.refuse_body(BodyError::TooLarge, what);
        }
        // A small log entry that came with its head goes straight to group
        // commit (nothing is waited for that an early answer would spare).
        let small_append = match (&route, framing) {
            (Ok(Route::AppendLog(key)), Framing::Length(n))
                if n <= api::SMALL_ENTRY && !expect_continue && self.conn.buffered() >= n =>
            {
                api::small_append(&head, key.clone())
            }
            _ => None,
        };
        let (limit, pace, what) = match small_append {
            Some(_) => (api::SMALL_ENTRY, shared.limits.transfer_pace, "log entry"),
            None if !streams_body && framing != Framing::None => {
                if expect_continue && let Some(exchange) = &mut self.exchange {
                    exchange.continue_sent = self.conn.send_continue().is_ok();
                }
                (JSON_LIMIT, Pace::Within(shared.limits.json_body_timeout), "request body")
            }
            None => return self.request_to_loop(head, route, Vec::new(), None),
        };
        let then = AfterBody::Request(Box::new(Headed { head, route, small_append }));
        self.receive(framing, limit, pace, Sink::Memory(Vec::new()), what, then)
    }

    /// A read the loop answered since the last commit, answered again here
    /// (anything out of the ordinary, even a malformed header, is the loop's).
    /// On the room thread (`in_room`) a body comes only from memory.
    fn answer_from_cache(&self, head: &RequestHead, key: &str, in_room: bool) -> Option<Response> {
        let source = match (head.is_head(), in_room) {
            (true, _) => Source::Length,
            (false, true) => Source::Kept,
            (false, false) => Source::File,
        };
        let token_hash = auth::token_hash(api::bearer_token(head)?);
        let if_none_match = match head.list_header("if-none-match").ok()? {
            Some(tags) => Some(precondition::parse_none_match(&tags).ok()?),
            None => None,
        };
        self.shared.reads.answer(&token_hash, key, if_none_match.as_ref(), clock::now_ms(), source)
    }

    /// The request, with its body, goes to the loop (or a small log entry
    /// straight to group commit).
    fn request_to_loop(
        &mut self,
        head: RequestHead,
        route: Result<Route, ApiError>,
        body: Vec<u8>,
        small_append: Option<PendingWrite>,
    ) -> Next {
        let Some(exchange) = &self.exchange else { return Next::Close };
        let reply = self.reply(exchange.options.head_only, exchange.client);
        let event = match small_append {
            Some(then) => Event::Uploaded { reply, then, received: Received::Entry(body) },
            None => Event::Request { reply, route, request: Request { head, body, peer: self.peer.ip() } },
        };
        self.hand_to_loop(event)
    }

    /// Hands an event to the loop and waits (parked) for its answer.
    fn hand_to_loop(&mut self, event: Event) -> Next {
        if self.shared.events.send(event).is_err() {
            return Next::Close;
        }
        Next::Wait(Wait::Loop { number: self.conn.requests() })
    }

    /// What the loop said next about the current request.
    fn carry_on(&mut self, step: Step) -> Next {
        match step {
            Step::Stream { events, ends, held } => self.stream(events, ends, held),
            Step::Respond(response) => match self.exchange.take() {
                Some(exchange) => self.answer(exchange, response),
                // Mail for no request: the room never delivers it.
                None => Next::Close,
            },
            Step::Receive { limit, then, allowance } => self.upload(limit, then, allowance),
            Step::Password { job, then, ticket } => {
                let Some(exchange) = &self.exchange else { return Next::Close };
                let reply = self.reply(exchange.options.head_only, exchange.client);
                let (hashing, events) = (Arc::clone(&self.shared.hashing), self.shared.events.clone());
                self.shared.hashing_pool.run(Box::new(move || {
                    let outcome = hashing.run(ticket, || job.run());
                    let _ = events.send(Event::PasswordDone { reply, then, outcome });
                }));
                Next::Wait(Wait::Loop { number: self.conn.requests() })
            }
        }
    }

    /// The loop wants the body of an upload: into memory (a log entry, made
    /// durable by the commit), or into a staged file made durable once
    /// whole, reserving its bytes within `allowance` as they arrive.
    fn upload(&mut self, limit: u64, then: PendingWrite, allowance: Option<Allowance>) -> Next {
        let Some(exchange) = &mut self.exchange else { return Next::Close };
        if exchange.expect_continue && !exchange.continue_sent {
            exchange.continue_sent = self.conn.send_continue().is_ok();
        }
        let framing = exchange.framing;
        let what = if then.in_memory() { "log entry" } else { "store" };
        // A store body has its allowance (disk and quota, reserved as it
        // arrives); a log entry has none and is held in memory.
        let sink = match allowance {
            None => {
                // Reserved before a byte is read: the declared length, or
                // the most a chunked entry may grow to.
                let most = if let Framing::Length(n) = framing { n } else { limit };
                match self.shared.entries.take(usize::try_from(most).unwrap_or(usize::MAX), exchange.client) {
                    Ok(held) => exchange.entry_memory = held,
                    Err(OverBudget) => return self.refuse_body(BodyError::NoRoom, what),
                }
                Sink::Memory(Vec::new())
            }
            Some(allowance) => {
                let declared = if let Framing::Length(n) = framing { Some(n) } else { None };
                let staged = self
                    .shared
                    .uploads
                    .reserve(allowance, declared)
                    .map_err(io::Error::other)
                    .and_then(|reserved| Ok(Sink::Staged { staging: self.shared.blobs.stage()?, reserved }));
                match staged {
                    Ok(sink) => sink,
                    Err(err) => return self.refuse_body(BodyError::Sink(err), what),
                }
            }
        };
        let pace = self.shared.limits.transfer_pace;
        self.receive(framing, limit, pace, sink, what, AfterBody::Uploaded { then })
    }

    /// Starts receiving a body (as much as has arrived; the rest as it
    /// comes).
    fn receive(
        &mut self,
        framing: Framing,
        limit: u64,
        pace: Pace,
        sink: Sink,
        what: &'static str,
        then: AfterBody,
    ) -> Next {
        let decoder = match Decoder::new(framing, limit, self.shared.limits.head.max_head) {
            Ok(decoder) => decoder,
            Err(err) => return self.refuse_body(err, what),
        };
        let clock = Clock::start(pace, Instant::now());
        self.transfer = Some(Transfer::Receive(Box::new(Receiving { decoder, clock, sink, what, then })));
        self.carry_transfer()
    }

    /// Starts sending an answer (as much as the socket takes; the rest as
    /// it does).
    fn send(&mut self, out: io::Result<Outgoing>, then: AfterSend) -> Next {
        match out {
            Ok(out) => {
                self.transfer = Some(Transfer::Send(Sending { out, then }));
                self.carry_transfer()
            }
            Err(_) => Next::Close,
        }
    }

    /// Moves the transfer on as far as its socket lets it now.
    fn carry_transfer(&mut self) -> Next {
        match self.transfer.take() {
            Some(Transfer::Receive(mut receiving)) => {
                let Receiving { decoder, clock, sink, .. } = &mut *receiving;
                match self.conn.receive(decoder, sink, clock) {
                    Ok(Progress::Done) => self.received(receiving.sink, receiving.then),
                    Ok(Progress::Blocked(due)) => {
                        self.transfer = Some(Transfer::Receive(receiving));
                        Next::Wait(Wait::Receive { due })
                    }
                    Err(_) if matches!(receiving.then, AfterBody::Drained) => Next::Close,
                    Err(err) => self.refuse_body(err, receiving.what),
                }
            }
            Some(Transfer::Send(mut sending)) => match self.conn.push(&mut sending.out) {
                Ok(Progress::Done) => self.sent(sending.then),
                Ok(Progress::Blocked(due)) => {
                    self.transfer = Some(Transfer::Send(sending));
                    Next::Wait(Wait::Send { number: self.conn.requests(), due })
                }
                Err(_) => Next::Close,
            },
            None => Next::Close,
        }
    }

    /// A transfer fell behind its pace: a body is refused with 408, an
    /// answer cut off.
    fn transfer_late(&mut self) -> Next {
        match self.transfer.take() {
            Some(Transfer::Receive(receiving)) if !matches!(receiving.then, AfterBody::Drained) => {
                self.refuse_body(BodyError::TimedOut, receiving.what)
            }
            _ => Next::Close,
        }
    }

    /// A whole body has arrived.
    fn received(&mut self, sink: Sink, then: AfterBody) -> Next {
        if let AfterBody::Drained = then {
            return self.next_request();
        }
        if let Some(exchange) = &mut self.exchange {
            exchange.body_unread = false;
        }
        let received = match sink.finish() {
            Ok(received) => received,
            Err(err) => return self.refuse_body(BodyError::Sink(err), "store"),
        };
        match (then, received) {
            (AfterBody::Request(headed), Received::Entry(body)) => {
                let Headed { head, route, small_append } = *headed;
                self.request_to_loop(head, route, body, small_append)
            }
            (AfterBody::Uploaded { then }, received) => {
                let Some(exchange) = &self.exchange else { return Next::Close };
                let reply = self.reply(exchange.options.head_only, exchange.client);
                self.hand_to_loop(Event::Uploaded { reply, then, received })
            }
            // A request's own body is read into memory, never staged.
            (AfterBody::Request(_) | AfterBody::Drained, _) => Next::Close,
        }
    }

    /// An answer is out.
    fn sent(&mut self, then: AfterSend) -> Next {
        match then {
            AfterSend::Answered { keep_alive: false, unread: Some(_), .. } | AfterSend::Refused => Next::Linger,
            AfterSend::Answered { keep_alive: false, unread: None, .. } => Next::Close,
            AfterSend::Answered { unread: Some(framing), .. } => {
                let pace = Pace::Within(self.shared.limits.drain_timeout);
                self.receive(framing, DRAIN_LIMIT, pace, Sink::Discard, "request body", AfterBody::Drained)
            }
            AfterSend::Answered { unread: None, .. } => self.next_request(),
            AfterSend::Streamed { ends: true } => Next::Close,
            AfterSend::Streamed { ends: false } => self.wait_for_events(),
        }
    }

    /// Writes the answer, then keeps the connection for the next request
    /// or closes it.
    fn answer(&mut self, exchange: Exchange, response: Response) -> Next {
        let Exchange { mut options, framing, expect_continue, body_unread, continue_sent, access, in_flight, .. } =
            exchange;
        // An answer given without the body (401, 404, 412 …) goes out at
        // once. A small body is then discarded so the connection can be
        // kept; a large one closes it. A server shutting down closes each
        // connection after its answer.
        let drain = body_unread
            && matches!(framing, Framing::Length(n) if n <= DRAIN_LIMIT)
            && (!expect_continue || continue_sent);
        options.keep_alive &= (!body_unread || drain) && !self.shared.lifecycle.stopping() && !self.conn.worn_out();
        let (status, bytes) = (response.status, sent_bytes(&response, &options));
        drop(exchange.entry_memory);
        if let Some(access) = &access {
            access.log(status, bytes);
        }
        let out = self.conn.outgoing(response, &options);
        let unread = body_unread.then_some(framing);
        self.send(out, AfterSend::Answered { keep_alive: options.keep_alive, unread, _in_flight: in_flight })
    }

    /// Events of the stream this request asked for: the first begin the
    /// answer (which closes the connection when the stream ends); those
    /// that come while earlier ones are still being sent follow them.
    fn stream(&mut self, events: Vec<u8>, ends: bool, held: Option<Held>) -> Next {
        if let Some(Transfer::Send(sending)) = &mut self.transfer {
            sending.out.append(events, held);
            if ends {
                sending.then = AfterSend::Streamed { ends: true };
            }
            return self.carry_transfer();
        }
        let out = match self.exchange.take() {
            Some(exchange) => {
                let mut options = exchange.options;
                options.keep_alive = false;
                let response = Response::new(200)
                    .with_header("Content-Type", "text/event-stream")
                    .with_header("Cache-Control", "no-store")
                    .with_header("X-Accel-Buffering", "no")
                    .with_body(Body::Stream(events))
                    .holding(held);
                if let Some(access) = &exchange.access {
                    access.log(200, response.body_len());
                }
                self.stream_ends = Some(Instant::now() + STREAM_LIFETIME);
                self.conn.outgoing(response, &options)
            }
            None if self.stream_ends.is_some() => Ok(self.conn.outgoing_bytes(events, held)),
            None => return Next::Close,
        };
        self.send(out, AfterSend::Streamed { ends })
    }

    /// A stream between events: a comment after a silence, or its end
    /// when its time is up (the connection closes, the answer's end).
    fn keep_streaming(&mut self) -> Next {
        match self.stream_ends {
            Some(ends) if Instant::now() < ends => {
                let out = self.conn.outgoing_bytes(b": keep-alive\n\n".to_vec(), None);
                self.send(Ok(out), AfterSend::Streamed { ends: false })
            }
            _ => Next::Close,
        }
    }

    fn wait_for_events(&self) -> Next {
        let ends = self.stream_ends.unwrap_or_else(Instant::now);
        let tick = (Instant::now() + STREAM_KEEP_ALIVE).min(ends);
        Next::Wait(Wait::Stream { number: self.conn.requests(), tick })
    }

    /// After an answer: take the next head at once if it came with this
    /// one (pipelined), else wait for it in the room. The socket is not
    /// asked: readiness tells of what arrived since without a system call
    /// that would mostly find nothing.
    fn next_request(&mut self) -> Next {
        if self.conn.head_buffered() { Next::Head } else { Next::Wait(Wait::Request) }
    }

    /// Answers a body that could not (or will not) be read, if the client
    /// can still hear it, and closes the connection.
    fn refuse_body(&mut self, err: BodyError, what: &'static str) -> Next {
        let Some(exchange) = self.exchange.take() else { return Next::Close };
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
            BodyError::Socket(_) => return Next::Close,
        };
        let mut options = exchange.options;
        options.keep_alive = false;
        let response: Response = error.into_response();
        if let Some(access) = &exchange.access {
            access.log(response.status, sent_bytes(&response, &options));
        }
        let out = self.conn.outgoing(response, &options);
        self.send(out, AfterSend::Refused)
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
