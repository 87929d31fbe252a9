//! Sliding-window rate limits (registrations and password-reset requests
//! per client address, reset tokens per account): at most `limit` events
//! per key within `window`. A place is reserved before the work that may
//! use it (so concurrent requests cannot all slip under the limit) and
//! then committed (it counts) or released. Memory is bounded.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A reservation whose outcome never came stops counting after this long.
const PENDING_TTL: Duration = Duration::from_secs(120);
/// `Retry-After` when the places are taken by requests still in flight.
const PENDING_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Entry {
    /// When the events that count happened.
    done: Vec<Instant>,
    /// When the places still in flight were reserved.
    pending: Vec<Instant>,
}

impl Entry {
    fn forget_old(&mut self, window: Duration, now: Instant) {
        self.done.retain(|at| now.saturating_duration_since(*at) < window);
        self.pending.retain(|at| now.saturating_duration_since(*at) < PENDING_TTL);
    }

    fn latest(&self) -> Option<Instant> {
        self.done.iter().chain(&self.pending).max().copied()
    }
}

#[derive(Debug)]
pub struct RateLimit<K> {
    limit: usize,
    window: Duration,
    capacity: usize,
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> RateLimit<K> {
    pub fn new(limit: usize, window: Duration, capacity: usize) -> Self {
        RateLimit { limit, window, capacity: capacity.max(1), entries: HashMap::new() }
    }

    /// Takes a place for `key`, or says how long until one frees up.
    pub fn reserve(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        let window = self.window;
        let entry = self.entries.entry(key.clone()).or_default();
        entry.forget_old(window, now);
        if entry.done.len() + entry.pending.len() >= self.limit {
            let frees = entry.done.iter().min().map(|oldest| (*oldest + window).saturating_duration_since(now));
            return Err(match frees {
                Some(wait) if entry.pending.is_empty() => wait.max(Duration::from_secs(1)),
                _ => PENDING_RETRY,
            });
        }
        entry.pending.push(now);
        Ok(())
    }

    /// A reserved place was used: it counts for the window from `now`.
    pub fn commit(&mut self, key: &K, now: Instant) {
        if let Some(entry) = self.entries.get_mut(key) {
            if !entry.pending.is_empty() {
                entry.pending.remove(0);
            }
            entry.done.push(now);
        }
    }

    /// A reserved place was not used.
    pub fn release(&mut self, key: &K) {
        if let Some(entry) = self.entries.get_mut(key)
            && !entry.pending.is_empty()
        {
            entry.pending.remove(0);
        }
    }

    /// Drops entries with nothing left in their window; if none, the one
    /// whose latest activity is oldest.
    fn make_room(&mut self, now: Instant) {
        let window = self.window;
        self.entries.retain(|_, entry| {
            entry.forget_old(window, now);
            !entry.done.is_empty() || !entry.pending.is_empty()
        });
        if self.entries.len() >= self.capacity
            && let Some(oldest) =
                self.entries.iter().min_by_key(|(_, entry)| entry.latest()).map(|(key, _)| key.clone())
        {
            self.entries.remove(&oldest);
        }
    }
}

/// At most `limit` different values per key within `window` (identity
/// lookups: 100 different ids per account an hour); a value already
/// admitted in the window is admitted again for free. Memory is bounded:
/// `capacity` keys of at most `limit` values.
#[derive(Debug)]
pub struct DistinctLimit<K, V> {
    limit: usize,
    window: Duration,
    capacity: usize,
    entries: HashMap<K, Vec<(V, Instant)>>,
}

impl<K: Hash + Eq + Clone, V: Eq + Clone> DistinctLimit<K, V> {
    pub fn new(limit: usize, window: Duration, capacity: usize) -> Self {
        DistinctLimit { limit, window, capacity: capacity.max(1), entries: HashMap::new() }
    }

