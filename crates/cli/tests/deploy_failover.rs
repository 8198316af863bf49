//! 2 shards × 3 replicas of real `mako server` processes: cross-shard bank transfers from
//! client threads and from concurrently spawned `mako client txn` processes, while shard
//! leaders are killed with SIGKILL (shard 0's first). After each kill a new leader serves
//! with a higher epoch and transfers resume; at the end every acknowledged transfer is
//! present, money is conserved, and every killed replica, restarted from its data
//! directory, equals its leader.

mod common;

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, poll, show};
use mako_client::{Operation, OperationResult};
use mako_deploy::LocalTopology;

const KV: &str = "kv";
const ACCOUNTS: u32 = 16;
const START: i64 = 1000;
const KILLS: usize = 3;

fn account(i: u32) -> String {
    format!("acct{i:02}")
}

/// One released transfer: when it began and ended, the shards it touched, its marker key.
#[derive(Debug, Clone)]
struct Released {
    began: Instant,
    ended: Instant,
    shards: BTreeSet<u32>,
    marker: String,
}

/// A small deterministic generator (xorshift), so a failure can be rerun.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Two distinct accounts and an amount.
fn pick(rng: &mut Rng) -> (String, String, i64) {
    let a = rng.below(u64::from(ACCOUNTS)) as u32;
    let b = (a + 1 + rng.below(u64::from(ACCOUNTS) - 1) as u32) % ACCOUNTS;
    (account(a), account(b), 1 + rng.below(9) as i64)
}

#[test]
fn bank_transfers_survive_leader_kills() {
    bank_under_kills(LocalTopology::new(2, 3));
}

/// The same with every group on Multi-Paxos (`replication: paxos` in the config).
#[test]
fn bank_transfers_survive_leader_kills_with_paxos() {
    let mut topo = LocalTopology::new(2, 3);
    topo.extra.push_str("replication: paxos\n");
    bank_under_kills(topo);
}

