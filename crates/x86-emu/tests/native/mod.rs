//! Running user-mode snippets natively on the host CPU, for checking the emulator's
//! semantics against the real CPU.
//!
//! A [`Snippet`] is machine code assembled with iced-x86's `CodeAssembler` and wrapped in a
//! trampoline that loads every GPR (except RSP), the status flags and the whole FXSAVE
//! image (x87, MXCSR, XMM0-15) from a [`Machine`], runs the snippet, and stores them back.
//! The host's own x87/SSE state is saved and restored around it so a test that changes the
//! rounding mode cannot disturb the Rust code. Snippets must not touch RSP, must not
//! fault, and must fall through at their end.
#![allow(dead_code)]

pub mod emu;
pub mod gen;

use iced_x86::code_asm::*;

/// GPR indices in [`Machine::gpr`] (the x86 encoding order).
pub const RAX: usize = 0;
pub const RCX: usize = 1;
pub const RDX: usize = 2;
pub const RBX: usize = 3;
pub const RSP: usize = 4;
pub const RBP: usize = 5;
pub const RSI: usize = 6;
pub const RDI: usize = 7;

/// The status flags a snippet may start with (CF PF AF ZF SF OF); RFLAGS bit 1 is always 1.
pub const STATUS_FLAGS: u64 = 0x8d5;

const OFF_GPR: i32 = 0;
const OFF_RFLAGS: i32 = 128;
const OFF_FX: i32 = 192;
const OFF_HOST_FX: i32 = 704;

/// The register and memory state a snippet runs on.
#[repr(C, align(64))]
pub struct Machine {
    /// RAX..R15 in encoding order; `gpr[RSP]` is ignored.
    pub gpr: [u64; 16],
    /// RFLAGS: only [`STATUS_FLAGS`] are loaded; all of it is stored back.
    pub rflags: u64,
    _pad: [u64; 7],
    /// The FXSAVE image loaded before and stored after the snippet.
    pub fx: [u8; 512],
    host_fx: [u8; 512],
    /// Scratch memory; [`Machine::new`] points RSI at it.
    pub mem: [u8; 1024],
}

