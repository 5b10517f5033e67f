use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::testing::{self, mmio, GuestQueue};
use crate::transport::mmio::VirtioMmioArgs;
use crate::transport::VirtioMmioDevice;
use vm_device::Persist;

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);
impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn setup() -> (
    VirtioMmioDevice<Console>,
    ConsoleInput,
    Sink,
    crate::GuestMemory,
    GuestQueue,
    GuestQueue,
) {
    let mem = testing::memory();
    let out = Sink::default();
    let (console, input) = Console::new(Box::new(out.clone()));
    let mut dev = VirtioMmioDevice::new(console, mem.clone(), testing::line());
    let rx = GuestQueue::new(0x1000, 8);
    let tx = GuestQueue::new(0x2000, 8);
    mmio::init(&mut dev, u64::MAX, &[&rx, &tx]);
    (dev, input, out, mem, rx, tx)
}

#[test]
fn guest_output_reaches_host_writer() {
    let (mut dev, _in, out, mem, _rx, mut tx) = setup();
    mem.write_slice(b"hello ", GuestAddress(0x8000)).unwrap();
    mem.write_slice(b"hvc0\n", GuestAddress(0x8100)).unwrap();
    tx.add_chain(&mem, &[(0x8000, 6, false), (0x8100, 5, false)]);
    mmio::notify(&mut dev, 1);
    assert_eq!(tx.take_used(&mem), vec![(0, 0)]);
    assert_eq!(&*out.0.lock().unwrap(), b"hello hvc0\n");
}

#[test]
fn host_input_waits_for_receive_buffers() {
    let (mut dev, input, _out, mem, mut rx, _tx) = setup();
    assert_eq!(input.push(b"ls -l\n"), 6);
    dev.process_event();
    assert!(rx.take_used(&mem).is_empty(), "no buffer posted yet");
    rx.add_chain(&mem, &[(0x8000, 4, true)]);
    rx.add_chain(&mem, &[(0x8100, 64, true)]);
    mmio::notify(&mut dev, 0);
    assert_eq!(rx.take_used(&mem), vec![(0, 4), (1, 2)]);
    let mut a = [0u8; 4];
    let mut b = [0u8; 2];
    mem.read_slice(&mut a, GuestAddress(0x8000)).unwrap();
    mem.read_slice(&mut b, GuestAddress(0x8100)).unwrap();
    assert_eq!((&a, &b), (b"ls -", b"l\n"));
    assert_eq!(input.pending(), 0);
    // A buffer posted while no input is waiting stays available.
    rx.add_chain(&mem, &[(0x8200, 8, true)]);
    mmio::notify(&mut dev, 0);
    assert!(rx.take_used(&mem).is_empty());
    input.push(b"x");
    dev.process_event();
    assert_eq!(rx.take_used(&mem), vec![(2, 1)]);
}

#[test]
fn input_is_bounded() {
    let (_dev, input, ..) = setup();
    assert_eq!(input.push(&vec![b'a'; INPUT_LIMIT + 10]), INPUT_LIMIT);
    assert_eq!(input.push(b"b"), 0);
}

#[test]
fn state_round_trip_keeps_pending_input() {
    let (mut dev, input, _out, mem, mut rx, _tx) = setup();
    input.push(b"abc");
    let json = serde_json::to_string(&dev.save()).unwrap();
    let (_, input2) = Console::new(Box::new(Sink::default()));
    let args = VirtioMmioArgs {
        device: ConsoleArgs {
            output: Box::new(Sink::default()),
            input: input2.clone(),
        },
        mem: mem.clone(),
        line: testing::line(),
        dirty: None,
    };
    let mut dev2 =
        VirtioMmioDevice::<Console>::restore(args, &serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(serde_json::to_string(&dev2.save()).unwrap(), json);
    assert_eq!(
        input2.pending(),
        3,
        "the handle given on restore feeds the guest"
    );
    rx.add_chain(&mem, &[(0x8000, 8, true)]);
    mmio::notify(&mut dev2, 0);
    assert_eq!(rx.take_used(&mem), vec![(0, 3)]);
    dev.process_event();
}

#[test]
fn input_thread_feeds_the_guest() {
    let (dev, input, _out, mem, mut rx, _tx) = setup();
    let dev = Arc::new(Mutex::new(dev));
    rx.add_chain(&mem, &[(0x8000, 16, true)]);
    let d = dev.clone();
    let t = spawn_input_thread(&b"typed"[..], input, move || {
        d.lock().unwrap().process_event()
    })
    .unwrap();
    t.join().unwrap();
    assert_eq!(rx.take_used(&mem), vec![(0, 5)]);
    let mut b = [0u8; 5];
    mem.read_slice(&mut b, GuestAddress(0x8000)).unwrap();
    assert_eq!(&b, b"typed");
}
