//! Just enough ELF64 reading to place a test guest in guest memory without the
//! `boot` crate: the load segments, the entry point and the PVH entry note.

/// A loadable segment: `data` goes at guest-physical `paddr`, zero-filled up to `memsz`.
#[derive(Debug, Clone)]
pub struct Segment {
    pub paddr: u64,
    pub data: Vec<u8>,
    pub memsz: u64,
}

/// A parsed guest image.
#[derive(Debug, Clone)]
pub struct Image {
    /// `e_entry`: the 64-bit Linux boot protocol entry point.
    pub entry: u64,
    /// The Xen PVH 32-bit entry point (ELF note type 18), if present.
    pub pvh_entry: Option<u32>,
    pub segments: Vec<Segment>,
}

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not a little-endian x86-64 ELF64 file")]
    NotElf64,
    #[error("header or segment out of the file's bounds")]
    Truncated,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, ElfError> {
    let s = b.get(off..off + 2).ok_or(ElfError::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, ElfError> {
    let s = b.get(off..off + 4).ok_or(ElfError::Truncated)?;
    Ok(u32::from_le_bytes(
        s.try_into().map_err(|_| ElfError::Truncated)?,
    ))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, ElfError> {
    let s = b.get(off..off + 8).ok_or(ElfError::Truncated)?;
    Ok(u64::from_le_bytes(
        s.try_into().map_err(|_| ElfError::Truncated)?,
    ))
}

fn range(b: &[u8], off: u64, len: u64) -> Result<&[u8], ElfError> {
    let start = usize::try_from(off).map_err(|_| ElfError::Truncated)?;
    let len = usize::try_from(len).map_err(|_| ElfError::Truncated)?;
    b.get(start..start.checked_add(len).ok_or(ElfError::Truncated)?)
        .ok_or(ElfError::Truncated)
}

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Parses an ELF64 x86-64 executable.
pub fn parse(b: &[u8]) -> Result<Image, ElfError> {
    // e_ident: magic, ELFCLASS64 (2), ELFDATA2LSB (1); e_machine EM_X86_64 (62).
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 || u16_at(b, 18)? != 62 {
        return Err(ElfError::NotElf64);
    }
    let entry = u64_at(b, 0x18)?;
    let phoff = u64_at(b, 0x20)?;
    let phentsize = u64::from(u16_at(b, 0x36)?);
    let phnum = u64::from(u16_at(b, 0x38)?);
    let mut image = Image {
        entry,
        pvh_entry: None,
        segments: Vec::new(),
    };
    for i in 0..phnum {
        let ph = range(b, phoff + i * phentsize, 56)?;
        let p_type = u32_at(ph, 0)?;
        let offset = u64_at(ph, 8)?;
        let paddr = u64_at(ph, 0x18)?;
        let filesz = u64_at(ph, 0x20)?;
        let memsz = u64_at(ph, 0x28)?;
        match p_type {
            PT_LOAD => image.segments.push(Segment {
                paddr,
                data: range(b, offset, filesz)?.to_vec(),
                memsz,
            }),
            PT_NOTE => {
                let notes = range(b, offset, filesz)?;
                let mut pos = 0usize;
                while pos + 12 <= notes.len() {
                    let namesz = u32_at(notes, pos)? as usize;
                    let descsz = u32_at(notes, pos + 4)? as usize;
                    let ty = u32_at(notes, pos + 8)?;
                    let name_at = pos + 12;
                    let desc_at = name_at + namesz.next_multiple_of(4);
                    if ty == XEN_ELFNOTE_PHYS32_ENTRY
                        && notes.get(name_at..name_at + namesz) == Some(b"Xen\0".as_slice())
                    {
                        image.pvh_entry = Some(u32_at(notes, desc_at)?);
                    }
                    pos = desc_at + descsz.next_multiple_of(4);
                }
            }
            _ => {}
        }
    }
    Ok(image)
}
