//! The Paxos messages and their compact little-endian encoding, checked field by field on decode.
//!
//! A message body is `[version u8][kind u8][fields]`; integers are little-endian u64 unless
//! said otherwise, byte strings are `[len u32][bytes]`, lists `[count u32][items]`. The body
//! travels inside [`mako_group::chunk`] framing (whole, or in chunks for large promises and
//! snapshots). [`decode`] refuses anything malformed with a [`DecodeError`]: an unknown
//! version, kind or flag, a short or over-long body, a count or length past the bytes
//! present, a list longer than a correct peer sends ([`MAX_ACCEPT_VALUES`],
//! [`MAX_PROMISE_ENTRIES`]: what a decoded body allocates is bounded by these and by its
//! bytes, never by a claimed count), a zero or out-of-range ballot, slot ranges that overflow [`MAX_SLOT`], entry
//! ballots above the message's ballot. What needs the local replica's state (is the sender
//! a peer, is the ballot's proposer the sender) is checked by the node before it acts.

use bytes::{BufMut, Bytes};
use mako_group::LogEntry;

/// Version byte opening every body (2: `Accepted` names the acceptor's last slot; a
/// replica of version 1 is refused with [`DecodeError::Version`]).
pub const VERSION: u8 = 2;

/// Largest slot (log index) or commit index a message may name.
pub const MAX_SLOT: u64 = 1 << 62;

/// Largest ballot a message may carry (leaves room for the next round).
pub const MAX_BALLOT: u64 = 1 << 62;

/// Most values one `Accept` carries. A leader fills an accept up to `max_append_bytes`
/// of values and never past this count (many tiny or empty values would otherwise make one
/// accept cost a receiver a 32-byte handle per 4 wire bytes); [`decode`] refuses more.
pub const MAX_ACCEPT_VALUES: usize = 1 << 14;

/// Most slots one `Promise` reports (a decoded slot costs 48 bytes for at least 12 on the
/// wire: at most 48 MiB per promise). An acceptor holds at most a few leaders' pipelines
/// (`max_inflight` accepts of at most [`MAX_ACCEPT_VALUES`] each) beyond its commit index;
/// one holding more than this after a candidate's `from` withholds its promise (see the crate
/// docs); [`decode`] refuses more.
pub const MAX_PROMISE_ENTRIES: usize = 1 << 20;

/// Most rounds a `Rejected` raises the refusing replica's next ballot above the refused one
/// (an honest acceptor's promise is a few rounds ahead; a lying member must not exhaust the
/// ballot space with one answer).
pub const MAX_REJECTED_ROUNDS: u64 = 1 << 16;

/// Bits of a ballot holding the proposer's index in the group's peer list.
pub const PROPOSER_BITS: u32 = 16;

/// A ballot from a round and the proposer's index in `peers` (which must be below 65,536).
pub fn ballot(round: u64, proposer: usize) -> u64 {
    (round << PROPOSER_BITS) | (proposer as u64 & 0xffff)
}

/// The round of a ballot.
pub fn round_of(ballot: u64) -> u64 {
    ballot >> PROPOSER_BITS
}

