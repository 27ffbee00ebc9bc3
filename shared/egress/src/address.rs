//! Which resolved addresses the proxy refuses: the SSRF guard.
//!
//! The check runs on the address the proxy is about to connect to (after resolution), and the
//! proxy then connects to exactly that address, so a name that resolves differently the second
//! time (DNS rebinding) gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::policy::{HostPattern, Rule};

/// What kind of destination an address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    /// Private, loopback, link-local, shared or reserved: reachable only through a rule with
    /// `private = true` (or an IP-literal host).
    Internal(&'static str),
    /// A cloud metadata or platform endpoint: reachable only through a rule whose host is
    /// this very IP address.
    Metadata,
}

/// Cloud instance-metadata and platform endpoints (AWS IMDS v4/v6, ECS task metadata, AWS
/// DNS, Alibaba, Azure wire server, GCP and others use 169.254.169.254 too).
const METADATA: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 253)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 123)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0023)),
];

/// Whether `rule` lets a request reach `ip`: public always; internal only with `private`;
/// metadata only when the rule's host is that very address. The error describes the address.
pub fn rule_permits(rule: &Rule, ip: IpAddr) -> Result<(), &'static str> {
    match classify(ip) {
        AddressClass::Public => Ok(()),
        AddressClass::Internal(_) if rule.private => Ok(()),
        AddressClass::Internal(class) => Err(class),
        AddressClass::Metadata if rule.host == HostPattern::Ip(ip) => Ok(()),
        AddressClass::Metadata => Err("a cloud metadata address"),
    }
}

pub fn classify(ip: IpAddr) -> AddressClass {
    // IPv4 carried inside IPv6 (mapped, compatible, NAT64) is judged as the IPv4 it reaches.
    let ip = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if METADATA.contains(&ip) {
        return AddressClass::Metadata;
    }
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let o = ip.octets();
    let internal = match o {
        [0, ..] => Some("a \"this network\" address"),
        [10, ..] => Some("a private address"),
        [100, b, ..] if (64..128).contains(&b) => Some("a shared (carrier-grade NAT) address"),
        [127, ..] => Some("a loopback address"),
        [169, 254, ..] => Some("a link-local address"),
        [172, b, ..] if (16..32).contains(&b) => Some("a private address"),
        [192, 0, 0, _] => Some("a reserved address"),
        [192, 168, ..] => Some("a private address"),
        [198, b, ..] if b == 18 || b == 19 => Some("a reserved address"),
        [a, ..] if a >= 224 => Some("a multicast or reserved address"),
        _ => None,
    };
    internal.map_or(AddressClass::Public, AddressClass::Internal)
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let s = ip.segments();
    let internal = if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if s[0] & 0xfe00 == 0xfc00 {
        Some("a private (unique local) address")
    } else if s[0] & 0xffc0 == 0xfe80 || s[0] & 0xffc0 == 0xfec0 {
        Some("a link-local address")
    } else if s[0] & 0xff00 == 0xff00 {
        Some("a multicast address")
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Some("a documentation address")
    } else {
        None
    };
    internal.map_or(AddressClass::Public, AddressClass::Internal)
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    // ::a.b.c.d (deprecated "compatible" form), but not :: and ::1
    if s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1) {
        return Some(tail());
    }
    // 64:ff9b::/96 (NAT64)
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return Some(tail());
    }
    // 2002::/16 (6to4): the IPv4 is in segments 1 and 2
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn c(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn metadata_in_every_spelling() {
        for a in [
            "169.254.169.254",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "169.254.170.2",
        ] {
            assert_eq!(c(a), AddressClass::Metadata, "{a}");
        }
    }

    #[test]
    fn internal_and_public() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.0.1",
            "192.168.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "2002:7f00:1::",
            "169.254.1.1",
        ] {
            assert!(matches!(c(a), AddressClass::Internal(_)), "{a}");
        }
        for a in [
            "1.1.1.1",
            "140.82.112.3",
            "172.32.0.1",
            "2606:4700::1111",
            "100.128.0.1",
        ] {
            assert_eq!(c(a), AddressClass::Public, "{a}");
        }
    }
}
