//! Tests of the AES-NI code: FIPS 197 key expansion, and that every assembly block
//! leaves all sixteen XMM registers as it found them.

use super::*;

/// FIPS 197 Appendix A.3: the AES-256 key expansion of its example key.
#[test]
fn key_expansion_matches_fips_197() {
    if !available() {
        return;
    }
    let key: [u8; 32] = core::array::from_fn(|i| {
        [
            0x60, 0x3d, 0xeb, 0x10, 0x15, 0xca, 0x71, 0xbe, 0x2b, 0x73, 0xae, 0xf0, 0x85, 0x7d, 0x77, 0x81, 0x1f, 0x35,
            0x2c, 0x07, 0x3b, 0x61, 0x08, 0xd7, 0x2d, 0x98, 0x10, 0xa3, 0x09, 0x14, 0xdf, 0xf4,
        ][i]
    });
    let keys = Aes256Ni::new(&key);
    assert_eq!(
        keys.enc.0[2],
        [0x9b, 0xa3, 0x54, 0x11, 0x8e, 0x69, 0x25, 0xaf, 0xa5, 0x1a, 0x8b, 0x5f, 0x20, 0x67, 0xfc, 0xde]
    );
    assert_eq!(
        keys.enc.0[14],
        [0xfe, 0x48, 0x90, 0xd1, 0xe6, 0x18, 0x8d, 0x0b, 0x04, 0x6d, 0xf3, 0x44, 0x70, 0x6c, 0x63, 0x1e]
    );
    assert_eq!(keys.dec.0[0], keys.enc.0[14]);
    assert_eq!(keys.dec.0[14], keys.enc.0[0]);
}

/// Registers a guest could have left: a distinct pattern per byte.
fn guest_pattern() -> [[u8; 16]; 16] {
    core::array::from_fn(|r| core::array::from_fn(|b| (r * 16 + b) as u8 ^ 0xa5))
}

/// The XTS kernel, run between loading a pattern into XMM0..XMM15 and reading them
/// back, leaves all sixteen as they were, and still encrypts.
#[test]
fn xts_kernel_preserves_every_xmm_register() {
    if !available() {
        return;
    }
    let data_key = Aes256Ni::new(&[1; 32]);
    let tweak_key = Aes256Ni::new(&[2; 32]);
    for blocks in [1usize, 8, 11, 32] {
        let before = guest_pattern();
        let mut after = [[0u8; 16]; 16];
        let mut data = vec![0x3cu8; blocks * 16];
        let mut frame = Frame::new(7);
        // SAFETY: as in `Aes256Ni::xts_encrypt` (one unit of `blocks` blocks), plus
        // 256-byte reads from `before` and writes to `after`; every XMM register
        // is declared clobbered since the test itself loads them.
        unsafe {
            asm!(
                restore_xmm!("{before}"),
                xts_asm!("aesenc", "aesenclast"),
                save_xmm!("{after}"),
                before = in(reg) before.as_ptr(),
                after = in(reg) after.as_mut_ptr(),
                src = inout(reg) data.as_ptr() => _,
                dst = inout(reg) data.as_mut_ptr() => _,
                units = inout(reg) 1usize => _,
                blocks = in(reg) blocks,
                k1 = in(reg) data_key.enc.0.as_ptr(),
                k2 = in(reg) tweak_key.enc.0.as_ptr(),
                f = in(reg) &mut frame as *mut Frame,
                n = out(reg) _,
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
                out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
                out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
                out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
                options(nostack),
            );
        }
        assert_eq!(after, before, "{blocks} blocks");
        let mut expected = vec![0x3cu8; blocks * 16];
        data_key.xts_encrypt(&tweak_key, 7, blocks * 16, &mut expected);
        assert_eq!(data, expected, "{blocks} blocks: the kernel must still encrypt");
        assert_ne!(data, vec![0x3cu8; blocks * 16]);
    }
}

/// Same for the key expansion.
#[test]
fn key_expansion_preserves_every_xmm_register() {
    if !available() {
        return;
    }
    let key = [9u8; 32];
    let before = guest_pattern();
    let mut after = [[0u8; 16]; 16];
    let mut keys = Aes256Ni { enc: RoundKeys([[0; 16]; 15]), dec: RoundKeys([[0; 16]; 15]) };
    let mut frame = Frame::new(0);
    // SAFETY: as in `Aes256Ni::new`, plus 256-byte reads from `before` and writes
    // to `after`; every XMM register is declared clobbered.
    unsafe {
        asm!(
            restore_xmm!("{before}"),
            save_xmm!("{f}"),
            expand_key_asm!(),
            restore_xmm!("{f}"),
            save_xmm!("{after}"),
            before = in(reg) before.as_ptr(),
            after = in(reg) after.as_mut_ptr(),
            key = in(reg) key.as_ptr(),
            enc = in(reg) keys.enc.0.as_mut_ptr(),
            dec = in(reg) keys.dec.0.as_mut_ptr(),
            f = in(reg) &mut frame as *mut Frame,
            c = out(reg) _,
            d = out(reg) _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            options(nostack),
        );
    }
    assert_eq!(after, before);
    assert_eq!(keys.enc.0, Aes256Ni::new(&key).enc.0);
}
