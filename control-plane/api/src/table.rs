//! What `kubectl get` prints: the server-side Table columns and cells per kind, as the
//! Kubernetes API server computes them (pkg/printers/internalversion/printers.go).
//!
//! Column names are the Table API's ("Name", "Up-to-date", "Nominated Node"); kubectl prints
//! them upper-cased. Priority 1 columns appear only with `-o wide`.

mod accounts;
mod batch;
mod cluster;
mod config;
mod daemonset;
mod network;
mod pod;
mod workloads;

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// One column of a Table.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: &'static str,
    /// "string", "integer" or "date".
    pub type_: &'static str,
    /// "name" for the column holding the object's name, else "".
    pub format: &'static str,
    pub description: &'static str,
    /// 0 shown by default, 1 only with `-o wide`.
    pub priority: i32,
}

pub(crate) const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, \
    although some resources may allow a client to request the generation of an appropriate name automatically. \
    Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More \
    info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
pub(crate) const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this \
    object was created. It is not guaranteed to be set in happens-before order across separate operations. \
    Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. \
    Read-only. Null for lists. More info: \
    https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
pub(crate) const CONTAINERS_DESC: &str = "Names of each container in the template.";
pub(crate) const IMAGES_DESC: &str = "Images referenced by each container in the template.";

/// A default-priority string column.
pub(crate) const fn col(name: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_: "string",
        format: "",
        description,
        priority: 0,
    }
}

/// A `-o wide` string column.
pub(crate) const fn wide(name: &'static str, description: &'static str) -> Column {
    Column {
        priority: 1,
        ..col(name, description)
    }
}

pub(crate) const fn int_col(name: &'static str, description: &'static str) -> Column {
    Column {
        type_: "integer",
        ..col(name, description)
    }
}

pub(crate) const NAME: Column = Column {
    format: "name",
    ..col("Name", NAME_DESC)
};
pub(crate) const AGE: Column = col("Age", AGE_DESC);

/// The columns `kubectl get` shows for `kind`. Kinds without their own printer get Name and
/// Created At, like the API server's default table.
pub fn columns(kind: &str) -> Vec<Column> {
    match kind {
        "Pod" => pod::columns(),
        "Service" => network::service_columns(),
        "Endpoints" => network::endpoints_columns(),
        "EndpointSlice" => network::endpoint_slice_columns(),
        "Deployment" => workloads::deployment_columns(),
        "ReplicaSet" => workloads::replica_set_columns(),
        "DaemonSet" => daemonset::daemon_set_columns(),
        "Node" => cluster::node_columns(),
        "Namespace" => cluster::namespace_columns(),
        "Lease" => cluster::lease_columns(),
        "Event" => cluster::event_columns(),
        "Job" => batch::job_columns(),
        "ServiceAccount" => accounts::service_account_columns(),
        "ConfigMap" => config::config_map_columns(),
        "Secret" => config::secret_columns(),
        _ => vec![
            NAME,
            Column {
                type_: "date",
                ..col("Created At", AGE_DESC)
            },
        ],
    }
}

/// The cells of one object, in the order of [`columns`]. Ages are relative to `now`.
pub fn row(kind: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    match kind {
        "Pod" => pod::row(&typed(obj), now),
        "Service" => network::service_row(&typed(obj), now),
        "Endpoints" => network::endpoints_row(&typed(obj), now),
        "EndpointSlice" => network::endpoint_slice_row(&typed(obj), now),
        "Deployment" => workloads::deployment_row(&typed(obj), now),
        "ReplicaSet" => workloads::replica_set_row(&typed(obj), now),
        "DaemonSet" => daemonset::daemon_set_row(&typed(obj), now),
        "Node" => cluster::node_row(&typed(obj), now),
        "Namespace" => cluster::namespace_row(&typed(obj), now),
        "Lease" => cluster::lease_row(&typed(obj), now),
        "Event" => cluster::event_row(&typed(obj), now),
        "Job" => batch::job_row(&typed(obj), now),
        "ServiceAccount" => accounts::service_account_row(&typed(obj), now),
        "ConfigMap" => config::config_map_row(&typed(obj), now),
        "Secret" => config::secret_row(&typed(obj), now),
        _ => {
            let meta = metadata(obj);
            let created = meta.creation_timestamp.map_or(Value::Null, |t| {
                Value::String(t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            });
            vec![json!(meta.name.unwrap_or_default()), created]
        }
    }
}

/// The typed object; a stored object that does not decode still shows its name.
fn typed<T>(obj: &Value) -> T
where
    T: DeserializeOwned + Default + Metadata<Ty = ObjectMeta>,
{
    serde_json::from_value(obj.clone()).unwrap_or_else(|_| {
        let mut t = T::default();
        *t.metadata_mut() = metadata(obj);
        t
    })
}

fn metadata(obj: &Value) -> ObjectMeta {
    obj.get("metadata")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default()
}

/// translateTimestampSince: the age of `t` at `now`, "<unknown>" without a time.
/// kubectl's age of `t` at `now`: `<unknown>` without a timestamp, `<invalid>` for one more
/// than a second in the future.
pub fn age_since(t: Option<Timestamp>, now: Timestamp) -> String {
    let Some(t) = t else {
        return "<unknown>".into();
    };
    let d = now.duration_since(t);
    if d.is_negative() {
        // Up to a second of clock skew reads as "now"; more is a clock problem.
        if d.as_secs() < -1 {
            "<invalid>".into()
        } else {
            "0s".into()
        }
    } else {
        human_duration(d.unsigned_abs())
    }
}

/// The age column of an object.
pub(crate) fn age(meta: &ObjectMeta, now: Timestamp) -> Value {
    json!(age_since(
        meta.creation_timestamp.as_ref().map(|t| t.0),
        now
    ))
}

/// kubectl's duration.HumanDuration: about two significant figures ("45s", "5m2s", "3h",
/// "2d3h", "400d", "3y120d").
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let dy = days % 365;
        return if dy == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{dy}d")
        };
    }
    format!("{years}y")
}

/// layoutContainerCells: names and images, comma-separated.
pub(crate) fn container_cells(
    containers: &[k8s_openapi::api::core::v1::Container],
) -> (Value, Value) {
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c.image.as_deref().unwrap_or_default())
        .collect();
    (json!(names.join(",")), json!(images.join(",")))
}

#[cfg(test)]
mod tests;
