//! Merging a `kproxy` context into a kubeconfig and making it current, as minikube does, so
//! kctl and kubectl work without flags. Other clusters, users and contexts are kept.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};

pub const CONTEXT: &str = "kproxy";
const USER: &str = "kproxy-admin";

/// `$KUBECONFIG` (its first entry) or `~/.kube/config`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
        let first = std::env::split_paths(&k).next()?;
        return Some(first);
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"))
}

fn upsert(list: &mut Vec<Value>, name: &str, field: &str, body: Value) {
    let entry = Value::Mapping(Mapping::from_iter([
        (Value::from("name"), Value::from(name)),
        (Value::from(field), body),
    ]));
    match list
        .iter_mut()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
    {
        Some(v) => *v = entry,
        None => list.push(entry),
    }
}

fn list_mut<'a>(doc: &'a mut Mapping, key: &str) -> Result<&'a mut Vec<Value>> {
    let v = doc
        .entry(Value::from(key))
        .or_insert_with(|| Value::Sequence(vec![]));
    if v.is_null() {
        *v = Value::Sequence(vec![]);
    }
    v.as_sequence_mut()
        .ok_or_else(|| Error::Kubeconfig(format!("kubeconfig field {key} is not a list")))
}

fn yaml(source: serde_yaml::Error) -> Error {
    Error::Yaml {
        what: "encoding the kubeconfig".into(),
        source,
    }
}

/// Returns the merged document for `existing` (None = no file yet).
pub fn merge(existing: Option<&str>, server: &str, ca_pem: &str, token: &str) -> Result<String> {
    let mut doc = match existing.map(serde_yaml::from_str::<Value>).transpose() {
        Ok(Some(Value::Mapping(m))) => m,
        Ok(Some(Value::Null) | None) => Mapping::new(),
        Ok(Some(_)) => {
            return Err(Error::Kubeconfig(
                "the existing kubeconfig is not a YAML mapping".into(),
            ));
        }
        Err(source) => {
            return Err(Error::Yaml {
                what: "the existing kubeconfig is not valid YAML".into(),
                source,
            });
        }
    };
    doc.insert("apiVersion".into(), "v1".into());
    doc.insert("kind".into(), "Config".into());
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    upsert(
        list_mut(&mut doc, "clusters")?,
        CONTEXT,
        "cluster",
        serde_yaml::to_value(serde_json::json!({
            "server": server, "certificate-authority-data": ca
        }))
        .map_err(yaml)?,
    );
    upsert(
        list_mut(&mut doc, "users")?,
        USER,
        "user",
        serde_yaml::to_value(serde_json::json!({ "token": token })).map_err(yaml)?,
    );
    upsert(
        list_mut(&mut doc, "contexts")?,
        CONTEXT,
        "context",
        serde_yaml::to_value(serde_json::json!({
            "cluster": CONTEXT, "user": USER, "namespace": "default"
        }))
        .map_err(yaml)?,
    );
    doc.insert("current-context".into(), CONTEXT.into());
    serde_yaml::to_string(&doc).map_err(yaml)
}

/// Merges into the file at `path` (created with mode 0600 if missing).
pub fn write(path: &Path, server: &str, ca_pem: &str, token: &str) -> Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("reading", path)(e)),
    };
    let merged = merge(existing.as_deref(), server, ca_pem, token)
        .map_err(|e| e.context(format!("merging into {}", path.display())))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    }
    crate::pki::write_private(path, &merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_other_entries_and_is_idempotent() {
        let other = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://p:6443\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: u\nusers:\n- name: u\n  user:\n    token: t\ncurrent-context: prod\n";
        let once = merge(Some(other), "https://127.0.0.1:6443", "CA", "tok").unwrap();
        let twice = merge(Some(&once), "https://127.0.0.1:6443", "CA", "tok").unwrap();
        assert_eq!(once, twice);
        let v: Value = serde_yaml::from_str(&once).unwrap();
        assert_eq!(v["current-context"], Value::from("kproxy"));
        assert_eq!(v["clusters"].as_sequence().unwrap().len(), 2);
        assert_eq!(v["contexts"].as_sequence().unwrap().len(), 2);
        assert_eq!(v["users"][1]["user"]["token"], Value::from("tok"));
    }

    #[test]
    fn bad_existing_file_is_an_error() {
        assert!(merge(Some("- a\n- b\n"), "s", "c", "t").is_err());
        assert!(merge(Some("a: [\n"), "s", "c", "t").is_err());
        assert!(merge(Some(""), "s", "c", "t").is_ok());
    }
}
