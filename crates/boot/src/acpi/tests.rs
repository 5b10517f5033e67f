use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vm_device::{BusDevice, IrqLine, Persist};

use super::*;

fn pci_cfg() -> PciHostConfig {
    PciHostConfig {
        ecam_base: pci::layout::ECAM_BASE,
        last_bus: pci::layout::LAST_BUS,
        mmio32: (pci::layout::MMIO32_BASE, pci::layout::MMIO32_SIZE),
        mmio64: (pci::layout::mmio64_base(2 << 30), pci::layout::MMIO64_SIZE),
        intx_gsi_base: pci::layout::INTX_GSI_BASE,
        slots: pci::layout::SLOTS,
    }
}

fn full_config(cpus: u32) -> AcpiConfig {
    let mut c = AcpiConfig::new(cpus);
    c.pci = Some(pci_cfg());
    c.virtio_mmio.push(VirtioMmioConfig {
        base: pci::layout::PLATFORM_MMIO_BASE,
        size: 0x1000,
        gsi: 5,
    });
    c
}

fn table<'a>(t: &'a AcpiTables, sig: &[u8; 4]) -> (u64, &'a [u8]) {
    t.blobs
        .iter()
        .find(|(_, b)| &b[..4] == sig)
        .map(|(a, b)| (*a, b.as_slice()))
        .expect("table present")
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

#[test]
fn checksums_lengths_and_placement() {
    let t = build(&full_config(4)).unwrap();
    assert_eq!(t.rsdp_addr, 0xe0000);
    let rsdp = &t.blobs[0].1;
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp[..20]), 0);
    assert_eq!(sum(rsdp), 0);
    let mut prev_end = 0;
    for (addr, b) in &t.blobs {
        assert!(*addr >= prev_end, "tables overlap");
        assert!(*addr + b.len() as u64 <= 0xe0000 + 0x20000);
        prev_end = addr + b.len() as u64;
        if &b[..4] == b"RSD " || &b[..4] == b"FACS" {
            continue;
        }
        assert_eq!(
            u32_at(b, 4) as usize,
            b.len(),
            "{} length",
            String::from_utf8_lossy(&b[..4])
        );
        assert_eq!(sum(b), 0, "{} checksum", String::from_utf8_lossy(&b[..4]));
    }
    let (facs_addr, facs) = table(&t, b"FACS");
    assert_eq!(facs_addr % 64, 0);
    assert_eq!(u32_at(facs, 4), 64);
    // RSDP -> XSDT -> FADT, MADT, MCFG.
    let (xsdt_addr, xsdt) = table(&t, b"XSDT");
    assert_eq!(u64_at(rsdp, 24), xsdt_addr);
    let listed: Vec<u64> = (36..xsdt.len())
        .step_by(8)
        .map(|o| u64_at(xsdt, o))
        .collect();
    for sig in [b"FACP", b"APIC", b"MCFG"] {
        assert!(
            listed.contains(&table(&t, sig).0),
            "XSDT lists {}",
            String::from_utf8_lossy(sig)
        );
    }
}

#[test]
fn fadt_describes_pm_block_sci_and_reset() {
    let t = build(&full_config(1)).unwrap();
    let (_, f) = table(&t, b"FACP");
    assert_eq!(u64_at(f, 140), table(&t, b"DSDT").0, "X_DSDT");
    assert_eq!(u64_at(f, 132), table(&t, b"FACS").0, "X_FIRMWARE_CTRL");
    assert_eq!(u16::from_le_bytes([f[46], f[47]]), 9, "SCI_INT");
    assert_eq!(u32_at(f, 48), 0, "SMI_CMD: always in ACPI mode");
    assert_eq!(u32_at(f, 56), 0x600, "PM1a_EVT_BLK");
    assert_eq!(u32_at(f, 64), 0x604, "PM1a_CNT_BLK");
    assert_eq!(u32_at(f, 76), 0x608, "PM_TMR_BLK");
    assert_eq!((f[88], f[89], f[91]), (4, 2, 4));
    let flags = u32_at(f, 112);
    assert_eq!(flags & (1 << 20), 0, "not hardware-reduced");
    assert_eq!(flags & (1 << 4), 0, "fixed power button present");
    assert_ne!(flags & (1 << 10), 0, "reset register supported");
    assert_eq!(
        (f[116], u64_at(f, 120), f[128]),
        (1, 0x60c, pm::RESET_VALUE),
        "reset register in I/O space"
    );
    let boot = u16::from_le_bytes([f[109], f[110]]);
    assert_eq!(boot & (1 << 3), 0, "MSI allowed");
    assert_eq!(boot & (1 << 1), 0, "no i8042 unless configured");
}

