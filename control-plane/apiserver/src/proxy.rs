//! `pods/log` and `pods/exec`: the API server checks the pod and container, finds the kubelet
//! of the pod's node and forwards the request there over mutual TLS (our client certificate,
//! the kubelet's `/containerLogs/..` and `/exec/..` endpoints). A log streams back unchanged;
//! an exec's WebSocket upgrade is relayed and the connection then copied byte for byte both
//! ways, so the remotecommand frames pass through untouched.
//!
//! `nodes/{name}[:{port}]/proxy/{path}`: a GET forwarded the same way to the node's
//! InternalIP and the given port (default: the kubelet's), e.g. kproxy's node endpoint for
//! `kctl lb`; the answer comes back with its status and content type.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderName, Method, Request, Response, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::Value;

use crate::auth::Identity;
use crate::handler::{Api, Target};
use crate::object::{self, str_at};
use crate::pki::ClientCert;
use crate::status::{ApiError, ApiResult};

/// Connecting to a kubelet (TCP and TLS) taking longer than this fails the request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a kubelet's error body becomes the Status message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Query parameters the kubelet understands, per subresource; everything else (container,
/// which is in the path) stays here.
const LOG_PARAMS: &[&str] = &[
    "follow",
    "previous",
    "timestamps",
    "tailLines",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
];
const EXEC_PARAMS: &[&str] = &["command", "stdin", "stdout", "stderr", "tty"];

/// Opens connections to kubelets, presenting the API server's kubelet-client certificate.
pub struct KubeletClient {
    tls: tokio_rustls::TlsConnector,
}

impl KubeletClient {
    pub fn new(cert: &ClientCert) -> Result<Self> {
        let chain = rustls_pemfile::certs(&mut cert.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("parsing the kubelet client certificate")?;
        let key = rustls_pemfile::private_key(&mut cert.key_pem.as_bytes())
            .context("parsing the kubelet client key")?
            .context("no private key in the kubelet client key file")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyKubeletCert(provider)))
            .with_client_auth_cert(chain, key)
            .context("kubelet client certificate and key do not match")?;
        // Upgrades (exec) are HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// An HTTP/1.1 connection to the kubelet at `ep` (driven by a task of its own, upgrades
    /// enabled).
    async fn connect(
        &self,
        ep: &Endpoint,
    ) -> ApiResult<hyper::client::conn::http1::SendRequest<Body>> {
        let unreachable = |what: &str, e: &dyn std::fmt::Display| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!(
                    "error dialing {} of node {:?} at {}: {what}: {e}",
                    ep.what,
                    ep.node,
                    ep.authority()
                ),
            )
        };
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((ep.host.as_str(), ep.port)),
        )
        .await
        .map_err(|e| unreachable("connect", &e))?
        .map_err(|e| unreachable("connect", &e))?;
        let _ = tcp.set_nodelay(true);
        let name =
            ServerName::try_from(ep.host.clone()).map_err(|e| unreachable("server name", &e))?;
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, self.tls.connect(name, tcp))
            .await
            .map_err(|e| unreachable("TLS handshake", &e))?
            .map_err(|e| unreachable("TLS handshake", &e))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable("HTTP", &e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("kubelet connection: {e}");
            }
        });
        Ok(sender)
    }
}

/// Kubelets serve self-signed certificates, and Kubernetes does not verify them unless
/// given --kubelet-certificate-authority; neither do we. The handshake signature is still
/// checked (the peer holds the key of the certificate it sent), and the kubelet verifies
/// us, which is what protects logs and exec.
#[derive(Debug)]
struct AnyKubeletCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyKubeletCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Where a node's kubelet (or another node endpoint) listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub node: String,
    pub host: String,
    pub port: u16,
    /// Names the peer in errors: "the kubelet", "the endpoint".
    pub what: &'static str,
}

impl Endpoint {
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        message,
    )
}

