//! String instructions (MOVS/STOS/LODS/CMPS/SCAS/INS/OUTS) with REP prefixes.

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::bus::Bus;
use crate::cpu::{Cpu, ES, RAX, RCX, RDI, RDX, RSI};
use crate::exception::XResult;
use crate::exec::ops::seg_index;
use crate::flags::{mask, FlagOp, DF};

/// Address size (bytes) of a string instruction from its memory operand kinds.
fn addr_size(i: &Instruction) -> u8 {
    for n in 0..i.op_count() {
        match i.op_kind(n) {
            OpKind::MemorySegSI | OpKind::MemoryESDI | OpKind::MemorySegDI => return 2,
            OpKind::MemorySegESI | OpKind::MemoryESEDI | OpKind::MemorySegEDI => return 4,
            OpKind::MemorySegRSI | OpKind::MemoryESRDI | OpKind::MemorySegRDI => return 8,
            _ => {}
        }
    }
    8
}

/// Whether the instruction is a string instruction (not the SSE MOVSD/CMPSD).
pub fn is_string(i: &Instruction) -> bool {
    (0..i.op_count()).any(|n| {
        matches!(
            i.op_kind(n),
            OpKind::MemorySegSI
                | OpKind::MemorySegESI
                | OpKind::MemorySegRSI
                | OpKind::MemoryESDI
                | OpKind::MemoryESEDI
                | OpKind::MemoryESRDI
        )
    })
}

fn elem_size(mn: M) -> u8 {
    match mn {
        M::Movsb | M::Stosb | M::Lodsb | M::Cmpsb | M::Scasb | M::Insb | M::Outsb => 1,
        M::Movsw | M::Stosw | M::Lodsw | M::Cmpsw | M::Scasw | M::Insw | M::Outsw => 2,
        M::Movsd | M::Stosd | M::Lodsd | M::Cmpsd | M::Scasd | M::Insd | M::Outsd => 4,
        _ => 8,
    }
}

