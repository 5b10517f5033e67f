//! The machine's devices by stable id, so saving and restoring them is one walk.
//!
//! Each node holds the live device (`Arc<Mutex<T>>`, the same one the buses hold) and
//! a factory for the host-side pieces its [`Persist::restore`] needs. Restoring builds
//! every device first and swaps them in only when all were accepted. See
//! docs/snapshot.md.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize as _;
use serde_json::Value;
use vm_device::bus::lock;
use vm_device::{Persist, StateError};

/// The saved state of every device, by id.
pub type DeviceStates = BTreeMap<String, Value>;

type Commit = Box<dyn FnOnce() + Send>;
type Prepare = Box<dyn Fn(&Value) -> Result<Commit, StateError> + Send + Sync>;

struct Node {
    id: String,
    save: Box<dyn Fn() -> Value + Send + Sync>,
    prepare: Prepare,
}

/// Why the devices' states could not be restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    #[error("the snapshot has no state for device {0}")]
    Missing(String),
    #[error("the snapshot has a device this VM does not: {0}")]
    Unknown(String),
    #[error("device {id}: {source}")]
    Refused {
        id: String,
        #[source]
        source: StateError,
    },
}

/// The devices of one machine, in the order they were added.
#[derive(Default)]
pub struct DeviceTree {
    nodes: Vec<Node>,
    after_restore: Vec<Box<dyn Fn() + Send + Sync>>,
}

impl DeviceTree {
    /// Adds `dev` under `id`; `args` makes what restoring it needs besides its state.
    pub fn add<T, F>(&mut self, id: impl Into<String>, dev: &Arc<Mutex<T>>, args: F)
    where
        T: Persist + Send + 'static,
        F: Fn() -> T::Args + Send + Sync + 'static,
    {
        let id = id.into();
        debug_assert!(self.nodes.iter().all(|n| n.id != id), "duplicate id {id}");
        let saved = dev.clone();
        let live = dev.clone();
        self.nodes.push(Node {
            id,
            save: Box::new(move || {
                serde_json::to_value(lock(&saved).save()).expect("device states serialize to JSON")
            }),
            prepare: Box::new(move |v| {
                let state: T::State = T::State::deserialize(v)
                    .map_err(|e| StateError::new("state", format!("malformed: {e}")))?;
                let new = T::restore(args(), &state)?;
                let live = live.clone();
                Ok(Box::new(move || *lock(&live) = new))
            }),
        });
    }

    /// Runs `f` after a restore swapped the devices in (e.g. to re-route PCI BARs).
    pub fn after_restore(&mut self, f: impl Fn() + Send + Sync + 'static) {
        self.after_restore.push(Box::new(f));
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.id.as_str())
    }

    /// The state of every device.
    pub fn save(&self) -> DeviceStates {
        self.nodes
            .iter()
            .map(|n| (n.id.clone(), (n.save)()))
            .collect()
    }

    /// Restores every device from `states`, which must name exactly this tree's ids.
    /// Nothing is swapped in unless every device accepted its state.
    pub fn restore(&self, states: &DeviceStates) -> Result<(), RestoreError> {
        if let Some(id) = states
            .keys()
            .find(|k| !self.nodes.iter().any(|n| &n.id == *k))
        {
            return Err(RestoreError::Unknown(id.clone()));
        }
        let mut commits = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            let v = states
                .get(&n.id)
                .ok_or_else(|| RestoreError::Missing(n.id.clone()))?;
            commits.push((n.prepare)(v).map_err(|source| RestoreError::Refused {
                id: n.id.clone(),
                source,
            })?);
        }
        for c in commits {
            c();
        }
        for f in &self.after_restore {
            f();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq)]
    struct Counter(u32);

    #[derive(Serialize, Deserialize)]
    struct CounterState {
        n: u32,
    }

    impl Persist for Counter {
        type State = CounterState;
        type Args = ();
        fn save(&self) -> CounterState {
            CounterState { n: self.0 }
        }
        fn restore(_: (), s: &CounterState) -> Result<Self, StateError> {
            if s.n > 100 {
                return Err(StateError::new("counter", "too big"));
            }
            Ok(Counter(s.n))
        }
    }

    fn tree() -> (DeviceTree, Arc<Mutex<Counter>>, Arc<Mutex<Counter>>) {
        let a = Arc::new(Mutex::new(Counter(1)));
        let b = Arc::new(Mutex::new(Counter(2)));
        let mut t = DeviceTree::default();
        t.add("a", &a, || ());
        t.add("b", &b, || ());
        (t, a, b)
    }

    #[test]
    fn save_and_restore_walk_every_device() {
        let (t, a, b) = tree();
        let saved = t.save();
        assert_eq!(
            serde_json::to_string(&saved).unwrap(),
            r#"{"a":{"n":1},"b":{"n":2}}"#
        );
        lock(&a).0 = 7;
        lock(&b).0 = 8;
        t.restore(&saved).unwrap();
        assert_eq!((lock(&a).0, lock(&b).0), (1, 2));
    }

    #[test]
    fn a_refused_state_swaps_nothing_in() {
        let (t, a, b) = tree();
        let mut s = t.save();
        s.insert("a".into(), serde_json::json!({"n": 5}));
        s.insert("b".into(), serde_json::json!({"n": 500}));
        let e = t.restore(&s).unwrap_err();
        assert_eq!(e.to_string(), "device b: counter: too big");
        assert_eq!((lock(&a).0, lock(&b).0), (1, 2));

        s.insert("b".into(), serde_json::json!({"m": 1}));
        assert!(t.restore(&s).unwrap_err().to_string().contains("malformed"));
        s.remove("b");
        assert_eq!(t.restore(&s), Err(RestoreError::Missing("b".into())));
        s.insert("b".into(), serde_json::json!({"n": 1}));
        s.insert("c".into(), serde_json::json!({"n": 1}));
        assert_eq!(t.restore(&s), Err(RestoreError::Unknown("c".into())));
    }
}
