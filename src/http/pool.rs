//! The threads that do a connection's work: parse a head, read a body,
//! write an answer. A job runs on an idle thread if there is one, on a
//! new one while fewer than the pool's bound exist, and otherwise waits
//! its turn in order of arrival. Threads are reused; one idle for
//! [`IDLE_EXIT`] ends (a few are always kept). No thread ever waits for a
//! client to speak or for the loop: those waits are the waiting room's.

use crate::log;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// Stack of a work thread: it parses heads and copies bodies, none of
/// which needs deep recursion or large stack buffers.
const STACK: usize = 128 * 1024;
/// A thread with nothing to do for this long ends, unless it is one of the
/// pool's [`KEPT`].
const IDLE_EXIT: Duration = Duration::from_secs(30);
/// Threads kept however long they are idle.
const KEPT: usize = 4;

/// One piece of a connection's work.
pub type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Threads alive.
    threads: usize,
    /// Of those, waiting for a job.
    idle: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    most: usize,
}

/// A bounded pool of reusable work threads.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// A pool of at most `most` threads (started as work comes).
    pub fn new(most: usize) -> Pool {
        Pool { shared: Arc::new(Shared { queue: Mutex::default(), ready: Condvar::new(), most: most.max(1) }) }
    }

    /// Runs `job` as soon as a thread is free.
    pub fn run(&self, job: Job) {
        let mut queue = self.shared.lock();
        queue.jobs.push_back(job);
        // An idle thread woken counts as idle until it takes a job: only
        // when there are more jobs than idle threads is another needed
        // (else a job could wait behind a long one on the thread woken
        // for the job before it).
        if queue.jobs.len() <= queue.idle {
            drop(queue);
            self.shared.ready.notify_one();
            return;
        }
        if queue.idle > 0 {
            self.shared.ready.notify_one();
        }
        if queue.threads >= self.shared.most {
            return;
        }
        queue.threads += 1;
        drop(queue);
        let shared = Arc::clone(&self.shared);
        let spawned = thread::Builder::new().name("work".into()).stack_size(STACK).spawn(move || shared.serve());
        if let Err(err) = spawned {
            // The job waits for a thread that exists (there is at least
            // one unless none could ever start).
            self.shared.lock().threads -= 1;
            log::error(format_args!("cannot start a work thread: {err}"));
        }
    }

    /// Threads alive now.
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.shared.lock().threads
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn serve(&self) {
        let mut queue = self.lock();
        loop {
            if let Some(job) = queue.jobs.pop_front() {
                drop(queue);
                // A panicking job loses its connection, not the thread's
                // place in the count.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    log::error("a connection's work panicked; its connection was closed");
                }
                queue = self.lock();
                continue;
            }
            queue.idle += 1;
            let (next, waited) =
                self.ready.wait_timeout(queue, IDLE_EXIT).unwrap_or_else(|poisoned| poisoned.into_inner());
            queue = next;
            queue.idle -= 1;
            if waited.timed_out() && queue.jobs.is_empty() && queue.threads > KEPT {
                queue.threads -= 1;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn runs_every_job_on_at_most_its_bound_of_threads_and_reuses_them() {
        let pool = Pool::new(3);
        let (done, finished) = mpsc::channel();
        let gate = Arc::new(std::sync::Barrier::new(4));
        for _ in 0..3 {
            let (done, gate) = (done.clone(), Arc::clone(&gate));
            pool.run(Box::new(move || {
                gate.wait();
                done.send(()).unwrap();
            }));
        }
        let waiting = done.clone();
        pool.run(Box::new(move || waiting.send(()).unwrap()));
        assert_eq!(pool.threads(), 3, "the fourth job waits instead of a fourth thread");
        assert!(finished.recv_timeout(Duration::from_millis(100)).is_err(), "all three threads are busy");
        gate.wait();
        for _ in 0..4 {
            finished.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        for _ in 0..10 {
            let done = done.clone();
            pool.run(Box::new(move || done.send(()).unwrap()));
            finished.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        assert_eq!(pool.threads(), 3, "idle threads are reused");
    }

    #[test]
    fn a_job_never_waits_behind_a_long_one_while_the_pool_may_grow() {
        let pool = Pool::new(4);
        let (done, finished) = mpsc::channel();
        let first = done.clone();
        pool.run(Box::new(move || first.send(()).unwrap()));
        finished.recv_timeout(Duration::from_secs(5)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // One idle thread; a long job and a short one arrive together.
        let (release, gate) = mpsc::channel::<()>();
        pool.run(Box::new(move || {
            let _ = gate.recv();
        }));
        pool.run(Box::new(move || done.send(()).unwrap()));
        assert!(
            finished.recv_timeout(Duration::from_secs(2)).is_ok(),
            "the short job ran on another thread, not after the long one"
        );
        release.send(()).unwrap();
    }
}
