//! The service sets kproxy loads: ClusterIPs and the Kubernetes manifests of N services.

use std::{fmt::Write as _, net::Ipv4Addr, ops::RangeInclusive};

use kproxy_tests::lab::{BACKEND_PORT, backend_ip};

use super::{BACKENDS, LB_IP, SVC_PORT};

/// ClusterIP of service `i` (1-based): 10.104.(i/256).(i%256), inside the default service
/// range 10.96.0.0/12 but away from the 10.96.0.x addresses the tests and `cargo xtask run`
/// use (a kproxy running on the machine with socket-LB on the root cgroup would otherwise
/// translate the bench's connections too).
pub fn vip(i: usize) -> Ipv4Addr {
    let i = u32::try_from(i).expect("service index");
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 104, 0, 0)) + i)
}

/// Kubernetes manifests: services 1..=n with 4 endpoints each; service n (the measured one)
/// also has the LoadBalancer IP and `last_eps` as its endpoints.
#[cfg(test)]
fn manifest(n: usize, last_eps: &[usize]) -> String {
    manifest_part(1..=n, n, last_eps)
}

/// Services `range` of `n` (service `n`, the measured one, gets `last_eps` as endpoints).
pub fn manifest_part(range: RangeInclusive<usize>, n: usize, last_eps: &[usize]) -> String {
    let mut y = String::with_capacity(range.clone().count() * 560);
    for i in range {
        let last = i == n;
        let ty = if last { "LoadBalancer" } else { "ClusterIP" };
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\n\
             spec:\n  type: {ty}\n  clusterIP: {ip}\n  ports:\n  - {{name: http, port: {SVC_PORT}, protocol: TCP, targetPort: {BACKEND_PORT}}}\n",
            ip = vip(i)
        );
        if last {
            let _ = writeln!(
                y,
                "status:\n  loadBalancer:\n    ingress: [{{ip: {LB_IP}}}]"
            );
        }
        let _ = write!(
            y,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  \
             name: svc-{i}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: svc-{i}}}\n\
             addressType: IPv4\nports:\n- {{name: http, port: {BACKEND_PORT}, protocol: TCP}}\nendpoints:\n"
        );
        let all: Vec<usize> = (0..BACKENDS).collect();
        for b in if last { last_eps } else { &all } {
            let _ = writeln!(
                y,
                "- addresses: [{}]\n  conditions: {{ready: true}}",
                backend_ip(*b)
            );
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_manifests() {
        assert_eq!(vip(1), Ipv4Addr::new(10, 104, 0, 1));
        assert_eq!(vip(10_000), Ipv4Addr::new(10, 104, 39, 16));
        let m = manifest(2, &[1]);
        assert_eq!(m.matches("kind: Service\n").count(), 2);
        assert_eq!(m.matches("ingress: [{ip: 172.30.0.10}]").count(), 1);
        assert!(m.ends_with("- addresses: [10.244.1.3]\n  conditions: {ready: true}\n"));
    }
}
