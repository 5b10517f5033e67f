//! `hako img import` end to end: an OVA built here (qemu-img's streamOptimized VMDK of
//! known data, an OVF descriptor asking for 2 CPUs and 256 MiB, a SHA256 manifest)
//! imports into qcow2 + vm.json, and `hako run --config vm.json` boots it on emu with
//! the Debian guest, which sees the disk's data and 2 CPUs. Bad appliances (manifest
//! mismatch, missing disk, a `..` member, an OVF that is not XML) are refused with one
//! clear line and leave nothing behind. Skipped where qemu-img is not installed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{base64, default_guest, run_watchdog};

const DISK_SIZE: usize = 4 << 20;

fn have_qemu() -> bool {
    let ok = Command::new("qemu-img").arg("--version").output().is_ok();
    if !ok {
        eprintln!("SKIP: qemu-img not found; install qemu-utils");
    }
    ok
}

/// A digest of `data` by a coreutils tool (`md5sum`, `sha256sum`).
fn digest(tool: &str, data: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new(tool)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(data).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Random-ish disk data with zero stretches (holes in the VMDK).
fn disk_data() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..DISK_SIZE)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i >> 16) % 4 == 2 {
                0
            } else {
                x as u8
            }
        })
        .collect()
}

fn descriptor(disk_file: &str, file_size: u64) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
    xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:href="{disk_file}" ovf:id="file1" ovf:size="{file_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="4" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1"
        ovf:fileRef="file1"
        ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="test-appliance">
    <Info>A virtual machine</Info>
    <Name>test-appliance</Name>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>256MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>256</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard Disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// The files of an appliance: (member name, contents), in archive order.
struct Appliance {
    data: Vec<u8>,
    members: Vec<(String, Vec<u8>)>,
}

/// Builds the appliance's files in `dir`: disk1.vmdk from [`disk_data`], test.ovf and
/// test.mf (SHA256 of both).
fn appliance(dir: &Path) -> Appliance {
    let data = disk_data();
    let raw = dir.join("src.raw");
    std::fs::write(&raw, &data).unwrap();
    let vmdk = dir.join("disk1.vmdk");
    let st = Command::new("qemu-img")
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
        ])
        .arg(&raw)
        .arg(&vmdk)
        .status()
        .unwrap();
    assert!(st.success(), "qemu-img convert -O vmdk");
    let vmdk = std::fs::read(&vmdk).unwrap();
    let ovf = descriptor("disk1.vmdk", vmdk.len() as u64).into_bytes();
    let mf = format!(
        "SHA256(test.ovf)= {}\nSHA256(disk1.vmdk)= {}\n",
        digest("sha256sum", &ovf),
        digest("sha256sum", &vmdk)
    )
    .into_bytes();
    Appliance {
        data,
        members: vec![
            ("test.ovf".into(), ovf),
            ("test.mf".into(), mf),
            ("disk1.vmdk".into(), vmdk),
        ],
    }
}

