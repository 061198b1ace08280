//! The Metrics API (`metrics.k8s.io/v1beta1`, what metrics-server serves on Kubernetes):
//! NodeMetrics (`nodes`) and PodMetrics (`pods`, namespaced), read-only, for `kubectl top`.
//!
//! Nothing is stored: each request asks the kubelets concerned (Ready nodes only) for their
//! Summary (`GET /stats/summary`, see `scrape`) over the mutual-TLS kubelet client, with a
//! short timeout, and converts the figures (`convert`). A kubelet that does not answer is
//! left out (and logged), as metrics-server leaves out nodes it could not scrape. The CPU
//! figure is the kubelet's rate between its last two readings, taken [`WINDOW`] apart.

mod convert;
mod scrape;
mod table;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kproxy_apimachinery::selector::{FieldSelector, LabelSelector};
use serde_json::{Value, json};

use crate::auth::Identity;
use crate::auth::rules::{Attributes, decide};
use crate::context::{Api, json as json_resp, query_pairs};
use crate::object::{self, from_kv};
use crate::status::{ApiError, ApiResult};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
pub const API_VERSION: &str = "metrics.k8s.io/v1beta1";
/// The kubelet's sampling period (kubelet-server `stats::INTERVAL`): its CPU rate is taken
/// between two readings this far apart.
pub const WINDOW: &str = "10s";

/// The API group-version for discovery (`/apis`).
pub fn groups() -> [(&'static str, &'static str); 1] {
    [(GROUP, VERSION)]
}

/// `/apis/metrics.k8s.io/v1beta1`: the two resources, read-only.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if (group, version) != (GROUP, VERSION) {
        return None;
    }
    let entry = |name: &str, kind: &str, namespaced: bool| {
        json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
               "verbs": ["get", "list"]})
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": API_VERSION,
        "resources": [entry("nodes", "NodeMetrics", false), entry("pods", "PodMetrics", true)],
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nodes,
    Pods,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::Nodes => "nodes",
            Kind::Pods => "pods",
        }
    }

    /// The resource in NotFound messages (metrics-server's names).
    fn not_found_resource(self) -> &'static str {
        match self {
            Kind::Nodes => "nodemetrics.metrics.k8s.io",
            Kind::Pods => "podmetrics.metrics.k8s.io",
        }
    }
}

/// A Metrics API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub ns: Option<String>,
    pub name: Option<String>,
}

impl Target {
    /// For the request counters: `nodes.metrics.k8s.io`.
    pub fn resource(&self) -> String {
        format!("{}.{GROUP}", self.kind.plural())
    }
}

/// Recognises a resource path under `/apis/metrics.k8s.io/v1beta1/` (the group-version
/// itself is discovery's); an error for any other path there.
pub fn target(path: &str) -> Option<ApiResult<Target>> {
    let rest = path
        .trim_end_matches('/')
        .strip_prefix("/apis/metrics.k8s.io/v1beta1/")?;
    let segs: Vec<&str> = rest.split('/').collect();
    let t = |kind, ns: Option<&str>, name: Option<&str>| {
        Ok(Target {
            kind,
            ns: ns.map(String::from),
            name: name.map(String::from),
        })
    };
    Some(match segs.as_slice() {
        ["nodes"] => t(Kind::Nodes, None, None),
        ["nodes", name] => t(Kind::Nodes, None, Some(name)),
        ["pods"] => t(Kind::Pods, None, None),
        ["namespaces", ns, "pods"] => t(Kind::Pods, Some(ns), None),
        ["namespaces", ns, "pods", name] => t(Kind::Pods, Some(ns), Some(name)),
        _ => Err(ApiError::no_route()),
    })
}

/// Kubernetes' default RBAC gives only cluster admins the metrics (nodes have none): the
/// authorizer's rule tables decide, as they do for every other resource.
fn authorize(id: &Identity, verb: &str, t: &Target) -> ApiResult<()> {
    let a = Attributes {
        verb,
        group: GROUP,
        resource: t.kind.plural(),
        sub: None,
        ns: t.ns.as_deref(),
        name: t.name.as_deref(),
    };
    if decide(id, &a) == crate::auth::Access::Allowed {
        return Ok(());
    }
    let scope = match &t.ns {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".into(),
    };
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "{} is forbidden: User \"{}\" cannot {verb} resource \"{}\" in API group \"{GROUP}\" {scope}",
            t.resource(),
            id.user(),
            t.kind.plural()
        ),
    ))
}

