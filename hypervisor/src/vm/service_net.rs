//! The hypervisor's side of the networking service VM: the configuration text it is
//! given (`NET_CONFIG`) and the state it reports (`NET_STATUS`), which the switcher's
//! strips show per desktop and the log records when it changes.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use bulkhead_abi::hypercall::{NET_LINK_UP, NET_UPLINK_ADDRESS, NetStatus};
use log::info;

use crate::log_limit::Source;
use crate::vcpu::dispatch::NetworkService;
use crate::vm::config::NetRule;

/// One desktop link of the service VM, in the order of its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLink {
    /// The desktop VM's name.
    pub desktop: String,
    /// The MAC of the desktop's virtio-net device on this link.
    pub desktop_mac: [u8; 6],
    pub rule: NetRule,
}

/// The configuration text `service-vm/src/service_config.rs` parses: one `link` line
/// per desktop, in port order, and the TSC rate.
pub fn config_text(links: &[ServiceLink], tsc_khz: u64) -> String {
    let mut text = String::new();
    for (i, link) in links.iter().enumerate() {
        let m = link.desktop_mac;
        let _ = write!(
            text,
            "link {i} vm={} mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} rule=",
            link.desktop, m[0], m[1], m[2], m[3], m[4], m[5]
        );
        match &link.rule {
            NetRule::Internet => text.push_str("internet"),
            NetRule::Isolated => text.push_str("isolated"),
            NetRule::CorporateOnly(allow) => {
                let _ = write!(text, "corporate-only allow={}", allow.join(","));
            }
        }
        text.push('\n');
    }
    let _ = writeln!(text, "clock tsc_khz={tsc_khz}");
    text
}

/// Which desktops have a working network, for the strips: (desktop name, connected).
static CONNECTED: spin::Mutex<Vec<(String, bool)>> = spin::Mutex::new(Vec::new());

/// Whether the service VM last reported `desktop`'s link up.
pub fn desktop_connected(desktop: &str) -> bool {
    CONNECTED.lock().iter().any(|(name, up)| name == desktop && *up)
}

/// The service VM's end: its configuration text and the last state it reported.
#[derive(Debug)]
pub struct ServiceNetwork {
    /// The service VM's id (its log budget).
    vm: u32,
    links: Vec<ServiceLink>,
    tsc_khz: u64,
    text: Vec<u8>,
    /// Moves each time an accepted policy update changes `text`.
    generation: u64,
    last: Option<NetStatus>,
}

impl ServiceNetwork {
    pub fn new(vm: u32, links: Vec<ServiceLink>, tsc_khz: u64) -> Self {
        let text = config_text(&links, tsc_khz).into_bytes();
        ServiceNetwork { vm, links, tsc_khz, text, generation: 0, last: None }
    }

    /// Gives each link its rule under a newly accepted policy; the service VM sees the
    /// generation move and fetches the text again.
    pub fn apply_policy(&mut self, policy: &bulkhead_policy::Policy) {
        let rules = crate::vm::service_policy::rules_from_policy(policy, &self.links);
        for (link, rule) in self.links.iter_mut().zip(rules) {
            link.rule = rule;
        }
        let text = config_text(&self.links, self.tsc_khz).into_bytes();
        if text != self.text {
            self.text = text;
            self.generation = self.generation.wrapping_add(1);
        }
    }

    /// The service VM stopped: no desktop has a network until it reports again.
    pub fn service_stopped(&mut self) {
        self.last = None;
        for (_, up) in CONNECTED.lock().iter_mut() {
            *up = false;
        }
    }
}

fn dotted(address: u32) -> [u8; 4] {
    address.to_be_bytes()
}

impl NetworkService for ServiceNetwork {
    fn config_text(&self) -> &[u8] {
        &self.text
    }

