//! The OVF descriptor (DSP0243, OVF 1.x and 2.x): what an appliance import takes from
//! it. Parsed with `roxmltree` without DTDs (no entity expansion) and with a node limit;
//! every number is checked, every reference between sections resolved, so any text
//! gives a value or one error line.

use super::{fail, Ctx, OvfError, Result};
use std::collections::BTreeMap;

/// What import takes from an OVF descriptor.
#[derive(Debug, Default)]
pub struct Ovf {
    /// OVF major version (1 or 2), from the envelope's namespace.
    pub version: Option<u32>,
    /// The virtual system's name (`Name`, else its `ovf:id`).
    pub name: String,
    /// Virtual CPUs (ResourceType 3).
    pub cpus: Option<u32>,
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// Firmware hint (`efi`, `bios`), when the descriptor gives one.
    pub firmware: Option<String>,
    /// `References/File` elements, by `ovf:id`.
    pub files: BTreeMap<String, OvfFile>,
    /// Disks in guest order (the order of the hardware section's disk drives, then
    /// disks it does not mention).
    pub disks: Vec<OvfDisk>,
    /// Other things the appliance has that are not imported (CD images, ...).
    pub notes: Vec<String>,
}

/// A `References/File` element.
#[derive(Debug, Clone)]
pub struct OvfFile {
    /// `ovf:href`: the file's name inside the appliance.
    pub href: String,
    /// `ovf:size` in bytes, when given.
    pub size: Option<u64>,
}

/// A disk of the virtual system.
#[derive(Debug, Clone)]
pub struct OvfDisk {
    /// `ovf:diskId` (or the file id of a drive naming a file directly).
    pub id: String,
    /// `ovf:id` of its file; `None` for an empty disk to be created.
    pub file_ref: Option<String>,
    /// Capacity in bytes (0 when unknown).
    pub capacity: u64,
}

fn local_attr<'a>(n: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    n.attributes().find(|a| a.name() == name).map(|a| a.value())
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn child_text<'a>(n: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(n, name).and_then(|c| c.text()).map(str::trim)
}

/// Multiplier of a CIM allocation unit: programmatic units (`byte * 2^20`,
/// `byte * 10^3`, `bytes`) and the usual names (`MegaBytes`, `MB`, `GiB`, ...).
pub fn parse_units(u: &str) -> Result<u64> {
    let s: String = u
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let named = match s.as_str() {
        "" | "b" | "byte" | "bytes" => Some(1),
        "kb" | "kib" | "kilobyte" | "kilobytes" => Some(1 << 10),
        "mb" | "mib" | "megabyte" | "megabytes" => Some(1 << 20),
        "gb" | "gib" | "gigabyte" | "gigabytes" => Some(1 << 30),
        "tb" | "tib" | "terabyte" | "terabytes" => Some(1 << 40),
        _ => None,
    };
    if let Some(m) = named {
        return Ok(m);
    }
    let mut parts = s.split('*');
    if !matches!(parts.next(), Some("byte" | "bytes")) {
        fail!("unsupported allocation unit '{u}' (expected e.g. 'byte * 2^20')");
    }
    let mut mult: u64 = 1;
    for p in parts {
        let f = match p.split_once('^') {
            Some((base, exp)) => {
                let base: u64 = base.parse().ok().filter(|b| *b >= 2).ctx(|| {
                    format!("unsupported allocation unit '{u}' (expected e.g. 'byte * 2^20')")
                })?;
                let exp: u32 = exp
                    .parse()
                    .ctx(|| format!("unsupported allocation unit '{u}'"))?;
                base.checked_pow(exp)
            }
            None => p.parse().ok(),
        };
        mult = f
            .and_then(|f| mult.checked_mul(f))
            .ctx(|| format!("unsupported allocation unit '{u}'"))?;
    }
    Ok(mult)
}

fn quantity(value: &str, units: Option<&str>, what: &str) -> Result<u64> {
    let n: u64 = value
        .trim()
        .parse()
        .ctx(|| format!("{what} '{value}' is not a number"))?;
    let m = parse_units(units.unwrap_or("byte"))?;
    n.checked_mul(m)
        .ctx(|| format!("{what} '{value}' is too large"))
}

/// Whether an `Item` applies to the chosen deployment configuration.
fn in_config(item: roxmltree::Node, config: Option<&str>) -> bool {
    match (local_attr(item, "configuration"), config) {
        (None, _) => true,
        (Some(list), Some(c)) => list.split_whitespace().any(|x| x == c),
        // No DeploymentOptionSection to choose from: the attribute means nothing.
        (Some(_), None) => true,
    }
}

