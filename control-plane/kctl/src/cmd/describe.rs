//! `kctl describe`: kubectl's human-readable reports. Fetching (the object, its events, related
//! objects) is separate from rendering, which is pure and works on the objects' JSON so that
//! every field kubectl shows can be read without caring which are optional.

/// `put!(w, level, "fmt", args...)`: write indented, tab-separated text to a [`Writer`].
macro_rules! put {
    ($w:expr, $level:expr, $($arg:tt)*) => {
        $w.write($level, &format!($($arg)*))
    };
}

mod config;
mod containers;
mod generic;
mod namespace;
mod node;
mod pod;
mod service;
mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::apply_patch::LAST_APPLIED;
use crate::client::Ctx;
use crate::errors::{self, Reported};
use crate::output;
use crate::resources::{ResourceInfo, parse_type_args};
use crate::tabwriter::TabWriter;
use crate::timefmt;

#[derive(clap::Args, Debug, Clone)]
pub struct DescribeArgs {
    /// TYPE [NAME_PREFIX...] or TYPE/NAME; without a name, every object of the type.
    #[arg(required = true, value_name = "TYPE [NAME_PREFIX...]")]
    pub args: Vec<String>,
    /// Only objects matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Include events (`--show-events=false` to leave them out).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub show_events: bool,
}

pub async fn run(ctx: &mut Ctx, args: DescribeArgs) -> Result<()> {
    let targets = parse_type_args(&args.args)?;
    let mut resolved = Vec::new();
    for t in targets {
        for info in ctx.resolve_many(&t.resource).await? {
            resolved.push((info, t.names.clone()));
        }
    }
    // `describe TYPE NAME` with no object of that name describes every object whose name
    // starts with NAME (kubectl's behaviour for exactly this form of arguments).
    let prefix_form =
        args.args.len() == 2 && !args.args[0].contains('/') && !args.args[0].contains(',');
    let mut errs = Vec::new();
    let mut reports = Vec::new();
    let mut by_prefix = false;
    for (info, names) in &resolved {
        let found = find(ctx, info, names, args.selector.as_deref(), prefix_form).await;
        let objects = match found {
            Ok(found) => {
                errs.extend(found.missing);
                by_prefix |= found.by_prefix;
                found.objects
            }
            Err(e) => {
                errs.push(e);
                continue;
            }
        };
        for obj in objects {
            match describe_object(ctx, info, &obj, args.show_events).await {
                Ok(text) => reports.push(text),
                Err(e) => errs.push(e),
            }
        }
    }
    if !reports.is_empty() {
        // kubectl ends each prefix match with a blank line, and separates exact ones by two.
        let text = if by_prefix {
            reports
                .iter()
                .flat_map(|r| [r.as_str(), "\n"])
                .collect::<String>()
        } else {
            reports.join("\n\n")
        };
        output::emit(&text)?;
    } else if errs.is_empty() {
        let all_namespaced = resolved.iter().all(|(info, _)| info.namespaced);
        eprintln!(
            "{}",
            super::get::no_resources_message(all_namespaced.then_some(ctx.namespace.as_str()))
        );
    }
    if errs.is_empty() {
        return Ok(());
    }
    for e in &errs {
        eprintln!("{}", errors::render(e));
    }
    Err(Reported.into())
}

/// What [`find`] found: the objects, names that matched nothing, and whether the objects
/// came from a prefix match.
struct Found {
    objects: Vec<Value>,
    missing: Vec<anyhow::Error>,
    by_prefix: bool,
}

