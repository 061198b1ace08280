//! What a pod asks of a node: CPU and memory requests computed the way Kubernetes does
//! (`resourcehelper.PodRequests`: containers summed, init containers taken at their peak,
//! sidecars added, overhead on top), the host ports it binds, and what a node offers.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Container, Node, Pod},
    apimachinery::pkg::api::resource::Quantity,
};
use kproxy_apimachinery::quantity::Quantity as Q;

/// kube-scheduler's stand-ins for containers without requests, used for scoring only, so
/// that request-less pods still spread (`DefaultMilliCPURequest`, `DefaultMemoryRequest`).
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// CPU in milli-cores and memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
}

impl Resources {
    #[must_use]
    pub fn plus(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_add(o.milli_cpu),
            memory: self.memory.saturating_add(o.memory),
        }
    }

    #[must_use]
    pub fn minus(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_sub(o.milli_cpu),
            memory: self.memory.saturating_sub(o.memory),
        }
    }

    #[must_use]
    fn max(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(o.milli_cpu),
            memory: self.memory.max(o.memory),
        }
    }
}

/// A pod's requests: `actual` for fitting, `non_zero` (defaults for unset requests) for scoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodRequests {
    pub actual: Resources,
    pub non_zero: Resources,
}

fn milli(q: &Quantity) -> i64 {
    Q::parse(&q.0).map_or(0, |q| clamp(q.milli_value()))
}

fn units(q: &Quantity) -> i64 {
    Q::parse(&q.0).map_or(0, |q| clamp(q.value()))
}

fn clamp(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// One container's requests; a limit without a request counts as the request, as API
/// defaulting makes it.
fn container(c: &Container) -> PodRequests {
    let res = c.resources.as_ref();
    let get = |name: &str| {
        res.and_then(|r| r.requests.as_ref().and_then(|m| m.get(name)))
            .or_else(|| res.and_then(|r| r.limits.as_ref().and_then(|m| m.get(name))))
    };
    let cpu = get("cpu");
    let mem = get("memory");
    let actual = Resources {
        milli_cpu: cpu.map_or(0, milli),
        memory: mem.map_or(0, units),
    };
    PodRequests {
        actual,
        non_zero: Resources {
            milli_cpu: cpu.map_or(DEFAULT_MILLI_CPU, milli),
            memory: mem.map_or(DEFAULT_MEMORY, units),
        },
    }
}

fn combine(
    a: PodRequests,
    b: PodRequests,
    f: impl Fn(Resources, Resources) -> Resources,
) -> PodRequests {
    PodRequests {
        actual: f(a.actual, b.actual),
        non_zero: f(a.non_zero, b.non_zero),
    }
}

/// The pod's effective requests: the sum of its containers and sidecars (init containers
/// with `restartPolicy: Always`), or the peak of a plain init container plus the sidecars
/// started before it, whichever is larger; plus `spec.overhead`.
#[must_use]
pub fn pod_requests(pod: &Pod) -> PodRequests {
    let Some(spec) = pod.spec.as_ref() else {
        return PodRequests::default();
    };
    let mut total = spec
        .containers
        .iter()
        .map(container)
        .fold(PodRequests::default(), |a, b| {
            combine(a, b, Resources::plus)
        });
    let mut sidecars = PodRequests::default();
    let mut init_peak = PodRequests::default();
    for ic in spec.init_containers.iter().flatten() {
        let r = container(ic);
        let running = if ic.restart_policy.as_deref() == Some("Always") {
            total = combine(total, r, Resources::plus);
            sidecars = combine(sidecars, r, Resources::plus);
            sidecars
        } else {
            combine(r, sidecars, Resources::plus)
        };
        init_peak = combine(init_peak, running, Resources::max);
    }
    let mut out = combine(total, init_peak, Resources::max);
    if let Some(o) = spec.overhead.as_ref() {
        let over = Resources {
            milli_cpu: o.get("cpu").map_or(0, milli),
            memory: o.get("memory").map_or(0, units),
        };
        out.actual = out.actual.plus(over);
        out.non_zero = out.non_zero.plus(over);
    }
    out
}

/// A host port a pod binds: protocol and address normalized (`TCP`, `0.0.0.0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

const ANY_IP: &str = "0.0.0.0";

impl HostPort {
    /// Kubernetes' `HostPortInfo.CheckConflict`: same protocol and port, and either address
    /// is the wildcard or both are equal.
    #[must_use]
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == ANY_IP || other.ip == ANY_IP)
    }
}

