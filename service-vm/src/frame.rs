//! Parsing and checking of frames from any port, and building of the frames the router
//! originates. Nothing here trusts a length field it has not checked against the buffer.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, IpAddress,
    IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpPacket, UdpPacket, UdpRepr,
};

use crate::counters::DropReason;

pub(crate) const ETHERNET_HEADER_LEN: usize = 14;
/// The largest frame a 1500-byte MTU gives (no FCS, no VLAN tag).
pub(crate) const MAX_FRAME_LEN: usize = 1514;
/// The TTL of packets the router originates.
const TTL: u8 = 64;

/// The checked Ethernet header of a frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ethernet {
    pub(crate) src: EthernetAddress,
    pub(crate) dst: EthernetAddress,
    pub(crate) ethertype: EthernetProtocol,
}

/// Checks the frame's length and reads its Ethernet header.
pub(crate) fn check_ethernet(frame: &[u8]) -> Result<Ethernet, DropReason> {
    if frame.len() < ETHERNET_HEADER_LEN {
        return Err(DropReason::Runt);
    }
    if frame.len() > MAX_FRAME_LEN {
        return Err(DropReason::Oversized);
    }
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Runt)?;
    Ok(Ethernet { src: eth.src_addr(), dst: eth.dst_addr(), ethertype: eth.ethertype() })
}

/// The checked header of an IPv4 packet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ipv4Header {
    pub(crate) src: Ipv4Address,
    pub(crate) dst: Ipv4Address,
    pub(crate) protocol: IpProtocol,
    pub(crate) ttl: u8,
    pub(crate) dont_frag: bool,
    pub(crate) header_len: usize,
    pub(crate) total_len: usize,
}

/// Checks an IPv4 packet (the Ethernet payload, possibly padded): version, lengths,
/// header checksum (unless the NIC verified it: `header_sum_verified`), no
/// fragmentation.
fn check_ipv4(packet: &[u8], header_sum_verified: bool) -> Result<Ipv4Header, DropReason> {
    let ip = Ipv4Packet::new_checked(packet).map_err(|_| DropReason::Malformed)?;
    if ip.version() != 4 {
        return Err(DropReason::Malformed);
    }
    if !header_sum_verified && !ip.verify_checksum() {
        return Err(DropReason::BadIpChecksum);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(DropReason::Fragment);
    }
    Ok(Ipv4Header {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        protocol: ip.next_header(),
        ttl: ip.hop_limit(),
        dont_frag: ip.dont_frag(),
        header_len: usize::from(ip.header_len()),
        total_len: usize::from(ip.total_len()),
    })
}

/// The TCP flags conntrack follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TcpFlags {
    pub(crate) syn: bool,
    pub(crate) ack: bool,
    pub(crate) fin: bool,
    pub(crate) rst: bool,
}

/// The transport header fields the router looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: TcpFlags,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    EchoRequest {
        ident: u16,
    },
    EchoReply {
        ident: u16,
    },
    /// Destination unreachable or time exceeded, quoting a packet of some flow.
    IcmpError,
}

/// Parses the transport header of a checked IPv4 packet (`l4` is the IP payload, cut to
/// the IP total length).
pub(crate) fn parse_transport(protocol: IpProtocol, l4: &[u8]) -> Result<Transport, DropReason> {
    match protocol {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(l4).map_err(|_| DropReason::Malformed)?;
            let flags = TcpFlags { syn: tcp.syn(), ack: tcp.ack(), fin: tcp.fin(), rst: tcp.rst() };
            Ok(Transport::Tcp { src_port: tcp.src_port(), dst_port: tcp.dst_port(), flags })
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(l4).map_err(|_| DropReason::Malformed)?;
            if usize::from(udp.len()) != l4.len() {
                return Err(DropReason::Malformed);
            }
            Ok(Transport::Udp { src_port: udp.src_port(), dst_port: udp.dst_port() })
        }
        IpProtocol::Icmp => {
            let icmp = Icmpv4Packet::new_checked(l4).map_err(|_| DropReason::Malformed)?;
            match icmp.msg_type() {
                Icmpv4Message::EchoRequest => Ok(Transport::EchoRequest { ident: icmp.echo_ident() }),
                Icmpv4Message::EchoReply => Ok(Transport::EchoReply { ident: icmp.echo_ident() }),
                Icmpv4Message::DstUnreachable | Icmpv4Message::TimeExceeded => Ok(Transport::IcmpError),
                _ => Err(DropReason::UnsupportedProtocol),
            }
        }
        _ => Err(DropReason::UnsupportedProtocol),
    }
}

/// The start of the packet an ICMP error quotes (RFC 792: the IPv4 header and at least
/// the first 8 bytes of its payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Quoted {
    pub(crate) header_len: usize,
    pub(crate) protocol: IpProtocol,
    pub(crate) src: Ipv4Address,
    pub(crate) dst: Ipv4Address,
    /// TCP/UDP source port, or the echo identifier.
    pub(crate) src_port: u16,
    /// TCP/UDP destination port, or the echo identifier.
    pub(crate) dst_port: u16,
}

