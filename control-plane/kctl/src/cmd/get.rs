//! `kctl get`: tables printed by the server (kubectl's default and `-o wide`), objects as
//! YAML/JSON, `-o name`, and `--watch`.

mod watch;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::{Context as _, Result, bail};
use http::header::{ACCEPT, HeaderValue};
use kube::api::{DynamicObject, GetParams, ListParams};
use kube::core::{Request, Resource as _};
use serde_json::{Value, json};

use crate::client::Ctx;
use crate::errors::{self, Reported};
use crate::output::{self, OutputFormat};
use crate::resources::{ResourceInfo, parse_type_args};
use crate::table::{self, PrintOptions, TABLE_ACCEPT, Table};
use crate::tabwriter::TabWriter;
use crate::timefmt;

#[derive(clap::Args, Debug, Clone)]
#[expect(clippy::struct_excessive_bools, reason = "one field per kubectl flag")]
pub struct GetArgs {
    /// TYPE[,TYPE...] [NAME...], or TYPE/NAME... (e.g. `pods`, `deploy web`, `svc/web`).
    #[arg(required = true, value_name = "TYPE [NAME...]")]
    pub args: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<OutputFormat>,
    /// Label selector (`app=web`, `tier in (a,b)`, `!canary`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector (`status.phase=Running`, `metadata.name!=x`).
    #[arg(long)]
    pub field_selector: Option<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// After listing, watch for changes and print a row per change.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Add a LABELS column.
    #[arg(long)]
    pub show_labels: bool,
    /// Print rows without the header.
    #[arg(long)]
    pub no_headers: bool,
    /// Do not report objects that are not found.
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// One resource type with the names asked for (none = list).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub info: ResourceInfo,
    pub names: Vec<String>,
}

pub async fn run(ctx: &mut Ctx, args: GetArgs) -> Result<()> {
    let type_args = parse_type_args(&args.args)?;
    let has_names = type_args.iter().any(|t| !t.names.is_empty());
    if has_names && args.all_namespaces {
        bail!("a resource cannot be retrieved by name across all namespaces");
    }
    if has_names && (args.selector.is_some() || args.field_selector.is_some()) {
        bail!("selectors cannot be combined with resource names");
    }
    let mut targets = Vec::new();
    for t in type_args {
        for info in ctx.resolve_many(&t.resource).await? {
            if !info.supports("list") && t.names.is_empty() {
                bail!("the server does not allow listing {}", info.plural);
            }
            targets.push(Target {
                info,
                names: t.names.clone(),
            });
        }
    }
    if args.watch {
        return watch::run(ctx, &args, &targets).await;
    }
    match args.output {
        Some(OutputFormat::Yaml | OutputFormat::Json) => objects(ctx, &args, &targets).await,
        Some(OutputFormat::Name) => names(ctx, &args, &targets).await,
        Some(OutputFormat::Wide) | None => tables(ctx, &args, &targets).await,
    }
}

/// The namespace to list in: none with `-A` or for cluster-scoped resources.
fn scope<'a>(ctx: &'a Ctx, args: &GetArgs, info: &ResourceInfo) -> Option<&'a str> {
    (info.namespaced && !args.all_namespaces).then_some(ctx.namespace.as_str())
}

fn list_params(args: &GetArgs) -> ListParams {
    ListParams {
        label_selector: args.selector.clone(),
        field_selector: args.field_selector.clone(),
        ..Default::default()
    }
}

async fn tables(ctx: &Ctx, args: &GetArgs, targets: &[Target]) -> Result<()> {
    let mut groups: Vec<(&ResourceInfo, Table)> = Vec::new();
    let mut errs = Vec::new();
    for t in targets {
        let ns = scope(ctx, args, &t.info);
        if t.names.is_empty() {
            match fetch_table(ctx, &t.info, ns, None, &list_params(args)).await {
                Ok(table) => groups.push((&t.info, table)),
                Err(e) => errs.push(e),
            }
            continue;
        }
        let mut merged: Option<Table> = None;
        for name in &t.names {
            match fetch_table(ctx, &t.info, ns, Some(name), &ListParams::default()).await {
                Ok(table) => match merged.as_mut() {
                    Some(m) => m.rows.extend(table.rows),
                    None => merged = Some(table),
                },
                Err(e) if args.ignore_not_found && is_not_found(&e) => {}
                Err(e) => errs.push(e),
            }
        }
        groups.extend(merged.map(|m| (&t.info, m)));
    }
    let text = render_groups(&groups, args);
    if !text.is_empty() {
        output::emit(&text)?;
    }
    finish(ctx, args, targets, text.is_empty(), &errs)
}