    fn report(&mut self, status: &NetStatus) {
        let before = self.last.unwrap_or_default();
        if status.uplink_flags != before.uplink_flags || status.uplink_address != before.uplink_address {
            let [a, b, c, d] = dotted(status.uplink_address);
            let has_address = status.uplink_flags & NET_UPLINK_ADDRESS != 0;
            crate::limited!(
                Source::Network,
                self.vm,
                info!(target: "net", "uplink: {}", if has_address { alloc::format!("{a}.{b}.{c}.{d}") } else { String::from("no address") })
            );
        }
        let mut connected = CONNECTED.lock();
        connected.clear();
        for (i, link) in self.links.iter().enumerate() {
            let now = status.links.get(i).filter(|_| i < status.link_count as usize).copied().unwrap_or_default();
            let was = before.links.get(i).copied().unwrap_or_default();
            let up = now.flags & NET_LINK_UP != 0;
            if (now.flags, now.address) != (was.flags, was.address) || self.last.is_none() {
                let [a, b, c, d] = dotted(now.address);
                crate::limited!(
                    Source::Network,
                    self.vm,
                    info!(target: "net", "{}: link {} ({a}.{b}.{c}.{d})", link.desktop, if up { "up" } else { "down" })
                );
            }
            connected.push((link.desktop.clone(), up));
        }
        self.last = Some(*status);
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn policy_checkin(&mut self) -> Option<bulkhead_abi::hypercall::PolicyCheckin> {
        crate::vm::service_policy::checkin(self.vm, self.generation)
    }

    fn policy_answer(&mut self, answer: &[u8]) -> Option<bulkhead_abi::hypercall::PolicyAnswer> {
        let (status, accepted) = crate::vm::service_policy::answer(self.vm, answer)?;
        if let Some(policy) = accepted {
            self.apply_policy(&policy);
        }
        Some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_abi::hypercall::NetLinkStatus;

    fn links() -> Vec<ServiceLink> {
        vec![
            ServiceLink {
                desktop: "personal".into(),
                desktop_mac: [0x0a, 0xb3, 0xec, 0, 1, 0],
                rule: NetRule::Internet,
            },
            ServiceLink {
                desktop: "corporate".into(),
                desktop_mac: [0x0a, 0xb3, 0xec, 0, 0, 0],
                rule: NetRule::CorporateOnly(vec!["10.0.2.2/32:8080".into(), "192.168.0.0/16".into()]),
            },
        ]
    }

    #[test]
    fn the_text_names_each_link_in_port_order() {
        assert_eq!(
            config_text(&links(), 2_500_000),
            "link 0 vm=personal mac=0a:b3:ec:00:01:00 rule=internet\n\
             link 1 vm=corporate mac=0a:b3:ec:00:00:00 rule=corporate-only allow=10.0.2.2/32:8080,192.168.0.0/16\n\
             clock tsc_khz=2500000\n"
        );
    }

    #[test]
    fn a_policy_that_changes_a_rule_moves_the_generation() {
        use bulkhead_policy::model::{NetRule as PolicyRule, Network, Target};
        let mut net = ServiceNetwork::new(2, links(), 1000);
        let corporate = |allow: &str| bulkhead_policy::model::Vm {
            name: "corporate".into(),
            kind: bulkhead_policy::model::VmKind::Linux,
            image: String::new(),
            initrd: None,
            modules: vec![],
            cmdline: String::new(),
            memory_mib: 256,
            vcpus: 1,
            label: String::new(),
            colour: 0,
            restart: bulkhead_policy::model::Restart::Never,
            devices: vec![],
            network: Some(Network { via: "net".into(), rule: PolicyRule::CorporateOnly, allow: vec![allow.into()] }),
            needs_lease: false,
            disk: None,
            expect: None,
        };
        let mut personal = corporate("");
        personal.name = "personal".into();
        personal.network = Some(Network { via: "net".into(), rule: PolicyRule::Internet, allow: vec![] });
        let mut policy = bulkhead_policy::Policy {
            version: 2,
            issued_at: 0,
            expires_at: 1,
            target: Target::Group("staff".into()),
            organisation: String::new(),
            management: None,
            vms: vec![personal, corporate("10.0.2.2/32:8080")],
            links: vec![],
            hotkeys: vec![],
        };
        policy.vms[1].network.as_mut().unwrap().allow.push("192.168.0.0/16".into());
        let before = net.config_text().to_vec();
        net.apply_policy(&policy);
        assert_eq!((net.generation(), net.config_text()), (0, &before[..]), "the same rules: nothing moves");
        policy.vms[1] = corporate("10.9.0.0/16");
        net.apply_policy(&policy);
        assert_eq!(net.generation(), 1);
        let text = String::from_utf8(net.config_text().to_vec()).unwrap();
        assert!(text.contains("vm=corporate mac=0a:b3:ec:00:00:00 rule=corporate-only allow=10.9.0.0/16\n"), "{text}");
        assert!(text.contains("vm=personal mac=0a:b3:ec:00:01:00 rule=internet\n"), "{text}");
    }

    #[test]
    fn reports_set_which_desktops_are_connected() {
        let mut net = ServiceNetwork::new(2, links(), 1000);
        let mut status = NetStatus { link_count: 2, ..NetStatus::default() };
        status.links[1] = NetLinkStatus { flags: NET_LINK_UP, address: 0x0ad5_0006, ..NetLinkStatus::default() };
        net.report(&status);
        assert!(desktop_connected("corporate"));
        assert!(!desktop_connected("personal"));
        // A count beyond the links it has is not trusted for the others.
        status.link_count = 1;
        net.report(&status);
        assert!(!desktop_connected("corporate"));
        net.service_stopped();
        assert!(!desktop_connected("corporate"));
    }
}
