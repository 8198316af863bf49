//! The five TPC-C transactions (clauses 2.4–2.8) as functions of a [`Backend`] and their inputs.
//!
//! Each function runs one attempt as one serializable OCC transaction (on the
//! shard of its home warehouse for a [`Db`](crate::Db), across shards on a
//! replicated cluster) and either commits or leaves no trace. An
//! [`TxnError::Abort`] is an OCC conflict: the caller retries with the same
//! inputs. [`TxnError::Rollback`] is NewOrder's spec-mandated rollback on an
//! unused item id. [`TxnError::Data`] means the data broke the schema (a
//! missing row or a malformed value); under OCC a transaction may observe a
//! half-installed commit of another one before validation would abort it, so
//! a data error can be transient and the driver retries it a bounded number
//! of times before giving up.

use std::ops::Bound::{Excluded, Included};

use mako_txn::Abort;

use crate::backend::{Backend, Tbl, TxnOps};
use crate::config::DISTRICTS;
use crate::payload::{Payload, Tally};
use crate::schema::{
    CustomerNameRow, CustomerRow, DecodeError, DistrictRow, HistoryRow, ItemRow, NewOrderRow,
    OrderCustomerRow, OrderLineRow, OrderRow, Row, StockRow, Text, WarehouseRow, customer_key,
    customer_name_range, district_key, history_key, item_key, order_customer_key, order_key,
    order_line_key, parse_order_customer_key, parse_order_key, stock_key, warehouse_key,
};

/// The five transaction types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnKind {
    /// NewOrder (clause 2.4).
    NewOrder,
    /// Payment (clause 2.5).
    Payment,
    /// OrderStatus (clause 2.6).
    OrderStatus,
    /// Delivery (clause 2.7).
    Delivery,
    /// StockLevel (clause 2.8).
    StockLevel,
}

impl TxnKind {
    /// Every type, in mix order.
    pub const ALL: [TxnKind; 5] = [
        TxnKind::NewOrder,
        TxnKind::Payment,
        TxnKind::OrderStatus,
        TxnKind::Delivery,
        TxnKind::StockLevel,
    ];

    /// A short snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            TxnKind::NewOrder => "new_order",
            TxnKind::Payment => "payment",
            TxnKind::OrderStatus => "order_status",
            TxnKind::Delivery => "delivery",
            TxnKind::StockLevel => "stock_level",
        }
    }

    /// Position in [`TxnKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Data that breaks the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// A row the transaction needs is absent.
    #[error("{table} row {key:02x?} is missing")]
    Missing {
        /// Table.
        table: &'static str,
        /// Key looked up.
        key: Vec<u8>,
    },
    /// A row or key does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// No customer has the last name looked up.
    #[error("no customer named {last} in district ({w}, {d})")]
    NoSuchLastName {
        /// Warehouse.
        w: u32,
        /// District.
        d: u8,
        /// The last name.
        last: String,
    },
}

/// Why one attempt of a transaction did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// An OCC conflict; retry with the same inputs.
    #[error(transparent)]
    Abort(#[from] Abort),
    /// The transaction rolled itself back as the spec demands (NewOrder's unused item id).
    #[error("rolled back: unused item id")]
    Rollback,
    /// The data broke the schema.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The input names a warehouse or district that does not exist.
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    /// The transaction would touch two shards (not supported by this backend).
    #[error("warehouses {home} and {other} are on different shards")]
    CrossShard {
        /// Home warehouse.
        home: u32,
        /// The remote warehouse on another shard.
        other: u32,
    },
}

impl From<DecodeError> for TxnError {
    fn from(e: DecodeError) -> Self {
        TxnError::Data(DataError::Decode(e))
    }
}

/// How a Payment or OrderStatus selects its customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CustomerSel {
    /// By customer id.
    Id(u32),
    /// By last name: the customer at position ceil(n/2) of the n with that name, sorted by first name.
    LastName(Text<16>),
}

/// One order line of a NewOrder input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderLineInput {
    /// OL_I_ID (an unused id triggers the rollback).
    pub i_id: u32,
    /// OL_SUPPLY_W_ID.
    pub supply_w: u32,
    /// OL_QUANTITY, 1..=10.
    pub quantity: u8,
}

