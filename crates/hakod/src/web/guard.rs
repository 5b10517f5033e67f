//! The TCP listener (`hako daemon --http ADDR:PORT [--http-token-file FILE]`) and
//! what keeps others from using it.
//!
//! Without a token the listener binds loopback addresses only, and every request
//! on it must name a loopback host (`Host: 127.0.0.1:PORT`, `[::1]:PORT` or
//! `localhost:PORT`: a DNS-rebound name is refused). With a token (read from a
//! file only its owner may read) it may bind any address, and every request must
//! carry the token: `Authorization: Bearer TOKEN` (API clients), or the
//! `hako_token` cookie a browser gets from `GET /?token=TOKEN` (the web console,
//! whose WebSocket then carries the cookie). Either way, when a browser sends an
//! `Origin` (every cross-site request, every WebSocket) it must be the page of
//! the same host: another site's script can neither drive the VMs nor type on
//! their consoles. Over the Unix socket none of this applies (its file mode
//! decides who connects).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{Error, Result};

/// The shortest token accepted.
const MIN_TOKEN_LEN: usize = 16;
/// The cookie a browser keeps the token in.
const COOKIE: &str = "hako_token";

/// Refuses an address that is not loopback when there is no token.
pub fn check_addr(addr: &SocketAddr, has_token: bool) -> Result<()> {
    if has_token || addr.ip().is_loopback() {
        return Ok(());
    }
    Err(Error::BadRequest(format!(
        "--http {addr}: without --http-token-file only a loopback address (127.0.0.1, \
         [::1]) is served: anyone who reaches the port would control the VMs"
    )))
}

/// Reads the token from `path`: its first line, at least 16 characters; the file
/// must not be readable by group or others.
pub fn load_token(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(Error::io(format!(
        "cannot read the token file {}",
        path.display()
    )))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::BadRequest(format!(
            "the token file {} may be read by others: chmod 600 it",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(Error::io(format!(
        "cannot read the token file {}",
        path.display()
    )))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::BadRequest(format!(
            "the token in {} must be one line of at least {MIN_TOKEN_LEN} printable \
             characters (e.g. `head -c 32 /dev/urandom | base64 > FILE`)",
            path.display()
        )));
    }
    Ok(token)
}

/// What the TCP listener lets in.
#[derive(Clone, Default)]
pub struct Access {
    token: Option<Arc<str>>,
}

impl Access {
    pub fn new(token: Option<String>) -> Access {
        Access {
            token: token.map(Arc::from),
        }
    }
}

/// Compares without stopping at the first difference, so the time taken does not
/// tell how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The token a request carries: its bearer token, else its `hako_token` cookie.
fn presented(h: &HeaderMap) -> Option<&str> {
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer.or_else(|| {
        h.get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix("hako_token="))
    })
}

/// `?token=T` in a query.
fn query_token(q: Option<&str>) -> Option<&str> {
    q?.split('&').find_map(|kv| kv.strip_prefix("token="))
}

