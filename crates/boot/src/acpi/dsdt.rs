//! The DSDT: `\_S5` and, under `\_SB`, the PCI host bridge (`_CRS`, `_PRT`),
//! the motherboard resources that reserve ECAM and the PM block, the serial
//! ports and any virtio-mmio devices.

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, Interrupt, Memory32Fixed, Name, Package,
    Path, ResourceTemplate, Scope, IO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::{Aml, AmlSink};

use super::{addr32, pm, AcpiConfig, AcpiError, PciHostConfig, OEM_ID, OEM_TABLE_ID};

/// A legacy ISA IRQ descriptor without flags (`IRQNoFlags`: edge, active high),
/// which the crate does not provide.
struct IrqNoFlags(u8);

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(0x22); // small resource, type 4 (IRQ), length 2
        sink.word(1u16 << (self.0 & 15));
    }
}

fn aml(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

/// Raw AML bytes as an `Aml` object (to mix prebuilt pieces into a scope).
struct Raw(Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

/// `_PRT` entries: (slot address `0xSSSSFFFF`, pin, GSI).
pub(super) fn prt_entries(pci: &PciHostConfig) -> Vec<(u32, u8, u32)> {
    let mut v = Vec::new();
    for slot in 0..u32::from(pci.slots) {
        for pin in 0..4u8 {
            v.push((
                slot << 16 | 0xffff,
                pin,
                pci.intx_gsi_base + (slot + u32::from(pin)) % 4,
            ));
        }
    }
    v
}

fn pci_host(pci: &PciHostConfig) -> Result<Vec<u8>, AcpiError> {
    let m32_base = addr32(pci.mmio32.0, "PCI 32-bit window")?;
    let m32_end = addr32(pci.mmio32.0 + pci.mmio32.1 - 1, "PCI 32-bit window")?;
    let bus = AddressSpace::<u16>::new_bus_number(0, u16::from(pci.last_bus));
    let cf8 = IO::new(0xcf8, 0xcf8, 1, 8);
    let io_lo = AddressSpace::<u16>::new_io(0x0000, 0x0cf7, None);
    let io_hi = AddressSpace::<u16>::new_io(0x0d00, 0xffff, None);
    let m32 = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        m32_base,
        m32_end,
        None,
    );
    let m64 = AddressSpace::<u64>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        pci.mmio64.0,
        pci.mmio64.0 + pci.mmio64.1.saturating_sub(1),
        None,
    );
    let mut res: Vec<&dyn Aml> = vec![&bus, &cf8, &io_lo, &io_hi, &m32];
    if pci.mmio64.1 > 0 {
        res.push(&m64);
    }
    let crs = ResourceTemplate::new(res);
    let entries = prt_entries(pci);
    let pkgs: Vec<Package> = entries
        .iter()
        .map(|(a, p, g)| Package::new(vec![a, p, &0u8, g]))
        .collect();
    let prt = Package::new(pkgs.iter().map(|p| p as &dyn Aml).collect());
    let hid = EISAName::new("PNP0A08");
    let cid = EISAName::new("PNP0A03");
    Ok(aml(&Device::new(
        "PCI0".into(),
        vec![
            &Name::new("_HID".into(), &hid),
            &Name::new("_CID".into(), &cid),
            &Name::new("_ADR".into(), &0u8),
            &Name::new("_SEG".into(), &0u8),
            &Name::new("_UID".into(), &0u8),
            &Name::new("_BBN".into(), &0u8),
            &Name::new("_CRS".into(), &crs),
            &Name::new("_PRT".into(), &prt),
        ],
    )))
}

/// PNP0C02: reserves ECAM (Linux only trusts MCFG areas reserved in e820 or
/// here) and the PM I/O block.
fn motherboard(cfg: &AcpiConfig) -> Result<Vec<u8>, AcpiError> {
    let pm_io = IO::new(cfg.pm.io_base, cfg.pm.io_base, 1, pm::PM_IO_LEN as u8);
    let ecam = match &cfg.pci {
        Some(p) => Some(Memory32Fixed::new(
            true,
            addr32(p.ecam_base, "ECAM")?,
            (u32::from(p.last_bus) + 1) << 20,
        )),
        None => None,
    };
    let mut res: Vec<&dyn Aml> = vec![&pm_io];
    if let Some(e) = &ecam {
        res.push(e);
    }
    let crs = ResourceTemplate::new(res);
    let hid = EISAName::new("PNP0C02");
    Ok(aml(&Device::new(
        "MRES".into(),
        vec![
            &Name::new("_HID".into(), &hid),
            &Name::new("_UID".into(), &0u8),
            &Name::new("_CRS".into(), &crs),
        ],
    )))
}

fn serial(i: usize, io_base: u16, irq: u8) -> Vec<u8> {
    let io = IO::new(io_base, io_base, 1, 8);
    let int = IrqNoFlags(irq);
    let crs = ResourceTemplate::new(vec![&io, &int]);
    let hid = EISAName::new("PNP0501");
    let uid = (i + 1) as u8;
    aml(&Device::new(
        Path::new(&format!("COM{}", (i + 1).min(9))),
        vec![
            &Name::new("_HID".into(), &hid),
            &Name::new("_UID".into(), &uid),
            &Name::new("_CRS".into(), &crs),
        ],
    ))
}

fn virtio_mmio(i: usize, base: u64, size: u64, gsi: u32) -> Result<Vec<u8>, AcpiError> {
    let mem = Memory32Fixed::new(
        true,
        addr32(base, "virtio-mmio")?,
        addr32(size, "virtio-mmio size")?,
    );
    // Level-triggered, active high, exclusive: the transport holds the line while status is non-zero.
    let int = Interrupt::new(true, false, false, false, gsi);
    let crs = ResourceTemplate::new(vec![&mem, &int]);
    let uid = i as u32;
    Ok(aml(&Device::new(
        Path::new(&format!("VR{:02X}", i & 0xff)),
        vec![
            &Name::new("_HID".into(), &"LNRO0005"),
            &Name::new("_UID".into(), &uid),
            &Name::new("_CRS".into(), &crs),
        ],
    )))
}

/// The DSDT bytes for `cfg`.
pub(super) fn dsdt(cfg: &AcpiConfig) -> Result<Vec<u8>, AcpiError> {
    let mut sb = Vec::new();
    if let Some(pci) = &cfg.pci {
        sb.extend(pci_host(pci)?);
    }
    sb.extend(motherboard(cfg)?);
    for (i, s) in cfg.serial.iter().enumerate() {
        sb.extend(serial(i, s.io_base, s.irq));
    }
    for (i, v) in cfg.virtio_mmio.iter().enumerate() {
        sb.extend(virtio_mmio(i, v.base, v.size, v.gsi)?);
    }
    let s5 = pm::S5_SLP_TYP;
    let s5_pkg = Package::new(vec![&s5, &s5, &0u8, &0u8]);
    let raw = Raw(sb);
    let mut t = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE_ID, 1);
    t.append_slice(&aml(&Name::new("_S5_".into(), &s5_pkg)));
    t.append_slice(&aml(&Scope::new("\\_SB_".into(), vec![&raw])));
    Ok(t.as_slice().to_vec())
}
