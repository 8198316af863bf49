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

/// One operation of a transaction, borrowed: [`Op`] without owning its table, key or value.
#[derive(Debug, Clone, Copy)]
pub enum OpRef<'a> {
    /// Reads a key.
    Get {
        /// The table.
        table: &'a str,
        /// The key.
        key: &'a [u8],
    },
    /// Writes a key.
    Put {
        /// The table.
        table: &'a str,
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// Deletes a key.
    Delete {
        /// The table.
        table: &'a str,
        /// The key.
        key: &'a [u8],
    },
    /// Up to `limit` rows in `lo..hi`, ascending, across every shard of the table.
    Scan {
        /// The table.
        table: &'a str,
        /// Lower bound.
        lo: Bound<&'a [u8]>,
        /// Upper bound.
        hi: Bound<&'a [u8]>,
        /// Most rows returned.
        limit: u32,
    },
    /// Adds `delta` to the decimal integer under the key (see [`Op::Add`]).
    Add {
        /// The table.
        table: &'a str,
        /// The key.
        key: &'a [u8],
        /// The amount added.
        delta: i64,
    },
    /// Appends bytes to the value under the key (see [`Op::Append`]).
    Append {
        /// The table.
        table: &'a str,
        /// The key.
        key: &'a [u8],
        /// The bytes appended.
        value: &'a [u8],
    },
    /// Reads the key's version (see [`Op::Version`]).
    Version {
        /// The table.
        table: &'a str,
        /// The key.
        key: &'a [u8],
    },
}

impl<'a> From<&'a Op> for OpRef<'a> {
    fn from(op: &'a Op) -> Self {
        match op {
            Op::Get { table, key } => OpRef::Get { table, key },
            Op::Put { table, key, value } => OpRef::Put { table, key, value },
            Op::Delete { table, key } => OpRef::Delete { table, key },
            Op::Scan {
                table,
                lo,
                hi,
                limit,
            } => OpRef::Scan {
                table,
                lo: as_ref(lo),
                hi: as_ref(hi),
                limit: *limit,
            },
            Op::Add { table, key, delta } => OpRef::Add {
                table,
                key,
                delta: *delta,
            },
            Op::Append { table, key, value } => OpRef::Append { table, key, value },
            Op::Version { table, key } => OpRef::Version { table, key },
        }
    }
}

impl OpRef<'_> {
    /// The owned operation (to send it over the wire).
    pub fn to_op(self) -> Op {
        match self {
            OpRef::Get { table, key } => Op::Get {
                table: table.into(),
                key: key.to_vec(),
            },
            OpRef::Put { table, key, value } => Op::Put {
                table: table.into(),
                key: key.to_vec(),
                value: value.to_vec(),
            },
            OpRef::Delete { table, key } => Op::Delete {
                table: table.into(),
                key: key.to_vec(),
            },
            OpRef::Scan {
                table,
                lo,
                hi,
                limit,
            } => Op::Scan {
                table: table.into(),
                lo: lo.map(<[u8]>::to_vec),
                hi: hi.map(<[u8]>::to_vec),
                limit,
            },
            OpRef::Add { table, key, delta } => Op::Add {
                table: table.into(),
                key: key.to_vec(),
                delta,
            },
            OpRef::Append { table, key, value } => Op::Append {
                table: table.into(),
                key: key.to_vec(),
                value: value.to_vec(),
            },
            OpRef::Version { table, key } => Op::Version {
                table: table.into(),
                key: key.to_vec(),
            },
        }
    }

    fn table(&self) -> &str {
        match *self {
            OpRef::Get { table, .. }
            | OpRef::Put { table, .. }
            | OpRef::Delete { table, .. }
            | OpRef::Scan { table, .. }
            | OpRef::Add { table, .. }
            | OpRef::Append { table, .. }
            | OpRef::Version { table, .. } => table,
        }
    }
}

/// Executes one operation of `tx`.
pub fn apply(
    tx: &mut DistTxn<'_>,
    catalog: &dyn Catalog,
    op: &Op,
    max_scan_rows: u32,
) -> Result<OpResult, OpError> {
    apply_ref(tx, catalog, OpRef::from(op), max_scan_rows)
}

