use bulkhead_policy::model::{NetRule, Restart, Target, VmKind};

use super::*;

fn options() -> CompileOptions {
    CompileOptions { ram_bytes: 16 << 30, base_dir: ".".into(), issued_at: 1_800_000_000 }
}

const HEAD: &str =
    "[policy]\nversion = 3\norganisation = \"Example Corp IT\"\ngroup = \"staff\"\nvalid_for_days = 90\n";

/// Every finding of `text` (after [`HEAD`] when `head`), as `line:col: severity: message`.
fn findings(text: &str) -> Vec<String> {
    match compile(text, &options()) {
        Ok(c) => c.warnings.iter().map(ToString::to_string).collect(),
        Err(items) => items.iter().map(ToString::to_string).collect(),
    }
}

fn vm(name: &str, slot: u32, extra: &str) -> String {
    format!("[[vm]]\nname = \"{name}\"\nslot = {slot}\nkind = \"payload\"\nimage = \"x\"\nmemory = \"16M\"\n{extra}")
}

#[test]
fn the_demo_policy_compiles_to_the_default_machine() {
    let text = std::fs::read_to_string(demo_policy_path()).unwrap();
    let compiled = compile(&text, &options()).unwrap();
    assert!(compiled.warnings.is_empty(), "{:?}", compiled.warnings);
    let p = compiled.policy;
    assert_eq!((p.version, p.organisation.as_str()), (1, "Bulkhead demo"));
    assert_eq!(p.target, Target::Group("staff".into()));
    assert_eq!(p.expires_at - p.issued_at, 90 * 86_400);
    let names: Vec<&str> = p.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["corporate", "personal", "net"]);
    assert_eq!((p.vms[0].memory_mib, p.vms[0].colour, p.vms[0].restart), (384, 0xc0392b, Restart::Always));
    let net = p.vms[0].network.as_ref().unwrap();
    assert_eq!(
        (net.via.as_str(), net.rule, net.allow.as_slice()),
        ("net", NetRule::CorporateOnly, &["10.0.2.2/32".to_string()][..])
    );
    assert_eq!(p.vms[2].kind, VmKind::Service);
    assert_eq!(p.vms[2].devices, ["8086:10d3"]);
}

#[test]
fn vms_are_ordered_by_slot_with_defaults_filled_in() {
    let text = format!("{HEAD}{}{}", vm("b", 2, "restart = 3\n"), vm("a", 1, "label = \"A\"\n"));
    let p = compile(&text, &options()).unwrap().policy;
    assert_eq!((p.vms[0].name.as_str(), p.vms[0].label.as_str()), ("a", "A"));
    assert_eq!((p.vms[1].name.as_str(), p.vms[1].label.as_str(), p.vms[1].restart), ("b", "b", Restart::Times(3)));
    assert_eq!(p.vms[1].colour, 0x7f8c8d);
}

#[test]
fn vcpus_default_to_one_and_more_are_for_linux_vms() {
    let linux = "[[vm]]\nname = \"l\"\nslot = 2\nkind = \"linux\"\nimage = \"x\"\nmemory = \"64M\"\nvcpus = 2\n";
    let p = compile(&format!("{HEAD}{}{linux}", vm("a", 1, "")), &options()).unwrap().policy;
    assert_eq!((p.vms[0].vcpus, p.vms[1].vcpus), (1, 2));
    let found = findings(&format!("{HEAD}{}", vm("a", 1, "vcpus = 2\n")));
    assert!(found.iter().any(|f| f.contains("vcpus above 1 are for kind = \"linux\"")), "{found:?}");
    let found = findings(&format!("{HEAD}{}", vm("a", 1, "vcpus = 0\n")));
    assert!(found.iter().any(|f| f.contains("vcpus must be 1 to 8")), "{found:?}");
}

