//! The waiting room: where a connection waits when it has nothing to do,
//! holding no thread. One thread owns readiness (epoll) and one timer
//! structure for every wait's deadline; work threads ([`Pool`]) take a
//! connection when there is work on it and park it here again after.
//!
//! A parked connection waits for one of these ([`Wait`]):
//! - **its next request**: the room reads what arrives (without
//!   blocking) until a whole head is there, then hands it to a work
//!   thread — or answers it here when its tenant can at once, with nothing
//!   that could wait ([`Tenant::quick`]: a read answered since the last
//!   commit, as nginx's one worker answers a static file). Silent until
//!   the idle deadline: closed. A head begun and not
//!   whole by the head deadline: handed over late (the worker answers 408);
//! - **the loop's answer** to its request: delivered by address
//!   (connection id and the request's number, [`Address`]), never by a
//!   channel of its own. A client that hangs up meanwhile is closed; one
//!   waiting longer than [`STALLED_AFTER`] may be shed to make room;
//! - **the next event of its stream**, or the time of its next keep-alive
//!   comment (a tick);
//! - **its socket**, while a body arrives or an answer leaves slower than
//!   the socket moves it: until it is readable (writable) again, or the
//!   transfer's pace deadline passes;
//! - **the end of lingering**: a closed connection reads and discards
//!   what its client still sends for a while, so the answer written
//!   before is not lost to a reset.
//!
//! A message for a connection that is away (on a work thread) waits in its
//! mail and is taken when it parks again; one for a connection that is
//! gone is dropped.

use super::conn::{Connection, Filled, Limits};
use super::pool::Pool;
use rustix::event::{EventfdFlags, Timespec, epoll, eventfd};
use rustix::fd::OwnedFd;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// A connection waiting on the loop this long counts as stalled: it may
/// be shed for a newcomer when the server is full (its client asks again
/// and loses nothing).
const STALLED_AFTER: Duration = Duration::from_secs(1);
/// How long a closed connection reads what its client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// Messages that may wait for a connection at work; one more closes it
/// when it parks (a stream's client that reads too slowly resumes from its
/// last event instead of making the server hold the rest).
const MAX_MAIL: usize = 16;
/// Readiness reported at once, at most.
const EVENTS: usize = 256;
/// The data of the room's own bell in the epoll set.
const BELL: u64 = u64::MAX;

/// A connection as the room holds it: its socket, and what picks up the
/// work when it is woken.
pub trait Tenant: Send + Sized + 'static {
    /// What the loop sends it.
    type Message: Send + 'static;
    fn connection(&mut self) -> &mut Connection;
    fn connection_ref(&self) -> &Connection;
    /// Picks up on a work thread where it left off.
    fn resume(self, wake: Wake<Self::Message>);
    /// Does what its whole head asks here on the room thread, if that
    /// can be done at once and nothing in it can wait (a read answered
    /// since the last commit); `None`: a work thread takes the head.
    fn quick(&mut self) -> Option<Next>;
}

/// What a connection does after a step of its work.
pub enum Next {
    /// Park until this comes.
    Wait(Wait),
    /// A whole head is buffered already: take it now.
    Head,
    /// Close at once (nothing to say, or the client is gone).
    Close,
    /// Close after the answer just written, reading what the client still sends.
    Linger,
}

/// Why a parked connection was woken.
#[derive(Debug)]
pub enum Wake<M> {
    /// A whole head (or one that can only be refused) has arrived.
    Head,
    /// A head begun did not arrive whole by its deadline.
    Late,
    /// A stream's keep-alive (or end) time came.
    Tick,
    /// Its socket can give (take) more of the body (answer) in transfer.
    Ready,
    /// The loop sent this.
    Message(M),
}

/// What a parked connection waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The head of its next request.
    Request,
    /// The loop's answer to its request `number`.
    Loop { number: u64 },
    /// The next event of the stream of request `number`, or `tick`.
    Stream { number: u64, tick: Instant },
    /// More of the body being received, until `due` (then it is late).
    Receive { due: Instant },
    /// Room for more of the answer (or stream) of request `number` being
    /// sent, until `due`.
    Send { number: u64, due: Instant },
    /// The end of lingering after a close.
    Linger,
}

/// Where the loop's messages for one request go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    pub connection: u64,
    /// The request's number on its connection: a message for an earlier
    /// request never reaches a later one.
    pub number: u64,
}

