//! The cluster CA, the API server's serving certificate and its client certificate for
//! kubelets, generated once at first start (like kubeadm's /etc/kubernetes/pki) and reused
//! afterwards so kubeconfigs stay valid.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::{Error, Result};

pub struct Pki {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
    /// What the API server presents to kubelets (pods/log, pods/exec).
    pub kubelet_client: ClientCert,
}

/// A client certificate and its key, PEM.
#[derive(Clone)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

pub const KUBELET_CLIENT_CRT: &str = "apiserver-kubelet-client.crt";
pub const KUBELET_CLIENT_KEY: &str = "apiserver-kubelet-client.key";

fn paths(dir: &Path) -> [PathBuf; 3] {
    [
        dir.join("ca.crt"),
        dir.join("apiserver.crt"),
        dir.join("apiserver.key"),
    ]
}

/// Loads the PKI from `dir`, creating it on first use. `extra_ips` become SANs of the serving
/// certificate alongside 127.0.0.1 and localhost.
pub fn load_or_create(dir: &Path, extra_ips: &[IpAddr]) -> Result<Pki> {
    let [ca_path, crt_path, key_path] = paths(dir);
    if !ca_path.exists() || !crt_path.exists() || !key_path.exists() {
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        generate(dir, extra_ips)?;
        tracing::info!(dir = %dir.display(), "generated cluster CA and API server certificate");
    }
    let ca_pem = std::fs::read_to_string(&ca_path).map_err(Error::io("reading", &ca_path))?;
    // Also for data directories from before the API server talked to kubelets.
    let kubelet_client = kubelet_client(dir)?;
    let mut crt_pem = std::fs::read(&crt_path).map_err(Error::io("reading", &crt_path))?;
    let mut chain = rustls_pemfile::certs(&mut crt_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::pem("the serving certificate"))?;
    // A server that now also binds another address (a LAN address for worker nodes) gets a
    // serving certificate naming it, signed by the same CA: kubeconfigs stay valid.
    let missing: Vec<IpAddr> = extra_ips
        .iter()
        .copied()
        .filter(|ip| !ip.is_unspecified() && !covers(chain.first(), *ip))
        .collect();
    if !missing.is_empty() {
        reissue_serving(dir, extra_ips)?;
        tracing::info!(
            ?missing,
            "re-issued the API server certificate for new addresses"
        );
        crt_pem = std::fs::read(&crt_path).map_err(Error::io("reading", &crt_path))?;
        chain = rustls_pemfile::certs(&mut crt_pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::pem("the serving certificate"))?;
    }
    let key_pem = std::fs::read(&key_path).map_err(Error::io("reading", &key_path))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(Error::pem("the serving key"))?
        .ok_or(Error::Missing {
            what: "private key in apiserver.key",
        })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(Error::tls("TLS protocol versions"))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(Error::tls("serving certificate and key do not match"))?;
    // kubectl (Go) negotiates HTTP/2 when offered; both work.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Pki {
        ca_pem,
        server_config: Arc::new(config),
        kubelet_client,
    })
}

/// The CA's parameters. Also rebuilds the issuer for certificates signed later: the same
/// subject and the stored key make an issuer that verifiers cannot tell from the original
/// certificate.
fn ca_params() -> Result<CertificateParams> {
    let mut ca = CertificateParams::new(Vec::<String>::new())
        .map_err(Error::certificate("the CA's parameters"))?;
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "kproxy-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = rcgen::date_time_ymd(2024, 1, 1);
    ca.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(ca)
}

