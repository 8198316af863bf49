//! The checker: infers version orders from reads, builds ww/wr/rw and real-time edges
//! between committed transactions, finds and classifies cycles, and reports the non-cycle
//! anomalies (aborted and intermediate reads, lost writes, garbage, bank totals, write skew).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::graph::{CycleEdge, Graph, RT, RW, RW_RT, RawEdge, Searcher, WR, WW, WW_RT};
use crate::history::{History, Key, Op, OpRecord, Outcome, Txn, TxnId, Value, ValuesFmt};
use crate::report::{Anomaly, AnomalyClass, Cycle, CycleStep, EdgeKind, Report, Stats};

/// Options of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Check strict serializability: add real-time edges (released before invoked) and infer
    /// register version orders from the real-time order of released writes. Cycles that need
    /// them are reported as `-realtime` classes.
    pub realtime: bool,
    /// `Display` of the report shows at most this many anomalies per class.
    pub display_limit: usize,
    /// Bound on the edge visits spent searching single-rw cycles (keeps pathological
    /// histories fast; a component whose G-single search runs out is still reported,
    /// classified by a plain cycle search).
    pub search_budget: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            realtime: true,
            display_limit: 10,
            search_budget: 50_000_000,
        }
    }
}

/// Checks a history with the default options (strict serializability).
pub fn check(history: &History) -> Report {
    check_with(history, &CheckOptions::default())
}

/// Checks a history.
pub fn check_with(history: &History, options: &CheckOptions) -> Report {
    Checker::new(history, options).run()
}

/// A fast hasher for integer keys (the maps below hold hundreds of thousands of entries).
#[derive(Default)]
struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;
type FastSet<K> = HashSet<K, BuildHasherDefault<IntHasher>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    List,
    Register,
    Counter,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            KeyKind::List => "list",
            KeyKind::Register => "register",
            KeyKind::Counter => "counter",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct WriteInfo {
    txn: TxnId,
    is_final: bool,
}

/// A read of a key by an included transaction that reveals the state before the
/// transaction's own writes: the first `len` observed values of `ops[op]`.
#[derive(Clone, Copy, Debug)]
struct ExtRead {
    key: Key,
    txn: TxnId,
    op: u32,
    len: u32,
}

const NONE: u32 = u32::MAX;
const MAX_NOTES: usize = 20;

struct Checker<'h> {
    h: &'h History,
    opts: &'h CheckOptions,
    kinds: FastMap<Key, KeyKind>,
    writers: FastMap<(Key, Value), WriteInfo>,
    /// Per key, the writes in history order: (value, txn, final in its txn).
    key_writes: FastMap<Key, Vec<(Value, TxnId, bool)>>,
    included: Vec<bool>,
    ext: Vec<ExtRead>,
    anomalies: Vec<Anomaly>,
    notes: Vec<String>,
    edges: Vec<RawEdge>,
}

impl<'h> Checker<'h> {
    fn new(h: &'h History, opts: &'h CheckOptions) -> Self {
        Checker {
            h,
            opts,
            kinds: FastMap::default(),
            writers: FastMap::default(),
            key_writes: FastMap::default(),
            included: Vec::new(),
            ext: Vec::new(),
            anomalies: Vec::new(),
            notes: Vec::new(),
            edges: Vec::new(),
        }
    }

