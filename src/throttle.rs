//! Brute-force protection: counts failed password attempts per account and
//! per client address, and refuses further attempts (429 + `Retry-After`)
//! before any PBKDF2 work. An attempt is reserved when it is admitted and
//! counts like a failure until its verdict, so concurrency cannot get more
//! guesses through than the limit. Each lockout doubles the next one.
//! Memory is bounded: a flood of distinct ids or addresses evicts the
//! stalest entries.

use crate::limits::{FAILURE_WINDOW, FAILURES_PER_ACCOUNT, FAILURES_PER_ADDRESS, MAX_LOCKOUT};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Entries kept per table.
const CAPACITY: usize = 10_000;
/// An admitted attempt counts until its verdict, or at most this long (so a
/// verdict that never comes cannot lock anyone out for good).
const PENDING_TTL: Duration = Duration::from_secs(120);
/// `Retry-After` for an attempt refused because others are being verified.
const PENDING_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Entry {
    failures: Vec<Instant>,
    /// Admission times of attempts still being verified.
    pending: Vec<Instant>,
    lockouts: u32,
    blocked_until: Option<Instant>,
    last_seen: Option<Instant>,
}

impl Entry {
    fn blocked(&self, now: Instant) -> Option<Duration> {
        self.blocked_until.and_then(|until| until.checked_duration_since(now)).filter(|left| !left.is_zero())
    }

    /// Why a new attempt must wait: a lockout, or the limit already taken
    /// by recent failures and attempts in flight.
    fn refusal(&self, limit: usize, now: Instant) -> Option<Duration> {
        let recent = self.failures.iter().filter(|at| now.saturating_duration_since(**at) < FAILURE_WINDOW).count();
        let in_flight = self.pending.iter().filter(|at| now.saturating_duration_since(**at) < PENDING_TTL).count();
        self.blocked(now).or_else(|| (recent + in_flight >= limit).then_some(PENDING_RETRY))
    }

