//! The main loop: frames in from every port go through the router, what it sends goes
//! out; the router's timers run; the status goes to the hypervisor; with nothing to do
//! the VM sleeps until a frame's interrupt or the next timer.

use alloc::vec;
use alloc::vec::Vec;

use bulkhead_abi::hypercall as abi;
use service_vm::e1000e::RxChecksum;
use service_vm::service_config::{self, LinkEntry};
use service_vm::{AddressPlan, EthernetAddress, Instant, Limits, LinkId, Port, Router, RouterConfig, Transmit};
use virtio_drivers::transport::pci::bus::PciRoot;

use super::pci::PortConfigAccess;
use super::ports::{self, LinkPort};
use super::uplink::{self, Uplink};
use super::{agent, hypercall};

/// Frames taken from one port per round, so one busy desktop cannot starve the others.
const FRAMES_PER_PORT: usize = 32;
/// Longest sleep: the router's timers (DHCP, NAT expiry) need no finer step.
const SLEEP_US: u64 = 20_000;
/// How often the status goes to the hypervisor when only counters change.
const STATUS_US: i64 = 1_000_000;
/// How often the link and uplink state is looked at for changes to report.
const CHECK_US: i64 = 1_000;
/// How often the counters may go to the console when frames are being dropped.
const COUNTERS_US: i64 = 5_000_000;

pub(super) fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The monotonic clock the router runs on, from the TSC at the rate the configuration
/// gives.
struct Clock {
    tsc_khz: u64,
    start: u64,
}

impl Clock {
    fn now(&self) -> Instant {
        let ticks = rdtsc().saturating_sub(self.start);
        let micros = ticks.saturating_mul(1000).checked_div(self.tsc_khz).unwrap_or(0);
        Instant::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }
}

pub fn run() -> ! {
    let mut text = vec![0u8; abi::NET_CONFIG_MAX as usize];
    let Some(config) = hypercall::net_config(&mut text) else {
        log::error!(target: "service", "the hypervisor gave no network configuration; stopping");
        hypercall::shutdown(2)
    };
    let parsed = match service_config::parse_service(config) {
        Ok(parsed) => parsed,
        Err(e) => {
            log::error!(target: "service", "{e}; stopping");
            hypercall::shutdown(2)
        }
    };
    let clock = Clock { tsc_khz: parsed.tsc_khz.max(1), start: rdtsc() };
    let mut root = PciRoot::new(PortConfigAccess);
    let mut ports = ports::find(&mut root);
    if ports.len() != parsed.links.len() {
        log::warn!(target: "service", "{} links configured but {} link ports found", parsed.links.len(), ports.len());
    }
    let mut uplink = uplink::find(&mut root, clock.tsc_khz);
    let uplink_mac = uplink.as_ref().map_or(NO_UPLINK_MAC, |nic| EthernetAddress(nic.mac()));
    let mut router = match Router::new(router_config(&parsed.links, uplink_mac)) {
        Ok(r) => r,
        Err(e) => {
            log::error!(target: "service", "router refused the configuration: {e:?}; stopping");
            hypercall::shutdown(2)
        }
    };
    for (i, link) in parsed.links.iter().enumerate() {
        let up = i < ports.len();
        router.set_link_up(LinkId(i as u8), up);
        if let Some(a) = router.link_addresses(LinkId(i as u8)) {
            log::info!(target: "service", "link {i} ({}): desktop {} gateway {} rule {:?}", link.vm, a.desktop, a.gateway, link.config.rule);
        }
    }
    if uplink.is_some() {
        router.start_uplink_dhcp(clock.now());
    }
    log::info!(
        target: "service",
        "SERVICE-VM READY links={} ports={} uplink={}",
        parsed.links.len(),
        ports.len(),
        if uplink.is_some() { "e1000e" } else { "none" }
    );
    let mut agent = agent::new(clock.now());
    let mut generation = 0u64;
    let mut out: Vec<Transmit> = Vec::new();
    let mut last_status = Instant::from_micros(i64::MIN / 2);
    let mut reported = abi::NetStatus::default();
    let mut reported_drops = 0u64;
    let mut last_counters = Instant::from_micros(i64::MIN / 2);
    let mut last_check = Instant::from_micros(i64::MIN / 2);
    loop {
        let now = clock.now();
        let mut busy = false;
        for (i, port) in ports.iter_mut().enumerate() {
            port.reclaim();
            let got = port.receive(FRAMES_PER_PORT, |frame| {
                router.handle_frame(now, Port::Link(LinkId(i as u8)), frame, &mut out);
            });
            busy |= got > 0;
        }
        if let Some(nic) = uplink.as_mut() {
            let got = nic.receive(FRAMES_PER_PORT, |frame, checksum| match checksum {
                RxChecksum::Good => router.handle_verified_uplink_frame(now, frame, &mut out),
                RxChecksum::Bad | RxChecksum::Unknown => router.handle_frame(now, Port::Uplink, frame, &mut out),
            });
            busy |= got > 0;
        }
        let (moved, accepted) = agent::round(&mut agent, &mut router, now, &mut out);
        busy |= moved;
        router.poll(now, &mut out);
        for t in out.drain(..) {
            router.recycle(send(&mut ports, uplink.as_mut(), t));
        }
        // One doorbell per port and one tail write for the uplink for the whole round.
        for port in ports.iter_mut() {
            port.flush();
        }
        if let Some(nic) = uplink.as_mut() {
            nic.flush_transmit();
        }
        // The state is looked at every millisecond at most (building it walks the
        // router's tables), and at once after an accepted update.
        if accepted.is_some() || (now - last_check).total_micros() >= CHECK_US as u64 {
            last_check = now;
            let mut status = status_of(&router, parsed.links.len());
            if let Some(nic) = uplink.as_mut()
                && nic.link().up
            {
                status.uplink_flags |= abi::NET_UPLINK_UP;
            }
            // A link or the uplink changing state is reported at once, counters once a second.
            // After an accepted update the report goes at once: its answer carries the
            // generation of the new rules.
            if changed_state(&status, &reported)
                || accepted.is_some()
                || (now - last_status).total_micros() >= STATUS_US as u64
            {
                let now_generation = hypercall::net_status(&status);
                reported = status;
                last_status = now;
                // A negative value is an error from a hypervisor without generations.
                if (now_generation as i64) >= 0 && now_generation != generation {
                    generation = now_generation;
                    reload_rules(&mut router, parsed.links.len());
                }
            }
        }
        // The counters, when a drop happened since they were last shown (at most every
        // few seconds, so a desktop that sends garbage cannot flood the console): what
        // the router refused and why.
        if (now - last_counters).total_micros() >= COUNTERS_US as u64 {
            let s = router.status();
            let drops =
                s.links.iter().map(|l| l.counters.dropped_total()).sum::<u64>() + s.uplink.counters.dropped_total();
            last_counters = now;
            if drops != reported_drops {
                reported_drops = drops;
                for line in alloc::format!("{s}").lines() {
                    log::info!(target: "router", "{line}");
                }
            }
        }
        if !busy && !rearm_interrupts(&mut ports, uplink.as_mut()) {
            hypercall::sleep(SLEEP_US);
        }
    }
}

