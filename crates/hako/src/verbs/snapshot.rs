//! `hako snapshot-create|snapshot-list|snapshot-revert|snapshot-delete` and
//! `hako migrate`: the daemon's snapshots and live migration.

use anyhow::Result;
use clap::Args;
use serde_json::{json, Value};

use super::{checked, print_or, show, VmArgs};

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// The snapshot's name (default: the Unix time).
    #[arg(value_name = "SNAPSHOT")]
    snapshot: Option<String>,
}

#[derive(Args, Debug)]
pub struct SnapArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// The snapshot's name (see `hako snapshot-list NAME`).
    #[arg(value_name = "SNAPSHOT")]
    snapshot: String,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  hako migrate web unix:/run/hako-b/hako.sock\n  \
hako migrate web tcp:host2:8080 --token-file ~/.config/hako/host2.token\n\n\
The destination is another daemon: its socket, or its --http listener with its token. \
It defines the VM (keeping its uuid), \
receives it and runs it; here the VM stays defined, not running. Both daemons must see \
the VM's disks at the same paths."
)]
pub struct MigrateArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// The destination daemon: unix:PATH of its socket, or tcp:HOST:PORT of its
    /// --http listener (with --token-file).
    #[arg(value_name = "URI")]
    destination: String,
    /// The file holding the bearer token of a tcp: destination's listener.
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    /// The longest the VM may be stopped, in milliseconds (default 300).
    #[arg(long, value_name = "MS")]
    downtime_ms: Option<u64>,
    /// Give up (the VM still running here) if memory has not converged in this
    /// many seconds (default 120).
    #[arg(long, value_name = "SECS")]
    migrate_timeout: Option<u64>,
}

fn snap_path(vm: &VmArgs, snap: &str) -> Result<String> {
    if hakod::definition::check_name(snap).is_err() {
        anyhow::bail!("no snapshot named '{snap}'");
    }
    Ok(format!("{}/snapshots/{snap}", checked(vm)?))
}

fn snapshot_line(v: &Value) {
    let disks = v["disks"].as_array().map_or(0, Vec::len);
    println!(
        "snapshot '{}' of '{}' taken: {} of memory, {} disk(s), paused {:.0} ms",
        v["name"].as_str().unwrap_or("?"),
        v["vm"].as_str().unwrap_or("?"),
        show::size(v["memory_data_bytes"].as_u64().unwrap_or(0)),
        disks,
        v["paused_ms"].as_f64().unwrap_or(0.0)
    );
}

pub fn create(a: CreateArgs) -> Result<i32> {
    let path = format!("{}/snapshots", checked(&a.vm)?);
    let body = match &a.snapshot {
        Some(n) => json!({ "name": n }),
        None => json!({}),
    };
    let v = a.vm.conn.call("POST", &path, Some(&body))?;
    print_or(&a.vm.conn, &v, snapshot_line)
}

pub fn list(vm: VmArgs) -> Result<i32> {
    let path = format!("{}/snapshots", checked(&vm)?);
    let v = vm.conn.call("GET", &path, None)?;
    print_or(&vm.conn, &v, show::snapshots)
}

pub fn revert(a: SnapArgs) -> Result<i32> {
    let path = format!("{}/revert", snap_path(&a.vm, &a.snapshot)?);
    let v = a.vm.conn.call("PUT", &path, None)?;
    print_or(&a.vm.conn, &v, show::status_line)
}

pub fn delete(a: SnapArgs) -> Result<i32> {
    let v =
        a.vm.conn
            .call("DELETE", &snap_path(&a.vm, &a.snapshot)?, None)?;
    print_or(&a.vm.conn, &v, |_| {
        println!("deleted snapshot '{}' of '{}'", a.snapshot, a.vm.name)
    })
}

pub fn migrate(a: MigrateArgs) -> Result<i32> {
    let path = format!("{}/migrate", checked(&a.vm)?);
    let mut body = json!({ "destination": a.destination });
    if let Some(f) = &a.token_file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", f.display()))?;
        body["token"] = text.lines().next().unwrap_or("").trim().into();
    }
    if let Some(d) = a.downtime_ms {
        body["downtime_ms"] = d.into();
    }
    if let Some(t) = a.migrate_timeout {
        body["timeout_s"] = t.into();
    }
    let v = a.vm.conn.call("PUT", &path, Some(&body))?;
    print_or(&a.vm.conn, &v, |v| {
        let r = &v["report"];
        println!(
            "'{}' migrated to {}: downtime {:.1} ms, {} in {:.0} ms",
            a.vm.name,
            a.destination,
            r["downtime_ms"].as_f64().unwrap_or(0.0),
            show::size(r["bytes_sent"].as_u64().unwrap_or(0)),
            r["total_ms"].as_f64().unwrap_or(0.0)
        )
    })
}
