//! The check-in agent's place in the main loop: packets between the router and the
//! agent's interface, the two policy hypercalls, and one console line per check-in.

use alloc::vec::Vec;

use bulkhead_abi::hypercall::{PolicyAnswer, PolicyCheckin};
use service_vm::agent::{Agent, Event, PolicyCalls};
use service_vm::{Instant, Limits, Router, Transmit};

use super::hypercall;

struct Hypercalls;

impl PolicyCalls for Hypercalls {
    fn checkin(&mut self) -> Option<PolicyCheckin> {
        hypercall::policy_checkin()
    }

    fn answer(&mut self, answer: &[u8]) -> Option<PolicyAnswer> {
        hypercall::policy_answer(answer)
    }
}

pub fn new(now: Instant) -> Agent {
    Agent::new(Limits::default().local_ports, super::run::rdtsc(), now)
}

/// One round: the router's packets for the agent in, the agent run, its packets out
/// through the router. Returns whether anything moved, and a policy version the
/// hypervisor just accepted.
pub fn round(agent: &mut Agent, router: &mut Router, now: Instant, out: &mut Vec<Transmit>) -> (bool, Option<u64>) {
    let mut moved = false;
    while let Some(packet) = router.take_local_packet() {
        agent.queues.rx.push_back(packet);
        moved = true;
    }
    let event = agent.poll(now, router.uplink(), &mut Hypercalls);
    for packet in agent.queues.tx.drain(..) {
        router.send_local(now, packet, out);
        moved = true;
    }
    let accepted = match &event {
        Some(Event::CheckedIn(PolicyAnswer::Accepted { version })) => Some(*version),
        _ => None,
    };
    if let Some(event) = event {
        log_event(&event);
        if matches!(event, Event::Unreachable { .. } | Event::BadAnswer { .. }) {
            log::debug!(target: "agent", "agent: the exchange ended as (TCP state, bytes sent, bytes received) {:?}", agent.last_state);
        }
    }
    (moved, accepted)
}

fn log_event(event: &Event) {
    match event {
        Event::CheckedIn(PolicyAnswer::Accepted { version }) => {
            log::info!(target: "agent", "agent: checked in, policy v{version} accepted");
        }
        Event::CheckedIn(PolicyAnswer::UpToDate) => log::info!(target: "agent", "agent: checked in, up to date"),
        Event::CheckedIn(PolicyAnswer::BundleRefused(reason)) => {
            log::warn!(target: "agent", "agent: checked in; the hypervisor refused the new policy: {}", reason.name());
        }
        Event::CheckedIn(other) => log::warn!(target: "agent", "agent: the hypervisor refused the answer: {other:?}"),
        Event::AnswerRefused => log::warn!(target: "agent", "agent: the hypervisor refused the answer"),
        Event::Unreachable { reset, retry } => log::info!(
            target: "agent",
            "agent: server unreachable ({}); next try in {} s",
            if *reset { "connection refused" } else { "no answer" },
            retry.secs()
        ),
        Event::BadAnswer { status, error, retry } => log::warn!(
            target: "agent",
            "agent: the server's answer is not usable (status {status:?}, {error:?}); next try in {} s",
            retry.secs()
        ),
        Event::Unmanaged => log::info!(target: "agent", "agent: no management server in the policy"),
        Event::BadServer(e) => log::warn!(target: "agent", "agent: the policy's server URL is not usable: {e:?}"),
    }
}
