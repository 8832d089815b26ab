//! AES-256 and XTS with the AES-NI instructions, in inline assembly.
//!
//! The only module with `unsafe`. The hypervisor is built soft-float and never keeps
//! anything in XMM registers, but a guest does: between two VM runs, XMM0..XMM15 still
//! hold the guest's values. So every assembly block here first stores the XMM registers
//! it is about to use into a 16-byte aligned [`Frame`] on the stack (`movdqu`), and
//! loads them back as its last instructions. The instructions are legacy-SSE encoded
//! (no VEX), which leave bits 255:128 of YMM and everything above untouched, so
//! restoring the low 128 bits restores the whole register. MXCSR is not touched: AES,
//! PXOR, PADDQ, PSRAD, PSHUFD, PSLLDQ and the moves neither read nor write it. The
//! frame is wiped afterwards, since it held guest data and key material.
//!
//! Preconditions of every function here: the CPU has AES-NI ([`available`]), and the
//! OS side has SSE enabled (CR4.OSFXSR = 1, CR0.EM = 0) and CR0.TS = 0, or the first
//! SSE instruction raises #UD or #NM.
#![allow(unsafe_code)]

use core::arch::asm;
use core::mem::offset_of;
use zeroize::Zeroize;

/// CPUID.1:ECX bit 25: AES-NI.
const CPUID_1_ECX_AESNI: u32 = 1 << 25;

/// Whether this CPU has the AES-NI instructions.
pub(crate) fn available() -> bool {
    core::arch::x86_64::__cpuid(1).ecx & CPUID_1_ECX_AESNI != 0
}

/// The 15 round keys of AES-256, aligned so the legacy-SSE AES instructions may take
/// them as memory operands (those fault on an unaligned m128).
#[derive(Clone, Zeroize)]
#[repr(C, align(16))]
pub(crate) struct RoundKeys([[u8; 16]; 15]);

/// AES-256 round keys for both directions.
#[derive(Clone, Zeroize)]
pub(crate) struct Aes256Ni {
    enc: RoundKeys,
    /// Equivalent inverse cipher keys (FIPS 197 §5.3.5): reversed, with InvMixColumns
    /// (`aesimc`) applied to the middle 13.
    dec: RoundKeys,
}

/// Stack scratch shared with the assembly.
#[repr(C, align(16))]
struct Frame {
    /// The caller's (a guest's) XMM0..XMM15, restored before the block ends.
    saved: [[u8; 16]; 16],
    /// The tweak of the next block to process.
    tweak: [u8; 16],
    /// The data unit (sector) number, little-endian 128-bit: the tweak's plaintext.
    sector: [u64; 2],
    /// Reduction mask for the multiplication by x in GF(2^128) (see `mul_x!`).
    mask: [u32; 4],
}

// The assembly below addresses the frame with these constant offsets.
const _: () = assert!(offset_of!(Frame, saved) == 0);
const _: () = assert!(offset_of!(Frame, tweak) == 256);
const _: () = assert!(offset_of!(Frame, sector) == 272);
const _: () = assert!(offset_of!(Frame, mask) == 288);

impl Frame {
    fn new(sector: u128) -> Self {
        Frame {
            saved: [[0; 16]; 16],
            tweak: [0; 16],
            sector: [sector as u64, (sector >> 64) as u64],
            mask: [0x87, 0, 1, 0],
        }
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        self.saved.zeroize();
        self.tweak.zeroize();
    }
}

