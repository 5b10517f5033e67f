//! `hako define FILE` and `hako define NAME [the flags of hako run]`.

use std::path::Path;

use anyhow::{Context, Result};
use clap::{Args, Parser, ValueEnum};
use serde_json::{json, Value};

use super::client::{refusal_status, Conn};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  hako define web.toml\n  hako define small.json --name small \
--autostart\n  hako define web --kernel /boot/vmlinuz --initrd /boot/initrd.img --memory 1G --disk \
/var/lib/img/web.qcow2\n\nA definition file is JSON (TOML if its name ends in .toml): \
{name, uuid?, autostart?, restart_policy?, config}, or a bare VM configuration (as `hako run \
--config` reads; the name is then --name or the file's stem). Relative paths are taken from the \
file's directory. Defining a VM that exists replaces its definition (its configuration only \
while it is not running)."
)]
pub struct DefineArgs {
    /// A definition file, or the name of a VM to define from `hako run` flags.
    #[arg(value_name = "FILE|NAME")]
    target: String,
    /// With FILE: --name, --autostart, --restart-policy. With NAME: the flags of
    /// `hako run` (see `hako run --help`) and those.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    rest: Vec<String>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum PolicyArg {
    Never,
    OnFailure,
}

/// What both forms take.
#[derive(Args, Debug)]
struct DefOpts {
    /// Start the VM when the daemon starts.
    #[arg(long)]
    autostart: bool,
    /// Start the VM again when it crashes (at most 3 times a minute).
    #[arg(long, value_enum)]
    restart_policy: Option<PolicyArg>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Parser, Debug)]
#[command(name = "hako define FILE", no_binary_name = true)]
struct FileForm {
    /// The VM's name (default: the file's, else its stem).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    opts: DefOpts,
}

#[derive(Parser, Debug)]
#[command(name = "hako define NAME", no_binary_name = true)]
struct FlagForm {
    #[command(flatten)]
    run: Box<crate::run::RunArgs>,
    #[command(flatten)]
    opts: DefOpts,
}

/// The definition `a` describes, as JSON for the daemon, and the connection.
fn definition(a: &DefineArgs) -> Result<(Value, Conn)> {
    let path = Path::new(&a.target);
    let (mut v, opts) = if path.is_file() {
        let form = FileForm::try_parse_from(&a.rest).unwrap_or_else(|e| e.exit());
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let v = hakod::definition::file_to_value(&text, path, form.name.as_deref(), base)?;
        (v, form.opts)
    } else {
        let looks_like_file =
            a.target.contains('/') || a.target.ends_with(".json") || a.target.ends_with(".toml");
        if looks_like_file && !path.exists() {
            anyhow::bail!("no definition file {}", a.target);
        }
        if a.rest.is_empty() {
            anyhow::bail!(
                "{} is no file; to define a VM named so from flags, give them (e.g. --kernel)",
                a.target
            );
        }
        hakod::definition::check_name(&a.target)?;
        let form = FlagForm::try_parse_from(&a.rest).unwrap_or_else(|e| e.exit());
        let cfg = crate::run::define_config(*form.run)?;
        let mut config = serde_json::to_value(cfg)?;
        hakod::definition::absolutize_paths(&mut config, Path::new("."));
        (json!({"name": a.target, "config": config}), form.opts)
    };
    if opts.autostart {
        v["autostart"] = json!(true);
    }
    if let Some(p) = opts.restart_policy {
        v["restart_policy"] = json!(match p {
            PolicyArg::Never => "never",
            PolicyArg::OnFailure => "on-failure",
        });
    }
    Ok((v, a.conn.clone().or(opts.conn)))
}

pub fn run(a: DefineArgs) -> Result<i32> {
    let (v, conn) = definition(&a)?;
    let name = v["name"].as_str().unwrap_or_default().to_string();
    let (info, verb) = match conn.call("POST", "/v1/vms", Some(&v)) {
        Ok(info) => (info, "defined"),
        // It exists: this is a new definition for it.
        Err(e)
            if refusal_status(&e) == Some(409)
                && conn.call("GET", &vm_path(&name), None).is_ok() =>
        {
            (conn.call("PUT", &vm_path(&name), Some(&v))?, "redefined")
        }
        Err(e) => return Err(e),
    };
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!(
            "{verb} '{name}' (uuid {})",
            info["definition"]["uuid"].as_str().unwrap_or("-")
        );
    }
    Ok(0)
}

pub fn vm_path(name: &str) -> String {
    format!("/v1/vms/{name}")
}
