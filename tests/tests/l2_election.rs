//! The L2 announcement election (kproxy's `l2lease`) in-process against a real API server,
//! each candidate with its own node's credentials: one holder at a time, a takeover after a
//! holder dies without a word, a release on a clean stop, and a release when a node stops
//! being a candidate.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::coordination::v1::Lease;
use kproxy::l2lease::{self, Change, Config, Election, LEASE_NAMESPACE};
use kproxy_tests::{
    apiserver::{ApiServer, TempDir},
    bin, sh, unique,
};
use kube::{Api, Client};

async fn node_client(api: &ApiServer, dir: &Path, node: &str) -> Client {
    let path = dir.join(format!("{node}.kubeconfig"));
    sh(Command::new(bin("kproxy-apiserver"))
        .args(["node-kubeconfig", node, "--out"])
        .arg(&path)
        .args(["--server", &api.url, "--data-dir"])
        .arg(&api.data_dir));
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

fn start(client: Client, node: &str) -> Election {
    l2lease::spawn(
        client,
        Config {
            identity: node.to_string(),
            duration: Duration::from_secs(1),
            uplink: None,
        },
        BTreeSet::new(),
    )
}

/// The next change of `e`, within `limit`.
async fn next(e: &mut Election, limit: Duration) -> Option<Change> {
    tokio::time::timeout(limit, e.changes.recv())
        .await
        .ok()
        .flatten()
}

async fn holder(api: &Api<Lease>, name: &str) -> Option<String> {
    api.get_opt(name)
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_announcer_at_a_time_and_a_takeover_when_it_dies() {
    let dir = TempDir::new("l2-election");
    let api = ApiServer::start(dir.path(), &[]);
    let (na, nb) = (unique("l2a"), unique("l2b"));
    let mut first = start(node_client(&api, dir.path(), &na).await, &na);
    let mut second = start(node_client(&api, dir.path(), &nb).await, &nb);
    let admin = Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&api.kubeconfig).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let leases: Api<Lease> = Api::namespaced(admin, LEASE_NAMESPACE);
    let service = format!("default/{}", unique("web"));
    let lease = l2lease::lease_name(&service);
    let addrs = vec![Ipv4Addr::new(198, 18, 0, 10)];

    // Both become candidates: exactly one wins, and stays the only holder.
    first
        .wants
        .send_replace([(service.clone(), addrs.clone())].into());
    second
        .wants
        .send_replace([(service.clone(), addrs.clone())].into());
    let (wa, wb) = tokio::join!(
        next(&mut first, Duration::from_secs(3)),
        next(&mut second, Duration::from_secs(3))
    );
    let won = |c: &Option<Change>| c.as_ref().is_some_and(|c| c.held && c.service == service);
    assert!(
        won(&wa) != won(&wb),
        "exactly one holder: a {wa:?}, b {wb:?}"
    );
    let (mut holder_e, holder_n, mut other_e, other_n) = if won(&wa) {
        (first, na, second, nb)
    } else {
        (second, nb, first, na)
    };
    assert_eq!(
        holder(&leases, &lease).await.as_deref(),
        Some(holder_n.as_str())
    );
    // Several lease durations later nothing changed hands.
    assert_eq!(next(&mut other_e, Duration::from_secs(3)).await, None);
    assert_eq!(next(&mut holder_e, Duration::from_millis(10)).await, None);

    // The holder dies without releasing: the other takes over after one silent duration,
    // counted from the last renewal it saw, which may come up to a renewal period (a quarter
    // duration) before the death; so the bound is the last renewTime read before it, which is
    // no later than the last renewal.
    let renewed = leases
        .get(&lease)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.renew_time)
        .expect("a held lease has a renewTime")
        .0;
    holder_e.abort();
    let change = next(&mut other_e, Duration::from_secs(5)).await;
    assert!(won(&change), "takeover: {change:?}");
    let silent = jiff::Timestamp::now().duration_since(renewed);
    assert!(
        silent >= jiff::SignedDuration::from_secs(1),
        "not before the lease ran out: {silent:?} after the renewal read before the death"
    );
    let l = leases.get(&lease).await.unwrap().spec.unwrap();
    assert_eq!(l.holder_identity.as_deref(), Some(other_n.as_str()));
    assert_eq!(l.lease_transitions, Some(1));

    // No longer a candidate: it releases at once and says so.
    other_e.wants.send_replace(BTreeMap::new());
    let change = next(&mut other_e, Duration::from_secs(2)).await;
    assert_eq!(
        change,
        Some(Change {
            service: service.clone(),
            held: false
        })
    );
    assert_eq!(holder(&leases, &lease).await, None);

    // A fresh candidate takes a released lease without waiting a duration; a clean stop
    // releases it again.
    let mut fresh = start(node_client(&api, dir.path(), &holder_n).await, &holder_n);
    fresh.wants.send_replace([(service.clone(), addrs)].into());
    let asked = Instant::now();
    let change = next(&mut fresh, Duration::from_secs(2)).await;
    assert!(won(&change), "{change:?}");
    assert!(
        asked.elapsed() < Duration::from_millis(900),
        "{:?}",
        asked.elapsed()
    );
    fresh.stop().await;
    other_e.stop().await;
    assert_eq!(holder(&leases, &lease).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_may_write_only_announcement_leases() {
    let dir = TempDir::new("l2-election-auth");
    let api = ApiServer::start(dir.path(), &[]);
    let node = unique("l2n");
    let client = node_client(&api, dir.path(), &node).await;
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let lease = |name: &str| Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: None,
    };
    let pp = kube::api::PostParams::default();
    leases
        .create(&pp, &lease("kproxy-l2-default.x"))
        .await
        .expect("an announcement lease");
    let err = leases
        .create(&pp, &lease("kube-controller-manager"))
        .await
        .expect_err("another lease in kube-system");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );
    let err = leases
        .delete("kproxy-l2-default.x", &kube::api::DeleteParams::default())
        .await
        .expect_err("nodes do not delete them");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );
}

/// Lease lists the API server has answered so far (its request counter).
async fn lease_lists(api: &ApiServer) -> u64 {
    let http = api.http();
    let m = tokio::task::spawn_blocking(move || http.get("/metrics"))
        .await
        .unwrap();
    assert_eq!(m.code, 200, "{}", m.body);
    m.body
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains("verb=\"list\"")
                && l.contains("resource=\"leases\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_wants_nothing_reads_nothing() {
    let dir = TempDir::new("l2-idle");
    let api = ApiServer::start(dir.path(), &[]);
    let node = unique("l2i");
    let mut e = start(node_client(&api, dir.path(), &node).await, &node);

    // A candidate for nothing and holding nothing: no lease list in 8 rounds (1 s).
    let before = lease_lists(&api).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        lease_lists(&api).await,
        before,
        "an idle election listed leases"
    );

    // A candidacy starts the rounds: the lease is won, so lists were made.
    let service = format!("default/{}", unique("idle"));
    e.wants
        .send_replace([(service.clone(), vec![Ipv4Addr::new(198, 18, 0, 11)])].into());
    let won = next(&mut e, Duration::from_secs(3)).await;
    assert!(
        won.as_ref().is_some_and(|c| c.held && c.service == service),
        "{won:?}"
    );
    assert!(lease_lists(&api).await > before);
    e.stop().await;
}
