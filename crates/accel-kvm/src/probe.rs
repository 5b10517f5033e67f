//! What this host offers for virtualization: the report behind `hako host`, and the
//! choice `--accel auto` makes from it.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::caps::CAPS;
use crate::vm::{open_kvm, KVM_API_VERSION};

/// An accelerator `hako` can run a guest on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware-assisted virtualization through /dev/kvm.
    Kvm,
    /// Hakobune's own x86-64 emulator.
    Emu,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Emu => "emu",
        })
    }
}

/// The host CPU as CPUID describes it.
#[derive(Debug, Clone, Serialize)]
pub struct CpuInfo {
    /// CPUID leaf 0 vendor string ("GenuineIntel", "AuthenticAMD", ...).
    pub vendor: String,
    /// CPUID brand string (leaves 0x80000002..4).
    pub model_name: String,
    pub family: u32,
    pub model: u32,
    pub stepping: u32,
    /// CPUID.1:ECX[31]: this host is itself a virtual machine.
    pub hypervisor: bool,
}

/// Hardware virtualization features /proc/cpuinfo lists.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VirtFlags {
    pub vmx: bool,
    pub svm: bool,
    pub ept: bool,
    pub npt: bool,
}

/// One KVM capability and whether this host has it.
#[derive(Debug, Clone, Serialize)]
pub struct CapStatus {
    pub name: &'static str,
    pub required: bool,
    pub present: bool,
}

/// The state of /dev/kvm.
#[derive(Debug, Clone, Serialize)]
pub struct KvmStatus {
    pub device_exists: bool,
    /// Opened, speaks the expected API version and has every required capability.
    pub usable: bool,
    /// Why it is not usable.
    pub error: Option<String>,
    pub api_version: Option<i32>,
    pub max_vcpus: Option<usize>,
    pub capabilities: Vec<CapStatus>,
    /// Loaded KVM vendor modules: any of `kvm_intel`, `kvm_amd`, `kvm_pvm`.
    pub modules: Vec<String>,
    /// The `nested` parameter of kvm_intel/kvm_amd, where the module shows it.
    pub nested: Option<String>,
    /// /dev/kvm is served by PVM (`kvm_pvm`): guest user mode runs natively, but the
    /// supervisor code of a stock (non-PVM) kernel is emulated by the host kernel.
    pub pvm: bool,
    /// What points to the backend: present modules and their parameters, and CPU flags.
    pub backend_evidence: Vec<String>,
}

/// Memory features that matter for running many or large guests.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryFeatures {
    /// /sys/kernel/mm/ksm exists.
    pub ksm_available: bool,
    /// The value of /sys/kernel/mm/ksm/run (0 stopped, 1 running, 2 unmerging).
    pub ksm_run: Option<u32>,
    /// The selected transparent hugepage mode ("always", "madvise", "never").
    pub transparent_hugepages: Option<String>,
    /// HugePages_Total from /proc/meminfo.
    pub hugepages_total: Option<u64>,
    /// Hugepagesize from /proc/meminfo, in KiB.
    pub hugepage_size_kib: Option<u64>,
}

/// Everything `hako host` reports.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub cpu: CpuInfo,
    pub virt_flags: VirtFlags,
    pub kvm: KvmStatus,
    pub memory: MemoryFeatures,
    /// What `--accel auto` picks.
    pub recommended: Accel,
    pub reason: String,
}

/// Gathers the report. Never fails: what cannot be read is reported as unknown.
pub fn probe() -> HostReport {
    let sys = Path::new("/");
    let cpu = cpu_info();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let virt_flags = virt_flags(&cpuinfo);
    let mut kvm = kvm_status(sys);
    kvm.backend_evidence = backend_evidence(sys, &kvm, &virt_flags);
    let memory = memory_features(sys);
    let (recommended, reason) = recommend(&kvm);
    HostReport {
        cpu,
        virt_flags,
        kvm,
        memory,
        recommended,
        reason,
    }
}

impl HostReport {
    /// The accelerator `--accel auto` picks, and why.
    pub fn recommended_accel(&self) -> (Accel, String) {
        (self.recommended, self.reason.clone())
    }
}

