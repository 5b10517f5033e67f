//! CPUID leaves as the VMM hands them to an accelerator.

use serde::{Deserialize, Serialize};

/// One CPUID leaf/subleaf and the values the guest sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    /// Whether `index` (ECX) selects a subleaf for this function.
    pub indexed: bool,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Looks up a leaf in a table, honouring subleaf indexing.
pub fn lookup(table: &[CpuidEntry], function: u32, index: u32) -> Option<&CpuidEntry> {
    table
        .iter()
        .find(|e| e.function == function && (!e.indexed || e.index == index))
}

mod check;
mod names;

pub use check::{check_compatible, feature_registers, CpuidMismatch, FeatureRegister, Reg};