/// The address a Node is reached at: its InternalIP, else its Hostname address.
pub fn node_host(node: &Value) -> ApiResult<String> {
    let name = object::name(node).unwrap_or_default();
    let addresses = node["status"]["addresses"].as_array();
    let address_of = |kind: &str| {
        addresses?
            .iter()
            .find(|a| a["type"] == kind)
            .and_then(|a| a["address"].as_str())
            .filter(|a| !a.is_empty())
    };
    address_of("InternalIP")
        .or_else(|| address_of("Hostname"))
        .map(str::to_string)
        .ok_or_else(|| {
            unavailable(format!(
                "node {name:?} reports no InternalIP or Hostname address: cannot reach it"
            ))
        })
}

/// The kubelet endpoint a Node reports: [`node_host`] and
/// `status.daemonEndpoints.kubeletEndpoint.Port`.
pub fn kubelet_endpoint(node: &Value) -> ApiResult<Endpoint> {
    let name = object::name(node).unwrap_or_default().to_string();
    let host = node_host(node)?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            unavailable(format!(
                "node {name:?} reports no kubelet port (status.daemonEndpoints.kubeletEndpoint.Port): cannot reach its kubelet"
            ))
        })?;
    Ok(Endpoint {
        node: name,
        host,
        port,
        what: "the kubelet",
    })
}

/// The container a request means, in Kubernetes' words when it cannot tell.
pub fn container_for(pod: &Value, requested: Option<&str>) -> ApiResult<String> {
    let pod_name = object::name(pod).unwrap_or_default();
    let names = |field: &str| -> Vec<&str> {
        pod["spec"][field]
            .as_array()
            .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default()
    };
    let (containers, init) = (names("containers"), names("initContainers"));
    match requested {
        Some(c) if containers.contains(&c) || init.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None => match containers.as_slice() {
            [only] => Ok((*only).to_string()),
            [] => Err(ApiError::bad_request(format!(
                "pod {pod_name} has no containers"
            ))),
            several => {
                let mut msg = format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    several.join(" ")
                );
                if !init.is_empty() {
                    msg.push_str(&format!(
                        " or one of the init containers: [{}]",
                        init.join(" ")
                    ));
                }
                Err(ApiError::bad_request(msg))
            }
        },
    }
}

/// Only the admin reads logs and runs commands; nodes (which may read pods) may not.
pub fn authorize(id: &Identity, sub: &str, ns: Option<&str>) -> ApiResult<()> {
    if *id == Identity::Admin {
        return Ok(());
    }
    // Kubernetes asks for `create` on pods/exec whatever the HTTP method.
    let verb = if sub == "exec" { "create" } else { "get" };
    Err(ApiError::forbidden(
        &id.user(),
        verb,
        &format!("pods/{sub}"),
        ns,
    ))
}

/// A kubelet's error answer as a Status with the same code and its text as the message
/// (as Kubernetes' log streamer does).
pub fn kubelet_error(code: StatusCode, body: &str) -> ApiError {
    let message = match body.trim() {
        "" => format!("the kubelet answered {code}"),
        text => text.to_string(),
    };
    match code {
        StatusCode::BAD_REQUEST => ApiError::bad_request(message),
        StatusCode::INTERNAL_SERVER_ERROR => ApiError::internal(message),
        StatusCode::NOT_FOUND => ApiError::new(code, "NotFound", message),
        StatusCode::FORBIDDEN => ApiError::new(code, "Forbidden", message),
        StatusCode::UNAUTHORIZED => ApiError::new(code, "Unauthorized", message),
        StatusCode::SERVICE_UNAVAILABLE => ApiError::new(code, "ServiceUnavailable", message),
        _ => ApiError::new(code, "", message),
    }
}

/// Keeps the parameters in `allowed` (in order, repeats included) as a query string.
fn forward_query(pairs: &[(String, String)], allowed: &[&str]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(k, _)| allowed.contains(&k.as_str())) {
        s.append_pair(k, v);
    }
    s.finish()
}

