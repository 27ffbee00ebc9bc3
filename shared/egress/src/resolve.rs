//! Name resolution for the proxy, with fixed answers for names the operator pins (and tests).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};

/// Resolves destination names: IP literals as themselves, pinned names from the map, others
/// through the system resolver.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    pinned: HashMap<String, Vec<IpAddr>>,
}

impl Resolver {
    pub fn system() -> Resolver {
        Resolver::default()
    }

    /// Answers `host` with `addrs` without asking DNS (like curl's `--resolve`).
    pub fn pin(mut self, host: &str, addrs: Vec<IpAddr>) -> Resolver {
        self.pinned.insert(host.to_ascii_lowercase(), addrs);
        self
    }

    pub async fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if let Some(addrs) = self.pinned.get(host) {
            return Ok(addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        }
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}
