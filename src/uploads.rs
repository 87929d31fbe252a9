//! Room for store uploads in flight. An upload is checked against free
//! disk and its owner's quota before its body is read, but bodies arrive
//! for a while, several at once, and a chunked one does not say how large
//! it will be: six chunked uploads by an account with 10 MiB of quota left
//! once left 27 MiB free on a 400 MiB disk while everyone else got 507.
//! So every upload reserves the bytes it will write — its declared length
//! at once, a chunked body up to a megabyte ahead as it arrives (as far
//! as there is room: the bytes arriving must fit, not the megabyte) — against
//! `MIN_FREE_BYTES` (with every other upload's bytes not yet written) and
//! against the quota room the loop gave it (with the same account's other
//! uploads in flight). A reservation is given back when its upload ends,
//! whatever the end; the commit then checks the quota exactly.

use crate::blobs::Blobs;
use crate::error::Shortage;
use crate::tally;
use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};

/// How far ahead of what has arrived a chunked body reserves.
const STEP: u64 = 1024 * 1024;

/// Whose quota an upload counts against, and how many body bytes that
/// quota has room for now (`None`: no quota), as the loop saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    pub account: String,
    pub quota_room: Option<u64>,
}

/// The reservations of every upload in flight.
#[derive(Debug, Clone)]
pub struct Uploads {
    state: Arc<Mutex<State>>,
    blobs: Blobs,
    min_free: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes reserved and not written yet, by all uploads.
    unwritten: u64,
    /// Bytes reserved, by account.
    by_account: HashMap<String, u64>,
}

/// One upload's reservation, given back when dropped.
#[derive(Debug)]
pub struct Reserved {
    uploads: Uploads,
    allowance: Allowance,
    reserved: u64,
    written: u64,
}

impl Uploads {
    pub fn new(blobs: Blobs, min_free: u64) -> Uploads {
        Uploads { state: Arc::default(), blobs, min_free }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts an upload's reservation, with its `declared` length if known.
    pub fn reserve(&self, allowance: Allowance, declared: Option<u64>) -> Result<Reserved, Shortage> {
        let mut reserved = Reserved { uploads: self.clone(), allowance, reserved: 0, written: 0 };
        if let Some(length) = declared {
            reserved.grow(length, length)?;
        }
        Ok(reserved)
    }

    /// Bytes reserved and not yet written, by all uploads.
    #[cfg(test)]
    fn unwritten(&self) -> u64 {
        self.state().unwritten
    }
}

impl Reserved {
    /// Reserves at least `least` more bytes, and up to `most` as far as
    /// the disk and the quota have room beside everything else reserved.
    /// (A chunked body reserves ahead only what there is room for: once,
    /// any chunked body got 507 when its owner had less than a megabyte
    /// of quota left, however small it was.)
    fn grow(&mut self, least: u64, most: u64) -> Result<(), Shortage> {
        let uploads = self.uploads.clone();
        let mut state = uploads.state();
        let account = state.by_account.get(&self.allowance.account).copied().unwrap_or(0);
        let quota_left = self.allowance.quota_room.map_or(u64::MAX, |room| room.saturating_sub(account));
        if quota_left < least {
            return Err(Shortage::Quota);
        }
        let free = uploads.blobs.free_bytes().map_err(|_| Shortage::Disk)?;
        let disk_left = free.saturating_sub(uploads.min_free.saturating_add(state.unwritten));
        if disk_left < least {
            return Err(Shortage::Disk);
        }
        let more = most.max(least).min(quota_left).min(disk_left);
        state.unwritten += more;
        tally::take(&mut state.by_account, self.allowance.account.clone(), more);
        self.reserved += more;
        Ok(())
    }

    /// `bytes` more are on the disk (free space shows them now).
    fn wrote(&mut self, bytes: u64) {
        self.written += bytes;
        let mut state = self.uploads.state();
        state.unwritten = state.unwritten.saturating_sub(bytes);
    }

