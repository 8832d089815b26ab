//! What a desktop may reach: its link's rule, and which peer links it may talk to.

use alloc::vec::Vec;

use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

/// One allowed destination of a `corporate-only` rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The allowed addresses.
    pub net: Ipv4Cidr,
    /// The allowed TCP/UDP destination port, or `None` for every port and ICMP echo.
    pub port: Option<u16>,
}

/// A link's rule for traffic towards the uplink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Everything outbound (through NAT), plus the DNS relay.
    Internet,
    /// Only the listed destinations, plus the DNS relay; everything else is dropped and
    /// counted (TCP included: no RST is sent back, see docs/networking.md).
    CorporateOnly(Vec<Destination>),
    /// Nothing beyond the link itself: DHCP and ARP for the gateway still work, so the
    /// desktop's interface comes up, but no packet leaves the link.
    Isolated,
}

/// What a flow towards the uplink looks like to the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlowKind {
    /// TCP or UDP to this destination port.
    Port(u16),
    /// ICMP echo request.
    Echo,
}

impl Rule {
    /// Whether a new flow to `dst` may leave through the uplink.
    pub(crate) fn allows_uplink(&self, dst: Ipv4Address, kind: FlowKind) -> bool {
        match self {
            Rule::Internet => true,
            Rule::Isolated => false,
            Rule::CorporateOnly(list) => list.iter().any(|d| {
                d.net.contains_addr(&dst)
                    && match (d.port, kind) {
                        (None, _) => true,
                        (Some(p), FlowKind::Port(q)) => p == q,
                        (Some(_), FlowKind::Echo) => false,
                    }
            }),
        }
    }

    /// Whether the desktop may use the gateway's DNS relay.
    pub(crate) fn allows_dns(&self) -> bool {
        !matches!(self, Rule::Isolated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corp() -> Rule {
        Rule::CorporateOnly(alloc::vec![
            Destination { net: Ipv4Cidr::new(Ipv4Address::new(192, 0, 2, 0), 24), port: Some(443) },
            Destination { net: Ipv4Cidr::new(Ipv4Address::new(198, 51, 100, 7), 32), port: None },
        ])
    }

    #[test]
    fn corporate_only_allows_listed_cidr_and_port_only() {
        let r = corp();
        assert!(r.allows_uplink(Ipv4Address::new(192, 0, 2, 200), FlowKind::Port(443)));
        assert!(!r.allows_uplink(Ipv4Address::new(192, 0, 2, 200), FlowKind::Port(80)));
        assert!(!r.allows_uplink(Ipv4Address::new(192, 0, 3, 1), FlowKind::Port(443)));
        assert!(!r.allows_uplink(Ipv4Address::new(192, 0, 2, 1), FlowKind::Echo));
        assert!(r.allows_uplink(Ipv4Address::new(198, 51, 100, 7), FlowKind::Port(22)));
        assert!(r.allows_uplink(Ipv4Address::new(198, 51, 100, 7), FlowKind::Echo));
        assert!(!r.allows_uplink(Ipv4Address::new(198, 51, 100, 8), FlowKind::Echo));
        assert!(r.allows_dns());
    }

    #[test]
    fn internet_allows_all_and_isolated_nothing() {
        let dst = Ipv4Address::new(8, 8, 8, 8);
        assert!(Rule::Internet.allows_uplink(dst, FlowKind::Port(53)));
        assert!(Rule::Internet.allows_uplink(dst, FlowKind::Echo));
        assert!(!Rule::Isolated.allows_uplink(dst, FlowKind::Port(53)));
        assert!(!Rule::Isolated.allows_uplink(dst, FlowKind::Echo));
        assert!(!Rule::Isolated.allows_dns());
    }
}
