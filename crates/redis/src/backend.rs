//! What the front end needs from the store: transactions over the key space, run and
//! committed by a [`Backend`] (a mako-rs node, or [`MemStore`] in tests).

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Why a transaction did not commit, or an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The transaction aborted: nothing of it is or will be visible.
    #[error("transaction aborted ({reason}); nothing was applied")]
    Aborted {
        /// The store's reason (`conflict`, `failover`, ...).
        reason: String,
        /// Whether running it again may succeed.
        retryable: bool,
    },
    /// The commit's outcome is unknown: it may or may not become durable.
    #[error("the outcome is unknown ({0}): the command may or may not have been applied")]
    Unknown(String),
    /// The store cannot run transactions now (no leader, shutting down); nothing was applied.
    #[error("{0}; nothing was applied")]
    Unavailable(String),
    /// The operation was refused (e.g. not an integer); the transaction goes on unchanged.
    #[error("{0}")]
    Refused(String),
    /// The body asked to roll the transaction back (a WATCHed key changed).
    #[error("cancelled")]
    Cancelled,
}

impl Failure {
    /// The error reply for this failure.
    pub fn reply_text(&self) -> String {
        match self {
            Failure::Aborted { .. } => format!("ABORTED {self}"),
            Failure::Unknown(_) => format!("UNKNOWN {self}"),
            Failure::Unavailable(_) => format!("TRYAGAIN {self}"),
            Failure::Refused(m) => format!("ERR {m}"),
            Failure::Cancelled => "ERR transaction cancelled".into(),
        }
    }
}

/// Operations of one open transaction on the key space (the default table, all shards).
pub trait Txn {
    /// The value of `key`.
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Failure>;
    /// Sets `key` to `value`.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Failure>;
    /// Deletes `key` (absent: nothing).
    fn delete(&mut self, key: &[u8]) -> Result<(), Failure>;
    /// Adds `delta` to the decimal integer under `key` (absent: 0) and returns the new value;
    /// a value that is not an integer, or an overflow, is [`Failure::Refused`] with Redis's text.
    fn add(&mut self, key: &[u8], delta: i64) -> Result<i64, Failure>;
    /// Appends `value` to `key`'s value (absent: empty) and returns the new length.
    fn append(&mut self, key: &[u8], value: &[u8]) -> Result<i64, Failure>;
    /// Up to `limit` keys after `after` (exclusive; `None`: from the first), in key order
    /// across every shard.
    fn scan(&mut self, after: Option<&[u8]>, limit: usize) -> Result<Vec<Vec<u8>>, Failure>;
    /// The version of `key`. This transaction's own writes are not seen.
    fn version(&mut self, key: &[u8]) -> Result<KeyVersion, Failure>;
}

/// A key's version: a token that changes with every write to the key, the same value
/// written again and a delete included (`None`: never written).
pub type KeyVersion = Option<(u32, u64)>;

/// The body of a transaction: may run more than once (after a retryable abort).
pub type Body<'a> = dyn FnMut(&mut dyn Txn) -> Result<(), Failure> + 'a;

/// A transaction committed but perhaps not yet released.
pub trait Release: Send {
    /// Waits until it is released (`Ok`), or says why it is not: [`Failure::Aborted`] if
    /// it will never be visible, [`Failure::Unknown`] if its release did not come in time.
    fn wait(self: Box<Self>) -> Result<(), Failure>;

    /// What [`Release::wait`] would return now, without waiting (`None`: not decided yet).
    /// Only releases handed out by [`Backend::try_local`] are polled; the [`Store`]'s
    /// [`Store::on_progress`] callback runs whenever the answer may have changed, and
    /// [`Release::deadline`] says when it turns into [`Failure::Unknown`] at the latest.
    fn poll(&mut self) -> Option<Result<(), Failure>> {
        None
    }

    /// When a release still pending stops being waited for (its outcome is then unknown).
    fn deadline(&self) -> Option<std::time::Instant> {
        None
    }
}

/// A callback the store runs whenever a pending release may have become decided.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// One connection's way to the store.
pub trait Backend: Send {
    /// Runs `body` in a fresh transaction and commits it, returning once it is released
    /// (durable on a majority of every shard touched). A conflict abort may run `body`
    /// again in a new transaction; an error `body` returns rolls the transaction back.
    fn transact(&mut self, body: &mut Body<'_>) -> Result<(), Failure>;

    /// Like [`Backend::transact`], but may return once the transaction is committed and
    /// before it is released, with the [`Release`] to wait on before its reply is sent
    /// (`None`: already released). Later transactions of the connection may read its
    /// writes meanwhile (if it is never released, neither are they). Pipelined requests use
    /// it so that their releases overlap. By default, [`Backend::transact`].
    fn transact_pipelined(
        &mut self,
        body: &mut Body<'_>,
    ) -> Result<Option<Box<dyn Release>>, Failure> {
        self.transact(body).map(|()| None)
    }

    /// Runs `body` once in a fresh transaction and commits it, if that cannot block (every
    /// key in `keys`, the keys `body` touches, is served here; no pause before a retry):
    /// the [`Release`] returned then must be pollable ([`Release::poll`]). `None` (the
    /// default) if it would have to wait for another node or cannot tell: nothing ran, and
    /// the caller uses [`Backend::transact_pipelined`] on a thread that may block. A
    /// retryable abort is returned as such (nothing applied) for the caller to retry there;
    /// [`Failure::Unknown`] (it may have been applied) is answered, never run again.
    /// Event loops serving many connections on one thread use it.
    fn try_local(
        &mut self,
        keys: &mut dyn Iterator<Item = &[u8]>,
        body: &mut Body<'_>,
    ) -> Option<Result<Option<Box<dyn Release>>, Failure>> {
        let _ = (keys, body);
        None
    }

    /// The store's figures for INFO.
    fn figures(&mut self) -> Figures;
}

/// Hands each connection its [`Backend`].
pub trait Store: Send + Sync + 'static {
    /// A backend for a new connection.
    fn connect(&self) -> Box<dyn Backend>;

