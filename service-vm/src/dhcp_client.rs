//! The uplink's DHCP client (RFC 2131 client states, simplified): DISCOVER, take the
//! first OFFER, REQUEST it, and keep the lease by renewing at T1 and rebinding at T2.
//! Retransmissions back off from 4 s to 64 s. Renewals are broadcast with `ciaddr` set,
//! which every server answers; that saves a unicast path before the lease is known good.

use alloc::vec::Vec;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpMessageType, DhcpOpCode, DhcpPacket, DhcpRepr, EthernetAddress,
    Ipv4Address, Ipv4Cidr,
};

use crate::counters::DropReason;
use crate::dhcp_server::dhcp_frame;
use crate::frame::UdpEnds;
use crate::random::Random;
use crate::router::UplinkConfig;

const FIRST_RETRY: Duration = Duration::from_secs(4);
const LAST_RETRY: Duration = Duration::from_secs(64);
/// REQUESTs for one offer before starting over with DISCOVER.
const REQUEST_TRIES: u8 = 4;
/// Used when the server names no lease time.
const DEFAULT_LEASE: Duration = Duration::from_secs(3600);
/// Subnet mask, router, DNS servers, interface MTU.
const PARAMETERS: &[u8] = &[1, 3, 6, 26];

/// Where the client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpClientState {
    /// Not running: the uplink is configured statically or not at all.
    Stopped,
    /// Looking for a server (DISCOVER sent).
    Selecting,
    /// Asked for an offered address (REQUEST sent).
    Requesting,
    /// Holding a lease.
    Bound,
    /// Past T1: asking to extend the lease.
    Renewing,
    /// Past T2: asking any server to extend the lease.
    Rebinding,
}

/// What the client tells the router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ClientEvent {
    Configured(UplinkConfig),
    Deconfigured,
}

#[derive(Clone, Debug)]
struct Lease {
    config: UplinkConfig,
    renew_at: Instant,
    rebind_at: Instant,
    expires: Instant,
}

#[derive(Debug)]
pub(crate) struct DhcpClient {
    mac: EthernetAddress,
    state: DhcpClientState,
    xid: u32,
    next_send: Instant,
    retry: Duration,
    tries: u8,
    offer: Option<(Ipv4Address, Ipv4Address)>,
    lease: Option<Lease>,
}

/// What one step of the client produced.
#[derive(Debug, Default)]
pub(crate) struct ClientOutput {
    pub(crate) frame: Option<Vec<u8>>,
    pub(crate) event: Option<ClientEvent>,
}

impl DhcpClient {
    pub(crate) fn new(mac: EthernetAddress) -> Self {
        DhcpClient {
            mac,
            state: DhcpClientState::Stopped,
            xid: 0,
            next_send: Instant::ZERO,
            retry: FIRST_RETRY,
            tries: 0,
            offer: None,
            lease: None,
        }
    }

    pub(crate) fn state(&self) -> DhcpClientState {
        self.state
    }

    /// Starts (or restarts) looking for a server; the first DISCOVER goes out at the next poll.
    pub(crate) fn start(&mut self, now: Instant, rng: &mut Random) {
        self.select(now, rng);
        self.lease = None;
    }

    /// The router refused the acked lease (it collides with the desktop plan): forget it
    /// and look again after the longest retry interval, so a server that keeps offering
    /// the same address is not asked in a tight loop.
    pub(crate) fn refuse_lease(&mut self, now: Instant, rng: &mut Random) {
        self.select(now, rng);
        self.lease = None;
        self.next_send = now + LAST_RETRY;
    }

    pub(crate) fn stop(&mut self) {
        self.state = DhcpClientState::Stopped;
        self.lease = None;
        self.offer = None;
    }

    fn select(&mut self, now: Instant, rng: &mut Random) {
        self.state = DhcpClientState::Selecting;
        self.xid = rng.next_u32();
        self.next_send = now;
        self.retry = FIRST_RETRY;
        self.tries = 0;
        self.offer = None;
    }

    /// Sends what is due: (re)transmissions, renewal at T1, rebinding at T2, and gives
    /// the address up when the lease runs out.
    pub(crate) fn poll(&mut self, now: Instant, rng: &mut Random) -> ClientOutput {
        let mut out = ClientOutput::default();
        if let Some(lease) = &self.lease {
            if now >= lease.expires {
                self.select(now, rng);
                self.lease = None;
                out.event = Some(ClientEvent::Deconfigured);
            } else if self.state == DhcpClientState::Bound && now >= lease.renew_at {
                self.state = DhcpClientState::Renewing;
                self.xid = rng.next_u32();
                self.next_send = now;
                self.retry = FIRST_RETRY;
            } else if self.state == DhcpClientState::Renewing && now >= lease.rebind_at {
                self.state = DhcpClientState::Rebinding;
                self.next_send = now;
            }
        }
        let message = match self.state {
            DhcpClientState::Stopped | DhcpClientState::Bound => return out,
            DhcpClientState::Selecting => DhcpMessageType::Discover,
            DhcpClientState::Requesting if self.tries >= REQUEST_TRIES => {
                self.select(now, rng);
                DhcpMessageType::Discover
            }
            DhcpClientState::Requesting | DhcpClientState::Renewing | DhcpClientState::Rebinding => {
                DhcpMessageType::Request
            }
        };
        if now < self.next_send {
            return out;
        }
        self.tries = self.tries.saturating_add(1);
        self.next_send = now + self.retry;
        self.retry = (self.retry * 2).min(LAST_RETRY);
        out.frame = Some(self.message(message));
        out
    }