impl Machine {
    /// A machine in the FNINIT/reset state: GPRs zero (RSI = `mem`), FCW 0x37f, MXCSR 0x1f80.
    pub fn new() -> Box<Machine> {
        let mut m = Box::new(Machine {
            gpr: [0; 16],
            rflags: 2,
            _pad: [0; 7],
            fx: [0; 512],
            host_fx: [0; 512],
            mem: [0; 1024],
        });
        m.fx[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        m.set_mxcsr(0x1f80);
        m.gpr[RSI] = m.mem.as_ptr() as u64;
        m
    }

    /// XMM register `i`.
    pub fn xmm(&self, i: usize) -> u128 {
        let o = 160 + 16 * i;
        u128::from_le_bytes(self.fx[o..o + 16].try_into().unwrap())
    }

    /// Sets XMM register `i`.
    pub fn set_xmm(&mut self, i: usize, v: u128) {
        let o = 160 + 16 * i;
        self.fx[o..o + 16].copy_from_slice(&v.to_le_bytes());
    }

    /// MXCSR.
    pub fn mxcsr(&self) -> u32 {
        u32::from_le_bytes(self.fx[24..28].try_into().unwrap())
    }

    /// Sets MXCSR.
    pub fn set_mxcsr(&mut self, v: u32) {
        self.fx[24..28].copy_from_slice(&v.to_le_bytes());
    }

    /// The address of `mem[off]`, for pointing a register at scratch memory.
    pub fn mem_addr(&self, off: usize) -> u64 {
        self.mem.as_ptr() as u64 + off as u64
    }
}

type Entry = unsafe extern "sysv64" fn(*mut Machine);

/// Native code for one snippet inside its trampoline, in its own executable mapping.
pub struct Snippet {
    page: *mut libc::c_void,
    len: usize,
    entry: Entry,
    /// The snippet's own bytes (without the trampoline), for feeding an emulator.
    pub body: Vec<u8>,
}

fn gpr64(i: usize) -> AsmRegister64 {
    [
        rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
    ][i]
}

impl Snippet {
    /// Assembles `body` inside the trampoline and maps it executable.
    pub fn new(body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Snippet {
        Self::try_new(body).expect("assembling snippet")
    }

    fn try_new(
        body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    ) -> Result<Snippet, IcedError> {
        let mut a = CodeAssembler::new(64)?;
        for r in [rbx, rbp, r12, r13, r14, r15, rdi] {
            a.push(r)?;
        }
        a.fxsave64(ptr(rdi + OFF_HOST_FX))?;
        a.fxrstor64(ptr(rdi + OFF_FX))?;
        a.mov(rax, qword_ptr(rdi + OFF_RFLAGS))?;
        a.and(rax, STATUS_FLAGS as i32)?;
        a.or(rax, 2)?;
        a.push(rax)?;
        a.popfq()?;
        for i in (0..16).filter(|&i| i != RSP && i != RDI) {
            a.mov(gpr64(i), qword_ptr(rdi + OFF_GPR + 8 * i as i32))?;
        }
        a.mov(rdi, qword_ptr(rdi + OFF_GPR + 8 * RDI as i32))?;
        let mut start = a.create_label();
        a.set_label(&mut start)?;
        a.nop()?; // anchors the label; the body starts right after
        body(&mut a)?;
        let mut end = a.create_label();
        a.set_label(&mut end)?;
        a.push(rdi)?;
        a.mov(rdi, qword_ptr(rsp + 8))?;
        for i in (0..16).filter(|&i| i != RSP && i != RDI) {
            a.mov(qword_ptr(rdi + OFF_GPR + 8 * i as i32), gpr64(i))?;
        }
        a.pop(rax)?;
        a.mov(qword_ptr(rdi + OFF_GPR + 8 * RDI as i32), rax)?;
        a.pushfq()?;
        a.pop(rax)?;
        a.mov(qword_ptr(rdi + OFF_RFLAGS), rax)?;
        a.fxsave64(ptr(rdi + OFF_FX))?;
        a.fxrstor64(ptr(rdi + OFF_HOST_FX))?;
        a.cld()?;
        for r in [rdi, r15, r14, r13, r12, rbp, rbx] {
            a.pop(r)?;
        }
        a.ret()?;
        let res = a.assemble_options(
            0,
            iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )?;
        let s = res.label_ip(&start)? as usize + 1;
        let e = res.label_ip(&end)? as usize;
        let code = res.inner.code_buffer;
        let body = code[s..e].to_vec();
        Ok(Self::map(&code, body))
    }

    fn map(code: &[u8], body: Vec<u8>) -> Snippet {
        let len = code.len().div_ceil(4096) * 4096;
        // SAFETY: an anonymous private mapping at a kernel-chosen address touches no
        // existing memory; the result is checked against MAP_FAILED.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(page, libc::MAP_FAILED, "mmap failed");
        // SAFETY: `page` is a fresh writable mapping of `len >= code.len()` bytes that
        // nothing else references.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), page.cast::<u8>(), code.len()) };
        // SAFETY: changes the protection of our own mapping only.
        let rc = unsafe { libc::mprotect(page, len, libc::PROT_READ | libc::PROT_EXEC) };
        assert_eq!(rc, 0, "mprotect failed");
        // SAFETY: the mapping holds the trampoline assembled above, which follows the
        // SysV ABI (saves callee-saved registers, keeps RSP balanced, restores the host
        // x87/SSE state and DF=0) and takes one pointer argument.
        let entry = unsafe { std::mem::transmute::<*mut libc::c_void, Entry>(page) };
        Snippet {
            page,
            len,
            entry,
            body,
        }
    }

    /// Runs the snippet on `m`.
    pub fn run(&self, m: &mut Machine) {
        // SAFETY: `entry` is the trampoline (see `map`); `m` is a valid exclusive
        // `Machine` whose layout (repr(C)) matches the offsets the trampoline uses. The
        // snippet itself only touches registers and memory the test points it at.
        unsafe { (self.entry)(m) }
    }
}

impl Drop for Snippet {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `map`, which no one uses anymore.
        unsafe { libc::munmap(self.page, self.len) };
    }
}

/// Collects mismatches and panics with the first few once done.
#[derive(Default)]
pub struct Mismatches {
    count: usize,
    shown: Vec<String>,
}

impl Mismatches {
    /// Records a mismatch described by `msg`.
    pub fn add(&mut self, msg: String) {
        self.count += 1;
        // Show the first two of each kind (the text before the first ':').
        let key = msg.split(':').next().unwrap_or("").to_string();
        let same = self
            .shown
            .iter()
            .filter(|m| m.starts_with(&format!("{key}:")))
            .count();
        if self.shown.len() < 40 && same < 2 {
            self.shown.push(msg);
        }
    }