/// Before sleeping: lowers every port's interrupt line (an ISR read, one exit each)
/// and re-arms the uplink's (an ICR read), then looks again for frames that came in
/// meanwhile; `true` if one did (no sleep: the next round takes it). A frame that
/// arrives after this raises the line and ends the sleep. Busy rounds skip this, so
/// a busy link costs no exit per round for interrupts.
fn rearm_interrupts(ports: &mut [LinkPort], uplink: Option<&mut Uplink>) -> bool {
    let mut waiting = false;
    for port in ports.iter_mut() {
        port.ack_interrupt();
        waiting |= port.has_received();
    }
    if let Some(nic) = uplink {
        nic.take_interrupt_causes();
        waiting |= nic.has_received();
    }
    waiting
}

/// Fetches the configuration again after a policy update and gives each link its new
/// rule (links themselves change only with a restart).
fn reload_rules(router: &mut Router, links: usize) {
    let mut text = vec![0u8; abi::NET_CONFIG_MAX as usize];
    let parsed = hypercall::net_config(&mut text).map(service_config::parse_service);
    let Some(Ok(parsed)) = parsed else {
        log::warn!(target: "service", "the updated network configuration does not parse; rules unchanged");
        return;
    };
    if parsed.links.len() != links {
        log::warn!(target: "service", "the updated configuration has {} links, not {links}; new links need a restart", parsed.links.len());
    }
    for (i, link) in parsed.links.iter().enumerate().take(links) {
        if router.replace_link_rule(LinkId(i as u8), link.config.rule.clone()) {
            log::info!(target: "service", "link {i} ({}): rule now {:?}", link.vm, link.config.rule);
        }
    }
}

/// Queues the frame on its port (both copy it) and gives its buffer back.
fn send(ports: &mut [LinkPort], uplink: Option<&mut Uplink>, t: Transmit) -> Vec<u8> {
    match t.port {
        Port::Uplink => {
            if let Some(nic) = uplink
                && let Err(e) = nic.queue_transmit(&t.frame)
            {
                log::debug!(target: "uplink", "frame not sent: {e:?}");
            }
        }
        Port::Link(link) => {
            if let Some(port) = ports.get_mut(link.index()) {
                port.queue(&t.frame, t.checksum_good);
            }
        }
    }
    t.frame
}

/// The router's uplink address without an uplink NIC: locally administered, never sent.
const NO_UPLINK_MAC: EthernetAddress = EthernetAddress([0x0a, 0xb3, 0xec, 0xff, 0xff, 0x01]);

fn router_config(links: &[LinkEntry], uplink_mac: EthernetAddress) -> RouterConfig {
    RouterConfig {
        plan: AddressPlan::DEFAULT,
        links: links.iter().map(|l| l.config.clone()).collect(),
        uplink_mac,
        limits: Limits::default(),
        seed: rdtsc(),
    }
}

fn status_of(router: &Router, links: usize) -> abi::NetStatus {
    let mut status = abi::NetStatus::default();
    let s = router.status();
    status.link_count = links.min(abi::NET_STATUS_LINKS) as u32;
    for (slot, link) in status.links.iter_mut().zip(s.links.iter()) {
        slot.flags = if link.up { abi::NET_LINK_UP } else { 0 };
        slot.address = u32::from_be_bytes(link.desktop.octets());
        slot.frames_in = link.counters.received;
        slot.frames_out = link.counters.transmitted;
        slot.dropped = link.counters.dropped_total();
    }
    if let Some(address) = s.uplink.address {
        status.uplink_flags = abi::NET_UPLINK_ADDRESS;
        status.uplink_address = u32::from_be_bytes(address.address().octets());
    }
    status
}

/// Whether a link or the uplink came up, went down or changed address.
fn changed_state(now: &abi::NetStatus, before: &abi::NetStatus) -> bool {
    now.uplink_flags != before.uplink_flags
        || now.uplink_address != before.uplink_address
        || now.link_count != before.link_count
        || now.links.iter().zip(before.links.iter()).any(|(a, b)| a.flags != b.flags || a.address != b.address)
}
