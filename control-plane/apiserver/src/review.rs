//! The reviews kubectl's `auth can-i` and `auth whoami` post: SelfSubjectAccessReview and
//! SelfSubjectRulesReview (authorization.k8s.io/v1), SelfSubjectReview
//! (authentication.k8s.io/v1). Create-only and never stored: the answer is the object with
//! its status filled in (201), from the rule tables the authorizer itself reads
//! (`auth::rules`), and for pods bound to a node from the stored pods, as the real request
//! would be decided.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use kproxy_api::validate::{ErrorType, FieldError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::rules::{self, Attributes};
use crate::auth::{Access, Identity, graph};
use crate::context::Api;
use crate::object;
use crate::status::{ApiError, ApiResult};

const AUTHORIZATION: &str = "authorization.k8s.io";
const AUTHENTICATION: &str = "authentication.k8s.io";
const VERSION: &str = "v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    /// SelfSubjectAccessReview: may I do this?
    Access,
    /// SelfSubjectRulesReview: what may I do in this namespace?
    Rules,
    /// SelfSubjectReview: who am I?
    User,
}

const ALL: [Review; 3] = [Review::Access, Review::Rules, Review::User];

impl Review {
    fn group(self) -> &'static str {
        match self {
            Review::Access | Review::Rules => AUTHORIZATION,
            Review::User => AUTHENTICATION,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Review::Access => "SelfSubjectAccessReview",
            Review::Rules => "SelfSubjectRulesReview",
            Review::User => "SelfSubjectReview",
        }
    }

    /// The plural, as in the URL and in authorization.
    pub fn resource(self) -> &'static str {
        match self {
            Review::Access => "selfsubjectaccessreviews",
            Review::Rules => "selfsubjectrulesreviews",
            Review::User => "selfsubjectreviews",
        }
    }
}

/// The review a request path addresses, if any.
pub fn route(path: &str) -> Option<Review> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["apis", group, VERSION, resource] = segs.as_slice() else {
        return None;
    };
    ALL.into_iter()
        .find(|r| r.group() == *group && r.resource() == *resource)
}

/// The API groups the reviews add to discovery, each with its version.
pub fn groups() -> [(&'static str, &'static str); 2] {
    [(AUTHORIZATION, VERSION), (AUTHENTICATION, VERSION)]
}

/// The discovery APIResourceList of a review group-version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if version != VERSION {
        return None;
    }
    let resources: Vec<Value> = ALL
        .into_iter()
        .filter(|r| r.group() == group)
        .map(|r| {
            json!({
                "name": r.resource(),
                "singularName": r.resource().trim_end_matches('s'),
                "namespaced": false,
                "kind": r.kind(),
                "verbs": ["create"],
            })
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{group}/{version}"),
        "resources": resources,
    }))
}

/// Answers a review: POST only; the body in any wire format the API server reads.
pub async fn serve(
    api: &Api,
    id: &Identity,
    review: Review,
    method: &Method,
    content_type: &str,
    body: &[u8],
) -> ApiResult<Response> {
    if *method != Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    let may = rules::decide(
        id,
        &Attributes {
            verb: "create",
            group: review.group(),
            resource: review.resource(),
            sub: None,
            ns: None,
            name: None,
        },
    );
    if may != Access::Allowed {
        return Err(ApiError::forbidden(
            &id.user(),
            "create",
            &format!("{}.{}", review.resource(), review.group()),
            None,
        ));
    }
    let mut obj = object::parse_body(content_type, body)?;
    check_type(review, &obj)?;
    let status = match review {
        Review::Access => access(api, id, &decode(review, &obj)?).await?,
        Review::Rules => {
            let spec: RulesSpec = decode(review, &obj)?;
            rules_status(api, id, spec.namespace.as_deref().unwrap_or_default()).await?
        }
        Review::User => {
            obj["metadata"] = json!({"creationTimestamp": object::now_rfc3339()});
            json!({"userInfo": {"username": id.user(), "groups": id.groups()}})
        }
    };
    obj["apiVersion"] = json!(format!("{}/{VERSION}", review.group()));
    obj["kind"] = json!(review.kind());
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["status"] = status;
    Ok(crate::context::json(StatusCode::CREATED, &obj))
}

/// A body of another kind or group-version is refused, as kube-apiserver's create does.
fn check_type(review: Review, obj: &Value) -> ApiResult<()> {
    let expected = format!("{}/{VERSION}", review.group());
    if let Some(v) = obj.get("apiVersion").and_then(Value::as_str)
        && v != expected
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({expected})"
        )));
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str)
        && k != review.kind()
    {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): kind {k:?} in the data",
            review.kind()
        )));
    }
    Ok(())
}

