//! Downloads into the cache: through a temporary file that is renamed into place only
//! after its size and SHA256 match, so an interrupted or corrupted download never
//! replaces or poses as a good file.

use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::GuestError;

/// What a download must match.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub sha256: &'a str,
    pub size: u64,
}

#[derive(Debug)]
pub struct Fetcher {
    agent: ureq::Agent,
    pub cache_dir: PathBuf,
}

impl Fetcher {
    pub fn new(cache_dir: &Path) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(concat!("bulkhead-images/", env!("CARGO_PKG_VERSION")))
            .build();
        Fetcher { agent: config.into(), cache_dir: cache_dir.to_owned() }
    }

    /// Fetches a small file (a Release file) into memory.
    pub fn get_small(&self, url: &str) -> Result<Vec<u8>, GuestError> {
        let mut body = Vec::new();
        let resp = self.call(url)?;
        resp.into_body()
            .into_reader()
            .take(64 << 20)
            .read_to_end(&mut body)
            .map_err(|e| self.unreachable(url, e.to_string()))?;
        Ok(body)
    }

    /// Downloads `url` to `dest`, checking size and SHA256 before the file appears.
    pub fn download(&self, url: &str, dest: &Path, expect: Expect<'_>) -> Result<(), GuestError> {
        let resp = self.call(url)?;
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned());
        let label = name.unwrap_or_else(|| url.to_owned());
        let tmp = temp_path(dest);
        let result = (|| {
            let mut out = File::create(&tmp).map_err(GuestError::io(&tmp))?;
            let mut reader = resp.into_body().into_reader();
            let mut hasher = Sha256::new();
            let mut progress = Progress::new(&label, expect.size);
            let mut buf = vec![0u8; 256 << 10];
            let mut done = 0u64;
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(self.unreachable(url, e.to_string())),
                };
                done += n as u64;
                if done > expect.size {
                    return Err(GuestError::ChecksumMismatch {
                        what: url.to_owned(),
                        expected: format!("{} bytes", expect.size),
                        actual: format!("more than {} bytes", expect.size),
                    });
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(GuestError::io(&tmp))?;
                progress.update(done);
            }
            progress.finish(done);
            check(url, expect, done, &hex(&hasher.finalize()))?;
            out.sync_all().map_err(GuestError::io(&tmp))?;
            fs::rename(&tmp, dest).map_err(GuestError::io(dest))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn call(&self, url: &str) -> Result<ureq::http::Response<ureq::Body>, GuestError> {
        log::debug!(target: "guest", "GET {url}");
        self.agent.get(url).call().map_err(|e| match e {
            ureq::Error::StatusCode(status) => GuestError::Http { url: url.to_owned(), status },
            other => self.unreachable(url, other.to_string()),
        })
    }

    fn unreachable(&self, url: &str, reason: String) -> GuestError {
        GuestError::MirrorUnreachable { url: url.to_owned(), cache_dir: self.cache_dir.clone(), reason }
    }
}

fn check(what: &str, expect: Expect<'_>, size: u64, sha256: &str) -> Result<(), GuestError> {
    if size != expect.size {
        return Err(GuestError::ChecksumMismatch {
            what: what.to_owned(),
            expected: format!("{} bytes", expect.size),
            actual: format!("{size} bytes"),
        });
    }
    if !sha256.eq_ignore_ascii_case(expect.sha256) {
        return Err(GuestError::ChecksumMismatch {
            what: what.to_owned(),
            expected: expect.sha256.to_owned(),
            actual: sha256.to_owned(),
        });
    }
    Ok(())
}

/// Checks bytes already in memory against what the archive lists.
#[cfg(test)]
pub fn verify_bytes(what: &str, bytes: &[u8], expect: Expect<'_>) -> Result<(), GuestError> {
    check(what, expect, bytes.len() as u64, &sha256_hex(bytes))
}

/// True when `path` exists and matches; a cached file that does not match is removed so
/// that it is downloaded again.
pub fn cached_ok(path: &Path, expect: Expect<'_>) -> Result<bool, GuestError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(GuestError::Io { path: path.to_owned(), source: e });
        }
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(GuestError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    if check("", expect, size, &hex(&hasher.finalize())).is_ok() {
        return Ok(true);
    }
    log::warn!(target: "guest", "cached {} does not match its checksum; fetching it again", path.display());
    fs::remove_file(path).map_err(GuestError::io(path))?;
    Ok(false)
}

/// Writes a file through a temporary name and a rename, so readers see old or new.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), GuestError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(GuestError::io(dir))?;
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(GuestError::io(path))
}

/// A sibling name no other process or thread uses, so that concurrent builds sharing a
/// cache never write into each other's temporary files.
pub fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".part-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Progress on stderr: one updating line on a terminal, a line per quarter otherwise.
struct Progress<'a> {
    label: &'a str,
    total: u64,
    tty: bool,
    last: Instant,
    last_quarter: u64,
    started: Instant,
}

impl<'a> Progress<'a> {
    fn new(label: &'a str, total: u64) -> Self {
        let now = Instant::now();
        Progress { label, total, tty: io::stderr().is_terminal(), last: now, last_quarter: 0, started: now }
    }

    fn update(&mut self, done: u64) {
        let pct = done * 100 / self.total.max(1);
        if self.tty {
            if self.last.elapsed() >= Duration::from_millis(200) {
                self.last = Instant::now();
                eprint!("\r  {}: {} / {} ({pct}%)   ", self.label, mib(done), mib(self.total));
            }
        } else if pct / 25 > self.last_quarter && pct < 100 {
            self.last_quarter = pct / 25;
            eprintln!("  {}: {} / {} ({pct}%)", self.label, mib(done), mib(self.total));
        }
    }

    fn finish(&self, done: u64) {
        let secs = self.started.elapsed().as_secs_f64();
        let end = if self.tty { "\r" } else { "" };
        eprintln!("{end}  {}: {} in {secs:.1} s          ", self.label, mib(done));
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_checksum_and_size_mismatch() {
        let data = b"hello";
        let good = sha256_hex(data);
        assert_eq!(good, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        verify_bytes("x", data, Expect { sha256: &good, size: 5 }).unwrap();
        let bad = "00".repeat(32);
        let err = verify_bytes("x", data, Expect { sha256: &bad, size: 5 }).unwrap_err();
        assert!(matches!(err, GuestError::ChecksumMismatch { .. }), "{err}");
        assert!(verify_bytes("x", data, Expect { sha256: &good, size: 6 }).is_err());
    }

    #[test]
    fn cached_file_with_wrong_checksum_is_dropped() {
        let dir = std::env::temp_dir().join(format!("bulkhead-fetch-{}", std::process::id()));
        let path = dir.join("f.deb");
        write_atomic(&path, b"hello").unwrap();
        let good = sha256_hex(b"hello");
        assert!(cached_ok(&path, Expect { sha256: &good, size: 5 }).unwrap());
        let bad = "11".repeat(32);
        assert!(!cached_ok(&path, Expect { sha256: &bad, size: 5 }).unwrap());
        assert!(!path.exists(), "a mismatching cached file must be removed");
        assert!(!cached_ok(&path, Expect { sha256: &good, size: 5 }).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }
}
