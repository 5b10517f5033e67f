//! `hako edit NAME`: the definition goes through $EDITOR and is checked before it
//! replaces the old one (no VM runs).

mod daemon_util;

use std::process::{Command, Stdio};

use daemon_util::{hako_bin, tiny_definition, Daemon};

/// `hako edit NAME` with `editor` as $EDITOR; (success, stdout, stderr).
fn edit(d: &Daemon, name: &str, editor: &str) -> (bool, String, String) {
    let o = Command::new(hako_bin())
        .args(["edit", name])
        .env("HAKO_SOCKET", &d.sock)
        .env("EDITOR", editor)
        .env_remove("VISUAL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn memory(d: &Daemon) -> u64 {
    let r = d.api("GET", "/v1/vms/e", None);
    r.json().unwrap()["definition"]["config"]["memory"]
        .as_u64()
        .unwrap()
}

#[test]
fn edit_checks_before_it_saves() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(tmp.path());
    let r = d.api("POST", "/v1/vms", Some(&tiny_definition("e")));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(memory(&d), 64 << 20);

    let (ok, out, _) = edit(&d, "e", "true");
    assert!(ok && out.contains("no change"), "{out}");

    // The memory, in bytes, becomes 96 MiB.
    let (ok, out, err) = edit(&d, "e", "sed -i s/67108864/100663296/");
    assert!(ok, "{err}");
    assert!(out.contains("saved"), "{out}");
    assert_eq!(memory(&d), 96 << 20);

    // Broken JSON, and a renamed VM, are refused; the definition stays.
    let (ok, _, err) = edit(&d, "e", "sed -i s/{/[/");
    assert!(!ok && err.contains("unchanged"), "{err}");
    let rename = tmp.path().join("rename.sh");
    std::fs::write(
        &rename,
        "#!/bin/sh\nsed -i 's/\"name\": \"e\"/\"name\": \"other\"/' \"$1\"\n",
    )
    .unwrap();
    let (ok, _, err) = edit(&d, "e", &format!("sh {}", rename.display()));
    assert!(!ok && err.contains("renamed"), "{err}");
    assert_eq!(memory(&d), 96 << 20);
    let (ok, _, err) = edit(&d, "e", "false");
    assert!(!ok && err.contains("editor"), "{err}");
    let (ok, _, err) = edit(&d, "nope", "true");
    assert!(!ok && err.contains("no VM named"), "{err}");
}
