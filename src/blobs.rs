//! Store files: the only code that touches them. Uploads are staged in
//! `tmp/` and fsync'd on work threads; the loop publishes a staged file
//! under a new random name in `stores/xx/`, fsyncs the directory, and removes
//! files the database no longer references. A file path never comes from a
//! store key: names are random hex, checked before every use.

use crate::durable::{self, sync_dir};
use crate::encoding::hex;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

const TMP: &str = "tmp";
const STORES: &str = "stores";

#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

/// Deletes its file when dropped, unless disarmed: a failed or abandoned
/// upload never leaves garbage.
#[derive(Debug)]
struct TempPath(Option<PathBuf>);

impl TempPath {
    fn disarm(&mut self) -> Option<PathBuf> {
        self.0.take()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// An upload being written.
#[derive(Debug)]
pub struct Staging {
    file: File,
    path: TempPath,
    size: u64,
}

/// A complete upload on stable storage, waiting to be published.
#[derive(Debug)]
pub struct Staged {
    path: TempPath,
    pub size: u64,
}

/// Open handles of recently read store files, kept by the loop, so reading
/// a hot store costs no `open` or `close`. A file is never changed after
/// it is published and its name is never reused, so a handle always shows
/// the version its name stands for; the loop forgets a name when it
/// removes the file. Bounded: when full, one handle is dropped.
#[derive(Debug)]
pub struct OpenFiles {
    files: HashMap<String, Arc<File>>,
    /// Handles dropped from the cache while readers still held them.
    lent: HashMap<String, Weak<File>>,
    capacity: usize,
}

impl OpenFiles {
    pub fn new(capacity: usize) -> Self {
        OpenFiles { files: HashMap::new(), lent: HashMap::new(), capacity: capacity.max(1) }
    }

    pub fn get(&mut self, blobs: &Blobs, name: &str) -> io::Result<Arc<File>> {
        if let Some(file) = self.files.get(name) {
            return Ok(Arc::clone(file));
        }
        // A handle readers still hold is taken back rather than a second
        // one opened: each name has one handle to account for.
        let file = match self.lent.remove(name).and_then(|lent| lent.upgrade()) {
            Some(file) => file,
            None => Arc::new(blobs.open_file(name)?),
        };
        if self.files.len() >= self.capacity
            && let Some(victim) = self.files.keys().next().cloned()
            && let Some(evicted) = self.files.remove(&victim)
        {
            // Kept whether or not a reader holds it now: a work thread may
            // take it (through the read cache's weak handle) at any moment.
            self.lend(victim, &evicted);
        }
        self.files.insert(name.to_owned(), Arc::clone(&file));
        Ok(file)
    }

    /// Remembers a handle dropped from the cache, for as long as anyone
    /// holds it.
    fn lend(&mut self, name: String, file: &Arc<File>) {
        self.lent.retain(|_, held| held.strong_count() > 0);
        self.lent.insert(name, Arc::downgrade(file));
    }

    /// Stops caching `name` (it is about to be removed); a handle on it
    /// that readers still hold, if any: the file's space stays taken until
    /// the last of them lets go.
    pub fn take(&mut self, name: &str) -> Option<Weak<File>> {
        self.lent.retain(|_, held| held.strong_count() > 0);
        let cached =
            self.files.remove(name).filter(|file| Arc::strong_count(file) > 1).map(|file| Arc::downgrade(&file));
        cached.or_else(|| self.lent.remove(name))
    }

    /// Drops every handle (another process may have removed files); those
    /// readers still hold are remembered as lent.
    pub fn clear(&mut self) {
        for (name, file) in std::mem::take(&mut self.files) {
            self.lend(name, &file);
        }
    }
}

/// The directory one group of publications shares.
#[derive(Debug)]
pub struct Batch {
    prefix: String,
}

/// What a sweep found (and removed, unless it was a dry run).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    pub temp_files: Vec<String>,
    pub orphans: Vec<String>,
    /// Unreferenced entries left alone because they are younger than the
    /// sweep's minimum age (likely an upload in flight).
    pub recent: usize,
}

impl Sweep {
    /// An unreferenced entry: left alone while young (counted), otherwise
    /// listed in `found` and, unless `dry_run`, removed; one that vanished
    /// since it was listed is nothing.
    fn consider(
        &mut self,
        path: &Path,
        name: String,
        found: &mut Vec<String>,
        min_age: Duration,
        dry_run: bool,
    ) -> io::Result<()> {
        match age(path, min_age)? {
            Age::Gone => {}
            Age::Young => self.recent += 1,
            Age::Old => {
                if !dry_run {
                    remove_entry(path)?;
                }
                found.push(name);
            }
        }
        Ok(())
    }
}

/// Store files hard-linked into a private directory under `tmp/`: they stay
/// readable whatever the server does to the originals, until dropped.
#[derive(Debug)]
pub struct Pinned {
    dir: PathBuf,
    names: Vec<String>,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Pinned {
    /// Copies the pinned files to `root/stores/` and makes them durable.
    pub fn copy_to(&self, root: &Path) -> io::Result<u64> {
        let mut bytes = 0;
        let mut dirs = HashSet::new();
        durable::create_dir_all(&root.join(STORES))?;
        for name in &self.names {
            let target = root.join(STORES).join(name);
            if let Some(parent) = target.parent()
                && dirs.insert(parent.to_path_buf())
            {
                durable::create_dir_all(parent)?;
            }
            bytes += fs::copy(self.dir.join(name.replace('/', "-")), &target)?;
            File::open(&target)?.sync_all()?;
        }
        for dir in &dirs {
            sync_dir(dir)?;
        }
        Ok(bytes)
    }
}

impl Write for Staging {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Staging {
    /// Flushes the data to stable storage.
    pub fn finish(self) -> io::Result<Staged> {
        self.file.sync_all()?;
        Ok(Staged { path: self.path, size: self.size })
    }
}

impl Blobs {
    /// For the server: creates `tmp/` and `stores/` under `root` if
    /// missing (each durable in `root`).
    pub fn open(root: &Path) -> io::Result<Blobs> {
        durable::create_dir_all(&root.join(TMP))?;
        durable::create_dir_all(&root.join(STORES))?;
        Ok(Blobs::at(root))
    }