/// The objects to describe: all (optionally by selector), or by name. With `prefix` (the
/// `TYPE NAME` form), a name that does not exist matches every object it is a prefix of.
async fn find(
    ctx: &Ctx,
    info: &ResourceInfo,
    names: &[String],
    selector: Option<&str>,
    prefix: bool,
) -> Result<Found> {
    let api = ctx.api(info, Some(&ctx.namespace));
    let typed = |o| super::get::typed(o, info);
    if names.is_empty() {
        let lp = ListParams {
            label_selector: selector.map(str::to_string),
            ..Default::default()
        };
        let objects = api.list(&lp).await?.items.into_iter().map(typed).collect();
        return Ok(Found {
            objects,
            missing: Vec::new(),
            by_prefix: false,
        });
    }
    let mut found = Found {
        objects: Vec::new(),
        missing: Vec::new(),
        by_prefix: false,
    };
    for name in names {
        match api.get(name).await {
            Ok(o) => found.objects.push(typed(o)),
            Err(e) if prefix && errors::is_not_found(&e) => {
                let matches: Vec<Value> = api
                    .list(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .map(typed)
                    .filter(|o| {
                        o["metadata"]["name"]
                            .as_str()
                            .is_some_and(|n| n.starts_with(name.as_str()))
                    })
                    .collect();
                if matches.is_empty() {
                    found.missing.push(e.into());
                }
                found.by_prefix = true;
                found.objects.extend(matches);
            }
            Err(e) => found.missing.push(e.into()),
        }
    }
    Ok(found)
}

async fn describe_object(
    ctx: &Ctx,
    info: &ResourceInfo,
    obj: &Value,
    show_events: bool,
) -> Result<String> {
    let clock = Clock::now();
    let events = if show_events {
        Some(events_for(ctx, info, obj).await)
    } else {
        None
    };
    let events = events.as_deref();
    let text = match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => pod::render(obj, events, &clock),
        ("apps", "Deployment") => {
            let (old, new) = workload::replica_sets_of(ctx, obj).await;
            workload::render_deployment(obj, &old, &new, events, &clock)
        }
        ("apps", "ReplicaSet") => {
            let counts = workload::pod_counts(ctx, obj).await;
            workload::render_replica_set(obj, counts, events, &clock)
        }
        ("", "Service") => {
            let slices = service::slices_of(ctx, obj).await;
            service::render_service(obj, &slices, events, &clock)
        }
        ("", "Endpoints") => service::render_endpoints(obj, events, &clock),
        ("discovery.k8s.io", "EndpointSlice") => {
            service::render_endpoint_slice(obj, events, &clock)
        }
        ("", "Node") => {
            let pods = node::pods_on(ctx, obj).await?;
            let lease = node::lease_of(ctx, obj).await;
            node::render(obj, pods.as_deref(), &lease, events, &clock)
        }
        ("", "Namespace") => namespace::render(obj, &clock),
        ("", "ConfigMap") => config::render_config_map(obj, events, &clock),
        ("", "Secret") => config::render_secret(obj),
        _ => generic::render(obj, events, &clock),
    };
    Ok(text)
}

/// Events about `obj`, matched by the involved object's name, namespace and uid. A server
/// that cannot answer yields no events rather than failing the description (as kubectl).
async fn events_for(ctx: &Ctx, info: &ResourceInfo, obj: &Value) -> Vec<Event> {
    let meta = &obj["metadata"];
    let name = str_of(&meta["name"]);
    let namespace = str_of(&meta["namespace"]);
    let uid = str_of(&meta["uid"]);
    let api: Api<Event> = if namespace.is_empty() {
        Api::all(ctx.client.clone())
    } else {
        Api::namespaced(ctx.client.clone(), namespace)
    };
    let mut uids = vec![uid.to_string()];
    // Node events from kubelets carry the node's name as uid.
    if info.kind == "Node" && info.group.is_empty() {
        uids.push(name.to_string());
    }
    let mut out = Vec::new();
    for uid in uids {
        let lp = ListParams {
            field_selector: Some(event_selector(name, namespace, &uid)),
            ..Default::default()
        };
        if let Ok(list) = api.list(&lp).await {
            out.extend(list.items);
        }
    }
    out
}

/// The field selector kubectl uses to find an object's events.
pub(crate) fn event_selector(name: &str, namespace: &str, uid: &str) -> String {
    let mut s = format!("involvedObject.name={name},involvedObject.namespace={namespace}");
    if !uid.is_empty() {
        let _ = write!(s, ",involvedObject.uid={uid}");
    }
    s
}

