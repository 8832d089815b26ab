//! Per-port counters: frames received, forwarded and delivered, and every drop by reason.

/// Why a frame was dropped. Every frame the router does not forward or answer ends in
/// exactly one of these, counted on the port it arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Runt,
    /// Longer than the largest frame a 1500-byte MTU allows.
    Oversized,
    /// A header is truncated, inconsistent or unparseable.
    Malformed,
    /// The IPv4 header checksum is wrong.
    BadIpChecksum,
    /// A UDP checksum of a message the router itself consumes (DHCP, DNS) is wrong.
    BadUdpChecksum,
    /// The source MAC or IPv4 address is not the one the link leases.
    Spoofed,
    /// IPv6 is not routed (policy, see docs/networking.md).
    Ipv6,
    /// An EtherType other than IPv4/ARP/IPv6.
    UnsupportedEtherType,
    /// An IP protocol or ICMP type the router does not translate.
    UnsupportedProtocol,
    /// An IPv4 fragment: NAT needs the transport header in every packet.
    Fragment,
    /// Time-to-live ran out at this hop.
    TtlExpired,
    /// Larger than the uplink's MTU (the router does not fragment; with DF set the
    /// desktop gets "fragmentation needed").
    TooBig,
    /// Addressed to neither the router nor a routable destination (other MAC, broadcast,
    /// multicast, loopback, the desktop address plan without a peer rule).
    NotRoutable,
    /// The link's rule forbids the destination.
    RuleDenied,
    /// The connection table (total or this link's share) is full.
    NatTableFull,
    /// No port is free for a new mapping.
    NatPortsExhausted,
    /// Inbound on the uplink with no matching connection.
    NoConnection,
    /// The uplink has no address (or no route to the destination).
    NoUplink,
    /// The desktop link the packet is for is down.
    LinkDown,
    /// The queue of frames waiting for ARP is full.
    ArpQueueFull,
    /// The next hop did not answer ARP.
    ArpUnresolved,
    /// An ARP message the router ignores (not for its address, unsolicited reply).
    ArpIgnored,
    /// A DHCP message the server or client does not answer.
    DhcpIgnored,
    /// The DNS relay's table of pending queries is full.
    DnsTableFull,
    /// A DNS answer that matches no pending query.
    DnsUnmatched,
    /// A DNS query got no answer in time.
    DnsTimeout,
    /// The service VM's own connections did not take their packets in time.
    LocalQueueFull,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 27] = [
        DropReason::Runt,
        DropReason::Oversized,
        DropReason::Malformed,
        DropReason::BadIpChecksum,
        DropReason::BadUdpChecksum,
        DropReason::Spoofed,
        DropReason::Ipv6,
        DropReason::UnsupportedEtherType,
        DropReason::UnsupportedProtocol,
        DropReason::Fragment,
        DropReason::TtlExpired,
        DropReason::TooBig,
        DropReason::NotRoutable,
        DropReason::RuleDenied,
        DropReason::NatTableFull,
        DropReason::NatPortsExhausted,
        DropReason::NoConnection,
        DropReason::NoUplink,
        DropReason::LinkDown,
        DropReason::ArpQueueFull,
        DropReason::ArpUnresolved,
        DropReason::ArpIgnored,
        DropReason::DhcpIgnored,
        DropReason::DnsTableFull,
        DropReason::DnsUnmatched,
        DropReason::DnsTimeout,
        DropReason::LocalQueueFull,
    ];

    /// A short stable name for the status report.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::Oversized => "oversized",
            DropReason::Malformed => "malformed",
            DropReason::BadIpChecksum => "bad-ip-checksum",
            DropReason::BadUdpChecksum => "bad-udp-checksum",
            DropReason::Spoofed => "spoofed",
            DropReason::Ipv6 => "ipv6",
            DropReason::UnsupportedEtherType => "ethertype",
            DropReason::UnsupportedProtocol => "protocol",
            DropReason::Fragment => "fragment",
            DropReason::TtlExpired => "ttl",
            DropReason::TooBig => "too-big",
            DropReason::NotRoutable => "not-routable",
            DropReason::RuleDenied => "rule",
            DropReason::NatTableFull => "nat-full",
            DropReason::NatPortsExhausted => "nat-ports",
            DropReason::NoConnection => "no-connection",
            DropReason::NoUplink => "no-uplink",
            DropReason::LinkDown => "link-down",
            DropReason::ArpQueueFull => "arp-queue-full",
            DropReason::ArpUnresolved => "arp-unresolved",
            DropReason::ArpIgnored => "arp-ignored",
            DropReason::DhcpIgnored => "dhcp-ignored",
            DropReason::DnsTableFull => "dns-full",
            DropReason::DnsUnmatched => "dns-unmatched",
            DropReason::DnsTimeout => "dns-timeout",
            DropReason::LocalQueueFull => "local-full",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one port (a desktop link or the uplink).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames that arrived on this port.
    pub received: u64,
    /// Frames from this port that the router sent on (to the uplink or a peer link).
    pub forwarded: u64,
    /// Frames from this port the router's own services took in: ARP, DHCP, pings of
    /// the gateway, DNS queries it answered itself.
    pub consumed: u64,
    /// Frames the router sent out on this port.
    pub transmitted: u64,
    dropped: [u64; DropReason::ALL.len()],
}

impl Counters {
    /// Frames dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    /// Frames dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// The non-zero drop counters, for a compact report.
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.dropped(r))).filter(|&(_, n)| n != 0)
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        let slot = &mut self.dropped[reason.index()];
        *slot = slot.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_in_index_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let mut names: alloc::vec::Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len(), "names are unique");
    }

    #[test]
    fn drops_are_counted_per_reason() {
        let mut c = Counters::default();
        c.count_drop(DropReason::Spoofed);
        c.count_drop(DropReason::Spoofed);
        c.count_drop(DropReason::Ipv6);
        assert_eq!(c.dropped(DropReason::Spoofed), 2);
        assert_eq!(c.dropped(DropReason::Ipv6), 1);
        assert_eq!(c.dropped_total(), 3);
        assert_eq!(c.drops().count(), 2);
    }
}
