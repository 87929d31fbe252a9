//! The byte work on one connection: reading what has arrived of a head
//! without waiting, reading or streaming bodies under a limit and a pace,
//! writing answers, files and stream events at a pace, and discarding what
//! a closing connection's client still sends. A slow client only ever
//! blocks the work thread busy with its connection, until the phase's
//! deadline.

use super::listener::Slot;
use super::rejection::Rejection;
use super::request::{self, Framing, HeadLimits, Parsed, RequestHead};
use super::response::{Body, Response};
use rustix::fd::BorrowedFd;
use rustix::net::{RecvFlags, recv};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Transfer unit for bodies and files.
const CHUNK: usize = 64 * 1024;
/// Longest chunk-size or trailer line we accept in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// A connection closes after its answer once it has carried this many
/// requests, or been open this long (as nginx's `keepalive_requests` and
/// `keepalive_time`): no client keeps a slot for ever by trickling heads.
const MAX_REQUESTS: u64 = 1000;
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// Limits and timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub head: HeadLimits,
    /// From the first byte of a head to its blank line (slowloris).
    pub head_timeout: Duration,
    /// How long a connection may wait for its next request (kept alive,
    /// or new).
    pub idle_timeout: Duration,
    /// Longest wait for the write of `100 Continue`.
    pub io_timeout: Duration,
    /// How fast an answer must be taken: a reader slower than this is cut
    /// off, and what its answer held is freed.
    pub send_pace: Pace,
    /// Whether a request's small body is read with its head, before the
    /// request is handled: not for a route that can be answered before
    /// its body (an upload refused by its head alone is answered at once,
    /// SPEC §1). The router decides; this layer does not know routes.
    pub reads_body_first: fn(&RequestHead) -> bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head: HeadLimits { max_line: 8 * 1024, max_head: 16 * 1024, max_headers: request::MAX_HEADERS },
            head_timeout: Duration::from_secs(10),
            reads_body_first: |_| true,
            idle_timeout: Duration::from_secs(60),
            io_timeout: Duration::from_secs(30),
            send_pace: Pace::AtLeast {
                grace: Duration::from_secs(10),
                bytes_per_second: 4096,
                most_ahead: Duration::from_secs(30),
            },
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
struct Clock {
    pace: Pace,
    due: Instant,
}