/// [`apply`] for a borrowed operation.
pub fn apply_ref(
    tx: &mut DistTxn<'_>,
    catalog: &dyn Catalog,
    op: OpRef<'_>,
    max_scan_rows: u32,
) -> Result<OpResult, OpError> {
    let table = op.table();
    let index = catalog
        .table_index(table)
        .ok_or_else(|| unknown_table(table))?;
    let (key, shard) = match op {
        OpRef::Scan { lo, hi, limit, .. } => {
            // Each shard materialises up to `limit` rows before anything is sent: ask for
            // one more than a scan may return, and refuse if there is more.
            let asked = limit.min(max_scan_rows.saturating_add(1));
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
        OpRef::Get { key, .. }
        | OpRef::Put { key, .. }
        | OpRef::Delete { key, .. }
        | OpRef::Add { key, .. }
        | OpRef::Append { key, .. }
        | OpRef::Version { key, .. } => (
            key,
            catalog
                .shard_of(table, key)
                .ok_or_else(|| unknown_table(table))?,
        ),
    };
    Ok(match op {
        OpRef::Get { .. } => OpResult::Value(tx.get(shard, index, key)?.map(|b| b.to_vec())),
        OpRef::Version { .. } => OpResult::Version(tx.version(shard, index, key)?),
        OpRef::Put { value, .. } => {
            tx.put(shard, index, key, Bytes::copy_from_slice(value))?;
            OpResult::Done
        }
        OpRef::Delete { .. } => {
            tx.write(shard, index, key, None)?;
            OpResult::Done
        }
        OpRef::Add { delta, .. } => {
            let old = match tx.get(shard, index, key)? {
                None => 0,
                Some(v) => parse_int(&v).ok_or_else(|| {
                    OpError::Refused(
                        ErrorCode::InvalidValue,
                        "value is not an integer or out of range".into(),
                    )
                })?,
            };
            let new = old.checked_add(delta).ok_or_else(|| {
                OpError::Refused(
                    ErrorCode::InvalidValue,
                    "increment or decrement would overflow".into(),
                )
            })?;
            tx.put(shard, index, key, Bytes::from(new.to_string()))?;
            OpResult::Int(new)
        }
        OpRef::Append { value, .. } => {
            let mut v = tx
                .get(shard, index, key)?
                .map(|b| b.to_vec())
                .unwrap_or_default();
            v.extend_from_slice(value);
            let len = i64::try_from(v.len()).unwrap_or(i64::MAX);
            tx.put(shard, index, key, Bytes::from(v))?;
            OpResult::Int(len)
        }
        OpRef::Scan { .. } => unreachable!("handled above"),
    })
}

/// A stored decimal `i64` as Redis's `INCR` reads one ([`mako_redis::command::parse_i64`]).
pub fn parse_int(v: &[u8]) -> Option<i64> {
    mako_redis::command::parse_i64(v)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_op_turns_back_into_the_same_op() {
        let ops = [
            Op::Get {
                table: "t".into(),
                key: b"k".to_vec(),
            },
            Op::Put {
                table: "t".into(),
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            Op::Delete {
                table: "u".into(),
                key: b"k2".to_vec(),
            },
            Op::Scan {
                table: "t".into(),
                lo: Bound::Excluded(b"a".to_vec()),
                hi: Bound::Included(b"z".to_vec()),
                limit: 7,
            },
            Op::Scan {
                table: "t".into(),
                lo: Bound::Unbounded,
                hi: Bound::Unbounded,
                limit: 1,
            },
            Op::Add {
                table: "t".into(),
                key: b"n".to_vec(),
                delta: -3,
            },
            Op::Append {
                table: "t".into(),
                key: b"s".to_vec(),
                value: b"tail".to_vec(),
            },
            Op::Version {
                table: "t".into(),
                key: b"v".to_vec(),
            },
        ];
        for op in ops {
            let r = OpRef::from(&op);
            assert_eq!(r.table(), op.table());
            assert_eq!(r.to_op(), op);
        }
    }

    /// What Redis's `INCR` accepts as an integer (its `string2ll`), value by value.
    #[test]
    fn integers_parse_as_redis_parses_them() {
        let ok: [(&[u8], i64); 6] = [
            (b"0", 0),
            (b"-5", -5),
            (b"42", 42),
            (b"9223372036854775807", i64::MAX),
            (b"-9223372036854775808", i64::MIN),
            (b"1000000", 1_000_000),
        ];
        for (v, n) in ok {
            assert_eq!(parse_int(v), Some(n), "{:?}", String::from_utf8_lossy(v));
        }
        let refused: [&[u8]; 13] = [
            b"",
            b"+5",
            b"007",
            b"-0",
            b" 5",
            b"5 ",
            b"-",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"12345678901234567890",
            b"1e3",
            b"\xff1",
            b"0x10",
        ];
        for v in refused {
            assert_eq!(parse_int(v), None, "{:?}", String::from_utf8_lossy(v));
        }
    }
}