#[test]
fn every_error_is_reported_with_its_line_and_column() {
    let text = format!(
        "{HEAD}{}{}{}",
        vm("a", 1, "colr = \"#ffffff\"\n"),
        vm("a", 1, "memory2 = 1\n"),
        vm("c", 3, "devices = [\"00:03.0\", \"00:33.0\"]\nexpect = \"boom\"\n"),
    );
    assert_eq!(
        findings(&text),
        [
            "12:1: error: [[vm]] has no field `colr`: remove it or use one of `name`, `slot`, `kind`, `image`, \
             `initrd`, `modules`, `cmdline`, `memory`, `vcpus`, `label`, `colour`, `restart`, `devices`, `network`, \
             `needs_lease`, `expect`, `disk`",
            "19:1: error: [[vm]] has no field `memory2`: remove it or use one of `name`, `slot`, `kind`, `image`, \
             `initrd`, `modules`, `cmdline`, `memory`, `vcpus`, `label`, `colour`, `restart`, `devices`, `network`, \
             `needs_lease`, `expect`, `disk`",
            "26:23: error: device \"00:33.0\" is neither an address like \"00:03.0\" (bus:device.function, hex) nor \
             an id like \"8086:10d3\" (vendor:device, hex)",
            "27:10: error: expect \"boom\" is unknown: use triple-fault, npf, bad-hypercall, shutdown or dma-fault",
        ]
    );
}

#[test]
fn duplicate_names_and_slots() {
    let text = format!("{HEAD}{}{}", vm("a", 1, ""), vm("a", 1, ""));
    assert_eq!(
        findings(&text),
        [
            "13:8: error: VM name \"a\" is already used on line 7: give each VM its own name",
            "14:8: error: slot 1 is already taken on line 8: give each VM its own slot",
        ]
    );
}

#[test]
fn memory_must_fit_the_vm_and_the_laptop() {
    let text = format!("{HEAD}{}", vm("a", 1, "").replace("16M", "3M"));
    assert_eq!(findings(&text), ["11:10: error: memory \"3M\" is not a multiple of 2 MiB: use e.g. \"4M\""]);
    let text = format!("{HEAD}{}", vm("a", 1, "").replace("16M", "65G"));
    assert_eq!(findings(&text), ["11:10: error: memory \"65G\" is outside 2M..64G, the sizes a VM can have"]);
    let text = format!("{HEAD}{}", vm("a", 1, "").replace("16M", "lots"));
    assert_eq!(findings(&text), ["11:10: error: memory \"lots\" is not a size: write it like \"384M\" or \"2G\""]);
    let big =
        |a: &str, b: &str| format!("{HEAD}{}{}", vm("a", 1, "").replace("16M", a), vm("b", 2, "").replace("16M", b));
    assert_eq!(
        findings(&big("8G", "9G")),
        ["17:10: error: the VMs need 17408 MiB together, more than the laptop's 16384 MiB (--ram): make them smaller \
          or run fewer"]
    );
    assert_eq!(
        findings(&big("8G", "7G")),
        ["17:10: warning: the VMs need 15360 MiB together, leaving less than an eighth of the laptop's 16384 MiB to \
          the hypervisor and firmware; they may not all start"]
    );
    let small = CompileOptions { ram_bytes: 32 << 30, ..options() };
    assert!(compile(&big("8G", "9G"), &small).unwrap().warnings.is_empty());
}

#[test]
fn devices_have_one_owner() {
    let text = format!(
        "{HEAD}{}{}",
        vm("a", 1, "devices = [\"00:03.0\", \"00:03.0\", \"8086:10d3\"]\n"),
        vm("b", 2, "devices = [\"00:03.0\", \"8086:10d3\"]\n")
    );
    assert_eq!(
        findings(&text),
        [
            "12:23: error: device 00:03.0 is listed twice in this VM: remove one",
            "19:12: error: device 00:03.0 is already given to VM a on line 12: a device has one owner",
        ]
    );
}

#[test]
fn hotkeys() {
    let text = format!(
        "{HEAD}{}[hotkeys]\nswitch-1 = \"Ctrl+Alt+F1\"\nnext = \"ctrl+alt+f1\"\noverview = \"Shift+Tab\"\njump = \
         \"Ctrl+Alt+J\"\nsecure-attention = \"Ctrl+Banana\"\nswitch-2 = 2\n",
        vm("a", 1, "")
    );
    assert_eq!(
        findings(&text),
        [
            "14:8: error: \"ctrl+alt+f1\" is already bound to switch-1 on line 13: choose another combination",
            "15:12: error: \"Shift+Tab\" needs Ctrl, Alt or Meta, or guests could not type that key: add a modifier",
            "16:1: error: unknown hotkey action `jump`: the actions are switch-1 .. switch-9, next, overview, \
             secure-attention",
            "17:20: error: \"Ctrl+Banana\" cannot be a hotkey: unknown key name (use e.g. Ctrl+Alt+Tab, Ctrl+Alt+1, \
             Ctrl+Alt+F12)",
            "18:12: error: switch-2 = takes a key combination in quotes, like \"Ctrl+Alt+F1\"",
        ]
    );
}

