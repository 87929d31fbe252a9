//! `TRUST_PROXY`: the reverse proxies whose `X-Forwarded-For` is believed.
//! Only a connection from one of them has its client address taken from
//! the header (and is exempt from the per-address connection cap, since
//! every client behind it shares its address); anyone else's header is
//! ignored. `1` means loopback (127.0.0.0/8 and ::1), the proxy on the
//! same machine; otherwise a comma-separated list of addresses or CIDRs.

use std::net::IpAddr;

/// The trusted proxies: networks as (address, prefix length).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// `None`/`0`: none; `1`: loopback; else `addr[/len], …`. `Err` names the bad part.
    pub fn parse(value: Option<&str>) -> Result<TrustedProxies, String> {
        match value.map(str::trim) {
            None | Some("0") => Ok(TrustedProxies::default()),
            Some("1") => Ok(TrustedProxies(vec![
                (IpAddr::from([127, 0, 0, 0]), 8),
                (IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), 128),
            ])),
            Some(list) => list
                .split(',')
                .map(|part| {
                    let part = part.trim();
                    let (address, length) = part.split_once('/').map_or((part, None), |(a, l)| (a, Some(l)));
                    let address: IpAddr = address.parse().map_err(|_| format!("'{part}' is not an address or CIDR"))?;
                    let most = if address.is_ipv4() { 32 } else { 128 };
                    let length = match length {
                        None => most,
                        Some(l) => l
                            .parse::<u8>()
                            .ok()
                            .filter(|l| *l <= most)
                            .ok_or_else(|| format!("'{part}' has a bad prefix length"))?,
                    };
                    Ok((address, length))
                })
                .collect::<Result<Vec<_>, String>>()
                .map(TrustedProxies),
        }
    }

    /// Whether any proxy is trusted.
    pub fn any(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `peer` is one of the trusted proxies.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|(network, length)| match (network, peer) {
            (IpAddr::V4(n), IpAddr::V4(p)) => {
                let mask = if *length == 0 { 0 } else { u32::MAX << (32 - u32::from(*length)) };
                u32::from(*n) & mask == u32::from(p) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(p)) => {
                let mask = if *length == 0 { 0 } else { u128::MAX << (128 - u32::from(*length)) };
                u128::from(*n) & mask == u128::from(p) & mask
            }
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn loopback_lists_and_cidrs() {
        let loopback = TrustedProxies::parse(Some("1")).unwrap();
        assert!(loopback.trusts(ip("127.0.0.1")) && loopback.trusts(ip("127.9.9.9")) && loopback.trusts(ip("::1")));
        assert!(!loopback.trusts(ip("192.0.2.1")) && !loopback.trusts(ip("::2")));
        let list = TrustedProxies::parse(Some("10.0.0.5, 2001:db8::/32")).unwrap();
        assert!(list.trusts(ip("10.0.0.5")) && !list.trusts(ip("10.0.0.6")));
        assert!(list.trusts(ip("2001:db8:ffff::1")) && !list.trusts(ip("2001:db9::1")));
        assert!(list.trusts(ip("::ffff:10.0.0.5")), "an IPv4-mapped peer");
        assert!(!TrustedProxies::parse(None).unwrap().any());
        assert!(!TrustedProxies::parse(Some("0")).unwrap().any());
        for bad in ["yes", "10.0.0.1/33", "::1/129", "10.0.0.1,", "host.example"] {
            assert!(TrustedProxies::parse(Some(bad)).is_err(), "{bad}");
        }
    }
}