/// "Now" and the local time zone, fixed for one report.
pub(crate) struct Clock {
    pub now: Timestamp,
    pub tz: TimeZone,
}

impl Clock {
    fn now() -> Self {
        Clock {
            now: Timestamp::now(),
            tz: TimeZone::system(),
        }
    }

    /// RFC 1123 with numeric zone, or Go's zero time when unset (kubectl prints that too).
    pub fn rfc(&self, v: &Value) -> String {
        match ts(v) {
            Some(t) => timefmt::rfc1123z(t, &self.tz),
            None => "Mon, 01 Jan 0001 00:00:00 +0000".into(),
        }
    }

    pub fn age(&self, v: &Value) -> String {
        timefmt::age(ts(v), self.now)
    }
}

/// kubectl's PrefixWriter over a tabwriter: two spaces per level, aligned at flushes.
pub(crate) struct Writer {
    pending: String,
    done: String,
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            pending: String::new(),
            done: String::new(),
        }
    }

    pub fn write(&mut self, level: usize, text: &str) {
        for _ in 0..level {
            self.pending.push_str("  ");
        }
        self.pending.push_str(text);
    }

    /// Aligns what was written so far on its own (kubectl flushes before the events table).
    pub fn flush(&mut self) {
        self.done
            .push_str(&TabWriter::for_describe().format(&self.pending));
        self.pending.clear();
    }

    pub fn finish(mut self) -> String {
        self.flush();
        self.done
    }
}

// ---- helpers over JSON ----

pub(crate) fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub(crate) fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

pub(crate) fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

pub(crate) fn ts(v: &Value) -> Option<Timestamp> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// A string map (labels, annotations, selectors); non-string values are shown as JSON.
pub(crate) fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An IntOrString as Go prints it.
pub(crate) fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

pub(crate) fn or_none(s: &str) -> &str {
    if s.is_empty() { "<none>" } else { s }
}

// ---- sections shared by several kinds ----

/// `Labels:  a=b` with further labels on their own lines, or `<none>`.
pub(crate) fn labels_multiline(w: &mut Writer, title: &str, labels: &BTreeMap<String, String>) {
    put!(w, 0, "{title}:\t");
    if labels.is_empty() {
        w.write(0, "<none>\n");
        return;
    }
    for (i, (k, v)) in labels.iter().enumerate() {
        if i != 0 {
            w.write(0, "\t");
        }
        put!(w, 0, "{k}={v}\n");
    }
}

const MAX_ANNOTATION_LEN: usize = 140;

/// Like [`labels_multiline`] with `key: value`, long or multi-line values broken up, and the
/// last-applied configuration left out.
pub(crate) fn annotations_multiline(
    w: &mut Writer,
    title: &str,
    annotations: &BTreeMap<String, String>,
) {
    put!(w, 0, "{title}:\t");
    let keys: Vec<&String> = annotations
        .keys()
        .filter(|k| k.as_str() != LAST_APPLIED)
        .collect();
    if keys.is_empty() {
        w.write(0, "<none>\n");
        return;
    }
    for (i, key) in keys.into_iter().enumerate() {
        if i != 0 {
            w.write(0, "\t");
        }
        let value = annotations[key].trim_end_matches('\n');
        if value.len() + key.len() + 2 > MAX_ANNOTATION_LEN || value.contains('\n') {
            put!(w, 0, "{key}:\n");
            for line in value.split('\n') {
                put!(w, 0, "\t  {}\n", shorten(line, MAX_ANNOTATION_LEN - 2));
            }
        } else {
            put!(w, 0, "{key}: {value}\n");
        }
    }
}

fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// The Name/Namespace/Labels/Annotations header most kinds start with.
pub(crate) fn header(w: &mut Writer, obj: &Value, namespaced: bool) {
    let meta = &obj["metadata"];
    put!(w, 0, "Name:\t{}\n", str_of(&meta["name"]));
    if namespaced {
        put!(w, 0, "Namespace:\t{}\n", str_of(&meta["namespace"]));
    }
    labels_multiline(w, "Labels", &string_map(&meta["labels"]));
    annotations_multiline(w, "Annotations", &string_map(&meta["annotations"]));
}

