//! The byte work on one connection: reading heads under a deadline, reading
//! or streaming bodies under a limit, writing answers and files, and closing
//! without losing the answer. A slow or vanished client only ever blocks the
//! thread that owns its connection.

use super::listener::Slot;
use super::request::{self, Framing, HeadLimits, Parsed, RequestHead};
use super::response::{Body, Response};
use crate::error::ApiError;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Transfer unit for bodies and files.
const CHUNK: usize = 64 * 1024;
/// Longest chunk-size or trailer line we accept in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

/// Limits and timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub head: HeadLimits,
    /// From the first byte of a head to its blank line (slowloris).
    pub head_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Longest wait for any single write of an answer.
    pub io_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head: HeadLimits { max_line: 8 * 1024, max_head: 16 * 1024, max_headers: request::MAX_HEADERS },
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            io_timeout: Duration::from_secs(30),
        }
    }
}

/// Why reading a head ended without a request.
#[derive(Debug)]
pub enum HeadError {
    /// The peer closed, timed out or broke the connection: nothing to answer.
    Closed,
    /// A malformed or oversized head: answer, then close.
    Reject(ApiError),
}

/// How fast a request body must arrive (SPEC §1, "Slow clients").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// All of it within this long (JSON bodies, bodies drained unread).
    Within(Duration),
    /// Once `grace` has passed, an average of at least `bytes_per_second`
    /// since the body began, and never a pause longer than `max_pause`
    /// (store and log bodies: a live upload keeps touching its staged file).
    AtLeast { grace: Duration, bytes_per_second: u64, max_pause: Duration },
}

/// When the body began, its pace, how much of it has arrived and when
/// the last of it did.
#[derive(Debug)]
struct BodyClock {
    started: Instant,
    pace: Pace,
    received: u64,
    last_progress: Instant,
}

impl BodyClock {
    /// The instant by which the next byte must have arrived.
    fn deadline(&self) -> Instant {
        match self.pace {
            Pace::Within(limit) => self.started + limit,
            Pace::AtLeast { grace, bytes_per_second, max_pause } => {
                let earned = Duration::from_secs_f64(self.received as f64 / bytes_per_second.max(1) as f64);
                (self.started + grace.max(earned)).min(self.last_progress + max_pause)
            }
        }
    }
}

/// Why reading a body failed.
#[derive(Debug)]
pub enum BodyError {
    TooLarge,
    Malformed,
    /// It fell behind its pace: answer 408 and close.
    TimedOut,
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
    /// Bytes received but not consumed yet (pipelined requests, body start).
    pending: Vec<u8>,
    limits: Limits,
    /// The socket's timeouts as last set, so that unchanged ones cost no
    /// system call.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Connection {
    pub fn new(stream: TcpStream, limits: Limits, slot: Slot) -> Self {
        Connection { stream, slot, requests: 0, pending: Vec::new(), limits, read_timeout: None, write_timeout: None }
    }

