//! A VM definition: what the daemon keeps of a VM while it is not running, one JSON
//! file per VM (`state-dir/vms/NAME.json`, see [`crate::store`]).
//!
//! Definitions come in as JSON (the API), or as a JSON or TOML file (`hako define
//! FILE`): either a whole definition (`{name, uuid?, autostart?, restart_policy?,
//! config}`) or a bare `vmm::VmConfig`. A config may leave out what `hako run` has a
//! default for (`cmdline`, `memory`, `cpus`, ...); `memory` may be a size string
//! ("512M"). Every path in it must be absolute: the daemon and its VMs do not run in
//! the directory of whoever defined them.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;
use vmm::{AccelKind, VmConfig};

/// Why a definition was refused (an API 400).
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("invalid VM name {0:?}: use 1 to 64 of A-Z a-z 0-9 _ . - and do not start with '.'")]
    Name(String),
    #[error("the definition is not valid: {0}")]
    Shape(String),
    #[error("the VM configuration is not valid{key}: {source}")]
    Config {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} must be an absolute path, not {path:?}")]
    RelativePath { what: String, path: String },
    #[error("{0}")]
    Syntax(String),
}

/// Whether the daemon starts a VM again when it ends without being asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Leave it stopped (or crashed).
    #[default]
    Never,
    /// Start it again when its `hako run` exits non-zero or is killed (at most 3
    /// times a minute).
    OnFailure,
}

/// A VM the daemon knows about: what `GET /v1/vms/{name}` shows of its definition
/// and what `state-dir/vms/NAME.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// `[A-Za-z0-9_.-]{1,64}`, not starting with '.'.
    pub name: String,
    #[schema(value_type = String, example = "6f1c2a9e-8d3b-4c55-9a0e-2b7d1f4e3c21")]
    pub uuid: Uuid,
    /// Start the VM when the daemon starts.
    pub autostart: bool,
    pub restart_policy: RestartPolicy,
    /// The `vmm::VmConfig` its `hako run --config` boots.
    #[schema(value_type = Object)]
    pub config: VmConfig,
    /// Run the VM's process as this user and group (a daemon running as root
    /// only; see docs/sandbox.md). Without it the VM runs as the daemon does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<RunAs>,
}

/// The uid and gid a VM's `hako run` runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// Checks a VM name: `[A-Za-z0-9_.-]{1,64}`, not starting with '.'.
pub fn check_name(name: &str) -> Result<(), DefinitionError> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DefinitionError::Name(name.to_string()))
    }
}

impl Definition {
    /// A definition from JSON: a whole definition, or (when `bare` allows it and the
    /// value has no `config`) a bare `VmConfig` named `name`. A missing uuid is made.
    pub fn from_value(v: Value, name: Option<&str>) -> Result<Definition, DefinitionError> {
        let Value::Object(mut obj) = v else {
            return Err(DefinitionError::Shape("expected a JSON object".into()));
        };
        if !obj.contains_key("config") {
            // A bare VmConfig: everything is the config.
            let Some(name) = name else {
                return Err(DefinitionError::Shape(
                    "no \"config\" (and no name to give a bare VM configuration)".into(),
                ));
            };
            obj = Map::from_iter([
                ("name".to_string(), Value::String(name.to_string())),
                ("config".to_string(), Value::Object(obj)),
            ]);
        }
        if let (Some(n), None) = (name, obj.get("name")) {
            obj.insert("name".into(), Value::String(n.to_string()));
        }
        let config = obj.remove("config").unwrap_or(Value::Null);
        let config = config_from_value(config)?;
        obj.entry("uuid")
            .or_insert_with(|| Value::String(Uuid::new_v4().to_string()));
        obj.entry("autostart").or_insert(Value::Bool(false));
        obj.entry("restart_policy")
            .or_insert(Value::String("never".into()));
        obj.insert("config".into(), Value::Null);
        let mut def: Definition = {
            // Parse everything but the config (already checked) through serde, so
            // unknown keys and wrong types are refused with serde's message.
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Head {
                name: String,
                uuid: Uuid,
                autostart: bool,
                restart_policy: RestartPolicy,
                #[allow(dead_code)]
                config: Value,
                #[serde(default)]
                run_as: Option<RunAs>,
            }
            let h: Head = serde_json::from_value(Value::Object(obj))
                .map_err(|e| DefinitionError::Shape(e.to_string()))?;
            Definition {
                name: h.name,
                uuid: h.uuid,
                autostart: h.autostart,
                restart_policy: h.restart_policy,
                config,
                run_as: h.run_as,
            }
        };
        check_name(&def.name)?;
        if def.run_as.is_some_and(|r| r.uid == 0 || r.gid == 0) {
            return Err(DefinitionError::Shape(
                "run_as with uid or gid 0 is root: leave run_as out".into(),
            ));
        }
        // `trace` is not carried in a definition (the field is not serialized).
        def.config.trace = None;
        Ok(def)
    }