/// The host ports of the pod's containers and sidecars (port 0 binds nothing).
#[must_use]
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|&h| h > 0)?;
            Some(HostPort {
                ip: p
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| ANY_IP.into()),
                protocol: p
                    .protocol
                    .clone()
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "TCP".into()),
                port,
            })
        })
        .collect()
}

/// What a node offers: `status.allocatable` (missing means none, as in Kubernetes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocatable {
    pub resources: Resources,
    pub pods: i64,
}

#[must_use]
pub fn allocatable(node: &Node) -> Allocatable {
    let empty = BTreeMap::new();
    let a = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .unwrap_or(&empty);
    Allocatable {
        resources: Resources {
            milli_cpu: a.get("cpu").map_or(0, milli),
            memory: a.get("memory").map_or(0, units),
        },
        pods: a.get("pods").map_or(0, units),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers write the spec inline as a json! literal"
    )]
    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn c(cpu: &str, mem: &str) -> serde_json::Value {
        json!({"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": mem}}})
    }

    #[test]
    fn containers_are_summed_and_init_containers_peak() {
        let p = pod(json!({
            "containers": [c("250m", "64Mi"), c("250m", "64Mi")],
            "initContainers": [c("1", "16Mi"), c("100m", "1Gi")],
        }));
        let r = pod_requests(&p).actual;
        assert_eq!(r.milli_cpu, 1000);
        assert_eq!(r.memory, 1 << 30);
    }

    #[test]
    fn sidecars_add_to_the_sum_and_to_later_init_containers() {
        let mut sidecar = c("200m", "100Mi");
        sidecar["restartPolicy"] = json!("Always");
        let p = pod(json!({
            "containers": [c("300m", "100Mi")],
            "initContainers": [sidecar, c("900m", "10Mi")],
            "overhead": {"cpu": "10m"},
        }));
        let r = pod_requests(&p).actual;
        // max(300+200, 200+900) + 10 overhead
        assert_eq!(r.milli_cpu, 1110);
        assert_eq!(r.memory, 200 << 20);
    }

    #[test]
    fn limits_stand_for_missing_requests_and_defaults_only_score() {
        let p = pod(json!({"containers": [
            {"name": "a", "image": "i", "resources": {"limits": {"cpu": "2"}}},
            {"name": "b", "image": "i"},
        ]}));
        let r = pod_requests(&p);
        assert_eq!(
            r.actual,
            Resources {
                milli_cpu: 2000,
                memory: 0
            }
        );
        assert_eq!(
            r.non_zero,
            Resources {
                milli_cpu: 2000 + DEFAULT_MILLI_CPU,
                memory: 2 * DEFAULT_MEMORY
            }
        );
    }

    #[test]
    fn host_ports_normalize_and_conflict_by_address() {
        let p = pod(json!({"containers": [{"name": "a", "image": "i", "ports": [
            {"containerPort": 80, "hostPort": 8080},
            {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "10.0.0.1"},
            {"containerPort": 9090},
        ]}]}));
        let ports = host_ports(&p);
        assert_eq!(ports.len(), 2);
        assert_eq!(
            (ports[0].ip.as_str(), ports[0].protocol.as_str()),
            ("0.0.0.0", "TCP")
        );
        let hp = |ip: &str, proto: &str, port| HostPort {
            ip: ip.into(),
            protocol: proto.into(),
            port,
        };
        assert!(ports[0].conflicts(&hp("10.1.1.1", "TCP", 8080)));
        assert!(!ports[0].conflicts(&hp("10.1.1.1", "UDP", 8080)));
        assert!(ports[1].conflicts(&hp("10.0.0.1", "UDP", 53)));
        assert!(ports[1].conflicts(&hp("0.0.0.0", "UDP", 53)));
        assert!(!ports[1].conflicts(&hp("10.0.0.2", "UDP", 53)));
    }

    #[test]
    fn allocatable_parses_and_missing_means_nothing() {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": "n"},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
        .unwrap();
        assert_eq!(
            allocatable(&n),
            Allocatable {
                resources: Resources {
                    milli_cpu: 4000,
                    memory: 8 << 30
                },
                pods: 110
            }
        );
        assert_eq!(allocatable(&Node::default()), Allocatable::default());
    }
}
