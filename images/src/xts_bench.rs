//! `cargo xtask bench xts`: the disk encryption's throughput on this host, one core.
//!
//! AES-256-XTS over a 64 MiB buffer on each backend of `bulkhead-diskcrypt`: one
//! 512-byte sector per call (the worst case: the AES-NI path saves and restores the
//! XMM registers on every call) and 64 KiB requests (128 sectors per call), then one
//! Argon2id KEK derivation with the laptop parameters. The crate is built with
//! optimisation even in dev builds (root Cargo.toml), so the figures hold for
//! `cargo xtask`.

use bulkhead_diskcrypt::{Backend, KdfParams, Xts, derive_kek};
use std::time::{Duration, Instant};

/// Bytes encrypted per pass.
pub const BUFFER_BYTES: usize = 64 << 20;
/// Each measurement repeats passes until at least this long has passed.
const MIN_TIME: Duration = Duration::from_secs(1);

/// One measured configuration.
#[derive(Debug, Clone)]
pub struct XtsFigure {
    pub backend: Backend,
    pub decrypt: bool,
    pub bytes_per_call: usize,
    /// Decimal megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
}

/// Runs one configuration: whole passes over `buf`, `bytes_per_call` at a time.
fn measure(xts: &Xts, buf: &mut [u8], bytes_per_call: usize, decrypt: bool) -> Result<f64, String> {
    let start = Instant::now();
    let mut bytes = 0usize;
    while bytes == 0 || start.elapsed() < MIN_TIME {
        for (i, chunk) in buf.chunks_mut(bytes_per_call).enumerate() {
            let first = (i * bytes_per_call / 512) as u128;
            let result =
                if decrypt { xts.decrypt_sectors(first, 512, chunk) } else { xts.encrypt_sectors(first, 512, chunk) };
            result.map_err(|e| e.to_string())?;
        }
        bytes += buf.len();
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// The XTS figures for every backend this CPU has (AES-NI only if CPUID reports it).
pub fn xts_figures() -> Result<Vec<XtsFigure>, String> {
    let key: [u8; 64] = std::array::from_fn(|i| (i as u8).wrapping_mul(151).wrapping_add(7));
    let mut buf: Vec<u8> = (0..BUFFER_BYTES).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let mut backends = vec![];
    if Backend::detect() == Backend::AesNi {
        backends.push(Backend::AesNi);
    }
    backends.push(Backend::Software);
    let mut figures = vec![];
    for backend in backends {
        let xts = Xts::with_backend(&key, backend).map_err(|e| e.to_string())?;
        for (bytes_per_call, decrypt) in [(512, false), (512, true), (64 << 10, false), (64 << 10, true)] {
            let mb_per_s = measure(&xts, &mut buf, bytes_per_call, decrypt)?;
            figures.push(XtsFigure { backend, decrypt, bytes_per_call, mb_per_s });
        }
    }
    Ok(figures)
}

/// Seconds for one KEK derivation with [`KdfParams::LAPTOP`].
pub fn kek_seconds() -> Result<f64, String> {
    let start = Instant::now();
    derive_kek(b"correct horse battery staple", &[0x5a; 16], &KdfParams::LAPTOP).map_err(|e| e.to_string())?;
    Ok(start.elapsed().as_secs_f64())
}

/// The host CPU's model name, for the report.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
