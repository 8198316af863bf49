//! Runs the protocol's operations inside a coordinator's transaction, routing keys to shards.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use mako_proto::{ErrorCode, MAX_RESULTS, Op, OpResult};
use mako_server::DistTxn;
use mako_txn::Abort;

/// Where tables and keys live: the deployment's partitioning.
pub trait Catalog: Send + Sync {
    /// The number of shards.
    fn shards(&self) -> u32;
    /// Table names in the order the sites created them (their table index).
    fn tables(&self) -> Vec<String>;
    /// The table index of `table` (`None`: no such table).
    fn table_index(&self, table: &str) -> Option<usize> {
        self.tables().iter().position(|t| t == table)
    }
    /// The shard holding `key` of `table` (`None`: no such table).
    fn shard_of(&self, table: &str, key: &[u8]) -> Option<u32>;
    /// The shards that may hold keys of `table` in `lo..hi` (`None`: no such table).
    fn shards_in(&self, table: &str, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Option<Vec<u32>>;
}

/// Why an operation failed.
#[derive(Debug)]
pub enum OpError {
    /// The transaction aborted (it will never be visible).
    Abort(Abort),
    /// The operation was refused; the transaction is unchanged.
    Refused(ErrorCode, String),
}

impl From<Abort> for OpError {
    fn from(a: Abort) -> Self {
        OpError::Abort(a)
    }
}

/// Executes one operation of `tx`.
pub fn apply(
    tx: &mut DistTxn<'_>,
    catalog: &dyn Catalog,
    op: &Op,
    max_scan_rows: u32,
) -> Result<OpResult, OpError> {
    let table = op.table();
    let index = catalog
        .table_index(table)
        .ok_or_else(|| unknown_table(table))?;
    if let Op::Scan { lo, hi, limit, .. } = op {
        // Each shard materialises up to `limit` rows before anything is sent: ask for one
        // more than a scan may return, and refuse if there is more.
        let asked = (*limit).min(max_scan_rows.saturating_add(1));
        let (lo, hi) = (as_ref(lo), as_ref(hi));
        let shards = catalog
            .shards_in(table, lo, hi)
            .ok_or_else(|| unknown_table(table))?;
        let r = scan(tx, index, &shards, lo, hi, asked as usize)?;
        if let OpResult::Rows(rows) = &r
            && rows.len() > max_scan_rows as usize
        {
            return Err(OpError::Refused(
                ErrorCode::TooLarge,
                format!(
                    "a scan returns at most {max_scan_rows} rows; page with a later lower bound"
                ),
            ));
        }
        return Ok(r);
    }
    let key = op.key().unwrap_or_default();
    let shard = catalog
        .shard_of(table, key)
        .ok_or_else(|| unknown_table(table))?;
    Ok(match op {
        Op::Get { .. } => OpResult::Value(tx.get(shard, index, key)?.map(|b| b.to_vec())),
        Op::Put { value, .. } => {
            tx.put(shard, index, key, Bytes::copy_from_slice(value))?;
            OpResult::Done
        }
        Op::Delete { .. } => {
            tx.write(shard, index, key, None)?;
            OpResult::Done
        }
        Op::Add { delta, .. } => {
            let old = match tx.get(shard, index, key)? {
                None => 0,
                Some(v) => parse_int(&v).ok_or_else(|| {
                    OpError::Refused(
                        ErrorCode::InvalidValue,
                        "value is not an integer or out of range".into(),
                    )
                })?,
            };
            let new = old.checked_add(*delta).ok_or_else(|| {
                OpError::Refused(
                    ErrorCode::InvalidValue,
                    "increment or decrement would overflow".into(),
                )
            })?;
            tx.put(shard, index, key, Bytes::from(new.to_string()))?;
            OpResult::Int(new)
        }
        Op::Append { value, .. } => {
            let mut v = tx
                .get(shard, index, key)?
                .map(|b| b.to_vec())
                .unwrap_or_default();
            v.extend_from_slice(value);
            let len = i64::try_from(v.len()).unwrap_or(i64::MAX);
            tx.put(shard, index, key, Bytes::from(v))?;
            OpResult::Int(len)
        }
        Op::Scan { .. } => unreachable!("handled above"),
    })
}

/// A decimal `i64` as Redis stores integers (no sign `+`, no spaces, no leading zeros needed).
pub fn parse_int(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn unknown_table(table: &str) -> OpError {
    OpError::Refused(ErrorCode::UnknownTable, format!("no table {table:?}"))
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The first `limit` rows in `lo..hi` over `shards`, merged in key order (each shard's scan
/// is validated at commit, so the merge is one serializable read).
fn scan(
    tx: &mut DistTxn<'_>,
    table: usize,
    shards: &[u32],
    lo: Bound<&[u8]>,
    hi: Bound<&[u8]>,
    limit: usize,
) -> Result<OpResult, OpError> {
    let mut merged = BTreeMap::new();
    for &s in shards {
        for (k, v) in tx.scan(s, table, (lo, hi), limit)? {
            merged.insert(k.to_vec(), v.to_vec());
        }
        // Keep only the first `limit` rows so far: the merge holds at most `limit` rows
        // more than the result, whatever the number of shards.
        while merged.len() > limit {
            merged.pop_last();
        }
    }
    let rows = OpResult::Rows(merged.into_iter().collect());
    if rows.wire_size() > MAX_RESULTS {
        return Err(too_large(rows.wire_size()));
    }
    Ok(rows)
}

/// The refusal of a result that would not fit in a reply.
pub(crate) fn too_large(bytes: usize) -> OpError {
    OpError::Refused(
        ErrorCode::TooLarge,
        format!(
            "the result takes about {bytes} bytes, more than a reply carries ({MAX_RESULTS}); \
             ask for fewer rows"
        ),
    )
}