#[test]
fn networks_go_through_the_service_vm() {
    let service = vm("net", 9, "").replace("payload", "service");
    let desktop = |name: &str, slot: u32, network: &str| {
        vm(name, slot, &format!("network = {network}\n")).replace("payload", "linux")
    };
    let text = format!(
        "{HEAD}{service}{}{}{}{}",
        desktop(
            "a",
            1,
            "{ via = \"net\", rule = \"corporate-only\", allow = [\"10.0.2.2/32:8000\", \"10.0.0.0/33\"] }"
        ),
        desktop("b", 2, "{ via = \"a\", rule = \"internet\" }"),
        desktop("c", 3, "{ via = \"net\", rule = \"corporate-only\" }"),
        desktop("d", 4, "{ via = \"net\", rule = \"internet\", allow = [] , port = 2 }"),
    );
    assert_eq!(
        findings(&text),
        [
            "18:80: error: allow entry \"10.0.0.0/33\" is not CIDR[:port]: write it like \"10.0.2.2/32:8000\" or \
             \"192.168.0.0/16\"",
            "25:19: error: via \"a\" is not a kind = \"service\" VM: a network goes through the service VM",
            "32:33: error: rule \"corporate-only\" needs allow, the destinations it may reach, like allow = \
             [\"10.0.2.2/32\"]",
            "39:58: error: network has no field `port`: remove it or use one of `via`, `rule`, `allow`",
        ]
    );
}

#[test]
fn links_name_two_desktops() {
    let desktops =
        format!("{}{}", vm("a", 1, "").replace("payload", "linux"), vm("b", 2, "").replace("payload", "linux"));
    let text = format!(
        "{HEAD}{desktops}{}[[link]]\nbetween = [\"a\", \"b\"]\n[[link]]\nbetween = [\"b\", \"a\"]\n[[link]]\nbetween = \
         [\"a\", \"zz\"]\n[[link]]\nbetween = [\"a\", \"p\"]\n[[link]]\nbetween = [\"a\"]\n",
        vm("p", 3, "")
    );
    assert_eq!(
        findings(&text),
        [
            "27:11: error: b and a are already linked: remove this [[link]]",
            "29:17: error: no VM is named \"zz\": a link joins two VMs of this policy",
            "31:17: error: VM p is not kind = \"linux\": links join two desktops (a desktop reaches the service VM \
             through its network)",
            "33:11: error: between names exactly two VMs, like [\"corporate\", \"personal\"]",
        ]
    );
}

#[test]
fn the_policy_section_and_management() {
    let text = "[policy]\nversion = 0\norganisation = \"\"\ngroup = \"staff\"\ndevice = \"abc\"\nvalid_for_days = \
                0\n[management]\nserver = \"10.0.2.2:8470\"\ncheckin_interval = \"5 minutes\"\noffline_lease = \
                \"8h\"\nserver_key = \"00\"\n[extra]\n";
    assert_eq!(
        findings(text),
        [
            "1:1: error: the policy runs no VM: add a [[vm]] table",
            "2:11: error: version must be a whole number from 1 up; raise it with every change",
            "3:16: error: organisation is shown on the boot screen: give the organisation's name",
            "5:10: error: give either group or device, not both",
            "6:18: error: valid_for_days must be 1 to 3650, like 90",
            "8:10: error: server is like \"http://10.0.2.2:8470\" (http, a host and a port)",
            "9:20: error: checkin_interval is a duration like \"5m\", \"8h\", \"2d\" or a number of seconds",
            "11:14: error: server_key is the server's public key: 64 hex digits",
            "12:2: error: unknown section `extra`: a policy has [policy], [management], [[vm]], [[link]] and \
             [hotkeys]; remove it or fix its name",
        ]
    );
    assert_eq!(
        findings("version = 1\n")[0],
        "1:1: error: unknown section `version`: a policy has [policy], [management], [[vm]], [[link]] and [hotkeys]; remove it or fix its name"
    );
    assert_eq!(findings("[policy\n")[0].split(": error:").next(), Some("1:8"));
}

