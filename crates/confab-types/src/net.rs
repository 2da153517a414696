//! IP networks (`10.0.0.0/8`, `::1`) as written in the configuration, and whether an
//! address falls in one: who may set `X-Forwarded-*` headers.

use std::net::IpAddr;
use std::str::FromStr;

/// An IP network: an address and a prefix length. A bare address is a network of one
/// (`/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// The address with its host bits cleared.
    network: IpAddr,
    /// The prefix length, at most 32 (IPv4) or 128 (IPv6).
    prefix: u8,
}

/// Why a network did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpNetError {
    /// The part before the `/` is not an IP address.
    #[error("{0:?} is not an IP address or network (like 10.0.0.0/8 or ::1)")]
    Address(String),
    /// The prefix length is not a number or longer than the address.
    #[error("{0:?}: the prefix length must be 0-32 for IPv4, 0-128 for IPv6")]
    Prefix(String),
}

impl IpNet {
    /// The network of `addr` with `prefix` bits; `None` if the prefix is too long.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        let bits = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        (prefix <= bits).then(|| IpNet { network: mask(addr, prefix), prefix })
    }

    /// Whether `addr` is in this network. An IPv4 address mapped into IPv6
    /// (`::ffff:10.1.2.3`, as a dual-stack listener reports IPv4 peers) matches the IPv4
    /// networks it belongs to.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let unmapped = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.holds(addr) || unmapped.is_some_and(|v4| self.holds(v4))
    }

    /// Whether `addr`, of the same family, is in this network.
    fn holds(&self, addr: IpAddr) -> bool {
        match (self.network, addr) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(addr, self.prefix) == self.network
            }
            _ => false,
        }
    }
}

/// `addr` with all but the first `prefix` bits cleared (`prefix` within the length).
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & keep).into())
        }
        IpAddr::V6(a) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & keep).into())
        }
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    /// Parses `ADDRESS` or `ADDRESS/PREFIX`, IPv4 or IPv6.
    fn from_str(s: &str) -> Result<IpNet, IpNetError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| IpNetError::Address(s.to_owned()))?;
        let prefix = match prefix {
            None if addr.is_ipv4() => 32,
            None => 128,
            // Digits only: u8's parser would take "+8".
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| IpNetError::Prefix(s.to_owned()))?
            }
            Some(_) => return Err(IpNetError::Prefix(s.to_owned())),
        };
        IpNet::new(addr, prefix).ok_or_else(|| IpNetError::Prefix(s.to_owned()))
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn ipv4_networks_and_single_addresses() {
        let private = net("10.0.0.0/8");
        assert!(private.contains(ip("10.0.0.1")));
        assert!(private.contains(ip("10.255.255.255")));
        assert!(!private.contains(ip("11.0.0.1")));
        assert!(!private.contains(ip("9.255.255.255")));
        let one = net("127.0.0.1");
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));
        // Host bits in the written network are ignored.
        assert_eq!(net("192.168.1.77/24"), net("192.168.1.0/24"));
        assert!(net("192.168.1.77/24").contains(ip("192.168.1.200")));
        let all = net("0.0.0.0/0");
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("2001:db8::1")), "an IPv4 network holds no IPv6 address");
    }

    #[test]
    fn ipv6_networks_and_mapped_ipv4() {
        assert!(net("::1").contains(ip("::1")));
        assert!(!net("::1").contains(ip("::2")));
        let doc = net("2001:db8::/32");
        assert!(doc.contains(ip("2001:db8:ffff::1")));
        assert!(!doc.contains(ip("2001:db9::1")));
        assert!(!doc.contains(ip("10.0.0.1")));
        assert!(net("::/0").contains(ip("fe80::1")));
        // A dual-stack listener reports IPv4 peers as mapped addresses.
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(!net("10.0.0.0/8").contains(ip("::ffff:11.1.2.3")));
        // Written as IPv6, a mapped network holds the mapped addresses.
        assert!(net("::ffff:10.0.0.0/104").contains(ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn bad_networks_are_errors() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::1/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "host",
            "10.0.0.0/x",
            "10.0.0.0/256",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?} parsed");
        }
        assert!(matches!("10.0.0.0/33".parse::<IpNet>(), Err(IpNetError::Prefix(_))));
        assert!(matches!("nope/8".parse::<IpNet>(), Err(IpNetError::Address(_))));
    }
}
