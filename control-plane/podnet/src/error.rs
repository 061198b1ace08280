use std::{io, path::PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("IPAM state {path} is corrupt: {reason}")]
    CorruptState { path: PathBuf, reason: String },
    #[error("IPAM state {path} belongs to pod CIDR {stored}, not {requested}")]
    CidrMismatch {
        path: PathBuf,
        stored: ipnet::Ipv4Net,
        requested: ipnet::Ipv4Net,
    },
    #[error("pod CIDR {cidr} is exhausted: all {capacity} pod addresses are allocated")]
    Exhausted { cidr: ipnet::Ipv4Net, capacity: u64 },
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidIfname { name: String, reason: &'static str },
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot open a netlink socket: {0}")]
    NetlinkSocket(#[source] io::Error),
    #[error("link {0:?} does not exist")]
    LinkMissing(String),
    #[error("link {name:?} exists but is not a {expected}")]
    WrongLinkKind {
        name: String,
        expected: &'static str,
    },
    #[error("network namespace {path} already has an eth0 that is not this pod's veth")]
    ForeignEth0 { path: PathBuf },
    #[error("cannot enter network namespace {path}: {source}")]
    Setns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the network namespace worker thread for {path} died: {reason}")]
    NetnsThread { path: PathBuf, reason: String },
    #[error("iptables {args}: {reason}")]
    Iptables { args: String, reason: String },
}

impl Error {
    pub(crate) fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Self {
        let what = what.into();
        move |source| Self::Netlink { what, source }
    }
}
