//! The minimal HTTP/1.0 client side shared by `kecho get` and the load engine: URL parsing
//! (`http://IP[:PORT][/PATH]` only: a pod has no resolver to ask), the request bytes and the
//! response status line.

use std::{fmt, net::SocketAddr};

/// An `http://IP:PORT/PATH` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub addr: SocketAddr,
    /// Starts with `/`; includes any query string.
    pub path: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum UrlError {
    NotHttp(String),
    BadAddress(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotHttp(url) => write!(f, "{url:?} is not an http:// URL"),
            Self::BadAddress(url) => write!(
                f,
                "{url:?}: the host must be an IP address with an optional port (http://IP:PORT/PATH)"
            ),
        }
    }
}

impl std::error::Error for UrlError {}

impl HttpUrl {
    /// Parses `http://IPv4[:PORT][/PATH]` or `http://[IPv6][:PORT][/PATH]`; the port
    /// defaults to 80 and the path to `/`.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| UrlError::NotHttp(url.to_string()))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let bad = || UrlError::BadAddress(url.to_string());
        if authority.contains('@') {
            return Err(bad());
        }
        let addr = authority
            .parse::<SocketAddr>()
            .or_else(|_| {
                // No port: the default one; brackets around an IPv6 host are optional then.
                let host = authority.trim_start_matches('[').trim_end_matches(']');
                host.parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 80))
            })
            .map_err(|_| bad())?;
        if addr.port() == 0 {
            return Err(bad());
        }
        Ok(Self {
            addr,
            path: path.to_string(),
        })
    }

    /// `IP:PORT` as a `Host` header value.
    #[must_use]
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

/// The bytes of an HTTP/1.0 GET of `path` (the server closes the connection after the
/// response, so reading to EOF reads the whole response).
#[must_use]
pub fn get_request(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: kecho\r\n\r\n").into_bytes()
}

#[derive(Debug, PartialEq, Eq)]
pub enum ResponseError {
    /// The connection closed before a whole status line arrived.
    Truncated(usize),
    /// The first line is not `HTTP/x.y NNN ...`.
    BadStatusLine(String),
    /// A complete response whose status is not 2xx.
    Status(u16, String),
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated(n) => write!(f, "connection closed after {n} bytes, before a response"),
            Self::BadStatusLine(l) => write!(f, "not an HTTP response: {l:?}"),
            Self::Status(_, line) => write!(f, "server answered {line:?}"),
        }
    }
}

impl std::error::Error for ResponseError {}

/// Checks a whole response (read to EOF): the status must be 2xx. Returns the body.
pub fn parse_response(resp: &[u8]) -> Result<&[u8], ResponseError> {
    let status = status(resp)?;
    let (head, body) = split_head(resp).ok_or(ResponseError::Truncated(resp.len()))?;
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        let line = String::from_utf8_lossy(head.split(|&b| b == b'\n').next().unwrap_or(head));
        Err(ResponseError::Status(status, line.trim_end().to_string()))
    }
}

/// The status code of a response whose first line has arrived.
pub fn status(resp: &[u8]) -> Result<u16, ResponseError> {
    let Some(end) = resp.iter().position(|&b| b == b'\n') else {
        return Err(ResponseError::Truncated(resp.len()));
    };
    let line = String::from_utf8_lossy(&resp[..end]);
    let line = line.trim_end();
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") && code.len() == 3 => code
            .parse()
            .map_err(|_| ResponseError::BadStatusLine(line.to_string())),
        _ => Err(ResponseError::BadStatusLine(line.to_string())),
    }
}

/// Splits a response at the empty line ending its head.
fn split_head(resp: &[u8]) -> Option<(&[u8], &[u8])> {
    let crlf = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let lf = resp.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let (i, n) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((&resp[..i], &resp[i + n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_urls() {
        let u = HttpUrl::parse("http://10.96.0.12:8080/whoami?x=1").unwrap();
        assert_eq!(u.addr, "10.96.0.12:8080".parse().unwrap());
        assert_eq!(u.path, "/whoami?x=1");
        assert_eq!(u.host(), "10.96.0.12:8080");
        let u = HttpUrl::parse("http://10.0.0.1").unwrap();
        assert_eq!(u.addr, "10.0.0.1:80".parse().unwrap());
        assert_eq!(u.path, "/");
        assert_eq!(HttpUrl::parse("http://10.0.0.1:81").unwrap().path, "/");
    }

    #[test]
    fn parses_ipv6_urls() {
        let u = HttpUrl::parse("http://[fd00::5]:8080/a").unwrap();
        assert_eq!(u.addr, "[fd00::5]:8080".parse().unwrap());
        assert_eq!(
            HttpUrl::parse("http://[fd00::5]/").unwrap().addr,
            "[fd00::5]:80".parse().unwrap()
        );
    }

    #[test]
    fn rejects_other_urls() {
        assert_eq!(
            HttpUrl::parse("https://10.0.0.1/"),
            Err(UrlError::NotHttp("https://10.0.0.1/".into()))
        );
        assert!(matches!(
            HttpUrl::parse("10.0.0.1:80"),
            Err(UrlError::NotHttp(_))
        ));
        for bad in [
            "http://web:80/",
            "http://",
            "http://10.0.0.1:0/",
            "http://10.0.0.1:99999/",
            "http://u@10.0.0.1/",
            "http://10.0.0.1:/",
        ] {
            assert!(
                matches!(HttpUrl::parse(bad), Err(UrlError::BadAddress(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn request_is_http10_get() {
        let r = String::from_utf8(get_request("10.0.0.1:80", "/x")).unwrap();
        assert!(r.starts_with("GET /x HTTP/1.0\r\nHost: 10.0.0.1:80\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }

    #[test]
    fn responses_are_checked() {
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\nA: b\r\n\r\nhello\n"),
            Ok(&b"hello\n"[..])
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 204 No Content\r\n\r\n"),
            Ok(&b""[..])
        );
        assert_eq!(parse_response(b"HTTP/1.0 200 OK\n\nx"), Ok(&b"x"[..]));
        assert_eq!(
            parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope"),
            Err(ResponseError::Status(404, "HTTP/1.0 404 Not Found".into()))
        );
        assert_eq!(parse_response(b""), Err(ResponseError::Truncated(0)));
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\nA: b"),
            Err(ResponseError::Truncated(21))
        );
        assert!(matches!(
            parse_response(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(ResponseError::BadStatusLine(_))
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.0 2000 OK\r\n\r\n"),
            Err(ResponseError::BadStatusLine(_))
        ));
    }
}