/// Inputs of a NewOrder (clause 2.4.1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewOrderInput {
    /// Home warehouse W_ID.
    pub w: u32,
    /// District D_ID.
    pub d: u8,
    /// Customer C_ID.
    pub c: u32,
    /// The 5..=15 order lines.
    pub lines: Vec<OrderLineInput>,
    /// O_ENTRY_D, seconds.
    pub entry_d: u64,
}

/// Outputs of a committed NewOrder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrderOutput {
    /// The new order's id.
    pub o_id: u32,
    /// Number of lines.
    pub ol_cnt: u8,
    /// Total amount with discount and taxes, cents.
    pub total: i64,
    /// Lines whose item and stock data both contain `ORIGINAL` (brand-generic `B`).
    pub brand_lines: u8,
}

/// Inputs of a Payment (clause 2.5.1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PaymentInput {
    /// Home warehouse W_ID.
    pub w: u32,
    /// District D_ID.
    pub d: u8,
    /// The customer's warehouse C_W_ID.
    pub c_w: u32,
    /// The customer's district C_D_ID.
    pub c_d: u8,
    /// The customer.
    pub customer: CustomerSel,
    /// H_AMOUNT, cents (100..=500,000).
    pub amount: i64,
    /// H_DATE, seconds.
    pub date: u64,
    /// Unique id of the history row: `(origin, seq)` (see [`crate::schema`]).
    pub history_id: (u32, u64),
}

/// Outputs of a committed Payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentOutput {
    /// The customer paid for.
    pub c_id: u32,
    /// The customer's new balance, cents.
    pub c_balance: i64,
    /// The customer's credit, `GC` or `BC`.
    pub c_credit: Text<2>,
}

/// Inputs of an OrderStatus (clause 2.6.1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderStatusInput {
    /// Home warehouse W_ID.
    pub w: u32,
    /// District D_ID.
    pub d: u8,
    /// The customer.
    pub customer: CustomerSel,
}

/// One order line as OrderStatus reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderLineStatus {
    /// OL_I_ID.
    pub i_id: u32,
    /// OL_SUPPLY_W_ID.
    pub supply_w: u32,
    /// OL_QUANTITY.
    pub quantity: u8,
    /// OL_AMOUNT, cents.
    pub amount: i64,
    /// OL_DELIVERY_D, `None` if not delivered.
    pub delivery_d: Option<u64>,
}

/// The customer's most recent order as OrderStatus reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastOrder {
    /// O_ID.
    pub o_id: u32,
    /// O_ENTRY_D.
    pub entry_d: u64,
    /// O_CARRIER_ID, `None` if not delivered.
    pub carrier_id: Option<u8>,
    /// Its lines.
    pub lines: Vec<OrderLineStatus>,
}

/// Outputs of a committed OrderStatus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderStatusOutput {
    /// The customer.
    pub c_id: u32,
    /// C_FIRST.
    pub c_first: Text<16>,
    /// C_LAST.
    pub c_last: Text<16>,
    /// C_BALANCE, cents.
    pub c_balance: i64,
    /// The customer's latest order, if any.
    pub order: Option<LastOrder>,
}

/// Inputs of a Delivery (clause 2.7.1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeliveryInput {
    /// Warehouse W_ID.
    pub w: u32,
    /// O_CARRIER_ID, 1..=10.
    pub carrier_id: u8,
    /// OL_DELIVERY_D, seconds.
    pub date: u64,
}

/// Outputs of a committed Delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOutput {
    /// Per district (index `d - 1`): the order delivered, or `None` if it had no undelivered order.
    pub delivered: [Option<u32>; DISTRICTS as usize],
}

/// Inputs of a StockLevel (clause 2.8.1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StockLevelInput {
    /// Warehouse W_ID.
    pub w: u32,
    /// District D_ID (fixed per terminal).
    pub d: u8,
    /// The threshold, 10..=20.
    pub threshold: i32,
}

/// Outputs of a committed StockLevel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLevelOutput {
    /// Distinct items of the district's last 20 orders with stock below the threshold.
    pub low_stock: u32,
}

