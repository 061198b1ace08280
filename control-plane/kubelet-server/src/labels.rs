//! Docker labels that tie a container to its pod. The kubelet keeps no other record of what it
//! runs: after a restart it rebuilds its view from these labels (adopting what runs and
//! removing what no pod wants), and the log/exec server finds containers through them.

/// The node (kubelet) that owns the container. Several kubelets may share one Docker engine
/// (tests), so every query filters on it.
pub const NODE: &str = "io.kproxy.node";
pub const POD_UID: &str = "io.kproxy.pod.uid";
pub const POD_NAME: &str = "io.kproxy.pod.name";
pub const POD_NAMESPACE: &str = "io.kproxy.pod.namespace";
/// `sandbox` for the pod's pause container (owner of the network namespace), `container`
/// for an app container.
pub const KIND: &str = "io.kproxy.container.kind";
pub const KIND_SANDBOX: &str = "sandbox";
pub const KIND_CONTAINER: &str = "container";
/// The container's name in the pod spec (app containers only).
pub const CONTAINER_NAME: &str = "io.kproxy.container.name";
/// How many times this container of this pod was started before: 0 for the first start.
/// The newest attempt is the current container, the one before it the "previous" one.
pub const ATTEMPT: &str = "io.kproxy.container.attempt";

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