    fn txn(&self, id: TxnId) -> &'h Txn {
        &self.h.txns()[id]
    }

    fn note(&mut self, text: String) {
        if self.notes.len() < MAX_NOTES {
            self.notes.push(text);
        } else if self.notes.len() == MAX_NOTES {
            self.notes.push("further notes suppressed".to_string());
        }
    }

    fn edge(&mut self, from: TxnId, to: TxnId, bit: u8, key: Key) {
        if from != to {
            self.edges.push(RawEdge {
                from: from as u32,
                to: to as u32,
                bit,
                key,
            });
        }
    }

    fn ext_values(&self, r: &ExtRead) -> &'h [Value] {
        let obs = self.txn(r.txn).ops[r.op as usize]
            .observed
            .as_deref()
            .unwrap_or(&[]);
        &obs[..r.len as usize]
    }

    fn run(mut self) -> Report {
        self.index_writes();
        self.include_unknowns();
        self.internal_and_external_reads();
        self.check_read_values();
        self.ext.sort_by_key(|r| (r.key, r.txn));
        let mut keys: Vec<Key> = self.kinds.keys().copied().collect();
        keys.sort_unstable();
        let mut start = 0;
        let mut reads_of: FastMap<Key, (usize, usize)> = FastMap::default();
        while start < self.ext.len() {
            let key = self.ext[start].key;
            let end = start + self.ext[start..].partition_point(|r| r.key == key);
            reads_of.insert(key, (start, end));
            start = end;
        }
        for &key in &keys {
            let range = reads_of.get(&key).copied().unwrap_or((0, 0));
            match self.kinds.get(&key) {
                Some(KeyKind::List) => self.list_key(key, range),
                Some(KeyKind::Register) => self.register_key(key, range),
                _ => {}
            }
        }
        if self.opts.realtime {
            self.realtime_edges();
        }
        self.bank(&keys);
        self.write_skew();
        let graph = Graph::build(self.h.len(), std::mem::take(&mut self.edges));
        let cyclic = self.cycles(&graph);
        self.finish(graph.edge_count(), cyclic)
    }

    /// Indexes every write by (key, value), classifies keys, and marks final writes.
    fn index_writes(&mut self) {
        let mut mixed: FastSet<Key> = FastSet::default();
        for t in self.h.txns() {
            let mut seen: Vec<Key> = Vec::new();
            for rec in t.ops.iter().rev() {
                let (key, value, kind) = match rec.op {
                    Op::Write { key, value } => (key, value, KeyKind::Register),
                    Op::Append { key, value } => (key, value, KeyKind::List),
                    Op::Add { key, .. } => {
                        self.set_kind(key, KeyKind::Counter, &mut mixed);
                        continue;
                    }
                    Op::Read { .. } => continue,
                };
                self.set_kind(key, kind, &mut mixed);
                let is_final = !seen.contains(&key);
                if is_final {
                    seen.push(key);
                }
                let info = WriteInfo {
                    txn: t.id,
                    is_final,
                };
                if let Some(prev) = self.writers.insert((key, value), info) {
                    self.writers.insert((key, value), prev);
                    self.note(format!(
                        "value {value} written to k{key} twice (T{} and T{}); the checker needs unique values",
                        prev.txn, t.id
                    ));
                    continue;
                }
                self.key_writes
                    .entry(key)
                    .or_default()
                    .push((value, t.id, is_final));
            }
        }
        for writes in self.key_writes.values_mut() {
            writes.sort_by_key(|&(_, txn, _)| txn);
        }
    }

    fn set_kind(&mut self, key: Key, kind: KeyKind, mixed: &mut FastSet<Key>) {
        let have = *self.kinds.entry(key).or_insert(kind);
        if have != kind && mixed.insert(key) {
            self.note(format!(
                "k{key} is used both as a {} and as a {}; analysed as a {}",
                have.name(),
                kind.name(),
                have.name()
            ));
        }
    }

    /// Released transactions are committed; an unknown one is treated as committed when a
    /// read of a non-aborted transaction observed one of its writes.
    fn include_unknowns(&mut self) {
        let txns = self.h.txns();
        self.included = txns.iter().map(|t| t.outcome.is_released()).collect();
        for t in txns.iter().filter(|t| !t.outcome.is_aborted()) {
            for rec in &t.ops {
                let (Op::Read { key }, Some(obs)) = (rec.op, rec.observed.as_deref()) else {
                    continue;
                };
                for &v in obs {
                    if let Some(w) = self.writers.get(&(key, v))
                        && w.txn != t.id
                        && txns[w.txn].outcome == Outcome::Unknown
                    {
                        self.included[w.txn] = true;
                    }
                }
            }
        }
    }

    /// Checks each included transaction's reads against its own earlier operations and
    /// collects the reads that reveal other transactions' versions.
    fn internal_and_external_reads(&mut self) {
        #[derive(Default)]
        struct KState<'a> {
            wrote: Option<Value>,
            since_read: Vec<Value>,
            last_read: Option<&'a [Value]>,
        }
        let h = self.h;
        for t in h.txns().iter().filter(|t| self.included[t.id]) {
            let mut st: FastMap<Key, KState<'_>> = FastMap::default();
            for (i, rec) in t.ops.iter().enumerate() {
                match rec.op {
                    Op::Write { key, value } => st.entry(key).or_default().wrote = Some(value),
                    Op::Append { key, value } => st.entry(key).or_default().since_read.push(value),
                    Op::Add { .. } => {}
                    Op::Read { key } => {
                        let Some(obs) = rec.observed.as_deref() else {
                            continue;
                        };
                        let kind = self.kinds.get(&key).copied();
                        if kind == Some(KeyKind::Counter) {
                            continue;
                        }
                        let s = st.entry(key).or_default();
                        let mut bad: Option<(Vec<Value>, bool)> = None;
                        if kind == Some(KeyKind::Register) {
                            if let Some(w) = s.wrote {
                                if obs != [w] {
                                    bad = Some((vec![w], false));
                                }
                            } else if let Some(prev) = s.last_read {
                                if obs != prev {
                                    bad = Some((prev.to_vec(), false));
                                }
                            } else {
                                self.ext.push(ExtRead {
                                    key,
                                    txn: t.id,
                                    op: i as u32,
                                    len: obs.len() as u32,
                                });
                                s.last_read = Some(obs);
                            }
                        } else {
                            if let Some(prev) = s.last_read {
                                let mut expected = prev.to_vec();
                                expected.extend_from_slice(&s.since_read);
                                if obs != expected.as_slice() {
                                    bad = Some((expected, false));
                                }
                            } else if obs.ends_with(&s.since_read) {
                                self.ext.push(ExtRead {
                                    key,
                                    txn: t.id,
                                    op: i as u32,
                                    len: (obs.len() - s.since_read.len()) as u32,
                                });
                            } else {
                                bad = Some((s.since_read.clone(), true));
                            }
                            s.last_read = Some(obs);
                            s.since_read.clear();
                        }
                        if let Some((expected, expected_suffix)) = bad {
                            self.anomalies.push(Anomaly::Internal {
                                txn: t.id,
                                key,
                                expected,
                                expected_suffix,
                                observed: obs.to_vec(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Garbage, duplicate, aborted (G1a) and intermediate (G1b) reads.
    fn check_read_values(&mut self) {
        let txns = self.h.txns();
        for i in 0..self.ext.len() {
            let r = self.ext[i];
            let vals = self.ext_values(&r);
            let kind = self.kinds.get(&r.key).copied();
            if kind == Some(KeyKind::Register) && vals.len() > 1 {
                self.anomalies.push(Anomaly::GarbageRead {
                    reader: r.txn,
                    key: r.key,
                    value: vals[1],
                });
                continue;
            }
            if vals.len() > 1 {
                let mut seen: FastSet<Value> = FastSet::default();
                if let Some(&v) = vals.iter().find(|&&v| !seen.insert(v)) {
                    self.anomalies.push(Anomaly::DuplicateElements {
                        reader: r.txn,
                        key: r.key,
                        value: v,
                    });
                }
            }
            for (j, &v) in vals.iter().enumerate() {
                let Some(w) = self.writers.get(&(r.key, v)).copied() else {
                    self.anomalies.push(Anomaly::GarbageRead {
                        reader: r.txn,
                        key: r.key,
                        value: v,
                    });
                    continue;
                };
                if w.txn == r.txn {
                    continue;
                }
                if txns[w.txn].outcome.is_aborted() {
                    self.anomalies.push(Anomaly::AbortedRead {
                        reader: r.txn,
                        writer: w.txn,
                        key: r.key,
                        value: v,
                    });
                } else if j + 1 == vals.len() && !w.is_final {
                    let final_value = final_write(&txns[w.txn], r.key).unwrap_or(v);
                    self.anomalies.push(Anomaly::IntermediateRead {
                        reader: r.txn,
                        writer: w.txn,
                        key: r.key,
                        value: v,
                        final_value,
                    });
                }
            }
        }
    }

    fn committed_writer(&self, key: Key, v: Value) -> u32 {
        match self.writers.get(&(key, v)) {
            Some(w) if self.included[w.txn] => w.txn as u32,
            _ => NONE,
        }
    }

    /// List key: the longest read is the version order; every read must be a prefix of it.
    fn list_key(&mut self, key: Key, (start, end): (usize, usize)) {
        let reads: Vec<ExtRead> = self.ext[start..end].to_vec();
        if let Some(longest) = reads
            .iter()
            .max_by_key(|r| (r.len, std::cmp::Reverse(r.txn)))
        {
            let longest = *longest;
            let order = self.ext_values(&longest);
            let cw: Vec<u32> = order
                .iter()
                .map(|&v| self.committed_writer(key, v))
                .collect();
            let mut prev_c = vec![NONE; cw.len()];
            let mut last = NONE;
            for (i, &w) in cw.iter().enumerate() {
                if w != NONE {
                    if last != NONE && last != w {
                        self.edge(last as usize, w as usize, WW, key);
                    }
                    last = w;
                }
                prev_c[i] = last;
            }
            let mut next_c = vec![NONE; cw.len() + 1];
            for i in (0..cw.len()).rev() {
                next_c[i] = if cw[i] != NONE { cw[i] } else { next_c[i + 1] };
            }
            for r in &reads {
                let vals = self.ext_values(r);
                let n = vals.len();
                match vals.iter().zip(order).position(|(a, b)| a != b) {
                    Some(index) => {
                        self.anomalies.push(Anomaly::IncompatibleOrder {
                            key,
                            reader: r.txn,
                            other: longest.txn,
                            index,
                            found: vals[index],
                            expected: order[index],
                        });
                        if let Some(&v) = vals.last() {
                            let w = self.committed_writer(key, v);
                            if w != NONE {
                                self.edge(w as usize, r.txn, WR, key);
                            }
                        }
                    }
                    None => {
                        if n > 0 && prev_c[n - 1] != NONE {
                            self.edge(prev_c[n - 1] as usize, r.txn, WR, key);
                        }
                        if next_c[n] != NONE {
                            self.edge(r.txn, next_c[n] as usize, RW, key);
                        }
                    }
                }
            }
            // Lost writes: released appends no read saw, although a read began after them.
            let seen: FastSet<Value> = reads
                .iter()
                .flat_map(|r| self.ext_values(r).iter().copied())
                .collect();
            let latest = reads
                .iter()
                .max_by_key(|r| self.txn(r.txn).invoke)
                .map(|r| r.txn);
            let writes = self.key_writes.get(&key).cloned().unwrap_or_default();
            if let Some(latest) = latest {
                let latest_invoke = self.txn(latest).invoke;
                for (v, w, _) in writes {
                    let wt = self.txn(w);
                    if wt.outcome.is_released() && !seen.contains(&v) && latest_invoke > wt.complete
                    {
                        self.anomalies.push(Anomaly::LostWrite {
                            writer: w,
                            key,
                            value: v,
                            reader: latest,
                        });
                    }
                }
            }
        }
    }

    /// Register key: wr from unique values; version order from the initial state, from
    /// read-then-write within a transaction, and (strict) from real-time order of writes.
    fn register_key(&mut self, key: Key, (start, end): (usize, usize)) {
        let reads: Vec<ExtRead> = self.ext[start..end].to_vec();
        let mut readers_of: FastMap<Value, Vec<TxnId>> = FastMap::default();
        let mut absent: Vec<TxnId> = Vec::new();
        let mut read_by: FastMap<TxnId, Option<Value>> = FastMap::default();
        for r in &reads {
            let vals = self.ext_values(r);
            match vals {
                [] => {
                    absent.push(r.txn);
                    read_by.insert(r.txn, None);
                }
                [v] => {
                    readers_of.entry(*v).or_default().push(r.txn);
                    read_by.insert(r.txn, Some(*v));
                    let w = self.committed_writer(key, *v);
                    if w != NONE {
                        self.edge(w as usize, r.txn, WR, key);
                    }
                }
                _ => {}
            }
        }
        let writes: Vec<(TxnId, Value)> = self
            .key_writes
            .get(&key)
            .map(|ws| {
                ws.iter()
                    .filter(|&&(_, t, fin)| fin && self.included[t])
                    .map(|&(v, t, _)| (t, v))
                    .collect()
            })
            .unwrap_or_default();
        // Initial state precedes every write.
        for &r in &absent {
            for &(w, _) in &writes {
                self.edge(r, w, RW, key);
            }
        }
        // A transaction that read v1 and then wrote installs its version after v1.
        for &(t, _) in &writes {
            if let Some(Some(v1)) = read_by.get(&t).copied() {
                let w1 = self.committed_writer(key, v1);
                if w1 != NONE {
                    self.edge(w1 as usize, t, WW, key);
                }
                for &r in readers_of.get(&v1).map(Vec::as_slice).unwrap_or(&[]) {
                    self.edge(r, t, RW, key);
                }
            }
        }
        // Strict serializability: a write released before another write was invoked
        // precedes it in the version order.
        if self.opts.realtime {
            let mut released: Vec<(TxnId, Value)> = writes
                .iter()
                .copied()
                .filter(|&(t, _)| self.txn(t).outcome.is_released())
                .collect();
            released.sort_by_key(|&(t, _)| self.txn(t).invoke);
            let times: Vec<(u64, u64)> = released
                .iter()
                .map(|&(t, _)| (self.txn(t).invoke, self.txn(t).complete))
                .collect();
            for (i, (lo, hi)) in rt_windows(&times).into_iter().enumerate() {
                let (w1, v1) = released[i];
                for &(w2, _) in &released[lo..hi] {
                    self.edge(w1, w2, WW_RT, key);
                    for &r in readers_of.get(&v1).map(Vec::as_slice).unwrap_or(&[]) {
                        self.edge(r, w2, RW_RT, key);
                    }
                }
            }
        }
    }

    /// Real-time edges between committed transactions, transitively reduced by a sweep:
    /// each transaction points to those invoked after it completed and before any of them
    /// completed. Unknown transactions never complete.
    fn realtime_edges(&mut self) {
        let mut order: Vec<TxnId> = (0..self.h.len()).filter(|&t| self.included[t]).collect();
        order.sort_by_key(|&t| self.txn(t).invoke);
        let times: Vec<(u64, u64)> = order
            .iter()
            .map(|&t| {
                let txn = self.txn(t);
                let complete = if txn.outcome.is_released() {
                    txn.complete
                } else {
                    u64::MAX
                };
                (txn.invoke, complete)
            })
            .collect();
        for (i, (lo, hi)) in rt_windows(&times).into_iter().enumerate() {
            for j in lo..hi {
                self.edge(order[i], order[j], RT, 0);
            }
        }
    }

    /// Bank: a released audit (no adds) that read every counter key must sum to zero.
    fn bank(&mut self, keys: &[Key]) {
        let counters: FastSet<Key> = keys
            .iter()
            .copied()
            .filter(|k| self.kinds.get(k) == Some(&KeyKind::Counter))
            .collect();
        if counters.is_empty() {
            return;
        }
        for t in self.h.txns() {
            if !t.outcome.is_released() || t.ops.iter().any(|r| matches!(r.op, Op::Add { .. })) {
                continue;
            }
            let mut read: FastMap<Key, Value> = FastMap::default();
            for rec in &t.ops {
                if let (Op::Read { key }, Some(obs)) = (rec.op, rec.observed.as_deref())
                    && counters.contains(&key)
                {
                    read.entry(key)
                        .or_insert_with(|| obs.first().copied().unwrap_or(0));
                }
            }
            if read.len() == counters.len() {
                let total = read.values().fold(0u64, |a, &v| a.wrapping_add(v)) as i64;
                if total != 0 {
                    self.anomalies.push(Anomaly::BankTotal {
                        txn: t.id,
                        accounts: read.len(),
                        total,
                    });
                }
            }
        }
    }

    /// Write-skew pairs: `[r(x), w(y)]` and `[r(y), w(x)]`, both committed, both reads absent.
    fn write_skew(&mut self) {
        let mut pairs: BTreeMap<(Key, Key), Vec<(TxnId, bool)>> = BTreeMap::new();
        for t in self.h.txns().iter().filter(|t| self.included[t.id]) {
            if let [
                OpRecord {
                    op: Op::Read { key: x },
                    observed: Some(obs),
                },
                OpRecord {
                    op: Op::Write { key: y, .. },
                    ..
                },
            ] = t.ops.as_slice()
                && x != y
                && self.kinds.get(x) == Some(&KeyKind::Register)
            {
                pairs
                    .entry((*x, *y))
                    .or_default()
                    .push((t.id, obs.is_empty()));
            }
        }
        for (&(x, y), side_a) in &pairs {
            if x > y {
                continue;
            }
            let Some(side_b) = pairs.get(&(y, x)) else {
                continue;
            };
            for &(a, a_absent) in side_a {
                for &(b, b_absent) in side_b {
                    if a_absent && b_absent {
                        self.anomalies.push(Anomaly::WriteSkew { a, b, x, y });
                    }
                }
            }
        }
    }

    /// One concrete, weakest cycle per strongly connected component.
    fn cycles(&mut self, graph: &Graph) -> usize {
        let (sccs, comp) = graph.sccs();
        let mut search = Searcher::new(graph, &comp, self.opts.search_budget);
        let strict = [(WW, 0u8), (WW | WR, 0), (WW | WR, RW), (WW | WR | RW, 0)];
        let rt_base = WW | WW_RT | RT;
        let relaxed = [
            (rt_base, 0u8),
            (rt_base | WR, 0),
            (rt_base | WR, RW | RW_RT),
            (rt_base | WR | RW | RW_RT, 0),
        ];
        for (c, nodes) in sccs.iter().enumerate() {
            let c = c as u32;
            let found = strict.iter().chain(relaxed.iter()).find_map(|&(base, rw)| {
                if rw == 0 {
                    search.find_cycle(nodes, c, base)
                } else {
                    search.find_single(nodes, c, base, rw)
                }
            });
            if let Some(cycle) = found {
                let cycle = self.describe_cycle(&cycle);
                self.anomalies.push(Anomaly::Cycle(cycle));
            }
        }
        sccs.len()
    }

    fn describe_cycle(&self, edges: &[CycleEdge]) -> Cycle {
        let rw = edges.iter().filter(|e| e.bit & (RW | RW_RT) != 0).count();
        let wr = edges.iter().any(|e| e.bit == WR);
        let realtime = edges.iter().any(|e| e.bit & (RT | WW_RT | RW_RT) != 0);
        let class = match (rw, wr, realtime) {
            (0, false, false) => AnomalyClass::G0,
            (0, true, false) => AnomalyClass::G1c,
            (1, _, false) => AnomalyClass::GSingle,
            (_, _, false) => AnomalyClass::G2,
            (0, false, true) => AnomalyClass::G0Realtime,
            (0, true, true) => AnomalyClass::G1cRealtime,
            (1, _, true) => AnomalyClass::GSingleRealtime,
            (_, _, true) => AnomalyClass::G2Realtime,
        };
        let steps = edges.iter().map(|e| self.describe_edge(e)).collect();
        Cycle { class, steps }
    }

    fn describe_edge(&self, e: &CycleEdge) -> CycleStep {
        let (from, to) = (e.from as usize, e.to as usize);
        let (ft, tt) = (self.txn(from), self.txn(to));
        let key = e.key;
        let show = |v: Option<Value>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
        let (kind, detail) = match e.bit {
            WW | WW_RT => (
                EdgeKind::WriteWrite,
                format!(
                    "k{key}: version {} (T{from}) precedes version {} (T{to})",
                    show(final_write(ft, key)),
                    show(final_write(tt, key))
                ),
            ),
            WR => (
                EdgeKind::WriteRead,
                format!(
                    "k{key}: T{to} read {}, which includes T{from}'s write {}",
                    first_read(tt, key).map_or("?".to_string(), |o| ValuesFmt(o).to_string()),
                    show(final_write(ft, key))
                ),
            ),
            RW | RW_RT => (
                EdgeKind::ReadWrite,
                format!(
                    "k{key}: T{from} read {}; T{to}'s write {} comes later in the version order",
                    first_read(ft, key).map_or("?".to_string(), |o| ValuesFmt(o).to_string()),
                    show(final_write(tt, key))
                ),
            ),
            _ => (
                EdgeKind::Realtime,
                format!(
                    "T{from} completed at t={} before T{to} was invoked at t={}",
                    ft.complete, tt.invoke
                ),
            ),
        };
        CycleStep {
            from,
            to,
            kind,
            realtime_inferred: e.bit & (WW_RT | RW_RT) != 0,
            key: (kind != EdgeKind::Realtime).then_some(key),
            detail,
        }
    }

    fn finish(mut self, edges: usize, cyclic_components: usize) -> Report {
        self.anomalies.sort_by_key(Anomaly::class);
        let txns = self.h.txns();
        let mut stats = Stats {
            txns: txns.len(),
            keys: self.kinds.len(),
            edges,
            cyclic_components,
            ..Stats::default()
        };
        for t in txns {
            match t.outcome {
                Outcome::Released => stats.released += 1,
                Outcome::Aborted(_) => stats.aborted += 1,
                Outcome::Unknown => {
                    stats.unknown += 1;
                    if self.included[t.id] {
                        stats.unknown_included += 1;
                    }
                }
            }
        }
        let mut txn_descriptions = BTreeMap::new();
        let mut shown: BTreeMap<AnomalyClass, usize> = BTreeMap::new();
        for a in &self.anomalies {
            let n = shown.entry(a.class()).or_insert(0);
            *n += 1;
            if *n <= self.opts.display_limit {
                for t in a.txns() {
                    txn_descriptions
                        .entry(t)
                        .or_insert_with(|| txns[t].to_string());
                }
            }
        }
        Report {
            anomalies: self.anomalies,
            stats,
            notes: self.notes,
            display_limit: self.opts.display_limit,
            txn_descriptions,
        }
    }
}

/// The last value `t` wrote or appended to `key`.
fn final_write(t: &Txn, key: Key) -> Option<Value> {
    t.ops.iter().rev().find_map(|r| match r.op {
        Op::Write { key: k, value } | Op::Append { key: k, value } if k == key => Some(value),
        _ => None,
    })
}

/// What `t` first observed for `key`.
fn first_read(t: &Txn, key: Key) -> Option<&[Value]> {
    t.ops.iter().find_map(|r| match r.op {
        Op::Read { key: k } if k == key => r.observed.as_deref(),
        _ => None,
    })
}

/// For intervals sorted by invocation, each interval's minimal real-time successors as a
/// range `lo..hi` of indices: those invoked after it completed and no later than the first
/// completion among them (every later successor is reachable through one of these).
fn rt_windows(times: &[(u64, u64)]) -> Vec<(usize, usize)> {
    let n = times.len();
    let mut suffix_min = vec![u64::MAX; n + 1];
    for i in (0..n).rev() {
        suffix_min[i] = suffix_min[i + 1].min(times[i].1);
    }
    times
        .iter()
        .map(|&(_, complete)| {
            if complete == u64::MAX {
                return (n, n);
            }
            let lo = times.partition_point(|&(inv, _)| inv <= complete);
            let bound = suffix_min[lo];
            let hi = times.partition_point(|&(inv, _)| inv <= bound).max(lo);
            (lo, hi)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::rt_windows;

    #[test]
    fn rt_windows_are_minimal_successors() {
        // a [1,2], b [3,6], c [4,5], d [7,8]: a -> b, c; c -> d; b -> d.
        let w = rt_windows(&[(1, 2), (3, 6), (4, 5), (7, 8)]);
        assert_eq!(w, vec![(1, 3), (3, 4), (3, 4), (4, 4)]);
        // An interval that never completes has no successors.
        assert_eq!(rt_windows(&[(1, u64::MAX), (5, 6)]), vec![(2, 2), (2, 2)]);
    }
}
