//! The direct path for ordinary calls: hyper-util's pooled client, without reqwest's layers.
//!
//! Every tool call ends in a result post, and reqwest puts a URL parse, a per-request timer,
//! a retry layer, a redirect layer and its proxy matcher around hyper-util's pooled client. On
//! the project's VM that cost ~35 µs of CPU per post (`hands-post-bench`: 104-112 µs through
//! reqwest against 69-74 µs through hyper-util's client, for the same request and the same work
//! on its answer), a sixth of hands' own share of a round trip. Calls that read their answer
//! whole (`ControlPlane::send`) go this way; streams stay on reqwest.
//!
//! Same rules as reqwest's path: the same TLS set-up (system roots, HTTP/2 and HTTP/1.1 by
//! ALPN), `TCP_NODELAY`, the connect timeout, idle connections kept 60 s, no redirect followed
//! (the caller maps a 3xx to an error), and one timeout over the whole exchange, body included.
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
    pub client: Client<Connector, Full<Bytes>>,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_in_the_environment_means_no_lane() {
        let tls = || crate::tls::client_config().unwrap();
        let config = ClientConfig::default();
        assert!(Lane::new_unless(&config, HeaderMap::new(), tls(), true).is_none());
        assert!(Lane::new_unless(&config, HeaderMap::new(), tls(), false).is_some());
    }
}
