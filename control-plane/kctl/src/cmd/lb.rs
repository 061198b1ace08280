//! `kctl lb [NODE]`: a node's service table (frontends, backends with their state, new
//! flows, packets, bytes, connection tracking entries), read from `kproxy node`'s endpoint
//! through the API server's `nodes/NODE:PORT/proxy/lb`, so it works from any machine with
//! the kubeconfig. `--drops` shows the same answer's datapath drop counters per reason.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use serde::Deserialize;
use serde_json::Value;

use crate::client::Ctx;
use crate::output;
use crate::tabwriter::TabWriter;

/// `kproxy node`'s default `--serve-addr` port.
pub const DEFAULT_PORT: u16 = 10262;
/// How often `-w` polls.
const WATCH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LbOutput {
    /// One more column (TYPE) and one row per backend.
    Wide,
    Json,
    Yaml,
}

#[derive(clap::Args, Debug, Clone)]
pub struct LbArgs {
    /// The node (default: the cluster's only node).
    pub node: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<LbOutput>,
    /// After the table, poll every second and print the rows that changed.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Port of kproxy's node endpoint (`kproxy node --serve-addr`).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Show the datapath's drop and error counters per reason instead of the frontends.
    #[arg(long)]
    pub drops: bool,
}

/// `GET /lb` of kproxy's node endpoint (only what the table needs; `-o json|yaml` prints the
/// answer as it came).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    #[serde(default)]
    pub frontends: Vec<Frontend>,
    /// Absent from a kproxy older than the drop counters.
    #[serde(default)]
    pub drops: Vec<DropRow>,
}