/// Stores XMM0..XMM15 to the 256 bytes at operand `$at` (the frame's `saved`).
macro_rules! save_xmm {
    ($at:literal) => {
        concat!(
            "movdqu [",
            $at,
            "], xmm0\n movdqu [",
            $at,
            " + 16], xmm1\n",
            "movdqu [",
            $at,
            " + 32], xmm2\n movdqu [",
            $at,
            " + 48], xmm3\n",
            "movdqu [",
            $at,
            " + 64], xmm4\n movdqu [",
            $at,
            " + 80], xmm5\n",
            "movdqu [",
            $at,
            " + 96], xmm6\n movdqu [",
            $at,
            " + 112], xmm7\n",
            "movdqu [",
            $at,
            " + 128], xmm8\n movdqu [",
            $at,
            " + 144], xmm9\n",
            "movdqu [",
            $at,
            " + 160], xmm10\n movdqu [",
            $at,
            " + 176], xmm11\n",
            "movdqu [",
            $at,
            " + 192], xmm12\n movdqu [",
            $at,
            " + 208], xmm13\n",
            "movdqu [",
            $at,
            " + 224], xmm14\n movdqu [",
            $at,
            " + 240], xmm15\n",
        )
    };
}

/// Loads XMM0..XMM15 back from the 256 bytes at operand `$at`.
macro_rules! restore_xmm {
    ($at:literal) => {
        concat!(
            "movdqu xmm0, [",
            $at,
            "]\n movdqu xmm1, [",
            $at,
            " + 16]\n",
            "movdqu xmm2, [",
            $at,
            " + 32]\n movdqu xmm3, [",
            $at,
            " + 48]\n",
            "movdqu xmm4, [",
            $at,
            " + 64]\n movdqu xmm5, [",
            $at,
            " + 80]\n",
            "movdqu xmm6, [",
            $at,
            " + 96]\n movdqu xmm7, [",
            $at,
            " + 112]\n",
            "movdqu xmm8, [",
            $at,
            " + 128]\n movdqu xmm9, [",
            $at,
            " + 144]\n",
            "movdqu xmm10, [",
            $at,
            " + 160]\n movdqu xmm11, [",
            $at,
            " + 176]\n",
            "movdqu xmm12, [",
            $at,
            " + 192]\n movdqu xmm13, [",
            $at,
            " + 208]\n",
            "movdqu xmm14, [",
            $at,
            " + 224]\n movdqu xmm15, [",
            $at,
            " + 240]\n",
        )
    };
}

/// `$dst = $src * x` in GF(2^128) with the XTS bit order (IEEE 1619 §5.2): shift the
/// 128-bit little-endian value left by one; the bit shifted out of the top is folded back
/// as 0x87 into the low byte. PADDQ shifts each 64-bit half; the sign bits of the
/// halves, moved by PSHUFD and spread by PSRAD, give the carry into the high half (1)
/// and the reduction (0x87) through the mask in XMM1. Clobbers XMM0. Six instructions:
/// under an instruction-counting clock every one shows.
macro_rules! mul_x {
    ($dst:literal, $src:literal) => {
        concat!(
            "pshufd xmm0, ",
            $src,
            ", 0x13\n",
            "psrad xmm0, 31\n",
            "pand xmm0, xmm1\n",
            "movdqa ",
            $dst,
            ", ",
            $src,
            "\n",
            "paddq ",
            $dst,
            ", ",
            $dst,
            "\n",
            "pxor ",
            $dst,
            ", xmm0\n",
        )
    };
}

/// Applies `$op` with the round key at byte `$at` of the schedule `{k1}` to XMM0..XMM7.
macro_rules! round8 {
    ($op:literal, $at:literal) => {
        concat!(
            $op,
            " xmm0, [{k1} + ",
            $at,
            "]\n ",
            $op,
            " xmm1, [{k1} + ",
            $at,
            "]\n ",
            $op,
            " xmm2, [{k1} + ",
            $at,
            "]\n ",
            $op,
            " xmm3, [{k1} + ",
            $at,
            "]\n ",
            $op,
            " xmm4, [{k1} + ",
            $at,
            "]\n ",
            $op,
            " xmm5, [{k1} + ",
            $at,
            "]\n ",
            $op,
            " xmm6, [{k1} + ",
            $at,
            "]\n ",
            $op,
            " xmm7, [{k1} + ",
            $at,
            "]\n",
        )
    };
}