async fn read(api: &Api, kind: &str, ns: Option<&str>, name: &str) -> ApiResult<Option<Value>> {
    let res = crate::registry::by_kind(kind)
        .ok_or_else(|| ApiError::internal(format!("{kind} is not registered")))?;
    match api.store.get(&res.key(ns, name)).await? {
        Some(kv) => Ok(Some(object::from_kv(&kv)?)),
        None => Ok(None),
    }
}

/// Serves `pods/log` (GET) and `pods/exec` (GET or POST, an upgrade) for `t`.
pub async fn serve(
    api: &Api,
    t: &Target,
    parts: &mut Parts,
) -> ApiResult<axum::response::Response> {
    let (Some(ns), Some(name), Some(sub)) = (t.ns.as_deref(), t.name.as_deref(), t.sub.as_deref())
    else {
        return Err(ApiError::no_route());
    };
    let allowed = match (sub, &parts.method) {
        ("log", &Method::GET) => LOG_PARAMS,
        ("exec", &Method::GET | &Method::POST) => EXEC_PARAMS,
        _ => return Err(ApiError::method_not_allowed()),
    };
    let pairs: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let pod = read(api, "Pod", Some(ns), name)
        .await?
        .ok_or_else(|| ApiError::not_found("pods", name))?;
    let requested = pairs
        .iter()
        .find(|(k, v)| k == "container" && !v.is_empty())
        .map(|(_, v)| v.as_str());
    let container = container_for(&pod, requested)?;
    let node_name = str_at(&pod, &["spec", "nodeName"])
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    let node = read(api, "Node", None, node_name).await?.ok_or_else(|| {
        unavailable(format!(
            "node {node_name:?} of pod {name} not found: cannot reach its kubelet"
        ))
    })?;
    let ep = kubelet_endpoint(&node)?;
    let base = if sub == "log" {
        "containerLogs"
    } else {
        "exec"
    };
    let mut target = format!("/{base}/{ns}/{name}/{container}");
    let query = forward_query(&pairs, allowed);
    if !query.is_empty() {
        target = format!("{target}?{query}");
    }
    let mut sender = api.kubelet.connect(&ep).await?;
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(&target)
        .header(header::HOST, ep.authority());
    if sub == "exec" {
        // The upgrade handshake is end to end between client and kubelet: its headers
        // travel unchanged (the client's credentials do not).
        if parts.headers.contains_key(header::UPGRADE) {
            req = req.header(header::CONNECTION, "Upgrade");
        }
        for h in [
            header::UPGRADE,
            header::SEC_WEBSOCKET_KEY,
            header::SEC_WEBSOCKET_VERSION,
            header::SEC_WEBSOCKET_PROTOCOL,
        ] {
            for v in parts.headers.get_all(&h) {
                req = req.header(&h, v);
            }
        }
    }
    let req = req
        .body(Body::empty())
        .map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;
    let resp = sender.send_request(req).await.map_err(|e| {
        unavailable(format!(
            "error talking to the kubelet of node {node_name:?} at {}: {e}",
            ep.authority()
        ))
    })?;
    tracing::debug!(
        node = node_name,
        target,
        status = resp.status().as_u16(),
        "kubelet"
    );
    match (sub, resp.status()) {
        ("log", StatusCode::OK) => Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::new(resp.into_body()))
            .map_err(ApiError::internal)?),
        ("exec", StatusCode::SWITCHING_PROTOCOLS) => relay_upgrade(parts, resp),
        (_, code) => {
            let body = axum::body::to_bytes(Body::new(resp.into_body()), MAX_ERROR_BODY)
                .await
                .unwrap_or_default();
            Err(kubelet_error(code, &String::from_utf8_lossy(&body)))
        }
    }
}

/// A `nodes/{name}[:{port}]/proxy[/{path}]` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProxyTarget {
    pub node: String,
    /// `None`: the kubelet's port (`status.daemonEndpoints.kubeletEndpoint.Port`).
    pub port: Option<u16>,
    /// The path on the node, from '/', as the client encoded it.
    pub path: String,
}

