//! The TPC-C schema on mako-rs: table names, key layouts and value layouts, all in one place.
//!
//! # Keys
//!
//! A key is a concatenation of big-endian unsigned integers (and, in the
//! name index, zero-padded fixed-width strings), so the byte order of keys is
//! the spec's order of primary keys and every "all rows of district (w, d)"
//! question is a range scan. Widths: `w` (warehouse id) `u32`, `d` (district
//! id, 1..=10) `u8`, `c` (customer id) `u32`, `o` (order id) `u32`, `ol`
//! (order-line number, 1..=15) `u8`, `i` (item id) `u32`.
//!
//! | table | key | bytes | value |
//! |---|---|---|---|
//! | `warehouse` | `w` | 4 | [`WarehouseRow`] |
//! | `district` | `w d` | 5 | [`DistrictRow`] |
//! | `customer` | `w d c` | 9 | [`CustomerRow`] |
//! | `customer_name_idx` | `w d c_last[16] c_first[16] c` | 41 | [`CustomerNameRow`] (`c`) |
//! | `history` | `w d origin:u32 seq:u64` | 17 | [`HistoryRow`] |
//! | `new_order` | `w d o` | 9 | [`NewOrderRow`] (empty) |
//! | `oorder` | `w d o` | 9 | [`OrderRow`] |
//! | `oorder_c_id_idx` | `w d c o` | 13 | [`OrderCustomerRow`] (empty) |
//! | `order_line` | `w d o ol` | 10 | [`OrderLineRow`] |
//! | `item` | `i` | 4 | [`ItemRow`] |
//! | `stock` | `w i` | 8 | [`StockRow`] |
//!
//! `history` has no primary key in the spec; its key is the paying
//! district `(w, d)` (so a history row lives on the shard of the warehouse
//! that ran the Payment) followed by a unique `(origin, seq)`: origin 0 is
//! the loader (seq = customer id), origin `n > 0` is the `n`-th terminal of a
//! [`Db`](crate::Db) counting its own payments. In the name index the
//! strings are zero-padded to 16 bytes; TPC-C text never contains NUL, so a
//! shorter string sorts before its extensions exactly as strings do, and the
//! index orders a last name's customers by first name (then id).
//! `oorder_c_id_idx` (customer → orders) is not one of the spec's nine
//! tables: it is the access path Order-Status uses to find a customer's
//! latest order with one descending scan instead of reading the district's
//! whole order table.
//!
//! # Values
//!
//! Every value is fixed-size: fields in the order listed on each row type,
//! integers little-endian, money as `i64` cents (exact, so the consistency
//! sums are exact), rates (`*_tax`, `c_discount`) as `u16`
//! ten-thousandths (`0.1234` is `1234`), dates as `u64` seconds since the
//! Unix epoch, "null" dates and carrier ids as `0`. Strings are stored at the
//! spec's maximum width, zero-padded ([`Text`]), so a row has roughly the
//! spec's row size without any extra filler (customer 665 bytes, stock 306,
//! item 86). A value of the wrong length is a [`DecodeError`], never a panic.

use std::sync::Arc;

use bytes::Bytes;
use mako_storage::{StorageError, Store, Table};

/// Name of the warehouse table.
pub const WAREHOUSE: &str = "warehouse";
/// Name of the district table.
pub const DISTRICT: &str = "district";
/// Name of the customer table.
pub const CUSTOMER: &str = "customer";
/// Name of the customer-by-last-name index.
pub const CUSTOMER_NAME_IDX: &str = "customer_name_idx";
/// Name of the history table.
pub const HISTORY: &str = "history";
/// Name of the new-order table.
pub const NEW_ORDER: &str = "new_order";
/// Name of the order table (`order` is an SQL keyword, hence `oorder`).
pub const OORDER: &str = "oorder";
/// Name of the orders-by-customer index.
pub const OORDER_C_ID_IDX: &str = "oorder_c_id_idx";
/// Name of the order-line table.
pub const ORDER_LINE: &str = "order_line";
/// Name of the item table (replicated to every shard).
pub const ITEM: &str = "item";
/// Name of the stock table.
pub const STOCK: &str = "stock";

/// Every table of the schema, in creation order.
pub const TABLE_NAMES: [&str; 11] = [
    WAREHOUSE,
    DISTRICT,
    CUSTOMER,
    CUSTOMER_NAME_IDX,
    HISTORY,
    NEW_ORDER,
    OORDER,
    OORDER_C_ID_IDX,
    ORDER_LINE,
    ITEM,
    STOCK,
];

