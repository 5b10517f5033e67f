//! ACPI tables for the PC platform (built with the `acpi_tables` crate) and
//! the PM1 power-management device that `poweroff`/`reboot` talk to.
//!
//! [`build`] lays the tables out from [`AcpiConfig::tables_addr`] (default
//! 0xE0000, inside the reserved BIOS area, where Linux also finds the RSDP by
//! scanning): RSDP, FACS, DSDT, FADT, MADT, MCFG, XSDT. The caller writes the
//! returned blobs into guest memory and puts [`AcpiTables::rsdp_addr`] in
//! `boot_params.acpi_rsdp_addr` (offset 0x070).
//!
//! The FADT is a full (not hardware-reduced) one: PM1a event/control blocks
//! and the PM timer in I/O space at [`PmConfig::io_base`], SCI on IRQ 9, a
//! fixed power button, and a reset register; the DSDT's `\_S5` gives SLP_TYP
//! [`pm::S5_SLP_TYP`] so `poweroff` writes `SLP_TYP|SLP_EN` to PM1a_CNT.

mod dsdt;
pub mod pm;
mod tables;
#[cfg(test)]
mod tests;

pub use pm::{PmArgs, PmDevice, PmState, PowerEvent};

/// OEM ID written in every table.
pub const OEM_ID: [u8; 6] = *b"HAKOBN";
/// OEM table ID written in every table.
pub const OEM_TABLE_ID: [u8; 8] = *b"HAKOBUNE";

/// Errors building the tables.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcpiError {
    #[error("{0} CPUs requested; the MADT here describes 1 to 255 xAPIC CPUs")]
    BadCpuCount(u32),
    #[error("the tables need {need:#x} bytes but only {have:#x} are reserved")]
    NoRoom { need: u64, have: u64 },
    #[error("{0} lies above 4 GiB but must be a 32-bit address")]
    Not32Bit(&'static str),
}

/// The IOAPIC as described in the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApicConfig {
    pub id: u8,
    pub addr: u32,
    pub gsi_base: u32,
}

/// The PCI host bridge as described by the DSDT (`_CRS`, `_PRT`) and MCFG.
/// Fill it from `pci::layout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciHostConfig {
    pub ecam_base: u64,
    /// Last bus number decoded by ECAM (first is 0).
    pub last_bus: u8,
    /// 32-bit MMIO window (base, size).
    pub mmio32: (u64, u64),
    /// 64-bit MMIO window (base, size); size 0 for none.
    pub mmio64: (u64, u64),
    /// INTx pin `pin` (0 = INTA) of slot `slot` is GSI `intx_gsi_base + (slot + pin) % 4`.
    pub intx_gsi_base: u32,
    /// Slots listed in `_PRT`.
    pub slots: u8,
}

/// A 16550 UART as described in the DSDT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialConfig {
    pub io_base: u16,
    pub irq: u8,
}

/// A virtio-mmio device described in the DSDT (`LNRO0005`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioMmioConfig {
    pub base: u64,
    pub size: u64,
    /// Level-triggered, active-high GSI.
    pub gsi: u32,
}

/// The power-management block: see [`pm`] for its register layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmConfig {
    pub io_base: u16,
    /// The SCI (ISA IRQ = GSI, level, active high).
    pub sci_irq: u8,
}

impl Default for PmConfig {
    fn default() -> Self {
        Self {
            io_base: pm::PM_IO_BASE,
            sci_irq: pm::SCI_IRQ,
        }
    }
}

/// What the tables describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of CPUs (APIC IDs and ACPI processor UIDs 0..cpus).
    pub cpus: u32,
    /// Guest address of the table area and its size.
    pub tables_addr: u64,
    pub tables_size: u64,
    pub lapic_addr: u32,
    pub ioapic: IoApicConfig,
    pub pci: Option<PciHostConfig>,
    pub serial: Vec<SerialConfig>,
    pub virtio_mmio: Vec<VirtioMmioConfig>,
    pub pm: PmConfig,
    /// An i8042 keyboard controller is present (FADT IA-PC boot flag).
    pub i8042: bool,
}

impl AcpiConfig {
    /// A PC with `cpus` CPUs, COM1, the IOAPIC at 0xFEC00000 and the tables
    /// at 0xE0000 (128 KiB); no PCI until [`pci`](Self::pci) is set.
    pub fn new(cpus: u32) -> Self {
        Self {
            cpus,
            tables_addr: 0xe0000,
            tables_size: 0x20000,
            lapic_addr: 0xfee0_0000,
            ioapic: IoApicConfig {
                id: 0,
                addr: 0xfec0_0000,
                gsi_base: 0,
            },
            pci: None,
            serial: vec![SerialConfig {
                io_base: 0x3f8,
                irq: 4,
            }],
            virtio_mmio: Vec::new(),
            pm: PmConfig::default(),
            i8042: false,
        }
    }
}

/// Built tables: blobs to copy into guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTables {
    /// Address of the RSDP (for `boot_params.acpi_rsdp_addr`).
    pub rsdp_addr: u64,
    /// (guest address, bytes) of every table, RSDP included.
    pub blobs: Vec<(u64, Vec<u8>)>,
}

struct Placer {
    start: u64,
    next: u64,
    end: u64,
    blobs: Vec<(u64, Vec<u8>)>,
}

impl Placer {
    fn place(&mut self, align: u64, bytes: Vec<u8>) -> Result<u64, AcpiError> {
        let addr = self.next.next_multiple_of(align);
        let end = addr + bytes.len() as u64;
        if end > self.end {
            return Err(AcpiError::NoRoom {
                need: end - self.start,
                have: self.end - self.start,
            });
        }
        self.next = end;
        self.blobs.push((addr, bytes));
        Ok(addr)
    }
}

fn addr32(a: u64, what: &'static str) -> Result<u32, AcpiError> {
    u32::try_from(a).map_err(|_| AcpiError::Not32Bit(what))
}

/// Builds all tables for `cfg`.
pub fn build(cfg: &AcpiConfig) -> Result<AcpiTables, AcpiError> {
    if cfg.cpus == 0 || cfg.cpus > 255 {
        return Err(AcpiError::BadCpuCount(cfg.cpus));
    }
    let mut p = Placer {
        start: cfg.tables_addr,
        next: cfg.tables_addr,
        end: cfg.tables_addr + cfg.tables_size,
        blobs: Vec::new(),
    };
    // The RSDP goes first so it sits on a 16-byte boundary of the scanned area.
    let rsdp_addr = p.place(16, vec![0; acpi_tables::rsdp::Rsdp::len()])?;
    let facs = p.place(64, tables::facs())?;
    let dsdt = p.place(16, dsdt::dsdt(cfg)?)?;
    let fadt = p.place(16, tables::fadt(cfg, facs, dsdt))?;
    let mut entries = vec![fadt];
    entries.push(p.place(16, tables::madt(cfg))?);
    if let Some(pci) = &cfg.pci {
        entries.push(p.place(16, tables::mcfg(pci))?);
    }
    let xsdt = p.place(16, tables::xsdt(&entries))?;
    p.blobs[0].1 = tables::rsdp(xsdt);
    Ok(AcpiTables {
        rsdp_addr,
        blobs: p.blobs,
    })
}