/// The proposer's index (in the group's peer list) of a ballot.
pub fn proposer_of(ballot: u64) -> usize {
    (ballot & 0xffff) as usize
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Phase 1a: a candidate asks for a promise not to accept ballots below `ballot`.
    Prepare {
        /// The candidate's ballot.
        ballot: u64,
        /// The candidate's commit index: the acceptor reports its slots after it.
        from: u64,
        /// A leadership transfer: acceptors promise even while they hear from a leader.
        transfer: bool,
    },
    /// Phase 1b: the promise, with every slot the acceptor holds after `from`.
    Promise {
        /// The candidate's ballot.
        ballot: u64,
        /// The acceptor's commit index (at most `from`).
        commit: u64,
        /// The `from` of the prepare answered; `entries` are slots `from + 1 ..`.
        from: u64,
        /// Accepted values of slots `from + 1 ..= last`, with the ballot each was accepted under.
        entries: Vec<LogEntry>,
    },
    /// Phase 1b refusal: the acceptor committed past the candidate's `from` (the candidate is behind).
    Behind {
        /// The candidate's ballot.
        ballot: u64,
        /// The acceptor's commit index.
        commit: u64,
    },
    /// A refusal of a prepare or accept: the acceptor promised a higher ballot.
    Rejected {
        /// The ballot of the refused request.
        ballot: u64,
        /// The ballot the acceptor promised.
        promised: u64,
    },
    /// Phase 2a: accept these values for slots `first ..` under `ballot`; empty: a heartbeat.
    Accept {
        /// The leader's ballot (every value is accepted under it).
        ballot: u64,
        /// Slot of the first value.
        first: u64,
        /// The leader's commit index.
        commit: u64,
        /// The leader's latest lease round, echoed back.
        lease: u64,
        /// The values of slots `first ..`.
        values: Vec<Bytes>,
    },
    /// Phase 2b: the answer to an accept or a snapshot.
    Accepted {
        /// The leader's ballot.
        ballot: u64,
        /// Last slot of the accept (or snapshot) answered.
        end: u64,
        /// Every slot up to this one is committed here or holds the value accepted under `ballot`.
        matched: u64,
        /// The last slot this acceptor holds (a value, of any ballot): a leader whose log ends
        /// before it fills the slots between with no-ops, so they are decided (a deposed
        /// leader's proposals there are resolved).
        last: u64,
        /// The lease round echoed.
        lease: u64,
        /// The accept left a gap (its first slot is past this log's end).
        gap: bool,
        /// This replica is rejoining (it lost its state).
        rejoining: bool,
    },
    /// The leader hands over: run Phase 1 now, as a transfer.
    TimeoutNow {
        /// The leader's ballot.
        ballot: u64,
        /// The leader's commit index (the target holds every slot up to it under `ballot`,
        /// but may not have learned it yet: its prepare must not name an older commit).
        commit: u64,
    },
    /// The leader's snapshot, for a follower whose next slot is compacted away.
    Snapshot {
        /// The leader's ballot.
        ballot: u64,
        /// Last slot the snapshot covers.
        index: u64,
        /// Ballot of the value at `index`.
        term: u64,
        /// The application's snapshot bytes.
        data: Bytes,
    },
    /// The pre-prepare round: would the acceptor promise `ballot` now? Non-binding: the
    /// acceptor answers [`Msg::PrePromise`] and changes nothing.
    PrePrepare {
        /// The ballot the replica would run Phase 1 under.
        ballot: u64,
        /// The replica's commit index (an acceptor that committed more does not grant).
        from: u64,
    },
    /// The answer to a [`Msg::PrePrepare`] whose ballot is above the acceptor's promise.
    PrePromise {
        /// The pre-prepared ballot.
        ballot: u64,
        /// The acceptor would promise `ballot` now.
        granted: bool,
    },
}

impl Msg {
    /// The ballot the message is about.
    pub fn ballot(&self) -> u64 {
        match self {
            Msg::Prepare { ballot, .. }
            | Msg::Promise { ballot, .. }
            | Msg::Behind { ballot, .. }
            | Msg::Rejected { ballot, .. }
            | Msg::Accept { ballot, .. }
            | Msg::Accepted { ballot, .. }
            | Msg::TimeoutNow { ballot, .. }
            | Msg::Snapshot { ballot, .. }
            | Msg::PrePrepare { ballot, .. }
            | Msg::PrePromise { ballot, .. } => *ballot,
        }
    }

    /// Whether the message is a request (sent by a proposer under its own ballot).
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Msg::Prepare { .. }
                | Msg::Accept { .. }
                | Msg::TimeoutNow { .. }
                | Msg::Snapshot { .. }
                | Msg::PrePrepare { .. }
        )
    }

    /// Encoded body size, roughly (for buffer sizing).
    fn size_hint(&self) -> usize {
        match self {
            Msg::Promise { entries, .. } => {
                40 + entries.iter().map(|e| 12 + e.payload.len()).sum::<usize>()
            }
            Msg::Accept { values, .. } => 48 + values.iter().map(|v| 4 + v.len()).sum::<usize>(),
            Msg::Snapshot { data, .. } => 40 + data.len(),
            _ => 48,
        }
    }
}

