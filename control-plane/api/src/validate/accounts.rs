//! core/v1 ServiceAccounts (ValidateServiceAccount: a DNS subdomain name in a namespace).

use k8s_openapi::api::core::v1::ServiceAccount;

use super::FieldError;
use super::meta::{self, NameRule, Scope};

pub(crate) fn service_account(
    sa: &ServiceAccount,
    old: Option<&ServiceAccount>,
) -> Vec<FieldError> {
    let mut errs = meta::object_meta(&sa.metadata, Scope::Namespaced, NameRule::Subdomain);
    if let Some(old) = old {
        errs.extend(meta::object_meta_update(&sa.metadata, &old.metadata));
    }
    errs
}