/// Serves `t` for `id`: the verb (for the request counters) and the answer.
pub async fn serve(
    api: &Api,
    id: &Identity,
    parts: &Parts,
    t: &Target,
) -> (&'static str, Response) {
    let verb = if t.name.is_some() { "get" } else { "list" };
    let result = async {
        if parts.method != Method::GET {
            return Err(ApiError::method_not_allowed());
        }
        authorize(id, verb, t)?;
        let query: BTreeMap<String, String> = query_pairs(parts.uri.query()).into_iter().collect();
        if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
            return Err(ApiError::method_not_allowed());
        }
        let q = |k: &str| query.get(k).map_or("", String::as_str);
        let ls = LabelSelector::parse(q("labelSelector"))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let allowed: &[&str] = match t.kind {
            Kind::Nodes => &["metadata.name"],
            Kind::Pods => &["metadata.name", "metadata.namespace"],
        };
        let fs = FieldSelector::parse(q("fieldSelector"), allowed)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let items = match (t.kind, &t.name) {
            (Kind::Nodes, Some(name)) => vec![get_node(api, name).await?],
            (Kind::Nodes, None) => list_nodes(api, &ls, &fs).await?,
            (Kind::Pods, Some(name)) => {
                vec![get_pod(api, t.ns.as_deref().unwrap_or("default"), name).await?]
            }
            (Kind::Pods, None) => list_pods(api, t.ns.as_deref(), &ls, &fs).await?,
        };
        let wants_table = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("as=Table"));
        let doc = match (wants_table, &t.name, items.as_slice()) {
            (true, _, _) => table::table(&items),
            (false, Some(_), [one]) => one.clone(),
            (false, _, _) => {
                let kind = match t.kind {
                    Kind::Nodes => "NodeMetricsList",
                    Kind::Pods => "PodMetricsList",
                };
                json!({"kind": kind, "apiVersion": API_VERSION, "metadata": {}, "items": items})
            }
        };
        Ok(json_resp(StatusCode::OK, &doc))
    }
    .await;
    (verb, result.unwrap_or_else(IntoResponse::into_response))
}

fn selected(obj: &Value, ls: &LabelSelector, fs: &FieldSelector) -> bool {
    (ls.is_empty() || ls.matches(&object::labels(obj)))
        && (fs.is_empty() || fs.matches(|f| object::field_value(obj, f)))
}

async fn read_all(api: &Api, kind: &str, ns: Option<&str>) -> ApiResult<Vec<Value>> {
    let res = crate::registry::by_kind(kind)
        .ok_or_else(|| ApiError::internal(format!("{kind} is not registered")))?;
    let (kvs, _) = api.store.list(&res.ns_prefix(ns)).await?;
    kvs.iter().map(from_kv).collect()
}

async fn read_one(api: &Api, kind: &str, ns: Option<&str>, name: &str) -> ApiResult<Option<Value>> {
    let res = crate::registry::by_kind(kind)
        .ok_or_else(|| ApiError::internal(format!("{kind} is not registered")))?;
    match api.store.get(&res.key(ns, name)).await? {
        Some(kv) => Ok(Some(from_kv(&kv)?)),
        None => Ok(None),
    }
}

/// The summaries of the Ready nodes among `nodes`, by node name, asked all at once; the
/// others are logged and left out.
async fn summaries(api: &Api, nodes: &[&Value]) -> BTreeMap<String, scrape::Summary> {
    let asks = nodes
        .iter()
        .filter(|n| scrape::is_ready(n))
        .map(|n| async move {
            let name = object::name(n).unwrap_or_default().to_string();
            match scrape::summary(api, n).await {
                Ok(s) => Some((name, s)),
                Err(error) => {
                    tracing::warn!(node = name, error, "no metrics from the kubelet");
                    None
                }
            }
        });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn get_node(api: &Api, name: &str) -> ApiResult<Value> {
    // metrics-server's node lister names the resource "node".
    let node = read_one(api, "Node", None, name)
        .await?
        .ok_or_else(|| ApiError::not_found("node", name))?;
    let now = object::now_rfc3339();
    summaries(api, &[&node])
        .await
        .get(name)
        .and_then(|s| convert::node_metrics(&node, &s.node, &now))
        .ok_or_else(|| ApiError::not_found(Kind::Nodes.not_found_resource(), name))
}

async fn list_nodes(api: &Api, ls: &LabelSelector, fs: &FieldSelector) -> ApiResult<Vec<Value>> {
    let nodes = read_all(api, "Node", None).await?;
    let chosen: Vec<&Value> = nodes.iter().filter(|n| selected(n, ls, fs)).collect();
    let got = summaries(api, &chosen).await;
    let now = object::now_rfc3339();
    // Sorted by name, as the store lists them.
    Ok(chosen
        .iter()
        .filter_map(|n| {
            let s = got.get(object::name(n)?)?;
            convert::node_metrics(n, &s.node, &now)
        })
        .collect())
}

/// The PodMetrics of `pods`, reading the summaries of the nodes they run on.
async fn pod_items(api: &Api, pods: &[&Value]) -> ApiResult<Vec<Value>> {
    let node_names: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| object::str_at(p, &["spec", "nodeName"]))
        .collect();
    let mut nodes = Vec::with_capacity(node_names.len());
    for n in node_names {
        if let Some(node) = read_one(api, "Node", None, n).await? {
            nodes.push(node);
        }
    }
    let got = summaries(api, &nodes.iter().collect::<Vec<_>>()).await;
    let now = object::now_rfc3339();
    Ok(pods
        .iter()
        .filter_map(|p| {
            let summary = got.get(object::str_at(p, &["spec", "nodeName"])?)?;
            let (ns, name) = (object::namespace(p)?, object::name(p)?);
            let stats = summary
                .pods
                .iter()
                .find(|s| s.pod_ref.namespace == ns && s.pod_ref.name == name)?;
            convert::pod_metrics(p, stats, &now)
        })
        .collect())
}

