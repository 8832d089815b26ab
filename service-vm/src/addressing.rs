//! The desktop addressing plan: every link owns a fixed /30 derived from its index.
//!
//! Link `i` gets the /30 at `base + 4*i`: `+1` is the service VM's gateway address on
//! that link, `+2` the desktop's, `+3` the subnet broadcast. The desktop's address is a
//! function of the link alone, so the same VM gets the same address from any instance
//! of the router (a restarted service VM does not renumber its desktops), and a /30
//! leaves no other host to reach or impersonate on the link.

use smoltcp::wire::{EthernetAddress, Ipv4Address, Ipv4Cidr};

/// Index of a desktop link (0-based, below [`AddressPlan::MAX_LINKS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u8);

impl LinkId {
    /// The index as a `usize`, for tables.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A port of the router: a desktop link or the uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Port {
    /// The link of one desktop VM.
    Link(LinkId),
    /// The NIC, or the link to the Wi-Fi VM.
    Uplink,
}

/// The /24 that holds every link's /30.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPlan {
    base: [u8; 3],
}

/// The addresses of one link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkAddresses {
    /// The link's subnet (prefix length 30).
    pub subnet: Ipv4Cidr,
    /// The service VM's address on the link: gateway and DNS server.
    pub gateway: Ipv4Address,
    /// The one address the desktop may use.
    pub desktop: Ipv4Address,
    /// The subnet broadcast address.
    pub broadcast: Ipv4Address,
    /// The service VM's MAC on the link.
    pub gateway_mac: EthernetAddress,
}

impl AddressPlan {
    /// How many /30s fit in the plan's /24.
    pub const MAX_LINKS: usize = 64;
    /// The default plan, 10.213.0.0/24; the policy may move it when it collides with a
    /// network the uplink reaches.
    pub const DEFAULT: AddressPlan = AddressPlan { base: [10, 213, 0] };

    /// A plan in the /24 that starts at `network` (its last octet is ignored).
    pub const fn new(network: Ipv4Address) -> AddressPlan {
        let o = network.octets();
        AddressPlan { base: [o[0], o[1], o[2]] }
    }

    /// The whole plan as a prefix.
    pub fn prefix(&self) -> Ipv4Cidr {
        let [a, b, c] = self.base;
        Ipv4Cidr::new(Ipv4Address::new(a, b, c, 0), 24)
    }

    /// The addresses of `link`, or `None` when the index does not fit the plan.
    pub fn link(&self, link: LinkId) -> Option<LinkAddresses> {
        if link.index() >= Self::MAX_LINKS {
            return None;
        }
        let [a, b, c] = self.base;
        let net = link.0 * 4;
        let at = |host: u8| Ipv4Address::new(a, b, c, net + host);
        Some(LinkAddresses {
            subnet: Ipv4Cidr::new(at(0), 30),
            gateway: at(1),
            desktop: at(2),
            broadcast: at(3),
            gateway_mac: gateway_mac(link),
        })
    }

    /// The link whose desktop owns `addr`, if `addr` is a desktop address of the plan.
    pub fn link_of_desktop(&self, addr: Ipv4Address) -> Option<LinkId> {
        let o = addr.octets();
        if !self.prefix().contains_addr(&addr) || o[3] % 4 != 2 {
            return None;
        }
        Some(LinkId(o[3] / 4))
    }
}

/// The service VM's MAC on `link`: locally administered, unicast, and naming the link in
/// its last octet so captures are easy to read.
pub const fn gateway_mac(link: LinkId) -> EthernetAddress {
    EthernetAddress([0x02, b'B', b'H', 0x00, 0x00, link.0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_get_disjoint_slash30s_from_their_index() {
        let plan = AddressPlan::DEFAULT;
        let l0 = plan.link(LinkId(0)).unwrap();
        assert_eq!(l0.gateway, Ipv4Address::new(10, 213, 0, 1));
        assert_eq!(l0.desktop, Ipv4Address::new(10, 213, 0, 2));
        assert_eq!(l0.broadcast, Ipv4Address::new(10, 213, 0, 3));
        let l63 = plan.link(LinkId(63)).unwrap();
        assert_eq!(l63.desktop, Ipv4Address::new(10, 213, 0, 254));
        assert_eq!(l63.subnet.netmask(), Ipv4Address::new(255, 255, 255, 252));
        assert!(plan.link(LinkId(64)).is_none());
        assert_ne!(l0.gateway_mac, l63.gateway_mac);
        assert!(l0.gateway_mac.is_unicast());
    }

    #[test]
    fn desktop_address_maps_back_to_its_link_only() {
        let plan = AddressPlan::new(Ipv4Address::new(192, 168, 77, 0));
        for i in 0..AddressPlan::MAX_LINKS as u8 {
            let a = plan.link(LinkId(i)).unwrap();
            assert_eq!(plan.link_of_desktop(a.desktop), Some(LinkId(i)));
            assert_eq!(plan.link_of_desktop(a.gateway), None);
            assert_eq!(plan.link_of_desktop(a.broadcast), None);
        }
        assert_eq!(plan.link_of_desktop(Ipv4Address::new(192, 168, 78, 2)), None);
    }
}