fn recommend(kvm: &KvmStatus) -> (Accel, String) {
    if !kvm.usable {
        let why = kvm.error.as_deref().unwrap_or("unknown error");
        return (Accel::Emu, format!("/dev/kvm is not usable ({why})"));
    }
    if kvm.pvm {
        return (
            Accel::Emu,
            "/dev/kvm is served by PVM (kvm_pvm): only PVM-enabled guest kernels run at \
             native speed there; a stock kernel's supervisor code is emulated by the host \
             kernel instruction by instruction (about 1 us each), so a stock kernel does \
             not get through early boot in reasonable time: stock kernels run on emu \
             (use --accel kvm explicitly for PVM-enabled kernels or tiny test guests)"
                .into(),
        );
    }
    (
        Accel::Kvm,
        "/dev/kvm is usable with hardware virtualization: guests run at native speed".into(),
    )
}

#[allow(unused_unsafe)] // `__cpuid` is an unsafe fn before Rust 1.87 and safe after.
fn cpuid(leaf: u32) -> [u32; 4] {
    // SAFETY: CPUID exists on every x86-64 CPU and only reads identification registers.
    let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, 0) };
    [r.eax, r.ebx, r.ecx, r.edx]
}

fn regs_to_string(regs: &[u32]) -> String {
    let bytes: Vec<u8> = regs.iter().flat_map(|r| r.to_le_bytes()).collect();
    String::from_utf8_lossy(&bytes)
        .trim_matches(char::from(0))
        .trim()
        .to_string()
}

fn cpu_info() -> CpuInfo {
    let l0 = cpuid(0);
    let vendor = regs_to_string(&[l0[1], l0[3], l0[2]]);
    let l1 = cpuid(1);
    let base_family = (l1[0] >> 8) & 0xf;
    let family = if base_family == 0xf {
        base_family + ((l1[0] >> 20) & 0xff)
    } else {
        base_family
    };
    let model = if base_family == 0x6 || base_family == 0xf {
        ((l1[0] >> 4) & 0xf) | (((l1[0] >> 16) & 0xf) << 4)
    } else {
        (l1[0] >> 4) & 0xf
    };
    let max_ext = cpuid(0x8000_0000)[0];
    let model_name = if max_ext >= 0x8000_0004 {
        let regs: Vec<u32> = (0x8000_0002..=0x8000_0004u32).flat_map(cpuid).collect();
        regs_to_string(&regs)
    } else {
        String::new()
    };
    CpuInfo {
        vendor,
        model_name,
        family,
        model,
        stepping: l1[0] & 0xf,
        hypervisor: l1[2] & (1 << 31) != 0,
    }
}

/// Reads the virtualization flags out of /proc/cpuinfo text: the `flags` line and,
/// on newer kernels, the `vmx flags` line where EPT is listed.
pub fn virt_flags(cpuinfo: &str) -> VirtFlags {
    let mut f = VirtFlags::default();
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        if key != "flags" && key != "vmx flags" {
            continue;
        }
        for flag in value.split_whitespace() {
            match flag {
                "vmx" => f.vmx = true,
                "svm" => f.svm = true,
                "ept" => f.ept = true,
                "npt" => f.npt = true,
                _ => {}
            }
        }
    }
    f
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn kvm_status(root: &Path) -> KvmStatus {
    let module_dir = root.join("sys/module");
    let modules: Vec<String> = ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .iter()
        .filter(|m| module_dir.join(m).exists())
        .map(|m| m.to_string())
        .collect();
    let nested = ["kvm_intel", "kvm_amd"]
        .iter()
        .find_map(|m| read_trimmed(&module_dir.join(m).join("parameters/nested")));
    let pvm = modules.iter().any(|m| m == "kvm_pvm");
    let mut status = KvmStatus {
        device_exists: root.join("dev/kvm").exists(),
        usable: false,
        error: None,
        api_version: None,
        max_vcpus: None,
        capabilities: Vec::new(),
        modules,
        nested,
        pvm,
        backend_evidence: Vec::new(),
    };
    let kvm = match open_kvm() {
        Ok(kvm) => kvm,
        Err(e) => {
            status.error = Some(e.to_string());
            return status;
        }
    };
    let version = kvm.get_api_version();
    status.api_version = Some(version);
    status.max_vcpus = Some(kvm.get_max_vcpus());
    status.capabilities = CAPS
        .iter()
        .map(|c| CapStatus {
            name: c.name,
            required: c.required,
            present: kvm.check_extension(c.cap),
        })
        .collect();
    let missing: Vec<&str> = status
        .capabilities
        .iter()
        .filter(|c| c.required && !c.present)
        .map(|c| c.name)
        .collect();
    if version != KVM_API_VERSION {
        status.error = Some(format!(
            "KVM API version {version}, this VMM needs {KVM_API_VERSION}"
        ));
    } else if !missing.is_empty() {
        status.error = Some(format!("missing capabilities: {}", missing.join(", ")));
    } else {
        status.usable = true;
    }
    status
}

