//! How the verbs reach the daemon: the socket, one request, one-line errors.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use control_api::client;
use serde_json::Value;

/// The options every verb takes.
#[derive(Args, Debug, Clone, Default)]
pub struct Conn {
    /// The daemon's socket (default: $HAKO_SOCKET, else /run/hako/hako.sock as
    /// root and $XDG_RUNTIME_DIR/hako/hako.sock otherwise).
    #[arg(long, value_name = "PATH")]
    pub connect: Option<PathBuf>,
    /// Print the daemon's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Give up on an answer after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub timeout: u64,
}

/// A failed request: the daemon's one-line message and the HTTP status.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

impl Conn {
    /// Takes the options given after a verb's arguments, where given.
    pub fn or(self, later: Conn) -> Conn {
        Conn {
            connect: later.connect.or(self.connect),
            json: self.json || later.json,
            timeout: if later.timeout != 600 {
                later.timeout
            } else {
                self.timeout
            },
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.connect
            .clone()
            .or_else(|| std::env::var_os("HAKO_SOCKET").map(PathBuf::from))
            .unwrap_or_else(hakod::paths::default_socket)
    }

    /// One request; the body of a success as JSON (or as text, for text answers).
    /// A refusal is a [`Refused`] error.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let r = self.raw(method, path, body)?;
        if !(200..300).contains(&r.status) {
            return Err(Refused {
                status: r.status,
                message: r.error_message(),
            }
            .into());
        }
        Ok(r.json().unwrap_or(Value::String(r.body)))
    }

    fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> Result<client::Response> {
        let sock = self.socket();
        if let Err(e) = std::os::unix::net::UnixStream::connect(&sock) {
            use std::io::ErrorKind::*;
            match e.kind() {
                NotFound | ConnectionRefused => bail!(
                    "the daemon is not running at {} (start it with `hako daemon`)",
                    sock.display()
                ),
                PermissionDenied => bail!(
                    "cannot connect to the daemon at {}: permission denied (the socket is for \
                     its owner and the hako group)",
                    sock.display()
                ),
                _ => bail!("cannot connect to the daemon at {}: {e}", sock.display()),
            }
        }
        let timeout = Duration::from_secs(self.timeout.max(1));
        client::request(&sock, method, path, body, timeout)
    }
}

/// The status of a refusal, if `e` is one.
pub fn refusal_status(e: &anyhow::Error) -> Option<u16> {
    e.downcast_ref::<Refused>().map(|r| r.status)
}