/// A row (or key) that does not have the layout its table prescribes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A value of the wrong length.
    #[error("malformed {table} value: {got} bytes, expected {expected}")]
    Value {
        /// Table the value came from.
        table: &'static str,
        /// Size of the table's rows.
        expected: usize,
        /// Size found.
        got: usize,
    },
    /// A key of the wrong length.
    #[error("malformed {table} key: {got} bytes, expected {expected}")]
    Key {
        /// Table the key came from.
        table: &'static str,
        /// Size of the table's keys.
        expected: usize,
        /// Size found.
        got: usize,
    },
}

/// A string stored at a fixed width of `N` bytes, zero-padded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text<const N: usize>([u8; N]);

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Text([0; N])
    }
}

impl<const N: usize> Text<N> {
    /// The text of `s`, cut to `N` bytes (a NUL byte ends the text).
    pub fn new(s: &[u8]) -> Self {
        let mut buf = [0u8; N];
        let n = s.len().min(N);
        buf[..n].copy_from_slice(&s[..n]);
        Text(buf)
    }

    /// The text's bytes, without the padding.
    pub fn as_bytes(&self) -> &[u8] {
        let n = self.0.iter().position(|&b| b == 0).unwrap_or(N);
        &self.0[..n]
    }

    /// The padded `N` bytes, as stored in keys and values.
    pub fn padded(&self) -> &[u8; N] {
        &self.0
    }

    /// Whether `needle` occurs in the text.
    pub fn contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty() && self.as_bytes().windows(needle.len()).any(|w| w == needle)
    }

    /// The text as a `String` (invalid UTF-8 replaced).
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

impl<const N: usize> serde::Serialize for Text<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_bytes())
    }
}

impl<'de, const N: usize> serde::Deserialize<'de> for Text<N> {
    /// Bytes longer than `N` are an error (not cut), so a decoded text re-encodes the same.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Vec<u8> = serde::Deserialize::deserialize(d)?;
        if v.len() > N {
            return Err(serde::de::Error::invalid_length(
                v.len(),
                &"at most N bytes",
            ));
        }
        Ok(Text::new(&v))
    }
}

impl<const N: usize> std::fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

impl<const N: usize> std::fmt::Display for Text<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

/// Reads fixed-size fields off the front of a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    /// The next `K` bytes; `None` if fewer are left (callers check sizes first).
    fn take<const K: usize>(&mut self) -> Option<[u8; K]> {
        let (head, rest) = self.buf.split_first_chunk::<K>()?;
        self.buf = rest;
        Some(*head)
    }
}

/// A fixed-size value field: how it is written and read.
trait Field: Sized {
    /// Encoded size in bytes.
    const SIZE: usize;
    /// Appends the field's encoding.
    fn put(&self, out: &mut Vec<u8>);
    /// Reads the field; `None` if the input is short.
    fn get(r: &mut Reader<'_>) -> Option<Self>;
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(r: &mut Reader<'_>) -> Option<Self> {
                r.take().map(<$t>::from_le_bytes)
            }
        }
    )*};
}
int_field!(u8, u16, u32, u64, i32, i64);

impl<const N: usize> Field for Text<N> {
    const SIZE: usize = N;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
    fn get(r: &mut Reader<'_>) -> Option<Self> {
        r.take().map(Text)
    }
}

impl<T: Field + Copy + Default, const K: usize> Field for [T; K] {
    const SIZE: usize = T::SIZE * K;
    fn put(&self, out: &mut Vec<u8>) {
        for x in self {
            x.put(out);
        }
    }
    fn get(r: &mut Reader<'_>) -> Option<Self> {
        let mut out = [T::default(); K];
        for x in &mut out {
            *x = T::get(r)?;
        }
        Some(out)
    }
}