    /// Stale: not blocked and no failure in the window or lockout history
    /// worth keeping (a day without trouble forgives).
    fn stale(&self, now: Instant) -> bool {
        let quiet_for = self.last_seen.map_or(Duration::MAX, |seen| now.saturating_duration_since(seen));
        self.blocked(now).is_none()
            && self.pending.iter().all(|at| now.saturating_duration_since(*at) >= PENDING_TTL)
            && (quiet_for >= MAX_LOCKOUT || (self.lockouts == 0 && quiet_for >= FAILURE_WINDOW))
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

    fn refusal(&self, key: &K, now: Instant) -> Option<Duration> {
        self.entries.get(key).and_then(|entry| entry.refusal(self.limit, now))
    }

    fn entry(&mut self, key: &K, now: Instant) -> &mut Entry {
        if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        let entry = self.entries.entry(key.clone()).or_default();
        entry.last_seen = Some(now);
        entry
    }

    fn reserve(&mut self, key: &K, now: Instant) {
        let entry = self.entry(key, now);
        entry.pending.retain(|at| now.saturating_duration_since(*at) < PENDING_TTL);
        entry.pending.push(now);
    }

    /// Ends the oldest reservation of `key` (if it is still there).
    fn settle(&mut self, key: &K) {
        if let Some(entry) = self.entries.get_mut(key)
            && !entry.pending.is_empty()
        {
            entry.pending.remove(0);
        }
    }

    /// Counts a failure; returns the lockout it starts, if it starts one.
    fn fail(&mut self, key: &K, now: Instant) -> Option<Duration> {
        self.settle(key);
        let limit = self.limit;
        let entry = self.entry(key, now);
        entry.failures.retain(|at| now.saturating_duration_since(*at) < FAILURE_WINDOW);
        entry.failures.push(now);
        if entry.failures.len() < limit {
            return None;
        }
        let lockout = FAILURE_WINDOW.saturating_mul(1 << entry.lockouts.min(16)).min(MAX_LOCKOUT);
        entry.lockouts += 1;
        entry.blocked_until = Some(now + lockout);
        entry.failures.clear();
        Some(lockout)
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

/// Lockouts that a failure started, and for how long.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lockouts {
    pub account: Option<Duration>,
    pub address: Option<Duration>,
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
        Throttle {
            by_account: Table::new(FAILURES_PER_ACCOUNT, capacity),
            by_address: Table::new(FAILURES_PER_ADDRESS, capacity),
        }
    }

    /// Admits an attempt for `account` from `address`, or says how long
    /// the caller must wait (locked out, or the limit is taken by recent
    /// failures and attempts still in flight). An admitted attempt ends
    /// with [`Throttle::failure`] or [`Throttle::success`].
    pub fn reserve(&mut self, account: &str, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let account = account.to_owned();
        let refusal = self.by_account.refusal(&account, now).max(self.by_address.refusal(&address, now));
        if let Some(wait) = refusal {
            return Err(wait);
        }
        self.by_account.reserve(&account, now);
        self.by_address.reserve(&address, now);
        Ok(())
    }

    /// An admitted attempt failed: it now counts as a failure. Returns the
    /// lockouts it started.
    pub fn failure(&mut self, account: &str, address: IpAddr, now: Instant) -> Lockouts {
        Lockouts {
            account: self.by_account.fail(&account.to_owned(), now),
            address: self.by_address.fail(&address, now),
        }
    }

    /// An admitted attempt succeeded: the account's counter starts again
    /// (not the address's).
    pub fn success(&mut self, account: &str, address: IpAddr) {
        self.by_account.forget(&account.to_owned());
        self.by_address.settle(&address);
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

    impl Throttle {
        /// Whether an attempt would be admitted now, without taking a place.
        fn check(&self, account: &str, address: IpAddr, now: Instant) -> Option<Duration> {
            self.by_account.refusal(&account.to_owned(), now).max(self.by_address.refusal(&address, now))
        }

        /// An attempt admitted and failed at `now`.
        fn failed(&mut self, account: &str, address: IpAddr, now: Instant) -> Lockouts {
            self.reserve(account, address, now).expect("admitted");
            self.failure(account, address, now)
        }
    }

    #[test]
    fn five_failures_lock_the_account_and_success_resets() {
        let start = Instant::now();
        let mut throttle = Throttle::default();
        for i in 0..4 {
            throttle.failed("acct", address(i), start);
        }
        assert_eq!(throttle.check("acct", HOME, start), None);
        throttle.reserve("acct", HOME, start).unwrap();
        throttle.success("acct", HOME);
        for i in 0..4 {
            throttle.failed("acct", address(i), start);
        }
        assert_eq!(throttle.check("acct", HOME, start), None, "the success reset the count");
        let started = throttle.failed("acct", address(9), start);
        assert_eq!(
            started,
            Lockouts { account: Some(FAILURE_WINDOW), address: None },
            "the fifth failure starts a lockout"
        );
        assert_eq!(throttle.check("acct", HOME, start), Some(FAILURE_WINDOW));
        assert_eq!(throttle.check("other", HOME, start), None);
        assert_eq!(throttle.check("acct", HOME, start + FAILURE_WINDOW), None);
    }

    #[test]
    fn attempts_in_flight_count_until_their_verdict() {
        let start = Instant::now();
        let mut throttle = Throttle::default();
        let admitted = (0..40).filter(|i| throttle.reserve("acct", address(*i), start).is_ok()).count();
        assert_eq!(admitted, FAILURES_PER_ACCOUNT, "40 simultaneous guesses, 5 admitted");
        assert_eq!(throttle.reserve("acct", HOME, start), Err(PENDING_RETRY));
        for i in 0..5 {
            let _ = throttle.failure("acct", address(i), start);
        }
        assert_eq!(throttle.reserve("acct", HOME, start), Err(FAILURE_WINDOW), "five verdicts, then a lockout");
        // A verdict that never comes stops counting after a while.
        let mut lost = Throttle::default();
        for i in 0..5 {
            lost.reserve("other", address(i), start).unwrap();
        }
        assert!(lost.reserve("other", HOME, start).is_err());
        assert!(lost.reserve("other", HOME, start + PENDING_TTL).is_ok());
    }

    proptest::proptest! {
        /// However attempts interleave, an account never gets more verdicts
        /// within the window than the limit allows before a lockout.
        #[test]
        fn concurrency_never_buys_extra_guesses(steps in proptest::collection::vec(0..3u8, 1..200)) {
            let now = Instant::now();
            let mut throttle = Throttle::default();
            let (mut in_flight, mut verdicts) = (0usize, 0usize);
            for (i, step) in steps.into_iter().enumerate() {
                let from = address(i as u32);
                match step {
                    0 if throttle.reserve("acct", from, now).is_ok() => in_flight += 1,
                    0 => {}
                    _ if in_flight > 0 => {
                        let _ = throttle.failure("acct", from, now);
                        in_flight -= 1;
                        verdicts += 1;
                    }
                    _ => {}
                }
                proptest::prop_assert!(verdicts + in_flight <= FAILURES_PER_ACCOUNT, "{verdicts} + {in_flight}");
            }
        }
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let start = Instant::now();
        let mut throttle = Throttle::default();
        for i in 0..4 {
            throttle.failed("acct", HOME, start + Duration::from_secs(i));
        }
        throttle.failed("acct", HOME, start + FAILURE_WINDOW + Duration::from_secs(5));
        assert_eq!(throttle.check("acct", HOME, start + FAILURE_WINDOW + Duration::from_secs(5)), None);
    }

    #[test]
    fn twenty_failures_lock_the_address_and_lockouts_double() {
        let start = Instant::now();
        let mut throttle = Throttle::default();
        for i in 0..20 {
            throttle.failed(&format!("id{i}"), HOME, start);
        }
        assert_eq!(throttle.check("fresh", HOME, start), Some(FAILURE_WINDOW));
        assert_eq!(throttle.check("fresh", address(1), start), None);
        let later = start + FAILURE_WINDOW;
        for i in 0..20 {
            throttle.failed(&format!("again{i}"), HOME, later);
        }
        assert_eq!(throttle.check("fresh", HOME, later), Some(FAILURE_WINDOW * 2));
    }

    #[test]
    fn memory_is_bounded_and_lockouts_survive_a_flood() {
        let start = Instant::now();
        let mut throttle = Throttle::with_capacity(100);
        for _ in 0..5 {
            throttle.failed("victim", HOME, start);
        }
        for i in 0..10_000 {
            throttle.failed(&format!("flood{i}"), address(i), start + Duration::from_millis(u64::from(i) + 1));
        }
        assert!(throttle.by_account.entries.len() <= 100);
        assert!(throttle.by_address.entries.len() <= 100);
        assert!(throttle.check("victim", address(99_999), start + Duration::from_secs(20)).is_some());
        throttle.prune(start + MAX_LOCKOUT * 2);
        assert!(throttle.by_account.entries.is_empty());
    }
}