    /// A definition file's text: TOML when `path` ends in `.toml`, else JSON.
    /// Relative paths in its config are taken from `base` (the file's directory).
    pub fn from_file_text(
        text: &str,
        path: &Path,
        name: Option<&str>,
        base: &Path,
    ) -> Result<Definition, DefinitionError> {
        Definition::from_value(file_to_value(text, path, name, base)?, None)
    }
}

/// A definition file's text as the JSON of a whole definition (what `POST
/// /v1/vms` takes): TOML when `path` ends in `.toml`, else JSON; a bare VM
/// configuration is wrapped; the name is `name` if given, else the file's, else
/// the file's stem. Relative paths in the config are taken from `base`. Nothing
/// is made up (no uuid): the daemon does that, or keeps the VM's.
pub fn file_to_value(
    text: &str,
    path: &Path,
    name: Option<&str>,
    base: &Path,
) -> Result<Value, DefinitionError> {
    let v: Value = if path.extension().is_some_and(|e| e == "toml") {
        let t: toml::Value = toml::from_str(text)
            .map_err(|e| DefinitionError::Syntax(format!("{}: {e}", path.display())))?;
        serde_json::to_value(t).map_err(|e| DefinitionError::Syntax(e.to_string()))?
    } else {
        serde_json::from_str(text)
            .map_err(|e| DefinitionError::Syntax(format!("{}: {e}", path.display())))?
    };
    let Value::Object(mut obj) = v else {
        return Err(DefinitionError::Shape(format!(
            "{} holds no JSON object",
            path.display()
        )));
    };
    if !obj.contains_key("config") {
        obj = Map::from_iter([("config".to_string(), Value::Object(obj))]);
    }
    if let Some(c) = obj.get_mut("config") {
        absolutize_paths(c, base);
    }
    let stem = path.file_stem().and_then(|s| s.to_str());
    match (name, obj.contains_key("name"), stem) {
        (Some(n), _, _) => {
            obj.insert("name".into(), Value::from(n));
        }
        (None, false, Some(s)) => {
            obj.insert("name".into(), Value::from(s));
        }
        _ => {}
    }
    Ok(Value::Object(obj))
}

/// A `VmConfig` from JSON, with `hako run`'s defaults for what it leaves out and a
/// size string allowed for `memory`. Every path must be absolute.
pub fn config_from_value(v: Value) -> Result<VmConfig, DefinitionError> {
    let Value::Object(mut given) = v else {
        return Err(DefinitionError::Shape(
            "\"config\" must be an object (a VM configuration)".into(),
        ));
    };
    if let Some(Value::String(s)) = given.get("memory") {
        let bytes = vmm::config::parse_size(s)
            .map_err(|e| DefinitionError::Shape(format!("memory {s:?}: {e}")))?;
        given.insert("memory".into(), Value::from(bytes));
    }
    let Some(kernel) = given.get("kernel").and_then(Value::as_str) else {
        return Err(DefinitionError::Shape(
            "the configuration names no \"kernel\"".into(),
        ));
    };
    let defaults = VmConfig::new(kernel.into(), AccelKind::Emu);
    let Ok(Value::Object(mut merged)) = serde_json::to_value(defaults) else {
        return Err(DefinitionError::Shape(
            "the default configuration does not serialize".into(),
        ));
    };
    if !given.contains_key("accel") {
        merged.insert("accel".into(), Value::String(default_accel().into()));
    }
    let defaults = merged.clone();
    merged.extend(given.clone());
    let merged = Value::Object(merged);
    check_absolute(&merged)?;
    serde_json::from_value(merged).map_err(|e| {
        // serde's message does not say where: find the first key that fails alone.
        let bad = given.iter().find(|(k, v)| {
            let mut one = defaults.clone();
            one.insert((*k).clone(), (*v).clone());
            serde_json::from_value::<VmConfig>(Value::Object(one)).is_err()
        });
        DefinitionError::Config {
            key: bad
                .map(|(k, _)| format!(" (in \"{k}\")"))
                .unwrap_or_default(),
            source: e,
        }
    })
}

/// The accelerator of a configuration that names none: `kvm` where /dev/kvm opens
/// and is not PVM-backed (there a stock kernel hardly boots), else `emu`.
fn default_accel() -> &'static str {
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    if kvm && !pvm {
        "kvm"
    } else {
        "emu"
    }
}

/// The paths a config (as JSON) holds, with a name for each: the kernel, the
/// initrds, the disks, stream NICs' sockets and the vsock socket.
fn paths_mut(cfg: &mut Value) -> Vec<(String, &mut Value)> {
    let mut out = Vec::new();
    let Value::Object(m) = cfg else {
        return out;
    };
    for (k, v) in m.iter_mut() {
        match (k.as_str(), v) {
            ("kernel", v) => out.push(("kernel".to_string(), v)),
            ("initrds", Value::Array(a)) => {
                out.extend(a.iter_mut().map(|v| ("an initrd".to_string(), v)))
            }
            ("disks", Value::Array(a)) => {
                for d in a.iter_mut() {
                    if let Some(p) = d.get_mut("path") {
                        out.push(("a disk's path".to_string(), p));
                    }
                }
            }
            ("nets", Value::Array(a)) => {
                for n in a.iter_mut() {
                    if let Some(p) = n.get_mut("backend").and_then(|b| b.get_mut("path")) {
                        out.push(("a stream NIC's socket".to_string(), p));
                    }
                }
            }
            ("vsock", v @ Value::Object(_)) => {
                if let Some(p) = v.get_mut("path") {
                    out.push(("the vsock socket".to_string(), p));
                }
            }
            _ => {}
        }
    }
    out
}

