//! Times scans whose bounds lie outside a table's keys (regression check for the index wrapper).
use std::time::Instant;

use mako_storage::{Stamp, Store};

fn main() {
    let store = Store::new();
    let t = store.create_table("t").expect("table");
    for k in (1000u64..401_000).step_by(2) {
        t.put(
            &k.to_be_bytes(),
            bytes::Bytes::from_static(b"v"),
            Stamp::single(0, 1),
        );
    }
    let lo = 0u64.to_be_bytes();
    let hi = u64::MAX.to_be_bytes();
    let mid = 100_001u64.to_be_bytes();
    for (name, f) in [
        (
            "forward from below min",
            Box::new(|| t.scan(&lo[..]..&hi[..], 10).len()) as Box<dyn Fn() -> usize>,
        ),
        (
            "reverse from above max",
            Box::new(|| t.rscan(&lo[..]..&hi[..], 10).len()),
        ),
        (
            "forward from mid",
            Box::new(|| t.scan(&mid[..]..&hi[..], 10).len()),
        ),
        (
            "reverse below mid",
            Box::new(|| t.rscan(&lo[..]..&mid[..], 10).len()),
        ),
        ("reverse unbounded", Box::new(|| t.rscan(.., 10).len())),
        (
            "forward from above max",
            Box::new(|| t.scan(&hi[..].., 10).len()),
        ),
        (
            "reverse from below min",
            Box::new(|| t.rscan(..&lo[..], 10).len()),
        ),
    ] {
        let t0 = Instant::now();
        let n = f();
        println!("{name:<26} {n} rows in {:?}", t0.elapsed());
    }
}
