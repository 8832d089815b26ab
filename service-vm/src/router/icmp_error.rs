//! ICMP errors (destination unreachable, time exceeded) about translated flows: the
//! quoted packet is translated like the flow, so that path MTU discovery, traceroute
//! and "port unreachable" work through the NAT. An error must match a live mapping and
//! does not refresh it. The gateway also sends "time exceeded" itself for a desktop's
//! packet whose TTL runs out here, so traceroute shows the hop.

use alloc::vec::Vec;

use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, IpProtocol};

use super::{Router, Transmit};
use crate::Instant;
use crate::addressing::{LinkId, Port};
use crate::checksum::Rewrite;
use crate::conntrack::Protocol;
use crate::counters::DropReason;
use crate::frame::{ICMP_QUOTE_OFFSET, Ipv4Header, Quoted, ipv4_frame, ipv4_packet, parse_quoted};
use crate::nat::Inside;

fn protocol_of(q: &Quoted) -> Result<Protocol, DropReason> {
    match q.protocol {
        IpProtocol::Tcp => Ok(Protocol::Tcp),
        IpProtocol::Udp => Ok(Protocol::Udp),
        IpProtocol::Icmp => Ok(Protocol::Icmp),
        _ => Err(DropReason::UnsupportedProtocol),
    }
}