/// The 13 middle rounds and the last one, unrolled (no loop counter to pay per round),
/// with the schedule at `$k`, on one register `$x`.
macro_rules! rounds1 {
    ($op:literal, $last:literal, $x:literal, $k:literal) => {
        concat!(
            $op,
            " ",
            $x,
            ", [",
            $k,
            " + 16]\n",
            $op,
            " ",
            $x,
            ", [",
            $k,
            " + 32]\n",
            $op,
            " ",
            $x,
            ", [",
            $k,
            " + 48]\n",
            $op,
            " ",
            $x,
            ", [",
            $k,
            " + 64]\n",
            $op,
            " ",
            $x,
            ", [",
            $k,
            " + 80]\n",
            $op,
            " ",
            $x,
            ", [",
            $k,
            " + 96]\n",
            $op,
            " ",
            $x,
            ", [",
            $k,
            " + 112]\n",
            $op,
            " ",
            $x,
            ", [",
            $k,
            " + 128]\n",
            $op,
            " ",
            $x,
            ", [",
            $k,
            " + 144]\n",
            $op,
            " ",
            $x,
            ", [",
            $k,
            " + 160]\n",
            $op,
            " ",
            $x,
            ", [",
            $k,
            " + 176]\n",
            $op,
            " ",
            $x,
            ", [",
            $k,
            " + 192]\n",
            $op,
            " ",
            $x,
            ", [",
            $k,
            " + 208]\n",
            $last,
            " ",
            $x,
            ", [",
            $k,
            " + 224]\n",
        )
    };
}

