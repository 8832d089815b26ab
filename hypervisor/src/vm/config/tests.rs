use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use bulkhead_policy::model::{self, NetRule as Rule, VmKind};

use super::testing::{config, network, policy, vm, vm_configs, with_devices};
use super::*;
use crate::switcher::hotkeys::MAX_HOTKEYS;

fn refused(p: &bulkhead_policy::Policy) -> String {
    Config::from_policy(p).unwrap_err().to_string()
}

#[test]
fn turns_a_policy_into_vm_configurations() {
    let corporate = model::Vm {
        initrd: Some("initrd".into()),
        label: "CORPORATE · secure".into(),
        colour: 0xc0392b,
        restart: model::Restart::Always,
        needs_lease: true,
        ..vm("corporate", VmKind::Linux, 384)
    };
    let checks = model::Vm {
        restart: model::Restart::Times(2),
        expect: Some("npf".into()),
        ..vm("checks", VmKind::Payload, 16)
    };
    let vms = vm_configs(vec![corporate, checks]);
    assert_eq!(vms.len(), 2);
    assert_eq!((vms[0].label.as_str(), vms[0].colour, vms[0].kind), ("CORPORATE · secure", 0xc0392b, Kind::Linux));
    assert_eq!((vms[0].memory_bytes, vms[0].restart, vms[0].needs_lease), (384 << 20, Restart::Always, true));
    assert_eq!(vms[0].initrd.as_deref(), Some("initrd"));
    assert_eq!((vms[1].restart, vms[1].expect), (Restart::Times(2), Some(Expect::NestedPageFault)));
}

#[test]
fn vcpu_counts_are_checked_again() {
    let two = model::Vm { vcpus: 2, ..vm("desk", VmKind::Linux, 64) };
    assert_eq!(vm_configs(vec![two])[0].vcpus, 2);
    for (kind, vcpus) in [(VmKind::Payload, 2), (VmKind::Linux, 0), (VmKind::Linux, 9)] {
        let bad = model::Vm { vcpus, ..vm("bad", kind, 64) };
        assert!(config(vec![bad]).unwrap_err().to_string().contains("vcpus:"), "{kind:?} with {vcpus}");
    }
}

#[test]
fn multiboot_kernels_with_modules() {
    let mb = |modules: Vec<&str>| model::Vm {
        modules: modules.into_iter().map(Into::into).collect(),
        cmdline: "a b".into(),
        ..vm("mb", VmKind::Multiboot, 16)
    };
    let vms = vm_configs(vec![mb(vec!["policy", "checks"])]);
    assert_eq!((vms[0].kind, vms[0].cmdline.as_str()), (Kind::Multiboot, "a b"));
    assert_eq!(vms[0].modules, ["policy", "checks"]);
    assert_eq!(config(vec![mb(vec!["a", "", "b"])]).unwrap_err().to_string(), "VM mb: modules: a module name is empty");
    assert!(config(vec![mb(vec!["m"; 17])]).unwrap_err().to_string().contains("too many"));
    let payload = model::Vm { modules: vec!["a".into()], ..vm("p", VmKind::Payload, 16) };
    assert_eq!(
        config(vec![payload]).unwrap_err(),
        ConfigError {
            subject: Subject::Vm("p".into()),
            reason: ConfigReason::Invalid("modules: only a kind=multiboot VM takes modules")
        }
    );
}

#[test]
fn errors_name_the_vm_and_the_field() {
    let e = config(vec![vm("a", VmKind::Payload, 16), vm("a", VmKind::Payload, 16)]).unwrap_err();
    assert_eq!(e.to_string(), "VM a: the name is used by two VMs");
    let odd = config(vec![vm("corporate", VmKind::Linux, 3)]).unwrap_err();
    assert_eq!(odd.to_string(), "VM corporate: memory must be a multiple of 2 MiB between 2 MiB and 64 GiB");
    for mib in [0, 65 * 1024 + 2, u32::MAX] {
        assert!(config(vec![vm("a", VmKind::Payload, mib)]).is_err(), "{mib} MiB");
    }
    assert!(config(vec![vm("a", VmKind::Payload, 64 * 1024)]).is_ok(), "64 GiB is the largest");
    let no_image = model::Vm { image: "".into(), ..vm("b", VmKind::Payload, 16) };
    assert!(config(vec![no_image]).unwrap_err().to_string().starts_with("VM b: image:"));
    let bad_name = config(vec![vm("bad_name", VmKind::Payload, 16)]).unwrap_err().to_string();
    assert_eq!(bad_name, "VM bad_name: name: VM names are 1-31 letters, digits or '-'");
    let long = "x".repeat(200);
    let e = config(vec![vm(&long, VmKind::Payload, 16)]).unwrap_err();
    assert_eq!(e.subject, Subject::Vm("x".repeat(32)), "a long name is cut short in the message");
    let colour = model::Vm { colour: 0x100_0000, ..vm("c", VmKind::Payload, 16) };
    assert_eq!(config(vec![colour]).unwrap_err().to_string(), "VM c: colour: must be 0xRRGGBB");
    let expect = model::Vm { expect: Some("explode".into()), ..vm("d", VmKind::Payload, 16) };
    assert!(config(vec![expect]).unwrap_err().to_string().contains("expect: is triple-fault"));
    let initrd = model::Vm { initrd: Some("".into()), ..vm("e", VmKind::Linux, 16) };
    assert!(config(vec![initrd]).unwrap_err().to_string().starts_with("VM e: initrd:"));
    let many: Vec<_> = (0..17).map(|i| vm(&alloc::format!("v{i}"), VmKind::Payload, 2)).collect();
    assert_eq!(config(many).unwrap_err().to_string(), "policy: too many VMs (at most 16)");
}

