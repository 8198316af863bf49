//! Model test: random sequences of writes (with reopenings in between) against an
//! in-memory model of the log's semantics; after every reopen, recovered == model.

use std::collections::BTreeMap;

use bytes::Bytes;
use mako_logstore::{
    Durability, GroupState, GroupWrite, HardState, LogEntry, LogModel, LogStore, LogStoreConfig,
    SnapshotMeta,
};
use proptest::prelude::*;

/// The model: what every group should look like after replay.
#[derive(Default)]
struct Model {
    groups: BTreeMap<u32, GroupState>,
}

impl Model {
    fn apply(&mut self, w: &GroupWrite) {
        if w.is_empty() {
            return;
        }
        let g = self.groups.entry(w.group).or_default();
        if let Some(s) = w.snapshot {
            g.snapshot = Some(s);
            g.first_index = g.first_index.max(s.index + 1);
            g.entries.clear();
        }
        if let Some(first) = w.entries.first() {
            let i = first.index;
            // Keep existing entries below i only if they reach up to i - 1 without a gap.
            let contiguous = g.entries.last().is_some_and(|l| l.index + 1 >= i);
            let end = w.entries.last().map_or(i, |e| e.index);
            // In place: every entry after the written ones stays; written entries that would
            // end below a gap before them are dropped.
            let later: Vec<LogEntry> = if w.keep_later && contiguous {
                g.entries
                    .iter()
                    .filter(|e| e.index > end)
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            if later.first().is_none_or(|e| e.index <= end + 1) {
                if contiguous {
                    g.entries.retain(|e| e.index < i);
                } else {
                    g.entries.clear();
                }
                g.entries.extend(w.entries.iter().cloned());
                g.entries.extend(later);
            }
        }
        if let Some(hs) = w.hard_state {
            g.hard_state = hs;
        }
        if let Some(p) = w.snapshot_point {
            g.snapshot = Some(p);
            g.first_index = g.first_index.max(p.index + 1);
        }
        if let Some(c) = w.compact_to {
            g.first_index = g.first_index.max(c);
        }
        let floor = g.first_index;
        g.entries.retain(|e| e.index >= floor);
    }
}

/// Where a write's entries go, relative to the group's current log (resolved against the
/// model when the op runs, so sequences look like a real Raft log: mostly appends, some
/// overwrites, occasional gaps and stray indexes).
#[derive(Debug, Clone)]
enum At {
    Append,
    Overwrite(u64),
    Gap(u64),
    Absolute(u64),
}

/// One group's change before resolution.
#[derive(Debug, Clone)]
struct Spec {
    group: u32,
    at: At,
    n: u64,
    term: u64,
    plen: usize,
    hard_state: Option<(u64, u64, u64)>,
    snapshot_lag: Option<u64>,
    point_lag: Option<u64>,
    compact_lag: Option<u64>,
    keep_later: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<Spec>),
    Reopen,
}

impl Model {
    fn last_index(&self, group: u32) -> u64 {
        self.groups.get(&group).map_or(0, |g| {
            g.entries
                .last()
                .map_or(g.first_index.saturating_sub(1), |e| e.index)
        })
    }

    /// Turns a spec into a concrete write given the current state.
    fn resolve(&self, s: &Spec) -> GroupWrite {
        let last = self.last_index(s.group);
        let first = match s.at {
            At::Append => last + 1,
            At::Overwrite(back) => last.saturating_sub(back).max(1),
            At::Gap(skip) => last + 2 + skip,
            At::Absolute(i) => i,
        };
        let top = (first + s.n).saturating_sub(1).max(last);
        GroupWrite {
            group: s.group,
            entries: (first..first + s.n)
                .map(|i| LogEntry::new(i, s.term, Bytes::from(vec![(i % 251) as u8; s.plen])))
                .collect(),
            hard_state: s
                .hard_state
                .map(|(term, vote, commit)| HardState { term, vote, commit }),
            snapshot: s.snapshot_lag.map(|lag| SnapshotMeta {
                index: top.saturating_sub(lag),
                term: s.term,
            }),
            snapshot_point: s.point_lag.map(|lag| SnapshotMeta {
                index: top.saturating_sub(lag),
                term: s.term,
            }),
            compact_to: s.compact_lag.map(|lag| top.saturating_sub(lag)),
            keep_later: s.keep_later,
        }
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    let at = prop_oneof![
        16 => Just(At::Append),
        3 => (0u64..6).prop_map(At::Overwrite),
        1 => (0u64..4).prop_map(At::Gap),
        1 => (0u64..100).prop_map(At::Absolute),
    ];
    (
        0u32..3,
        at,
        0u64..6,
        1u64..4,
        0usize..100,
        proptest::option::weighted(0.4, (0u64..5, 0u64..4, 0u64..60)),
        proptest::option::weighted(0.05, 0u64..8),
        proptest::option::weighted(0.1, 0u64..8),
        proptest::option::weighted(0.3, 0u64..12),
        proptest::bool::weighted(0.3),
    )
        .prop_map(
            |(
                group,
                at,
                n,
                term,
                plen,
                hard_state,
                snapshot_lag,
                point_lag,
                compact_lag,
                keep_later,
            )| Spec {
                group,
                at,
                n,
                term,
                plen,
                hard_state,
                snapshot_lag,
                point_lag,
                compact_lag,
                keep_later,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => proptest::collection::vec(spec(), 0..3).prop_map(Op::Write),
        1 => Just(Op::Reopen),
    ]
}

/// 24 cases unless `PROPTEST_CASES` says otherwise.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn recovered_matches_model(ops in proptest::collection::vec(op(), 1..160)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogStoreConfig {
            durability: Durability::Buffered,
            // Tiny segments: many rollovers, checkpoints and recycled segments.
            segment_bytes: 4096,
            preallocated_segments: 1,
            ..LogStoreConfig::new(dir.path())
        };
        let mut model = Model::default();
        // The shared model simulators use: it must agree with this test's oracle and the store.
        let mut shared = LogModel::default();
        let (mut log, rec) = LogStore::open(cfg.clone()).expect("open");
        prop_assert!(rec.groups.is_empty());
        for op in ops.iter().chain(std::iter::once(&Op::Reopen)) {
            match op {
                Op::Write(specs) => {
                    // Resolve each group change against the state left by the previous one.
                    let mut ws = Vec::new();
                    let mut after = Model { groups: model.groups.clone() };
                    for s in specs {
                        let w = after.resolve(s);
                        after.apply(&w);
                        ws.push(w);
                    }
                    shared.apply(&ws);
                    log.write_sync(ws).expect("write");
                    model = after;
                }
                Op::Reopen => {
                    drop(log);
                    let (l, rec) = LogStore::open(cfg.clone()).expect("reopen");
                    prop_assert_eq!(&rec.groups, &model.groups);
                    prop_assert_eq!(&shared.recovered().groups, &rec.groups);
                    log = l;
                }
            }
        }
    }
}
