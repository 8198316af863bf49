//! End-to-end tests of the TPC-C crate at a small scale: loader, transactions, driver, consistency.

use std::time::Duration;

use bytes::Bytes;
use mako_storage::Stamp;
use mako_tpcc::random::{NuRandC, last_name};
use mako_tpcc::schema::{
    CustomerNameRow, CustomerRow, DistrictRow, OrderRow, Row, StockRow, Tables, Text, WarehouseRow,
    customer_key, customer_name_key, district_key, order_key, stock_key, warehouse_key,
};
use mako_tpcc::{
    CustomerSel, DISTRICTS, Db, DeliveryInput, INITIAL_W_YTD, NewOrderInput, OrderLineInput,
    OrderStatusInput, PaymentInput, Scale, Terminal, TpccConfig, TxnError, TxnInput, TxnKind,
    Violation, check_consistency, delivery, new_order, order_status, payment, run, run_on,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;

const SMALL: Scale = Scale {
    items: 1_000,
    customers_per_district: 30,
    orders_per_district: 30,
};

fn small(warehouses: u32, threads: usize) -> TpccConfig {
    TpccConfig {
        warehouses,
        threads,
        scale: SMALL,
        duration: Duration::from_millis(1500),
        ..TpccConfig::default()
    }
}

/// Rows of a table: its indexed keys.
fn rows(t: &mako_storage::Table) -> usize {
    t.len()
}

fn tables(db: &Db) -> &Tables {
    db.tables(0).expect("shard 0 exists")
}

#[test]
fn short_multithreaded_run_is_consistent() {
    let cfg = small(2, 2);
    let db = Db::load(&cfg, |_| {}).unwrap();
    let report = run_on(&db, &cfg, |_| {}).unwrap();
    for kind in TxnKind::ALL {
        let s = report.stats(kind).unwrap();
        assert!(
            s.committed >= 10,
            "too few {} committed: {s:?}",
            kind.name()
        );
        assert!(s.p50_us > 0.0 && s.p50_us <= s.p99_us && s.p99_us <= s.p999_us);
        if kind != TxnKind::NewOrder {
            assert_eq!(s.user_rollbacks, 0);
        }
    }
    let no = report.stats(TxnKind::NewOrder).unwrap();
    // About 1% of NewOrders roll back.
    let attempts = no.committed + no.user_rollbacks;
    assert!(no.user_rollbacks > 0 || attempts < 500, "{no:?}");
    assert!(no.user_rollbacks * 20 < attempts.max(1), "{no:?}");
    assert!(report.tpmc > 0.0 && report.txn_per_sec > 0.0);
    let store = db.shard(0).unwrap().store();
    let c = check_consistency(store, 1..=2).unwrap_or_else(|v| panic!("{v:#?}"));
    assert_eq!(c.warehouses, 2);
    assert_eq!(c.districts, 20);
    assert_eq!(c.orders, 2 * 10 * 30 + no.committed);
    // Payments moved money: W_YTD grew past its initial value.
    let w1 = WarehouseRow::decode(&tables(&db).warehouse.get(&warehouse_key(1)).unwrap()).unwrap();
    assert!(w1.ytd > INITIAL_W_YTD);
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"tpmc\"") && json.contains("\"new_order\""));
    // The per-100 ms series covers the measured phase; it counts the commits inside it.
    let s = &report.series;
    assert_eq!((s.len(), report.bucket_ms), (15, 100));
    assert!(
        s.iter()
            .enumerate()
            .all(|(i, b)| b.start_ms == i as u64 * 100)
    );
    let sum = |f: fn(&mako_tpcc::Bucket) -> u64| s.iter().map(f).sum::<u64>();
    assert!((1..=report.committed).contains(&sum(|b| b.committed)));
    assert!((1..=no.committed).contains(&sum(|b| b.new_orders)));
    assert!(sum(|b| b.aborted) <= report.aborted);
    // Nothing is replicated: no releases.
    assert_eq!(sum(|b| b.released), 0);
    assert!(s.iter().all(|b| b.release_p50_us.is_none()));
    let c = &report.commit_latency;
    assert_eq!(c.len(), 41);
    assert!(
        c.windows(2)
            .all(|w| w[0].pct < w[1].pct && w[0].us <= w[1].us)
    );
    assert!(c[0].us > 0.0);
}