#[test]
fn key_map() {
    let c = Config::from_policy(&policy(
        vec![vm("a", VmKind::Payload, 16)],
        &[],
        &[("switch-2", "Ctrl+Alt+F2"), ("overview", "meta+space")],
    ))
    .unwrap();
    assert_eq!(c.hotkeys.len(), 2);
    assert_eq!(c.hotkeys[0].action, Action::SwitchTo(2));
    assert_eq!(c.hotkeys[0].combo, Combo::parse("ctrl+alt+f2").unwrap());
    assert_eq!(c.hotkeys[1].action, Action::Overview);
    assert!(config(vec![vm("a", VmKind::Payload, 16)]).unwrap().hotkeys.is_empty());
    let keys = |hotkeys: &[(&str, &str)]| refused(&policy(vec![], &[], hotkeys));
    for (bad, why) in [
        (&[("switch-0", "Ctrl+Alt+0")][..], "unknown action"),
        (&[("switch-10", "Ctrl+Alt+0")], "unknown action"),
        (&[("jump", "Ctrl+Alt+J")], "unknown action"),
        (&[("next", "Ctrl+Alt+Nope")], "unknown key name"),
        (&[("next", "Shift+Tab")], "needs Ctrl, Alt or Meta"),
        (&[("next", "Ctrl+Alt+Tab"), ("overview", "ctrl+alt+tab")], "bound twice"),
        (&[("next", "Ctrl+Alt+Tab"), ("next", "ctrl+alt+n")], "action is bound twice"),
    ] {
        assert!(keys(bad).contains(why), "{bad:?}: {}", keys(bad));
    }
    assert_eq!(
        keys(&[("next", "Shift+Tab")]),
        "hotkey next: Shift+Tab needs Ctrl, Alt or Meta, or guests could not type that key"
    );
    let e = Config::from_policy(&policy(vec![], &[], &[("next", "Ctrl+Alt+Nope")])).unwrap_err();
    assert_eq!(
        e.reason,
        ConfigReason::Hotkey(HotkeyError::Combo { text: "Ctrl+Alt+Nope".into(), error: ParseError::UnknownKey })
    );
    assert_eq!(
        keys(&[("jump", "Ctrl+Alt+J")]),
        "hotkey jump: unknown action (actions: switch-1 .. switch-9, next, overview, secure-attention)"
    );
    let names: Vec<alloc::string::String> = (0..MAX_HOTKEYS).map(|i| alloc::format!("switch-{}", i % 9 + 1)).collect();
    let combos: Vec<alloc::string::String> =
        (0..MAX_HOTKEYS).map(|i| alloc::format!("Ctrl+Alt+{}", (b'a' + i as u8) as char)).collect();
    let many: Vec<(&str, &str)> = names.iter().zip(&combos).map(|(a, c)| (a.as_str(), c.as_str())).collect();
    assert!(keys(&many).contains("bound twice") || keys(&many).contains("too many"));
}

