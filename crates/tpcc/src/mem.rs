//! Resident memory of this process and the memory-per-NewOrder figures built from it.

use crate::payload::Payload;

/// The target of resident growth per NewOrder, as a multiple of the payload per NewOrder.
pub const TARGET_RATIO: f64 = 2.0;

/// Resident set size of this process in bytes (Linux: `VmRSS` of `/proc/self/status`); `None` elsewhere.
pub fn rss_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        parse_vm_rss(&status)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The `VmRSS:` line of a `/proc/<pid>/status` text, in bytes.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kb.checked_mul(1024)
}

/// Memory per NewOrder: growth of resident memory over the measured phase against the payload written.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemoryFigures {
    /// Resident bytes when the measured phase started (after loading); `None` if not measurable here.
    pub rss_after_load: Option<u64>,
    /// Resident bytes when the measured phase ended.
    pub rss_at_end: Option<u64>,
    /// NewOrders committed in the measured phase.
    pub new_orders: u64,
    /// Key and value bytes the committed transactions (all five types) wrote in the measured phase.
    pub payload: Payload,
    /// Resident growth divided by the NewOrders committed, bytes (negative if memory shrank).
    pub resident_per_new_order: Option<f64>,
    /// Net payload divided by the NewOrders committed, bytes (one copy of the data).
    pub payload_per_new_order: Option<f64>,
    /// Copies of every row this process holds: the replicas of a shard in an in-process
    /// cluster run (each shard's rows live in all of them), 1 on a single node.
    pub copies: u32,
    /// Payload per NewOrder times `copies`: what the process stores at the least, bytes.
    pub stored_payload_per_new_order: Option<f64>,
    /// Resident growth per NewOrder over the stored payload per NewOrder (all copies).
    pub ratio: Option<f64>,
    /// The target for `ratio`: at most this.
    pub target_ratio: f64,
}

impl MemoryFigures {
    /// The figures of a measured phase that went from `rss_after_load` to `rss_at_end` resident
    /// bytes and committed `new_orders` NewOrders whose transactions wrote `payload`.
    pub fn new(
        rss_after_load: Option<u64>,
        rss_at_end: Option<u64>,
        new_orders: u64,
        payload: Payload,
    ) -> Self {
        let per_no = |bytes: f64| (new_orders > 0).then(|| bytes / new_orders as f64);
        let resident_per_new_order = match (rss_after_load, rss_at_end) {
            (Some(a), Some(b)) => per_no(b as f64 - a as f64),
            _ => None,
        };
        let payload_per_new_order = per_no(payload.net() as f64);
        MemoryFigures {
            rss_after_load,
            rss_at_end,
            new_orders,
            payload,
            resident_per_new_order,
            payload_per_new_order,
            copies: 1,
            stored_payload_per_new_order: payload_per_new_order,
            ratio: None,
            target_ratio: TARGET_RATIO,
        }
        .with_copies(1)
    }

    /// The same figures for a process holding `copies` copies of every row (the replicas
    /// of an in-process cluster): the payload it stores, and the ratio, count them all.
    pub fn with_copies(mut self, copies: u32) -> Self {
        let copies = copies.max(1);
        self.copies = copies;
        self.stored_payload_per_new_order =
            self.payload_per_new_order.map(|p| p * f64::from(copies));
        self.ratio = match (
            self.resident_per_new_order,
            self.stored_payload_per_new_order,
        ) {
            (Some(r), Some(p)) if p > 0.0 => Some(r / p),
            _ => None,
        };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tmako\nVmPeak:\t  20000 kB\nVmRSS:\t   1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name:\tmako\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t  x kB\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn rss_is_plausible_and_counts_touched_memory() {
        let rss = rss_bytes().expect("Linux has /proc/self/status");
        // A test process holds at least its code and stacks, and far less than a terabyte.
        assert!(rss > 1 << 20 && rss < 1 << 40, "{rss}");
        // 32 MiB written and still alive are resident.
        let buf = vec![7u8; 32 << 20];
        let rss = rss_bytes().expect("still readable");
        assert!(rss >= 32 << 20, "{rss}");
        assert_eq!(buf[buf.len() - 1], 7);
    }

    #[test]
    fn figures_divide_growth_and_payload_by_new_orders() {
        let payload = Payload {
            inserted: 1_000,
            deleted: 200,
            updated_growth: 0,
        };
        let f = MemoryFigures::new(Some(1_000_000), Some(1_004_000), 2, payload);
        assert_eq!(f.resident_per_new_order, Some(2_000.0));
        assert_eq!(f.payload_per_new_order, Some(400.0));
        assert_eq!(f.ratio, Some(5.0));
        let none = MemoryFigures::new(None, Some(5), 2, payload);
        assert_eq!((none.resident_per_new_order, none.ratio), (None, None));
        assert_eq!(MemoryFigures::new(Some(1), Some(5), 0, payload).ratio, None);
        assert_eq!((f.copies, f.stored_payload_per_new_order), (1, Some(400.0)));
    }

    #[test]
    fn replicas_in_the_process_multiply_the_stored_payload() {
        let payload = Payload {
            inserted: 1_000,
            deleted: 200,
            updated_growth: 0,
        };
        let f = MemoryFigures::new(Some(1_000_000), Some(1_012_000), 2, payload).with_copies(3);
        assert_eq!(f.resident_per_new_order, Some(6_000.0));
        // The payload of one copy is unchanged; the ratio compares with all three.
        assert_eq!(f.payload_per_new_order, Some(400.0));
        assert_eq!(f.copies, 3);
        assert_eq!(f.stored_payload_per_new_order, Some(1_200.0));
        assert_eq!(f.ratio, Some(5.0));
        assert_eq!(f.clone().with_copies(0).copies, 1);
    }
}
