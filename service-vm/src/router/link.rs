//! Frames from a desktop link: ARP and DHCP for the gateway, DNS to the relay, pings
//! of the gateway, and everything else routed to a peer link or through NAT to the uplink.

use alloc::vec::Vec;

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, EthernetProtocol, Icmpv4Message,
    Icmpv4Packet, IpProtocol, Ipv4Address,
};

use super::{Router, Transmit};
use crate::addressing::{LinkId, Port};
use crate::checksum::Rewrite;
use crate::conntrack::Protocol;
use crate::counters::DropReason;
use crate::dns_relay::{DNS_PORT, servfail};
use crate::frame::{
    ETHERNET_HEADER_LEN, Ipv4Frame, Transport, UdpEnds, arp_frame, check_ethernet, check_ipv4_frame, ipv4_frame,
    ipv4_packet, udp_checksum_ok, udp_frame, udp_packet,
};
use crate::nat::Inside;
use crate::rules::FlowKind;
use crate::{Instant, dhcp_server};

/// Addresses no packet from a desktop is routed to.
fn unroutable(dst: Ipv4Address) -> bool {
    dst.is_broadcast()
        || dst.is_multicast()
        || dst.is_loopback()
        || dst.is_unspecified()
        || dst.is_link_local()
        || dst.octets()[0] >= 240
        || dst.octets()[0] == 0
}

impl Router {
    pub(super) fn handle_link_frame(
        &mut self,
        now: Instant,
        id: LinkId,
        frame: &[u8],
        out: &mut Vec<Transmit>,
    ) -> Result<(), DropReason> {
        let link = &self.links[id.index()];
        let eth = check_ethernet(frame)?;
        match eth.ethertype {
            EthernetProtocol::Ipv4 | EthernetProtocol::Arp => {}
            EthernetProtocol::Ipv6 => return Err(DropReason::Ipv6),
            _ => return Err(DropReason::UnsupportedEtherType),
        }
        if eth.src != link.config.desktop_mac {
            return Err(DropReason::Spoofed);
        }
        if eth.dst != link.addrs.gateway_mac && !eth.dst.is_broadcast() {
            return Err(DropReason::NotRoutable);
        }
        let payload = &frame[ETHERNET_HEADER_LEN..];
        if eth.ethertype == EthernetProtocol::Arp {
            return self.handle_link_arp(id, payload, out);
        }
        let packet = check_ipv4_frame(payload)?;
        let ip = &packet.ip;
        let l4 = &payload[ip.header_len..ip.total_len];
        let addrs = link.addrs;

        if let Transport::Udp { src_port: DHCP_CLIENT_PORT, dst_port: DHCP_SERVER_PORT } = packet.transport {
            if !(ip.src.is_unspecified() || ip.src == addrs.desktop) {
                return Err(DropReason::Spoofed);
            }
            if !(ip.dst.is_broadcast() || ip.dst == addrs.gateway || ip.dst == addrs.broadcast) {
                return Err(DropReason::NotRoutable);
            }
            if !udp_checksum_ok(ip, l4) {
                return Err(DropReason::BadUdpChecksum);
            }
            let reply = dhcp_server::answer(&l4[8..], &addrs, link.config.desktop_mac, self.link_mtu())?;
            self.answer(Port::Link(id), reply, out);
            return Ok(());
        }
        if ip.src != addrs.desktop {
            return Err(DropReason::Spoofed);
        }
        if ip.dst == addrs.gateway {
            return self.handle_gateway_packet(now, id, &packet, l4, out);
        }
        if unroutable(ip.dst) || ip.dst == addrs.broadcast {
            return Err(DropReason::NotRoutable);
        }
        if self.plan.prefix().contains_addr(&ip.dst) {
            return self.route_to_peer(id, &payload[..ip.total_len], &packet, out);
        }
        self.route_to_uplink(now, id, &payload[..ip.total_len], &packet, out)
    }

