//! What `hako run` asks for.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::device_spec::DeviceSpec;
pub use crate::vsock::VsockSpec;

/// Which accelerator runs the vCPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelKind {
    Kvm,
    Emu,
}

impl AccelKind {
    pub fn name(self) -> &'static str {
        match self {
            AccelKind::Kvm => "kvm",
            AccelKind::Emu => "emu",
        }
    }
}

/// The CPU the guest sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuModel {
    /// Everything the accelerator offers (emu: its whole model; kvm: what the host
    /// and KVM support).
    #[default]
    Host,
    /// The features both accelerators offer on any x86-64 host, so the VM can be
    /// snapshotted or migrated to the other accelerator (docs/snapshot.md, §5).
    Portable,
}

/// Where the terminal's input goes (output of every console goes to the terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleKind {
    /// COM1 (ttyS0).
    #[default]
    Serial,
    /// virtio-console port 0 (hvc0).
    Virtio,
}

/// What a guest reset does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnReboot {
    /// End `hako` with exit status 0.
    #[default]
    Exit,
    /// Boot the guest again from the same kernel.
    Restart,
}

/// How virtio devices attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VirtioTransport {
    #[default]
    Pci,
    Mmio,
}

/// One `--disk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    pub path: PathBuf,
    #[serde(with = "format_name", default)]
    pub format: Option<block::ImageFormat>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub serial: Option<String>,
}

/// An image format in a saved config, by the name `--disk format=` takes.
mod format_name {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        f: &Option<block::ImageFormat>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match f {
            Some(f) => s.serialize_some(&f.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<block::ImageFormat>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|n| n.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl std::str::FromStr for DiskSpec {
    type Err = String;

    /// `PATH[,format=raw|qcow2][,readonly=on|off][,serial=ID]`
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let path = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or("--disk needs a path")?;
        let mut d = DiskSpec {
            path: path.into(),
            format: None,
            read_only: false,
            serial: None,
        };
        for opt in parts {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| format!("--disk option '{opt}' is not key=value"))?;
            match k {
                "format" => d.format = Some(v.parse()?),
                "readonly" | "ro" => {
                    d.read_only = match v {
                        "on" | "true" | "yes" => true,
                        "off" | "false" | "no" => false,
                        _ => return Err(format!("readonly={v}: expected on or off")),
                    }
                }
                "serial" => {
                    if v.len() > 20 {
                        return Err(format!("serial={v}: at most 20 characters"));
                    }
                    d.serial = Some(v.into())
                }
                _ => {
                    return Err(format!(
                        "unknown --disk option '{k}' (known: format, readonly, serial)"
                    ))
                }
            }
        }
        Ok(d)
    }
}

/// The configuration of one VM: what `hako run` was asked for, and what a snapshot
/// and a migration stream carry (as JSON) to build the same machine again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmConfig {
    pub kernel: PathBuf,
    /// `--initrd` files: at most one for a Linux kernel; for a Multiboot kernel,
    /// each one a module.
    pub initrds: Vec<PathBuf>,
    pub cmdline: String,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// How guest RAM is backed (KSM, huge pages).
    #[serde(default)]
    pub memory_backing: crate::memory_backing::MemoryBacking,
    pub cpus: u32,
    pub accel: AccelKind,
    #[serde(default)]
    pub cpu: CpuModel,
    /// Instruction trace output (emu only; not carried to a restored VM).
    #[serde(skip)]
    pub trace: Option<PathBuf>,
    /// emu only: run hot code through the translator (x86-jit).
    pub jit: bool,
    pub disks: Vec<DiskSpec>,
    pub console: ConsoleKind,
    pub on_reboot: OnReboot,
    pub virtio: VirtioTransport,
    /// Optional platform devices (`--device`).
    pub devices: Vec<DeviceSpec>,
    /// A virtio-balloon with this first target in bytes (`--balloon`).
    #[serde(default)]
    pub balloon: Option<u64>,
    /// virtio-net NICs (`--net`), in order.
    #[serde(default)]
    pub nets: Vec<net::NetSpec>,
    /// A virtio-vsock device (`--vsock`).
    #[serde(default)]
    pub vsock: Option<VsockSpec>,
}

impl VmConfig {
    /// A VM with the defaults of `hako run` for `kernel`.
    pub fn new(kernel: PathBuf, accel: AccelKind) -> Self {
        VmConfig {
            kernel,
            initrds: Vec::new(),
            cmdline: "console=ttyS0".into(),
            memory: 512 << 20,
            memory_backing: Default::default(),
            cpus: 1,
            accel,
            cpu: CpuModel::Host,
            trace: None,
            jit: true,
            disks: Vec::new(),
            console: ConsoleKind::Serial,
            on_reboot: OnReboot::Exit,
            virtio: VirtioTransport::Pci,
            devices: Vec::new(),
            nets: Vec::new(),
            balloon: None,
            vsock: None,
        }
    }
}

/// Parses a size such as `512M`, `2G`, `128m`, `1048576` (bytes), `64K`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let unit = s[i..].trim_end_matches(['b', 'B', 'i']);
            let m = match unit.to_ascii_uppercase().as_str() {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => {
                    return Err(format!(
                        "invalid size '{s}': unknown unit (use K, M, G or T)"
                    ))
                }
            };
            (&s[..i], m)
        }
    };
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size '{s}': expected a number with an optional K/M/G/T suffix")
    })?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("invalid size '{s}': too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("128M"), Ok(128 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn disk_specs() {
        use super::DiskSpec;
        let d: DiskSpec = "/x/a.img,format=qcow2,readonly=on,serial=abc"
            .parse()
            .unwrap();
        assert_eq!(d.path, std::path::PathBuf::from("/x/a.img"));
        assert_eq!(d.format, Some(block::ImageFormat::Qcow2));
        assert!(d.read_only);
        assert_eq!(d.serial.as_deref(), Some("abc"));
        assert!("a.img,format=qed".parse::<DiskSpec>().is_err());
        assert!("a.img,bogus=1".parse::<DiskSpec>().is_err());
        assert!(",readonly=on".parse::<DiskSpec>().is_err());
        assert!("a.img,readonly=maybe".parse::<DiskSpec>().is_err());
    }
}
