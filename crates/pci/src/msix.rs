//! MSI-X: the capability, the vector table and the pending-bit array (PCI Local
//! Bus 3.0, section 6.8.2). The table and PBA live in a BAR of the owning device,
//! which forwards those accesses here.

use serde::{Deserialize, Serialize};
use vm_device::{MsiSink, StateError};

use crate::config::ConfigSpace;

/// MSI-X capability ID.
pub const CAP_ID_MSIX: u8 = 0x11;
/// Size of one table entry.
pub const ENTRY_SIZE: u64 = 16;
const CTRL_ENABLE: u16 = 1 << 15;
const CTRL_FUNCTION_MASK: u16 = 1 << 14;

/// One vector: message address, data and the per-vector mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsixEntry {
    pub addr_lo: u32,
    pub addr_hi: u32,
    pub data: u32,
    pub vector_ctrl: u32,
}

impl MsixEntry {
    fn masked(&self) -> bool {
        self.vector_ctrl & 1 != 0
    }
}

/// Serializable MSI-X state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsixState {
    pub table: Vec<MsixEntry>,
    pub pending: Vec<bool>,
    pub enabled: bool,
    pub function_masked: bool,
}

/// MSI-X for one function.
pub struct MsixConfig {
    table: Vec<MsixEntry>,
    pending: Vec<bool>,
    enabled: bool,
    function_masked: bool,
    cap_offset: usize,
}

impl MsixConfig {
    /// Adds the capability to `config` for `vectors` vectors, with the table at
    /// `table_offset` and the PBA at `pba_offset` of BAR `bar`.
    pub fn new(
        config: &mut ConfigSpace,
        vectors: u16,
        bar: u8,
        table_offset: u32,
        pba_offset: u32,
    ) -> Result<Self, crate::config::ConfigError> {
        let vectors = vectors.clamp(1, 2048);
        let ctrl = vectors - 1;
        let mut body = vec![CAP_ID_MSIX, 0];
        body.extend_from_slice(&ctrl.to_le_bytes());
        body.extend_from_slice(&(table_offset | u32::from(bar & 7)).to_le_bytes());
        body.extend_from_slice(&(pba_offset | u32::from(bar & 7)).to_le_bytes());
        // Only the enable and function-mask bits of message control are writable.
        let cap_offset = config.add_capability(&body, &[0, 0, 0, 0xc0])?;
        let entry = MsixEntry {
            vector_ctrl: 1,
            ..Default::default()
        };
        Ok(Self {
            table: vec![entry; usize::from(vectors)],
            pending: vec![false; usize::from(vectors)],
            enabled: false,
            function_masked: false,
            cap_offset,
        })
    }

    /// Offset of the capability in configuration space.
    pub fn cap_offset(&self) -> usize {
        self.cap_offset
    }

    /// Number of vectors.
    pub fn vectors(&self) -> u16 {
        self.table.len() as u16
    }

    /// Whether MSI-X is enabled (then INTx must not be used).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// To be called after every config-space write: picks up the message
    /// control bits and delivers vectors that became unmasked.
    pub fn config_written(&mut self, config: &ConfigSpace, sink: &dyn MsiSink) {
        let b = config.bytes();
        let ctrl = u16::from_le_bytes([b[self.cap_offset + 2], b[self.cap_offset + 3]]);
        self.enabled = ctrl & CTRL_ENABLE != 0;
        self.function_masked = ctrl & CTRL_FUNCTION_MASK != 0;
        self.deliver_pending(sink);
    }

