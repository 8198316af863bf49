//! TPC-C consistency conditions 1–4 (clause 3.3.2), checked over one store (one replica of a shard).

use std::ops::{Bound, RangeInclusive};

use bytes::Bytes;
use mako_storage::{Store, Table};

use crate::config::DISTRICTS;
use crate::schema::{
    DecodeError, DistrictRow, OrderRow, Row, Tables, WarehouseRow, district_key, order_key,
    order_line_key, parse_order_key, parse_order_line_key, warehouse_key,
};

/// What the checks covered, when every condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConsistencyReport {
    /// Warehouses checked.
    pub warehouses: u32,
    /// Districts checked.
    pub districts: u32,
    /// `oorder` rows seen.
    pub orders: u64,
    /// `new_order` rows seen.
    pub new_orders: u64,
    /// `order_line` rows seen.
    pub order_lines: u64,
}

/// A broken consistency condition (or data the checks cannot read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The store lacks a table of the schema.
    #[error("table `{0}` is missing")]
    MissingTable(&'static str),
    /// A warehouse or district row is absent.
    #[error("{table} row of warehouse {w} district {d:?} is missing")]
    MissingRow {
        /// Table.
        table: &'static str,
        /// Warehouse.
        w: u32,
        /// District, for district rows.
        d: Option<u8>,
    },
    /// A row or key does not decode.
    #[error("warehouse {w} district {d:?}: {error}")]
    Malformed {
        /// Warehouse.
        w: u32,
        /// District, if the row belongs to one.
        d: Option<u8>,
        /// The decoding failure.
        error: DecodeError,
    },
    /// Condition 1: W_YTD = sum(D_YTD).
    #[error("condition 1, warehouse {w}: W_YTD {w_ytd} != sum(D_YTD) {sum_d_ytd}")]
    WarehouseYtd {
        /// Warehouse.
        w: u32,
        /// W_YTD, cents.
        w_ytd: i64,
        /// Sum of its districts' D_YTD, cents.
        sum_d_ytd: i64,
    },
    /// Condition 2: D_NEXT_O_ID - 1 = max(O_ID) = max(NO_O_ID).
    #[error(
        "condition 2, district ({w}, {d}): D_NEXT_O_ID {next_o_id}, max(O_ID) {max_o_id}, max(NO_O_ID) {max_no_o_id:?}"
    )]
    OrderIds {
        /// Warehouse.
        w: u32,
        /// District.
        d: u8,
        /// D_NEXT_O_ID.
        next_o_id: u32,
        /// Largest order id (0 if none).
        max_o_id: u32,
        /// Largest new-order id (`None` if the district has no new-order row).
        max_no_o_id: Option<u32>,
    },
    /// Condition 3: max(NO_O_ID) - min(NO_O_ID) + 1 = number of new-order rows.
    #[error(
        "condition 3, district ({w}, {d}): new-order ids {min_no_o_id}..={max_no_o_id} but {count} rows"
    )]
    NewOrderGap {
        /// Warehouse.
        w: u32,
        /// District.
        d: u8,
        /// Smallest new-order id.
        min_no_o_id: u32,
        /// Largest new-order id.
        max_no_o_id: u32,
        /// New-order rows.
        count: u64,
    },
    /// Condition 4: sum(O_OL_CNT) = number of order-line rows.
    #[error(
        "condition 4, district ({w}, {d}): sum(O_OL_CNT) {sum_ol_cnt} != {order_lines} order lines"
    )]
    OrderLineCount {
        /// Warehouse.
        w: u32,
        /// District.
        d: u8,
        /// Sum of O_OL_CNT.
        sum_ol_cnt: u64,
        /// Order-line rows.
        order_lines: u64,
    },
}

/// Calls `f` on every visible row of `table` in `lo..=hi`.
fn each_row(table: &Table, lo: &[u8], hi: &[u8], mut f: impl FnMut(&[u8], &Bytes)) {
    table.visit(Bound::Included(lo), Bound::Included(hi), false, |k, rec| {
        if let Some(v) = rec.read().value() {
            f(k, v);
        }
        true
    });
}

