//! List chunking: the `limit` and `continue` parameters, as Kubernetes serves them.
//!
//! A page that has more after it carries `metadata.continue`, an opaque token in Kubernetes' own
//! format (unpadded base64url of `{"v":"meta.k8s.io/v1","rv":REV,"start":KEY}`, where KEY is the
//! key after the last one returned, relative to the list's key prefix). Every later page is read
//! at REV, the revision of the first page's snapshot: the store rebuilds that revision from its
//! retained watch history, so objects created, changed or deleted between pages do not show up
//! and nothing is duplicated or skipped. (A true snapshot rather than "from the key onward at
//! the current revision": the list's resourceVersion is where a client's watch resumes, and
//! only a snapshot at it makes list + watch gapless and duplicate-free.) Once REV has left the history the token is Expired (410),
//! and the answer carries an "inconsistent" token (rv -1) that continues at the current
//! revision, as Kubernetes offers.
//!
//! Selectors apply before paging: a page is filled up to `limit` matching objects, reading the
//! store `limit` keys at a time, so only the last page can be short, and a page holds at most
//! `limit` objects in memory however large the collection is.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kproxy_store::{KeyValue, Revision, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::context::Req;
use crate::status::{ApiError, ApiResult};

const TOKEN_VERSION: &str = "meta.k8s.io/v1";

/// Kubernetes' wording for a continue token whose snapshot is gone.
const EXPIRED: &str = "The provided continue parameter is too old to display a consistent list \
    result. You can start a new list without the continue parameter, or use the continue token \
    in this response to retrieve the remainder of the results. Continuing with the provided \
    token results in an inconsistent list - objects that were created, modified, or deleted \
    between the time the first chunk was returned and now may show up in the list.";

#[derive(Serialize, Deserialize)]
struct Token {
    v: String,
    /// The snapshot's revision; negative: continue at the current revision.
    rv: i64,
    /// The first key of the next page, relative to the key prefix.
    start: String,
}

/// Where a continued list resumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Continue {
    /// The first key to read, relative to the key prefix.
    pub start: String,
    /// The revision to read at; `None` for an inconsistent continuation (current revision).
    pub revision: Option<Revision>,
}

/// The token for the page after `last_key`, read at `revision` (None: inconsistent).
pub fn encode(prefix: &str, last_key: &str, revision: Option<Revision>) -> String {
    let relative = last_key.strip_prefix(prefix).unwrap_or(last_key);
    let token = Token {
        v: TOKEN_VERSION.into(),
        rv: revision.map_or(-1, |r| i64::try_from(r).unwrap_or(i64::MAX)),
        // The smallest key greater than the last one returned.
        start: format!("{relative}\0"),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).expect("a token always serialises"))
}

/// Parses a continue token; errors are 400 BadRequest, worded as Kubernetes words them.
pub fn decode(token: &str) -> ApiResult<Continue> {
    let invalid = |why: String| ApiError::bad_request(format!("invalid continue token: {why}"));
    let raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|e| invalid(format!("continue key is not valid: {e}")))?;
    let t: Token = serde_json::from_slice(&raw)
        .map_err(|e| invalid(format!("continue key is not valid: {e}")))?;
    if t.v != TOKEN_VERSION {
        return Err(invalid(format!(
            "continue key is not valid: server does not recognize this encoded version {:?}",
            t.v
        )));
    }
    if t.rv == 0 {
        return Err(invalid(
            "continue key is not valid: incorrect encoded start resourceVersion (version \
             meta.k8s.io/v1)"
                .into(),
        ));
    }
    if t.start.is_empty() {
        return Err(invalid(
            "continue key is not valid: encoded start key empty (version meta.k8s.io/v1)".into(),
        ));
    }
    // Kubernetes rejects keys that are not in clean path form, so a token can never reach
    // above the prefix of the list it is used with.
    if t.start.starts_with('/')
        || t.start
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(invalid(format!(
            "continue key is not valid: start key {:?} is not a clean relative key",
            t.start
        )));
    }
    Ok(Continue {
        start: t.start,
        revision: u64::try_from(t.rv).ok(),
    })
}

/// A list request's paging parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paging {
    /// At most this many objects per page; `usize::MAX` for no limit.
    pub limit: usize,
    pub cont: Option<Continue>,
}

