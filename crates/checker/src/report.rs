//! What the checker found: anomaly classes, anomalies with their evidence, and a readable report.

use std::collections::BTreeMap;
use std::fmt;

use crate::history::{Key, TxnId, Value, ValuesFmt};

/// The class of an anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyClass {
    /// Cycle of write-write edges only.
    G0,
    /// Aborted read: a committed transaction observed a write of an aborted one.
    G1a,
    /// Intermediate read: a committed transaction observed a non-final write of another.
    G1b,
    /// Cycle of write-write and write-read edges (at least one write-read).
    G1c,
    /// Cycle with exactly one read-write anti-dependency.
    GSingle,
    /// Cycle with two or more read-write anti-dependencies.
    G2,
    /// G0 that needs real-time edges (violates strict serializability only).
    G0Realtime,
    /// G1c that needs real-time edges.
    G1cRealtime,
    /// G-single that needs real-time edges (e.g. a stale read).
    GSingleRealtime,
    /// G2 that needs real-time edges.
    G2Realtime,
    /// A released write missing from a read that began after its release, and from every read.
    LostWrite,
    /// Two reads of one list that are not prefixes of one another.
    IncompatibleOrder,
    /// A read observed a value no transaction wrote.
    GarbageRead,
    /// A list read contains one element twice.
    DuplicateElements,
    /// A read contradicts the transaction's own earlier reads or writes of that key.
    Internal,
    /// A bank audit found a total different from zero.
    BankTotal,
    /// Both halves of a write-skew pair committed while each saw the other's key unwritten.
    WriteSkew,
}

impl AnomalyClass {
    /// Short name, as in the literature (`G-single`, `G1a`, ...) or kebab-case.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyClass::G0 => "G0",
            AnomalyClass::G1a => "G1a",
            AnomalyClass::G1b => "G1b",
            AnomalyClass::G1c => "G1c",
            AnomalyClass::GSingle => "G-single",
            AnomalyClass::G2 => "G2",
            AnomalyClass::G0Realtime => "G0-realtime",
            AnomalyClass::G1cRealtime => "G1c-realtime",
            AnomalyClass::GSingleRealtime => "G-single-realtime",
            AnomalyClass::G2Realtime => "G2-realtime",
            AnomalyClass::LostWrite => "lost-write",
            AnomalyClass::IncompatibleOrder => "incompatible-order",
            AnomalyClass::GarbageRead => "garbage-read",
            AnomalyClass::DuplicateElements => "duplicate-elements",
            AnomalyClass::Internal => "internal",
            AnomalyClass::BankTotal => "bank-total",
            AnomalyClass::WriteSkew => "write-skew",
        }
    }

    /// True for the cycle classes that need real-time edges: the history may be
    /// serializable but is not strictly serializable.
    pub fn is_realtime_only(self) -> bool {
        matches!(
            self,
            AnomalyClass::G0Realtime
                | AnomalyClass::G1cRealtime
                | AnomalyClass::GSingleRealtime
                | AnomalyClass::G2Realtime
        )
    }
}

impl fmt::Display for AnomalyClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kind of a dependency edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// `from` installed a version that `to` overwrote.
    WriteWrite,
    /// `to` read a version `from` installed.
    WriteRead,
    /// `from` read a version that `to` overwrote (anti-dependency).
    ReadWrite,
    /// `from` completed before `to` was invoked.
    Realtime,
}

impl EdgeKind {
    /// `ww`, `wr`, `rw` or `rt`.
    pub fn name(self) -> &'static str {
        match self {
            EdgeKind::WriteWrite => "ww",
            EdgeKind::WriteRead => "wr",
            EdgeKind::ReadWrite => "rw",
            EdgeKind::Realtime => "rt",
        }
    }
}

/// One edge of a reported cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CycleStep {
    /// The earlier transaction.
    pub from: TxnId,
    /// The later transaction.
    pub to: TxnId,
    /// Why `from` must precede `to`.
    pub kind: EdgeKind,
    /// For ww/rw: the version order on the key was inferred from real time.
    pub realtime_inferred: bool,
    /// The key of the dependency (`None` for real-time edges).
    pub key: Option<Key>,
    /// The evidence, in words.
    pub detail: String,
}

/// A dependency cycle: no serial order of the transactions can exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle {
    /// G0, G1c, G-single, G2, or a `-realtime` variant.
    pub class: AnomalyClass,
    /// The edges; each step's `to` is the next step's `from`, the last returns to the first.
    pub steps: Vec<CycleStep>,
}