    /// Admits `value` for `key`, or says how long until a place frees up.
    pub fn admit(&mut self, key: &K, value: &V, now: Instant) -> Result<(), Duration> {
        let window = self.window;
        if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, seen| seen.iter().any(|(_, at)| now.saturating_duration_since(*at) < window));
            if self.entries.len() >= self.capacity {
                return Err(Duration::from_secs(1));
            }
        }
        let seen = self.entries.entry(key.clone()).or_default();
        seen.retain(|(_, at)| now.saturating_duration_since(*at) < window);
        if seen.iter().any(|(v, _)| v == value) {
            return Ok(());
        }
        if seen.len() >= self.limit {
            let oldest = seen.iter().map(|(_, at)| *at).min().unwrap_or(now);
            return Err((oldest + window).saturating_duration_since(now).max(Duration::from_secs(1)));
        }
        seen.push((value.clone(), now));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn ten_an_hour_then_wait_for_the_oldest() {
        let start = Instant::now();
        let mut limit = RateLimit::new(10, HOUR, 100);
        for i in 0..10 {
            let at = start + Duration::from_secs(i);
            limit.reserve(&"a", at).unwrap();
            limit.commit(&"a", at);
        }
        assert_eq!(limit.reserve(&"a", start + Duration::from_secs(60)), Err(HOUR - Duration::from_secs(60)));
        assert!(limit.reserve(&"b", start).is_ok(), "per key");
        assert!(limit.reserve(&"a", start + HOUR).is_ok(), "the oldest left the window");
    }

    #[test]
    fn reservations_in_flight_hold_places_until_settled() {
        let now = Instant::now();
        let mut limit = RateLimit::new(3, HOUR, 100);
        for _ in 0..3 {
            limit.reserve(&1, now).unwrap();
        }
        assert_eq!(limit.reserve(&1, now), Err(PENDING_RETRY));
        limit.release(&1);
        limit.reserve(&1, now).unwrap();
        assert!(limit.reserve(&1, now + PENDING_TTL).is_ok(), "a lost outcome stops counting");
    }

    #[test]
    fn memory_is_bounded() {
        let now = Instant::now();
        let mut limit = RateLimit::new(1, HOUR, 50);
        for key in 0..10_000 {
            let _ = limit.reserve(&key, now + Duration::from_millis(key));
        }
        assert!(limit.entries.len() <= 50);
    }

    proptest::proptest! {
        /// However reservations, commits and releases interleave, no key
        /// ever has more than `limit` places in use at once.
        #[test]
        fn never_more_than_the_limit(steps in proptest::collection::vec((0..3u8, 0..2u8), 1..300)) {
            let now = Instant::now();
            let mut limit = RateLimit::new(4, HOUR, 10);
            let mut held = [0usize; 2];
            let mut used = [0usize; 2];
            for (step, key) in steps {
                let k = usize::from(key);
                match step {
                    0 if limit.reserve(&key, now).is_ok() => held[k] += 1,
                    1 if held[k] > 0 => {
                        limit.commit(&key, now);
                        held[k] -= 1;
                        used[k] += 1;
                    }
                    2 if held[k] > 0 => {
                        limit.release(&key);
                        held[k] -= 1;
                    }
                    _ => {}
                }
                proptest::prop_assert!(held[k] + used[k] <= 4);
            }
        }
    }

    #[test]
    fn distinct_values_are_limited_and_repeats_are_free() {
        let mut limit = DistinctLimit::new(2, Duration::from_secs(60), 10);
        let now = Instant::now();
        assert!(limit.admit(&"a", &1, now).is_ok());
        assert!(limit.admit(&"a", &2, now).is_ok());
        assert!(limit.admit(&"a", &3, now).is_err());
        assert!(limit.admit(&"a", &1, now).is_ok(), "a value seen in the window is free");
        assert!(limit.admit(&"b", &3, now).is_ok(), "per key");
        assert!(limit.admit(&"a", &3, now + Duration::from_secs(61)).is_ok(), "the window slides");
    }
}
