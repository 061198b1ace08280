//! Privileged: Maglev consistent hashing end to end (issue 15 item 3). 10,000 UDP flows from
//! the external client (outside socket-LB) to an LB IP; each is answered by the backend that
//! names itself. Between rounds the backends change and kproxy's CT table is flushed, so
//! every flow of the next round (the same 5-tuples) is balanced afresh, as a node that never
//! saw it would (ECMP moving flows between nodes is what Maglev is for): the figures are the
//! pick's own stability, not CT pinning. The hash seed is fixed (`--lb-hash-seed`), as it is
//! across a cluster, so a run is reproducible.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;

use kproxy_tests::{
    lab::{Ep, Lab, Svc, flows_moved, flush_ct, udp_flow_backends},
    privileged,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const LB_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 20);
const FLOWS: usize = 10_000;
const FROM_PORT: u16 = 20_000;

fn svc(backends: &[usize], algorithm: &str) -> Svc {
    Svc {
        lb_ip: Some(LB_IP),
        annotations: vec![("kproxy.io/lb-algorithm".into(), algorithm.into())],
        ..Svc::cluster_ip(
            "mag",
            VIP,
            backends.iter().copied().map(Ep::ready).collect(),
        )
    }
}

/// One round: CT flushed, then the 10,000 flows; the backend of each.
fn round(lab: &Lab) -> Vec<String> {
    flush_ct(lab.bpffs.path());
    udp_flow_backends(
        lab.client_cmd(&kproxy_tests::lab::kpt()),
        &format!("{LB_IP}:53"),
        FROM_PORT,
        FLOWS,
    )
}

fn set(lab: &mut Lab, backends: &[usize], algorithm: &str) {
    let before = lab.syncs();
    lab.set_services(&[svc(backends, algorithm)]);
    lab.wait_sync(before);
}

struct Disruption {
    /// Flows moved when backend b3 of b0..b9 is removed.
    removed: usize,
    /// Flows moved when b10 joins the nine.
    added: usize,
}

/// Ten backends, then b3 removed, then b10 added, under `algorithm`.
fn disruption(algorithm: &str) -> Disruption {
    let mut lab = Lab::new(11);
    let ten: Vec<usize> = (0..10).collect();
    lab.set_services(&[svc(&ten, algorithm)]);
    lab.start_kproxy_with("auto", "xdp", &["--lb-hash-seed", "kproxy-maglev-e2e"]);
    let r10 = round(&lab);
    for b in &ten {
        let n = r10.iter().filter(|n| **n == format!("b{b}")).count();
        // ~1,000 each; Maglev and the random pick both spread evenly.
        assert!((800..=1200).contains(&n), "{algorithm}: b{b} got {n}");
    }

    let nine: Vec<usize> = ten.iter().copied().filter(|b| *b != 3).collect();
    set(&mut lab, &nine, algorithm);
    let r9 = round(&lab);
    assert!(
        !r9.iter().any(|n| n == "b3"),
        "{algorithm}: b3 still picked"
    );
    let removed = flows_moved(&r10, &r9);

    let mut with_new = nine.clone();
    with_new.push(10);
    set(&mut lab, &with_new, algorithm);
    let r10b = round(&lab);
    let added = flows_moved(&r9, &r10b);
    eprintln!(
        "{algorithm}: removing 1 of 10 moved {removed}/{FLOWS} flows, adding 1 to 9 moved {added}/{FLOWS}"
    );
    Disruption { removed, added }
}

#[test]
fn privileged_maglev_moves_only_what_a_backend_change_must() {
    if !privileged("privileged_maglev_moves_only_what_a_backend_change_must") {
        return;
    }
    let d = disruption("maglev");
    // The removed backend's ~10 % must move; Maglev adds a little (issue target ≤ 11 %).
    assert!(d.removed >= FLOWS * 8 / 100, "{} moved", d.removed);
    assert!(d.removed <= FLOWS * 11 / 100, "{} moved", d.removed);
    // The new backend takes its 1/10 and a little more: ≤ 1/N + 3 %.
    assert!(d.added >= FLOWS * 8 / 100, "{} moved", d.added);
    assert!(d.added <= FLOWS / 10 + FLOWS * 3 / 100, "{} moved", d.added);
}

#[test]
fn privileged_random_pick_moves_most_flows() {
    if !privileged("privileged_random_pick_moves_most_flows") {
        return;
    }
    let d = disruption("random");
    assert!(d.removed > FLOWS / 2, "{} moved", d.removed);
    assert!(d.added > FLOWS / 2, "{} moved", d.added);
}
