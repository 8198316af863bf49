//! Transaction semantics: serializability (bank), phantoms, read-your-own-writes, inserts, deletes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_storage::{Store, Table};
use mako_txn::{AbortReason, OpError, Shard};
use rand::{Rng, SeedableRng, rngs::SmallRng};

fn shard_with(tables: &[&str]) -> (Shard, Vec<Arc<Table>>) {
    let store = Arc::new(Store::new());
    let ts = tables
        .iter()
        .map(|n| store.create_table(n).expect("create table"))
        .collect();
    (Shard::single(store), ts)
}

fn val(n: u64) -> Bytes {
    Bytes::copy_from_slice(&n.to_le_bytes())
}

fn num(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8-byte balance"))
}

fn acct(i: usize) -> [u8; 8] {
    (i as u64).to_be_bytes()
}

#[test]
fn bank_transfers_conserve_money_and_audits_see_the_exact_total() {
    const ACCOUNTS: usize = 100;
    const INITIAL: u64 = 1_000;
    const TOTAL: u64 = ACCOUNTS as u64 * INITIAL;
    let (shard, tables) = shard_with(&["accounts"]);
    let t = &tables[0];
    let mut tx = shard.begin();
    for i in 0..ACCOUNTS {
        tx.insert(t, &acct(i), val(INITIAL)).expect("fresh key");
    }
    tx.commit().expect("load commits");

    let stop = AtomicBool::new(false);
    let transfers = AtomicU64::new(0);
    let audits = AtomicU64::new(0);
    let aborts = AtomicU64::new(0);
    std::thread::scope(|s| {
        for worker in 0..8u64 {
            let (shard, t, stop) = (&shard, &**t, &stop);
            let (transfers, audits, aborts) = (&transfers, &audits, &aborts);
            s.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(worker);
                while !stop.load(Ordering::Relaxed) {
                    let mut tx = shard.begin();
                    if rng.random_ratio(1, 5) {
                        // Audit by scan, or by point reads, alternately.
                        let sum: u64 = if rng.random_bool(0.5) {
                            tx.scan(t, .., ACCOUNTS + 1)
                                .iter()
                                .map(|(_, v)| num(v))
                                .sum()
                        } else {
                            (0..ACCOUNTS)
                                .map(|i| num(&tx.get(t, &acct(i)).expect("account exists")))
                                .sum()
                        };
                        match tx.commit() {
                            Ok(_) => {
                                assert_eq!(sum, TOTAL, "a committed audit saw a wrong total");
                                audits.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                assert_eq!(e.reason, AbortReason::Conflict);
                                aborts.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        continue;
                    }
                    let a = rng.random_range(0..ACCOUNTS);
                    let b = (a + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
                    let amount = rng.random_range(1..50);
                    let ba = num(&tx.get(t, &acct(a)).expect("account exists"));
                    let bb = num(&tx.get(t, &acct(b)).expect("account exists"));
                    if ba < amount {
                        continue;
                    }
                    tx.put(t, &acct(a), val(ba - amount));
                    tx.put(t, &acct(b), val(bb + amount));
                    match tx.commit() {
                        Ok(_) => transfers.fetch_add(1, Ordering::Relaxed),
                        Err(_) => aborts.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
    });
    let final_sum: u64 = t.scan(.., ACCOUNTS + 1).iter().map(|(_, v)| num(v)).sum();
    assert_eq!(final_sum, TOTAL);
    assert!(
        transfers.load(Ordering::Relaxed) > 100,
        "too few transfers committed"
    );
    assert!(
        audits.load(Ordering::Relaxed) > 10,
        "too few audits committed"
    );
    eprintln!(
        "transfers {} audits {} aborts {}",
        transfers.load(Ordering::Relaxed),
        audits.load(Ordering::Relaxed),
        aborts.load(Ordering::Relaxed)
    );
}

#[test]
fn scan_aborts_when_an_insert_lands_in_its_range() {
    let (shard, tables) = shard_with(&["t"]);
    let t = &tables[0];
    for k in [b"a", b"c", b"e"] {
        t.put(k, val(1), mako_storage::Stamp::single(0, 1));
    }
    let mut scanner = shard.begin();
    assert_eq!(scanner.scan(t, &b"a"[..]..&b"z"[..], 10).len(), 3);
    scanner.put(t, b"summary", val(3));

    let mut inserter = shard.begin();
    inserter.insert(t, b"d", val(1)).expect("d is absent");
    inserter.commit().expect("inserter commits first");

    let err = scanner
        .commit()
        .expect_err("phantom must abort the scanner");
    assert_eq!(err.reason, AbortReason::Conflict);
}

#[test]
fn scan_with_limit_only_guards_the_part_it_read() {
    let (shard, tables) = shard_with(&["t"]);
    let t = &tables[0];
    for k in [b"a", b"c", b"e"] {
        t.put(k, val(1), mako_storage::Stamp::single(0, 1));
    }
    let mut scanner = shard.begin();
    let rows = scanner.scan(t, .., 2);
    assert_eq!(
        rows.iter().map(|(k, _)| &k[..]).collect::<Vec<_>>(),
        [b"a", b"c"]
    );
    scanner.put(t, b"out", val(2));
    // An insert past the scanned part does not conflict ...
    let mut tx = shard.begin();
    tx.put(t, b"d", val(1));
    tx.commit().expect("insert beyond the scan");
    let mut probe = shard.begin();
    assert_eq!(probe.rscan(t, .., 2).len(), 2);
    probe.commit().expect("read-only");
    scanner.commit().expect("the scanned prefix is unchanged");
    // ... an insert inside it does.
    let mut scanner = shard.begin();
    scanner.rscan(t, .., 2); // sees "out", "e"
    scanner.put(t, b"x", val(0));
    let mut tx = shard.begin();
    tx.put(t, b"f", val(1));
    tx.commit().expect("insert inside the reverse scan");
    assert!(scanner.commit().is_err());
}

#[test]
fn absent_read_aborts_when_the_key_is_inserted() {
    let (shard, tables) = shard_with(&["t"]);
    let t = &tables[0];
    let mut reader = shard.begin();
    assert_eq!(reader.get(t, b"ghost"), None);
    reader.put(t, b"other", val(1));

    let mut writer = shard.begin();
    writer.put(t, b"ghost", val(7));
    writer.commit().expect("writer commits");
    assert_eq!(
        reader.commit().expect_err("absent read invalidated").reason,
        AbortReason::Conflict
    );

    // Reading a key that is indexed but deleted is protected the same way.
    let mut tx = shard.begin();
    tx.delete(t, b"ghost");
    tx.commit().expect("delete");
    let mut reader = shard.begin();
    assert_eq!(reader.get(t, b"ghost"), None);
    reader.put(t, b"other", val(2));
    let mut writer = shard.begin();
    writer
        .insert(t, b"ghost", val(8))
        .expect("tombstoned key is absent");
    writer.commit().expect("writer commits");
    assert!(reader.commit().is_err());
}

#[test]
fn stale_read_aborts_and_write_write_conflict_is_detected() {
    let (shard, tables) = shard_with(&["t"]);
    let t = &tables[0];
    let mut tx = shard.begin();
    tx.put(t, b"k", val(0));
    tx.commit().expect("seed");
    let mut a = shard.begin();
    let mut b = shard.begin();
    let va = num(&a.get(t, b"k").expect("k"));
    let vb = num(&b.get(t, b"k").expect("k"));
    a.put(t, b"k", val(va + 1));
    b.put(t, b"k", val(vb + 1));
    a.commit().expect("first increment");
    assert!(b.commit().is_err(), "lost update must abort");
    assert_eq!(num(&t.get(b"k").expect("k")), 1);
}

#[test]
fn read_your_own_writes_insert_and_delete() {
    let (shard, tables) = shard_with(&["t"]);
    let t = &tables[0];
    let mut tx = shard.begin();
    tx.put(t, b"b", val(2));
    assert_eq!(tx.get(t, b"b"), Some(val(2)));
    tx.insert(t, b"a", val(1)).expect("a is new");
    assert_eq!(tx.insert(t, b"a", val(9)), Err(OpError::KeyExists));
    assert_eq!(tx.insert(t, b"b", val(9)), Err(OpError::KeyExists));
    let keys: Vec<_> = tx
        .scan(t, .., 10)
        .into_iter()
        .map(|(k, _)| k.to_vec())
        .collect();
    assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
    tx.commit().expect("commit");

    assert_eq!(t.get(b"a"), Some(val(1)));
    let mut tx = shard.begin();
    assert_eq!(tx.insert(t, b"a", val(5)), Err(OpError::KeyExists));
    tx.delete(t, b"a");
    assert_eq!(tx.get(t, b"a"), None);
    let keys: Vec<_> = tx
        .rscan(t, .., 10)
        .into_iter()
        .map(|(k, _)| k.to_vec())
        .collect();
    assert_eq!(keys, [b"b".to_vec()]);
    tx.insert(t, b"a", val(6))
        .expect("deleted in this transaction, so absent");
    tx.delete(t, b"a");
    tx.commit().expect("commit");
    assert_eq!(t.get(b"a"), None);
    assert_eq!(t.get(b"b"), Some(val(2)));
}

#[test]
fn timestamps_follow_the_lamport_rule() {
    let (shard, tables) = shard_with(&["t"]);
    let t = &tables[0];
    let mut last = 0;
    for i in 0..10u64 {
        let mut tx = shard.begin();
        tx.put(t, b"k", val(i));
        let info = tx.commit().expect("commit");
        assert!(info.wrote);
        assert!(info.vt[0] > last);
        last = info.vt[0];
    }
    // Replayed versions push the clock forward when observed.
    shard.observe(1_000);
    let mut tx = shard.begin();
    tx.put(t, b"k", val(0));
    assert_eq!(tx.commit().expect("commit").vt[0], 1_001);
    // Read-only transactions allocate nothing and carry their read dependency.
    let mut tx = shard.begin();
    tx.get(t, b"k");
    let info = tx.commit().expect("read-only");
    assert!(!info.wrote);
    assert_eq!(info.vt[0], 1_001);
    assert_eq!(shard.clock(), 1_001);
}

#[test]
fn concurrent_inserts_and_counting_scans_stay_serializable() {
    // Each inserter adds a key to "items" and bumps "count" in the same transaction;
    // each counter scans "items" and checks it against "count".
    let (shard, tables) = shard_with(&["items", "meta"]);
    let (items, meta) = (&tables[0], &tables[1]);
    let mut tx = shard.begin();
    tx.put(meta, b"count", val(0));
    tx.commit().expect("seed");
    let deadline = Instant::now() + Duration::from_secs(1);
    std::thread::scope(|s| {
        for w in 0..4u64 {
            let (shard, items, meta) = (&shard, &**items, &**meta);
            s.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(100 + w);
                while Instant::now() < deadline {
                    let mut tx = shard.begin();
                    if w % 2 == 0 {
                        let key = rng.random::<u64>().to_be_bytes();
                        let n = num(&tx.get(meta, b"count").expect("count"));
                        if tx.insert(items, &key, val(1)).is_ok() {
                            tx.put(meta, b"count", val(n + 1));
                            let _ = tx.commit();
                        }
                    } else {
                        let seen = tx.scan(items, .., usize::MAX).len() as u64;
                        let n = num(&tx.get(meta, b"count").expect("count"));
                        if tx.commit().is_ok() {
                            assert_eq!(seen, n, "a committed scan disagreed with the counter");
                        }
                    }
                }
            });
        }
    });
    assert_eq!(
        items.scan(.., usize::MAX).len() as u64,
        num(&meta.get(b"count").expect("count"))
    );
}

#[test]
fn locking_every_write_set_before_validating_any_read_excludes_write_skew() {
    let (shard, tables) = shard_with(&["t"]);
    let t = &tables[0];
    let mut tx = shard.begin();
    tx.put(t, b"x", val(1));
    tx.put(t, b"y", val(1));
    tx.commit().expect("seed");
    // A reads x and writes y; B reads y and writes x (write skew if both commit).
    let mut a = shard.begin();
    let mut b = shard.begin();
    assert!(a.get(t, b"x").is_some());
    assert!(b.get(t, b"y").is_some());
    a.put(t, b"y", val(0));
    b.put(t, b"x", val(0));
    let (la, lb) = (a.lock().expect("lock A"), b.lock().expect("lock B"));
    assert!(la.wrote() && lb.wrote());
    // A sees B's lock on x, the key it read, and fails (releasing its lock on y);
    // B may then commit alone, which is serial.
    assert_eq!(
        la.validate().err().map(|e| e.reason),
        Some(AbortReason::Conflict)
    );
    let pb = lb.validate().expect("B alone is serializable");
    let vt = pb.deps();
    pb.install(vt);
    assert_eq!(t.get(b"y").as_deref(), Some(&val(1)[..]), "A left no trace");
    assert_eq!(t.get(b"x").as_deref(), Some(&val(0)[..]));
}

#[test]
fn a_key_read_absent_then_written_is_claimed_once_when_another_writer_gets_there_first() {
    // The commit of a key read as absent inserts its record straight away; if another
    // transaction's record is there by then, the absent read must still be checked.
    let (shard, tables) = shard_with(&["t"]);
    let t = &tables[0];
    for rival_commits in [true, false] {
        let key: &[u8] = if rival_commits { b"k1" } else { b"k2" };
        let mut late = shard.begin();
        assert_eq!(late.get(t, key), None);
        late.put(t, key, val(1));
        let mut rival = shard.begin();
        assert_eq!(rival.get(t, key), None);
        rival.put(t, key, val(2));
        if rival_commits {
            rival.commit().expect("rival commits first");
            assert_eq!(
                late.commit().expect_err("absent read invalidated").reason,
                AbortReason::Conflict
            );
            assert_eq!(t.get(key), Some(val(2)));
        } else {
            // The rival holds the lock on the record it created: the late one must not take it.
            let locked = rival.lock().expect("rival locks");
            assert_eq!(
                late.commit()
                    .expect_err("record locked by the rival")
                    .reason,
                AbortReason::Conflict
            );
            drop(locked);
            assert_eq!(t.get(key), None, "nothing visible from either");
        }
    }
}

#[test]
fn concurrent_claims_of_absent_keys_succeed_exactly_once_per_key() {
    // Each thread tries to claim every key: read it, and if absent write its own id.
    // Serializability: exactly one committed claim per key, and the stored id is its claimant's.
    let (shard, tables) = shard_with(&["t"]);
    let t = &tables[0];
    const KEYS: u64 = 2_000;
    let claims: Vec<Vec<u64>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u64)
            .map(|id| {
                let (shard, t) = (&shard, &**t);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let mut rng = SmallRng::seed_from_u64(7 + id);
                    let mut order: Vec<u64> = (0..KEYS).collect();
                    for i in (1..order.len()).rev() {
                        order.swap(i, rng.random_range(0..=i));
                    }
                    for k in order {
                        let mut tx = shard.begin();
                        if tx.get(t, &k.to_be_bytes()).is_none() {
                            tx.put(t, &k.to_be_bytes(), val(id));
                            if tx.commit().is_ok() {
                                mine.push(k);
                            }
                        }
                    }
                    mine
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("claimer")).collect()
    });
    let mut owner = vec![None; KEYS as usize];
    for (id, ks) in claims.iter().enumerate() {
        for &k in ks {
            assert_eq!(owner[k as usize], None, "key {k} claimed twice");
            owner[k as usize] = Some(id as u64);
        }
    }
    for k in 0..KEYS {
        let stored = t.get(&k.to_be_bytes()).map(|v| num(&v));
        assert_eq!(stored, owner[k as usize], "key {k}");
    }
}

#[test]
fn a_one_shard_commit_waits_briefly_for_a_held_lock_then_aborts() {
    let (shard, tables) = shard_with(&["t"]);
    let t = &tables[0];
    // Held briefly (well within the patience): a blind write that began while the lock was
    // held waits and commits. A busy machine may deschedule either thread for longer than
    // the patience, so a few tries are allowed; without waiting no try can succeed.
    let shard = &shard;
    let waited = (0..50).any(|_| {
        let mut holder = shard.begin();
        holder.put(t, b"k", val(1));
        let locked = holder.lock().expect("holder locks");
        let (tx_start, rx_start) = std::sync::mpsc::sync_channel(1);
        std::thread::scope(|s| {
            let waiter = s.spawn(move || {
                let mut tx = shard.begin();
                tx.put(t, b"k", val(2));
                let _ = tx_start.send(Instant::now());
                tx.commit().is_ok()
            });
            let started = rx_start.recv().expect("waiter started");
            std::thread::sleep(mako_txn::LOCK_PATIENCE / 5);
            let dropped = Instant::now();
            drop(locked);
            let committed = waiter.join().expect("waiter");
            committed && started < dropped
        })
    });
    assert!(waited, "a commit never waited for a lock held briefly");
    assert_eq!(t.get(b"k"), Some(val(2)));
    // Held past the patience: a conflict, after waiting about that long.
    let mut holder = shard.begin();
    holder.put(t, b"k", val(3));
    let locked = holder.lock().expect("holder locks");
    let mut tx = shard.begin();
    tx.put(t, b"k", val(4));
    let start = Instant::now();
    assert_eq!(
        tx.commit().expect_err("lock held throughout").reason,
        AbortReason::Conflict
    );
    assert!(start.elapsed() >= mako_txn::LOCK_PATIENCE);
    drop(locked);
    assert_eq!(
        t.get(b"k"),
        Some(val(2)),
        "neither of the last two is visible"
    );
}

/// A key's version changes with every write, a rewrite of the same value and a delete
/// included, and a version read is validated at commit like a value read.
#[test]
fn versions_change_on_every_write_and_are_validated() {
    let (shard, tables) = shard_with(&["t"]);
    let t = &tables[0];
    let version = |shard: &Shard| shard.begin().version(t, b"k");
    assert_eq!(version(&shard), None, "never written");
    let write = |v: Option<u64>| {
        let mut tx = shard.begin();
        match v {
            Some(n) => tx.put(t, b"k", val(n)),
            None => tx.delete(t, b"k"),
        }
        tx.commit().expect("commits");
    };
    write(Some(1));
    let v1 = version(&shard).expect("written");
    write(Some(1));
    let v2 = version(&shard).expect("written");
    assert_ne!(v1, v2, "the same value written again is a new version");
    write(None);
    let v3 = version(&shard).expect("a delete is a version");
    assert_ne!(v2, v3);
    write(Some(1));
    assert_ne!(version(&shard), Some(v3));

    // A version read, then a write by another transaction before commit: abort.
    let mut reader = shard.begin();
    let seen = reader.version(t, b"k");
    reader.put(t, b"other", val(9));
    write(Some(1));
    assert_ne!(version(&shard), seen);
    let err = reader.commit().expect_err("the version read is stale");
    assert_eq!(err.reason, AbortReason::Conflict);
}