const PREPARE: u8 = 1;
const PROMISE: u8 = 2;
const BEHIND: u8 = 3;
const REJECTED: u8 = 4;
const ACCEPT: u8 = 5;
const ACCEPTED: u8 = 6;
const TIMEOUT_NOW: u8 = 7;
const SNAPSHOT: u8 = 8;
const PRE_PREPARE: u8 = 9;
const PRE_PROMISE: u8 = 10;

/// Why a body did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body ended before a field.
    #[error("message truncated at byte {0}")]
    Truncated(usize),
    /// Bytes left after the last field.
    #[error("{0} bytes after the end of the message")]
    Trailing(usize),
    /// Unknown version byte.
    #[error("unknown message version {0}")]
    Version(u8),
    /// Unknown message kind.
    #[error("unknown message kind {0}")]
    Kind(u8),
    /// A list longer than any correct peer sends.
    #[error("{count} {what} exceed the limit of {max}")]
    TooMany {
        /// The list.
        what: &'static str,
        /// The claimed count.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A field out of its range.
    #[error("bad field `{0}`")]
    Field(&'static str),
}

fn put_bytes(v: &mut Vec<u8>, b: &[u8]) {
    v.put_u32_le(b.len() as u32);
    v.put_slice(b);
}

/// Writes `m`'s body into `v`.
pub fn encode_body(m: &Msg, v: &mut Vec<u8>) {
    v.push(VERSION);
    match m {
        Msg::Prepare {
            ballot,
            from,
            transfer,
        } => {
            v.push(PREPARE);
            v.put_u64_le(*ballot);
            v.put_u64_le(*from);
            v.push(u8::from(*transfer));
        }
        Msg::Promise {
            ballot,
            commit,
            from,
            entries,
        } => {
            v.push(PROMISE);
            v.put_u64_le(*ballot);
            v.put_u64_le(*commit);
            v.put_u64_le(*from);
            v.put_u32_le(entries.len() as u32);
            for e in entries {
                v.put_u64_le(e.term);
                put_bytes(v, &e.payload);
            }
        }
        Msg::Behind { ballot, commit } => {
            v.push(BEHIND);
            v.put_u64_le(*ballot);
            v.put_u64_le(*commit);
        }
        Msg::Rejected { ballot, promised } => {
            v.push(REJECTED);
            v.put_u64_le(*ballot);
            v.put_u64_le(*promised);
        }
        Msg::Accept {
            ballot,
            first,
            commit,
            lease,
            values,
        } => {
            v.push(ACCEPT);
            v.put_u64_le(*ballot);
            v.put_u64_le(*first);
            v.put_u64_le(*commit);
            v.put_u64_le(*lease);
            v.put_u32_le(values.len() as u32);
            for p in values {
                put_bytes(v, p);
            }
        }
        Msg::Accepted {
            ballot,
            end,
            matched,
            last,
            lease,
            gap,
            rejoining,
        } => {
            v.push(ACCEPTED);
            v.put_u64_le(*ballot);
            v.put_u64_le(*end);
            v.put_u64_le(*matched);
            v.put_u64_le(*last);
            v.put_u64_le(*lease);
            v.push(u8::from(*gap) | (u8::from(*rejoining) << 1));
        }
        Msg::TimeoutNow { ballot, commit } => {
            v.push(TIMEOUT_NOW);
            v.put_u64_le(*ballot);
            v.put_u64_le(*commit);
        }
        Msg::Snapshot {
            ballot,
            index,
            term,
            data,
        } => {
            v.push(SNAPSHOT);
            v.put_u64_le(*ballot);
            v.put_u64_le(*index);
            v.put_u64_le(*term);
            v.put_u64_le(data.len() as u64);
            v.put_slice(data);
        }
        Msg::PrePrepare { ballot, from } => {
            v.push(PRE_PREPARE);
            v.put_u64_le(*ballot);
            v.put_u64_le(*from);
        }
        Msg::PrePromise { ballot, granted } => {
            v.push(PRE_PROMISE);
            v.put_u64_le(*ballot);
            v.push(u8::from(*granted));
        }
    }
}

/// Frames `m` for the wire: whole, or in chunks of `chunk_bytes` when larger.
pub fn encode(m: &Msg, chunk_bytes: usize) -> Vec<Bytes> {
    mako_group::chunk::encode_with(m.size_hint(), chunk_bytes, |v| encode_body(m, v))
}

/// A cursor over a body that never reads past its end.
struct Reader<'a> {
    body: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.body.len())
            .ok_or(DecodeError::Truncated(self.at))?;
        let s = &self.body[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.at;
        self.take(n)?;
        Ok(self.body.slice(start..self.at))
    }

    fn remaining(&self) -> usize {
        self.body.len() - self.at
    }

    /// A list count, refused above `max` (no correct peer sends more) or when the bytes left
    /// cannot hold `min_item` bytes per item: what is allocated for the items is then bounded
    /// by both the limit and the bytes present, never by the claimed count alone.
    fn count(
        &mut self,
        what: &'static str,
        min_item: usize,
        max: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::TooMany {
                what,
                count: n,
                max,
            });
        }
        if n.saturating_mul(min_item) > self.remaining() {
            return Err(DecodeError::Field("count"));
        }
        Ok(n)
    }

    fn ballot(&mut self) -> Result<u64, DecodeError> {
        let b = self.u64()?;
        if round_of(b) == 0 || b > MAX_BALLOT {
            return Err(DecodeError::Field("ballot"));
        }
        Ok(b)
    }

    fn slot(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let s = self.u64()?;
        if s > MAX_SLOT {
            return Err(DecodeError::Field(what));
        }
        Ok(s)
    }
}

