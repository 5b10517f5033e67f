//! The statistics the driver reports (virtio 1.2, 5.5.6.3): tagged 64-bit values.

use serde::{Deserialize, Serialize};

use crate::device::DeviceError;
use crate::queue::Chain;
use crate::GuestMemory;

/// The guest's memory figures, in bytes or counts, as the driver last reported.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStats {
    pub swap_in: Option<u64>,
    pub swap_out: Option<u64>,
    pub major_faults: Option<u64>,
    pub minor_faults: Option<u64>,
    pub free_memory: Option<u64>,
    pub total_memory: Option<u64>,
    pub available_memory: Option<u64>,
    pub disk_caches: Option<u64>,
    pub hugetlb_allocations: Option<u64>,
    pub hugetlb_failures: Option<u64>,
}

/// A statistics buffer: 10-byte entries (le16 tag, le64 value). Unknown tags are
/// skipped; a buffer that is not whole entries or too long breaks the device.
pub(super) fn parse(chain: &Chain, mem: &GuestMemory) -> Result<GuestStats, DeviceError> {
    let len = chain.readable_len();
    if len % 10 != 0 || len > 64 * 10 {
        return Err(DeviceError::Chain {
            head: chain.head,
            reason: "balloon statistics buffer is not whole 10-byte entries",
        });
    }
    let mut buf = vec![0u8; len as usize];
    chain.read_at(mem, 0, &mut buf)?;
    let mut s = GuestStats::default();
    for e in buf.chunks_exact(10) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let val = Some(u64::from_le_bytes(e[2..10].try_into().unwrap()));
        match tag {
            0 => s.swap_in = val,
            1 => s.swap_out = val,
            2 => s.major_faults = val,
            3 => s.minor_faults = val,
            4 => s.free_memory = val,
            5 => s.total_memory = val,
            6 => s.available_memory = val,
            7 => s.disk_caches = val,
            8 => s.hugetlb_allocations = val,
            9 => s.hugetlb_failures = val,
            _ => {}
        }
    }
    Ok(s)
}
