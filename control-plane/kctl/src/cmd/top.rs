//! `kctl top node|pod`: CPU and memory use from the Metrics API (`metrics.k8s.io/v1beta1`),
//! printed as kubectl prints them: CPU in millicores, memory in MiB, and for nodes the share
//! of their allocatable CPU and memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::{Node, Pod};
use kproxy_apimachinery::quantity::Quantity;
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::client::Ctx;
use crate::output;
use crate::tabwriter::TabWriter;

const METRICS_GROUP: &str = "metrics.k8s.io";
const METRICS_PATH: &str = "/apis/metrics.k8s.io/v1beta1";
/// kubectl's grace period before a pod without metrics is reported as such (metricsCreationDelay).
const CREATION_DELAY: jiff::SignedDuration = jiff::SignedDuration::from_mins(2);

#[derive(clap::Args, Debug, Clone)]
pub struct TopArgs {
    #[command(subcommand)]
    pub what: TopCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum TopCommand {
    /// Display resource (CPU/memory) usage of nodes.
    #[command(visible_alias = "nodes", alias = "no")]
    Node(TopNodeArgs),
    /// Display resource (CPU/memory) usage of pods.
    #[command(visible_alias = "pods", alias = "po")]
    Pod(TopPodArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct TopNodeArgs {
    /// Only this node.
    pub name: Option<String>,
    /// Label selector to filter on (`key=value,...`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Sort by cpu or memory (largest first).
    #[arg(long)]
    pub sort_by: Option<SortBy>,
    /// Print no header line.
    #[arg(long)]
    pub no_headers: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct TopPodArgs {
    /// Only this pod.
    pub name: Option<String>,
    /// Pods of every namespace (adds a NAMESPACE column).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector to filter on (`key=value,...`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector to filter on (`metadata.name=x`).
    #[arg(long)]
    pub field_selector: Option<String>,
    /// One line per container (adds a POD column).
    #[arg(long)]
    pub containers: bool,
    /// Sort by cpu or memory (largest first).
    #[arg(long)]
    pub sort_by: Option<SortBy>,
    /// Print no header line.
    #[arg(long)]
    pub no_headers: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    Cpu,
    Memory,
}

pub async fn run(ctx: &mut Ctx, args: TopArgs) -> Result<()> {
    let groups = ctx
        .client
        .list_api_groups()
        .await
        .context("reading the API groups")?;
    if !groups
        .groups
        .iter()
        .any(|g| g.name == METRICS_GROUP && g.versions.iter().any(|v| v.version == "v1beta1"))
    {
        bail!("Metrics API not available");
    }
    match args.what {
        TopCommand::Node(a) => top_nodes(ctx, &a).await,
        TopCommand::Pod(a) => top_pods(ctx, &a).await,
    }
}

async fn get_json(ctx: &Ctx, path: &str, query: &[(&str, &str)]) -> Result<Value> {
    let mut url = path.to_string();
    let pairs: Vec<_> = query.iter().filter(|(_, v)| !v.is_empty()).collect();
    if !pairs.is_empty() {
        let mut q = form_urlencoded_pairs(&pairs);
        q.insert(0, '?');
        url.push_str(&q);
    }
    let req = http::Request::get(url)
        .body(Vec::new())
        .context("building the request")?;
    Ok(ctx.client.request::<Value>(req).await?)
}

fn form_urlencoded_pairs(pairs: &[&(&str, &str)]) -> String {
    // Selector characters that must not stay raw in a query string.
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The items of a list answer, or the one object of a get.
fn items(body: Value) -> Vec<Value> {
    match body {
        Value::Object(mut o) if o.contains_key("items") => match o.remove("items") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        },
        other => vec![other],
    }
}

async fn top_nodes(ctx: &Ctx, a: &TopNodeArgs) -> Result<()> {
    if a.name.is_some() && a.selector.is_some() {
        bail!("only one of NAME or --selector can be provided");
    }
    let selector = a.selector.as_deref().unwrap_or("");
    let path = match &a.name {
        Some(n) => format!("{METRICS_PATH}/nodes/{n}"),
        None => format!("{METRICS_PATH}/nodes"),
    };
    let metrics = items(get_json(ctx, &path, &[("labelSelector", selector)]).await?);
    if metrics.is_empty() {
        bail!("metrics not available yet");
    }
    let api: Api<Node> = Api::all(ctx.client.clone());
    let nodes = match &a.name {
        Some(n) => vec![api.get(n).await?],
        None => {
            api.list(&ListParams::default().labels(selector))
                .await?
                .items
        }
    };
    let allocatable: BTreeMap<String, Usage> = nodes
        .iter()
        .filter_map(|n| {
            let alloc = n.status.as_ref()?.allocatable.as_ref()?;
            let q = |k: &str| alloc.get(k).and_then(|v| Quantity::parse(&v.0).ok());
            Some((
                n.metadata.name.clone()?,
                Usage {
                    cpu: q("cpu"),
                    memory: q("memory"),
                },
            ))
        })
        .collect();
    let names: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    output::emit(&node_table(
        &metrics,
        &names,
        &allocatable,
        a.sort_by,
        a.no_headers,
    ))
}

async fn top_pods(ctx: &Ctx, a: &TopPodArgs) -> Result<()> {
    if a.name.is_some() && (a.selector.is_some() || a.field_selector.is_some()) {
        bail!("only one of NAME or selector can be provided");
    }
    let ns = ctx.namespace.clone();
    let path = match (&a.name, a.all_namespaces) {
        (Some(n), _) => format!("{METRICS_PATH}/namespaces/{ns}/pods/{n}"),
        (None, true) => format!("{METRICS_PATH}/pods"),
        (None, false) => format!("{METRICS_PATH}/namespaces/{ns}/pods"),
    };
    let selector = a.selector.as_deref().unwrap_or("");
    let fields = a.field_selector.as_deref().unwrap_or("");
    let query = [("labelSelector", selector), ("fieldSelector", fields)];
    let metrics = items(get_json(ctx, &path, if a.name.is_some() { &[] } else { &query }).await?);
    if metrics.is_empty() {
        // As kubectl: pods that exist but have no figures yet are an error; no pods is not.
        let api: Api<Pod> = if a.all_namespaces {
            Api::all(ctx.client.clone())
        } else {
            Api::namespaced(ctx.client.clone(), &ns)
        };
        let pods = api
            .list(&ListParams::default().labels(selector).fields(fields))
            .await?
            .items;
        if !pods.is_empty() {
            let now = jiff::Timestamp::now();
            for p in &pods {
                let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
                if let Some(created) = created {
                    let age = now.duration_since(created);
                    if age > CREATION_DELAY {
                        bail!(
                            "Metrics not available for pod {}/{}, age: {}",
                            p.metadata.namespace.as_deref().unwrap_or_default(),
                            p.metadata.name.as_deref().unwrap_or_default(),
                            go_duration(age)
                        );
                    }
                }
            }
            bail!("metrics not available yet");
        }
        if a.all_namespaces {
            eprintln!("No resources found");
        } else {
            eprintln!("No resources found in {ns} namespace.");
        }
        return Ok(());
    }
    output::emit(&pod_table(
        &metrics,
        a.containers,
        a.all_namespaces,
        a.sort_by,
        a.no_headers,
    ))
}

/// Go's `Duration.String` for a positive duration of at least a second (`2m30.5s`, `1h0m3s`).
fn go_duration(d: jiff::SignedDuration) -> String {
    let nanos = d.as_nanos().max(0);
    let (secs, frac) = (nanos / 1_000_000_000, nanos % 1_000_000_000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    out.push_str(&s.to_string());
    if frac > 0 {
        out.push_str(format!(".{frac:09}").trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// CPU and memory of one row.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu: Option<Quantity>,
    memory: Option<Quantity>,
}

impl Usage {
    fn of(v: &Value) -> Self {
        let q = |k: &str| v[k].as_str().and_then(|s| Quantity::parse(s).ok());
        Usage {
            cpu: q("cpu"),
            memory: q("memory"),
        }
    }

    fn add(self, other: Usage) -> Usage {
        let sum = |a: Option<Quantity>, b: Option<Quantity>| match (a, b) {
            (Some(a), Some(b)) => Some(a.add(b)),
            (a, b) => a.or(b),
        };
        Usage {
            cpu: sum(self.cpu, other.cpu),
            memory: sum(self.memory, other.memory),
        }
    }

    fn key(self, by: Option<SortBy>) -> i128 {
        match by {
            Some(SortBy::Cpu) => self.cpu.map_or(0, |q| q.milli_value()),
            Some(SortBy::Memory) => self.memory.map_or(0, |q| q.value()),
            None => 0,
        }
    }
}

/// kubectl's CPU cell: millicores, rounded up.
fn cpu_cell(q: Option<Quantity>) -> String {
    format!("{}m", q.map_or(0, |q| q.milli_value()))
}

/// kubectl's memory cell: whole MiB, rounded down.
fn memory_cell(q: Option<Quantity>) -> String {
    format!("{}Mi", q.map_or(0, |q| q.value()) / (1024 * 1024))
}

/// Share of `available`, truncated to a whole percent (kubectl's `int64(fraction)`).
fn percent_cell(used: Option<Quantity>, available: Option<Quantity>) -> String {
    let (used, available) = (
        used.map_or(0, |q| q.milli_value()),
        available.map_or(0, |q| q.milli_value()),
    );
    let fraction = if available == 0 {
        0.0
    } else {
        used as f64 / available as f64 * 100.0
    };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "kubectl truncates the percentage to an integer"
    )]
    let whole = fraction as i64;
    format!("{whole}%")
}

fn name_of(m: &Value) -> &str {
    m["metadata"]["name"].as_str().unwrap_or_default()
}

fn render(text: &str) -> String {
    TabWriter::new(6, 3).format(text)
}

/// The `top node` table: a row per node with figures, then `<unknown>` rows for the listed
/// nodes without.
fn node_table(
    metrics: &[Value],
    nodes: &[String],
    allocatable: &BTreeMap<String, Usage>,
    sort_by: Option<SortBy>,
    no_headers: bool,
) -> String {
    let mut rows: Vec<(&str, Usage)> = metrics
        .iter()
        .map(|m| (name_of(m), Usage::of(&m["usage"])))
        .collect();
    rows.sort_by(|a, b| {
        b.1.key(sort_by)
            .cmp(&a.1.key(sort_by))
            .then_with(|| a.0.cmp(b.0))
    });
    let mut out = String::new();
    if !no_headers {
        out.push_str("NAME\tCPU(cores)\tCPU(%)\tMEMORY(bytes)\tMEMORY(%)\t\n");
    }
    for (name, u) in &rows {
        let alloc = allocatable.get(*name).copied().unwrap_or_default();
        let _ = writeln!(
            out,
            "{name}\t{}\t{}\t{}\t{}\t",
            cpu_cell(u.cpu),
            percent_cell(u.cpu, alloc.cpu),
            memory_cell(u.memory),
            percent_cell(u.memory, alloc.memory),
        );
    }
    for n in nodes.iter().filter(|n| !rows.iter().any(|(r, _)| r == n)) {
        let _ = writeln!(out, "{n}\t<unknown>\t<unknown>\t<unknown>\t<unknown>\t");
    }
    render(&out)
}

/// (namespace, name, containers, their sum)
type PodRow<'a> = (String, &'a str, Vec<(String, Usage)>, Usage);

/// The `top pod` table: a row per pod (containers summed), or with `containers` a row per
/// container; with `with_ns` a NAMESPACE column first.
fn pod_table(
    metrics: &[Value],
    containers: bool,
    with_ns: bool,
    sort_by: Option<SortBy>,
    no_headers: bool,
) -> String {
    let ns_of = |m: &Value| {
        m["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let container_usage = |m: &Value| -> Vec<(String, Usage)> {
        let mut cs: Vec<(String, Usage)> = m["containers"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap_or_default().to_string(),
                            Usage::of(&c["usage"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        cs.sort_by(|a, b| {
            b.1.key(sort_by)
                .cmp(&a.1.key(sort_by))
                .then_with(|| a.0.cmp(&b.0))
        });
        cs
    };
    let mut pods: Vec<PodRow> = metrics
        .iter()
        .map(|m| {
            let cs = container_usage(m);
            let total = cs.iter().fold(Usage::default(), |acc, (_, u)| acc.add(*u));
            (ns_of(m), name_of(m), cs, total)
        })
        .collect();
    pods.sort_by(|a, b| {
        b.3.key(sort_by)
            .cmp(&a.3.key(sort_by))
            .then_with(|| {
                if with_ns {
                    a.0.cmp(&b.0)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then_with(|| a.1.cmp(b.1))
    });
    let mut out = String::new();
    if !no_headers {
        if with_ns {
            out.push_str("NAMESPACE\t");
        }
        if containers {
            out.push_str("POD\t");
        }
        out.push_str("NAME\tCPU(cores)\tMEMORY(bytes)\t\n");
    }
    let ns_cell = |ns: &str| {
        if with_ns {
            format!("{ns}\t")
        } else {
            String::new()
        }
    };
    for (ns, name, cs, total) in &pods {
        if containers {
            for (c, u) in cs {
                let _ = writeln!(
                    out,
                    "{}{name}\t{c}\t{}\t{}\t",
                    ns_cell(ns),
                    cpu_cell(u.cpu),
                    memory_cell(u.memory)
                );
            }
        } else {
            let _ = writeln!(
                out,
                "{}{name}\t{}\t{}\t",
                ns_cell(ns),
                cpu_cell(total.cpu),
                memory_cell(total.memory)
            );
        }
    }
    render(&out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn q(s: &str) -> Option<Quantity> {
        Quantity::parse(s).ok()
    }

    #[test]
    fn ages_as_go_prints_them() {
        let d = |s: i64, n: i32| go_duration(jiff::SignedDuration::new(s, n));
        assert_eq!(d(150, 500_000_000), "2m30.5s");
        assert_eq!(d(3603, 0), "1h0m3s");
        assert_eq!(d(5, 120), "5.00000012s");
    }

    #[test]
    fn cells_as_kubectl_prints_them() {
        assert_eq!(cpu_cell(q("1003456789n")), "1004m", "rounded up");
        assert_eq!(cpu_cell(q("5n")), "1m");
        assert_eq!(cpu_cell(q("0")), "0m");
        assert_eq!(memory_cell(q("65535Ki")), "63Mi", "rounded down");
        assert_eq!(memory_cell(q("64Mi")), "64Mi");
        assert_eq!(percent_cell(q("1"), q("2")), "50%");
        assert_eq!(percent_cell(q("999m"), q("2")), "49%", "truncated");
        assert_eq!(percent_cell(q("1Gi"), q("0")), "0%");
    }

    #[test]
    fn node_table_with_percentages_and_unknown_nodes() {
        let metrics = [json!({"metadata": {"name": "n1"},
            "usage": {"cpu": "500m", "memory": "1Gi"}})];
        let alloc = BTreeMap::from([(
            "n1".to_string(),
            Usage {
                cpu: q("2"),
                memory: q("4Gi"),
            },
        )]);
        let out = node_table(&metrics, &["n1".into(), "n2".into()], &alloc, None, false);
        let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
        assert_eq!(
            lines,
            [
                "NAME   CPU(cores)   CPU(%)      MEMORY(bytes)   MEMORY(%)",
                "n1     500m         25%         1024Mi          25%",
                "n2     <unknown>    <unknown>   <unknown>       <unknown>",
            ]
        );
    }

    #[test]
    fn pod_table_sums_containers_or_lists_them() {
        let pod = |ns: &str, name: &str, cs: Value| json!({"metadata": {"name": name, "namespace": ns}, "containers": cs});
        let metrics = [
            pod(
                "b",
                "web",
                json!([
                    {"name": "z", "usage": {"cpu": "250m", "memory": "10Mi"}},
                    {"name": "a", "usage": {"cpu": "1", "memory": "20Mi"}},
                ]),
            ),
            pod(
                "a",
                "db",
                json!([{"name": "main", "usage": {"cpu": "2m", "memory": "5Mi"}}]),
            ),
        ];
        let out = pod_table(&metrics, false, false, None, false);
        let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
        assert_eq!(
            lines,
            [
                "NAME   CPU(cores)   MEMORY(bytes)",
                "db     2m           5Mi",
                "web    1250m        30Mi",
            ]
        );
        let out = pod_table(&metrics, true, true, Some(SortBy::Cpu), true);
        let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
        assert_eq!(
            lines,
            [
                "b     web   a      1000m   20Mi",
                "b     web   z      250m    10Mi",
                "a     db    main   2m      5Mi",
            ]
        );
    }
}
