//! The lab suite for every protocol: each scenario of `mako_lab::scenarios` as a test per
//! protocol core (`raft::initial_election`, `paxos::initial_election`, ...).

/// One `#[test]` per scenario, for core type `$core`.
macro_rules! lab_suite {
    ($core:ty: $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                mako_lab::scenarios::$name::<$core>();
            }
        )*
    };
}

/// Every scenario, for core type `$core`.
macro_rules! every_scenario {
    ($core:ty) => {
        lab_suite!($core:
            initial_election,
            re_election,
            basic_agree,
            fail_agree,
            fail_no_agree,
            rejoin,
            concurrent_starts,
            backup,
            count,
            unreliable_agree,
            figure8,
            figure8_unreliable,
            persist1,
            persist2,
            persist3,
            snapshot_catch_up,
            late_captures,
            leader_transfer,
            preferred_leader,
            kill_restart_many_seeds,
            memory_durability_crash_loses_the_disk_and_the_replica_catches_up,
            pipelined_proposals_are_batched,
            one_replica_group,
            leases_never_overlap,
            random_faults_many_seeds,
            whole_group_crashes_many_seeds,
            memory_crashes_with_rejoin_many_seeds,
        );
    };
}

mod raft {
    every_scenario!(mako_raft::RaftNode);
}

mod paxos {
    every_scenario!(mako_paxos::PaxosNode);
}

/// The lab's durability check is not vacuous: committed entries missing from a majority of
/// disks are a violation.
#[test]
fn the_durable_majority_check_sees_a_lost_committed_entry() {
    let mut c: mako_lab::Cluster<mako_raft::RaftNode> = mako_lab::Cluster::new(3, 1);
    c.one(b"x", 3, false);
    c.check_durable_majority();
    c.assert_safe();
    c.disks[0] = mako_lab::Disk::default();
    c.disks[1] = mako_lab::Disk::default();
    c.check_durable_majority();
    let v = c.checker.lock().violations.clone();
    assert!(
        v.iter().any(|v| v.contains("durable on")),
        "no violation: {v:?}"
    );
}
