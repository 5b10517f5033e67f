//! The OVF manifest (`.mf`): one `ALGO(file)= digest` line per file of the appliance.

use super::{fail, Ctx, Result};
use std::collections::BTreeMap;

/// A digest algorithm a manifest names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algo {
    /// SHA-1 (OVF 1.x).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algo {
    /// The name manifests use (`SHA256`).
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha1 => "SHA1",
            Algo::Sha256 => "SHA256",
            Algo::Sha512 => "SHA512",
        }
    }
}

/// A manifest: file name -> (digest, hex).
pub type Manifest = BTreeMap<String, (Algo, String)>;

/// Parses `SHA256(name)= hex` lines (also `SHA1`, `SHA512`, and `SHA256 (name) = hex`).
pub fn parse_manifest(text: &str, what: &str) -> Result<Manifest> {
    let mut m = Manifest::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = || {
            format!(
                "manifest {what} line {}: expected 'SHA256(file)= digest'",
                i + 1
            )
        };
        let (algo, rest) = line.split_once('(').ctx(bad)?;
        let (name, digest) = rest.rsplit_once(')').ctx(bad)?;
        let digest = digest.trim().strip_prefix('=').ctx(bad)?.trim();
        let (algo, len) = match algo.trim().to_ascii_uppercase().as_str() {
            "SHA1" => (Algo::Sha1, 40),
            "SHA256" => (Algo::Sha256, 64),
            "SHA512" => (Algo::Sha512, 128),
            other => fail!(
                "manifest {what} line {}: unsupported digest '{other}' (SHA1, SHA256 and SHA512 are)",
                i + 1
            ),
        };
        if digest.len() != len || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
            fail!(
                "manifest {what} line {}: '{digest}' is not a {} digest",
                i + 1,
                algo.name()
            );
        }
        let name = name.trim().trim_start_matches("./").to_string();
        if m.insert(name.clone(), (algo, digest.to_ascii_lowercase()))
            .is_some()
        {
            fail!("manifest {what} lists '{name}' twice");
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lines() {
        let h = "a".repeat(64);
        let m = parse_manifest(
            &format!("SHA256(x.vmdk)= {h}\nSHA1 (y.ovf) = {}\n", "B".repeat(40)),
            "m",
        )
        .unwrap();
        assert_eq!(m["x.vmdk"], (Algo::Sha256, h));
        assert_eq!(m["y.ovf"].0, Algo::Sha1);
        assert!(parse_manifest("MD5(x)= 00", "m").is_err());
        assert!(parse_manifest("SHA256(x)= abc", "m").is_err());
        assert!(parse_manifest("garbage", "m").is_err());
    }
}