/// Offset of the quoted packet in an ICMP error message.
pub(crate) const ICMP_QUOTE_OFFSET: usize = 8;

/// Parses the packet quoted by an ICMP error (`icmp` is the whole ICMP message). Only
/// TCP, UDP and ICMP echo can belong to a translated flow.
pub(crate) fn parse_quoted(icmp: &[u8]) -> Result<Quoted, DropReason> {
    let quoted = icmp.get(ICMP_QUOTE_OFFSET..).ok_or(DropReason::Malformed)?;
    if quoted.len() < 20 {
        return Err(DropReason::Malformed);
    }
    let ip = Ipv4Packet::new_unchecked(quoted);
    let header_len = usize::from(ip.header_len());
    if ip.version() != 4 || header_len < 20 || quoted.len() < header_len + 8 {
        return Err(DropReason::Malformed);
    }
    let l4 = &quoted[header_len..];
    let word = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    let (src_port, dst_port) = match ip.next_header() {
        IpProtocol::Tcp | IpProtocol::Udp => (word(0), word(2)),
        IpProtocol::Icmp
            if matches!(Icmpv4Message::from(l4[0]), Icmpv4Message::EchoRequest | Icmpv4Message::EchoReply) =>
        {
            (word(4), word(4))
        }
        _ => return Err(DropReason::UnsupportedProtocol),
    };
    Ok(Quoted { header_len, protocol: ip.next_header(), src: ip.src_addr(), dst: ip.dst_addr(), src_port, dst_port })
}

/// A checked IPv4 frame: Ethernet header, IPv4 header and transport header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ipv4Frame {
    pub(crate) ip: Ipv4Header,
    pub(crate) transport: Transport,
}

/// Checks the IPv4 packet in an Ethernet payload and its transport header.
pub(crate) fn check_ipv4_frame(payload: &[u8]) -> Result<Ipv4Frame, DropReason> {
    check_ipv4_frame_with(payload, false)
}

/// [`check_ipv4_frame`] for a frame whose IPv4 header checksum the NIC verified when
/// `header_sum_verified`.
pub(crate) fn check_ipv4_frame_with(payload: &[u8], header_sum_verified: bool) -> Result<Ipv4Frame, DropReason> {
    let ip = check_ipv4(payload, header_sum_verified)?;
    let transport = parse_transport(ip.protocol, &payload[ip.header_len..ip.total_len])?;
    Ok(Ipv4Frame { ip, transport })
}

/// Whether the UDP datagram in a checked IPv4 packet has a valid (or no) checksum.
pub(crate) fn udp_checksum_ok(ip: &Ipv4Header, l4: &[u8]) -> bool {
    let udp = UdpPacket::new_unchecked(l4);
    udp.checksum() == 0 || udp.verify_checksum(&IpAddress::Ipv4(ip.src), &IpAddress::Ipv4(ip.dst))
}

/// An Ethernet frame of `payload_len` bytes of payload, filled in by `fill`.
pub(crate) fn ethernet_frame(
    src: EthernetAddress,
    dst: EthernetAddress,
    ethertype: EthernetProtocol,
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let mut buf = vec![0u8; ETHERNET_HEADER_LEN + payload_len];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.set_src_addr(src);
    eth.set_dst_addr(dst);
    eth.set_ethertype(ethertype);
    fill(eth.payload_mut());
    buf
}

/// An Ethernet frame around a copy of `packet`: one allocation and one copy (no
/// zeroing first), so a forwarded packet is built here and rewritten in place.
pub(crate) fn ipv4_frame(src: EthernetAddress, dst: EthernetAddress, packet: &[u8]) -> Vec<u8> {
    ipv4_frame_in(Vec::new(), src, dst, packet)
}

/// [`ipv4_frame`] in `buf` (emptied first), a buffer used before: no allocation when it
/// is large enough.
pub(crate) fn ipv4_frame_in(mut buf: Vec<u8>, src: EthernetAddress, dst: EthernetAddress, packet: &[u8]) -> Vec<u8> {
    buf.clear();
    buf.reserve_exact(ETHERNET_HEADER_LEN + packet.len());
    buf.extend_from_slice(dst.as_bytes());
    buf.extend_from_slice(src.as_bytes());
    buf.extend_from_slice(&u16::from(EthernetProtocol::Ipv4).to_be_bytes());
    buf.extend_from_slice(packet);
    buf
}

/// An ARP message in an Ethernet frame.
pub(crate) fn arp_frame(src: EthernetAddress, dst: EthernetAddress, repr: ArpRepr) -> Vec<u8> {
    ethernet_frame(src, dst, EthernetProtocol::Arp, repr.buffer_len(), |p| {
        repr.emit(&mut ArpPacket::new_unchecked(p));
    })
}

