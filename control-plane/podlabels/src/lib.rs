//! Docker labels that tie a container to its pod. The kubelet keeps no other record of what it
//! runs: after a restart it rebuilds its view from these labels (adopting what runs and
//! removing what no pod wants), and the log/exec server finds containers through them.
//!
//! Every label key, label value and Docker container name of the scheme is spelled here only;
//! the kubelet writes them ([`Pod::sandbox`], [`Pod::container`]), the kubelet's server,
//! xtask and the tests read them.

#![forbid(unsafe_code)]

use std::{collections::HashMap, hash::BuildHasher};

/// The node (kubelet) that owns the container. Several kubelets may share one Docker engine
/// (tests), so every query filters on it.
pub const NODE: &str = "io.kproxy.node";
pub const POD_UID: &str = "io.kproxy.pod.uid";
pub const POD_NAME: &str = "io.kproxy.pod.name";
pub const POD_NAMESPACE: &str = "io.kproxy.pod.namespace";
/// [`KIND_SANDBOX`] for the pod's pause container (owner of the network namespace),
/// [`KIND_CONTAINER`] for an app container.
pub const KIND: &str = "io.kproxy.container.kind";
pub const KIND_SANDBOX: &str = "sandbox";
pub const KIND_CONTAINER: &str = "container";
/// The container's name in the pod spec (app containers only).
pub const CONTAINER_NAME: &str = "io.kproxy.container.name";
/// How many times this container of this pod was started before: 0 for the first start.
/// The newest attempt is the current container, the one before it the "previous" one.
pub const ATTEMPT: &str = "io.kproxy.container.attempt";

/// A Docker `label` filter (`key=value`).
pub fn filter(key: &str, value: &str) -> String {
    format!("{key}={value}")
}

/// The filter that selects every container of `node`'s kubelet.
pub fn node_filter(node: &str) -> String {
    filter(NODE, node)
}

/// Docker's container name for a pod's container, unique per pod uid and attempt.
pub fn container_name(
    container: &str,
    pod: &str,
    namespace: &str,
    uid: &str,
    attempt: u32,
) -> String {
    format!("k8s_{container}_{pod}_{namespace}_{uid}_{attempt}")
}

/// Docker's container name for a pod's sandbox.
pub fn sandbox_name(pod: &str, namespace: &str, uid: &str) -> String {
    format!("k8s_POD_{pod}_{namespace}_{uid}")
}

/// The pod a container belongs to, as its labels name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pod<'a> {
    pub node: &'a str,
    pub uid: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
}

impl Pod<'_> {
    fn labels(&self, kind: &str) -> HashMap<String, String> {
        HashMap::from([
            (NODE.into(), self.node.into()),
            (POD_UID.into(), self.uid.into()),
            (POD_NAME.into(), self.name.into()),
            (POD_NAMESPACE.into(), self.namespace.into()),
            (KIND.into(), kind.into()),
        ])
    }

    /// The labels of the pod's sandbox.
    pub fn sandbox(&self) -> HashMap<String, String> {
        self.labels(KIND_SANDBOX)
    }

    /// The labels of attempt `attempt` of spec container `container`.
    pub fn container(&self, container: &str, attempt: u32) -> HashMap<String, String> {
        let mut l = self.labels(KIND_CONTAINER);
        l.insert(CONTAINER_NAME.into(), container.into());
        l.insert(ATTEMPT.into(), attempt.to_string());
        l
    }
}

/// What a container's labels say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub uid: Option<&'a str>,
    pub sandbox: bool,
    /// The spec's container name; empty for the sandbox.
    pub container: &'a str,
    /// 0 when the label is missing or not a number.
    pub attempt: u32,
}

/// Reads the labels the kubelet put on a container.
pub fn parse<S: BuildHasher>(labels: &HashMap<String, String, S>) -> Parsed<'_> {
    Parsed {
        uid: labels.get(POD_UID).map(String::as_str),
        sandbox: labels.get(KIND).map(String::as_str) == Some(KIND_SANDBOX),
        container: labels.get(CONTAINER_NAME).map_or("", String::as_str),
        attempt: labels
            .get(ATTEMPT)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: Pod<'static> = Pod {
        node: "n1",
        uid: "u1",
        name: "web",
        namespace: "default",
    };

    #[test]
    fn written_labels_read_back() {
        let c = POD.container("app", 3);
        assert_eq!(c[NODE], "n1");
        assert_eq!(c[POD_NAMESPACE], "default");
        assert_eq!(
            parse(&c),
            Parsed {
                uid: Some("u1"),
                sandbox: false,
                container: "app",
                attempt: 3,
            }
        );
        let s = POD.sandbox();
        assert_eq!(s[KIND], KIND_SANDBOX);
        let p = parse(&s);
        assert!(p.sandbox);
        assert_eq!((p.container, p.attempt), ("", 0));
    }

    #[test]
    fn names_and_filters() {
        assert_eq!(
            container_name("app", "web", "default", "u1", 2),
            "k8s_app_web_default_u1_2"
        );
        assert_eq!(
            sandbox_name("web", "default", "u1"),
            "k8s_POD_web_default_u1"
        );
        assert_eq!(node_filter("n1"), "io.kproxy.node=n1");
        assert_eq!(
            filter(KIND, KIND_SANDBOX),
            "io.kproxy.container.kind=sandbox"
        );
    }
}
