//! The apply dispatcher: routes committed entries to the callback of the current role.

use bytes::Bytes;
use parking_lot::Mutex;

use crate::{
    Applied, ApplyCtx, ApplyFn, ApplyStatus, PendingQueue, QueuedEntry, Role, RoleChange,
    RoleChangeFn, RoundFn, Unapplied, UnappliedFn,
};

/// Counters of what the dispatcher did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries handed to a callback.
    pub applied: u64,
    /// Entries queued because the callback answered `SafetyFail`.
    pub queued: u64,
    /// Entries that arrived with no callback registered for the role (kept in the queue).
    pub unhandled: u64,
    /// Submitted entries reported as not applied here.
    pub unapplied: u64,
}

#[derive(Default)]
struct Inner {
    role: Option<Role>,
    leader_cb: Option<ApplyFn>,
    follower_cb: Option<ApplyFn>,
    unapplied_cb: Option<UnappliedFn>,
    /// Whether an entry was handed to a callback since the last [`ApplyDispatcher::end_round`].
    applied_in_round: bool,
    queue: PendingQueue,
    stats: ApplyStats,
}

impl Inner {
    fn cb(&mut self) -> (Option<&mut ApplyFn>, &mut PendingQueue) {
        let cb = match self.role.unwrap_or(Role::Follower) {
            Role::Leader => self.leader_cb.as_mut(),
            Role::Follower => self.follower_cb.as_mut(),
        };
        (cb, &mut self.queue)
    }
}

/// Holds a group's callbacks, current role and pending queue; shared by every protocol.
///
/// Apply callbacks run under the dispatcher's lock, so a role change and the choice of
/// callback for an entry never interleave: each entry goes to the callback of the role
/// in force when it is applied. An apply or unapplied callback must therefore not call
/// back into the dispatcher's registration methods (`set_callback`, ...); role-change
/// listeners may (they run outside that lock).
pub struct ApplyDispatcher {
    shard: u32,
    inner: Mutex<Inner>,
    /// Role-change listeners, called without `inner` held (they may re-register callbacks).
    role_cbs: Mutex<Vec<RoleChangeFn>>,
    /// Run by [`ApplyDispatcher::end_round`], without `inner` held.
    round_cb: Mutex<Option<RoundFn>>,
}

impl std::fmt::Debug for ApplyDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("ApplyDispatcher")
            .field("shard", &self.shard)
            .field("role", &inner.role)
            .field("queued", &inner.queue.len())
            .field("stats", &inner.stats)
            .finish()
    }
}

impl ApplyDispatcher {
    /// A dispatcher for `shard`, starting as a follower.
    pub fn new(shard: u32) -> Self {
        ApplyDispatcher {
            shard,
            inner: Mutex::new(Inner::default()),
            role_cbs: Mutex::new(Vec::new()),
            round_cb: Mutex::new(None),
        }
    }

    /// Sets the callback for `role` (call `retry_pending` after it to offer entries that
    /// arrived before any callback was registered).
    pub fn set_callback(&self, role: Role, cb: ApplyFn) {
        let mut inner = self.inner.lock();
        match role {
            Role::Leader => inner.leader_cb = Some(cb),
            Role::Follower => inner.follower_cb = Some(cb),
        }
    }

    /// Sets the callback run by [`ApplyDispatcher::end_round`].
    pub fn set_round_callback(&self, cb: RoundFn) {
        *self.round_cb.lock() = Some(cb);
    }

    /// Ends a round of applying: runs the round callback if an entry was handed to an apply
    /// callback since the last round ended. The group's thread calls it at the end of each
    /// turn.
    pub fn end_round(&self) {
        let applied = std::mem::take(&mut self.inner.lock().applied_in_round);
        if applied && let Some(cb) = self.round_cb.lock().as_mut() {
            cb();
        }
    }

    /// Sets the callback for submitted entries that end without being applied here.
    pub fn set_unapplied_callback(&self, cb: UnappliedFn) {
        self.inner.lock().unapplied_cb = Some(cb);
    }

    /// Reports a submitted entry that ends without being applied here.
    pub fn unapplied(&self, u: Unapplied) {
        let mut inner = self.inner.lock();
        inner.stats.unapplied += 1;
        if let Some(cb) = inner.unapplied_cb.as_mut() {
            cb(u);
        }
    }

    /// Adds a role-change listener.
    pub fn add_role_listener(&self, cb: RoleChangeFn) {
        self.role_cbs.lock().push(cb);
    }

    /// The role entries are currently dispatched for.
    pub fn role(&self) -> Role {
        self.inner.lock().role.unwrap_or(Role::Follower)
    }