/// Decodes a body, checking every field that can be checked without the replica's state.
pub fn decode(body: &Bytes) -> Result<Msg, DecodeError> {
    let mut r = Reader { body, at: 0 };
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let kind = r.u8()?;
    let m = match kind {
        PREPARE => {
            let ballot = r.ballot()?;
            let from = r.slot("from")?;
            let transfer = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::Field("transfer")),
            };
            Msg::Prepare {
                ballot,
                from,
                transfer,
            }
        }
        PROMISE => {
            let ballot = r.ballot()?;
            let commit = r.slot("commit")?;
            let from = r.slot("from")?;
            if commit > from {
                return Err(DecodeError::Field("commit"));
            }
            let n = r.count("entries", 12, MAX_PROMISE_ENTRIES)?;
            if from.saturating_add(n as u64) > MAX_SLOT {
                return Err(DecodeError::Field("entries"));
            }
            let mut entries = Vec::with_capacity(n);
            for k in 0..n {
                let term = r.u64()?;
                if term == 0 || term > ballot {
                    return Err(DecodeError::Field("entry ballot"));
                }
                let len = r.u32()? as usize;
                let payload = r.bytes(len)?;
                entries.push(LogEntry {
                    index: from + 1 + k as u64,
                    term,
                    payload,
                });
            }
            Msg::Promise {
                ballot,
                commit,
                from,
                entries,
            }
        }
        BEHIND => Msg::Behind {
            ballot: r.ballot()?,
            commit: r.slot("commit")?,
        },
        REJECTED => {
            let ballot = r.ballot()?;
            let promised = r.ballot()?;
            if promised < ballot {
                return Err(DecodeError::Field("promised"));
            }
            Msg::Rejected { ballot, promised }
        }
        ACCEPT => {
            let ballot = r.ballot()?;
            let first = r.slot("first")?;
            if first == 0 {
                return Err(DecodeError::Field("first"));
            }
            let commit = r.slot("commit")?;
            let lease = r.u64()?;
            let n = r.count("values", 4, MAX_ACCEPT_VALUES)?;
            if first.saturating_add(n as u64) > MAX_SLOT {
                return Err(DecodeError::Field("values"));
            }
            let mut values = Vec::with_capacity(n);
            for _ in 0..n {
                let len = r.u32()? as usize;
                values.push(r.bytes(len)?);
            }
            Msg::Accept {
                ballot,
                first,
                commit,
                lease,
                values,
            }
        }
        ACCEPTED => {
            let ballot = r.ballot()?;
            let end = r.slot("end")?;
            let matched = r.slot("matched")?;
            let last = r.slot("last")?;
            let lease = r.u64()?;
            let flags = r.u8()?;
            if flags & !3 != 0 {
                return Err(DecodeError::Field("flags"));
            }
            Msg::Accepted {
                ballot,
                end,
                matched,
                last,
                lease,
                gap: flags & 1 != 0,
                rejoining: flags & 2 != 0,
            }
        }
        TIMEOUT_NOW => Msg::TimeoutNow {
            ballot: r.ballot()?,
            commit: r.slot("commit")?,
        },
        SNAPSHOT => {
            let ballot = r.ballot()?;
            let index = r.slot("index")?;
            let term = r.u64()?;
            if index == 0 || term == 0 || term > ballot {
                return Err(DecodeError::Field("snapshot position"));
            }
            let len = r.u64()?;
            if len > r.remaining() as u64 {
                return Err(DecodeError::Truncated(r.at));
            }
            let data = r.bytes(len as usize)?;
            Msg::Snapshot {
                ballot,
                index,
                term,
                data,
            }
        }
        PRE_PREPARE => Msg::PrePrepare {
            ballot: r.ballot()?,
            from: r.slot("from")?,
        },
        PRE_PROMISE => {
            let ballot = r.ballot()?;
            let granted = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::Field("granted")),
            };
            Msg::PrePromise { ballot, granted }
        }
        k => return Err(DecodeError::Kind(k)),
    };
    if r.remaining() != 0 {
        return Err(DecodeError::Trailing(r.remaining()));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Msg> {
        let b = ballot(3, 1);
        vec![
            Msg::Prepare {
                ballot: b,
                from: 7,
                transfer: true,
            },
            Msg::Promise {
                ballot: b,
                commit: 5,
                from: 7,
                entries: vec![
                    LogEntry::new(8, ballot(2, 0), Bytes::from_static(b"x")),
                    LogEntry::new(9, ballot(1, 2), Bytes::new()),
                ],
            },
            Msg::Behind {
                ballot: b,
                commit: 9,
            },
            Msg::Rejected {
                ballot: b,
                promised: ballot(4, 0),
            },
            Msg::Accept {
                ballot: b,
                first: 3,
                commit: 2,
                lease: 11,
                values: vec![Bytes::from_static(b"abc"), Bytes::new()],
            },
            Msg::Accepted {
                ballot: b,
                end: 4,
                matched: 4,
                last: 6,
                lease: 11,
                gap: false,
                rejoining: true,
            },
            Msg::TimeoutNow {
                ballot: b,
                commit: 12,
            },
            Msg::Snapshot {
                ballot: b,
                index: 40,
                term: ballot(2, 2),
                data: Bytes::from_static(b"state"),
            },
            Msg::PrePrepare { ballot: b, from: 7 },
            Msg::PrePromise {
                ballot: b,
                granted: true,
            },
            Msg::PrePromise {
                ballot: b,
                granted: false,
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let mut v = Vec::new();
            encode_body(&m, &mut v);
            assert_eq!(decode(&Bytes::from(v)).unwrap(), m);
        }
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        for m in samples() {
            let mut v = Vec::new();
            encode_body(&m, &mut v);
            for cut in 0..v.len() {
                assert!(
                    decode(&Bytes::copy_from_slice(&v[..cut])).is_err(),
                    "{m:?} cut {cut}"
                );
            }
            v.push(0);
            assert!(matches!(
                decode(&Bytes::from(v)),
                Err(DecodeError::Trailing(1))
            ));
        }
    }

    #[test]
    fn out_of_range_fields_are_refused() {
        let mut v = Vec::new();
        encode_body(
            &Msg::Accept {
                ballot: ballot(1, 0),
                first: MAX_SLOT,
                commit: 0,
                lease: 0,
                values: vec![Bytes::new()],
            },
            &mut v,
        );
        assert_eq!(decode(&Bytes::from(v)), Err(DecodeError::Field("values")));
        let mut v = Vec::new();
        encode_body(
            &Msg::TimeoutNow {
                ballot: 5,
                commit: 0,
            },
            &mut v,
        );
        assert_eq!(decode(&Bytes::from(v)), Err(DecodeError::Field("ballot")));
        // A claimed count within the limit with no bytes behind it allocates nothing.
        let mut v = vec![VERSION, ACCEPT];
        v.extend_from_slice(&ballot(1, 0).to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&(MAX_ACCEPT_VALUES as u32).to_le_bytes());
        assert_eq!(decode(&Bytes::from(v)), Err(DecodeError::Field("count")));
        // A pre-promise's flag is 0 or 1; a pre-prepare names a ballot and a slot in range.
        let mut v = Vec::new();
        encode_body(
            &Msg::PrePromise {
                ballot: ballot(1, 0),
                granted: true,
            },
            &mut v,
        );
        *v.last_mut().unwrap() = 2;
        assert_eq!(decode(&Bytes::from(v)), Err(DecodeError::Field("granted")));
        let mut v = Vec::new();
        encode_body(
            &Msg::PrePrepare {
                ballot: ballot(1, 0),
                from: MAX_SLOT + 1,
            },
            &mut v,
        );
        assert_eq!(decode(&Bytes::from(v)), Err(DecodeError::Field("from")));
        let mut v = Vec::new();
        encode_body(&Msg::PrePrepare { ballot: 0, from: 0 }, &mut v);
        assert_eq!(decode(&Bytes::from(v)), Err(DecodeError::Field("ballot")));
    }
}

#[cfg(test)]
mod bounds {
    //! Decode memory bounds: a crafted count costs an error, not an allocation.

    use super::*;

    fn accept(n: usize) -> Msg {
        Msg::Accept {
            ballot: ballot(1, 0),
            first: 1,
            commit: 0,
            lease: 0,
            values: vec![Bytes::new(); n],
        }
    }

    fn promise(n: usize) -> Msg {
        let b = ballot(2, 0);
        Msg::Promise {
            ballot: b,
            commit: 0,
            from: 0,
            entries: (1..=n as u64)
                .map(|i| LogEntry::new(i, ballot(1, 1), Bytes::new()))
                .collect(),
        }
    }

    fn body(m: &Msg) -> Bytes {
        let mut v = Vec::new();
        encode_body(m, &mut v);
        Bytes::from(v)
    }

    /// An accept of more values than any leader puts in one (every value present, empty):
    /// decoding it used to cost 32 bytes of `Bytes` handle per 4 wire bytes.
    #[test]
    fn an_accept_with_more_values_than_a_leader_sends_is_refused() {
        assert_eq!(
            decode(&body(&accept(MAX_ACCEPT_VALUES + 1))).err(),
            Some(DecodeError::TooMany {
                what: "values",
                count: MAX_ACCEPT_VALUES + 1,
                max: MAX_ACCEPT_VALUES,
            })
        );
    }

    /// A promise of more slots than an acceptor ever reports (48 bytes of `LogEntry` per
    /// 12 wire bytes).
    #[test]
    fn a_promise_with_more_entries_than_an_acceptor_sends_is_refused() {
        assert_eq!(
            decode(&body(&promise(MAX_PROMISE_ENTRIES + 1))).err(),
            Some(DecodeError::TooMany {
                what: "entries",
                count: MAX_PROMISE_ENTRIES + 1,
                max: MAX_PROMISE_ENTRIES,
            })
        );
    }

    /// A body claiming 2^31 items (or `u32::MAX`) with a few bytes behind the count is
    /// refused before anything is allocated for the items.
    #[test]
    fn a_huge_claimed_count_is_refused_before_allocating() {
        for claimed in [1u32 << 31, u32::MAX] {
            for m in [accept(3), promise(3)] {
                let mut v = body(&m).to_vec();
                // The count sits right after the fixed fields.
                let at = match m {
                    Msg::Accept { .. } => 2 + 8 * 4,
                    _ => 2 + 8 * 3,
                };
                v[at..at + 4].copy_from_slice(&claimed.to_le_bytes());
                assert!(matches!(
                    decode(&Bytes::from(v)),
                    Err(DecodeError::TooMany { .. })
                ));
            }
        }
    }

    /// The largest honest messages round-trip, the promise chunked and reassembled as it
    /// travels.
    #[test]
    fn the_largest_honest_messages_round_trip() {
        let a = accept(MAX_ACCEPT_VALUES);
        assert!(decode(&body(&a)).is_ok_and(|d| d == a));
        let p = promise(MAX_PROMISE_ENTRIES);
        let mut r = mako_group::chunk::Reassembler::default();
        let mut got = None;
        for c in encode(&p, 1 << 20) {
            got = r.push(1, &c).unwrap();
        }
        assert!(decode(&got.expect("reassembled")).is_ok_and(|d| d == p));
    }
}
