//! `--net KIND[,key=value...]`: which backend a NIC uses.
//!
//! The syntax follows QEMU's `-netdev` where it has an equivalent:
//!
//! ```text
//! user[,hostfwd=[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT]...[,restrict=on|off][,mac=M]
//! tap,ifname=NAME[,mac=M]
//! stream,path=SOCKET[,server=on|off][,mac=M]
//! ```
//!
//! Differences from QEMU, on purpose: an empty `HOSTADDR` binds 127.0.0.1 (QEMU binds
//! every address), so a forward is reachable from this host only unless an address
//! (e.g. `0.0.0.0`) is given. An empty `GUESTADDR` is stored as 0.0.0.0, which libslirp
//! reads as "the guest's DHCP address" (10.0.2.15). A `,,` in a value is a literal
//! comma (QEMU's escape), so paths may hold commas.
//!
//! ```
//! let spec: net::NetSpec = "user,hostfwd=tcp::2222-:22".parse().unwrap();
//! assert_eq!(spec.to_string(), "user,hostfwd=tcp:127.0.0.1:2222-:22");
//! ```

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

/// A host port forwarded into the guest (`hostfwd=tcp:127.0.0.1:HPORT-:GPORT`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostFwd {
    /// UDP rather than TCP.
    pub udp: bool,
    /// The host address to listen on (127.0.0.1 unless given).
    pub host_addr: std::net::Ipv4Addr,
    /// The host port to listen on.
    pub host_port: u16,
    /// 0.0.0.0 means the guest's DHCP address (10.0.2.15).
    pub guest_addr: std::net::Ipv4Addr,
    /// The guest port connections go to.
    pub guest_port: u16,
}

/// One `--net`: a backend and, optionally, the NIC's MAC address (`mac=` on any
/// kind; default: 52:54:00:12:34:(56 + index), QEMU's convention).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetSpec {
    /// Where the NIC's frames go.
    pub backend: Backend,
    /// The NIC's MAC address, if `mac=` was given.
    #[serde(default)]
    pub mac: Option<[u8; 6]>,
}

/// Where a NIC's frames go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Backend {
    /// User-mode networking (libslirp): 10.0.2.0/24, host at 10.0.2.2, DNS 10.0.2.3.
    User {
        /// Host ports forwarded into the guest.
        hostfwd: Vec<HostFwd>,
        /// The guest reaches nothing but the host forwards.
        restrict: bool,
    },
    /// An existing TAP device (created if missing and we have CAP_NET_ADMIN).
    Tap {
        /// The interface name (at most 15 bytes).
        ifname: String,
    },
    /// Frames with a 4-byte big-endian length prefix over a Unix stream socket
    /// (QEMU's `-netdev stream`): connect to `path`, or listen on it with `server`.
    Stream {
        /// The Unix socket.
        path: std::path::PathBuf,
        /// Listen on `path` (one peer at a time) rather than connect to it.
        server: bool,
    },
}

/// The kinds `--net` knows, for error messages.
const KINDS: &str = "user, tap, stream";

/// The guest network of `user` (QEMU's): forwards may only target it.
const USER_NET: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 0);

/// The longest Unix socket path (`sun_path` holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A `--net` value that does not parse: the message names the bad part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

impl NetSpec {
    /// The MAC the NIC at position `index` (0-based among `--net`s) uses: `mac=`
    /// if given, else QEMU's 52:54:00:12:34:(0x56 + index).
    pub fn mac_or_default(&self, index: usize) -> [u8; 6] {
        self.mac.unwrap_or([
            0x52,
            0x54,
            0x00,
            0x12,
            0x34,
            0x56u8.wrapping_add(index as u8),
        ])
    }
}