    /// Reads the next request head. `Err(Closed)` when the peer is done or
    /// stays silent; 408 when a head that has begun does not complete in
    /// time. While nothing of it has arrived, the connection may be shed.
    pub fn read_head(&mut self) -> Result<RequestHead, HeadError> {
        let mut deadline = None;
        if self.pending.is_empty() && self.requests > 0 {
            self.slot.kept_alive();
        }
        loop {
            if !self.pending.is_empty() {
                if deadline.is_none() {
                    self.slot.busy();
                }
                let started = *deadline.get_or_insert_with(|| Instant::now() + self.limits.head_timeout);
                match request::parse(&self.pending, self.limits.head).map_err(HeadError::Reject)? {
                    Parsed::Complete(head, used) => {
                        self.pending.drain(..used);
                        self.requests += 1;
                        return Ok(head);
                    }
                    Parsed::Partial => deadline = Some(started),
                }
            }
            let late = HeadError::Reject(ApiError::RequestTimeout);
            let wait = match deadline {
                None => self.limits.idle_timeout,
                Some(at) => at.checked_duration_since(Instant::now()).filter(|left| !left.is_zero()).ok_or(late)?,
            };
            self.set_read_timeout(wait).map_err(|_| HeadError::Closed)?;
            let room = self.limits.head.max_head + 1 - self.pending.len().min(self.limits.head.max_head);
            let mut chunk = [0u8; 4096];
            let want = room.min(chunk.len());
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => return Err(HeadError::Closed),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(err)
                    if deadline.is_some()
                        && matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    return Err(HeadError::Reject(ApiError::RequestTimeout));
                }
                Err(_) => return Err(HeadError::Closed),
            }
        }
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

    /// Bytes received after the last head and not read yet (the start of
    /// a body, or a pipelined request).
    pub fn buffered(&self) -> u64 {
        self.pending.len() as u64
    }

    /// Whether the client has closed its side (or the connection broke).
    /// Bytes already sent (a pipelined request) mean it is still there.
    pub fn peer_closed(&mut self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut probe = [0u8; 1];
        let closed = match self.stream.peek(&mut probe) {
            Ok(0) => true,
            Ok(_) => false,
            Err(err) => err.kind() != io::ErrorKind::WouldBlock,
        };
        closed || self.stream.set_nonblocking(false).is_err()
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
        let now = Instant::now();
        let mut clock = BodyClock { started: now, pace, received: 0, last_progress: now };
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

    fn copy_exact(
        &mut self,
        mut remaining: u64,
        sink: &mut impl Write,
        clock: &mut BodyClock,
    ) -> Result<(), BodyError> {
        let mut buf = vec![0u8; CHUNK.min(usize::try_from(remaining).unwrap_or(CHUNK)).max(1)];
        while remaining > 0 {
            let want = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
            let got = self.read_some(&mut buf[..want], clock)?;
            sink.write_all(&buf[..got]).map_err(BodyError::Sink)?;
            remaining -= got as u64;
        }
        Ok(())
    }

    fn copy_chunked(&mut self, limit: u64, sink: &mut impl Write, clock: &mut BodyClock) -> Result<u64, BodyError> {
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
    fn read_line(&mut self, clock: &mut BodyClock) -> Result<Vec<u8>, BodyError> {
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
    fn read_some(&mut self, buf: &mut [u8], clock: &mut BodyClock) -> Result<usize, BodyError> {
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
    fn read_socket(&mut self, buf: &mut [u8], clock: &mut BodyClock) -> Result<usize, BodyError> {
        let left = clock.deadline().checked_duration_since(Instant::now()).filter(|left| !left.is_zero());
        let left = left.ok_or(BodyError::TimedOut)?;
        self.set_read_timeout(left).map_err(BodyError::Socket)?;
        match self.stream.read(buf) {
            Ok(0) => Err(BodyError::Socket(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => {
                clock.received += n as u64;
                clock.last_progress = Instant::now();
                Ok(n)
            }
            Err(err) if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Err(BodyError::TimedOut)
            }
            Err(err) => Err(BodyError::Socket(err)),
        }
    }

    /// Writes an answer: the head and a small body in one write, a file
    /// streamed after its head.
    pub fn send(&mut self, response: Response, options: &SendOptions) -> io::Result<()> {
        self.set_write_timeout(self.limits.io_timeout)?;
        let mut out = Vec::with_capacity(512);
        response.write_head(&mut out, &options.extra, options.keep_alive);
        match response.body {
            // A small body goes out with its head in one write; a large one
            // is written where it is (never copied a second time).
            Body::Bytes(bytes) if !options.head_only && bytes.len() <= CHUNK => {
                out.extend_from_slice(&bytes);
                self.stream.write_all(&out)
            }
            Body::Bytes(bytes) if !options.head_only => {
                self.stream.write_all(&out)?;
                self.stream.write_all(&bytes)
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
                    return self.stream.write_all(&out);
                }
                self.stream.write_all(&out)?;
                let mut buf = vec![0u8; CHUNK];
                let mut offset = 0;
                while offset < len {
                    let want = buf.len().min(usize::try_from(len - offset).unwrap_or(usize::MAX));
                    file.read_exact_at(&mut buf[..want], offset)?;
                    self.stream.write_all(&buf[..want])?;
                    offset += want as u64;
                }
                Ok(())
            }
            _ => self.stream.write_all(&out),
        }
    }

    /// Ends the connection without losing the answer already written: stop
    /// sending, then read and discard what the client still sends for a
    /// short while, so the kernel does not reset the connection under it.
    pub fn linger_close(mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut discarded = 0usize;
        let mut buf = vec![0u8; CHUNK];
        while discarded < 16 * 1024 * 1024 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            if self.set_read_timeout(left.max(Duration::from_millis(1))).is_err() {
                break;
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::listener::{Caps, Register};
    use std::net::TcpListener;

    #[test]
    fn body_deadlines_follow_the_pace() {
        let start = Instant::now();
        let within = BodyClock {
            started: start,
            pace: Pace::Within(Duration::from_secs(10)),
            received: 0,
            last_progress: start,
        };
        assert_eq!(within.deadline(), start + Duration::from_secs(10));
        let pace = Pace::AtLeast {
            grace: Duration::from_secs(10),
            bytes_per_second: 1024,
            max_pause: Duration::from_secs(30),
        };
        let mut upload = BodyClock { started: start, pace, received: 0, last_progress: start };
        assert_eq!(upload.deadline(), start + Duration::from_secs(10), "the grace period");
        upload.received = 20 * 1024;
        upload.last_progress = start + Duration::from_secs(5);
        assert_eq!(upload.deadline(), start + Duration::from_secs(20), "20 KiB earn 20 s in all");
        upload.received = 1024 * 1024;
        assert_eq!(upload.deadline(), start + Duration::from_secs(35), "but no pause over 30 s");
    }

    /// A server-side connection and the client socket talking to it.
    fn connected() -> (Connection, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let register = Register::new(Caps { total: 4, per_address: None, exempt: Default::default() });
        let slot = register.admit(&server, peer.ip()).unwrap();
        (Connection::new(server, Limits::default(), slot), client)
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
