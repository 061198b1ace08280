//! `kctl get --watch`: the current state first, then one row (or object) per change, until
//! interrupted. Server-side timeouts are resumed from the last resource version seen.

use anyhow::{Result, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use http::header::{ACCEPT, HeaderValue};
use kube::api::{DynamicObject, ListParams, WatchEvent, WatchParams};
use kube::core::{Request, Resource as _};
use serde_json::Value;

use super::{GetArgs, Target, fetch_table, scope, to_table, typed};
use crate::client::Ctx;
use crate::output::{self, OutputFormat};
use crate::table::{self, PrintOptions, TABLE_ACCEPT};
use crate::tabwriter::TabWriter;

pub(super) async fn run(ctx: &Ctx, args: &GetArgs, targets: &[Target]) -> Result<()> {
    let [target] = targets else {
        bail!(
            "watch is only supported on individual resources and resource collections, but {} resources were found",
            targets.len()
        );
    };
    if target.names.len() > 1 {
        bail!(
            "watch is only supported on individual resources and resource collections, but {} resources were found",
            target.names.len()
        );
    }
    let name = target.names.first().map(String::as_str);
    let field_selector = combine_field_selectors(args.field_selector.as_deref(), name);
    let wp = WatchParams {
        label_selector: args.selector.clone(),
        field_selector: field_selector.clone(),
        ..Default::default()
    };
    match args.output {
        Some(format @ (OutputFormat::Yaml | OutputFormat::Json | OutputFormat::Name)) => {
            watch_objects(ctx, args, target, &wp, format).await
        }
        _ => watch_table(ctx, args, target, name, &wp).await,
    }
}

/// A named watch is a watch on `metadata.name=NAME`, added to the user's field selector.
fn combine_field_selectors(user: Option<&str>, name: Option<&str>) -> Option<String> {
    let parts: Vec<String> = user
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .into_iter()
        .chain(name.map(|n| format!("metadata.name={n}")))
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

async fn watch_table(
    ctx: &Ctx,
    args: &GetArgs,
    target: &Target,
    name: Option<&str>,
    wp: &WatchParams,
) -> Result<()> {
    let info = &target.info;
    let ns = scope(ctx, args, info);
    let lp = ListParams {
        label_selector: wp.label_selector.clone(),
        field_selector: wp.field_selector.clone(),
        ..Default::default()
    };
    // A named object must exist, as with kubectl; a collection may be empty.
    let initial = match name {
        Some(n) => fetch_table(ctx, info, ns, Some(n), &ListParams::default()).await?,
        None => fetch_table(ctx, info, ns, None, &lp).await?,
    };
    let opts = PrintOptions {
        wide: args.output == Some(OutputFormat::Wide),
        with_namespace: args.all_namespaces && info.namespaced,
        kind_prefix: None,
        show_labels: args.show_labels,
        no_headers: args.no_headers,
    };
    let mut writer = TabWriter::for_tables();
    let mut header_printed = false;
    let text = table::render_lines(&initial, &opts, true);
    if !text.is_empty() {
        output::emit(&writer.format(&text))?;
        header_printed = true;
    }
    let mut columns = initial.column_definitions.clone();
    let mut rv = initial
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    let url = DynamicObject::url_path(&info.api_resource(), ns);
    loop {
        let mut req = Request::new(url.clone())
            .watch(wp, &rv)
            .map_err(kube::Error::BuildRequest)?;
        req.headers_mut()
            .insert(ACCEPT, HeaderValue::from_static(TABLE_ACCEPT));
        let mut events = ctx.client.request_events::<Value>(req).await?.boxed();
        let mut seen = false;
        while let Some(event) = events.try_next().await? {
            seen = true;
            let object = match event {
                WatchEvent::Added(v) | WatchEvent::Modified(v) | WatchEvent::Deleted(v) => v,
                WatchEvent::Bookmark(b) => {
                    rv = b.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(status) if status.code == 410 => {
                    // Our resource version is too old: start over from the current state.
                    let fresh = fetch_table(ctx, info, ns, None, &lp).await?;
                    rv = fresh.metadata.resource_version.unwrap_or_default();
                    break;
                }
                WatchEvent::Error(status) => return Err(kube::Error::Api(status).into()),
            };
            let mut t = to_table(object, jiff::Timestamp::now())?;
            // Watch events may leave the columns out after the first one.
            if t.column_definitions.is_empty() {
                t.column_definitions.clone_from(&columns);
            } else {
                columns.clone_from(&t.column_definitions);
            }
            if let Some(last) = t
                .rows
                .iter()
                .rev()
                .find_map(|r| r.object["metadata"]["resourceVersion"].as_str())
            {
                rv = last.to_string();
            }
            let text = table::render_lines(&t, &opts, !header_printed);
            if !text.is_empty() {
                header_printed = true;
                output::emit(&writer.format(&text))?;
            }
        }
        pause_if_idle(seen).await;
    }
}

/// The server closed the watch (its timeout). Reconnecting at once is right after a quiet
/// period with events; a watch that ends without any is paced so a misbehaving server is not
/// hammered.
async fn pause_if_idle(seen: bool) {
    if !seen {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

async fn watch_objects(
    ctx: &Ctx,
    args: &GetArgs,
    target: &Target,
    wp: &WatchParams,
    format: OutputFormat,
) -> Result<()> {
    let info = &target.info;
    let api = ctx.api(info, scope(ctx, args, info));
    let lp = ListParams {
        label_selector: wp.label_selector.clone(),
        field_selector: wp.field_selector.clone(),
        ..Default::default()
    };
    let list = api.list(&lp).await?;
    let mut rv = list.metadata.resource_version.clone().unwrap_or_default();
    for obj in list.items {
        print_object(&typed(obj, info), &info.kind_ref(), format)?;
    }
    loop {
        let mut events = api.watch(wp, &rv).await?.boxed();
        let mut seen = false;
        while let Some(event) = events.try_next().await? {
            seen = true;
            match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                    if let Some(v) = &o.metadata.resource_version {
                        rv.clone_from(v);
                    }
                    print_object(&typed(o, info), &info.kind_ref(), format)?;
                }
                WatchEvent::Bookmark(b) => rv = b.metadata.resource_version,
                WatchEvent::Error(status) if status.code == 410 => {
                    rv = api
                        .list(&lp)
                        .await?
                        .metadata
                        .resource_version
                        .unwrap_or_default();
                    break;
                }
                WatchEvent::Error(status) => return Err(kube::Error::Api(status).into()),
            }
        }
        pause_if_idle(seen).await;
    }
}

fn print_object(v: &Value, kind_ref: &str, format: OutputFormat) -> Result<()> {
    let text = match format {
        OutputFormat::Name => format!(
            "{}\n",
            output::name_line(kind_ref, v["metadata"]["name"].as_str().unwrap_or(""))
        ),
        // One YAML document per object.
        OutputFormat::Yaml => format!("---\n{}", output::to_yaml(v)),
        _ => output::to_json(v)?,
    };
    output::emit(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_watches_select_by_name() {
        assert_eq!(combine_field_selectors(None, None), None);
        assert_eq!(
            combine_field_selectors(None, Some("web")).as_deref(),
            Some("metadata.name=web")
        );
        assert_eq!(
            combine_field_selectors(Some("status.phase=Running"), Some("web")).as_deref(),
            Some("status.phase=Running,metadata.name=web")
        );
        assert_eq!(combine_field_selectors(Some(""), None), None);
    }
}
