//! Reads answered without the loop. When the loop answers `GET` of a
//! store, it leaves here what it answered — for that session token and
//! key, with the commit mark its read transaction started after — and a
//! work thread answers the same read again by itself, for as long as no
//! commit has happened since (by the loop or by a command-line tool:
//! [`CommitWatch`]) and the session is not due for its sliding extension.
//! A commit makes every entry stale at the instant it becomes visible, so
//! a read never shows a version older than one a client was told about,
//! and a revoked session, grant or account stops reading at once. The
//! loop also empties the cache after each of its own commits, so a stale
//! entry never waits for the next read to be found out.
//!
//! It holds what the answers carry (at most [`CACHE_BYTES`] of it) and no
//! store file: an entry points at the loop's open-file cache, and a read
//! whose file is no longer open there goes to the loop. A small body a work
//! thread read from that file is kept with its entry, so the room thread
//! can answer the next read without ever touching a store file
//! ([`Source`]).

use crate::db::commits::{CommitMark, CommitWatch};
use crate::encoding::http_date;
use crate::http::{Body, Response};
use crate::permission::Permission;
use crate::precondition::NoneMatch;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock, PoisonError, RwLock, Weak};

/// Store answers may be cached only if revalidated every time (SPEC §1): a
/// browser must never show a stale version or serve a revoked reader.
pub const REVALIDATE: &str = "private, no-cache";
/// What the entries may hold in all; past it the cache starts again.
const CACHE_BYTES: usize = 1 << 20;
/// What an entry costs besides its key, token hash and meta.
const ENTRY_COST: usize = 256;
/// A body at most this large is kept with its entry once read.
const KEPT_BODY: u64 = 64 * 1024;

/// Where the body of a cached `200` may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Its length only: the answer to a `HEAD`.
    Length,
    /// Only a copy kept in memory: the room thread, which never waits for
    /// a disk (nor starts a read, nor updates a file's access time).
    Kept,
    /// The file if need be: a work thread. A small body read so is kept
    /// for the next reads.
    File,
}

/// What a read of one store answers as of one commit: all a 200 or a 304
/// carries but the body.
#[derive(Debug, Clone)]
pub struct StoreRead {
    pub token: String,
    pub seq: i64,
    pub modified: i64,
    pub size: u64,
    pub meta: Option<String>,
    /// Index of the log's last entry (0: none) and of its base.
    pub log_head: u64,
    pub log_base: u64,
    pub permission: Permission,
    /// The caller's envelope on the store (SPEC §10.2), if any.
    pub envelope_seq: Option<i64>,
    /// The body, while the loop's open-file cache holds it.
    pub file: Weak<File>,
    /// A small body once a work thread read it (counted in the cache's
    /// bytes).
    pub kept: OnceLock<Vec<u8>>,
}

impl StoreRead {
    /// The answer to a read with `if_none_match`, its body from `body`
    /// (asked for only when the answer has one).
    pub fn answer<E>(
        &self,
        if_none_match: Option<&NoneMatch>,
        body: impl FnOnce() -> Result<Body, E>,
    ) -> Result<Response, E> {
        let etag = format!("\"{}\"", self.token);
        if if_none_match.is_some_and(|tags| tags.matches(&self.token)) {
            let response = Response::new(304).with_header("ETag", etag).with_header("Cache-Control", REVALIDATE);
            return Ok(self.with_shared_headers(response));
        }
        let mut response = Response::new(200)
            .with_header("Content-Type", "application/octet-stream")
            .with_header("Cache-Control", REVALIDATE)
            .with_header("ETag", etag)
            .with_header("Sync-Permission", self.permission.as_str())
            .with_header("Sync-Seq", self.seq.to_string())
            .with_header("Last-Modified", http_date(self.modified));
        response = self.with_shared_headers(response);
        if let Some(meta) = &self.meta {
            response.header("Sync-Meta", meta.clone());
        }
        response.body = body()?;
        Ok(response)
    }

