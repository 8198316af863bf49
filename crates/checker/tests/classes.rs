//! Hand-made histories: one per anomaly class, and valid ones that must report nothing.

use std::collections::BTreeMap;

use mako_checker::{
    Anomaly, AnomalyClass, CheckOptions, EdgeKind, History, HistoryBuilder, Report, check,
    check_with,
};

fn classes(r: &Report) -> BTreeMap<AnomalyClass, usize> {
    r.classes()
}

fn only(r: &Report, class: AnomalyClass) {
    assert_eq!(
        classes(r).keys().copied().collect::<Vec<_>>(),
        vec![class],
        "expected only {class}, got:\n{r}"
    );
}

fn cycle_of(r: &Report, class: AnomalyClass) -> &mako_checker::Cycle {
    r.anomalies
        .iter()
        .find_map(|a| match a {
            Anomaly::Cycle(c) if c.class == class => Some(c),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {class} cycle in:\n{r}"))
}

fn no_realtime() -> CheckOptions {
    CheckOptions {
        realtime: false,
        ..CheckOptions::default()
    }
}

#[test]
fn g0_write_cycle_on_lists() {
    let mut h = HistoryBuilder::new();
    let t1 = h.txn(0).at(1, 10).append(1, 11).append(2, 12).released();
    let t2 = h.txn(1).at(2, 9).append(1, 21).append(2, 22).released();
    h.txn(2)
        .at(11, 12)
        .read(1, &[11, 21])
        .read(2, &[22, 12])
        .released();
    let r = check(&h.build());
    only(&r, AnomalyClass::G0);
    let c = cycle_of(&r, AnomalyClass::G0);
    assert_eq!(c.steps.len(), 2);
    assert!(c.steps.iter().all(|s| s.kind == EdgeKind::WriteWrite));
    let mut members: Vec<_> = c.steps.iter().map(|s| s.from).collect();
    members.sort();
    assert_eq!(members, vec![t1, t2]);
    let text = r.to_string();
    assert!(
        text.contains("G0") && text.contains(&format!("T{t1} -ww-> T{t2}")),
        "{text}"
    );
}

#[test]
fn g1a_aborted_read() {
    let mut h = HistoryBuilder::new();
    let w = h.txn(0).append(1, 5).aborted("conflict");
    let r1 = h.txn(1).read(1, &[5]).released();
    let rw = h.txn(0).write(2, 7).aborted("conflict");
    let r2 = h.txn(1).read(2, &[7]).released();
    let r = check(&h.build());
    only(&r, AnomalyClass::G1a);
    assert!(r.anomalies.contains(&Anomaly::AbortedRead {
        reader: r1,
        writer: w,
        key: 1,
        value: 5
    }));
    assert!(r.anomalies.contains(&Anomaly::AbortedRead {
        reader: r2,
        writer: rw,
        key: 2,
        value: 7
    }));
}

#[test]
fn g1b_intermediate_read() {
    let mut h = HistoryBuilder::new();
    let w = h.txn(0).at(1, 5).write(1, 1).write(1, 2).released();
    let rd = h.txn(1).at(2, 6).read(1, &[1]).released();
    let wl = h.txn(0).at(7, 9).append(2, 3).append(2, 4).released();
    let rl = h.txn(1).at(8, 10).read(2, &[3]).released();
    let r = check(&h.build());
    only(&r, AnomalyClass::G1b);
    assert!(r.anomalies.contains(&Anomaly::IntermediateRead {
        reader: rd,
        writer: w,
        key: 1,
        value: 1,
        final_value: 2
    }));
    assert!(r.anomalies.contains(&Anomaly::IntermediateRead {
        reader: rl,
        writer: wl,
        key: 2,
        value: 3,
        final_value: 4
    }));
}

#[test]
fn g1c_circular_information_flow() {
    let mut h = HistoryBuilder::new();
    h.txn(0).at(1, 10).write(1, 1).read(2, &[2]).released();
    h.txn(1).at(2, 9).write(2, 2).read(1, &[1]).released();
    let r = check(&h.build());
    only(&r, AnomalyClass::G1c);
    let c = cycle_of(&r, AnomalyClass::G1c);
    assert!(c.steps.iter().all(|s| s.kind == EdgeKind::WriteRead));
}

#[test]
fn g_single_lost_update_on_a_list() {
    let mut h = HistoryBuilder::new();
    h.txn(0).at(1, 10).read(1, &[]).append(1, 1).released();
    h.txn(1).at(2, 9).read(1, &[]).append(1, 2).released();
    h.txn(2).at(11, 12).read(1, &[1, 2]).released();
    let r = check(&h.build());
    only(&r, AnomalyClass::GSingle);
    let c = cycle_of(&r, AnomalyClass::GSingle);
    let kinds: Vec<_> = c.steps.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == EdgeKind::ReadWrite).count(),
        1
    );
    assert!(kinds.contains(&EdgeKind::WriteWrite));
}

