//! The VMDK text descriptor: `key=value` lines (`createType`, `parentCID`, ...) and
//! extent lines `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`. Descriptors of differencing
//! disks (a parent) are refused; extent types other than SPARSE, FLAT and ZERO (ESX's
//! VMFS kinds) are refused.

use crate::disk::{DiskError, Result};

/// Most extents a descriptor may list.
pub const MAX_EXTENTS: usize = 4096;

/// How an extent stores its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// A hosted sparse extent file (`KDMV`).
    Sparse,
    /// Raw data in a file, from a sector offset.
    Flat,
    /// Reads as zeroes; no file.
    Zero,
}

/// One extent line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// Length in sectors.
    pub sectors: u64,
    pub kind: ExtentKind,
    /// The file, as written (relative to the descriptor's directory unless absolute).
    pub file: Option<String>,
    /// Flat extents: where the data starts in the file, in sectors.
    pub offset: u64,
}

/// What a descriptor says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// `createType` (`monolithicSparse`, `streamOptimized`, `monolithicFlat`, ...).
    pub create_type: String,
    pub extents: Vec<ExtentLine>,
}

fn unsupported(path: &str, reason: impl Into<String>) -> DiskError {
    DiskError::UnsupportedImage {
        path: path.into(),
        reason: reason.into(),
    }
}

fn invalid(path: &str, reason: impl Into<String>) -> DiskError {
    crate::structure::invalid(path, reason)
}

fn parse_extent(line: &str, path: &str) -> Result<ExtentLine> {
    let bad = || invalid(path, format!("bad extent line '{line}'"));
    let mut words = line.splitn(3, char::is_whitespace);
    let _access = words.next().ok_or_else(bad)?;
    let sectors: u64 = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    let rest = words.next().ok_or_else(bad)?.trim_start();
    let (kind, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let kind = match kind {
        "SPARSE" => ExtentKind::Sparse,
        "FLAT" => ExtentKind::Flat,
        "ZERO" => ExtentKind::Zero,
        k => return Err(unsupported(path, format!("VMDK extent type {k}"))),
    };
    let rest = rest.trim();
    let (file, offset) = if kind == ExtentKind::Zero {
        (None, 0)
    } else {
        let r = rest.strip_prefix('"').ok_or_else(bad)?;
        let (name, after) = r.split_once('"').ok_or_else(bad)?;
        if name.is_empty() {
            return Err(bad());
        }
        let after = after.trim();
        let offset = if after.is_empty() {
            0
        } else {
            after.parse().map_err(|_| bad())?
        };
        (Some(name.to_string()), offset)
    };
    if sectors > (1 << 60) / 512 || offset > (1 << 60) / 512 {
        return Err(invalid(
            path,
            format!("extent size or offset in '{line}' is absurd"),
        ));
    }
    Ok(ExtentLine {
        sectors,
        kind,
        file,
        offset,
    })
}

/// Parses a descriptor (embedded in a sparse file or a file of its own).
pub fn parse_descriptor(text: &[u8], path: &str) -> Result<Descriptor> {
    let text = String::from_utf8_lossy(text);
    let text = text.trim_end_matches('\0');
    let mut d = Descriptor::default();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if ["RW ", "RDONLY ", "NOACCESS "]
            .iter()
            .any(|a| line.starts_with(a))
        {
            if d.extents.len() >= MAX_EXTENTS {
                return Err(invalid(path, format!("more than {MAX_EXTENTS} extents")));
            }
            d.extents.push(parse_extent(line, path)?);
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let (k, v) = (k.trim(), v.trim().trim_matches('"'));
            let parent = match k {
                "createType" => {
                    d.create_type = v.to_string();
                    false
                }
                "parentCID" => !v.eq_ignore_ascii_case("ffffffff"),
                "parentFileNameHint" => true,
                _ => false,
            };
            if parent {
                return Err(unsupported(
                    path,
                    "VMDK images with a parent (differencing disks)",
                ));
            }
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_parse_and_parents_are_refused() {
        let ok = b"# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n\
                   createType=\"twoGbMaxExtentFlat\"\nRW 640 FLAT \"a b-f001.vmdk\" 0\n\
                   RDONLY 64 ZERO\nRW 8 SPARSE \"c.vmdk\"\n\0\0";
        let d = parse_descriptor(ok, "a").unwrap();
        assert_eq!(d.create_type, "twoGbMaxExtentFlat");
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0].file.as_deref(), Some("a b-f001.vmdk"));
        assert_eq!(
            (d.extents[1].kind, d.extents[1].sectors),
            (ExtentKind::Zero, 64)
        );
        let parent = b"parentCID=12345678\nparentFileNameHint=\"/etc/shadow\"\n";
        assert!(parse_descriptor(parent, "a").is_err());
        for bad in [
            &b"RW x FLAT \"a\" 0\n"[..],
            b"RW 8 FLAT a\n",
            b"RW 8 FLAT \"\"\n",
            b"RW 8 VMFS \"a\"\n",
            b"RW 99999999999999999999 FLAT \"a\"\n",
        ] {
            assert!(parse_descriptor(bad, "a").is_err(), "{bad:?}");
        }
    }
}
