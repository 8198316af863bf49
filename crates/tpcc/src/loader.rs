//! The parallel loader: populates the tables by the spec's rules (clause 4.3.3.1), one job per warehouse.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::sync::Mutex;

use bytes::Bytes;
use mako_storage::Stamp;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::backend::Tbl;
use crate::config::{DISTRICTS, Scale, ShardMap, TpccConfig, TpccError};
use crate::random::{NuRandC, a_string, data_with_original, last_name, n_string, zip};
use crate::schema::{
    CustomerNameRow, CustomerRow, DistrictRow, HistoryRow, ItemRow, NewOrderRow, OrderCustomerRow,
    OrderLineRow, OrderRow, Row, StockRow, Tables, Text, WarehouseRow, customer_key,
    customer_name_key, district_key, history_key, item_key, order_customer_key, order_key,
    order_line_key, stock_key, warehouse_key,
};

/// Progress of the load phase.
#[derive(Debug, Clone, Copy)]
pub struct LoadProgress {
    /// Rows written so far.
    pub rows: u64,
    /// Rows the load will write (estimated: order lines are random, 10 per order on average).
    pub expected_rows: u64,
    /// Time since loading started.
    pub elapsed: Duration,
}

/// Initial W_YTD, cents (300,000.00).
pub const INITIAL_W_YTD: i64 = 30_000_000;
/// Initial D_YTD, cents (30,000.00).
pub const INITIAL_D_YTD: i64 = 3_000_000;

/// Items per item-loading job.
const ITEM_CHUNK: u32 = 10_000;

/// One unit of loading work.
#[derive(Debug, Clone, Copy)]
enum Job {
    /// Warehouse `w` with its stock, districts, customers, history and orders.
    Warehouse(u32),
    /// Items `lo..=hi`, written to every shard.
    Items(u32, u32),
}

/// A seed for stream `stream` derived from `seed` (SplitMix64), so the data do not depend on the thread count.
pub(crate) fn sub_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Rows a load of `warehouses` warehouses at `scale` over `shards` shards writes (order lines estimated).
fn expected_rows(scale: &Scale, warehouses: u32, shards: usize) -> u64 {
    let (c, o) = (
        u64::from(scale.customers_per_district),
        u64::from(scale.orders_per_district),
    );
    let per_district = 1 + 3 * c + 2 * o + u64::from(scale.new_orders_per_district()) + 10 * o;
    let per_warehouse = 1 + u64::from(scale.items) + u64::from(DISTRICTS) * per_district;
    u64::from(warehouses) * per_warehouse + shards as u64 * u64::from(scale.items)
}

/// Where the loader writes rows: directly into stores, or through transactions on shard leaders.
pub(crate) trait LoadSink {
    /// Writes one row of table `t` on shard `shard`.
    fn put(&mut self, shard: usize, t: Tbl, key: &[u8], value: Bytes);
    /// Makes everything written so far durable (or reports why not).
    fn finish(&mut self) -> Result<(), TpccError>;
}

/// Writes rows straight into in-process stores, stamped `(epoch 0, ts 1)`.
pub(crate) struct DirectSink<'a> {
    tables: &'a [Tables],
    stamp: Stamp,
}

impl<'a> DirectSink<'a> {
    /// A sink over every shard's tables.
    pub(crate) fn new(tables: &'a [Tables]) -> Self {
        DirectSink {
            tables,
            stamp: Stamp::single(0, 1),
        }
    }
}

impl LoadSink for DirectSink<'_> {
    #[inline]
    fn put(&mut self, shard: usize, t: Tbl, key: &[u8], value: Bytes) {
        if let Some(tables) = self.tables.get(shard) {
            tables.get(t).put(key, value, self.stamp.clone());
        }
    }

    fn finish(&mut self) -> Result<(), TpccError> {
        Ok(())
    }
}

