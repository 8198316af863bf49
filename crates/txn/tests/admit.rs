//! A sink that refuses a piece at admission aborts the commit: nothing visible, locks released.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use mako_storage::{Store, Vt};
use mako_txn::{AbortReason, CommitSink, PieceWrites, Shard};

/// Refuses pieces on stream 7 (and counts appends).
#[derive(Default)]
struct Picky {
    appended: AtomicUsize,
}

impl CommitSink for Picky {
    fn admit(&self, stream: u32, vt_len: usize, w: &PieceWrites<'_>) -> Result<(), AbortReason> {
        assert_eq!(vt_len, 1);
        assert!(!w.is_empty());
        if stream == 7 {
            Err(AbortReason::TooLarge)
        } else {
            Ok(())
        }
    }

    fn append(
        &self,
        _stream: u32,
        _epoch: u32,
        stamp: &mut dyn FnMut() -> Vt,
        _writes: &PieceWrites<'_>,
    ) -> Result<Vt, AbortReason> {
        self.appended.fetch_add(1, Ordering::Relaxed);
        Ok(stamp())
    }
}

#[test]
fn a_piece_refused_at_admission_aborts_with_nothing_visible_and_no_lock_held() {
    let store = Arc::new(Store::new());
    let t = store.create_table("t").expect("table");
    let sink = Arc::new(Picky::default());
    let shard = Shard::new(0, 1, Arc::clone(&store), sink.clone());
    let mut tx = shard.begin_on(7);
    tx.put(&t, b"k", Bytes::from_static(b"v"));
    let err = tx.commit().expect_err("refused");
    assert_eq!(err.reason, AbortReason::TooLarge);
    assert_eq!(sink.appended.load(Ordering::Relaxed), 0, "never appended");
    assert_eq!(shard.clock(), 0, "no timestamp allocated");
    let mut r = shard.begin_on(0);
    assert_eq!(r.get(&t, b"k"), None, "nothing visible");
    // The lock is free: another stream's writer commits the key.
    r.put(&t, b"k", Bytes::from_static(b"w"));
    r.commit().expect("the key is not locked");
    assert_eq!(sink.appended.load(Ordering::Relaxed), 1);
}

/// Looks, as it logs a piece, at whether the piece's versions are already in the store.
struct Watching {
    store: Arc<Store>,
    seen_installed: AtomicUsize,
}

impl CommitSink for Watching {
    fn append(
        &self,
        _stream: u32,
        _epoch: u32,
        stamp: &mut dyn FnMut() -> Vt,
        writes: &PieceWrites<'_>,
    ) -> Result<Vt, AbortReason> {
        let vt = stamp();
        // "Logging" happens here: every write must already be the key's newest version.
        for w in writes.iter() {
            let t = self.store.table_by_id(w.table).expect("table");
            let v = t.get_version(w.key).expect("installed before it is logged");
            assert_eq!(v.stamp.vt, vt, "the logged piece's own version");
        }
        self.seen_installed.fetch_add(1, Ordering::Relaxed);
        Ok(vt)
    }
}

/// No piece reaches the log before its versions are in the store: a replica snapshot taken
/// once the piece committed must contain them (found by review: the commit installed after
/// logging, and a leader's snapshot could miss a committed, released write for good).
#[test]
fn a_piece_is_installed_before_it_is_logged() {
    let store = Arc::new(Store::new());
    let t = store.create_table("t").expect("table");
    let sink = Arc::new(Watching {
        store: Arc::clone(&store),
        seen_installed: AtomicUsize::new(0),
    });
    let shard = Shard::new(0, 1, Arc::clone(&store), sink.clone());
    let mut tx = shard.begin_on(0);
    tx.put(&t, b"a", Bytes::from_static(b"1"));
    tx.put(&t, b"b", Bytes::from_static(b"2"));
    tx.commit().expect("commit");
    assert_eq!(sink.seen_installed.load(Ordering::Relaxed), 1);
    // The locks are free afterwards.
    let mut r = shard.begin_on(0);
    r.put(&t, b"a", Bytes::from_static(b"3"));
    r.commit().expect("not locked");
}
