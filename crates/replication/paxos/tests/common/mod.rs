//! The Paxos message-by-message lab: mako-lab's [`Cluster`] of `PaxosNode`s with no
//! clock-driven elections (replicas tick only when told), instant persistence and network,
//! one value per accept, so a scenario decides which message reaches whom ([`Cluster::filter`])
//! and which persist job completes ([`Cluster::hold_persist`]).

#![allow(dead_code)]

use bytes::Bytes;
use mako_lab::{Cluster, HEARTBEAT_MS, Packet};
use mako_paxos::PaxosNode;
use mako_paxos::wire::{self, Msg};

/// The lab cluster of Paxos replicas.
pub type Sim = Cluster<PaxosNode>;

/// A lab without clock-driven elections: nodes tick only when told, election timeouts are
/// huge, persistence and network are instant, one value per accept; compaction after
/// `compact_after` entries; a replica restarted after losing its disk rejoins.
pub fn manual(n: usize, seed: u64, compact_after: u64) -> Sim {
    let mut s = Sim::with_config(n, seed, |c| {
        c.election_timeout_max_ms = 1_000_000 * HEARTBEAT_MS;
        c.max_inflight = 4;
        c.max_append_bytes = 1;
        c.snapshot_chunk_bytes = 512;
        c.compact_after_entries = compact_after;
        c.compact_log_percent = 0; // the test application's snapshot is its whole history
    });
    s.ticking = false;
    s.max_persist_delay_ms = 0;
    s.rejoin_after_disk_loss = true;
    s
}

/// Lets the stable-leader window of the live replicas run out (the leader is gone).
pub fn age(s: &mut Sim) {
    for _ in 0..s.cfg_template.election_ticks().0 {
        for i in 0..s.n {
            if s.alive(i) {
                s.tick_node(i, 1);
            }
        }
        s.settle();
    }
}

/// Ticks replica `i` `k` times, settling the lab after each.
pub fn tick_settle(s: &mut Sim, i: usize, k: usize) {
    for _ in 0..k {
        s.tick_node(i, 1);
        s.settle();
    }
}

/// The decoded message of a whole (unchunked) packet.
pub fn msg(p: &Packet) -> Option<Msg> {
    if p.payload.first() != Some(&0) {
        return None;
    }
    wire::decode(&p.payload.slice(1..)).ok()
}

/// Replica `i` runs for leader now and must win.
pub fn elect(s: &mut Sim, i: usize) {
    assert!(s.live_mut(i).campaign());
    s.drive(i);
    s.settle();
    assert!(s.live(i).is_leader(), "node {} did not win", i + 1);
}

/// Leader `i` proposes `v`; the lab settles.
pub fn propose(s: &mut Sim, i: usize, v: &'static [u8]) {
    s.live_mut(i)
        .propose(Bytes::from_static(v))
        .expect("the leader takes a proposal");
    s.drive(i);
    s.settle();
}
