//! Runs `RESET_HOOK` for a password-reset request: the program itself, never
//! a shell, with the id and token only in its environment, on its own
//! thread, with a time limit. Its failures are logged, never shown to the
//! client. At most a few run at once: a request first reserves a place
//! ([`ResetHook::reserve`]); without one it is dropped (and logged) before
//! its token replaces the one already mailed, rather than letting a flood
//! of requests fork a flood of processes.

use crate::limits::{HOOK_TIME_LIMIT, MAX_HOOKS_RUNNING};
use crate::log;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ResetHook {
    program: PathBuf,
    running: Arc<AtomicUsize>,
}

impl ResetHook {
    pub fn new(program: PathBuf) -> Self {
        ResetHook { program, running: Arc::new(AtomicUsize::new(0)) }
    }

    /// A place for one more run, if fewer than the most are running.
    pub fn reserve(&self) -> Option<HookSlot> {
        if self.running.fetch_add(1, Ordering::AcqRel) >= MAX_HOOKS_RUNNING {
            self.running.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(HookSlot { hook: self.clone(), taken: true })
    }
}

/// A reserved place for one run of the hook; given back if never used.
#[derive(Debug)]
pub struct HookSlot {
    hook: ResetHook,
    taken: bool,
}

impl Drop for HookSlot {
    fn drop(&mut self) {
        if self.taken {
            self.hook.running.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl HookSlot {
    /// Starts the hook for `id` and `token` and returns at once.
    pub fn run(mut self, id: String, token: String) {
        let (program, running) = (self.hook.program.clone(), Arc::clone(&self.hook.running));
        let spawned = thread::Builder::new().name("reset-hook".into()).stack_size(64 * 1024).spawn(move || {
            if let Err(problem) = run_to_end(&program, &id, &token) {
                log::error(format_args!("RESET_HOOK {}: {problem}", program.display()));
            }
            running.fetch_sub(1, Ordering::AcqRel);
        });
        match spawned {
            // The thread gives the place back when the run ends.
            Ok(_) => self.taken = false,
            Err(err) => log::error(format_args!("RESET_HOOK: cannot start a thread: {err}")),
        }
    }
}

fn run_to_end(program: &PathBuf, id: &str, token: &str) -> Result<(), String> {
    let mut child = Command::new(program)
        .env("SYNC_NODE_ID", id)
        .env("SYNC_NODE_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|err| format!("cannot start: {err}"))?;
    let deadline = Instant::now() + HOOK_TIME_LIMIT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("exited with {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {} s; killed", HOOK_TIME_LIMIT.as_secs()));
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(err) => return Err(format!("cannot wait for it: {err}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_and_given_back() {
        let hook = ResetHook::new("/bin/true".into());
        let slots: Vec<HookSlot> = (0..MAX_HOOKS_RUNNING).map(|_| hook.reserve().expect("a place")).collect();
        assert!(hook.reserve().is_none(), "all places taken");
        drop(slots);
        let slot = hook.reserve().expect("unused places come back");
        slot.run("id".into(), "token".into());
        let deadline = Instant::now() + Duration::from_secs(10);
        while hook.running.load(Ordering::Acquire) > 0 {
            assert!(Instant::now() < deadline, "the run gives its place back");
            thread::sleep(Duration::from_millis(10));
        }
    }
}