/// All tables, kubectl-style: a blank line between kinds, `kind/name` when the answers span
/// several kinds (even if some came back empty), NAMESPACE with `-A` for namespaced kinds.
fn render_groups(groups: &[(&ResourceInfo, Table)], args: &GetArgs) -> String {
    let kinds: BTreeSet<String> = groups.iter().map(|(info, _)| info.kind_ref()).collect();
    let mut text = String::new();
    for (info, table) in groups.iter().filter(|(_, t)| !t.rows.is_empty()) {
        let opts = PrintOptions {
            wide: args.output == Some(OutputFormat::Wide),
            with_namespace: args.all_namespaces && info.namespaced,
            kind_prefix: (kinds.len() > 1).then(|| info.kind_ref()),
            show_labels: args.show_labels,
            no_headers: args.no_headers,
        };
        if !text.is_empty() && !args.no_headers {
            text.push('\n');
        }
        text.push_str(&TabWriter::for_tables().format(&table::render_lines(table, &opts, true)));
    }
    text
}

/// Reports errors after the output (as kubectl does) and the "No resources found" notice when
/// nothing was printed.
fn finish(
    ctx: &Ctx,
    args: &GetArgs,
    targets: &[Target],
    nothing_printed: bool,
    errs: &[anyhow::Error],
) -> Result<()> {
    if nothing_printed && errs.is_empty() && !args.ignore_not_found {
        let all_namespaced = !args.all_namespaces && targets.iter().all(|t| t.info.namespaced);
        eprintln!(
            "{}",
            no_resources_message(all_namespaced.then_some(ctx.namespace.as_str()))
        );
    }
    if errs.is_empty() {
        return Ok(());
    }
    for e in errs {
        eprintln!("{}", errors::render(e));
    }
    Err(Reported.into())
}

pub(crate) fn no_resources_message(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("No resources found in {ns} namespace."),
        None => "No resources found".into(),
    }
}

fn is_not_found(e: &anyhow::Error) -> bool {
    errors::api_status(e).is_some_and(|s| s.code == 404)
}

/// GETs a list (or one object) as a server-side printed Table.
pub(crate) async fn fetch_table(
    ctx: &Ctx,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: Option<&str>,
    lp: &ListParams,
) -> Result<Table> {
    let url = DynamicObject::url_path(&info.api_resource(), ns.filter(|_| info.namespaced));
    let request = Request::new(url);
    let mut req = match name {
        Some(n) => request.get(n, &GetParams::default()),
        None => request.list(lp),
    }
    .map_err(kube::Error::BuildRequest)?;
    req.headers_mut()
        .insert(ACCEPT, HeaderValue::from_static(TABLE_ACCEPT));
    let body: Value = ctx.client.request(req).await?;
    to_table(body, jiff::Timestamp::now())
}

/// A Table from a response; servers that do not print tables send objects, which kubectl then
/// shows with its default NAME/AGE columns.
pub(crate) fn to_table(body: Value, now: jiff::Timestamp) -> Result<Table> {
    if body["kind"] == "Table" {
        return serde_json::from_value(body).context("decoding the server's Table");
    }
    let items = match body.get("items").and_then(Value::as_array) {
        Some(items) => items.clone(),
        None => vec![body.clone()],
    };
    let rows = items
        .iter()
        .map(|item| {
            let meta = &item["metadata"];
            let created = meta["creationTimestamp"].as_str().and_then(|s| s.parse().ok());
            json!({
                "cells": [meta["name"].as_str().unwrap_or(""), timefmt::age(created, now)],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta},
            })
        })
        .collect::<Vec<_>>();
    serde_json::from_value(json!({
        "kind": "Table",
        "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "priority": 0},
            {"name": "Age", "type": "string", "format": "", "priority": 0},
        ],
        "rows": rows,
    }))
    .context("building the default table")
}

/// Objects for `-o yaml|json|name`, listed or fetched by name, with their `kind.group`.
async fn collect_objects(
    ctx: &Ctx,
    args: &GetArgs,
    targets: &[Target],
) -> (Vec<(String, Value)>, Vec<anyhow::Error>) {
    let mut objects = Vec::new();
    let mut errs = Vec::new();
    for t in targets {
        let api = ctx.api(&t.info, scope(ctx, args, &t.info));
        if t.names.is_empty() {
            match api.list(&list_params(args)).await {
                Ok(list) => objects.extend(
                    list.items
                        .into_iter()
                        .map(|o| (t.info.kind_ref(), typed(o, &t.info))),
                ),
                Err(e) => errs.push(e.into()),
            }
            continue;
        }
        for name in &t.names {
            match api.get(name).await {
                Ok(o) => objects.push((t.info.kind_ref(), typed(o, &t.info))),
                Err(e) if args.ignore_not_found && errors::is_not_found(&e) => {}
                Err(e) => errs.push(e.into()),
            }
        }
    }
    (objects, errs)
}

/// The object as JSON with `apiVersion` and `kind` (list items arrive without them).
pub(crate) fn typed(obj: DynamicObject, info: &ResourceInfo) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(info.api_version()));
        m.insert("kind".into(), Value::String(info.kind.clone()));
    }
    v
}

