//! The cluster CA and the API server's serving certificate, generated once at first start
//! (like kubeadm's /etc/kubernetes/pki) and reused afterwards so kubeconfigs stay valid.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

pub struct Pki {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

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
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        generate(dir, extra_ips)?;
        tracing::info!(dir = %dir.display(), "generated cluster CA and API server certificate");
    }
    let ca_pem = std::fs::read_to_string(&ca_path)
        .with_context(|| format!("reading {}", ca_path.display()))?;
    let crt_pem =
        std::fs::read(&crt_path).with_context(|| format!("reading {}", crt_path.display()))?;
    let key_pem =
        std::fs::read(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let chain = rustls_pemfile::certs(&mut crt_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the serving certificate")?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .context("parsing the serving key")?
        .context("no private key in apiserver.key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("serving certificate and key do not match")?;
    // kubectl (Go) negotiates HTTP/2 when offered; both work.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Pki {
        ca_pem,
        server_config: Arc::new(config),
    })
}

fn generate(dir: &Path, extra_ips: &[IpAddr]) -> Result<()> {
    let [ca_path, crt_path, key_path] = paths(dir);
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
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
    let ca_cert = ca.self_signed(&ca_key).context("self-signing the CA")?;

    let key = KeyPair::generate().context("generating the serving key")?;
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "kubernetes".into()])?;
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
        .signed_by(&key, &ca_cert, &ca_key)
        .context("signing the serving certificate")?;

    write_private(&dir.join("ca.key"), &ca_key.serialize_pem())?;
    write_private(&key_path, &key.serialize_pem())?;
    std::fs::write(&crt_path, cert.pem())?;
    // The CA certificate last: its presence marks a complete PKI.
    std::fs::write(&ca_path, ca_cert.pem())?;
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
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