impl Cpu {
    /// Executes one string instruction, all REP iterations included.
    #[inline(never)]
    pub(crate) fn string_op(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let mn = i.mnemonic();
        let es = elem_size(mn);
        let asz = addr_size(i);
        let am = mask(asz);
        let rep = i.has_rep_prefix() || i.has_repe_prefix() || i.has_repne_prefix();
        let cmp_kind = matches!(
            mn,
            M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq | M::Scasb | M::Scasw | M::Scasd | M::Scasq
        );
        let delta = if self.flags.rflags & DF != 0 {
            (es as u64).wrapping_neg()
        } else {
            es as u64
        };
        let src_seg = seg_index(i.memory_segment());
        let m = mask(es);
        if rep && asz == 8 && delta == es as u64 {
            match mn {
                M::Movsb | M::Movsw | M::Movsd | M::Movsq => {
                    self.rep_pages(bus, es, Some(src_seg))?
                }
                M::Stosb | M::Stosw | M::Stosd | M::Stosq => self.rep_pages(bus, es, None)?,
                _ => {}
            }
        }
        loop {
            if rep && self.gpr[RCX] & am == 0 {
                break;
            }
            let si = self.gpr[RSI] & am;
            let di = self.gpr[RDI] & am;
            let mut adv_si = false;
            let mut adv_di = false;
            let mut cmp: Option<(u64, u64)> = None;
            match mn {
                M::Movsb | M::Movsw | M::Movsd | M::Movsq => {
                    let v = self.read_lin(bus, self.lin(src_seg, si), es as usize)?;
                    self.write_lin(bus, self.lin(ES, di), es as usize, v)?;
                    adv_si = true;
                    adv_di = true;
                }
                M::Stosb | M::Stosw | M::Stosd | M::Stosq => {
                    self.write_lin(bus, self.lin(ES, di), es as usize, self.gpr[RAX] & m)?;
                    adv_di = true;
                }
                M::Lodsb | M::Lodsw | M::Lodsd | M::Lodsq => {
                    let v = self.read_lin(bus, self.lin(src_seg, si), es as usize)?;
                    self.set_reg_sized(RAX, es, v);
                    adv_si = true;
                }
                M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq => {
                    let a = self.read_lin(bus, self.lin(src_seg, si), es as usize)?;
                    let b = self.read_lin(bus, self.lin(ES, di), es as usize)?;
                    cmp = Some((a, b));
                    adv_si = true;
                    adv_di = true;
                }
                M::Scasb | M::Scasw | M::Scasd | M::Scasq => {
                    let b = self.read_lin(bus, self.lin(ES, di), es as usize)?;
                    cmp = Some((self.gpr[RAX] & m, b));
                    adv_di = true;
                }
                M::Insb | M::Insw | M::Insd => {
                    // Probe the destination before reading the port.
                    self.write_lin(bus, self.lin(ES, di), es as usize, 0)?;
                    let v = bus.io_in(self.gpr[RDX] as u16, es as usize) as u64;
                    self.write_lin(bus, self.lin(ES, di), es as usize, v)?;
                    adv_di = true;
                    self.stop = true;
                }
                _ => {
                    // OUTS
                    let v = self.read_lin(bus, self.lin(src_seg, si), es as usize)?;
                    bus.io_out(self.gpr[RDX] as u16, es as usize, v as u32);
                    adv_si = true;
                    self.stop = true;
                }
            }
            if adv_si {
                self.gpr[RSI] = (self.gpr[RSI] & !am) | (si.wrapping_add(delta) & am);
            }
            if adv_di {
                self.gpr[RDI] = (self.gpr[RDI] & !am) | (di.wrapping_add(delta) & am);
            }
            if let Some((a, b)) = cmp {
                self.flags.set(FlagOp::Sub, es, a.wrapping_sub(b), a, b);
            }
            if !rep {
                break;
            }
            let c = self.gpr[RCX].wrapping_sub(1) & am;
            self.gpr[RCX] = (self.gpr[RCX] & !am) | c;
            if cmp_kind {
                let zf = self.flags.zf();
                if (i.has_repe_prefix() && !zf) || (i.has_repne_prefix() && zf) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Forward `rep movs` (`src` is its source segment) or `rep stos` in 64-bit
    /// addressing, a page-bounded chunk of whole elements at a time, with the
    /// registers advanced after each chunk (so a fault leaves them exact). Leaves
    /// what it cannot do in chunks (an element crossing a page, MMIO, an
    /// overlapping copy closer than a chunk) to the element loop.
    fn rep_pages(&mut self, bus: &mut dyn Bus, es: u8, src: Option<usize>) -> XResult<()> {
        let es = es as u64;
        let mut buf = [0u8; 0x1000];
        let user = self.cpl == 3;
        while self.gpr[RCX] != 0 {
            let di = self.lin(ES, self.gpr[RDI]);
            let mut room = 0x1000 - (di & 0xfff);
            let si = src.map(|s| self.lin(s, self.gpr[RSI]));
            if let Some(si) = si {
                room = room.min(0x1000 - (si & 0xfff));
                let gap = di.wrapping_sub(si);
                if gap < room {
                    room = gap; // the copy reads what it wrote: element by element
                }
            }
            let n = (room / es).min(self.gpr[RCX]);
            if n == 0 {
                return Ok(());
            }
            let len = (n * es) as usize;
            let dp = self.translate(bus, di, crate::mmu::Access::Write, user)?;
            let sp = match si {
                Some(si) => Some(self.translate(bus, si, crate::mmu::Access::Read, user)?),
                None => None,
            };
            if !bus.is_ram(dp) || sp.is_some_and(|p| !bus.is_ram(p)) {
                return Ok(());
            }
            match sp {
                Some(sp) => bus.read_bytes(sp, &mut buf[..len]),
                None => {
                    let v = self.gpr[RAX].to_le_bytes();
                    for c in buf[..len].chunks_exact_mut(es as usize) {
                        c.copy_from_slice(&v[..es as usize]);
                    }
                }
            }
            bus.write_bytes(dp, &buf[..len]);
            self.code_write_check(dp);
            self.gpr[RDI] = self.gpr[RDI].wrapping_add(n * es);
            if src.is_some() {
                self.gpr[RSI] = self.gpr[RSI].wrapping_add(n * es);
            }
            self.gpr[RCX] -= n;
        }
        Ok(())
    }
}
