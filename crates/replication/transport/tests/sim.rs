//! Tests of the simulated network: determinism, faults, virtual time and realtime mode.

use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, TryRecvError};
use mako_transport::sim::{SimConfig, SimEndpoint, SimNetwork};
use mako_transport::{Envelope, SendError, Transport};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn env(from: u64, to: u64, n: u64) -> Envelope {
    Envelope {
        group: (n % 3) as u32,
        from,
        to,
        payload: Bytes::from(n.to_le_bytes().to_vec()),
    }
}

fn num(e: &Envelope) -> u64 {
    u64::from_le_bytes(e.payload[..8].try_into().unwrap())
}

fn drain(rx: &Receiver<Envelope>) -> Vec<Envelope> {
    rx.try_iter().collect()
}

fn nodes(net: &SimNetwork, ids: &[u64]) -> Vec<(SimEndpoint, Receiver<Envelope>)> {
    ids.iter().map(|&id| net.endpoint(id)).collect()
}

/// Runs a fixed faulty workload and records (time, receiver, message) of every delivery.
fn workload(seed: u64) -> Vec<(Duration, u64, Envelope)> {
    let net = SimNetwork::new(
        seed,
        SimConfig {
            drop_rate: 0.2,
            min_delay: ms(0),
            max_delay: ms(20),
            reorder: true,
            duplicate_rate: 0.1,
        },
    );
    let n = nodes(&net, &[1, 2, 3, 4]);
    for i in 0..400u64 {
        let from = i % 4;
        let to = (i * 7 + 1) % 4;
        n[from as usize].0.send(env(from + 1, to + 1, i)).unwrap();
        if i % 50 == 0 {
            net.advance_by(ms(3));
        }
    }
    let mut log = Vec::new();
    while let Some(t) = net.next_delivery() {
        net.advance_to(t);
        for (ep, rx) in &n {
            for e in drain(rx) {
                log.push((net.now(), ep.local_id(), e));
            }
        }
    }
    log
}

#[test]
fn same_seed_same_deliveries() {
    let a = workload(7);
    let b = workload(7);
    assert!(a.len() > 200, "delivered {}", a.len());
    assert_eq!(a, b);
    assert_ne!(a, workload(8));
}

#[test]
fn drop_rate_one_delivers_nothing() {
    let net = SimNetwork::new(
        1,
        SimConfig {
            drop_rate: 1.0,
            ..SimConfig::default()
        },
    );
    let n = nodes(&net, &[1, 2]);
    for i in 0..100 {
        n[0].0.send(env(1, 2, i)).unwrap();
    }
    net.advance_to(ms(1000));
    assert!(drain(&n[1].1).is_empty());
    let s = net.stats();
    assert_eq!((s.sent, s.dropped, s.delivered), (100, 100, 0));
}

#[test]
fn delays_are_respected() {
    let net = SimNetwork::new(
        3,
        SimConfig {
            min_delay: ms(10),
            max_delay: ms(20),
            reorder: true,
            ..SimConfig::default()
        },
    );
    let n = nodes(&net, &[1, 2]);
    for i in 0..50 {
        n[0].0.send(env(1, 2, i)).unwrap();
    }
    let first = net.next_delivery().unwrap();
    assert!(first >= ms(10) && first <= ms(20));
    net.advance_to(ms(10) - Duration::from_nanos(1));
    assert!(drain(&n[1].1).is_empty());
    net.advance_to(ms(20));
    assert_eq!(drain(&n[1].1).len(), 50);
    assert_eq!(net.now(), ms(20));
    assert_eq!(net.next_delivery(), None);

    // Delays count from the send time; the clock never goes backwards.
    n[1].0.send(env(2, 1, 99)).unwrap();
    net.advance_to(ms(5));
    assert_eq!(net.now(), ms(20));
    net.advance_to(ms(29));
    assert!(drain(&n[0].1).is_empty());
    net.advance_to(ms(40));
    assert_eq!(num(&drain(&n[0].1)[0]), 99);
}

#[test]
fn zero_delay_waits_for_advance() {
    let net = SimNetwork::new(3, SimConfig::default());
    let n = nodes(&net, &[1, 2]);
    n[0].0.send(env(1, 2, 1)).unwrap();
    assert!(drain(&n[1].1).is_empty());
    assert_eq!(net.next_delivery(), Some(Duration::ZERO));
    net.advance_to(net.now());
    assert_eq!(drain(&n[1].1).len(), 1);
}

fn arrival_order(reorder: bool) -> Vec<u64> {
    let net = SimNetwork::new(
        11,
        SimConfig {
            min_delay: ms(0),
            max_delay: ms(50),
            reorder,
            ..SimConfig::default()
        },
    );
    let n = nodes(&net, &[1, 2, 3]);
    for i in 0..300 {
        n[0].0.send(env(1, 2, i)).unwrap();
        n[2].0.send(env(3, 2, 1000 + i)).unwrap();
        if i % 10 == 0 {
            net.advance_by(ms(1));
        }
    }
    net.advance_to(ms(10_000));
    drain(&n[1].1).iter().map(num).collect()
}