/// Inputs of any transaction type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TxnInput {
    /// A NewOrder.
    NewOrder(NewOrderInput),
    /// A Payment.
    Payment(PaymentInput),
    /// An OrderStatus.
    OrderStatus(OrderStatusInput),
    /// A Delivery.
    Delivery(DeliveryInput),
    /// A StockLevel.
    StockLevel(StockLevelInput),
}

impl TxnInput {
    /// The transaction type.
    pub fn kind(&self) -> TxnKind {
        match self {
            TxnInput::NewOrder(_) => TxnKind::NewOrder,
            TxnInput::Payment(_) => TxnKind::Payment,
            TxnInput::OrderStatus(_) => TxnKind::OrderStatus,
            TxnInput::Delivery(_) => TxnKind::Delivery,
            TxnInput::StockLevel(_) => TxnKind::StockLevel,
        }
    }

    /// Runs one attempt, discarding the outputs.
    pub fn execute<B: Backend + ?Sized>(&self, db: &B) -> Result<(), TxnError> {
        self.execute_tallied(db).map(drop)
    }

    /// Runs one attempt; if it commits, the key and value bytes its writes added.
    pub fn execute_tallied<B: Backend + ?Sized>(&self, db: &B) -> Result<Payload, TxnError> {
        match self {
            TxnInput::NewOrder(i) => new_order_tallied(db, i).map(|r| r.1),
            TxnInput::Payment(i) => payment_tallied(db, i).map(|r| r.1),
            TxnInput::OrderStatus(i) => order_status_tallied(db, i).map(|r| r.1),
            TxnInput::Delivery(i) => delivery_tallied(db, i).map(|r| r.1),
            TxnInput::StockLevel(i) => stock_level_tallied(db, i).map(|r| r.1),
        }
    }
}

/// Reads and decodes the row under `key`; an absent row is a [`DataError::Missing`].
fn read_row<R: Row, T: TxnOps>(
    tx: &mut Tally<T>,
    w: u32,
    table: Tbl,
    key: &[u8],
) -> Result<R, TxnError> {
    read_for_update(tx, w, table, key).map(|r| r.0)
}

/// Like [`read_row`], with the length of the stored value (for the tally of an update).
fn read_for_update<R: Row, T: TxnOps>(
    tx: &mut Tally<T>,
    w: u32,
    table: Tbl,
    key: &[u8],
) -> Result<(R, usize), TxnError> {
    match tx.get(w, table, key)? {
        Some(v) => Ok((R::decode(&v)?, v.len())),
        None => Err(missing(R::TABLE, key)),
    }
}

/// The error for an absent row.
fn missing(table: &'static str, key: &[u8]) -> TxnError {
    DataError::Missing {
        table,
        key: key.to_vec(),
    }
    .into()
}

/// Checks a warehouse id.
fn check_warehouse<B: Backend + ?Sized>(db: &B, w: u32) -> Result<(), TxnError> {
    if (1..=db.warehouses()).contains(&w) {
        Ok(())
    } else {
        Err(TxnError::InvalidInput("warehouse id out of range"))
    }
}

/// Checks a district id.
fn check_district(d: u8) -> Result<(), TxnError> {
    if (1..=DISTRICTS).contains(&d) {
        Ok(())
    } else {
        Err(TxnError::InvalidInput("district id out of range"))
    }
}

/// Checks that a transaction of warehouse `home` can reach warehouse `other`.
fn same_shard<B: Backend + ?Sized>(db: &B, home: u32, other: u32) -> Result<(), TxnError> {
    check_warehouse(db, other)?;
    db.reachable(home, other)
}

/// The id of the customer at position ceil(n/2) (1-based) of those named `last` in `(w, d)`.
fn customer_by_last_name<T: TxnOps>(
    tx: &mut Tally<T>,
    w: u32,
    d: u8,
    last: &Text<16>,
) -> Result<u32, TxnError> {
    let (lo, hi) = customer_name_range(w, d, last);
    let rows = tx.scan(
        w,
        Tbl::CustomerNameIdx,
        (Included(&lo[..]), Included(&hi[..])),
        usize::MAX,
    )?;
    match rows.get(rows.len().saturating_sub(1) / 2) {
        Some((_, v)) => Ok(CustomerNameRow::decode(v)?.c_id),
        None => Err(DataError::NoSuchLastName {
            w,
            d,
            last: last.to_string_lossy(),
        }
        .into()),
    }
}

