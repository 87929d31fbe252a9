//! The byte work on one connection, never waiting: reading what has
//! arrived of a head, of a body (through its [`Decoder`], into a sink, at a
//! pace), writing what the socket takes of an answer, a file or a stream's
//! events (an [`Outgoing`], at a pace), and discarding what a closing
//! connection's client still sends. When the socket has nothing (or takes
//! nothing) more, the caller parks the connection in the room until it
//! does or the pace's deadline passes: a slow client holds no thread.

use super::body::Decoder;
use super::budget::{Held, MemoryBudget};
use super::listener::Slot;
use super::rejection::Rejection;
use super::request::{self, Framing, HeadLimits, Parsed, RequestHead};
use super::response::{Body, Response};
use crate::limits::{
    DRAIN_TIMEOUT, HEAD_TIMEOUT, IDLE_TIMEOUT, JSON_BODY_TIMEOUT, MAX_HEAD, MAX_HEAD_LINE, MAX_HEADERS, MAX_LIFETIME,
    MAX_REQUESTS, TRANSFER_GRACE, TRANSFER_MOST_AHEAD, TRANSFER_PACE, UNCOUNTED_REQUEST,
};
use rustix::fd::BorrowedFd;
use rustix::net::{RecvFlags, SendFlags, recv, send};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Transfer unit for bodies and files.
const CHUNK: usize = 64 * 1024;

/// Limits and deadlines of one connection (the room, the work threads and
/// the tests take them from here); the values are `crate::limits`'.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub head: HeadLimits,
    /// From the first byte of a head to its blank line (slowloris).
    pub head_timeout: Duration,
    /// How long a connection may wait for its next request (kept alive,
    /// or new).
    pub idle_timeout: Duration,
    /// A small JSON body, from its head to its last byte (SPEC §1).
    pub json_body_timeout: Duration,
    /// How fast a store or log body must arrive and an answer be taken
    /// (SPEC §1): a client slower than this gets 408 (a body) or is cut
    /// off (an answer), and what the transfer held is freed. Bytes sent
    /// early buy at most `most_ahead` (far less than the 10 minutes after
    /// which `sync-node check --repair` takes a staged file for a
    /// leftover).
    pub transfer_pace: Pace,
    /// How long discarding a small body the answer did not need may take
    /// before the connection is closed instead of kept.
    pub drain_timeout: Duration,
    /// Whether a request's small body is read with its head, before the
    /// request is handled: not for a route that can be answered before
    /// its body (an upload refused by its head alone is answered at once,
    /// SPEC §1). The router decides; this layer does not know routes.
    pub reads_body_first: fn(&RequestHead) -> bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head: HeadLimits { max_line: MAX_HEAD_LINE, max_head: MAX_HEAD, max_headers: MAX_HEADERS },
            head_timeout: HEAD_TIMEOUT,
            reads_body_first: |_| true,
            idle_timeout: IDLE_TIMEOUT,
            json_body_timeout: JSON_BODY_TIMEOUT,
            transfer_pace: Pace::AtLeast {
                grace: TRANSFER_GRACE,
                bytes_per_second: TRANSFER_PACE,
                most_ahead: TRANSFER_MOST_AHEAD,
            },
            drain_timeout: DRAIN_TIMEOUT,
        }
    }
}

/// A request body this small (a JSON body, a small log entry) is read in
/// the waiting room, with its head, before a work thread takes the
/// request: a client that sends it slowly holds no thread. (Not when the
/// client waits for `100 Continue` before sending it.)
const BUFFERED_BODY: usize = 64 * 1024;
/// What chunk sizes and a trailer may add to such a body.
const CHUNKED_SLACK: usize = 16 * 1024;

/// The most a closed connection reads and discards while it lingers.
const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// What reading without waiting found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    /// The client closed (or broke) the connection.
    Closed,
    /// A whole head is buffered (or one that can only be refused), with
    /// its body if that is small.
    Head,
    /// Bytes of a head arrived, not all of it yet.
    Partial,
    /// The head is whole; its small body is still arriving.
    Body,
    /// Nothing new.
    Nothing,
}

