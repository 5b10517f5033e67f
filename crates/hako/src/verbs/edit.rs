//! `hako edit NAME`: the VM's definition in `$EDITOR` (as JSON), checked here and
//! by the daemon before it replaces the old one, as `virsh edit` does.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

use super::{checked, print_or, VmArgs};

#[derive(Args, Debug)]
#[command(
    after_help = "The editor is $VISUAL, else $EDITOR, else vi. A definition that \
does not parse or that the daemon refuses is shown with the reason; at a terminal you may \
edit it again. Name and uuid cannot change; a running VM's configuration cannot either \
(its autostart and restart_policy can)."
)]
pub struct EditArgs {
    #[command(flatten)]
    vm: VmArgs,
}

fn editor() -> String {
    ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".into())
}

/// Runs the editor on `file` (through the shell, so `EDITOR="code -w"` works).
fn run_editor(file: &Path) -> Result<()> {
    let ed = editor();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("{ed} \"$1\""))
        .arg("sh")
        .arg(file)
        .status()
        .with_context(|| format!("cannot run the editor {ed}"))?;
    if !st.success() {
        bail!("the editor {ed} failed ({st}); the definition is unchanged");
    }
    Ok(())
}

/// At a terminal: whether to edit again after a refusal.
fn again() -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("Edit again? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}

pub fn run(a: EditArgs) -> Result<i32> {
    let path = checked(&a.vm)?;
    let info = a.vm.conn.call("GET", &path, None)?;
    let old = info["definition"].clone();
    let tmp = tempfile::Builder::new()
        .prefix(&format!("hako-edit-{}-", a.vm.name))
        .suffix(".json")
        .tempfile()
        .context("cannot make a temporary file")?;
    let text = serde_json::to_string_pretty(&old)? + "\n";
    std::fs::write(tmp.path(), &text).context("cannot write the temporary file")?;
    loop {
        run_editor(tmp.path())?;
        let edited = std::fs::read_to_string(tmp.path()).context("cannot read the edit")?;
        let checked_here =
            hakod::definition::file_to_value(&edited, tmp.path(), None, Path::new("/"))
                .and_then(|v| hakod::Definition::from_value(v.clone(), None).map(|_| v));
        let new: Value = match checked_here {
            Ok(v) => v,
            Err(e) => {
                eprintln!("hako: error: {e}");
                if again() {
                    continue;
                }
                bail!("the definition of '{}' is unchanged", a.vm.name);
            }
        };
        if new == old {
            println!("'{}': no change", a.vm.name);
            return Ok(0);
        }
        match a.vm.conn.call("PUT", &path, Some(&new)) {
            Ok(v) => {
                return print_or(&a.vm.conn, &v, |_| {
                    println!("the definition of '{}' is saved", a.vm.name)
                })
            }
            Err(e) => {
                eprintln!("hako: error: {e}");
                if again() {
                    continue;
                }
                bail!("the definition of '{}' is unchanged", a.vm.name);
            }
        }
    }
}
