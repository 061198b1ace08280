//! Errors of setting the server up (files, certificates, tokens, kubeconfig, store, socket).
//! Request errors are Kubernetes Status objects instead (`status::ApiError`).

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation on `path` (`what`: "reading", "writing", ...).
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("binding {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// PEM input that does not parse.
    #[error("parsing {what}")]
    Pem {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// PEM input without the item it should hold.
    #[error("no {what}")]
    Missing { what: &'static str },
    #[error("{what}")]
    Tls {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("{what}")]
    Certificate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("parsing {}", path.display())]
    Tokens {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}")]
    Yaml {
        what: String,
        #[source]
        source: kproxy_apimachinery::yaml::YamlError,
    },
    /// A kubeconfig that cannot be merged into.
    #[error("{0}")]
    Kubeconfig(String),
    #[error("{what}")]
    Store {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another error, with what was being done.
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// An I/O error's constructor for `map_err`: `.map_err(Error::io("reading", path))`.
    pub fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    }

    pub fn tls(what: &'static str) -> impl FnOnce(rustls::Error) -> Error {
        move |source| Error::Tls { what, source }
    }

    pub fn certificate(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
        move |source| Error::Certificate { what, source }
    }

    pub fn pem(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Pem { what, source }
    }

    /// This error as the cause of `what`.
    #[must_use]
    pub fn context(self, what: impl Into<String>) -> Error {
        Error::Context {
            what: what.into(),
            source: Box::new(self),
        }
    }
}
