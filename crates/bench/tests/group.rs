//! The protocol-generic group bench, its ceiling, and the cluster bench's protocol switch:
//! short runs (no timed assertions), correctness counters zero, figures positive; a protocol
//! that is not built in fails with a typed start error, never a panic.

use std::time::Duration;

use mako_bench::{
    CeilingConfig, ClusterBenchConfig, GroupBenchConfig, GroupBenchError, NetKind, Protocol,
    run_ceiling, run_cluster, run_group,
};
use mako_logstore::Durability;

fn group_cfg(protocol: Protocol, net: NetKind) -> GroupBenchConfig {
    GroupBenchConfig {
        protocol,
        net,
        entry_bytes: 512,
        groups: 2,
        durability: Durability::Memory,
        duration: Duration::from_millis(300),
        rate: None,
        window: 256,
    }
}

#[test]
fn raft_group_bench_commits_in_order_on_every_replica() {
    for net in [NetKind::Mem, NetKind::Tcp] {
        let r = run_group(&group_cfg(Protocol::Raft, net)).expect("raft group bench");
        assert_eq!(r.protocol, "raft");
        assert_eq!((r.gaps, r.duplicates, r.reordered), (0, 0, 0), "{r:?}");
        assert!(r.entries_per_sec > 0.0, "{r:?}");
        assert!(r.p50_us > 0.0 && r.p99_us >= r.p50_us, "{r:?}");
        assert!(
            r.log_writes_per_sec > 0.0 && r.entries_per_log_write > 0.0,
            "{r:?}"
        );
    }
}

#[test]
fn paced_raft_group_bench_is_correct() {
    let cfg = GroupBenchConfig {
        rate: Some(2_000.0),
        durability: Durability::Fsync,
        ..group_cfg(Protocol::Raft, NetKind::Mem)
    };
    let r = run_group(&cfg).expect("paced raft group bench");
    assert_eq!(r.durability, "fsync");
    assert_eq!((r.gaps, r.duplicates, r.reordered), (0, 0, 0), "{r:?}");
    assert!(r.entries_per_sec > 0.0 && r.syncs_per_sec > 0.0, "{r:?}");
}

#[test]
fn every_protocol_runs_or_fails_to_start_with_a_typed_error() {
    for p in Protocol::ALL {
        match run_group(&group_cfg(p, NetKind::Mem)) {
            Ok(r) => {
                assert_eq!(r.protocol, p.name());
                assert_eq!((r.gaps, r.duplicates, r.reordered), (0, 0, 0), "{r:?}");
                assert!(r.entries_per_sec > 0.0, "{r:?}");
            }
            Err(e @ GroupBenchError::Start { protocol, .. }) => {
                assert_eq!(protocol, p);
                assert!(e.to_string().starts_with(p.name()), "{e}");
            }
            Err(e) => panic!("{p}: {e}"),
        }
    }
}

#[test]
fn ceiling_measures_log_store_and_transport() {
    for (net, durability) in [
        (NetKind::Mem, Durability::Memory),
        (NetKind::Tcp, Durability::Fsync),
    ] {
        let cfg = CeilingConfig {
            duration: Duration::from_millis(300),
            ..CeilingConfig::for_group(&GroupBenchConfig {
                durability,
                ..group_cfg(Protocol::Raft, net)
            })
        };
        assert!(cfg.write_batch() >= cfg.message_batch() && cfg.message_batch() >= 1);
        let c = run_ceiling(&cfg).expect("ceiling");
        assert_eq!(c.durability, durability.as_str());
        assert!(
            c.log.entries_per_sec > 0.0 && c.log.write_p50_us > 0.0,
            "{c:?}"
        );
        assert!(
            c.transport.entries_per_sec > 0.0 && c.transport.rtt_p50_us > 0.0,
            "{c:?}"
        );
        assert_eq!(
            c.entries_per_sec,
            c.log.entries_per_sec.min(c.transport.entries_per_sec)
        );
        let bound = if c.log.entries_per_sec <= c.transport.entries_per_sec {
            "log store"
        } else {
            "transport"
        };
        assert_eq!(c.bound, bound);
        if durability == Durability::Fsync {
            assert!(c.log.syncs_per_sec > 0.0, "{c:?}");
        }
    }
}

#[test]
fn ceiling_batch_follows_the_group_defaults() {
    let cfg = |entry_bytes, window| CeilingConfig {
        net: NetKind::Mem,
        entry_bytes,
        groups: 1,
        durability: Durability::Memory,
        duration: Duration::from_millis(1),
        window,
        batch_entries: 0,
    };
    let figures = |c: &CeilingConfig| {
        (
            c.write_batch(),
            c.writes_in_flight(),
            c.message_batch(),
            c.messages_in_flight(),
        )
    };
    // 1024 entries over 16 appends in flight; 1 MiB messages hold 4 entries of 256 KiB
    // (whose window is 64 MiB: 256 entries); writes in flight hold two windows.
    assert_eq!(figures(&cfg(4096, 1024)), (64, 32, 64, 16));
    assert_eq!(figures(&cfg(262_144, 1024)), (4, 128, 4, 16));
    // The batching a protocol achieved: writes as large, messages capped at 1 MiB.
    let achieved = CeilingConfig {
        batch_entries: 380,
        ..cfg(4096, 1024)
    };
    assert_eq!(figures(&achieved), (380, 6, 256, 4));
}

#[test]
fn cluster_bench_reports_its_protocol() {
    for p in Protocol::ALL {
        let cfg = ClusterBenchConfig {
            shards: 1,
            replicas: 3,
            threads: 1,
            duration: Duration::from_millis(300),
            keys: 1_000,
            protocol: p,
            ..ClusterBenchConfig::default()
        };
        match run_cluster(&cfg, |_| {}) {
            Ok(r) => {
                assert_eq!(r.protocol, p.name());
                assert!(r.consistent, "{:?}", r.difference);
                assert!(r.spec_per_sec > 0.0);
            }
            Err(mako_bench::ClusterBenchError::Cluster(
                mako_server::cluster::ClusterError::Group(e),
            )) => {
                assert!(p != Protocol::Raft, "raft failed to start: {e}");
            }
            Err(e) => panic!("{p}: {e}"),
        }
    }
}
