//! Who may type on a VM's console: the first viewer that asks for it
//! (`?mode=rw`), until that viewer goes. The others watch, and are told so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::vm::lock;

/// The typing seat of one VM's console.
#[derive(Default)]
pub struct Typist {
    holder: Mutex<Option<u64>>,
    next: AtomicU64,
}

/// The seat, held: dropping it frees the seat.
pub struct Seat {
    typist: Arc<Typist>,
    id: u64,
}

impl Typist {
    /// The seat, if nobody holds it.
    pub fn claim(self: &Arc<Self>) -> Option<Seat> {
        let mut h = lock(&self.holder);
        if h.is_some() {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        *h = Some(id);
        Some(Seat {
            typist: self.clone(),
            id,
        })
    }

    /// Whether somebody holds the seat.
    pub fn taken(&self) -> bool {
        lock(&self.holder).is_some()
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut h = lock(&self.typist.holder);
        if *h == Some(self.id) {
            *h = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seat_freed_when_its_holder_goes() {
        let t = Arc::new(Typist::default());
        let a = t.claim().expect("the first claim gets the seat");
        assert!(t.claim().is_none());
        assert!(t.taken());
        drop(a);
        assert!(!t.taken());
        let _b = t.claim().expect("free again");
        assert!(t.claim().is_none());
    }
}
