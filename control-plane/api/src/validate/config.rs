//! ConfigMaps and Secrets (ValidateConfigMap, ValidateSecret and their updates): keys are
//! config keys, the data fits in 1 MiB, a Secret of a known type carries its keys, and an
//! `immutable` object keeps its data.
//!
//! Secret values never appear in a message: Kubernetes prints `<secret contents redacted>`
//! where a value would go.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::meta::{self, NameRule, Scope};
use super::{FieldError, Path};

/// core.MaxSecretSize: the most data one ConfigMap or Secret holds.
pub const MAX_DATA_BYTES: usize = 1024 * 1024;
const CONFIG_KEY_MAX: usize = 253;
const IMMUTABLE_MSG: &str = "field is immutable when `immutable` is set";
const REDACTED: &str = "<secret contents redacted>";

/// validation.IsConfigMapKey: what a key of a ConfigMap or Secret (a file name in a volume)
/// may be.
pub fn config_key(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if key.len() > CONFIG_KEY_MAX {
        errs.push(format!("must be no more than {CONFIG_KEY_MAX} characters"));
    }
    let shape = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !shape {
        errs.push(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' \
             (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is \
             '[-._a-zA-Z0-9]+')"
                .into(),
        );
    }
    // A key is a file name in the volume; these would step out of it or onto its
    // `..data` bookkeeping.
    if key == "." {
        errs.push("must not be '.'".into());
    } else if key == ".." {
        errs.push("must not be '..'".into());
    } else if key.starts_with("..") {
        errs.push("must not start with '..'".into());
    }
    errs
}

fn keys<'a>(path: &Path, keys: impl Iterator<Item = &'a String>) -> Vec<FieldError> {
    keys.flat_map(|k| {
        config_key(k)
            .into_iter()
            .map(move |m| FieldError::invalid(&path.key(k), k, m))
    })
    .collect()
}

pub(crate) fn config_map(cm: &ConfigMap, old: Option<&ConfigMap>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&cm.metadata, &old.metadata));
        if old.immutable == Some(true) {
            if cm.immutable != Some(true) {
                errs.push(FieldError::forbidden(
                    &Path::root("immutable"),
                    IMMUTABLE_MSG,
                ));
            }
            if cm.data != old.data {
                errs.push(FieldError::forbidden(&Path::root("data"), IMMUTABLE_MSG));
            }
            if cm.binary_data != old.binary_data {
                errs.push(FieldError::forbidden(
                    &Path::root("binaryData"),
                    IMMUTABLE_MSG,
                ));
            }
        }
    }
    errs.extend(meta::object_meta(
        &cm.metadata,
        Scope::Namespaced,
        NameRule::Subdomain,
    ));
    let empty = BTreeMap::new();
    let data = cm.data.as_ref().unwrap_or(&empty);
    let empty_bin = BTreeMap::new();
    let binary = cm.binary_data.as_ref().unwrap_or(&empty_bin);
    let data_path = Path::root("data");
    let bin_path = Path::root("binaryData");
    errs.extend(keys(&data_path, data.keys()));
    for k in data.keys().filter(|k| binary.contains_key(*k)) {
        errs.push(FieldError::invalid(
            &data_path.key(k),
            k,
            "duplicate of key present in binaryData",
        ));
    }
    errs.extend(keys(&bin_path, binary.keys()));
    for k in binary.keys().filter(|k| data.contains_key(*k)) {
        errs.push(FieldError::invalid(
            &bin_path.key(k),
            k,
            "duplicate of key present in data",
        ));
    }
    let total: usize = data.values().map(String::len).sum::<usize>()
        + binary.values().map(|b| b.0.len()).sum::<usize>();
    if total > MAX_DATA_BYTES {
        // An empty path: the limit is on the object as a whole.
        errs.push(FieldError::too_long(&Path::root(""), MAX_DATA_BYTES));
    }
    errs
}

/// The keys a Secret of a known type must hold.
fn typed_keys(secret: &Secret, data: &BTreeMap<String, ByteString>) -> Vec<FieldError> {
    let path = Path::root("data");
    let required = |k: &str| FieldError::required(&path.key(k), "");
    let json_key = |k: &str| match data.get(k) {
        None => Some(required(k)),
        Some(v) => serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&v.0)
            .err()
            .map(|e| FieldError::invalid(&path.key(k), REDACTED, e.to_string())),
    };
    let mut errs = Vec::new();
    match secret.type_.as_deref().unwrap_or_default() {
        "kubernetes.io/service-account-token" => {
            let name = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .filter(|v| !v.is_empty());
            if name.is_none() {
                errs.push(FieldError::required(
                    &Path::root("metadata")
                        .child("annotations")
                        .key("kubernetes.io/service-account.name"),
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" => errs.extend(json_key(".dockercfg")),
        "kubernetes.io/dockerconfigjson" => errs.extend(json_key(".dockerconfigjson")),
        // Either may be empty, but one of them must be there.
        "kubernetes.io/basic-auth"
            if !data.contains_key("username") && !data.contains_key("password") =>
        {
            errs.push(required("username"));
            errs.push(required("password"));
        }
        "kubernetes.io/ssh-auth" if data.get("ssh-privatekey").is_none_or(|v| v.0.is_empty()) => {
            errs.push(required("ssh-privatekey"));
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !data.contains_key(k) {
                    errs.push(required(k));
                }
            }
        }
        _ => {}
    }
    errs
}

pub(crate) fn secret(secret: &Secret, old: Option<&Secret>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&secret.metadata, &old.metadata));
        let (new_type, old_type) = (
            secret.type_.as_deref().unwrap_or_default(),
            old.type_.as_deref().unwrap_or_default(),
        );
        if new_type != old_type {
            errs.push(FieldError::invalid(
                &Path::root("type"),
                new_type,
                "field is immutable",
            ));
        }
        if old.immutable == Some(true) {
            if secret.immutable != Some(true) {
                errs.push(FieldError::forbidden(
                    &Path::root("immutable"),
                    IMMUTABLE_MSG,
                ));
            }
            // stringData was merged into data before this, so data is all there is to compare.
            if secret.data != old.data {
                errs.push(FieldError::forbidden(&Path::root("data"), IMMUTABLE_MSG));
            }
        }
    }
    errs.extend(meta::object_meta(
        &secret.metadata,
        Scope::Namespaced,
        NameRule::Subdomain,
    ));
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let path = Path::root("data");
    errs.extend(keys(&path, data.keys()));
    let total: usize = data.values().map(|v| v.0.len()).sum();
    if total > MAX_DATA_BYTES {
        errs.push(FieldError::too_long(&path, MAX_DATA_BYTES));
    }
    errs.extend(typed_keys(secret, data));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys() {
        assert!(config_key("app.properties").is_empty());
        assert!(config_key("KEY_name-1").is_empty());
        assert!(config_key(".hidden").is_empty());
        assert_eq!(config_key("."), ["must not be '.'"]);
        assert_eq!(config_key("..x"), ["must not start with '..'"]);
        assert_eq!(config_key("a/b").len(), 1);
        assert_eq!(config_key(""), config_key("a b"));
        assert_eq!(
            config_key(&"k".repeat(254)),
            ["must be no more than 253 characters"]
        );
    }
}
