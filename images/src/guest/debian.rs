//! The Debian archive as seen through the cache: Release files, Packages indices and
//! .deb downloads, each verified by SHA256 down the chain InRelease → Packages → .deb.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::GuestError;
use super::control::Release;
use super::fetch::{self, Expect, Fetcher};
use super::resolve::{PackageEntry, Universe};

/// One `deb` line: an archive root and a suite, e.g. `http://deb.debian.org/debian bookworm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    pub base_url: String,
    pub name: String,
}

/// Where packages come from. The default matches a stock bookworm `sources.list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    pub suites: Vec<Suite>,
    pub component: String,
    pub arch: String,
    /// Keyring for InRelease signatures (checked with gpgv when the host has it);
    /// `None` skips the check and relies on the checksums alone.
    pub keyring: Option<PathBuf>,
}

impl Sources {
    /// bookworm, bookworm-updates and bookworm-security on deb.debian.org. Kernel
    /// security updates land in bookworm-security, so it must be included.
    pub fn bookworm() -> Self {
        Self::with_mirror("http://deb.debian.org/debian", "http://deb.debian.org/debian-security")
    }

    pub fn with_mirror(debian: &str, security: &str) -> Self {
        let suite =
            |base: &str, name: &str| Suite { base_url: base.trim_end_matches('/').to_owned(), name: name.to_owned() };
        Sources {
            suites: vec![
                suite(debian, "bookworm"),
                suite(debian, "bookworm-updates"),
                suite(security, "bookworm-security"),
            ],
            component: "main".into(),
            arch: "amd64".into(),
            keyring: Some(PathBuf::from(DEBIAN_KEYRING)),
        }
    }
}

impl Default for Sources {
    fn default() -> Self {
        Self::bookworm()
    }
}

/// Whether to ask the mirror for newer indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Freshness {
    /// Use the cached Release files when there are any: repeatable and offline. The
    /// mirror is asked only for what the cache lacks.
    #[default]
    PreferCache,
    /// Fetch current Release files (new security kernels); fall back to the cache when
    /// the mirror is unreachable.
    Refresh,
}

pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

#[derive(Debug)]
pub struct Archive {
    fetcher: Fetcher,
    sources: Sources,
    pub universe: Universe,
}

impl Archive {
    /// Loads (or fetches) the indices of all suites, keeping the packages `keep` accepts.
    pub fn open(
        cache_dir: &Path,
        sources: &Sources,
        freshness: Freshness,
        keep: impl Fn(&str) -> bool + Copy,
    ) -> Result<Archive, GuestError> {
        let fetcher = Fetcher::new(cache_dir);
        let names = sources.suites.iter().map(|s| s.name.clone()).collect();
        let mut universe = Universe::new(names);
        for (i, suite) in sources.suites.iter().enumerate() {
            let release = load_release(&fetcher, suite, sources.keyring.as_deref(), freshness)?;
            let text = load_index(&fetcher, sources, suite, &release)?;
            let n = universe.add_index(i, &text, keep).map_err(|reason| GuestError::BadIndex {
                what: format!("{} {}", suite.base_url, suite.name),
                reason,
            })?;
            log::debug!(target: "guest", "{}: {n} packages of interest", suite.name);
        }
        Ok(Archive { fetcher, sources: sources.clone(), universe })
    }

    /// The verified .deb of `entry`, from the cache or the mirror.
    pub fn fetch_deb(&self, entry: &PackageEntry) -> Result<PathBuf, GuestError> {
        let base = entry.filename.rsplit('/').next().unwrap_or(&entry.filename);
        let dir = self.fetcher.cache_dir.join("downloads");
        let path = dir.join(format!("{}_{base}", &entry.sha256[..16]));
        let expect = Expect { sha256: &entry.sha256, size: entry.size };
        if fetch::cached_ok(&path, expect)? {
            return Ok(path);
        }
        fs::create_dir_all(&dir).map_err(GuestError::io(&dir))?;
        let suite = &self.sources.suites[entry.suite];
        let url = format!("{}/{}", suite.base_url, entry.filename);
        self.fetcher.download(&url, &path, expect)?;
        Ok(path)
    }
}

fn release_path(cache: &Path, suite: &Suite) -> PathBuf {
    let site: String = (suite.base_url.split_once("://").map_or(&*suite.base_url, |(_, r)| r))
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .collect();
    cache.join("dists").join(site).join(&suite.name).join("InRelease")
}

