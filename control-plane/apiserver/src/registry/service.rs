//! Services: they start with an empty load-balancer status and hold a ClusterIP and
//! NodePorts from the server's ranges (`crate::alloc`), claimed and released with them.

use futures::future::BoxFuture;
use kproxy_api::validate::FieldError;
use kproxy_store::{Op, Store};
use serde_json::{Value, json};

use super::{Allocator, Hooks};
use crate::alloc::{self, Ranges};
use crate::status::ApiResult;

pub const HOOKS: Hooks = Hooks {
    initial_status: Some(initial_status),
    prepare_update: Some(alloc::drop_type_dependent_fields),
    allocator: Some(Allocator {
        assign,
        release: alloc::release,
        owns_key: alloc::is_alloc_key,
    }),
    ..Hooks::NONE
};

fn initial_status(_: &Value) -> Value {
    json!({"loadBalancer": {}})
}

fn assign<'a>(
    ranges: &'a Ranges,
    store: &'a dyn Store,
    svc: &'a mut Value,
    old: Option<&'a Value>,
    key: &'a str,
) -> BoxFuture<'a, ApiResult<Result<Vec<Op>, Vec<FieldError>>>> {
    Box::pin(ranges.assign(store, svc, old, key))
}
