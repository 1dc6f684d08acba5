//! Who is calling, as the limits see it.
//!
//! - The address is the socket peer, or what trusted proxies say in
//!   `X-Forwarded-For` (read right to left: the first address that is not
//!   a trusted proxy is the client; entries further left are the client's
//!   own claims). A trusted proxy that wrote `unknown` did not know its
//!   peer, so whatever stands left of it may be the client's own claim: the
//!   walk ends there, at that proxy. IPv4-mapped IPv6 addresses
//!   (`::ffff:192.0.2.1`, what a dual-stack listener on `[::]` reports)
//!   count as the IPv4 address.
//! - Limits key on the client's *bucket*: the IPv4 address, or the IPv6
//!   network of the configured prefix (/64 by default: one ordinary host or
//!   home connection), so rotating addresses inside one's own /64 buys
//!   nothing.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// The default IPv6 bucket: the /64 a host or home connection gets.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The caller: its address (for the audit trail and the session list), its
/// bucket (for limits) and its user agent (for the session list).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Client {
    pub addr: IpAddr,
    pub bucket: IpNet,
    /// `User-Agent`, without control characters and at most
    /// [`USER_AGENT_MAX`] characters; `None` when absent or blank.
    pub user_agent: Option<String>,
    /// Built by [`Client::new`] only, so the bucket always fits the address.
    _checked: super::Checked,
}

/// A longer user agent is cut here: it is shown, never parsed.
pub const USER_AGENT_MAX: usize = 256;

impl Client {
    pub fn new(addr: IpAddr, ipv6_prefix: u8) -> Self {
        let addr = addr.to_canonical();
        Self {
            addr,
            bucket: bucket(addr, ipv6_prefix),
            user_agent: None,
            _checked: super::Checked(()),
        }
    }

    /// The same client, with the `User-Agent` it sent.
    pub fn with_user_agent(mut self, raw: Option<&str>) -> Self {
        self.user_agent = raw.and_then(clean_user_agent);
        self
    }
}

fn clean_user_agent(raw: &str) -> Option<String> {
    let cleaned: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(USER_AGENT_MAX)
        .collect();
    let trimmed = cleaned.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// The network an address is limited as: IPv4 /32, IPv6 /`ipv6_prefix`.
pub fn bucket(addr: IpAddr, ipv6_prefix: u8) -> IpNet {
    match addr.to_canonical() {
        IpAddr::V4(v4) => IpNet::from(IpAddr::V4(v4)),
        IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), ipv6_prefix.min(128))
            .map(|net| net.trunc())
            .unwrap_or_else(|_| IpNet::from(IpAddr::V6(v6))),
    }
}

/// One entry of `X-Forwarded-For`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Addr(IpAddr),
    /// Not an address: `unknown` (a proxy that did not know its peer), an
    /// RFC 7239 obfuscated `_name`, or garbage.
    Unusable,
}

/// `198.51.100.7`, `198.51.100.7:1234`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:443`; anything else is unusable.
fn parse_hop(hop: &str) -> Hop {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Hop::Addr(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Hop::Unusable;
        };
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok());
        return match (inside.parse::<IpAddr>(), port_ok) {
            (Ok(ip), true) => Hop::Addr(ip),
            _ => Hop::Unusable,
        };
    }
    match hop.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host
            .parse::<Ipv4Addr>()
            .map_or(Hop::Unusable, |v4| Hop::Addr(IpAddr::V4(v4))),
        _ => Hop::Unusable,
    }
}

/// The client's address. `forwarded` are the `X-Forwarded-For` header
/// values in the order received; they are believed only from trusted
/// proxies. An entry that is no address (`unknown`, garbage) ends the walk
/// at the last address believed.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for value in forwarded.rev() {
        for hop in value.rsplit(',') {
            match parse_hop(hop) {
                Hop::Unusable => return client,
                Hop::Addr(ip) => {
                    client = ip.to_canonical();
                    if !is_trusted(&client) {
                        return client;
                    }
                }
            }
        }
    }
    client
}