/// Rewrites the quoted packet with `edit`, then the outer packet with `outer`, and
/// recomputes the ICMP checksum over the changed message.
fn translate(
    packet: &[u8],
    ip: &Ipv4Header,
    q: &Quoted,
    edit: impl FnOnce(&mut Rewrite<'_>),
    outer: impl FnOnce(&mut Rewrite<'_>),
) -> Vec<u8> {
    let mut copy = packet[..ip.total_len].to_vec();
    let quote_at = ip.header_len + ICMP_QUOTE_OFFSET;
    edit(&mut Rewrite::new(&mut copy[quote_at..], q.header_len, q.protocol));
    Icmpv4Packet::new_unchecked(&mut copy[ip.header_len..]).fill_checksum();
    let mut rw = Rewrite::new(&mut copy, ip.header_len, IpProtocol::Icmp);
    outer(&mut rw);
    rw.decrement_ttl();
    copy
}

impl Router {
    /// Drops a desktop's packet larger than the uplink MTU. With DF set the desktop gets
    /// "fragmentation needed" with the MTU (RFC 1191), so path MTU discovery adapts;
    /// without DF it is dropped all the same, as the router does not fragment.
    pub(super) fn too_big(
        &mut self,
        id: LinkId,
        ip_packet: &[u8],
        ip: &Ipv4Header,
        mtu: u16,
        out: &mut Vec<Transmit>,
    ) -> Result<(), DropReason> {
        if ip.dont_frag {
            self.send_icmp_error(id, ip_packet, ip.header_len, (Icmpv4Message::DstUnreachable, 4), mtu, out);
        }
        Err(DropReason::TooBig)
    }

    /// Answers a desktop's packet whose TTL ran out here with "time exceeded in
    /// transit" from the gateway, quoting its header and first 8 payload bytes (RFC
    /// 792). Never called for ICMP errors, so no error answers an error. The packet is
    /// still counted as dropped.
    pub(super) fn time_exceeded(
        &mut self,
        id: LinkId,
        ip_packet: &[u8],
        header_len: usize,
        out: &mut Vec<Transmit>,
    ) -> Result<(), DropReason> {
        self.send_icmp_error(id, ip_packet, header_len, (Icmpv4Message::TimeExceeded, 0), 0, out);
        Err(DropReason::TtlExpired)
    }

    /// Sends an ICMP error from `id`'s gateway to its desktop about `ip_packet`, quoting
    /// its header and first 8 payload bytes; `next_hop_mtu` fills the low half of the
    /// otherwise unused word (RFC 1191).
    fn send_icmp_error(
        &mut self,
        id: LinkId,
        ip_packet: &[u8],
        header_len: usize,
        (kind, code): (Icmpv4Message, u8),
        next_hop_mtu: u16,
        out: &mut Vec<Transmit>,
    ) {
        let link = &self.links[id.index()];
        let quote = &ip_packet[..(header_len + 8).min(ip_packet.len())];
        let mut message = alloc::vec![0u8; ICMP_QUOTE_OFFSET + quote.len()];
        message[6..8].copy_from_slice(&next_hop_mtu.to_be_bytes());
        message[ICMP_QUOTE_OFFSET..].copy_from_slice(quote);
        let mut icmp = Icmpv4Packet::new_unchecked(&mut message[..]);
        icmp.set_msg_type(kind);
        icmp.set_msg_code(code);
        icmp.fill_checksum();
        let packet = ipv4_packet(link.addrs.gateway, link.addrs.desktop, IpProtocol::Icmp, &message);
        let frame = ipv4_frame(link.addrs.gateway_mac, link.config.desktop_mac, &packet);
        self.transmit(Port::Link(id), frame, out);
    }

    /// An ICMP error from the outside about a packet a desktop sent: the quoted packet
    /// left as (uplink address, external port) → far end.
    pub(super) fn handle_icmp_error_in(
        &mut self,
        now: Instant,
        ip: &Ipv4Header,
        packet: &[u8],
        out: &mut Vec<Transmit>,
    ) -> Result<(), DropReason> {
        let l4 = &packet[ip.header_len..ip.total_len];
        let q = parse_quoted(l4)?;
        let uplink_addr = self.uplink.as_ref().map(|u| u.address.address()).ok_or(DropReason::NoUplink)?;
        let protocol = protocol_of(&q)?;
        let remote_port = if protocol == Protocol::Icmp { 0 } else { q.dst_port };
        if q.src != uplink_addr {
            return Err(DropReason::NoConnection);
        }
        let inside =
            self.nat.peek_inbound(now, protocol, q.src_port, (q.dst, remote_port)).ok_or(DropReason::NoConnection)?;
        if ip.ttl <= 1 {
            return Err(DropReason::TtlExpired);
        }
        let link = &self.links[inside.link.index()];
        if !link.up {
            return Err(DropReason::LinkDown);
        }
        let desktop = link.addrs.desktop;
        let copy = translate(
            packet,
            ip,
            &q,
            |quoted| {
                quoted.set_src_addr(desktop);
                quoted.set_src_port(inside.port);
            },
            |outer| outer.set_dst_addr(desktop),
        );
        let frame = ipv4_frame(link.addrs.gateway_mac, link.config.desktop_mac, &copy);
        self.forward(Port::Uplink, Port::Link(inside.link), frame, out);
        Ok(())
    }

    /// An ICMP error from a desktop about a packet it received through the NAT: the
    /// quoted packet arrived as far end → (desktop, its port).
    pub(super) fn handle_icmp_error_out(
        &mut self,
        now: Instant,
        id: LinkId,
        ip: &Ipv4Header,
        packet: &[u8],
        out: &mut Vec<Transmit>,
    ) -> Result<(), DropReason> {
        let l4 = &packet[ip.header_len..ip.total_len];
        let q = parse_quoted(l4)?;
        let protocol = protocol_of(&q)?;
        if q.dst != self.links[id.index()].addrs.desktop || ip.dst != q.src {
            return Err(DropReason::NoConnection);
        }
        let remote_port = if protocol == Protocol::Icmp { 0 } else { q.src_port };
        let inside = Inside { protocol, link: id, port: q.dst_port, remote: q.src, remote_port };
        let external = self.nat.peek_outbound(now, inside).ok_or(DropReason::NoConnection)?;
        let uplink_addr = self.uplink.as_ref().map(|u| u.address.address()).ok_or(DropReason::NoUplink)?;
        if ip.ttl <= 1 {
            return Err(DropReason::TtlExpired);
        }
        let copy = translate(
            packet,
            ip,
            &q,
            |quoted| {
                quoted.set_dst_addr(uplink_addr);
                quoted.set_dst_port(external);
            },
            |outer| outer.set_src_addr(uplink_addr),
        );
        self.send_to_uplink(now, Port::Link(id), copy, out)
    }
}