#[test]
fn run_loads_and_reports_progress() {
    let cfg = TpccConfig {
        duration: Duration::from_millis(300),
        ..small(1, 1)
    };
    let mut loading = 0;
    let mut running = 0;
    let report = run(&cfg, |p| match p {
        mako_tpcc::TpccProgress::Loading(_) => loading += 1,
        mako_tpcc::TpccProgress::Running { .. } => running += 1,
    })
    .unwrap();
    assert!(loading >= 1 && running >= 1);
    assert!(report.rows_loaded > 0 && report.committed > 0);
    let bad = TpccConfig {
        shards: 2,
        ..small(2, 1)
    };
    assert!(run(&bad, |_| {}).is_err());
}

#[test]
fn invalid_item_rolls_back_without_trace() {
    let cfg = small(1, 1);
    let db = Db::load(&cfg, |_| {}).unwrap();
    let t = tables(&db);
    let (w, d, c) = (1, 3, 7);
    let items = [5, 17, 17, 400];
    let mut lines: Vec<OrderLineInput> = items
        .iter()
        .map(|&i_id| OrderLineInput {
            i_id,
            supply_w: w,
            quantity: 3,
        })
        .collect();
    lines.push(OrderLineInput {
        i_id: SMALL.items + 1,
        supply_w: w,
        quantity: 1,
    });
    let bad = NewOrderInput {
        w,
        d,
        c,
        lines,
        entry_d: 1,
    };
    let snapshot = |db: &Db| {
        let t = tables(db);
        let sizes: Vec<usize> = t.all().iter().map(|(_, tab)| tab.len()).collect();
        let dist = t.district.get(&district_key(w, d)).unwrap();
        let stock: Vec<Bytes> = items
            .iter()
            .map(|&i| t.stock.get(&stock_key(w, i)).unwrap())
            .collect();
        (sizes, dist, stock, db.shard(0).unwrap().clock())
    };
    let before = snapshot(&db);
    let next = DistrictRow::decode(&before.1).unwrap().next_o_id;
    assert_eq!(new_order(&db, &bad), Err(TxnError::Rollback));
    assert_eq!(snapshot(&db), before, "the rollback left a trace");
    assert!(t.oorder.get(&order_key(w, d, next)).is_none());
    assert!(t.new_order.get(&order_key(w, d, next)).is_none());

    // The same order without the invalid line commits and takes the next order id.
    let good = NewOrderInput {
        lines: bad.lines[..items.len()].to_vec(),
        ..bad.clone()
    };
    let out = new_order(&db, &good).unwrap();
    assert_eq!(out.o_id, next);
    assert_eq!(out.ol_cnt, 4);
    assert!(out.total > 0);
    let order = OrderRow::decode(&t.oorder.get(&order_key(w, d, next)).unwrap()).unwrap();
    assert_eq!((order.c_id, order.ol_cnt, order.all_local), (c, 4, 1));
    assert!(t.new_order.get(&order_key(w, d, next)).is_some());
    // Item 17 was ordered twice: its stock saw both lines.
    let s_before = StockRow::decode(&before.2[1]).unwrap();
    let s_after = StockRow::decode(&t.stock.get(&stock_key(w, 17)).unwrap()).unwrap();
    assert_eq!(s_after.order_cnt, s_before.order_cnt + 2);
    assert_eq!(s_after.ytd, s_before.ytd + 6);
    check_consistency(db.shard(0).unwrap().store(), 1..=1).unwrap();
}