async fn objects(ctx: &Ctx, args: &GetArgs, targets: &[Target]) -> Result<()> {
    let (objects, errs) = collect_objects(ctx, args, targets).await;
    let single = targets.len() == 1 && targets[0].names.len() == 1;
    let format = args.output.unwrap_or(OutputFormat::Yaml);
    let doc = match (single, objects.len()) {
        (true, 0) => None,
        (true, _) => objects.into_iter().next().map(|(_, v)| v),
        (false, _) => Some(output::as_list(
            &objects.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        )),
    };
    if let Some(doc) = doc {
        output::emit(&output::render(&doc, format)?)?;
    }
    // An empty List was printed, so no "No resources found".
    finish(ctx, args, targets, false, &errs)
}

async fn names(ctx: &Ctx, args: &GetArgs, targets: &[Target]) -> Result<()> {
    let (objects, errs) = collect_objects(ctx, args, targets).await;
    let text = objects
        .iter()
        .fold(String::new(), |mut text, (kind_ref, v)| {
            let name = v["metadata"]["name"].as_str().unwrap_or("");
            let _ = writeln!(text, "{}", output::name_line(kind_ref, name));
            text
        });
    if !text.is_empty() {
        output::emit(&text)?;
    }
    // kubectl's name printer stays silent when nothing matched.
    finish(ctx, args, targets, false, &errs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::catalog;

    fn args(output: Option<OutputFormat>, all: bool) -> GetArgs {
        GetArgs {
            args: vec![],
            output,
            selector: None,
            field_selector: None,
            all_namespaces: all,
            watch: false,
            show_labels: false,
            no_headers: false,
            ignore_not_found: false,
        }
    }

    fn table(names: &[&str]) -> Table {
        let rows: Vec<Value> = names
            .iter()
            .map(|n| json!({"cells": [n, "1s"], "object": {"metadata": {"name": n, "namespace": "default"}}}))
            .collect();
        serde_json::from_value(json!({
            "kind": "Table",
            "columnDefinitions": [{"name": "Name", "type": "string", "format": "name"}, {"name": "Age", "type": "string"}],
            "rows": rows,
        }))
        .unwrap()
    }

    #[test]
    fn several_kinds_get_prefixes_and_blank_lines() {
        let c = catalog();
        let pods = c.resolve("pods").unwrap();
        let deploy = c.resolve("deploy").unwrap();
        let nodes = c.resolve("nodes").unwrap();
        let groups = vec![
            (pods, table(&["web"])),
            (deploy, table(&["web"])),
            (nodes, table(&[])),
        ];
        assert_eq!(
            render_groups(&groups, &args(None, false)),
            "NAME      AGE\npod/web   1s\n\nNAME                  AGE\ndeployment.apps/web   1s\n"
        );
        // An empty answer still counts as a kind (kubectl prefixes then too).
        let groups = vec![(pods, table(&["a"])), (nodes, table(&[]))];
        assert_eq!(
            render_groups(&groups, &args(None, false)),
            "NAME    AGE\npod/a   1s\n"
        );
        // One kind: no prefixes; -A adds NAMESPACE for namespaced kinds only.
        let groups = vec![(pods, table(&["a"]))];
        assert_eq!(
            render_groups(&groups, &args(None, true)),
            "NAMESPACE   NAME   AGE\ndefault     a      1s\n"
        );
        let groups = vec![(nodes, table(&["n1"]))];
        assert_eq!(
            render_groups(&groups, &args(None, true)),
            "NAME   AGE\nn1     1s\n"
        );
    }

    #[test]
    fn objects_become_a_default_table() {
        let now: jiff::Timestamp = "2024-01-01T00:10:00Z".parse().unwrap();
        let list = json!({"kind": "PodList", "metadata": {"resourceVersion": "9"}, "items": [
            {"metadata": {"name": "a", "creationTimestamp": "2024-01-01T00:00:00Z"}},
            {"metadata": {"name": "b"}},
        ]});
        let t = to_table(list, now).unwrap();
        assert_eq!(t.metadata.resource_version.as_deref(), Some("9"));
        assert_eq!(t.rows[0].cells, vec![json!("a"), json!("10m")]);
        assert_eq!(t.rows[1].cells, vec![json!("b"), json!("<unknown>")]);
        let one = to_table(json!({"kind": "Pod", "metadata": {"name": "x"}}), now).unwrap();
        assert_eq!(one.rows.len(), 1);
        assert_eq!(one.rows[0].object["metadata"]["name"], "x");
        // A real Table passes through.
        let t = to_table(
            json!({"kind": "Table", "columnDefinitions": [], "rows": []}),
            now,
        )
        .unwrap();
        assert!(t.rows.is_empty());
    }

    #[test]
    fn typed_objects_carry_api_version_and_kind() {
        let c = catalog();
        let info = c.resolve("deploy").unwrap();
        let obj: DynamicObject =
            serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"replicas": 1}}))
                .unwrap();
        let v = typed(obj, info);
        assert_eq!(
            (v["apiVersion"].as_str(), v["kind"].as_str()),
            (Some("apps/v1"), Some("Deployment"))
        );
        assert_eq!(v["spec"]["replicas"], 1);
    }

    #[test]
    fn empty_messages() {
        assert_eq!(
            no_resources_message(Some("default")),
            "No resources found in default namespace."
        );
        assert_eq!(no_resources_message(None), "No resources found");
    }
}
