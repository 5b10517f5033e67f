//! The per-VM control API of `hako run --api-socket PATH`: HTTP/1.1 + JSON on a Unix
//! socket, described by an OpenAPI 3 document (`GET /openapi.json`, checked in as
//! `docs/api/openapi.json`), and the client `hako ctl` uses. The management daemon
//! builds on exactly this API.

pub mod client;
pub mod openapi;
pub mod server;
pub mod types;

pub use server::{serve, ApiServer};
