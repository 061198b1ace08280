//! The k8s-openapi types behind the kinds the API server may serve, found by group, version and
//! kind: a kind added to the registry gets its schema with no line here, as long as it is one of
//! Kubernetes' own (every top-level kind of the groups below is listed).

use k8s_openapi::api::{
    apps, autoscaling, batch, certificates, coordination, core, discovery, events, networking,
    node, policy, rbac, scheduling, storage,
};
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// One kind's type: `add` puts its schema and everything it references into a generator and
/// returns the `$ref` to it.
pub struct KindSchema {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub add: fn(&mut SchemaGenerator) -> Schema,
}

fn add<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

macro_rules! kinds {
    ($($t:ty),* $(,)?) => {
        &[$(KindSchema {
            group: <$t as k8s_openapi::Resource>::GROUP,
            version: <$t as k8s_openapi::Resource>::VERSION,
            kind: <$t as k8s_openapi::Resource>::KIND,
            add: add::<$t>,
        }),*]
    };
}

static KINDS: &[KindSchema] = kinds![
    core::v1::Binding,
    core::v1::ComponentStatus,
    core::v1::ConfigMap,
    core::v1::Endpoints,
    core::v1::Event,
    core::v1::LimitRange,
    core::v1::Namespace,
    core::v1::Node,
    core::v1::PersistentVolume,
    core::v1::PersistentVolumeClaim,
    core::v1::Pod,
    core::v1::PodTemplate,
    core::v1::ReplicationController,
    core::v1::ResourceQuota,
    core::v1::Secret,
    core::v1::Service,
    core::v1::ServiceAccount,
    apps::v1::ControllerRevision,
    apps::v1::DaemonSet,
    apps::v1::Deployment,
    apps::v1::ReplicaSet,
    apps::v1::StatefulSet,
    autoscaling::v2::HorizontalPodAutoscaler,
    batch::v1::CronJob,
    batch::v1::Job,
    certificates::v1::CertificateSigningRequest,
    coordination::v1::Lease,
    discovery::v1::EndpointSlice,
    events::v1::Event,
    networking::v1::Ingress,
    networking::v1::IngressClass,
    networking::v1::NetworkPolicy,
    node::v1::RuntimeClass,
    policy::v1::PodDisruptionBudget,
    rbac::v1::ClusterRole,
    rbac::v1::ClusterRoleBinding,
    rbac::v1::Role,
    rbac::v1::RoleBinding,
    scheduling::v1::PriorityClass,
    storage::v1::CSIDriver,
    storage::v1::CSINode,
    storage::v1::StorageClass,
    storage::v1::VolumeAttachment,
];

pub fn find(group: &str, version: &str, kind: &str) -> Option<&'static KindSchema> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
}
