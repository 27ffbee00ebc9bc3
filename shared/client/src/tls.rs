//! TLS for the control-plane client: the system's root certificates, loaded off the start path.
//!
//! reqwest's own rustls set-up reads and parses every root certificate of the system while the
//! client is built (on Debian, the bundle and then each file of `/etc/ssl/certs` again): about
//! 6 ms of a 20 ms start-up budget (issue 8's cold start), spent before `hands serve` can even
//! listen, and wasted when the base URL is plain `http://` (devplane, tests). Here the verifier
//! is the same WebPKI verifier over the same system roots, built once: in a background thread
//! started with a client whose base URL is `https://`, else at the first handshake (a plain
//! `http://` control plane never makes one, and its start does not pay for the load in CPU
//! that the host probe's trial run needs). A handshake waits for the load only if it is not
//! done yet.
//!
//! Roots come from `rustls-native-certs` (which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`, so
//! an operator behind a TLS-inspecting proxy points them at its CA). A system with no usable
//! root at all (a scratch container image without `ca-certificates`) falls back to the Mozilla
//! roots compiled in (`webpki-roots`), with a warning, rather than failing every call.

use std::fmt;
use std::sync::{Arc, Once, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A WebPKI verifier over the system roots, built on first need (or earlier, by the warm-up
/// thread).
pub(crate) struct LazyRootsVerifier {
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Result<Arc<WebPkiServerVerifier>, rustls::Error>>,
    warming: Once,
}

impl fmt::Debug for LazyRootsVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyRootsVerifier")
            .field("loaded", &self.verifier.get().is_some())
            .finish()
    }
}

impl LazyRootsVerifier {
    /// A verifier whose roots load at the first handshake, or earlier once warmed up.
    pub(crate) fn new(provider: Arc<CryptoProvider>) -> Arc<Self> {
        Arc::new(LazyRootsVerifier {
            provider,
            verifier: OnceLock::new(),
            warming: Once::new(),
        })
    }

    /// Starts loading the roots now, in a thread of their own (once).
    pub(crate) fn warm_up(self: &Arc<Self>) {
        self.warming.call_once(|| {
            let warm = Arc::clone(self);
            // If the thread cannot start, the first handshake loads the roots itself.
            let _ = std::thread::Builder::new()
                .name("tls-roots".into())
                .spawn(move || {
                    warm.inner().ok();
                });
        });
    }

    fn inner(&self) -> Result<&Arc<WebPkiServerVerifier>, rustls::Error> {
        self.verifier
            .get_or_init(|| build_verifier(system_roots(), &self.provider))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }
}

/// The system's roots, or the compiled-in Mozilla roots when the system has none.
fn system_roots() -> RootCertStore {
    roots_from(rustls_native_certs::load_native_certs())
}

fn roots_from(loaded: rustls_native_certs::CertificateResult) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    if ignored > 0 {
        tracing::warn!(ignored, "some system root certificates could not be parsed");
    }
    for error in &loaded.errors {
        tracing::warn!(%error, "reading system root certificates");
    }
    if added == 0 {
        tracing::warn!(
            "no system root certificates found (install ca-certificates, or set SSL_CERT_FILE); \
             using the Mozilla roots built into hands"
        );
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots
}

fn build_verifier(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| rustls::Error::General(format!("building the certificate verifier: {e}")))
}

impl ServerCertVerifier for LazyRootsVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    // Signatures need no roots: checked with the provider's algorithms, as WebPKI does.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}

/// The process's one verifier: every client built in the process (one per worker, more in
/// tests and in the Lambda functions' re-used environments) shares the roots loaded once.
static VERIFIER: OnceLock<(Arc<CryptoProvider>, Arc<LazyRootsVerifier>)> = OnceLock::new();

/// The rustls configuration the client uses: the provider's safe defaults, the lazily loaded
/// system roots, and ALPN offering HTTP/2 then HTTP/1.1 (what reqwest offers when it builds the
/// configuration itself). With `warm_up` (a client that will make handshakes) the roots start
/// loading now.
pub(crate) fn client_config(warm_up: bool) -> Result<rustls::ClientConfig, rustls::Error> {
    let (provider, verifier) = VERIFIER.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = LazyRootsVerifier::new(Arc::clone(&provider));
        (provider, verifier)
    });
    if warm_up {
        verifier.warm_up();
    }
    let (provider, verifier) = (Arc::clone(provider), Arc::clone(verifier));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_roots_load_and_a_verifier_builds_from_them() {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let lazy = LazyRootsVerifier::new(provider);
        lazy.warm_up();
        assert!(lazy.inner().is_ok());
        assert!(!lazy.supported_verify_schemes().is_empty());
    }

    #[test]
    fn roots_load_ahead_of_a_handshake_only_once_warmed_up() {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let lazy = LazyRootsVerifier::new(provider);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(lazy.verifier.get().is_none(), "loaded without a warm-up");
        lazy.warm_up();
        lazy.warm_up();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while lazy.verifier.get().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the warm-up never loaded the roots"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(lazy.inner().is_ok());
    }

    #[test]
    fn an_empty_system_store_falls_back_to_the_built_in_roots() {
        let roots = roots_from(rustls_native_certs::CertificateResult::default());
        assert_eq!(roots.len(), webpki_roots::TLS_SERVER_ROOTS.len());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        assert!(build_verifier(roots, &provider).is_ok());
    }

    #[test]
    fn system_roots_are_used_alone_when_there_are_some() {
        let mut params = rcgen::CertificateParams::new(vec!["ca.test".to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        let mut loaded = rustls_native_certs::CertificateResult::default();
        loaded.certs.push(ca.der().clone());
        assert_eq!(roots_from(loaded).len(), 1);
    }
}