/// Resolves a customer selection to an id.
fn resolve_customer<T: TxnOps>(
    tx: &mut Tally<T>,
    w: u32,
    d: u8,
    sel: &CustomerSel,
) -> Result<u32, TxnError> {
    match sel {
        CustomerSel::Id(c) => Ok(*c),
        CustomerSel::LastName(last) => customer_by_last_name(tx, w, d, last),
    }
}

/// NewOrder (clause 2.4.2): enter an order of 5–15 lines, updating stock; rolls back on an unused item id.
pub fn new_order<B: Backend + ?Sized>(
    db: &B,
    inp: &NewOrderInput,
) -> Result<NewOrderOutput, TxnError> {
    new_order_tallied(db, inp).map(|r| r.0)
}

/// [`new_order`] with the tally of its writes.
fn new_order_tallied<B: Backend + ?Sized>(
    db: &B,
    inp: &NewOrderInput,
) -> Result<(NewOrderOutput, Payload), TxnError> {
    let (w, d) = (inp.w, inp.d);
    check_warehouse(db, w)?;
    check_district(d)?;
    let ol_cnt = u8::try_from(inp.lines.len())
        .map_err(|_| TxnError::InvalidInput("too many order lines"))?;
    for l in &inp.lines {
        same_shard(db, w, l.supply_w)?;
    }
    let mut tx = Tally::new(db.begin(w));
    let wh: WarehouseRow = read_row(&mut tx, w, Tbl::Warehouse, &warehouse_key(w))?;
    let dk = district_key(w, d);
    let (mut dist, dist_len): (DistrictRow, _) = read_for_update(&mut tx, w, Tbl::District, &dk)?;
    let o = dist.next_o_id;
    dist.next_o_id = o.wrapping_add(1);
    tx.update(w, Tbl::District, &dk, dist_len, dist.encode())?;
    let cust: CustomerRow = read_row(&mut tx, w, Tbl::Customer, &customer_key(w, d, inp.c))?;
    let all_local = inp.lines.iter().all(|l| l.supply_w == w);
    let order = OrderRow {
        c_id: inp.c,
        entry_d: inp.entry_d,
        carrier_id: 0,
        ol_cnt,
        all_local: u8::from(all_local),
    };
    // The order id comes from D_NEXT_O_ID, which this transaction read and
    // wrote, so these keys are fresh: plain puts, no existence checks.
    let ok = order_key(w, d, o);
    tx.insert(w, Tbl::Oorder, &ok, order.encode())?;
    tx.insert(w, Tbl::NewOrder, &ok, NewOrderRow {}.encode())?;
    tx.insert(
        w,
        Tbl::OorderCIdIdx,
        &order_customer_key(w, d, inp.c, o),
        OrderCustomerRow {}.encode(),
    )?;
    let mut sum = 0i64;
    let mut brand_lines = 0u8;
    for (n, l) in (1u8..).zip(&inp.lines) {
        let Some(iv) = tx.get(w, Tbl::Item, &item_key(l.i_id))? else {
            // Unused item id: drop the transaction, leaving no trace.
            return Err(TxnError::Rollback);
        };
        let item = ItemRow::decode(&iv)?;
        let sk = stock_key(l.supply_w, l.i_id);
        let (mut s, s_len): (StockRow, _) = read_for_update(&mut tx, l.supply_w, Tbl::Stock, &sk)?;
        let q = i32::from(l.quantity);
        s.quantity = if s.quantity >= q + 10 {
            s.quantity - q
        } else {
            s.quantity - q + 91
        };
        s.ytd = s.ytd.wrapping_add(u32::from(l.quantity));
        s.order_cnt = s.order_cnt.wrapping_add(1);
        if l.supply_w != w {
            s.remote_cnt = s.remote_cnt.wrapping_add(1);
        }
        tx.update(l.supply_w, Tbl::Stock, &sk, s_len, s.encode())?;
        let amount = i64::from(l.quantity) * item.price;
        sum += amount;
        if item.data.contains(b"ORIGINAL") && s.data.contains(b"ORIGINAL") {
            brand_lines += 1;
        }
        let line = OrderLineRow {
            i_id: l.i_id,
            supply_w_id: l.supply_w,
            delivery_d: 0,
            quantity: l.quantity,
            amount,
            dist_info: s.dist[usize::from(d - 1)],
        };
        tx.insert(
            w,
            Tbl::OrderLine,
            &order_line_key(w, d, o, n),
            line.encode(),
        )?;
    }
    let payload = tx.commit()?;
    // total = sum * (1 - c_discount) * (1 + w_tax + d_tax), rates in ten-thousandths.
    let scaled = i128::from(sum)
        * (10_000 - i128::from(cust.discount))
        * (10_000 + i128::from(wh.tax) + i128::from(dist.tax));
    let total = i64::try_from((scaled + 50_000_000) / 100_000_000).unwrap_or(i64::MAX);
    Ok((
        NewOrderOutput {
            o_id: o,
            ol_cnt,
            total,
            brand_lines,
        },
        payload,
    ))
}