fn bank_under_kills(topo: LocalTopology) {
    let mut c = Cluster::start(&topo);
    let cfg = c.cfg();
    let shards_of = {
        let cfg = Arc::clone(&cfg);
        move |keys: &[&str]| -> BTreeSet<u32> {
            keys.iter()
                .filter_map(|k| cfg.shard_of(KV, k.as_bytes()))
                .collect()
        }
    };
    let all: Vec<String> = (0..ACCOUNTS).map(account).collect();
    assert_eq!(
        shards_of(&all.iter().map(String::as_str).collect::<Vec<_>>()).len(),
        2,
        "the accounts span both shards"
    );
    let mut cl = c.client();
    cl.run(
        all.iter()
            .map(|a| Operation::Put {
                table: KV.into(),
                key: a.clone().into_bytes(),
                value: START.to_string().into_bytes(),
            })
            .collect(),
    )
    .expect("accounts initialised");
    let total = START * i64::from(ACCOUNTS);

    let stop = Arc::new(AtomicBool::new(false));
    let released: Arc<Mutex<Vec<Released>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut workers = Vec::new();
    // Client threads.
    for t in 0..3u64 {
        let (stop, released, errors) = (stop.clone(), released.clone(), errors.clone());
        let shards_of = shards_of.clone();
        let mut cl = c.client();
        workers.push(std::thread::spawn(move || {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
            let mut n = 0u32;
            while !stop.load(Ordering::Acquire) {
                let (a, b, x) = pick(&mut rng);
                let marker = format!("m/t{t}/{n:05}");
                n += 1;
                let began = Instant::now();
                let r = cl.run(vec![
                    Operation::Add {
                        table: KV.into(),
                        key: a.clone().into_bytes(),
                        delta: -x,
                    },
                    Operation::Add {
                        table: KV.into(),
                        key: b.clone().into_bytes(),
                        delta: x,
                    },
                    Operation::Put {
                        table: KV.into(),
                        key: marker.clone().into_bytes(),
                        value: b"1".to_vec(),
                    },
                ]);
                match r {
                    Ok(_) => released.lock().expect("lock").push(Released {
                        began,
                        ended: Instant::now(),
                        shards: shards_of(&[&a, &b, &marker]),
                        marker,
                    }),
                    Err(e) => errors.lock().expect("lock").push(e.to_string()),
                }
            }
        }));
    }
    // `mako client txn` processes, two at a time.
    {
        let (stop, released, errors) = (stop.clone(), released.clone(), errors.clone());
        let shards_of = shards_of.clone();
        let files = c.files.clone();
        workers.push(std::thread::spawn(move || {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d);
            let mut n = 0u32;
            while !stop.load(Ordering::Acquire) {
                let batch: Vec<_> = (0..2)
                    .map(|_| {
                        let (a, b, x) = pick(&mut rng);
                        let marker = format!("m/p/{n:05}");
                        n += 1;
                        let script = format!("add {a} -{x}\nadd {b} {x}\nput {marker} 1\n");
                        let mut cmd = common::mako_cmd(&files, &["client", "txn"]);
                        let mut child = cmd
                            .stdin(std::process::Stdio::piped())
                            .stdout(std::process::Stdio::piped())
                            .stderr(std::process::Stdio::piped())
                            .spawn()
                            .expect("mako client runs");
                        if let Some(mut i) = child.stdin.take() {
                            use std::io::Write;
                            let _ = i.write_all(script.as_bytes());
                        }
                        (Instant::now(), child, a, b, marker)
                    })
                    .collect();
                for (began, child, a, b, marker) in batch {
                    let o = child.wait_with_output().expect("mako client finishes");
                    if o.status.success()
                        && String::from_utf8_lossy(&o.stdout).contains("COMMITTED")
                    {
                        released.lock().expect("lock").push(Released {
                            began,
                            ended: Instant::now(),
                            shards: shards_of(&[&a, &b, &marker]),
                            marker,
                        });
                    } else {
                        errors
                            .lock()
                            .expect("lock")
                            .push(format!("process: {}", show(&o)));
                    }
                }
            }
        }));
    }

    let count = || released.lock().expect("lock").len();
    let mut resumes = Vec::new();
    for k in 0..KILLS {
        // Some load before each kill.
        let before = count();
        assert!(
            poll(Duration::from_secs(60), || (count() >= before + 20)
                .then_some(()))
            .is_some(),
            "transfers stalled before kill {k}: {} released, errors {:?}",
            count(),
            errors.lock().expect("lock")
        );
        // Shard 0's leader first, then alternating shards (whichever site leads then).
        let shard = (k % 2) as u32;
        // (A restarted preferred leader may be taking its shard back: wait for a leader.)
        let (old, epoch_before) = poll(Duration::from_secs(30), || {
            let old = c.dep.leader(shard)?;
            let st = c.client().status(&old).ok()?;
            Some((old, st.epoch))
        })
        .unwrap_or_else(|| panic!("no leader of shard {shard} before kill {k}"));
        let t0 = Instant::now();
        assert!(c.dep.kill(&old), "{old} was running");
        let (new, epoch) = poll(Duration::from_secs(30), || {
            let new = c.dep.leader(shard)?;
            let st = c.client().status(&new).ok()?;
            Some((new, st.epoch))
        })
        .unwrap_or_else(|| {
            panic!("no new leader of shard {shard} within 30 s after killing {old}")
        });
        assert_ne!(new, old);
        let elected = t0.elapsed();
        // The epoch increments (a new leader opens a new epoch); it may take a moment to
        // show once the leader serves.
        let epoch = poll(Duration::from_secs(30), || {
            c.client()
                .status(&new)
                .ok()
                .map(|s| s.epoch)
                .filter(|&e| e > epoch_before)
        })
        .unwrap_or_else(|| {
            panic!(
                "shard {shard}'s epoch stayed at {epoch} (was {epoch_before}) after the failover"
            )
        });
        let resumed = poll(Duration::from_secs(30), || {
            released
                .lock()
                .expect("lock")
                .iter()
                .filter(|r| r.began >= t0 && r.shards.contains(&shard))
                .map(|r| r.ended - t0)
                .min()
        });
        let Some(resumed) = resumed else {
            panic!(
                "no transfer touching shard {shard} released within 30 s of killing {old}; errors {:?}",
                errors.lock().expect("lock")
            )
        };
        eprintln!(
            "kill {k}: shard {shard} leader {old} SIGKILLed; new leader {new} after {elected:?}, \
             epoch {epoch_before} -> {epoch}; first transfer begun after the kill released after {resumed:?}"
        );
        resumes.push(resumed);
        c.dep.restart(&old).expect("the killed site restarts");
        let back = poll(Duration::from_secs(60), || c.client().status(&old).ok());
        assert!(back.is_some(), "{old} did not come back");
    }
    // Let the load run a little with every replica back.
    let before = count();
    assert!(
        poll(Duration::from_secs(60), || (count() >= before + 10)
            .then_some(()))
        .is_some(),
        "transfers stalled after the kills"
    );
    stop.store(true, Ordering::Release);
    for w in workers {
        w.join().expect("worker");
    }
    let released = released.lock().expect("lock").clone();
    let errors = errors.lock().expect("lock").clone();
    eprintln!(
        "{} transfers released, {} failed (aborted/unknown/no leader); resume times {resumes:?}; \
         first failures: {:?}",
        released.len(),
        errors.len(),
        &errors[..errors.len().min(5)]
    );

    // Money is conserved (one transaction reads every account).
    let mut cl = c.client();
    let res = cl
        .run(
            all.iter()
                .map(|a| Operation::Get {
                    table: KV.into(),
                    key: a.clone().into_bytes(),
                })
                .collect(),
        )
        .expect("read every account");
    let sum: i64 = res
        .iter()
        .map(|r| match r {
            OperationResult::Value(Some(v)) => String::from_utf8_lossy(v)
                .parse::<i64>()
                .expect("a decimal balance"),
            other => panic!("account read: {other:?}"),
        })
        .sum();
    assert_eq!(sum, total, "money is not conserved");
    // Every acknowledged transfer is present.
    let markers: BTreeSet<Vec<u8>> = cl
        .scan(Bound::Included(b"m/"), Bound::Excluded(b"m0"), u32::MAX)
        .expect("scan markers")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let missing: Vec<&String> = released
        .iter()
        .map(|r| &r.marker)
        .filter(|m| !markers.contains(m.as_bytes()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged transfers lost: {missing:?}"
    );
    assert!(markers.len() >= released.len());
    // Every replica (the restarted ones included) equals its leader.
    for shard in 0..2 {
        c.converge(shard, KV, Duration::from_secs(90));
    }
}
