//! `hako host`.

use anyhow::Result;
use clap::Args;
use vmm::AccelKind;

#[derive(Args, Debug)]
pub struct HostArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: HostArgs) -> Result<i32> {
    let report = accel_kvm::probe::probe();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(0)
}

/// The accelerator `--accel auto` picks on this host.
pub fn auto_accel() -> AccelKind {
    let report = accel_kvm::probe::probe();
    match report.recommended_accel().0 {
        accel_kvm::probe::Accel::Kvm => AccelKind::Kvm,
        accel_kvm::probe::Accel::Emu => AccelKind::Emu,
    }
}
