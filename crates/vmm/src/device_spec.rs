//! `--device NAME[,key=value...]`: the optional platform devices for test kernels.

use devices::{debug_exit, debugcon};

/// One `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum DeviceSpec {
    /// QEMU's `isa-debug-exit`: a write of V to a port in `iobase..iobase+iosize`
    /// ends `hako` with status `(V << 1) | 1`.
    IsaDebugExit { iobase: u16, iosize: u16 },
    /// The Bochs/QEMU debug console: bytes written to `iobase` go to stderr; reads
    /// return `readback`.
    Debugcon { iobase: u16, readback: u8 },
    /// QEMU's `pc-testdev` (fixed ports 0xE0-0xEB and 0x2000-0x2017, MMIO at
    /// 0xFF00_0000): see `devices::pc_testdev`.
    PcTestdev,
}

impl DeviceSpec {
    /// The device's name as `--device` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            DeviceSpec::IsaDebugExit { .. } => "isa-debug-exit",
            DeviceSpec::Debugcon { .. } => "debugcon",
            DeviceSpec::PcTestdev => "pc-testdev",
        }
    }

    /// The port range it claims, as (base, length) (pc-testdev's first range).
    pub fn ports(&self) -> (u16, u16) {
        match *self {
            DeviceSpec::IsaDebugExit { iobase, iosize } => (iobase, iosize),
            DeviceSpec::Debugcon { iobase, .. } => (iobase, 1),
            DeviceSpec::PcTestdev => (0xe0, 4),
        }
    }
}

const NAMES: &str = "isa-debug-exit, debugcon, pc-testdev";

/// A number in decimal or with a 0x prefix in hexadecimal.
fn number(dev: &str, key: &str, v: &str, max: u32) -> Result<u32, String> {
    let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => v.parse(),
    }
    .map_err(|_| format!("{dev}: {key}={v} is not a number (decimal or 0x-prefixed hex)"))?;
    if n > max {
        return Err(format!("{dev}: {key}={v} is above the maximum {max:#x}"));
    }
    Ok(n)
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    /// `isa-debug-exit[,iobase=N][,iosize=N]`, `debugcon[,iobase=N][,readback=N]`
    /// or `pc-testdev`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let name = parts.next().unwrap_or_default();
        let mut spec = match name {
            "isa-debug-exit" => DeviceSpec::IsaDebugExit {
                iobase: debug_exit::DEFAULT_IOBASE,
                iosize: debug_exit::DEFAULT_IOSIZE,
            },
            "debugcon" | "isa-debugcon" => DeviceSpec::Debugcon {
                iobase: debugcon::DEFAULT_IOBASE,
                readback: debugcon::DEFAULT_READBACK,
            },
            "pc-testdev" => DeviceSpec::PcTestdev,
            "" => return Err(format!("--device needs a device name (one of: {NAMES})")),
            _ => return Err(format!("unknown device '{name}' (known: {NAMES})")),
        };
        for opt in parts {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| format!("{name}: option '{opt}' is not key=value"))?;
            match (&mut spec, k) {
                (DeviceSpec::IsaDebugExit { iobase, .. }, "iobase")
                | (DeviceSpec::Debugcon { iobase, .. }, "iobase") => {
                    *iobase = number(name, k, v, 0xffff)? as u16
                }
                (DeviceSpec::IsaDebugExit { iosize, .. }, "iosize") => {
                    *iosize = number(name, k, v, 0xffff)? as u16;
                    if *iosize == 0 {
                        return Err(format!("{name}: iosize must be at least 1"));
                    }
                }
                (DeviceSpec::Debugcon { readback, .. }, "readback") => {
                    *readback = number(name, k, v, 0xff)? as u8
                }
                (DeviceSpec::IsaDebugExit { .. }, _) => {
                    return Err(format!(
                        "unknown {name} option '{k}' (known: iobase, iosize)"
                    ))
                }
                (DeviceSpec::Debugcon { .. }, _) => {
                    return Err(format!(
                        "unknown {name} option '{k}' (known: iobase, readback)"
                    ))
                }
                (DeviceSpec::PcTestdev, _) => {
                    return Err(format!("{name} takes no options (its addresses are fixed)"))
                }
            }
        }
        let (base, len) = spec.ports();
        if base as u32 + len as u32 > 0x1_0000 {
            return Err(format!(
                "{name}: ports {base:#x}+{len:#x} run past the end of the I/O space (0xffff)"
            ));
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::DeviceSpec;

    #[test]
    fn defaults_are_qemus_and_options_override_them() {
        assert_eq!(
            "isa-debug-exit".parse(),
            Ok(DeviceSpec::IsaDebugExit {
                iobase: 0x501,
                iosize: 2
            })
        );
        assert_eq!(
            "isa-debug-exit,iobase=0xf4,iosize=4".parse(),
            Ok(DeviceSpec::IsaDebugExit {
                iobase: 0xf4,
                iosize: 4
            })
        );
        assert_eq!(
            "debugcon".parse(),
            Ok(DeviceSpec::Debugcon {
                iobase: 0x402,
                readback: 0xe9
            })
        );
        assert_eq!(
            "isa-debugcon,iobase=233,readback=0x41".parse(),
            Ok(DeviceSpec::Debugcon {
                iobase: 0xe9,
                readback: 0x41
            })
        );
    }

    #[test]
    fn malformed_options_are_errors_naming_the_problem() {
        let err = |s: &str| s.parse::<DeviceSpec>().unwrap_err();
        assert!(err("").contains("needs a device name"));
        assert!(err("isa-debug-exitt").contains("unknown device 'isa-debug-exitt'"));
        assert!(err("isa-debug-exit,iobase").contains("not key=value"));
        assert!(err("isa-debug-exit,iobase=0xfg").contains("not a number"));
        assert!(err("isa-debug-exit,iobase=0x10000").contains("maximum"));
        assert!(err("isa-debug-exit,iosize=0").contains("at least 1"));
        assert!(err("isa-debug-exit,iobase=0xfffe,iosize=4").contains("past the end"));
        assert!(err("isa-debug-exit,readback=1").contains("known: iobase, iosize"));
        assert!(err("debugcon,iosize=2").contains("known: iobase, readback"));
        assert!(err("debugcon,readback=256").contains("maximum"));
        assert!(err("pc-testdev,iobase=0xe0").contains("takes no options"));
        assert_eq!("pc-testdev".parse(), Ok(DeviceSpec::PcTestdev));
        assert!(err("isa-debug-exit,iobase=-1").contains("not a number"));
    }
}