    /// For a command-line tool: the files of an existing data directory,
    /// creating nothing.
    pub fn at(root: &Path) -> Blobs {
        Blobs { root: root.to_path_buf() }
    }

    /// Starts an upload in `tmp/`.
    pub fn stage(&self) -> io::Result<Staging> {
        let path = self.root.join(TMP).join(format!("{}.part", random_name()?));
        let file = OpenOptions::new().write(true).create_new(true).open(&path)?;
        Ok(Staging { file, path: TempPath(Some(path)), size: 0 })
    }

    /// Starts a batch of publications: they all go into one directory, so
    /// one fsync makes all their renames durable.
    pub fn batch(&self) -> io::Result<Batch> {
        let prefix = random_name()?[..2].to_owned();
        // Directories are made on first use (a first start stays fast);
        // a new one's entry is made durable before any file in it counts.
        durable::create_dir_all(&self.root.join(STORES).join(&prefix))?;
        Ok(Batch { prefix })
    }

    /// Moves a staged upload to a new name under `stores/` (in the batch's
    /// directory). Returns the name to record in the database; the rename
    /// is durable after [`Blobs::sync_batch`].
    pub fn publish(&self, mut staged: Staged, batch: &Batch) -> io::Result<String> {
        let random = random_name()?;
        let name = format!("{0}/{0}{1}", batch.prefix, &random[2..]);
        let target = self.path_of(&name)?;
        let source = staged.path.0.clone().ok_or_else(|| io::Error::other("staged file already published"))?;
        fs::rename(&source, &target)?;
        staged.path.disarm();
        Ok(name)
    }

    /// Makes the batch's renames durable.
    pub fn sync_batch(&self, batch: &Batch) -> io::Result<()> {
        sync_dir(&self.root.join(STORES).join(&batch.prefix))
    }

    /// Opens a published file for reading.
    pub fn open_file(&self, name: &str) -> io::Result<File> {
        File::open(self.path_of(name)?)
    }

    /// Removes a published file (already gone is fine).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.path_of(name)?) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Bytes an unprivileged writer may still use on the data directory's
    /// file system.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let stats = rustix::fs::statvfs(&self.root)?;
        Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
    }

    /// The size of a published file.
    pub fn size_of(&self, name: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.path_of(name)?)?.len())
    }

    /// Hard-links the named files into a new directory under `tmp/`. Fails
    /// with `NotFound` if one of them is already gone.
    pub fn pin(&self, names: &[String]) -> io::Result<Pinned> {
        let pinned = Pinned { dir: self.root.join(TMP).join(format!("pin-{}", random_name()?)), names: names.to_vec() };
        durable::create_dir_all(&pinned.dir)?;
        for name in names {
            fs::hard_link(self.path_of(name)?, pinned.dir.join(name.replace('/', "-")))?;
        }
        Ok(pinned)
    }

