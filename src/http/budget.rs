//! Memory budgets, all connections together and per client address: one
//! for answers waiting to be sent, one for log entries being received.
//! An answer built in memory (a log page of up to 4 MiB, a long listing)
//! stays alive until a work thread has written it, at the send
//! pace at least; a log entry is held in memory while it arrives, at the
//! upload pace at least. Without a bound, a few dozen such clients could
//! hold gigabytes, so every one larger than [`COUNTED_FROM`] bytes takes
//! its size from its budget for as long as it lives ([`Held`]), within a
//! share per client address (an eighth: four addresses leave half to
//! everyone else), and is refused (`503`) when either cannot take it.
//! Files are streamed in small chunks and never count.

use crate::limits::COUNTED_FROM;
use crate::tally;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// A shared budget.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    usage: Arc<Mutex<Usage>>,
    limit: usize,
    per_address: usize,
}

/// Bytes held now, in all and by address (only addresses holding some).
#[derive(Debug, Default)]
struct Usage {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// The budget cannot take it now.
#[derive(Debug, PartialEq, Eq)]
pub struct OverBudget;

/// Bytes taken from the budget, given back when dropped (the answer is
/// sent, or its connection is gone).
#[derive(Debug)]
pub struct Held {
    usage: Arc<Mutex<Usage>>,
    address: IpAddr,
    bytes: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize, per_address: usize) -> Self {
        MemoryBudget { usage: Arc::default(), limit, per_address }
    }

    /// How large an answer to `address` built now should be at most,
    /// given that it would like `most`: what is left of the budget and of
    /// the address's share, but never less than an answer that does not
    /// count.
    pub fn room_for(&self, most: usize, address: IpAddr) -> usize {
        let usage = lock(&self.usage);
        let mine = usage.by_address.get(&address).copied().unwrap_or(0);
        let mut left = self.limit.saturating_sub(usage.total);
        if mine > 0 {
            left = left.min(self.per_address.saturating_sub(mine));
        }
        left.clamp(COUNTED_FROM.min(most), most)
    }

    /// Takes `bytes` for an answer to `address` about to be sent:
    /// `Ok(None)` when it is too small to count, [`OverBudget`] when the
    /// budget or the address's share cannot take it now (the share does not
    /// apply to an address that holds nothing yet).
    pub fn take(&self, bytes: usize, address: IpAddr) -> Result<Option<Held>, OverBudget> {
        if bytes <= COUNTED_FROM {
            return Ok(None);
        }
        self.take_counted(bytes, address).map(Some)
    }

    /// Takes `bytes` however few they are: for what may pile up unsent,
    /// many small pieces to one connection (a stream's events).
    pub fn take_counted(&self, bytes: usize, address: IpAddr) -> Result<Held, OverBudget> {
        let mut usage = lock(&self.usage);
        // An address that holds nothing may take one answer larger than
        // its share (a listing of long keys and metadata can be), so that
        // every answer can be had by asking for it alone.
        let mine = usage.by_address.get(&address).copied().unwrap_or(0);
        if usage.total + bytes > self.limit || (mine > 0 && mine + bytes > self.per_address) {
            return Err(OverBudget);
        }
        usage.total += bytes;
        tally::take(&mut usage.by_address, address, bytes);
        Ok(Held { usage: Arc::clone(&self.usage), address, bytes })
    }

    /// Makes `held` hold `bytes` in all (more, never less), taking what it
    /// lacks for `address`; [`OverBudget`] leaves it as it was.
    pub fn extend(&self, held: &mut Option<Held>, bytes: usize, address: IpAddr) -> Result<(), OverBudget> {
        let lacking = bytes.saturating_sub(held.as_ref().map_or(0, |held| held.bytes));
        if lacking == 0 {
            return Ok(());
        }
        let more = self.take_counted(lacking, address)?;
        match held {
            Some(held) => held.absorb(more),
            None => *held = Some(more),
        }
        Ok(())
    }
}

impl Held {
    /// Takes over what `other` holds (for the same address and budget).
    fn absorb(&mut self, mut other: Held) {
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut usage = lock(&self.usage);
        usage.total -= self.bytes;
        tally::give_back(&mut usage.by_address, &self.address, self.bytes);
    }
}

