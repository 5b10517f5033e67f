//! A single-pass assembler for translated blocks: every instruction is encoded
//! once, at its final address, by iced-x86's `Encoder`; forward branches to
//! labels take the rel32 form and are patched when the block is finished.
//!
//! Written here rather than using iced-x86's `CodeAssembler`/`BlockEncoder`
//! because those keep every instruction, then encode the block several times
//! over to pick the shortest branch forms: about half of what a translation
//! cost. Our blocks put their out-of-line code after the body, so most forward
//! branches need rel32 anyway; a branch back to a bound label gets rel8 when it
//! reaches.

use iced_x86::{Code, ConditionCode, Encoder, IcedError, Instruction};

/// A position in the block, bound once with [`Assembler::set_label`].
#[derive(Clone, Copy, Debug)]
pub struct Label(u32);

const UNBOUND: u32 = u32::MAX;

pub struct Assembler {
    enc: Encoder,
    /// Host address of the first byte.
    base: u64,
    /// Bytes emitted so far.
    pos: u32,
    /// Offset of each label, or UNBOUND.
    labels: Vec<u32>,
    /// (offset of a rel32 field, the label it points at).
    fixups: Vec<(u32, Label)>,
}

/// The block's bytes and the offsets of its labels.
pub struct Assembled {
    pub code: Vec<u8>,
    labels: Vec<u32>,
    base: u64,
}

impl Assembled {
    /// Host address of a bound label. A label may stay unbound when nothing
    /// branches to it; asking for its address is a translator bug.
    pub fn label_ip(&self, l: Label) -> u64 {
        debug_assert_ne!(self.labels[l.0 as usize], UNBOUND, "label never bound");
        self.base + u64::from(self.labels[l.0 as usize])
    }
}

/// A label was branched to but never bound: a translator bug, reported as an
/// untranslatable block rather than a crash.
#[derive(Debug)]
pub struct Unbound;

impl Assembler {
    pub fn new(base: u64) -> Assembler {
        Assembler {
            enc: Encoder::try_with_capacity(64, 1024).expect("64 is a valid bitness"),
            base,
            pos: 0,
            labels: Vec::new(),
            fixups: Vec::new(),
        }
    }

    fn ip(&self) -> u64 {
        self.base + u64::from(self.pos)
    }

    pub fn add_instruction(&mut self, i: Instruction) -> Result<(), IcedError> {
        let n = self.enc.encode(&i, self.ip())?;
        self.pos += n as u32;
        Ok(())
    }

    fn simple(&mut self, code: Code) -> Result<(), IcedError> {
        self.add_instruction(Instruction::with(code))
    }

    pub fn lahf(&mut self) -> Result<(), IcedError> {
        self.simple(Code::Lahf)
    }
    pub fn sahf(&mut self) -> Result<(), IcedError> {
        self.simple(Code::Sahf)
    }
    pub fn pushfq(&mut self) -> Result<(), IcedError> {
        self.simple(Code::Pushfq)
    }
    pub fn popfq(&mut self) -> Result<(), IcedError> {
        self.simple(Code::Popfq)
    }

    /// `jmp target` (rel32; the whole code buffer is one mapping).
    pub fn jmp(&mut self, target: u64) -> Result<(), IcedError> {
        self.add_instruction(Instruction::with_branch(Code::Jmp_rel32_64, target)?)
    }
    /// `call target` (rel32).
    pub fn call(&mut self, target: u64) -> Result<(), IcedError> {
        self.add_instruction(Instruction::with_branch(Code::Call_rel32_64, target)?)
    }

    pub fn create_label(&mut self) -> Label {
        self.labels.push(UNBOUND);
        Label(self.labels.len() as u32 - 1)
    }
    /// Binds `l` to the next instruction emitted.
    pub fn set_label(&mut self, l: Label) {
        debug_assert_eq!(self.labels[l.0 as usize], UNBOUND, "label bound twice");
        self.labels[l.0 as usize] = self.pos;
    }

    /// `jmp l`.
    pub fn jmp_label(&mut self, l: Label) -> Result<(), IcedError> {
        self.branch(None, l)
    }
    /// `jcc l`.
    pub fn jcc(&mut self, cc: ConditionCode, l: Label) -> Result<(), IcedError> {
        debug_assert_ne!(
            cc,
            ConditionCode::None,
            "callers refuse a missing condition"
        );
        self.branch(Some(cc), l)
    }