/// Adds customers named `last` with the given `(c_id, first name)` to district `(w, d)`.
fn add_namesakes(db: &Db, w: u32, d: u8, last: &[u8], people: &[(u32, &[u8])]) {
    let t = tables(db);
    let last = Text::new(last);
    for &(c, first) in people {
        let row = CustomerRow {
            first: Text::new(first),
            last,
            credit: Text::new(b"GC"),
            balance: 0,
            ..CustomerRow::default()
        };
        let stamp = Stamp::single(0, 2);
        t.customer
            .put(&customer_key(w, d, c), row.encode(), stamp.clone());
        t.customer_name_idx.put(
            &customer_name_key(w, d, &last, &row.first, c),
            CustomerNameRow { c_id: c }.encode(),
            stamp,
        );
    }
    db.shard(0).unwrap().observe(2);
}

#[test]
fn by_last_name_picks_the_middle_customer_by_first_name() {
    let cfg = small(1, 1);
    let db = Db::load(&cfg, |_| {}).unwrap();
    let t = tables(&db);
    // Three namesakes: sorted Alice(102), Bob(103), Carol(101); ceil(3/2) = 2nd = Bob.
    add_namesakes(
        &db,
        1,
        1,
        b"ZZTHREE",
        &[(101, b"Carol"), (102, b"Alice"), (103, b"Bob")],
    );
    // Four namesakes: sorted A(202), B(204), C(203), D(201); ceil(4/2) = 2nd = B.
    add_namesakes(
        &db,
        1,
        2,
        b"ZZFOUR",
        &[(201, b"D"), (202, b"A"), (203, b"C"), (204, b"B")],
    );
    for (d, last, expected) in [(1u8, &b"ZZTHREE"[..], 103u32), (2, b"ZZFOUR", 204)] {
        let sel = CustomerSel::LastName(Text::new(last));
        let os = order_status(
            &db,
            &OrderStatusInput {
                w: 1,
                d,
                customer: sel,
            },
        )
        .unwrap();
        assert_eq!(os.c_id, expected);
        assert_eq!(os.c_last.as_bytes(), last);
        assert_eq!(os.order, None);
        let pay = PaymentInput {
            w: 1,
            d: 5,
            c_w: 1,
            c_d: d,
            customer: sel,
            amount: 1234,
            date: 9,
            history_id: (999, u64::from(d)),
        };
        let out = payment(&db, &pay).unwrap();
        assert_eq!(out.c_id, expected);
        assert_eq!(out.c_balance, -1234);
        let paid =
            CustomerRow::decode(&t.customer.get(&customer_key(1, d, expected)).unwrap()).unwrap();
        assert_eq!(
            (paid.balance, paid.ytd_payment, paid.payment_cnt),
            (-1234, 1234, 1)
        );
    }
    // The namesakes not chosen were not touched.
    let carol = CustomerRow::decode(&t.customer.get(&customer_key(1, 1, 101)).unwrap()).unwrap();
    assert_eq!(carol.balance, 0);
    // A loaded customer found by id and by its unique last name is the same one.
    let by_id = order_status(
        &db,
        &OrderStatusInput {
            w: 1,
            d: 4,
            customer: CustomerSel::Id(12),
        },
    )
    .unwrap();
    let by_name = order_status(
        &db,
        &OrderStatusInput {
            w: 1,
            d: 4,
            customer: CustomerSel::LastName(last_name(11)),
        },
    )
    .unwrap();
    assert_eq!(by_id, by_name);
    let last = by_id.order.expect("every loaded customer has an order");
    assert!((5..=15).contains(&last.lines.len()));
    check_consistency(db.shard(0).unwrap().store(), 1..=1).unwrap();
}

