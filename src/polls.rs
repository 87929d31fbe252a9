//! Parked long-polls: `GET /v1/changes?wait=S` requests that had nothing to
//! report yet. They wait here, on the loop, as reply handles — not as
//! threads of the loop — until a commit touches their account or their
//! deadline passes. Bounded per account and in total: past a bound the
//! oldest is answered early (with an empty list) rather than refused.

use std::time::Instant;

/// What a parked poll waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    pub account_id: String,
    /// The session that asked: it must still be live when the poll is answered.
    pub token_hash: String,
    pub since: i64,
    /// The most changes its answer may list.
    pub limit: usize,
    pub deadline: Instant,
}

#[derive(Debug)]
pub struct Parked<R> {
    pub reply: R,
    pub poll: Poll,
}

#[derive(Debug)]
pub struct Polls<R> {
    parked: Vec<Parked<R>>,
    per_account: usize,
    total: usize,
}

impl<R> Polls<R> {
    pub fn new(per_account: usize, total: usize) -> Self {
        Polls { parked: Vec::new(), per_account: per_account.max(1), total: total.max(1) }
    }

    /// Parks a poll. Returns the one evicted to stay within the bounds, to
    /// be answered now.
    pub fn park(&mut self, reply: R, poll: Poll) -> Option<Parked<R>> {
        let same_account = self.parked.iter().filter(|p| p.poll.account_id == poll.account_id).count();
        let evict = if same_account >= self.per_account {
            self.parked.iter().position(|p| p.poll.account_id == poll.account_id)
        } else if self.parked.len() >= self.total {
            Some(0)
        } else {
            None
        };
        let evicted = evict.map(|index| self.parked.remove(index));
        self.parked.push(Parked { reply, poll });
        evicted
    }

    /// Takes every poll of the given accounts.
    pub fn take_for(&mut self, accounts: &[String]) -> Vec<Parked<R>> {
        self.take_where(|poll| accounts.contains(&poll.account_id))
    }

    /// Takes every poll whose deadline has passed.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Parked<R>> {
        self.take_where(|poll| poll.deadline <= now)
    }

    /// Takes every parked poll.
    pub fn take_all(&mut self) -> Vec<Parked<R>> {
        std::mem::take(&mut self.parked)
    }

    /// How many are parked.
    pub fn count(&self) -> usize {
        self.parked.len()
    }

    /// The soonest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.parked.iter().map(|p| p.poll.deadline).min()
    }

    fn take_where(&mut self, wanted: impl Fn(&Poll) -> bool) -> Vec<Parked<R>> {
        if !self.parked.iter().any(|p| wanted(&p.poll)) {
            return Vec::new();
        }
        let (taken, kept) = std::mem::take(&mut self.parked).into_iter().partition(|p| wanted(&p.poll));
        self.parked = kept;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn poll(account: &str, after_ms: u64, base: Instant) -> Poll {
        Poll {
            account_id: account.into(),
            token_hash: String::new(),
            since: 0,
            limit: 1,
            deadline: base + Duration::from_millis(after_ms),
        }
    }

    #[test]
    fn wake_by_account_and_expire_by_deadline() {
        let base = Instant::now();
        let mut polls = Polls::new(10, 100);
        polls.park(1, poll("a", 100, base));
        polls.park(2, poll("b", 50, base));
        polls.park(3, poll("a", 200, base));
        assert_eq!(polls.next_deadline(), Some(base + Duration::from_millis(50)));
        let woken: Vec<i32> = polls.take_for(&["a".into()]).into_iter().map(|p| p.reply).collect();
        assert_eq!(woken, vec![1, 3]);
        assert!(polls.take_expired(base + Duration::from_millis(49)).is_empty());
        assert_eq!(polls.take_expired(base + Duration::from_millis(50)).len(), 1);
        assert_eq!(polls.next_deadline(), None);
    }

    #[test]
    fn bounds_evict_the_oldest() {
        let base = Instant::now();
        let mut polls = Polls::new(2, 3);
        assert!(polls.park(1, poll("a", 10, base)).is_none());
        assert!(polls.park(2, poll("a", 10, base)).is_none());
        assert_eq!(polls.park(3, poll("a", 10, base)).map(|p| p.reply), Some(1), "per account");
        assert!(polls.park(4, poll("b", 10, base)).is_none());
        assert_eq!(polls.park(5, poll("c", 10, base)).map(|p| p.reply), Some(2), "in total");
        let left: Vec<i32> = polls.take_expired(base + Duration::from_secs(1)).into_iter().map(|p| p.reply).collect();
        assert_eq!(left, vec![3, 4, 5]);
    }
}