/// How fast a body must arrive, or an answer be taken (SPEC §1, "Slow
/// clients").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// All of it within this long (JSON bodies, bodies drained unread).
    Within(Duration),
    /// A sliding minimum rate: the first `grace` is free, and every byte
    /// earns `1 / bytes_per_second` more, but never more than
    /// `most_ahead` beyond the present. So after the grace, every stretch
    /// of time must carry at least its length less `most_ahead` times
    /// the rate: bytes sent fast at first buy no more than `most_ahead` of
    /// silence later (store and log bodies, answers).
    AtLeast { grace: Duration, bytes_per_second: u64, most_ahead: Duration },
}

/// The instant by which a body's (or an answer's) next byte must move.
#[derive(Debug)]
pub struct Clock {
    pace: Pace,
    due: Instant,
}

impl Clock {
    pub fn start(pace: Pace, now: Instant) -> Clock {
        let due = match pace {
            Pace::Within(limit) => now + limit,
            Pace::AtLeast { grace, .. } => now + grace,
        };
        Clock { pace, due }
    }

    /// `bytes` moved at `now`.
    fn progress(&mut self, bytes: usize, now: Instant) {
        if let Pace::AtLeast { bytes_per_second, most_ahead, .. } = self.pace {
            let earned = Duration::from_secs_f64(bytes as f64 / bytes_per_second.max(1) as f64);
            self.due = (self.due + earned).min(now + most_ahead).max(self.due);
        }
    }

    /// Waiting for more until the deadline; `None` when it has passed.
    fn blocked(&self) -> Option<Progress> {
        (Instant::now() < self.due).then_some(Progress::Blocked(self.due))
    }
}

/// How much of a request to buffer before it is handed over.
enum Wanted {
    /// All of it is here (or there is nothing more to wait for).
    All,
    /// Up to this many bytes for a head still arriving.
    Head(usize),
    /// The head is whole: its small body ends at this many bytes.
    Body(usize),
}

/// Why reading a body failed.
#[derive(Debug)]
pub enum BodyError {
    TooLarge,
    Malformed,
    /// It fell behind its pace: answer 408 and close.
    TimedOut,
    /// No memory is left to hold it now: answer 503 and close.
    NoRoom,
    /// The peer vanished or stalled; the connection is unusable.
    Socket(io::Error),
    /// Writing to the sink failed (e.g. a full disk).
    Sink(io::Error),
}

