//! Connections from the API server to kubelets and other node endpoints: mutual TLS with the
//! server's kubelet-client certificate, HTTP/1.1 (exec upgrades need it).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::{Error, Result};
use crate::pki::ClientCert;
use crate::status::{ApiError, ApiResult};

/// Connecting to a kubelet (TCP and TLS) taking longer than this fails the request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens connections to kubelets, presenting the API server's kubelet-client certificate.
pub struct KubeletClient {
    tls: tokio_rustls::TlsConnector,
}

impl KubeletClient {
    pub fn new(cert: &ClientCert) -> Result<Self> {
        let chain = rustls_pemfile::certs(&mut cert.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::pem("the kubelet client certificate"))?;
        let key = rustls_pemfile::private_key(&mut cert.key_pem.as_bytes())
            .map_err(Error::pem("the kubelet client key"))?
            .ok_or(Error::Missing {
                what: "private key in the kubelet client key file",
            })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(Error::tls("TLS protocol versions"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyKubeletCert(provider)))
            .with_client_auth_cert(chain, key)
            .map_err(Error::tls(
                "kubelet client certificate and key do not match",
            ))?;
        // Upgrades (exec) are HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// An HTTP/1.1 connection to the kubelet at `ep` (driven by a task of its own, upgrades
    /// enabled).
    pub async fn connect(
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
                tracing::debug!(error = %e, "kubelet connection");
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
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}