#[test]
fn delivery_delivers_the_oldest_order_of_every_district() {
    let cfg = small(1, 1);
    let db = Db::load(&cfg, |_| {}).unwrap();
    let t = tables(&db);
    let first = SMALL.first_new_order();
    let input = DeliveryInput {
        w: 1,
        carrier_id: 4,
        date: 77,
    };
    let out = delivery(&db, &input).unwrap();
    assert_eq!(out.delivered, [Some(first); DISTRICTS as usize]);
    let again = delivery(&db, &input).unwrap();
    assert_eq!(again.delivered, [Some(first + 1); DISTRICTS as usize]);
    let o = OrderRow::decode(&t.oorder.get(&order_key(1, 1, first)).unwrap()).unwrap();
    assert_eq!(o.carrier_id, 4);
    assert!(t.new_order.get(&order_key(1, 1, first)).is_none());
    let c = CustomerRow::decode(&t.customer.get(&customer_key(1, 1, o.c_id)).unwrap()).unwrap();
    assert!(c.delivery_cnt >= 1 && c.balance > -1000);
    check_consistency(db.shard(0).unwrap().store(), 1..=1).unwrap();
}

#[test]
fn loader_produces_the_spec_cardinalities() {
    let cfg = TpccConfig {
        threads: 2,
        ..small(2, 2)
    };
    let mut last = None;
    let db = Db::load(&cfg, |p| last = Some(p)).unwrap();
    let t = tables(&db);
    let (w, d) = (2usize, 2 * 10usize);
    let per_district = |n: u32| d * n as usize;
    assert_eq!(rows(&t.warehouse), w);
    assert_eq!(rows(&t.district), d);
    assert_eq!(rows(&t.customer), per_district(30));
    assert_eq!(rows(&t.customer_name_idx), per_district(30));
    assert_eq!(rows(&t.history), per_district(30));
    assert_eq!(rows(&t.oorder), per_district(30));
    assert_eq!(rows(&t.oorder_c_id_idx), per_district(30));
    assert_eq!(rows(&t.new_order), per_district(9));
    assert_eq!(rows(&t.item), 1_000);
    assert_eq!(rows(&t.stock), w * 1_000);
    let orders = per_district(30);
    assert!((5 * orders..=15 * orders).contains(&rows(&t.order_line)));
    let loaded: usize = t.all().iter().map(|(_, tab)| rows(tab)).sum();
    assert_eq!(last.map(|p| p.rows), Some(loaded as u64));
    for wid in 1..=2 {
        for did in 1..=DISTRICTS {
            let dist =
                DistrictRow::decode(&t.district.get(&district_key(wid, did)).unwrap()).unwrap();
            assert_eq!(dist.next_o_id, 31);
            for o in 1..=30 {
                let order =
                    OrderRow::decode(&t.oorder.get(&order_key(wid, did, o)).unwrap()).unwrap();
                assert!((5..=15).contains(&order.ol_cnt));
                assert!((1..=30).contains(&order.c_id));
                assert_eq!(order.carrier_id == 0, o >= 22);
                assert_eq!(t.new_order.get(&order_key(wid, did, o)).is_some(), o >= 22);
            }
            let c5 =
                CustomerRow::decode(&t.customer.get(&customer_key(wid, did, 5)).unwrap()).unwrap();
            assert_eq!(c5.last, last_name(4));
        }
    }
    let c = check_consistency(db.shard(0).unwrap().store(), 1..=2).unwrap();
    assert_eq!((c.orders, c.new_orders), (600, 180));
    assert_eq!(t.item.scan(.., usize::MAX).len(), 1_000);
    assert_eq!(t.item.latest().len(), 1_000);
    assert_eq!(t.stock.get(&[]), None);
    let empty = mako_storage::Store::new();
    assert!(matches!(
        check_consistency(&empty, 1..=1).unwrap_err()[..],
        [Violation::MissingTable("warehouse")]
    ));

    // Two shards: each holds its warehouses' rows and a full copy of item.
    let two = Db::load(&TpccConfig { shards: 2, ..cfg }, |_| {}).unwrap();
    for s in 0..2 {
        let ts = two.tables(s).unwrap();
        assert_eq!(rows(&ts.item), 1_000);
        assert_eq!(rows(&ts.warehouse), 1);
        assert_eq!(rows(&ts.stock), 1_000);
        assert_eq!(rows(&ts.customer), 10 * 30);
        let wid = s as u32 + 1;
        assert_eq!(two.shard_map().shard_of(wid), s);
        check_consistency(two.shard(s).unwrap().store(), wid..=wid).unwrap();
    }
    assert_eq!(
        two.tables(0).unwrap().item.latest(),
        two.tables(1).unwrap().item.latest()
    );
}