/// Tars `members` into `path` (names written raw, so `..` can be tested).
fn tar(path: &Path, members: &[(String, Vec<u8>)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in members {
        let mut h = tar::Header::new_ustar();
        let n = name.as_bytes();
        h.as_old_mut().name[..n.len()].copy_from_slice(n);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

fn import(appliance: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hako"))
        .args(["img", "import"])
        .arg(appliance)
        .args(extra)
        .args(["--accel", "emu"])
        .output()
        .expect("run hako")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn vm_json(dir: &Path) -> serde_json::Value {
    let s = std::fs::read_to_string(dir.join("vm.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

#[test]
fn ova_imports_to_qcow2_and_boots_with_its_cpus_and_disk_on_emu() {
    if !have_qemu() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let app = appliance(tmp.path());
    let ova = tmp.path().join("test.ova");
    tar(&ova, &app.members);
    let (kernel, initrd) = default_guest();
    let script = format!(
        "echo \"disk=$(head -c {DISK_SIZE} /dev/vda | md5sum)\"
echo \"cpus=$(grep -c ^processor /proc/cpuinfo)\"
poweroff -f
"
    );
    let cmdline = format!("console=ttyS0 quiet hako.cmd={}", base64(script.as_bytes()));
    let o = import(
        &ova,
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--cmdline",
            &cmdline,
        ],
    );
    let out = text(&o);
    assert!(o.status.success(), "import: {out}");
    assert!(out.contains("firmware efi"), "{out}");
    assert!(
        out.contains("only direct kernel boot is supported"),
        "{out}"
    );
    // Default directory: named after the appliance, next to it.
    let dir: PathBuf = tmp.path().join("test");
    let v = vm_json(&dir);
    assert_eq!(v["cpus"], 2, "{v}");
    assert_eq!(v["memory"], 256u64 << 20, "{v}");
    assert_eq!(v["disks"][0]["path"], "disk1.qcow2", "{v}");
    assert_eq!(v["disks"][0]["format"], "qcow2", "{v}");
    assert_eq!(v["kernel"], kernel.to_str().unwrap(), "{v}");
    assert_eq!(v["cmdline"], cmdline.as_str(), "{v}");
    // Only the qcow2, the descriptor and vm.json are left: no unpacked VMDK, no staging.
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["disk1.qcow2", "test.ovf", "vm.json"]);
    let qcow = dir.join("disk1.qcow2");
    let st = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(tmp.path().join("src.raw"))
        .arg(&qcow)
        .output()
        .unwrap();
    assert!(st.status.success(), "qemu-img compare: {}", text(&st));
    let st = Command::new("qemu-img")
        .arg("check")
        .arg(&qcow)
        .output()
        .unwrap();
    assert!(st.status.success(), "qemu-img check: {}", text(&st));

    // Run from elsewhere: the disk path is relative to vm.json's directory.
    let mut cmd = common::hako();
    cmd.current_dir("/")
        .args(["run", "--accel", "emu", "--config"])
        .arg(dir.join("vm.json"));
    let r = run_watchdog(&mut cmd, Duration::from_secs(400));
    assert!(
        r.success,
        "timed out: {}\nstdout:\n{}\nstderr:\n{}",
        r.timed_out, r.stdout, r.stderr
    );
    let want = digest("md5sum", &app.data);
    assert!(
        r.stdout.contains(&format!("disk={want}")),
        "want {want}\n{}",
        r.stdout
    );
    assert!(r.stdout.contains("cpus=2"), "{}", r.stdout);

    // A second import into the same directory refuses to replace anything.
    let o = import(&ova, &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("already exists"), "{}", text(&o));
}

#[test]
fn ovf_with_files_beside_it_imports_without_a_kernel() {
    if !have_qemu() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let app = appliance(tmp.path());
    for (name, data) in &app.members {
        std::fs::write(tmp.path().join(name), data).unwrap();
    }
    let to = tmp.path().join("out/vm");
    let o = import(
        &tmp.path().join("test.ovf"),
        &["--to", to.to_str().unwrap()],
    );
    let out = text(&o);
    assert!(o.status.success(), "import: {out}");
    assert!(out.contains("vm.json has no kernel"), "{out}");
    assert!(out.contains("hako run --config"), "{out}");
    let v = vm_json(&to);
    assert_eq!(v["kernel"], "", "{v}");
    assert_eq!(v["cpus"], 2, "{v}");
    assert_eq!(v["accel"], "emu", "{v}");
    let st = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(tmp.path().join("src.raw"))
        .arg(to.join("disk1.qcow2"))
        .output()
        .unwrap();
    assert!(st.status.success(), "qemu-img compare: {}", text(&st));

    // A descriptor naming a disk file that is not beside it.
    let ovf = descriptor("nope.vmdk", 1);
    std::fs::write(tmp.path().join("missing.ovf"), ovf).unwrap();
    let o = import(&tmp.path().join("missing.ovf"), &[]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success());
    assert!(
        err.contains("references disk file 'nope.vmdk', which is not in"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!tmp.path().join("missing").exists());
}

/// Imports a bad OVA and checks it fails with one line containing `want`, writing
/// nothing.
fn refused(members: &[(String, Vec<u8>)], want: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let ova = tmp.path().join("bad.ova");
    tar(&ova, members);
    let o = import(&ova, &[]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(err.contains(want), "want '{want}' in: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("hako: error: "), "{err}");
    assert!(
        !tmp.path().join("bad").exists(),
        "the import left a directory behind"
    );
}

#[test]
fn bad_appliances_are_refused_and_leave_nothing_behind() {
    if !have_qemu() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let app = appliance(tmp.path());
    let m = &app.members;

    // A manifest whose disk digest is wrong.
    let mut bad = m.clone();
    let mf = String::from_utf8(bad[1].1.clone()).unwrap();
    let good = digest("sha256sum", &bad[2].1);
    let wrong = format!(
        "{}{}",
        if good.starts_with('0') { '1' } else { '0' },
        &good[1..]
    );
    bad[1].1 = mf.replace(&good, &wrong).into_bytes();
    refused(&bad, "'disk1.vmdk' does not match the manifest");

    // The disk file is missing.
    refused(
        &m[..2],
        "references disk file 'disk1.vmdk', which the archive does not hold",
    );

    // A member named with `..`.
    let mut bad = m.clone();
    bad.insert(2, ("../evil".into(), b"x".to_vec()));
    refused(&bad, "'../evil' has an absolute path or '..'");

    // An absolute member name.
    let mut bad = m.clone();
    bad.push(("/tmp/evil".into(), b"x".to_vec()));
    refused(&bad, "'/tmp/evil' has an absolute path or '..'");

    // A descriptor that is not XML.
    let mut bad = m.clone();
    bad[0].1 = b"this is not { xml".to_vec();
    bad.remove(1);
    refused(&bad, "the OVF descriptor 'test.ovf' is not valid XML");

    // XML that is not OVF.
    let mut bad = m.clone();
    bad[0].1 = b"<html><body/></html>".to_vec();
    bad.remove(1);
    refused(&bad, "is not an OVF descriptor");
}