/// The spec of a review as Go would decode it (null and absent are the zero value); a
/// field of the wrong type is a 400.
fn decode<T: for<'de> Deserialize<'de> + Default>(review: Review, obj: &Value) -> ApiResult<T> {
    match obj.get("spec") {
        None | Some(Value::Null) => Ok(T::default()),
        Some(spec) => serde_json::from_value(spec.clone()).map_err(|e| {
            ApiError::bad_request(format!(
                "{kind} in version \"{VERSION}\" cannot be handled as a {kind}: spec: {e}",
                kind = review.kind()
            ))
        }),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessSpec {
    resource_attributes: Option<ResourceAttributes>,
    non_resource_attributes: Option<NonResourceAttributes>,
}

#[derive(Debug, Default, Deserialize)]
struct ResourceAttributes {
    namespace: Option<String>,
    verb: Option<String>,
    group: Option<String>,
    resource: Option<String>,
    subresource: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct NonResourceAttributes {
    path: Option<String>,
    verb: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RulesSpec {
    namespace: Option<String>,
}

/// `Some` unless empty: Go's empty string is "not given".
fn given(s: Option<&String>) -> Option<&str> {
    s.map(String::as_str).filter(|s| !s.is_empty())
}

fn one_of_error(detail: &str, field: &str, value: &str) -> ApiError {
    ApiError::invalid(
        "SelfSubjectAccessReview",
        AUTHORIZATION,
        "",
        &[FieldError {
            field: field.into(),
            error_type: ErrorType::Invalid,
            value: Some(value.into()),
            detail: detail.into(),
        }],
    )
}

async fn access(api: &Api, id: &Identity, spec: &AccessSpec) -> ApiResult<Value> {
    let (ra, path) = match (&spec.resource_attributes, &spec.non_resource_attributes) {
        (Some(_), Some(n)) => {
            return Err(one_of_error(
                "cannot be specified in combination with resourceAttributes",
                "spec.nonResourceAttributes",
                &json!({"path": n.path, "verb": n.verb}).to_string(),
            ));
        }
        (None, None) => {
            return Err(one_of_error(
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                "spec.resourceAttributes",
                "\"null\"",
            ));
        }
        (Some(ra), None) => (ra, None),
        (None, Some(n)) => (&ResourceAttributes::default(), Some(n)),
    };
    if let Some(n) = path {
        let verb = given(n.verb.as_ref()).unwrap_or_default();
        let p = given(n.path.as_ref()).unwrap_or_default();
        return Ok(json!({"allowed": crate::auth::allows_path(id, verb, p)}));
    }
    let a = Attributes {
        verb: given(ra.verb.as_ref()).unwrap_or_default(),
        group: given(ra.group.as_ref()).unwrap_or_default(),
        resource: given(ra.resource.as_ref()).unwrap_or_default(),
        sub: given(ra.subresource.as_ref()),
        ns: given(ra.namespace.as_ref()),
        name: given(ra.name.as_ref()),
    };
    let (allowed, reason) = match rules::decide(id, &a) {
        Access::Allowed => (true, None),
        Access::Denied => (false, None),
        Access::PodBoundTo(node) => match (a.ns, a.name) {
            (Some(ns), Some(name)) => bound_pod(api, &node, a.verb, ns, name).await?,
            // No pod named: the rule allows, and each request is checked against its pod
            // (Kubernetes: the static node rule, then NodeRestriction admission).
            _ => (true, None),
        },
        Access::ReferencedBy(node) => {
            let (ns, name) = (a.ns.unwrap_or_default(), a.name.unwrap_or_default());
            let store = api.store.as_ref();
            if graph::node_references(store, &node, ns, a.resource, name).await? {
                (true, None)
            } else {
                (false, Some(graph::no_relationship(&node)))
            }
        }
    };
    let mut status = json!({"allowed": allowed});
    if let Some(r) = reason {
        status["reason"] = json!(r);
    }
    Ok(status)
}

/// Whether `node` may `verb` pod `ns/name`: only a pod bound to it, as the handler decides.
async fn bound_pod(
    api: &Api,
    node: &str,
    verb: &str,
    ns: &str,
    name: &str,
) -> ApiResult<(bool, Option<String>)> {
    let pods = crate::registry::by_kind("Pod").expect("pods are registered");
    let Some(kv) = api.store.get(&pods.key(Some(ns), name)).await? else {
        return Ok((false, Some(format!("pods \"{name}\" not found"))));
    };
    let pod = object::from_kv(&kv)?;
    if object::field_value(&pod, "spec.nodeName") == node {
        return Ok((true, None));
    }
    let what = if verb == "delete" {
        "delete pods"
    } else {
        "update pod status for pods"
    };
    Ok((
        false,
        Some(format!(
            "node \"{node}\" can only {what} with spec.nodeName set to itself"
        )),
    ))
}

async fn rules_status(api: &Api, id: &Identity, ns: &str) -> ApiResult<Value> {
    if ns.is_empty() {
        return Err(ApiError::bad_request("no namespace on request"));
    }
    let (bound, referenced) = match id {
        Identity::Node(node) => bound_pods(api, ns, node).await?,
        Identity::Admin => (Vec::new(), Vec::new()),
    };
    let (listed, incomplete) = rules::resource_rules_with(id, ns, Some(&bound), Some(&referenced));
    let resource_rules: Vec<Value> = listed
        .into_iter()
        .map(|r| {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            v
        })
        .collect();
    let non_resource_rules: Vec<Value> = rules::path_rules(id)
        .iter()
        .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.urls}))
        .collect();
    Ok(json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": incomplete,
    }))
}

/// The names of the pods in `ns` bound to `node`, and the (plural, name) objects they
/// reference (what the node may get of ConfigMaps and Secrets).
type BoundPods = (Vec<String>, Vec<(&'static str, String)>);

async fn bound_pods(api: &Api, ns: &str, node: &str) -> ApiResult<BoundPods> {
    let pods = crate::registry::by_kind("Pod").expect("pods are registered");
    let (kvs, _) = api.store.list(&pods.ns_prefix(Some(ns))).await?;
    let mut names = Vec::new();
    let mut referenced = Vec::new();
    for kv in &kvs {
        let pod = object::from_kv(kv)?;
        if object::field_value(&pod, "spec.nodeName") == node
            && let Some(n) = object::name(&pod)
        {
            names.push(n.to_string());
            referenced.extend(graph::pod_references(&pod));
        }
    }
    Ok((names, referenced))
}
