//! The mutual-TLS endpoint of a node agent, shared by the kubelet (logs, exec) and
//! `kproxy node` (its service table): both are reached only through the API server's
//! `pods/{log,exec}` and `nodes/{name}/proxy` subresources.
//!
//! - A self-signed serving certificate per component, kept in a state directory
//!   (`{component}.crt`, `{component}.key`) and created on first use. The API server does not
//!   verify it (as Kubernetes without `--kubelet-certificate-authority`).
//! - Client certificates are required and verified against the cluster CA, which signs the
//!   API server's kubelet-client certificate: only the API server gets an answer.
//! - The CA comes from the node's kubeconfig ([`kubeconfig_ca`]), as the kubelet's does.
//! - [`serve`]: the accept loop, shared with the API server (timeouts for the handshake and
//!   idle connections, a bound on open connections, accept back-off; HTTP/1.1 with upgrades,
//!   and HTTP/2 where the endpoint allows it).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

pub use serve::{Endpoint, HANDSHAKE_TIMEOUT, hold, listen, raise_open_files_limit, serve};

mod serve;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {what}")]
    Pem {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no private key in {}", .0.display())]
    NoKey(PathBuf),
    #[error("no certificate in the client CA PEM")]
    NoCa,
    #[error("{what}")]
    Rustls {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("building the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("generating the serving certificate")]
    Generate(#[source] rcgen::Error),
    #[error("{0}")]
    Kubeconfig(String),
    #[error("decoding the kubeconfig's certificate-authority-data")]
    Base64(#[source] base64::DecodeError),
}

/// Whose serving certificate, and where it is kept.
#[derive(Debug, Clone)]
pub struct Serving<'a> {
    /// The state directory holding `{component}.crt` and `{component}.key`.
    pub dir: &'a Path,
    /// `kubelet`, `kproxy`: names the files and the certificate's CN (`{node}@{component}`).
    pub component: &'a str,
    pub node_name: &'a str,
}

impl Serving<'_> {
    #[must_use]
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.component))
    }

    #[must_use]
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(format!("{}.key", self.component))
    }
}

/// The rustls configuration of a node endpoint: `serving`'s certificate, and client
/// certificates required and verified against `client_ca_pem`.
pub fn server_config(
    serving: &Serving<'_>,
    client_ca_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (chain, key) = serving_cert(serving)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &client_ca_pem[..]) {
        let cert = cert.map_err(|source| TlsError::Pem {
            what: "the client CA".into(),
            source,
        })?;
        roots.add(cert).map_err(|source| TlsError::Rustls {
            what: "adding the client CA",
            source,
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCa);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Without `allow_unauthenticated`: a client with no certificate fails the handshake.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(TlsError::Verifier)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: "TLS protocol versions",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Rustls {
            what: "serving certificate and key do not match",
            source,
        })?;
    // WebSocket upgrades (the kubelet's exec) are HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TlsError {
    let path = path.to_path_buf();
    move |source| TlsError::Io { what, path, source }
}

/// The serving certificate and key, created (self-signed) on first use. Its names only help
/// people inspecting it: the API server does not verify it.
pub fn serving_cert(
    serving: &Serving<'_>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let crt_path = serving.cert_path();
    let key_path = serving.key_path();
    if !crt_path.exists() || !key_path.exists() {
        std::fs::create_dir_all(serving.dir).map_err(io_err("creating", serving.dir))?;
        // Two processes starting at once (tests, a restart loop) must not pair one's key with
        // the other's certificate: generation happens under an exclusive lock.
        let lock_path = serving.dir.join(format!("{}.lock", serving.component));
        let lock = std::fs::File::create(&lock_path).map_err(io_err("creating", &lock_path))?;
        lock.lock().map_err(io_err("locking", &lock_path))?;
        if !crt_path.exists() || !key_path.exists() {
            let (crt, key) = generate(serving.component, serving.node_name)?;
            write_file(&key_path, &key, 0o600)?;
            // The certificate last: its presence marks a complete pair.
            write_file(&crt_path, &crt, 0o644)?;
            tracing::info!(path = %crt_path.display(), component = serving.component, "generated the serving certificate");
        }
        drop(lock);
    }
    let crt_pem = std::fs::read(&crt_path).map_err(io_err("reading", &crt_path))?;
    let key_pem = std::fs::read(&key_path).map_err(io_err("reading", &key_path))?;
    let chain = rustls_pemfile::certs(&mut &crt_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: crt_path.display().to_string(),
            source,
        })?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|source| TlsError::Pem {
            what: key_path.display().to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(key_path.clone()))?;
    Ok((chain, key))
}

fn generate(component: &str, node_name: &str) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate().map_err(TlsError::Generate)?;
    let mut params =
        CertificateParams::new(vec!["localhost".to_string()]).map_err(TlsError::Generate)?;
    if let Ok(name) = node_name.to_string().try_into()
        && node_name != "localhost"
    {
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{node_name}@{component}"));
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `contents` with `mode` atomically (temporary file, then rename).
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("writing", &tmp))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("renaming to", path))
}

