//! The Multiboot header (Multiboot Specification 0.6.96, section 3.1): where it is,
//! whether its checksum holds, and its address fields.

/// `magic`: what the header starts with.
pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// The header must lie entirely within the image's first 8192 bytes.
pub const SEARCH_LIMIT: usize = 8192;

/// Flag bit 0: modules must be page aligned (this loader always aligns them).
pub const FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Flag bit 1: `mem_*` must be in the information structure (always given).
pub const FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Flag bit 2: video mode information is wanted (this VMM has no display).
pub const FLAG_VIDEO_MODE: u32 = 1 << 2;
/// Flag bit 16: the address fields at offsets 12..32 are valid and say where to load.
pub const FLAG_ADDRESS_FIELDS: u32 = 1 << 16;
/// Bits 0..15 are requirements: a loader must refuse an image asking for one it
/// does not know. This loader knows bits 0..2.
pub const REQUIRED_UNKNOWN: u32 = 0xfff8;

/// The header's address fields (valid when flag bit 16 is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressFields {
    /// Physical address the header's magic is loaded at.
    pub header_addr: u32,
    /// Physical address of the start of the text segment (the file's first byte to load).
    pub load_addr: u32,
    /// End of the data segment; 0: load to the end of the file.
    pub load_end_addr: u32,
    /// End of the bss (zero-filled from load_end_addr); 0: no bss.
    pub bss_end_addr: u32,
    pub entry_addr: u32,
}

/// A header found in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Offset of the magic in the file.
    pub offset: usize,
    pub flags: u32,
    /// Present when flag bit 16 is set.
    pub address: Option<AddressFields>,
}

/// What was wrong with a header that was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the Multiboot header at offset {offset:#x} has a bad checksum: magic {HEADER_MAGIC:#x} + flags {flags:#x} + checksum {checksum:#x} is {sum:#x}, not 0")]
    BadChecksum {
        offset: usize,
        flags: u32,
        checksum: u32,
        sum: u32,
    },
    #[error("the Multiboot header at offset {offset:#x} sets flag bit 16 but its address fields (offsets 12..32) are cut off by the end of the file")]
    Truncated { offset: usize },
    #[error("the Multiboot header asks for features this loader does not know (flags {flags:#x}, unknown required bits {unknown:#x})")]
    UnknownRequiredFlags { flags: u32, unknown: u32 },
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Looks for the header in `head` (the image's first bytes: at most
/// [`SEARCH_LIMIT`] of them are searched). `Ok(None)`: not a Multiboot image.
/// The first magic (at a 32-bit aligned offset) with a valid checksum is the
/// header; a magic whose checksum fails is an error unless a valid one follows.
pub fn find(head: &[u8]) -> Result<Option<Header>, HeaderError> {
    let head = &head[..head.len().min(SEARCH_LIMIT)];
    let mut bad = None;
    for offset in (0..head.len().saturating_sub(11)).step_by(4) {
        if u32_at(head, offset) != Some(HEADER_MAGIC) {
            continue;
        }
        let (Some(flags), Some(checksum)) = (u32_at(head, offset + 4), u32_at(head, offset + 8))
        else {
            continue;
        };
        let sum = HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum);
        if sum != 0 {
            bad.get_or_insert(HeaderError::BadChecksum {
                offset,
                flags,
                checksum,
                sum,
            });
            continue;
        }
        let unknown = flags & REQUIRED_UNKNOWN;
        if unknown != 0 {
            return Err(HeaderError::UnknownRequiredFlags { flags, unknown });
        }
        let address = if flags & FLAG_ADDRESS_FIELDS != 0 {
            let field = |i: usize| u32_at(head, offset + 12 + 4 * i);
            match (field(0), field(1), field(2), field(3), field(4)) {
                (Some(h), Some(l), Some(le), Some(b), Some(e)) => Some(AddressFields {
                    header_addr: h,
                    load_addr: l,
                    load_end_addr: le,
                    bss_end_addr: b,
                    entry_addr: e,
                }),
                _ => return Err(HeaderError::Truncated { offset }),
            }
        } else {
            None
        };
        return Ok(Some(Header {
            offset,
            flags,
            address,
        }));
    }
    match bad {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(at: usize, flags: u32, fix: u32) -> Vec<u8> {
        let mut v = vec![0u8; at];
        v.extend(HEADER_MAGIC.to_le_bytes());
        v.extend(flags.to_le_bytes());
        v.extend(
            0u32.wrapping_sub(HEADER_MAGIC)
                .wrapping_sub(flags)
                .wrapping_add(fix)
                .to_le_bytes(),
        );
        v
    }

    #[test]
    fn finds_an_aligned_header_with_a_good_checksum() {
        let h = find(&header(64, 3, 0)).unwrap().unwrap();
        assert_eq!((h.offset, h.flags, h.address), (64, 3, None));
        assert_eq!(find(b"\x7fELF nothing here").unwrap(), None);
        // Unaligned magic is not a header.
        assert_eq!(find(&header(2, 3, 0)).unwrap(), None);
        // Beyond the first 8 KiB it does not count.
        assert_eq!(find(&header(SEARCH_LIMIT, 3, 0)).unwrap(), None);
    }

    #[test]
    fn bad_checksum_is_an_error_unless_a_good_header_follows() {
        let bad = header(0, 3, 1);
        assert!(matches!(
            find(&bad),
            Err(HeaderError::BadChecksum {
                offset: 0,
                sum: 1,
                ..
            })
        ));
        let mut both = bad.clone();
        both.extend(header(4, 2, 0));
        assert_eq!(find(&both).unwrap().unwrap().offset, 16);
    }

    #[test]
    fn address_fields_are_read_or_reported_cut_off() {
        let mut v = header(8, FLAG_ADDRESS_FIELDS, 0);
        for x in [0x10_0008u32, 0x10_0000, 0x10_2000, 0x10_3000, 0x10_0040] {
            v.extend(x.to_le_bytes());
        }
        let a = find(&v).unwrap().unwrap().address.unwrap();
        assert_eq!(a.header_addr, 0x10_0008);
        assert_eq!(a.entry_addr, 0x10_0040);
        v.truncate(v.len() - 2);
        assert_eq!(find(&v), Err(HeaderError::Truncated { offset: 8 }));
    }

    #[test]
    fn unknown_required_flags_are_refused() {
        assert!(matches!(
            find(&header(0, 1 << 5, 0)),
            Err(HeaderError::UnknownRequiredFlags { unknown: 0x20, .. })
        ));
        // Optional bits (16..31) other than 16 are fine.
        assert!(find(&header(0, 1 << 20, 0)).unwrap().is_some());
    }
}
