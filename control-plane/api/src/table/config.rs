//! ConfigMaps and Secrets: how many keys they hold (printConfigMap, printSecret).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::{Value, json};

use super::{AGE, Column, NAME, age, col};

const CONFIG_MAP_DATA_DESC: &str = "Data contains the configuration data. Each key must consist of \
    alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the \
    BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData \
    field, this is enforced during validation process.";
const SECRET_DATA_DESC: &str = "Data contains the secret data. Each key must consist of \
    alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 \
    encoded string, representing the arbitrary (possibly non-string) data value here. Described \
    in https://tools.ietf.org/html/rfc4648#section-4";
const SECRET_TYPE_DESC: &str = "Used to facilitate programmatic handling of secret data. More \
    info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types";

pub(super) fn config_map_columns() -> Vec<Column> {
    vec![NAME, col("Data", CONFIG_MAP_DATA_DESC), AGE]
}

pub(super) fn config_map_row(cm: &ConfigMap, now: Timestamp) -> Vec<Value> {
    let keys = cm.data.as_ref().map_or(0, std::collections::BTreeMap::len)
        + cm.binary_data
            .as_ref()
            .map_or(0, std::collections::BTreeMap::len);
    vec![
        json!(cm.metadata.name.clone().unwrap_or_default()),
        json!(keys),
        age(&cm.metadata, now),
    ]
}

pub(super) fn secret_columns() -> Vec<Column> {
    vec![
        NAME,
        col("Type", SECRET_TYPE_DESC),
        col("Data", SECRET_DATA_DESC),
        AGE,
    ]
}

pub(super) fn secret_row(secret: &Secret, now: Timestamp) -> Vec<Value> {
    vec![
        json!(secret.metadata.name.clone().unwrap_or_default()),
        json!(secret.type_.clone().unwrap_or_default()),
        json!(
            secret
                .data
                .as_ref()
                .map_or(0, std::collections::BTreeMap::len)
        ),
        age(&secret.metadata, now),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::table::{columns, row};

    #[test]
    fn keys_are_counted_as_kubectl_shows_them() {
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let created = "1970-01-12T13:45:00Z";
        let names: Vec<&str> = columns("ConfigMap").iter().map(|c| c.name).collect();
        assert_eq!(names, ["Name", "Data", "Age"]);
        let cm = json!({"metadata": {"name": "app", "creationTimestamp": created},
                        "data": {"a": "1"}, "binaryData": {"b": "AQ=="}});
        assert_eq!(
            row("ConfigMap", &cm, now),
            [json!("app"), json!(2), json!("100s")]
        );
        let names: Vec<&str> = columns("Secret").iter().map(|c| c.name).collect();
        assert_eq!(names, ["Name", "Type", "Data", "Age"]);
        let s = json!({"metadata": {"name": "creds", "creationTimestamp": created},
                       "type": "Opaque", "data": {"a": "YQ==", "b": "Yg==", "c": "Yw=="}});
        assert_eq!(
            row("Secret", &s, now),
            [json!("creds"), json!("Opaque"), json!(3), json!("100s")]
        );
    }
}
