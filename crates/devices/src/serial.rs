//! COM ports: `vm-superio`'s 16550A state machine, with its interrupt wired to an
//! [`IrqLine`] and a serde-serializable copy of its state for snapshots.

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_device::{BusDevice, IrqLine, Persist, StateError};
use vm_superio::serial::{NoEvents, SerialState as SuperioState};
use vm_superio::{Serial as Uart, Trigger};

/// Raises the UART's interrupt line (edge: a pulse per interrupt condition).
pub struct IrqTrigger(pub Arc<dyn IrqLine>);

impl Trigger for IrqTrigger {
    type E = Infallible;
    fn trigger(&self) -> Result<(), Infallible> {
        self.0.pulse();
        Ok(())
    }
}

/// Serializable 16550A register state (mirrors `vm_superio::serial::SerialState`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialState {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

impl From<SuperioState> for SerialState {
    fn from(s: SuperioState) -> Self {
        SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialState> for SuperioState {
    fn from(s: &SerialState) -> Self {
        SuperioState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

/// A 16550A UART on the port bus (8 registers from its base port).
pub struct Serial {
    uart: Uart<IrqTrigger, NoEvents, Box<dyn Write + Send>>,
}

impl Serial {
    pub fn new(irq: Arc<dyn IrqLine>, out: Box<dyn Write + Send>) -> Self {
        Serial {
            uart: Uart::new(IrqTrigger(irq), out),
        }
    }

    /// Queues input bytes for the guest; returns how many fit in the receive FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let room = self.uart.fifo_capacity().min(bytes.len());
        if room == 0 {
            return 0;
        }
        self.uart.enqueue_raw_bytes(&bytes[..room]).unwrap_or(0)
    }
}

/// What a restored serial port is wired to.
pub struct SerialArgs {
    pub irq: Arc<dyn IrqLine>,
    pub out: Box<dyn Write + Send>,
}

impl Persist for Serial {
    type State = SerialState;
    type Args = SerialArgs;

    fn save(&self) -> SerialState {
        self.uart.state().into()
    }

    fn restore(args: SerialArgs, state: &SerialState) -> Result<Self, StateError> {
        let uart = Uart::from_state(&state.into(), IrqTrigger(args.irq), NoEvents, args.out)
            .map_err(|e| StateError::new("serial", format!("{e:?}")))?;
        Ok(Serial { uart })
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = self.uart.read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&v) = data.first() {
            // Output errors (a closed stdout) lose console output, never the guest.
            let _ = self.uart.write(offset as u8, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct CountIrq(AtomicUsize);
    impl IrqLine for CountIrq {
        fn set_level(&self, level: bool) {
            if level {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

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
    fn transmits_and_receives_with_interrupts() {
        let irq = Arc::new(CountIrq::default());
        let out = Shared::default();
        let mut s = Serial::new(irq.clone(), Box::new(out.clone()));
        for &b in b"hi" {
            s.write(0, &[b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi");
        // Enable the received-data interrupt, then feed input.
        s.write(1, &[0x01]);
        assert_eq!(s.enqueue_input(b"ok"), 2);
        assert!(irq.0.load(Ordering::SeqCst) >= 1);
        let mut b = [0u8];
        s.read(5, &mut b);
        assert_eq!(b[0] & 1, 1, "LSR data ready");
        s.read(0, &mut b);
        assert_eq!(b[0], b'o');
        let args = SerialArgs {
            irq: irq.clone(),
            out: Box::new(std::io::sink()),
        };
        let (a, b) = vm_device::persist::round_trip(&s, args).unwrap();
        assert_eq!(a, b);
        assert!(a.contains("\"in_buffer\":[107]"), "{a}");
    }

    #[test]
    fn an_impossible_input_buffer_is_refused_not_replaced() {
        let irq: Arc<dyn IrqLine> = Arc::new(CountIrq::default());
        let state = SerialState {
            in_buffer: vec![0; 4096],
            ..Default::default()
        };
        let args = SerialArgs {
            irq,
            out: Box::new(std::io::sink()),
        };
        let err = Serial::restore(args, &state).err().expect("refused");
        assert_eq!(err.device, "serial");
    }
}