/// Payment (clause 2.5.2): a customer pays; warehouse, district and customer balances move, history grows.
pub fn payment<B: Backend + ?Sized>(db: &B, inp: &PaymentInput) -> Result<PaymentOutput, TxnError> {
    payment_tallied(db, inp).map(|r| r.0)
}

/// [`payment`] with the tally of its writes.
fn payment_tallied<B: Backend + ?Sized>(
    db: &B,
    inp: &PaymentInput,
) -> Result<(PaymentOutput, Payload), TxnError> {
    let (w, d) = (inp.w, inp.d);
    check_warehouse(db, w)?;
    check_district(d)?;
    check_district(inp.c_d)?;
    same_shard(db, w, inp.c_w)?;
    let mut tx = Tally::new(db.begin(w));
    let wk = warehouse_key(w);
    let (mut wh, wh_len): (WarehouseRow, _) = read_for_update(&mut tx, w, Tbl::Warehouse, &wk)?;
    wh.ytd += inp.amount;
    tx.update(w, Tbl::Warehouse, &wk, wh_len, wh.encode())?;
    let dk = district_key(w, d);
    let (mut dist, dist_len): (DistrictRow, _) = read_for_update(&mut tx, w, Tbl::District, &dk)?;
    dist.ytd += inp.amount;
    tx.update(w, Tbl::District, &dk, dist_len, dist.encode())?;
    let c = resolve_customer(&mut tx, inp.c_w, inp.c_d, &inp.customer)?;
    let ck = customer_key(inp.c_w, inp.c_d, c);
    let (mut cust, cust_len): (CustomerRow, _) =
        read_for_update(&mut tx, inp.c_w, Tbl::Customer, &ck)?;
    cust.balance -= inp.amount;
    cust.ytd_payment += inp.amount;
    cust.payment_cnt = cust.payment_cnt.wrapping_add(1);
    if cust.credit.as_bytes() == b"BC" {
        let entry = format!(
            "{} {} {} {} {} {}.{:02}|",
            c,
            inp.c_d,
            inp.c_w,
            d,
            w,
            inp.amount / 100,
            inp.amount % 100
        );
        let mut data = Vec::with_capacity(500);
        data.extend_from_slice(entry.as_bytes());
        data.extend_from_slice(cust.data.as_bytes());
        cust.data = Text::new(&data);
    }
    tx.update(inp.c_w, Tbl::Customer, &ck, cust_len, cust.encode())?;
    let mut h_data = [b' '; 24];
    let (wn, dn) = (wh.name.as_bytes(), dist.name.as_bytes());
    h_data[..wn.len()].copy_from_slice(wn);
    h_data[wn.len() + 4..wn.len() + 4 + dn.len()].copy_from_slice(dn);
    let h = HistoryRow {
        c_id: c,
        c_d_id: inp.c_d,
        c_w_id: inp.c_w,
        d_id: d,
        w_id: w,
        date: inp.date,
        amount: inp.amount,
        data: Text::new(&h_data[..wn.len() + 4 + dn.len()]),
    };
    let (origin, seq) = inp.history_id;
    tx.insert(w, Tbl::History, &history_key(w, d, origin, seq), h.encode())?;
    let payload = tx.commit()?;
    Ok((
        PaymentOutput {
            c_id: c,
            c_balance: cust.balance,
            c_credit: cust.credit,
        },
        payload,
    ))
}

