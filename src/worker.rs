//! One connection's life as a state machine. Where it waits (for a head,
//! for the loop, for its stream's next event, lingering) it is parked in
//! the waiting room ([`Room`]) and holds no thread; when there is work —
//! a head to parse, a body to read, an answer to write — a work thread
//! takes it, does that phase under its deadline, and parks it again:
//!
//! ```text
//!   Request ──head──▶ [parse, JSON body] ──event──▶ Loop ──Respond──▶ [answer] ──▶ Request
//!      │                                             │  ▲                  │
//!      └─late: 408──▶ Linger                 Receive │  │ Uploaded         └─close──▶ Linger
//!                                      Password ─────▼──┘
//!                                            [body / PBKDF2 pool]
//! ```
//!
//! Phases with their deadlines: a head 10 s from its first byte (the
//! room), a JSON body 10 s, a store or log body and an answer a sliding
//! 4 KiB/s after 10 s (on the work thread), waiting for the loop none (a
//! hang-up ends it; the loop bounds its long-polls), the next request the
//! idle timeout, lingering 2 s.

use crate::api::{self, JSON_LIMIT, Received};
use crate::api::{Event, Reply, Request, Step};
use crate::blobs::Blobs;
use crate::config::Config;
use crate::cors;
use crate::error::{ApiError, Shortage, is_out_of_space};
use crate::hashing::Hashing;
use crate::http::budget::{Held, MemoryBudget, OverBudget};
use crate::http::conn::{ExtraHeaders, Filled};
use crate::http::listener::Slot;
use crate::http::pool::Pool;
use crate::http::request::share_of;
use crate::http::room::{Address, Mailbox, Presence, Room, Tenant, Wait, Wake};
use crate::http::{Body, BodyError, Connection, Framing, Limits, Pace, Rejection, Response, SendOptions};
use crate::lifecycle::{InFlight, Lifecycle};
use crate::log;
use crate::router::{self, Route};
use crate::uploads::{Allowance, Uploads, shortage_of};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// A request body this small is read and discarded when the answer does not
/// need it, so the connection can be kept alive.
const DRAIN_LIMIT: u64 = 64 * 1024;
/// How long discarding such a body may take before the connection is closed.
const DRAIN_PACE: Pace = Pace::Within(Duration::from_secs(2));
/// A JSON body must arrive within this long of its head (SPEC §1).
const JSON_PACE: Pace = Pace::Within(Duration::from_secs(10));
/// How long a work thread waits for the loop's answer to a read before it
/// parks the connection in the room: it comes within microseconds, and
/// taking it on the same thread spares two hand-overs. (Waiting so for a
/// client's next request held threads under a write flood, and made no
/// difference to reads.)
const GRACE: Duration = Duration::from_millis(2);
/// A stream that has been silent this long gets a comment (SPEC §6.1).
const KEEP_ALIVE: Duration = Duration::from_secs(25);
/// How long a stream lasts; then it ends cleanly and its client resumes.
const STREAM_LIFETIME: Duration = crate::api::STREAM_LIFETIME;
/// A store or log body must arrive at 4 KiB/s or more once 10 s have
/// passed, sliding: bytes sent early buy at most 30 s (far less than the 10
/// minutes after which `sync-node check --repair` takes a staged file for
/// a leftover).
const UPLOAD_PACE: Pace =
    Pace::AtLeast { grace: Duration::from_secs(10), bytes_per_second: 4096, most_ahead: Duration::from_secs(30) };

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
    /// The disk and quota room store uploads in flight hold.
    pub uploads: Uploads,
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
    _in_flight: InFlight,
}

/// What comes after a phase.
enum Next {
    /// Park until this comes.
    Wait(Wait),
    /// A whole head is buffered already: take it now.
    Head,
    /// Close at once (nothing to say, or the client is gone).
    Close,
    /// Close after the answer just written, reading what the client still sends.
    Linger,
}

