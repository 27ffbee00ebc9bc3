//! The direct path for ordinary calls: hyper-util's pooled client, without reqwest's layers.
//!
//! Every tool call ends in a result post, and reqwest puts a URL parse, a per-request timer,
//! a retry layer, a redirect layer and its proxy matcher around hyper-util's pooled client. On
//! the project's VM that cost ~35 µs of CPU per post (`hands-post-bench`: 104-112 µs through
//! reqwest against 69-74 µs through hyper-util's client, for the same request and the same work
//! on its answer), about a fifth of hands' own share of a round trip. Calls that read their answer
//! whole (`ControlPlane::send`) go this way; streams stay on reqwest.
//!
//! Same rules as reqwest's path: the same TLS set-up (system roots, HTTP/2 and HTTP/1.1 by
//! ALPN), `TCP_NODELAY`, the connect timeout, idle connections kept 60 s, no redirect followed
//! (the caller maps a 3xx to an error), one timeout over the whole exchange, body included, and
//! reqwest's default retry of a request the server refused unprocessed (see [`Lane::request`]).
//! hyper-util has no proxy support, so where the environment names a proxy (`HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY`, any case), which reqwest would use, there is no lane and every call
//! goes through reqwest as before.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::header::HeaderMap;

use crate::client::ClientConfig;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// hyper-util's pooled client with the control plane's default headers.
pub(crate) struct Lane {
    client: Client<Connector, Full<Bytes>>,
    /// Sent with every call (the beta, the API version, the user agent).
    pub headers: HeaderMap,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").finish_non_exhaustive()
    }
}

/// The proxy variables reqwest reads (it accepts either case).
const PROXY_VARS: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

impl Lane {
    /// The lane, or `None` where the environment names a proxy (reqwest's path then serves
    /// every call, through it).
    pub(crate) fn new(
        config: &ClientConfig,
        headers: HeaderMap,
        tls: rustls::ClientConfig,
    ) -> Option<Lane> {
        Self::new_unless(
            config,
            headers,
            tls,
            PROXY_VARS
                .iter()
                .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty())),
        )
    }

    fn new_unless(
        config: &ClientConfig,
        headers: HeaderMap,
        mut tls: rustls::ClientConfig,
        proxy: bool,
    ) -> Option<Lane> {
        if proxy {
            return None;
        }
        // The connector sets the protocols it speaks (h2, then http/1.1) itself.
        tls.alpn_protocols.clear();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .build(https);
        Some(Lane { client, headers })
    }

    /// Sends `request`, and sends it again (twice at most, at once) where the server refused it
    /// in a way that says it was not processed, as reqwest does by default: an HTTP/2 graceful
    /// shutdown (GOAWAY with NO_ERROR, a load balancer rotating its connections) or a stream it
    /// refused (REFUSED_STREAM, RFC 9113 §8.7). On HTTP/1.1 hyper-util itself retries a request
    /// that a reused connection's close cancelled before it was written.
    pub(crate) async fn request(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        let (parts, body) = request.into_parts();
        let again = || {
            let mut r = http::Request::new(body.clone());
            *r.method_mut() = parts.method.clone();
            *r.uri_mut() = parts.uri.clone();
            *r.headers_mut() = parts.headers.clone();
            r
        };
        let mut retries = 0;
        loop {
            match self.client.request(again()).await {
                Err(e) if retries < MAX_NACK_RETRIES && is_protocol_nack(&e) => retries += 1,
                answer => return answer,
            }
        }
    }
}

/// Retries of a request the server refused unprocessed (reqwest's default too).
const MAX_NACK_RETRIES: u32 = 2;

/// Whether the error says the server refused the request without processing it (see
/// [`Lane::request`]).
fn is_protocol_nack(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = error.source();
    while let Some(e) = cause {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            let graceful = h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR);
            let refused = h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            return h2.is_remote() && (graceful || refused);
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_remote_refusal_is_retried() {
        #[derive(Debug)]
        struct Wrap(Box<dyn std::error::Error + Send + Sync + 'static>);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&*self.0)
            }
        }
        // Our own side's refusal (an h2 error made here is local) and anything that is not
        // HTTP/2 are not the server's NACK.
        let local = Wrap(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        assert!(!is_protocol_nack(&local));
        let io = Wrap(Box::new(std::io::Error::other("connection reset")));
        assert!(!is_protocol_nack(&io));
    }

    #[test]
    fn a_proxy_in_the_environment_means_no_lane() {
        let tls = || crate::tls::client_config(false).unwrap();
        let config = ClientConfig::default();
        assert!(Lane::new_unless(&config, HeaderMap::new(), tls(), true).is_none());
        assert!(Lane::new_unless(&config, HeaderMap::new(), tls(), false).is_some());
    }
}
