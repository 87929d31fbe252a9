//! Bounds PBKDF2 work, which runs in its own pool of threads: at most one
//! computation per core at once, and at most [`MAX_WAITING`] jobs handed
//! out and not yet done, of which one client address (or IPv6 /64) may
//! hold [`PER_ADDRESS`] and one account [`PER_ACCOUNT`]. The loop takes a
//! [`Ticket`] before it hands out a job; without one the request gets 503,
//! so a flood of sign-ins — even correct ones, from a few addresses or to
//! a few accounts — can hold neither every core, nor every place, nor
//! every connection slot.

use crate::tally;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Debug)]
pub struct Hashing {
    cores: Mutex<Cores>,
    released: Condvar,
    places: Mutex<Places>,
    shares: Shares,
}

/// How many places there are, in all and for each address and account.
#[derive(Debug, Clone, Copy)]
pub struct Shares {
    pub total: usize,
    pub per_address: usize,
    pub per_account: usize,
}

/// The cores free and the jobs waiting for one, in turn order.
#[derive(Debug, Default)]
struct Cores {
    free: usize,
    /// (turn, arrival) of each waiting job; the first runs next.
    waiting: std::collections::BTreeSet<(u64, u64)>,
    /// The turn of the job that started last.
    turn_now: u64,
    /// The last turn given to each address, while it is still ahead.
    last_turn: HashMap<IpAddr, u64>,
    next_arrival: u64,
}

/// The places taken, in all and by whom (only holders are kept).
#[derive(Debug, Default)]
struct Places {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    by_account: HashMap<String, usize>,
}

/// One job's place, given back when dropped (done, or never run).
#[derive(Debug)]
pub struct Ticket {
    hashing: Arc<Hashing>,
    address: IpAddr,
    account: String,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut places = self.hashing.places();
        places.total -= 1;
        tally::give_back(&mut places.by_address, &self.address, 1);
        tally::give_back(&mut places.by_account, &self.account, 1);
    }
}

impl Hashing {
    pub fn new(cores: usize, shares: Shares) -> Arc<Hashing> {
        Arc::new(Hashing {
            cores: Mutex::new(Cores { free: cores.max(1), ..Cores::default() }),
            released: Condvar::new(),
            places: Mutex::default(),
            shares,
        })
    }

    fn places(&self) -> MutexGuard<'_, Places> {
        self.places.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for one more job of `account` asked for from `address`, if
    /// neither they nor everyone together hold their most.
    pub fn ticket(self: &Arc<Self>, address: IpAddr, account: &str) -> Option<Ticket> {
        let mut places = self.places();
        let by_address = places.by_address.get(&address).copied().unwrap_or(0);
        let by_account = places.by_account.get(account).copied().unwrap_or(0);
        if places.total >= self.shares.total
            || by_address >= self.shares.per_address
            || by_account >= self.shares.per_account
        {
            return None;
        }
        places.total += 1;
        tally::take(&mut places.by_address, address, 1);
        tally::take(&mut places.by_account, account.to_owned(), 1);
        Some(Ticket { hashing: Arc::clone(self), address, account: account.to_owned() })
    }