    /// Reads the vector table at `offset` (from the table's start).
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset + i as u64;
            let e = self.table.get((o / ENTRY_SIZE) as usize);
            *b = e.map_or(0, |e| {
                let w = match (o % ENTRY_SIZE) / 4 {
                    0 => e.addr_lo,
                    1 => e.addr_hi,
                    2 => e.data,
                    _ => e.vector_ctrl,
                };
                w.to_le_bytes()[(o % 4) as usize]
            });
        }
    }

    /// Writes the vector table; unmasking a vector delivers its pending message.
    pub fn table_write(&mut self, offset: u64, data: &[u8], sink: &dyn MsiSink) {
        for (i, &v) in data.iter().enumerate() {
            let o = offset + i as u64;
            let Some(e) = self.table.get_mut((o / ENTRY_SIZE) as usize) else {
                continue;
            };
            let w = match (o % ENTRY_SIZE) / 4 {
                0 => &mut e.addr_lo,
                1 => &mut e.addr_hi,
                2 => &mut e.data,
                _ => &mut e.vector_ctrl,
            };
            let mut bytes = w.to_le_bytes();
            bytes[(o % 4) as usize] = v;
            *w = u32::from_le_bytes(bytes);
            // Only the mask bit of vector control is writable.
            e.vector_ctrl &= 1;
        }
        self.deliver_pending(sink);
    }

    /// Reads the pending-bit array at `offset`.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let bit0 = (offset + i as u64) * 8;
            let mut v = 0u8;
            for bit in 0..8 {
                if self
                    .pending
                    .get((bit0 + bit) as usize)
                    .copied()
                    .unwrap_or(false)
                {
                    v |= 1 << bit;
                }
            }
            *b = v;
        }
    }

    /// Signals `vector`: sends the message, or marks it pending while masked.
    /// Returns false if MSI-X is disabled or the vector does not exist.
    pub fn signal(&mut self, vector: u16, sink: &dyn MsiSink) -> bool {
        let v = usize::from(vector);
        if !self.enabled || v >= self.table.len() {
            return false;
        }
        if self.function_masked || self.table[v].masked() {
            self.pending[v] = true;
        } else {
            let e = self.table[v];
            sink.signal_msi(u64::from(e.addr_hi) << 32 | u64::from(e.addr_lo), e.data);
        }
        true
    }

    fn deliver_pending(&mut self, sink: &dyn MsiSink) {
        if !self.enabled || self.function_masked {
            return;
        }
        for (v, e) in self.table.iter().enumerate() {
            if self.pending[v] && !e.masked() {
                self.pending[v] = false;
                sink.signal_msi(u64::from(e.addr_hi) << 32 | u64::from(e.addr_lo), e.data);
            }
        }
    }

    /// Snapshot.
    pub fn state(&self) -> MsixState {
        MsixState {
            table: self.table.clone(),
            pending: self.pending.clone(),
            enabled: self.enabled,
            function_masked: self.function_masked,
        }
    }

    /// Loads a snapshot taken from a function with the same vector count.
    pub fn load(&mut self, s: &MsixState) -> Result<(), StateError> {
        if s.table.len() != self.table.len() || s.pending.len() != self.pending.len() {
            return Err(StateError::new(
                "msi-x",
                format!(
                    "{} vectors saved, the function has {}",
                    s.table.len(),
                    self.table.len()
                ),
            ));
        }
        self.table.clone_from(&s.table);
        self.pending.clone_from(&s.pending);
        self.enabled = s.enabled;
        self.function_masked = s.function_masked;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::PciIds;
    use std::sync::Mutex;

    /// Records MSI messages.
    #[derive(Default)]
    pub struct Msgs(pub Mutex<Vec<(u64, u32)>>);
    impl MsiSink for Msgs {
        fn signal_msi(&self, addr: u64, data: u32) {
            self.0.lock().unwrap().push((addr, data));
        }
    }

    fn setup() -> (ConfigSpace, MsixConfig, Msgs) {
        let mut c = ConfigSpace::new(PciIds::default());
        let m = MsixConfig::new(&mut c, 3, 0, 0x4000, 0x5000).unwrap();
        (c, m, Msgs::default())
    }

    fn program(m: &mut MsixConfig, v: u64, data: u32, sink: &Msgs) {
        m.table_write(v * 16, &0xfee0_0000u32.to_le_bytes(), sink);
        m.table_write(v * 16 + 4, &0u32.to_le_bytes(), sink);
        m.table_write(v * 16 + 8, &data.to_le_bytes(), sink);
        m.table_write(v * 16 + 12, &0u32.to_le_bytes(), sink);
    }

    #[test]
    fn capability_layout() {
        let (c, m, _) = setup();
        let off = m.cap_offset();
        assert_eq!(c.bytes()[off], CAP_ID_MSIX);
        assert_eq!(c.dword(off) >> 16, 2); // table size - 1
        assert_eq!(c.dword(off + 4), 0x4000);
        assert_eq!(c.dword(off + 8), 0x5000);
    }

    #[test]
    fn masking_holds_messages_pending_until_unmasked() {
        let (mut c, mut m, sink) = setup();
        assert!(!m.signal(0, &sink), "disabled MSI-X must not deliver");
        let off = m.cap_offset() as u64;
        c.write(off + 2, &(CTRL_ENABLE | CTRL_FUNCTION_MASK).to_le_bytes());
        m.config_written(&c, &sink);
        program(&mut m, 1, 0x41, &sink);
        assert!(m.signal(1, &sink));
        assert!(sink.0.lock().unwrap().is_empty());
        let mut pba = [0u8; 1];
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0b10);
        c.write(off + 2, &CTRL_ENABLE.to_le_bytes());
        m.config_written(&c, &sink);
        assert_eq!(*sink.0.lock().unwrap(), vec![(0xfee0_0000, 0x41)]);
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0);
        // Per-vector mask.
        m.table_write(16 + 12, &1u32.to_le_bytes(), &sink);
        m.signal(1, &sink);
        assert_eq!(sink.0.lock().unwrap().len(), 1);
        m.table_write(16 + 12, &0u32.to_le_bytes(), &sink);
        assert_eq!(sink.0.lock().unwrap().len(), 2);
        assert!(!m.signal(7, &sink), "out-of-range vector");
        let mut e = [0u8; 4];
        m.table_read(16 + 8, &mut e);
        assert_eq!(u32::from_le_bytes(e), 0x41);
    }

    #[test]
    fn state_round_trip() {
        let (mut c, mut m, sink) = setup();
        let off = m.cap_offset() as u64;
        c.write(off + 2, &(CTRL_ENABLE | CTRL_FUNCTION_MASK).to_le_bytes());
        m.config_written(&c, &sink);
        program(&mut m, 2, 7, &sink);
        m.signal(2, &sink);
        let json = serde_json::to_string(&m.state()).unwrap();
        let (mut c2, mut m2, sink2) = setup();
        m2.load(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(m2.state(), m.state());
        c2.write(off + 2, &CTRL_ENABLE.to_le_bytes());
        m2.config_written(&c2, &sink2);
        assert_eq!(*sink2.0.lock().unwrap(), vec![(0xfee0_0000, 7)]);
    }
}
