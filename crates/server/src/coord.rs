//! The coordinator: a transaction over any shards, speculative 2PC, release at `VT <= VW`.
//!
//! Reads and writes on the coordinator's own shard run in a local OCC
//! transaction; on another shard they run in a participant transaction on that
//! shard's leader, reached over the control channel. `commit` then
//! (1) prepares everywhere (lock write sets no-wait, validate reads — also on
//! read-only shards), (2) merges every participant's read dependencies and
//! has each written shard allocate its `VT` component
//! (`c_s = max(c_s, deps[s]) + 1`), (3) installs and logs each piece with the
//! final `VT` (speculative: others may read it now), and (4) waits until
//! `VT <= VW`, the release.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_replication::NodeId;
use mako_txn::{Abort, AbortReason, CommitInfo, Prepared, Transaction, merge};
use mako_watermark::{WatermarkVector, stream_id};

use crate::msg::{Msg, Op, Refusal, Reply};
use crate::site::Site;

/// A committed transaction not yet known durable: await [`Speculative::wait_release`] before acknowledging.
#[derive(Debug, Clone)]
pub struct Speculative {
    /// The commit's outcome (epoch, `VT`).
    pub info: CommitInfo,
    vw: Arc<WatermarkVector>,
}

impl Speculative {
    /// Whether it is released (`VT <= VW`) now.
    pub fn is_released(&self) -> bool {
        self.vw.covers(&self.info.vt)
    }

    /// Waits for release; `Err(Timeout)` if `VW` does not cover `VT` within `timeout`.
    pub fn wait_release(&self, timeout: Duration) -> Result<(), Abort> {
        if self.vw.wait_covers(&self.info.vt, Instant::now() + timeout) {
            Ok(())
        } else {
            Err(Abort::new(AbortReason::Timeout))
        }
    }
}

/// A transaction coordinated by one worker of a shard leader.
pub struct DistTxn<'a> {
    site: &'a Site,
    worker: u32,
    id: u64,
    local: Option<Transaction<'a>>,
    /// Participant shards and their leader node.
    remotes: BTreeMap<u32, NodeId>,
}

impl<'a> DistTxn<'a> {
    pub(crate) fn new(site: &'a Site, worker: u32) -> Self {
        DistTxn {
            site,
            worker,
            id: site.next_txn.fetch_add(1, Ordering::Relaxed),
            local: None,
            remotes: BTreeMap::new(),
        }
    }

    fn stream(&self) -> u32 {
        stream_id(self.site.shard_id, self.worker)
    }

