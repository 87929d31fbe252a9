//! Bounds PBKDF2 work, which runs on connection threads: at most one
//! computation per core at once, and at most [`MAX_WAITING`] jobs handed
//! out and not yet done. The loop takes a [`Ticket`] before it hands out a
//! job; without one the request gets 503, so a flood of sign-ins can hold
//! neither every core nor every connection slot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Jobs handed out (running or waiting for a core) at most.
pub const MAX_WAITING: usize = 64;

#[derive(Debug)]
pub struct Hashing {
    free_cores: Mutex<usize>,
    released: Condvar,
    handed_out: AtomicUsize,
    max_handed_out: usize,
}

/// One job's place, given back when dropped (done, or never run).
#[derive(Debug)]
pub struct Ticket(Arc<Hashing>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.handed_out.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Hashing {
    pub fn new(cores: usize, max_handed_out: usize) -> Arc<Hashing> {
        Arc::new(Hashing {
            free_cores: Mutex::new(cores.max(1)),
            released: Condvar::new(),
            handed_out: AtomicUsize::new(0),
            max_handed_out,
        })
    }

    /// A place for one more job, if fewer than the most are handed out.
    pub fn ticket(self: &Arc<Self>) -> Option<Ticket> {
        let taken = self.handed_out.fetch_add(1, Ordering::AcqRel);
        if taken >= self.max_handed_out {
            self.handed_out.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Ticket(Arc::clone(self)))
    }

    /// Runs `work` once a core is free; the ticket is given back after.
    pub fn run<T>(&self, ticket: Ticket, work: impl FnOnce() -> T) -> T {
        {
            let mut free = self.free_cores.lock().unwrap_or_else(|e| e.into_inner());
            while *free == 0 {
                free = self.released.wait(free).unwrap_or_else(|e| e.into_inner());
            }
            *free -= 1;
        }
        let result = work();
        *self.free_cores.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.released.notify_one();
        drop(ticket);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_bounded_and_come_back() {
        let hashing = Hashing::new(1, 2);
        let first = hashing.ticket().unwrap();
        let second = hashing.ticket().unwrap();
        assert!(hashing.ticket().is_none());
        drop(first);
        assert_eq!(hashing.run(hashing.ticket().unwrap(), || 7), 7);
        drop(second);
        assert_eq!(hashing.handed_out.load(Ordering::Acquire), 0);
    }

    #[test]
    fn one_job_per_core_at_once() {
        use std::sync::atomic::AtomicUsize;
        let hashing = Hashing::new(2, 16);
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (hashing, running, most) = (Arc::clone(&hashing), Arc::clone(&running), Arc::clone(&most));
                let ticket = hashing.ticket().unwrap();
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
