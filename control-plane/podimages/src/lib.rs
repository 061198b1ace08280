//! The programs inside the node's container images (`cargo xtask images`): `kpause`, the pod
//! sandbox, and `kecho`, an echo server that names the pod and the peer it sees. Both are
//! linked statically into `FROM scratch` images, so they use only std and libc.
//!
//! This library holds their pure logic (argument parsing, the echo protocol) so it can be
//! unit-tested; the binaries only do I/O. The load engine ([`load`]) is shared with `kctl
//! bench`, which runs it in a pod through `kecho load` and locally for the client namespace.

pub mod echo;
pub mod http;
pub mod load;
pub mod pause;

/// The pod's name: `POD_NAME` when set and non-empty, else the hostname (the kubelet sets
/// the container hostname to the pod name).
#[must_use]
pub fn pod_name() -> String {
    choose_pod_name(std::env::var("POD_NAME").ok(), hostname())
}

/// Picks the name from the environment override and the hostname; `unknown` if neither.
#[must_use]
pub fn choose_pod_name(env: Option<String>, hostname: Option<String>) -> String {
    [env, hostname]
        .into_iter()
        .flatten()
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The UTS hostname, `None` if it cannot be read or is not UTF-8.
#[must_use]
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname NUL-terminates within it
    // when the name fits (HOST_NAME_MAX is 64 on Linux).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&buf[..len]).ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_hostname() {
        let name = choose_pod_name(Some("web-1".into()), Some("host".into()));
        assert_eq!(name, "web-1");
    }

    #[test]
    fn empty_env_falls_back_to_hostname() {
        assert_eq!(
            choose_pod_name(Some("  ".into()), Some("host\n".into())),
            "host"
        );
        assert_eq!(choose_pod_name(None, Some("host".into())), "host");
    }

    #[test]
    fn no_name_at_all_is_unknown() {
        assert_eq!(choose_pod_name(None, None), "unknown");
        assert_eq!(
            choose_pod_name(Some(String::new()), Some(String::new())),
            "unknown"
        );
    }

    #[test]
    fn hostname_is_readable() {
        assert!(hostname().is_some_and(|h| !h.is_empty()));
    }
}