/// `ReplicaSet/web-123` for the controlling owner, if any.
pub(crate) fn controlled_by(obj: &Value) -> Option<String> {
    items(&obj["metadata"]["ownerReferences"])
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))
        .map(|r| format!("{}/{}", str_of(&r["kind"]), str_of(&r["name"])))
}

/// `app=web,tier in (a,b),!canary`: a LabelSelector as apimachinery prints it (requirements
/// sorted by key).
pub(crate) fn label_selector(sel: &Value) -> String {
    let mut reqs: Vec<(String, String)> = string_map(&sel["matchLabels"])
        .into_iter()
        .map(|(k, v)| (k.clone(), format!("{k}={v}")))
        .collect();
    for e in items(&sel["matchExpressions"]) {
        let key = str_of(&e["key"]).to_string();
        let mut values: Vec<&str> = items(&e["values"]).iter().map(str_of).collect();
        values.sort_unstable();
        let text = match str_of(&e["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other} ({})", values.join(",")),
        };
        reqs.push((key, text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

/// The Events table (or `Events: <none>`), oldest last-seen first.
pub(crate) fn events_section(w: &mut Writer, events: Option<&[Event]>, clock: &Clock) {
    let Some(events) = events else {
        return;
    };
    if events.is_empty() {
        w.write(0, "Events:\t<none>\n");
        return;
    }
    w.flush();
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| last_seen(e));
    w.write(0, "Events:\n  Type\tReason\tAge\tFrom\tMessage\n");
    w.write(1, "----\t------\t----\t----\t-------\n");
    for e in sorted {
        let first = e
            .event_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.first_timestamp.as_ref().map(|t| t.0));
        let first_since = timefmt::age(first, clock.now);
        let interval = match (&e.series, e.count.unwrap_or(0)) {
            (Some(series), _) => format!(
                "{} (x{} over {first_since})",
                timefmt::age(series.last_observed_time.as_ref().map(|t| t.0), clock.now),
                series.count.unwrap_or(0)
            ),
            (None, count) if count > 1 => format!(
                "{} (x{count} over {first_since})",
                timefmt::age(e.last_timestamp.as_ref().map(|t| t.0), clock.now)
            ),
            _ => first_since,
        };
        let source = e
            .source
            .as_ref()
            .and_then(|s| s.component.clone())
            .filter(|c| !c.is_empty())
            .or_else(|| e.reporting_component.clone())
            .unwrap_or_default();
        let mut message = e.message.clone().unwrap_or_default().trim().to_string();
        if let Some(path) = e
            .involved_object
            .field_path
            .as_deref()
            .filter(|p| !p.is_empty())
        {
            message = format!("{path}: {message}");
        }
        put!(
            w,
            1,
            "{}\t{}\t{interval}\t{source}\t{message}\n",
            e.type_.clone().unwrap_or_default(),
            e.reason.clone().unwrap_or_default()
        );
    }
}

fn last_seen(e: &Event) -> Option<Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn clock() -> Clock {
        Clock {
            now: "2024-05-01T12:00:00Z".parse().unwrap(),
            tz: TimeZone::UTC,
        }
    }

    pub(crate) fn event(reason: &str, message: &str, last: &str, count: i32) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": format!("e-{reason}")},
            "involvedObject": {"kind": "Pod", "name": "web"},
            "type": "Normal",
            "reason": reason,
            "message": message,
            "source": {"component": "kproxy-scheduler"},
            "firstTimestamp": "2024-05-01T11:50:00Z",
            "lastTimestamp": last,
            "count": count,
        }))
        .unwrap()
    }

    #[test]
    fn labels_and_annotations_sections() {
        let mut w = Writer::new();
        labels_multiline(
            &mut w,
            "Labels",
            &BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
        );
        labels_multiline(&mut w, "Node-Selectors", &BTreeMap::new());
        let long = "x".repeat(150);
        annotations_multiline(
            &mut w,
            "Annotations",
            &BTreeMap::from([
                (LAST_APPLIED.to_string(), "{}".to_string()),
                ("note".to_string(), "line1\nline2\n".to_string()),
                ("big".to_string(), long.clone()),
                ("team".to_string(), "a".to_string()),
            ]),
        );
        assert_eq!(
            w.finish(),
            format!(
                "Labels:          a=1\n                 b=2\nNode-Selectors:  <none>\nAnnotations:     big:\n                   {}...\n                 note:\n                   line1\n                   line2\n                 team: a\n",
                "x".repeat(138)
            )
        );
        let mut w = Writer::new();
        annotations_multiline(
            &mut w,
            "Annotations",
            &BTreeMap::from([(LAST_APPLIED.to_string(), "{}".to_string())]),
        );
        assert_eq!(w.finish(), "Annotations:  <none>\n");
    }

    #[test]
    fn label_selectors_print_like_apimachinery() {
        let sel = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "NotIn", "values": ["x"]},
                {"key": "env", "operator": "Exists"},
            ],
        });
        assert_eq!(
            label_selector(&sel),
            "app=web,!canary,env,tier in (a,b),zone notin (x)"
        );
        assert_eq!(label_selector(&json!({})), "");
    }

    #[test]
    fn events_table_and_none() {
        let c = clock();
        let mut w = Writer::new();
        w.write(0, "Name:\tweb\n");
        events_section(&mut w, Some(&[]), &c);
        assert_eq!(w.finish(), "Name:    web\nEvents:  <none>\n");
        let mut w = Writer::new();
        w.write(0, "Name:\tweb\n");
        let events = [
            event("Pulled", "Pulled image\n", "2024-05-01T11:59:00Z", 3),
            event(
                "Scheduled",
                "Assigned default/web to n1",
                "2024-05-01T11:50:00Z",
                1,
            ),
        ];
        events_section(&mut w, Some(&events), &c);
        assert_eq!(
            w.finish(),
            "Name:  web\n\
             Events:\n  \
             Type    Reason     Age                From              Message\n  \
             ----    ------     ----               ----              -------\n  \
             Normal  Scheduled  10m                kproxy-scheduler  Assigned default/web to n1\n  \
             Normal  Pulled     60s (x3 over 10m)  kproxy-scheduler  Pulled image\n"
        );
        // Without --show-events nothing is printed.
        let mut w = Writer::new();
        events_section(&mut w, None, &c);
        assert_eq!(w.finish(), "");
    }

    #[test]
    fn event_selectors_and_small_helpers() {
        assert_eq!(
            event_selector("web", "default", "u1"),
            "involvedObject.name=web,involvedObject.namespace=default,involvedObject.uid=u1"
        );
        assert_eq!(
            event_selector("n1", "", ""),
            "involvedObject.name=n1,involvedObject.namespace="
        );
        let obj = json!({"metadata": {"ownerReferences": [
            {"kind": "Deployment", "name": "x", "controller": false},
            {"kind": "ReplicaSet", "name": "web-1", "controller": true},
        ]}});
        assert_eq!(controlled_by(&obj).as_deref(), Some("ReplicaSet/web-1"));
        assert_eq!(controlled_by(&json!({})), None);
        assert_eq!(int_or_string(&json!("25%")), "25%");
        assert_eq!(int_or_string(&json!(1)), "1");
        assert_eq!(or_none(""), "<none>");
        let c = clock();
        assert_eq!(
            c.rfc(&json!("2024-05-01T11:00:00Z")),
            "Wed, 01 May 2024 11:00:00 +0000"
        );
        assert_eq!(c.rfc(&Value::Null), "Mon, 01 Jan 0001 00:00:00 +0000");
        assert_eq!(c.age(&json!("2024-05-01T11:00:00Z")), "60m");
    }
}
