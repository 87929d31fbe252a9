//! The durable-write ceilings of a disk, the references for Sync Node's
//! `put` and `append` benchmarks. One writer doing, per operation, what one
//! write must at least do:
//! - `store` (the default): write 1 KiB to a temp file, fsync it, rename
//!   it, fsync the directory, and commit one row in SQLite with
//!   `synchronous=FULL` (WAL);
//! - `append`: commit one 1 KiB blob INSERT in SQLite with
//!   `synchronous=FULL` (WAL) — a store log entry.
//!
//! Usage: `cargo run --release --example write_ceiling -- DIR [SECONDS] [store|append]`
//! Prints one line: `ops/s <n> p50_ms <x> p99_ms <y>`.

use rusqlite::{Connection, params};
use std::fs::{self, File};
use std::io::Write;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: write_ceiling DIR [SECONDS]")?);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let append = match args.next().as_deref() {
        None | Some("store") => false,
        Some("append") => true,
        Some(other) => return Err(format!("unknown mode {other}: store or append").into()),
    };
    fs::create_dir_all(dir.join("files"))?;
    let db = Connection::open(dir.join("ceiling.db"))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, file TEXT, n INTEGER)", [])?;
    db.execute("CREATE TABLE IF NOT EXISTS entries (k INTEGER PRIMARY KEY, bytes BLOB)", [])?;
    let payload = [0x5au8; 1024];
    let files = File::open(dir.join("files"))?;
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut n: u64 = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let op = Instant::now();
        if append {
            db.execute("INSERT INTO entries (bytes) VALUES (?1)", [&payload[..]])?;
            latencies.push(op.elapsed());
            n += 1;
            continue;
        }
        let temp = dir.join("files").join("upload.tmp");
        let mut file = File::create(&temp)?;
        file.write_all(&payload)?;
        file.sync_all()?;
        let name = format!("f{}", n % 64);
        fs::rename(&temp, dir.join("files").join(&name))?;
        files.sync_all()?;
        db.execute("INSERT OR REPLACE INTO t (k, file, n) VALUES (?1, ?2, ?3)", params![n % 64, name, n])?;
        latencies.push(op.elapsed());
        n += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let at =
        |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
    println!("ops/s {:.0} p50_ms {:.2} p99_ms {:.2}", n as f64 / elapsed, at(0.5), at(0.99));
    Ok(())
}
