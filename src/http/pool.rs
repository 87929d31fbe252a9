//! The threads that do a connection's work: parse a head, read a body,
//! write an answer. A job runs on an idle thread if there is one, on a
//! new one while fewer than the pool's bound exist, and otherwise waits
//! its turn in order of arrival. Threads are reused; one idle for
//! [`IDLE_EXIT`] ends (a few are always kept). No thread ever waits for a
//! client to speak or for the loop: those waits are the waiting room's.
//!
//! A pool may also keep at most so many threads awake at once (as many
//! as there are cores, for work that only computes): a job that finds
//! them all running waits for one of them to finish, instead of waking
//! a thread to fight them for a core. Waking a thread costs more than
//! most jobs (a read answered from the read cache): at 16 connections
//! on two cores, 44 % of the server's cycles went to switching and
//! waking threads. A job that must wait for something other than a core
//! (a disk flush, the loop's answer) says so with [`blocking`], and is
//! not counted as awake meanwhile.

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
    /// Of those, in a job but waiting on something other than a core.
    blocked: usize,
}

impl Queue {
    fn awake(&self) -> usize {
        self.threads - self.idle - self.blocked
    }
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    most: usize,
    /// Threads awake at most (`usize::MAX`: as many as there are jobs).
    awake: usize,
}

thread_local! {
    /// The pool whose job this thread is running, for [`blocking`].
    static CURRENT: std::cell::RefCell<Option<Arc<Shared>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `wait`, a wait for something other than a core, on a work
/// thread: meanwhile the thread does not count as awake, so a queued job
/// gets another. (Anywhere else it just runs `wait`.)
pub fn blocking<T>(wait: impl FnOnce() -> T) -> T {
    let pool = CURRENT.with(|current| current.borrow().clone());
    let Some(shared) = pool else { return wait() };
    let queue = shared.lock();
    let _blocked = Blocked::begin(&shared, queue);
    wait()
}

/// A thread counted as blocked until this is dropped (even by a panic).
struct Blocked<'a>(&'a Arc<Shared>);

impl<'a> Blocked<'a> {
    fn begin(shared: &'a Arc<Shared>, mut queue: MutexGuard<'_, Queue>) -> Blocked<'a> {
        queue.blocked += 1;
        shared.start_another(queue);
        Blocked(shared)
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.0.lock().blocked -= 1;
    }
}

/// A bounded pool of reusable work threads.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// A pool of at most `most` threads (started as work comes), as many
    /// awake as there are jobs.
    pub fn new(most: usize) -> Pool {
        Pool::awake_at_most(most, usize::MAX)
    }

    /// A pool of at most `most` threads, at most `awake` of them awake.
    pub fn awake_at_most(most: usize, awake: usize) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                queue: Mutex::default(),
                ready: Condvar::new(),
                most: most.max(1),
                awake: awake.max(1),
            }),
        }
    }

    /// Runs `job` as soon as a thread is free.
    pub fn run(&self, job: Job) {
        let mut queue = self.shared.lock();
        queue.jobs.push_back(job);
        self.shared.start_another(queue);
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

    /// Wakes or starts a thread for the jobs queued, if they need one.
    fn start_another(self: &Arc<Self>, mut queue: MutexGuard<'_, Queue>) {
        // The threads awake take the queued jobs in turn when they are done.
        if queue.jobs.is_empty() || queue.awake() >= self.awake {
            return;
        }
        // An idle thread woken counts as idle until it takes a job: only
        // when there are more jobs than idle threads is another needed
        // (else a job could wait behind a long one on the thread woken
        // for the job before it).
        if queue.jobs.len() <= queue.idle {
            drop(queue);
            self.ready.notify_one();
            return;
        }
        if queue.idle > 0 {
            self.ready.notify_one();
        }
        if queue.threads >= self.most {
            return;
        }
        queue.threads += 1;
        drop(queue);
        let shared = Arc::clone(self);
        let spawned = thread::Builder::new().name("work".into()).stack_size(STACK).spawn(move || shared.serve());
        if let Err(err) = spawned {
            // The job waits for a thread that exists (there is at least
            // one unless none could ever start).
            self.lock().threads -= 1;
            log::error(format_args!("cannot start a work thread: {err}"));
        }
    }

    fn serve(self: Arc<Self>) {
        CURRENT.with(|current| *current.borrow_mut() = Some(Arc::clone(&self)));
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

    #[test]
    fn no_more_threads_than_it_may_keep_awake_run_and_a_blocked_one_does_not_count() {
        let pool = Pool::awake_at_most(8, 1);
        let (done, finished) = mpsc::channel();
        // A job that computes (as far as the pool knows) holds the one
        // place: the next waits for it instead of waking another thread.
        let (release, gate) = mpsc::channel::<()>();
        let first = done.clone();
        pool.run(Box::new(move || {
            let _ = gate.recv();
            first.send("first").unwrap();
        }));
        let second = done.clone();
        pool.run(Box::new(move || second.send("second").unwrap()));
        assert!(finished.recv_timeout(Duration::from_millis(200)).is_err(), "the second waits its turn");
        assert_eq!(pool.threads(), 1);
        release.send(()).unwrap();
        assert_eq!(finished.recv_timeout(Duration::from_secs(5)).unwrap(), "first");
        assert_eq!(finished.recv_timeout(Duration::from_secs(5)).unwrap(), "second");
        // One that waits through `blocking` lets the next run meanwhile.
        let (release, gate) = mpsc::channel::<()>();
        let first = done.clone();
        pool.run(Box::new(move || {
            blocking(|| gate.recv()).unwrap();
            first.send("first").unwrap();
        }));
        pool.run(Box::new(move || done.send("second").unwrap()));
        assert_eq!(finished.recv_timeout(Duration::from_secs(5)).unwrap(), "second", "ran beside the blocked one");
        release.send(()).unwrap();
        assert_eq!(finished.recv_timeout(Duration::from_secs(5)).unwrap(), "first");
    }
}
