//! What `hako run` asks for.

use std::path::PathBuf;

/// Which accelerator runs the vCPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// The configuration of one VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// Guest RAM in bytes.
    pub memory: u64,
    pub cpus: u32,
    pub accel: AccelKind,
    /// Instruction trace output (emu only).
    pub trace: Option<PathBuf>,
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
                _ => return Err(format!("invalid size '{s}': unknown unit (use K, M, G or T)")),
            };
            (&s[..i], m)
        }
    };
    let n: u64 = num.parse().map_err(|_| format!("invalid size '{s}': expected a number with an optional K/M/G/T suffix"))?;
    n.checked_mul(mult).ok_or_else(|| format!("invalid size '{s}': too large"))
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
}
