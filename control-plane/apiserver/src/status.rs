//! Errors as Kubernetes `Status` objects: the body kubectl and kube-rs parse to print
//! `Error from server (NotFound): pods "x" not found`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// `metadata.continue` of the Status (an Expired list offers a way to go on).
    pub continue_token: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            continue_token: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn not_found(group_resource: &str, name: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{group_resource} \"{name}\" not found"),
        );
        e.details = Some(details(group_resource, name, None));
        e
    }

    /// A path that names no resource (unknown group, version, kind or subresource).
    pub fn no_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(group_resource: &str, name: &str) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{group_resource} \"{name}\" already exists"),
        );
        e.details = Some(details(group_resource, name, None));
        e
    }

    pub fn conflict(group_resource: &str, name: &str) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {group_resource} \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
        );
        e.details = Some(details(group_resource, name, None));
        e
    }

    /// 422 with one cause per field error, in Kubernetes' wording.
    pub fn invalid(
        kind: &str,
        group: &str,
        name: &str,
        errs: &[kproxy_api::validate::FieldError],
    ) -> Self {
        let list: Vec<String> = errs.iter().map(std::string::ToString::to_string).collect();
        let summary = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| {
                // Kubernetes' cause message is the error without its field (ErrorBody):
                // kubectl prints causes as `field: message`.
                let text = e.to_string();
                let body = text
                    .strip_prefix(&format!("{}: ", e.field))
                    .unwrap_or(&text)
                    .to_string();
                json!({"reason": e.reason(), "message": body, "field": e.field})
            })
            .collect();
        let mut d = json!({"name": name, "group": group, "kind": kind, "causes": causes});
        if group.is_empty() {
            d.as_object_mut().map(|m| m.remove("group"));
        }
        // Kubernetes names the kind with its group: `Deployment.apps "web" is invalid`.
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        Self {
            code: StatusCode::UNPROCESSABLE_ENTITY,
            reason: "Invalid",
            message: format!("{qualified} \"{name}\" is invalid: {summary}"),
            details: Some(d),
            continue_token: None,
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(user: &str, verb: &str, group_resource: &str, ns: Option<&str>) -> Self {
        let scope = match ns {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".into(),
        };
        Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{group_resource} is forbidden: User \"{user}\" cannot {verb} resource \
                 \"{group_resource}\" in API group \"\" {scope}"
            ),
        )
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    /// A read at a resourceVersion the store has not reached (504, as Kubernetes).
    pub fn too_large_resource_version(asked: u64, current: u64) -> Self {
        let mut e = Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("Too large resource version: {asked}, current: {current}"),
        );
        e.details = Some(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        }));
        e
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Internal error occurred: {err}"),
        )
    }

    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        if let Some(c) = &self.continue_token {
            s["metadata"]["continue"] = json!(c);
        }
        s
    }
}

fn details(group_resource: &str, name: &str, _kind: Option<&str>) -> Value {
    // details.kind carries the resource (plural), group the API group, as the real server does.
    let (kind, group) = group_resource
        .split_once('.')
        .unwrap_or((group_resource, ""));
    let mut d = json!({"name": name, "kind": kind});
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

impl From<kproxy_store::StoreError> for ApiError {
    fn from(e: kproxy_store::StoreError) -> Self {
        match e {
            kproxy_store::StoreError::Compacted { requested, oldest } => {
                ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
            }
            // etcd down: a 503 (kubectl: "Error from server (ServiceUnavailable): ..."), so
            // clients retry rather than report a server bug.
            e @ kproxy_store::StoreError::Unavailable { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                causes(&e),
            ),
            // The whole chain, so clients see the cause ("No space left on device"), as
            // kube-apiserver passes etcd's "mvcc: database space exceeded" on.
            other => ApiError::internal(causes(&other)),
        }
    }
}

/// An error and its sources, joined with ": ".
pub fn causes(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.to_status().to_string();
        (
            self.code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

/// A success Status (e.g. the answer to a delete with no object left to return).
pub fn success(details: &Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}