/// Loads every shard's tables through sinks made by `sink(loader_thread)`; returns the NURand constants used for last names.
pub(crate) fn populate<S: LoadSink>(
    cfg: &TpccConfig,
    map: &ShardMap,
    sink: impl Fn(usize) -> S + Sync,
    mut progress: impl FnMut(LoadProgress),
) -> Result<NuRandC, TpccError> {
    let started = Instant::now();
    let c_load = NuRandC::for_load(&mut SmallRng::seed_from_u64(sub_seed(cfg.seed, 0)));
    let mut jobs: Vec<Job> = (1..=cfg.warehouses).map(Job::Warehouse).collect();
    let mut lo = 1;
    while lo <= cfg.scale.items {
        let hi = lo.saturating_add(ITEM_CHUNK - 1).min(cfg.scale.items);
        jobs.push(Job::Items(lo, hi));
        lo = hi + 1;
    }
    let threads = cfg.threads.clamp(1, jobs.len());
    let next_job = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let rows = AtomicU64::new(0);
    let failure: Mutex<Option<TpccError>> = Mutex::new(None);
    let expected = expected_rows(&cfg.scale, cfg.warehouses, map.shards());
    let report = |rows: &AtomicU64| LoadProgress {
        rows: rows.load(Ordering::Relaxed),
        expected_rows: expected,
        elapsed: started.elapsed(),
    };
    std::thread::scope(|s| {
        for i in 0..threads {
            let (sink, rows, next_job, jobs, finished, failure) =
                (&sink, &rows, &next_job, &jobs, &finished, &failure);
            s.spawn(move || {
                let mut loader = Loader {
                    scale: &cfg.scale,
                    shards: map.shards(),
                    c_load,
                    sink: sink(i),
                    now: unix_now(),
                    rows,
                    pending: 0,
                };
                loop {
                    let j = next_job.fetch_add(1, Ordering::Relaxed);
                    let Some(&job) = jobs.get(j) else { break };
                    let mut rng = SmallRng::seed_from_u64(sub_seed(cfg.seed, j as u64 + 1));
                    match job {
                        Job::Warehouse(w) => loader.warehouse(map.shard_of(w), w, &mut rng),
                        Job::Items(lo, hi) => loader.items(lo, hi, &mut rng),
                    }
                    loader.flush();
                }
                if let Err(e) = loader.sink.finish()
                    && let Ok(mut f) = failure.lock()
                {
                    f.get_or_insert(e);
                }
                finished.fetch_add(1, Ordering::Release);
            });
        }
        let mut last = Instant::now();
        while finished.load(Ordering::Acquire) < threads {
            std::thread::sleep(Duration::from_millis(20));
            if last.elapsed() >= Duration::from_millis(250) {
                last = Instant::now();
                progress(report(&rows));
            }
        }
    });
    progress(report(&rows));
    match failure.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(c_load),
    }
}

/// One loading thread's state.
struct Loader<'a, S> {
    scale: &'a Scale,
    shards: usize,
    c_load: NuRandC,
    sink: S,
    now: u64,
    rows: &'a AtomicU64,
    pending: u64,
}