/// Headers added to every answer on a connection, shared between answers.
pub type ExtraHeaders = Arc<[(&'static str, String)]>;

/// How an answer is sent.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    pub head_only: bool,
    pub keep_alive: bool,
    /// Headers every answer on this connection carries (CORS and the like),
    /// shared so a kept-alive connection builds them once.
    pub extra: ExtraHeaders,
}

/// The memory a request still arriving in the room may hold: what its
/// buffer holds beyond [`UNCOUNTED_REQUEST`] bytes is taken from the
/// budget for its client address until a work thread takes the head.
pub struct RequestMemory {
    budget: MemoryBudget,
    address: IpAddr,
    held: Option<Held>,
    /// The budget could not take what the request needs: it is refused.
    refused: bool,
}

impl RequestMemory {
    pub fn new(budget: MemoryBudget, address: IpAddr) -> RequestMemory {
        RequestMemory { budget, address: request::share_of(address), held: None, refused: false }
    }

    /// Whether `bytes` may be buffered.
    fn allows(&mut self, bytes: usize) -> bool {
        let counted = bytes.saturating_sub(UNCOUNTED_REQUEST);
        self.refused = self.budget.extend(&mut self.held, counted, self.address).is_err();
        !self.refused
    }
}

pub struct Connection {
    stream: TcpStream,
    memory: RequestMemory,
    /// Its place among the open connections: says when it is idle.
    slot: Slot,
    /// Requests read so far (after the first, a wait is a keep-alive one).
    requests: u64,
    opened: Instant,
    /// Bytes received but not consumed yet (pipelined requests, body start).
    pending: Vec<u8>,
    limits: Limits,
    /// Bytes discarded while lingering.
    discarded: usize,
}

impl Connection {
    pub fn new(stream: TcpStream, limits: Limits, slot: Slot, memory: RequestMemory) -> Self {
        Connection {
            stream,
            memory,
            slot,
            requests: 0,
            opened: Instant::now(),
            pending: Vec::new(),
            limits,
            discarded: 0,
        }
    }

    /// The connection's id, for as long as it is open (never reused).
    pub fn id(&self) -> u64 {
        self.slot.id()
    }

    /// The socket, to wait for readiness on.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// Reads what has arrived, without waiting, until a whole head is
    /// buffered (or more than a head may hold). A request whose bytes the
    /// request memory cannot take is handed over at once, to be refused.
    pub fn fill(&mut self) -> Filled {
        let mut got = false;
        loop {
            let (wanted, head_whole) = match self.wanted() {
                Wanted::All => return Filled::Head,
                Wanted::Head(total) => (total, false),
                Wanted::Body(total) => (total, true),
            };
            // Read into the stack first (not zeroed: rustix hands back only
            // what was read), so the request memory is asked before any of
            // it is kept.
            let mut chunk = [MaybeUninit::<u8>::uninit(); 16 * 1024];
            let want = wanted.saturating_sub(self.pending.len()).clamp(1, chunk.len());
            match recv(&self.stream, &mut chunk[..want], RecvFlags::DONTWAIT) {
                Ok((([], _), _)) => return Filled::Closed,
                Ok(((read, _), _)) if !self.memory.allows(self.pending.len() + read.len()) => return Filled::Head,
                Ok(((read, _), _)) => {
                    self.pending.extend_from_slice(read);
                    got = true;
                }
                Err(rustix::io::Errno::AGAIN) if head_whole => return Filled::Body,
                Err(rustix::io::Errno::AGAIN) => return if got { Filled::Partial } else { Filled::Nothing },
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return Filled::Closed,
            }
        }
    }

    /// Whether what is buffered already is a whole head for a work
    /// thread (as [`Connection::fill`] would find it).
    pub fn head_buffered(&self) -> bool {
        matches!(self.wanted(), Wanted::All)
    }

    /// How much of the next request should be buffered before a work
    /// thread takes it.
    fn wanted(&self) -> Wanted {
        let partial_head = Wanted::Head(self.limits.head.max_head + 1);
        if self.pending.is_empty() {
            return partial_head;
        }
        let (head, used) = match request::parse(&self.pending, self.limits.head) {
            Ok(Parsed::Complete(head, used)) => (head, used),
            Ok(Parsed::Partial) => return partial_head,
            // A head that can only be refused: refuse it now.
            Err(_) => return Wanted::All,
        };
        match head.framing {
            _ if head.expect_continue || !(self.limits.reads_body_first)(&head) => Wanted::All,
            Framing::Length(n) if n <= BUFFERED_BODY as u64 => {
                let total = used + n as usize;
                if self.pending.len() >= total { Wanted::All } else { Wanted::Body(total) }
            }
            Framing::Chunked => {
                let most = used + BUFFERED_BODY + CHUNKED_SLACK;
                match request::chunked_length(&self.pending[used..]) {
                    Ok(None) if self.pending.len() < most => Wanted::Body(most),
                    _ => Wanted::All,
                }
            }
            _ => Wanted::All,
        }
    }

    /// Stops sending (the start of a lingering close).
    pub fn shut_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        self.pending = Vec::new();
    }

    /// Reads and discards what a lingering connection's client sends,
    /// without waiting; `false` once it is done (closed, or it sent too
    /// much).
    pub fn discard(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match recv(&self.stream, &mut chunk, RecvFlags::DONTWAIT) {
                Ok((0, _)) => return false,
                Ok((n, _)) => {
                    self.discarded += n;
                    if self.discarded >= LINGER_BYTES {
                        return false;
                    }
                }
                Err(rustix::io::Errno::AGAIN) => return true,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return false,
            }
        }
    }

    /// Takes the head buffered (once [`Connection::fill`] found it
    /// whole); one refused, or still partial when its time is up, is the
    /// rejection to answer.
    pub fn take_head(&mut self) -> Result<RequestHead, Rejection> {
        // What the request memory held moves to a work thread's care.
        self.memory.held = None;
        if std::mem::take(&mut self.memory.refused) {
            return Err(Rejection::NoRoom);
        }
        match request::parse(&self.pending, self.limits.head)? {
            Parsed::Complete(head, used) => {
                self.take_peeked(used);
                Ok(head)
            }
            Parsed::Partial => Err(Rejection::RequestTimeout),
        }
    }

    /// Whether what is buffered begins with one of `prefixes` (told
    /// before anything is parsed).
    pub fn begins_with(&self, prefixes: &[&[u8]]) -> bool {
        prefixes.iter().any(|prefix| self.pending.starts_with(prefix))
    }

    /// The whole head buffered, parsed but left in place with its length
    /// (`None` if it can only be refused, or is not whole).
    pub fn peek_head(&self) -> Option<(RequestHead, usize)> {
        if self.memory.refused {
            return None;
        }
        match request::parse(&self.pending, self.limits.head) {
            Ok(Parsed::Complete(head, used)) => Some((head, used)),
            Ok(Parsed::Partial) | Err(_) => None,
        }
    }

    /// Takes the head [`Connection::peek_head`] found, `used` bytes long.
    pub fn take_peeked(&mut self, used: usize) {
        self.memory.held = None;
        self.pending.drain(..used);
        if self.pending.is_empty() {
            // An idle connection holds no buffer.
            self.pending = Vec::new();
        }
        self.requests += 1;
        self.slot.busy();
    }

    /// Requests taken so far on this connection: the number of the
    /// current one.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The `Origin` of a head that was refused before it was parsed (for
    /// its CORS headers), as far as it arrived.
    pub fn partial_head_origin(&self) -> Option<&[u8]> {
        request::origin_in_partial_head(&self.pending)
    }

    /// Whether it has served its most requests or lived its longest: it
    /// closes after this answer.
    pub fn worn_out(&self) -> bool {
        self.requests >= MAX_REQUESTS || self.opened.elapsed() >= MAX_LIFETIME
    }

    /// Its place among the open connections.
    pub fn slot(&self) -> &Slot {
        &self.slot
    }

    /// Bytes received after the last head and not read yet (the start of
    /// a body, or a pipelined request).
    pub fn buffered(&self) -> u64 {
        self.pending.len() as u64
    }

    /// Sends `100 Continue` when the client waits for it before its body
    /// (without waiting: an empty socket always takes it; `Err` if not).
    pub fn send_continue(&mut self) -> io::Result<()> {
        let line = b"HTTP/1.1 100 Continue\r\n\r\n";
        match send(&self.stream, line, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
            Ok(n) if n == line.len() => Ok(()),
            Ok(_) => Err(io::ErrorKind::WriteZero.into()),
            Err(err) => Err(err.into()),
        }
    }

    /// Reads what has arrived of a body, without waiting, through
    /// `decoder` into `sink`, at `clock`'s pace: `Done` once the body is
    /// whole; `Blocked` when more is due (the connection waits for its
    /// socket in the room until then).
    pub fn receive(
        &mut self,
        decoder: &mut Decoder,
        sink: &mut impl Write,
        clock: &mut Clock,
    ) -> Result<Progress, BodyError> {
        loop {
            decoder.feed(&mut self.pending, sink)?;
            if decoder.is_done() {
                if self.pending.is_empty() {
                    self.pending = Vec::new();
                }
                return Ok(Progress::Done);
            }
            self.pending.reserve(CHUNK);
            match recv(&self.stream, rustix::buffer::spare_capacity(&mut self.pending), RecvFlags::DONTWAIT) {
                Ok((0, _)) => return Err(BodyError::Socket(io::ErrorKind::UnexpectedEof.into())),
                Ok((n, _)) => clock.progress(n, Instant::now()),
                Err(rustix::io::Errno::AGAIN) => {
                    // A body that waits holds no buffer (only a line begun).
                    if self.pending.is_empty() {
                        self.pending = Vec::new();
                    } else {
                        self.pending.shrink_to_fit();
                    }
                    return clock.blocked().ok_or(BodyError::TimedOut);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(err) => return Err(BodyError::Socket(err.into())),
            }
        }
    }

    /// An answer to write with [`Connection::push`]: its head with a small
    /// body (or a small file) in one piece, a larger body after it.
    pub fn outgoing(&self, response: Response, options: &SendOptions) -> io::Result<Outgoing> {
        let mut head = Vec::with_capacity(512);
        response.write_head(&mut head, &options.extra, options.keep_alive);
        let (body, held) = response.into_body();
        let mut out = Outgoing::new(self.limits.transfer_pace, held);
        match body {
            _ if options.head_only => out.append(head, None),
            Body::Bytes(bytes) | Body::Stream(bytes) if bytes.len() <= CHUNK => {
                head.extend_from_slice(&bytes);
                out.append(head, None);
            }
            Body::Bytes(bytes) | Body::Stream(bytes) => {
                out.append(head, None);
                out.append(bytes, None);
            }
            // A small file goes out with its head in one write (one TCP
            // segment), read with one system call.
            Body::File { file, len } if len <= CHUNK as u64 => {
                let at = head.len();
                head.resize(at + len as usize, 0);
                file.read_exact_at(&mut head[at..], 0)?;
                out.append(head, None);
            }
            Body::File { file, len } => {
                out.append(head, None);
                out.pieces.push_back(Piece::File { file, offset: 0, end: len });
            }
            Body::Empty | Body::Unsent(_) => out.append(head, None),
        }
        Ok(out)
    }

    /// More of a stream (its events, a keep-alive comment) to write with
    /// [`Connection::push`], holding `held` until it is out.
    pub fn outgoing_bytes(&self, bytes: Vec<u8>, held: Option<Held>) -> Outgoing {
        let mut out = Outgoing::new(self.limits.transfer_pace, None);
        out.append(bytes, held);
        out
    }

    /// Writes what the socket takes now of `out`, without waiting: `Done`
    /// once all of it is out; `Blocked` when the client has not taken
    /// enough (the connection waits for its socket in the room); `TimedOut`
    /// when it fell behind the pace. A file is read again from where the
    /// client stopped, so a waiting answer holds no buffer of it.
    pub fn push(&mut self, out: &mut Outgoing) -> io::Result<Progress> {
        let mut scratch = Vec::new();
        loop {
            let bytes: &[u8] = match out.pieces.front_mut() {
                None => {
                    out.held.clear();
                    return Ok(Progress::Done);
                }
                Some(Piece::Bytes { bytes, at }) if *at >= bytes.len() => {
                    out.pieces.pop_front();
                    continue;
                }
                Some(Piece::File { offset, end, .. }) if *offset >= *end => {
                    out.pieces.pop_front();
                    continue;
                }
                Some(Piece::Bytes { bytes, at }) => &bytes[*at..],
                Some(Piece::File { file, offset, end }) => {
                    scratch.resize(CHUNK.min((*end - *offset) as usize), 0);
                    // A large file's pieces may have to come from the disk.
                    super::pool::blocking(|| file.read_exact_at(&mut scratch, *offset))?;
                    &scratch
                }
            };
            match send(&self.stream, bytes, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    out.clock.progress(n, Instant::now());
                    match out.pieces.front_mut() {
                        Some(Piece::Bytes { at, .. }) => *at += n,
                        Some(Piece::File { offset, .. }) => *offset += n as u64,
                        None => {}
                    }
                }
                Err(rustix::io::Errno::AGAIN) => {
                    return out.clock.blocked().ok_or_else(|| io::ErrorKind::TimedOut.into());
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// What a transfer that does not wait got done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All of it came (or went).
    Done,
    /// More is due: wait for the socket, until this deadline of the pace.
    Blocked(Instant),
}

/// An answer (or a stream's events) being written: what is left of it in
/// order, its pace, and the answers' memory it holds until it is out.
#[derive(Debug)]
pub struct Outgoing {
    pieces: VecDeque<Piece>,
    clock: Clock,
    held: Vec<Held>,
}

#[derive(Debug)]
enum Piece {
    Bytes { bytes: Vec<u8>, at: usize },
    File { file: Arc<File>, offset: u64, end: u64 },
}

impl Outgoing {
    fn new(pace: Pace, held: Option<Held>) -> Outgoing {
        Outgoing {
            pieces: VecDeque::new(),
            clock: Clock::start(pace, Instant::now()),
            held: held.into_iter().collect(),
        }
    }

    /// More to write after what is queued (a stream's next events).
    pub fn append(&mut self, bytes: Vec<u8>, held: Option<Held>) {
        if !bytes.is_empty() {
            self.pieces.push_back(Piece::Bytes { bytes, at: 0 });
        }
        self.held.extend(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::listener::Caps;
    use crate::http::listener::tests::fixture;
    use std::net::TcpListener;

    #[test]
    fn deadlines_follow_the_pace_and_early_bytes_buy_little_later() {
        let start = Instant::now();
        let within = Clock::start(Pace::Within(Duration::from_secs(10)), start);
        assert_eq!(within.due, start + Duration::from_secs(10));
        let pace = Pace::AtLeast {
            grace: Duration::from_secs(10),
            bytes_per_second: 1024,
            most_ahead: Duration::from_secs(30),
        };
        let mut upload = Clock::start(pace, start);
        assert_eq!(upload.due, start + Duration::from_secs(10), "the grace period");
        upload.progress(20 * 1024, start + Duration::from_secs(5));
        assert_eq!(upload.due, start + Duration::from_secs(30), "20 KiB earn 20 s");
        upload.progress(2 * 1024 * 1024, start + Duration::from_secs(6));
        assert_eq!(upload.due, start + Duration::from_secs(36), "2 MiB at once earn no more than 30 s ahead");
        upload.progress(1, start + Duration::from_secs(35));
        assert!(upload.due < start + Duration::from_secs(37), "a byte later earns a millisecond, not the average");
    }

    /// A server-side connection and the client socket talking to it.
    fn connected() -> (Connection, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let register = fixture(Caps { total: 4, per_address: None, exempt: Default::default() });
        let slot = register.admit(&server, peer.ip()).unwrap();
        let memory = RequestMemory::new(MemoryBudget::new(1 << 30, 1 << 30), peer.ip());
        (Connection::new(server, Limits::default(), slot, memory), client)
    }

    /// Pushes `out` until it is done or fails, waiting a little whenever
    /// the socket is full (as the room would, without the room).
    fn push_all(conn: &mut Connection, out: &mut Outgoing) -> io::Result<()> {
        loop {
            match conn.push(out)? {
                Progress::Done => return Ok(()),
                Progress::Blocked(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    #[test]
    fn a_reader_that_keeps_taking_a_little_is_still_cut_off_at_the_send_pace() {
        let (mut conn, mut client) = connected();
        conn.limits.transfer_pace = Pace::AtLeast {
            grace: Duration::from_millis(100),
            bytes_per_second: 4 * 1024 * 1024,
            most_ahead: Duration::from_millis(300),
        };
        let reader = std::thread::spawn(move || {
            // 16 KiB every 20 ms: 800 KiB/s, progress all the time, a fifth of the pace.
            let mut buf = [0u8; 16 * 1024];
            let mut total = 0;
            while let Ok(n @ 1..) = std::io::Read::read(&mut client, &mut buf) {
                total += n;
                std::thread::sleep(Duration::from_millis(20));
            }
            total
        });
        let started = Instant::now();
        let answer = Response::json_bytes(200, vec![b' '; 64 * 1024 * 1024]);
        let mut out = conn.outgoing(answer, &SendOptions::default()).unwrap();
        let kind = push_all(&mut conn, &mut out).unwrap_err().kind();
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(20), "cut off after {:?}", started.elapsed());
        drop(conn);
        assert!(reader.join().unwrap() < 64 * 1024 * 1024);
    }

    #[test]
    fn a_file_answer_waits_for_its_reader_holding_no_buffer_and_arrives_whole() {
        let (mut conn, client) = connected();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let content: Vec<u8> = (0..32_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let answer = Response::new(200).with_body(Body::File { file, len: content.len() as u64 });
        let mut out = conn.outgoing(answer, &SendOptions::default()).unwrap();
        // Nobody reads yet: the socket fills and the answer waits.
        assert!(matches!(conn.push(&mut out).unwrap(), Progress::Blocked(_)));
        assert!(out.pieces.iter().all(|piece| matches!(piece, Piece::File { .. })), "no buffer held");
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut &client, &mut got).unwrap();
            got
        });
        push_all(&mut conn, &mut out).unwrap();
        drop(conn);
        let got = reader.join().unwrap();
        let body_at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(got[body_at..] == content[..], "the file arrives whole and in order");
    }

    #[test]
    fn a_body_is_read_as_it_arrives_and_waits_in_between() {
        let (mut conn, mut client) = connected();
        let mut decoder = Decoder::new(Framing::Chunked, 100, 1024).unwrap();
        let mut clock = Clock::start(Pace::Within(Duration::from_secs(5)), Instant::now());
        let mut body = Vec::new();
        client.write_all(b"5\r\nhel").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(matches!(conn.receive(&mut decoder, &mut body, &mut clock).unwrap(), Progress::Blocked(_)));
        client.write_all(b"lo\r\n0\r\n\r\nGET").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(conn.receive(&mut decoder, &mut body, &mut clock).unwrap(), Progress::Done);
        assert_eq!(body, b"hello");
        assert_eq!(conn.buffered(), 3, "the next request's bytes stay");
        // Past its pace, a body still due is late.
        let mut late = Clock::start(Pace::Within(Duration::ZERO), Instant::now());
        let mut decoder = Decoder::new(Framing::Length(10), 100, 1024).unwrap();
        conn.pending.clear();
        assert!(matches!(conn.receive(&mut decoder, &mut body, &mut late), Err(BodyError::TimedOut)));
    }
}
