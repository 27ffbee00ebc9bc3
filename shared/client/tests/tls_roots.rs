//! The control-plane client over real TLS: it trusts the roots the system names (here
//! `SSL_CERT_FILE`, set before the first client is built, which is why this file holds one
//! test) and refuses a server whose certificate chains to anything else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use hands_client::{ClientConfig, ControlPlane, Credential};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A CA and a `localhost` certificate it signed.
fn chain(ca_name: &str) -> (rcgen::Certificate, rustls::ServerConfig) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    (ca, server)
}

/// Serves one HTTPS connection answering every request with an empty stats body; returns the
/// port.
async fn https_server(config: rustls::ServerConfig) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0_u8; 8192];
                let _ = tls.read(&mut buf).await;
                let body = r#"{"depth":3,"pending":0,"oldest_queued_at":null,"workers_polling":1}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn trusts_the_system_roots_and_nothing_else() {
    let (ca, trusted_server) = chain("hands test root");
    let (_, untrusted_server) = chain("somebody else's root");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("roots.pem");
    std::fs::write(&bundle, ca.pem()).unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    // SAFETY: the only test of this binary, before any client (and its root-loading thread)
    // exists; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("SSL_CERT_FILE", &bundle);
        std::env::set_var("SSL_CERT_DIR", &empty);
    }
    let credential = Credential::environment_key("sk-test".to_owned());

    let port = https_server(trusted_server).await;
    let cp = ControlPlane::new(ClientConfig::with_base_url(format!(
        "https://localhost:{port}"
    )))
    .unwrap();
    let stats = cp.stats(&credential, "env_1").await;
    assert!(stats.is_ok(), "trusted server refused: {stats:?}");

    let port = https_server(untrusted_server).await;
    let cp = ControlPlane::new(ClientConfig::with_base_url(format!(
        "https://localhost:{port}"
    )))
    .unwrap();
    let err = cp.stats(&credential, "env_1").await.unwrap_err();
    let text = format!("{err:?}");
    assert!(
        text.contains("UnknownIssuer"),
        "untrusted server accepted or failed for another reason: {text}"
    );
}