#[test]
fn networks_become_links_to_the_service_vm_with_the_desktops_rule() {
    let net = vm("net", VmKind::Service, 32);
    let a = model::Vm { network: network("net", Rule::Internet, &[]), ..vm("a", VmKind::Linux, 64) };
    let allow = ["10.0.2.2/32:8080", "192.168.0.0/16"];
    let b = model::Vm { network: network("net", Rule::CorporateOnly, &allow), ..vm("b", VmKind::Linux, 64) };
    let p = vm("p", VmKind::Payload, 16);
    let config = Config::from_policy(&policy(vec![net.clone(), a.clone(), b.clone(), p.clone()], &[], &[])).unwrap();
    assert_eq!(config.vms[0].kind, Kind::Service);
    assert_eq!(
        config.links,
        [
            LinkConfig { a: 1, b: 0, rule: Some(NetRule::Internet) },
            LinkConfig { a: 2, b: 0, rule: Some(NetRule::CorporateOnly(vec![allow[0].into(), allow[1].into()])) },
        ]
    );
    let with = |network: Option<model::Network>| {
        refused(&policy(vec![net.clone(), model::Vm { network, ..vm("d", VmKind::Linux, 64) }], &[], &[]))
    };
    assert_eq!(
        with(network("net", Rule::CorporateOnly, &[])),
        "VM d: network: rule corporate-only needs allow, the destinations it allows"
    );
    assert!(with(network("net", Rule::Internet, &["10.0.0.0/8"])).contains("corporate-only only"));
    assert_eq!(with(network("nowhere", Rule::Internet, &[])), "VM d: network: via names no VM of the policy");
    for bad in ["10.0.0.0/33", "10.0.0.1:0", "10.0.0:80", "10.0.0.256", "ten"] {
        assert!(with(network("net", Rule::CorporateOnly, &[bad])).contains("allow entries"), "{bad}");
    }
    // `via` must be the service VM; the service VM has no network of its own.
    let to_desktop = refused(&policy(
        vec![
            net.clone(),
            a.clone(),
            model::Vm { network: network("a", Rule::Internet, &[]), ..vm("e", VmKind::Linux, 64) },
        ],
        &[],
        &[],
    ));
    assert_eq!(to_desktop, "VM e: network: via must name the kind=service VM");
    let service_net = model::Vm { network: network("net", Rule::Internet, &[]), ..vm("net2", VmKind::Service, 32) };
    assert!(refused(&policy(vec![net.clone(), service_net], &[], &[])).contains("only a kind=linux (or payload) VM"));
    // A payload may be a desktop end (test equipment).
    let attacker = model::Vm { network: network("net", Rule::Isolated, &[]), ..p };
    assert!(Config::from_policy(&policy(vec![net.clone(), attacker], &[], &[])).is_ok());
    // The service VM takes up to 8 links, a desktop 4.
    let mut vms = vec![net];
    vms.extend((0..9).map(|i| model::Vm {
        network: network("net", Rule::Isolated, &[]),
        ..vm(&alloc::format!("d{i}"), VmKind::Linux, 64)
    }));
    assert_eq!(refused(&policy(vms, &[], &[])), "VM d8: a desktop has at most 4 links, the service VM at most 8");
}

#[test]
fn links_join_two_linux_vms() {
    let vms = || {
        vec![
            vm("a", VmKind::Linux, 64),
            vm("b", VmKind::Linux, 64),
            vm("c", VmKind::Linux, 64),
            vm("p", VmKind::Payload, 16),
        ]
    };
    let config = Config::from_policy(&policy(vms(), &[("a", "b"), ("c", "a")], &[])).unwrap();
    assert_eq!(config.links, [LinkConfig { a: 0, b: 1, rule: None }, LinkConfig { a: 2, b: 0, rule: None }]);
    assert_eq!(config.links_of(0).collect::<Vec<_>>(), [(0, 1), (1, 2)]);
    assert_eq!(config.links_of(2).collect::<Vec<_>>(), [(1, 0)]);
    assert_eq!(config.links_of(3).count(), 0);
    for (bad, why) in [
        (&[("a", "z")][..], "link a-z: a link names two VMs of the policy"),
        (&[("a", "a")], "link a-a: a link joins two different VMs"),
        (
            &[("a", "p")],
            "link a-p: links join two kind=linux VMs (a desktop reaches the service VM through its network)",
        ),
        (&[("a", "b"), ("b", "a")], "link b-a: these two VMs are linked twice"),
    ] {
        assert_eq!(refused(&policy(vms(), bad, &[])), why);
    }
    let mut many = vms();
    many.extend((0..5).map(|i| vm(&alloc::format!("x{i}"), VmKind::Linux, 64)));
    let links: Vec<(String, String)> = (0..5).map(|i| ("a".into(), alloc::format!("x{i}"))).collect();
    let links: Vec<(&str, &str)> = links.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert!(refused(&policy(many, &links, &[])).starts_with("link a-x4: a desktop has at most 4 links"));
}

#[test]
fn devices_by_address_or_id() {
    let vms = vm_configs(vec![model::Vm {
        expect: Some("dma-fault".into()),
        ..with_devices("n", &["00:03.0", "8086:10D3", "1a:1f.7"])
    }]);
    assert_eq!(
        vms[0].devices,
        [
            DeviceSelector::Address { bus: 0, device: 3, function: 0 },
            DeviceSelector::Id { vendor: 0x8086, device: 0x10d3 },
            DeviceSelector::Address { bus: 0x1a, device: 0x1f, function: 7 },
        ]
    );
    assert_eq!(vms[0].expect, Some(Expect::DmaFault));
    for bad in [&["00:20.0"][..], &["00:03.8"], &["0:3"], &["8086:10d"], &["xx:03.0"], &["00:03.0", "00:03.0"], &[""]] {
        assert!(config(vec![with_devices("n", bad)]).unwrap_err().to_string().starts_with("VM n: devices:"), "{bad:?}");
    }
    assert!(vm_configs(vec![with_devices("n", &[])])[0].devices.is_empty());
    let two = vm_configs(vec![with_devices("n", &["8086:10d3", "8086:10d3"])]);
    assert_eq!(two[0].devices.len(), 2, "two functions with the same ids");
}

#[test]
fn link_limits_match_the_service_vms_report_table() {
    assert_eq!(MAX_SERVICE_LINKS, bulkhead_policy::syntax::MAX_SERVICE_LINKS);
    assert_eq!(crate::vm::multiboot::MAX_MODULES, bulkhead_policy::syntax::MAX_MODULES);
}