/// One anomaly and its evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// A dependency cycle.
    Cycle(Cycle),
    /// G1a: `reader` observed `value` of `key`, written by the aborted `writer`.
    AbortedRead {
        /// The committed reader.
        reader: TxnId,
        /// The aborted writer.
        writer: TxnId,
        /// The key.
        key: Key,
        /// The value.
        value: Value,
    },
    /// G1b: `reader` observed `value`, which `writer` later overwrote within itself.
    IntermediateRead {
        /// The reader.
        reader: TxnId,
        /// The writer.
        writer: TxnId,
        /// The key.
        key: Key,
        /// The intermediate value observed.
        value: Value,
        /// The writer's final value for the key.
        final_value: Value,
    },
    /// A released append no read ever observed, although `reader` read the key after the
    /// append was released.
    LostWrite {
        /// The released writer.
        writer: TxnId,
        /// The list.
        key: Key,
        /// The lost element.
        value: Value,
        /// A reader invoked after the writer completed that did not see it.
        reader: TxnId,
    },
    /// `reader`'s list differs at `index` from the longest list `other` read.
    IncompatibleOrder {
        /// The list.
        key: Key,
        /// The reader whose list is not a prefix.
        reader: TxnId,
        /// The reader of the longest list.
        other: TxnId,
        /// First differing position.
        index: usize,
        /// What `reader` saw there.
        found: Value,
        /// What `other` saw there.
        expected: Value,
    },
    /// `reader` observed `value`, which nobody wrote to `key`.
    GarbageRead {
        /// The reader.
        reader: TxnId,
        /// The key.
        key: Key,
        /// The value.
        value: Value,
    },
    /// `reader`'s list contains `value` more than once.
    DuplicateElements {
        /// The reader.
        reader: TxnId,
        /// The list.
        key: Key,
        /// The repeated element.
        value: Value,
    },
    /// A read of `txn` contradicts its own earlier operations on `key`.
    Internal {
        /// The transaction.
        txn: TxnId,
        /// The key.
        key: Key,
        /// What its own operations imply (the whole value, or a required suffix).
        expected: Vec<Value>,
        /// Whether `expected` is only a required suffix of the list.
        expected_suffix: bool,
        /// What it observed.
        observed: Vec<Value>,
    },
    /// A released audit read every account and the balances do not sum to zero.
    BankTotal {
        /// The audit.
        txn: TxnId,
        /// Accounts read.
        accounts: usize,
        /// The sum found (wrapping, as i64).
        total: i64,
    },
    /// `a` read `x` absent and wrote `y`; `b` read `y` absent and wrote `x`; both committed.
    WriteSkew {
        /// One half.
        a: TxnId,
        /// The other half.
        b: TxnId,
        /// The key `a` read and `b` wrote.
        x: Key,
        /// The key `b` read and `a` wrote.
        y: Key,
    },
}

impl Anomaly {
    /// The class.
    pub fn class(&self) -> AnomalyClass {
        match self {
            Anomaly::Cycle(c) => c.class,
            Anomaly::AbortedRead { .. } => AnomalyClass::G1a,
            Anomaly::IntermediateRead { .. } => AnomalyClass::G1b,
            Anomaly::LostWrite { .. } => AnomalyClass::LostWrite,
            Anomaly::IncompatibleOrder { .. } => AnomalyClass::IncompatibleOrder,
            Anomaly::GarbageRead { .. } => AnomalyClass::GarbageRead,
            Anomaly::DuplicateElements { .. } => AnomalyClass::DuplicateElements,
            Anomaly::Internal { .. } => AnomalyClass::Internal,
            Anomaly::BankTotal { .. } => AnomalyClass::BankTotal,
            Anomaly::WriteSkew { .. } => AnomalyClass::WriteSkew,
        }
    }

