//! Which addresses a farm runner may download artifacts from: a pure decision on one IP address.
//!
//! A job's URL is chosen by whoever may submit jobs, and the runner fetches it from inside the
//! farm's network: without this, `http://127.0.0.1:8080/metrics`, the cloud metadata service at
//! 169.254.169.254 or any cluster-internal service would be readable through the guest's console.
//! So in the farm only public unicast addresses are fetched from, checked after DNS resolution
//! and again for every redirect; `--allow-artifact-net CIDR` lets an on-premises mirror (or a
//! test's loopback server) through.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};

/// Address ranges that are never fetched from unless explicitly allowed, with why.
const DENIED: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this\" network"),
    ("10.0.0.0/8", "private"),
    (
        "100.64.0.0/10",
        "shared (carrier-grade NAT, often cluster-internal)",
    ),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation"),
    ("100::/64", "discard-only"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
];

/// The farm's address policy: the built-in denials, extra denied ranges (the cluster's service
/// and pod ranges when they are public), and explicit exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address {addr} is {why}; artifacts are fetched only from public addresses (allow a range with --allow-artifact-net)")]
pub struct Refused {
    pub addr: IpAddr,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a CIDR range (e.g. 192.0.2.0/24 or fd00::/8)")]
pub struct BadCidr(pub String);

/// Parses `a.b.c.d/n`, `x::/n`, or a bare address (a single host).
pub fn parse_cidr(s: &str) -> Result<IpNet, BadCidr> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| BadCidr(s.to_string()))
}

impl NetPolicy {
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        NetPolicy { allow, deny }
    }

    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// Ok when a runner in the farm may connect to `addr`.
    pub fn check(&self, addr: IpAddr) -> Result<(), Refused> {
        // An IPv4 address in IPv6 clothing is judged as the IPv4 address it reaches.
        let addr = canonical(addr);
        if self.allow.iter().any(|n| n.contains(&addr)) {
            return Ok(());
        }
        if let Some(n) = self.deny.iter().find(|n| n.contains(&addr)) {
            return Err(Refused {
                addr,
                why: format!("in the denied range {n}"),
            });
        }
        for (net, why) in DENIED {
            // The table is written by us; a bad entry is a bug the tests catch.
            if let Ok(n) = net.parse::<IpNet>() {
                if n.contains(&addr) {
                    return Err(Refused {
                        addr,
                        why: format!("{why} ({n})"),
                    });
                }
            }
        }
        // NAT64: the well-known prefix embeds the IPv4 destination in the last 32 bits.
        if let IpAddr::V6(v6) = addr {
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let v4 = Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    (s[6] & 0xff) as u8,
                    (s[7] >> 8) as u8,
                    (s[7] & 0xff) as u8,
                );
                return self.check(IpAddr::V4(v4));
            }
        }
        Ok(())
    }
}

/// `::ffff:a.b.c.d` (mapped) and `::a.b.c.d` (compatible, deprecated) are IPv4 addresses.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
                return IpAddr::V4(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    (s[6] & 0xff) as u8,
                    (s[7] >> 8) as u8,
                    (s[7] & 0xff) as u8,
                ));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_built_in_table_parses() {
        for (net, _) in DENIED {
            assert!(net.parse::<IpNet>().is_ok(), "{net}");
        }
    }

    #[test]
    fn internal_addresses_are_refused() {
        let p = NetPolicy::default();
        for a in [
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.1",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.2.3",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "ff02::1",
        ] {
            assert!(p.check(ip(a)).is_err(), "{a} must be refused");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let p = NetPolicy::default();
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "151.101.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(p.check(ip(a)).is_ok(), "{a} must be allowed");
        }
    }

    #[test]
    fn exceptions_and_extra_denials_apply() {
        let p = NetPolicy::new(
            vec![
                parse_cidr("127.0.0.1").unwrap(),
                parse_cidr("fd00::/8").unwrap(),
            ],
            vec![parse_cidr("203.0.0.0/16").unwrap()],
        );
        assert!(p.check(ip("127.0.0.1")).is_ok());
        assert!(p.check(ip("::ffff:127.0.0.1")).is_ok());
        assert!(p.check(ip("127.0.0.2")).is_err());
        assert!(p.check(ip("fd12::1")).is_ok());
        assert!(p.check(ip("203.0.9.9")).is_err());
        let msg = p.check(ip("169.254.169.254")).unwrap_err().to_string();
        assert!(msg.contains("link-local"), "{msg}");
        assert!(parse_cidr("nonsense").is_err());
        assert!(parse_cidr("10.0.0.0/33").is_err());
    }

    /// Decimal, octal and hex spellings of loopback all parse (as URL hosts do, by the WHATWG
    /// rules the runner's URL parser follows) to 127.0.0.1 and are refused.
    #[test]
    fn odd_spellings_of_an_ip_in_a_url_are_the_same_address() {
        let p = NetPolicy::default();
        for u in [
            "http://2130706433/x",
            "http://0177.0.0.1/x",
            "http://0x7f.0.0.1/x",
            "http://0x7f000001/x",
            "http://127.1/x",
            "http://017700000001/x",
            "http://[::ffff:7f00:1]/x",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/x",
            "http://169.254.43518/x",
        ] {
            let url = url::Url::parse(u).unwrap();
            let addr = match url.host() {
                Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
                Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
                other => panic!("{u}: not an IP host: {other:?}"),
            };
            assert!(p.check(addr).is_err(), "{u} ({addr}) must be refused");
        }
    }
}