    /// A writer into `sink` that reserves before it writes.
    pub fn writer<'a, W: Write>(&'a mut self, sink: &'a mut W) -> Reserving<'a, W> {
        Reserving { sink, reserved: self }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let mut state = self.uploads.state();
        state.unwritten = state.unwritten.saturating_sub(self.reserved.saturating_sub(self.written));
        tally::give_back(&mut state.by_account, &self.allowance.account, self.reserved);
    }
}

/// Writes into a staged file what its reservation covers; past it, grows
/// the reservation or fails with the [`Shortage`] (as the I/O error's
/// inner error, see [`shortage_of`]).
pub struct Reserving<'a, W: Write> {
    sink: &'a mut W,
    reserved: &'a mut Reserved,
}

impl<W: Write> Write for Reserving<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let needed = self.reserved.written + buf.len() as u64;
        if needed > self.reserved.reserved {
            let least = needed - self.reserved.reserved;
            self.reserved.grow(least, least + STEP).map_err(io::Error::other)?;
        }
        let n = self.sink.write(buf)?;
        self.reserved.wrote(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }
}

/// The shortage a [`Reserving`] write failed for, if that is why it failed.
pub fn shortage_of(err: &io::Error) -> Option<Shortage> {
    err.get_ref()?.downcast_ref::<Shortage>().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uploads(min_free_below_now: u64) -> (tempfile::TempDir, Uploads) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let free = blobs.free_bytes().unwrap();
        // Leaves room for `min_free_below_now` bytes (give or take the
        // disk's other users, far less than the sizes used here).
        let uploads = Uploads::new(blobs, free.saturating_sub(min_free_below_now));
        (dir, uploads)
    }

    fn allowance(account: &str, room: Option<u64>) -> Allowance {
        Allowance { account: account.into(), quota_room: room }
    }

    #[test]
    fn uploads_in_flight_share_the_quota_room_and_give_it_back() {
        let (_dir, uploads) = uploads(1 << 40);
        let first = uploads.reserve(allowance("a", Some(100)), Some(60)).unwrap();
        assert_eq!(uploads.reserve(allowance("a", Some(100)), Some(41)).unwrap_err(), Shortage::Quota);
        let other = uploads.reserve(allowance("b", Some(100)), Some(100)).unwrap();
        drop(first);
        let again = uploads.reserve(allowance("a", Some(100)), Some(100)).unwrap();
        drop((other, again));
        assert!(uploads.state().by_account.is_empty());
    }

    #[test]
    fn a_chunked_body_reserves_as_it_arrives_and_stops_at_the_room() {
        let (_dir, uploads) = uploads(1 << 40);
        let mut reserved = uploads.reserve(allowance("a", Some(3 * STEP)), None).unwrap();
        let mut sink = Vec::new();
        let mut writer = reserved.writer(&mut sink);
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        let err = loop {
            match writer.write_all(&chunk) {
                Ok(()) => written += chunk.len() as u64,
                Err(err) => break err,
            }
        };
        assert_eq!(shortage_of(&err), Some(Shortage::Quota));
        assert!((STEP..=3 * STEP).contains(&written), "{written}");
        drop(reserved);
        assert_eq!(uploads.unwritten(), 0);
    }

    #[test]
    fn a_chunked_body_that_fits_the_room_left_is_taken_however_little_is_left() {
        let (_dir, uploads) = uploads(1 << 40);
        for room in [1000, STEP - 1, STEP + 10] {
            let mut reserved = uploads.reserve(allowance("a", Some(room)), None).unwrap();
            let mut sink = Vec::new();
            let body = vec![7u8; usize::try_from(room).unwrap()];
            reserved.writer(&mut sink).write_all(&body).unwrap();
            let err = reserved.writer(&mut sink).write_all(b"x").unwrap_err();
            assert_eq!(shortage_of(&err), Some(Shortage::Quota), "one byte past {room}");
        }
    }

    #[test]
    fn uploads_in_flight_keep_min_free_bytes_free() {
        let (_dir, uploads) = uploads(10 * STEP);
        let first = uploads.reserve(allowance("a", None), Some(6 * STEP)).unwrap();
        assert_eq!(uploads.reserve(allowance("b", None), Some(6 * STEP)).unwrap_err(), Shortage::Disk);
        assert_eq!(uploads.unwritten(), 6 * STEP);
        drop(first);
        assert!(uploads.reserve(allowance("b", None), Some(6 * STEP)).is_ok());
    }
}