#[test]
fn madt_has_every_cpu_ioapic_and_overrides() {
    let t = build(&full_config(32)).unwrap();
    let (_, m) = table(&t, b"APIC");
    assert_eq!(u32_at(m, 36), 0xfee0_0000);
    let mut o = 44;
    let (mut lapics, mut ioapics, mut isos) = (Vec::new(), 0, Vec::new());
    while o < m.len() {
        let (ty, len) = (m[o], m[o + 1] as usize);
        assert!(len >= 2 && o + len <= m.len(), "entry fits");
        match ty {
            0 => {
                assert_eq!(u32_at(m, o + 4) & 1, 1, "enabled");
                lapics.push(m[o + 3]);
            }
            1 => {
                ioapics += 1;
                assert_eq!(u32_at(m, o + 4), 0xfec0_0000);
            }
            2 => isos.push((
                m[o + 3],
                u32_at(m, o + 4),
                u16::from_le_bytes([m[o + 8], m[o + 9]]),
            )),
            _ => {}
        }
        o += len;
    }
    assert_eq!(o, m.len());
    assert_eq!(lapics, (0..32).collect::<Vec<u8>>());
    assert_eq!(ioapics, 1);
    assert_eq!(isos, vec![(0, 2, 0), (9, 9, 0xd)]);
}

#[test]
fn mcfg_matches_pci_layout() {
    let t = build(&full_config(1)).unwrap();
    let (_, m) = table(&t, b"MCFG");
    assert_eq!(m.len(), 44 + 16);
    assert_eq!(u64_at(m, 44), pci::layout::ECAM_BASE);
    assert_eq!((m[54], m[55]), (0, pci::layout::LAST_BUS));
}

#[test]
fn prt_follows_the_pci_swizzle() {
    let entries = dsdt::prt_entries(&pci_cfg());
    assert_eq!(entries.len(), 32 * 4);
    for (addr, pin, gsi) in entries {
        let slot = (addr >> 16) as u8;
        assert_eq!(addr & 0xffff, 0xffff);
        assert_eq!(gsi, pci::layout::intx_gsi(slot, pin));
    }
}

/// Decodes an AML PkgLength at `b[0..]`: (length, bytes used).
fn pkg_length(b: &[u8]) -> (usize, usize) {
    let extra = (b[0] >> 6) as usize;
    if extra == 0 {
        return ((b[0] & 0x3f) as usize, 1);
    }
    let mut len = (b[0] & 0x0f) as usize;
    for i in 0..extra {
        len |= (b[1 + i] as usize) << (4 + 8 * i);
    }
    (len, extra + 1)
}

#[test]
fn dsdt_aml_is_structurally_consistent() {
    let t = build(&full_config(2)).unwrap();
    let (_, d) = table(&t, b"DSDT");
    let body = &d[36..];
    // Name(_S5_, Package(4) {5, 5, 0, 0})
    assert_eq!(&body[..5], b"\x08_S5_");
    assert_eq!(body[5], 0x12, "PackageOp");
    let (plen, n) = pkg_length(&body[6..]);
    assert_eq!(body[6 + n], 4, "4 elements");
    assert_eq!(&body[7 + n..9 + n], &[0x0a, pm::S5_SLP_TYP], "SLP_TYPa");
    // Scope(\_SB) spans exactly the rest of the table.
    let scope = &body[6 + plen..];
    assert_eq!(scope[0], 0x10, "ScopeOp");
    let (slen, _) = pkg_length(&scope[1..]);
    assert_eq!(1 + slen, scope.len());
    let has = |needle: &[u8]| d.windows(needle.len()).any(|w| w == needle);
    for needle in [
        &b"PCI0"[..],
        b"_PRT",
        b"_CRS",
        b"COM1",
        b"MRES",
        b"VR00",
        b"LNRO0005",
    ] {
        assert!(has(needle), "{}", String::from_utf8_lossy(needle));
    }
    // PNP0A08 as an EISA ID: 0x0C 0x41 0xD0 0x0A 0x08 (DWordConst prefix 0x0C).
    assert!(has(&[0x0c, 0x41, 0xd0, 0x0a, 0x08]));
}