/// Delivers the loop's messages by address.
pub trait Mailbox<M>: Send + Sync {
    /// `false` when nobody will take it (the connection is gone, or its
    /// request is over).
    fn deliver(&self, to: Address, message: M) -> bool;
}

/// How far a request being read has come, for its deadline.
#[derive(Debug, Clone, Copy)]
struct Since {
    head_began: Option<Instant>,
    body_awaited: bool,
}

struct Parked<T> {
    tenant: T,
    wait: Wait,
    /// Its entry in the timers, if it has one.
    deadline: Option<Instant>,
    /// When the head now arriving began.
    head_began: Option<Instant>,
    /// Its head is whole and its small body is awaited (the deadline is
    /// the body's).
    body_awaited: bool,
    /// Added to the epoll set (then re-armed, not added).
    registered: bool,
}

enum Spot<T: Tenant> {
    /// On a work thread (or being looked at by the room thread): messages
    /// wait here, each with the request number it is for; `waiter` is the
    /// work thread waiting a moment for one.
    Away {
        mail: VecDeque<(u64, T::Message)>,
        registered: bool,
        waiter: Option<Thread>,
        /// More came than [`MAX_MAIL`]: it closes when it parks.
        overflowed: bool,
    },
    Here(Parked<T>),
}

struct Table<T: Tenant> {
    spots: HashMap<u64, Spot<T>>,
    timers: BTreeSet<(Instant, u64)>,
    /// When the room thread will look at the timers next.
    sleeping_until: Option<Instant>,
}

/// The waiting room of every open connection.
pub struct Room<T: Tenant> {
    epoll: OwnedFd,
    bell: OwnedFd,
    table: Mutex<Table<T>>,
    pool: Pool,
    /// The deadlines of the waits for a request (of the connection's
    /// [`Limits`]).
    limits: Limits,
}

/// Keeps a connection's place in the room while it lives: when it is
/// dropped anywhere (closed by a worker, or a panic), its mail goes too.
pub struct Presence {
    room: Weak<dyn Forget>,
    connection: u64,
}

trait Forget: Send + Sync {
    fn forget(&self, connection: u64);
}

impl Drop for Presence {
    fn drop(&mut self) {
        if let Some(room) = self.room.upgrade() {
            room.forget(self.connection);
        }
    }
}

impl<T: Tenant> Forget for Room<T> {
    fn forget(&self, connection: u64) {
        let gone = self.lock().remove(connection);
        drop(gone);
    }
}

impl<T: Tenant> Table<T> {
    /// Takes a connection's spot out, with its timer.
    fn remove(&mut self, connection: u64) -> Option<Spot<T>> {
        let spot = self.spots.remove(&connection)?;
        if let Spot::Here(Parked { deadline: Some(at), .. }) = &spot {
            self.timers.remove(&(*at, connection));
        }
        Some(spot)
    }

    /// Takes a parked connection to work on, leaving an empty mailbox.
    fn take(&mut self, connection: u64) -> Option<Parked<T>> {
        match self.spots.get(&connection)? {
            Spot::Here(_) => {}
            Spot::Away { .. } => return None,
        }
        let Some(Spot::Here(parked)) = self.remove(connection) else { unreachable!("looked at above") };
        let away = Spot::Away { mail: VecDeque::new(), registered: parked.registered, waiter: None, overflowed: false };
        self.spots.insert(connection, away);
        Some(parked)
    }
}