#[test]
fn g_single_read_skew_on_registers() {
    let mut h = HistoryBuilder::new();
    h.txn(0).at(1, 2).write(1, 10).write(2, 20).released();
    // T1 reads x before T2's write and y after it.
    h.txn(1).at(3, 10).read(1, &[10]).read(2, &[21]).released();
    h.txn(2)
        .at(4, 9)
        .read(1, &[10])
        .write(1, 11)
        .read(2, &[20])
        .write(2, 21)
        .released();
    let r = check_with(&h.build(), &no_realtime());
    only(&r, AnomalyClass::GSingle);
}

#[test]
fn g2_write_skew_on_registers() {
    let mut h = HistoryBuilder::new();
    let a = h.txn(0).at(1, 10).read(1, &[]).write(2, 100).released();
    let b = h.txn(1).at(2, 9).read(2, &[]).write(1, 200).released();
    let r = check(&h.build());
    assert_eq!(
        classes(&r).keys().copied().collect::<Vec<_>>(),
        vec![AnomalyClass::G2, AnomalyClass::WriteSkew],
        "{r}"
    );
    let c = cycle_of(&r, AnomalyClass::G2);
    assert!(c.steps.iter().all(|s| s.kind == EdgeKind::ReadWrite));
    assert!(
        r.anomalies
            .contains(&Anomaly::WriteSkew { a, b, x: 1, y: 2 })
    );
}

#[test]
fn g2_on_lists() {
    let mut h = HistoryBuilder::new();
    h.txn(0).at(1, 10).read(1, &[]).append(2, 1).released();
    h.txn(1).at(2, 9).read(2, &[]).append(1, 2).released();
    h.txn(2).at(11, 12).read(1, &[2]).read(2, &[1]).released();
    let r = check(&h.build());
    only(&r, AnomalyClass::G2);
}

#[test]
fn lost_released_write() {
    let mut h = HistoryBuilder::new();
    let w = h.txn(0).at(1, 2).append(1, 7).released();
    h.txn(0).at(3, 4).append(1, 8).released();
    let rd = h.txn(1).at(5, 6).read(1, &[8]).released();
    let r = check(&h.build());
    only(&r, AnomalyClass::LostWrite);
    assert_eq!(
        r.anomalies,
        vec![Anomaly::LostWrite {
            writer: w,
            key: 1,
            value: 7,
            reader: rd
        }]
    );
    // Without a read after the release nothing can be said.
    let mut h = HistoryBuilder::new();
    h.txn(0).at(1, 5).append(1, 7).released();
    h.txn(1).at(2, 6).read(1, &[]).released();
    assert!(check(&h.build()).is_valid());
}

#[test]
fn realtime_violation_stale_list_read() {
    let mut h = HistoryBuilder::new();
    h.txn(0).at(1, 2).append(1, 1).released();
    h.txn(1).at(3, 4).read(1, &[]).released();
    h.txn(2).at(5, 6).read(1, &[1]).released();
    let history = h.build();
    let r = check(&history);
    only(&r, AnomalyClass::GSingleRealtime);
    let c = cycle_of(&r, AnomalyClass::GSingleRealtime);
    assert!(c.steps.iter().any(|s| s.kind == EdgeKind::Realtime));
    // Serializable but not strictly serializable.
    assert!(check_with(&history, &no_realtime()).is_valid());
}

#[test]
fn realtime_violation_stale_register_read() {
    let mut h = HistoryBuilder::new();
    h.txn(0).at(1, 2).write(1, 1).released();
    h.txn(1).at(3, 4).write(1, 2).released();
    h.txn(2).at(5, 6).read(1, &[1]).released();
    let history = h.build();
    let r = check(&history);
    only(&r, AnomalyClass::GSingleRealtime);
    let c = cycle_of(&r, AnomalyClass::GSingleRealtime);
    assert!(c.steps.iter().any(|s| s.realtime_inferred));
    assert!(check_with(&history, &no_realtime()).is_valid());
}

