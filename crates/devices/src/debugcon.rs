//! The Bochs/QEMU debug console: a one-byte port a guest writes text to, byte by
//! byte, with no setup and no status to poll. Reading the port returns a fixed
//! "readback" byte (0xE9, the port Bochs put it at) so a guest can tell the console
//! is there.
//!
//! Output is line-buffered: a guest writes one byte per VM exit, so the bytes are
//! collected and handed to the writer at each newline, when the buffer fills, on
//! [`Debugcon::flush`] and when the device is dropped (the VM's end).

use std::io::Write;

use vm_device::BusDevice;

/// The port this VMM puts the console at unless told otherwise (QEMU's
/// `isa-debugcon` defaults to 0xE9; firmware such as OVMF uses 0x402).
pub const DEFAULT_IOBASE: u16 = 0x402;
/// What a read of the port returns unless told otherwise (QEMU's and Bochs's value).
pub const DEFAULT_READBACK: u8 = 0xe9;
/// Bytes held before a write to the output even without a newline.
const BUFFER_LIMIT: usize = 4096;

pub struct Debugcon {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    readback: u8,
}

impl Debugcon {
    pub fn new(out: Box<dyn Write + Send>, readback: u8) -> Self {
        Debugcon {
            out,
            buf: Vec::with_capacity(256),
            readback,
        }
    }

    /// One byte from the guest.
    pub fn put(&mut self, b: u8) {
        self.buf.push(b);
        if b == b'\n' || self.buf.len() >= BUFFER_LIMIT {
            self.flush();
        }
    }

    /// Hands the buffered bytes to the output. Output errors (a closed stderr) lose
    /// console text, never the guest.
    pub fn flush(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.out.write_all(&self.buf);
            self.buf.clear();
        }
        let _ = self.out.flush();
    }
}

impl Drop for Debugcon {
    fn drop(&mut self) {
        self.flush();
    }
}

impl BusDevice for Debugcon {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = self.readback;
    }

    /// The low byte of any write is the character (a wider `out` is one character,
    /// as on QEMU).
    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&b) = data.first() {
            self.put(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_go_out_whole_and_the_rest_at_the_end() {
        let out = Shared::default();
        let mut d = Debugcon::new(Box::new(out.clone()), DEFAULT_READBACK);
        for &b in b"hi\npart" {
            d.write(0, &[b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
        d.write(0, &[b'!', 0xff]);
        drop(d);
        assert_eq!(&*out.0.lock().unwrap(), b"hi\npart!");
    }

    #[test]
    fn long_output_without_newlines_is_bounded() {
        let out = Shared::default();
        let mut d = Debugcon::new(Box::new(out.clone()), DEFAULT_READBACK);
        for _ in 0..BUFFER_LIMIT {
            d.put(b'x');
        }
        assert_eq!(out.0.lock().unwrap().len(), BUFFER_LIMIT);
    }

    #[test]
    fn reads_return_the_readback_byte() {
        let mut d = Debugcon::new(Box::new(std::io::sink()), DEFAULT_READBACK);
        let mut b = [0u8; 1];
        d.read(0, &mut b);
        assert_eq!(b[0], 0xe9);
        let mut d = Debugcon::new(Box::new(std::io::sink()), 0x42);
        let mut w = [0xffu8; 4];
        d.read(0, &mut w);
        assert_eq!(w, [0x42, 0, 0, 0]);
    }
}
