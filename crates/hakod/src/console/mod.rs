//! A VM's serial console over a WebSocket (`GET /v1/vms/{name}/console`), for
//! `hako console` and the web console: the console buffer first (so a late viewer
//! sees the boot), then live output; any number of viewers, one of whom may type.
//!
//! Input reaches the guest through a FIFO, `run/NAME.in`, which is the stdin of the
//! VM's `hako run` ([`fifo`]); [`typist`] decides who may type; [`session`] is one
//! viewer's connection, [`ws`] the route.

pub mod fifo;
pub(crate) mod session;
pub mod typist;
pub(crate) mod ws;

pub use typist::Typist;
