//! The check-in agent: every check-in interval the service VM asks the hypervisor for a
//! check-in request (`POLICY_CHECKIN`), sends it to the management server over its own
//! TCP connection from the uplink address, and hands the server's answer back
//! (`POLICY_ANSWER`). The agent is a courier: the hypervisor checks the answer's
//! signature and nonce, so the agent (like anyone on the way) cannot make an answer
//! acceptable.
//!
//! The connection runs on a smoltcp interface of IP medium: the router gives it the
//! uplink's TCP segments for [`Limits::local_ports`](crate::Limits) and sends what it
//! emits out of the uplink (`Router::take_local_packet` / `Router::send_local`), so
//! ARP and the uplink's MAC stay the router's.

pub mod http;
pub mod request;
pub mod schedule;

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::RangeInclusive;

use bulkhead_abi::hypercall::{POLICY_ANSWER_MAX, PolicyAnswer, PolicyCheckin};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpCidr, Ipv4Address};

use self::http::{HttpError, checkin_request, parse_response};
use self::request::{UrlError, checkin_body, parse_server};
use self::schedule::Schedule;
use crate::router::UplinkConfig;

/// A check-in that has not finished in this time is given up.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Packets the agent may have waiting in either direction.
const QUEUE: usize = 64;
const MTU: usize = 1500;

/// The hypervisor's side of a check-in (the two hypercalls; a fake in tests).
pub trait PolicyCalls {
    /// `POLICY_CHECKIN`: `None` when the laptop has no management server.
    fn checkin(&mut self) -> Option<PolicyCheckin>;
    /// `POLICY_ANSWER`: `None` when the call is refused.
    fn answer(&mut self, answer: &[u8]) -> Option<PolicyAnswer>;
}

/// What a check-in came to, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The hypervisor took the answer; its verdict.
    CheckedIn(PolicyAnswer),
    /// No connection (`reset`: the server's side refused it), or no answer in time;
    /// the next try is after `retry`.
    Unreachable { reset: bool, retry: Duration },
    /// The server answered with an error status or something that is not an answer.
    BadAnswer { status: Option<u16>, error: Option<HttpError>, retry: Duration },
    /// The hypervisor refused the answer outright (the call failed).
    AnswerRefused,
    /// The laptop has no management server (asked again later).
    Unmanaged,
    /// The policy's server URL is not one the agent can use.
    BadServer(UrlError),
}

/// The interface's packets: in from the router, out to it.
#[derive(Debug, Default)]
pub struct Queues {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
}

#[derive(Debug)]
pub struct RxToken(Vec<u8>);
#[derive(Debug)]
pub struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0u8; len];
        let r = f(&mut packet);
        if self.0.len() < QUEUE {
            self.0.push_back(packet);
        }
        r
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        (self.tx.len() < QUEUE).then_some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        caps
    }
}

/// One check-in on the wire.
#[derive(Debug)]
struct Exchange {
    socket: SocketHandle,
    request: Vec<u8>,
    sent: usize,
    response: Vec<u8>,
    connected: bool,
    deadline: Instant,
    interval_s: u32,
}

pub struct Agent {
    iface: Interface,
    sockets: SocketSet<'static>,
    pub queues: Queues,
    schedule: Schedule,
    exchange: Option<Exchange>,
    ports: RangeInclusive<u16>,
    next_port: u16,
    address: Option<Ipv4Address>,
    /// How the last exchange ended: the socket's state, request bytes sent, answer
    /// bytes received (for the log).
    pub last_state: Option<(tcp::State, usize, usize)>,
}

impl core::fmt::Debug for Agent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Agent").field("address", &self.address).field("busy", &self.exchange.is_some()).finish()
    }
}

/// Bytes a whole answer may take on the wire.
pub const MAX_RESPONSE: usize = http::MAX_HEAD + POLICY_ANSWER_MAX as usize;

impl Agent {
    /// An agent whose connections use source ports from `ports` (the router's local
    /// range); `seed` varies the first port and TCP's initial sequence numbers.
    pub fn new(ports: RangeInclusive<u16>, seed: u64, now: Instant) -> Agent {
        let mut queues = Queues::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let iface = Interface::new(config, &mut queues, now);
        let span = u64::from(ports.end().saturating_sub(*ports.start())).saturating_add(1);
        let next_port = ports.start().saturating_add((seed % span) as u16);
        Agent {
            iface,
            sockets: SocketSet::new(Vec::new()),
            queues,
            schedule: Schedule::default(),
            exchange: None,
            ports,
            next_port,
            address: None,
            last_state: None,
        }
    }

    /// Whether a check-in is on the wire.
    pub fn busy(&self) -> bool {
        self.exchange.is_some()
    }