/// Recognises `/api/v1/nodes/{name}/proxy[/{path}]` (the raw, still percent-encoded
/// path); `None` for any other path, an error for a malformed `{name}`.
pub fn node_proxy_target(path: &str) -> Option<ApiResult<NodeProxyTarget>> {
    let rest = path.strip_prefix("/api/v1/nodes/")?;
    let (name, rest) = rest.split_once('/')?;
    let tail = if rest == "proxy" {
        ""
    } else {
        rest.strip_prefix("proxy/")?
    };
    Some(
        parse_node_proxy_name(name).map(|(node, port)| NodeProxyTarget {
            node,
            port,
            path: format!("/{tail}"),
        }),
    )
}

/// Kubernetes' `[scheme:]name[:port]` (only https: node endpoints are TLS).
pub fn parse_node_proxy_name(raw: &str) -> ApiResult<(String, Option<u16>)> {
    // Some clients encode the separator.
    let s = raw.replace("%3A", ":").replace("%3a", ":");
    let parts: Vec<&str> = s.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => {
            return Err(ApiError::bad_request(format!(
                "invalid node proxy target {s:?}: expected NAME, NAME:PORT or https:NAME:PORT"
            )));
        }
    };
    if !matches!(scheme, "" | "https") {
        return Err(ApiError::bad_request(format!(
            "invalid node proxy target {s:?}: node endpoints are reached over https only"
        )));
    }
    if name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "invalid node proxy target {s:?}: no node name"
        )));
    }
    let port = match port {
        "" => None,
        p => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid node proxy target {s:?}: port {p:?} is not a number from 1 to 65535"
            ))
        })?),
    };
    Ok((name.to_string(), port))
}

/// Only the admin reaches node endpoints: a node (which may read Nodes) must not reach
/// other nodes through the API server.
pub fn authorize_node_proxy(id: &Identity, method: &Method) -> ApiResult<()> {
    if *id == Identity::Admin {
        return Ok(());
    }
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    };
    Err(ApiError::forbidden(&id.user(), verb, "nodes/proxy", None))
}

/// Serves `nodes/{name}[:{port}]/proxy/{path}`: a GET forwarded to the node over mutual TLS
/// (our kubelet-client certificate), its answer streamed back with its status.
pub async fn serve_node(
    api: &Api,
    t: &NodeProxyTarget,
    parts: &Parts,
) -> ApiResult<axum::response::Response> {
    if parts.method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let node = read(api, "Node", None, &t.node)
        .await?
        .ok_or_else(|| ApiError::not_found("nodes", &t.node))?;
    let ep = match t.port {
        Some(port) => Endpoint {
            node: t.node.clone(),
            host: node_host(&node)?,
            port,
            what: "the endpoint",
        },
        None => kubelet_endpoint(&node)?,
    };
    let target = match parts.uri.query() {
        Some(q) => format!("{}?{q}", t.path),
        None => t.path.clone(),
    };
    let mut sender = api.kubelet.connect(&ep).await?;
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(&target)
        .header(header::HOST, ep.authority());
    // What the client accepts; never its credentials.
    for v in parts.headers.get_all(header::ACCEPT) {
        req = req.header(header::ACCEPT, v);
    }
    let req = req
        .body(Body::empty())
        .map_err(|e| ApiError::bad_request(format!("invalid node proxy path {target:?}: {e}")))?;
    let resp = sender.send_request(req).await.map_err(|e| {
        unavailable(format!(
            "error talking to {} of node {:?} at {}: {e}",
            ep.what,
            t.node,
            ep.authority()
        ))
    })?;
    tracing::debug!(
        node = t.node,
        port = ep.port,
        target,
        status = resp.status().as_u16(),
        "node proxy"
    );
    let mut answer = Response::builder().status(resp.status());
    for h in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
        for v in resp.headers().get_all(&h) {
            answer = answer.header(&h, v);
        }
    }
    answer
        .body(Body::new(resp.into_body()))
        .map_err(ApiError::internal)
}

