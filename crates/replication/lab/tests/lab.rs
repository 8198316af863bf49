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
            leader_transfer,
            preferred_leader,
            kill_restart_many_seeds,
            memory_durability_crash_loses_the_disk_and_the_replica_catches_up,
        );
    };
}

mod raft {
    every_scenario!(mako_raft::RaftNode);
}

mod paxos {
    every_scenario!(mako_paxos::PaxosNode);
}
