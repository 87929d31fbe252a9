//! The memory that answers waiting to be sent may hold, all connections
//! together. An answer built in memory (a log page of up to 4 MiB, a long
//! listing) stays alive until its connection thread has written it; a
//! client that never reads keeps it until the connection's write deadline.
//! Without a bound, a few dozen such clients could hold gigabytes, so every
//! answer larger than [`COUNTED_FROM`] bytes takes its size from one budget
//! for as long as it is being sent ([`Held`]), and is refused (`503`) when
//! the budget cannot take it. Files are streamed in small chunks and never
//! count.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Answers up to this size do not count (the connection cap bounds them).
pub const COUNTED_FROM: usize = 64 * 1024;
/// The most bytes that counted answers may hold at once.
pub const ANSWER_MEMORY: usize = 32 * 1024 * 1024;

/// The shared budget.
#[derive(Debug, Clone)]
pub struct AnswerBudget {
    in_use: Arc<AtomicUsize>,
    limit: usize,
}

/// The budget cannot take an answer now.
#[derive(Debug, PartialEq, Eq)]
pub struct OverBudget;

/// Bytes taken from the budget, given back when dropped (the answer is
/// sent, or its connection is gone).
#[derive(Debug)]
pub struct Held {
    in_use: Arc<AtomicUsize>,
    bytes: usize,
}

impl AnswerBudget {
    pub fn new(limit: usize) -> Self {
        AnswerBudget { in_use: Arc::new(AtomicUsize::new(0)), limit }
    }

    /// How large an answer built now should be at most, given that it
    /// would like `most`: what is left of the budget, but never less than
    /// an answer that does not count.
    pub fn room_for(&self, most: usize) -> usize {
        let left = self.limit.saturating_sub(self.in_use.load(Ordering::Acquire));
        left.clamp(COUNTED_FROM.min(most), most)
    }

    /// Takes `bytes` for an answer about to be sent: `Ok(None)` when it is
    /// too small to count, [`OverBudget`] when the budget cannot take it now.
    pub fn take(&self, bytes: usize) -> Result<Option<Held>, OverBudget> {
        if bytes <= COUNTED_FROM {
            return Ok(None);
        }
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .map(|_| Some(Held { in_use: Arc::clone(&self.in_use), bytes }))
            .map_err(|_| OverBudget)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.in_use.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_answers_share_the_budget_and_give_it_back() {
        let budget = AnswerBudget::new(4 * COUNTED_FROM);
        assert!(budget.take(COUNTED_FROM).unwrap().is_none(), "small answers do not count");
        let first = budget.take(2 * COUNTED_FROM).unwrap().expect("counted");
        assert_eq!(budget.take(2 * COUNTED_FROM + 1).unwrap_err(), OverBudget);
        let second = budget.take(2 * COUNTED_FROM).unwrap().expect("exactly what is left");
        assert_eq!(budget.take(COUNTED_FROM + 1).unwrap_err(), OverBudget);
        drop(first);
        assert!(budget.take(2 * COUNTED_FROM).unwrap().is_some(), "given back when dropped");
        drop(second);
        assert!(budget.take(4 * COUNTED_FROM).unwrap().is_some());
        assert_eq!(budget.in_use.load(Ordering::Acquire), 0);
    }

    #[test]
    fn room_shrinks_to_what_is_left_but_never_below_an_uncounted_answer() {
        let budget = AnswerBudget::new(10 * COUNTED_FROM);
        assert_eq!(budget.room_for(4 * COUNTED_FROM), 4 * COUNTED_FROM);
        let held = budget.take(8 * COUNTED_FROM).unwrap();
        assert_eq!(budget.room_for(4 * COUNTED_FROM), 2 * COUNTED_FROM);
        let _all = budget.take(2 * COUNTED_FROM).unwrap();
        assert_eq!(budget.room_for(4 * COUNTED_FROM), COUNTED_FROM);
        assert_eq!(budget.room_for(100), 100, "never more than asked for");
        drop(held);
    }
}
