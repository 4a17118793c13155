//! Which destinations outbound HTTP may reach: https only (unless a host is listed for
//! development), and never loopback, private, link-local or metadata addresses unless allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The checks every outbound request passes, by URL and again by resolved address.
#[derive(Debug, Clone, Default)]
pub struct DestinationPolicy {
    /// Hosts that may be reached over plain http (development and tests only).
    pub insecure_http_hosts: Vec<String>,
    /// Addresses allowed although they are loopback/private/link-local.
    pub allowed: Vec<IpNet>,
}

impl DestinationPolicy {
    /// The policy of `[http]` (entries were parsed at load).
    pub fn from_config(config: &crate::config::HttpConfig) -> DestinationPolicy {
        DestinationPolicy {
            insecure_http_hosts: config.insecure_http_hosts.clone(),
            allowed: config.allow_addresses.iter().map(|n| n.0).collect(),
        }
    }
}

/// Why an address is refused, in words for the error message.
pub fn restricted_kind(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(a) => restricted_v4(a),
        IpAddr::V6(a) => restricted_v6(a),
    }
}

fn restricted_v4(a: Ipv4Addr) -> Option<&'static str> {
    let [first, second, ..] = a.octets();
    if a == Ipv4Addr::new(169, 254, 169, 254) {
        Some("the cloud metadata address")
    } else if a.is_loopback() {
        Some("a loopback address")
    } else if a.is_private() {
        Some("a private address")
    } else if a.is_link_local() {
        Some("a link-local address")
    } else if first == 100 && (64..128).contains(&second) {
        Some("a shared (carrier-grade NAT) address")
    } else if a.is_unspecified()
        || first == 0
        || a.is_broadcast()
        || a.is_multicast()
        || first >= 240
    {
        Some("a reserved address")
    } else {
        None
    }
}

fn restricted_v6(a: Ipv6Addr) -> Option<&'static str> {
    let first = a.segments()[0];
    if a.is_loopback() {
        Some("a loopback address")
    } else if a.is_unspecified() || a.is_multicast() {
        Some("a reserved address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a private (unique local) address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else {
        None
    }
}

impl DestinationPolicy {
    /// `Err(kind)` when the address may not be reached.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), &'static str> {
        match restricted_kind(ip) {
            Some(_) if self.allowed.iter().any(|net| net.contains(&ip)) => Ok(()),
            Some(kind) => Err(kind),
            None => Ok(()),
        }
    }

    pub fn allows_plain_http(&self, host: &str) -> bool {
        self.insecure_http_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_ranges() {
        for (ip, kind) in [
            ("127.0.0.1", "a loopback address"),
            ("10.1.2.3", "a private address"),
            ("172.16.0.1", "a private address"),
            ("192.168.1.1", "a private address"),
            ("169.254.169.254", "the cloud metadata address"),
            ("169.254.1.1", "a link-local address"),
            ("100.64.0.1", "a shared (carrier-grade NAT) address"),
            ("0.0.0.0", "a reserved address"),
            ("::1", "a loopback address"),
            ("::ffff:127.0.0.1", "a loopback address"),
            ("fd00:ec2::254", "a private (unique local) address"),
            ("fe80::1", "a link-local address"),
        ] {
            assert_eq!(restricted_kind(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        assert_eq!(restricted_kind("93.184.216.34".parse().unwrap()), None);
        assert_eq!(restricted_kind("2606:2800:220:1::1".parse().unwrap()), None);
    }

    #[test]
    fn allowed_ranges_open_exceptions() {
        let policy = DestinationPolicy {
            allowed: vec![crate::config::Network::parse("127.0.0.1").unwrap().0],
            ..Default::default()
        };
        assert!(policy.check_address("127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check_address("127.0.0.2".parse().unwrap()).is_err());
        assert!(crate::config::Network::parse("not-an-ip").is_err());
    }
}