    /// Finds temp files and files under `stores/` that `referenced` does not
    /// name, skipping those modified less than `min_age` ago; removes them
    /// unless `dry_run`.
    pub fn sweep(&self, referenced: &HashSet<String>, dry_run: bool, min_age: Duration) -> io::Result<Sweep> {
        let mut sweep = Sweep::default();
        let mut temp_files = Vec::new();
        let mut orphans = Vec::new();
        for entry in read_dir_if_any(&self.root.join(TMP))? {
            let name = format!("{TMP}/{}", entry.file_name().to_string_lossy());
            sweep.consider(&entry.path(), name, &mut temp_files, min_age, dry_run)?;
        }
        for dir in read_dir_if_any(&self.root.join(STORES))? {
            if !dir.file_type()?.is_dir() {
                let name = format!("{STORES}/{}", dir.file_name().to_string_lossy());
                sweep.consider(&dir.path(), name, &mut orphans, Duration::ZERO, dry_run)?;
                continue;
            }
            for entry in read_dir_if_any(&dir.path())? {
                let name = format!("{}/{}", dir.file_name().to_string_lossy(), entry.file_name().to_string_lossy());
                if !referenced.contains(&name) {
                    sweep.consider(&entry.path(), format!("{STORES}/{name}"), &mut orphans, min_age, dry_run)?;
                }
            }
        }
        temp_files.sort();
        orphans.sort();
        sweep.temp_files = temp_files;
        sweep.orphans = orphans;
        Ok(sweep)
    }

    /// `stores/<name>` for a well-formed name (`xx/` + 32 hex digits whose
    /// first two are `xx`); anything else is refused.
    fn path_of(&self, name: &str) -> io::Result<PathBuf> {
        let well_formed = name.len() == 35
            && name.as_bytes()[2] == b'/'
            && name[..2] == name[3..5]
            && name[3..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if well_formed {
            Ok(self.root.join(STORES).join(name))
        } else {
            Err(io::Error::new(io::ErrorKind::InvalidData, "malformed store file name"))
        }
    }
}

/// The entries of a directory; none if it does not exist (a data directory
/// a server has not started on yet, or a fresh backup).
fn read_dir_if_any(path: &Path) -> io::Result<Vec<fs::DirEntry>> {
    match fs::read_dir(path) {
        Ok(entries) => entries.collect(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

fn random_name() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|err| io::Error::other(err.to_string()))?;
    Ok(hex(&bytes))
}

/// How old an unreferenced entry is, for a sweep.
enum Age {
    /// Removed since it was listed (an upload published or a file replaced
    /// meanwhile): nothing to report.
    Gone,
    /// Modified less than the minimum age ago: left alone.
    Young,
    Old,
}

fn age(path: &Path, min_age: Duration) -> io::Result<Age> {
    match fs::symlink_metadata(path).and_then(|meta| meta.modified()) {
        Ok(modified) if modified.elapsed().unwrap_or_default() < min_age => Ok(Age::Young),
        Ok(_) => Ok(Age::Old),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Age::Gone),
        Err(err) => Err(err),
    }
}

/// Removes a file or directory; already gone is fine.
fn remove_entry(path: &Path) -> io::Result<()> {
    let removed = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    match removed {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(blobs: &Blobs, upload: Staged) -> String {
        let batch = blobs.batch().unwrap();
        let name = blobs.publish(upload, &batch).unwrap();
        blobs.sync_batch(&batch).unwrap();
        name
    }

    fn staged(blobs: &Blobs, data: &[u8]) -> Staged {
        let mut staging = blobs.stage().unwrap();
        staging.write_all(data).unwrap();
        staging.finish().unwrap()
    }

    #[test]
    fn publish_open_remove() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let upload = staged(&blobs, b"hello");
        assert_eq!(upload.size, 5);
        let name = publish(&blobs, upload);
        assert_eq!(blobs.size_of(&name).unwrap(), 5);
        assert_eq!(io::read_to_string(blobs.open_file(&name).unwrap()).unwrap(), "hello");
        assert!(fs::read_dir(dir.path().join(TMP)).unwrap().next().is_none());
        blobs.remove(&name).unwrap();
        blobs.remove(&name).unwrap();
        assert!(blobs.open_file(&name).is_err());
    }

    #[test]
    fn open_files_are_shared_bounded_and_forgotten_and_say_who_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let names: Vec<String> = (0..3).map(|i| publish(&blobs, staged(&blobs, &[i]))).collect();
        let mut open = OpenFiles::new(2);
        let first = open.get(&blobs, &names[0]).unwrap();
        assert!(Arc::ptr_eq(&first, &open.get(&blobs, &names[0]).unwrap()), "one handle, shared");
        open.get(&blobs, &names[1]).unwrap();
        open.get(&blobs, &names[2]).unwrap();
        assert_eq!(open.files.len(), 2, "bounded");
        assert!(open.take(&names[2]).is_none(), "nobody reads it");
        blobs.remove(&names[2]).unwrap();
        assert!(open.get(&blobs, &names[2]).is_err(), "a forgotten, removed file is not served");
        // A handle a reader holds is known even after it left the cache.
        let held = open.get(&blobs, &names[1]).unwrap();
        open.get(&blobs, &names[0]).unwrap();
        let taken = open.take(&names[1]).expect("a reader holds it, cached or not");
        assert_eq!(taken.strong_count(), 1);
        drop((held, first));
        assert_eq!(taken.strong_count(), 0, "released when the reader lets go");
    }

