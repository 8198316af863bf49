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