/// Makes the relative paths of a config (as JSON) relative to `base`, then absolute
/// (from the current directory when `base` itself is relative).
pub fn absolutize_paths(cfg: &mut Value, base: &Path) {
    for (_, v) in paths_mut(cfg) {
        if let Value::String(s) = v {
            if Path::new(s.as_str()).is_relative() {
                let joined = base.join(s.as_str());
                let abs = std::path::absolute(&joined).unwrap_or(joined);
                *s = abs.display().to_string();
            }
        }
    }
}

fn check_absolute(cfg: &Value) -> Result<(), DefinitionError> {
    let mut c = cfg.clone();
    for (what, v) in paths_mut(&mut c) {
        if let Value::String(s) = v {
            if !Path::new(s.as_str()).is_absolute() {
                return Err(DefinitionError::RelativePath {
                    what,
                    path: s.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        for ok in ["a", "vm-1", "A.b_c", &"x".repeat(64)] {
            check_name(ok).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(65), ".", ".."] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn whole_and_bare_definitions() {
        let d = Definition::from_value(
            json!({"name": "web", "autostart": true, "restart_policy": "on-failure",
                   "config": {"kernel": "/k", "memory": "64M", "accel": "emu"}}),
            None,
        )
        .unwrap();
        assert_eq!(d.name, "web");
        assert!(d.autostart);
        assert_eq!(d.restart_policy, RestartPolicy::OnFailure);
        assert_eq!(d.config.memory, 64 << 20);
        assert_eq!(d.config.cmdline, "console=ttyS0");
        // A bare config takes the given name.
        let b = Definition::from_value(json!({"kernel": "/k", "accel": "kvm"}), Some("b")).unwrap();
        assert_eq!((b.name.as_str(), b.autostart), ("b", false));
        assert_eq!(b.config.accel, AccelKind::Kvm);
        assert_ne!(b.uuid, d.uuid);
        // The uuid is kept when given; a round trip through JSON is the identity.
        let again = Definition::from_value(serde_json::to_value(&d).unwrap(), None).unwrap();
        assert_eq!(again, d);
    }

    #[test]
    fn refusals() {
        let e = |v: Value| Definition::from_value(v, None).unwrap_err().to_string();
        assert!(e(json!([])).contains("object"));
        assert!(e(json!({"name": "x", "config": {}})).contains("kernel"));
        assert!(e(json!({"name": "x", "config": {"kernel": "k"}})).contains("absolute"));
        assert!(
            e(json!({"name": "x", "config": {"kernel": "/k", "disks": [{"path": "d"}]}}))
                .contains("disk")
        );
        assert!(e(json!({"name": "a/b", "config": {"kernel": "/k"}})).contains("invalid VM name"));
        assert!(
            e(json!({"name": "x", "colour": 1, "config": {"kernel": "/k"}})).contains("colour")
        );
        assert!(
            e(json!({"name": "x", "config": {"kernel": "/k", "cpus": "two"}})).contains("cpus")
        );
        assert!(
            e(json!({"name": "x", "restart_policy": "always", "config": {"kernel": "/k"}}))
                .contains("always")
        );
        assert!(e(json!({"kernel": "/k"})).contains("no name"));
    }

    #[test]
    fn files_json_and_toml() {
        let base = Path::new("/defs");
        let toml = "name = \"t\"\nautostart = true\n[config]\nkernel = \"bzImage\"\n\
                    initrds = [\"/abs/initrd\"]\nmemory = \"128M\"\ncpus = 2\naccel = \"emu\"\n";
        let d = Definition::from_file_text(toml, Path::new("x.toml"), None, base).unwrap();
        assert_eq!(d.name, "t");
        assert_eq!(d.config.kernel, Path::new("/defs/bzImage"));
        assert_eq!(
            d.config.initrds,
            vec![Path::new("/abs/initrd").to_path_buf()]
        );
        assert_eq!((d.config.memory, d.config.cpus), (128 << 20, 2));
        // A bare config file is named for its stem unless a name is given.
        let bare = r#"{"kernel": "k", "accel": "emu"}"#;
        let d = Definition::from_file_text(bare, Path::new("/d/small.json"), None, base).unwrap();
        assert_eq!(d.name, "small");
        let d =
            Definition::from_file_text(bare, Path::new("/d/small.json"), Some("n"), base).unwrap();
        assert_eq!(d.name, "n");
        let err = Definition::from_file_text("{", Path::new("a.json"), None, base).unwrap_err();
        assert!(err.to_string().starts_with("a.json:"), "{err}");
    }
}