    /// `Sync-Log-Head` and `Sync-Log-Base` once the log has an entry (on
    /// 304s too: an append does not change the ETag), and
    /// `Sync-Envelope-Seq`.
    fn with_shared_headers(&self, mut response: Response) -> Response {
        if self.log_head > 0 {
            response.header("Sync-Log-Head", self.log_head.to_string());
            response.header("Sync-Log-Base", self.log_base.to_string());
        }
        if let Some(seq) = self.envelope_seq {
            response.header("Sync-Envelope-Seq", seq.to_string());
        }
        response
    }

    fn cost(&self, token_hash: &str, key: &str) -> usize {
        ENTRY_COST + token_hash.len() + key.len() + self.meta.as_ref().map_or(0, String::len)
    }
}

/// The reads the loop answered since the last commit.
#[derive(Debug)]
pub struct ReadCache {
    /// `None`: commits cannot be noticed, and nothing is answered here.
    watch: Option<CommitWatch>,
    entries: RwLock<Entries>,
    /// Reads answered here, so tests can tell (`test-hooks` builds only).
    #[cfg(feature = "test-hooks")]
    pub answered: std::sync::atomic::AtomicU64,
    /// Of those, the ones answered on the room thread.
    #[cfg(feature = "test-hooks")]
    pub answered_in_room: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct Entries {
    /// The commit every entry is as of.
    mark: Option<CommitMark>,
    sessions: HashMap<String, SessionReads>,
    bytes: usize,
}

#[derive(Debug)]
struct SessionReads {
    /// From then on the session is due for its sliding extension (or has
    /// expired), which only the loop does.
    fresh_until_ms: i64,
    reads: HashMap<String, Arc<StoreRead>>,
}

impl ReadCache {
    pub fn new(watch: Option<CommitWatch>) -> ReadCache {
        ReadCache {
            watch,
            entries: RwLock::default(),
            #[cfg(feature = "test-hooks")]
            answered: Default::default(),
            #[cfg(feature = "test-hooks")]
            answered_in_room: Default::default(),
        }
    }

    /// The commit mark now: taken before a read transaction begins, it is
    /// what that transaction's answers are remembered as of.
    pub fn mark(&self) -> Option<CommitMark> {
        self.watch.as_ref()?.mark()
    }

    /// Remembers what the loop answered to `token_hash` for `key`, in a
    /// read transaction begun after commit mark `at`.
    pub fn remember(&self, at: CommitMark, token_hash: &str, fresh_until_ms: i64, key: &str, read: StoreRead) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let cost = read.cost(token_hash, key);
        if entries.mark != Some(at) || entries.bytes + cost > CACHE_BYTES {
            *entries = Entries { mark: Some(at), ..Entries::default() };
        }
        entries.bytes += cost;
        let session = entries
            .sessions
            .entry(token_hash.to_owned())
            .or_insert_with(|| SessionReads { fresh_until_ms, reads: HashMap::new() });
        session.fresh_until_ms = fresh_until_ms;
        session.reads.insert(key.to_owned(), Arc::new(read));
    }