impl FromStr for NetSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let mut parts = split_options(s).into_iter();
        let kind = parts.next().unwrap_or_default();
        let err = |msg: String| SpecError(format!("--net {kind}: {msg}"));
        let mut opts = Vec::new();
        for part in parts {
            match part.split_once('=') {
                Some((k, v)) => opts.push((k.to_string(), v.to_string())),
                None => return Err(err(format!("'{part}' is not key=value"))),
            }
        }
        let known: &[&str] = match kind.as_str() {
            "user" => &["hostfwd", "restrict", "mac"],
            "tap" => &["ifname", "mac"],
            "stream" => &["path", "server", "mac"],
            "" => return Err(SpecError(format!("--net: empty; expected one of {KINDS}"))),
            other => {
                return Err(SpecError(format!(
                    "--net {other}: unknown kind '{other}' (known: {KINDS})"
                )))
            }
        };
        for (k, _) in &opts {
            if !known.contains(&k.as_str()) {
                return Err(err(format!(
                    "unknown key '{k}' (known: {})",
                    known.join(", ")
                )));
            }
            if k != "hostfwd" && opts.iter().filter(|(o, _)| o == k).count() > 1 {
                return Err(err(format!("{k}= given twice")));
            }
        }
        let get = |key: &str| opts.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let flag = |key: &str| match get(key) {
            None | Some("off") => Ok(false),
            Some("on") => Ok(true),
            Some(v) => Err(err(format!("{key}={v}: expected on or off"))),
        };
        let mac = get("mac")
            .map(|v| parse_mac(v).map_err(|m| err(format!("mac={v}: {m}"))))
            .transpose()?;
        let backend = match kind.as_str() {
            "user" => {
                let hostfwd = opts
                    .iter()
                    .filter(|(k, _)| k == "hostfwd")
                    .map(|(_, v)| parse_hostfwd(v).map_err(|m| err(format!("hostfwd={v}: {m}"))))
                    .collect::<Result<Vec<_>, _>>()?;
                Backend::User {
                    hostfwd,
                    restrict: flag("restrict")?,
                }
            }
            "tap" => {
                let ifname = get("ifname").ok_or_else(|| err("ifname=NAME is required".into()))?;
                check_ifname(ifname).map_err(|m| err(format!("ifname={ifname}: {m}")))?;
                Backend::Tap {
                    ifname: ifname.to_string(),
                }
            }
            _ => {
                let path = get("path").ok_or_else(|| err("path=SOCKET is required".into()))?;
                if path.is_empty() {
                    return Err(err("path= is empty".into()));
                }
                if path.len() > MAX_SOCKET_PATH {
                    return Err(err(format!(
                        "path is {} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH}",
                        path.len()
                    )));
                }
                Backend::Stream {
                    path: PathBuf::from(path),
                    server: flag("server")?,
                }
            }
        };
        Ok(NetSpec { backend, mac })
    }
}

/// Splits `a,b=c,,d` at single commas; `,,` is a literal comma.
fn split_options(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                parts.last_mut().expect("never empty").push(',');
            } else {
                parts.push(String::new());
            }
        } else {
            parts.last_mut().expect("never empty").push(c);
        }
    }
    parts
}

/// `52:54:00:12:34:56`: six two-digit hex bytes, not multicast.
fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let bytes: Vec<&str> = s.split(':').collect();
    if bytes.len() != 6 {
        return Err("expected six hex bytes separated by ':' (52:54:00:12:34:56)".into());
    }
    for (m, b) in mac.iter_mut().zip(bytes) {
        if b.len() != 2 {
            return Err(format!("'{b}' is not a two-digit hex byte"));
        }
        *m = u8::from_str_radix(b, 16).map_err(|_| format!("'{b}' is not a hex byte"))?;
    }
    if mac[0] & 1 != 0 {
        return Err("a multicast address cannot be a NIC's (the first byte must be even)".into());
    }
    if mac == [0; 6] {
        return Err("00:00:00:00:00:00 cannot be a NIC's address".into());
    }
    Ok(mac)
}

/// `[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT`.
fn parse_hostfwd(s: &str) -> Result<HostFwd, String> {
    let (proto, rest) = s
        .split_once(':')
        .ok_or("expected [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT")?;
    let udp = match proto {
        "tcp" | "" => false,
        "udp" => true,
        p => return Err(format!("protocol '{p}' is neither tcp nor udp")),
    };
    let (host, guest) = rest
        .split_once('-')
        .ok_or("expected HOSTPORT-GUESTPORT ('-' between the host and the guest side)")?;
    let (host_addr, host_port) = parse_end(host, "host")?;
    let (guest_addr, guest_port) = parse_end(guest, "guest")?;
    let host_addr = host_addr.unwrap_or(Ipv4Addr::LOCALHOST);
    let guest_addr = guest_addr.unwrap_or(Ipv4Addr::UNSPECIFIED);
    if !guest_addr.is_unspecified() && (u32::from(guest_addr) >> 8) != (u32::from(USER_NET) >> 8) {
        return Err(format!("guest address {guest_addr} is not in 10.0.2.0/24"));
    }
    Ok(HostFwd {
        udp,
        host_addr,
        host_port,
        guest_addr,
        guest_port,
    })
}

/// `[ADDR:]PORT`, an empty address being `None`.
fn parse_end(s: &str, side: &str) -> Result<(Option<Ipv4Addr>, u16), String> {
    let (addr, port) = s.rsplit_once(':').unwrap_or(("", s));
    let addr = match addr {
        "" => None,
        a => Some(
            a.parse::<Ipv4Addr>()
                .map_err(|_| format!("{side} address '{a}' is not an IPv4 address"))?,
        ),
    };
    if port.is_empty() {
        return Err(format!("{side} port is missing"));
    }
    let port: u16 = match port.parse::<u32>() {
        Ok(p) if p > u32::from(u16::MAX) => {
            return Err(format!("{side} port {p} is above 65535"));
        }
        Ok(p) => p as u16,
        Err(_) => return Err(format!("{side} port '{port}' is not a number")),
    };
    if port == 0 {
        return Err(format!("{side} port 0 is not a port"));
    }
    Ok((addr, port))
}