/// The usage, even after a panic elsewhere (its numbers stay consistent:
/// each change is made whole under the lock).
fn lock(usage: &Mutex<Usage>) -> MutexGuard<'_, Usage> {
    usage.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const TWO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn large_answers_share_the_budget_and_give_it_back() {
        let budget = MemoryBudget::new(4 * COUNTED_FROM, 4 * COUNTED_FROM);
        assert!(budget.take(COUNTED_FROM, ONE).unwrap().is_none(), "small answers do not count");
        let first = budget.take(2 * COUNTED_FROM, ONE).unwrap().expect("counted");
        assert_eq!(budget.take(2 * COUNTED_FROM + 1, TWO).unwrap_err(), OverBudget);
        let second = budget.take(2 * COUNTED_FROM, TWO).unwrap().expect("exactly what is left");
        assert_eq!(budget.take(COUNTED_FROM + 1, ONE).unwrap_err(), OverBudget);
        drop(first);
        assert!(budget.take(2 * COUNTED_FROM, ONE).unwrap().is_some(), "given back when dropped");
        drop(second);
        assert!(budget.take(4 * COUNTED_FROM, TWO).unwrap().is_some());
        let usage = lock(&budget.usage);
        assert_eq!((usage.total, usage.by_address.len()), (0, 0));
    }

    #[test]
    fn one_address_takes_at_most_its_share() {
        let budget = MemoryBudget::new(8 * COUNTED_FROM, 3 * COUNTED_FROM);
        let mine = budget.take(3 * COUNTED_FROM, ONE).unwrap();
        assert_eq!(budget.take(COUNTED_FROM + 1, ONE).unwrap_err(), OverBudget, "its share is used up");
        assert_eq!(budget.room_for(4 * COUNTED_FROM, ONE), COUNTED_FROM);
        assert_eq!(budget.room_for(4 * COUNTED_FROM, TWO), 4 * COUNTED_FROM);
        let theirs = budget.take(3 * COUNTED_FROM, TWO).unwrap();
        assert!(theirs.is_some(), "others still have theirs");
        drop((mine, theirs));
        let alone = budget.take(5 * COUNTED_FROM, ONE).unwrap();
        assert!(alone.is_some(), "one answer larger than the share, asked for alone");
        assert_eq!(budget.take(COUNTED_FROM + 1, ONE).unwrap_err(), OverBudget, "but nothing beside it");
    }

    #[test]
    fn room_shrinks_to_what_is_left_but_never_below_an_uncounted_answer() {
        let budget = MemoryBudget::new(10 * COUNTED_FROM, 10 * COUNTED_FROM);
        assert_eq!(budget.room_for(4 * COUNTED_FROM, ONE), 4 * COUNTED_FROM);
        let held = budget.take(8 * COUNTED_FROM, TWO).unwrap();
        assert_eq!(budget.room_for(4 * COUNTED_FROM, ONE), 2 * COUNTED_FROM);
        let _all = budget.take(2 * COUNTED_FROM, TWO).unwrap();
        assert_eq!(budget.room_for(4 * COUNTED_FROM, ONE), COUNTED_FROM);
        assert_eq!(budget.room_for(100, ONE), 100, "never more than asked for");
        drop(held);
    }

    #[test]
    fn a_holding_grows_to_what_it_needs_or_stays_as_it_was() {
        let budget = MemoryBudget::new(100, 60);
        let mut held = None;
        budget.extend(&mut held, 40, ONE).unwrap();
        budget.extend(&mut held, 30, ONE).unwrap();
        assert_eq!(held.as_ref().unwrap().bytes, 40, "never less");
        assert_eq!(budget.extend(&mut held, 70, ONE), Err(OverBudget), "past its address's share");
        assert_eq!(held.as_ref().unwrap().bytes, 40);
        budget.extend(&mut held, 60, ONE).unwrap();
        assert_eq!(budget.take_counted(41, TWO).unwrap_err(), OverBudget, "60 of 100 held");
        drop(held);
        assert!(budget.take_counted(100, TWO).is_ok(), "all given back at once");
    }
}
