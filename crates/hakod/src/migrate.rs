//! Live migration between daemons.
//!
//! The source daemon (`PUT /v1/vms/{name}/migrate`) hands the VM's definition to
//! the destination daemon (`POST /v1/incoming`), which defines the VM (or takes
//! the definition over, when it has one with the same uuid that is not running)
//! and starts `hako run --incoming unix:run/NAME.incoming --api-socket ...`; once
//! that listens, the destination answers with the URI and the source tells its VM
//! process to migrate there (the VM API's `PUT /v1/vm/migrate`). When the guest
//! runs on the destination the source process ends with status 0 and the VM shows
//! as `defined` on the source (its definition stays, as libvirt keeps an inactive
//! domain); the destination's start completes when its process answers on its API.
//! A migration that fails leaves the VM running on the source; on the destination
//! a definition made for it is removed again, one it had stays `defined`.
//!
//! The destination daemon is reached on its socket (`unix:PATH`, a daemon on this
//! host: the stream then goes over a Unix socket too) or on its `--http` listener
//! (`tcp:HOST:PORT`, with its bearer token: the destination's process then listens
//! for the stream on `tcp:HOST:FREE-PORT`, HOST as the source named it). Both
//! daemons must see the VM's disks at the same paths (shared storage, or the same
//! host).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::daemon::Daemon;
use crate::definition::Definition;
use crate::error::{Error, Result};
use crate::lifecycle::{api_refusal, wait_exit, End};
use crate::process::{self, Boot, SUN_PATH_MAX};
use crate::procfs;
use crate::vm::{Phase, Slot};

/// How long the destination's process has to listen for the stream.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The migration's own timeout when the request gives none (the VM API's default).
const DEFAULT_TIMEOUT_S: u64 = 120;

/// `PUT /v1/vms/{name}/migrate`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The destination daemon: `unix:PATH` of its socket, or `tcp:HOST:PORT` of its
    /// `--http` listener.
    pub destination: String,
    /// The bearer token of a `tcp:` destination's listener.
    #[serde(default)]
    pub token: Option<String>,
    /// The longest the VM may be stopped, in milliseconds (default 300).
    #[serde(default)]
    pub downtime_ms: Option<u64>,
    /// Give up, the VM still running here, if memory has not converged after this
    /// many seconds (default 120).
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// What `PUT /v1/vms/{name}/migrate` answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MigrateReport {
    pub vm: String,
    pub destination: String,
    /// The stream's URI, as the destination chose it.
    pub uri: String,
    /// The VM API's migration report (downtime, rounds, bytes, bandwidth).
    #[schema(value_type = Object)]
    pub report: Value,
}

/// `POST /v1/incoming`: a VM to receive.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncomingRequest {
    /// The VM's definition on the source (its uuid is kept).
    #[schema(value_type = Object)]
    pub definition: Value,
    /// How long the destination waits for the migration to complete (seconds).
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Receive the stream over TCP on this host (the name or address the source
    /// reached this daemon by); without it, over a Unix socket.
    #[serde(default)]
    pub tcp_host: Option<String>,
}

/// What `POST /v1/incoming` answers once the destination listens.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncomingReady {
    /// Where the source's VM sends its stream.
    pub uri: String,
}

/// Where the destination daemon is.
#[derive(Debug, Clone)]
enum Dest {
    Unix(PathBuf),
    /// `HOST:PORT`, its host, and the token.
    Tcp(String, String, Option<String>),
}

impl Dest {
    fn parse(dest: &str, token: Option<String>) -> Result<Dest> {
        if let Some(p) = dest.strip_prefix("unix:").filter(|p| !p.is_empty()) {
            return Ok(Dest::Unix(PathBuf::from(p)));
        }
        if let Some(a) = dest.strip_prefix("tcp:") {
            if let Some((host, port)) = a.rsplit_once(':') {
                if !host.is_empty() && port.parse::<u16>().is_ok() {
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    return Ok(Dest::Tcp(a.to_string(), host.to_string(), token));
                }
            }
        }
        Err(Error::BadRequest(format!(
            "{dest}: the destination is a daemon: unix:PATH of its socket, or \
             tcp:HOST:PORT of its --http listener"
        )))
    }

    /// One request to the daemon there (on the blocking pool).
    async fn request(
        &self,
        method: &'static str,
        path: &'static str,
        body: Value,
        timeout: Duration,
    ) -> Result<control_api::client::Response> {
        let d = self.clone();
        process::on_blocking_pool(move || {
            let r = match &d {
                Dest::Unix(p) => {
                    control_api::client::request(p, method, path, Some(&body), timeout)
                }
                Dest::Tcp(a, _, t) => control_api::client::request_tcp(
                    a,
                    t.as_deref(),
                    method,
                    path,
                    Some(&body),
                    timeout,
                ),
            };
            r.map_err(|e| Error::Failed(format!("the destination daemon: {e:#}")))
        })
        .await
    }
}

/// Where the destination's process waits for the stream.
enum Listen {
    Unix(PathBuf),
    /// `HOST:PORT` (IPv6 in brackets).
    Tcp(String),
}

impl Listen {
    /// Whether it listens (a TCP listener is looked up in /proc, not connected
    /// to: it accepts one connection only).
    fn ready(&self) -> bool {
        match self {
            Listen::Unix(p) => p.exists(),
            Listen::Tcp(a) => a
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .is_some_and(procfs::tcp_listening),
        }
    }
}

