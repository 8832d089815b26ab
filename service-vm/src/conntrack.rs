//! Connection tracking: which state a translated flow is in and how long it may idle.

use smoltcp::time::Duration;

use crate::frame::TcpFlags;

/// The protocols the NAT translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Protocol {
    Tcp,
    Udp,
    /// ICMP echo; the identifier plays the part of the port.
    Icmp,
}

/// Where a TCP connection is, as far as the timeout cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlowState {
    /// UDP or ICMP: no states, one timeout.
    Stateless,
    /// The desktop sent SYN, no SYN-ACK yet.
    TcpOpening,
    /// The far end answered the SYN.
    TcpEstablished,
    /// A FIN went either way.
    TcpClosing,
    /// A RST went either way; the mapping lingers only for stragglers.
    TcpReset,
}

/// Who sent a packet of the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From the desktop.
    Outbound,
    /// From the far end.
    Inbound,
}

/// How long a mapping may idle in each state before it is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatTimeouts {
    /// TCP after the desktop's SYN, before the far end answers.
    pub tcp_opening: Duration,
    /// TCP once established (RFC 5382 REQ-5: at least 2 h 4 min).
    pub tcp_established: Duration,
    /// TCP after a FIN in either direction (two maximum segment lifetimes).
    pub tcp_closing: Duration,
    /// TCP after a RST.
    pub tcp_reset: Duration,
    /// UDP (RFC 4787 REQ-5: at least 2 min).
    pub udp: Duration,
    /// ICMP echo (RFC 5508 REQ-1: at least 60 s).
    pub icmp: Duration,
}

impl Default for NatTimeouts {
    fn default() -> Self {
        NatTimeouts {
            tcp_opening: Duration::from_secs(75),
            tcp_established: Duration::from_secs(7440),
            tcp_closing: Duration::from_secs(240),
            tcp_reset: Duration::from_secs(10),
            udp: Duration::from_secs(120),
            icmp: Duration::from_secs(60),
        }
    }
}

impl NatTimeouts {
    pub(crate) fn for_state(&self, protocol: Protocol, state: FlowState) -> Duration {
        match (protocol, state) {
            (Protocol::Udp, _) => self.udp,
            (Protocol::Icmp, _) => self.icmp,
            (Protocol::Tcp, FlowState::TcpEstablished) => self.tcp_established,
            (Protocol::Tcp, FlowState::TcpClosing) => self.tcp_closing,
            (Protocol::Tcp, FlowState::TcpReset) => self.tcp_reset,
            (Protocol::Tcp, FlowState::TcpOpening | FlowState::Stateless) => self.tcp_opening,
        }
    }
}

/// Whether a TCP segment may open a new mapping: a bare SYN from the desktop.
pub(crate) fn opens_tcp(flags: TcpFlags) -> bool {
    flags.syn && !flags.ack && !flags.rst && !flags.fin
}

/// The state after a TCP segment with `flags` went in `direction`.
pub(crate) fn next_tcp_state(state: FlowState, flags: TcpFlags, direction: Direction) -> FlowState {
    match state {
        FlowState::TcpReset => FlowState::TcpReset,
        _ if flags.rst => FlowState::TcpReset,
        FlowState::TcpClosing => FlowState::TcpClosing,
        _ if flags.fin => FlowState::TcpClosing,
        FlowState::TcpOpening if direction == Direction::Inbound && flags.syn && flags.ack => FlowState::TcpEstablished,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: TcpFlags = TcpFlags { syn: true, ack: false, fin: false, rst: false };
    const SYN_ACK: TcpFlags = TcpFlags { syn: true, ack: true, fin: false, rst: false };
    const ACK: TcpFlags = TcpFlags { syn: false, ack: true, fin: false, rst: false };
    const FIN: TcpFlags = TcpFlags { syn: false, ack: true, fin: true, rst: false };
    const RST: TcpFlags = TcpFlags { syn: false, ack: false, fin: false, rst: true };

    #[test]
    fn tcp_lifecycle() {
        use Direction::*;
        assert!(opens_tcp(SYN));
        assert!(!opens_tcp(SYN_ACK) && !opens_tcp(ACK));
        let s = FlowState::TcpOpening;
        assert_eq!(next_tcp_state(s, SYN_ACK, Outbound), FlowState::TcpOpening, "only the far end establishes");
        let s = next_tcp_state(s, SYN_ACK, Inbound);
        assert_eq!(s, FlowState::TcpEstablished);
        assert_eq!(next_tcp_state(s, ACK, Outbound), FlowState::TcpEstablished);
        let s = next_tcp_state(s, FIN, Inbound);
        assert_eq!(s, FlowState::TcpClosing);
        assert_eq!(next_tcp_state(s, SYN_ACK, Inbound), FlowState::TcpClosing);
        let s = next_tcp_state(s, RST, Outbound);
        assert_eq!(s, FlowState::TcpReset);
        assert_eq!(next_tcp_state(s, SYN_ACK, Inbound), FlowState::TcpReset);
    }

    #[test]
    fn timeouts_follow_state() {
        let t = NatTimeouts::default();
        assert_eq!(t.for_state(Protocol::Tcp, FlowState::TcpEstablished), t.tcp_established);
        assert_eq!(t.for_state(Protocol::Tcp, FlowState::TcpReset), t.tcp_reset);
        assert_eq!(t.for_state(Protocol::Udp, FlowState::Stateless), t.udp);
        assert!(t.tcp_established >= Duration::from_secs(2 * 3600 + 4 * 60));
        assert!(t.udp >= Duration::from_secs(120));
        assert!(t.icmp >= Duration::from_secs(60));
    }
}