/// The API server's client certificate for kubelets (CN kproxy-apiserver, client auth only),
/// signed by the cluster CA; created on first use, like kubeadm's
/// apiserver-kubelet-client.crt.
fn kubelet_client(dir: &Path) -> Result<ClientCert> {
    let crt_path = dir.join(KUBELET_CLIENT_CRT);
    let key_path = dir.join(KUBELET_CLIENT_KEY);
    if !crt_path.exists() || !key_path.exists() {
        let (issuer, ca_key) = stored_issuer(dir)?;
        let key =
            KeyPair::generate().map_err(Error::certificate("generating the kubelet client key"))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(
            Error::certificate("the kubelet client certificate's parameters"),
        )?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "kproxy-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = params
            .signed_by(&key, &issuer, &ca_key)
            .map_err(Error::certificate("signing the kubelet client certificate"))?;
        write_private(&key_path, &key.serialize_pem())?;
        // The certificate last: its presence marks a complete pair.
        std::fs::write(&crt_path, cert.pem()).map_err(Error::io("writing", &crt_path))?;
        tracing::info!(path = %crt_path.display(), "generated the API server's kubelet client certificate");
    }
    Ok(ClientCert {
        cert_pem: std::fs::read_to_string(&crt_path).map_err(Error::io("reading", &crt_path))?,
        key_pem: std::fs::read_to_string(&key_path).map_err(Error::io("reading", &key_path))?,
    })
}

/// Whether the serving certificate `cert` names `ip`.
fn covers(cert: Option<&rustls::pki_types::CertificateDer<'_>>, ip: IpAddr) -> bool {
    let Some(parsed) = cert.and_then(|c| rustls::server::ParsedCertificate::try_from(c).ok())
    else {
        return false;
    };
    rustls::client::verify_server_name(
        &parsed,
        &rustls::pki_types::ServerName::IpAddress(ip.into()),
    )
    .is_ok()
}

fn generate(dir: &Path, extra_ips: &[IpAddr]) -> Result<()> {
    let ca_path = dir.join("ca.crt");
    let ca_key = KeyPair::generate().map_err(Error::certificate("generating the CA key"))?;
    let ca_cert = ca_params()?
        .self_signed(&ca_key)
        .map_err(Error::certificate("self-signing the CA"))?;
    write_private(&dir.join("ca.key"), &ca_key.serialize_pem())?;
    write_serving(dir, &ca_cert, &ca_key, extra_ips)?;
    // The CA certificate last: its presence marks a complete PKI.
    std::fs::write(&ca_path, ca_cert.pem()).map_err(Error::io("writing", &ca_path))?;
    Ok(())
}

/// A new serving certificate for `extra_ips` from the stored CA key.
fn reissue_serving(dir: &Path, extra_ips: &[IpAddr]) -> Result<()> {
    let (issuer, ca_key) = stored_issuer(dir)?;
    write_serving(dir, &issuer, &ca_key, extra_ips)
}

/// The CA as an issuer again, rebuilt from its stored key.
fn stored_issuer(dir: &Path) -> Result<(rcgen::Certificate, KeyPair)> {
    let ca_key_path = dir.join("ca.key");
    let ca_key_pem =
        std::fs::read_to_string(&ca_key_path).map_err(Error::io("reading", &ca_key_path))?;
    let ca_key =
        KeyPair::from_pem(&ca_key_pem).map_err(Error::certificate("parsing the CA key"))?;
    let issuer = ca_params()?
        .self_signed(&ca_key)
        .map_err(Error::certificate("rebuilding the CA issuer"))?;
    Ok((issuer, ca_key))
}

fn write_serving(
    dir: &Path,
    ca_cert: &rcgen::Certificate,
    ca_key: &KeyPair,
    extra_ips: &[IpAddr],
) -> Result<()> {
    let [_, crt_path, key_path] = paths(dir);
    let key = KeyPair::generate().map_err(Error::certificate("generating the serving key"))?;
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "kubernetes".into()])
        .map_err(Error::certificate("the serving certificate's parameters"))?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "kproxy-apiserver");
    let mut ips: Vec<IpAddr> = vec![[127, 0, 0, 1].into(), [10, 96, 0, 1].into()];
    ips.extend(extra_ips.iter().copied().filter(|ip| !ip.is_unspecified()));
    ips.dedup();
    params
        .subject_alt_names
        .extend(ips.into_iter().map(SanType::IpAddress));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params
        .signed_by(&key, ca_cert, ca_key)
        .map_err(Error::certificate("signing the serving certificate"))?;
    write_private(&key_path, &key.serialize_pem())?;
    std::fs::write(&crt_path, cert.pem()).map_err(Error::io("writing", &crt_path))?;
    Ok(())
}

