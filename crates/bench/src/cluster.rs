//! The micro workload on an in-process cluster (`mako demo`, `mako bench --shards/--replicas`).
//!
//! Keys are spread over shards (`key % S`); worker `i` coordinates on the
//! leader of shard `i % S`. Each transaction reads four distinct keys and,
//! unless it is read-only, writes all four back. Commits are speculative; each
//! worker keeps its unreleased commits in order and records release latency
//! as `VW` covers them, so execution never waits for replication.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use mako_logstore::Durability;
use mako_server::{Cluster, ClusterConfig, NetKind, SiteConfig, Speculative};
use rand::{Rng, SeedableRng, rngs::SmallRng};

use crate::driver::{Dist, ZIPF_THETA};
use crate::zipf::{KeyDist, Zipf};

/// One cluster run.
#[derive(Debug, Clone)]
pub struct ClusterBenchConfig {
    /// Shards.
    pub shards: u32,
    /// Replicas per shard (1 = no replication).
    pub replicas: u32,
    /// Coordinator worker threads per shard leader.
    pub threads: u32,
    /// Measured time.
    pub duration: Duration,
    /// Keys over all shards.
    pub keys: u64,
    /// Percentage of read-only transactions (the rest read-modify-write).
    pub read_pct: u32,
    /// Key distribution.
    pub dist: Dist,
    /// Bytes per value.
    pub value_size: usize,
    /// Raft log durability.
    pub durability: Durability,
    /// Seed.
    pub seed: u64,
}

/// Results of a cluster run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterReport {
    /// Shards.
    pub shards: u32,
    /// Replicas per shard.
    pub replicas: u32,
    /// Workers per shard.
    pub threads: u32,
    /// Read-only percentage.
    pub read_pct: u32,
    /// Load time, seconds.
    pub load_secs: f64,
    /// Speculative commits per second.
    pub spec_per_sec: f64,
    /// Released transactions per second.
    pub released_per_sec: f64,
    /// Aborts as a percentage of attempts.
    pub abort_pct: f64,
    /// Transactions touching more than one shard, percent of commits.
    pub distributed_pct: f64,
    /// Speculative commit latency (begin to commit return), p50 µs.
    pub commit_p50_us: f64,
    /// Release latency (begin to release), p50 µs.
    pub release_p50_us: f64,
    /// Release latency p99 µs.
    pub release_p99_us: f64,
    /// Release latency p99.9 µs.
    pub release_p999_us: f64,
    /// Follower replay lag p99 µs (time queued before replay; 0 for batches replayed on arrival).
    pub replay_lag_p99_us: f64,
    /// Commits still unreleased when the run ended (released afterwards or timed out).
    pub unreleased_at_end: u64,
    /// Whether every follower's store equals its leader's after the run.
    pub consistent: bool,
    /// The first difference found, if any.
    pub difference: Option<String>,
}

#[derive(Default)]
struct Counters {
    spec: CachePadded<AtomicU64>,
    released: CachePadded<AtomicU64>,
    aborted: CachePadded<AtomicU64>,
    distributed: CachePadded<AtomicU64>,
}

use crate::driver::new_histogram as hist;

/// Progress of a cluster run, about once a second.
#[derive(Debug, Clone, Copy)]
pub struct ClusterProgress {
    /// Time into the measured phase.
    pub elapsed: Duration,
    /// The measured phase's length.
    pub total: Duration,
    /// Speculative commits so far.
    pub spec: u64,
    /// Released so far.
    pub released: u64,
}