#[test]
fn management_with_a_key_file_and_leases() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public, key) = keys::keygen(&dir.path().join("server")).unwrap();
    assert!(public.ends_with("server.public"));
    let text = format!(
        "{HEAD}[management]\nserver = \"http://10.0.2.2:8470\"\ncheckin_interval = \"5m\"\noffline_lease = \
         \"8h\"\nserver_key_file = \"server.public\"\n{}",
        vm("a", 1, "needs_lease = true\n")
    );
    let options = CompileOptions { base_dir: dir.path().into(), ..options() };
    let p = compile(&text, &options).unwrap().policy;
    let m = p.management.unwrap();
    assert_eq!((m.checkin_interval_s, m.offline_lease_s, m.server_key), (300, 8 * 3600, key.public()));
    assert!(p.vms[0].needs_lease);
    let unmanaged = format!("{HEAD}{}", vm("a", 1, "needs_lease = true\n"));
    assert_eq!(
        findings(&unmanaged),
        ["12:15: error: needs_lease needs a [management] section: the lease comes from its check-ins"]
    );
}

#[test]
fn keys_sign_rotate_and_show() {
    use bulkhead_policy::device::{DeviceState, Refusal, verify};
    let dir = tempfile::tempdir().unwrap();
    let (secret, public, old) = keys::keygen(&dir.path().join("it")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(keys::keygen(&dir.path().join("it")).unwrap_err().contains("never overwritten"));
    assert_eq!(keys::read_public(&public).unwrap(), old.public());
    assert!(std::fs::read_to_string(&secret).unwrap().starts_with("bulkhead-ed25519-secret-v1 "));
    let (_, new_public, new) = keys::keygen(&dir.path().join("new")).unwrap();
    let endorsement = dir.path().join("e1.endorsement");
    keys::rotate(&secret, &new_public, 1, &endorsement).unwrap();
    let policy_file = dir.path().join("p.toml");
    std::fs::write(&policy_file, format!("{HEAD}{}", vm("a", 1, ""))).unwrap();
    let request = |key: &str, endorsements: Vec<std::path::PathBuf>, expires_at: Option<u64>| tools::SignRequest {
        policy: policy_file.clone(),
        key: dir.path().join(key),
        endorsements,
        out: dir.path().join("b.bundle"),
        ram_bytes: 16 << 30,
        issued_at: Some(1_800_000_000),
        expires_at,
    };
    // Signed by the new key with the chain: a laptop enrolled with the old key accepts it.
    let signed = tools::sign(&request("new.secret", vec![endorsement.clone()], None)).unwrap();
    let enrolled =
        DeviceState { trusted_key: Some(old.public()), group: Some("staff".into()), ..DeviceState::default() };
    let accepted = verify(&signed.bundle, &enrolled, 1_800_000_100).unwrap();
    assert!(accepted.rotated);
    assert_eq!(accepted.policy.expires_at, 1_800_000_000 + 90 * 86_400);
    let shown = tools::show(&dir.path().join("b.bundle"), Some(&public)).unwrap();
    assert!(shown.contains("policy version 3 of Example Corp IT"), "{shown}");
    assert!(shown.contains("signature good, by a key the given key"), "{shown}");
    assert!(shown.contains(&format!("endorsement 1: {} ->", bulkhead_policy::device::fingerprint(&old.public()))));
    // Without the chain the old laptop refuses it, and show says the key did not sign it.
    let alone = tools::sign(&request("new.secret", vec![], None)).unwrap();
    assert!(matches!(verify(&alone.bundle, &enrolled, 1_800_000_100), Err(Refusal::UnknownKey { .. })));
    assert!(tools::show(&dir.path().join("b.bundle"), Some(&public)).unwrap().contains("NOT by the given key"));
    assert_eq!(new.public(), bulkhead_policy::Bundle::decode(&alone.bundle).unwrap().signer);
    // An expired bundle, made on purpose.
    let expired = tools::sign(&request("new.secret", vec![], Some(1_800_000_050))).unwrap();
    let trusting_new = DeviceState { trusted_key: Some(new.public()), ..enrolled };
    assert!(matches!(verify(&expired.bundle, &trusting_new, 1_800_000_100), Err(Refusal::Expired { .. })));
    // The old key with a chain that hands over to another key is refused before signing.
    let e = tools::sign(&request("it.secret", vec![endorsement], None)).unwrap_err();
    assert!(e.contains("sign with the newest key"), "{e}");
    // A changed letter in the organisation's name shows as a bad signature.
    let mut bytes = signed.bundle.clone();
    let at = bytes.windows(7).position(|w| w == b"Example").unwrap();
    bytes[at] = b'e';
    let text = tools::describe(&bytes, Some(&old.public())).unwrap();
    assert!(text.contains("policy version 3 of example Corp IT") && text.contains("signature BAD"), "{text}");
}

#[test]
fn dates_and_durations() {
    assert_eq!(tools::date(0), "1970-01-01 00:00 UTC");
    assert_eq!(tools::date(1_800_000_000), "2027-01-15 08:00 UTC");
    assert_eq!(compile::parse_duration("5m"), Some(300));
    assert_eq!(compile::parse_duration("8h"), Some(28_800));
    assert_eq!(compile::parse_duration("5"), None);
    assert_eq!(compile::parse_duration("m"), None);
}

#[test]
fn a_vm_with_its_own_error_is_not_reported_again_by_what_names_it() {
    let service = vm("net", 9, "typo = 1\n").replace("payload", "service");
    let desktop = vm("a", 1, "network = { via = \"net\", rule = \"internet\" }\n").replace("payload", "linux");
    let broken_desktop = vm("b", 2, "colr = 1\n").replace("payload", "linux");
    let text = format!("{HEAD}{service}{desktop}{broken_desktop}[[link]]\nbetween = [\"a\", \"b\"]\n");
    let found = findings(&text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("12:1: error: [[vm]] has no field `typo`"), "{found:?}");
    assert!(found[1].starts_with("26:1: error: [[vm]] has no field `colr`"), "{found:?}");
}

#[test]
fn disks_have_a_size_and_a_mode() {
    use bulkhead_policy::model::{Disk, DiskMode};
    let linux = |name: &str, extra: &str| vm(name, 1, extra).replace("\"payload\"", "\"linux\"");
    let text = format!("{HEAD}{}", linux("a", "disk = { size = \"8G\", mode = \"reset-on-boot\" }\n"));
    let p = compile(&text, &options()).unwrap().policy;
    assert_eq!(p.vms[0].disk, Some(Disk { size_mib: 8192, mode: DiskMode::ResetOnBoot }));
    let text = format!("{HEAD}{}", linux("a", "disk = { size = \"512M\" }\n"));
    assert_eq!(compile(&text, &options()).unwrap().policy.vms[0].disk.unwrap().mode, DiskMode::Persistent);
    let bad = format!("{HEAD}{}", linux("a", "disk = { size = \"1500K\", mode = \"sometimes\" }\n"));
    let found = findings(&bad);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("error: disk size \"1500K\" must be whole MiB between 1M and 1024G"), "{found:?}");
    let bad = format!("{HEAD}{}", linux("a", "disk = { size = \"1G\", mode = \"sometimes\" }\n"));
    assert!(
        findings(&bad)[0].ends_with("disk mode \"sometimes\" is unknown: use persistent, reset-on-boot or read-only"),
        "{:?}",
        findings(&bad)
    );
    let bad = format!("{HEAD}{}", linux("a", "disk = { size = \"1G\", cache = true }\n"));
    assert!(
        findings(&bad)[0].contains("no field `cache`: remove it or use one of `size` or `mode`"),
        "{:?}",
        findings(&bad)
    );
    let payload = format!("{HEAD}{}", vm("a", 1, "disk = { size = \"1G\" }\n"));
    assert_eq!(compile(&payload, &options()).unwrap().policy.vms[0].disk.map(|d| d.size_mib), Some(1024));
    let multiboot =
        format!("{HEAD}{}", vm("a", 1, "disk = { size = \"1G\" }\n").replace("\"payload\"", "\"multiboot\""));
    assert!(
        findings(&multiboot)[0]
            .ends_with("a disk is a virtio-blk device for kind = \"linux\" or \"payload\" VMs: remove it"),
        "{:?}",
        findings(&multiboot)
    );
}
