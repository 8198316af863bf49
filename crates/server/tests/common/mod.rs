//! Test support: a control-channel hook, a replication group stand-in and a site on it.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_channel::{Receiver, unbounded};
use mako_replication::NodeId;
use mako_server::msg::Msg;
use mako_server::{ClusterConfig, ControlFaults, Fate, SiteConfig};
use parking_lot::Mutex;

/// A replication group stand-in for site-level tests: a fixed role; submissions recorded,
/// answered first from `script` (then accepted), refused above `limit`; the unapplied callback
/// kept for the test to call.
pub struct TestGroup {
    /// The role it reports.
    pub role: mako_replication::Role,
    /// Answers given before submissions are accepted.
    pub script: Mutex<VecDeque<mako_replication::SubmitError>>,
    /// Accepted submissions, in order.
    pub submitted: Mutex<Vec<bytes::Bytes>>,
    /// The site's unapplied callback.
    pub unapplied: Mutex<Option<mako_replication::UnappliedFn>>,
    /// Largest entry accepted.
    pub limit: usize,
}

impl TestGroup {
    /// A group in `role` that accepts every submission.
    pub fn new(role: mako_replication::Role) -> Arc<Self> {
        TestGroup::scripted(role, [])
    }

    /// A group in `role` that answers its first submissions from `script`.
    pub fn scripted(
        role: mako_replication::Role,
        script: impl IntoIterator<Item = mako_replication::SubmitError>,
    ) -> Arc<Self> {
        Arc::new(TestGroup {
            role,
            script: Mutex::new(script.into_iter().collect()),
            submitted: Mutex::new(Vec::new()),
            unapplied: Mutex::new(None),
            limit: 16 << 20,
        })
    }

    /// The accepted submissions, decoded.
    pub fn entries(&self) -> Vec<mako_commitlog::Entry> {
        self.submitted
            .lock()
            .iter()
            .map(|b| mako_commitlog::Entry::decode(b).expect("valid entry"))
            .collect()
    }

    /// `W_0` over `streams` from everything accepted, in order.
    pub fn w(&self, streams: &[u32]) -> u64 {
        let mut w = mako_watermark::ShardWatermark::new(streams.iter().copied());
        for e in self.entries() {
            w.observe(0, &e);
        }
        w.value()
    }
}

impl mako_replication::Replicator for TestGroup {
    fn shard(&self) -> u32 {
        0
    }
    fn id(&self) -> NodeId {
        1
    }
    fn submit(&self, entry: bytes::Bytes) -> Result<(), mako_replication::SubmitError> {
        if entry.len() > self.limit {
            return Err(mako_replication::SubmitError::TooLarge(entry.len()));
        }
        if let Some(e) = self.script.lock().pop_front() {
            return Err(e);
        }
        self.submitted.lock().push(entry);
        Ok(())
    }
    fn on_apply(&self, _role: mako_replication::Role, _cb: mako_replication::ApplyFn) {}
    fn on_role_change(&self, _cb: mako_replication::RoleChangeFn) {}
    fn on_unapplied(&self, cb: mako_replication::UnappliedFn) {
        *self.unapplied.lock() = Some(cb);
    }
    fn health(&self) -> mako_replication::GroupHealth {
        mako_replication::GroupHealth::Running
    }
    fn outstanding(&self) -> u64 {
        0
    }
    fn role(&self) -> mako_replication::Role {
        self.role
    }
    fn leader(&self) -> Option<NodeId> {
        (self.role == mako_replication::Role::Leader).then_some(1)
    }
    fn term(&self) -> u64 {
        1
    }
    fn commit_index(&self) -> u64 {
        0
    }
    fn applied_index(&self) -> u64 {
        0
    }
    fn transfer_leader(&self, _to: NodeId) -> Result<(), mako_replication::SubmitError> {
        Ok(())
    }
    fn set_snapshot_handler(&self, _h: Box<dyn mako_replication::SnapshotHandler>) {}
    fn retry_pending(&self) {}
    fn shutdown(&self) {}
}

/// Shard 0 of 2 (node 1; shard 1 is node 2), one worker per shard, table `t`, batching
/// `batch`, on `group`, over a simulated network.
pub fn test_site(
    group: Arc<TestGroup>,
    batch: mako_commitlog::BatchConfig,
) -> Arc<mako_server::Site> {
    let cfg = SiteConfig {
        shards: 2,
        workers: 1,
        tables: vec!["t".into()],
        batch,
        ..SiteConfig::default()
    };
    test_site_with(group, cfg, 0)
}

/// A site of shard `shard` with `cfg`, on a test double group and a simulated network.
pub fn test_site_with(
    group: Arc<TestGroup>,
    cfg: SiteConfig,
    shard: u32,
) -> Arc<mako_server::Site> {
    let net = mako_transport::sim::SimNetwork::new(1, mako_transport::sim::SimConfig::default());
    let (ep, _rx) = net.endpoint(1);
    mako_server::Site::new(cfg, shard, 1, vec![vec![1], vec![2]], group, Arc::new(ep))
        .expect("site")
}

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