/// Linux's rule for interface names (`dev_valid_name`).
fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if name.len() > 15 {
        return Err(format!(
            "{} bytes; an interface name holds at most 15",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err("not a name".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace())
    {
        return Err(format!("{c:?} is not allowed in an interface name"));
    }
    Ok(())
}

/// `52:54:00:12:34:56`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Writes a value, doubling commas (the inverse of [`split_options`]).
fn escaped(s: &str) -> String {
    s.replace(',', ",,")
}

impl fmt::Display for HostFwd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = if self.udp { "udp" } else { "tcp" };
        write!(f, "{proto}:{}:{}-", self.host_addr, self.host_port)?;
        if !self.guest_addr.is_unspecified() {
            write!(f, "{}", self.guest_addr)?;
        }
        write!(f, ":{}", self.guest_port)
    }
}

impl fmt::Display for NetSpec {
    /// The `--net` syntax, which parses back to the same spec.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::User { hostfwd, restrict } => {
                f.write_str("user")?;
                for fwd in hostfwd {
                    write!(f, ",hostfwd={fwd}")?;
                }
                if *restrict {
                    f.write_str(",restrict=on")?;
                }
            }
            Backend::Tap { ifname } => write!(f, "tap,ifname={}", escaped(ifname))?,
            Backend::Stream { path, server } => {
                write!(f, "stream,path={}", escaped(&path.to_string_lossy()))?;
                if *server {
                    f.write_str(",server=on")?;
                }
            }
        }
        if let Some(mac) = &self.mac {
            write!(f, ",mac={}", format_mac(mac))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> NetSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn error(s: &str) -> String {
        match s.parse::<NetSpec>() {
            Ok(spec) => panic!("{s} parsed as {spec:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn user_with_forwards() {
        let spec = parse(
            "user,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp::5353-10.0.2.15:53,restrict=on,\
             mac=52:54:00:ab:cd:ef",
        );
        assert_eq!(
            spec,
            NetSpec {
                backend: Backend::User {
                    hostfwd: vec![
                        HostFwd {
                            udp: false,
                            host_addr: Ipv4Addr::LOCALHOST,
                            host_port: 8080,
                            guest_addr: Ipv4Addr::UNSPECIFIED,
                            guest_port: 80,
                        },
                        HostFwd {
                            udp: true,
                            host_addr: Ipv4Addr::LOCALHOST,
                            host_port: 5353,
                            guest_addr: Ipv4Addr::new(10, 0, 2, 15),
                            guest_port: 53,
                        },
                    ],
                    restrict: true,
                },
                mac: Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef]),
            }
        );
        assert_eq!(
            parse("user"),
            NetSpec {
                backend: Backend::User {
                    hostfwd: vec![],
                    restrict: false
                },
                mac: None
            }
        );
        // QEMU's empty protocol is tcp; 0.0.0.0 binds every address.
        let Backend::User { hostfwd, .. } = parse("user,hostfwd=:0.0.0.0:22-:2222").backend else {
            panic!()
        };
        assert!(!hostfwd[0].udp);
        assert_eq!(hostfwd[0].host_addr, Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn tap_and_stream() {
        assert_eq!(
            parse("tap,ifname=tap0").backend,
            Backend::Tap {
                ifname: "tap0".into()
            }
        );
        assert_eq!(
            parse("stream,path=/run/a,,b.sock,server=on").backend,
            Backend::Stream {
                path: "/run/a,b.sock".into(),
                server: true
            }
        );
        assert_eq!(
            parse("stream,path=/tmp/s,server=off").backend,
            Backend::Stream {
                path: "/tmp/s".into(),
                server: false
            }
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "user",
            "user,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:0.0.0.0:5353-10.0.2.15:53,restrict=on",
            "user,mac=52:54:00:12:34:56",
            "tap,ifname=hako0,mac=02:00:00:00:00:01",
            "stream,path=/tmp/a,,b,server=on",
            "stream,path=relative.sock",
        ] {
            let spec = parse(s);
            assert_eq!(spec.to_string(), s);
            assert_eq!(parse(&spec.to_string()), spec);
        }
        // Defaults are printed explicitly.
        assert_eq!(
            parse("user,hostfwd=::22-:2222,restrict=off").to_string(),
            "user,hostfwd=tcp:127.0.0.1:22-:2222"
        );
    }

    #[test]
    fn serde_json_round_trips() {
        for s in [
            "user,hostfwd=tcp::8080-:80,hostfwd=udp:0.0.0.0:53-10.0.2.15:53,restrict=on",
            "tap,ifname=tap0,mac=52:54:00:12:34:57",
            "stream,path=/tmp/s,server=on",
        ] {
            let spec = parse(s);
            let json = serde_json::to_string(&spec).unwrap();
            let back: NetSpec = serde_json::from_str(&json).unwrap();
            assert_eq!(back, spec, "{json}");
        }
        // `mac` may be absent in older configs.
        let spec: NetSpec =
            serde_json::from_str(r#"{"backend":{"type":"tap","ifname":"t"}}"#).unwrap();
        assert_eq!(spec.mac, None);
    }

    #[test]
    fn bad_inputs_name_the_bad_part() {
        let cases = [
            (
                "user,hostfwd=tcp:x-:80",
                "--net user: hostfwd=tcp:x-:80: host port 'x' is not a number",
            ),
            (
                "user,hostfwd=tcp::8080-:99999",
                "--net user: hostfwd=tcp::8080-:99999: guest port 99999 is above 65535",
            ),
            (
                "user,hostfwd=sctp::1-:2",
                "--net user: hostfwd=sctp::1-:2: protocol 'sctp' is neither tcp nor udp",
            ),
            (
                "user,hostfwd=tcp::8080",
                "--net user: hostfwd=tcp::8080: expected HOSTPORT-GUESTPORT ('-' between the \
                 host and the guest side)",
            ),
            (
                "user,hostfwd=tcp:localhost:1-:2",
                "--net user: hostfwd=tcp:localhost:1-:2: host address 'localhost' is not an \
                 IPv4 address",
            ),
            (
                "user,hostfwd=tcp::1-192.168.1.2:2",
                "--net user: hostfwd=tcp::1-192.168.1.2:2: guest address 192.168.1.2 is not in \
                 10.0.2.0/24",
            ),
            (
                "user,hostfwd=tcp::0-:2",
                "--net user: hostfwd=tcp::0-:2: host port 0 is not a port",
            ),
            (
                "user,hostfwd=tcp::1-:",
                "--net user: hostfwd=tcp::1-:: guest port is missing",
            ),
            (
                "user,restrict=yes",
                "--net user: restrict=yes: expected on or off",
            ),
            (
                "user,ifname=x",
                "--net user: unknown key 'ifname' (known: hostfwd, restrict, mac)",
            ),
            ("user,restrict", "--net user: 'restrict' is not key=value"),
            (
                "vde,sock=/x",
                "--net vde: unknown kind 'vde' (known: user, tap, stream)",
            ),
            ("", "--net: empty; expected one of user, tap, stream"),
            ("tap", "--net tap: ifname=NAME is required"),
            (
                "tap,ifname=abcdefghijklmnop",
                "--net tap: ifname=abcdefghijklmnop: 16 bytes; an interface name holds at most 15",
            ),
            (
                "tap,ifname=a/b",
                "--net tap: ifname=a/b: '/' is not allowed in an interface name",
            ),
            (
                "tap,ifname=a b",
                "--net tap: ifname=a b: ' ' is not allowed in an interface name",
            ),
            ("tap,ifname=a,ifname=b", "--net tap: ifname= given twice"),
            ("stream", "--net stream: path=SOCKET is required"),
            ("stream,path=", "--net stream: path= is empty"),
            (
                "stream,path=/s,server=1",
                "--net stream: server=1: expected on or off",
            ),
            (
                "tap,ifname=t,mac=52:54:00:12:34",
                "--net tap: mac=52:54:00:12:34: expected six hex bytes separated by ':' \
                 (52:54:00:12:34:56)",
            ),
            (
                "tap,ifname=t,mac=52:54:00:12:34:zz",
                "--net tap: mac=52:54:00:12:34:zz: 'zz' is not a hex byte",
            ),
            (
                "tap,ifname=t,mac=01:00:5e:00:00:01",
                "--net tap: mac=01:00:5e:00:00:01: a multicast address cannot be a NIC's (the \
                 first byte must be even)",
            ),
            (
                "user,mac=00:00:00:00:00:00",
                "--net user: mac=00:00:00:00:00:00: 00:00:00:00:00:00 cannot be a NIC's address",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(error(input), want, "{input}");
        }
        let long = format!("stream,path=/{}", "x".repeat(107));
        assert!(error(&long).contains("at most 107"), "{}", error(&long));
    }

    #[test]
    fn default_mac_follows_qemu() {
        let spec = parse("user");
        assert_eq!(spec.mac_or_default(0), [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(spec.mac_or_default(1), [0x52, 0x54, 0, 0x12, 0x34, 0x57]);
        assert_eq!(parse("user,mac=02:00:00:00:00:09").mac_or_default(3)[5], 9);
    }
}