    /// Runs `wake` whenever a pending release handed out by [`Backend::try_local`] may have
    /// become decided, for as long as the caller holds `wake` (the store keeps it weakly).
    /// `wake` runs on the store's threads: it must be quick and not block. By default
    /// nothing is announced (releases are then polled at their deadlines only).
    fn on_progress(&self, wake: &Wake) {
        let _ = wake;
    }
}

/// The store's figures INFO reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// Whether this site leads its shard (INFO's `role:master`).
    pub leader: bool,
    /// Lines of the `replication` section (`name`, `value`).
    pub replication: Vec<(String, String)>,
    /// Lines of the `stats` section.
    pub stats: Vec<(String, String)>,
    /// Lines of the `server` section.
    pub server: Vec<(String, String)>,
}

/// A serial in-memory store (one lock over a map), for tests and examples.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    map: Arc<Mutex<Mem>>,
}

/// The rows of a [`MemStore`] and the commit that last wrote each key.
#[derive(Debug, Default)]
struct Mem {
    rows: BTreeMap<Vec<u8>, Vec<u8>>,
    versions: BTreeMap<Vec<u8>, u64>,
    commits: u64,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        MemStore::default()
    }

    /// The value of `key`, outside any transaction.
    pub fn value(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map.lock().rows.get(key).cloned()
    }
}

impl Store for MemStore {
    fn connect(&self) -> Box<dyn Backend> {
        Box::new(self.clone())
    }
}

/// A [`MemStore`] transaction: writes buffered, applied at commit under the lock.
struct MemTxn<'a> {
    map: &'a BTreeMap<Vec<u8>, Vec<u8>>,
    versions: &'a BTreeMap<Vec<u8>, u64>,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Txn for MemTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Failure> {
        Ok(match self.writes.get(key) {
            Some(v) => v.clone(),
            None => self.map.get(key).cloned(),
        })
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Failure> {
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), Failure> {
        self.writes.insert(key.to_vec(), None);
        Ok(())
    }

    fn add(&mut self, key: &[u8], delta: i64) -> Result<i64, Failure> {
        let old = match self.get(key)? {
            None => 0,
            Some(v) => crate::command::parse_i64(&v).ok_or_else(|| {
                Failure::Refused("value is not an integer or out of range".into())
            })?,
        };
        let new = old
            .checked_add(delta)
            .ok_or_else(|| Failure::Refused("increment or decrement would overflow".into()))?;
        self.put(key, new.to_string().as_bytes())?;
        Ok(new)
    }

    fn append(&mut self, key: &[u8], value: &[u8]) -> Result<i64, Failure> {
        let mut v = self.get(key)?.unwrap_or_default();
        v.extend_from_slice(value);
        self.put(key, &v)?;
        Ok(v.len() as i64)
    }

    fn scan(&mut self, after: Option<&[u8]>, limit: usize) -> Result<Vec<Vec<u8>>, Failure> {
        use std::ops::Bound;
        let lo = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_vec()));
        let mut merged: BTreeMap<Vec<u8>, bool> = self
            .map
            .range((lo.clone(), Bound::Unbounded))
            .take(limit + self.writes.len())
            .map(|(k, _)| (k.clone(), true))
            .collect();
        for (k, v) in self.writes.range((lo, Bound::Unbounded)) {
            merged.insert(k.clone(), v.is_some());
        }
        Ok(merged
            .into_iter()
            .filter(|(_, live)| *live)
            .map(|(k, _)| k)
            .take(limit)
            .collect())
    }

    fn version(&mut self, key: &[u8]) -> Result<KeyVersion, Failure> {
        Ok(self.versions.get(key).map(|&c| (0, c)))
    }
}

impl Backend for MemStore {
    fn transact(&mut self, body: &mut Body<'_>) -> Result<(), Failure> {
        let mut mem = self.map.lock();
        let mut tx = MemTxn {
            map: &mem.rows,
            versions: &mem.versions,
            writes: BTreeMap::new(),
        };
        body(&mut tx)?;
        let writes = tx.writes;
        mem.commits += 1;
        let commit = mem.commits;
        for (k, v) in writes {
            mem.versions.insert(k.clone(), commit);
            match v {
                Some(v) => mem.rows.insert(k, v),
                None => mem.rows.remove(&k),
            };
        }
        Ok(())
    }

    /// Every key is here and a commit only takes the map's lock.
    fn try_local(
        &mut self,
        _keys: &mut dyn Iterator<Item = &[u8]>,
        body: &mut Body<'_>,
    ) -> Option<Result<Option<Box<dyn Release>>, Failure>> {
        Some(self.transact(body).map(|()| None))
    }

    fn figures(&mut self) -> Figures {
        Figures {
            leader: true,
            stats: vec![("keys".into(), self.map.lock().rows.len().to_string())],
            ..Figures::default()
        }
    }
}
