//! Brute-force protection: counts failed password attempts per account and
//! per client address, and refuses further attempts (429 + `Retry-After`)
//! before any PBKDF2 work. Each lockout doubles the next one. Memory is
//! bounded: a flood of distinct ids or addresses evicts the stalest entries.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures are counted over this window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures per account id within the window before a lockout.
pub const ID_LIMIT: usize = 5;
/// Failures per client address within the window before a lockout.
pub const ADDRESS_LIMIT: usize = 20;
/// The longest lockout, however often it repeats.
const MAX_LOCKOUT: Duration = Duration::from_secs(24 * 3600);
/// Entries kept per table.
const CAPACITY: usize = 10_000;

#[derive(Debug, Default)]
struct Entry {
    failures: Vec<Instant>,
    lockouts: u32,
    blocked_until: Option<Instant>,
    last_seen: Option<Instant>,
}

impl Entry {
    fn blocked(&self, now: Instant) -> Option<Duration> {
        self.blocked_until.and_then(|until| until.checked_duration_since(now)).filter(|left| !left.is_zero())
    }

    /// Stale: not blocked and no failure in the window or lockout history
    /// worth keeping (a day without trouble forgives).
    fn stale(&self, now: Instant) -> bool {
        let quiet_for = self.last_seen.map_or(Duration::MAX, |seen| now.saturating_duration_since(seen));
        self.blocked(now).is_none() && (quiet_for >= MAX_LOCKOUT || (self.lockouts == 0 && quiet_for >= WINDOW))
    }
}

#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Entry>,
    limit: usize,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(limit: usize, capacity: usize) -> Self {
        Table { entries: HashMap::new(), limit, capacity }
    }

    fn blocked(&self, key: &K, now: Instant) -> Option<Duration> {
        self.entries.get(key).and_then(|entry| entry.blocked(now))
    }

    fn fail(&mut self, key: &K, now: Instant) {
        if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        let entry = self.entries.entry(key.clone()).or_default();
        entry.last_seen = Some(now);
        entry.failures.retain(|at| now.saturating_duration_since(*at) < WINDOW);
        entry.failures.push(now);
        if entry.failures.len() >= self.limit {
            let lockout = WINDOW.saturating_mul(1 << entry.lockouts.min(16)).min(MAX_LOCKOUT);
            entry.lockouts += 1;
            entry.blocked_until = Some(now + lockout);
            entry.failures.clear();
        }
    }

    fn forget(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Drops stale entries; if none are, the one seen longest ago, sparing
    /// locked-out ones while any other is left.
    fn make_room(&mut self, now: Instant) {
        self.entries.retain(|_, entry| !entry.stale(now));
        if self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| (entry.blocked(now).is_some(), entry.last_seen))
                .map(|(key, _)| key.clone());
            if let Some(key) = oldest {
                self.entries.remove(&key);
            }
        }
    }
}

#[derive(Debug)]
pub struct Throttle {
    by_account: Table<String>,
    by_address: Table<IpAddr>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::with_capacity(CAPACITY)
    }
}

impl Throttle {
    pub fn with_capacity(capacity: usize) -> Self {
        Throttle { by_account: Table::new(ID_LIMIT, capacity), by_address: Table::new(ADDRESS_LIMIT, capacity) }
    }

    /// How long the caller must wait, if it is locked out (by account hash
    /// or by address).
    pub fn check(&self, account: &str, address: IpAddr, now: Instant) -> Option<Duration> {
        let by_account = self.by_account.blocked(&account.to_owned(), now);
        let by_address = self.by_address.blocked(&address, now);
        by_account.max(by_address)
    }

    pub fn failure(&mut self, account: &str, address: IpAddr, now: Instant) {
        self.by_account.fail(&account.to_owned(), now);
        self.by_address.fail(&address, now);
    }

    /// A success resets the account's counter (not the address's).
    pub fn success(&mut self, account: &str) {
        self.by_account.forget(&account.to_owned());
    }

    /// Drops entries that no longer matter.
    pub fn prune(&mut self, now: Instant) {
        self.by_account.entries.retain(|_, entry| !entry.stale(now));
        self.by_address.entries.retain(|_, entry| !entry.stale(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    fn address(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn five_failures_lock_the_account_and_success_resets() {
        let start = Instant::now();
        let mut throttle = Throttle::default();
        for i in 0..4 {
            throttle.failure("acct", address(i), start);
        }
        assert_eq!(throttle.check("acct", HOME, start), None);
        throttle.success("acct");
        for i in 0..4 {
            throttle.failure("acct", address(i), start);
        }
        assert_eq!(throttle.check("acct", HOME, start), None, "the success reset the count");
        throttle.failure("acct", address(9), start);
        assert_eq!(throttle.check("acct", HOME, start), Some(WINDOW));
        assert_eq!(throttle.check("other", HOME, start), None);
        assert_eq!(throttle.check("acct", HOME, start + WINDOW), None);
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let start = Instant::now();
        let mut throttle = Throttle::default();
        for i in 0..4 {
            throttle.failure("acct", HOME, start + Duration::from_secs(i));
        }
        throttle.failure("acct", HOME, start + WINDOW + Duration::from_secs(5));
        assert_eq!(throttle.check("acct", HOME, start + WINDOW + Duration::from_secs(5)), None);
    }

    #[test]
    fn twenty_failures_lock_the_address_and_lockouts_double() {
        let start = Instant::now();
        let mut throttle = Throttle::default();
        for i in 0..20 {
            throttle.failure(&format!("id{i}"), HOME, start);
        }
        assert_eq!(throttle.check("fresh", HOME, start), Some(WINDOW));
        assert_eq!(throttle.check("fresh", address(1), start), None);
        let later = start + WINDOW;
        for i in 0..20 {
            throttle.failure(&format!("again{i}"), HOME, later);
        }
        assert_eq!(throttle.check("fresh", HOME, later), Some(WINDOW * 2));
    }

    #[test]
    fn memory_is_bounded_and_lockouts_survive_a_flood() {
        let start = Instant::now();
        let mut throttle = Throttle::with_capacity(100);
        for _ in 0..5 {
            throttle.failure("victim", HOME, start);
        }
        for i in 0..10_000 {
            throttle.failure(&format!("flood{i}"), address(i), start + Duration::from_millis(u64::from(i) + 1));
        }
        assert!(throttle.by_account.entries.len() <= 100);
        assert!(throttle.by_address.entries.len() <= 100);
        assert!(throttle.check("victim", address(99_999), start + Duration::from_secs(20)).is_some());
        throttle.prune(start + MAX_LOCKOUT * 2);
        assert!(throttle.by_account.entries.is_empty());
    }
}
