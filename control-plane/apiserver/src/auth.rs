//! Bearer-token authentication and a small node authorizer.
//!
//! Tokens live in `<data-dir>/tokens.json` (mode 0600): one admin token and one per node.
//! `kproxy-apiserver node-token NAME` adds a node token; the server picks up new tokens
//! without a restart (it re-reads the file when it sees an unknown token and the file changed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::registry::Resource;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tokens {
    pub admin: String,
    #[serde(default)]
    pub nodes: BTreeMap<String, String>,
}

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
}

/// What the authorizer decided; `PodBoundTo` leaves the last check to the handler, which
/// knows the stored pod.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Allowed,
    Denied,
    PodBoundTo(String),
}

pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// `verb` is Kubernetes' verb (get, list, watch, create, update, patch, delete,
/// deletecollection); `name` is the object's name (for create, the name in the body).
pub fn authorize(
    id: &Identity,
    verb: &str,
    res: &Resource,
    ns: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
) -> Access {
    let node = match id {
        Identity::Admin => return Access::Allowed,
        Identity::Node(n) => n.as_str(),
    };
    if matches!(verb, "get" | "list" | "watch") {
        return Access::Allowed;
    }
    let own = name == Some(node);
    match (res.group, res.plural) {
        ("", "nodes") if own && verb != "deletecollection" => Access::Allowed,
        ("coordination.k8s.io", "leases") if own && ns == Some(NODE_LEASE_NAMESPACE) => {
            Access::Allowed
        }
        ("", "pods")
            if (sub == Some("status") && matches!(verb, "update" | "patch"))
                || (sub.is_none() && verb == "delete") =>
        {
            Access::PodBoundTo(node.to_string())
        }
        ("", "events") if verb == "create" || verb == "patch" => Access::Allowed,
        _ => Access::Denied,
    }
}

pub struct TokenStore {
    path: PathBuf,
    state: RwLock<(Option<SystemTime>, Tokens)>,
}

fn new_token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().fold(String::with_capacity(48), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read(path: &Path) -> Result<Tokens> {
    let text = std::fs::read_to_string(path).map_err(Error::io("reading", path))?;
    serde_json::from_str(&text).map_err(|source| Error::Tokens {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, t: &Tokens) -> Result<()> {
    let text = serde_json::to_string_pretty(t).expect("tokens always serialise");
    crate::pki::write_private(path, &text)
}

impl TokenStore {
    /// Opens `<dir>/tokens.json`, creating it with a fresh admin token on first use.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("tokens.json");
        if !path.exists() {
            std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
            write(
                &path,
                &Tokens {
                    admin: new_token(),
                    nodes: BTreeMap::new(),
                },
            )?;
        }
        let tokens = read(&path)?;
        Ok(Self {
            state: RwLock::new((mtime(&path), tokens)),
            path,
        })
    }

    pub fn admin_token(&self) -> String {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .admin
            .clone()
    }

    /// The node's token, created and saved if it has none.
    pub fn node_token(&self, node: &str) -> Result<String> {
        let mut st = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut tokens = read(&self.path)?;
        let tok = tokens
            .nodes
            .entry(node.to_string())
            .or_insert_with(new_token)
            .clone();
        write(&self.path, &tokens)?;
        *st = (mtime(&self.path), tokens);
        Ok(tok)
    }

    fn lookup(tokens: &Tokens, token: &str) -> Option<Identity> {
        if !tokens.admin.is_empty() && tokens.admin == token {
            return Some(Identity::Admin);
        }
        tokens
            .nodes
            .iter()
            .find(|(_, t)| t.as_str() == token)
            .map(|(n, _)| Identity::Node(n.clone()))
    }

    /// The identity behind an `Authorization` header value, if any.
    pub fn authenticate(&self, header: Option<&str>) -> Option<Identity> {
        let token = header?.strip_prefix("Bearer ")?.trim();
        if token.is_empty() {
            return None;
        }
        {
            let st = self
                .state
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(id) = Self::lookup(&st.1, token) {
                return Some(id);
            }
            if mtime(&self.path) == st.0 {
                return None;
            }
        }
        // The file changed (a node token was added): reload once.
        let mut st = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match read(&self.path) {
            Ok(t) => *st = (mtime(&self.path), t),
            Err(e) => tracing::warn!(path = %self.path.display(), error = %e, "token file"),
        }
        Self::lookup(&st.1, token)
    }
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

    #[test]
    fn tokens_reload_when_the_file_changes() {
        let dir = std::env::temp_dir().join(format!("kproxy-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = TokenStore::open(&dir).unwrap();
        let admin = a.admin_token();
        assert_eq!(
            a.authenticate(Some(&format!("Bearer {admin}"))),
            Some(Identity::Admin)
        );
        assert_eq!(a.authenticate(Some("Bearer nope")), None);
        assert_eq!(a.authenticate(None), None);
        assert_eq!(a.authenticate(Some(&admin)), None, "scheme required");
        // A second process (the CLI) adds a node token; the server sees it.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = TokenStore::open(&dir).unwrap();
        let t = b.node_token("n1").unwrap();
        assert_eq!(b.node_token("n1").unwrap(), t, "stable");
        assert_eq!(
            a.authenticate(Some(&format!("Bearer {t}"))),
            Some(Identity::Node("n1".into()))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