impl Clock {
    fn start(pace: Pace, now: Instant) -> Clock {
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

    /// How long the next read or write may wait; `None` when it is late.
    fn left(&self) -> Option<Duration> {
        self.due.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())
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

pub struct Connection {
    stream: TcpStream,
    /// Its place among the open connections: says when it is idle.
    slot: Slot,
    /// Requests read so far (after the first, a wait is a keep-alive one).
    requests: u64,
    opened: Instant,
    /// Bytes received but not consumed yet (pipelined requests, body start).
    pending: Vec<u8>,
    limits: Limits,
    /// The socket's timeouts as last set, so that unchanged ones cost no
    /// system call.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// Bytes discarded while lingering.
    discarded: usize,
}

impl Connection {
    pub fn new(stream: TcpStream, limits: Limits, slot: Slot) -> Self {
        Connection {
            stream,
            slot,
            requests: 0,
            opened: Instant::now(),
            pending: Vec::new(),
            limits,
            read_timeout: None,
            write_timeout: None,
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
    /// buffered (or more than a head may hold).
    pub fn fill(&mut self) -> Filled {
        let mut got = false;
        loop {
            let (wanted, head_whole) = match self.wanted() {
                Wanted::All => return Filled::Head,
                Wanted::Head(total) => (total, false),
                Wanted::Body(total) => (total, true),
            };
            let mut chunk = [0u8; 16 * 1024];
            let want = wanted.saturating_sub(self.pending.len()).clamp(1, chunk.len());
            match recv(&self.stream, &mut chunk[..want], RecvFlags::DONTWAIT) {
                Ok((0, _)) => return Filled::Closed,
                Ok((n, _)) => {
                    self.pending.extend_from_slice(&chunk[..n]);
                    got = true;
                }
                Err(rustix::io::Errno::AGAIN) if head_whole => return Filled::Body,
                Err(rustix::io::Errno::AGAIN) => return if got { Filled::Partial } else { Filled::Nothing },
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return Filled::Closed,
            }
        }
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
        match request::parse(&self.pending, self.limits.head)? {
            Parsed::Complete(head, used) => {
                self.pending.drain(..used);
                if self.pending.is_empty() {
                    // An idle connection holds no buffer.
                    self.pending = Vec::new();
                }
                self.requests += 1;
                self.slot.busy();
                Ok(head)
            }
            Parsed::Partial => Err(Rejection::RequestTimeout),
        }
    }

    /// Requests taken so far on this connection: the number of the
    /// current one.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        if self.read_timeout != Some(timeout) {
            self.stream.set_read_timeout(Some(timeout))?;
            self.read_timeout = Some(timeout);
        }
        Ok(())
    }

    fn set_write_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        if self.write_timeout != Some(timeout) {
            self.stream.set_write_timeout(Some(timeout))?;
            self.write_timeout = Some(timeout);
        }
        Ok(())
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

    /// Sends `100 Continue` when the client waits for it before its body.
    pub fn send_continue(&mut self) -> io::Result<()> {
        self.set_write_timeout(self.limits.io_timeout)?;
        self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
    }

    /// Reads a whole body of at most `limit` bytes into memory, at `pace`.
    /// A declared length over the limit is refused before anything is read.
    pub fn read_body(&mut self, framing: Framing, limit: u64, pace: Pace) -> Result<Vec<u8>, BodyError> {
        if let Framing::Length(n) = framing
            && n > limit
        {
            return Err(BodyError::TooLarge);
        }
        let mut body = Vec::new();
        self.copy_body(framing, limit, &mut body, pace)?;
        Ok(body)
    }

    /// Streams the body into `sink`, failing as soon as it exceeds `limit`
    /// or falls behind `pace`.
    pub fn copy_body(
        &mut self,
        framing: Framing,
        limit: u64,
        sink: &mut impl Write,
        pace: Pace,
    ) -> Result<u64, BodyError> {
        let mut clock = Clock::start(pace, Instant::now());
        match framing {
            Framing::None => Ok(0),
            Framing::Length(n) if n > limit => Err(BodyError::TooLarge),
            Framing::Length(n) => {
                self.copy_exact(n, sink, &mut clock)?;
                Ok(n)
            }
            Framing::Chunked => self.copy_chunked(limit, sink, &mut clock),
        }
    }

    fn copy_exact(&mut self, mut remaining: u64, sink: &mut impl Write, clock: &mut Clock) -> Result<(), BodyError> {
        let mut buf = vec![0u8; CHUNK.min(usize::try_from(remaining).unwrap_or(CHUNK)).max(1)];
        while remaining > 0 {
            let want = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
            let got = self.read_some(&mut buf[..want], clock)?;
            sink.write_all(&buf[..got]).map_err(BodyError::Sink)?;
            remaining -= got as u64;
        }
        Ok(())
    }

    fn copy_chunked(&mut self, limit: u64, sink: &mut impl Write, clock: &mut Clock) -> Result<u64, BodyError> {
        let mut total = 0u64;
        loop {
            let line = self.read_line(clock)?;
            let size = request::chunk_size(&line).ok_or(BodyError::Malformed)?;
            if size == 0 {
                // Trailer fields (ignored, bounded like a head), then the blank line.
                let mut trailer = 0;
                loop {
                    let field = self.read_line(clock)?;
                    if field.is_empty() {
                        return Ok(total);
                    }
                    trailer += field.len() + 2;
                    if trailer > self.limits.head.max_head {
                        return Err(BodyError::Malformed);
                    }
                }
            }
            total = total.checked_add(size).filter(|&t| t <= limit).ok_or(BodyError::TooLarge)?;
            self.copy_exact(size, sink, clock)?;
            if !self.read_line(clock)?.is_empty() {
                return Err(BodyError::Malformed);
            }
        }
    }

    /// One CRLF-terminated line without its line end; a bare LF is
    /// malformed (RFC 9112 §7.1 gives no leniency inside chunked bodies).
    fn read_line(&mut self, clock: &mut Clock) -> Result<Vec<u8>, BodyError> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=end).collect();
                line.pop();
                if line.pop() != Some(b'\r') || line.len() > MAX_CHUNK_LINE {
                    return Err(BodyError::Malformed);
                }
                return Ok(line);
            }
            if self.pending.len() > MAX_CHUNK_LINE {
                return Err(BodyError::Malformed);
            }
            let mut chunk = [0u8; 4096];
            let n = self.read_socket(&mut chunk, clock)?;
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads at least one byte, from what is buffered first.
    fn read_some(&mut self, buf: &mut [u8], clock: &mut Clock) -> Result<usize, BodyError> {
        if !self.pending.is_empty() {
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            return Ok(n);
        }
        self.read_socket(buf, clock)
    }

