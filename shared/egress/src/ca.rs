//! The per-worker certificate authority that lets the proxy read the requests it must sign.
//!
//! Generated in memory at start; its key never leaves this process (never written, never in a
//! bundle). Tool code trusts it through a bundle file holding the system roots plus this CA's
//! certificate only. Leaf certificates are minted per host on first use and cached.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::tls::provider;

/// How long the CA and its leaves are valid: a worker that runs longer restarts its CA with
/// its process; a day of slack covers clock skew between the worker and the sandbox.
const VALIDITY: Duration = Duration::days(397);

/// Leaves kept before the cache starts over.
const MAX_CACHED_LEAVES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot generate the egress CA: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot build the TLS server for {host}: {error}")]
    Tls { host: String, error: rustls::Error },
}

pub struct WorkerCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    leaves: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

impl WorkerCa {
    pub fn generate() -> Result<WorkerCa, CaError> {
        let mut params = CertificateParams::new(Vec::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "hands egress proxy (per-worker CA)");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "hands");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + VALIDITY;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let cert_der = cert.der().clone();
        let cert_pem = cert.pem();
        Ok(WorkerCa {
            issuer: Issuer::new(params, key),
            cert_der,
            cert_pem,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate (public), PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A TLS server configuration presenting a certificate for `host`, minted once per host.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, CaError> {
        if let Some(cfg) = self.leaves.lock().ok().and_then(|m| m.get(host).cloned()) {
            return Ok(cfg);
        }
        let mut params = CertificateParams::new(vec![host.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + VALIDITY;
        let key = KeyPair::generate()?;
        let leaf = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let tls_err = |error| CaError::Tls {
            host: host.to_string(),
            error,
        };
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), self.cert_der.clone()], key_der)
            .map_err(tls_err)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        if let Ok(mut m) = self.leaves.lock() {
            // Refused hosts get leaves too (the refusal is answered over TLS): a session naming
            // endless hosts must not grow this without bound. Minting again is cheap.
            if m.len() >= MAX_CACHED_LEAVES {
                m.clear();
            }
            m.insert(host.to_string(), cfg.clone());
        }
        Ok(cfg)
    }

    /// Writes `dir/ca-bundle.pem` (`dir` exists and is the proxy's own): the system's trusted
    /// roots plus this CA's certificate (never its key), readable by tool code. Returns the path
    /// and how many system roots it holds.
    pub fn write_bundle(&self, dir: &Path) -> io::Result<(PathBuf, usize)> {
        let native = rustls_native_certs::load_native_certs();
        let mut text = String::new();
        for der in &native.certs {
            text.push_str(&pem_certificate(der));
        }
        text.push_str("# hands egress proxy: per-worker CA\n");
        text.push_str(&self.cert_pem);
        let path = dir.join("ca-bundle.pem");
        let tmp = dir.join(".ca-bundle.pem.tmp");
        std::fs::write(&tmp, text)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        }
        std::fs::rename(&tmp, &path)?;
        Ok((path, native.certs.len()))
    }
}

fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + 80);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