    /// Takes a DHCP message from the uplink.
    pub(crate) fn handle(
        &mut self,
        now: Instant,
        rng: &mut Random,
        payload: &[u8],
    ) -> Result<ClientOutput, DropReason> {
        let packet = DhcpPacket::new_checked(payload).map_err(|_| DropReason::Malformed)?;
        let reply = DhcpRepr::parse(&packet).map_err(|_| DropReason::Malformed)?;
        if packet.opcode() != DhcpOpCode::Reply
            || reply.transaction_id != self.xid
            || reply.client_hardware_address != self.mac
        {
            return Err(DropReason::DhcpIgnored);
        }
        let mut out = ClientOutput::default();
        match (self.state, reply.message_type) {
            (DhcpClientState::Selecting, DhcpMessageType::Offer) => {
                let server = reply.server_identifier.ok_or(DropReason::DhcpIgnored)?;
                if !usable_address(reply.your_ip) {
                    return Err(DropReason::DhcpIgnored);
                }
                self.offer = Some((server, reply.your_ip));
                self.state = DhcpClientState::Requesting;
                self.tries = 1;
                self.retry = FIRST_RETRY;
                self.next_send = now + self.retry;
                out.frame = Some(self.message(DhcpMessageType::Request));
            }
            (
                DhcpClientState::Requesting | DhcpClientState::Renewing | DhcpClientState::Rebinding,
                DhcpMessageType::Ack,
            ) => {
                if !usable_address(reply.your_ip) {
                    return Err(DropReason::DhcpIgnored);
                }
                let lease = lease_from(now, &reply, interface_mtu(&packet));
                let changed = self.lease.as_ref().map(|l| &l.config) != Some(&lease.config);
                if changed {
                    out.event = Some(ClientEvent::Configured(lease.config.clone()));
                }
                self.lease = Some(lease);
                self.state = DhcpClientState::Bound;
            }
            (
                DhcpClientState::Requesting | DhcpClientState::Renewing | DhcpClientState::Rebinding,
                DhcpMessageType::Nak,
            ) => {
                if self.lease.take().is_some() {
                    out.event = Some(ClientEvent::Deconfigured);
                }
                self.select(now, rng);
            }
            _ => return Err(DropReason::DhcpIgnored),
        }
        Ok(out)
    }

    fn message(&self, message_type: DhcpMessageType) -> Vec<u8> {
        let bound = self
            .lease
            .as_ref()
            .filter(|_| matches!(self.state, DhcpClientState::Renewing | DhcpClientState::Rebinding));
        let selecting = self.offer.filter(|_| self.state == DhcpClientState::Requesting);
        let repr = DhcpRepr {
            message_type,
            transaction_id: self.xid,
            secs: 0,
            client_hardware_address: self.mac,
            client_ip: bound.map_or(Ipv4Address::UNSPECIFIED, |l| l.config.address.address()),
            your_ip: Ipv4Address::UNSPECIFIED,
            server_ip: Ipv4Address::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Address::UNSPECIFIED,
            broadcast: false,
            requested_ip: selecting.map(|(_, ip)| ip),
            client_identifier: Some(self.mac),
            server_identifier: selecting.map(|(server, _)| server),
            parameter_request_list: Some(PARAMETERS),
            dns_servers: None,
            max_size: Some(1500),
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let ends = UdpEnds {
            src_mac: self.mac,
            dst_mac: EthernetAddress::BROADCAST,
            src: (bound.map_or(Ipv4Address::UNSPECIFIED, |l| l.config.address.address()), DHCP_CLIENT_PORT),
            dst: (Ipv4Address::BROADCAST, DHCP_SERVER_PORT),
        };
        dhcp_frame(ends, &repr)
    }
}

fn usable_address(ip: Ipv4Address) -> bool {
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback())
}

/// The interface MTU option (RFC 2132 §5.1), if the server sent one.
fn interface_mtu(packet: &DhcpPacket<&[u8]>) -> Option<u16> {
    packet
        .options()
        .find(|o| o.kind == crate::dhcp_server::OPTION_INTERFACE_MTU && o.data.len() == 2)
        .map(|o| u16::from_be_bytes([o.data[0], o.data[1]]))
}

fn lease_from(now: Instant, ack: &DhcpRepr<'_>, mtu: Option<u16>) -> Lease {
    let prefix = ack
        .subnet_mask
        .and_then(|m| Ipv4Cidr::from_netmask(ack.your_ip, m).ok())
        .unwrap_or(Ipv4Cidr::new(ack.your_ip, 32));
    let config = UplinkConfig {
        address: prefix,
        gateway: ack.router.filter(|r| usable_address(*r)),
        dns: ack
            .dns_servers
            .as_ref()
            .map(|d| d.iter().copied().filter(|a| usable_address(*a)).collect())
            .unwrap_or_default(),
        mtu: mtu.unwrap_or(UplinkConfig::DEFAULT_MTU),
    };
    let lease = ack.lease_duration.map_or(DEFAULT_LEASE, |s| Duration::from_secs(u64::from(s)));
    let renew = ack.renew_duration.map_or(lease / 2, |s| Duration::from_secs(u64::from(s)).min(lease));
    let rebind = ack.rebind_duration.map_or(lease * 7 / 8, |s| Duration::from_secs(u64::from(s)).min(lease));
    Lease { config, renew_at: now + renew, rebind_at: now + rebind, expires: now + lease }
}
