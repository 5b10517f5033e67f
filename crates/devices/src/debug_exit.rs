//! The ISA debug-exit port of QEMU's `isa-debug-exit` device: a guest write of
//! value V ends the VMM with exit status `(V << 1) | 1`, so test kernels can
//! report pass or fail to the script that started them.
//!
//! The device only reports the value; turning it into a process exit status is
//! the VMM's business ([`exit_status`]).

use vm_device::BusDevice;

use crate::{EventSink, PlatformEvent};

/// QEMU's default port (`iobase=0x501`).
pub const DEFAULT_IOBASE: u16 = 0x501;
/// QEMU's default width of the port range (`iosize=2`).
pub const DEFAULT_IOSIZE: u16 = 2;

/// The process exit status for a write of `value`: `(value << 1) | 1`, truncated
/// to the 8 bits a process status holds, as QEMU's `exit()` call ends up.
pub fn exit_status(value: u32) -> u8 {
    (((value as u64) << 1) | 1) as u8
}

/// The state machine: every write is an exit request carrying the written value.
pub struct DebugExit {
    events: EventSink,
}

impl DebugExit {
    pub fn new(events: EventSink) -> Self {
        DebugExit { events }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    /// Any write in the range: the value is the access's bytes, little-endian
    /// (an 8-bit `out` of 0x20 and a 32-bit `out` of 0x20 both mean 0x20).
    fn write(&mut self, _offset: u64, data: &[u8]) {
        let mut v = [0u8; 4];
        let n = data.len().min(4);
        v[..n].copy_from_slice(&data[..n]);
        (self.events)(PlatformEvent::DebugExit(u32::from_le_bytes(v)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_write_reports_its_value() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut d = DebugExit::new(Arc::new(move |e| s.lock().unwrap().push(e)));
        d.write(0, &[0x20]);
        d.write(1, &[0x34, 0x12]);
        d.write(0, &[1, 0, 0, 0x80]);
        let mut b = [0xffu8; 2];
        d.read(0, &mut b);
        assert_eq!(b, [0, 0]);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                PlatformEvent::DebugExit(0x20),
                PlatformEvent::DebugExit(0x1234),
                PlatformEvent::DebugExit(0x8000_0001),
            ]
        );
    }

    #[test]
    fn exit_status_is_value_times_two_plus_one_in_eight_bits() {
        assert_eq!(exit_status(0), 1);
        assert_eq!(exit_status(1), 3);
        assert_eq!(exit_status(0x20), 0x41);
        assert_eq!(exit_status(0x7f), 0xff);
        assert_eq!(exit_status(0x80), 1);
        assert_eq!(exit_status(200), (401 & 0xff) as u8);
        assert_eq!(exit_status(u32::MAX), 0xff);
    }
}
