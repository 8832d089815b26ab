//! The uplink side: ARP for the uplink address and next hops, the DHCP client's
//! replies, DNS answers for the relay, and inbound NAT back to the desktops.

use alloc::vec::Vec;

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, EthernetAddress, EthernetProtocol,
    Ipv4Address,
};

use super::{Router, Transmit};
use crate::Instant;
use crate::addressing::Port;
use crate::arp::Waiting;
use crate::checksum::Rewrite;
use crate::conntrack::Protocol;
use crate::counters::DropReason;
use crate::dns_relay::DNS_PORT;
use crate::frame::{
    ETHERNET_HEADER_LEN, Transport, UdpEnds, arp_frame, check_ethernet, check_ipv4_frame_with, ipv4_frame,
    ipv4_frame_in, udp_checksum_ok, udp_frame,
};

impl Router {
    pub(super) fn handle_uplink_frame(
        &mut self,
        now: Instant,
        frame: &[u8],
        out: &mut Vec<Transmit>,
    ) -> Result<(), DropReason> {
        let eth = check_ethernet(frame)?;
        match eth.ethertype {
            EthernetProtocol::Ipv4 | EthernetProtocol::Arp => {}
            EthernetProtocol::Ipv6 => return Err(DropReason::Ipv6),
            _ => return Err(DropReason::UnsupportedEtherType),
        }
        if eth.dst != self.uplink_mac && !eth.dst.is_broadcast() {
            return Err(DropReason::NotRoutable);
        }
        let payload = &frame[ETHERNET_HEADER_LEN..];
        if eth.ethertype == EthernetProtocol::Arp {
            return self.handle_uplink_arp(now, payload, out);
        }
        // The NIC's good verdict covers the IPv4 header checksum too.
        let packet = check_ipv4_frame_with(payload, self.uplink_checksum_good)?;
        let ip = &packet.ip;
        let l4 = &payload[ip.header_len..ip.total_len];
        if let Transport::Udp { src_port: DHCP_SERVER_PORT, dst_port: DHCP_CLIENT_PORT } = packet.transport {
            if !udp_checksum_ok(ip, l4) {
                return Err(DropReason::BadUdpChecksum);
            }
            let step = self.dhcp.handle(now, &mut self.rng, &l4[8..])?;
            self.consume(Port::Uplink);
            self.apply_dhcp(step, out);
            return Ok(());
        }
        let uplink_addr = self.uplink.as_ref().map(|u| u.address.address()).ok_or(DropReason::NoUplink)?;
        if ip.dst != uplink_addr {
            return Err(DropReason::NotRoutable);
        }
        if let Transport::Tcp { dst_port, .. } = packet.transport
            && self.limits.local_ports.contains(&dst_port)
        {
            return self.queue_local(&payload[..ip.total_len]);
        }
        let (protocol, port, from_port, tcp) = match packet.transport {
            Transport::Udp { src_port: DNS_PORT, dst_port } if self.dns.owns_port(dst_port) => {
                return self.handle_dns_answer(now, &packet.ip, dst_port, l4, out);
            }
            Transport::Tcp { src_port, dst_port, flags } => (Protocol::Tcp, dst_port, src_port, Some(flags)),
            Transport::Udp { src_port, dst_port } => (Protocol::Udp, dst_port, src_port, None),
            Transport::EchoReply { ident } => (Protocol::Icmp, ident, 0, None),
            Transport::EchoRequest { .. } => return Err(DropReason::NoConnection),
            Transport::IcmpError => return self.handle_icmp_error_in(now, &packet.ip, payload, out),
        };
        if ip.ttl <= 1 {
            return Err(DropReason::TtlExpired);
        }
        let inside = self.nat.inbound(now, protocol, port, (ip.src, from_port), tcp)?;
        let link = &self.links[inside.link.index()];
        if !link.up {
            return Err(DropReason::LinkDown);
        }
        // The frame for the desktop is built around a copy of the packet, which is
        // then rewritten in place (one copy).
        let (gateway_mac, desktop_mac, desktop) = (link.addrs.gateway_mac, link.config.desktop_mac, link.addrs.desktop);
        let buffer = self.frame_buffer();
        let mut frame = ipv4_frame_in(buffer, gateway_mac, desktop_mac, &payload[..ip.total_len]);
        Rewrite::new(&mut frame[ETHERNET_HEADER_LEN..], ip.header_len, ip.protocol)
            .set_destination_and_hop(desktop, inside.port);
        self.forward(Port::Uplink, Port::Link(inside.link), frame, out);
        Ok(())
    }

