//! The accept thread and the register of open connections: caps open
//! connections in all and per client address (the forwarded one behind a
//! trusted proxy, once a head names it), sheds idle connections before it
//! turns anyone away and, when the server is full, a connection that has
//! not made progress (a head still arriving, a long-poll held) of the
//! address holding the most; survives descriptor exhaustion, and hands
//! each accepted socket on (to the waiting room) without waiting on it.

use crate::tally;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// A new connection that has sent nothing for this long counts as idle.
const FRESH_IDLE: Duration = Duration::from_secs(1);

/// The caps on open connections.
#[derive(Debug, Clone)]
pub struct Caps {
    pub total: usize,
    /// `None`: no cap per address (behind a trusted proxy every client
    /// has the proxy's address).
    pub per_address: Option<usize>,
    /// Peers the per-address cap does not apply to: the trusted proxies (every client behind one shares its address).
    pub exempt: super::proxies::TrustedProxies,
}

/// What a connection is doing, as far as shedding is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idleness {
    /// Handling a request whose head has arrived: never shed.
    Busy,
    /// Accepted at this instant and silent since: shed once it has been
    /// silent for [`FRESH_IDLE`].
    Fresh(Instant),
    /// Kept alive between requests since this instant: shed at once.
    KeptAlive(Instant),
    /// A head has been arriving since this instant: a head counts as
    /// progress only once it is whole, so this may be shed when the
    /// server is full and its address holds the most.
    Reading(Instant),
    /// Held by the loop (a long-poll) since this instant: likewise (its
    /// client asks again and loses nothing).
    Waiting(Instant),
}

impl Idleness {
    /// Since when it may be shed to make room, if it may.
    fn sheddable(self, now: Instant) -> Option<Instant> {
        match self {
            Idleness::Fresh(since) => (now.saturating_duration_since(since) >= FRESH_IDLE).then_some(since),
            Idleness::KeptAlive(since) => Some(since),
            Idleness::Busy | Idleness::Reading(_) | Idleness::Waiting(_) => None,
        }
    }

    /// Since when it has made no progress, if it may be shed from the
    /// address holding the most when the server is full.
    fn stalled(self) -> Option<Instant> {
        match self {
            Idleness::Reading(since) | Idleness::Waiting(since) => Some(since),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Entry {
    address: IpAddr,
    idleness: Idleness,
}

/// Closes a connection chosen to be shed, if it is still waiting (not at
/// work): `true` when it will close. It must not drop the connection in
/// place (that would take the register's lock again).
pub type Shed = Arc<dyn Fn(u64) -> bool + Send + Sync>;

#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
}

impl Open {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        self.count(entry.address, false);
        Some(entry)
    }

    /// The idle connection to close, if any: of `address` if given, and
    /// otherwise `address`'s first, then the one idle longest.
    fn victim(&self, address: IpAddr, only_that_address: bool, now: Instant) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(_, entry)| !only_that_address || entry.address == address)
            .filter_map(|(id, entry)| entry.idleness.sheddable(now).map(|since| (entry.address != address, since, *id)))
            .min()
            .map(|(_, _, id)| id)
    }

    /// When the server is full and nothing is idle: the connection that
    /// has made no progress for longest, of the address holding the most
    /// connections, if it holds more than `newcomer` does.
    fn stalled_victim(&self, newcomer: IpAddr) -> Option<u64> {
        let (&top, &most) = self.per_address.iter().max_by_key(|(_, count)| **count)?;
        if most <= self.per_address.get(&newcomer).copied().unwrap_or(0) {
            return None;
        }
        self.entries
            .iter()
            .filter(|(_, entry)| entry.address == top)
            .filter_map(|(id, entry)| entry.idleness.stalled().map(|since| (since, *id)))
            .min()
            .map(|(_, id)| id)
    }

    fn count(&mut self, address: IpAddr, added: bool) {
        if added {
            tally::take(&mut self.per_address, address, 1);
        } else {
            tally::give_back(&mut self.per_address, &address, 1);
        }
    }

    /// Closes a victim and stops counting it; one that has just gone to
    /// work counts as busy instead.
    fn shed(&mut self, id: u64, close: &Shed) {
        if close(id) {
            self.remove(id);
        } else if let Some(entry) = self.entries.get_mut(&id) {
            entry.idleness = Idleness::Busy;
        }
    }
}

/// The open connections, shared by the accept thread and every connection
/// thread.
pub struct Register {
    caps: Caps,
    open: Mutex<Open>,
    close: Shed,
}

impl std::fmt::Debug for Register {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Register").field("caps", &self.caps).finish_non_exhaustive()
    }
}

