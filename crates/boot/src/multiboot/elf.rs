//! Just enough ELF (32- and 64-bit, little-endian x86) to load a Multiboot kernel
//! by its program headers. Written here rather than taken from `linux-loader`,
//! whose ELF loader reads only ELF64 files, loads by virtual address and applies
//! the Linux boot protocol's rules.

/// A `PT_LOAD` segment: `filesz` bytes from file offset `offset` go to physical
/// address `paddr`, zero-filled up to `memsz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub paddr: u64,
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// A parsed executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// 32 or 64.
    pub class: u8,
    /// `e_entry` as written (a virtual address).
    pub entry: u64,
    pub loads: Vec<Load>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file")]
    NotElf,
    #[error("an ELF file for another machine (class {class}, data encoding {data}, machine {machine}); expected a little-endian i386 ELF32 or x86-64 ELF64")]
    WrongMachine { class: u8, data: u8, machine: u16 },
    #[error("the ELF {what} runs past the end of the file ({len} bytes)")]
    Truncated { what: &'static str, len: usize },
    #[error(
        "ELF program header {index}: file size {filesz:#x} is larger than memory size {memsz:#x}"
    )]
    FileSizeAboveMemSize {
        index: usize,
        filesz: u64,
        memsz: u64,
    },
    #[error("ELF program header entries of {0} bytes are too small")]
    BadPhentsize(u16),
}

