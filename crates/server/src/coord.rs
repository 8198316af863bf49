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
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_replication::NodeId;
use mako_storage::Key;
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

/// A remote write buffered at the coordinator until prepare: (table, key, value or `None`).
type RemoteWrite = (u32, Vec<u8>, Option<Vec<u8>>);

/// A transaction coordinated by one worker of a shard leader.
pub struct DistTxn<'a> {
    site: &'a Site,
    worker: u32,
    id: u64,
    local: Option<Transaction<'a>>,
    /// Participant shards: their leader node and the writes buffered for them.
    remotes: BTreeMap<u32, (NodeId, Vec<RemoteWrite>)>,
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

    fn remote(&mut self, shard: u32) -> Result<&mut (NodeId, Vec<RemoteWrite>), Abort> {
        if !self.remotes.contains_key(&shard) {
            // Replica 0 is every group's preferred leader; a refusal says otherwise.
            let node = self
                .site
                .nodes
                .get(shard as usize)
                .and_then(|r| r.first().copied())
                .ok_or(Abort::new(AbortReason::NotLeader))?;
            self.remotes.insert(shard, (node, Vec::new()));
        }
        self.remotes
            .get_mut(&shard)
            .ok_or(Abort::new(AbortReason::NotLeader))
    }

    /// Configured table number `i` (an unknown one aborts the transaction).
    fn table(&self, i: usize) -> Result<&'a mako_storage::Table, Abort> {
        self.site.table(i).ok_or(Abort::new(AbortReason::Conflict))
    }

    fn txn(&self) -> (u64, u64) {
        (self.site.node, self.id)
    }

    /// Reads `key` of table `table` (an index into the configured tables) on `shard`.
    pub fn get(&mut self, shard: u32, table: usize, key: &[u8]) -> Result<Option<Bytes>, Abort> {
        let t = self.table(table)?;
        if shard == self.site.shard_id {
            return Ok(self.local().get(t, key));
        }
        let id = t.id();
        let (txn, stream, site) = (self.txn(), self.stream(), self.site);
        let (node, writes) = self.remote(shard)?;
        // Read-your-own-writes for buffered remote writes.
        if let Some((_, _, v)) = writes.iter().rev().find(|(t, k, _)| *t == id && k == key) {
            return Ok(v.clone().map(Bytes::from));
        }
        let node = *node;
        match site.call(
            node,
            txn,
            stream,
            Op::Get {
                table: id,
                key: key.to_vec(),
            },
        )? {
            Reply::Value(v) => Ok(v.map(Bytes::from)),
            other => Err(refused(other)),
        }
    }

    /// Up to `limit` rows of `table` on `shard` in `range`, ascending; the range is validated at commit.
    pub fn scan(
        &mut self,
        shard: u32,
        table: usize,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        limit: usize,
    ) -> Result<Vec<(Key, Bytes)>, Abort> {
        self.scan_dir(shard, table, range, limit, false)
    }

    /// Up to `limit` rows of `table` on `shard` in `range`, descending; the range is validated at commit.
    pub fn rscan(
        &mut self,
        shard: u32,
        table: usize,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        limit: usize,
    ) -> Result<Vec<(Key, Bytes)>, Abort> {
        self.scan_dir(shard, table, range, limit, true)
    }

    fn scan_dir(
        &mut self,
        shard: u32,
        table: usize,
        (lo, hi): (Bound<&[u8]>, Bound<&[u8]>),
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Key, Bytes)>, Abort> {
        let t = self.table(table)?;
        if shard == self.site.shard_id {
            let tx = self.local();
            return Ok(if reverse {
                tx.rscan(t, (lo, hi), limit)
            } else {
                tx.scan(t, (lo, hi), limit)
            });
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let id = t.id();
        let (txn, stream, site) = (self.txn(), self.stream(), self.site);
        let (node, writes) = self.remote(shard)?;
        // Buffered writes in range overlay the participant's rows (read-your-own-writes):
        // ask for one more row per buffered delete so the overlay still fills `limit`.
        let own: Vec<(Vec<u8>, Option<Vec<u8>>)> = writes
            .iter()
            .filter(|(wt, k, _)| *wt == id && in_range(lo, hi, k))
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect();
        let deletes = own.iter().filter(|(_, v)| v.is_none()).count();
        let node = *node;
        let rows = match site.call(
            node,
            txn,
            stream,
            Op::Scan {
                table: id,
                lo: lo.map(<[u8]>::to_vec),
                hi: hi.map(<[u8]>::to_vec),
                limit: u64::try_from(limit.saturating_add(deletes)).unwrap_or(u64::MAX),
                reverse,
            },
        )? {
            Reply::Rows(rows) => rows,
            other => return Err(refused(other)),
        };
        if own.is_empty() {
            return Ok(rows
                .into_iter()
                .map(|(k, v)| (Key::from_slice(&k), Bytes::from(v)))
                .collect());
        }
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            rows.into_iter().map(|(k, v)| (k, Some(v))).collect();
        merged.extend(own);
        let live = merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (Key::from_slice(&k), Bytes::from(v))));
        Ok(if reverse {
            live.rev().take(limit).collect()
        } else {
            live.take(limit).collect()
        })
    }

    /// Whether the transaction has touched a shard other than the coordinator's.
    pub fn is_distributed(&self) -> bool {
        !self.remotes.is_empty()
    }

    /// Writes `value` under `key` of `table` on `shard` (`None` deletes).
    pub fn write(
        &mut self,
        shard: u32,
        table: usize,
        key: &[u8],
        value: Option<Bytes>,
    ) -> Result<(), Abort> {
        let t = self.table(table)?;
        if shard == self.site.shard_id {
            let tx = self.local();
            match value {
                Some(v) => tx.put(t, key, v),
                None => tx.delete(t, key),
            }
            return Ok(());
        }
        let id = t.id();
        let (_, writes) = self.remote(shard)?;
        writes.retain(|(t, k, _)| !(*t == id && k == key));
        writes.push((id, key.to_vec(), value.map(|v| v.to_vec())));
        Ok(())
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
        let shards_n = site.cfg.shards as usize;
        if !site.is_leader() {
            // A deposed leader must not install more speculative versions (failover epochs,
            // which would discard the ones it has, are future work).
            return Err(Abort::new(AbortReason::NotLeader));
        }
        if self.remotes.is_empty() {
            // One shard: the local commit logs its piece on this worker's stream.
            let info = match self.local.take() {
                Some(tx) => tx.commit()?,
                None => CommitInfo {
                    epoch: site.shard.epoch(),
                    vt: smallvec::smallvec![0; shards_n],
                    wrote: false,
                },
            };
            return Ok(Speculative { info, vw });
        }
        let stream = self.stream();
        // 1. Prepare everywhere (in parallel): lock, validate, allocate on written shards.
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
            .unwrap_or_else(|| smallvec::smallvec![0; shards_n]);
        let mut own: Vec<(usize, u64)> = Vec::new();
        if let Some(p) = local.as_ref().filter(|p| p.wrote()) {
            match site.log.reserve(stream, || p.allocate(deps[me])) {
                Some(ts) => own.push((me, ts)),
                None => {
                    self.abort_remotes();
                    return Err(Abort::new(AbortReason::Conflict));
                }
            }
        }
        let shards: Vec<u32> = self.remotes.keys().copied().collect();
        let requests: Vec<(NodeId, Op)> = self
            .remotes
            .values_mut()
            .map(|(node, writes)| {
                let writes = std::mem::take(writes);
                (*node, Op::Prepare { writes })
            })
            .collect();
        let replies = site.call_many(self.txn(), stream, requests);
        let mut failure = None;
        for (s, r) in shards.iter().zip(replies) {
            match r {
                Ok(Reply::Prepared { deps: d, ts }) => {
                    merge(&mut deps, &d);
                    if let Some(ts) = ts {
                        own.push((*s as usize, ts));
                    }
                }
                Ok(other) => failure = Some(refused(other)),
                Err(e) => failure = Some(e),
            }
        }
        // 2. The VT: read dependencies, with each written shard's allocated component.
        let mut vt = deps.clone();
        for &(s, ts) in &own {
            if ts < deps[s] {
                // Cannot happen (c_s bounds every observed VT[s]); refuse rather than misorder.
                failure = Some(Abort::new(AbortReason::Conflict));
            }
            vt[s] = ts;
        }
        if let Some(e) = failure {
            if let Some(p) = local {
                if p.wrote() {
                    site.log.cancel(stream);
                }
                p.abort();
            }
            self.abort_remotes();
            return Err(e);
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
        let commits = self
            .remotes
            .values()
            .map(|(node, _)| (*node, Op::Commit { vt: vt.to_vec() }))
            .collect();
        for r in site.call_many(self.txn(), stream, commits) {
            if let Err(e) = r {
                // The decision is commit; a lost reply leaves release to the watermarks.
                tracing::warn!("commit reply lost: {e}");
            }
        }
        self.remotes.clear();
        Ok(Speculative {
            info: CommitInfo {
                epoch,
                vt,
                wrote: !own.is_empty(),
            },
            vw,
        })
    }

    fn abort_remotes(&mut self) {
        let aborts = self
            .remotes
            .values()
            .map(|(node, _)| (*node, Op::Abort))
            .collect();
        let _ = self.site.call_many(self.txn(), self.stream(), aborts);
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

/// Whether `key` lies within `lo..hi`.
fn in_range(lo: Bound<&[u8]>, hi: Bound<&[u8]>, key: &[u8]) -> bool {
    let above = match lo {
        Bound::Included(b) => key >= b,
        Bound::Excluded(b) => key > b,
        Bound::Unbounded => true,
    };
    let below = match hi {
        Bound::Included(b) => key <= b,
        Bound::Excluded(b) => key < b,
        Bound::Unbounded => true,
    };
    above && below
}

fn refused(r: Reply) -> Abort {
    Abort::new(match r {
        Reply::Refused(Refusal::NotLeader) => AbortReason::NotLeader,
        Reply::Refused(Refusal::StaleEpoch(_)) => AbortReason::Failover,
        _ => AbortReason::Conflict,
    })
}

impl Site {
    /// Sends each `(node, op)` for transaction `txn` at once, then waits for every reply.
    pub(crate) fn call_many(
        &self,
        txn: (u64, u64),
        stream: u32,
        requests: Vec<(NodeId, Op)>,
    ) -> Vec<Result<Reply, Abort>> {
        let waits: Vec<(u64, crossbeam_channel::Receiver<Reply>)> = requests
            .into_iter()
            .map(|(node, op)| {
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
                (req, rx)
            })
            .collect();
        let deadline = Instant::now() + self.cfg.timeout;
        waits
            .into_iter()
            .map(|(req, rx)| match rx.recv_deadline(deadline) {
                Ok(Reply::Refused(r)) => Err(refused(Reply::Refused(r))),
                Ok(r) => Ok(r),
                Err(_) => {
                    self.pending.lock().remove(&req);
                    Err(Abort::new(AbortReason::Timeout))
                }
            })
            .collect()
    }

    /// Sends `op` for transaction `txn` to `node` and waits for the reply.
    pub(crate) fn call(
        &self,
        node: NodeId,
        txn: (u64, u64),
        stream: u32,
        op: Op,
    ) -> Result<Reply, Abort> {
        self.call_many(txn, stream, vec![(node, op)])
            .pop()
            .unwrap_or(Err(Abort::new(AbortReason::Timeout)))
    }
}
