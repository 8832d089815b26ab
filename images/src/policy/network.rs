//! A VM's `network = { via, rule, allow }`: its link to the networking service VM and
//! what it may reach through it.

use std::ops::Range;

use bulkhead_policy::model::{NetRule, Network, Vm, VmKind};
use bulkhead_policy::syntax;

use super::diagnostics::Diagnostics;
use super::source::VmEntry;

/// Checks every `network` and stores it in its VM (`vms` is in `entries`' order).
pub fn check(d: &mut Diagnostics, entries: &[(Range<usize>, VmEntry)], vms: &mut [(i64, Vm)], unreadable: &[String]) {
    let mut per_service: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (index, (_, entry)) in entries.iter().enumerate() {
        let Some(net) = &entry.network else { continue };
        let net_span = net.span();
        let net = net.get_ref();
        let kind = vms.get(index).map(|(_, v)| v.kind);
        if !matches!(kind, Some(VmKind::Linux | VmKind::Payload)) {
            d.error(net_span.clone(), "only a kind = \"linux\" (or \"payload\") VM has a network: remove it");
        }
        let via = net.via.get_ref();
        match vms.iter().find(|(_, v)| v.name == *via) {
            None if unreadable.contains(via) => {}
            None => d.error(net.via.span(), format!("via \"{via}\" names no VM: name the kind = \"service\" VM")),
            Some((_, v)) if v.kind != VmKind::Service => d.error(
                net.via.span(),
                format!("via \"{via}\" is not a kind = \"service\" VM: a network goes through the service VM"),
            ),
            Some(_) => {
                let n = per_service.entry(via.clone()).or_default();
                *n += 1;
                if *n == syntax::MAX_SERVICE_LINKS + 1 {
                    d.error(
                        net.via.span(),
                        format!("the service VM {via} serves at most {} desktops", syntax::MAX_SERVICE_LINKS),
                    );
                }
            }
        }
        let rule = match net.rule.get_ref().as_str() {
            "internet" => NetRule::Internet,
            "corporate-only" => NetRule::CorporateOnly,
            "isolated" => NetRule::Isolated,
            other => {
                d.error(
                    net.rule.span(),
                    format!("rule \"{other}\" is unknown: use \"internet\", \"corporate-only\" or \"isolated\""),
                );
                NetRule::Isolated
            }
        };
        let allow: Vec<String> = match &net.allow {
            None => Vec::new(),
            Some(list) => {
                for entry in list.get_ref() {
                    if !syntax::valid_destination(entry.get_ref()) {
                        d.error(
                            entry.span(),
                            format!(
                                "allow entry \"{}\" is not CIDR[:port]: write it like \"10.0.2.2/32:8000\" or \
                                 \"192.168.0.0/16\"",
                                entry.get_ref()
                            ),
                        );
                    }
                }
                list.get_ref().iter().map(|e| e.get_ref().clone()).collect()
            }
        };
        match (rule, &net.allow) {
            (NetRule::CorporateOnly, None) => d.error(
                net.rule.span(),
                "rule \"corporate-only\" needs allow, the destinations it may reach, like allow = [\"10.0.2.2/32\"]",
            ),
            (NetRule::CorporateOnly, Some(list)) if list.get_ref().is_empty() => {
                d.error(list.span(), "allow is empty: list the destinations, or use rule = \"isolated\" for none")
            }
            (NetRule::Internet | NetRule::Isolated, Some(list)) => {
                d.error(list.span(), "allow goes with rule = \"corporate-only\" only: remove it or change the rule")
            }
            _ => {}
        }
        if let Some((_, vm)) = vms.get_mut(index) {
            vm.network = Some(Network { via: via.clone(), rule, allow });
        }
    }
}