/// OrderStatus (clause 2.6.2), read-only: a customer's balance and their latest order with its lines.
pub fn order_status<B: Backend + ?Sized>(
    db: &B,
    inp: &OrderStatusInput,
) -> Result<OrderStatusOutput, TxnError> {
    order_status_tallied(db, inp).map(|r| r.0)
}

/// [`order_status`] with the tally of its writes.
fn order_status_tallied<B: Backend + ?Sized>(
    db: &B,
    inp: &OrderStatusInput,
) -> Result<(OrderStatusOutput, Payload), TxnError> {
    let (w, d) = (inp.w, inp.d);
    check_warehouse(db, w)?;
    check_district(d)?;
    let mut tx = Tally::new(db.begin(w));
    let c = resolve_customer(&mut tx, w, d, &inp.customer)?;
    let cust: CustomerRow = read_row(&mut tx, w, Tbl::Customer, &customer_key(w, d, c))?;
    let (lo, hi) = (
        order_customer_key(w, d, c, 0),
        order_customer_key(w, d, c, u32::MAX),
    );
    let latest = tx.rscan(
        w,
        Tbl::OorderCIdIdx,
        (Included(&lo[..]), Included(&hi[..])),
        1,
    )?;
    let order = match latest.first() {
        None => None,
        Some((k, _)) => {
            let o = parse_order_customer_key(k)?;
            let ord: OrderRow = read_row(&mut tx, w, Tbl::Oorder, &order_key(w, d, o))?;
            let (lo, hi) = (order_line_key(w, d, o, 0), order_line_key(w, d, o, u8::MAX));
            let mut lines = Vec::with_capacity(usize::from(ord.ol_cnt));
            for (_, v) in tx.scan(
                w,
                Tbl::OrderLine,
                (Included(&lo[..]), Included(&hi[..])),
                usize::MAX,
            )? {
                let l = OrderLineRow::decode(&v)?;
                lines.push(OrderLineStatus {
                    i_id: l.i_id,
                    supply_w: l.supply_w_id,
                    quantity: l.quantity,
                    amount: l.amount,
                    delivery_d: (l.delivery_d != 0).then_some(l.delivery_d),
                });
            }
            Some(LastOrder {
                o_id: o,
                entry_d: ord.entry_d,
                carrier_id: (ord.carrier_id != 0).then_some(ord.carrier_id),
                lines,
            })
        }
    };
    let payload = tx.commit()?;
    Ok((
        OrderStatusOutput {
            c_id: c,
            c_first: cust.first,
            c_last: cust.last,
            c_balance: cust.balance,
            order,
        },
        payload,
    ))
}

/// Delivery (clause 2.7.4), all ten districts in one transaction: deliver each one's oldest undelivered order.
pub fn delivery<B: Backend + ?Sized>(
    db: &B,
    inp: &DeliveryInput,
) -> Result<DeliveryOutput, TxnError> {
    delivery_tallied(db, inp).map(|r| r.0)
}

