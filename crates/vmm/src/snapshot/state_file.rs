//! The state file of a snapshot: a fixed header (magic, format version, payload
//! length, CRC-32 of the payload), then the payload as JSON. The same framing
//! carries the state in a migration stream.

use serde::{Deserialize, Serialize};
use vmm_types::{CpuState, CpuidEntry, VmState};

use crate::device_tree::DeviceStates;

pub const MAGIC: [u8; 8] = *b"HAKOSNAP";
/// Bumped whenever a saved state of this build could not be read by the last one.
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 24;

/// Everything about a VM besides its memory and its config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    /// The `hako` version that wrote it (for messages).
    pub build: String,
    /// The accelerator it was saved on.
    pub accel: String,
    /// What the guest saw: a restore refuses a target that lacks one of its features.
    pub cpuid: Vec<CpuidEntry>,
    /// Guest RAM as (guest address, length), in the memory file's order.
    pub memory: Vec<(u64, u64)>,
    pub vm: VmState,
    pub vcpus: Vec<CpuState>,
    pub devices: DeviceStates,
}

/// Why a state file cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateFileError {
    #[error("not a hako state file (bad magic)")]
    Magic,
    #[error("state format version {found}, but this hako reads version {FORMAT_VERSION}: it was written by an incompatible build")]
    Version { found: u32 },
    #[error("truncated: {have} bytes, the header announces {want}")]
    Truncated { have: usize, want: usize },
    #[error("corrupt: the checksum does not match")]
    Checksum,
    #[error("unreadable state (from an incompatible build?): {0}")]
    Decode(String),
}

/// Frames `state` for a file or a stream.
pub fn encode(state: &SavedState) -> Vec<u8> {
    let payload = serde_json::to_vec(state).expect("saved states serialize");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The payload length a header announces (after checking magic and version).
pub fn payload_len(header: &[u8]) -> Result<usize, StateFileError> {
    if header.len() < HEADER_LEN {
        return Err(StateFileError::Truncated {
            have: header.len(),
            want: HEADER_LEN,
        });
    }
    if header[..8] != MAGIC {
        return Err(StateFileError::Magic);
    }
    let found = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if found != FORMAT_VERSION {
        return Err(StateFileError::Version { found });
    }
    let len = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    usize::try_from(len).map_err(|_| StateFileError::Truncated {
        have: header.len(),
        want: usize::MAX,
    })
}

/// Reads a framed state, checking everything before trusting any of it.
pub fn decode(bytes: &[u8]) -> Result<SavedState, StateFileError> {
    let len = payload_len(bytes)?;
    let want = HEADER_LEN.saturating_add(len);
    if bytes.len() < want {
        return Err(StateFileError::Truncated {
            have: bytes.len(),
            want,
        });
    }
    let payload = &bytes[HEADER_LEN..want];
    let crc = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if crc32fast::hash(payload) != crc {
        return Err(StateFileError::Checksum);
    }
    serde_json::from_slice(payload).map_err(|e| StateFileError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedState {
        SavedState {
            build: "test".into(),
            accel: "emu".into(),
            cpuid: vec![CpuidEntry {
                function: 1,
                ecx: 1 << 19,
                ..Default::default()
            }],
            memory: vec![(0, 1 << 20)],
            vm: VmState::default(),
            vcpus: vec![CpuState::default()],
            devices: [("rtc".to_string(), serde_json::json!({"x": 1}))].into(),
        }
    }

    #[test]
    fn round_trip_and_every_kind_of_damage() {
        let s = sample();
        let bytes = encode(&s);
        assert_eq!(decode(&bytes).unwrap(), s);
        assert_eq!(encode(&decode(&bytes).unwrap()), bytes);

        let short = &bytes[..bytes.len() - 1];
        assert!(matches!(
            decode(short),
            Err(StateFileError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&bytes[..10]),
            Err(StateFileError::Truncated { .. })
        ));
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 0x20;
        assert_eq!(decode(&flipped), Err(StateFileError::Checksum));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(decode(&magic), Err(StateFileError::Magic));
        let mut version = bytes.clone();
        version[8] = 99;
        assert_eq!(decode(&version), Err(StateFileError::Version { found: 99 }));
        assert!(decode(&version)
            .unwrap_err()
            .to_string()
            .contains("incompatible build"));

        // A well-framed payload that is not a state of this build.
        let mut alien = encode(&s)[..HEADER_LEN].to_vec();
        let payload = br#"{"build":"x"}"#;
        alien[12..16].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        alien[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        alien.extend_from_slice(payload);
        assert!(matches!(decode(&alien), Err(StateFileError::Decode(_))));
    }
}