impl<T: Tenant> Room<T> {
    /// Opens the room and starts its thread; work goes to `pool`.
    pub fn start(pool: Pool, limits: Limits) -> std::io::Result<Arc<Room<T>>> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let bell = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(&epoll, &bell, epoll::EventData::new_u64(BELL), epoll::EventFlags::IN)?;
        let room = Arc::new(Room {
            epoll,
            bell,
            table: Mutex::new(Table { spots: HashMap::new(), timers: BTreeSet::new(), sleeping_until: None }),
            pool,
            limits,
        });
        let theirs = Arc::clone(&room);
        thread::Builder::new().name("room".into()).spawn(move || theirs.run())?;
        Ok(room)
    }

    fn lock(&self) -> MutexGuard<'_, Table<T>> {
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The guard a new connection keeps for its life.
    pub fn presence(self: &Arc<Self>, connection: u64) -> Presence {
        let room: Arc<dyn Forget> = Arc::clone(self) as Arc<dyn Forget>;
        Presence { room: Arc::downgrade(&room), connection }
    }

    /// Parks `tenant` until what it waits for comes. When a message it
    /// waits for came while it was away, it gets it back at once instead,
    /// to carry on on its own thread.
    pub fn park(&self, mut tenant: T, wait: Wait) -> Result<(), (T, T::Message)> {
        let now = Instant::now();
        let head_began = (wait == Wait::Request && tenant.connection_ref().buffered() > 0).then_some(now);
        // What the register may shed it for, said once as the wait begins
        // (a head's bytes arriving later are no progress: a head counts
        // only once it is whole).
        match wait {
            // A new connection stays fresh (idle only after a while).
            Wait::Request if head_began.is_none() && tenant.connection_ref().requests() == 0 => {}
            Wait::Request if head_began.is_none() => tenant.connection().slot().kept_alive(),
            Wait::Request => tenant.connection().slot().reading(),
            // A stream between events may be shed like a held long-poll.
            Wait::Stream { .. } => tenant.connection().slot().waiting(),
            Wait::Loop { .. } | Wait::Receive { .. } | Wait::Send { .. } | Wait::Linger => {}
        }
        let deadline = match wait {
            Wait::Request => head_began.map_or(now + self.limits.idle_timeout, |at| at + self.limits.head_timeout),
            Wait::Loop { .. } => now + STALLED_AFTER,
            Wait::Stream { tick, .. } => tick,
            Wait::Receive { due } | Wait::Send { due, .. } => due,
            Wait::Linger => now + LINGER,
        };
        self.settle(tenant, wait, Some(deadline), Since { head_began, body_awaited: false })
    }

    /// Parks `tenant` with the given deadline (none: only a message or
    /// its socket wakes it).
    fn settle(&self, tenant: T, wait: Wait, deadline: Option<Instant>, since: Since) -> Result<(), (T, T::Message)> {
        let connection = tenant.connection_ref().id();
        let mut table = self.lock();
        // A connection is one tenant, so its spot is away or new, never
        // here; were it here, the stale one goes once the lock is let go.
        let mut stale = None;
        let (mail, registered) = match table.spots.remove(&connection) {
            Some(Spot::Away { overflowed: true, .. }) => {
                drop(table);
                drop(tenant);
                return Ok(());
            }
            Some(Spot::Away { mail, registered, .. }) => (mail, registered),
            Some(Spot::Here(parked)) => {
                stale = Some(parked);
                (VecDeque::new(), false)
            }
            None => (VecDeque::new(), false),
        };
        let number = match wait {
            Wait::Loop { number } | Wait::Stream { number, .. } | Wait::Send { number, .. } => Some(number),
            Wait::Request | Wait::Receive { .. } | Wait::Linger => None,
        };
        let mut mail: VecDeque<_> = mail.into_iter().filter(|(to, _)| Some(*to) == number).collect();
        if let Some((_, message)) = mail.pop_front() {
            table.spots.insert(connection, Spot::Away { mail, registered, waiter: None, overflowed: false });
            drop(table);
            drop(stale);
            return Err((tenant, message));
        }
        let interest = match wait {
            Wait::Request | Wait::Linger => epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
            // A client may send its request and close its side at once:
            // its answer is still written. Only one waiting on the loop for
            // longer (a long-poll) is closed when its client has closed.
            Wait::Loop { .. } if deadline.is_some() => epoll::EventFlags::empty(),
            Wait::Loop { .. } | Wait::Stream { .. } => epoll::EventFlags::RDHUP,
            Wait::Receive { .. } => epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
            // A client that closed its side may still read its answer.
            Wait::Send { .. } => epoll::EventFlags::OUT,
        } | epoll::EventFlags::ONESHOT;
        let data = epoll::EventData::new_u64(connection);
        let socket = tenant.connection_ref().socket();
        let armed = if registered {
            epoll::modify(&self.epoll, socket, data, interest)
        } else {
            epoll::add(&self.epoll, socket, data, interest)
        };
        if armed.is_err() {
            // Not watchable (broken under us): the connection ends.
            drop(table);
            drop((tenant, stale));
            return Ok(());
        }
        let ring = deadline.is_some_and(|at| table.sleeping_until.is_none_or(|sleep| at < sleep));
        if let Some(at) = deadline {
            table.timers.insert((at, connection));
        }
        let parked = Parked {
            tenant,
            wait,
            deadline,
            head_began: since.head_began,
            body_awaited: since.body_awaited,
            registered: true,
        };
        table.spots.insert(connection, Spot::Here(parked));
        drop(table);
        drop(stale);
        if ring {
            self.ring();
        }
        Ok(())
    }

    /// Closes a connection that waits (chosen to make room for another);
    /// `false` if it is at work. It is dropped on a work thread, never
    /// here: the caller holds the register's lock, which dropping takes.
    pub fn shed(&self, connection: u64) -> bool {
        let spot = {
            let mut table = self.lock();
            match table.spots.get(&connection) {
                Some(Spot::Here(_)) => table.remove(connection),
                _ => None,
            }
        };
        match spot {
            Some(spot) => {
                self.pool.run(Box::new(move || drop(spot)));
                true
            }
            None => false,
        }
    }

    /// Waits on this (work) thread up to `grace` for a message to
    /// `connection`, which is away at work here: most answers come from the
    /// loop within microseconds, and taking them here spares handing the
    /// connection to the room and back. Parking it next finds the message.
    pub fn expect(&self, connection: u64, grace: Duration) {
        let until = Instant::now() + grace;
        loop {
            {
                let mut table = self.lock();
                let Some(Spot::Away { mail, waiter, .. }) = table.spots.get_mut(&connection) else { return };
                if !mail.is_empty() || Instant::now() >= until {
                    *waiter = None;
                    return;
                }
                *waiter = Some(thread::current());
            }
            thread::park_timeout(until.saturating_duration_since(Instant::now()));
        }
    }

    /// Ends a connection without losing the answer written before: no
    /// more is sent, and what the client still sends is read and
    /// discarded for [`LINGER`].
    pub fn linger(&self, mut tenant: T) {
        tenant.connection().shut_write();
        // Nothing is delivered to a lingering connection.
        let _ = self.park(tenant, Wait::Linger);
    }

    fn ring(&self) {
        let _ = rustix::io::write(&self.bell, &1u64.to_ne_bytes());
    }

    /// Hands a connection to a work thread.
    fn dispatch(&self, tenant: T, wake: Wake<T::Message>) {
        self.pool.run(Box::new(move || tenant.resume(wake)));
    }

    fn run(&self) {
        let mut events = Vec::with_capacity(EVENTS);
        loop {
            let next = {
                let mut table = self.lock();
                let next = table.timers.first().map(|(at, _)| *at);
                table.sleeping_until = next;
                next
            };
            let timeout = next.map(|at| {
                let left = at.saturating_duration_since(Instant::now());
                Timespec::try_from(left).unwrap_or(Timespec { tv_sec: 3600, tv_nsec: 0 })
            });
            events.clear();
            if epoll::wait(&self.epoll, rustix::buffer::spare_capacity(&mut events), timeout.as_ref()).is_err() {
                // EINTR: look again.
                continue;
            }
            for event in &events {
                match event.data.u64() {
                    BELL => {
                        let mut count = [0u8; 8];
                        let _ = rustix::io::read(&self.bell, &mut count);
                    }
                    connection => self.ready(connection, event.flags),
                }
            }
            self.fire_timers(Instant::now());
        }
    }

    /// Its socket is readable or hung up.
    fn ready(&self, connection: u64, flags: epoll::EventFlags) {
        let Some(mut parked) = self.lock().take(connection) else { return };
        let hung_up = flags.intersects(epoll::EventFlags::RDHUP | epoll::EventFlags::HUP | epoll::EventFlags::ERR);
        let gone = match parked.wait {
            Wait::Request => match parked.tenant.connection().fill() {
                Filled::Closed => true,
                Filled::Head => return self.answer_here(parked.tenant),
                Filled::Partial if parked.head_began.is_none() => {
                    // The first bytes of a head: its own deadline starts.
                    parked.tenant.connection().slot().reading();
                    let now = Instant::now();
                    parked.head_began = Some(now);
                    parked.deadline = Some(now + self.limits.head_timeout);
                    false
                }
                Filled::Body if !parked.body_awaited => {
                    // A whole head: its small body has as long again (SPEC
                    // §1: a JSON body within 10 s of its head).
                    let now = Instant::now();
                    parked.body_awaited = true;
                    parked.head_began.get_or_insert(now);
                    parked.deadline = Some(now + self.limits.json_body_timeout);
                    false
                }
                Filled::Partial | Filled::Body | Filled::Nothing => false,
            },
            // Its client has closed its side (a held request is watched for
            // that only after a second): gone, even with bytes it sent
            // still unread (waiting for those again would only see the
            // same hang-up, at once, for ever).
            Wait::Loop { .. } | Wait::Stream { .. } => hung_up,
            // The transfer finds out what there is (a hang-up included).
            Wait::Receive { .. } | Wait::Send { .. } => return self.dispatch(parked.tenant, Wake::Ready),
            Wait::Linger => !parked.tenant.connection().discard(),
        };
        if !gone {
            self.resettle(parked);
        }
    }

    /// A whole head: answered here if its tenant can at once, else handed
    /// to a work thread. A panic on the way loses the connection, never
    /// the room, as on a work thread.
    fn answer_here(&self, mut tenant: T) {
        let here = panic::catch_unwind(AssertUnwindSafe(|| match tenant.quick() {
            Some(next) => self.carry(tenant, next),
            None => self.dispatch(tenant, Wake::Head),
        }));
        if here.is_err() {
            crate::log::error("a connection's work panicked; its connection was closed");
        }
    }

    /// Goes on with a connection that answered on this thread.
    fn carry(&self, tenant: T, next: Next) {
        match next {
            Next::Wait(wait) => {
                if let Err((tenant, message)) = self.park(tenant, wait) {
                    self.dispatch(tenant, Wake::Message(message));
                }
            }
            Next::Head => self.dispatch(tenant, Wake::Head),
            Next::Close => drop(tenant),
            Next::Linger => self.linger(tenant),
        }
    }

    /// Parks a connection again as it was (its deadline unchanged); a
    /// message that came meanwhile wakes it at once.
    fn resettle(&self, parked: Parked<T>) {
        let Parked { tenant, wait, deadline, head_began, body_awaited, .. } = parked;
        if let Err((tenant, message)) = self.settle(tenant, wait, deadline, Since { head_began, body_awaited }) {
            self.dispatch(tenant, Wake::Message(message));
        }
    }

    fn fire_timers(&self, now: Instant) {
        loop {
            let parked = {
                let mut table = self.lock();
                let Some(&(at, connection)) = table.timers.first() else { return };
                if at > now {
                    return;
                }
                table.timers.pop_first();
                if let Some(Spot::Here(parked)) = table.spots.get_mut(&connection) {
                    parked.deadline = None;
                }
                table.take(connection)
            };
            let Some(mut parked) = parked else { continue };
            match parked.wait {
                // Silent till its idle deadline, or done lingering: closed.
                Wait::Request if parked.head_began.is_none() => {}
                Wait::Linger => {}
                // A head, body or answer behind its deadline.
                Wait::Request | Wait::Receive { .. } | Wait::Send { .. } => self.dispatch(parked.tenant, Wake::Late),
                Wait::Stream { .. } => self.dispatch(parked.tenant, Wake::Tick),
                Wait::Loop { .. } => {
                    // Waiting long on the loop (a long-poll): it may be
                    // shed now, and only the loop or a hang-up wakes it.
                    parked.tenant.connection().slot().waiting();
                    self.resettle(parked);
                }
            }
        }
    }
}

impl<T: Tenant> Mailbox<T::Message> for Room<T> {
    fn deliver(&self, to: Address, message: T::Message) -> bool {
        let mut table = self.lock();
        let parked = match table.spots.get_mut(&to.connection) {
            None => return false,
            Some(Spot::Away { overflowed: true, .. }) => return false,
            Some(Spot::Away { mail, overflowed, .. }) if mail.len() >= MAX_MAIL => {
                *overflowed = true;
                let dropped = std::mem::take(mail);
                drop(table);
                drop(dropped);
                return false;
            }
            Some(Spot::Away { mail, waiter, .. }) => {
                mail.push_back((to.number, message));
                if let Some(waiter) = waiter.take() {
                    waiter.unpark();
                }
                return true;
            }
            Some(Spot::Here(parked)) => match parked.wait {
                // A stream's events come while its last ones are still
                // being sent too.
                Wait::Loop { number } | Wait::Stream { number, .. } | Wait::Send { number, .. }
                    if number == to.number =>
                {
                    table.take(to.connection)
                }
                // For a request that is over.
                _ => return false,
            },
        };
        drop(table);
        match parked {
            Some(parked) => {
                self.dispatch(parked.tenant, Wake::Message(message));
                true
            }
            None => false,
        }
    }
}