/// [`delivery`] with the tally of its writes.
fn delivery_tallied<B: Backend + ?Sized>(
    db: &B,
    inp: &DeliveryInput,
) -> Result<(DeliveryOutput, Payload), TxnError> {
    let w = inp.w;
    check_warehouse(db, w)?;
    let mut tx = Tally::new(db.begin(w));
    let mut delivered = [None; DISTRICTS as usize];
    for d in 1..=DISTRICTS {
        // Orders below the hint are all delivered (deleted), so the scan may start there.
        let hint = db
            .delivery_hint(w, d)
            .map_or(0, |h| h.load(std::sync::atomic::Ordering::Acquire));
        let (lo, hi) = (order_key(w, d, hint), order_key(w, d, u32::MAX));
        let oldest = tx.scan(w, Tbl::NewOrder, (Included(&lo[..]), Included(&hi[..])), 1)?;
        let Some((nk, nv)) = oldest.first() else {
            continue; // no undelivered order in this district: skip it
        };
        let o = parse_order_key(nk)?;
        tx.delete(w, Tbl::NewOrder, nk, nv.len())?;
        let ok = order_key(w, d, o);
        let (mut ord, ord_len): (OrderRow, _) = read_for_update(&mut tx, w, Tbl::Oorder, &ok)?;
        ord.carrier_id = inp.carrier_id;
        tx.update(w, Tbl::Oorder, &ok, ord_len, ord.encode())?;
        let (lo, hi) = (order_line_key(w, d, o, 0), order_line_key(w, d, o, u8::MAX));
        let mut sum = 0i64;
        for (k, v) in tx.scan(
            w,
            Tbl::OrderLine,
            (Included(&lo[..]), Included(&hi[..])),
            usize::MAX,
        )? {
            let mut l = OrderLineRow::decode(&v)?;
            sum += l.amount;
            l.delivery_d = inp.date;
            tx.update(w, Tbl::OrderLine, &k, v.len(), l.encode())?;
        }
        let ck = customer_key(w, d, ord.c_id);
        let (mut cust, cust_len): (CustomerRow, _) =
            read_for_update(&mut tx, w, Tbl::Customer, &ck)?;
        cust.balance += sum;
        cust.delivery_cnt = cust.delivery_cnt.wrapping_add(1);
        tx.update(w, Tbl::Customer, &ck, cust_len, cust.encode())?;
        delivered[usize::from(d - 1)] = Some(o);
    }
    let payload = tx.commit()?;
    for (d, o) in (1..=DISTRICTS).zip(delivered) {
        if let (Some(o), Some(h)) = (o, db.delivery_hint(w, d)) {
            h.fetch_max(o.wrapping_add(1), std::sync::atomic::Ordering::AcqRel);
        }
    }
    Ok((DeliveryOutput { delivered }, payload))
}

/// StockLevel (clause 2.8.2), read-only: distinct items of the district's last 20 orders below the threshold.
pub fn stock_level<B: Backend + ?Sized>(
    db: &B,
    inp: &StockLevelInput,
) -> Result<StockLevelOutput, TxnError> {
    stock_level_tallied(db, inp).map(|r| r.0)
}

/// [`stock_level`] with the tally of its writes.
fn stock_level_tallied<B: Backend + ?Sized>(
    db: &B,
    inp: &StockLevelInput,
) -> Result<(StockLevelOutput, Payload), TxnError> {
    let (w, d) = (inp.w, inp.d);
    check_warehouse(db, w)?;
    check_district(d)?;
    let mut tx = Tally::new(db.begin(w));
    let dist: DistrictRow = read_row(&mut tx, w, Tbl::District, &district_key(w, d))?;
    let next = dist.next_o_id;
    let (lo, hi) = (
        order_line_key(w, d, next.saturating_sub(20), 0),
        order_line_key(w, d, next, 0),
    );
    let lines = tx.scan(
        w,
        Tbl::OrderLine,
        (Included(&lo[..]), Excluded(&hi[..])),
        usize::MAX,
    )?;
    let mut items = Vec::with_capacity(lines.len());
    for (_, v) in &lines {
        items.push(OrderLineRow::decode(v)?.i_id);
    }
    items.sort_unstable();
    items.dedup();
    let mut low_stock = 0;
    for i in items {
        let sk = stock_key(w, i);
        let Some(v) = tx.get(w, Tbl::Stock, &sk)? else {
            return Err(missing(StockRow::TABLE, &sk));
        };
        if StockRow::decode_quantity(&v)? < inp.threshold {
            low_stock += 1;
        }
    }
    let payload = tx.commit()?;
    Ok((StockLevelOutput { low_stock }, payload))
}
