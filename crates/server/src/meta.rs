//! The `meta` group at a site: hosting a replica of it, proposing to it, spreading its history.
//!
//! `meta` is a Raft group (the same replication layer as the shards) on a few
//! sites ([`meta_members`]); its log holds [`MetaCommand`]s and its state is the
//! cluster's [`mako_watermark::EpochHistory`]. A shard leader proposes through
//! any member (members that lead `meta` submit, the others ignore: the proposer
//! repeats until the history shows the command). The member leading `meta`
//! sends the history to every site when it changes and periodically; sites keep
//! the newest one they receive.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mako_replication::{Applied, NodeId, Replicator, Role};
use mako_watermark::MetaCommand;

use crate::msg::Msg;
use crate::site::Site;

/// Transport group id of the `meta` Raft group (shards use their ids, control `u32::MAX`).
pub const META_GROUP: u32 = u32::MAX - 1;

/// How often the `meta` leader repeats an unchanged history to every site.
const BROADCAST_EVERY: Duration = Duration::from_millis(200);

/// The members of `meta` for a deployment (`nodes[shard][replica]`, replica 0 the preferred
/// leader): `size` of them (default 1 for one site, 5 from 9 sites, else 3), spread across
/// shards, replicas that are not preferred leaders first.
pub fn meta_members(nodes: &[Vec<NodeId>], size: Option<usize>) -> Vec<NodeId> {
    let total: usize = nodes.iter().map(Vec::len).sum();
    let want = size
        .unwrap_or(match total {
            0 | 1 => 1,
            t if t >= 9 => 5,
            _ => 3,
        })
        .clamp(1, total.max(1));
    let replicas = nodes.iter().map(Vec::len).max().unwrap_or(0);
    // Replica 1 of every shard, then replica 2 of every shard, ..., then replica 0s.
    let order = (1..replicas).chain(std::iter::once(0));
    order
        .flat_map(|r| nodes.iter().filter_map(move |shard| shard.get(r).copied()))
        .take(want)
        .collect()
}

impl Site {
    /// Makes this site host a replica of the `meta` group: committed commands update its history.
    pub fn host_meta(self: &Arc<Self>, group: Arc<dyn Replicator>) {
        for role in [Role::Leader, Role::Follower] {
            let s = Arc::clone(self);
            group.on_apply(
                role,
                Box::new(move |ctx| {
                    match postcard::from_bytes::<MetaCommand>(ctx.entry) {
                        Ok(cmd) => {
                            if let Err(e) = s.epochs.apply(&cmd) {
                                tracing::error!(index = ctx.index, "meta command refused: {e}");
                            }
                        }
                        Err(e) => tracing::error!(index = ctx.index, "undecodable meta entry: {e}"),
                    }
                    Applied::normal(0)
                }),
            );
        }
        if self.meta.set(group).is_err() {
            tracing::error!(
                node = self.node,
                "meta group hosted twice; keeping the first"
            );
        }
    }

    /// The `meta` replica this site hosts, if any.
    pub fn meta_group(&self) -> Option<&Arc<dyn Replicator>> {
        self.meta.get()
    }

    /// Proposes `cmd` to `meta`: directly if this site leads it, else through its members.
    pub(crate) fn propose_meta(&self, cmd: MetaCommand) {
        if let Some(m) = self.meta.get()
            && m.role() == Role::Leader
        {
            self.submit_meta(&cmd);
            return;
        }
        let leader = self.meta.get().and_then(|m| m.leader());
        let msg = Msg::Meta { cmd };
        match leader {
            Some(l) if l != self.node => self.send(l, &msg),
            _ => {
                for &m in &self.meta_members {
                    if m != self.node {
                        self.send(m, &msg);
                    }
                }
            }
        }
    }

    /// Submits `cmd` to the hosted `meta` replica if it leads (a proposal from a peer).
    pub(crate) fn submit_meta(&self, cmd: &MetaCommand) {
        let Some(m) = self.meta.get() else { return };
        if m.role() != Role::Leader {
            return;
        }
        match postcard::to_stdvec(cmd) {
            Ok(b) => {
                if let Err(e) = m.submit(b.into()) {
                    tracing::debug!(node = self.node, "meta proposal not submitted: {e}");
                }
            }
            Err(e) => tracing::error!("encoding a meta command: {e}"),
        }
    }

    /// On the `meta` leader: sends the history to every other site if it changed or is due.
    pub(crate) fn broadcast_history(&self, now: Instant) {
        let Some(m) = self.meta.get() else { return };
        if m.role() != Role::Leader {
            return;
        }
        let history = self.epochs.history();
        {
            let mut last = self.history_sent.lock();
            let due = last.is_none_or(|(v, t)| {
                v != history.version() || now.duration_since(t) >= BROADCAST_EVERY
            });
            if !due {
                return;
            }
            *last = Some((history.version(), now));
        }
        self.stats.broadcasts.fetch_add(1, Ordering::Relaxed);
        let msg = Msg::Epochs { history };
        for &n in self.nodes.iter().flatten() {
            if n != self.node {
                self.send(n, &msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_spread_across_shards_and_avoid_preferred_leaders() {
        let nodes = |s: u64, r: u64| -> Vec<Vec<NodeId>> {
            (0..s)
                .map(|i| (0..r).map(|j| i * r + j + 1).collect())
                .collect()
        };
        assert_eq!(meta_members(&nodes(1, 1), None), vec![1]);
        assert_eq!(meta_members(&nodes(1, 3), None), vec![2, 3, 1]);
        // 2 shards x 3: replica 1 of each shard first.
        assert_eq!(meta_members(&nodes(2, 3), None), vec![2, 5, 3]);
        // 3 shards x 3 (9 sites): 5 members, one shard holds at most 2.
        let m = meta_members(&nodes(3, 3), None);
        assert_eq!(m, vec![2, 5, 8, 3, 6]);
        assert_eq!(meta_members(&nodes(2, 3), Some(10)).len(), 6);
    }
}
