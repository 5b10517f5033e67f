//! Confined threads of this test process: the Landlock rules keep them to the
//! allowed paths, and vCPU threads cannot open files at all.

use std::fs;
use std::io::ErrorKind;

use sandbox::{FileRules, ThreadKind};

#[test]
fn confined_threads_open_only_what_they_may() {
    let allowed = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let a = allowed.path().join("a");
    let b = other.path().join("b");
    fs::write(&a, "x").unwrap();
    fs::write(&b, "y").unwrap();
    sandbox::enable().unwrap();
    let mut rules = FileRules::new();
    rules.read_write(allowed.path());
    sandbox::prepare_files(&rules).unwrap();

    // Only the threads that enter are confined: this one is not.
    assert_eq!(fs::read(&b).unwrap(), b"y");

    let (a2, b2) = (a.clone(), b.clone());
    let io = std::thread::spawn(move || {
        sandbox::enter(ThreadKind::Io);
        let new = a2.with_file_name("new");
        (
            fs::read(&a2).map_err(|e| e.kind()),
            fs::read(&b2).map_err(|e| e.kind()),
            fs::write(&new, "z").map_err(|e| e.kind()),
            fs::write(b2.with_file_name("new"), "z").map_err(|e| e.kind()),
        )
    })
    .join()
    .unwrap();
    assert_eq!(io.0, Ok(b"x".to_vec()));
    assert_eq!(io.2, Ok(()));
    if sandbox::files_confined() {
        assert_eq!(io.1, Err(ErrorKind::PermissionDenied));
        assert_eq!(io.3, Err(ErrorKind::PermissionDenied));
        assert!(!other.path().join("new").exists());
    }

    let vcpu = std::thread::spawn(move || {
        sandbox::enter(ThreadKind::Vcpu);
        fs::read(&a).map_err(|e| e.kind())
    })
    .join()
    .unwrap();
    assert_eq!(
        vcpu,
        Err(ErrorKind::PermissionDenied),
        "a vCPU thread opened a file"
    );
}
