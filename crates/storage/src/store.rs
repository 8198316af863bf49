//! The store: a registry of tables with stable ids and the shared reclaim bound.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::StorageError;
use crate::reclaim::{Finality, Reclaim};
use crate::table::Table;

/// Numeric id of a table, identical on every replica (see [`table_id_for`]).
pub type TableId = u32;

/// The stable id of a table name: 32-bit FNV-1a of its UTF-8 bytes.
pub fn table_id_for(name: &str) -> TableId {
    name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// All tables of one shard replica.
pub struct Store {
    tables: RwLock<HashMap<TableId, Arc<Table>>>,
    reclaim: Arc<Reclaim>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("tables", &self.tables.read().len())
            .field("reclaim_bound", &self.reclaim_bound())
            .finish()
    }
}

impl Store {
    /// An empty store whose versions are all final (reclaim bound `u64::MAX`).
    pub fn new() -> Self {
        Store {
            tables: RwLock::new(HashMap::new()),
            reclaim: Arc::new(Reclaim::new()),
        }
    }

    /// Creates the table `name`, or returns it if it exists.
    pub fn create_table(&self, name: &str) -> Result<Arc<Table>, StorageError> {
        let id = table_id_for(name);
        let mut tables = self.tables.write();
        if let Some(t) = tables.get(&id) {
            if t.name() == name {
                return Ok(Arc::clone(t));
            }
            return Err(StorageError::TableIdCollision {
                name: name.to_owned(),
                existing: t.name().to_owned(),
                id,
            });
        }
        let t = Arc::new(Table::new(id, name.to_owned(), Arc::clone(&self.reclaim)));
        tables.insert(id, Arc::clone(&t));
        Ok(t)
    }

    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<Arc<Table>> {
        self.table_by_id(table_id_for(name))
            .filter(|t| t.name() == name)
    }

    /// The table with id `id`.
    pub fn table_by_id(&self, id: TableId) -> Option<Arc<Table>> {
        self.tables.read().get(&id).cloned()
    }

    /// Every table, ordered by id.
    pub fn tables(&self) -> Vec<Arc<Table>> {
        let mut v: Vec<_> = self.tables.read().values().cloned().collect();
        v.sort_by_key(|t| t.id());
        v
    }

    /// Versions at or below this timestamp are final; older ones are trimmed on install.
    pub fn reclaim_bound(&self) -> u64 {
        self.reclaim.bound()
    }

    /// Installs the test of which versions are final (once; `false` if one was set already).
    ///
    /// Without one every version is final and chains keep only their newest version at or
    /// below the reclaim bound.
    pub fn set_finality(&self, f: Arc<dyn Finality>) -> bool {
        self.reclaim.set_finality(f)
    }

    /// Sets the reclaim bound (the oldest timestamp any reader or failover may still need).
    pub fn set_reclaim_bound(&self, ts: u64) {
        self.reclaim.set_bound(ts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ids_are_stable_and_names_unique() {
        let a = Store::new();
        let b = Store::new();
        let t1 = a.create_table("warehouse").unwrap();
        b.create_table("stock").unwrap();
        let t2 = b.create_table("warehouse").unwrap();
        assert_eq!(t1.id(), t2.id());
        assert_eq!(t1.id(), table_id_for("warehouse"));
        assert!(Arc::ptr_eq(&t1, &a.create_table("warehouse").unwrap()));
        assert!(a.table("nope").is_none());
        assert_eq!(a.table_by_id(t1.id()).unwrap().name(), "warehouse");
    }
}
