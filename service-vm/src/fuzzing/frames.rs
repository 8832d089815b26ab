//! Frames the fuzz harness builds from fuzzed fields.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::wire::{
    DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpMessageType, DhcpRepr, EthernetAddress, Icmpv4Message, Icmpv4Packet,
    IpAddress, IpProtocol, Ipv4Address, TcpPacket, TcpSeqNumber,
};

use super::{GW, GW_MAC, Input, LINKS, RESOLVER, UPLINK_IP, UPLINK_MAC, desktop_mac};
use crate::frame::{UdpEnds, ipv4_packet};

/// Sometimes flips one byte (breaking a checksum or a length), sometimes truncates;
/// a zero byte (as past the end of the input) leaves the frame alone.
pub(super) fn mutate(frame: &mut Vec<u8>, input: &mut Input<'_>) {
    match input.byte() % 8 {
        1 if !frame.is_empty() => {
            let at = usize::from(input.u16()) % frame.len();
            frame[at] ^= input.byte() | 1;
        }
        2 => frame.truncate(usize::from(input.u16()) % (frame.len() + 1)),
        _ => {}
    }
}

pub(super) fn tcp(src: Ipv4Address, sport: u16, dst: Ipv4Address, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 20 + payload.len()];
    let mut t = TcpPacket::new_unchecked(&mut l4[..]);
    t.set_src_port(sport);
    t.set_dst_port(dport);
    t.set_seq_number(TcpSeqNumber(1));
    t.set_header_len(20);
    t.clear_flags();
    t.set_fin(flags & 1 != 0);
    t.set_syn(flags & 2 != 0);
    t.set_rst(flags & 4 != 0);
    t.set_ack(flags & 16 != 0);
    t.set_window_len(1024);
    t.payload_mut().copy_from_slice(payload);
    t.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
    ipv4_packet(src, dst, IpProtocol::Tcp, &l4)
}

pub(super) fn echo(src: Ipv4Address, dst: Ipv4Address, ident: u16, request: bool) -> Vec<u8> {
    let mut l4 = vec![0u8; 16];
    let mut p = Icmpv4Packet::new_unchecked(&mut l4[..]);
    p.set_msg_type(if request { Icmpv4Message::EchoRequest } else { Icmpv4Message::EchoReply });
    p.set_msg_code(0);
    p.set_echo_ident(ident);
    p.fill_checksum();
    ipv4_packet(src, dst, IpProtocol::Icmp, &l4)
}

/// An ICMP destination-unreachable (or, for odd `kind`, time-exceeded) message quoting
/// the first 28 bytes of `quoted`.
pub(super) fn icmp_error(src: Ipv4Address, dst: Ipv4Address, kind: u8, quoted: &[u8]) -> Vec<u8> {
    let quote = &quoted[..quoted.len().min(28)];
    let mut l4 = vec![0u8; 8 + quote.len()];
    l4[0] = if kind & 1 == 0 { 3 } else { 11 };
    l4[1] = kind >> 4;
    l4[8..].copy_from_slice(quote);
    Icmpv4Packet::new_unchecked(&mut l4[..]).fill_checksum();
    ipv4_packet(src, dst, IpProtocol::Icmp, &l4)
}

/// A DNS header with fuzzed id and flags (QR forced as asked) and some question bytes.
pub(super) fn dns_message(input: &mut Input<'_>, response: bool) -> Vec<u8> {
    let mut m = vec![0u8; 12];
    m[..2].copy_from_slice(&input.u16().to_le_bytes());
    m[2] = if response { input.byte() | 0x80 } else { input.byte() & 0x7f };
    m.extend_from_slice(input.bytes(16));
    m
}

pub(super) fn dhcp_repr(message_type: DhcpMessageType, xid: u32, mac: EthernetAddress) -> DhcpRepr<'static> {
    DhcpRepr {
        message_type,
        transaction_id: xid,
        secs: 0,
        client_hardware_address: mac,
        client_ip: Ipv4Address::UNSPECIFIED,
        your_ip: Ipv4Address::UNSPECIFIED,
        server_ip: Ipv4Address::UNSPECIFIED,
        router: None,
        subnet_mask: None,
        relay_agent_ip: Ipv4Address::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: None,
        server_identifier: None,
        parameter_request_list: None,
        dns_servers: None,
        max_size: None,
        lease_duration: None,
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    }
}

pub(super) fn dhcp_from_desktop(link: usize, input: &mut Input<'_>) -> Vec<u8> {
    let kind = input.pick(&[DhcpMessageType::Discover, DhcpMessageType::Request, DhcpMessageType::Inform]);
    let mac = if input.byte() < 240 { desktop_mac(link) } else { desktop_mac((link + 1) % LINKS) };
    let mut repr = dhcp_repr(kind, input.u32(), mac);
    repr.requested_ip = (input.byte() & 1 == 0).then(|| Ipv4Address::new(10, 213, 0, input.byte()));
    repr.broadcast = input.byte() & 1 == 0;
    let ends = UdpEnds {
        src_mac: desktop_mac(link),
        dst_mac: EthernetAddress::BROADCAST,
        src: (Ipv4Address::UNSPECIFIED, DHCP_CLIENT_PORT),
        dst: (Ipv4Address::BROADCAST, DHCP_SERVER_PORT),
    };
    crate::dhcp_server::dhcp_frame(ends, &repr)
}

pub(super) fn dhcp_from_server(xid: u32, input: &mut Input<'_>) -> Vec<u8> {
    let kind = input.pick(&[DhcpMessageType::Offer, DhcpMessageType::Ack, DhcpMessageType::Nak]);
    let xid = if input.byte() < 230 { xid } else { input.u32() };
    let mut repr = dhcp_repr(kind, xid, UPLINK_MAC);
    // Mostly a sane lease; sometimes one inside the desktop plan, which must be refused.
    repr.your_ip = if input.byte() < 230 { UPLINK_IP } else { Ipv4Address::new(10, 213, 0, 9) };
    repr.router = Some(GW);
    repr.subnet_mask = Some(Ipv4Address::new(255, 255, 255, input.pick(&[0, 128, 255])));
    repr.server_identifier = Some(GW);
    repr.lease_duration = Some(u32::from(input.u16()));
    let mut dns = heapless::Vec::new();
    let _ = dns.push(RESOLVER);
    repr.dns_servers = Some(dns);
    let ends = UdpEnds {
        src_mac: GW_MAC,
        dst_mac: UPLINK_MAC,
        src: (GW, DHCP_SERVER_PORT),
        dst: (UPLINK_IP, DHCP_CLIENT_PORT),
    };
    crate::dhcp_server::dhcp_frame(ends, &repr)
}
