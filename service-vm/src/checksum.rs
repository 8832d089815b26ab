//! In-place rewriting of IPv4 packets with incremental checksum updates (RFC 1624).
//!
//! Incremental updates keep the sender's checksum errors: a packet that arrived with a
//! broken TCP/UDP checksum leaves with one, so the far end still drops it.

use smoltcp::wire::{IpProtocol, Ipv4Address};

const IP_TTL: usize = 8;
const IP_CHECKSUM: usize = 10;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;

/// RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), split in two: the `~m + m'` part over the
/// 16-bit big-endian words of the replaced bytes (2 or 4 of them), computed
/// once per replacement and applied to each checksum that covers the bytes.
fn difference(old: &[u8], new: &[u8]) -> u32 {
    old.chunks_exact(2)
        .zip(new.chunks_exact(2))
        .map(|(o, n)| u32::from(!u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([n[0], n[1]])))
        .sum()
}

/// ~(~HC + difference), folded to 16 bits.
fn adjust(checksum: u16, difference: u32) -> u16 {
    let mut sum = u32::from(!checksum) + difference;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A validated IPv4 packet (header length and transport header already checked) being
/// rewritten; every setter keeps the IPv4 and transport checksums consistent.
pub(crate) struct Rewrite<'a> {
    packet: &'a mut [u8],
    l4: usize,
    protocol: IpProtocol,
}

impl<'a> Rewrite<'a> {
    /// `header_len` is the IPv4 header length; at least the first 8 bytes of the
    /// transport header must follow (the caller checked); a checksum beyond the end of
    /// a truncated packet is left alone.
    pub(crate) fn new(packet: &'a mut [u8], header_len: usize, protocol: IpProtocol) -> Self {
        Rewrite { packet, l4: header_len, protocol }
    }

    /// Where the transport checksum is, if the (possibly truncated, as quoted in an
    /// ICMP error) packet holds it.
    fn l4_checksum_at(&self) -> Option<usize> {
        let at = match self.protocol {
            IpProtocol::Tcp => self.l4 + 16,
            IpProtocol::Udp => self.l4 + 6,
            IpProtocol::Icmp => self.l4 + 2,
            _ => return None,
        };
        (at + 2 <= self.packet.len()).then_some(at)
    }

    /// Replaces `len` bytes at `at`; fixes the IPv4 header checksum when `in_ip_header`
    /// and the transport checksum when `in_l4_sum` (pseudo-header or transport header).
    fn replace<const N: usize>(&mut self, at: usize, new: &[u8; N], in_ip_header: bool, in_l4_sum: bool) {
        let mut old = [0u8; N];
        old.copy_from_slice(&self.packet[at..at + N]);
        let difference = difference(&old, new);
        if in_ip_header {
            let c = u16::from_be_bytes([self.packet[IP_CHECKSUM], self.packet[IP_CHECKSUM + 1]]);
            self.packet[IP_CHECKSUM..IP_CHECKSUM + 2].copy_from_slice(&adjust(c, difference).to_be_bytes());
        }
        if in_l4_sum && let Some(at_sum) = self.l4_checksum_at() {
            let c = u16::from_be_bytes([self.packet[at_sum], self.packet[at_sum + 1]]);
            // A zero UDP checksum means "none" and stays so; a computed zero is sent as
            // all-ones (RFC 768).
            if !(self.protocol == IpProtocol::Udp && c == 0) {
                let mut n = adjust(c, difference);
                if self.protocol == IpProtocol::Udp && n == 0 {
                    n = 0xffff;
                }
                self.packet[at_sum..at_sum + 2].copy_from_slice(&n.to_be_bytes());
            }
        }
        self.packet[at..at + N].copy_from_slice(new);
    }

    fn pseudo_header_covered(&self) -> bool {
        matches!(self.protocol, IpProtocol::Tcp | IpProtocol::Udp)
    }

    pub(crate) fn set_src_addr(&mut self, addr: Ipv4Address) {
        let covered = self.pseudo_header_covered();
        self.replace(IP_SRC, &addr.octets(), true, covered);
    }

    pub(crate) fn set_dst_addr(&mut self, addr: Ipv4Address) {
        let covered = self.pseudo_header_covered();
        self.replace(IP_DST, &addr.octets(), true, covered);
    }

