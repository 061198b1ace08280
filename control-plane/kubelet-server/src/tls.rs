//! Mutual TLS: a self-signed serving certificate kept in the data directory, and client
//! certificates required and verified against the API server's CA (only the API server,
//! holding its kubelet-client certificate, may read logs or run commands).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

pub const CERT_FILE: &str = "kubelet.crt";
pub const KEY_FILE: &str = "kubelet.key";

/// The rustls configuration for the kubelet endpoint.
pub fn server_config(
    data_dir: &Path,
    node_name: &str,
    client_ca_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = serving_cert(data_dir, node_name)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &client_ca_pem[..]) {
        roots
            .add(cert.context("parsing the client CA")?)
            .context("adding the client CA")?;
    }
    if roots.is_empty() {
        bail!("no certificate in the client CA PEM");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Without `allow_unauthenticated`: a client with no certificate fails the handshake.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("building the client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("serving certificate and key do not match")?;
    // WebSocket upgrades are HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The serving certificate and key from `data_dir`, created (self-signed) on first use. The
/// API server does not verify it (as Kubernetes without --kubelet-certificate-authority), so
/// its names only help people inspecting it.
pub fn serving_cert(
    data_dir: &Path,
    node_name: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let crt_path = data_dir.join(CERT_FILE);
    let key_path = data_dir.join(KEY_FILE);
    if !crt_path.exists() || !key_path.exists() {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let (crt, key) = generate(node_name)?;
        write_file(&key_path, &key, 0o600)?;
        // The certificate last: its presence marks a complete pair.
        write_file(&crt_path, &crt, 0o644)?;
        tracing::info!(path = %crt_path.display(), "generated the kubelet serving certificate");
    }
    let crt_pem =
        std::fs::read(&crt_path).with_context(|| format!("reading {}", crt_path.display()))?;
    let key_pem =
        std::fs::read(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let chain = rustls_pemfile::certs(&mut &crt_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", crt_path.display()))?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .with_context(|| format!("parsing {}", key_path.display()))?
        .with_context(|| format!("no private key in {}", key_path.display()))?;
    Ok((chain, key))
}

fn generate(node_name: &str) -> Result<(String, String)> {
    let key = KeyPair::generate().context("generating the serving key")?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
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
        .push(DnType::CommonName, format!("{node_name}@kubelet"));
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params
        .self_signed(&key)
        .context("self-signing the serving certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `contents` with `mode` atomically (temporary file, then rename).
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, ExtendedKeyUsagePurpose, IsCa};
    use rustls::pki_types::ServerName;
    use std::os::unix::fs::PermissionsExt as _;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("kproxy-kubelet-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
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
        // The client trusts the kubelet's own self-signed certificate.
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
        let config = server_config(&dir, "node-a", ca.as_bytes()).unwrap();
        let (serving, _) = serving_cert(&dir, "node-a").unwrap();
        handshake(config.clone(), &serving, Some((&crt, &key)))
            .await
            .expect("the CA's client is let in");
        let e = handshake(config.clone(), &serving, None).await.unwrap_err();
        assert!(e.to_lowercase().contains("certificate"), "{e}");
        handshake(config, &serving, Some((&other_crt, &other_key)))
            .await
            .expect_err("a certificate from another CA is refused");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_serving_certificate_is_created_once_with_a_private_key() {
        let dir = temp_dir("serving");
        let (chain, _) = serving_cert(&dir, "node-a").unwrap();
        let first = std::fs::read(dir.join(CERT_FILE)).unwrap();
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, _) = serving_cert(&dir, "node-a").unwrap();
        assert_eq!(chain, again, "reused, not regenerated");
        assert_eq!(std::fs::read(dir.join(CERT_FILE)).unwrap(), first);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_client_ca_is_required() {
        let dir = temp_dir("noca");
        let e = server_config(&dir, "n", b"not a pem").unwrap_err();
        assert!(format!("{e:#}").contains("no certificate"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