const PT_LOAD: u32 = 1;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn bytes(&self, off: u64, n: usize, what: &'static str) -> Result<&[u8], ElfError> {
        let t = ElfError::Truncated {
            what,
            len: self.b.len(),
        };
        let start = usize::try_from(off).map_err(|_| t.clone())?;
        let end = start.checked_add(n).ok_or(t.clone())?;
        self.b.get(start..end).ok_or(t)
    }
    fn u16(&self, off: u64, what: &'static str) -> Result<u16, ElfError> {
        let s = self.bytes(off, 2, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&self, off: u64, what: &'static str) -> Result<u32, ElfError> {
        let s = self.bytes(off, 4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&self, off: u64, what: &'static str) -> Result<u64, ElfError> {
        let s = self.bytes(off, 8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    /// A word of the file's class: 4 bytes for ELF32, 8 for ELF64.
    fn word(&self, wide: bool, off: u64, what: &'static str) -> Result<u64, ElfError> {
        if wide {
            self.u64(off, what)
        } else {
            self.u32(off, what).map(u64::from)
        }
    }
}

/// Whether `b` starts like an ELF file.
pub fn is_elf(b: &[u8]) -> bool {
    b.starts_with(b"\x7fELF")
}

/// Parses the ELF header and the program headers; checks every load segment's
/// file bytes are in the file.
pub fn parse(b: &[u8]) -> Result<Image, ElfError> {
    if !is_elf(b) {
        return Err(ElfError::NotElf);
    }
    let r = Reader { b };
    let ident = r.bytes(0, 16, "header")?;
    let (class, data) = (ident[4], ident[5]);
    let machine = r.u16(18, "header")?;
    let wide = match (class, data, machine) {
        (1, 1, EM_386) => false,
        (2, 1, EM_X86_64) => true,
        _ => {
            return Err(ElfError::WrongMachine {
                class,
                data,
                machine,
            })
        }
    };
    // ELF32: e_entry 24, e_phoff 28, e_phentsize 42, e_phnum 44.
    // ELF64: e_entry 24, e_phoff 32, e_phentsize 54, e_phnum 56.
    let (phoff_at, phentsize_at, phnum_at, min_phentsize) = if wide {
        (32, 54, 56, 56)
    } else {
        (28, 42, 44, 32)
    };
    let entry = r.word(wide, 24, "header")?;
    let phoff = r.word(wide, phoff_at, "header")?;
    let phentsize = r.u16(phentsize_at, "header")?;
    let phnum = r.u16(phnum_at, "header")?;
    if phnum > 0 && phentsize < min_phentsize {
        return Err(ElfError::BadPhentsize(phentsize));
    }
    let mut loads = Vec::new();
    for index in 0..phnum as usize {
        let at = phoff
            .checked_add(index as u64 * phentsize as u64)
            .ok_or(ElfError::Truncated {
                what: "program headers",
                len: b.len(),
            })?;
        let ph = Reader {
            b: r.bytes(at, min_phentsize as usize, "program headers")?,
        };
        if ph.u32(0, "program headers")? != PT_LOAD {
            continue;
        }
        // ELF32 phdr: offset 4, vaddr 8, paddr 12, filesz 16, memsz 20.
        // ELF64 phdr: offset 8, vaddr 16, paddr 24, filesz 32, memsz 40.
        let (o, v, p, f, m) = if wide {
            (8, 16, 24, 32, 40)
        } else {
            (4, 8, 12, 16, 20)
        };
        let l = Load {
            offset: ph.word(wide, o, "program headers")?,
            vaddr: ph.word(wide, v, "program headers")?,
            paddr: ph.word(wide, p, "program headers")?,
            filesz: ph.word(wide, f, "program headers")?,
            memsz: ph.word(wide, m, "program headers")?,
        };
        if l.filesz > l.memsz {
            return Err(ElfError::FileSizeAboveMemSize {
                index,
                filesz: l.filesz,
                memsz: l.memsz,
            });
        }
        let n = usize::try_from(l.filesz).map_err(|_| ElfError::Truncated {
            what: "segment data",
            len: b.len(),
        })?;
        r.bytes(l.offset, n, "segment data")?;
        if l.memsz > 0 {
            loads.push(l);
        }
    }
    Ok(Image {
        class: if wide { 64 } else { 32 },
        entry,
        loads,
    })
}

/// Test helper: a minimal little-endian x86 ELF image with the given load segments
/// (paddr, vaddr, data, memsz), data placed after the headers.
#[cfg(test)]
pub(crate) fn build(wide: bool, entry: u64, segs: &[(u64, u64, &[u8], u64)]) -> Vec<u8> {
    let (ehsize, phsize) = if wide { (64usize, 56usize) } else { (52, 32) };
    let mut data_at = ehsize + phsize * segs.len();
    let mut out = vec![0u8; data_at];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = if wide { 2 } else { 1 };
    out[5] = 1;
    out[6] = 1;
    out[16..18].copy_from_slice(&2u16.to_le_bytes());
    let machine = if wide { EM_X86_64 } else { EM_386 };
    out[18..20].copy_from_slice(&machine.to_le_bytes());
    let put = |out: &mut Vec<u8>, at: usize, v: u64| {
        if wide {
            out[at..at + 8].copy_from_slice(&v.to_le_bytes());
        } else {
            out[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
        }
    };
    put(&mut out, 24, entry);
    put(&mut out, if wide { 32 } else { 28 }, ehsize as u64);
    let (pe, pn) = if wide { (54, 56) } else { (42, 44) };
    out[pe..pe + 2].copy_from_slice(&(phsize as u16).to_le_bytes());
    out[pn..pn + 2].copy_from_slice(&(segs.len() as u16).to_le_bytes());
    let mut blobs = Vec::new();
    for (i, (paddr, vaddr, data, memsz)) in segs.iter().enumerate() {
        let ph = ehsize + i * phsize;
        out[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        let (o, v, p, f, m) = if wide {
            (8, 16, 24, 32, 40)
        } else {
            (4, 8, 12, 16, 20)
        };
        put(&mut out, ph + o, data_at as u64);
        put(&mut out, ph + v, *vaddr);
        put(&mut out, ph + p, *paddr);
        put(&mut out, ph + f, data.len() as u64);
        put(&mut out, ph + m, *memsz);
        data_at += data.len();
        blobs.extend_from_slice(data);
    }
    out.extend(blobs);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_elf32_and_elf64_load_segments() {
        for wide in [false, true] {
            let f = build(
                wide,
                0xc010_0010,
                &[(0x10_0000, 0xc010_0000, b"code", 0x2000)],
            );
            let img = parse(&f).unwrap();
            assert_eq!(img.class, if wide { 64 } else { 32 });
            assert_eq!(img.entry, 0xc010_0010);
            assert_eq!(img.loads.len(), 1);
            let l = img.loads[0];
            assert_eq!(
                (l.paddr, l.vaddr, l.filesz, l.memsz),
                (0x10_0000, 0xc010_0000, 4, 0x2000)
            );
            assert_eq!(&f[l.offset as usize..][..4], b"code");
        }
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let f = build(
            false,
            0x10_0000,
            &[(0x10_0000, 0x10_0000, b"0123456789", 16)],
        );
        for n in [0, 3, 20, 52, 60, f.len() - 1] {
            assert!(parse(&f[..n]).is_err(), "cut at {n}");
        }
        assert_eq!(parse(b"MZ"), Err(ElfError::NotElf));
        let mut arm = f.clone();
        arm[18] = 40;
        assert!(matches!(
            parse(&arm),
            Err(ElfError::WrongMachine { machine: 40, .. })
        ));
        let bad = build(true, 0, &[(0x10_0000, 0x10_0000, b"abcd", 2)]);
        assert!(matches!(
            parse(&bad),
            Err(ElfError::FileSizeAboveMemSize { .. })
        ));
    }
}