impl Paging {
    /// `None` for an unpaged list (no `limit`, or `limit=0`, and no `continue`).
    pub fn from_req(req: &Req) -> ApiResult<Option<Paging>> {
        let limit = match req.q("limit") {
            None => 0,
            Some(s) => s.parse::<i64>().ok().filter(|l| *l >= 0).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "limit: Invalid value: {s:?}: must be a non-negative integer"
                ))
            })?,
        };
        let cont = req.q("continue").map(decode).transpose()?;
        if cont.is_some() && !matches!(req.q("resourceVersion"), None | Some("0")) {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        if limit == 0 && cont.is_none() {
            return Ok(None);
        }
        let limit = match usize::try_from(limit) {
            Ok(0) | Err(_) => usize::MAX,
            Ok(l) => l,
        };
        Ok(Some(Paging { limit, cont }))
    }
}

/// A list's selector over stored objects (Sync: it is held across the store's awaits).
pub type Keep<'a> = &'a (dyn Fn(&KeyValue) -> ApiResult<bool> + Sync);

/// One page of a list, selectors applied.
#[derive(Debug)]
pub struct Page {
    pub kvs: Vec<KeyValue>,
    /// The revision of the snapshot the whole list is read at.
    pub revision: Revision,
    pub cont: Option<String>,
    /// Objects after this page, when known (only without selectors, as in Kubernetes).
    pub remaining: Option<u64>,
}

impl Page {
    /// The list's `metadata` (ListMeta).
    pub fn list_meta(&self) -> Value {
        let mut meta = json!({"resourceVersion": self.revision.to_string()});
        if let Some(c) = &self.cont {
            meta["continue"] = json!(c);
            if let Some(n) = self.remaining {
                meta["remainingItemCount"] = json!(n);
            }
        }
        meta
    }
}

/// Reads one page under `prefix`. `keep` is the selector (None: everything matches).
pub async fn read(
    store: &dyn Store,
    prefix: &str,
    paging: &Paging,
    keep: Option<Keep<'_>>,
) -> ApiResult<Page> {
    let limit = paging.limit;
    let (mut start, mut revision) = match &paging.cont {
        Some(c) => (format!("{prefix}{}", c.start), c.revision.unwrap_or(0)),
        None => (prefix.to_string(), 0),
    };
    let mut kvs = Vec::new();
    let mut first_read = true;
    loop {
        // Without selectors every key is kept, so the store can count what follows the page.
        let page = store
            .list_page(prefix, &start, limit, revision, keep.is_none())
            .await
            .map_err(|e| match (&paging.cont, e) {
                (Some(c), StoreError::Compacted { .. } | StoreError::FutureRevision { .. })
                    if first_read =>
                {
                    // The token's snapshot is gone (FutureRevision: it came from a store that has
                    // since restarted). Offer to continue from the same key, inconsistently.
                    let mut err = ApiError::gone(EXPIRED);
                    err.continue_token =
                        Some(encode(prefix, &restore_last(prefix, &c.start), None));
                    err
                }
                (_, e) => ApiError::from(e),
            })?;
        first_read = false;
        // Later reads of this request, and the pages after it, stay at this snapshot.
        revision = page.revision;
        let mut rest = page.kvs.into_iter();
        let mut last = None;
        for kv in rest.by_ref() {
            let matched = match keep {
                Some(keep) => keep(&kv)?,
                None => true,
            };
            last = Some(kv.key.clone());
            if matched {
                kvs.push(kv);
                if kvs.len() == limit {
                    break;
                }
            }
        }
        let unread = rest.next().is_some();
        let Some(last) = last else {
            // Nothing at all after `start`.
            return Ok(Page {
                kvs,
                revision,
                cont: None,
                remaining: None,
            });
        };
        if kvs.len() == limit || !page.more {
            let more = unread || page.more;
            return Ok(Page {
                kvs,
                revision,
                cont: more.then(|| encode(prefix, &last, Some(revision))),
                remaining: if more { page.remaining } else { None },
            });
        }
        // The chunk ran out before the page filled: read on from the key after it.
        start = format!("{last}\0");
    }
}

