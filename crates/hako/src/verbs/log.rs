//! `hako log NAME [-f]`.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::client::{refusal_status, Conn};
use super::VmArgs;

#[derive(Args, Debug)]
pub struct LogArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Keep printing what the VM writes (until Ctrl-C, or the VM is undefined).
    #[arg(short, long)]
    follow: bool,
}

pub fn run(a: LogArgs) -> Result<i32> {
    let path = format!("{}/log", super::checked(&a.vm)?);
    let conn: &Conn = &a.vm.conn;
    if !a.follow {
        let v = conn.call("GET", &path, None)?;
        if conn.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"log": v}))?
            );
        } else if let Some(text) = v.as_str() {
            print!("{text}");
        }
        return Ok(0);
    }
    let mut offset = 0u64;
    let mut out = std::io::stdout();
    loop {
        let chunk = match conn.call("GET", &format!("{path}?offset={offset}"), None) {
            Ok(c) => c,
            // Undefined while followed: the end of its log.
            Err(e) if refusal_status(&e) == Some(404) && offset > 0 => return Ok(0),
            Err(e) => return Err(e),
        };
        if let Some(data) = chunk["data"].as_str() {
            out.write_all(data.as_bytes())?;
            out.flush()?;
        }
        let next = chunk["next"].as_u64().unwrap_or(offset);
        if next == offset {
            std::thread::sleep(Duration::from_millis(250));
        }
        offset = next;
    }
}