/// Writes a file readable only by its owner (keys, tokens).
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(Error::io("writing", &tmp))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(Error::io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io("renaming to", path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::WebPkiClientVerifier;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kproxy-pki-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Verifies `cert_pem` as a TLS client certificate against the CA in `ca_pem`, the way a
    /// kubelet does.
    fn verify_client(ca_pem: &str, cert_pem: &str) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let cert: CertificateDer = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        verifier
            .verify_client_cert(&cert, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn kubelet_client_certificate_is_signed_by_the_ca_and_kept() {
        let dir = temp_dir("client");
        let pki = load_or_create(&dir, &[]).unwrap();
        verify_client(&pki.ca_pem, &pki.kubelet_client.cert_pem).expect("chains to the CA");
        let mode = {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(dir.join(KUBELET_CLIENT_KEY))
                .unwrap()
                .permissions()
                .mode()
        };
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create(&dir, &[]).unwrap();
        assert_eq!(again.kubelet_client.cert_pem, pki.kubelet_client.cert_pem);
        assert_eq!(again.ca_pem, pki.ca_pem);
        // The serving certificate is no client certificate.
        let serving = std::fs::read_to_string(dir.join("apiserver.crt")).unwrap();
        assert!(verify_client(&pki.ca_pem, &serving).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn existing_data_dirs_get_a_kubelet_client_certificate() {
        let dir = temp_dir("upgrade");
        let before = load_or_create(&dir, &[]).unwrap();
        // A data directory from before kubelet client certificates existed.
        std::fs::remove_file(dir.join(KUBELET_CLIENT_CRT)).unwrap();
        std::fs::remove_file(dir.join(KUBELET_CLIENT_KEY)).unwrap();
        let after = load_or_create(&dir, &[]).unwrap();
        assert_eq!(after.ca_pem, before.ca_pem, "the CA is kept");
        assert_ne!(
            after.kubelet_client.cert_pem,
            before.kubelet_client.cert_pem
        );
        verify_client(&after.ca_pem, &after.kubelet_client.cert_pem).expect("chains to the CA");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn serving(dir: &Path) -> Vec<CertificateDer<'static>> {
        let pem = std::fs::read(dir.join("apiserver.crt")).unwrap();
        rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_new_bind_address_reissues_the_serving_certificate_from_the_same_ca() {
        let dir = temp_dir("sans");
        let lan: IpAddr = [198, 51, 100, 7].into();
        let before = load_or_create(&dir, &["127.0.0.1".parse().unwrap()]).unwrap();
        assert!(!covers(serving(&dir).first(), lan));
        let first = serving(&dir);
        // Same addresses again: nothing is re-issued.
        load_or_create(&dir, &["127.0.0.1".parse().unwrap()]).unwrap();
        assert_eq!(serving(&dir), first);
        let after = load_or_create(&dir, &["127.0.0.1".parse().unwrap(), lan]).unwrap();
        assert_eq!(after.ca_pem, before.ca_pem, "the CA is kept");
        let chain = serving(&dir);
        assert!(covers(chain.first(), lan));
        assert!(covers(chain.first(), [127, 0, 0, 1].into()));
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut after.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        verifier
            .verify_server_cert(
                &chain[0],
                &[],
                &rustls::pki_types::ServerName::IpAddress(lan.into()),
                &[],
                UnixTime::now(),
            )
            .expect("the re-issued certificate chains to the kept CA");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
