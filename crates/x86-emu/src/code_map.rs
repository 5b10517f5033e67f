//! VM-wide tracking of guest physical pages that hold decoded code.
//!
//! Every vCPU keeps its own cache of decoded blocks, but guest code is shared: one
//! vCPU may patch kernel text (`text_poke`, jump labels, module loading) while
//! another runs it. So the knowledge of "this page holds code" lives here, shared by
//! all vCPUs of a VM: one word per 4 KiB page, whose low bit says that some vCPU
//! has decoded code from the page and whose upper bits are a generation. A write to
//! a page with the bit set bumps the generation and clears the bit; every block
//! remembers the generations of its pages when it was decoded and is dropped on its
//! next entry if they moved. So a vCPU sees another's code change on the next
//! block it enters (within one block of 48 instructions at most).
//!
//! Ordering: a writer stores the new code bytes first and bumps the generation
//! after (release); a decoder sets the bit (acquire-release read-modify-write)
//! before it reads the bytes. Either the decoder reads the new bytes, or the writer
//! sees the bit and bumps the generation so that the block is dropped. (A writer
//! whose byte store still sits in its store buffer while it reads a clear bit could
//! race a decoder that reads the old bytes in the same few nanoseconds; closing that
//! window would cost a fence on every guest store. Guests that patch code running
//! elsewhere also serialize the other CPUs afterwards — Linux's `text_poke_sync`
//! IPIs — which always happens well after the store is visible.)
//!
//! Words are allocated lazily per 1 GiB chunk, so a VM pays 1 MiB per GiB of
//! guest-physical space in which code ever ran.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Pages per chunk (1 GiB).
const CHUNK_PAGES: usize = 1 << 18;
/// Chunks: physical addresses below 1 TiB are tracked; code above is never cached.
const CHUNKS: usize = 1024;
/// The "some vCPU has decoded code here" bit of a page word.
const CODE: u32 = 1;

/// Shared per-page code generations of one VM (see the module documentation).
pub struct CodeMap {
    chunks: Box<[OnceLock<Box<[AtomicU32]>>]>,
    /// Bumped whenever a page starts holding code: a vCPU that caches write
    /// permission for pages outside this map (a translator's TLB) drops it.
    epoch: AtomicU64,
    /// Bumped whenever a page holding code is written: caches of translations
    /// looked up by address alone (a translator's jump table) drop theirs.
    writes: AtomicU64,
    /// Called with a page number when the page starts holding code, before its
    /// bytes are read: a translator drops every vCPU's native write permission
    /// for it there.
    hook: OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
}

impl Default for CodeMap {
    fn default() -> Self {
        CodeMap {
            chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
            epoch: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            hook: OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for CodeMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.chunks.iter().filter(|c| c.get().is_some()).count();
        f.debug_struct("CodeMap").field("chunks", &used).finish()
    }
}

impl CodeMap {
    #[inline]
    fn word(&self, pn: u64) -> Option<&AtomicU32> {
        let c = self.chunks.get((pn as usize) / CHUNK_PAGES)?.get()?;
        Some(&c[(pn as usize) % CHUNK_PAGES])
    }

    /// Whether code on page `pn` can be cached at all (it lies in the tracked range).
    #[inline]
    pub fn trackable(pn: u64) -> bool {
        (pn as usize) < CHUNKS * CHUNK_PAGES
    }

    /// Marks page `pn` as holding decoded code and returns its generation word,
    /// which [`CodeMap::current`] will keep returning until the page is written.
    /// Call before reading the code bytes. `pn` must be [`CodeMap::trackable`].
    pub fn mark(&self, pn: u64) -> u32 {
        let chunk = self.chunks[(pn as usize) / CHUNK_PAGES]
            .get_or_init(|| (0..CHUNK_PAGES).map(|_| AtomicU32::new(0)).collect());
        let old = chunk[(pn as usize) % CHUNK_PAGES].fetch_or(CODE, Ordering::AcqRel);
        if old & CODE == 0 {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            if let Some(h) = self.hook.get() {
                h(pn);
            }
        }
        old | CODE
    }

    /// Sets the hook called when a page starts holding code (once per map;
    /// `false` if one was set already).
    pub fn set_new_code_hook(&self, f: Box<dyn Fn(u64) + Send + Sync>) -> bool {
        self.hook.set(f).is_ok()
    }

    /// Counts the writes to pages holding code (see the `writes` field).
    #[inline]
    pub fn write_epoch(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }

    /// Counts the pages that started holding code (see the `epoch` field).
    #[inline]
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The generation word of page `pn` now (0 if it never held code).
    #[inline]
    pub fn current(&self, pn: u64) -> u32 {
        self.word(pn).map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// The address of page `pn`'s generation word (`None` if its chunk was never
    /// allocated), for translated code that compares it inline with what
    /// [`CodeMap::current`] returned. It stays valid as long as the map lives
    /// (chunks are never freed or moved).
    pub fn word_addr(&self, pn: u64) -> Option<usize> {
        self.word(pn).map(|w| w as *const AtomicU32 as usize)
    }

    /// Whether page `pn` holds decoded code now (a write to it must go through
    /// [`CodeMap::written`]).
    #[inline]
    pub fn holds_code(&self, pn: u64) -> bool {
        self.current(pn) & CODE != 0
    }

    /// Records a write to page `pn` (call after storing the bytes). Returns whether
    /// the page held decoded code, whose blocks are now stale on every vCPU.
    #[inline]
    pub fn written(&self, pn: u64) -> bool {
        let Some(w) = self.word(pn) else {
            return false;
        };
        let mut v = w.load(Ordering::Relaxed);
        while v & CODE != 0 {
            // Next generation, bit clear: the page is code-free until decoded again.
            let next = (v & !CODE).wrapping_add(2);
            match w.compare_exchange_weak(v, next, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => {
                    self.writes.fetch_add(1, Ordering::AcqRel);
                    return true;
                }
                Err(cur) => v = cur,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_moves_the_generation_of_code_pages_only() {
        let m = CodeMap::default();
        assert_eq!(m.current(5), 0);
        assert!(!m.written(5), "no code there yet");
        let g = m.mark(5);
        assert_eq!(m.current(5), g);
        assert!(!m.written(6), "the neighbour holds no code");
        assert_eq!(m.current(5), g);
        assert!(m.written(5));
        let g2 = m.current(5);
        assert_ne!(g2, g);
        assert!(!m.written(5), "bit cleared: later writes are free");
        assert_eq!(m.current(5), g2);
        let g3 = m.mark(5);
        assert_ne!(g3, g, "a re-decode never sees an old generation again");
        assert!(m.written(5));
    }

    #[test]
    fn untracked_pages_are_never_code() {
        let m = CodeMap::default();
        let far = (CHUNKS * CHUNK_PAGES) as u64;
        assert!(!CodeMap::trackable(far));
        assert!(CodeMap::trackable(far - 1));
        assert!(!m.written(far));
        assert_eq!(m.current(far), 0);
    }
}
