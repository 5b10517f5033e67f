//! Where a migration stream goes: `tcp:HOST:PORT` or `unix:PATH`.

use std::fmt;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::Conn;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationUri {
    Tcp(String),
    Unix(PathBuf),
}

impl FromStr for MigrationUri {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(a) = s.strip_prefix("tcp:") {
            let (host, port) = a
                .rsplit_once(':')
                .ok_or_else(|| format!("{s}: expected tcp:HOST:PORT"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("{s}: expected tcp:HOST:PORT with a port number"));
            }
            return Ok(MigrationUri::Tcp(a.to_string()));
        }
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(format!("{s}: expected unix:PATH"));
            }
            return Ok(MigrationUri::Unix(p.into()));
        }
        Err(format!(
            "{s}: a migration URI is tcp:HOST:PORT or unix:PATH"
        ))
    }
}

impl fmt::Display for MigrationUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrationUri::Tcp(a) => write!(f, "tcp:{a}"),
            MigrationUri::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// How long either side waits for the other to send or take data.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

impl MigrationUri {
    /// Listens and takes one connection (the destination).
    pub(crate) fn accept(&self) -> Result<Box<dyn Conn>> {
        match self {
            MigrationUri::Tcp(a) => {
                let l = TcpListener::bind(a.as_str())
                    .with_context(|| format!("cannot listen on {a}"))?;
                let (s, peer) = l.accept()?;
                tracing::info!("migration from {peer}");
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Box::new(s))
            }
            MigrationUri::Unix(p) => {
                if p.exists() {
                    bail!("{} exists: remove it or choose another path", p.display());
                }
                let l = UnixListener::bind(p)
                    .with_context(|| format!("cannot listen on {}", p.display()))?;
                let r = l.accept();
                let _ = std::fs::remove_file(p);
                let (s, _) = r?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Box::new(s))
            }
        }
    }

    /// Connects to a waiting destination (the source).
    pub(crate) fn connect(&self) -> Result<Box<dyn Conn>> {
        match self {
            MigrationUri::Tcp(a) => {
                let addr = a
                    .to_socket_addrs()
                    .with_context(|| format!("cannot resolve {a}"))?
                    .next()
                    .with_context(|| format!("{a} resolves to no address"))?;
                let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                    .with_context(|| format!("cannot connect to {a}"))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Box::new(s))
            }
            MigrationUri::Unix(p) => {
                let s = UnixStream::connect(p)
                    .with_context(|| format!("cannot connect to {}", p.display()))?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Box::new(s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_should() {
        assert_eq!(
            "tcp:127.0.0.1:4444".parse(),
            Ok(MigrationUri::Tcp("127.0.0.1:4444".into()))
        );
        assert_eq!(
            "tcp:[::1]:5".parse(),
            Ok(MigrationUri::Tcp("[::1]:5".into()))
        );
        assert_eq!(
            "unix:/tmp/m".parse(),
            Ok(MigrationUri::Unix("/tmp/m".into()))
        );
        for bad in [
            "tcp:host",
            "tcp::4",
            "tcp:h:99999",
            "unix:",
            "exec:cat",
            "x",
        ] {
            assert!(bad.parse::<MigrationUri>().is_err(), "{bad}");
        }
        assert_eq!(MigrationUri::Unix("/a".into()).to_string(), "unix:/a");
    }
}
