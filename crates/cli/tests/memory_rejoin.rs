//! `durability: memory` across processes: a killed replica restarts empty, rejoins without a
//! vote until it has caught up, and the deployment keeps every acknowledged write through a
//! later leader failure.

use std::time::{Duration, Instant};

use mako_deploy::{Deployment, LocalTopology, Output};

fn role(d: &Deployment, site: &str) -> Option<String> {
    let mut c = d.client().ok()?;
    c.status(site).ok().map(|s| s.role)
}

#[test]
fn a_memory_replica_rejoins_as_a_non_voter_and_nothing_acknowledged_is_lost() {
    memory_rejoin("");
}

/// The same with Multi-Paxos: the rejoining acceptor neither campaigns nor promises until it
/// caught up.
#[test]
fn a_memory_replica_rejoins_with_paxos_and_nothing_acknowledged_is_lost() {
    memory_rejoin("replication: paxos\n");
}

fn memory_rejoin(extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut topo = LocalTopology::new(1, 3);
    topo.durability = "memory".into();
    topo.extra.push_str(extra);
    let file = topo.write(dir.path()).unwrap();
    let logs = dir.path().join("logs");
    let mut d = Deployment::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_mako")),
        &[file],
        &[],
        Output::Files(logs.clone()),
        Some("info"),
    )
    .unwrap();
    let dump = |logs: &std::path::Path| {
        for e in std::fs::read_dir(logs).unwrap().flatten() {
            eprintln!(
                "== {}\n{}",
                e.path().display(),
                std::fs::read_to_string(e.path()).unwrap_or_default()
            );
        }
    };
    if let Err(e) = d.wait_ready(Duration::from_secs(30)) {
        dump(&logs);
        panic!("{e}");
    }
    let mut c = d.client().unwrap();
    let mut acked = Vec::new();
    for i in 0..200u32 {
        let k = format!("k{i:04}");
        c.put(k.as_bytes(), b"before").unwrap();
        acked.push(k);
    }
    // Kill a follower: it loses everything and must rejoin.
    let leader = d.leader(0).expect("a leader");
    let follower = ["s0r0", "s0r1", "s0r2"]
        .into_iter()
        .find(|s| *s != leader)
        .unwrap()
        .to_string();
    assert!(d.kill(&follower));
    for i in 200..300u32 {
        let k = format!("k{i:04}");
        c.put(k.as_bytes(), b"while down").unwrap();
        acked.push(k);
    }
    d.restart(&follower).unwrap();
    // It comes back as `rejoining` (if we look fast enough) and ends a follower whose data
    // equals the leader's.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw = Vec::new();
    loop {
        if let Some(r) = role(&d, &follower) {
            if saw.last() != Some(&r) {
                saw.push(r.clone());
            }
            if r == "follower" {
                let mut c2 = d.client().unwrap();
                let a = c2.digest(&leader, "kv");
                let b = c2.digest(&follower, "kv");
                if let (Ok(a), Ok(b)) = (a, b)
                    && a.0 == b.0
                    && a.1 == b.1
                {
                    break;
                }
            }
        }
        if Instant::now() > deadline {
            dump(&logs);
            panic!("{follower} never converged (roles seen: {saw:?})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !saw.iter().any(|r| r == "leader"),
        "a rejoining replica never leads: {saw:?}"
    );
    let log = std::fs::read_to_string(logs.join(format!("{follower}.log"))).unwrap();
    assert!(
        log.contains("rejoining without a vote"),
        "the restart is a rejoin:\n{log}"
    );
    // Both of its groups (its shard's and `meta`) must have caught up before the leader goes:
    // until then it may not vote, and the two left would have no majority (by design).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(logs.join(format!("{follower}.log"))).unwrap();
        if log.matches("rejoined: caught up").count() >= 2 {
            break;
        }
        if Instant::now() > deadline {
            dump(&logs);
            panic!("{follower} did not catch up in both of its groups");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Now lose the leader (a minority): the two others elect one that has every write.
    assert!(d.kill(&leader));
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        if let Some(l) = d.leader(0) {
            break l;
        }
        if Instant::now() > deadline {
            let mut c = d.client().unwrap();
            for s in ["s0r0", "s0r1", "s0r2"] {
                eprintln!(
                    "{s}: {:?}",
                    c.status(s).map(|st| (
                        st.role,
                        st.term,
                        st.serving,
                        st.commit_index,
                        st.applied_index
                    ))
                );
            }
            dump(&logs);
            panic!("no new leader");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(new, leader);
    let mut c = d.client().unwrap();
    let rows = c
        .scan(
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            10_000,
        )
        .unwrap();
    let keys: Vec<String> = rows
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    for k in &acked {
        assert!(
            keys.contains(k),
            "acknowledged {k} lost after the leader's death"
        );
    }
    d.shutdown(Duration::from_secs(10));
}
