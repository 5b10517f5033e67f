//! The management daemon of `hako daemon` (stage 1 of issue 11): persistent VM
//! definitions in a state directory, one supervised `hako run` process per VM
//! (so a VMM crash never takes the daemon down, and a daemon crash never takes
//! the VMs down), and a REST API on a Unix socket. See docs/daemon.md.
//!
//! Layout: [`definition`] (what a VM is), [`store`] (the files), [`vm`] (a VM's
//! entry and state), [`process`] (its `hako run`), [`lifecycle`] (start, stop,
//! exits, restarts), [`daemon`] (the table, adoption at start), [`api`] (the
//! routes and their OpenAPI document), [`server`] (sockets and runtime),
//! [`console`] (the console over a WebSocket, and its input), [`web`] (the web
//! console's page and the loopback HTTP listener's guard).

pub mod api;
pub mod console;
pub mod daemon;
pub mod definition;
pub mod disk_copy;
pub mod error;
pub mod events;
pub mod lifecycle;
pub mod migrate;
pub mod paths;
pub(crate) mod process;
pub mod procfs;
pub mod ring;
pub mod server;
pub mod snapshots;
pub mod store;
pub(crate) mod vm;
pub mod web;

pub use daemon::Daemon;
pub use definition::{Definition, RestartPolicy};
pub use error::{Error, Result};
pub use server::{run, Options};