#[test]
fn iasl_disassembles_every_table() {
    let Ok(out) = std::process::Command::new("iasl").arg("-v").output() else {
        eprintln!("iasl not installed (apt-get install acpica-tools): skipped");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let t = build(&full_config(2)).unwrap();
    for (_, b) in t.blobs.iter().skip(1) {
        let name = String::from_utf8_lossy(&b[..4]).to_lowercase();
        let path = dir.path().join(format!("{name}.dat"));
        std::fs::write(&path, b).unwrap();
        let r = std::process::Command::new("iasl")
            .current_dir(dir.path())
            .arg("-d")
            .arg(&path)
            .output()
            .unwrap();
        let log =
            String::from_utf8_lossy(&r.stdout).to_string() + &String::from_utf8_lossy(&r.stderr);
        assert!(r.status.success(), "iasl -d {name}: {log}");
        assert!(!log.contains("Error"), "iasl -d {name}: {log}");
        let dsl = std::fs::read_to_string(dir.path().join(format!("{name}.dsl"))).unwrap();
        if name == "dsdt" {
            for s in ["PNP0A08", "_PRT", "_S5_", "PNP0501", "LNRO0005", "PNP0C02"] {
                assert!(dsl.contains(s), "{s} in disassembly");
            }
        }
        assert!(!dsl.contains("Invalid"), "{name}: {dsl}");
    }
}

#[test]
fn bad_configs_are_errors() {
    assert_eq!(build(&AcpiConfig::new(0)), Err(AcpiError::BadCpuCount(0)));
    assert_eq!(
        build(&AcpiConfig::new(256)),
        Err(AcpiError::BadCpuCount(256))
    );
    let mut c = full_config(2);
    c.tables_size = 0x100;
    assert!(matches!(build(&c), Err(AcpiError::NoRoom { .. })));
    let mut c = full_config(2);
    c.virtio_mmio[0].base = 1 << 33;
    assert_eq!(build(&c), Err(AcpiError::Not32Bit("virtio-mmio")));
}

#[derive(Default)]
struct Sci(AtomicBool);
impl IrqLine for Sci {
    fn set_level(&self, level: bool) {
        self.0.store(level, Ordering::SeqCst);
    }
}

fn pm_device() -> (PmDevice, Arc<Sci>, Arc<Mutex<Vec<PowerEvent>>>) {
    let sci = Arc::new(Sci::default());
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    let dev = PmDevice::new(sci.clone(), Box::new(move |ev| e.lock().unwrap().push(ev)));
    (dev, sci, events)
}

fn r16(d: &mut PmDevice, o: u64) -> u16 {
    let mut b = [0u8; 2];
    d.read(o, &mut b);
    u16::from_le_bytes(b)
}

#[test]
fn poweroff_and_reset_are_reported() {
    let (mut d, _, ev) = pm_device();
    assert_eq!(r16(&mut d, 4) & 1, 1, "SCI_EN");
    // ACPICA writes SLP_TYP first, then SLP_TYP | SLP_EN.
    let typ = u16::from(pm::S5_SLP_TYP) << 10;
    d.write(4, &(typ | 1).to_le_bytes());
    assert!(ev.lock().unwrap().is_empty());
    d.write(4, &(typ | 1 | (1 << 13)).to_le_bytes());
    assert_eq!(*ev.lock().unwrap(), vec![PowerEvent::PowerOff]);
    assert_eq!(r16(&mut d, 4) & (1 << 13), 0, "SLP_EN reads as zero");
    d.write(4, &((3u16 << 10) | (1 << 13)).to_le_bytes()); // S3: not supported
    d.write(0xc, &[0x01]);
    assert_eq!(ev.lock().unwrap().len(), 1);
    d.write(0xc, &[pm::RESET_VALUE]);
    assert_eq!(
        *ev.lock().unwrap(),
        vec![PowerEvent::PowerOff, PowerEvent::Reset]
    );
}

#[test]
fn power_button_raises_sci_when_enabled() {
    let (mut d, sci, _) = pm_device();
    d.press_power_button();
    assert!(!sci.0.load(Ordering::SeqCst), "not enabled");
    assert_eq!(r16(&mut d, 0), 1 << 8);
    d.write(2, &(1u16 << 8).to_le_bytes());
    assert!(sci.0.load(Ordering::SeqCst));
    d.write(0, &(1u16 << 8).to_le_bytes());
    assert!(
        !sci.0.load(Ordering::SeqCst),
        "write-one-to-clear lowers the SCI"
    );
    assert_eq!(r16(&mut d, 0), 0);
}

#[test]
fn pm_timer_advances_and_state_round_trips() {
    let (mut d, _, _) = pm_device();
    let mut a = [0u8; 4];
    d.read(8, &mut a);
    std::thread::sleep(std::time::Duration::from_millis(2));
    let mut b = [0u8; 4];
    d.read(8, &mut b);
    assert!(u32::from_le_bytes(b).wrapping_sub(u32::from_le_bytes(a)) > 0);
    d.write(2, &(1u16 << 8).to_le_bytes());
    d.press_power_button();
    let saved = d.save();
    let json = serde_json::to_string(&saved).unwrap();
    let sci = Arc::new(Sci::default());
    let args = PmArgs {
        sci: sci.clone(),
        on_event: Box::new(|_| {}),
    };
    let s: PmState = serde_json::from_str(&json).unwrap();
    let e = PmDevice::restore(args, &s).unwrap();
    assert!(
        sci.0.load(Ordering::SeqCst),
        "pending power button re-raises the SCI"
    );
    let again = e.save();
    assert_eq!(PmState { timer: 0, ..again }, PmState { timer: 0, ..saved });
    assert!(
        again.timer.wrapping_sub(s.timer) < 1 << 30,
        "timer continues from the saved value"
    );
    let bad = PmState {
        pm1_cnt: 0,
        ..saved
    };
    let args = PmArgs {
        sci,
        on_event: Box::new(|_| {}),
    };
    let err = PmDevice::restore(args, &bad).err().expect("refused");
    assert_eq!(err.device, "acpi-pm");
}