/// The XTS loop over `{units}` data units of `{blocks}` 16-byte blocks each, from `{src}`
/// to `{dst}` (the same address for in place, or two buffers that do not overlap), with
/// the data key schedule `{k1}` (`$op`/`$last` are the encryption or decryption
/// instructions) and the tweak key schedule `{k2}` (always encryption). Eight blocks are
/// in flight per iteration: data in XMM0..XMM7, their tweaks in XMM8..XMM15; a shorter
/// tail goes one block at a time. Every round is unrolled.
macro_rules! xts_asm {
    ($op:literal, $last:literal) => {
        concat!(
            save_xmm!("{f}"),
            // Per data unit: tweak = AES-enc(K2, sector number).
            "2:\n",
            "movdqu xmm8, [{f} + 272]\n",
            "pxor xmm8, [{k2}]\n",
            rounds1!("aesenc", "aesenclast", "xmm8", "{k2}"),
            "movdqu [{f} + 256], xmm8\n",
            "mov {n}, {blocks}\n",
            "cmp {n}, 8\n",
            "jb 6f\n",
            // Eight blocks: tweaks T..T*x^7 in XMM8..XMM15, T*x^8 saved for next time.
            "4:\n",
            "movdqu xmm1, [{f} + 288]\n",
            "movdqu xmm8, [{f} + 256]\n",
            mul_x!("xmm9", "xmm8"),
            mul_x!("xmm10", "xmm9"),
            mul_x!("xmm11", "xmm10"),
            mul_x!("xmm12", "xmm11"),
            mul_x!("xmm13", "xmm12"),
            mul_x!("xmm14", "xmm13"),
            mul_x!("xmm15", "xmm14"),
            mul_x!("xmm2", "xmm15"),
            "movdqu [{f} + 256], xmm2\n",
            "movdqu xmm0, [{src}]\n movdqu xmm1, [{src} + 16]\n",
            "movdqu xmm2, [{src} + 32]\n movdqu xmm3, [{src} + 48]\n",
            "movdqu xmm4, [{src} + 64]\n movdqu xmm5, [{src} + 80]\n",
            "movdqu xmm6, [{src} + 96]\n movdqu xmm7, [{src} + 112]\n",
            "pxor xmm0, xmm8\n pxor xmm1, xmm9\n pxor xmm2, xmm10\n pxor xmm3, xmm11\n",
            "pxor xmm4, xmm12\n pxor xmm5, xmm13\n pxor xmm6, xmm14\n pxor xmm7, xmm15\n",
            round8!("pxor", "0"),
            round8!($op, "16"),
            round8!($op, "32"),
            round8!($op, "48"),
            round8!($op, "64"),
            round8!($op, "80"),
            round8!($op, "96"),
            round8!($op, "112"),
            round8!($op, "128"),
            round8!($op, "144"),
            round8!($op, "160"),
            round8!($op, "176"),
            round8!($op, "192"),
            round8!($op, "208"),
            round8!($last, "224"),
            "pxor xmm0, xmm8\n pxor xmm1, xmm9\n pxor xmm2, xmm10\n pxor xmm3, xmm11\n",
            "pxor xmm4, xmm12\n pxor xmm5, xmm13\n pxor xmm6, xmm14\n pxor xmm7, xmm15\n",
            "movdqu [{dst}], xmm0\n movdqu [{dst} + 16], xmm1\n",
            "movdqu [{dst} + 32], xmm2\n movdqu [{dst} + 48], xmm3\n",
            "movdqu [{dst} + 64], xmm4\n movdqu [{dst} + 80], xmm5\n",
            "movdqu [{dst} + 96], xmm6\n movdqu [{dst} + 112], xmm7\n",
            "add {src}, 128\n",
            "add {dst}, 128\n",
            "sub {n}, 8\n",
            "cmp {n}, 8\n",
            "jae 4b\n",
            // Fewer than eight blocks left: one at a time.
            "6:\n",
            "test {n}, {n}\n",
            "jz 9f\n",
            "movdqu xmm1, [{f} + 288]\n",
            "movdqu xmm8, [{f} + 256]\n",
            "7:\n",
            "movdqu xmm2, [{src}]\n",
            "pxor xmm2, xmm8\n",
            "pxor xmm2, [{k1}]\n",
            rounds1!($op, $last, "xmm2", "{k1}"),
            "pxor xmm2, xmm8\n",
            "movdqu [{dst}], xmm2\n",
            mul_x!("xmm9", "xmm8"),
            "movdqa xmm8, xmm9\n",
            "add {src}, 16\n",
            "add {dst}, 16\n",
            "dec {n}\n",
            "jnz 7b\n",
            // Next data unit: sector number + 1 (128-bit).
            "9:\n",
            "add qword ptr [{f} + 272], 1\n",
            "adc qword ptr [{f} + 280], 0\n",
            "dec {units}\n",
            "jnz 2b\n",
            restore_xmm!("{f}"),
        )
    };
}

/// Half of one AES-256 key expansion step (FIPS 197 §5.2, as in Intel's AES-NI white
/// paper): the next even round key in XMM1 from XMM1 and the odd one in XMM3.
macro_rules! expand_even {
    ($rcon:literal, $offset:literal) => {
        concat!(
            "aeskeygenassist xmm2, xmm3, ",
            $rcon,
            "\n",
            "pshufd xmm2, xmm2, 0xff\n",
            "movdqa xmm4, xmm1\n pslldq xmm4, 4\n pxor xmm1, xmm4\n",
            "pslldq xmm4, 4\n pxor xmm1, xmm4\n pslldq xmm4, 4\n pxor xmm1, xmm4\n",
            "pxor xmm1, xmm2\n",
            "movdqa [{enc} + ",
            $offset,
            "], xmm1\n",
        )
    };
}

/// The other half: the next odd round key in XMM3 (SubWord without RotWord or Rcon).
macro_rules! expand_odd {
    ($offset:literal) => {
        concat!(
            "aeskeygenassist xmm4, xmm1, 0\n",
            "pshufd xmm2, xmm4, 0xaa\n",
            "movdqa xmm4, xmm3\n pslldq xmm4, 4\n pxor xmm3, xmm4\n",
            "pslldq xmm4, 4\n pxor xmm3, xmm4\n pslldq xmm4, 4\n pxor xmm3, xmm4\n",
            "pxor xmm3, xmm2\n",
            "movdqa [{enc} + ",
            $offset,
            "], xmm3\n",
        )
    };
}