fn load_release(
    fetcher: &Fetcher,
    suite: &Suite,
    keyring: Option<&Path>,
    freshness: Freshness,
) -> Result<Release, GuestError> {
    let path = release_path(&fetcher.cache_dir, suite);
    let cached = fs::read_to_string(&path).ok().and_then(|t| Release::parse(&t).ok());
    if let (Freshness::PreferCache, Some(release)) = (freshness, &cached) {
        log::info!(target: "guest", "{}: cached index of {}", suite.name, release.date);
        return Ok(release.clone());
    }
    let url = format!("{}/dists/{}/InRelease", suite.base_url, suite.name);
    let bytes = match fetcher.get_small(&url) {
        Ok(bytes) => bytes,
        Err(e @ GuestError::MirrorUnreachable { .. }) => match cached {
            Some(release) => {
                log::warn!(target: "guest", "{e}\n  using the cached index of {} instead", release.date);
                return Ok(release);
            }
            None => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let text = String::from_utf8_lossy(&bytes);
    let release = Release::parse(&text).map_err(|reason| GuestError::BadRelease { url: url.clone(), reason })?;
    // A validly signed Release of another suite must not stand in for this one.
    if release.codename != suite.name && release.suite != suite.name {
        return Err(GuestError::BadRelease {
            url,
            reason: format!("it describes suite {} ({}), not {}", release.suite, release.codename, suite.name),
        });
    }
    let tmp = fetch::temp_path(&path);
    fetch::write_atomic(&tmp, &bytes)?;
    let checked =
        check_signature(&url, &tmp, keyring).and_then(|()| fs::rename(&tmp, &path).map_err(GuestError::io(&path)));
    if checked.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    checked?;
    log::info!(target: "guest", "{}: index of {}", suite.name, release.date);
    Ok(release)
}

/// Checks the InRelease signature with gpgv and Debian's keyring when the host has
/// both; the Packages and .deb checksums are verified either way.
fn check_signature(url: &str, file: &Path, keyring: Option<&Path>) -> Result<(), GuestError> {
    let Some(keyring) = keyring else {
        return Ok(());
    };
    if !keyring.exists() {
        log::warn!(target: "guest", "{} is missing; InRelease signature not checked", keyring.display());
        return Ok(());
    }
    let out = Command::new("gpgv").arg("--keyring").arg(keyring).arg(file).output();
    match out {
        Ok(out) if out.status.success() => {
            log::debug!(target: "guest", "InRelease signature good: {url}");
            Ok(())
        }
        Ok(out) => Err(GuestError::BadRelease {
            url: url.to_owned(),
            reason: format!(
                "bad signature (gpgv with {}): {}",
                keyring.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
        Err(e) => {
            log::warn!(target: "guest", "gpgv not available ({e}); InRelease signature not checked");
            Ok(())
        }
    }
}

fn load_index(fetcher: &Fetcher, sources: &Sources, suite: &Suite, release: &Release) -> Result<String, GuestError> {
    let dir = format!("{}/binary-{}", sources.component, sources.arch);
    let entry = ["Packages.xz", "Packages.gz", "Packages"]
        .iter()
        .find_map(|name| release.file(&format!("{dir}/{name}")))
        .ok_or_else(|| GuestError::BadRelease {
            url: format!("{}/dists/{}", suite.base_url, suite.name),
            reason: format!("it lists no {dir}/Packages index"),
        })?;
    let file_name = entry.path.rsplit('/').next().unwrap_or("Packages");
    let path = fetcher.cache_dir.join("indices").join(format!("{}-{}-{file_name}", suite.name, &entry.sha256[..16]));
    let expect = Expect { sha256: &entry.sha256, size: entry.size };
    if !fetch::cached_ok(&path, expect)? {
        let dists = format!("{}/dists/{}", suite.base_url, suite.name);
        // by-hash URLs cannot change under us between reading InRelease and the index.
        let url = if release.acquire_by_hash {
            format!("{dists}/{dir}/by-hash/SHA256/{}", entry.sha256)
        } else {
            format!("{dists}/{}", entry.path)
        };
        let parent = path.parent().unwrap_or(&path);
        fs::create_dir_all(parent).map_err(GuestError::io(parent))?;
        fetcher.download(&url, &path, expect)?;
    }
    let file = fs::File::open(&path).map_err(GuestError::io(&path))?;
    let mut text = String::new();
    let bad = |e: std::io::Error| GuestError::BadIndex { what: path.display().to_string(), reason: e.to_string() };
    let reader = std::io::BufReader::new(file);
    match file_name {
        "Packages.xz" => lzma_rust2::XzReader::new(reader, true).read_to_string(&mut text),
        "Packages.gz" => flate2::read::MultiGzDecoder::new(reader).read_to_string(&mut text),
        _ => {
            let mut r = reader;
            r.read_to_string(&mut text)
        }
    }
    .map_err(bad)?;
    Ok(text)
}
