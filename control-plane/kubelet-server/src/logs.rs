//! `GET /containerLogs/{namespace}/{pod}/{container}`: the container's Docker log, streamed.

use std::io;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bollard::query_parameters::LogsOptions;
use bytes::Bytes;
use futures::{Stream, StreamExt as _, TryStreamExt as _};

use crate::AppState;
use crate::error::HttpError;
use crate::lookup;
use crate::query::{self, LogOptions};

pub async fn handle(
    State(st): State<AppState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, HttpError> {
    let opts = LogOptions::parse(&query::pairs(raw.as_deref()))?;
    let target = lookup::find(
        &st.docker,
        &st.node,
        &namespace,
        &pod,
        &container,
        opts.previous,
    )
    .await?;
    if !target.started {
        return Err(lookup::waiting_error(&pod, &container));
    }
    let docker_opts = LogsOptions {
        follow: opts.follow,
        stdout: true,
        stderr: true,
        since: opts.docker_since(jiff::Timestamp::now()),
        until: 0,
        timestamps: opts.timestamps,
        tail: opts.docker_tail(),
    };
    // stdout and stderr interleaved as raw bytes, as the kubelet serves them. Dropping the
    // body (client gone) drops the Docker stream, which ends a follow.
    let log = st
        .docker
        .logs(&target.id, Some(docker_opts))
        .map_ok(bollard::container::LogOutput::into_bytes)
        .map_err(io::Error::other);
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(limit_bytes(log, opts.limit_bytes)),
    )
        .into_response())
}

/// Ends `stream` after `limit` bytes (cutting the last chunk), or after its first error.
pub fn limit_bytes<S>(stream: S, limit: Option<u64>) -> impl Stream<Item = io::Result<Bytes>>
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    // `None` remaining = no limit; `Some(0)` = done (also after an error).
    futures::stream::unfold(
        (stream.boxed(), limit),
        |(mut stream, remaining)| async move {
            if remaining == Some(0) {
                return None;
            }
            match stream.next().await? {
                Ok(mut chunk) => {
                    let remaining = remaining.map(|r| {
                        let keep = r.min(chunk.len() as u64);
                        chunk.truncate(usize::try_from(keep).unwrap_or(usize::MAX));
                        r - keep
                    });
                    Some((Ok(chunk), (stream, remaining)))
                }
                Err(e) => Some((Err(e), (stream, Some(0)))),
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static str]) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let items: Vec<io::Result<Bytes>> = parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p.as_bytes())))
            .collect();
        futures::stream::iter(items)
    }

    async fn collect(s: impl Stream<Item = io::Result<Bytes>>) -> (String, bool) {
        let items: Vec<io::Result<Bytes>> = s.collect().await;
        let failed = items.iter().any(Result::is_err);
        let text = items
            .into_iter()
            .filter_map(Result::ok)
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        (text, failed)
    }

    #[tokio::test]
    async fn limits_bytes() {
        let all = collect(limit_bytes(chunks(&["abc", "def"]), None)).await;
        assert_eq!(all, ("abcdef".into(), false));
        let cut = collect(limit_bytes(chunks(&["abc", "def", "ghi"]), Some(4))).await;
        assert_eq!(cut, ("abcd".into(), false));
        let exact = collect(limit_bytes(chunks(&["abc", "def"]), Some(3))).await;
        assert_eq!(exact, ("abc".into(), false));
    }

    #[tokio::test]
    async fn stops_at_the_limit_without_waiting_for_more() {
        // A followed log that never ends: the limit must end the body by itself.
        let endless = chunks(&["abc"]).chain(futures::stream::pending());
        let cut = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            collect(limit_bytes(endless, Some(3))),
        )
        .await
        .expect("ended at the limit");
        assert_eq!(cut, ("abc".into(), false));
    }

    #[tokio::test]
    async fn ends_after_an_error() {
        let s = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"a")),
            Err(io::Error::other("docker went away")),
            Ok(Bytes::from_static(b"b")),
        ]);
        assert_eq!(collect(limit_bytes(s, None)).await, ("a".into(), true));
    }
}