/// Why we think /dev/kvm is served by what it is served by.
fn backend_evidence(root: &Path, kvm: &KvmStatus, flags: &VirtFlags) -> Vec<String> {
    let mut ev = Vec::new();
    for m in &kvm.modules {
        let params = root.join("sys/module").join(m).join("parameters");
        let mut shown = Vec::new();
        if m == "kvm_pvm" {
            for p in ["pvm_native", "no_x2apic", "force"] {
                if let Some(v) = read_trimmed(&params.join(p)) {
                    shown.push(format!("{p}={v}"));
                }
            }
        }
        if shown.is_empty() {
            ev.push(format!("/sys/module/{m} present"));
        } else {
            ev.push(format!("/sys/module/{m} present ({})", shown.join(", ")));
        }
    }
    if !flags.vmx && !flags.svm {
        ev.push(if kvm.usable {
            "the CPU shows neither vmx nor svm, yet /dev/kvm works: a software backend".into()
        } else {
            "the CPU shows neither vmx nor svm".into()
        });
    }
    ev
}

/// Reads a `Key: value [kB]` number out of /proc/meminfo text.
pub fn meminfo_value(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.split_whitespace().next()?.parse().ok())?
    })
}

/// The bracketed choice in a sysfs selection like `always [madvise] never`.
pub fn selected_mode(s: &str) -> Option<String> {
    let start = s.find('[')?;
    let end = s[start..].find(']')? + start;
    Some(s[start + 1..end].to_string())
}