#[test]
fn fifo_per_pair_unless_reorder() {
    let got = arrival_order(false);
    assert_eq!(got.len(), 600);
    let from1: Vec<u64> = got.iter().copied().filter(|&x| x < 1000).collect();
    let from3: Vec<u64> = got.iter().copied().filter(|&x| x >= 1000).collect();
    assert_eq!(from1, (0..300).collect::<Vec<_>>());
    assert_eq!(from3, (1000..1300).collect::<Vec<_>>());
    // Both senders' streams interleave rather than one arriving wholly first.
    assert!(got[..300].iter().any(|&x| x >= 1000));

    let got = arrival_order(true);
    let from1: Vec<u64> = got.iter().copied().filter(|&x| x < 1000).collect();
    assert_eq!(from1.len(), 300);
    assert!(
        from1.windows(2).any(|w| w[0] > w[1]),
        "reorder had no effect"
    );
}

#[test]
fn duplicates_at_rate() {
    let net = SimNetwork::new(
        5,
        SimConfig {
            duplicate_rate: 0.3,
            max_delay: ms(5),
            ..SimConfig::default()
        },
    );
    net.set_inbox_capacity(4096); // room for every copy: nothing is read until the end
    let n = nodes(&net, &[1, 2]);
    for i in 0..2000 {
        n[0].0.send(env(1, 2, i)).unwrap();
    }
    net.advance_to(ms(100));
    let s = net.stats();
    assert!((500..=700).contains(&s.duplicated), "{s:?}");
    assert_eq!(s.delivered, 2000 + s.duplicated);
    assert_eq!(drain(&n[1].1).len() as u64, s.delivered);
}

#[test]
fn partition_and_heal() {
    let net = SimNetwork::new(2, SimConfig::default());
    let n = nodes(&net, &[1, 2, 3, 4]);
    let send = |f: u64, t: u64| n[f as usize - 1].0.send(env(f, t, f * 10 + t)).unwrap();
    let got = |id: u64| -> Vec<u64> { drain(&n[id as usize - 1].1).iter().map(num).collect() };

    net.partition(&[&[1, 2], &[3]]);
    for (f, t) in [(1, 2), (2, 1), (1, 3), (3, 1), (3, 2), (4, 1), (1, 4)] {
        send(f, t);
    }
    net.advance_by(ms(1));
    assert_eq!(got(1), vec![21]);
    assert_eq!(got(2), vec![12]);
    assert!(got(3).is_empty() && got(4).is_empty());

    // A message in flight when the partition forms is lost at delivery time.
    net.heal();
    send(1, 3);
    net.partition(&[&[1], &[3]]);
    net.advance_by(ms(1));
    assert!(got(3).is_empty());

    net.heal();
    for (f, t) in [(1, 3), (3, 1), (4, 2)] {
        send(f, t);
    }
    net.advance_by(ms(1));
    assert_eq!(got(3), vec![13]);
    assert_eq!(got(1), vec![31]);
    assert_eq!(got(2), vec![42]);
}

#[test]
fn disconnect_and_connect() {
    let net = SimNetwork::new(2, SimConfig::default());
    let n = nodes(&net, &[1, 2, 3]);
    net.disconnect(2);
    n[0].0.send(env(1, 2, 1)).unwrap();
    n[1].0.send(env(2, 3, 2)).unwrap();
    n[0].0.send(env(1, 3, 3)).unwrap();
    net.advance_by(ms(1));
    assert!(drain(&n[1].1).is_empty());
    assert_eq!(drain(&n[2].1).iter().map(num).collect::<Vec<_>>(), vec![3]);

    // In flight to a node that disconnects before delivery: lost.
    n[0].0.send(env(1, 3, 4)).unwrap();
    net.disconnect(3);
    net.connect(2);
    n[0].0.send(env(1, 2, 5)).unwrap();
    net.advance_by(ms(1));
    assert!(drain(&n[2].1).is_empty());
    assert_eq!(drain(&n[1].1).iter().map(num).collect::<Vec<_>>(), vec![5]);
    assert_eq!(net.stats().dropped, 3);
}

