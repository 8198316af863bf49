//! Loopback throughput of the TCP transport: 4 KiB envelopes from node 1 to node 2.
//!
//! Run with `cargo run --release -p mako-transport --example throughput [count] [payload_bytes]`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_transport::tcp::{TcpConfig, TcpTransport};
use mako_transport::{Envelope, SendError, Transport};

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(500_000);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4096);
    let any = "127.0.0.1:0".parse().unwrap();
    let cfg = TcpConfig::default();
    let (a, _a_rx) = TcpTransport::start(1, any, HashMap::new(), cfg.clone()).unwrap();
    let (b, b_rx) = TcpTransport::start(2, any, HashMap::new(), cfg).unwrap();
    a.set_peer_addr(2, b.local_addr());
    b.set_peer_addr(1, a.local_addr());
    let payload = Bytes::from(vec![7u8; size]);
    let msg = |group| Envelope {
        group,
        from: 1,
        to: 2,
        payload: payload.clone(),
    };
    // Warm up: wait for the link.
    a.send(msg(0)).unwrap();
    b_rx.recv_timeout(Duration::from_secs(10)).expect("link up");

    let receiver = std::thread::spawn(move || {
        let start = Instant::now();
        for _ in 0..count {
            b_rx.recv_timeout(Duration::from_secs(10))
                .expect("envelope");
        }
        start.elapsed()
    });
    let mut full = 0u64;
    for i in 0..count {
        let mut m = msg((i % 8) as u32);
        loop {
            match a.send(m) {
                Ok(()) => break,
                Err(SendError::Full) => {
                    full += 1;
                    std::thread::yield_now();
                    m = msg((i % 8) as u32);
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    let took = receiver.join().unwrap();
    let rate = count as f64 / took.as_secs_f64();
    println!(
        "{count} envelopes of {size} B in {took:.2?}: {rate:.0} envelopes/s, {:.0} MiB/s ({full} Full retries)",
        rate * size as f64 / (1 << 20) as f64
    );
}