/// Parses an OVF 1.x or 2.x descriptor (`what` names it in errors).
pub fn parse_ovf(text: &str, what: &str) -> Result<Ovf> {
    let opt = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: 1_000_000,
    };
    let doc = roxmltree::Document::parse_with_options(text, opt).map_err(|e| OvfError {
        msg: format!("the OVF descriptor {what} is not valid XML"),
        source: Some(e),
    })?;
    let env = doc.root_element();
    if env.tag_name().name() != "Envelope" {
        fail!(
            "{what} is not an OVF descriptor (its root element is <{}>, not <Envelope>)",
            env.tag_name().name()
        );
    }
    let mut ovf = Ovf {
        version: env.tag_name().namespace().and_then(|ns| {
            let ns = ns.strip_prefix("http://schemas.dmtf.org/ovf/envelope/")?;
            ns.trim_end_matches('/').parse().ok()
        }),
        ..Default::default()
    };
    if let Some(refs) = child(env, "References") {
        for f in refs
            .children()
            .filter(|c| c.is_element() && c.tag_name().name() == "File")
        {
            let id = local_attr(f, "id").ctx(|| "a References/File has no ovf:id".into())?;
            let href = local_attr(f, "href").ctx(|| format!("File '{id}' has no ovf:href"))?;
            if let Some(c) = local_attr(f, "compression").filter(|c| *c != "identity") {
                fail!("file '{href}' is compressed ({c}); compressed OVF files are not supported");
            }
            if local_attr(f, "chunkSize").is_some() {
                fail!("file '{href}' is split into chunks (ovf:chunkSize); chunked OVF files are not supported");
            }
            let size = local_attr(f, "size")
                .map(|s| {
                    s.trim()
                        .parse::<u64>()
                        .ctx(|| format!("file '{href}': ovf:size '{s}' is not a number"))
                })
                .transpose()?;
            let file = OvfFile {
                href: href.to_string(),
                size,
            };
            if ovf.files.values().any(|f| f.href == file.href) {
                fail!("References lists file '{href}' twice");
            }
            if ovf.files.insert(id.to_string(), file).is_some() {
                fail!("References lists file id '{id}' twice");
            }
        }
    }
    let mut section_disks = Vec::new();
    let disk_sections = env.children().filter(|c| {
        c.is_element() && matches!(c.tag_name().name(), "DiskSection" | "VirtualDiskSection")
    });
    for sec in disk_sections {
        for d in sec
            .children()
            .filter(|c| c.is_element() && c.tag_name().name() == "Disk")
        {
            let id =
                local_attr(d, "diskId").ctx(|| "a DiskSection/Disk has no ovf:diskId".into())?;
            let file_ref = local_attr(d, "fileRef").map(str::to_string);
            if let Some(r) = &file_ref {
                if !ovf.files.contains_key(r) {
                    fail!("disk '{id}' names file '{r}', which References does not list");
                }
            }
            let capacity = match local_attr(d, "capacity") {
                Some(c) if c.contains("${") => {
                    fail!("disk '{id}' takes its capacity from a property ({c}); not supported")
                }
                Some(c) => quantity(
                    c,
                    local_attr(d, "capacityAllocationUnits"),
                    &format!("disk '{id}' capacity"),
                )?,
                None => 0,
            };
            section_disks.push(OvfDisk {
                id: id.to_string(),
                file_ref,
                capacity,
            });
        }
    }
    let systems: Vec<_> = env
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "VirtualSystem")
        .collect();
    let vs = match systems.as_slice() {
        [] => fail!("the OVF descriptor {what} describes no VirtualSystem"),
        [vs] => *vs,
        many => fail!(
            "the OVF descriptor {what} describes {} virtual systems; importing a VirtualSystemCollection is not supported",
            many.len()
        ),
    };
    ovf.name = child_text(vs, "Name")
        .filter(|n| !n.is_empty())
        .or(local_attr(vs, "id"))
        .unwrap_or("")
        .to_string();
    // The deployment option in force: the default one, else the first.
    let config = child(env, "DeploymentOptionSection").and_then(|s| {
        let confs: Vec<_> = s
            .children()
            .filter(|c| c.is_element() && c.tag_name().name() == "Configuration")
            .collect();
        confs
            .iter()
            .find(|c| local_attr(**c, "default").is_some_and(|d| d == "true" || d == "1"))
            .or(confs.first())
            .and_then(|c| local_attr(*c, "id"))
    });
    let hw = child(vs, "VirtualHardwareSection")
        .ctx(|| format!("the OVF descriptor {what} has no VirtualHardwareSection"))?;
    let mut ordered: Vec<OvfDisk> = Vec::new();
    for item in hw.children().filter(|c| {
        c.is_element()
            && matches!(c.tag_name().name(), "Item" | "StorageItem")
            && in_config(*c, config)
    }) {
        let rt: u32 = match child_text(item, "ResourceType").and_then(|t| t.parse().ok()) {
            Some(rt) => rt,
            None => continue,
        };
        let element = child_text(item, "ElementName").unwrap_or("").to_string();
        match rt {
            3 => {
                let q = child_text(item, "VirtualQuantity")
                    .ctx(|| format!("the CPU item '{element}' has no VirtualQuantity"))?;
                let n: u32 = q
                    .parse()
                    .ctx(|| format!("CPU count '{q}' is not a number"))?;
                ovf.cpus = Some(n);
            }
            4 => {
                let q = child_text(item, "VirtualQuantity")
                    .ctx(|| format!("the memory item '{element}' has no VirtualQuantity"))?;
                // DSP0243: memory is in AllocationUnits; tools that leave them out mean MB.
                let units = child_text(item, "AllocationUnits").unwrap_or("byte * 2^20");
                ovf.memory = Some(quantity(q, Some(units), "memory")?);
            }
            15..=17 => {
                let Some(host) = child_text(item, "HostResource") else {
                    continue;
                };
                let host = host.strip_prefix("ovf:").unwrap_or(host);
                if let Some(id) = host.strip_prefix("/disk/") {
                    if rt != 17 {
                        continue;
                    }
                    let Some(d) = section_disks.iter().find(|d| d.id == id) else {
                        fail!("the disk drive '{element}' names disk '{id}', which DiskSection does not list");
                    };
                    if !ordered.iter().any(|o| o.id == id) {
                        ordered.push(d.clone());
                    }
                } else if let Some(fid) = host.strip_prefix("/file/") {
                    let Some(f) = ovf.files.get(fid) else {
                        fail!("the drive '{element}' names file '{fid}', which References does not list");
                    };
                    if rt == 17 {
                        ordered.push(OvfDisk {
                            id: fid.to_string(),
                            file_ref: Some(fid.to_string()),
                            capacity: 0,
                        });
                    } else {
                        ovf.notes.push(format!(
                            "CD/DVD image '{}' is not imported (attach it with --disk if needed)",
                            f.href
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    for d in section_disks {
        if !ordered.iter().any(|o| o.id == d.id) {
            ordered.push(d);
        }
    }
    ovf.disks = ordered;
    // Firmware: VMware's `<vmw:Config vmw:key="firmware" vmw:value="efi"/>`, a
    // `firmware="..."` attribute, or VirtualBox's `<Firmware type="EFI"/>`.
    for n in vs.descendants().filter(|n| n.is_element()) {
        let hint = if local_attr(n, "key") == Some("firmware") {
            local_attr(n, "value")
        } else if n.tag_name().name() == "Firmware" {
            local_attr(n, "type").or(n.text().map(str::trim))
        } else {
            local_attr(n, "firmware")
        };
        if let Some(h) = hint.filter(|h| !h.is_empty()) {
            ovf.firmware = Some(h.to_ascii_lowercase());
            break;
        }
    }
    Ok(ovf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_units("byte * 2^20").unwrap(), 1 << 20);
        assert_eq!(parse_units("byte*2^30").unwrap(), 1 << 30);
        assert_eq!(parse_units("MegaBytes").unwrap(), 1 << 20);
        assert_eq!(parse_units("byte * 10^3").unwrap(), 1000);
        assert_eq!(parse_units("bytes").unwrap(), 1);
        assert!(parse_units("hertz * 10^6").is_err());
        assert!(parse_units("byte * 2^99").is_err());
    }

    const OVF: &str = r#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:id="f1" ovf:href="a-disk1.vmdk" ovf:size="100"/>
    <File ovf:id="iso" ovf:href="cd.iso"/>
  </References>
  <DiskSection><Info>d</Info>
    <Disk ovf:diskId="d2" ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30"/>
    <Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="8388608"/>
  </DiskSection>
  <VirtualSystem ovf:id="vm1">
    <Name>Appliance</Name>
    <VirtualHardwareSection>
      <Item><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>4</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item><rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>ovf:/disk/d1</rasd:HostResource></Item>
      <Item><rasd:ResourceType>15</rasd:ResourceType><rasd:HostResource>ovf:/file/iso</rasd:HostResource></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#;

    #[test]
    fn ovf_descriptor() {
        let o = parse_ovf(OVF, "t").unwrap();
        assert_eq!(o.version, Some(1));
        assert_eq!(o.name, "Appliance");
        assert_eq!(o.cpus, Some(4));
        assert_eq!(o.memory, Some(1 << 30));
        assert_eq!(o.firmware.as_deref(), Some("efi"));
        let ids: Vec<_> = o.disks.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["d1", "d2"]);
        assert_eq!(o.disks[1].capacity, 1 << 30);
        assert_eq!(o.notes.len(), 1);
        assert_eq!(o.files["f1"].size, Some(100));
        assert!(parse_ovf("not xml", "t").is_err());
        assert!(parse_ovf("<a/>", "t").is_err());
        let e = parse_ovf("<Envelope><VirtualSystem/></Envelope>", "'x'").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the OVF descriptor 'x' has no VirtualHardwareSection"
        );
        let e = parse_ovf("<a>", "'x'").unwrap_err();
        assert!(std::error::Error::source(&e).is_some());
    }
}
