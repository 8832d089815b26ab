//! Errors of the guest image builder. Each message says what went wrong and what to do.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum GuestError {
    /// The mirror could not be reached and the cache has nothing to fall back on.
    MirrorUnreachable { url: String, cache_dir: PathBuf, reason: String },
    /// The server answered, but not with the file (404 after the archive moved on, etc.).
    Http { url: String, status: u16 },
    /// Downloaded or cached bytes do not match the checksum the archive lists.
    ChecksumMismatch { what: String, expected: String, actual: String },
    /// A Release/InRelease file is malformed or lacks an entry we need.
    BadRelease { url: String, reason: String },
    /// A Packages index could not be parsed.
    BadIndex { what: String, reason: String },
    /// No suite lists the package.
    PackageNotFound { name: String, suites: Vec<String> },
    /// A metapackage's Depends does not lead to a concrete kernel package.
    BadMetapackage { name: String, reason: String },
    /// A .deb (or its data tarball) is malformed.
    BadDeb { path: PathBuf, reason: String },
    /// A package lacks a file we need from it.
    MissingFile { package: String, what: String },
    /// A requested kernel module is neither built in nor shipped as a module.
    ModuleNotFound { name: String, kernel_version: String },
    /// A kernel module file is malformed.
    BadModule { path: PathBuf, reason: String },
    /// The cache directory could not be read or written.
    Io { path: PathBuf, source: std::io::Error },
}

impl GuestError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| GuestError::Io { path, source }
    }

    /// True when a file the cached index names is gone from the mirror, so a fresh
    /// index is likely to fix it.
    pub(crate) fn is_stale(&self) -> bool {
        matches!(self, GuestError::Http { status: 404 | 410, .. })
    }
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestError::MirrorUnreachable { url, cache_dir, reason } => write!(
                f,
                "cannot reach the Debian mirror at {url} ({reason}) and the guest cache in {} \
                 has no copy to use; connect to a network that reaches the mirror once, or \
                 copy a filled guest cache into that directory",
                cache_dir.display()
            ),
            GuestError::Http { url, status } => write!(
                f,
                "the mirror answered HTTP {status} for {url}; if the file was superseded, \
                 refresh the package indices"
            ),
            GuestError::ChecksumMismatch { what, expected, actual } => write!(
                f,
                "SHA256 of {what} is {actual} but the archive lists {expected}; the download \
                 was corrupted or tampered with and was discarded, so retry (or use another \
                 mirror)"
            ),
            GuestError::BadRelease { url, reason } => {
                write!(f, "the Release file from {url} is unusable: {reason}")
            }
            GuestError::BadIndex { what, reason } => {
                write!(f, "the package index {what} is unusable: {reason}")
            }
            GuestError::PackageNotFound { name, suites } => write!(
                f,
                "package {name} is in none of the suites {}; check the suite names and the \
                 architecture",
                suites.join(", ")
            ),
            GuestError::BadMetapackage { name, reason } => {
                write!(f, "metapackage {name} does not lead to a kernel image package: {reason}")
            }
            GuestError::BadDeb { path, reason } => write!(
                f,
                "{} is not a usable Debian package: {reason}; delete it from the cache to \
                 download it again",
                path.display()
            ),
            GuestError::MissingFile { package, what } => {
                write!(f, "package {package} does not contain {what}")
            }
            GuestError::ModuleNotFound { name, kernel_version } => write!(
                f,
                "kernel {kernel_version} has no module {name} (neither built in nor shipped); \
                 check the name, or use the generic flavour, which ships more modules"
            ),
            GuestError::BadModule { path, reason } => {
                write!(f, "kernel module {} is unusable: {reason}", path.display())
            }
            GuestError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for GuestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GuestError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