#[test]
fn nurand_and_terminal_inputs_stay_in_range() {
    let mut rng = SmallRng::seed_from_u64(7);
    let load = NuRandC::for_load(&mut rng);
    let c = NuRandC::for_run(&load, &mut rng);
    for _ in 0..20_000 {
        assert!((1..=100_000).contains(&c.item_id(&mut rng, 100_000)));
        assert!((1..=1_000).contains(&c.item_id(&mut rng, 1_000)));
        assert!((1..=3_000).contains(&c.customer_id(&mut rng, 3_000)));
        assert!((1..=30).contains(&c.customer_id(&mut rng, 30)));
        assert!(c.last_name_number(&mut rng, 999) <= 999);
        assert!(c.last_name_number(&mut rng, 29) <= 29);
    }
    let cfg = small(3, 1);
    let db = Db::load(&cfg, |_| {}).unwrap();
    let mut term = Terminal::new(&db, &cfg, 4);
    assert_eq!(term.home(), 2);
    let mut counts = [0u32; 5];
    for _ in 0..5_000 {
        let kind = term.next_kind();
        counts[kind.index()] += 1;
        match term.next_input(kind) {
            TxnInput::NewOrder(i) => {
                assert_eq!(i.w, 2);
                assert!((1..=DISTRICTS).contains(&i.d) && (1..=30).contains(&i.c));
                assert!((5..=15).contains(&i.lines.len()));
                for (n, l) in i.lines.iter().enumerate() {
                    let last = n + 1 == i.lines.len();
                    assert!((1..=1_000).contains(&l.i_id) || (last && l.i_id == 1_001));
                    assert!((1..=3).contains(&l.supply_w) && (1..=10).contains(&l.quantity));
                }
            }
            TxnInput::Payment(i) => {
                assert!((1..=3).contains(&i.c_w) && (100..=500_000).contains(&i.amount));
                if let CustomerSel::Id(c) = i.customer {
                    assert!((1..=30).contains(&c));
                }
            }
            TxnInput::OrderStatus(i) => assert!((1..=DISTRICTS).contains(&i.d)),
            TxnInput::Delivery(i) => assert!((1..=10).contains(&i.carrier_id)),
            TxnInput::StockLevel(i) => {
                assert_eq!(i.d, term.district());
                assert!((10..=20).contains(&i.threshold));
            }
        }
    }
    // 45/43/4/4/4, loosely.
    assert!(counts[0] > 2_000 && counts[1] > 1_900 && counts[2..].iter().all(|&n| n > 100));
}

#[test]
fn consistency_check_reports_violations() {
    let cfg = small(1, 1);
    let db = Db::load(&cfg, |_| {}).unwrap();
    let t = tables(&db);
    let store = db.shard(0).unwrap().store();
    let mut wh = WarehouseRow::decode(&t.warehouse.get(&warehouse_key(1)).unwrap()).unwrap();
    wh.ytd += 1;
    t.warehouse
        .put(&warehouse_key(1), wh.encode(), Stamp::single(0, 2));
    t.new_order
        .delete(&order_key(1, 3, 25), Stamp::single(0, 2));
    t.oorder.put(
        &order_key(1, 4, 2),
        Bytes::from_static(b"bad"),
        Stamp::single(0, 2),
    );
    let v = check_consistency(store, 1..=1).unwrap_err();
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::WarehouseYtd { w: 1, .. }))
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::NewOrderGap { w: 1, d: 3, .. }))
    );
    assert!(v.iter().any(|v| matches!(
        v,
        Violation::Malformed {
            w: 1,
            d: Some(4),
            ..
        }
    )));
    assert_eq!(v.len(), 3, "{v:#?}");
}