fn memory_features(root: &Path) -> MemoryFeatures {
    let ksm = root.join("sys/kernel/mm/ksm");
    let meminfo = std::fs::read_to_string(root.join("proc/meminfo")).unwrap_or_default();
    MemoryFeatures {
        ksm_available: ksm.exists(),
        ksm_run: read_trimmed(&ksm.join("run")).and_then(|s| s.parse().ok()),
        transparent_hugepages: read_trimmed(
            &root.join("sys/kernel/mm/transparent_hugepage/enabled"),
        )
        .and_then(|s| selected_mode(&s)),
        hugepages_total: meminfo_value(&meminfo, "HugePages_Total"),
        hugepage_size_kib: meminfo_value(&meminfo, "Hugepagesize"),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for HostReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.cpu;
        writeln!(f, "CPU:            {} ({})", c.model_name, c.vendor)?;
        writeln!(
            f,
            "                family {:#x} model {:#x} stepping {}{}",
            c.family,
            c.model,
            c.stepping,
            if c.hypervisor {
                ", running under a hypervisor"
            } else {
                ""
            }
        )?;
        let v = &self.virt_flags;
        writeln!(
            f,
            "Virtualization: vmx {}, svm {}, ept {}, npt {}",
            yes_no(v.vmx),
            yes_no(v.svm),
            yes_no(v.ept),
            yes_no(v.npt)
        )?;
        let k = &self.kvm;
        let modules = if k.modules.is_empty() {
            "none".to_string()
        } else {
            k.modules.join(", ")
        };
        writeln!(
            f,
            "/dev/kvm:       {}",
            if k.device_exists {
                "present"
            } else {
                "missing"
            }
        )?;
        match &k.error {
            None => writeln!(f, "                usable")?,
            Some(e) => writeln!(f, "                not usable: {e}")?,
        }
        if let Some(v) = k.api_version {
            writeln!(
                f,
                "KVM API:        version {v}, up to {} vCPUs",
                k.max_vcpus.unwrap_or(0)
            )?;
        }
        writeln!(f, "KVM modules:    {modules}")?;
        writeln!(
            f,
            "KVM backend:    {}",
            if k.pvm {
                "PVM (kvm_pvm): only PVM-enabled guest kernels run at native speed; \
                 a stock kernel's supervisor code is emulated by the host kernel"
            } else if k.modules.iter().any(|m| m == "kvm_intel" || m == "kvm_amd") {
                "hardware (VT-x / AMD-V)"
            } else {
                "unknown"
            }
        )?;
        for e in &k.backend_evidence {
            writeln!(f, "                {e}")?;
        }
        if let Some(n) = &k.nested {
            writeln!(f, "Nested virt:    {n}")?;
        }
        for cap in &k.capabilities {
            writeln!(
                f,
                "  {:<32} {:<3} {}",
                cap.name,
                yes_no(cap.present),
                if cap.required { "(required)" } else { "" }
            )?;
        }
        let m = &self.memory;
        writeln!(
            f,
            "KSM:            {}",
            match (m.ksm_available, m.ksm_run) {
                (false, _) => "not available".to_string(),
                (true, Some(1)) => "available, running".to_string(),
                (true, _) => "available, not running".to_string(),
            }
        )?;
        writeln!(
            f,
            "Hugepages:      transparent: {}; static: {} x {} KiB",
            m.transparent_hugepages.as_deref().unwrap_or("unavailable"),
            m.hugepages_total.unwrap_or(0),
            m.hugepage_size_kib.unwrap_or(0)
        )?;
        write!(f, "--accel auto:   {}: {}", self.recommended, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_from_cpuinfo() {
        let intel = "processor\t: 0\nflags\t\t: fpu vme vmx sse2\nvmx flags\t: vnmi ept vpid\n\
                     processor\t: 1\nflags\t\t: fpu vme vmx sse2\nvmx flags\t: vnmi ept vpid\n";
        let f = virt_flags(intel);
        assert!(f.vmx && f.ept && !f.svm && !f.npt);
        let amd = "flags\t\t: fpu svm npt lm\n";
        let f = virt_flags(amd);
        assert!(f.svm && f.npt && !f.vmx && !f.ept);
        let f = virt_flags("flags\t\t: fpu hypervisor lm\n");
        assert!(!f.vmx && !f.svm && !f.ept && !f.npt);
    }

    #[test]
    fn meminfo_and_modes() {
        let meminfo =
            "MemTotal:       24000000 kB\nHugePages_Total:       4\nHugepagesize:       2048 kB\n";
        assert_eq!(meminfo_value(meminfo, "HugePages_Total"), Some(4));
        assert_eq!(meminfo_value(meminfo, "Hugepagesize"), Some(2048));
        assert_eq!(meminfo_value(meminfo, "HugePages_Free"), None);
        assert_eq!(
            selected_mode("always [madvise] never").as_deref(),
            Some("madvise")
        );
        assert_eq!(selected_mode("garbage"), None);
    }

    fn status(usable: bool, pvm: bool) -> KvmStatus {
        KvmStatus {
            device_exists: usable,
            usable,
            error: (!usable).then(|| "missing".to_string()),
            api_version: None,
            max_vcpus: None,
            capabilities: Vec::new(),
            modules: Vec::new(),
            nested: None,
            pvm,
            backend_evidence: Vec::new(),
        }
    }

    #[test]
    fn recommendation() {
        assert_eq!(recommend(&status(true, false)).0, Accel::Kvm);
        let (a, why) = recommend(&status(true, true));
        assert_eq!(a, Accel::Emu);
        assert!(why.contains("PVM"));
        let (a, why) = recommend(&status(false, false));
        assert_eq!(a, Accel::Emu);
        assert!(why.contains("missing"));
    }

    #[test]
    fn probe_matches_this_host() {
        let r = probe();
        assert_eq!(r.kvm.pvm, Path::new("/sys/module/kvm_pvm").exists());
        assert_eq!(r.kvm.device_exists, Path::new("/dev/kvm").exists());
        if r.kvm.pvm || !r.kvm.usable {
            assert_eq!(r.recommended, Accel::Emu);
        }
        assert!(!r.cpu.vendor.is_empty());
        let text = r.to_string();
        assert!(text.contains("--accel auto"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["kvm"]["pvm"], serde_json::Value::Bool(r.kvm.pvm));
        assert!(json["recommended"] == "kvm" || json["recommended"] == "emu");
    }
}