/// Whether `host` (a Host header: name or address, with an optional port) is a
/// loopback host.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, tail)) if tail.is_empty() || tail.starts_with(':') => ip,
            _ => return false,
        }
    } else {
        host.split(':').next().unwrap_or("")
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a request with these headers may go on (the reason if not): without
/// a token the host must be loopback; the origin, if any, that same host.
pub fn allowed(
    host: Option<&str>,
    origin: Option<&str>,
    token_checked: bool,
) -> std::result::Result<(), String> {
    let Some(host) = host.filter(|h| token_checked || loopback_host(h)) else {
        return Err(format!(
            "this listener serves loopback hosts only, not {:?}",
            host.unwrap_or("")
        ));
    };
    match origin {
        None => Ok(()),
        Some(o) if o.strip_prefix("http://") == Some(host) => Ok(()),
        Some(o) => Err(format!(
            "requests from the page of {o:?} are refused (only pages of http://{host} may use this listener)"
        )),
    }
}

/// The middleware of the TCP listener's router.
pub(crate) async fn check(State(access): State<Access>, req: Request, next: Next) -> Response {
    let h = req.headers();
    if let Some(token) = &access.token {
        let good = |t: &str| same(t.as_bytes(), token.as_bytes());
        // The web console's way in: the token once in the URL, then a cookie.
        let page = req.uri().path() == "/";
        if let Some(t) = query_token(req.uri().query()).filter(|_| page) {
            if !good(t) {
                return crate::api::handlers::error(StatusCode::UNAUTHORIZED, "wrong token");
            }
            let cookie = format!("{COOKIE}={t}; HttpOnly; SameSite=Strict; Path=/");
            return (
                StatusCode::SEE_OTHER,
                [(header::SET_COOKIE, cookie), (header::LOCATION, "/".into())],
            )
                .into_response();
        }
        if !presented(h).is_some_and(good) {
            let mut r = crate::api::handlers::error(
                StatusCode::UNAUTHORIZED,
                "this listener needs the daemon's token: `Authorization: Bearer TOKEN` \
                 (or open /?token=TOKEN in a browser)",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    let text = |n| h.get(n).and_then(|v: &header::HeaderValue| v.to_str().ok());
    if let Err(why) = allowed(
        text(header::HOST),
        text(header::ORIGIN),
        access.token.is_some(),
    ) {
        return crate::api::handlers::error(StatusCode::FORBIDDEN, why);
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_their_files() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("token");
        std::fs::write(&f, "0123456789abcdefXYZ\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_token(&f)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_token(&f).unwrap(), "0123456789abcdefXYZ");
        std::fs::write(&f, "short\n").unwrap();
        assert!(load_token(&f).is_err());
        assert!(load_token(&tmp.path().join("none")).is_err());
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=b; hako_token=T1".parse().unwrap());
        assert_eq!(presented(&h), Some("T1"));
        h.insert(header::AUTHORIZATION, "Bearer T2".parse().unwrap());
        assert_eq!(presented(&h), Some("T2"));
        assert_eq!(query_token(Some("x=1&token=T3")), Some("T3"));
        assert_eq!(query_token(None), None);
    }

    #[test]
    fn loopback_only() {
        assert!(check_addr(&"127.0.0.1:8080".parse().unwrap(), false).is_ok());
        assert!(check_addr(&"[::1]:0".parse().unwrap(), false).is_ok());
        let e = check_addr(&"0.0.0.0:8080".parse().unwrap(), false).unwrap_err();
        assert!(e.to_string().contains("token"), "{e}");
        assert!(check_addr(&"192.168.1.2:80".parse().unwrap(), false).is_err());
        assert!(check_addr(&"0.0.0.0:8080".parse().unwrap(), true).is_ok());
    }

    #[test]
    fn hosts_and_origins() {
        assert!(allowed(Some("127.0.0.1:8080"), None, false).is_ok());
        assert!(allowed(Some("localhost:8080"), Some("http://localhost:8080"), false).is_ok());
        assert!(allowed(Some("[::1]:9"), Some("http://[::1]:9"), false).is_ok());
        assert!(allowed(Some("127.0.0.1:8080"), Some("http://127.0.0.1:8080"), false).is_ok());
        // DNS rebinding: a name of the attacker's that resolves to 127.0.0.1.
        assert!(allowed(
            Some("evil.example:8080"),
            Some("http://evil.example:8080"),
            false
        )
        .is_err());
        // Another site's page.
        assert!(allowed(Some("127.0.0.1:8080"), Some("http://evil.example"), false).is_err());
        assert!(allowed(Some("127.0.0.1:8080"), Some("null"), false).is_err());
        assert!(allowed(Some("127.0.0.1:8080"), Some("http://127.0.0.1:8081"), false).is_err());
        assert!(allowed(None, None, false).is_err());
        assert!(allowed(Some("[::1"), None, false).is_err());
        assert!(allowed(Some("[::1]x"), None, false).is_err());
        assert!(allowed(Some("127.0.0.2.evil:1"), None, false).is_err());
        // With the token checked, any host name; the origin still must match.
        assert!(allowed(Some("vmhost.lan:8080"), None, true).is_ok());
        assert!(allowed(
            Some("vmhost.lan:8080"),
            Some("http://vmhost.lan:8080"),
            true
        )
        .is_ok());
        assert!(allowed(Some("vmhost.lan:8080"), Some("http://evil.example"), true).is_err());
    }
}