/// One reason of the datapath's drop and error counters.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DropRow {
    pub reason: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    pub port: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Frontend {
    pub address: String,
    pub port: u16,
    pub protocol: String,
    pub service: ServiceRef,
    #[serde(rename = "type")]
    pub type_: String,
    pub new_flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub ct_entries: u64,
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Backend {
    pub address: String,
    pub port: u16,
    pub state: String,
    pub new_flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

impl Frontend {
    /// Identifies a frontend across polls.
    fn key(&self) -> (String, u16, String) {
        (self.address.clone(), self.port, self.protocol.clone())
    }

    fn service_label(&self) -> String {
        let s = &self.service;
        match (s.name.as_str(), s.port.as_str()) {
            ("", _) => "<none>".to_string(),
            (name, "") => format!("{}/{name}", s.namespace),
            (name, port) => format!("{}/{name}:{port}", s.namespace),
        }
    }
}

const COLUMNS: &[&str] = &[
    "SERVICE",
    "FRONTEND",
    "PROTO",
    "BACKENDS",
    "NEW-FLOWS",
    "PACKETS",
    "BYTES",
    "CT-ENTRIES",
];

/// The tab-separated lines of one frontend: its row, and with `wide` one row per backend
/// (address in FRONTEND, state in BACKENDS, its own counters).
fn frontend_lines(fe: &Frontend, wide: bool) -> String {
    let ready = fe.backends.iter().filter(|b| b.state == "active").count();
    let mut cells = vec![
        fe.service_label(),
        format!("{}:{}", fe.address, fe.port),
        fe.protocol.clone(),
        format!("{ready}/{}", fe.backends.len()),
        fe.new_flows.to_string(),
        fe.packets.to_string(),
        fe.bytes.to_string(),
        fe.ct_entries.to_string(),
    ];
    if wide {
        cells.push(fe.type_.clone());
    }
    let mut out = cells.join("\t");
    out.push('\n');
    if wide {
        for b in &fe.backends {
            let cells = [
                String::new(),
                format!("-> {}:{}", b.address, b.port),
                String::new(),
                b.state.clone(),
                b.new_flows.to_string(),
                b.packets.to_string(),
                b.bytes.to_string(),
                String::new(),
                String::new(),
            ];
            out.push_str(&cells.join("\t"));
            out.push('\n');
        }
    }
    out
}

/// Frontends in display order: by service, then address, port and protocol.
fn ordered(table: &Table) -> Vec<&Frontend> {
    let mut fes: Vec<&Frontend> = table.frontends.iter().collect();
    fes.sort_by_key(|f| (f.service_label(), f.key()));
    fes
}

fn header(wide: bool) -> String {
    let mut cols = COLUMNS.to_vec();
    if wide {
        cols.push("TYPE");
    }
    let mut h = cols.join("\t");
    h.push('\n');
    h
}

/// The whole table, kubectl-aligned.
pub fn render(table: &Table, wide: bool, tw: &mut TabWriter) -> String {
    if table.frontends.is_empty() {
        return String::new();
    }
    let mut text = header(wide);
    for fe in ordered(table) {
        text.push_str(&frontend_lines(fe, wide));
    }
    aligned(tw, &text)
}

/// The drop counters, one row per reason (every reason kproxy reports, zero included).
pub fn render_drops(rows: &[DropRow], tw: &mut TabWriter) -> String {
    let mut text = String::from("REASON\tPACKETS\tBYTES\n");
    for r in rows {
        text.push_str(&drop_line(r));
    }
    aligned(tw, &text)
}

fn drop_line(r: &DropRow) -> String {
    format!("{}\t{}\t{}\n", r.reason, r.packets, r.bytes)
}

/// `kctl lb --drops`: the counters, then with `-w` every second the reasons whose counters
/// changed (`-o json|yaml`: the whole list again, as one document).
async fn run_drops(
    client: &kube::Client,
    node: &str,
    args: &LbArgs,
    path: &str,
    (mut table, raw): (Table, Value),
) -> Result<()> {
    if table.drops.is_empty() {
        bail!("node {node:?} runs a kproxy without drop counters");
    }
    let mut tw = TabWriter::for_tables();
    let document = |raw: &Value| match args.output {
        Some(f @ (LbOutput::Json | LbOutput::Yaml)) => watch_document(&raw["drops"], f).map(Some),
        _ => Ok(None),
    };
    match document(&raw)? {
        Some(doc) => output::emit(&doc)?,
        None => output::emit(&render_drops(&table.drops, &mut tw))?,
    }
    if !args.watch {
        return Ok(());
    }
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let (now, now_raw) = fetch(client, node, args.port, path).await?;
        let changed: String = now
            .drops
            .iter()
            .filter(|r| !table.drops.contains(r))
            .map(drop_line)
            .collect();
        if !changed.is_empty() {
            match document(&now_raw)? {
                Some(doc) => output::emit(&doc)?,
                None => output::emit(&aligned(&mut tw, &changed))?,
            }
        }
        table = now;
    }
}

/// `text` aligned, without the padding a row's empty last columns would leave (wide backend
/// rows).
fn aligned(tw: &mut TabWriter, text: &str) -> String {
    let mut out = String::new();
    for line in tw.format(text).lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The frontends of `now` that are new or differ from `before` (rows as printed), then
/// those gone since (their last rows, as `kubectl get -w` prints a deleted object).
fn changes<'a>(before: &'a Table, now: &'a Table, wide: bool) -> Vec<&'a Frontend> {
    let old: BTreeMap<_, String> = before
        .frontends
        .iter()
        .map(|f| (f.key(), frontend_lines(f, wide)))
        .collect();
    let current: BTreeSet<_> = now.frontends.iter().map(Frontend::key).collect();
    let mut out: Vec<&Frontend> = ordered(now)
        .into_iter()
        .filter(|f| old.get(&f.key()) != Some(&frontend_lines(f, wide)))
        .collect();
    out.extend(
        ordered(before)
            .into_iter()
            .filter(|f| !current.contains(&f.key())),
    );
    out
}

/// `/api/v1/nodes/NODE:PORT/proxy/lb`.
fn lb_path(node: &str, port: u16) -> Result<String> {
    if node.is_empty() || node.contains(['/', ':', '?', '#', '%']) {
        bail!("invalid node name {node:?}");
    }
    Ok(format!("/api/v1/nodes/{node}:{port}/proxy/lb"))
}

pub async fn run(ctx: &mut Ctx, args: LbArgs) -> Result<()> {
    let (node, path) = if let Some(n) = &args.node {
        let path = lb_path(n, args.port)?;
        // A clear NotFound before the proxy is asked.
        Api::<Node>::all(ctx.client.clone()).get(n).await?;
        (n.clone(), path)
    } else {
        let n = only_node(ctx).await?;
        let path = lb_path(&n, args.port)?;
        (n, path)
    };
    // The API server answers 503 for a node it cannot reach; the context's client reports
    // it at once (no retries, see `Ctx::connect`).
    let (mut table, mut raw) = fetch(&ctx.client, &node, args.port, &path).await?;
    if args.drops {
        return run_drops(&ctx.client, &node, &args, &path, (table, raw)).await;
    }
    let wide = args.output == Some(LbOutput::Wide);
    let mut tw = TabWriter::for_tables();
    match args.output {
        Some(LbOutput::Json) => output::emit(&output::to_json(&raw)?)?,
        Some(LbOutput::Yaml) => output::emit(&output::to_yaml(&raw))?,
        _ => {
            let text = render(&table, wide, &mut tw);
            if text.is_empty() {
                eprintln!("No service frontends on node {node}.");
            }
            output::emit(&text)?;
        }
    }
    if !args.watch {
        return Ok(());
    }
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let (now, now_raw) = fetch(&ctx.client, &node, args.port, &path).await?;
        let changed = changes(&table, &now, wide);
        if !changed.is_empty() {
            if let Some(f @ (LbOutput::Json | LbOutput::Yaml)) = args.output {
                // Each changed frontend as its own document, as `get -w -o json` does;
                // a frontend gone since the last poll as it was then.
                let mut by_key = raw_by_key(&table, &raw);
                by_key.extend(raw_by_key(&now, &now_raw));
                for fe in &changed {
                    if let Some(v) = by_key.get(&fe.key()) {
                        output::emit(&watch_document(v, f)?)?;
                    }
                }
            } else {
                let mut text = String::new();
                // A header the first time the watch adds to an empty table.
                if table.frontends.is_empty() {
                    text.push_str(&header(wide));
                }
                for fe in changed {
                    text.push_str(&frontend_lines(fe, wide));
                }
                output::emit(&aligned(&mut tw, &text))?;
            }
        }
        table = now;
        raw = now_raw;
    }
}

/// Each frontend's JSON by its key (`table` was decoded from `raw`, in the same order).
fn raw_by_key<'a>(table: &Table, raw: &'a Value) -> BTreeMap<(String, u16, String), &'a Value> {
    table
        .frontends
        .iter()
        .map(Frontend::key)
        .zip(raw["frontends"].as_array().into_iter().flatten())
        .collect()
}

