//! The fixed-layout tables: RSDP, XSDT, FADT, FACS, MADT, MCFG.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{facs::FACS, Aml};

use super::{pm, AcpiConfig, PciHostConfig, OEM_ID, OEM_TABLE_ID};

fn bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

pub(super) fn rsdp(xsdt: u64) -> Vec<u8> {
    bytes(&Rsdp::new(OEM_ID, xsdt))
}

pub(super) fn xsdt(entries: &[u64]) -> Vec<u8> {
    let mut x = XSDT::new(OEM_ID, OEM_TABLE_ID, 1);
    for &e in entries {
        x.add_entry(e);
    }
    bytes(&x)
}

pub(super) fn facs() -> Vec<u8> {
    bytes(&FACS::new())
}

pub(super) fn mcfg(pci: &PciHostConfig) -> Vec<u8> {
    let mut m = MCFG::new(OEM_ID, OEM_TABLE_ID, 1);
    m.add_ecam(pci.ecam_base, 0, 0, pci.last_bus);
    bytes(&m)
}

fn io_gas(bits: u8, port: u16) -> GAS {
    let size = match bits {
        8 => AccessSize::ByteAccess,
        16 => AccessSize::WordAccess,
        _ => AccessSize::DwordAccess,
    };
    GAS::new(AddressSpace::SystemIo, bits, 0, size, u64::from(port))
}

/// IA-PC boot architecture flags (FADT offset 109).
const BOOT_LEGACY_DEVICES: u16 = 1 << 0;
const BOOT_8042: u16 = 1 << 1;
const BOOT_VGA_NOT_PRESENT: u16 = 1 << 2;
const BOOT_NO_ASPM: u16 = 1 << 4;

/// A full (not hardware-reduced) FADT: PM1a blocks, PM timer and reset
/// register in I/O space, SCI, fixed power button, no sleep button.
pub(super) fn fadt(cfg: &AcpiConfig, facs: u64, dsdt: u64) -> Vec<u8> {
    let base = cfg.pm.io_base;
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, 1)
        .firmware_ctrl_64(facs)
        .dsdt_64(dsdt);
    // FIRMWARE_CTRL/DSDT (32-bit) are zero when the X_ fields are used, as the spec requires.
    f.sci_int = u16::from(cfg.pm.sci_irq).into();
    // SMI_CMD = 0: the platform is always in ACPI mode (SCI_EN reads as set).
    f.pm1a_evt_blk = u32::from(base + pm::PM1_STS).into();
    f.pm1a_cnt_blk = u32::from(base + pm::PM1_CNT).into();
    f.pm_tmr_blk = u32::from(base + pm::PM_TMR).into();
    f.pm1_evt_len = 4;
    f.pm1_cnt_len = 2;
    f.pm_tmr_len = 4;
    f.x_pm1a_evt_blk = io_gas(32, base + pm::PM1_STS);
    f.x_pm1a_cnt_blk = io_gas(16, base + pm::PM1_CNT);
    f.x_pm_tmr_blk = io_gas(32, base + pm::PM_TMR);
    f.reset_reg = io_gas(8, base + pm::RESET);
    f.reset_value = pm::RESET_VALUE;
    // No C2/C3 states.
    f.p_lvl2_lat = 101u16.into();
    f.p_lvl3_lat = 1001u16.into();
    let mut boot = BOOT_LEGACY_DEVICES | BOOT_VGA_NOT_PRESENT | BOOT_NO_ASPM;
    if cfg.i8042 {
        boot |= BOOT_8042;
    }
    f.iapc_boot_arch = boot.into();
    f.flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::FixRtc)
        .flag(Flags::TmrValExt)
        .flag(Flags::ResetRegSup)
        .finalize()
        .to_aml_bytes_vec()
}

trait ToVec {
    fn to_aml_bytes_vec(&self) -> Vec<u8>;
}

impl<T: Aml> ToVec for T {
    fn to_aml_bytes_vec(&self) -> Vec<u8> {
        bytes(self)
    }
}

const MADT_PCAT_COMPAT: u32 = 1;
const MADT_LAPIC: u8 = 0;
const MADT_IOAPIC: u8 = 1;
const MADT_ISO: u8 = 2;
const MADT_LAPIC_NMI: u8 = 4;
/// MPS INTI flags: active high, level triggered.
const INTI_LEVEL_HIGH: u16 = 0b1101;

/// MADT: one enabled local APIC per CPU, the IOAPIC, the ISA overrides
/// (IRQ0 -> GSI2; the SCI level/active-high) and LINT1 as NMI on every CPU.
/// Built by hand: the crate's MADT lacks the x86 override and NMI entries.
pub(super) fn madt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut t = Sdt::new(*b"APIC", 44, 5, OEM_ID, OEM_TABLE_ID, 1);
    t.write_u32(36, cfg.lapic_addr);
    t.write_u32(40, MADT_PCAT_COMPAT);
    for cpu in 0..cfg.cpus {
        let id = cpu as u8;
        t.append_slice(&[MADT_LAPIC, 8, id, id]);
        t.append_slice(&1u32.to_le_bytes()); // enabled
    }
    let io = cfg.ioapic;
    t.append_slice(&[MADT_IOAPIC, 12, io.id, 0]);
    t.append_slice(&io.addr.to_le_bytes());
    t.append_slice(&io.gsi_base.to_le_bytes());
    let iso = |t: &mut Sdt, irq: u8, gsi: u32, flags: u16| {
        t.append_slice(&[MADT_ISO, 10, 0, irq]);
        t.append_slice(&gsi.to_le_bytes());
        t.append_slice(&flags.to_le_bytes());
    };
    iso(&mut t, 0, 2, 0);
    iso(
        &mut t,
        cfg.pm.sci_irq,
        u32::from(cfg.pm.sci_irq),
        INTI_LEVEL_HIGH,
    );
    t.append_slice(&[MADT_LAPIC_NMI, 6, 0xff, 0, 0, 1]);
    t.update_checksum();
    t.as_slice().to_vec()
}
