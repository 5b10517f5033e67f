//! Every guest builds with the host's gcc into an ELF that both boot paths can enter.

use test_guests::{build, build_in, elf, GUESTS};

#[test]
fn every_guest_builds_with_both_entry_points() {
    for name in GUESTS {
        let path = build(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let bytes = std::fs::read(&path).unwrap();
        let image = elf::parse(&bytes).unwrap();
        assert_eq!(
            image.entry, 0x10_0000,
            "{name}: 64-bit entry at the start of the image"
        );
        let pvh = image.pvh_entry.expect("PVH note") as u64;
        let seg = &image.segments[0];
        assert_eq!(seg.paddr, 0x10_0000);
        assert!(pvh > seg.paddr && pvh < seg.paddr + seg.data.len() as u64);
        assert!(seg.memsz >= seg.data.len() as u64);
    }
}

#[test]
fn rebuilds_only_when_stale() {
    let dir = tempfile::tempdir().unwrap();
    let first = build_in("triple", dir.path()).unwrap();
    let t1 = std::fs::metadata(&first).unwrap().modified().unwrap();
    let again = build_in("triple", dir.path()).unwrap();
    assert_eq!(std::fs::metadata(&again).unwrap().modified().unwrap(), t1);
}

#[test]
fn unknown_and_bad_names_are_errors() {
    assert_eq!(
        build("no-such-guest").unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    assert_eq!(
        build("../etc/passwd").unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
}

#[test]
fn parse_rejects_garbage() {
    assert!(elf::parse(b"not an elf").is_err());
    let mut bytes = std::fs::read(build("hello").unwrap()).unwrap();
    bytes.truncate(100);
    assert!(elf::parse(&bytes).is_err());
}
