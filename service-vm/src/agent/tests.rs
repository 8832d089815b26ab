//! The agent against a server on a second smoltcp interface, packets carried by hand.

use alloc::string::String;

use smoltcp::wire::Ipv4Cidr;

use super::*;

const AGENT_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
const SERVER_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

fn uplink() -> UplinkConfig {
    UplinkConfig { address: Ipv4Cidr::new(AGENT_IP, 24), gateway: None, dns: vec![], mtu: 1500 }
}

struct Fake {
    server: &'static str,
    managed: bool,
    answers: Vec<Vec<u8>>,
    checkins: u32,
}

impl PolicyCalls for Fake {
    fn checkin(&mut self) -> Option<PolicyCheckin> {
        if !self.managed {
            return None;
        }
        self.checkins += 1;
        let mut c = PolicyCheckin {
            device_id: [1; 16],
            nonce: [self.checkins as u8; 16],
            interval_s: 60,
            ..Default::default()
        };
        c.server[..self.server.len()].copy_from_slice(self.server.as_bytes());
        c.server_len = self.server.len() as u32;
        c.group[..5].copy_from_slice(b"staff");
        c.group_len = 5;
        Some(c)
    }

    fn answer(&mut self, answer: &[u8]) -> Option<PolicyAnswer> {
        self.answers.push(answer.to_vec());
        Some(PolicyAnswer::Accepted { version: 2 })
    }
}

fn fake(server: &'static str) -> Fake {
    Fake { server, managed: true, answers: vec![], checkins: 0 }
}

/// The management server's end: one listening socket that answers `reply` to the
/// first complete request and closes.
struct Server {
    iface: Interface,
    sockets: SocketSet<'static>,
    queues: Queues,
    socket: SocketHandle,
    request: Vec<u8>,
    reply: Vec<u8>,
    replied: bool,
    /// Drop every packet (a server that is not there).
    silent: bool,
}

impl Server {
    fn new(listen: bool, reply: Vec<u8>) -> Server {
        let mut queues = Queues::default();
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut queues, Instant::ZERO);
        iface.update_ip_addrs(|a| a.push(IpCidr::Ipv4(Ipv4Cidr::new(SERVER_IP, 24))).unwrap());
        let mut socket =
            tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 4096]), tcp::SocketBuffer::new(vec![0; 65536]));
        if listen {
            socket.listen(8470).unwrap();
        }
        let mut sockets = SocketSet::new(Vec::new());
        let socket = sockets.add(socket);
        Server { iface, sockets, queues, socket, request: vec![], reply, replied: false, silent: false }
    }

    fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.queues, &mut self.sockets);
        let s = self.sockets.get_mut::<tcp::Socket>(self.socket);
        while s.can_recv() {
            s.recv(|d| {
                self.request.extend_from_slice(d);
                (d.len(), ())
            })
            .unwrap();
        }
        let complete = self.request.windows(4).position(|w| w == b"\r\n\r\n").is_some_and(|at| {
            let head = String::from_utf8_lossy(&self.request[..at]).into_owned();
            let len: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
            self.request.len() >= at + 4 + len
        });
        if complete && !self.replied && s.can_send() {
            assert_eq!(s.send_slice(&self.reply).unwrap(), self.reply.len());
            s.close();
            self.replied = true;
        }
        self.iface.poll(now, &mut self.queues, &mut self.sockets);
    }
}

/// Runs both ends in 10 ms steps for `secs`, collecting the agent's events.
fn run(agent: &mut Agent, calls: &mut Fake, server: &mut Server, from: Instant, secs: u64) -> Vec<Event> {
    let mut events = vec![];
    let mut now = from;
    while now < from + Duration::from_secs(secs) {
        events.extend(agent.poll(now, Some(&uplink()), calls));
        for p in agent.queues.tx.drain(..) {
            if !server.silent {
                server.queues.rx.push_back(p);
            }
        }
        server.poll(now);
        for p in server.queues.tx.drain(..) {
            agent.queues.rx.push_back(p);
        }
        now += Duration::from_millis(10);
    }
    events
}