    fn branch(&mut self, cc: Option<ConditionCode>, l: Label) -> Result<(), IcedError> {
        // Condition codes number the Jcc opcodes in order: 0x70 + cc (rel8),
        // 0x0f 0x80 + cc (rel32). iced's ConditionCode has None at 0, `o` at 1.
        let tttn = cc.map(|c| c as u8 - 1);
        let at = self.labels[l.0 as usize];
        if at != UNBOUND {
            let short = i64::from(at) - (i64::from(self.pos) + 2);
            if let Ok(d) = i8::try_from(short) {
                self.bytes(&[tttn.map_or(0xeb, |t| 0x70 + t), d as u8]);
                return Ok(());
            }
        }
        match tttn {
            Some(t) => self.bytes(&[0x0f, 0x80 + t]),
            None => self.bytes(&[0xe9]),
        }
        self.fixups.push((self.pos, l));
        self.bytes(&[0; 4]);
        Ok(())
    }

    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.enc.write_u8(x);
        }
        self.pos += b.len() as u32;
    }

    /// The finished block, with every branch to a label resolved.
    pub fn finish(mut self) -> Result<Assembled, Unbound> {
        let mut code = self.enc.take_buffer();
        for &(at, l) in &self.fixups {
            let target = self.labels[l.0 as usize];
            if target == UNBOUND {
                return Err(Unbound);
            }
            let rel = target.wrapping_sub(at + 4) as i32;
            code[at as usize..at as usize + 4].copy_from_slice(&rel.to_le_bytes());
        }
        Ok(Assembled {
            code,
            labels: self.labels,
            base: self.base,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    fn decode(code: &[u8], ip: u64) -> Vec<Instruction> {
        Decoder::with_ip(64, code, ip, DecoderOptions::NONE)
            .into_iter()
            .collect()
    }

    #[test]
    fn forward_and_backward_labels_resolve() {
        let base = 0x7000_0000_1000;
        let mut a = Assembler::new(base);
        let fwd = a.create_label();
        let back = a.create_label();
        a.set_label(back);
        a.lahf().unwrap();
        a.jcc(ConditionCode::ne, fwd).unwrap();
        a.jmp_label(back).unwrap();
        a.sahf().unwrap();
        a.set_label(fwd);
        a.jmp(base + 0x10_0000).unwrap();
        let done = a.finish().unwrap();
        let insns = decode(&done.code, base);
        let m: Vec<_> = insns.iter().map(|i| i.mnemonic()).collect();
        assert_eq!(
            m,
            [
                Mnemonic::Lahf,
                Mnemonic::Jne,
                Mnemonic::Jmp,
                Mnemonic::Sahf,
                Mnemonic::Jmp
            ]
        );
        assert_eq!(insns[1].near_branch64(), done.label_ip(fwd));
        assert_eq!(insns[1].len(), 6, "forward branches are rel32");
        assert_eq!(insns[2].near_branch64(), base, "back to the bound label");
        assert_eq!(insns[2].len(), 2, "a reachable backward branch is rel8");
        assert_eq!(insns[4].near_branch64(), base + 0x10_0000);
        assert_eq!(done.label_ip(fwd), insns[4].ip());
    }

    #[test]
    fn every_condition_code_encodes_its_own_jcc() {
        use ConditionCode::*;
        for cc in [o, no, b, ae, e, ne, be, a, s, ns, p, np, l, ge, le, g] {
            let mut asm = Assembler::new(0x1000);
            let to = asm.create_label();
            asm.jcc(cc, to).unwrap();
            asm.set_label(to);
            asm.sahf().unwrap();
            let done = asm.finish().unwrap();
            let i = decode(&done.code, 0x1000)[0];
            assert_eq!(i.condition_code(), cc);
            assert_eq!(i.near_branch64(), 0x1006);
        }
    }

    #[test]
    fn a_branch_to_an_unbound_label_is_an_error() {
        let mut a = Assembler::new(0x1000);
        let l = a.create_label();
        a.jmp_label(l).unwrap();
        assert!(a.finish().is_err());
    }
}
