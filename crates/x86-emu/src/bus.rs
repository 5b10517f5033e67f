//! The CPU's view of the machine: physical memory, ports, and the local
//! interrupt controller's CPU-facing registers. `accel-emu` implements it.

/// Physical memory, port I/O and platform hooks for one vCPU.
///
/// Sizes are 1, 2, 4 or 8 bytes; an access never crosses a 4 KiB page
/// (the emulator splits page-crossing accesses). Addresses that are neither RAM
/// nor a device read as all ones and ignore writes.
pub trait Bus {
    /// Reads `size` bytes (little endian) at physical address `addr`.
    fn read(&mut self, addr: u64, size: usize) -> u64;
    /// Writes the low `size` bytes of `val` at physical address `addr`.
    fn write(&mut self, addr: u64, size: usize, val: u64);
    /// Atomically replaces the `size`-byte value at `addr` by `f(old)` and
    /// returns `old` (`lock`-prefixed read-modify-write, `xchg`).
    fn atomic_rmw(&mut self, addr: u64, size: usize, f: &mut dyn FnMut(u64) -> u64) -> u64;
    /// Whether `addr` is ordinary RAM (code can be cached from it).
    fn is_ram(&mut self, addr: u64) -> bool;
    /// Port input of `size` bytes (1, 2 or 4).
    fn io_in(&mut self, port: u16, size: usize) -> u32;
    /// Port output of `size` bytes (1, 2 or 4).
    fn io_out(&mut self, port: u16, size: usize, val: u32);
    /// The guest's time stamp counter.
    fn tsc(&mut self) -> u64;
    /// Reads a platform MSR (APIC base, TSC deadline, x2APIC...). `None` = #GP.
    fn rdmsr(&mut self, msr: u32) -> Option<u64>;
    /// Writes a platform MSR. `false` = not a platform MSR (the CPU decides).
    fn wrmsr(&mut self, msr: u32, val: u64) -> bool;
    /// CR8 read: the local APIC's task priority (bits 7:4 of TPR).
    fn cr8(&mut self) -> u64;
    /// CR8 write.
    fn set_cr8(&mut self, val: u64);
    /// The host address of the RAM byte at physical `addr`, for a translator that
    /// reads and writes guest RAM directly: valid as long as the VM exists, and
    /// for the rest of `addr`'s 4 KiB page. `None` (the default) for anything but
    /// ordinary RAM.
    fn host_addr(&mut self, _addr: u64) -> Option<usize> {
        None
    }
    /// A translator is about to store to the RAM page holding physical `addr`
    /// through a host address (bypassing [`Bus::write`]); a live migration logs it.
    fn note_write_page(&mut self, _addr: u64) {}
    /// Reads `buf.len()` bytes of RAM at `addr` (within one page; string
    /// instructions copy a page at a time). The default reads byte by byte.
    fn read_bytes(&mut self, addr: u64, buf: &mut [u8]) {
        for (k, b) in buf.iter_mut().enumerate() {
            *b = self.read(addr + k as u64, 1) as u8;
        }
    }
    /// Writes `data` to RAM at `addr` (within one page).
    fn write_bytes(&mut self, addr: u64, data: &[u8]) {
        for (k, &b) in data.iter().enumerate() {
            self.write(addr + k as u64, 1, b as u64);
        }
    }
}