fn answer_reply(body: &[u8]) -> Vec<u8> {
    let mut r = alloc::format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn a_checkin_posts_the_request_and_hands_the_answer_to_the_hypervisor() {
    let mut agent = Agent::new(62000..=62099, 7, Instant::ZERO);
    let mut calls = fake("http://10.0.2.2:8470");
    let body = vec![0xab; 3000];
    let mut server = Server::new(true, answer_reply(&body));
    let events = run(&mut agent, &mut calls, &mut server, Instant::ZERO, 5);
    assert_eq!(events, vec![Event::CheckedIn(PolicyAnswer::Accepted { version: 2 })]);
    assert_eq!(calls.answers, vec![body]);
    let text = String::from_utf8_lossy(&server.request).into_owned();
    assert!(text.starts_with("POST /v1/checkin HTTP/1.1\r\nHost: 10.0.2.2:8470\r\n"), "{text}");
    assert!(server.request.ends_with(&checkin_body(&fake("x").checkin().unwrap())));
    assert!(!agent.busy());
    // The next check-in is an interval later, not before.
    let mut quiet = Server::new(false, vec![]);
    assert!(run(&mut agent, &mut calls, &mut quiet, Instant::from_secs(5), 50).is_empty());
    assert_eq!(calls.checkins, 1);
}

#[test]
fn a_refused_connection_is_retried_with_backoff() {
    let mut agent = Agent::new(62000..=62099, 7, Instant::ZERO);
    let mut calls = fake("http://10.0.2.2:8470");
    let mut server = Server::new(false, vec![]);
    // The first try at 2 s is reset at once, the second 5 s later, the third 10 s later.
    let events = run(&mut agent, &mut calls, &mut server, Instant::ZERO, 18);
    let waits: Vec<u64> = events
        .iter()
        .map(|e| match e {
            Event::Unreachable { reset: true, retry } => retry.secs(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(waits, [5, 10, 20]);
    assert_eq!(calls.checkins, 3);
    assert!(calls.answers.is_empty());
}

#[test]
fn a_silent_server_times_out() {
    let mut agent = Agent::new(62000..=62099, 7, Instant::ZERO);
    let mut calls = fake("http://10.0.2.2:8470");
    let mut server = Server::new(true, vec![]);
    server.silent = true;
    let events = run(&mut agent, &mut calls, &mut server, Instant::ZERO, 14);
    assert_eq!(events, vec![Event::Unreachable { reset: false, retry: Duration::from_secs(5) }]);
    assert!(!agent.busy());
}

#[test]
fn error_statuses_and_oversized_answers_are_not_handed_over() {
    for (reply, expected) in [
        (b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy".to_vec(), (Some(503), None)),
        (
            alloc::format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", POLICY_ANSWER_MAX + 1).into_bytes(),
            (None, Some(HttpError::TooLarge)),
        ),
    ] {
        let mut agent = Agent::new(62000..=62099, 7, Instant::ZERO);
        let mut calls = fake("http://10.0.2.2:8470");
        let mut server = Server::new(true, reply);
        let events = run(&mut agent, &mut calls, &mut server, Instant::ZERO, 5);
        let retry = Duration::from_secs(5);
        assert_eq!(events, vec![Event::BadAnswer { status: expected.0, error: expected.1, retry }]);
        assert!(calls.answers.is_empty());
    }
}

#[test]
fn unmanaged_laptops_and_unusable_urls_do_not_connect() {
    let mut agent = Agent::new(62000..=62099, 7, Instant::ZERO);
    let mut calls = fake("http://mgmt.example.com");
    let mut server = Server::new(true, vec![]);
    let events = run(&mut agent, &mut calls, &mut server, Instant::ZERO, 5);
    assert_eq!(events, vec![Event::BadServer(UrlError::NotAnAddress)]);
    let mut agent = Agent::new(62000..=62099, 7, Instant::ZERO);
    calls.managed = false;
    assert_eq!(run(&mut agent, &mut calls, &mut server, Instant::ZERO, 5), vec![Event::Unmanaged]);
    assert!(server.request.is_empty());
}

/// The whole path in the service VM: the agent's segments through the router's local
/// port range and out of the uplink as Ethernet frames, the server's back in.
#[test]
fn a_checkin_goes_through_the_router() {
    use smoltcp::wire::{ArpOperation, ArpRepr, EthernetAddress, EthernetFrame};

    use crate::frame::{arp_frame, ipv4_frame};
    use crate::{AddressPlan, Limits, Port, Router, RouterConfig};

    let uplink_mac = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    let gateway_mac = EthernetAddress([0x52, 0x55, 0x0a, 0, 2, 2]);
    let config =
        RouterConfig { plan: AddressPlan::DEFAULT, links: vec![], uplink_mac, limits: Limits::default(), seed: 1 };
    let mut router = Router::new(config).unwrap();
    let up = UplinkConfig { gateway: Some(SERVER_IP), ..uplink() };
    router.set_uplink(Some(up.clone())).unwrap();
    let mut agent = Agent::new(Limits::default().local_ports, 7, Instant::ZERO);
    let mut calls = fake("http://10.0.2.2:8470");
    let body = vec![0x5a; 2000];
    let mut server = Server::new(true, answer_reply(&body));
    let mut events = vec![];
    let mut now = Instant::ZERO;
    let mut out = Vec::new();
    while now < Instant::from_secs(5) {
        while let Some(p) = router.take_local_packet() {
            agent.queues.rx.push_back(p);
        }
        events.extend(agent.poll(now, router.uplink(), &mut calls));
        for p in agent.queues.tx.drain(..) {
            router.send_local(now, p, &mut out);
        }
        let mut released = Vec::new();
        for t in core::mem::take(&mut out) {
            let eth = EthernetFrame::new_checked(&t.frame[..]).unwrap();
            if eth.ethertype() == smoltcp::wire::EthernetProtocol::Arp {
                let reply = ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Reply,
                    source_hardware_addr: gateway_mac,
                    source_protocol_addr: SERVER_IP,
                    target_hardware_addr: uplink_mac,
                    target_protocol_addr: AGENT_IP,
                };
                router.handle_frame(now, Port::Uplink, &arp_frame(gateway_mac, uplink_mac, reply), &mut released);
                continue;
            }
            server.queues.rx.push_back(eth.payload().to_vec());
        }
        for t in released {
            server.queues.rx.push_back(t.frame[14..].to_vec());
        }
        server.poll(now);
        for p in server.queues.tx.drain(..) {
            // Short frames are padded to Ethernet's minimum on the wire.
            let mut frame = ipv4_frame(gateway_mac, uplink_mac, &p);
            frame.resize(frame.len().max(60), 0);
            router.handle_frame(now, Port::Uplink, &frame, &mut out);
        }
        now += Duration::from_millis(10);
    }
    assert_eq!(events, vec![Event::CheckedIn(PolicyAnswer::Accepted { version: 2 })]);
    assert_eq!(calls.answers, vec![body]);
}