    /// The transactions named in the evidence.
    pub fn txns(&self) -> Vec<TxnId> {
        match self {
            Anomaly::Cycle(c) => c.steps.iter().map(|s| s.from).collect(),
            Anomaly::AbortedRead { reader, writer, .. }
            | Anomaly::IntermediateRead { reader, writer, .. }
            | Anomaly::LostWrite { writer, reader, .. } => vec![*writer, *reader],
            Anomaly::IncompatibleOrder { reader, other, .. } => vec![*reader, *other],
            Anomaly::GarbageRead { reader, .. } | Anomaly::DuplicateElements { reader, .. } => {
                vec![*reader]
            }
            Anomaly::Internal { txn, .. } | Anomaly::BankTotal { txn, .. } => vec![*txn],
            Anomaly::WriteSkew { a, b, .. } => vec![*a, *b],
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = self.class();
        match self {
            Anomaly::Cycle(c) => {
                write!(f, "{class}: cycle of {} transactions:", c.steps.len())?;
                for s in &c.steps {
                    let rt = if s.realtime_inferred { "(rt)" } else { "" };
                    write!(
                        f,
                        "\n    T{} -{}{}-> T{}: {}",
                        s.from,
                        s.kind.name(),
                        rt,
                        s.to,
                        s.detail
                    )?;
                }
                Ok(())
            }
            Anomaly::AbortedRead {
                reader,
                writer,
                key,
                value,
            } => write!(
                f,
                "{class}: T{reader} read {value} from k{key}, written by aborted T{writer}"
            ),
            Anomaly::IntermediateRead {
                reader,
                writer,
                key,
                value,
                final_value,
            } => write!(
                f,
                "{class}: T{reader} read {value} from k{key}, an intermediate write of T{writer} \
                 (its final write is {final_value})"
            ),
            Anomaly::LostWrite {
                writer,
                key,
                value,
                reader,
            } => write!(
                f,
                "{class}: released T{writer} appended {value} to k{key}; no read ever saw it, \
                 although T{reader} read k{key} after T{writer} was released"
            ),
            Anomaly::IncompatibleOrder {
                key,
                reader,
                other,
                index,
                found,
                expected,
            } => write!(
                f,
                "{class}: k{key}: T{reader}'s list has {found} at position {index}, \
                 T{other}'s longer list has {expected}: no single version order"
            ),
            Anomaly::GarbageRead { reader, key, value } => write!(
                f,
                "{class}: T{reader} read {value} from k{key}, which no transaction wrote"
            ),
            Anomaly::DuplicateElements { reader, key, value } => write!(
                f,
                "{class}: T{reader}'s list k{key} contains {value} more than once"
            ),
            Anomaly::Internal {
                txn,
                key,
                expected,
                expected_suffix,
                observed,
            } => write!(
                f,
                "{class}: T{txn} read k{key} = {}, but its own earlier operations imply {}{}",
                ValuesFmt(observed),
                if *expected_suffix {
                    "a list ending in "
                } else {
                    ""
                },
                ValuesFmt(expected)
            ),
            Anomaly::BankTotal {
                txn,
                accounts,
                total,
            } => write!(
                f,
                "{class}: audit T{txn} read all {accounts} accounts and found total {total} (expected 0)"
            ),
            Anomaly::WriteSkew { a, b, x, y } => write!(
                f,
                "{class}: T{a} read k{x} unwritten and wrote k{y}; T{b} read k{y} unwritten and \
                 wrote k{x}; both committed, so each missed the other"
            ),
        }
    }
}

/// Counters of what was checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Transactions in the history.
    pub txns: usize,
    /// Released transactions.
    pub released: usize,
    /// Aborted transactions.
    pub aborted: usize,
    /// Transactions with unknown outcome.
    pub unknown: usize,
    /// Unknown transactions treated as committed because a read observed their writes.
    pub unknown_included: usize,
    /// Keys written (lists, registers, counters).
    pub keys: usize,
    /// Dependency edges (ww, wr, rw, real-time) in the graph.
    pub edges: usize,
    /// Strongly connected components with more than one transaction.
    pub cyclic_components: usize,
}

/// The result of [`crate::check`].
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Every anomaly found, grouped by class in [`AnomalyClass`] order.
    pub anomalies: Vec<Anomaly>,
    /// Counters.
    pub stats: Stats,
    /// Problems of the history itself (e.g. one value written twice), not of the database.
    pub notes: Vec<String>,
    /// `Display` shows at most this many anomalies per class.
    pub display_limit: usize,
    /// Descriptions of the transactions named by the anomalies `Display` shows.
    pub txn_descriptions: BTreeMap<TxnId, String>,
}

impl Report {
    /// True if no anomaly was found.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// Number of anomalies per class.
    pub fn classes(&self) -> BTreeMap<AnomalyClass, usize> {
        let mut out = BTreeMap::new();
        for a in &self.anomalies {
            *out.entry(a.class()).or_insert(0) += 1;
        }
        out
    }

    /// True if an anomaly of `class` was found.
    pub fn has(&self, class: AnomalyClass) -> bool {
        self.anomalies.iter().any(|a| a.class() == class)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "checked {} transactions ({} released, {} aborted, {} unknown of which {} observed), \
             {} keys, {} edges: ",
            s.txns, s.released, s.aborted, s.unknown, s.unknown_included, s.keys, s.edges
        )?;
        if self.is_valid() {
            f.write_str("no anomalies")?;
        } else {
            write!(f, "{} anomalies (", self.anomalies.len())?;
            for (i, (class, n)) in self.classes().iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{class}: {n}")?;
            }
            f.write_str(")")?;
            let mut shown: BTreeMap<AnomalyClass, usize> = BTreeMap::new();
            for a in &self.anomalies {
                let n = shown.entry(a.class()).or_insert(0);
                *n += 1;
                if *n <= self.display_limit {
                    write!(f, "\n  {a}")?;
                } else if *n == self.display_limit + 1 {
                    write!(f, "\n  ... more {} anomalies not shown", a.class())?;
                }
            }
            if !self.txn_descriptions.is_empty() {
                f.write_str("\ntransactions:")?;
                for d in self.txn_descriptions.values() {
                    write!(f, "\n  {d}")?;
                }
            }
        }
        for n in &self.notes {
            write!(f, "\nnote: {n}")?;
        }
        Ok(())
    }
}