async fn get_pod(api: &Api, ns: &str, name: &str) -> ApiResult<Value> {
    let pod = read_one(api, "Pod", Some(ns), name)
        .await?
        .ok_or_else(|| ApiError::not_found("pods", name))?;
    pod_items(api, &[&pod]).await?.pop().ok_or_else(|| {
        ApiError::not_found(Kind::Pods.not_found_resource(), &format!("{ns}/{name}"))
    })
}

async fn list_pods(
    api: &Api,
    ns: Option<&str>,
    ls: &LabelSelector,
    fs: &FieldSelector,
) -> ApiResult<Vec<Value>> {
    let pods = read_all(api, "Pod", ns).await?;
    // Sorted by namespace and name, as the store lists them.
    let chosen: Vec<&Value> = pods.iter().filter(|p| selected(p, ls, fs)).collect();
    pod_items(api, &chosen).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = |p: &str| target(p).map(|r| r.map(|t| (t.kind, t.ns, t.name)));
        assert_eq!(
            t("/apis/metrics.k8s.io/v1beta1/nodes").unwrap().unwrap(),
            (Kind::Nodes, None, None)
        );
        assert_eq!(
            t("/apis/metrics.k8s.io/v1beta1/nodes/n1").unwrap().unwrap(),
            (Kind::Nodes, None, Some("n1".into()))
        );
        assert_eq!(
            t("/apis/metrics.k8s.io/v1beta1/pods").unwrap().unwrap(),
            (Kind::Pods, None, None)
        );
        assert_eq!(
            t("/apis/metrics.k8s.io/v1beta1/namespaces/d/pods/web")
                .unwrap()
                .unwrap(),
            (Kind::Pods, Some("d".into()), Some("web".into()))
        );
        for bad in [
            "/apis/metrics.k8s.io/v1beta1/namespaces/d/nodes",
            "/apis/metrics.k8s.io/v1beta1/widgets",
            "/apis/metrics.k8s.io/v1beta1/pods/a/b",
        ] {
            assert_eq!(
                t(bad).unwrap().unwrap_err().code,
                StatusCode::NOT_FOUND,
                "{bad}"
            );
        }
        assert!(t("/apis/metrics.k8s.io/v1beta1").is_none(), "discovery's");
        assert!(t("/api/v1/pods").is_none());
    }

    #[test]
    fn only_the_admin_reads_metrics() {
        let t = Target {
            kind: Kind::Pods,
            ns: Some("d".into()),
            name: None,
        };
        assert!(authorize(&Identity::Admin, "list", &t).is_ok());
        let e = authorize(&Identity::Node("n1".into()), "list", &t).unwrap_err();
        assert_eq!(e.code, StatusCode::FORBIDDEN);
        assert_eq!(
            e.message,
            "pods.metrics.k8s.io is forbidden: User \"system:node:n1\" cannot list resource \
             \"pods\" in API group \"metrics.k8s.io\" in the namespace \"d\""
        );
    }

    #[test]
    fn discovery_documents() {
        let doc = resource_list(GROUP, VERSION).unwrap();
        assert_eq!(doc["groupVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(doc["resources"][0]["kind"], "NodeMetrics");
        assert_eq!(doc["resources"][1]["namespaced"], true);
        assert!(resource_list(GROUP, "v1").is_none());
    }
}