    /// The TCP/UDP source port, or the ICMP echo identifier.
    pub(crate) fn set_src_port(&mut self, port: u16) {
        let at = if self.protocol == IpProtocol::Icmp { self.l4 + 4 } else { self.l4 };
        self.replace(at, &port.to_be_bytes(), false, true);
    }

    /// The TCP/UDP destination port, or the ICMP echo identifier.
    pub(crate) fn set_dst_port(&mut self, port: u16) {
        let at = if self.protocol == IpProtocol::Icmp { self.l4 + 4 } else { self.l4 + 2 };
        self.replace(at, &port.to_be_bytes(), false, true);
    }

    /// Lowers the TTL by one; the caller checked that it is above one.
    pub(crate) fn decrement_ttl(&mut self) {
        let word = [self.packet[IP_TTL] - 1, self.packet[IP_TTL + 1]];
        self.replace(IP_TTL, &word, true, false);
    }

    /// Inbound NAT of a TCP or UDP packet in one pass: the destination address and
    /// port set and the TTL lowered by one (the caller checked that it is above one),
    /// with one update of each checksum instead of one per field. The same result as
    /// `set_dst_addr`, `set_dst_port` and `decrement_ttl`, which other packets take.
    pub(crate) fn set_destination_and_hop(&mut self, addr: Ipv4Address, port: u16) {
        let at_sum = self.l4_checksum_at().filter(|_| self.pseudo_header_covered());
        let Some(at_sum) = at_sum else {
            self.set_dst_addr(addr);
            self.set_dst_port(port);
            self.decrement_ttl();
            return;
        };
        let p = &mut *self.packet;
        let at_port = self.l4 + 2;
        let old_addr = [p[IP_DST], p[IP_DST + 1], p[IP_DST + 2], p[IP_DST + 3]];
        let old_port = [p[at_port], p[at_port + 1]];
        let old_ttl = [p[IP_TTL], p[IP_TTL + 1]];
        let (new_addr, new_port, new_ttl) = (addr.octets(), port.to_be_bytes(), [old_ttl[0] - 1, old_ttl[1]]);
        let address = difference(&old_addr, &new_addr);
        let ip = u16::from_be_bytes([p[IP_CHECKSUM], p[IP_CHECKSUM + 1]]);
        let ip = adjust(ip, address + difference(&old_ttl, &new_ttl));
        p[IP_CHECKSUM..IP_CHECKSUM + 2].copy_from_slice(&ip.to_be_bytes());
        let l4 = u16::from_be_bytes([p[at_sum], p[at_sum + 1]]);
        // A zero UDP checksum means "none" and stays so; a computed zero is sent as
        // all-ones (RFC 768).
        if !(self.protocol == IpProtocol::Udp && l4 == 0) {
            let mut n = adjust(l4, address + difference(&old_port, &new_port));
            if self.protocol == IpProtocol::Udp && n == 0 {
                n = 0xffff;
            }
            p[at_sum..at_sum + 2].copy_from_slice(&n.to_be_bytes());
        }
        p[IP_DST..IP_DST + 4].copy_from_slice(&new_addr);
        p[at_port..at_port + 2].copy_from_slice(&new_port);
        p[IP_TTL..IP_TTL + 2].copy_from_slice(&new_ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket, UdpPacket};

    fn packet(protocol: IpProtocol, l4_len: usize) -> alloc::vec::Vec<u8> {
        let mut buf = alloc::vec![0u8; 20 + l4_len];
        let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len((20 + l4_len) as u16);
        ip.set_hop_limit(64);
        ip.set_next_header(protocol);
        ip.set_src_addr(Ipv4Address::new(10, 0, 0, 2));
        ip.set_dst_addr(Ipv4Address::new(93, 184, 216, 34));
        ip.fill_checksum();
        for (i, b) in buf[20..].iter_mut().enumerate() {
            *b = (i * 37 + 11) as u8;
        }
        buf
    }

    fn tcp_valid(buf: &mut [u8]) -> bool {
        let ip = Ipv4Packet::new_checked(&buf[..]).unwrap();
        let (s, d) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
        ip.verify_checksum() && TcpPacket::new_unchecked(&buf[20..]).verify_checksum(&s, &d)
    }

    #[test]
    fn tcp_rewrite_keeps_both_checksums_valid() {
        let mut buf = packet(IpProtocol::Tcp, 40);
        buf[20 + 12] = 0x50; // data offset 5 words
        {
            let src = IpAddress::v4(10, 0, 0, 2);
            let dst = IpAddress::v4(93, 184, 216, 34);
            TcpPacket::new_unchecked(&mut buf[20..]).fill_checksum(&src, &dst);
        }
        assert!(tcp_valid(&mut buf));
        let mut rw = Rewrite::new(&mut buf, 20, IpProtocol::Tcp);
        rw.set_src_addr(Ipv4Address::new(203, 0, 113, 9));
        rw.set_src_port(40001);
        rw.decrement_ttl();
        assert!(tcp_valid(&mut buf));
        let ip = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(ip.hop_limit(), 63);
        assert_eq!(TcpPacket::new_unchecked(&buf[20..]).src_port(), 40001);
    }

    #[test]
    fn one_pass_inbound_rewrite_matches_the_field_by_field_one() {
        for (protocol, l4_len, zero_udp) in
            [(IpProtocol::Tcp, 40, false), (IpProtocol::Udp, 16, false), (IpProtocol::Udp, 16, true)]
        {
            let mut buf = packet(protocol, l4_len);
            let (src, dst) = (IpAddress::v4(10, 0, 0, 2), IpAddress::v4(93, 184, 216, 34));
            if protocol == IpProtocol::Tcp {
                buf[20 + 12] = 0x50;
                TcpPacket::new_unchecked(&mut buf[20..]).fill_checksum(&src, &dst);
            } else {
                let mut u = UdpPacket::new_unchecked(&mut buf[20..]);
                u.set_len(16);
                if zero_udp {
                    u.set_checksum(0);
                } else {
                    u.fill_checksum(&src, &dst);
                }
            }
            let mut field_by_field = buf.clone();
            let mut rw = Rewrite::new(&mut field_by_field, 20, protocol);
            rw.set_dst_addr(Ipv4Address::new(10, 1, 2, 3));
            rw.set_dst_port(40123);
            rw.decrement_ttl();
            Rewrite::new(&mut buf, 20, protocol).set_destination_and_hop(Ipv4Address::new(10, 1, 2, 3), 40123);
            assert_eq!(buf, field_by_field, "{protocol:?} zero_udp={zero_udp}");
            assert!(Ipv4Packet::new_checked(&buf[..]).unwrap().verify_checksum());
            let new_dst = IpAddress::v4(10, 1, 2, 3);
            if protocol == IpProtocol::Tcp {
                assert!(TcpPacket::new_unchecked(&buf[20..]).verify_checksum(&src, &new_dst));
            } else if !zero_udp {
                assert!(UdpPacket::new_unchecked(&buf[20..]).verify_checksum(&src, &new_dst));
            }
        }
    }

    #[test]
    fn broken_tcp_checksum_stays_broken() {
        let mut buf = packet(IpProtocol::Tcp, 40);
        buf[20 + 12] = 0x50;
        assert!(!tcp_valid(&mut buf));
        Rewrite::new(&mut buf, 20, IpProtocol::Tcp).set_dst_addr(Ipv4Address::new(10, 1, 1, 1));
        assert!(!tcp_valid(&mut buf));
    }

    #[test]
    fn udp_zero_checksum_stays_zero_and_valid_one_stays_valid() {
        let mut buf = packet(IpProtocol::Udp, 16);
        {
            let mut u = UdpPacket::new_unchecked(&mut buf[20..]);
            u.set_len(16);
            u.set_checksum(0);
        }
        Rewrite::new(&mut buf, 20, IpProtocol::Udp).set_src_port(5555);
        assert_eq!(UdpPacket::new_unchecked(&buf[20..]).checksum(), 0);

        let src = IpAddress::v4(10, 0, 0, 2);
        let dst = IpAddress::v4(93, 184, 216, 34);
        UdpPacket::new_unchecked(&mut buf[20..]).fill_checksum(&src, &dst);
        let mut rw = Rewrite::new(&mut buf, 20, IpProtocol::Udp);
        rw.set_src_addr(Ipv4Address::new(198, 51, 100, 1));
        rw.set_dst_port(53);
        let new_src = IpAddress::v4(198, 51, 100, 1);
        assert!(UdpPacket::new_unchecked(&buf[20..]).verify_checksum(&new_src, &dst));
        assert!(Ipv4Packet::new_checked(&buf[..]).unwrap().verify_checksum());
    }
}