    fn cores(&self) -> MutexGuard<'_, Cores> {
        self.cores.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `work` when a core is free and its turn has come; the ticket
    /// is given back after. Turns are fair between addresses (start-time
    /// fair queueing): a job's turn is one past its address's previous
    /// job's, or past the turn running now if that is later, so an address
    /// with many jobs waiting takes turns with one that has a single job,
    /// rather than making it wait behind all of them.
    pub fn run<T>(&self, ticket: Ticket, work: impl FnOnce() -> T) -> T {
        {
            let mut cores = self.cores();
            let (now, last) = (cores.turn_now, cores.last_turn.get(&ticket.address).copied().unwrap_or(0));
            let turn = (now.max(last) + 1, cores.next_arrival);
            cores.next_arrival += 1;
            cores.last_turn.insert(ticket.address, turn.0);
            cores.waiting.insert(turn);
            while cores.free == 0 || cores.waiting.first() != Some(&turn) {
                cores = self.released.wait(cores).unwrap_or_else(|e| e.into_inner());
            }
            cores.waiting.remove(&turn);
            cores.free -= 1;
            cores.turn_now = cores.turn_now.max(turn.0);
            let now = cores.turn_now;
            cores.last_turn.retain(|_, last| *last > now);
        }
        self.released.notify_all();
        let result = work();
        self.cores().free += 1;
        self.released.notify_all();
        drop(ticket);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const TWO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn shares(total: usize, per_address: usize, per_account: usize) -> Shares {
        Shares { total, per_address, per_account }
    }

    #[test]
    fn tickets_are_bounded_and_come_back() {
        let hashing = Hashing::new(1, shares(2, 2, 2));
        let first = hashing.ticket(ONE, "a").unwrap();
        let second = hashing.ticket(TWO, "b").unwrap();
        assert!(hashing.ticket(TWO, "c").is_none());
        drop(first);
        assert_eq!(hashing.run(hashing.ticket(ONE, "a").unwrap(), || 7), 7);
        drop(second);
        let places = hashing.places();
        assert_eq!((places.total, places.by_address.len(), places.by_account.len()), (0, 0, 0));
    }

    #[test]
    fn one_address_or_one_account_holds_at_most_its_share() {
        let hashing = Hashing::new(1, shares(10, 3, 2));
        let mine: Vec<_> = ["a", "b", "c"].iter().map(|account| hashing.ticket(ONE, account).unwrap()).collect();
        assert!(hashing.ticket(ONE, "d").is_none(), "the address's share is taken");
        assert!(hashing.ticket(TWO, "d").is_some(), "another address still gets a place");
        let _second = hashing.ticket(TWO, "a").unwrap();
        assert!(hashing.ticket(TWO, "a").is_none(), "the account's share is taken, from any address");
        drop(mine);
        assert!(hashing.ticket(ONE, "d").is_some());
    }

    #[test]
    fn an_address_with_one_job_does_not_wait_behind_anothers_many() {
        let hashing = Hashing::new(1, shares(32, 32, 32));
        let order = Arc::new(Mutex::new(Vec::new()));
        let gate = hashing.ticket(TWO, "gate").unwrap();
        let held = {
            let (hashing, order) = (Arc::clone(&hashing), Arc::clone(&order));
            std::thread::spawn(move || {
                hashing.run(gate, || std::thread::sleep(std::time::Duration::from_millis(100)));
                order.lock().unwrap().push("gate");
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        let spawn = |address: IpAddr, name: &'static str| {
            let (hashing, order) = (Arc::clone(&hashing), Arc::clone(&order));
            let ticket = hashing.ticket(address, name).unwrap();
            std::thread::spawn(move || hashing.run(ticket, || order.lock().unwrap().push(name)))
        };
        let mut threads: Vec<_> = (0..8).map(|_| spawn(ONE, "flood")).collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        threads.push(spawn(TWO, "victim"));
        held.join().unwrap();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let order = order.lock().unwrap();
        let victim = order.iter().position(|&name| name == "victim").unwrap();
        assert!(victim <= 2, "the victim ran second after the gate, not last: {order:?}");
    }

    #[test]
    fn one_job_per_core_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hashing = Hashing::new(2, shares(16, 16, 16));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (hashing, running, most) = (Arc::clone(&hashing), Arc::clone(&running), Arc::clone(&most));
                let ticket = hashing.ticket(ONE, "a").unwrap();
                std::thread::spawn(move || {
                    hashing.run(ticket, || {
                        let now = running.fetch_add(1, Ordering::AcqRel) + 1;
                        most.fetch_max(now, Ordering::AcqRel);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::AcqRel);
                    })
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert!(most.load(Ordering::Acquire) <= 2);
    }
}