/// `HOST:PORT` with a port free on `host` now (the system's choice).
fn free_port(host: &str) -> Result<String> {
    let bracketed = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let l = std::net::TcpListener::bind(format!("{bracketed}:0")).map_err(Error::io(format!(
        "cannot listen on {host} for the migration stream"
    )))?;
    let port = l
        .local_addr()
        .map_err(Error::io("cannot read a listener's address"))?
        .port();
    Ok(format!("{bracketed}:{port}"))
}

impl Daemon {
    /// `PUT /v1/vms/{name}/migrate`: moves the running VM to another daemon.
    pub async fn migrate(
        self: &Arc<Self>,
        name: &str,
        req: MigrateRequest,
    ) -> Result<MigrateReport> {
        let slot = self.slot(name)?;
        let _g = slot.op.lock().await;
        Self::check_present(&slot)?;
        let run = Self::running(&slot)?;
        let dest = Dest::parse(&req.destination, req.token.clone())?;
        let def = slot.inner().def.clone();
        let timeout_s = req.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
        let mut body = serde_json::json!({
            "definition": serde_json::to_value(&def).map_err(|e| Error::Failed(e.to_string()))?,
            "timeout_s": timeout_s + 30,
        });
        if let Dest::Tcp(_, host, _) = &dest {
            body["tcp_host"] = host.clone().into();
        }
        let r = dest
            .request("POST", "/v1/incoming", body, Duration::from_secs(30))
            .await?;
        if r.status != 200 {
            let msg = format!("the destination refused '{name}': {}", r.error_message());
            return Err(if r.status == 409 {
                Error::Conflict(msg)
            } else {
                Error::Failed(msg)
            });
        }
        let uri = r
            .json()
            .ok()
            .and_then(|v| v.get("uri").and_then(|u| u.as_str()).map(str::to_string))
            .ok_or_else(|| Error::Failed("the destination did not say where to send".into()))?;
        slot.note_in_log(&format!("migrating to {} ({uri})", req.destination));
        let mut body = serde_json::json!({"uri": uri, "timeout_s": timeout_s});
        if let Some(d) = req.downtime_ms {
            body["downtime_ms"] = d.into();
        }
        let api = self.sd.api_socket(name);
        let limit = Duration::from_secs(timeout_s + 60);
        let r = process::vm_api_json(api, "PUT", "/v1/vm/migrate", body, limit).await?;
        if r.status != 200 {
            slot.note_in_log("the migration failed; the VM runs here still");
            return Err(api_refusal(name, &r));
        }
        let report = r.json().unwrap_or_default();
        let mut exited = run.exited;
        if wait_exit(&mut exited, Duration::from_secs(10)).await {
            let info = exited.borrow().unwrap_or_default();
            self.finalize(&slot, run.generation, info, End::Expected);
        }
        slot.note_in_log(&format!("migrated to {}", req.destination));
        Ok(MigrateReport {
            vm: name.to_string(),
            destination: req.destination,
            uri,
            report,
        })
    }

    /// `POST /v1/incoming`: defines (or takes over) the VM and starts a process
    /// waiting for its stream; answers once that listens.
    pub async fn incoming(self: &Arc<Self>, req: IncomingRequest) -> Result<IncomingReady> {
        let def = Definition::from_value(req.definition, None)?;
        let name = def.name.clone();
        let (slot, created) = self.take_incoming_definition(def)?;
        let listen = match &req.tcp_host {
            Some(host) => Listen::Tcp(free_port(host)?),
            None => Listen::Unix(self.sd.run_dir().join(format!("{name}.incoming"))),
        };
        let uri = match &listen {
            Listen::Unix(sock) => {
                if sock.as_os_str().len() > SUN_PATH_MAX {
                    return Err(Error::Failed(format!(
                        "{} is longer than a Unix socket path may be",
                        sock.display()
                    )));
                }
                let _ = std::fs::remove_file(sock);
                format!("unix:{}", sock.display())
            }
            Listen::Tcp(a) => format!("tcp:{a}"),
        };
        let limit = Duration::from_secs(req.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S + 30));
        let d = self.clone();
        let boot = Boot::Incoming(uri.clone());
        let task = tokio::spawn(async move {
            let _g = slot.op.lock().await;
            let r = d.start_from(&slot, &boot, limit).await;
            if let Err(e) = &r {
                d.incoming_failed(&slot, created, e);
            }
            r
        });
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            if listen.ready() {
                return Ok(IncomingReady { uri });
            }
            if task.is_finished() {
                return match task.await {
                    Ok(Err(e)) => Err(e),
                    _ => Err(Error::Failed(format!("'{name}' ended before it listened"))),
                };
            }
            if Instant::now() > deadline {
                return Err(Error::Failed(format!(
                    "'{name}' did not listen on {uri} within {} s",
                    LISTEN_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A migration into `slot` failed: a definition made for it goes again, one
    /// that was here shows as defined (nothing of it ran), with a note.
    fn incoming_failed(self: &Arc<Self>, slot: &Arc<Slot>, created: bool, e: &Error) {
        tracing::warn!("{}: incoming migration failed: {e}", slot.name);
        if created {
            if let Err(e) = self.remove_vm(slot) {
                tracing::warn!("{}: {e}", slot.name);
            }
            return;
        }
        let mut g = slot.inner();
        if matches!(g.phase, Phase::Crashed) {
            g.phase = Phase::Defined;
        }
        g.note = Some(format!("incoming migration failed: {e}"));
    }
}