/// Key + value bytes of every row of every table of shard 0, read in one transaction.
fn stored_bytes(db: &Db) -> i64 {
    use mako_tpcc::{Backend, Tbl, TxnOps};
    use std::ops::Bound::Unbounded;
    let mut tx = db.begin(1);
    let mut total = 0i64;
    for t in [
        Tbl::Warehouse,
        Tbl::District,
        Tbl::Customer,
        Tbl::CustomerNameIdx,
        Tbl::History,
        Tbl::NewOrder,
        Tbl::Oorder,
        Tbl::OorderCIdIdx,
        Tbl::OrderLine,
        Tbl::Item,
        Tbl::Stock,
    ] {
        for (k, v) in tx.scan(1, t, (Unbounded, Unbounded), usize::MAX).unwrap() {
            total += (k.len() + v.len()) as i64;
        }
    }
    tx.commit().unwrap();
    total
}

/// The payload the five transactions report is exactly what their commits add to the store;
/// a rolled-back NewOrder reports nothing and adds nothing.
#[test]
fn tallied_payload_equals_growth_of_stored_bytes() {
    let cfg = small(1, 1);
    let db = Db::load(&cfg, |_| {}).unwrap();
    let before = stored_bytes(&db);
    let mut term = Terminal::new(&db, &cfg, 0);
    let mut payload = mako_tpcc::Payload::default();
    let mut seen = [0u32; 5];
    for _ in 0..400 {
        let kind = term.next_kind();
        match term.next_input(kind).execute_tallied(&db) {
            Ok(p) => {
                payload += p;
                seen[kind.index()] += 1;
            }
            Err(TxnError::Rollback) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    assert!(payload.inserted > 0 && payload.deleted > 0, "{payload:?}");
    assert_eq!(stored_bytes(&db) - before, payload.net(), "{payload:?}");

    // A NewOrder naming an unused item rolls back: no payload, no change.
    let mut rollback = term.new_order();
    rollback.lines[0].i_id = SMALL.items + 1;
    let at = stored_bytes(&db);
    assert_eq!(
        TxnInput::NewOrder(rollback).execute_tallied(&db),
        Err(TxnError::Rollback)
    );
    assert_eq!(stored_bytes(&db), at);
}

/// The driver counts the payload of committed transactions only: with two workers on one
/// warehouse some attempts abort, and the reported payload still equals the store's growth.
#[test]
fn driver_payload_excludes_aborted_attempts() {
    let cfg = TpccConfig {
        duration: Duration::from_millis(800),
        ..small(1, 2)
    };
    let db = Db::load(&cfg, |_| {}).unwrap();
    let before = stored_bytes(&db);
    let report = run_on(&db, &cfg, |_| {}).unwrap();
    let m = &report.memory;
    assert_eq!(
        m.new_orders,
        report.stats(TxnKind::NewOrder).unwrap().committed
    );
    assert_eq!(stored_bytes(&db) - before, m.payload.net(), "{report:?}");
    assert!(m.payload_per_new_order.unwrap() > 0.0, "{m:?}");
    #[cfg(target_os = "linux")]
    assert!(m.rss_after_load.unwrap() > 0 && m.rss_at_end.unwrap() > 0);
    // Shorter than a minute: no endurance figures.
    assert!(report.endurance.is_none());
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"payload_per_new_order\"") && json.contains("\"endurance\":null"));
}
