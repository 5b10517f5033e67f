//! What a debugger (the GDB server) asks of a vCPU, and why a vCPU stops for it.

/// Which accesses a watchpoint catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchKind {
    Write,
    Read,
    /// Reads and writes.
    Access,
}

/// A watched range of linear (guest-virtual) addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchpoint {
    pub addr: u64,
    pub len: u64,
    pub kind: WatchKind,
}

/// The debugging a vCPU does from its next `run` on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestDebug {
    /// Stop after one instruction.
    pub single_step: bool,
    /// Linear addresses of instructions to stop before.
    pub breakpoints: Vec<u64>,
    pub watchpoints: Vec<Watchpoint>,
    /// Linear addresses where the debugger wrote an `int3` into guest memory (KVM's
    /// software breakpoints): the vCPU stops there, and hands any other `int3` to
    /// the guest.
    pub int3: Vec<u64>,
}

impl GuestDebug {
    /// Whether anything is asked at all.
    pub fn active(&self) -> bool {
        self.single_step
            || !self.breakpoints.is_empty()
            || !self.watchpoints.is_empty()
            || !self.int3.is_empty()
    }
}

/// Why a vCPU stopped for the debugger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugStop {
    /// One instruction was run (single step).
    Step,
    /// The next instruction is at a breakpoint (it has not run).
    Breakpoint,
    /// An instruction that just ran accessed a watched address.
    Watchpoint { addr: u64, kind: WatchKind },
}