impl Register {
    /// The register; `close` sheds a waiting connection by its id.
    pub fn new(caps: Caps, close: Shed) -> Arc<Register> {
        Arc::new(Register { caps, open: Mutex::new(Open::default()), close })
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a connection from `address`, closing idle ones to make room
    /// if a cap is reached; `None` if there is no room even so.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Option<Slot> {
        let now = Instant::now();
        let mut open = self.lock();
        if let Some(cap) = self.cap_for(address) {
            while open.per_address.get(&address).copied().unwrap_or(0) >= cap {
                let id = open.victim(address, true, now)?;
                open.shed(id, &self.close);
            }
        }
        while open.entries.len() >= self.caps.total {
            let id = open.victim(address, false, now).or_else(|| open.stalled_victim(address))?;
            open.shed(id, &self.close);
        }
        let id = open.next_id;
        open.next_id += 1;
        open.entries.insert(id, Entry { address, idleness: Idleness::Fresh(now) });
        open.count(address, true);
        Some(Slot { register: Arc::clone(self), id })
    }

    /// The per-address cap for `address`, unless it is a trusted proxy.
    fn cap_for(&self, address: IpAddr) -> Option<usize> {
        self.caps.per_address.filter(|_| !self.caps.exempt.trusts(address))
    }

    /// How many connections are open.
    #[cfg(test)]
    fn open_count(&self) -> usize {
        self.lock().entries.len()
    }
}

/// One admitted connection, counted for as long as it lives. Its thread
/// says when it waits between requests (it may then be shed) and when a
/// request begins.
#[derive(Debug)]
pub struct Slot {
    register: Arc<Register>,
    id: u64,
}

impl Slot {
    /// The connection's id (never reused while the server runs).
    pub fn id(&self) -> u64 {
        self.id
    }

    fn set(&self, idleness: Idleness) {
        if let Some(entry) = self.register.lock().entries.get_mut(&self.id) {
            entry.idleness = idleness;
        }
    }

    /// Waiting for the next request on a kept-alive connection.
    pub fn kept_alive(&self) {
        self.set(Idleness::KeptAlive(Instant::now()));
    }

    /// A head has begun arriving.
    pub fn reading(&self) {
        self.set(Idleness::Reading(Instant::now()));
    }

    /// A whole head arrived: the request is being handled.
    pub fn busy(&self) {
        self.set(Idleness::Busy);
    }

    /// The loop holds the request (a long-poll).
    pub fn waiting(&self) {
        self.set(Idleness::Waiting(Instant::now()));
    }

    /// The connection now speaks for `address` (the client a trusted
    /// proxy forwards): it counts against that address from now on.
    /// `false` when that address is over its cap even after shedding one
    /// of its idle connections: the request is refused.
    pub fn speaks_for(&self, address: IpAddr) -> bool {
        let register = &self.register;
        let mut open = register.lock();
        let Some(entry) = open.entries.get_mut(&self.id) else { return true };
        let before = std::mem::replace(&mut entry.address, address);
        if before == address {
            return true;
        }
        open.count(before, false);
        open.count(address, true);
        let Some(cap) = register.cap_for(address) else { return true };
        let now = Instant::now();
        while open.per_address.get(&address).copied().unwrap_or(0) > cap {
            match open.victim(address, true, now) {
                Some(id) => open.shed(id, &register.close),
                None => {
                    // Refused: it goes on counting where it did.
                    open.count(address, false);
                    open.count(before, true);
                    if let Some(entry) = open.entries.get_mut(&self.id) {
                        entry.address = before;
                    }
                    return false;
                }
            }
        }
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.register.lock().remove(self.id);
    }
}

/// The listening socket on `address`.
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(address)
}