/// One document of `-w -o json|yaml` (YAML documents separated by `---`).
fn watch_document(v: &Value, f: LbOutput) -> Result<String> {
    match f {
        LbOutput::Json => output::to_json(v),
        _ => Ok(format!("---\n{}", output::to_yaml(v))),
    }
}

/// The cluster's node when it has exactly one.
async fn only_node(ctx: &Ctx) -> Result<String> {
    let nodes = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?;
    let names: Vec<String> = nodes
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    match names.as_slice() {
        [only] => Ok(only.clone()),
        [] => bail!("the cluster has no nodes"),
        several => bail!(
            "the cluster has {} nodes ({}): name one, `kctl lb NODE`",
            several.len(),
            several.join(", ")
        ),
    }
}

/// GETs the table through the API server; the parsed table and the JSON as it came.
async fn fetch(client: &kube::Client, node: &str, port: u16, path: &str) -> Result<(Table, Value)> {
    let req = http::Request::get(path)
        .body(Vec::new())
        .context("building the request")?;
    let text = match client.request_text(req).await {
        Ok(t) => t,
        Err(kube::Error::Api(s)) if s.code == 503 => bail!(
            "cannot reach kproxy on node {node:?} (port {port}); is `kproxy node` running there with its endpoint on? {}",
            s.message
        ),
        // kproxy answers 404 for other paths; something else is listening on that port.
        Err(kube::Error::Api(s)) if s.code == 404 => bail!(
            "node {node:?} port {port} does not serve kproxy's service table (is that the port of `kproxy node --serve-addr`?): {}",
            s.message.trim()
        ),
        Err(e) => return Err(e).context(format!("reading the service table of node {node:?}")),
    };
    let raw: Value = serde_json::from_str(&text).with_context(|| {
        format!("node {node:?} port {port} did not answer with kproxy's service table")
    })?;
    if raw["kind"] != "ServiceTable" {
        bail!("node {node:?} port {port} did not answer with kproxy's service table");
    }
    let table = Table::deserialize(&raw).context("decoding the service table")?;
    Ok((table, raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        serde_json::from_value(serde_json::json!({
            "kind": "ServiceTable",
            "node": "n1",
            "frontends": [
                {"address": "10.96.0.20", "port": 53, "protocol": "UDP", "type": "ClusterIP",
                 "service": {"namespace": "kube-system", "name": "dns", "port": ""},
                 "newFlows": 0, "packets": 0, "bytes": 0, "ctEntries": 0, "backends": []},
                {"address": "10.96.0.10", "port": 80, "protocol": "TCP", "type": "ClusterIP",
                 "service": {"namespace": "default", "name": "web", "port": "http"},
                 "flags": [], "revnatId": 1, "activeBackends": 1,
                 "newFlows": 12, "packets": 40, "bytes": 4000, "ctEntries": 2,
                 "backends": [
                    {"address": "10.0.0.1", "port": 8080, "state": "active", "newFlows": 7, "packets": 30, "bytes": 3000},
                    {"address": "10.0.0.2", "port": 8080, "state": "terminating", "newFlows": 5, "packets": 10, "bytes": 1000}
                 ]}
            ]
        }))
        .unwrap()
    }

    /// The JSON `table()` stands for, reduced to the frontends' keys.
    fn raw() -> Value {
        let t = table();
        serde_json::json!({
            "kind": "ServiceTable",
            "frontends": t.frontends.iter().map(|f| serde_json::json!({
                "address": f.address, "port": f.port, "protocol": f.protocol,
            })).collect::<Vec<_>>(),
        })
    }

    /// `-w -o json` finds the document of a frontend gone since the last poll.
    #[test]
    fn watch_documents_include_gone_frontends() {
        let before = table();
        let before_raw = raw();
        let now = Table {
            frontends: before.frontends[1..].to_vec(),
            ..Table::default()
        };
        let now_raw = serde_json::json!({"frontends": [before_raw["frontends"][1].clone()]});
        let changed = changes(&before, &now, false);
        assert_eq!(changed.len(), 1, "only the gone DNS frontend");
        let mut by_key = raw_by_key(&before, &before_raw);
        by_key.extend(raw_by_key(&now, &now_raw));
        let doc = by_key
            .get(&changed[0].key())
            .expect("a document for the gone frontend");
        assert_eq!(doc["port"], 53);
    }

    #[test]
    fn renders_kubectl_columns() {
        let out = render(&table(), false, &mut TabWriter::for_tables());
        assert_eq!(
            out,
            "\
SERVICE            FRONTEND        PROTO   BACKENDS   NEW-FLOWS   PACKETS   BYTES   CT-ENTRIES
default/web:http   10.96.0.10:80   TCP     1/2        12          40        4000    2
kube-system/dns    10.96.0.20:53   UDP     0/0        0           0         0       0
"
        );
        assert_eq!(
            render(&Table::default(), false, &mut TabWriter::for_tables()),
            ""
        );
    }

    #[test]
    fn wide_adds_the_type_and_a_row_per_backend() {
        let out = render(&table(), true, &mut TabWriter::for_tables());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert!(lines[0].ends_with("CT-ENTRIES   TYPE"), "{out}");
        assert!(lines[1].starts_with("default/web:http") && lines[1].ends_with("ClusterIP"));
        let be: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(be, ["->", "10.0.0.1:8080", "active", "7", "30", "3000"]);
        let be: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            be,
            ["->", "10.0.0.2:8080", "terminating", "5", "10", "1000"]
        );
        // Backend rows align with the frontend columns.
        assert_eq!(
            lines[2].find("10.0.0.1"),
            lines[1].find("10.96").map(|i| i + 3)
        );
    }

    #[test]
    fn watch_prints_only_changed_new_and_gone_frontends() {
        let before = table();
        let mut now = table();
        assert!(changes(&before, &now, false).is_empty());
        now.frontends[1].new_flows += 1;
        let c = changes(&before, &now, false);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].service.name, "web");
        // A backend counter only shows in wide rows.
        let mut now = table();
        now.frontends[1].backends[0].packets += 1;
        assert!(changes(&before, &now, false).is_empty());
        assert_eq!(changes(&before, &now, true).len(), 1);
        // New and removed frontends.
        let mut now = table();
        let dns = now.frontends.remove(0);
        now.frontends.push(Frontend {
            address: "10.96.0.30".into(),
            port: 443,
            protocol: "TCP".into(),
            ..Frontend::default()
        });
        let c = changes(&before, &now, false);
        let keys: Vec<String> = c.iter().map(|f| f.address.clone()).collect();
        assert_eq!(keys, ["10.96.0.30", &dns.address]);
        // Rows printed later keep the header's alignment.
        let mut tw = TabWriter::for_tables();
        let first = render(&before, false, &mut tw);
        let later = tw.format(&frontend_lines(&now.frontends[0], false));
        let col = |s: &str| {
            let line = s.lines().find(|l| l.contains("10.96.0.10")).unwrap();
            line.find("TCP").unwrap()
        };
        assert_eq!(col(&first), col(&later));
    }

    #[test]
    fn drops_render_every_reason_and_default_to_none() {
        let t: Table = serde_json::from_value(serde_json::json!({
            "kind": "ServiceTable",
            "frontends": [],
            "drops": [
                {"reason": "no-backend", "packets": 12, "bytes": 840},
                {"reason": "malformed", "packets": 0, "bytes": 0}
            ]
        }))
        .unwrap();
        assert_eq!(
            render_drops(&t.drops, &mut TabWriter::for_tables()),
            "\
REASON       PACKETS   BYTES
no-backend   12        840
malformed    0         0
"
        );
        // A kproxy that predates the counters: no rows, not a decoding error.
        let old: Table =
            serde_json::from_value(serde_json::json!({"kind": "ServiceTable", "frontends": []}))
                .unwrap();
        assert!(old.drops.is_empty());
    }

    #[test]
    fn node_paths() {
        assert_eq!(
            lb_path("n1", 10262).unwrap(),
            "/api/v1/nodes/n1:10262/proxy/lb"
        );
        for bad in ["", "a/b", "a:1", "x?y", "%2F"] {
            assert!(lb_path(bad, 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn unnamed_frontends_and_unknown_fields() {
        let t: Table = serde_json::from_value(serde_json::json!({
            "kind": "ServiceTable",
            "frontends": [{"address": "1.2.3.4", "port": 1, "protocol": "TCP", "future": true}]
        }))
        .unwrap();
        assert_eq!(t.frontends[0].service_label(), "<none>");
    }
}
