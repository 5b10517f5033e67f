//! Choosing the boot protocol for `--kernel`: a Multiboot v1 header in the first
//! 8 KiB means a 32-bit Multiboot entry (each `--initrd` a module), anything else
//! the Linux 64-bit boot protocol.

use accel::GuestMemory;
use anyhow::{bail, Result};
use boot::linux::KernelFormat;
use boot::multiboot::{self, MultibootConfig};
use boot::LinuxBootConfig;
use vmm_types::CpuState;

use crate::config::VmConfig;

/// Loads the kernel (and initrd or modules) into `mem`; returns the boot CPU's state.
pub fn load(config: &VmConfig, mem: &GuestMemory, rsdp: u64) -> Result<CpuState> {
    let reserved = vec![(pci::layout::ECAM_BASE, pci::layout::ECAM_SIZE)];
    let header = match multiboot::probe(&config.kernel) {
        Ok(h) => h,
        // A bzImage is what it says it is, whatever magic number its setup code holds.
        Err(e @ multiboot::MultibootError::Header { .. })
            if boot::linux::linux_format(&config.kernel) == Some(KernelFormat::BzImage) =>
        {
            tracing::warn!("{e}; booting it as the Linux bzImage it also is");
            None
        }
        Err(e) => return Err(e.into()),
    };
    if header.is_some() {
        let b = multiboot::load_multiboot(
            mem,
            &MultibootConfig {
                kernel: config.kernel.clone(),
                cmdline: config.cmdline.clone(),
                modules: config.initrds.clone(),
                reserved,
            },
        )?;
        tracing::info!(
            entry = format_args!("{:#x}", b.entry),
            info = format_args!("{:#x}", b.info_addr),
            modules = b.modules.len(),
            "Multiboot kernel loaded"
        );
        return Ok(b.cpu);
    }
    if config.initrds.len() > 1 {
        bail!(
            "{}: a Linux kernel takes one --initrd, not {} (only Multiboot kernels take several, as modules)",
            config.kernel.display(),
            config.initrds.len()
        );
    }
    let info = boot::load_linux(
        mem,
        &LinuxBootConfig {
            kernel: config.kernel.clone(),
            initrd: config.initrds.first().cloned(),
            cmdline: config.cmdline.clone(),
            acpi_rsdp: Some(rsdp),
            reserved,
        },
    )?;
    tracing::info!(entry = format_args!("{:#x}", info.entry), format = ?info.format, "kernel loaded");
    Ok(info.cpu)
}
