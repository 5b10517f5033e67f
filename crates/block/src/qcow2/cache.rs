//! A small least-recently-used cache of metadata tables (L2 tables, refcount blocks)
//! with a dirty bit and a write-back dependency per table: a writeback cache in the
//! manner of QEMU's qcow2 cache (`qcow2-cache.c`, `qcow2_cache_set_dependency`,
//! `qcow2_cache_depends_on_flush`).
//!
//! # Write-back ordering
//!
//! Dirty tables stay in the cache. They are written when evicted, on a flush
//! ([`crate::Disk::flush`], also run by `check`, `resize` and on close), and when an
//! operation needs the on-disk metadata to be current. No `fdatasync` is issued per
//! eviction unless the table's dependencies are not yet durable. The rules (`Inner` in
//! `mod.rs` keeps the counters; `seq` is the number of writes issued so far, `rc` the
//! number of refcount changes made so far):
//!
//! 1. **Refcounts before references.** Setting an L2 entry to a newly allocated (or
//!    newly shared compressed) cluster, or allocating the L2 table itself, records
//!    the current `rc` as the table's refcount dependency. Before the table is
//!    written, every dirty refcount block is written and synced, unless a previous
//!    such sync already covered that `rc` (`rc_durable`). A table whose clusters were
//!    all allocated before the last refcount sync is written without any sync: this
//!    is what makes most evictions cheap.
//! 2. **Data before the mapping.** The same L2 update records the current `seq` (the
//!    guest data, or the copy-on-write cluster composed of old data and new, was
//!    written just before): the table is written only once a sync has followed that
//!    write (QEMU's `depends_on_flush` after copy-on-write). Thus a crash can never
//!    leave an L2 entry pointing past the end of the file or at a cluster whose
//!    copied-over old contents are missing.
//! 3. **L2 tables before the L1 entry.** A new L2 table is created only in the cache
//!    (dirty, depending on its own refcount) and its L1 entry is kept in memory. Once
//!    the table has been written, its L1 entry is written after the next sync, so
//!    the L1 never points at a table that is not durable. (L1 updates need no further
//!    ordering: nothing on disk depends on them.)
//! 4. **References dropped before refcounts.** Clusters an L2 update stopped
//!    referencing are released only in a flush, after the updated tables are written
//!    and synced; then the lowered refcounts are written and synced.
//! 5. Refcount blocks may be written (evicted) at any time: they only ever hold
//!    raised refcounts (harmless: a crash leaks the cluster) or refcounts lowered
//!    under rule 4. New refcount blocks and refcount table growth, header and L1
//!    relocation keep their own write-sync-switch sequences (`refcount.rs`,
//!    `tables.rs`).
//!
//! Any prefix of the writes, with the writes since the last sync persisted in any
//! order, leaves an image whose only defect is leaked clusters (what the crash tests
//! in `tests/qcow2.rs` check), and data written before a flush survives a crash after
//! it. A flush writes: dirty refcount blocks, sync; dirty L2 tables, sync; pending L1
//! entries, sync; then releases freed clusters, writes their refcounts, sync (each
//! sync skipped when nothing was written since the previous one).

use std::collections::HashMap;

/// What a dirty table needs durable before it may be written: the refcount change
/// count and the write count (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dep {
    pub rc: u64,
    pub seq: u64,
}

struct Slot<T> {
    value: T,
    dirty: bool,
    dep: Dep,
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
                dep: Dep::default(),
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

    /// Marks a cached table clean (after writing it back); its dependencies are met.
    pub fn mark_clean(&mut self, key: u64) {
        if let Some(s) = self.slots.get_mut(&key) {
            s.dirty = false;
            s.dep = Dep::default();
        }
    }

    /// Adds a write-back dependency to a cached table (the later of each counter).
    pub fn add_dep(&mut self, key: u64, dep: Dep) {
        if let Some(s) = self.slots.get_mut(&key) {
            s.dep.rc = s.dep.rc.max(dep.rc);
            s.dep.seq = s.dep.seq.max(dep.seq);
        }
    }

    /// The write-back dependency of a cached table (none when clean or absent).
    pub fn dep(&self, key: u64) -> Dep {
        self.slots.get(&key).map(|s| s.dep).unwrap_or_default()
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

    #[test]
    fn dependencies_merge_and_clear_on_write_back() {
        let mut c = TableCache::new(4);
        c.insert(7, (), true);
        c.add_dep(7, Dep { rc: 5, seq: 2 });
        c.add_dep(7, Dep { rc: 3, seq: 9 });
        assert_eq!(c.dep(7), Dep { rc: 5, seq: 9 });
        c.mark_clean(7);
        assert_eq!(c.dep(7), Dep::default());
        assert_eq!(c.dep(8), Dep::default());
    }
}
