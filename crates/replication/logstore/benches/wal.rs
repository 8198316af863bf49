//! WAL benchmark: sustained 4 KiB appends with group commit, per durability mode and
//! writer-thread count, plus the raw cost of one `fdatasync` after different kinds of write.
//!
//! Plain `main` (no harness). `WAL_BENCH_SECS` sets seconds per case (default 2),
//! `WAL_BENCH_DIR` the directory the temp dirs go in (default the system temp dir),
//! `WAL_BENCH_RUNS` the runs per case (default 3; the table shows medians).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_logstore::{Durability, GroupWrite, LogEntry, LogStore, LogStoreConfig};

const PAYLOAD: usize = 4096;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Filesystem type and device of the mount holding `path` (from /proc/mounts).
fn filesystem_of(path: &Path) -> String {
    let Ok(canon) = path.canonicalize() else {
        return "unknown".into();
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "unknown".into();
    };
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        if canon.starts_with(f[1]) && best.as_ref().is_none_or(|(l, _)| f[1].len() > *l) {
            best = Some((f[1].len(), format!("{} on {} ({})", f[2], f[1], f[0])));
        }
    }
    best.map_or_else(|| "unknown".into(), |(_, s)| s)
}

/// One measured run: appends/s, syncs, p50/p99 latency.
#[derive(Clone, Copy, Default)]
struct Run {
    ops_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    writes_per_sync: f64,
    sync_us: f64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_run(runs: &[Run]) -> Run {
    Run {
        ops_per_s: median(runs.iter().map(|r| r.ops_per_s).collect()),
        p50_us: median(runs.iter().map(|r| r.p50_us).collect()),
        p99_us: median(runs.iter().map(|r| r.p99_us).collect()),
        writes_per_sync: median(runs.iter().map(|r| r.writes_per_sync).collect()),
        sync_us: median(runs.iter().map(|r| r.sync_us).collect()),
    }
}

/// `threads` writers, each appending 4 KiB entries to its own group with `write_sync`,
/// compacting as they go so segments recycle, for `secs` seconds.
fn append_run(base: &Path, durability: Durability, threads: usize, secs: f64) -> Run {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let cfg = LogStoreConfig {
        durability,
        ..LogStoreConfig::new(dir.path())
    };
    let (log, _) = LogStore::open(cfg.clone()).expect("open");
    // Let the helper finish the initial spares so they do not compete with the run.
    let t0 = Instant::now();
    while durability != Durability::Memory
        && log.stats().spare_segments < cfg.preallocated_segments as u64
        && t0.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let log = Arc::new(log);
    let payload = Bytes::from(vec![0x5au8; PAYLOAD]);
    let warmup = Duration::from_millis(200);
    let measure = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            let payload = payload.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(1 << 16);
                let mut i = 0u64;
                loop {
                    let now = Instant::now();
                    let since = now - start;
                    if since >= warmup + measure {
                        break;
                    }
                    i += 1;
                    let w = GroupWrite {
                        entries: vec![LogEntry::new(i, 1, payload.clone())],
                        compact_to: (i % 256 == 0).then(|| i.saturating_sub(1024)),
                        ..GroupWrite::new(t as u32)
                    };
                    log.write_sync(vec![w]).expect("write");
                    if since >= warmup {
                        lat.push(now.elapsed().as_nanos() as u64);
                    }
                }
                lat
            })
        })
        .collect();
    let st0 = log.stats();
    let mut lat: Vec<u64> = Vec::new();
    for h in handles {
        lat.extend(h.join().expect("writer thread"));
    }
    let st = log.stats();
    log.shutdown();
    lat.sort_unstable();
    let syncs = st.syncs.saturating_sub(st0.syncs).max(1);
    let sync_us = st.sync_nanos.saturating_sub(st0.sync_nanos) as f64 / syncs as f64 / 1000.0;
    Run {
        ops_per_s: lat.len() as f64 / measure.as_secs_f64(),
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        writes_per_sync: if durability == Durability::Fsync {
            st.writes as f64 / syncs as f64
        } else {
            f64::NAN
        },
        sync_us: if durability == Durability::Fsync {
            sync_us
        } else {
            f64::NAN
        },
    }
}

