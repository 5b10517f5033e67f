//! `hako`: run virtual machines, inspect the host, manage disk images.

mod console;
mod ctl;
mod daemon;
mod host;
mod host_io;
mod img;
mod run;
mod verbs;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "hako",
    version,
    about = "Hakobune: a VMM with a KVM and an emulator accelerator"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a guest kernel with its serial console on this terminal.
    Run(Box<run::RunArgs>),
    /// Report what this host offers for virtualization and which accelerator to use.
    Host(host::HostArgs),
    /// Create, inspect, check, convert and resize disk images (qemu-img conventions).
    Img(img::ImgArgs),
    /// Control a running VM through its API socket (`hako run --api-socket`).
    Ctl(ctl::CtlArgs),
    /// Run the management daemon: VM definitions, one `hako run` per VM, a REST API.
    Daemon(daemon::DaemonArgs),
    #[command(flatten)]
    Verb(verbs::Verb),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HAKO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.cmd {
        Command::Run(a) => run::run(*a),
        Command::Host(a) => host::run(a),
        Command::Img(a) => img::run(a),
        Command::Ctl(a) => ctl::run(a),
        Command::Daemon(a) => daemon::run(a),
        Command::Verb(v) => verbs::run(v),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            // One line naming the cause chain.
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let mut msg = String::new();
            for c in chain {
                if !msg.contains(&c) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&c);
                }
            }
            eprintln!("hako: error: {msg}");
            ExitCode::from(1)
        }
    }
}