    /// Switches role (if it changed) and tells the listeners.
    ///
    /// Listeners run after the switch, without the dispatcher's callback lock, so they may
    /// register apply callbacks; they must not add role listeners.
    pub fn set_role(&self, role: Role, term: u64, leader: Option<crate::NodeId>) {
        {
            let mut inner = self.inner.lock();
            if inner.role == Some(role) {
                return;
            }
            inner.role = Some(role);
        }
        let change = RoleChange {
            shard: self.shard,
            role,
            term,
            leader,
        };
        for cb in self.role_cbs.lock().iter_mut() {
            cb(change);
        }
    }

    /// A dispatcher whose callbacks accept every entry and keep nothing (for a group whose
    /// entries nobody consumes, e.g. a protocol test that only looks at its log).
    pub fn discarding(shard: u32) -> Self {
        let d = ApplyDispatcher::new(shard);
        for role in [Role::Leader, Role::Follower] {
            d.set_callback(role, Box::new(|ctx| Applied::normal(ctx.index)));
        }
        d
    }

    /// Whether a callback for the current role is registered (a protocol applies nothing
    /// until one is: an entry applied to nobody would reach the application out of turn).
    pub fn has_callback(&self) -> bool {
        self.inner.lock().cb().0.is_some()
    }

    /// Hands one committed entry to the current role's callback.
    pub fn apply(&self, index: u64, entry: &Bytes) -> ApplyStatus {
        let mut inner = self.inner.lock();
        let shard = self.shard;
        let (cb, queue) = inner.cb();
        let handled = cb.is_some();
        let status = match cb {
            Some(cb) => {
                cb(ApplyCtx {
                    entry,
                    index,
                    shard,
                    queue: &mut *queue,
                })
                .status
            }
            // Nobody listens for this role yet (e.g. callbacks registered just after the
            // group started): keep the entry, in order, for the callback to come.
            None => ApplyStatus::SafetyFail,
        };
        if status == ApplyStatus::SafetyFail {
            queue.push_back(QueuedEntry {
                index,
                entry: entry.clone(),
            });
            inner.stats.queued += 1;
        }
        if !handled {
            inner.stats.unhandled += 1;
        }
        inner.applied_in_round |= handled;
        inner.stats.applied += 1;
        status
    }

    /// Re-offers queued entries, oldest first, until one is still not safe.
    pub fn retry_pending(&self) -> usize {
        let mut inner = self.inner.lock();
        let shard = self.shard;
        let (cb, queue) = inner.cb();
        let Some(cb) = cb else { return 0 };
        let mut drained = 0;
        while let Some(e) = queue.pop_front() {
            // The head is offered alone: the entries behind it are not the callback's to
            // drain, or a later entry could replay while this one still waits (log order).
            let mut none = PendingQueue::default();
            let status = cb(ApplyCtx {
                entry: &e.entry,
                index: e.index,
                shard,
                queue: &mut none,
            })
            .status;
            // Anything the callback queued meanwhile goes behind the rest.
            while let Some(x) = none.pop_front() {
                queue.push_back(x);
            }
            if status == ApplyStatus::SafetyFail {
                queue.push_front(e);
                break;
            }
            drained += 1;
        }
        inner.applied_in_round |= drained > 0;
        drained
    }

    /// Empties the pending queue (an installed snapshot covers every queued entry).
    pub fn clear_pending(&self) {
        self.inner.lock().queue = PendingQueue::default();
    }

    /// Replaces the pending queue with `entries` (oldest first): the queue a restored
    /// snapshot carried, which goes ahead of every entry applied after it.
    pub fn restore_pending(&self, entries: Vec<QueuedEntry>) {
        let mut queue = PendingQueue::default();
        for e in entries {
            queue.push_back(e);
        }
        self.inner.lock().queue = queue;
    }

