//! `--net KIND[,key=value...]`: which backend a NIC uses.

/// A host port forwarded into the guest (`hostfwd=tcp:127.0.0.1:HPORT-:GPORT`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostFwd {
    pub udp: bool,
    pub host_addr: std::net::Ipv4Addr,
    pub host_port: u16,
    /// 0.0.0.0 means the guest's DHCP address (10.0.2.15).
    pub guest_addr: std::net::Ipv4Addr,
    pub guest_port: u16,
}

/// One `--net`: a backend and, optionally, the NIC's MAC address (`mac=` on any
/// kind; default: 52:54:00:12:34:(56 + index), QEMU's convention).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetSpec {
    pub backend: Backend,
    #[serde(default)]
    pub mac: Option<[u8; 6]>,
}

/// Where a NIC's frames go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Backend {
    /// User-mode networking (libslirp): 10.0.2.0/24, host at 10.0.2.2, DNS 10.0.2.3.
    User {
        hostfwd: Vec<HostFwd>,
        /// The guest reaches nothing but the host forwards.
        restrict: bool,
    },
    /// An existing TAP device (created if missing and we have CAP_NET_ADMIN).
    Tap { ifname: String },
    /// Frames with a 4-byte big-endian length prefix over a Unix stream socket
    /// (QEMU's `-netdev stream`): connect to `path`, or listen on it with `server`.
    Stream {
        path: std::path::PathBuf,
        server: bool,
    },
}
