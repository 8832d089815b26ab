//! The DHCP server of one desktop link (RFC 2131): it offers the link's one desktop
//! address, derived from the link index, to the link's one desktop MAC.
//!
//! There is no lease state to lose: the answer depends on the link alone, so a restarted
//! service VM ACKs the renewal of the address its predecessor handed out.

use alloc::vec::Vec;

use smoltcp::wire::{
    DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpMessageType, DhcpOpCode, DhcpOption, DhcpPacket, DhcpRepr, EthernetAddress,
    Ipv4Address,
};

use crate::addressing::LinkAddresses;
use crate::counters::DropReason;
use crate::frame::{UdpEnds, udp_frame};

/// Lease time handed out. Long, since the address never changes; the client renews at
/// half of it (RFC 2131 T1) and the renewal always succeeds.
pub(crate) const LEASE_SECONDS: u32 = 86_400;
/// RFC 2132 §5.1, Interface MTU.
pub(crate) const OPTION_INTERFACE_MTU: u8 = 26;

/// A DHCP message in a UDP frame, with checksums.
pub(crate) fn dhcp_frame(ends: UdpEnds, repr: &DhcpRepr<'_>) -> Vec<u8> {
    udp_frame(ends, repr.buffer_len(), |p| {
        // The buffer has exactly `buffer_len` bytes, which is what emit writes.
        let _ = repr.emit(&mut DhcpPacket::new_unchecked(p));
    })
}

/// The answer to a DHCP message (`payload`, the UDP payload) from the link's desktop, as
/// a frame, or why there is none. The caller has checked the frame's source MAC. `mtu`
/// is handed out as the interface MTU (option 26), so a smaller uplink MTU reaches the
/// desktops.
pub(crate) fn answer(
    payload: &[u8],
    link: &LinkAddresses,
    desktop_mac: EthernetAddress,
    mtu: u16,
) -> Result<Vec<u8>, DropReason> {
    let packet = DhcpPacket::new_checked(payload).map_err(|_| DropReason::Malformed)?;
    if packet.opcode() != DhcpOpCode::Request {
        return Err(DropReason::DhcpIgnored);
    }
    let request = DhcpRepr::parse(&packet).map_err(|_| DropReason::Malformed)?;
    if request.client_hardware_address != desktop_mac {
        return Err(DropReason::Spoofed);
    }
    let ack_type = match request.message_type {
        DhcpMessageType::Discover => DhcpMessageType::Offer,
        DhcpMessageType::Request => {
            if request.server_identifier.is_some_and(|s| s != link.gateway) {
                // The client chose another server; there is none on this link.
                return Err(DropReason::DhcpIgnored);
            }
            let wanted = request.requested_ip.or((!request.client_ip.is_unspecified()).then_some(request.client_ip));
            match wanted {
                Some(ip) if ip == link.desktop => DhcpMessageType::Ack,
                Some(_) => DhcpMessageType::Nak,
                None => return Err(DropReason::Malformed),
            }
        }
        DhcpMessageType::Inform => DhcpMessageType::Ack,
        // Release and Decline need no answer; the address stays the link's anyway.
        _ => return Err(DropReason::DhcpIgnored),
    };
    let nak = ack_type == DhcpMessageType::Nak;
    let mtu = mtu.to_be_bytes();
    let mtu_option = [DhcpOption { kind: OPTION_INTERFACE_MTU, data: &mtu }];
    let inform = request.message_type == DhcpMessageType::Inform;
    let mut dns = heapless::Vec::new();
    // Capacity is MAX_DNS_SERVER_COUNT (3), so one push fits.
    let _ = dns.push(link.gateway);
    let reply = DhcpRepr {
        message_type: ack_type,
        transaction_id: request.transaction_id,
        secs: 0,
        client_hardware_address: desktop_mac,
        client_ip: if inform { request.client_ip } else { Ipv4Address::UNSPECIFIED },
        your_ip: if nak || inform { Ipv4Address::UNSPECIFIED } else { link.desktop },
        server_ip: Ipv4Address::UNSPECIFIED,
        router: (!nak).then_some(link.gateway),
        subnet_mask: (!nak).then_some(link.subnet.netmask()),
        relay_agent_ip: Ipv4Address::UNSPECIFIED,
        broadcast: request.broadcast,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(link.gateway),
        parameter_request_list: None,
        dns_servers: (!nak).then_some(dns),
        max_size: None,
        lease_duration: (!nak && !inform).then_some(LEASE_SECONDS),
        renew_duration: None,
        rebind_duration: None,
        additional_options: if nak { &[] } else { &mtu_option },
    };
    // RFC 2131 4.1: to ciaddr when the client has one, broadcast when it asks or for a
    // NAK, else to the offered address.
    let (dst_mac, dst_ip) = if nak || (request.broadcast && request.client_ip.is_unspecified()) {
        (EthernetAddress::BROADCAST, Ipv4Address::BROADCAST)
    } else if !request.client_ip.is_unspecified() {
        (desktop_mac, request.client_ip)
    } else {
        (desktop_mac, link.desktop)
    };
    let ends = UdpEnds {
        src_mac: link.gateway_mac,
        dst_mac,
        src: (link.gateway, DHCP_SERVER_PORT),
        dst: (dst_ip, DHCP_CLIENT_PORT),
    };
    Ok(dhcp_frame(ends, &reply))
}