impl<S: LoadSink> Loader<'_, S> {
    /// Writes one row.
    fn put(&mut self, shard: usize, t: Tbl, key: &[u8], row: &impl Row) {
        self.sink.put(shard, t, key, row.encode());
        self.pending += 1;
        if self.pending >= 4096 {
            self.flush();
        }
    }

    /// Publishes the rows written since the last flush to the progress counter.
    fn flush(&mut self) {
        self.rows.fetch_add(self.pending, Ordering::Relaxed);
        self.pending = 0;
    }

    /// Items `lo..=hi`, identical on every shard.
    fn items(&mut self, lo: u32, hi: u32, rng: &mut SmallRng) {
        for i in lo..=hi {
            let row = ItemRow {
                im_id: rng.random_range(1..=10_000),
                name: a_string(rng, 14, 24),
                price: rng.random_range(100..=10_000),
                data: data_with_original(rng),
            };
            for shard in 0..self.shards {
                self.put(shard, Tbl::Item, &item_key(i), &row);
            }
        }
    }

    /// Warehouse `w`: its row, its stock, and its districts.
    fn warehouse(&mut self, t: usize, w: u32, rng: &mut SmallRng) {
        let row = WarehouseRow {
            name: a_string(rng, 6, 10),
            street_1: a_string(rng, 10, 20),
            street_2: a_string(rng, 10, 20),
            city: a_string(rng, 10, 20),
            state: a_string(rng, 2, 2),
            zip: zip(rng),
            tax: rng.random_range(0..=2000),
            ytd: INITIAL_W_YTD,
        };
        self.put(t, Tbl::Warehouse, &warehouse_key(w), &row);
        for i in 1..=self.scale.items {
            let mut dist = [Text::default(); 10];
            for x in &mut dist {
                *x = a_string(rng, 24, 24);
            }
            let row = StockRow {
                quantity: rng.random_range(10..=100),
                dist,
                ytd: 0,
                order_cnt: 0,
                remote_cnt: 0,
                data: data_with_original(rng),
            };
            self.put(t, Tbl::Stock, &stock_key(w, i), &row);
        }
        for d in 1..=DISTRICTS {
            self.district(t, w, d, rng);
        }
    }

    /// District `(w, d)`: its row, customers (with name index and history) and orders.
    fn district(&mut self, t: usize, w: u32, d: u8, rng: &mut SmallRng) {
        let scale = *self.scale;
        let row = DistrictRow {
            name: a_string(rng, 6, 10),
            street_1: a_string(rng, 10, 20),
            street_2: a_string(rng, 10, 20),
            city: a_string(rng, 10, 20),
            state: a_string(rng, 2, 2),
            zip: zip(rng),
            tax: rng.random_range(0..=2000),
            ytd: INITIAL_D_YTD,
            next_o_id: scale.orders_per_district + 1,
        };
        self.put(t, Tbl::District, &district_key(w, d), &row);
        for c in 1..=scale.customers_per_district {
            let last = if c <= 1000 {
                last_name(c - 1)
            } else {
                last_name(self.c_load.last_name_number(rng, 999))
            };
            let row = CustomerRow {
                first: a_string(rng, 8, 16),
                middle: Text::new(b"OE"),
                last,
                street_1: a_string(rng, 10, 20),
                street_2: a_string(rng, 10, 20),
                city: a_string(rng, 10, 20),
                state: a_string(rng, 2, 2),
                zip: zip(rng),
                phone: n_string(rng, 16, 16),
                since: self.now,
                credit: Text::new(if rng.random_bool(0.1) { b"BC" } else { b"GC" }),
                credit_lim: 5_000_000,
                discount: rng.random_range(0..=5000),
                balance: -1000,
                ytd_payment: 1000,
                payment_cnt: 1,
                delivery_cnt: 0,
                data: a_string(rng, 300, 500),
            };
            self.put(t, Tbl::Customer, &customer_key(w, d, c), &row);
            self.put(
                t,
                Tbl::CustomerNameIdx,
                &customer_name_key(w, d, &row.last, &row.first, c),
                &CustomerNameRow { c_id: c },
            );
            let h = HistoryRow {
                c_id: c,
                c_d_id: d,
                c_w_id: w,
                d_id: d,
                w_id: w,
                date: self.now,
                amount: 1000,
                data: a_string(rng, 12, 24),
            };
            self.put(t, Tbl::History, &history_key(w, d, 0, u64::from(c)), &h);
        }
        let mut perm: Vec<u32> = (1..=scale.customers_per_district).collect();
        perm.shuffle(rng);
        let first_new = scale.first_new_order();
        for o in 1..=scale.orders_per_district {
            let c = perm[(o as usize - 1) % perm.len()];
            let delivered = o < first_new;
            let ol_cnt: u8 = rng.random_range(5..=15);
            let row = OrderRow {
                c_id: c,
                entry_d: self.now,
                carrier_id: if delivered {
                    rng.random_range(1..=10)
                } else {
                    0
                },
                ol_cnt,
                all_local: 1,
            };
            self.put(t, Tbl::Oorder, &order_key(w, d, o), &row);
            self.put(
                t,
                Tbl::OorderCIdIdx,
                &order_customer_key(w, d, c, o),
                &OrderCustomerRow {},
            );
            if !delivered {
                self.put(t, Tbl::NewOrder, &order_key(w, d, o), &NewOrderRow {});
            }
            for ol in 1..=ol_cnt {
                let row = OrderLineRow {
                    i_id: rng.random_range(1..=scale.items),
                    supply_w_id: w,
                    delivery_d: if delivered { self.now } else { 0 },
                    quantity: 5,
                    amount: if delivered {
                        0
                    } else {
                        rng.random_range(1..=999_999)
                    },
                    dist_info: a_string(rng, 24, 24),
                };
                self.put(t, Tbl::OrderLine, &order_line_key(w, d, o, ol), &row);
            }
        }
    }
}