    /// ARP from the desktop: only requests for the gateway address are answered.
    fn handle_link_arp(&mut self, id: LinkId, payload: &[u8], out: &mut Vec<Transmit>) -> Result<(), DropReason> {
        let link = &self.links[id.index()];
        let packet = ArpPacket::new_checked(payload).map_err(|_| DropReason::Malformed)?;
        let ArpRepr::EthernetIpv4 {
            operation, source_hardware_addr, source_protocol_addr, target_protocol_addr, ..
        } = ArpRepr::parse(&packet).map_err(|_| DropReason::Malformed)?
        else {
            return Err(DropReason::Malformed);
        };
        if source_hardware_addr != link.config.desktop_mac
            || !(source_protocol_addr == link.addrs.desktop || source_protocol_addr.is_unspecified())
        {
            return Err(DropReason::Spoofed);
        }
        if operation != ArpOperation::Request || target_protocol_addr != link.addrs.gateway {
            return Err(DropReason::ArpIgnored);
        }
        // A probe (sender 0.0.0.0) is answered to the desktop's own address anyway: the
        // link has exactly one.
        let reply = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: link.addrs.gateway_mac,
            source_protocol_addr: link.addrs.gateway,
            target_hardware_addr: link.config.desktop_mac,
            target_protocol_addr: link.addrs.desktop,
        };
        let frame = arp_frame(link.addrs.gateway_mac, link.config.desktop_mac, reply);
        self.answer(Port::Link(id), frame, out);
        Ok(())
    }

    /// A packet for the gateway address: DNS to the relay, ping answered.
    fn handle_gateway_packet(
        &mut self,
        now: Instant,
        id: LinkId,
        packet: &Ipv4Frame,
        l4: &[u8],
        out: &mut Vec<Transmit>,
    ) -> Result<(), DropReason> {
        let link = &self.links[id.index()];
        let addrs = link.addrs;
        let desktop_mac = link.config.desktop_mac;
        match packet.transport {
            Transport::Udp { src_port, dst_port: DNS_PORT } => {
                if !link.config.rule.allows_dns() {
                    return Err(DropReason::RuleDenied);
                }
                if !udp_checksum_ok(&packet.ip, l4) {
                    return Err(DropReason::BadUdpChecksum);
                }
                let query = &l4[8..];
                let resolver = self.uplink.as_ref().and_then(|u| u.dns.first().copied());
                let Some(resolver) = resolver else {
                    let reply = servfail(query).ok_or(DropReason::Malformed)?;
                    let ends = UdpEnds {
                        src_mac: addrs.gateway_mac,
                        dst_mac: desktop_mac,
                        src: (addrs.gateway, DNS_PORT),
                        dst: (addrs.desktop, src_port),
                    };
                    let frame = udp_frame(ends, reply.len(), |p| p.copy_from_slice(&reply));
                    self.answer(Port::Link(id), frame, out);
                    return Ok(());
                };
                if self.dns.len() >= self.limits.dns_pending {
                    for link in self.dns.expire(now) {
                        self.count_drop(Port::Link(link), DropReason::DnsTimeout);
                    }
                }
                let uplink_addr = self.uplink.as_ref().map(|u| u.address.address()).ok_or(DropReason::NoUplink)?;
                let fwd = self.dns.query(now, &mut self.rng, (id, src_port), query, resolver)?;
                let packet = udp_packet((uplink_addr, fwd.relay_port), (resolver, DNS_PORT), fwd.payload.len(), |p| {
                    p.copy_from_slice(&fwd.payload)
                });
                let sent = self.send_to_uplink(now, Port::Link(id), packet, out);
                if sent.is_err() {
                    // Not on its way (no route, ARP queue full): no answer can come.
                    self.dns.cancel(fwd.relay_port);
                }
                sent
            }
            Transport::EchoRequest { .. } => {
                let mut reply = l4.to_vec();
                let mut icmp = Icmpv4Packet::new_unchecked(&mut reply[..]);
                icmp.set_msg_type(Icmpv4Message::EchoReply);
                icmp.fill_checksum();
                let frame = ipv4_frame(
                    addrs.gateway_mac,
                    desktop_mac,
                    &ipv4_packet(addrs.gateway, addrs.desktop, IpProtocol::Icmp, &reply),
                );
                self.answer(Port::Link(id), frame, out);
                Ok(())
            }
            _ => Err(DropReason::NotRoutable),
        }
    }

    /// A packet for another desktop: routed unchanged (TTL aside) when both rules allow.
    fn route_to_peer(
        &mut self,
        id: LinkId,
        ip_packet: &[u8],
        packet: &Ipv4Frame,
        out: &mut Vec<Transmit>,
    ) -> Result<(), DropReason> {
        let peer = self.plan.link_of_desktop(packet.ip.dst).filter(|p| p.index() < self.links.len());
        let Some(peer) = peer else {
            return Err(DropReason::NotRoutable);
        };
        if !self.peers_allowed(id, peer) {
            return Err(DropReason::RuleDenied);
        }
        if packet.ip.ttl <= 1 {
            return self.time_exceeded(id, ip_packet, packet.ip.header_len, out);
        }
        let target = &self.links[peer.index()];
        if !target.up {
            return Err(DropReason::LinkDown);
        }
        let mut frame = ipv4_frame(target.addrs.gateway_mac, target.config.desktop_mac, ip_packet);
        Rewrite::new(&mut frame[ETHERNET_HEADER_LEN..], packet.ip.header_len, packet.ip.protocol).decrement_ttl();
        self.forward(Port::Link(id), Port::Link(peer), frame, out);
        Ok(())
    }

    /// A packet for the outside: rule, NAT, then the uplink.
    fn route_to_uplink(
        &mut self,
        now: Instant,
        id: LinkId,
        ip_packet: &[u8],
        packet: &Ipv4Frame,
        out: &mut Vec<Transmit>,
    ) -> Result<(), DropReason> {
        let ip = &packet.ip;
        let (protocol, port, remote_port, kind, tcp) = match packet.transport {
            Transport::Tcp { src_port, dst_port, flags } => {
                (Protocol::Tcp, src_port, dst_port, FlowKind::Port(dst_port), Some(flags))
            }
            Transport::Udp { src_port, dst_port } => {
                (Protocol::Udp, src_port, dst_port, FlowKind::Port(dst_port), None)
            }
            Transport::EchoRequest { ident } => (Protocol::Icmp, ident, 0, FlowKind::Echo, None),
            Transport::EchoReply { .. } => return Err(DropReason::UnsupportedProtocol),
            Transport::IcmpError => return self.handle_icmp_error_out(now, id, ip, ip_packet, out),
        };
        if !self.links[id.index()].config.rule.allows_uplink(ip.dst, kind) {
            return Err(DropReason::RuleDenied);
        }
        let uplink_addr = self.uplink.as_ref().map(|u| u.address.address()).ok_or(DropReason::NoUplink)?;
        if ip.dst == uplink_addr {
            return Err(DropReason::NotRoutable);
        }
        if ip.ttl <= 1 {
            return self.time_exceeded(id, ip_packet, ip.header_len, out);
        }
        let mtu = self.link_mtu();
        if ip.total_len > usize::from(mtu) {
            return self.too_big(id, ip_packet, ip, mtu, out);
        }
        let inside = Inside { protocol, link: id, port, remote: ip.dst, remote_port };
        let external = self.nat.outbound(now, inside, tcp)?;
        let mut copy = ip_packet.to_vec();
        let mut rw = Rewrite::new(&mut copy, ip.header_len, ip.protocol);
        rw.set_src_addr(uplink_addr);
        rw.set_src_port(external);
        rw.decrement_ttl();
        self.send_to_uplink(now, Port::Link(id), copy, out)
    }
}
