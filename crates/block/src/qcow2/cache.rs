//! A small least-recently-used cache of metadata tables (L2 tables, refcount blocks),
//! with a dirty bit per table. Write-back order is the caller's business: the cache
//! only says which tables are dirty and which one to evict.

use std::collections::HashMap;

struct Slot<T> {
    value: T,
    dirty: bool,
    stamp: u64,
}

/// LRU cache keyed by a table's host offset (or index).
pub struct TableCache<T> {
    slots: HashMap<u64, Slot<T>>,
    capacity: usize,
    clock: u64,
}

impl<T> TableCache<T> {
    /// A cache holding at most `capacity` tables (at least one).
    pub fn new(capacity: usize) -> Self {
        TableCache {
            slots: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// The cached table for `key`, marking it recently used.
    pub fn get_mut(&mut self, key: u64) -> Option<&mut T> {
        self.clock += 1;
        let clock = self.clock;
        self.slots.get_mut(&key).map(|s| {
            s.stamp = clock;
            &mut s.value
        })
    }

    /// Whether `key` is cached.
    pub fn contains(&self, key: u64) -> bool {
        self.slots.contains_key(&key)
    }

    /// Whether inserting a new table requires evicting one first.
    pub fn is_full(&self) -> bool {
        self.slots.len() >= self.capacity
    }

    /// The least recently used key and whether it is dirty.
    pub fn victim(&self) -> Option<(u64, bool)> {
        self.slots
            .iter()
            .min_by_key(|(_, s)| s.stamp)
            .map(|(k, s)| (*k, s.dirty))
    }

    /// Adds a table. The caller evicts first if [`is_full`](Self::is_full).
    pub fn insert(&mut self, key: u64, value: T, dirty: bool) {
        self.clock += 1;
        self.slots.insert(
            key,
            Slot {
                value,
                dirty,
                stamp: self.clock,
            },
        );
    }

    /// Removes a table, returning it.
    pub fn remove(&mut self, key: u64) -> Option<T> {
        self.slots.remove(&key).map(|s| s.value)
    }

    /// Marks a cached table dirty.
    pub fn mark_dirty(&mut self, key: u64) {
        if let Some(s) = self.slots.get_mut(&key) {
            s.dirty = true;
        }
    }

    /// Marks a cached table clean (after writing it back).
    pub fn mark_clean(&mut self, key: u64) {
        if let Some(s) = self.slots.get_mut(&key) {
            s.dirty = false;
        }
    }

    /// Keys of all dirty tables, in ascending order.
    pub fn dirty_keys(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.dirty)
            .map(|(k, _)| *k)
            .collect();
        v.sort_unstable();
        v
    }

    /// A cached table without touching its age.
    pub fn peek(&self, key: u64) -> Option<&T> {
        self.slots.get(&key).map(|s| &s.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_victim_and_dirty_tracking() {
        let mut c = TableCache::new(2);
        c.insert(1, "a", false);
        c.insert(2, "b", true);
        assert!(c.is_full());
        assert_eq!(c.victim(), Some((1, false)));
        c.get_mut(1);
        assert_eq!(c.victim(), Some((2, true)));
        assert_eq!(c.dirty_keys(), vec![2]);
        c.mark_clean(2);
        c.mark_dirty(1);
        assert_eq!(c.dirty_keys(), vec![1]);
        assert_eq!(c.remove(2), Some("b"));
        assert!(!c.is_full());
    }
}
