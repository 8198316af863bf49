//! A site's status for `mako status`, and table digests to compare replicas.

use std::hash::Hasher;

use mako_proto::{ErrorCode, Reply, SiteStatus};
use mako_replication::{GroupHealth, Role};
use mako_server::Site;

use crate::session::Shared;

/// The status of the session's site.
pub(crate) fn of(shared: &Shared) -> SiteStatus {
    let site = &*shared.site;
    let g = site.group();
    let shards = shared.catalog.shards();
    let epoch = site.log_epoch();
    let vw = site
        .epochs()
        .vw(site.epochs().current())
        .map(|v| v.load())
        .unwrap_or_default();
    SiteStatus {
        site: shared.name.clone(),
        node: site.node(),
        shard: site.shard_id(),
        role: match g.role() {
            Role::Leader => "leader",
            Role::Follower if g.rejoining() => "rejoining",
            Role::Follower => "follower",
        }
        .to_string(),
        serving: site.serving(),
        health: match g.health() {
            GroupHealth::Running => "ok".into(),
            GroupHealth::Stopped => "stopped".into(),
            GroupHealth::Failed(why) => format!("failed: {why}"),
        },
        term: g.term(),
        epoch: u64::from(epoch),
        commit_index: g.commit_index(),
        applied_index: g.applied_index(),
        w: site.w(),
        vw,
        queued: site.queued() as u64,
        replayed: site.replayed(),
        leaders: (0..shards).map(|s| site.leader_of(s)).collect(),
        released: shared.counters.released_total(),
        aborts: shared.counters.aborts(),
        uptime_s: shared.started.elapsed().as_secs_f64(),
    }
}

/// A digest of the newest live rows of `table` on this replica.
pub(crate) fn digest(site: &Site, table: &str) -> Reply {
    let applied = site.group().applied_index();
    let Some(t) = site.store().table(table) else {
        return Reply::Error {
            code: ErrorCode::UnknownTable,
            message: format!("no table {table:?}"),
        };
    };
    let mut h = Fnv::default();
    let mut rows = 0u64;
    for (k, v) in t.latest() {
        if let Some(value) = v.value {
            rows += 1;
            h.write_u64(k.len() as u64);
            h.write(&k);
            h.write_u64(value.len() as u64);
            h.write(&value);
        }
    }
    Reply::Digest {
        rows,
        hash: h.finish(),
        applied,
    }
}

/// FNV-1a 64 (stable across builds, unlike `std`'s default hasher).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
