//! `kecho`'s configuration and wire protocol.
//!
//! One port serves three protocols: a TCP connection gets a greeting line
//! (`<pod> <peer-ip>:<peer-port>`) and then every line echoed; a TCP connection whose first
//! bytes are an HTTP request line gets a single HTTP response whose body is that greeting;
//! a UDP datagram gets `<pod> <peer>` back.

use std::{fmt, net::SocketAddr};

/// The port used when neither the arguments nor `PORT` name one.
pub const DEFAULT_PORT: u16 = 8080;

/// Request methods that switch a connection to HTTP (RFC 9110 plus PATCH).
const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    BadPort { source: &'static str, value: String },
    MissingValue(String),
    UnknownArgument(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadPort { source, value } => {
                write!(f, "{source}: {value:?} is not a port number (1-65535)")
            }
            Self::MissingValue(arg) => write!(f, "{arg} needs a value"),
            Self::UnknownArgument(arg) => {
                write!(f, "unknown argument {arg:?} (usage: kecho [--port N | N])")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

fn parse_port(source: &'static str, value: &str) -> Result<u16, ConfigError> {
    match value.trim().parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ConfigError::BadPort {
            source,
            value: value.to_string(),
        }),
    }
}

/// The listening port from the arguments (`--port N`, `-p N`, `--port=N` or a bare `N`,
/// without the program name), else from `PORT`, else [`DEFAULT_PORT`].
pub fn port_from(args: &[String], env_port: Option<&str>) -> Result<u16, ConfigError> {
    let mut port = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let value = if arg == "--port" || arg == "-p" {
            it.next()
                .ok_or_else(|| ConfigError::MissingValue(arg.clone()))?
                .as_str()
        } else if let Some(v) = arg.strip_prefix("--port=") {
            v
        } else if arg.starts_with(|c: char| c.is_ascii_digit()) {
            arg.as_str()
        } else {
            return Err(ConfigError::UnknownArgument(arg.clone()));
        };
        port = Some(parse_port("argument", value)?);
    }
    match (port, env_port) {
        (Some(p), _) => Ok(p),
        (None, Some(v)) if !v.trim().is_empty() => parse_port("PORT", v),
        (None, _) => Ok(DEFAULT_PORT),
    }
}

/// The line naming the pod and the peer it sees: `<pod> <peer-ip>:<peer-port>\n`.
#[must_use]
pub fn greeting(pod: &str, peer: SocketAddr) -> String {
    format!("{pod} {peer}\n")
}

/// What the first bytes of a TCP connection say about its protocol.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniff {
    /// An HTTP request line (`<METHOD> ...`).
    Http,
    /// Anything else: the line echo protocol.
    Echo,
    /// Too few bytes to tell (a prefix of an HTTP method).
    NeedMore,
}

/// Classifies the first bytes a client sent.
#[must_use]
pub fn sniff(first: &[u8]) -> Sniff {
    let mut need_more = false;
    for m in HTTP_METHODS {
        let m = m.as_bytes();
        if first.len() > m.len() {
            if first.starts_with(m) && first[m.len()] == b' ' {
                return Sniff::Http;
            }
        } else if m.starts_with(first) {
            need_more = true;
        }
    }
    if need_more && !first.is_empty() {
        Sniff::NeedMore
    } else {
        Sniff::Echo
    }
}

/// Whether `buf` holds a whole HTTP request head (ends with an empty line).
#[must_use]
pub fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

/// The complete HTTP/1.1 response: status 200, plain text `body`, connection closed.
#[must_use]
pub fn http_response(head_only: bool, body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn port_defaults_env_and_args() {
        assert_eq!(port_from(&[], None), Ok(DEFAULT_PORT));
        assert_eq!(port_from(&[], Some("")), Ok(DEFAULT_PORT));
        assert_eq!(port_from(&[], Some("9000")), Ok(9000));
        assert_eq!(port_from(&args(&["--port", "81"]), Some("9000")), Ok(81));
        assert_eq!(port_from(&args(&["-p", "82"]), None), Ok(82));
        assert_eq!(port_from(&args(&["--port=83"]), None), Ok(83));
        assert_eq!(port_from(&args(&["84"]), None), Ok(84));
    }

    #[test]
    fn bad_ports_are_rejected() {
        assert!(matches!(
            port_from(&[], Some("http")),
            Err(ConfigError::BadPort { source: "PORT", .. })
        ));
        assert!(port_from(&args(&["0"]), None).is_err());
        assert!(port_from(&args(&["70000"]), None).is_err());
        assert_eq!(
            port_from(&args(&["--port"]), None),
            Err(ConfigError::MissingValue("--port".into()))
        );
        assert_eq!(
            port_from(&args(&["--verbose"]), None),
            Err(ConfigError::UnknownArgument("--verbose".into()))
        );
    }

    #[test]
    fn greeting_names_pod_and_peer() {
        let peer: SocketAddr = "10.0.0.7:41234".parse().unwrap();
        assert_eq!(greeting("web-1", peer), "web-1 10.0.0.7:41234\n");
    }

    #[test]
    fn sniff_tells_http_from_lines() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniff::Http);
        assert_eq!(sniff(b"OPTIONS * HTTP/1.1"), Sniff::Http);
        assert_eq!(sniff(b"hello\n"), Sniff::Echo);
        assert_eq!(sniff(b"GETTER\n"), Sniff::Echo);
        assert_eq!(sniff(b"get / HTTP/1.1"), Sniff::Echo);
        assert_eq!(sniff(b""), Sniff::Echo);
        assert_eq!(sniff(b"GE"), Sniff::NeedMore);
        assert_eq!(sniff(b"POST"), Sniff::NeedMore);
    }

    #[test]
    fn head_completion() {
        assert!(head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(head_complete(b"GET / HTTP/1.0\n\n"));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n"));
    }

    #[test]
    fn http_response_has_length_and_body() {
        let r = String::from_utf8(http_response(false, "web-1 1.2.3.4:5\n")).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("Content-Length: 16\r\n"));
        assert!(r.ends_with("\r\n\r\nweb-1 1.2.3.4:5\n"));
        let head = String::from_utf8(http_response(true, "abc")).unwrap();
        assert!(head.contains("Content-Length: 3\r\n") && head.ends_with("\r\n\r\n"));
    }
}