    /// Follows the uplink's address and gateway; an exchange on an old address ends.
    fn follow_uplink(&mut self, uplink: Option<&UplinkConfig>) {
        let address = uplink.map(|u| u.address.address());
        if address == self.address {
            return;
        }
        self.address = address;
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            if let Some(u) = uplink {
                let _ = addrs.push(IpCidr::Ipv4(u.address));
            }
        });
        self.iface.routes_mut().remove_default_ipv4_route();
        if let Some(gateway) = uplink.and_then(|u| u.gateway) {
            let _ = self.iface.routes_mut().add_default_ipv4_route(gateway);
        }
        if let Some(e) = self.exchange.take() {
            self.sockets.remove(e.socket);
        }
    }

    fn take_port(&mut self) -> u16 {
        let port = self.next_port;
        self.next_port = if port >= *self.ports.end() { *self.ports.start() } else { port.saturating_add(1) };
        port
    }

    /// Runs the agent at `now`: starts a check-in when one is due, moves the exchange
    /// on, and returns what a finished one came to. Packets in `queues.rx` are taken;
    /// packets to send are left in `queues.tx`.
    pub fn poll(&mut self, now: Instant, uplink: Option<&UplinkConfig>, calls: &mut impl PolicyCalls) -> Option<Event> {
        self.follow_uplink(uplink);
        if self.exchange.is_none()
            && self.schedule.due(now, self.address.is_some())
            && let Err(event) = self.start(now, calls)
        {
            return Some(event);
        }
        self.iface.poll(now, &mut self.queues, &mut self.sockets);
        let event = self.progress(now, calls);
        // Whatever the socket queued after reading (ACKs, FIN) goes out in this round.
        self.iface.poll(now, &mut self.queues, &mut self.sockets);
        event
    }

    fn start(&mut self, now: Instant, calls: &mut impl PolicyCalls) -> Result<(), Event> {
        let Some(checkin) = calls.checkin() else {
            self.schedule.unmanaged(now);
            return Err(Event::Unmanaged);
        };
        let (server, port) = match parse_server(checkin.server()) {
            Ok(s) => s,
            Err(e) => {
                self.schedule.unmanaged(now);
                return Err(Event::BadServer(e));
            }
        };
        let Some(local) = self.address else { return Ok(()) };
        let request = checkin_request(server, port, &checkin_body(&checkin));
        let mut socket =
            tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 8192]), tcp::SocketBuffer::new(vec![0; request.len()]));
        let local_port = self.take_port();
        if socket.connect(self.iface.context(), (server, port), (local, local_port)).is_err() {
            let retry = self.schedule.failed(now, checkin.interval_s);
            return Err(Event::Unreachable { reset: false, retry });
        }
        let handle = self.sockets.add(socket);
        self.exchange = Some(Exchange {
            socket: handle,
            request,
            sent: 0,
            response: Vec::new(),
            connected: false,
            deadline: now + EXCHANGE_TIMEOUT,
            interval_s: checkin.interval_s,
        });
        Ok(())
    }

    fn progress(&mut self, now: Instant, calls: &mut impl PolicyCalls) -> Option<Event> {
        let e = self.exchange.as_mut()?;
        let socket = self.sockets.get_mut::<tcp::Socket>(e.socket);
        e.connected |= socket.may_send() || socket.may_recv();
        if socket.can_send() && e.sent < e.request.len() {
            e.sent = e.sent.saturating_add(socket.send_slice(&e.request[e.sent..]).unwrap_or(0));
        }
        let mut overflow = false;
        while socket.can_recv() {
            let room = MAX_RESPONSE.saturating_sub(e.response.len());
            let got = socket.recv(|data| {
                let n = data.len().min(room);
                (data.len(), (&data[..n], data.len() > n))
            });
            match got {
                Ok((data, cut)) => {
                    let data = data.to_vec();
                    e.response.extend_from_slice(&data);
                    overflow |= cut;
                }
                Err(_) => break,
            }
        }
        let closed = e.connected && !socket.may_recv();
        let refused = !e.connected && socket.state() == tcp::State::Closed;
        let parsed = parse_response(&e.response, closed, POLICY_ANSWER_MAX as usize);
        let outcome = match parsed {
            Ok(Some(response)) if response.status == 200 => Some(Ok(calls.answer(response.body))),
            Ok(Some(response)) => Some(Err((Some(response.status), None))),
            Err(error) => Some(Err((None, Some(error)))),
            Ok(None) if overflow => Some(Err((None, Some(HttpError::TooLarge)))),
            Ok(None) if refused || now >= e.deadline => None,
            Ok(None) => return None,
        };
        let interval_s = e.interval_s;
        let handle = e.socket;
        self.last_state = Some((socket.state(), e.sent, e.response.len()));
        self.exchange = None;
        self.sockets.get_mut::<tcp::Socket>(handle).abort();
        self.iface.poll(now, &mut self.queues, &mut self.sockets);
        self.sockets.remove(handle);
        Some(match outcome {
            Some(Ok(Some(answer))) => {
                self.schedule.succeeded(now, interval_s);
                Event::CheckedIn(answer)
            }
            Some(Ok(None)) => {
                self.schedule.succeeded(now, interval_s);
                Event::AnswerRefused
            }
            Some(Err((status, error))) => {
                let retry = self.schedule.failed(now, interval_s);
                Event::BadAnswer { status, error, retry }
            }
            None => Event::Unreachable { reset: refused, retry: self.schedule.failed(now, interval_s) },
        })
    }

    /// When the agent next needs to run (a due check-in or TCP's timers).
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let tcp = self.iface.poll_at(now, &self.sockets);
        let exchange = self.exchange.as_ref().map(|e| e.deadline);
        [tcp, exchange, self.schedule.next()].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests;