    fn local(&mut self) -> &mut Transaction<'a> {
        let (site, stream) = (self.site, self.stream());
        self.local
            .get_or_insert_with(|| site.shard.begin_on(stream))
    }

    fn leader_of(&self, shard: u32) -> Result<NodeId, Abort> {
        // Replica 0 is every group's preferred leader; a refusal says otherwise.
        self.site
            .nodes
            .get(shard as usize)
            .and_then(|r| r.first().copied())
            .ok_or(Abort::new(AbortReason::NotLeader))
    }

    fn call(&mut self, shard: u32, op: Op) -> Result<Reply, Abort> {
        let node = match self.remotes.get(&shard) {
            Some(n) => *n,
            None => {
                let n = self.leader_of(shard)?;
                self.remotes.insert(shard, n);
                n
            }
        };
        self.site
            .call(node, (self.site.node, self.id), self.stream(), op)
    }

    /// Reads `key` of table `table` (an index into the configured tables) on `shard`.
    pub fn get(&mut self, shard: u32, table: usize, key: &[u8]) -> Result<Option<Bytes>, Abort> {
        let t = self
            .site
            .table(table)
            .ok_or(Abort::new(AbortReason::Conflict))?;
        if shard == self.site.shard_id {
            return Ok(self.local().get(t, key));
        }
        let id = t.id();
        match self.call(
            shard,
            Op::Get {
                table: id,
                key: key.to_vec(),
            },
        )? {
            Reply::Value(v) => Ok(v.map(Bytes::from)),
            other => Err(refused(other)),
        }
    }

    /// Writes `value` under `key` of `table` on `shard` (`None` deletes).
    pub fn write(
        &mut self,
        shard: u32,
        table: usize,
        key: &[u8],
        value: Option<Bytes>,
    ) -> Result<(), Abort> {
        let t = self
            .site
            .table(table)
            .ok_or(Abort::new(AbortReason::Conflict))?;
        if shard == self.site.shard_id {
            let tx = self.local();
            match value {
                Some(v) => tx.put(t, key, v),
                None => tx.delete(t, key),
            }
            return Ok(());
        }
        let id = t.id();
        match self.call(
            shard,
            Op::Write {
                table: id,
                key: key.to_vec(),
                value: value.map(|v| v.to_vec()),
            },
        )? {
            Reply::Ok => Ok(()),
            other => Err(refused(other)),
        }
    }

    /// Writes `value` under `key` of `table` on `shard`.
    pub fn put(&mut self, shard: u32, table: usize, key: &[u8], value: Bytes) -> Result<(), Abort> {
        self.write(shard, table, key, Some(value))
    }

    /// Commits and waits for release (`VT <= VW`); `Timeout` if release does not come in time.
    pub fn commit(self) -> Result<CommitInfo, Abort> {
        let timeout = self.site.cfg.timeout;
        let s = self.commit_speculative()?;
        s.wait_release(timeout)?;
        Ok(s.info)
    }

    /// Commits speculatively: visible to other transactions now, durable only once released.
    pub fn commit_speculative(mut self) -> Result<Speculative, Abort> {
        let site = self.site;
        let vw = Arc::clone(&site.vw);
        let me = site.shard_id as usize;
        if self.remotes.is_empty() {
            // One shard: the local commit logs its piece on this worker's stream.
            let Some(tx) = self.local.take() else {
                return Ok(Speculative {
                    info: CommitInfo {
                        epoch: site.shard.epoch(),
                        vt: smallvec::smallvec![0; site.cfg.shards as usize],
                        wrote: false,
                    },
                    vw,
                });
            };
            let info = tx.commit()?;
            return Ok(Speculative { info, vw });
        }
        // 1. Prepare everywhere.
        let local: Option<Prepared<'_>> = match self.local.take().map(Transaction::prepare) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                self.abort_remotes();
                return Err(e);
            }
            None => None,
        };
        let mut deps = local
            .as_ref()
            .map(|p| p.deps())
            .unwrap_or_else(|| smallvec::smallvec![0; site.cfg.shards as usize]);
        let mut written: Vec<u32> = Vec::new();
        if local.as_ref().is_some_and(|p| p.wrote()) {
            written.push(site.shard_id);
        }
        let shards: Vec<u32> = self.remotes.keys().copied().collect();
        for &s in &shards {
            match self.call(s, Op::Prepare) {
                Ok(Reply::Prepared { deps: d, wrote }) => {
                    merge(&mut deps, &d);
                    if wrote {
                        written.push(s);
                    }
                }
                other => {
                    if let Some(p) = local {
                        p.abort();
                    }
                    self.abort_remotes();
                    return Err(other.err().unwrap_or(Abort::new(AbortReason::Conflict)));
                }
            }
        }
        // 2. Each written shard allocates its component.
        let mut vt = deps.clone();
        let stream = self.stream();
        for &s in &written {
            let ts = if s as usize == me {
                let p = local.as_ref().ok_or(Abort::new(AbortReason::Conflict))?;
                site.log
                    .reserve(stream, || p.allocate(deps[me]))
                    .ok_or(Abort::new(AbortReason::Conflict))?
            } else {
                match self.call(
                    s,
                    Op::Allocate {
                        dep: deps[s as usize],
                    },
                ) {
                    Ok(Reply::Allocated(ts)) => ts,
                    other => {
                        if let Some(p) = local {
                            site.log.cancel(stream);
                            p.abort();
                        }
                        self.abort_remotes();
                        return Err(other.err().unwrap_or(Abort::new(AbortReason::Conflict)));
                    }
                }
            };
            vt[s as usize] = ts;
        }
        // 3. Install and log every piece with the final VT.
        let epoch = site.shard.epoch();
        if let Some(p) = local {
            if p.wrote() {
                p.with_writes(|w| site.log.fulfil(stream, &vt, w.iter()));
                p.install(vt.clone());
            } else {
                p.read_only();
            }
        }
        for &s in &shards {
            if let Err(e) = self.call(s, Op::Commit { vt: vt.to_vec() }) {
                // The decision is commit; a lost reply leaves release to the watermarks.
                tracing::warn!(shard = s, "commit reply lost: {e}");
            }
        }
        Ok(Speculative {
            info: CommitInfo {
                epoch,
                vt,
                wrote: !written.is_empty(),
            },
            vw,
        })
    }

    fn abort_remotes(&mut self) {
        let shards: Vec<u32> = self.remotes.keys().copied().collect();
        for s in shards {
            let _ = self.call(s, Op::Abort);
        }
        self.remotes.clear();
    }
}

impl Drop for DistTxn<'_> {
    fn drop(&mut self) {
        if !self.remotes.is_empty() {
            self.abort_remotes();
        }
    }
}

fn refused(r: Reply) -> Abort {
    Abort::new(match r {
        Reply::Refused(Refusal::NotLeader) => AbortReason::NotLeader,
        Reply::Refused(Refusal::StaleEpoch(_)) => AbortReason::Failover,
        _ => AbortReason::Conflict,
    })
}

impl Site {
    /// Sends `op` for transaction `txn` to `node` and waits for the reply.
    pub(crate) fn call(
        &self,
        node: NodeId,
        txn: (u64, u64),
        stream: u32,
        op: Op,
    ) -> Result<Reply, Abort> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.pending.lock().insert(req, tx);
        self.send(
            node,
            &Msg::Request {
                req,
                epoch: self.shard.epoch(),
                txn,
                stream,
                op,
            },
        );
        match rx.recv_timeout(self.cfg.timeout) {
            Ok(Reply::Refused(r)) => Err(refused(Reply::Refused(r))),
            Ok(r) => Ok(r),
            Err(_) => {
                self.pending.lock().remove(&req);
                Err(Abort::new(AbortReason::Timeout))
            }
        }
    }
}
