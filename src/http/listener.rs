//! The accept thread: caps open connections, survives descriptor exhaustion
//! and hands each accepted socket to its own small-stack thread.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// Stack of a connection thread: it parses heads, copies bodies and runs
/// PBKDF2, none of which needs deep recursion or large stack buffers.
const CONNECTION_STACK: usize = 128 * 1024;

/// Counts one open connection for as long as it lives.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts until `keep_going` says no (checked after each accept, so whoever
/// stops it connects once to wake it); then the listening socket closes.
/// `handle` runs on a new thread per connection; past `max_connections`
/// open ones, `refusal` (a whole canned answer) is written and the socket
/// closed.
pub fn accept_loop<F>(
    listener: TcpListener,
    max_connections: usize,
    refusal: Arc<[u8]>,
    keep_going: impl Fn() -> bool,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if !keep_going() {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                back_off(&err);
                continue;
            }
        };
        if open.fetch_add(1, Ordering::AcqRel) >= max_connections {
            open.fetch_sub(1, Ordering::AcqRel);
            refuse(stream, &refusal);
            continue;
        }
        let slot = Slot(Arc::clone(&open));
        let _ = stream.set_nodelay(true);
        let handle = Arc::clone(&handle);
        let spawned = thread::Builder::new().name("conn".into()).stack_size(CONNECTION_STACK).spawn(move || {
            let _slot = slot;
            handle(stream, peer);
        });
        if let Err(err) = spawned {
            // The closure (and with it the socket and slot) is dropped.
            eprintln!("sync-node: cannot start a connection thread: {err}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Out of descriptors or memory: wait for some to be released instead of
/// spinning; other errors (an aborted handshake) need no pause.
fn back_off(err: &io::Error) {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    if matches!(err.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM)) {
        thread::sleep(Duration::from_millis(50));
    }
}

/// Writes the canned answer without ever blocking the accept thread.
fn refuse(mut stream: TcpStream, refusal: &[u8]) {
    if stream.set_nonblocking(true).is_ok() {
        let _ = stream.write(refusal);
    }
}