#[test]
fn garbage_duplicate_incompatible_internal() {
    let mut h = HistoryBuilder::new();
    h.txn(0).append(1, 1).append(2, 2).released();
    h.txn(0).append(1, 3).released();
    h.txn(1).read(1, &[1, 99]).released();
    h.txn(1).read(2, &[2, 2]).released();
    h.txn(1).read(1, &[3, 1]).released();
    h.txn(1).read(1, &[1, 3]).released();
    h.txn(2).append(3, 5).read(3, &[]).released();
    h.txn(2).write(4, 6).read(4, &[]).released();
    let r = check(&h.build());
    for class in [
        AnomalyClass::GarbageRead,
        AnomalyClass::DuplicateElements,
        AnomalyClass::IncompatibleOrder,
        AnomalyClass::Internal,
    ] {
        assert!(r.has(class), "no {class} in:\n{r}");
    }
    assert_eq!(
        r.anomalies
            .iter()
            .filter(|a| a.class() == AnomalyClass::Internal)
            .count(),
        2,
        "{r}"
    );
}

#[test]
fn bank_total() {
    let minus5 = (-5i64) as u64;
    let mut h = HistoryBuilder::new();
    h.txn(0).add(1, -5, None).add(2, 5, None).released();
    h.txn(1).read(1, &[minus5]).read(2, &[5]).released();
    assert!(check(&h.build()).is_valid());
    let mut h = HistoryBuilder::new();
    h.txn(0).add(1, -5, None).add(2, 5, None).released();
    let audit = h.txn(1).read(1, &[minus5]).read(2, &[]).released();
    let r = check(&h.build());
    only(&r, AnomalyClass::BankTotal);
    assert_eq!(
        r.anomalies,
        vec![Anomaly::BankTotal {
            txn: audit,
            accounts: 2,
            total: -5
        }]
    );
}

fn valid(h: History) {
    let r = check(&h);
    assert!(r.is_valid(), "{r}");
    assert!(r.to_string().contains("no anomalies"));
}

#[test]
fn serial_histories_are_valid() {
    let mut h = HistoryBuilder::new();
    h.txn(0).read(1, &[]).append(1, 1).append(2, 2).released();
    h.txn(1).read(1, &[1]).append(1, 3).read(2, &[2]).released();
    h.txn(0)
        .read(1, &[1, 3])
        .read(2, &[2])
        .append(2, 4)
        .read(2, &[2, 4])
        .released();
    h.txn(1).read(3, &[]).write(3, 10).read(3, &[10]).released();
    h.txn(0).read(3, &[10]).write(3, 11).released();
    h.txn(1).read(3, &[11]).read(4, &[]).released();
    valid(h.build());
}

#[test]
fn concurrent_serializable_histories_are_valid() {
    let mut h = HistoryBuilder::new();
    // T0 is long; T1 runs inside it and is serialized before it.
    h.txn(0).at(1, 10).read(1, &[1]).append(1, 2).released();
    h.txn(1).at(0, 0).append(1, 1).released();
    h.txn(2).at(2, 5).read(1, &[1]).released();
    h.txn(3).at(3, 12).read(1, &[1, 2]).write(5, 50).released();
    h.txn(2).at(6, 7).read(5, &[]).released();
    h.txn(2)
        .at(13, 14)
        .read(5, &[50])
        .read(1, &[1, 2])
        .released();
    valid(h.build());
}

#[test]
fn unknown_and_aborted_transactions() {
    // Observed unknown writes are included; unobserved ones and aborted ones are ignored.
    let mut h = HistoryBuilder::new();
    h.txn(0).append(1, 1).unknown();
    h.txn(0).append(1, 2).unknown();
    h.txn(0).append(1, 3).aborted("conflict");
    h.txn(1).read(1, &[1]).released();
    let history = h.build();
    let r = check(&history);
    assert!(r.is_valid(), "{r}");
    assert_eq!(r.stats.unknown, 2);
    assert_eq!(r.stats.unknown_included, 1);
    // An included unknown transaction takes part in cycles.
    let mut h = HistoryBuilder::new();
    h.txn(0).at(1, 10).read(1, &[]).append(1, 1).unknown();
    h.txn(1).at(2, 9).read(1, &[]).append(1, 2).released();
    h.txn(2).at(11, 12).read(1, &[1, 2]).released();
    only(&check(&h.build()), AnomalyClass::GSingle);
}

#[test]
fn a_write_seen_only_by_an_incompatible_read_is_not_lost() {
    let mut h = HistoryBuilder::new();
    h.txn(0).append(1, 1).released();
    h.txn(0).append(1, 2).released();
    h.txn(0).append(1, 3).released();
    h.txn(1).read(1, &[2]).released();
    h.txn(1).read(1, &[1, 3]).released();
    let r = check(&h.build());
    assert!(r.has(AnomalyClass::IncompatibleOrder), "{r}");
    assert!(!r.has(AnomalyClass::LostWrite), "{r}");
}
