//! Executable memory for translated code: one fixed mapping per vCPU, filled
//! front to back and emptied as a whole when full (the code cache's size bound).

use std::io;

/// A read-write-execute mapping owned by one vCPU thread.
pub struct CodeBuf {
    base: *mut u8,
    size: usize,
    used: usize,
}

impl CodeBuf {
    /// Maps `size` bytes (pages are only backed once written).
    pub fn new(size: usize) -> io::Result<CodeBuf> {
        // SAFETY: an anonymous private mapping at an address the kernel picks
        // touches no existing memory; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(CodeBuf {
            base: p.cast(),
            size,
            used: 0,
        })
    }

    /// Address the next code will be placed at (16-byte aligned).
    pub fn next_ip(&self) -> u64 {
        self.base as u64 + self.used.next_multiple_of(16) as u64
    }

    /// Bytes in use.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Whether `ip` lies in code placed so far.
    pub fn contains(&self, ip: u64) -> bool {
        ip >= self.base as u64 && ip < self.base as u64 + self.used as u64
    }

    /// Appends code assembled for address [`CodeBuf::next_ip`]; `false` if full.
    pub fn push(&mut self, code: &[u8]) -> bool {
        let start = self.used.next_multiple_of(16);
        if start + code.len() > self.size {
            return false;
        }
        // SAFETY: [start, start + len) lies inside the mapping (checked above),
        // which this CodeBuf owns; no executing code overlaps fresh space.
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.base.add(start), code.len());
        }
        self.used = start + code.len();
        true
    }

    /// Drops every translation after the first `keep` bytes.
    pub fn truncate(&mut self, keep: usize) {
        self.used = keep.min(self.used);
    }

    /// Overwrites 5 bytes at `at` with `jmp target` (rel32): links an exit stub to
    /// a block. Only this vCPU's thread runs this code, and not while patching.
    pub fn patch_jmp(&mut self, at: u64, target: u64) {
        assert!(
            self.contains(at) && self.contains(at + 4),
            "patch outside the code"
        );
        let rel = target.wrapping_sub(at + 5) as i64;
        assert!(i32::try_from(rel).is_ok(), "jump out of range");
        let mut b = [0xe9u8, 0, 0, 0, 0];
        b[1..].copy_from_slice(&(rel as i32).to_le_bytes());
        // SAFETY: the 5 bytes lie inside placed code (asserted), owned by this buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), at as *mut u8, 5);
        }
    }
}

impl Drop for CodeBuf {
    fn drop(&mut self) {
        // SAFETY: base/size are exactly the mapping made in new().
        unsafe {
            libc::munmap(self.base.cast(), self.size);
        }
    }
}