/// A table's value type with its fixed binary layout.
pub trait Row: Sized {
    /// Name of the table holding such rows.
    const TABLE: &'static str;
    /// Encoded size in bytes (every value of the table has exactly this size).
    const SIZE: usize;
    /// The row's encoding.
    fn encode(&self) -> Bytes;
    /// Decodes a value; a value of the wrong size is a [`DecodeError`].
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// Declares a row struct with public fields and its fixed-layout [`Row`] impl.
macro_rules! row {
    (
        $(#[$m:meta])*
        pub struct $name:ident in $table:ident {
            $( $(#[$fm:meta])* $f:ident : $t:ty, )*
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name {
            $( $(#[$fm])* pub $f: $t, )*
        }

        impl Row for $name {
            const TABLE: &'static str = $table;
            const SIZE: usize = 0 $( + <$t as Field>::SIZE )*;

            #[allow(unused_mut)]
            fn encode(&self) -> Bytes {
                let mut out = Vec::with_capacity(Self::SIZE);
                $( Field::put(&self.$f, &mut out); )*
                Bytes::from(out)
            }

            #[allow(unused_mut, unused_variables)]
            fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                let bad = || DecodeError::Value {
                    table: $table,
                    expected: Self::SIZE,
                    got: bytes.len(),
                };
                if bytes.len() != Self::SIZE {
                    return Err(bad());
                }
                let mut r = Reader { buf: bytes };
                Ok($name {
                    $( $f: <$t as Field>::get(&mut r).ok_or_else(bad)?, )*
                })
            }
        }
    };
}

row! {
    /// A `warehouse` row (91 bytes).
    pub struct WarehouseRow in WAREHOUSE {
        /// W_NAME.
        name: Text<10>,
        /// W_STREET_1.
        street_1: Text<20>,
        /// W_STREET_2.
        street_2: Text<20>,
        /// W_CITY.
        city: Text<20>,
        /// W_STATE.
        state: Text<2>,
        /// W_ZIP.
        zip: Text<9>,
        /// W_TAX, ten-thousandths.
        tax: u16,
        /// W_YTD, cents.
        ytd: i64,
    }
}

row! {
    /// A `district` row (95 bytes).
    pub struct DistrictRow in DISTRICT {
        /// D_NAME.
        name: Text<10>,
        /// D_STREET_1.
        street_1: Text<20>,
        /// D_STREET_2.
        street_2: Text<20>,
        /// D_CITY.
        city: Text<20>,
        /// D_STATE.
        state: Text<2>,
        /// D_ZIP.
        zip: Text<9>,
        /// D_TAX, ten-thousandths.
        tax: u16,
        /// D_YTD, cents.
        ytd: i64,
        /// D_NEXT_O_ID.
        next_o_id: u32,
    }
}

row! {
    /// A `customer` row (665 bytes).
    pub struct CustomerRow in CUSTOMER {
        /// C_FIRST.
        first: Text<16>,
        /// C_MIDDLE (`OE`).
        middle: Text<2>,
        /// C_LAST.
        last: Text<16>,
        /// C_STREET_1.
        street_1: Text<20>,
        /// C_STREET_2.
        street_2: Text<20>,
        /// C_CITY.
        city: Text<20>,
        /// C_STATE.
        state: Text<2>,
        /// C_ZIP.
        zip: Text<9>,
        /// C_PHONE.
        phone: Text<16>,
        /// C_SINCE, seconds.
        since: u64,
        /// C_CREDIT: `GC` or `BC`.
        credit: Text<2>,
        /// C_CREDIT_LIM, cents.
        credit_lim: i64,
        /// C_DISCOUNT, ten-thousandths.
        discount: u16,
        /// C_BALANCE, cents.
        balance: i64,
        /// C_YTD_PAYMENT, cents.
        ytd_payment: i64,
        /// C_PAYMENT_CNT.
        payment_cnt: u32,
        /// C_DELIVERY_CNT.
        delivery_cnt: u32,
        /// C_DATA.
        data: Text<500>,
    }
}

row! {
    /// A `customer_name_idx` value: the customer id (4 bytes).
    pub struct CustomerNameRow in CUSTOMER_NAME_IDX {
        /// C_ID of the indexed customer.
        c_id: u32,
    }
}

row! {
    /// A `history` row (54 bytes).
    pub struct HistoryRow in HISTORY {
        /// H_C_ID.
        c_id: u32,
        /// H_C_D_ID.
        c_d_id: u8,
        /// H_C_W_ID.
        c_w_id: u32,
        /// H_D_ID.
        d_id: u8,
        /// H_W_ID.
        w_id: u32,
        /// H_DATE, seconds.
        date: u64,
        /// H_AMOUNT, cents.
        amount: i64,
        /// H_DATA.
        data: Text<24>,
    }
}

row! {
    /// A `new_order` value: empty, the key says it all (0 bytes).
    pub struct NewOrderRow in NEW_ORDER {}
}

row! {
    /// An `oorder` row (15 bytes).
    pub struct OrderRow in OORDER {
        /// O_C_ID.
        c_id: u32,
        /// O_ENTRY_D, seconds.
        entry_d: u64,
        /// O_CARRIER_ID, 0 for null (not delivered).
        carrier_id: u8,
        /// O_OL_CNT.
        ol_cnt: u8,
        /// O_ALL_LOCAL, 0 or 1.
        all_local: u8,
    }
}

row! {
    /// An `oorder_c_id_idx` value: empty, the key says it all (0 bytes).
    pub struct OrderCustomerRow in OORDER_C_ID_IDX {}
}

row! {
    /// An `order_line` row (49 bytes).
    pub struct OrderLineRow in ORDER_LINE {
        /// OL_I_ID.
        i_id: u32,
        /// OL_SUPPLY_W_ID.
        supply_w_id: u32,
        /// OL_DELIVERY_D, seconds, 0 for null.
        delivery_d: u64,
        /// OL_QUANTITY.
        quantity: u8,
        /// OL_AMOUNT, cents.
        amount: i64,
        /// OL_DIST_INFO.
        dist_info: Text<24>,
    }
}

row! {
    /// An `item` row (86 bytes).
    pub struct ItemRow in ITEM {
        /// I_IM_ID.
        im_id: u32,
        /// I_NAME.
        name: Text<24>,
        /// I_PRICE, cents.
        price: i64,
        /// I_DATA.
        data: Text<50>,
    }
}

row! {
    /// A `stock` row (306 bytes).
    pub struct StockRow in STOCK {
        /// S_QUANTITY.
        quantity: i32,
        /// S_DIST_01 ..= S_DIST_10 (index `d - 1`).
        dist: [Text<24>; 10],
        /// S_YTD.
        ytd: u32,
        /// S_ORDER_CNT.
        order_cnt: u32,
        /// S_REMOTE_CNT.
        remote_cnt: u32,
        /// S_DATA.
        data: Text<50>,
    }
}

impl StockRow {
    /// S_QUANTITY of an encoded stock row, without decoding the rest (StockLevel reads only this).
    pub fn decode_quantity(bytes: &[u8]) -> Result<i32, DecodeError> {
        match bytes.first_chunk::<4>() {
            Some(q) if bytes.len() == Self::SIZE => Ok(i32::from_le_bytes(*q)),
            _ => Err(DecodeError::Value {
                table: STOCK,
                expected: Self::SIZE,
                got: bytes.len(),
            }),
        }
    }
}

/// Concatenates key parts into an `N`-byte key (the parts' lengths add up to `N` by construction).
fn key<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut k = [0u8; N];
    let mut at = 0;
    for p in parts {
        k[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    debug_assert_eq!(at, N, "key parts must fill the key");
    k
}

/// Key of warehouse `w`.
pub fn warehouse_key(w: u32) -> [u8; 4] {
    w.to_be_bytes()
}

/// Key of district `(w, d)`.
pub fn district_key(w: u32, d: u8) -> [u8; 5] {
    key(&[&w.to_be_bytes(), &[d]])
}

/// Key of customer `(w, d, c)`.
pub fn customer_key(w: u32, d: u8, c: u32) -> [u8; 9] {
    key(&[&w.to_be_bytes(), &[d], &c.to_be_bytes()])
}

/// Key of a `customer_name_idx` entry.
pub fn customer_name_key(w: u32, d: u8, last: &Text<16>, first: &Text<16>, c: u32) -> [u8; 41] {
    key(&[
        &w.to_be_bytes(),
        &[d],
        last.padded(),
        first.padded(),
        &c.to_be_bytes(),
    ])
}

/// The inclusive key range of every `customer_name_idx` entry of last name `last` in `(w, d)`.
pub fn customer_name_range(w: u32, d: u8, last: &Text<16>) -> ([u8; 41], [u8; 41]) {
    let lo = key(&[&w.to_be_bytes(), &[d], last.padded(), &[0u8; 20]]);
    let hi = key(&[&w.to_be_bytes(), &[d], last.padded(), &[0xffu8; 20]]);
    (lo, hi)
}

/// The customer id at the end of a `customer_name_idx` key.
pub fn parse_customer_name_key(k: &[u8]) -> Result<u32, DecodeError> {
    let k: &[u8; 41] = k.try_into().map_err(|_| DecodeError::Key {
        table: CUSTOMER_NAME_IDX,
        expected: 41,
        got: k.len(),
    })?;
    Ok(u32::from_be_bytes([k[37], k[38], k[39], k[40]]))
}

/// Key of a `history` row: paying district `(w, d)`, then a unique `(origin, seq)`.
pub fn history_key(w: u32, d: u8, origin: u32, seq: u64) -> [u8; 17] {
    key(&[
        &w.to_be_bytes(),
        &[d],
        &origin.to_be_bytes(),
        &seq.to_be_bytes(),
    ])
}

/// Key of order `(w, d, o)` in `oorder` and `new_order`.
pub fn order_key(w: u32, d: u8, o: u32) -> [u8; 9] {
    key(&[&w.to_be_bytes(), &[d], &o.to_be_bytes()])
}

/// The order id of an `oorder` or `new_order` key.
pub fn parse_order_key(k: &[u8]) -> Result<u32, DecodeError> {
    let k: &[u8; 9] = k.try_into().map_err(|_| DecodeError::Key {
        table: NEW_ORDER,
        expected: 9,
        got: k.len(),
    })?;
    Ok(u32::from_be_bytes([k[5], k[6], k[7], k[8]]))
}

/// Key of an `oorder_c_id_idx` entry: customer `(w, d, c)`, then order `o`.
pub fn order_customer_key(w: u32, d: u8, c: u32, o: u32) -> [u8; 13] {
    key(&[&w.to_be_bytes(), &[d], &c.to_be_bytes(), &o.to_be_bytes()])
}

/// The order id of an `oorder_c_id_idx` key.
pub fn parse_order_customer_key(k: &[u8]) -> Result<u32, DecodeError> {
    let k: &[u8; 13] = k.try_into().map_err(|_| DecodeError::Key {
        table: OORDER_C_ID_IDX,
        expected: 13,
        got: k.len(),
    })?;
    Ok(u32::from_be_bytes([k[9], k[10], k[11], k[12]]))
}

/// Key of order line `(w, d, o, ol)`.
pub fn order_line_key(w: u32, d: u8, o: u32, ol: u8) -> [u8; 10] {
    key(&[&w.to_be_bytes(), &[d], &o.to_be_bytes(), &[ol]])
}

/// The order id of an `order_line` key.
pub fn parse_order_line_key(k: &[u8]) -> Result<u32, DecodeError> {
    let k: &[u8; 10] = k.try_into().map_err(|_| DecodeError::Key {
        table: ORDER_LINE,
        expected: 10,
        got: k.len(),
    })?;
    Ok(u32::from_be_bytes([k[5], k[6], k[7], k[8]]))
}

/// Key of item `i`.
pub fn item_key(i: u32) -> [u8; 4] {
    i.to_be_bytes()
}

/// Key of the stock of item `i` in warehouse `w`.
pub fn stock_key(w: u32, i: u32) -> [u8; 8] {
    key(&[&w.to_be_bytes(), &i.to_be_bytes()])
}

/// Handles to every table of the schema in one store.
#[derive(Debug, Clone)]
pub struct Tables {
    /// `warehouse`.
    pub warehouse: Arc<Table>,
    /// `district`.
    pub district: Arc<Table>,
    /// `customer`.
    pub customer: Arc<Table>,
    /// `customer_name_idx`.
    pub customer_name_idx: Arc<Table>,
    /// `history`.
    pub history: Arc<Table>,
    /// `new_order`.
    pub new_order: Arc<Table>,
    /// `oorder`.
    pub oorder: Arc<Table>,
    /// `oorder_c_id_idx`.
    pub oorder_c_id_idx: Arc<Table>,
    /// `order_line`.
    pub order_line: Arc<Table>,
    /// `item`.
    pub item: Arc<Table>,
    /// `stock`.
    pub stock: Arc<Table>,
}

impl Tables {
    /// Creates (or opens) every table of the schema in `store`.
    pub fn create(store: &Store) -> Result<Self, StorageError> {
        Self::build(|name| store.create_table(name))
    }

    /// Opens the tables of a store that holds them; the name of the first missing table otherwise.
    pub fn open(store: &Store) -> Result<Self, &'static str> {
        Self::build(|name| store.table(name).ok_or(name))
    }

    fn build<E>(mut get: impl FnMut(&'static str) -> Result<Arc<Table>, E>) -> Result<Self, E> {
        Ok(Tables {
            warehouse: get(WAREHOUSE)?,
            district: get(DISTRICT)?,
            customer: get(CUSTOMER)?,
            customer_name_idx: get(CUSTOMER_NAME_IDX)?,
            history: get(HISTORY)?,
            new_order: get(NEW_ORDER)?,
            oorder: get(OORDER)?,
            oorder_c_id_idx: get(OORDER_C_ID_IDX)?,
            order_line: get(ORDER_LINE)?,
            item: get(ITEM)?,
            stock: get(STOCK)?,
        })
    }

    /// Every table with its name, in [`TABLE_NAMES`] order.
    pub fn all(&self) -> [(&'static str, &Arc<Table>); 11] {
        [
            (WAREHOUSE, &self.warehouse),
            (DISTRICT, &self.district),
            (CUSTOMER, &self.customer),
            (CUSTOMER_NAME_IDX, &self.customer_name_idx),
            (HISTORY, &self.history),
            (NEW_ORDER, &self.new_order),
            (OORDER, &self.oorder),
            (OORDER_C_ID_IDX, &self.oorder_c_id_idx),
            (ORDER_LINE, &self.order_line),
            (ITEM, &self.item),
            (STOCK, &self.stock),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_sizes_match_the_documented_layouts() {
        assert_eq!(WarehouseRow::SIZE, 91);
        assert_eq!(DistrictRow::SIZE, 95);
        assert_eq!(CustomerRow::SIZE, 665);
        assert_eq!(CustomerNameRow::SIZE, 4);
        assert_eq!(HistoryRow::SIZE, 54);
        assert_eq!(NewOrderRow::SIZE, 0);
        assert_eq!(OrderRow::SIZE, 15);
        assert_eq!(OrderCustomerRow::SIZE, 0);
        assert_eq!(OrderLineRow::SIZE, 49);
        assert_eq!(ItemRow::SIZE, 86);
        assert_eq!(StockRow::SIZE, 306);
    }

    #[test]
    fn rows_round_trip_and_wrong_sizes_are_errors() {
        let mut s = StockRow {
            quantity: -3,
            ytd: 7,
            order_cnt: 2,
            remote_cnt: 1,
            data: Text::new(b"xxORIGINALyy"),
            ..StockRow::default()
        };
        s.dist[9] = Text::new(b"district ten");
        let enc = s.encode();
        assert_eq!(enc.len(), StockRow::SIZE);
        assert_eq!(StockRow::decode(&enc), Ok(s));
        assert_eq!(StockRow::decode_quantity(&enc), Ok(-3));
        assert!(StockRow::decode_quantity(&enc[..300]).is_err());
        assert!(s.data.contains(b"ORIGINAL"));
        assert!(matches!(
            StockRow::decode(&enc[1..]),
            Err(DecodeError::Value {
                table: STOCK,
                expected: 306,
                got: 305
            })
        ));
        assert_eq!(NewOrderRow::decode(&[]), Ok(NewOrderRow {}));
        assert!(NewOrderRow::decode(&[1]).is_err());
    }

    #[test]
    fn keys_sort_numerically_and_parse_back() {
        assert!(order_key(1, 2, 255) < order_key(1, 2, 256));
        assert!(order_key(1, 10, 1) < order_key(2, 1, 1));
        assert!(order_line_key(1, 1, 9, 15) < order_line_key(1, 1, 10, 1));
        assert_eq!(parse_order_key(&order_key(3, 4, 70_000)), Ok(70_000));
        assert_eq!(
            parse_order_customer_key(&order_customer_key(3, 4, 5, 6)),
            Ok(6)
        );
        assert_eq!(parse_order_line_key(&order_line_key(3, 4, 77, 5)), Ok(77));
        let last = Text::new(b"BARBAR");
        let k = customer_name_key(1, 2, &last, &Text::new(b"Zed"), 42);
        assert_eq!(parse_customer_name_key(&k), Ok(42));
        let (lo, hi) = customer_name_range(1, 2, &last);
        assert!(lo <= k && k <= hi);
        let longer = customer_name_key(1, 2, &Text::new(b"BARBARBAR"), &Text::new(b"A"), 1);
        assert!(longer > hi);
        // A shorter first name sorts before its extensions.
        assert!(
            customer_name_key(1, 2, &last, &Text::new(b"Ann"), 9)
                < customer_name_key(1, 2, &last, &Text::new(b"Anna"), 1)
        );
        assert!(parse_order_key(&[0; 8]).is_err());
    }
}