/// AES-256 key expansion of the 32 bytes at `{key}` into `{enc}`, then the decryption
/// schedule into `{dec}`. Uses XMM0..XMM4, `{c}` and `{d}`.
macro_rules! expand_key_asm {
    () => {
        concat!(
            "movdqu xmm1, [{key}]\n",
            "movdqu xmm3, [{key} + 16]\n",
            "movdqa [{enc}], xmm1\n",
            "movdqa [{enc} + 16], xmm3\n",
            expand_even!("0x01", "32"),
            expand_odd!("48"),
            expand_even!("0x02", "64"),
            expand_odd!("80"),
            expand_even!("0x04", "96"),
            expand_odd!("112"),
            expand_even!("0x08", "128"),
            expand_odd!("144"),
            expand_even!("0x10", "160"),
            expand_odd!("176"),
            expand_even!("0x20", "192"),
            expand_odd!("208"),
            expand_even!("0x40", "224"),
            // Decryption keys: dec[0] = enc[14], dec[i] = InvMixColumns(enc[14 - i]),
            // dec[14] = enc[0].
            "movdqa xmm0, [{enc} + 224]\n",
            "movdqa [{dec}], xmm0\n",
            "lea {c}, [{enc} + 208]\n",
            "lea {d}, [{dec} + 16]\n",
            "2:\n",
            "aesimc xmm0, [{c}]\n",
            "movdqa [{d}], xmm0\n",
            "sub {c}, 16\n",
            "add {d}, 16\n",
            "cmp {c}, {enc}\n",
            "jne 2b\n",
            "movdqa xmm0, [{enc}]\n",
            "movdqa [{dec} + 224], xmm0\n",
        )
    };
}

