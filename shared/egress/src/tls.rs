//! TLS plumbing: one crypto provider (aws-lc-rs, the one reqwest already links) and the client
//! configuration that re-originates intercepted requests, verifying the real server.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Which certificates the proxy trusts upstream.
#[derive(Debug, Clone, Default)]
pub enum UpstreamRoots {
    /// Mozilla's roots (webpki-roots), independent of what the host has installed.
    #[default]
    Webpki,
    /// Mozilla's roots plus an operator's PEM bundle (internal CAs).
    WebpkiAnd(PathBuf),
    /// Only the operator's PEM bundle.
    Only(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("cannot read the upstream CA bundle {path}: {message}")]
    Bundle { path: String, message: String },
    #[error("the upstream CA bundle {0} holds no certificate")]
    EmptyBundle(String),
    #[error("TLS client setup: {0}")]
    Tls(#[from] rustls::Error),
}

pub fn client_config(roots: &UpstreamRoots) -> Result<Arc<rustls::ClientConfig>, UpstreamTlsError> {
    let mut store = RootCertStore::empty();
    if !matches!(roots, UpstreamRoots::Only(_)) {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let UpstreamRoots::WebpkiAnd(path) | UpstreamRoots::Only(path) = roots {
        let shown = path.display().to_string();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| UpstreamTlsError::Bundle {
                path: shown.clone(),
                message: e.to_string(),
            })?
            .collect::<Result<_, _>>()
            .map_err(|e| UpstreamTlsError::Bundle {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(UpstreamTlsError::EmptyBundle(shown));
        }
        for c in certs {
            store.add(c).map_err(|e| UpstreamTlsError::Bundle {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