    /// Panics if anything was recorded.
    pub fn finish(self, what: &str) {
        assert!(
            self.count == 0,
            "{what}: {} mismatches vs the host CPU, first ones:\n{}",
            self.count,
            self.shown.join("\n")
        );
    }
}

impl Machine {
    /// MMX register `i` (the low 64 bits of x87 register slot `i`).
    pub fn mm(&self, i: usize) -> u64 {
        let o = 32 + 16 * i;
        u64::from_le_bytes(self.fx[o..o + 8].try_into().unwrap())
    }

    /// Sets MMX register `i` (the exponent bits of the slot are left as they are).
    pub fn set_mm(&mut self, i: usize, v: u64) {
        let o = 32 + 16 * i;
        self.fx[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
}

/// Runs `snip` in the emulator and natively from `m`'s state (leaving the native result in
/// `m`) and describes any difference: GPRs (RSP excepted), RFLAGS under `flag_mask`, the
/// scratch memory, and when `check_fx` the x87/SSE state (FXSAVE image without
/// FOP/FIP/FDP). The same run through the translator must end exactly like the
/// interpreter's. `None` when they agree.
pub fn native_vs_emu(
    snip: &Snippet,
    m: &mut Machine,
    flag_mask: u64,
    check_fx: bool,
) -> Option<String> {
    let before = format!("gpr={:x?} rflags={:#x}", m.gpr, m.rflags);
    let emu = match emu::run_emulated(&snip.body, m, false) {
        Ok(e) => e,
        Err(e) => return Some(format!("{e}; input {before}")),
    };
    let mut d = Vec::new();
    match emu::run_emulated(&snip.body, m, true) {
        Ok(j) => {
            for i in (0..16).filter(|&i| j.gpr[i] != emu.gpr[i]) {
                d.push(format!(
                    "translator gpr{i}={:#x}, interpreter {:#x}",
                    j.gpr[i], emu.gpr[i]
                ));
            }
            if (j.rflags ^ emu.rflags) & flag_mask != 0 {
                d.push(format!(
                    "translator rflags={:#x}, interpreter {:#x}",
                    j.rflags, emu.rflags
                ));
            }
            if j.mem != emu.mem || j.fx != emu.fx {
                d.push("translator memory or x87/SSE state differs from the interpreter's".into());
            }
        }
        Err(e) => d.push(format!("translator: {e}")),
    }
    snip.run(m);
    for i in (0..16).filter(|&i| i != RSP) {
        if m.gpr[i] != emu.gpr[i] {
            d.push(format!("gpr{i}: cpu={:#x} emu={:#x}", m.gpr[i], emu.gpr[i]));
        }
    }
    if (m.rflags ^ emu.rflags) & flag_mask != 0 {
        d.push(format!(
            "rflags&{flag_mask:#x}: cpu={:#x} emu={:#x}",
            m.rflags & flag_mask,
            emu.rflags & flag_mask
        ));
    }
    if m.mem != emu.mem {
        let at = (0..1024).find(|&k| m.mem[k] != emu.mem[k]).unwrap_or(0);
        d.push(format!("memory differs from byte {at}"));
    }
    if check_fx {
        let ranges = [(0usize, 6usize), (24, 28)];
        let regs = (0..8).map(|k| (32 + 16 * k, 42 + 16 * k));
        for (a, b) in ranges.into_iter().chain(regs).chain([(160, 416)]) {
            if m.fx[a..b] != emu.fx[a..b] {
                d.push(format!(
                    "fxsave[{a}..{b}]: cpu={:02x?} emu={:02x?}",
                    &m.fx[a..b],
                    &emu.fx[a..b]
                ));
            }
        }
    }
    if d.is_empty() {
        None
    } else {
        Some(format!("input {before}: {}", d.join("; ")))
    }
}
