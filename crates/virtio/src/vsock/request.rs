//! The line a host program sends first on the listening socket, as with
//! Firecracker: `CONNECT <port>\n`, asking for a stream to the guest's `port`.
//! The answer, once the guest accepts, is `OK <our port>\n`; a refusal closes
//! the connection.

/// The longest request line taken (a longer one is refused).
pub const MAX_LINE: usize = 64;

/// What the first bytes from a host program say.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// No newline yet.
    Incomplete,
    /// `CONNECT port`, and where the bytes after its newline begin.
    Connect { port: u32, rest: usize },
    /// Not a request this backend takes (the reason, for the log).
    Bad(&'static str),
}

/// Parses the start of what a host program sent.
pub fn parse(buf: &[u8]) -> Line {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_LINE {
            Line::Bad("no newline in the first 64 bytes")
        } else {
            Line::Incomplete
        };
    };
    if nl > MAX_LINE {
        return Line::Bad("request line too long");
    }
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(port) = line.strip_prefix(b"CONNECT ") else {
        return Line::Bad("not CONNECT <port>");
    };
    let port = std::str::from_utf8(port)
        .ok()
        .map(str::trim)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u32>().ok());
    match port {
        Some(port) => Line::Connect { port, rest: nl + 1 },
        None => Line::Bad("the port is not a 32-bit decimal number"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(parse(b"CONN"), Line::Incomplete);
        assert_eq!(
            parse(b"CONNECT 5000\n"),
            Line::Connect {
                port: 5000,
                rest: 13
            }
        );
        assert_eq!(
            parse(b"CONNECT 52\r\nhello"),
            Line::Connect { port: 52, rest: 12 }
        );
        assert_eq!(
            parse(b"CONNECT 4294967295\n"),
            Line::Connect {
                port: u32::MAX,
                rest: 19
            }
        );
        assert!(matches!(parse(b"CONNECT 4294967296\n"), Line::Bad(_)));
        assert!(matches!(parse(b"CONNECT -1\n"), Line::Bad(_)));
        assert!(matches!(parse(b"CONNECT \n"), Line::Bad(_)));
        assert!(matches!(parse(b"connect 5\n"), Line::Bad(_)));
        assert!(matches!(parse(b"LISTEN 5\n"), Line::Bad(_)));
        assert!(matches!(parse(&[b'x'; 65]), Line::Bad(_)));
        let mut long = b"CONNECT ".to_vec();
        long.extend(std::iter::repeat_n(b'0', 70));
        long.push(b'\n');
        assert!(matches!(parse(&long), Line::Bad(_)));
    }
}
