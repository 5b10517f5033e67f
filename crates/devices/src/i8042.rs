//! A minimal i8042 keyboard controller: enough for Linux to probe it quickly and
//! find no keyboard, and to reset the machine (command 0xFE, or pulsing output-port
//! bit 0). Written here rather than taken from `vm-superio`, whose i8042 answers
//! every read with 0, which sends Linux's controller self-test into its timeouts.
//!
//! There is no mouse port behind it: the AUX loopback command (0xD3) hands back a
//! byte other than the one written and the AUX interface test (0xA9) reports a
//! stuck clock line, so Linux's `i8042_check_aux` gives up at once. (Silence there
//! cost 0.77 s of every boot: a 500 ms wait for the loopback byte, then a 250 ms wait
//! for an IRQ 12 that no line delivers.)

use serde::{Deserialize, Serialize};
use vm_device::{BusDevice, Persist, StateError};

use crate::{EventSink, PlatformEvent};

const STATUS_OUTPUT_FULL: u8 = 1 << 0;
const STATUS_SYSTEM_FLAG: u8 = 1 << 2;
const STATUS_COMMAND: u8 = 1 << 3;
const STATUS_UNLOCKED: u8 = 1 << 4;

/// Serializable controller state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    pub command_byte: u8,
    pub output: Option<u8>,
    /// The command whose data byte is expected on port 0x60.
    pub pending_command: Option<u8>,
    pub last_was_command: bool,
}

/// The controller's state machine. Offsets: 0 = port 0x60 (data), 4 = port 0x64 (status/command).
pub struct I8042 {
    state: I8042State,
    events: EventSink,
}

/// The commands that take a data byte on port 0x60.
const DATA_COMMANDS: [u8; 5] = [0x60, 0xd1, 0xd2, 0xd3, 0xd4];

impl Persist for I8042 {
    type State = I8042State;
    /// Where resets go.
    type Args = EventSink;

    fn save(&self) -> I8042State {
        self.state.clone()
    }

    fn restore(events: EventSink, state: &I8042State) -> Result<Self, StateError> {
        if let Some(c) = state.pending_command.filter(|c| !DATA_COMMANDS.contains(c)) {
            return Err(StateError::new(
                "i8042",
                format!("command {c:#x} takes no data byte"),
            ));
        }
        Ok(I8042 {
            state: state.clone(),
            events,
        })
    }
}

impl I8042 {
    pub fn new(events: EventSink) -> Self {
        I8042 {
            state: I8042State {
                command_byte: 0x30,
                ..Default::default()
            },
            events,
        }
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_SYSTEM_FLAG | STATUS_UNLOCKED;
        if self.state.output.is_some() {
            s |= STATUS_OUTPUT_FULL;
        }
        if self.state.last_was_command {
            s |= STATUS_COMMAND;
        }
        s
    }

    pub fn read_port(&mut self, port: u16) -> u8 {
        match port {
            0x60 => self.state.output.take().unwrap_or(0),
            _ => self.status(),
        }
    }

    pub fn write_port(&mut self, port: u16, val: u8) {
        if port == 0x64 {
            self.state.last_was_command = true;
            self.command(val);
            return;
        }
        self.state.last_was_command = false;
        match self.state.pending_command.take() {
            Some(0x60) => self.state.command_byte = val,
            // AUX loopback: no AUX port, so not the byte written.
            Some(0xd3) => self.state.output = Some(!val),
            // Write output port: bit 0 low holds the CPU in reset.
            Some(0xd1) if val & 1 == 0 => (self.events)(PlatformEvent::Reset),
            Some(_) => {}
            // A byte for the (absent) keyboard: answer "resend"-free silence, like no device.
            None => {}
        }
    }

    fn command(&mut self, cmd: u8) {
        match cmd {
            0x20 => self.state.output = Some(self.state.command_byte),
            c if DATA_COMMANDS.contains(&c) => self.state.pending_command = Some(cmd),
            0xaa => self.state.output = Some(0x55), // self-test passed
            0xab => self.state.output = Some(0x00), // keyboard interface test passed
            0xa9 => self.state.output = Some(0x01), // AUX interface: clock line stuck low
            0xad => self.state.command_byte |= 0x10,
            0xae => self.state.command_byte &= !0x10,
            0xa7 => self.state.command_byte |= 0x20,
            0xa8 => self.state.command_byte &= !0x20,
            0xc0 => self.state.output = Some(0x00), // input port
            0xd0 => self.state.output = Some(0x01), // output port: not in reset
            0xf0..=0xff if cmd & 1 == 0 => (self.events)(PlatformEvent::Reset),
            _ => {}
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = self.read_port(0x60 + offset as u16);
        data.fill(0);
        data[0] = v;
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&v) = data.first() {
            self.write_port(0x60 + offset as u16, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn dev() -> (I8042, Arc<Mutex<Vec<PlatformEvent>>>) {
        let ev = Arc::new(Mutex::new(Vec::new()));
        let e2 = ev.clone();
        (
            I8042::new(Arc::new(move |e| e2.lock().unwrap().push(e))),
            ev,
        )
    }

    #[test]
    fn reset_command_reports_reset() {
        let (mut d, ev) = dev();
        d.write_port(0x64, 0xfe);
        assert_eq!(*ev.lock().unwrap(), vec![PlatformEvent::Reset]);
    }

    #[test]
    fn output_port_bit0_low_resets() {
        let (mut d, ev) = dev();
        d.write_port(0x64, 0xd1);
        d.write_port(0x60, 0x01);
        assert!(ev.lock().unwrap().is_empty());
        d.write_port(0x64, 0xd1);
        d.write_port(0x60, 0x00);
        assert_eq!(*ev.lock().unwrap(), vec![PlatformEvent::Reset]);
    }

    #[test]
    fn no_aux_port_answers_at_once() {
        let (mut d, _) = dev();
        d.write_port(0x64, 0xd3);
        d.write_port(0x60, 0x5a);
        assert_ne!(
            d.read_port(0x64) & STATUS_OUTPUT_FULL,
            0,
            "a byte, not silence"
        );
        assert_ne!(d.read_port(0x60), 0x5a, "no loopback without an AUX port");
        d.write_port(0x64, 0xa9);
        assert_eq!(d.read_port(0x60), 0x01);
    }

    #[test]
    fn self_test_and_command_byte_round_trip() {
        let (mut d, _) = dev();
        d.write_port(0x64, 0xaa);
        assert_ne!(d.read_port(0x64) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(d.read_port(0x60), 0x55);
        assert_eq!(d.read_port(0x64) & STATUS_OUTPUT_FULL, 0);
        d.write_port(0x64, 0x60);
        d.write_port(0x60, 0x47);
        d.write_port(0x64, 0x20);
        assert_eq!(d.read_port(0x60), 0x47);
        d.write_port(0x64, 0xd3); // leaves a command waiting for its data byte
        let events: EventSink = Arc::new(|_| {});
        let (a, b) = vm_device::persist::round_trip(&d, events.clone()).unwrap();
        assert_eq!(a, b);
        assert!(a.contains("\"command_byte\":71") && a.contains("\"pending_command\":211"));
        let bad = I8042State {
            pending_command: Some(0xaa),
            ..d.save()
        };
        assert!(I8042::restore(events, &bad).is_err());
    }
}