    #[test]
    fn a_handle_readers_hold_stays_known_after_a_clear_and_is_never_opened_twice() {
        // The read cache keeps weak handles, and a work thread may take one
        // at any moment; what it holds must count as held, and a name must
        // have one handle to account for.
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let names: Vec<String> = (0..3).map(|i| publish(&blobs, staged(&blobs, &[i]))).collect();
        let mut open = OpenFiles::new(1);
        let reader = open.get(&blobs, &names[0]).unwrap();
        open.get(&blobs, &names[1]).unwrap();
        assert!(Arc::ptr_eq(&reader, &open.get(&blobs, &names[0]).unwrap()), "taken back, not opened again");
        open.get(&blobs, &names[2]).unwrap();
        open.clear();
        assert!(open.take(&names[0]).is_some(), "a reader's handle is known after a clear");
        assert!(open.take(&names[2]).is_none(), "one nobody holds is gone");
        drop(reader);
    }

    #[test]
    fn abandoned_uploads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        drop(staged(&blobs, b"x"));
        let mut staging = blobs.stage().unwrap();
        staging.write_all(b"partial").unwrap();
        drop(staging);
        assert!(fs::read_dir(dir.path().join(TMP)).unwrap().next().is_none());
    }

    #[test]
    fn pinned_files_outlive_their_originals() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let name = publish(&blobs, staged(&blobs, b"pinned"));
        let pinned = blobs.pin(std::slice::from_ref(&name)).unwrap();
        blobs.remove(&name).unwrap();
        let target = tempfile::tempdir().unwrap();
        assert_eq!(pinned.copy_to(target.path()).unwrap(), 6);
        assert_eq!(fs::read(target.path().join(STORES).join(&name)).unwrap(), b"pinned");
        drop(pinned);
        assert!(fs::read_dir(dir.path().join(TMP)).unwrap().next().is_none());
        assert_eq!(blobs.pin(&[name]).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn names_from_outside_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        for bad in [
            "../secret",
            "ab/../../x",
            "ab/ab",
            "ab/cd0123456789abcdef0123456789abcd",
            "AB/AB0123456789ABCDEF0123456789ABCD",
        ] {
            assert!(blobs.open_file(bad).is_err(), "{bad}");
            assert!(blobs.remove(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sweep_finds_leftovers_and_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let kept = publish(&blobs, staged(&blobs, b"keep"));
        let orphan = publish(&blobs, staged(&blobs, b"orphan"));
        let pending = blobs.stage().unwrap().finish().unwrap();
        std::mem::forget(pending);
        let referenced: HashSet<String> = [kept.clone()].into();
        let patient = blobs.sweep(&referenced, true, Duration::from_secs(600)).unwrap();
        assert_eq!((patient.recent, patient.orphans.len(), patient.temp_files.len()), (2, 0, 0));
        let found = blobs.sweep(&referenced, true, Duration::ZERO).unwrap();
        assert_eq!(found.orphans, vec![format!("stores/{orphan}")]);
        assert_eq!(found.temp_files.len(), 1);
        assert_eq!(blobs.sweep(&referenced, false, Duration::ZERO).unwrap(), found);
        assert_eq!(blobs.sweep(&referenced, true, Duration::ZERO).unwrap(), Sweep::default());
        assert!(blobs.open_file(&kept).is_ok());
    }
}
