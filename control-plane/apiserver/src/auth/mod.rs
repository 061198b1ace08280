//! Who is asking and what they may do: bearer tokens (`tokens`), a small node authorizer
//! (`authorize` over the rule tables in `rules`, Kubernetes' Node authorizer over request
//! names) and node admission
//! (`node::admit`, Kubernetes' NodeRestriction over the objects written).
//!
//! `kproxy-apiserver node-token NAME` adds a node token; the server picks up new and removed
//! tokens without a restart.

pub mod graph;
mod node;
pub mod rules;
mod tokens;

pub use self::node::admit;
pub use self::rules::allows_path;
pub use self::tokens::{TokenStore, Tokens};
use crate::registry::Resource;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Admin,
    Node(String),
}

impl Identity {
    pub fn user(&self) -> String {
        match self {
            Identity::Admin => "kproxy-admin".into(),
            Identity::Node(n) => format!("system:node:{n}"),
        }
    }

    /// The groups Kubernetes puts these users in: the admin's system:masters is what
    /// kube-apiserver lets do everything, a node's system:nodes what the Node authorizer
    /// serves.
    pub fn groups(&self) -> [&'static str; 2] {
        match self {
            Identity::Admin => ["system:masters", "system:authenticated"],
            Identity::Node(_) => ["system:nodes", "system:authenticated"],
        }
    }
}

/// What the authorizer decided; `PodBoundTo` leaves the last check to the handler, which
/// knows the stored pod.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Allowed,
    Denied,
    PodBoundTo(String),
    /// Allowed if a pod bound to this node references the object (the handler checks).
    ReferencedBy(String),
}

pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Where service proxies keep the Leases that elect each Service's L2 announcer; nodes may
/// write the ones named with [`L2_LEASE_PREFIX`] there (kproxy node runs as its node).
pub const L2_LEASE_NAMESPACE: &str = "kube-system";
pub const L2_LEASE_PREFIX: &str = "kproxy-l2-";

/// `verb` is Kubernetes' verb (get, list, watch, create, update, patch, delete,
/// deletecollection); `name` is the object's name (for create, the name in the body).
/// The rules are the tables in [`rules`], which the rules review lists.
pub fn authorize(
    id: &Identity,
    verb: &str,
    res: &Resource,
    ns: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
) -> Access {
    rules::decide(
        id,
        &rules::Attributes {
            verb,
            group: res.group,
            resource: res.plural,
            sub,
            ns,
            name,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;

    #[test]
    fn node_authorizer() {
        let n = Identity::Node("n1".into());
        let nodes = lookup("", "v1", "nodes").unwrap();
        let pods = lookup("", "v1", "pods").unwrap();
        let leases = lookup("coordination.k8s.io", "v1", "leases").unwrap();
        let svcs = lookup("", "v1", "services").unwrap();
        assert_eq!(
            authorize(&n, "list", svcs, None, None, None),
            Access::Allowed
        );
        assert_eq!(
            authorize(&n, "update", nodes, None, Some("n1"), Some("status")),
            Access::Allowed
        );
        assert_eq!(
            authorize(&n, "update", nodes, None, Some("n2"), Some("status")),
            Access::Denied
        );
        assert_eq!(
            authorize(
                &n,
                "update",
                leases,
                Some(NODE_LEASE_NAMESPACE),
                Some("n1"),
                None
            ),
            Access::Allowed
        );
        assert_eq!(
            authorize(&n, "update", leases, Some("default"), Some("n1"), None),
            Access::Denied
        );
        assert_eq!(
            authorize(
                &n,
                "patch",
                pods,
                Some("default"),
                Some("p"),
                Some("status")
            ),
            Access::PodBoundTo("n1".into())
        );
        assert_eq!(
            authorize(&n, "update", pods, Some("default"), Some("p"), None),
            Access::Denied
        );
        assert_eq!(
            authorize(&n, "create", svcs, Some("default"), Some("s"), None),
            Access::Denied
        );
        assert_eq!(
            authorize(&Identity::Admin, "delete", nodes, None, Some("x"), None),
            Access::Allowed
        );
    }
}
