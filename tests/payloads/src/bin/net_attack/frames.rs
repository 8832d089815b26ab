//! The attack frames, built by hand (the point is that they are wrong).

/// What each frame tries.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Ten bytes: shorter than an Ethernet header.
    Runt,
    /// 1600 bytes: longer than any frame of a 1500-byte MTU.
    Oversized,
    /// An IPv4/UDP packet whose header checksum is wrong.
    BadIpChecksum,
    /// A well-formed packet from another desktop's address (10.213.0.2).
    SpoofedAddress,
    /// A well-formed frame from another MAC.
    SpoofedMac,
    /// IPv6 (which the router drops by policy).
    Ipv6,
    /// A DHCP request whose options run past the end of the packet.
    BogusDhcp,
}

pub const KINDS: [Kind; 7] = [
    Kind::Runt,
    Kind::Oversized,
    Kind::BadIpChecksum,
    Kind::SpoofedAddress,
    Kind::SpoofedMac,
    Kind::Ipv6,
    Kind::BogusDhcp,
];

const BROADCAST: [u8; 6] = [0xff; 6];
/// This link's desktop address (link 2 of the test's plan: 10.213.0.10).
const OWN_IP: [u8; 4] = [10, 213, 0, 10];
const OTHER_DESKTOP_IP: [u8; 4] = [10, 213, 0, 2];

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet header; returns 14.
fn ethernet(buf: &mut [u8], src: [u8; 6], ethertype: u16) -> usize {
    buf[0..6].copy_from_slice(&BROADCAST);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
    14
}

/// IPv4 + UDP with `payload_len` zero bytes of payload at `at`; returns the end.
fn ipv4_udp(buf: &mut [u8], at: usize, src: [u8; 4], dst: [u8; 4], ports: (u16, u16), payload_len: usize) -> usize {
    let total = 20 + 8 + payload_len;
    let ip = &mut buf[at..at + 20];
    ip.fill(0);
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let sum = checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut buf[at + 20..at + 28];
    udp[0..2].copy_from_slice(&ports.0.to_be_bytes());
    udp[2..4].copy_from_slice(&ports.1.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    // UDP checksum 0: none (allowed over IPv4).
    udp[6..8].fill(0);
    buf[at + 28..at + 28 + payload_len].fill(0);
    at + total
}

/// Writes one frame of `kind` from `mac` into `buf`; returns its length.
pub fn build(kind: Kind, mac: [u8; 6], buf: &mut [u8; 1600]) -> usize {
    match kind {
        Kind::Runt => {
            buf[..10].fill(0xee);
            10
        }
        Kind::Oversized => {
            let at = ethernet(buf, mac, 0x0800);
            buf[at..].fill(0x55);
            buf.len()
        }
        Kind::BadIpChecksum => {
            let at = ethernet(buf, mac, 0x0800);
            let end = ipv4_udp(buf, at, OWN_IP, [10, 0, 2, 2], (40000, 9), 32);
            buf[at + 10] ^= 0xff;
            end
        }
        Kind::SpoofedAddress => {
            let at = ethernet(buf, mac, 0x0800);
            ipv4_udp(buf, at, OTHER_DESKTOP_IP, [10, 0, 2, 2], (40000, 9), 32)
        }
        Kind::SpoofedMac => {
            let at = ethernet(buf, [0x02, 0, 0, 0, 0x66, 0x66], 0x0800);
            ipv4_udp(buf, at, OWN_IP, [10, 0, 2, 2], (40000, 9), 32)
        }
        Kind::Ipv6 => {
            let at = ethernet(buf, mac, 0x86dd);
            buf[at..at + 40].fill(0);
            buf[at] = 0x60;
            at + 40
        }
        Kind::BogusDhcp => {
            let at = ethernet(buf, mac, 0x0800);
            // A BOOTREQUEST with the magic cookie, then an option claiming 200 bytes
            // where 4 follow.
            let body = 236 + 4 + 6;
            let end = ipv4_udp(buf, at, [0; 4], [255; 4], (68, 67), body);
            let dhcp = at + 28;
            buf[dhcp] = 1;
            buf[dhcp + 1] = 1;
            buf[dhcp + 2] = 6;
            buf[dhcp + 28..dhcp + 34].copy_from_slice(&mac);
            buf[dhcp + 236..dhcp + 240].copy_from_slice(&[99, 130, 83, 99]);
            buf[dhcp + 240..dhcp + 246].copy_from_slice(&[53, 200, 1, 2, 3, 4]);
            end
        }
    }
}
