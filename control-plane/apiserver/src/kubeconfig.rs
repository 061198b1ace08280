//! Merging a `kproxy` context into a kubeconfig and making it current, as minikube does, so
//! kctl and kubectl work without flags. Other clusters, users and contexts are kept.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use kproxy_apimachinery::yaml::{self, YamlError};
use serde_json::{Map, Value, json};

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
    let entry = Value::Object(Map::from_iter([
        ("name".to_owned(), Value::from(name)),
        (field.to_owned(), body),
    ]));
    match list
        .iter_mut()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
    {
        Some(v) => *v = entry,
        None => list.push(entry),
    }
}

fn list_mut<'a>(doc: &'a mut Map<String, Value>, key: &str) -> Result<&'a mut Vec<Value>> {
    let v = doc.entry(key).or_insert_with(|| Value::Array(vec![]));
    if v.is_null() {
        *v = Value::Array(vec![]);
    }
    v.as_array_mut()
        .ok_or_else(|| Error::Kubeconfig(format!("kubeconfig field {key} is not a list")))
}

fn yaml_error(what: &str) -> impl FnOnce(YamlError) -> Error {
    move |source| Error::Yaml {
        what: what.into(),
        source,
    }
}

/// Returns the merged document for `existing` (None = no file yet).
pub fn merge(existing: Option<&str>, server: &str, ca_pem: &str, token: &str) -> Result<String> {
    let docs = existing
        .map(yaml::documents)
        .transpose()
        .map_err(yaml_error("the existing kubeconfig is not valid YAML"))?
        .unwrap_or_default();
    let mut doc = match <[Value; 1]>::try_from(docs) {
        Ok([Value::Object(m)]) => m,
        Ok([Value::Null]) => Map::new(),
        Err(docs) if docs.is_empty() => Map::new(),
        _ => {
            return Err(Error::Kubeconfig(
                "the existing kubeconfig is not one YAML mapping".into(),
            ));
        }
    };
    doc.insert("apiVersion".into(), "v1".into());
    doc.insert("kind".into(), "Config".into());
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    upsert(
        list_mut(&mut doc, "clusters")?,
        CONTEXT,
        "cluster",
        json!({ "server": server, "certificate-authority-data": ca }),
    );
    upsert(
        list_mut(&mut doc, "users")?,
        USER,
        "user",
        json!({ "token": token }),
    );
    upsert(
        list_mut(&mut doc, "contexts")?,
        CONTEXT,
        "context",
        json!({ "cluster": CONTEXT, "user": USER, "namespace": "default" }),
    );
    doc.insert("current-context".into(), CONTEXT.into());
    yaml::to_string(&doc).map_err(yaml_error("encoding the kubeconfig"))
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
        let v: Value = yaml::from_str(&once).unwrap();
        assert_eq!(v["current-context"], "kproxy");
        assert_eq!(v["clusters"].as_array().unwrap().len(), 2);
        assert_eq!(v["contexts"].as_array().unwrap().len(), 2);
        assert_eq!(v["users"][1]["user"]["token"], "tok");
    }

    #[test]
    fn bad_existing_file_is_an_error() {
        assert!(merge(Some("- a\n- b\n"), "s", "c", "t").is_err());
        assert!(merge(Some("a: 1\n---\nb: 2\n"), "s", "c", "t").is_err());
        assert!(merge(Some("a: [\n"), "s", "c", "t").is_err());
        assert!(merge(Some(""), "s", "c", "t").is_ok());
    }
}
