//! Test support: a control-channel hook that injects messages as a member node and watches traffic.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_channel::{Receiver, unbounded};
use mako_replication::NodeId;
use mako_server::msg::Msg;
use mako_server::{ClusterConfig, ControlFaults, Fate, SiteConfig};
use parking_lot::Mutex;

/// Drives a leader `site` whose group is a test double (no Raft, no `meta` group) through
/// establishing epoch 1 by hand: `meta` starts the epoch, the site submits `NoOp { 0 }`
/// (seen in `submitted()`), its commit is applied, every shard reports its epoch-0 component.
pub fn establish_by_hand(site: &mako_server::Site, submitted: &dyn Fn() -> Vec<bytes::Bytes>) {
    use mako_commitlog::Entry;
    use mako_watermark::MetaCommand;
    let shards = site.epochs().with(|h| h.shards());
    site.epochs()
        .apply(&MetaCommand::NewEpoch {
            shard: site.shard_id(),
            leader: site.node(),
            term: site.group().term(),
            reset: 0,
        })
        .expect("new epoch");
    site.on_tick();
    let noop = Entry::NoOp { epoch: 0 }.encode();
    assert!(
        submitted().contains(&noop),
        "the new leader closes epoch 0 in its log"
    );
    assert_eq!(
        site.open_epoch(),
        None,
        "not serving before its NoOp commits"
    );
    let mut q = mako_replication::PendingQueue::default();
    site.leader_apply(mako_replication::ApplyCtx {
        entry: &noop,
        index: 1,
        shard: site.shard_id(),
        queue: &mut q,
    });
    site.on_tick();
    assert_eq!(
        site.open_epoch(),
        None,
        "not serving before FVW(0) is final"
    );
    for shard in 0..shards {
        site.epochs()
            .apply(&MetaCommand::Component {
                epoch: 0,
                shard,
                w: 0,
            })
            .expect("component");
    }
    site.on_tick();
    assert_eq!(site.open_epoch(), Some(1), "epoch 1 open");
}

/// Messages to inject and the traffic watched, for a cluster built with [`hook`]'s faults.
pub struct Hook {
    /// `(from, to, msg)`: sent by `from` to `to` in place of its next Watermark to `to`.
    pub inject: Arc<Mutex<VecDeque<(NodeId, NodeId, Msg)>>>,
    /// Watched messages `(from, to, msg)`, in send order.
    pub seen: Receiver<(NodeId, NodeId, Msg)>,
}

impl Hook {
    /// Queues `msg` to be sent by member `from` to `to`.
    pub fn inject(&self, from: NodeId, to: NodeId, msg: Msg) {
        self.inject.lock().push_back((from, to, msg));
    }
}

/// Faults that inject queued messages (as their member sender) and report every message
/// `watch` selects, then apply `fault`.
pub fn hook(
    watch: impl Fn(NodeId, NodeId, &Msg) -> bool + Send + Sync + 'static,
    fault: impl Fn(NodeId, NodeId, &Msg) -> Fate + Send + Sync + 'static,
) -> (ControlFaults, Hook) {
    let inject: Arc<Mutex<VecDeque<(NodeId, NodeId, Msg)>>> = Arc::default();
    let (tx, rx) = unbounded();
    let q = Arc::clone(&inject);
    let faults = ControlFaults(Arc::new(move |from, to, m: &Msg| {
        if matches!(m, Msg::Watermark { .. }) {
            let mut q = q.lock();
            if let Some(i) = q.iter().position(|(f, t, _)| *f == from && *t == to)
                && let Some((_, _, msg)) = q.remove(i)
            {
                if watch(from, to, &msg) {
                    let _ = tx.send((from, to, msg.clone()));
                }
                return Fate::Replace(msg);
            }
        }
        if watch(from, to, m) {
            let _ = tx.send((from, to, m.clone()));
        }
        fault(from, to, m)
    }));
    (faults, Hook { inject, seen: rx })
}

/// The clusters these tests run: table `t`, 2 workers per shard, 150–300 ms elections,
/// transactions timing out after `timeout`.
pub fn config(shards: u32, replicas: u32, timeout: std::time::Duration) -> ClusterConfig {
    ClusterConfig {
        replicas,
        site: SiteConfig {
            shards,
            workers: 2,
            tables: vec!["t".into()],
            timeout,
            ..SiteConfig::default()
        },
        election_ms: (150, 300),
        ..ClusterConfig::default()
    }
}