    /// Forgets everything (the loop has just committed).
    pub fn forget(&self) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.mark.is_some() {
            *entries = Entries::default();
        }
    }

    /// The answer to a read by `token_hash` of `key` with `if_none_match`,
    /// if the loop gave it since the last commit and would give it again,
    /// with its body (if any) from `source`.
    pub fn answer(
        &self,
        token_hash: &str,
        key: &str,
        if_none_match: Option<&NoneMatch>,
        now_ms: i64,
        source: Source,
    ) -> Option<Response> {
        let (read, at) = {
            let entries = self.entries.read().ok()?;
            let session = entries.sessions.get(token_hash).filter(|session| now_ms < session.fresh_until_ms)?;
            (Arc::clone(session.reads.get(key)?), entries.mark?)
        };
        // The file is taken (and read) before the mark is compared: a
        // commit that replaces it after the comparison then finds it still
        // held, as it would any reader's.
        let body = || match (source, read.kept.get()) {
            (Source::Length, _) => Ok(Body::Unsent(read.size)),
            (_, Some(kept)) => Ok(Body::Bytes(kept.clone())),
            (Source::Kept, None) => Err(()),
            (Source::File, None) => self.body_from_file(token_hash, key, &read, at),
        };
        let response = read.answer(if_none_match, body).ok()?;
        if self.mark()? != at {
            return None;
        }
        Some(response)
    }

    /// `read`'s body from its file; a small one is read now and kept.
    fn body_from_file(&self, token_hash: &str, key: &str, read: &Arc<StoreRead>, at: CommitMark) -> Result<Body, ()> {
        let file = read.file.upgrade().ok_or(())?;
        if read.size > KEPT_BODY {
            return Ok(Body::File { file, len: read.size });
        }
        let mut bytes = vec![0; read.size as usize];
        file.read_exact_at(&mut bytes, 0).map_err(drop)?;
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let current = entries.sessions.get(token_hash).and_then(|session| session.reads.get(key));
        if entries.mark == Some(at)
            && current.is_some_and(|current| Arc::ptr_eq(current, read))
            && entries.bytes + bytes.len() <= CACHE_BYTES
            && read.kept.set(bytes.clone()).is_ok()
        {
            entries.bytes += bytes.len();
        }
        Ok(Body::Bytes(bytes))
    }

    /// Counts a read answered from here (on the room thread or not), so
    /// tests can tell (`test-hooks` builds only).
    #[cfg(feature = "test-hooks")]
    pub fn count_answer(&self, in_room: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.answered.fetch_add(1, Relaxed);
        if in_room {
            self.answered_in_room.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use crate::precondition::parse_none_match;

    struct Fixture {
        dir: std::path::PathBuf,
        server: Db,
        cache: ReadCache,
        file: Arc<File>,
    }

    impl Fixture {
        fn new(name: &str) -> Fixture {
            let dir = std::env::temp_dir().join(format!("sync-node-read-cache-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("test.db");
            let server = Db::open_for_server(&path).unwrap();
            let cache = ReadCache::new(Some(CommitWatch::open(&path).unwrap()));
            let body = dir.join("body");
            std::fs::write(&body, b"hello").unwrap();
            let file = Arc::new(File::open(&body).unwrap());
            Fixture { dir, server, cache, file }
        }

        fn read(&self, token: &str) -> StoreRead {
            StoreRead {
                token: token.into(),
                seq: 7,
                modified: 0,
                size: 5,
                meta: Some("m".into()),
                log_head: 0,
                log_base: 0,
                permission: Permission::Read,
                envelope_seq: Some(3),
                file: Arc::downgrade(&self.file),
                kept: OnceLock::new(),
            }
        }

        fn commit(&self, db: &Db) {
            db.write(Db::next_seq).unwrap();
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn answers_what_the_loop_answered_until_any_commit() {
        let fixture = Fixture::new("commit");
        let cache = &fixture.cache;
        let at = cache.mark().unwrap();
        cache.remember(at, "session", 1_000, "key", fixture.read("v1"));
        let response = cache.answer("session", "key", None, 10, Source::File).expect("a hit");
        assert_eq!(response.status, 200);
        assert_eq!(response.header_value("ETag"), Some("\"v1\""));
        assert_eq!(response.header_value("Sync-Meta"), Some("m"));
        assert_eq!(response.header_value("Sync-Envelope-Seq"), Some("3"));
        let current = parse_none_match("\"v1\"").unwrap();
        assert_eq!(cache.answer("session", "key", Some(&current), 10, Source::File).unwrap().status, 304);
        assert!(cache.answer("other session", "key", None, 10, Source::File).is_none(), "entries are per session");
        assert!(cache.answer("session", "other key", None, 10, Source::File).is_none());
        assert!(cache.answer("session", "key", None, 1_000, Source::File).is_none(), "due for extension: the loop's");

        // A command-line tool's commit (another connection) ends it at once.
        let tool = Db::open_existing(&fixture.dir.join("test.db")).unwrap();
        fixture.commit(&tool);
        assert!(cache.answer("session", "key", None, 10, Source::File).is_none());
        // And so does the loop's own, whose mark is newer than the entry's.
        cache.remember(cache.mark().unwrap(), "session", 1_000, "key", fixture.read("v2"));
        assert!(cache.answer("session", "key", None, 10, Source::File).is_some());
        fixture.commit(&fixture.server);
        assert!(cache.answer("session", "key", None, 10, Source::File).is_none());
    }

    #[test]
    fn an_entry_remembered_as_of_an_older_commit_is_never_answered() {
        let fixture = Fixture::new("older");
        let cache = &fixture.cache;
        let before = cache.mark().unwrap();
        fixture.commit(&fixture.server);
        cache.remember(before, "session", 1_000, "key", fixture.read("v1"));
        assert!(cache.answer("session", "key", None, 10, Source::File).is_none());
    }

    #[test]
    fn forgetting_and_closed_files_send_reads_to_the_loop() {
        let mut fixture = Fixture::new("forget");
        let at = fixture.cache.mark().unwrap();
        fixture.cache.remember(at, "session", 1_000, "key", fixture.read("v1"));
        fixture.cache.forget();
        assert!(fixture.cache.answer("session", "key", None, 10, Source::File).is_none());
        fixture.cache.remember(at, "session", 1_000, "key", fixture.read("v1"));
        let current = parse_none_match("\"v1\"").unwrap();
        fixture.file = Arc::new(File::open(fixture.dir.join("body")).unwrap());
        // The loop closed the file: a 304 needs none, a 200 goes to the loop.
        assert_eq!(fixture.cache.answer("session", "key", Some(&current), 10, Source::File).unwrap().status, 304);
        assert!(fixture.cache.answer("session", "key", None, 10, Source::File).is_none());
    }

    #[test]
    fn it_holds_at_most_its_bytes() {
        let fixture = Fixture::new("bytes");
        let at = fixture.cache.mark().unwrap();
        let mut read = fixture.read("v1");
        read.meta = Some("x".repeat(8000));
        for n in 0..1000 {
            fixture.cache.remember(at, "session", 1_000, &format!("key {n}"), read.clone());
            assert!(fixture.cache.entries.read().unwrap().bytes <= CACHE_BYTES);
        }
        assert!(fixture.cache.answer("session", "key 999", None, 10, Source::File).is_some());
    }

    #[test]
    fn a_body_read_from_its_file_is_kept_for_the_room_within_the_bytes() {
        let fixture = Fixture::new("kept");
        let cache = &fixture.cache;
        let at = cache.mark().unwrap();
        cache.remember(at, "session", 1_000, "key", fixture.read("v1"));
        assert!(cache.answer("session", "key", None, 10, Source::Kept).is_none(), "nothing kept yet");
        let head = cache.answer("session", "key", None, 10, Source::Length).unwrap();
        assert!(matches!(head.body, Body::Unsent(5)));
        let read = cache.answer("session", "key", None, 10, Source::File).unwrap();
        assert_eq!(read.body_bytes(), b"hello");
        let bytes_with_body = cache.entries.read().unwrap().bytes;
        let kept = cache.answer("session", "key", None, 10, Source::Kept).expect("kept");
        assert_eq!(kept.body_bytes(), b"hello");

        // A body that would pass the cache's bytes is read, not kept.
        let mut big = fixture.read("v2");
        big.size = 5;
        // It leaves room for fewer than its 5 bytes.
        big.meta = Some("x".repeat(CACHE_BYTES - bytes_with_body - big.cost("session", "big") - 2));
        cache.remember(at, "session", 1_000, "big", big);
        assert_eq!(cache.answer("session", "big", None, 10, Source::File).unwrap().body_bytes(), b"hello");
        assert!(cache.answer("session", "big", None, 10, Source::Kept).is_none());
        assert!(cache.entries.read().unwrap().bytes <= CACHE_BYTES);
    }

    #[test]
    fn without_a_watch_nothing_is_answered() {
        let cache = ReadCache::new(None);
        assert!(cache.mark().is_none());
        assert!(cache.answer("session", "key", None, 10, Source::File).is_none());
    }
}