    fn handle_dns_answer(
        &mut self,
        now: Instant,
        ip: &crate::frame::Ipv4Header,
        relay_port: u16,
        l4: &[u8],
        out: &mut Vec<Transmit>,
    ) -> Result<(), DropReason> {
        if !udp_checksum_ok(ip, l4) {
            return Err(DropReason::BadUdpChecksum);
        }
        let answer = self.dns.answer(now, (ip.src, DNS_PORT), relay_port, &l4[8..])?;
        let link = &self.links[answer.link.index()];
        if !link.up {
            return Err(DropReason::LinkDown);
        }
        let ends = UdpEnds {
            src_mac: link.addrs.gateway_mac,
            dst_mac: link.config.desktop_mac,
            src: (link.addrs.gateway, DNS_PORT),
            dst: (link.addrs.desktop, answer.client_port),
        };
        let frame = udp_frame(ends, answer.payload.len(), |p| p.copy_from_slice(&answer.payload));
        self.forward(Port::Uplink, Port::Link(answer.link), frame, out);
        Ok(())
    }

    fn handle_uplink_arp(&mut self, now: Instant, payload: &[u8], out: &mut Vec<Transmit>) -> Result<(), DropReason> {
        let packet = ArpPacket::new_checked(payload).map_err(|_| DropReason::Malformed)?;
        let ArpRepr::EthernetIpv4 {
            operation, source_hardware_addr, source_protocol_addr, target_protocol_addr, ..
        } = ArpRepr::parse(&packet).map_err(|_| DropReason::Malformed)?
        else {
            return Err(DropReason::Malformed);
        };
        let mut used = false;
        let mut replied = false;
        if let Some(ready) = self.arp.learn(now, source_protocol_addr, source_hardware_addr) {
            used = true;
            for w in ready {
                let frame = ipv4_frame(self.uplink_mac, source_hardware_addr, &w.packet);
                self.forward(w.origin, Port::Uplink, frame, out);
            }
        }
        let ours = self.uplink.as_ref().map(|u| u.address.address());
        if operation == ArpOperation::Request && Some(target_protocol_addr) == ours && source_hardware_addr.is_unicast()
        {
            let reply = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: self.uplink_mac,
                source_protocol_addr: target_protocol_addr,
                target_hardware_addr: source_hardware_addr,
                target_protocol_addr: source_protocol_addr,
            };
            let frame = arp_frame(self.uplink_mac, source_hardware_addr, reply);
            self.answer(Port::Uplink, frame, out);
            replied = true;
        }
        match (used, replied) {
            (_, true) => Ok(()),
            (true, false) => {
                self.consume(Port::Uplink);
                Ok(())
            }
            (false, false) => Err(DropReason::ArpIgnored),
        }
    }

    /// Sends an IPv4 packet (already translated) out of the uplink, resolving the next
    /// hop first; `origin` is the port the packet came from, for counting.
    pub(super) fn send_to_uplink(
        &mut self,
        now: Instant,
        origin: Port,
        packet: Vec<u8>,
        out: &mut Vec<Transmit>,
    ) -> Result<(), DropReason> {
        let uplink = self.uplink.as_ref().ok_or(DropReason::NoUplink)?;
        let dst = Ipv4Address::from_octets([packet[16], packet[17], packet[18], packet[19]]);
        let next_hop =
            if uplink.address.contains_addr(&dst) { dst } else { uplink.gateway.ok_or(DropReason::NoUplink)? };
        if let Some(mac) = self.arp.lookup(now, next_hop) {
            let frame = ipv4_frame(self.uplink_mac, mac, &packet);
            self.forward(origin, Port::Uplink, frame, out);
            return Ok(());
        }
        if self.arp.enqueue(now, Waiting { next_hop, origin, packet })? {
            self.send_arp_request(next_hop, out);
        }
        Ok(())
    }

    pub(super) fn send_arp_request(&mut self, target: Ipv4Address, out: &mut Vec<Transmit>) {
        let Some(ours) = self.uplink.as_ref().map(|u| u.address.address()) else {
            return;
        };
        let request = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: self.uplink_mac,
            source_protocol_addr: ours,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        let frame = arp_frame(self.uplink_mac, EthernetAddress::BROADCAST, request);
        self.transmit(Port::Uplink, frame, out);
    }
}
