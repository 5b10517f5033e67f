//! The verbs that manage VMs through the daemon (`hako daemon`): define,
//! undefine, start, shutdown, destroy, reboot, suspend, resume, list, info, log,
//! autostart, console, edit, snapshot-*, migrate. Each is one or two requests to
//! the daemon's API (console: a WebSocket).

mod client;
mod console;
mod define;
mod edit;
mod log;
mod show;
mod snapshot;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::Value;

use client::Conn;
use define::vm_path;

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Define a VM in the daemon: from a file (JSON or TOML), or a name and the
    /// flags of `hako run`.
    Define(define::DefineArgs),
    /// Forget a VM that is not running (its definition and files).
    Undefine(VmArgs),
    /// Start a VM (answers once it runs).
    Start(VmArgs),
    /// Press a VM's ACPI power button: a guest that listens powers off.
    Shutdown(ShutdownArgs),
    /// End a VM at once (no guest shutdown).
    Destroy(VmArgs),
    /// Shut a VM down (destroy it if it has not powered off in time) and start it.
    Reboot(RebootArgs),
    /// Pause a VM's vCPUs.
    Suspend(VmArgs),
    /// Let a suspended VM run again.
    Resume(VmArgs),
    /// List the running VMs (with --all: every defined VM).
    List(ListArgs),
    /// Show a VM's definition and state.
    Info(VmArgs),
    /// Print a VM's console output (the last 1 MiB); -f follows it.
    Log(log::LogArgs),
    /// Start a VM when the daemon starts (--disable: no longer).
    Autostart(AutostartArgs),
    /// Attach this terminal to a running VM's serial console (Ctrl-] detaches).
    Console(console::ConsoleArgs),
    /// Edit a VM's definition in $EDITOR; it is checked by the daemon before it
    /// is saved.
    Edit(edit::EditArgs),
    /// Snapshot a running VM: memory, devices and its writable disks.
    SnapshotCreate(snapshot::CreateArgs),
    /// List a VM's snapshots.
    SnapshotList(VmArgs),
    /// Revert a VM to a snapshot (it runs from that moment; its disks go back too).
    SnapshotRevert(snapshot::SnapArgs),
    /// Delete a snapshot.
    SnapshotDelete(snapshot::SnapArgs),
    /// Live-migrate a running VM to another daemon.
    Migrate(snapshot::MigrateArgs),
}

#[derive(Args, Debug)]
pub struct VmArgs {
    /// The VM's name.
    name: String,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args, Debug)]
pub struct ShutdownArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Wait up to this many seconds for the guest to power off.
    #[arg(long, value_name = "SECS")]
    wait: Option<u64>,
}

#[derive(Args, Debug)]
pub struct RebootArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Destroy the VM at once instead of pressing its power button first.
    #[arg(long)]
    force: bool,
    /// How long the guest has to power off before it is destroyed (default 30).
    #[arg(long, value_name = "SECS")]
    wait: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Every defined VM, not only the running ones.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args, Debug)]
pub struct AutostartArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Do not start it when the daemon starts.
    #[arg(long)]
    disable: bool,
}

/// A name that cannot be a VM's is refused before it goes into a URL.
fn checked(vm: &VmArgs) -> Result<String> {
    if hakod::definition::check_name(&vm.name).is_err() {
        anyhow::bail!("no VM named '{}'", vm.name);
    }
    Ok(vm_path(&vm.name))
}

/// A lifecycle action: `PUT /v1/vms/NAME/ACTION[?query]`, then its status.
fn action(vm: &VmArgs, action: &str, query: &str) -> Result<i32> {
    let path = format!("{}/{action}{query}", checked(vm)?);
    let v = vm.conn.call("PUT", &path, None)?;
    print_or(&vm.conn, &v, show::status_line)
}

fn print_or(conn: &Conn, v: &Value, table: impl FnOnce(&Value)) -> Result<i32> {
    if conn.json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        table(v);
    }
    Ok(0)
}

pub fn run(v: Verb) -> Result<i32> {
    match v {
        Verb::Define(a) => define::run(a),
        Verb::Undefine(vm) => {
            let v = vm.conn.call("DELETE", &checked(&vm)?, None)?;
            print_or(&vm.conn, &v, |_| println!("undefined '{}'", vm.name))
        }
        Verb::Start(vm) => action(&vm, "start", ""),
        Verb::Shutdown(a) => {
            let q = a.wait.map(|w| format!("?wait_s={w}")).unwrap_or_default();
            action(&a.vm, "shutdown", &q)
        }
        Verb::Destroy(vm) => action(&vm, "destroy", ""),
        Verb::Reboot(a) => {
            let mut q = vec![];
            if a.force {
                q.push("force=true".to_string());
            }
            if let Some(w) = a.wait {
                q.push(format!("wait_s={w}"));
            }
            let q = if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            };
            action(&a.vm, "reboot", &q)
        }
        Verb::Suspend(vm) => action(&vm, "suspend", ""),
        Verb::Resume(vm) => action(&vm, "resume", ""),
        Verb::List(a) => {
            let v = a.conn.call("GET", "/v1/vms", None)?;
            print_or(&a.conn, &v, |v| show::list(v, a.all))
        }
        Verb::Info(vm) => {
            let v = vm.conn.call("GET", &checked(&vm)?, None)?;
            print_or(&vm.conn, &v, show::info)
        }
        Verb::Log(a) => log::run(a),
        Verb::Console(a) => console::run(a),
        Verb::Edit(a) => edit::run(a),
        Verb::SnapshotCreate(a) => snapshot::create(a),
        Verb::SnapshotList(vm) => snapshot::list(vm),
        Verb::SnapshotRevert(a) => snapshot::revert(a),
        Verb::SnapshotDelete(a) => snapshot::delete(a),
        Verb::Migrate(a) => snapshot::migrate(a),
        Verb::Autostart(a) => {
            let path = checked(&a.vm)?;
            let info = a.vm.conn.call("GET", &path, None)?;
            let mut def = info["definition"].clone();
            def["autostart"] = Value::Bool(!a.disable);
            let v = a.vm.conn.call("PUT", &path, Some(&def))?;
            print_or(&a.vm.conn, &v, |_| {
                let how = if a.disable {
                    "no longer starts"
                } else {
                    "starts"
                };
                println!("'{}' {how} when the daemon starts", a.vm.name)
            })
        }
    }
}