impl Aes256Ni {
    /// Expands a 256-bit key. The caller has checked [`available`].
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        let mut keys = Aes256Ni { enc: RoundKeys([[0; 16]; 15]), dec: RoundKeys([[0; 16]; 15]) };
        let mut frame = Frame::new(0);
        // SAFETY: AES-NI is present and SSE enabled (module preconditions). The block
        // reads 32 bytes from `key`, writes the 240 bytes of `keys.enc` and `keys.dec`
        // (16-byte aligned by `RoundKeys`, as MOVDQA needs) and the first 256 bytes of
        // `frame`; all are live, exclusively borrowed or read-only locals. XMM0..XMM15
        // are saved first and restored last, so the caller's vector state is unchanged;
        // the two scratch GPRs are outputs and the flags are clobbered (no
        // `preserves_flags`); it uses no stack.
        unsafe {
            asm!(
                save_xmm!("{f}"),
                expand_key_asm!(),
                restore_xmm!("{f}"),
                key = in(reg) key.as_ptr(),
                enc = in(reg) keys.enc.0.as_mut_ptr(),
                dec = in(reg) keys.dec.0.as_mut_ptr(),
                f = in(reg) &mut frame as *mut Frame,
                c = out(reg) _,
                d = out(reg) _,
                options(nostack),
            );
        }
        keys
    }

    /// XTS-encrypts `data` in place as consecutive data units of `unit` bytes, the first
    /// with number `sector`. The caller has checked that `unit` is a non-zero multiple of
    /// 16 and that `data` is a non-empty whole number of units.
    pub(crate) fn xts_encrypt(&self, tweak_key: &Aes256Ni, sector: u128, unit: usize, data: &mut [u8]) {
        let p = data.as_mut_ptr();
        // SAFETY: `p` is valid for reads and writes of `data.len()` bytes (one buffer,
        // in place), exclusively borrowed for the call.
        unsafe { self.xts_raw(true, tweak_key, sector, unit, (p, p, data.len())) }
    }

    /// The inverse of [`Self::xts_encrypt`], same preconditions.
    pub(crate) fn xts_decrypt(&self, tweak_key: &Aes256Ni, sector: u128, unit: usize, data: &mut [u8]) {
        let p = data.as_mut_ptr();
        // SAFETY: as in `xts_encrypt`.
        unsafe { self.xts_raw(false, tweak_key, sector, unit, (p, p, data.len())) }
    }

    /// [`Self::xts_encrypt`] (or, with `encrypt` false, decrypt) from `src` into `dst`
    /// in one pass; the caller has checked the lengths as there and that
    /// `src.len() == dst.len()`.
    pub(crate) fn xts_to(
        &self,
        encrypt: bool,
        tweak_key: &Aes256Ni,
        sector: u128,
        unit: usize,
        src: &[u8],
        dst: &mut [u8],
    ) {
        debug_assert_eq!(src.len(), dst.len());
        let len = src.len().min(dst.len());
        // SAFETY: `src` is valid for reads and `dst` (a distinct, exclusive borrow, so
        // the two do not overlap) for writes of `len` bytes.
        unsafe { self.xts_raw(encrypt, tweak_key, sector, unit, (src.as_ptr(), dst.as_mut_ptr(), len)) }
    }

    /// The XTS kernel on `len` bytes from `src` to `dst`.
    ///
    /// # Safety
    /// `src` must be valid for reads and `dst` for writes of `len` bytes, and the two
    /// ranges either identical or disjoint; `unit` a non-zero multiple of 16 and `len`
    /// a non-zero multiple of `unit`.
    unsafe fn xts_raw(
        &self,
        encrypt: bool,
        tweak_key: &Aes256Ni,
        sector: u128,
        unit: usize,
        (src, dst, len): (*const u8, *mut u8, usize),
    ) {
        debug_assert!(unit >= 16 && unit.is_multiple_of(16) && len != 0 && len.is_multiple_of(unit));
        let mut frame = Frame::new(sector);
        if encrypt {
            // SAFETY: AES-NI is present and SSE enabled (module preconditions). The block
            // reads `len` bytes from `src` and writes `len` bytes to `dst` (units * blocks
            // * 16, checked by the caller; each block is loaded before it is stored, so
            // in place works), reads the 240-byte aligned schedules `self.enc` and
            // `tweak_key.enc`, and reads/writes `frame` (304 bytes, aligned). XMM0..XMM15
            // are saved first and restored last; all GPRs it changes are operands; the
            // flags are clobbered (no `preserves_flags`); it uses no stack.
            unsafe {
                asm!(
                    xts_asm!("aesenc", "aesenclast"),
                    src = inout(reg) src => _,
                    dst = inout(reg) dst => _,
                    units = inout(reg) len / unit => _,
                    blocks = in(reg) unit / 16,
                    k1 = in(reg) self.enc.0.as_ptr(),
                    k2 = in(reg) tweak_key.enc.0.as_ptr(),
                    f = in(reg) &mut frame as *mut Frame,
                    n = out(reg) _,
                    options(nostack),
                );
            }
        } else {
            // SAFETY: as above; the data key schedule is `self.dec` (also 240 aligned
            // bytes) and the tweak is still computed with `tweak_key.enc`.
            unsafe {
                asm!(
                    xts_asm!("aesdec", "aesdeclast"),
                    src = inout(reg) src => _,
                    dst = inout(reg) dst => _,
                    units = inout(reg) len / unit => _,
                    blocks = in(reg) unit / 16,
                    k1 = in(reg) self.dec.0.as_ptr(),
                    k2 = in(reg) tweak_key.enc.0.as_ptr(),
                    f = in(reg) &mut frame as *mut Frame,
                    n = out(reg) _,
                    options(nostack),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
