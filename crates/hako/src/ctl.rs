//! `hako ctl`: commands to a running `hako run --api-socket PATH`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use control_api::client;
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The VM's API socket (`hako run --api-socket PATH`).
    #[arg(long, value_name = "PATH")]
    api_socket: PathBuf,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on an answer after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
    #[command(subcommand)]
    cmd: CtlCommand,
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// The VM's state, accelerator, vCPUs, memory, uptime and configuration.
    Info,
    /// Stop every vCPU (the VM keeps its state).
    Pause,
    /// Let a paused VM run again.
    Resume,
    /// Press the ACPI power button (the guest shuts down if it listens).
    Shutdown,
    /// End the VM at once (no guest shutdown).
    Stop,
    /// Write a snapshot directory; `hako run --restore DIR` resumes it.
    Snapshot {
        dir: PathBuf,
        /// Leave the VM paused afterwards.
        #[arg(long)]
        stay_paused: bool,
    },
    /// Show the balloon, or set its target: how much memory the guest should give
    /// back (e.g. 256M; 0 deflates it). Needs `hako run --balloon`.
    Balloon {
        #[arg(value_name = "SIZE", value_parser = vmm::config::parse_size)]
        target: Option<u64>,
    },
    /// Live-migrate the VM to `hako run --incoming URI` (tcp:HOST:PORT or unix:PATH).
    Migrate {
        uri: String,
        /// The longest the VM may be stopped, in milliseconds (0: hand over only
        /// when a round finds no page written).
        #[arg(long, value_name = "MS", default_value_t = 300)]
        downtime_ms: u64,
        /// Give up (the VM runs on here) if memory has not converged after this long.
        #[arg(long, value_name = "SECS", default_value_t = 120)]
        timeout_s: u64,
    },
}

pub fn run(a: CtlArgs) -> Result<i32> {
    let (method, path, body) = match &a.cmd {
        CtlCommand::Info => ("GET", "/v1/vm", None),
        CtlCommand::Pause => ("PUT", "/v1/vm/pause", None),
        CtlCommand::Resume => ("PUT", "/v1/vm/resume", None),
        CtlCommand::Shutdown => ("PUT", "/v1/vm/power-button", None),
        CtlCommand::Stop => ("PUT", "/v1/vm/stop", None),
        CtlCommand::Snapshot { dir, stay_paused } => {
            // The server resolves relative paths against its own directory: send ours.
            let dir = std::path::absolute(dir)?;
            let body = json!({"dir": dir.display().to_string(), "stay_paused": stay_paused});
            ("PUT", "/v1/vm/snapshot", Some(body))
        }
        CtlCommand::Balloon { target: None } => ("GET", "/v1/vm/balloon", None),
        CtlCommand::Balloon { target: Some(t) } => {
            ("PUT", "/v1/vm/balloon", Some(json!({"target_bytes": t})))
        }
        CtlCommand::Migrate {
            uri,
            downtime_ms,
            timeout_s,
        } => {
            let body = json!({"uri": uri, "downtime_ms": downtime_ms, "timeout_s": timeout_s});
            ("PUT", "/v1/vm/migrate", Some(body))
        }
    };
    let timeout = Duration::from_secs(a.timeout.max(1));
    let r = client::request(&a.api_socket, method, path, body.as_ref(), timeout)?;
    if !(200..300).contains(&r.status) {
        if a.json {
            println!("{}", r.body.trim());
        }
        bail!("{} (HTTP {})", r.error_message(), r.status);
    }
    let v = r.json()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    match a.cmd {
        CtlCommand::Info => print_table(&info_rows(&v)),
        CtlCommand::Snapshot { .. } => print_table(&snapshot_rows(&v)),
        CtlCommand::Migrate { .. } => print_table(&migration_rows(&v)),
        CtlCommand::Balloon { .. } => print_table(&balloon_rows(&v)),
        _ => println!("ok"),
    }
    Ok(0)
}

fn s(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn mib(v: &Value, k: &str) -> String {
    v[k].as_u64()
        .map_or("-".into(), |b| format!("{} MiB", b >> 20))
}

fn info_rows(v: &Value) -> Vec<(String, String)> {
    let c = &v["config"];
    let uptime = v["uptime_ms"].as_u64().unwrap_or(0);
    vec![
        ("state".into(), s(v, "state")),
        ("accel".into(), s(v, "accel")),
        ("vcpus".into(), s(v, "vcpus")),
        ("memory".into(), mib(v, "memory_bytes")),
        ("uptime".into(), format!("{:.1} s", uptime as f64 / 1e3)),
        ("kernel".into(), s(c, "kernel")),
        ("cmdline".into(), s(c, "cmdline")),
        (
            "disks".into(),
            c["disks"].as_array().map_or(0, |d| d.len()).to_string(),
        ),
    ]
}

fn snapshot_rows(v: &Value) -> Vec<(String, String)> {
    vec![
        ("dir".into(), s(v, "dir")),
        ("memory".into(), mib(v, "memory_bytes")),
        ("memory data".into(), mib(v, "memory_data_bytes")),
        ("state".into(), format!("{} bytes", s(v, "state_bytes"))),
        (
            "paused for".into(),
            format!("{:.1} ms", v["paused_ms"].as_f64().unwrap_or(0.0)),
        ),
    ]
}

fn migration_rows(v: &Value) -> Vec<(String, String)> {
    let ms = |k: &str| format!("{:.1} ms", v[k].as_f64().unwrap_or(0.0));
    vec![
        ("to".into(), s(v, "uri")),
        ("total".into(), ms("total_ms")),
        ("downtime".into(), ms("downtime_ms")),
        ("rounds".into(), s(v, "rounds")),
        ("pages sent".into(), s(v, "pages_sent")),
        (
            "bandwidth".into(),
            format!("{:.0} MiB/s", v["bandwidth_mib_s"].as_f64().unwrap_or(0.0)),
        ),
    ]
}

fn print_table(rows: &[(String, String)]) {
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<w$}  {v}");
    }
}

fn balloon_rows(v: &Value) -> Vec<(String, String)> {
    let st = &v["stats"];
    vec![
        ("target".into(), mib(v, "target_bytes")),
        ("given back".into(), mib(v, "actual_bytes")),
        ("reported free".into(), mib(v, "reported_bytes")),
        ("guest total".into(), mib(st, "total_memory")),
        ("guest free".into(), mib(st, "free_memory")),
        ("guest available".into(), mib(st, "available_memory")),
    ]
}
