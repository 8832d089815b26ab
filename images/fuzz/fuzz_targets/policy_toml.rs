//! Arbitrary text as a policy TOML file: the compiler never panics, every finding has a
//! line and column inside the text, and a policy it accepts is accepted by the
//! hypervisor's own checks (`Config::from_policy`) and survives signing and decoding.
#![no_main]

use images::policy::{CompileOptions, compile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let options = CompileOptions { ram_bytes: 16 << 30, base_dir: "/nonexistent".into(), issued_at: 1_800_000_000 };
    let lines = text.split('\n').count();
    match compile(text, &options) {
        Err(findings) => {
            assert!(!findings.is_empty());
            for d in &findings {
                assert!(d.line >= 1 && d.line <= lines && d.column >= 1, "{d} outside the text");
            }
        }
        Ok(compiled) => {
            let p = compiled.policy;
            assert!(!p.vms.is_empty() && p.vms.len() <= bulkhead_policy::syntax::MAX_VMS);
            if let Err(e) = hypervisor::vm::config::Config::from_policy(&p) {
                panic!("the compiler accepted what the hypervisor refuses: {e}");
            }
            let bundle = images::policy::tools::sign_demo(&p);
            let decoded = bulkhead_policy::Bundle::decode(&bundle).and_then(|b| b.policy());
            assert_eq!(decoded.as_ref(), Ok(&p));
        }
    }
});
