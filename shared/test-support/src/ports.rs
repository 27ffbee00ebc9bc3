//! Loopback ports for a child process to bind.

use std::sync::atomic::{AtomicU32, Ordering};

/// A loopback port that is free now, for a child process (devplane, `hands serve`, a TLS
/// server) to bind a moment later.
///
/// Not from the ephemeral range, where `bind` to port 0 takes one: any outgoing connection on
/// the machine can take such a port as its source port before the child binds it, which once
/// left devplane unable to start. Ports are handed out once per process, from a start that
/// differs between processes, so parallel test binaries rarely try the same one.
///
/// # Panics
/// When every port between 10000 and the ephemeral range was handed out or is taken.
pub fn child_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = u32::from(ephemeral_start());
    // Below the ephemeral range, above the well-known and common service ports.
    let (start, span) = (10_000u32, low.saturating_sub(10_000).max(1000));
    let offset = std::process::id() * 7919 % span;
    loop {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(k < span, "no free port below the ephemeral range");
        // `start + span` is at most the ephemeral range's start, a port number.
        let Ok(port) = u16::try_from(start + (offset + k) % span) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The first port of the kernel's ephemeral range (Linux's default where it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_handed_out_twice() {
        let low = ephemeral_start();
        let ports: Vec<u16> = (0..50).map(|_| child_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        assert!(
            ports.iter().all(|&p| (10_000..low).contains(&p)),
            "{ports:?}"
        );
    }
}