/// The PEM of the kubeconfig's cluster CA (its current context's cluster, else the first):
/// the CA that also signs the API server's kubelet-client certificate.
pub fn kubeconfig_ca(k: &kube::config::Kubeconfig) -> Result<Vec<u8>, TlsError> {
    use base64::Engine as _;
    let ctx_name = k.current_context.clone().unwrap_or_default();
    let cluster_name = k
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .or_else(|| k.clusters.first().map(|c| c.name.clone()))
        .ok_or_else(|| TlsError::Kubeconfig("the kubeconfig has no cluster".into()))?;
    let cluster = k
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| {
            TlsError::Kubeconfig(format!(
                "the kubeconfig's cluster {cluster_name:?} is missing"
            ))
        })?;
    if let Some(data) = &cluster.certificate_authority_data {
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(TlsError::Base64);
    }
    if let Some(path) = &cluster.certificate_authority {
        return std::fs::read(path).map_err(io_err("reading", Path::new(path)));
    }
    Err(TlsError::Kubeconfig(
        "the kubeconfig names no CA; pass --client-ca-file".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, ExtendedKeyUsagePurpose, IsCa};
    use rustls::pki_types::ServerName;
    use std::os::unix::fs::PermissionsExt as _;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kproxy-node-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn serving<'a>(dir: &'a Path, node: &'a str) -> Serving<'a> {
        Serving {
            dir,
            component: "kubelet",
            node_name: node,
        }
    }

    /// A CA and a client certificate it signed, as PEM: (ca, client cert, client key).
    fn ca_and_client(cn: &str) -> (String, String, String) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, format!("{cn}-ca"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client.distinguished_name.push(DnType::CommonName, cn);
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = client.signed_by(&key, &ca_cert, &ca_key).unwrap();
        (ca_cert.pem(), cert.pem(), key.serialize_pem())
    }

    /// Runs a handshake in memory; Ok if both sides completed it.
    async fn handshake(
        server: Arc<rustls::ServerConfig>,
        serving: &[CertificateDer<'static>],
        client_cert: Option<(&str, &str)>,
    ) -> Result<(), String> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // The client trusts the endpoint's own self-signed certificate.
        let mut roots = rustls::RootCertStore::empty();
        for c in serving {
            roots.add(c.clone()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let client = match client_cert {
            Some((crt, key)) => builder
                .with_client_auth_cert(
                    rustls_pemfile::certs(&mut crt.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap(),
                    rustls_pemfile::private_key(&mut key.as_bytes())
                        .unwrap()
                        .unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let (a, b) = tokio::io::duplex(64 * 1024);
        let accept = async move {
            let mut s = tokio_rustls::TlsAcceptor::from(server)
                .accept(b)
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(b"ok").await.map_err(|e| e.to_string())?;
            s.flush().await.map_err(|e| e.to_string())
        };
        let connect = async move {
            let mut s = tokio_rustls::TlsConnector::from(Arc::new(client))
                .connect(ServerName::try_from("localhost").unwrap(), a)
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 2];
            // TLS 1.3 reports a refused client certificate on the first read.
            s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(buf)
        };
        let (server_result, client_result) = tokio::join!(accept, connect);
        server_result?;
        assert_eq!(&client_result?, b"ok");
        Ok(())
    }

    #[tokio::test]
    async fn client_certificates_are_required_and_verified() {
        let dir = temp_dir("mtls");
        let (ca, crt, key) = ca_and_client("kproxy-apiserver");
        let (_, other_crt, other_key) = ca_and_client("intruder");
        let config = server_config(&serving(&dir, "node-a"), ca.as_bytes()).unwrap();
        let (chain, _) = serving_cert(&serving(&dir, "node-a")).unwrap();
        handshake(config.clone(), &chain, Some((&crt, &key)))
            .await
            .expect("the CA's client is let in");
        let e = handshake(config.clone(), &chain, None).await.unwrap_err();
        assert!(e.to_lowercase().contains("certificate"), "{e}");
        handshake(config, &chain, Some((&other_crt, &other_key)))
            .await
            .expect_err("a certificate from another CA is refused");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_serving_certificate_is_created_once_with_a_private_key() {
        let dir = temp_dir("serving");
        let s = serving(&dir, "node-a");
        let (chain, _) = serving_cert(&s).unwrap();
        assert!(
            dir.join("kubelet.crt").exists(),
            "named after the component"
        );
        let first = std::fs::read(s.cert_path()).unwrap();
        let mode = std::fs::metadata(s.key_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, _) = serving_cert(&s).unwrap();
        assert_eq!(chain, again, "reused, not regenerated");
        assert_eq!(std::fs::read(s.cert_path()).unwrap(), first);
        // Another component in the same directory gets its own pair.
        let other = Serving {
            component: "kproxy",
            ..s.clone()
        };
        let (theirs, _) = serving_cert(&other).unwrap();
        assert_ne!(theirs, chain);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_pair() {
        let dir = temp_dir("race");
        let chains: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| serving_cert(&serving(&dir, "n")).unwrap().0))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(chains.windows(2).all(|w| w[0] == w[1]), "one pair for all");
        // And the pair on disk matches: a server config builds from it.
        let (ca, _, _) = ca_and_client("x");
        server_config(&serving(&dir, "n"), ca.as_bytes()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_client_ca_is_required() {
        let dir = temp_dir("noca");
        let e = server_config(&serving(&dir, "n"), b"not a pem").unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_ca_comes_from_the_kubeconfig() {
        let yaml = |cluster: &str| {
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n{cluster}contexts:\n- name: c\n  context:\n    cluster: k\n    user: u\nusers:\n- name: u\n  user:\n    token: t\n"
            )
        };
        let parse = |s: String| kube::config::Kubeconfig::from_yaml(&s).unwrap();
        // base64("PEM")
        let k = parse(yaml("    certificate-authority-data: UEVN\n"));
        assert_eq!(kubeconfig_ca(&k).unwrap(), b"PEM");
        let dir = temp_dir("kubeconfig");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ca.crt");
        std::fs::write(&file, "FILE").unwrap();
        let k = parse(yaml(&format!(
            "    certificate-authority: {}\n",
            file.display()
        )));
        assert_eq!(kubeconfig_ca(&k).unwrap(), b"FILE");
        let e = kubeconfig_ca(&parse(yaml(""))).unwrap_err();
        assert!(e.to_string().contains("--client-ca-file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