/// How a raw-sync file is prepared before the timed 4 KiB write + `fdatasync` pairs.
#[derive(Clone, Copy)]
enum Prep {
    /// Overwrite blocks that were written with zeros and synced beforehand.
    PreZeroed,
    /// Append past EOF.
    Extend,
    /// Write into `fallocate`d (unwritten) extents.
    Fallocated,
    /// Write into a hole of a sparse file (`set_len`).
    Sparse,
}

fn raw_sync_run(base: &Path, prep: Prep, secs: f64) -> Run {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let path: PathBuf = dir.path().join("raw");
    let size: u64 = 64 << 20;
    let f: File = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create");
    match prep {
        Prep::PreZeroed => {
            let zeros = vec![0u8; 1 << 20];
            for off in (0..size).step_by(zeros.len()) {
                f.write_all_at(&zeros, off).expect("zero");
            }
        }
        Prep::Extend => {}
        Prep::Fallocated => {
            // SAFETY: plain syscall on a file descriptor we own.
            let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, size as libc::off_t) };
            assert_eq!(r, 0, "fallocate failed");
        }
        Prep::Sparse => f.set_len(size).expect("set_len"),
    }
    f.sync_all().expect("sync");
    let block = vec![0xa5u8; PAYLOAD];
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut off = 0u64;
    while Instant::now() < deadline && off + PAYLOAD as u64 <= size {
        let t = Instant::now();
        f.write_all_at(&block, off).expect("write");
        f.sync_data().expect("fdatasync");
        lat.push(t.elapsed().as_nanos() as u64);
        off += PAYLOAD as u64;
    }
    lat.sort_unstable();
    Run {
        ops_per_s: lat.len() as f64 / secs,
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
        writes_per_sync: 1.0,
        sync_us: f64::NAN,
    }
}

fn main() {
    let secs: f64 = env_or("WAL_BENCH_SECS", 2.0);
    let runs: usize = env_or("WAL_BENCH_RUNS", 3usize).max(1);
    let base: PathBuf = std::env::var_os("WAL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).expect("bench dir");
    println!(
        "mako-logstore WAL benchmark: {PAYLOAD} B entries, {secs} s per run, median of {runs} runs"
    );
    println!("directory: {} — {}", base.display(), filesystem_of(&base));
    println!("segments 64 MiB, 2 pre-zeroed spares, batch cap 4 MiB, compaction every 256 appends");
    println!();
    println!(
        "{:<10} {:>7} {:>12} {:>9} {:>10} {:>10} {:>12} {:>12}",
        "mode", "writers", "appends/s", "MiB/s", "p50 µs", "p99 µs", "writes/sync", "µs/sync"
    );
    for durability in [Durability::Fsync, Durability::Buffered, Durability::Memory] {
        for threads in [1usize, 8] {
            let rs: Vec<Run> = (0..runs)
                .map(|_| append_run(&base, durability, threads, secs))
                .collect();
            let r = median_run(&rs);
            let opt = |v: f64, prec: usize| {
                if v.is_nan() {
                    "-".to_string()
                } else {
                    format!("{v:.prec$}")
                }
            };
            println!(
                "{:<10} {:>7} {:>12.0} {:>9.1} {:>10.1} {:>10.1} {:>12} {:>12}",
                durability.to_string(),
                threads,
                r.ops_per_s,
                r.ops_per_s * PAYLOAD as f64 / (1 << 20) as f64,
                r.p50_us,
                r.p99_us,
                opt(r.writes_per_sync, 2),
                opt(r.sync_us, 1),
            );
        }
    }
    println!();
    println!("raw cost of one 4 KiB pwrite + fdatasync (single thread):");
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "write target", "ops/s", "p50 µs", "p99 µs"
    );
    let raw_secs = (secs / 2.0).max(0.2);
    for (name, prep) in [
        ("overwrite pre-zeroed blocks", Prep::PreZeroed),
        ("extend the file (append past EOF)", Prep::Extend),
        ("into fallocate()d space", Prep::Fallocated),
        ("into a sparse hole (set_len)", Prep::Sparse),
    ] {
        let rs: Vec<Run> = (0..runs)
            .map(|_| raw_sync_run(&base, prep, raw_secs))
            .collect();
        let r = median_run(&rs);
        println!(
            "{:<34} {:>10.0} {:>10.1} {:>10.1}",
            name, r.ops_per_s, r.p50_us, r.p99_us
        );
    }
}
