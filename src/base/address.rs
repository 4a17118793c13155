//! Client addresses as per-address limits count them: an IPv4 address alone, an IPv6 address
//! by its network (a /64 by default: one subscriber usually holds a whole /64, so counting single
//! IPv6 addresses would let one client rotate through billions of them).

use std::net::{IpAddr, Ipv6Addr};

/// The address whose counters `ip` shares: IPv6 addresses are cut to their first
/// `ipv6_prefix_length` bits (1 to 128).
pub fn limit_bucket(ip: IpAddr, ipv6_prefix_length: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let bits = u32::from(ipv6_prefix_length.clamp(1, 128));
            let mask = u128::MAX << (128 - bits);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_share_their_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limit_bucket(a, 64), limit_bucket(b, 64));
        assert_ne!(limit_bucket(a, 64), limit_bucket(other, 64));
        assert_eq!(limit_bucket(a, 128), a);
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(limit_bucket(v4, 64), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(limit_bucket(mapped, 64), v4);
    }
}
