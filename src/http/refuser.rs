//! Answers connections there is no room for: `503` with `Retry-After`, and
//! the CORS headers for the `Origin` their head names, so that a browser
//! can read when to come back. The accept thread hands each refused socket
//! here and moves on; one thread waits (poll) up to [`HEAD_WAIT`] for
//! the heads of at most [`MAX_WAITING`] of them at once, and answers a
//! socket whose head does not come in time, or that finds no place,
//! without the origin.

use crate::log;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

/// How long a refused connection's head is waited for.
const HEAD_WAIT: Duration = Duration::from_millis(500);
/// Refused connections waited on at once; past it they are answered at once.
pub const MAX_WAITING: usize = 256;
/// The most of a head read from a refused connection.
const HEAD_BYTES: usize = 8 * 1024;

/// Makes the whole answer, given the refused head's `Origin` (if it came).
type Answer = Arc<dyn Fn(Option<&[u8]>) -> Vec<u8> + Send + Sync>;

/// Where the accept thread hands refused sockets.
pub struct Refuser {
    queue: SyncSender<TcpStream>,
    answer: Answer,
}

struct Waiting {
    stream: TcpStream,
    head: Vec<u8>,
    until: Instant,
}

impl Refuser {
    /// Starts the refusing thread.
    pub fn start(answer: impl Fn(Option<&[u8]>) -> Vec<u8> + Send + Sync + 'static) -> io::Result<Refuser> {
        let answer: Answer = Arc::new(answer);
        let (queue, refused) = mpsc::sync_channel(MAX_WAITING);
        let theirs = Arc::clone(&answer);
        thread::Builder::new().name("refuse".into()).spawn(move || run(&refused, &theirs))?;
        Ok(Refuser { queue, answer })
    }

    /// Answers `stream` with the refusal, without ever blocking.
    pub fn refuse(&self, stream: TcpStream) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        match self.queue.try_send(stream) {
            Ok(()) => {}
            Err(TrySendError::Full(stream) | TrySendError::Disconnected(stream)) => answer(stream, &[], &self.answer),
        }
    }
}

/// The refusing thread: waits for heads, answers, until the accept thread
/// (the only sender) is gone.
fn run(refused: &Receiver<TcpStream>, make: &Answer) {
    let mut waiting: Vec<Waiting> = Vec::new();
    loop {
        if waiting.is_empty() {
            match refused.recv() {
                Ok(stream) => waiting.push(Waiting { stream, head: Vec::new(), until: Instant::now() + HEAD_WAIT }),
                Err(_) => return,
            }
        }
        loop {
            match refused.try_recv() {
                Ok(stream) if waiting.len() < MAX_WAITING => {
                    waiting.push(Waiting { stream, head: Vec::new(), until: Instant::now() + HEAD_WAIT });
                }
                Ok(stream) => answer(stream, &[], make),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    waiting.drain(..).for_each(|w| answer(w.stream, &w.head, make));
                    return;
                }
            }
        }
        let now = Instant::now();
        let soonest = waiting.iter().map(|w| w.until).min().unwrap_or(now);
        // Short waits, so that sockets refused meanwhile join the next poll.
        let wait = soonest.saturating_duration_since(now).min(Duration::from_millis(20));
        let timeout = Timespec { tv_sec: 0, tv_nsec: i64::from(wait.subsec_nanos()) };
        let readable: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = waiting.iter().map(|w| PollFd::new(&w.stream, PollFlags::IN)).collect();
            if let Err(err) = poll(&mut fds, Some(&timeout)) {
                if err != rustix::io::Errno::INTR {
                    log::error(format_args!("waiting on refused connections: {err}"));
                    thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            fds.iter().map(|fd| !fd.revents().is_empty()).collect()
        };
        let now = Instant::now();
        let mut still = Vec::with_capacity(waiting.len());
        for (mut refused, ready) in waiting.drain(..).zip(readable) {
            if ready && !read_more(&mut refused) {
                continue;
            }
            let whole = refused.head.windows(4).any(|end| end == b"\r\n\r\n") || refused.head.len() >= HEAD_BYTES;
            if whole || now >= refused.until {
                answer(refused.stream, &refused.head, make);
            } else {
                still.push(refused);
            }
        }
        waiting = still;
    }
}

/// Reads what has arrived; false when the peer is gone.
fn read_more(waiting: &mut Waiting) -> bool {
    let mut buf = [0u8; 2048];
    let room = (HEAD_BYTES - waiting.head.len().min(HEAD_BYTES)).min(buf.len());
    match waiting.stream.read(&mut buf[..room]) {
        Ok(0) => false,
        Ok(n) => {
            waiting.head.extend_from_slice(&buf[..n]);
            true
        }
        Err(err) => err.kind() == io::ErrorKind::WouldBlock,
    }
}

/// Writes the refusal (as much as the socket takes at once) and closes.
fn answer(mut stream: TcpStream, head: &[u8], make: &Answer) {
    let bytes = make(super::request::origin_in_partial_head(head));
    let _ = stream.write(&bytes);
}
