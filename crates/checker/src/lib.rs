//! A history checker for transactional stores: record what concurrent clients did, then
//! look for the anomalies that (strict) serializability forbids.
//!
//! The crate has no dependency on the rest of mako: a driver maps its abstract operations
//! onto a database by implementing [`TxnExecutor`].
//!
//! # 1. Record
//!
//! A [`Workload`] generates transactions whose anomalies are visible, because every written
//! value is unique:
//!
//! * **list-append** ([`WorkloadKind::ListAppend`]): appends to some keys, whole-list reads
//!   of others; a read reveals the version order of its key (list prefixes).
//! * **registers**: reads, writes, and read-then-write of registers with unique values.
//! * **bank**: transfers (two counter [`Op::Add`]s) and audits that read every account; the
//!   balances, all starting absent (0), must sum to 0.
//! * **write-skew**: pairs on fresh keys, A reads x and writes y, B reads y and writes x;
//!   in a serializable store at most one of them reads its key unwritten.
//!
//! Keys are chosen uniformly or with hot keys ([`KeyDist`]). [`run_workload`] runs client
//! threads, each with its own executor, and records a [`History`]; the logical clock of the
//! [`Recorder`] orders every invocation and completion exactly. Drivers with their own
//! client loops use [`Recorder`] and [`ClientRecorder`] directly, and [`HistoryBuilder`]
//! writes histories by hand.
//!
//! # 2. Check
//!
//! [`check`] treats released transactions as committed, aborted ones as never visible, and
//! unknown ones as committed exactly when a read observed one of their writes. It infers
//! each key's version order (lists: the longest read, every read must be a prefix;
//! registers: the initial state, read-then-write, and the real-time order of released
//! writes), builds write-write, write-read and read-write edges plus real-time edges
//! (released before invoked), and reports one concrete cycle per strongly connected
//! component, classified G0, G1c, G-single or G2 (with a `-realtime` suffix when only
//! real-time order closes it: a violation of strict, not plain, serializability). It also
//! reports G1a (aborted read), G1b (intermediate read), lost released writes, garbage and
//! duplicate values, reads that contradict their own transaction, incompatible list orders,
//! bank totals and write skew.
//!
//! # 3. Read the report
//!
//! [`Report::is_valid`] says whether anything was found; [`Report::anomalies`] holds the
//! evidence, and `Display` prints a summary, up to [`CheckOptions::display_limit`] anomalies
//! per class, and the transactions they name.
//!
//! ```
//! use mako_checker::{
//!     check, run_workload, AnomalyClass, HistoryBuilder, MemExecutor, MemStore, RunConfig,
//!     Workload, WorkloadConfig, WorkloadKind,
//! };
//!
//! // A correct store: the in-memory executor runs each transaction under one lock.
//! let store = MemStore::default();
//! let workload = Workload::new(WorkloadConfig::new(WorkloadKind::ListAppend));
//! let history = run_workload(&workload, &RunConfig::for_txns(4, 200, 7), |_client| {
//!     MemExecutor::new(store.clone())
//! });
//! let report = check(&history);
//! assert!(report.is_valid(), "{report}");
//!
//! // A lost update, written by hand: both read k1 empty, both appended, one append is
//! // missing from the final read.
//! let mut h = HistoryBuilder::new();
//! h.txn(0).at(1, 4).read(1, &[]).append(1, 10).released();
//! h.txn(1).at(2, 5).read(1, &[]).append(1, 20).released();
//! h.txn(2).at(6, 7).read(1, &[20]).released();
//! let report = check(&h.build());
//! assert!(report.has(AnomalyClass::LostWrite));
//! println!("{report}");
//! ```

#![warn(missing_docs)]

mod check;
mod codec;
mod graph;
mod history;
mod report;
mod workload;

pub use check::{CheckOptions, check, check_with};
pub use codec::{CodecError, GARBAGE, append_value, decode_values, encode_key, encode_values};
pub use history::{
    ClientRecorder, History, HistoryBuilder, Invocation, Key, Op, OpRecord, Outcome, Recorder, Txn,
    TxnBuilder, TxnId, Value,
};
pub use report::{Anomaly, AnomalyClass, Cycle, CycleStep, EdgeKind, Report, Stats};
pub use workload::{
    ClientGen, ExecResult, KeyDist, MemExecutor, MemStore, RunConfig, TxnExecutor, UnknownWorkload,
    Workload, WorkloadConfig, WorkloadKind, apply_ops, run_workload,
};