/// Answers the client's upgrade with the kubelet's 101 and joins the two connections.
fn relay_upgrade(
    parts: &mut Parts,
    mut kubelet_resp: Response<hyper::body::Incoming>,
) -> ApiResult<axum::response::Response> {
    let client = parts.extensions.remove::<OnUpgrade>().ok_or_else(|| {
        ApiError::bad_request("exec needs an HTTP/1.1 connection that can be upgraded")
    })?;
    let kubelet = hyper::upgrade::on(&mut kubelet_resp);
    let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for h in [
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_ACCEPT,
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderName::from_static("x-stream-protocol-version"),
    ] {
        for v in kubelet_resp.headers().get_all(&h) {
            answer = answer.header(&h, v);
        }
    }
    tokio::spawn(async move {
        let (kubelet, client) = match tokio::try_join!(kubelet, client) {
            Ok(both) => both,
            Err(e) => {
                tracing::info!("exec upgrade failed: {e}");
                return;
            }
        };
        let (mut kubelet, mut client) = (TokioIo::new(kubelet), TokioIo::new(client));
        match tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
            Ok((up, down)) => tracing::debug!(up, down, "exec relay done"),
            Err(e) => tracing::debug!("exec relay: {e}"),
        }
    });
    answer
        .body(Body::empty())
        .map_err(|e| ApiError::internal(format!("building the upgrade answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn picks_the_container() {
        let one = pod(json!({"containers": [{"name": "a"}]}));
        assert_eq!(container_for(&one, None).unwrap(), "a");
        assert_eq!(container_for(&one, Some("a")).unwrap(), "a");
        let e = container_for(&one, Some("zz")).unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "container zz is not valid for pod p");

        let two = pod(json!({"containers": [{"name": "a"}, {"name": "b"}]}));
        let e = container_for(&two, None).unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        let with_init = pod(json!({
            "initContainers": [{"name": "setup"}],
            "containers": [{"name": "a"}, {"name": "b"}],
        }));
        assert_eq!(
            container_for(&with_init, None).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [setup]"
        );
        assert_eq!(container_for(&with_init, Some("setup")).unwrap(), "setup");
        assert!(container_for(&pod(json!({})), None).is_err());
    }

    #[test]
    fn finds_the_kubelet_endpoint() {
        let node = |status: Value| json!({"metadata": {"name": "n1"}, "status": status});
        let ep = kubelet_endpoint(&node(json!({
            "addresses": [
                {"type": "Hostname", "address": "n1.example"},
                {"type": "InternalIP", "address": "10.0.0.7"},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        })))
        .unwrap();
        assert_eq!(ep.authority(), "10.0.0.7:10250");
        assert_eq!(ep.node, "n1");
        let by_name = kubelet_endpoint(&node(json!({
            "addresses": [{"type": "Hostname", "address": "n1.example"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 1}},
        })))
        .unwrap();
        assert_eq!(by_name.authority(), "n1.example:1");
        let v6 = kubelet_endpoint(&node(json!({
            "addresses": [{"type": "InternalIP", "address": "fd00::7"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        })))
        .unwrap();
        assert_eq!(v6.authority(), "[fd00::7]:10250");

        let no_address = kubelet_endpoint(&node(json!({
            "addresses": [{"type": "ExternalIP", "address": "1.2.3.4"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        })))
        .unwrap_err();
        assert_eq!(no_address.code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            no_address.message.contains("\"n1\""),
            "{}",
            no_address.message
        );
        for bad_port in [
            json!({}),
            json!({"kubeletEndpoint": {"Port": 0}}),
            json!({"kubeletEndpoint": {"Port": 70000}}),
        ] {
            let e = kubelet_endpoint(&node(json!({
                "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}],
                "daemonEndpoints": bad_port,
            })))
            .unwrap_err();
            assert!(e.message.contains("kubelet port"), "{}", e.message);
        }
    }

    #[test]
    fn only_the_admin_may_read_logs_or_exec() {
        assert!(authorize(&Identity::Admin, "exec", Some("d")).is_ok());
        let node = Identity::Node("n1".into());
        let e = authorize(&node, "log", Some("d")).unwrap_err();
        assert_eq!(e.code, StatusCode::FORBIDDEN);
        assert!(
            e.message.contains("cannot get resource \"pods/log\""),
            "{}",
            e.message
        );
        let e = authorize(&node, "exec", Some("d")).unwrap_err();
        assert!(
            e.message.contains("cannot create resource \"pods/exec\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn node_proxy_paths_and_names() {
        let t = node_proxy_target("/api/v1/nodes/n1:10262/proxy/lb")
            .unwrap()
            .unwrap();
        assert_eq!(
            t,
            NodeProxyTarget {
                node: "n1".into(),
                port: Some(10262),
                path: "/lb".into()
            }
        );
        let t = node_proxy_target("/api/v1/nodes/n1/proxy")
            .unwrap()
            .unwrap();
        assert_eq!((t.port, t.path.as_str()), (None, "/"));
        let t = node_proxy_target("/api/v1/nodes/https:n.example:1/proxy/a/b%20c/")
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.node.as_str(), t.port, t.path.as_str()),
            ("n.example", Some(1), "/a/b%20c/")
        );
        let t = node_proxy_target("/api/v1/nodes/n1%3A99/proxy/x")
            .unwrap()
            .unwrap();
        assert_eq!((t.node.as_str(), t.port), ("n1", Some(99)));
        // Other node paths are not the proxy.
        for other in [
            "/api/v1/nodes/n1",
            "/api/v1/nodes/n1/status",
            "/api/v1/nodes/n1/proxyx",
            "/api/v1/nodes",
            "/api/v1/namespaces/d/nodes/n1/proxy",
        ] {
            assert!(node_proxy_target(other).is_none(), "{other}");
        }
        for bad in [
            "n1:0",
            "n1:http",
            "n1:70000",
            "http:n1:80",
            ":80",
            "a:b:c:d",
        ] {
            let e = parse_node_proxy_name(bad).unwrap_err();
            assert_eq!(e.code, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn only_the_admin_may_proxy_to_nodes() {
        assert!(authorize_node_proxy(&Identity::Admin, &Method::GET).is_ok());
        let e = authorize_node_proxy(&Identity::Node("n1".into()), &Method::GET).unwrap_err();
        assert_eq!(e.code, StatusCode::FORBIDDEN);
        assert!(
            e.message.contains("cannot get resource \"nodes/proxy\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn kubelet_errors_keep_their_code() {
        let e = kubelet_error(
            StatusCode::BAD_REQUEST,
            "previous terminated container \"c\" in pod \"p\" not found\n",
        );
        assert_eq!(
            (e.code, e.reason, e.message.as_str()),
            (
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "previous terminated container \"c\" in pod \"p\" not found"
            )
        );
        assert_eq!(kubelet_error(StatusCode::NOT_FOUND, "x").reason, "NotFound");
        let e = kubelet_error(StatusCode::INTERNAL_SERVER_ERROR, "boom");
        assert_eq!(e.message, "Internal error occurred: boom");
        let e = kubelet_error(StatusCode::BAD_GATEWAY, "");
        assert_eq!(e.code, StatusCode::BAD_GATEWAY);
        assert_eq!(e.message, "the kubelet answered 502 Bad Gateway");
    }

    #[test]
    fn forwards_only_the_kubelets_parameters() {
        let pairs: Vec<(String, String)> = [
            ("container", "c"),
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo a&b"),
            ("stdin", "true"),
            ("pretty", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            forward_query(&pairs, EXEC_PARAMS),
            "command=sh&command=-c&command=echo+a%26b&stdin=true"
        );
        assert_eq!(forward_query(&pairs, LOG_PARAMS), "");
    }
}
