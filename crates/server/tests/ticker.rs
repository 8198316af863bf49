//! The site ticker: every tick on a shard's leader, a tenth as often on a site that leads
//! nothing, and at once again on a replica that takes over.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mako_replication::Role;
use mako_server::{Cluster, ClusterConfig, Site};

/// One cluster at a time in this process: the tests find a site's threads by name, which
/// every cluster's sites share (`cargo test` runs a file's tests in one process).
static ONE_CLUSTER: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// Whether `site` leads neither its shard nor `meta`.
fn idle(site: &Site) -> bool {
    site.group().role() != Role::Leader
        && site.meta_group().is_none_or(|m| m.role() != Role::Leader)
}

#[test]
fn sites_that_lead_nothing_tick_less_and_a_new_leader_ticks_fast() {
    let _one = ONE_CLUSTER.lock();
    let cfg = ClusterConfig {
        // Leadership stays where the test moves it.
        preferred_leader: false,
        ..common::config(1, 3, Duration::from_secs(5))
    };
    let c = Cluster::start(cfg).expect("cluster");
    let leader = Arc::clone(c.leader(0));
    let window = Duration::from_millis(500);
    let count = |sites: &[Arc<Site>]| {
        let before: Vec<u64> = sites.iter().map(|s| s.ticks()).collect();
        std::thread::sleep(window);
        sites
            .iter()
            .zip(before)
            .map(|(s, b)| s.ticks() - b)
            .collect::<Vec<u64>>()
    };
    let idle_sites: Vec<Arc<Site>> = c.sites[0].iter().filter(|s| idle(s)).cloned().collect();
    assert!(!idle_sites.is_empty(), "no replica that leads nothing");
    let mut all = vec![Arc::clone(&leader)];
    all.extend(idle_sites.iter().cloned());
    let n = count(&all);
    // 500 ticks of 1 ms at most on the leader, 50 on the others; on a loaded machine fewer.
    for (s, idle_ticks) in idle_sites.iter().zip(&n[1..]) {
        assert!(
            *idle_ticks * 3 < n[0],
            "site {} ticked {idle_ticks} times, the leader {}",
            s.node(),
            n[0]
        );
    }
    // Leadership moves to an idle replica: it ticks as a leader from then on.
    let to = idle_sites[0].clone();
    let r = c.sites[0]
        .iter()
        .position(|s| Arc::ptr_eq(s, &to))
        .expect("a replica") as u32;
    c.transfer_leader(0, r).expect("transfer asked");
    assert!(
        c.wait_leader(0, r, Duration::from_secs(15)),
        "no new leader"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = count(std::slice::from_ref(&to));
        if n[0] >= 100 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader ticked only {} times in {window:?}",
            n[0]
        );
    }
    c.shutdown();
}

/// Context switches so far of this process's thread named `name` (Linux), if there is one.
fn switches(name: &str) -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).ok()?;
        return Some(
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .sum(),
        );
    }
    None
}

/// The name of every site's control thread, and its context switches so far.
fn control_switches(c: &Cluster) -> (Vec<String>, Vec<u64>) {
    let names: Vec<String> = c
        .sites
        .iter()
        .flatten()
        .map(|s| format!("site-ctl-{}", s.node()))
        .collect();
    let before = names
        .iter()
        .map(|n| switches(n).expect("a control thread per site"))
        .collect();
    (names, before)
}

/// A site's control thread sleeps until a message for it comes: it has no periodic work
/// (the ticker checks the pieces of multi-shard transactions a participant holds).
#[test]
fn an_idle_control_thread_sleeps_until_a_message_comes() {
    let _one = ONE_CLUSTER.lock();
    let c = Cluster::start(common::config(2, 3, Duration::from_secs(5))).expect("cluster");
    // One multi-shard transaction: shard 1's leader held a piece of it, then finished it.
    let mut tx = c.leader(0).begin(0).expect("configured worker");
    for shard in 0..2 {
        tx.put(shard, 0, b"k", bytes::Bytes::from_static(b"v"))
            .expect("put");
    }
    tx.commit().expect("released");
    std::thread::sleep(Duration::from_millis(200));
    let (names, before) = control_switches(&c);
    std::thread::sleep(Duration::from_millis(500));
    for (name, b) in names.iter().zip(before) {
        let woke = switches(name).expect("control thread") - b;
        // A periodic check would wake it about 100 times in 500 ms.
        assert!(woke <= 25, "{name} woke {woke} times in 500 ms while idle");
    }
    c.shutdown();
}

/// A participant serves a coordinator's requests and decisions on the thread that receives
/// them (in one process, the coordinator's own thread): multi-shard transactions wake no
/// site's control thread, which serves only epochs, `meta` commands and inquiries.
#[test]
fn multi_shard_transactions_wake_no_control_thread() {
    let _one = ONE_CLUSTER.lock();
    let c = Cluster::start(common::config(2, 3, Duration::from_secs(5))).expect("cluster");
    let transfer = |i: u32| {
        let mut tx = c.leader(0).begin(0).expect("configured worker");
        let key = format!("k{}", i % 10);
        tx.get(1, 0, key.as_bytes()).expect("remote read");
        for shard in 0..2 {
            tx.put(shard, 0, key.as_bytes(), bytes::Bytes::from(i.to_string()))
                .expect("put");
        }
        tx.commit().expect("released");
    };
    transfer(0);
    std::thread::sleep(Duration::from_millis(200));
    let (names, before) = control_switches(&c);
    let started = Instant::now();
    for i in 1..=200 {
        transfer(i);
    }
    let took = started.elapsed();
    for (name, b) in names.iter().zip(before) {
        let woke = switches(name).expect("control thread") - b;
        // Serving them would wake shard 1's leader's control thread at least 3 times per
        // transaction (read, validate, decision): 600 times.
        assert!(
            woke <= 25,
            "{name} woke {woke} times during 200 multi-shard transactions ({took:?})"
        );
    }
    c.shutdown();
}