#[test]
fn crash_and_restart() {
    let net = SimNetwork::new(
        2,
        SimConfig {
            min_delay: ms(5),
            max_delay: ms(5),
            ..SimConfig::default()
        },
    );
    let (a, a_rx) = net.endpoint(1);
    let (b, b_rx) = net.endpoint(2);
    a.send(env(1, 2, 1)).unwrap();
    b.send(env(2, 1, 2)).unwrap();
    net.crash(2);
    assert!(!net.is_alive(2));
    assert_eq!(
        net.in_flight(),
        0,
        "in-flight to and from a crashed node are dropped"
    );
    assert_eq!(b.send(env(2, 1, 3)), Err(SendError::Closed));
    assert_eq!(b_rx.try_recv(), Err(TryRecvError::Disconnected));
    a.send(env(1, 2, 4)).unwrap(); // the peer is known, only unreachable
    net.heal();
    net.advance_by(ms(10));
    assert!(drain(&a_rx).is_empty());
    assert!(!net.is_alive(2), "heal does not revive a crashed node");

    let (b2, b2_rx) = net.endpoint(2);
    a.send(env(1, 2, 5)).unwrap();
    b2.send(env(2, 1, 6)).unwrap();
    net.advance_by(ms(10));
    assert_eq!(drain(&b2_rx).iter().map(num).collect::<Vec<_>>(), vec![5]);
    assert_eq!(drain(&a_rx).iter().map(num).collect::<Vec<_>>(), vec![6]);

    // Restart without a crash: messages in flight to the old incarnation are dropped.
    a.send(env(1, 2, 7)).unwrap();
    let (_b3, b3_rx) = net.endpoint(2);
    assert_eq!(b2.send(env(2, 1, 8)), Err(SendError::Closed));
    net.advance_by(ms(10));
    assert!(drain(&b2_rx).is_empty() && drain(&b3_rx).is_empty());
}

#[test]
fn unknown_peer_and_from_stamping() {
    let net = SimNetwork::new(2, SimConfig::default());
    let (a, _a_rx) = net.endpoint(1);
    let (_b, b_rx) = net.endpoint(2);
    assert_eq!(a.send(env(1, 99, 0)), Err(SendError::UnknownPeer(99)));
    let errs = a.send_batch(vec![env(1, 2, 1), env(1, 98, 2), env(77, 2, 3)]);
    assert_eq!(errs, vec![SendError::UnknownPeer(98)]);
    net.advance_by(ms(1));
    let got = drain(&b_rx);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|e| e.from == 1), "from is the sender's id");
}

#[test]
fn stats_count_and_reset() {
    let net = SimNetwork::new(
        9,
        SimConfig {
            drop_rate: 0.5,
            ..SimConfig::default()
        },
    );
    let n = nodes(&net, &[1, 2, 3]);
    for i in 0..100 {
        n[0].0.send(env(1, 2, i)).unwrap();
    }
    for i in 0..30 {
        n[2].0.send(env(3, 2, i)).unwrap();
    }
    net.advance_by(ms(1));
    let s = net.stats();
    assert_eq!(s.sent, 130);
    assert_eq!(s.sent_by.get(&1), Some(&100));
    assert_eq!(s.sent_by.get(&3), Some(&30));
    assert_eq!(s.delivered + s.dropped, 130);
    assert!((40..=90).contains(&s.delivered), "{s:?}");
    assert_eq!(s.delivered_to.get(&2), Some(&s.delivered));
    assert_eq!(drain(&n[1].1).len() as u64, s.delivered);
    net.reset_stats();
    assert_eq!(net.stats(), Default::default());
}

#[test]
fn realtime_mode_delivers_without_advance() {
    let net = SimNetwork::new(
        4,
        SimConfig {
            min_delay: ms(2),
            max_delay: ms(10),
            reorder: true,
            ..SimConfig::default()
        },
    );
    let (a, a_rx) = net.endpoint(1);
    let (b, b_rx) = net.endpoint(2);
    let guard = net.run_realtime();
    let start = Instant::now();
    let echo = std::thread::spawn(move || {
        for _ in 0..20 {
            let m = b_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("delivered");
            b.send(env(2, 1, num(&m))).unwrap();
        }
    });
    for i in 0..20 {
        a.send(env(1, 2, i)).unwrap();
    }
    let mut got: Vec<u64> = (0..20)
        .map(|_| num(&a_rx.recv_timeout(Duration::from_secs(5)).expect("echoed")))
        .collect();
    echo.join().unwrap();
    got.sort();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    let took = start.elapsed();
    assert!(took >= ms(4), "round trips respect the delays ({took:?})");
    assert!(net.now() >= ms(4));
    let t = Instant::now();
    drop(guard);
    assert!(t.elapsed() < ms(500), "pump stops promptly");

    // After the pump stops, virtual time stands still again.
    a.send(env(1, 2, 1)).unwrap();
    std::thread::sleep(ms(20));
    assert_eq!(net.in_flight(), 1);
}

#[test]
fn a_full_inbox_drops_and_counts() {
    let net = SimNetwork::new(5, SimConfig::default());
    net.set_inbox_capacity(3);
    let n = nodes(&net, &[1, 2]);
    for i in 0..5 {
        n[0].0.send(env(1, 2, i)).unwrap();
    }
    net.advance_by(ms(1));
    let s = net.stats();
    assert_eq!((s.delivered, s.inbox_full, s.dropped), (3, 2, 2), "{s:?}");
    let got: Vec<u64> = drain(&n[1].1).iter().map(num).collect();
    assert_eq!(got, vec![0, 1, 2], "the first ones in, the rest lost");
    // Room again once the receiver has read its inbox.
    n[0].0.send(env(1, 2, 5)).unwrap();
    net.advance_by(ms(1));
    assert_eq!(drain(&n[1].1).iter().map(num).collect::<Vec<_>>(), vec![5]);
    assert_eq!(net.stats().inbox_full, 2);
}
