use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use super::*;

/// A transport with two queues that counts what its workers do.
#[derive(Default)]
struct Fake {
    hook: Mutex<Option<NotifyHook>>,
    hooks_set: AtomicUsize,
    processed: [AtomicUsize; 2],
}

impl Served for Fake {
    fn set_notify_hook(&self, hook: Option<NotifyHook>) {
        self.hooks_set.fetch_add(1, Ordering::SeqCst);
        *lock(&self.hook) = hook;
    }
    fn process_notified(&self, q: u16) {
        self.processed[usize::from(q)].fetch_add(1, Ordering::SeqCst);
    }
    fn num_queues(&self) -> u16 {
        2
    }
}

impl Fake {
    fn ring(&self, q: u16) {
        let h = lock(&self.hook).clone().expect("hooked");
        h(q);
    }
    fn count(&self, q: usize) -> usize {
        self.processed[q].load(Ordering::SeqCst)
    }
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn rig() -> (IoThreads, Arc<Fake>, Arc<Control>, DeviceTree) {
    let fake = Arc::new(Fake::default());
    let control = Arc::new(Control::new(1));
    let mut tree = DeviceTree::default();
    let mut io = IoThreads::default();
    let wakes = io.serve("test", fake.clone(), &control, &mut tree).unwrap();
    assert_eq!((wakes.len(), io.len()), (2, 2));
    (io, fake, control, tree)
}

#[test]
fn a_doorbell_wakes_its_queue_worker() {
    let (_io, fake, ..) = rig();
    fake.ring(1);
    wait_for("queue 1", || fake.count(1) == 1);
    assert_eq!(fake.count(0), 0);
    fake.ring(0);
    wait_for("queue 0", || fake.count(0) == 1);
    // A queue the device does not have is ignored.
    fake.ring(9);
}

#[test]
fn nothing_is_processed_while_paused_and_resume_renotifies() {
    let (_io, fake, control, _tree) = rig();
    control.set_paused();
    fake.ring(0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(fake.count(0), 0, "work started while paused");
    control.resume();
    wait_for("the deferred doorbell", || fake.count(0) >= 1);
    wait_for("queue 1 renotified", || fake.count(1) >= 1);
}

#[test]
fn a_restore_hooks_the_new_transport_and_renotifies() {
    let (_io, fake, _control, tree) = rig();
    assert_eq!(fake.hooks_set.load(Ordering::SeqCst), 1);
    tree.restore(&Default::default()).unwrap();
    assert_eq!(fake.hooks_set.load(Ordering::SeqCst), 2);
    wait_for("both queues", || fake.count(0) >= 1 && fake.count(1) >= 1);
}

#[test]
fn dropping_stops_and_joins_every_worker() {
    let (io, fake, control, tree) = rig();
    drop(io);
    // The workers held the transport; the tree's restore hook holds the rest.
    drop(tree);
    drop(control);
    assert_eq!(
        Arc::strong_count(&fake),
        1,
        "a worker still holds the device"
    );
}