/// One `AUTHQL_TRUSTED_PROXIES` entry: a CIDR range or a bare address, with
/// surrounding spaces; IPv4-mapped forms mean the IPv4 range.
pub fn parse_trusted_proxy(value: &str) -> Result<IpNet, String> {
    let value = value.trim();
    let net = match value.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => value.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            format!(
                "{value:?} is neither an address nor a CIDR range (e.g. 10.0.0.5 or 10.0.0.0/8)"
            )
        })?,
    };
    Ok(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        net => net,
    }
    .trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| parse_trusted_proxy(s).expect("proxy"))
            .collect()
    }

    #[test]
    fn user_agents_are_cleaned_and_cut() {
        let client = |ua: &str| Client::new(ip("192.0.2.1"), 64).with_user_agent(Some(ua));
        assert_eq!(
            client(" Mozilla/5.0\u{7}\n ").user_agent.as_deref(),
            Some("Mozilla/5.0")
        );
        assert_eq!(client("   ").user_agent, None);
        let long = "ж".repeat(1000);
        assert_eq!(
            client(&long).user_agent.map(|ua| ua.chars().count()),
            Some(USER_AGENT_MAX)
        );
    }

    #[test]
    fn ipv6_addresses_of_one_prefix_share_a_bucket() {
        let a = Client::new(ip("2001:db8:1:2:aaaa::1"), 64);
        let b = Client::new(ip("2001:db8:1:2:ffff::9"), 64);
        let other = Client::new(ip("2001:db8:1:3::1"), 64);
        assert_eq!(a.bucket, b.bucket);
        assert_ne!(a.bucket, other.bucket);
        assert_eq!(a.bucket.to_string(), "2001:db8:1:2::/64");
        assert_ne!(a.addr, b.addr, "the audit trail keeps the address");
        assert_eq!(
            Client::new(ip("2001:db8::1"), 128).bucket.to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(
            Client::new(ip("198.51.100.7"), 64).bucket.to_string(),
            "198.51.100.7/32"
        );
    }

    #[test]
    fn ipv4_mapped_peers_are_ipv4() {
        let mapped = Client::new(ip("::ffff:198.51.100.7"), 64);
        assert_eq!(mapped.addr, ip("198.51.100.7"));
        assert_eq!(mapped.bucket.to_string(), "198.51.100.7/32");
        // A dual-stack listener: the proxy 127.0.0.1 arrives as ::ffff:127.0.0.1.
        let trusted = nets(&["127.0.0.1/32"]);
        assert_eq!(
            client_address(
                ip("::ffff:127.0.0.1"),
                ["203.0.113.5"].into_iter(),
                &trusted
            ),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn forwarded_entries_with_ports_brackets_and_unknown() {
        let trusted = nets(&["10.0.0.0/8"]);
        let proxy = ip("10.0.0.5");
        let from = |h: &str| client_address(proxy, [h].into_iter(), &trusted);
        assert_eq!(from("198.51.100.7:1234"), ip("198.51.100.7"));
        assert_eq!(from("[2001:db8::1]:443"), ip("2001:db8::1"));
        assert_eq!(from("[2001:db8::1]"), ip("2001:db8::1"));
        assert_eq!(from("2001:db8::1"), ip("2001:db8::1"));
        // The proxy did not know its peer: the entry left of `unknown` may
        // be the client's own claim, so the proxy is the client.
        assert_eq!(from("198.51.100.7, unknown"), proxy);
        assert_eq!(from("unknown"), proxy);
        assert_eq!(from("unknown, 198.51.100.7"), ip("198.51.100.7"));
        assert_eq!(from("not-an-ip"), proxy);
        assert_eq!(from("[2001:db8::1]:99999"), proxy);
        // Untrusted peers' headers are ignored; the left part is the client's claim.
        assert_eq!(
            client_address(ip("203.0.113.9"), ["198.51.100.7"].into_iter(), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(from("1.2.3.4, 198.51.100.7"), ip("198.51.100.7"));
        assert_eq!(
            client_address(proxy, ["198.51.100.7"].into_iter(), &[]),
            proxy,
            "no proxies trusted by default"
        );
        // Several header lines are one list, in order.
        assert_eq!(
            client_address(
                proxy,
                ["1.2.3.4", "10.0.0.7, 198.51.100.8"].into_iter(),
                &trusted
            ),
            ip("198.51.100.8")
        );
        assert_eq!(
            client_address(proxy, ["1.2.3.4", "10.0.0.7"].into_iter(), &trusted),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn trusted_proxies_accept_bare_addresses_and_spaces() {
        assert_eq!(nets(&[" 10.0.0.5"]), nets(&["10.0.0.5/32"]));
        assert_eq!(nets(&["2001:db8::1"])[0].to_string(), "2001:db8::1/128");
        assert_eq!(nets(&["::ffff:10.0.0.0/104"])[0].to_string(), "10.0.0.0/8");
        assert_eq!(nets(&["10.1.2.3/8"])[0].to_string(), "10.0.0.0/8");
        assert!(parse_trusted_proxy("10.0.0.5:80").is_err());
        assert!(parse_trusted_proxy("proxy.internal").is_err());
    }
}