/// Both ends of a UDP datagram.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UdpEnds {
    pub(crate) src_mac: EthernetAddress,
    pub(crate) dst_mac: EthernetAddress,
    pub(crate) src: (Ipv4Address, u16),
    pub(crate) dst: (Ipv4Address, u16),
}

/// An IPv4 packet around `payload` (whose own checksum the caller has filled in).
pub(crate) fn ipv4_packet(src: Ipv4Address, dst: Ipv4Address, protocol: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let ip =
        Ipv4Repr { src_addr: src, dst_addr: dst, next_header: protocol, payload_len: payload.len(), hop_limit: TTL };
    let mut buf = vec![0u8; ip.buffer_len() + payload.len()];
    let mut packet = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.emit(&mut packet, &ChecksumCapabilities::default());
    packet.payload_mut().copy_from_slice(payload);
    buf
}

/// A UDP datagram in an IPv4 packet, with checksums; `fill` writes the `payload_len`
/// bytes of payload.
pub(crate) fn udp_packet(
    src: (Ipv4Address, u16),
    dst: (Ipv4Address, u16),
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let udp = UdpRepr { src_port: src.1, dst_port: dst.1 };
    let ip = Ipv4Repr {
        src_addr: src.0,
        dst_addr: dst.0,
        next_header: IpProtocol::Udp,
        payload_len: udp.header_len() + payload_len,
        hop_limit: TTL,
    };
    let caps = ChecksumCapabilities::default();
    let mut buf = vec![0u8; ip.buffer_len() + ip.payload_len];
    let mut packet = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.emit(&mut packet, &caps);
    let mut u = UdpPacket::new_unchecked(packet.payload_mut());
    udp.emit(&mut u, &IpAddress::Ipv4(src.0), &IpAddress::Ipv4(dst.0), payload_len, fill, &caps);
    buf
}

/// A UDP datagram in an Ethernet frame.
pub(crate) fn udp_frame(ends: UdpEnds, payload_len: usize, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
    ipv4_frame(ends.src_mac, ends.dst_mac, &udp_packet(ends.src, ends.dst, payload_len, fill))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
    const B: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);

    fn udp(payload: &[u8]) -> Vec<u8> {
        let ends = UdpEnds {
            src_mac: A,
            dst_mac: B,
            src: (Ipv4Address::new(10, 0, 0, 2), 1234),
            dst: (Ipv4Address::new(10, 0, 0, 1), 53),
        };
        udp_frame(ends, payload.len(), |p| p.copy_from_slice(payload))
    }

    #[test]
    fn built_udp_frame_parses_back_with_valid_checksums() {
        let f = udp(b"hello");
        let eth = check_ethernet(&f).unwrap();
        assert_eq!((eth.src, eth.dst, eth.ethertype), (A, B, EthernetProtocol::Ipv4));
        let p = check_ipv4_frame(&f[ETHERNET_HEADER_LEN..]).unwrap();
        assert_eq!(p.transport, Transport::Udp { src_port: 1234, dst_port: 53 });
        assert!(udp_checksum_ok(&p.ip, &f[ETHERNET_HEADER_LEN + 20..]));
    }

    #[test]
    fn length_and_checksum_faults_are_told_apart() {
        assert_eq!(check_ethernet(&[0; 13]).unwrap_err(), DropReason::Runt);
        assert_eq!(check_ethernet(&[0; MAX_FRAME_LEN + 1]).unwrap_err(), DropReason::Oversized);
        let f = udp(b"hello");
        let ip = &f[ETHERNET_HEADER_LEN..];
        assert_eq!(check_ipv4(&ip[..19], false).unwrap_err(), DropReason::Malformed);
        // total length longer than the buffer
        assert_eq!(check_ipv4(&ip[..ip.len() - 1], false).unwrap_err(), DropReason::Malformed);
        let mut bad = ip.to_vec();
        bad[10] ^= 0x55;
        assert_eq!(check_ipv4(&bad, false).unwrap_err(), DropReason::BadIpChecksum);
        assert!(check_ipv4(&bad, true).is_ok(), "the NIC's verdict stands in for the sum");
        let mut frag = ip.to_vec();
        Ipv4Packet::new_unchecked(&mut frag[..]).set_more_frags(true);
        Ipv4Packet::new_unchecked(&mut frag[..]).fill_checksum();
        assert_eq!(check_ipv4(&frag, false).unwrap_err(), DropReason::Fragment);
        let mut bad_udp_len = ip.to_vec();
        bad_udp_len[20 + 5] += 1;
        Ipv4Packet::new_unchecked(&mut bad_udp_len[..]).fill_checksum();
        assert_eq!(check_ipv4_frame(&bad_udp_len).unwrap_err(), DropReason::Malformed);
    }
}
