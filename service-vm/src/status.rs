//! A compact snapshot of the router for the kernel to report to the hypervisor.

use alloc::vec::Vec;
use core::fmt;

use smoltcp::wire::{EthernetAddress, Ipv4Address, Ipv4Cidr};

use crate::addressing::{LinkId, Port};
use crate::counters::Counters;
pub use crate::dhcp_client::DhcpClientState;
use crate::router::Router;

/// The uplink's part of the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkStatus {
    pub mac: EthernetAddress,
    pub address: Option<Ipv4Cidr>,
    pub gateway: Option<Ipv4Address>,
    pub dns: Option<Ipv4Address>,
    /// The MTU handed to desktops: the uplink's, or 1500 without an uplink.
    pub mtu: u16,
    pub dhcp: DhcpClientState,
    pub counters: Counters,
}

/// One link's part of the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    pub link: LinkId,
    pub up: bool,
    pub desktop: Ipv4Address,
    /// NAT mappings the link holds now.
    pub nat_mappings: usize,
    pub counters: Counters,
}

/// The whole snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub uplink: UplinkStatus,
    pub links: Vec<LinkStatus>,
    pub nat_mappings: usize,
    pub dns_pending: usize,
    pub arp_cache: usize,
    pub arp_queue: usize,
}

impl Router {
    /// The current state and counters.
    pub fn status(&self) -> Status {
        let uplink = self.uplink();
        let links = (0..self.link_count())
            .map(|i| {
                let id = LinkId(i as u8);
                LinkStatus {
                    link: id,
                    up: self.link_up(id),
                    desktop: self.link_addresses(id).map_or(Ipv4Address::UNSPECIFIED, |a| a.desktop),
                    nat_mappings: self.nat_mappings_of(id),
                    counters: self.counters(Port::Link(id)).cloned().unwrap_or_default(),
                }
            })
            .collect();
        let (nat_mappings, dns_pending, arp_cache, arp_queue) = self.table_sizes();
        Status {
            uplink: UplinkStatus {
                mac: self.uplink_mac(),
                address: uplink.map(|u| u.address),
                gateway: uplink.and_then(|u| u.gateway),
                dns: uplink.and_then(|u| u.dns.first().copied()),
                mtu: self.link_mtu(),
                dhcp: self.dhcp_client_state(),
                counters: self.counters(Port::Uplink).cloned().unwrap_or_default(),
            },
            links,
            nat_mappings,
            dns_pending,
            arp_cache,
            arp_queue,
        }
    }
}

fn write_counters(f: &mut fmt::Formatter<'_>, c: &Counters) -> fmt::Result {
    write!(
        f,
        "rx {} fwd {} own {} tx {} drop {}",
        c.received,
        c.forwarded,
        c.consumed,
        c.transmitted,
        c.dropped_total()
    )?;
    for (reason, n) in c.drops() {
        write!(f, " {}={}", reason.name(), n)?;
    }
    Ok(())
}

/// One line for the uplink and one per link, drop reasons only where non-zero.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = &self.uplink;
        match u.address {
            Some(a) => write!(f, "uplink {a} mtu {}", u.mtu)?,
            None => write!(f, "uplink down")?,
        }
        write!(
            f,
            " dhcp {:?} nat {} dns {} arp {}/{}: ",
            u.dhcp, self.nat_mappings, self.dns_pending, self.arp_cache, self.arp_queue
        )?;
        write_counters(f, &u.counters)?;
        for l in &self.links {
            write!(
                f,
                "\nlink {} {} {} nat {}: ",
                l.link.0,
                if l.up { "up" } else { "down" },
                l.desktop,
                l.nat_mappings
            )?;
            write_counters(f, &l.counters)?;
        }
        Ok(())
    }
}