    /// Number of queued entries.
    pub fn queued(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// A copy of the queued entries, oldest first.
    pub fn queue_snapshot(&self) -> Vec<QueuedEntry> {
        self.inner.lock().queue.iter().cloned().collect()
    }

    /// What the dispatcher did so far.
    pub fn stats(&self) -> ApplyStats {
        self.inner.lock().stats
    }
}

#[cfg(test)]
mod tests {
    /// The round callback runs once per round in which an entry reached an apply callback
    /// (including entries a retry drained), and not for a round with none.
    #[test]
    fn a_round_callback_runs_once_per_round_that_applied_something() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};
        let d = ApplyDispatcher::new(0);
        let rounds = Arc::new(AtomicU32::new(0));
        let r = Arc::clone(&rounds);
        d.set_round_callback(Box::new(move || {
            r.fetch_add(1, Ordering::Relaxed);
        }));
        // No apply callback yet: entries queue, nothing was applied.
        d.apply(1, &Bytes::from_static(b"1"));
        d.end_round();
        assert_eq!(rounds.load(Ordering::Relaxed), 0);
        d.set_callback(
            Role::Follower,
            Box::new(|ctx| crate::Applied::normal(ctx.index)),
        );
        d.retry_pending();
        d.end_round();
        assert_eq!(rounds.load(Ordering::Relaxed), 1, "the drained entry");
        d.apply(2, &Bytes::from_static(b"2"));
        d.apply(3, &Bytes::from_static(b"3"));
        d.end_round();
        d.end_round();
        assert_eq!(
            rounds.load(Ordering::Relaxed),
            2,
            "one call for two entries"
        );
    }

    /// Entries committed before any callback is registered are kept, in order, and offered
    /// once one is (a group starts before its owner can register callbacks).
    #[test]
    fn entries_before_any_callback_wait_for_it() {
        use std::sync::Arc;
        let d = ApplyDispatcher::new(0);
        for i in 1..=3u64 {
            d.apply(i, &Bytes::from(vec![i as u8]));
        }
        assert_eq!(d.queued(), 3);
        let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        let s = Arc::clone(&seen);
        d.set_callback(
            Role::Follower,
            Box::new(move |ctx| {
                s.lock().push(ctx.index);
                crate::Applied::normal(ctx.index)
            }),
        );
        d.retry_pending();
        d.apply(4, &Bytes::from_static(b"4"));
        assert_eq!(*seen.lock(), [1, 2, 3, 4]);
        assert_eq!(d.stats().unhandled, 3);
    }

    /// A callback shaped like a replaying follower: it first drains what it is handed as
    /// the queue, then replays its own entry if safe. Retrying must still replay in log order.
    #[test]
    fn retry_replays_in_log_order_even_when_the_callback_drains_its_queue() {
        use std::sync::Arc;
        let d = ApplyDispatcher::new(0);
        let safe: Arc<Mutex<std::collections::HashSet<u64>>> = Arc::default();
        let replayed: Arc<Mutex<Vec<u64>>> = Arc::default();
        let (s, r) = (Arc::clone(&safe), Arc::clone(&replayed));
        d.set_callback(
            Role::Follower,
            Box::new(move |ctx| {
                let safe = s.lock();
                while let Some(front) = ctx.queue.front() {
                    if !safe.contains(&front.index) {
                        break;
                    }
                    let e = ctx.queue.pop_front().unwrap();
                    r.lock().push(e.index);
                }
                if ctx.queue.is_empty() && safe.contains(&ctx.index) {
                    r.lock().push(ctx.index);
                    crate::Applied::normal(ctx.index)
                } else {
                    crate::Applied {
                        status: ApplyStatus::SafetyFail,
                        ts: ctx.index,
                    }
                }
            }),
        );
        d.apply(1, &Bytes::from_static(b"1"));
        d.apply(2, &Bytes::from_static(b"2"));
        d.apply(3, &Bytes::from_static(b"3"));
        assert_eq!(d.queued(), 3);
        // Entry 3 becomes safe before entry 2: retrying must not replay 3 ahead of 2.
        safe.lock().extend([1, 3]);
        d.retry_pending();
        assert_eq!(*replayed.lock(), [1]);
        safe.lock().insert(2);
        d.retry_pending();
        assert_eq!(*replayed.lock(), [1, 2, 3]);
        assert_eq!(d.queued(), 0);
    }

    use super::*;
    use crate::Applied;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn callback_follows_role_and_safety_fail_entries_queue_in_order() {
        let d = ApplyDispatcher::new(3);
        let leader_calls = Arc::new(AtomicU64::new(0));
        let safe_below = Arc::new(AtomicU64::new(0));
        let lc = Arc::clone(&leader_calls);
        d.set_callback(
            Role::Leader,
            Box::new(move |ctx| {
                assert_eq!(ctx.shard, 3);
                lc.fetch_add(1, Ordering::SeqCst);
                Applied::normal(ctx.index)
            }),
        );
        let sb = Arc::clone(&safe_below);
        d.set_callback(
            Role::Follower,
            Box::new(move |ctx| {
                if ctx.index < sb.load(Ordering::SeqCst) {
                    Applied::normal(ctx.index)
                } else {
                    Applied {
                        status: ApplyStatus::SafetyFail,
                        ts: ctx.index,
                    }
                }
            }),
        );
        let roles = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let r = Arc::clone(&roles);
        d.add_role_listener(Box::new(move |c| r.lock().push(c.role)));
        for i in 1..=3 {
            d.apply(i, &Bytes::from(vec![i as u8]));
        }
        assert_eq!(
            d.queue_snapshot()
                .iter()
                .map(|e| e.index)
                .collect::<Vec<_>>(),
            [1, 2, 3]
        );
        safe_below.store(3, Ordering::SeqCst);
        assert_eq!(d.retry_pending(), 2);
        assert_eq!(d.queue_snapshot()[0].index, 3);
        d.set_role(Role::Leader, 2, Some(1));
        d.apply(4, &Bytes::new());
        assert_eq!(leader_calls.load(Ordering::SeqCst), 1);
        assert_eq!(*roles.lock(), [Role::Leader]);
        assert_eq!(d.stats().queued, 3);
    }
}
