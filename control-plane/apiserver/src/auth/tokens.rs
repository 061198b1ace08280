//! The token file, `<data-dir>/tokens.json` (mode 0600): one admin token and one per node.
//!
//! The file is the source of truth while the server runs: it is looked at again at most every
//! [`RECHECK`] (and at once when an unknown token arrives, so a node token the CLI just added
//! works on its first request), and re-read when its mtime, size or inode changed. So a token
//! removed from the file is refused within about a second, without a restart. A file that is
//! missing or does not parse keeps the last good set (and logs an error once per change):
//! a half-written file must not lock every client out.
//!
//! Presented tokens are compared in constant time: hashed with SHA-256, then compared against
//! every known token's hash without stopping at a match.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use super::Identity;
use crate::error::{Error, Result};

/// How long a look at the token file stays good.
pub const RECHECK: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tokens {
    pub admin: String,
    #[serde(default)]
    pub nodes: BTreeMap<String, String>,
}

type Digest = [u8; 32];

fn digest(token: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The tokens as the server checks them: their hashes and whose they are.
struct Known {
    tokens: Tokens,
    digests: Vec<(Digest, Identity)>,
}

impl Known {
    fn new(tokens: Tokens) -> Self {
        let mut digests = Vec::with_capacity(tokens.nodes.len() + 1);
        if !tokens.admin.is_empty() {
            digests.push((digest(&tokens.admin), Identity::Admin));
        }
        for (node, t) in &tokens.nodes {
            if !t.is_empty() {
                digests.push((digest(t), Identity::Node(node.clone())));
            }
        }
        Self { tokens, digests }
    }

    /// Whose token hashes to `d`: every entry is compared, in constant time each, so the time
    /// taken says nothing about how much of a token an attacker guessed.
    fn lookup(&self, d: &Digest) -> Option<Identity> {
        let mut found = None;
        for (known, id) in &self.digests {
            if bool::from(known.ct_eq(d)) {
                found = Some(id);
            }
        }
        found.cloned()
    }
}

/// What identifies a version of the file: rewritten in place (mtime, size) or replaced (inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

struct State {
    /// The file as last looked at (`None`: missing).
    file: Option<Stamp>,
    checked: Instant,
    known: Known,
}

pub struct TokenStore {
    path: PathBuf,
    state: RwLock<State>,
}

fn new_token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().fold(String::with_capacity(48), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
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
        let file = stamp(&path);
        let tokens = read(&path)?;
        Ok(Self {
            state: RwLock::new(State {
                file,
                checked: Instant::now(),
                known: Known::new(tokens),
            }),
            path,
        })
    }

    pub fn admin_token(&self) -> String {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .known
            .tokens
            .admin
            .clone()
    }

    /// The node's token, created and saved if it has none.
    pub fn node_token(&self, node: &str) -> Result<String> {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let mut tokens = read(&self.path)?;
        let tok = tokens
            .nodes
            .entry(node.to_string())
            .or_insert_with(new_token)
            .clone();
        write(&self.path, &tokens)?;
        *st = State {
            file: stamp(&self.path),
            checked: Instant::now(),
            known: Known::new(tokens),
        };
        Ok(tok)
    }

    /// Re-reads the file if it changed since it was last looked at; whether the known tokens
    /// changed.
    fn refresh(&self) -> bool {
        let file = stamp(&self.path);
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        st.checked = Instant::now();
        if file == st.file {
            return false;
        }
        st.file = file;
        match read(&self.path) {
            Ok(t) => {
                st.known = Known::new(t);
                true
            }
            Err(e) => {
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    "token file unreadable; keeping the last good tokens"
                );
                false
            }
        }
    }

    /// The identity behind an `Authorization` header value, if any.
    pub fn authenticate(&self, header: Option<&str>) -> Option<Identity> {
        let token = header?.strip_prefix("Bearer ")?.trim();
        if token.is_empty() {
            return None;
        }
        let d = digest(token);
        let stale = {
            let st = self.state.read().unwrap_or_else(PoisonError::into_inner);
            st.checked.elapsed() >= RECHECK
        };
        if stale {
            self.refresh();
        }
        let found = self
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .known
            .lookup(&d);
        if found.is_some() || stale || !self.refresh() {
            return found;
        }
        // Unknown, and the file just changed (a node token was added): look again.
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .known
            .lookup(&d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    #[test]
    fn tokens_reload_when_the_file_changes() {
        let dir = std::env::temp_dir().join(format!("kproxy-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = TokenStore::open(&dir).unwrap();
        let admin = a.admin_token();
        assert_eq!(a.authenticate(Some(&bearer(&admin))), Some(Identity::Admin));
        assert_eq!(a.authenticate(Some("Bearer nope")), None);
        assert_eq!(a.authenticate(None), None);
        assert_eq!(a.authenticate(Some(&admin)), None, "scheme required");
        // A second process (the CLI) adds a node token; the server sees it at once.
        std::thread::sleep(Duration::from_millis(20));
        let b = TokenStore::open(&dir).unwrap();
        let t = b.node_token("n1").unwrap();
        assert_eq!(b.node_token("n1").unwrap(), t, "stable");
        assert_eq!(
            a.authenticate(Some(&bearer(&t))),
            Some(Identity::Node("n1".into()))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lookup_compares_hashes_of_every_token() {
        let known = Known::new(Tokens {
            admin: "admin-secret".into(),
            nodes: BTreeMap::from([
                ("n1".into(), "node-one".into()),
                ("n2".into(), "node-two".into()),
                ("empty".into(), String::new()),
            ]),
        });
        assert_eq!(known.digests.len(), 3, "empty tokens are never accepted");
        assert_eq!(known.lookup(&digest("admin-secret")), Some(Identity::Admin));
        assert_eq!(
            known.lookup(&digest("node-two")),
            Some(Identity::Node("n2".into()))
        );
        for wrong in [
            "",
            "node-on",
            "node-one ",
            "admin-secreT",
            "node-one-and-more",
        ] {
            assert_eq!(known.lookup(&digest(wrong)), None, "{wrong:?}");
        }
        assert_ne!(digest("a"), digest("b"));
        assert_eq!(
            digest("abc")[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256 (FIPS 180-2 test vector)"
        );
    }
}