/// Starts a cluster, loads, runs, checks replicas; returns the report.
pub fn run_cluster(
    cfg: &ClusterBenchConfig,
    mut progress: impl FnMut(ClusterProgress),
) -> Result<ClusterReport, mako_server::cluster::ClusterError> {
    let cluster = Cluster::start(ClusterConfig {
        replicas: cfg.replicas,
        site: SiteConfig {
            shards: cfg.shards,
            workers: cfg.threads.max(1),
            tables: vec![crate::TABLE.into()],
            timeout: Duration::from_secs(10),
            ..SiteConfig::default()
        },
        net: NetKind::Mem,
        durability: cfg.durability,
        ..ClusterConfig::default()
    })?;
    let s_count = u64::from(cfg.shards);
    let value = Bytes::from(vec![b'x'; cfg.value_size]);
    // Load phase: each shard's leader loads its keys in transactions of 1,000 writes.
    let loaded = Instant::now();
    std::thread::scope(|sc| {
        for s in 0..cfg.shards {
            let (cluster, value) = (&cluster, &value);
            sc.spawn(move || {
                let site = cluster.leader(s);
                let mut k = u64::from(s);
                while k < cfg.keys {
                    let Ok(mut tx) = site.begin(0) else {
                        tracing::warn!("worker 0 is not configured; nothing loaded");
                        return;
                    };
                    for _ in 0..1000 {
                        if k >= cfg.keys {
                            break;
                        }
                        let _ = tx.put(s, 0, &k.to_be_bytes(), value.clone());
                        k += s_count;
                    }
                    if let Err(e) = tx.commit() {
                        tracing::warn!("load transaction failed: {e}");
                    }
                }
            });
        }
    });
    let load_secs = loaded.elapsed().as_secs_f64();
    let dist = match cfg.dist {
        Dist::Uniform => KeyDist::Uniform { n: cfg.keys },
        Dist::Zipf => KeyDist::Zipf(Zipf::new(cfg.keys, ZIPF_THETA)),
    };
    let workers = cfg.shards * cfg.threads;
    let counters: Vec<Counters> = (0..workers).map(|_| Counters::default()).collect();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (commit_h, release_h, unreleased) = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..workers)
            .map(|i| {
                let (cluster, dist, stop, c) = (&cluster, &dist, &stop, &counters[i as usize]);
                let value = &value;
                sc.spawn(move || {
                    let home = i % cfg.shards;
                    let site = cluster.leader(home);
                    let mut rng = SmallRng::seed_from_u64(cfg.seed + u64::from(i));
                    let (mut ch, mut rh) = (hist(), hist());
                    let mut pending: VecDeque<(Instant, Speculative)> = VecDeque::new();
                    let settle = |pending: &mut VecDeque<(Instant, Speculative)>,
                                  rh: &mut Histogram<u64>| {
                        while pending.front().is_some_and(|(_, s)| s.is_released()) {
                            if let Some((t0, _)) = pending.pop_front() {
                                let _ = rh.record((t0.elapsed().as_nanos() as u64).max(1));
                                c.released.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let mut keys = [0u64; 4];
                        let mut n = 0;
                        while n < 4 {
                            let k = dist.sample(&mut rng);
                            if !keys[..n].contains(&k) {
                                keys[n] = k;
                                n += 1;
                            }
                        }
                        let write = rng.random_range(0..100) >= cfg.read_pct;
                        let t0 = Instant::now();
                        let Ok(mut tx) = site.begin(i / cfg.shards) else {
                            tracing::warn!("worker {} is not configured", i / cfg.shards);
                            break;
                        };
                        let r = (|| {
                            for k in keys {
                                let s = (k % s_count) as u32;
                                let v = tx.get(s, 0, &k.to_be_bytes())?;
                                if write {
                                    let mut nv =
                                        v.map(|b| b.to_vec()).unwrap_or_else(|| value.to_vec());
                                    if let Some(b) = nv.first_mut() {
                                        *b = b.wrapping_add(1);
                                    }
                                    tx.put(s, 0, &k.to_be_bytes(), Bytes::from(nv))?;
                                }
                            }
                            tx.commit_speculative()
                        })();
                        match r {
                            Ok(spec) => {
                                let _ = ch.record((t0.elapsed().as_nanos() as u64).max(1));
                                c.spec.fetch_add(1, Ordering::Relaxed);
                                let touched = keys
                                    .iter()
                                    .map(|k| k % s_count)
                                    .collect::<std::collections::BTreeSet<_>>();
                                if touched.len() > 1 {
                                    c.distributed.fetch_add(1, Ordering::Relaxed);
                                }
                                pending.push_back((t0, spec));
                            }
                            Err(_) => {
                                c.aborted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        settle(&mut pending, &mut rh);
                    }
                    // Drain: wait for what is still unreleased.
                    let left = pending.len() as u64;
                    for (t0, s) in pending.drain(..) {
                        if s.wait_release(Duration::from_secs(10)).is_ok() {
                            let _ = rh.record((t0.elapsed().as_nanos() as u64).max(1));
                        }
                    }
                    (ch, rh, left)
                })
            })
            .collect();
        let total = cfg.duration;
        loop {
            let el = started.elapsed();
            if el >= total {
                break;
            }
            std::thread::sleep((total - el).min(Duration::from_secs(1)));
            progress(ClusterProgress {
                elapsed: started.elapsed().min(total),
                total,
                spec: counters
                    .iter()
                    .map(|c| c.spec.load(Ordering::Relaxed))
                    .sum(),
                released: counters
                    .iter()
                    .map(|c| c.released.load(Ordering::Relaxed))
                    .sum(),
            });
        }
        stop.store(true, Ordering::Relaxed);
        let (mut ch, mut rh, mut left) = (hist(), hist(), 0);
        for h in handles {
            if let Ok((c, r, l)) = h.join() {
                let _ = ch.add(&c);
                let _ = rh.add(&r);
                left += l;
            }
        }
        (ch, rh, left)
    });
    let secs = cfg.duration.as_secs_f64();
    let sum = |f: fn(&Counters) -> u64| counters.iter().map(f).sum::<u64>();
    let (spec, released, aborted, distributed) = (
        sum(|c| c.spec.load(Ordering::Relaxed)),
        sum(|c| c.released.load(Ordering::Relaxed)),
        sum(|c| c.aborted.load(Ordering::Relaxed)),
        sum(|c| c.distributed.load(Ordering::Relaxed)),
    );
    // Replicas: wait for followers to catch up, then compare every follower with its leader.
    let difference = cluster.compare_replicas(Duration::from_secs(20)).err();
    let consistent = difference.is_none();
    let mut lag = hist();
    for site in cluster.sites.iter().flat_map(|s| s.iter().skip(1)) {
        for l in site.replay_lags() {
            let _ = lag.record(l.max(1));
        }
        let immediate = site
            .replayed()
            .saturating_sub(site.replay_lags().len() as u64);
        let _ = lag.record_n(1, immediate);
    }
    cluster.shutdown();
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    Ok(ClusterReport {
        shards: cfg.shards,
        replicas: cfg.replicas,
        threads: cfg.threads,
        read_pct: cfg.read_pct,
        load_secs,
        spec_per_sec: spec as f64 / secs,
        released_per_sec: released as f64 / secs,
        abort_pct: if spec + aborted == 0 {
            0.0
        } else {
            100.0 * aborted as f64 / (spec + aborted) as f64
        },
        distributed_pct: if spec == 0 {
            0.0
        } else {
            100.0 * distributed as f64 / spec as f64
        },
        commit_p50_us: q(&commit_h, 0.5),
        release_p50_us: q(&release_h, 0.5),
        release_p99_us: q(&release_h, 0.99),
        release_p999_us: q(&release_h, 0.999),
        replay_lag_p99_us: if lag.is_empty() {
            0.0
        } else {
            lag.value_at_quantile(0.99) as f64
        },
        unreleased_at_end: unreleased,
        consistent,
        difference,
    })
}