/// Checks conditions 1–4 for warehouses `warehouses` of `store`, which must be quiescent.
///
/// Reads the latest committed versions directly (no transaction), so it works
/// on any replica; it changes nothing. A district without new-order rows satisfies condition 3
/// trivially and, in condition 2, only needs D_NEXT_O_ID - 1 = max(O_ID).
pub fn check_consistency(
    store: &Store,
    warehouses: RangeInclusive<u32>,
) -> Result<ConsistencyReport, Vec<Violation>> {
    let t = Tables::open(store).map_err(|name| vec![Violation::MissingTable(name)])?;
    let mut out = Vec::new();
    let mut report = ConsistencyReport {
        warehouses: 0,
        districts: 0,
        orders: 0,
        new_orders: 0,
        order_lines: 0,
    };
    for w in warehouses {
        report.warehouses += 1;
        let wh = match t.warehouse.get(&warehouse_key(w)) {
            None => {
                out.push(Violation::MissingRow {
                    table: WarehouseRow::TABLE,
                    w,
                    d: None,
                });
                None
            }
            Some(v) => match WarehouseRow::decode(&v) {
                Ok(r) => Some(r),
                Err(error) => {
                    out.push(Violation::Malformed { w, d: None, error });
                    None
                }
            },
        };
        let mut sum_d_ytd = 0i64;
        let mut districts_ok = true;
        for d in 1..=DISTRICTS {
            report.districts += 1;
            match check_district(&t, w, d, &mut report, &mut out) {
                Some(ytd) => sum_d_ytd += ytd,
                None => districts_ok = false,
            }
        }
        if let Some(wh) = wh
            && districts_ok
            && wh.ytd != sum_d_ytd
        {
            out.push(Violation::WarehouseYtd {
                w,
                w_ytd: wh.ytd,
                sum_d_ytd,
            });
        }
    }
    if out.is_empty() { Ok(report) } else { Err(out) }
}

/// Checks conditions 2–4 of district `(w, d)`; returns its D_YTD if its row is readable.
fn check_district(
    t: &Tables,
    w: u32,
    d: u8,
    report: &mut ConsistencyReport,
    out: &mut Vec<Violation>,
) -> Option<i64> {
    let dist = match t.district.get(&district_key(w, d)) {
        None => {
            out.push(Violation::MissingRow {
                table: DistrictRow::TABLE,
                w,
                d: Some(d),
            });
            return None;
        }
        Some(v) => match DistrictRow::decode(&v) {
            Ok(r) => r,
            Err(error) => {
                out.push(Violation::Malformed {
                    w,
                    d: Some(d),
                    error,
                });
                return None;
            }
        },
    };
    let mut errors: Vec<DecodeError> = Vec::new();

    let (lo, hi) = (order_key(w, d, 0), order_key(w, d, u32::MAX));
    let (mut max_o_id, mut sum_ol_cnt, mut orders) = (0u32, 0u64, 0u64);
    each_row(&t.oorder, &lo, &hi, |k, v| {
        orders += 1;
        match (parse_order_key(k), OrderRow::decode(v)) {
            (Ok(o), Ok(row)) => {
                max_o_id = max_o_id.max(o);
                sum_ol_cnt += u64::from(row.ol_cnt);
            }
            (Err(e), _) | (_, Err(e)) => errors.push(e),
        }
    });

    let (mut no_range, mut new_orders) = (None::<(u32, u32)>, 0u64);
    each_row(&t.new_order, &lo, &hi, |k, _| {
        new_orders += 1;
        match parse_order_key(k) {
            Ok(o) => {
                no_range = Some(no_range.map_or((o, o), |(a, b)| (a.min(o), b.max(o))));
            }
            Err(e) => errors.push(e),
        }
    });

    let (lo, hi) = (
        order_line_key(w, d, 0, 0),
        order_line_key(w, d, u32::MAX, u8::MAX),
    );
    let mut order_lines = 0u64;
    each_row(&t.order_line, &lo, &hi, |k, _| {
        order_lines += 1;
        if let Err(e) = parse_order_line_key(k) {
            errors.push(e);
        }
    });

    report.orders += orders;
    report.new_orders += new_orders;
    report.order_lines += order_lines;
    if let Some(error) = errors.into_iter().next() {
        out.push(Violation::Malformed {
            w,
            d: Some(d),
            error,
        });
        return Some(dist.ytd);
    }

    let expected_max = i64::from(dist.next_o_id) - 1;
    let max_no = no_range.map(|(_, b)| b);
    if i64::from(max_o_id) != expected_max || max_no.is_some_and(|m| i64::from(m) != expected_max) {
        out.push(Violation::OrderIds {
            w,
            d,
            next_o_id: dist.next_o_id,
            max_o_id,
            max_no_o_id: max_no,
        });
    }
    if let Some((a, b)) = no_range
        && u64::from(b - a) + 1 != new_orders
    {
        out.push(Violation::NewOrderGap {
            w,
            d,
            min_no_o_id: a,
            max_no_o_id: b,
            count: new_orders,
        });
    }
    if sum_ol_cnt != order_lines {
        out.push(Violation::OrderLineCount {
            w,
            d,
            sum_ol_cnt,
            order_lines,
        });
    }
    Some(dist.ytd)
}