/// Accepts until `keep_going` says no (checked after each accept, so whoever
/// stops it connects once to wake it); then the listening socket closes.
/// `admit` takes each admitted connection (and must not wait on it); a
/// connection that finds no room goes to the `refuser`.
pub fn accept_loop(
    listener: TcpListener,
    register: Arc<Register>,
    refuser: &super::refuser::Refuser,
    keep_going: impl Fn() -> bool,
    admit: impl Fn(TcpStream, SocketAddr, Slot),
) {
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
        let Some(slot) = register.admit(super::request::share_of(peer.ip())) else {
            refuser.refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        admit(stream, peer, slot);
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::Shutdown;

    /// A register whose shed connections are sockets of the test, shut
    /// when shed.
    pub(crate) struct Fixture {
        register: Arc<Register>,
        sockets: Arc<Mutex<HashMap<u64, TcpStream>>>,
    }

    pub(crate) fn fixture(caps: Caps) -> Fixture {
        let sockets: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::default();
        let theirs = Arc::clone(&sockets);
        let close: Shed = Arc::new(move |id| {
            theirs.lock().unwrap().remove(&id).is_some_and(|socket| socket.shutdown(Shutdown::Both).is_ok())
        });
        Fixture { register: Register::new(caps, close), sockets }
    }

    impl Fixture {
        pub(crate) fn admit(&self, server: &TcpStream, address: IpAddr) -> Option<Slot> {
            let slot = self.register.admit(address)?;
            self.sockets.lock().unwrap().insert(slot.id(), server.try_clone().unwrap());
            Some(slot)
        }
    }

    impl std::ops::Deref for Fixture {
        type Target = Register;
        fn deref(&self) -> &Register {
            &self.register
        }
    }

    /// A connected pair of loopback sockets (client side, server side).
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    fn address(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn caps_shed_idle_connections_of_the_same_address_first() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let register = fixture(Caps { total: 3, per_address: Some(2), exempt: Default::default() });
        let sockets: Vec<_> = (0..4).map(|_| pair(&listener)).collect();
        let a1 = register.admit(&sockets[0].1, address(1)).unwrap();
        let a2 = register.admit(&sockets[1].1, address(1)).unwrap();
        assert!(register.admit(&sockets[2].1, address(1)).is_none(), "busy or fresh ones are not shed");
        a1.kept_alive();
        let a3 = register.admit(&sockets[2].1, address(1)).expect("the kept-alive one made room");
        assert_eq!(register.open_count(), 2);
        let mut buf = [0u8; 1];
        use std::io::Read;
        assert_eq!((&sockets[0].0).read(&mut buf).unwrap(), 0, "the shed connection was closed");
        let b1 = register.admit(&sockets[3].1, address(2)).unwrap();
        assert_eq!(register.open_count(), 3);
        drop((a1, a2, a3, b1));
        assert_eq!(register.open_count(), 0, "a shed slot is not counted twice");
        assert!(register.lock().per_address.is_empty());
    }

    #[test]
    fn when_full_and_nothing_is_idle_the_top_address_loses_a_stalled_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let register = fixture(Caps { total: 3, per_address: None, exempt: Default::default() });
        let sockets: Vec<_> = (0..5).map(|_| pair(&listener)).collect();
        let a1 = register.admit(&sockets[0].1, address(1)).unwrap();
        let a2 = register.admit(&sockets[1].1, address(1)).unwrap();
        let b1 = register.admit(&sockets[2].1, address(2)).unwrap();
        a1.busy();
        a2.busy();
        b1.reading();
        assert!(register.admit(&sockets[3].1, address(3)).is_none(), "busy connections are never shed");
        a2.reading();
        let c1 = register.admit(&sockets[3].1, address(3)).expect("the top address's stalled connection made room");
        assert_eq!(register.lock().per_address.get(&address(1)), Some(&1));
        c1.waiting();
        assert!(
            register.admit(&sockets[4].1, address(2)).is_none(),
            "no address holds more than the newcomer would: nobody is shed"
        );
        drop((a1, a2, b1, c1));
    }

    #[test]
    fn a_connection_that_speaks_for_a_forwarded_client_counts_against_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = super::super::proxies::TrustedProxies::parse(Some("192.0.2.9")).unwrap();
        let register = fixture(Caps { total: 10, per_address: Some(2), exempt: proxy });
        let sockets: Vec<_> = (0..3).map(|_| pair(&listener)).collect();
        let slots: Vec<_> = sockets.iter().map(|(_, server)| register.admit(server, address(9)).unwrap()).collect();
        slots.iter().for_each(Slot::busy);
        assert!(slots[0].speaks_for(address(1)) && slots[1].speaks_for(address(1)));
        assert!(!slots[2].speaks_for(address(1)), "a third for one client is over its cap");
        slots[0].kept_alive();
        assert!(slots[2].speaks_for(address(1)), "after shedding that client's idle one");
        assert_eq!(register.open_count(), 2);
        drop(slots);
        assert!(register.lock().per_address.is_empty());
    }

    #[test]
    fn when_full_another_addresss_idle_connection_goes_if_needed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let register = fixture(Caps { total: 2, per_address: None, exempt: Default::default() });
        let sockets: Vec<_> = (0..3).map(|_| pair(&listener)).collect();
        let a = register.admit(&sockets[0].1, address(1)).unwrap();
        let b = register.admit(&sockets[1].1, address(2)).unwrap();
        b.busy();
        assert!(register.admit(&sockets[2].1, address(3)).is_none(), "a fresh connection gets its second");
        a.kept_alive();
        assert!(register.admit(&sockets[2].1, address(3)).is_some());
    }
}