/// Admits a new connection: it waits in the room for its first head.
pub fn admit(stream: TcpStream, peer: SocketAddr, slot: Slot, shared: &Arc<Shared>) {
    let presence = shared.room.presence(slot.id());
    let visit = Visit {
        conn: Connection::new(stream, shared.limits, slot),
        peer,
        shared: Arc::clone(shared),
        cors_memo: None,
        exchange: None,
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

    fn resume(mut self, mut wake: Wake<Step>) {
        loop {
            let next = match wake {
                Wake::Head => self.begin(),
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
                        room.expect(self.conn.id(), GRACE);
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
        match self.conn.send(response, &options) {
            Ok(()) => Next::Linger,
            Err(_) => Next::Close,
        }
    }

    /// A whole head has arrived: read what the loop needs with it, and
    /// hand the request to the loop.
    fn begin(&mut self) -> Next {
        let head = match self.conn.take_head() {
            Ok(head) => head,
            Err(rejection) => return self.refuse_head(rejection),
        };
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
        let mut exchange = Exchange {
            options: options.clone(),
            framing,
            expect_continue,
            body_unread: framing != Framing::None,
            continue_sent: false,
            client,
            access,
            entry_memory: None,
            quick: matches!(&route, Ok(route) if route.reads_only() && !matches!(route, Route::Changes)),
            _in_flight: shared.lifecycle.request(),
        };
        // Behind a trusted proxy the connection counts against the client
        // it forwards, within that client's cap.
        if !self.conn.slot().speaks_for(client) {
            options.keep_alive = false;
            let _ = self.conn.send(ApiError::Unavailable { retry_after_secs: 1 }.into_response(), &options);
            return Next::Linger;
        }
        let streams_body = matches!(&route, Ok(route) if route.streams_body());
        // SPEC §1: a declared length over the limit is refused first, before
        // authentication, and without reading the body.
        if let (Ok(route), Framing::Length(declared)) = (&route, framing)
            && route.streams_body()
            && declared > body_limit(route, &shared.config)
        {
            let what = if matches!(route, Route::AppendLog(_)) { "log entry" } else { "store" };
            return self.refuse_body(exchange, BodyError::TooLarge, what);
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
        let mut body = Vec::new();
        if small_append.is_some() {
            match self.conn.read_body(framing, api::SMALL_ENTRY, UPLOAD_PACE) {
                Ok(bytes) => body = bytes,
                Err(err) => return self.refuse_body(exchange, err, "log entry"),
            }
            exchange.body_unread = false;
        } else if !streams_body && exchange.body_unread {
            if expect_continue {
                exchange.continue_sent = self.conn.send_continue().is_ok();
            }
            match self.conn.read_body(framing, JSON_LIMIT, JSON_PACE) {
                Ok(bytes) => body = bytes,
                Err(err) => return self.refuse_body(exchange, err, "request body"),
            }
            exchange.body_unread = false;
        }
        let reply = self.reply(options.head_only, client);
        let event = match small_append {
            Some(then) => Event::Uploaded { reply, then, received: Received::Entry(body) },
            None => Event::Request { reply, route, request: Request { head, body, peer: self.peer.ip() } },
        };
        self.exchange = Some(exchange);
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
        if let Step::Stream { events, ends, held } = step {
            return self.stream(events, ends, held);
        }
        let Some(mut exchange) = self.exchange.take() else {
            // Mail for no request: the room never delivers it.
            return Next::Close;
        };
        match step {
            Step::Stream { .. } => unreachable!("taken above"),
            Step::Respond(response) => self.answer(exchange, response),
            Step::Receive { limit, then, allowance } => {
                if exchange.expect_continue && !exchange.continue_sent {
                    exchange.continue_sent = self.conn.send_continue().is_ok();
                }
                let what = if then.in_memory() { "log entry" } else { "store" };
                if then.in_memory() {
                    // Reserved before a byte is read: the declared
                    // length, or the most a chunked entry may grow to.
                    let most = if let Framing::Length(n) = exchange.framing { n } else { limit };
                    match self.shared.entries.take(usize::try_from(most).unwrap_or(usize::MAX), exchange.client) {
                        Ok(held) => exchange.entry_memory = held,
                        Err(OverBudget) => return self.refuse_body(exchange, BodyError::NoRoom, what),
                    }
                }
                match receive(&mut self.conn, exchange.framing, limit, allowance, &self.shared) {
                    Ok(received) => {
                        exchange.body_unread = false;
                        let reply = self.reply(exchange.options.head_only, exchange.client);
                        self.exchange = Some(exchange);
                        self.hand_to_loop(Event::Uploaded { reply, then, received })
                    }
                    Err(err) => self.refuse_body(exchange, err, what),
                }
            }
            Step::Password { job, then, ticket } => {
                let reply = self.reply(exchange.options.head_only, exchange.client);
                let (hashing, events) = (Arc::clone(&self.shared.hashing), self.shared.events.clone());
                self.shared.hashing_pool.run(Box::new(move || {
                    let outcome = hashing.run(ticket, || job.run());
                    let _ = events.send(Event::PasswordDone { reply, then, outcome });
                }));
                self.exchange = Some(exchange);
                Next::Wait(Wait::Loop { number: self.conn.requests() })
            }
        }
    }

    /// Writes the answer, then keeps the connection for the next request
    /// or closes it.
    fn answer(&mut self, exchange: Exchange, response: Response) -> Next {
        let Exchange { mut options, framing, expect_continue, body_unread, continue_sent, access, .. } = exchange;
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
        let sent = self.conn.send(response, &options);
        if let Some(access) = &access {
            access.log(status, bytes);
        }
        drop(exchange._in_flight);
        if sent.is_err() {
            return Next::Close;
        }
        if !options.keep_alive {
            return if body_unread { Next::Linger } else { Next::Close };
        }
        if body_unread && self.conn.copy_body(framing, DRAIN_LIMIT, &mut io::sink(), DRAIN_PACE).is_err() {
            return Next::Close;
        }
        self.next_request()
    }

    /// Events of the stream this request asked for: the first begin the
    /// answer (which closes the connection when the stream ends).
    fn stream(&mut self, events: Vec<u8>, ends: bool, held: Option<Held>) -> Next {
        let sent = match self.exchange.take() {
            Some(exchange) => {
                let mut options = exchange.options;
                options.keep_alive = false;
                let response = Response::new(200)
                    .with_header("Content-Type", "text/event-stream")
                    .with_header("Cache-Control", "no-store")
                    .with_header("X-Accel-Buffering", "no")
                    .with_body(Body::Stream(events));
                if let Some(access) = &exchange.access {
                    access.log(200, response.body_len());
                }
                self.stream_ends = Some(Instant::now() + STREAM_LIFETIME);
                self.conn.send(response, &options)
            }
            None if self.stream_ends.is_some() => self.conn.send_more(&events),
            None => return Next::Close,
        };
        drop(held);
        match sent {
            Ok(()) if !ends => self.wait_for_events(),
            _ => Next::Close,
        }
    }

    /// A stream between events: a comment after a silence, or its end
    /// when its time is up (the connection closes, the answer's end).
    fn keep_streaming(&mut self) -> Next {
        match self.stream_ends {
            Some(ends) if Instant::now() < ends && self.conn.send_more(b": keep-alive\n\n").is_ok() => {
                self.wait_for_events()
            }
            _ => Next::Close,
        }
    }

    fn wait_for_events(&self) -> Next {
        let ends = self.stream_ends.unwrap_or_else(Instant::now);
        let tick = (Instant::now() + KEEP_ALIVE).min(ends);
        Next::Wait(Wait::Stream { number: self.conn.requests(), tick })
    }

    /// After an answer: take the next head at once if it is already here
    /// (pipelined), else wait for it in the room.
    fn next_request(&mut self) -> Next {
        match self.conn.fill() {
            Filled::Head => Next::Head,
            Filled::Closed => Next::Close,
            Filled::Partial | Filled::Body | Filled::Nothing => Next::Wait(Wait::Request),
        }
    }

    /// Answers a body that could not (or will not) be read, if the client
    /// can still hear it, and closes the connection.
    fn refuse_body(&mut self, exchange: Exchange, err: BodyError, what: &'static str) -> Next {
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
        let (status, bytes) = (response.status, sent_bytes(&response, &options));
        let sent = self.conn.send(response, &options);
        if let Some(access) = &exchange.access {
            access.log(status, bytes);
        }
        if sent.is_ok() { Next::Linger } else { Next::Close }
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
