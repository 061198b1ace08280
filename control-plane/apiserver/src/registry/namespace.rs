//! Namespaces: deleting one marks it `Terminating`; the server then deletes everything in it,
//! then it. The system namespaces cannot be deleted.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Deletion, Hooks, SYSTEM_NAMESPACES};
use crate::object;
use crate::status::{ApiError, ApiResult};

pub const HOOKS: Hooks = Hooks {
    delete: Some(delete),
    on_mark: Some(terminating),
    last_finalizer_deletes: false,
    ..Hooks::NONE
};

fn delete(ns: &Value, _grace: Option<i64>) -> ApiResult<Deletion> {
    let name = object::name(ns).unwrap_or_default();
    // As in Kubernetes: the namespaces the cluster itself lives in stay.
    if SYSTEM_NAMESPACES.contains(&name) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
        ));
    }
    Ok(Deletion::Contents)
}

fn terminating(ns: &mut Value) {
    ns["status"]["phase"] = json!("Terminating");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_namespaces_stay() {
        let e = delete(&json!({"metadata": {"name": "kube-system"}}), None).unwrap_err();
        assert_eq!(e.code, StatusCode::FORBIDDEN);
        let ns = json!({"metadata": {"name": "team"}});
        assert_eq!(delete(&ns, None).unwrap(), Deletion::Contents);
    }
}
