//! A terminal: one worker's home warehouse and the random inputs of its transactions (clauses 2.4.1–2.8.1).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::{DISTRICTS, Scale, TpccConfig};
use crate::db::Db;
use crate::loader::{sub_seed, unix_now};
use crate::random::{NuRandC, last_name};
use crate::txn::{
    CustomerSel, DeliveryInput, NewOrderInput, OrderLineInput, OrderStatusInput, PaymentInput,
    StockLevelInput, TxnInput, TxnKind,
};

/// Seed stream of the run-time NURand constants (shared by every terminal).
const RUN_CONSTANTS_STREAM: u64 = u64::MAX;

/// One worker's view of the benchmark: home warehouse, its StockLevel district, random inputs.
#[derive(Debug)]
pub struct Terminal {
    rng: SmallRng,
    c_run: NuRandC,
    warehouses: u32,
    home: u32,
    district: u8,
    items: u32,
    customers: u32,
    max_last_name: u32,
    origin: u32,
    seq: u64,
    cumulative_mix: [u32; 5],
    remote_item: f64,
    remote_payment: f64,
    by_last_name: f64,
    rollback: f64,
}

impl Terminal {
    /// Terminal `id` of `db` under `cfg`: home warehouse `id % W + 1`, StockLevel district `(id / W) % 10 + 1`.
    pub fn new(db: &Db, cfg: &TpccConfig, id: usize) -> Self {
        Self::build(
            db.warehouses(),
            db.scale(),
            db.nurand_load(),
            db.next_origin(),
            cfg,
            id,
        )
    }

    /// Terminal `id` of a database of `warehouses` at `scale` loaded with `c_load`; `origin` keys its history rows.
    pub(crate) fn build(
        warehouses: u32,
        scale: Scale,
        c_load: NuRandC,
        origin: u32,
        cfg: &TpccConfig,
        id: usize,
    ) -> Self {
        let c_run = NuRandC::for_run(
            &c_load,
            &mut SmallRng::seed_from_u64(sub_seed(cfg.seed, RUN_CONSTANTS_STREAM)),
        );
        let mut cumulative_mix = cfg.mix.weights();
        for i in 1..cumulative_mix.len() {
            cumulative_mix[i] += cumulative_mix[i - 1];
        }
        let w = warehouses as usize;
        Terminal {
            rng: SmallRng::seed_from_u64(sub_seed(cfg.seed ^ 0x7e57_7e57, id as u64)),
            c_run,
            warehouses,
            home: (id % w) as u32 + 1,
            district: ((id / w) % usize::from(DISTRICTS)) as u8 + 1,
            items: scale.items,
            customers: scale.customers_per_district,
            max_last_name: scale.max_last_name(),
            origin,
            seq: 0,
            cumulative_mix,
            remote_item: cfg.remote_item_pct / 100.0,
            remote_payment: cfg.remote_payment_pct / 100.0,
            by_last_name: cfg.by_last_name_pct / 100.0,
            rollback: cfg.rollback_pct / 100.0,
        }
    }

    /// The home warehouse.
    pub fn home(&self) -> u32 {
        self.home
    }

    /// The district this terminal's StockLevel transactions use.
    pub fn district(&self) -> u8 {
        self.district
    }

    /// The NURand constants of the run.
    pub fn nurand_run(&self) -> NuRandC {
        self.c_run
    }

    /// Draws the next transaction type from the mix.
    pub fn next_kind(&mut self) -> TxnKind {
        let total = self.cumulative_mix[4];
        let x = self.rng.random_range(0..total.max(1));
        let i = self.cumulative_mix.iter().position(|&c| x < c).unwrap_or(0);
        TxnKind::ALL[i]
    }

    /// Draws the inputs of a transaction of type `kind`.
    pub fn next_input(&mut self, kind: TxnKind) -> TxnInput {
        match kind {
            TxnKind::NewOrder => TxnInput::NewOrder(self.new_order()),
            TxnKind::Payment => TxnInput::Payment(self.payment()),
            TxnKind::OrderStatus => TxnInput::OrderStatus(self.order_status()),
            TxnKind::Delivery => TxnInput::Delivery(self.delivery()),
            TxnKind::StockLevel => TxnInput::StockLevel(self.stock_level()),
        }
    }

    /// A uniformly random warehouse other than the home one (the home one if it is the only one).
    fn remote_warehouse(&mut self) -> u32 {
        if self.warehouses <= 1 {
            return self.home;
        }
        let r = self.rng.random_range(1..self.warehouses);
        if r >= self.home { r + 1 } else { r }
    }

    /// A customer by id (NURand) or, `by_last_name` of the time, by a NURand last name.
    fn customer(&mut self) -> CustomerSel {
        if self.rng.random_bool(self.by_last_name) {
            let n = self
                .c_run
                .last_name_number(&mut self.rng, self.max_last_name);
            CustomerSel::LastName(last_name(n))
        } else {
            CustomerSel::Id(self.c_run.customer_id(&mut self.rng, self.customers))
        }
    }

    /// NewOrder inputs (clause 2.4.1).
    pub fn new_order(&mut self) -> NewOrderInput {
        let d = self.rng.random_range(1..=DISTRICTS);
        let c = self.c_run.customer_id(&mut self.rng, self.customers);
        let ol_cnt = self.rng.random_range(5..=15usize);
        let rollback = self.rng.random_bool(self.rollback);
        let mut lines = Vec::with_capacity(ol_cnt);
        for n in 0..ol_cnt {
            let i_id = if rollback && n + 1 == ol_cnt {
                self.items + 1 // an unused item id
            } else {
                self.c_run.item_id(&mut self.rng, self.items)
            };
            let supply_w = if self.rng.random_bool(self.remote_item) {
                self.remote_warehouse()
            } else {
                self.home
            };
            lines.push(OrderLineInput {
                i_id,
                supply_w,
                quantity: self.rng.random_range(1..=10),
            });
        }
        NewOrderInput {
            w: self.home,
            d,
            c,
            lines,
            entry_d: unix_now(),
        }
    }

    /// Payment inputs (clause 2.5.1).
    pub fn payment(&mut self) -> PaymentInput {
        let d = self.rng.random_range(1..=DISTRICTS);
        let (c_w, c_d) = if self.warehouses > 1 && self.rng.random_bool(self.remote_payment) {
            (
                self.remote_warehouse(),
                self.rng.random_range(1..=DISTRICTS),
            )
        } else {
            (self.home, d)
        };
        let customer = self.customer();
        self.seq += 1;
        PaymentInput {
            w: self.home,
            d,
            c_w,
            c_d,
            customer,
            amount: self.rng.random_range(100..=500_000),
            date: unix_now(),
            history_id: (self.origin, self.seq),
        }
    }

    /// OrderStatus inputs (clause 2.6.1).
    pub fn order_status(&mut self) -> OrderStatusInput {
        let d = self.rng.random_range(1..=DISTRICTS);
        OrderStatusInput {
            w: self.home,
            d,
            customer: self.customer(),
        }
    }

    /// Delivery inputs (clause 2.7.1).
    pub fn delivery(&mut self) -> DeliveryInput {
        DeliveryInput {
            w: self.home,
            carrier_id: self.rng.random_range(1..=10),
            date: unix_now(),
        }
    }

    /// StockLevel inputs (clause 2.8.1).
    pub fn stock_level(&mut self) -> StockLevelInput {
        StockLevelInput {
            w: self.home,
            d: self.district,
            threshold: self.rng.random_range(10..=20),
        }
    }
}