/// The key before a token's start key (`start` is "last key" + NUL, as [`encode`] writes it),
/// absolute under `prefix`.
fn restore_last(prefix: &str, start: &str) -> String {
    format!("{prefix}{}", start.strip_suffix('\0').unwrap_or(start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kproxy_store::StoreOptions;

    #[test]
    fn token_round_trip() {
        let t = encode(
            "/registry/core/pods/",
            "/registry/core/pods/ns/web-1",
            Some(42),
        );
        assert!(!t.contains(['+', '/', '=']), "url-safe and unpadded: {t}");
        let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        let v: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            v,
            json!({"v": "meta.k8s.io/v1", "rv": 42, "start": "ns/web-1\u{0}"})
        );
        assert_eq!(
            decode(&t).unwrap(),
            Continue {
                start: "ns/web-1\0".into(),
                revision: Some(42)
            }
        );
        let inconsistent = decode(&encode("/p/", "/p/a", None)).unwrap();
        assert_eq!(inconsistent.revision, None);
        assert_eq!(restore_last("/p/", &inconsistent.start), "/p/a");
    }

    #[test]
    fn malformed_tokens_are_bad_requests() {
        let enc = |v: Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
        let cases = [
            "not base64!".to_string(),
            URL_SAFE_NO_PAD.encode(b"not json"),
            enc(json!({"v": "meta.k8s.io/v2", "rv": 1, "start": "a"})),
            enc(json!({"v": "meta.k8s.io/v1", "rv": 0, "start": "a"})),
            enc(json!({"v": "meta.k8s.io/v1", "rv": 1, "start": ""})),
            enc(json!({"v": "meta.k8s.io/v1", "rv": 1, "start": "../secrets/x"})),
            enc(json!({"v": "meta.k8s.io/v1", "rv": 1, "start": "/abs"})),
            enc(json!({"v": "meta.k8s.io/v1", "rv": 1, "start": "a//b"})),
            enc(json!({"v": "meta.k8s.io/v1", "start": "a"})),
        ];
        for token in cases {
            let err = decode(&token).expect_err(&token);
            assert_eq!(err.code, axum::http::StatusCode::BAD_REQUEST, "{token}");
            assert!(
                err.message.starts_with("invalid continue token"),
                "{}",
                err.message
            );
        }
    }

    fn req(query: &[(&str, &str)]) -> Req {
        Req {
            method: axum::http::Method::GET,
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers: axum::http::HeaderMap::default(),
            body: bytes::Bytes::default(),
            id: crate::auth::Identity::Admin,
        }
    }

    #[test]
    fn parameters() {
        assert_eq!(Paging::from_req(&req(&[])).unwrap(), None);
        assert_eq!(Paging::from_req(&req(&[("limit", "0")])).unwrap(), None);
        let p = Paging::from_req(&req(&[("limit", "500"), ("resourceVersion", "0")])).unwrap();
        assert_eq!(
            p,
            Some(Paging {
                limit: 500,
                cont: None
            })
        );
        for bad in ["-1", "x", "1.5"] {
            let err = Paging::from_req(&req(&[("limit", bad)])).unwrap_err();
            assert_eq!(err.code, axum::http::StatusCode::BAD_REQUEST);
        }
        let token = encode("/p/", "/p/a", Some(3));
        // A continue without a limit reads the rest.
        let p = Paging::from_req(&req(&[("continue", &token)]))
            .unwrap()
            .unwrap();
        assert_eq!(p.limit, usize::MAX);
        assert!(Paging::from_req(&req(&[("continue", &token), ("resourceVersion", "0")])).is_ok());
        let err =
            Paging::from_req(&req(&[("continue", &token), ("resourceVersion", "7")])).unwrap_err();
        assert_eq!(err.code, axum::http::StatusCode::BAD_REQUEST);
    }

    async fn store_with(n: usize) -> std::sync::Arc<dyn Store> {
        let s = kproxy_store::memory(StoreOptions::default());
        for i in 0..n {
            let value = if i % 3 == 0 { "x" } else { "y" };
            s.create(&format!("/p/k{i:02}"), value.into())
                .await
                .unwrap();
        }
        s.create("/q/other", "x".into()).await.unwrap();
        s
    }

    fn keys(p: &Page) -> Vec<&str> {
        p.kvs.iter().map(|kv| kv.key.as_str()).collect()
    }

    /// Reads every page; returns the pages' sizes and all keys.
    async fn read_all(
        s: &dyn Store,
        limit: usize,
        keep: Option<Keep<'_>>,
    ) -> (Vec<usize>, Vec<String>) {
        let mut paging = Paging { limit, cont: None };
        let (mut sizes, mut all) = (Vec::new(), Vec::new());
        loop {
            let page = read(s, "/p/", &paging, keep).await.unwrap();
            sizes.push(page.kvs.len());
            all.extend(keys(&page).into_iter().map(String::from));
            match page.cont {
                Some(t) => paging.cont = Some(decode(&t).unwrap()),
                None => return (sizes, all),
            }
        }
    }

    #[tokio::test]
    async fn pages_without_selectors() {
        let s = store_with(25).await;
        let mut paging = Paging {
            limit: 10,
            cont: None,
        };
        let p1 = read(&*s, "/p/", &paging, None).await.unwrap();
        assert_eq!(p1.kvs.len(), 10);
        assert_eq!(p1.remaining, Some(15));
        let rev = p1.revision;
        assert_eq!(p1.list_meta()["remainingItemCount"], 15);
        s.create("/p/k00a", "new".into()).await.unwrap();
        s.create("/p/k10a", "new".into()).await.unwrap();
        paging.cont = Some(decode(p1.cont.as_deref().unwrap()).unwrap());
        let p2 = read(&*s, "/p/", &paging, None).await.unwrap();
        assert_eq!(p2.revision, rev);
        assert_eq!(keys(&p2)[0], "/p/k10");
        assert!(
            !keys(&p2).contains(&"/p/k10a"),
            "created after the snapshot"
        );
        assert_eq!(p2.remaining, Some(5));
        paging.cont = Some(decode(p2.cont.as_deref().unwrap()).unwrap());
        let p3 = read(&*s, "/p/", &paging, None).await.unwrap();
        assert_eq!(
            keys(&p3),
            ["/p/k20", "/p/k21", "/p/k22", "/p/k23", "/p/k24"]
        );
        assert_eq!((p3.cont.as_deref(), p3.remaining), (None, None));
        assert_eq!(p3.list_meta(), json!({"resourceVersion": rev.to_string()}));

        // An exact multiple ends without a token, never with an empty page.
        let s = store_with(20).await;
        assert_eq!(read_all(&*s, 10, None).await.0, [10, 10]);
        let (sizes, all) = read_all(&*s, 1, None).await;
        assert_eq!((sizes.len(), all.len()), (20, 20));
        let s = store_with(0).await;
        assert_eq!(read_all(&*s, 10, None).await.0, [0]);
    }

    #[tokio::test]
    async fn selectors_apply_before_paging() {
        let s = store_with(25).await;
        // k00, k03, ..., k24: 9 matches.
        let keep_x = |kv: &KeyValue| Ok(kv.value == "x");
        for (limit, want) in [
            (2, vec![2, 2, 2, 2, 1]),
            (3, vec![3, 3, 3]),
            (4, vec![4, 4, 1]),
            (100, vec![9]),
        ] {
            let (sizes, all) = read_all(&*s, limit, Some(&keep_x)).await;
            assert_eq!(sizes, want, "limit {limit}");
            let expect: Vec<String> = (0..25).step_by(3).map(|i| format!("/p/k{i:02}")).collect();
            assert_eq!(all, expect);
        }
        // No remainingItemCount with a selector.
        let p = read(
            &*s,
            "/p/",
            &Paging {
                limit: 2,
                cont: None,
            },
            Some(&keep_x),
        )
        .await
        .unwrap();
        assert!(p.cont.is_some());
        assert_eq!(p.remaining, None);
        // A selector that matches nothing: one empty page, no token.
        let none = |_: &KeyValue| Ok(false);
        assert_eq!(read_all(&*s, 5, Some(&none)).await.0, [0]);
    }

    #[tokio::test]
    async fn expired_token_offers_an_inconsistent_continuation() {
        let s = store_with(5).await;
        let paging = Paging {
            limit: 2,
            cont: None,
        };
        let p1 = read(&*s, "/p/", &paging, None).await.unwrap();
        s.create("/p/k01a", "new".into()).await.unwrap();
        s.compact(s.revision()).await.unwrap();
        let expired = Paging {
            limit: 2,
            cont: Some(decode(p1.cont.as_deref().unwrap()).unwrap()),
        };
        let err = read(&*s, "/p/", &expired, None).await.unwrap_err();
        assert_eq!(err.code, axum::http::StatusCode::GONE);
        assert_eq!(err.reason, "Expired");
        let token = err.continue_token.expect("inconsistent token");
        let inconsistent = Paging {
            limit: 2,
            cont: Some(decode(&token).unwrap()),
        };
        let p2 = read(&*s, "/p/", &inconsistent, None).await.unwrap();
        // Continues after k01 at the current revision, so the new k01a shows up.
        assert_eq!(keys(&p2), ["/p/k01a", "/p/k02"]);
        assert_eq!(p2.revision, s.revision());
        // A token from the future (a restarted store) is expired too.
        let future = Paging {
            limit: 2,
            cont: Some(decode(&encode("/p/", "/p/k00", Some(10_000))).unwrap()),
        };
        let err = read(&*s, "/p/", &future, None).await.unwrap_err();
        assert_eq!(err.code, axum::http::StatusCode::GONE);
    }
}