    /// One read of body bytes from the socket, waiting no longer than the
    /// body's pace allows.
    fn read_socket(&mut self, buf: &mut [u8], clock: &mut Clock) -> Result<usize, BodyError> {
        let left = clock.left().ok_or(BodyError::TimedOut)?;
        self.set_read_timeout(left).map_err(BodyError::Socket)?;
        match self.stream.read(buf) {
            Ok(0) => Err(BodyError::Socket(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => {
                clock.progress(n, Instant::now());
                Ok(n)
            }
            Err(err) if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Err(BodyError::TimedOut)
            }
            Err(err) => Err(BodyError::Socket(err)),
        }
    }

    /// Writes an answer: the head and a small body in one write, a file
    /// streamed after its head; at the connection's send pace, else
    /// `TimedOut` (the caller closes the connection, freeing what the
    /// answer held).
    pub fn send(&mut self, response: Response, options: &SendOptions) -> io::Result<()> {
        let mut clock = Clock::start(self.limits.send_pace, Instant::now());
        let mut out = Vec::with_capacity(512);
        response.write_head(&mut out, &options.extra, options.keep_alive);
        match response.body {
            // A small body goes out with its head in one write; a large one
            // is written where it is (never copied a second time).
            Body::Bytes(bytes) | Body::Stream(bytes) if !options.head_only && bytes.len() <= CHUNK => {
                out.extend_from_slice(&bytes);
                self.write_paced(&out, &mut clock)
            }
            Body::Bytes(bytes) | Body::Stream(bytes) if !options.head_only => {
                self.write_paced(&out, &mut clock)?;
                self.write_paced(&bytes, &mut clock)
            }
            Body::File { file, len } if !options.head_only => {
                // A small file goes out with its head in one write (one TCP
                // segment), read with one system call; a large one is
                // streamed after the head.
                if let Ok(small) = usize::try_from(len)
                    && small <= CHUNK
                {
                    let head = out.len();
                    out.resize(head + small, 0);
                    file.read_exact_at(&mut out[head..], 0)?;
                    return self.write_paced(&out, &mut clock);
                }
                self.write_paced(&out, &mut clock)?;
                let mut buf = vec![0u8; CHUNK];
                let mut offset = 0;
                while offset < len {
                    let want = buf.len().min(usize::try_from(len - offset).unwrap_or(usize::MAX));
                    file.read_exact_at(&mut buf[..want], offset)?;
                    self.write_paced(&buf[..want], &mut clock)?;
                    offset += want as u64;
                }
                Ok(())
            }
            _ => self.write_paced(&out, &mut clock),
        }
    }

    /// Writes more of a stream (its events, a keep-alive comment) at the
    /// connection's send pace.
    pub fn send_more(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut clock = Clock::start(self.limits.send_pace, Instant::now());
        self.write_paced(bytes, &mut clock)
    }

    /// Writes all of `bytes`, each write waiting no longer than the pace
    /// allows.
    fn write_paced(&mut self, mut bytes: &[u8], clock: &mut Clock) -> io::Result<()> {
        while !bytes.is_empty() {
            let left = clock.left().ok_or(io::ErrorKind::TimedOut)?;
            self.set_write_timeout(left)?;
            match self.stream.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    clock.progress(n, Instant::now());
                    bytes = &bytes[n..];
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
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
        (Connection::new(server, Limits::default(), slot), client)
    }

    #[test]
    fn a_reader_that_keeps_taking_a_little_is_still_cut_off_at_the_send_pace() {
        let (mut conn, mut client) = connected();
        conn.limits.send_pace = Pace::AtLeast {
            grace: Duration::from_millis(100),
            bytes_per_second: 4 * 1024 * 1024,
            most_ahead: Duration::from_millis(300),
        };
        let reader = std::thread::spawn(move || {
            // 16 KiB every 20 ms: 800 KiB/s, progress all the time, a fifth of the pace.
            let mut buf = [0u8; 16 * 1024];
            let mut total = 0;
            while let Ok(n @ 1..) = client.read(&mut buf) {
                total += n;
                std::thread::sleep(Duration::from_millis(20));
            }
            total
        });
        let started = Instant::now();
        let answer = Response::json_bytes(200, vec![b' '; 64 * 1024 * 1024]);
        let sent = conn.send(answer, &SendOptions::default());
        let kind = sent.unwrap_err().kind();
        assert!(matches!(kind, io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock), "{kind:?}");
        assert!(started.elapsed() < Duration::from_secs(20), "cut off after {:?}", started.elapsed());
        drop(conn);
        assert!(reader.join().unwrap() < 64 * 1024 * 1024);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// However a body is cut into chunks (with extensions and a
        /// trailer), it decodes to the same bytes; one byte over the limit
        /// is refused.
        #[test]
        fn chunked_bodies_decode_to_what_was_sent(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(1usize..700, 1..12),
            extension in proptest::prelude::any::<bool>(),
        ) {
            let mut wire = Vec::new();
            let mut rest = &body[..];
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, after) = rest.split_at((*cut).min(rest.len()));
                wire.extend_from_slice(format!("{:x}{}\r\n", chunk.len(), if extension { " ;a=b" } else { "" }).as_bytes());
                wire.extend_from_slice(chunk);
                wire.extend_from_slice(b"\r\n");
                rest = after;
            }
            wire.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
            for limit in [body.len() as u64, (body.len() as u64).saturating_sub(1)] {
                let (mut conn, mut client) = connected();
                client.write_all(&wire).unwrap();
                let decoded = conn.read_body(Framing::Chunked, limit, Pace::Within(Duration::from_secs(5)));
                if limit == body.len() as u64 {
                    proptest::prop_assert_eq!(decoded.unwrap(), body.clone());
                } else if !body.is_empty() {
                    proptest::prop_assert!(matches!(decoded, Err(BodyError::TooLarge)));
                }
            }
        }
    }
}
