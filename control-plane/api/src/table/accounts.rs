//! ServiceAccounts (printServiceAccount).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{Value, json};

use super::{AGE, Column, NAME, age, int_col};

pub(super) fn service_account_columns() -> Vec<Column> {
    vec![
        NAME,
        int_col(
            "Secrets",
            "Secrets is a list of the secrets in the same namespace that pods running using this \
             ServiceAccount are allowed to use. Pods are only limited to this list if this service \
             account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". \
             The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. \
             Prefer separate namespaces to isolate access to mounted secrets. This field should \
             not be used to find auto-generated service account token secrets for use outside of \
             pods. Instead, tokens can be requested directly using the TokenRequest API, or \
             service account token secrets can be manually created. More info: \
             https://kubernetes.io/docs/concepts/configuration/secret",
        ),
        AGE,
    ]
}

pub(super) fn service_account_row(sa: &ServiceAccount, now: Timestamp) -> Vec<Value> {
    vec![
        json!(sa.metadata.name.clone().unwrap_or_default()),
        json!(sa.secrets.as_ref().map_or(0, Vec::len)),
        age(&sa.metadata, now),
    ]
}
