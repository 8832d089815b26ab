//! The set of packages the configured suites offer, and resolution of the kernel
//! metapackages (`linux-image-cloud-amd64` → `linux-image-6.1.0-56-cloud-amd64`).

use std::collections::HashMap;

use super::GuestError;
use super::control::{self, Relation};
use super::version;

/// What the index says about one binary package in one suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageEntry {
    pub name: String,
    pub version: String,
    pub depends: String,
    /// `Pre-Depends:` (where e2fsprogs lists its libraries).
    pub pre_depends: String,
    /// Path below the suite's archive root (`pool/main/...`).
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    /// Index into [`Universe::suites`].
    pub suite: usize,
}

#[derive(Debug, Default)]
pub struct Universe {
    pub suites: Vec<String>,
    by_name: HashMap<String, Vec<PackageEntry>>,
}

impl Universe {
    pub fn new(suites: Vec<String>) -> Self {
        Universe { suites, by_name: HashMap::new() }
    }

    /// Adds the stanzas of one Packages index whose name passes `keep` (the full main
    /// index has ~60k packages; only a few matter here).
    pub fn add_index(&mut self, suite: usize, text: &str, keep: impl Fn(&str) -> bool) -> Result<usize, String> {
        let mut added = 0;
        for stanza in control::stanzas(text) {
            let stanza = stanza?;
            let Some(name) = stanza.get("Package") else {
                return Err("stanza without Package field".into());
            };
            if !keep(name) {
                continue;
            }
            let field = |f: &str| stanza.get(f).ok_or_else(|| format!("package {name} has no {f} field"));
            let sha256 = field("SHA256")?.to_ascii_lowercase();
            if !control::is_sha256(&sha256) {
                return Err(format!("package {name} has a malformed SHA256"));
            }
            let filename = field("Filename")?;
            if filename.split('/').any(|c| c == ".." || c.is_empty()) {
                return Err(format!("package {name} has an unsafe Filename {filename}"));
            }
            let entry = PackageEntry {
                name: name.to_owned(),
                version: field("Version")?.to_owned(),
                depends: stanza.get("Depends").unwrap_or_default().to_owned(),
                pre_depends: stanza.get("Pre-Depends").unwrap_or_default().to_owned(),
                filename: filename.to_owned(),
                size: field("Size")?.parse().map_err(|_| format!("package {name} has a malformed Size"))?,
                sha256,
                suite,
            };
            self.by_name.entry(entry.name.clone()).or_default().push(entry);
            added += 1;
        }
        Ok(added)
    }

    /// The newest version of `rel.name` that satisfies its version constraint, over all
    /// suites.
    pub fn newest(&self, rel: &Relation) -> Option<&PackageEntry> {
        self.by_name
            .get(&rel.name)?
            .iter()
            .filter(|e| rel.accepts(&e.version))
            .max_by(|a, b| version::compare(&a.version, &b.version))
    }

    pub fn newest_named(&self, name: &str) -> Result<&PackageEntry, GuestError> {
        let rel = Relation { name: name.to_owned(), constraint: None };
        self.newest(&rel)
            .ok_or_else(|| GuestError::PackageNotFound { name: name.to_owned(), suites: self.suites.clone() })
    }

    /// Follows a kernel metapackage through `Depends:` to the package that ships
    /// `/boot/vmlinuz-*`. Returns the chain, metapackage first, concrete package last.
    pub fn resolve_kernel(&self, meta: &str) -> Result<Vec<&PackageEntry>, GuestError> {
        let bad = |reason: String| GuestError::BadMetapackage { name: meta.to_owned(), reason };
        let mut chain = vec![self.newest_named(meta)?];
        // Debian's chain is one step; allow a few in case a transitional package appears.
        for _ in 0..4 {
            let current = chain[chain.len() - 1];
            if is_concrete_kernel(&current.name) {
                return Ok(chain);
            }
            let groups = control::parse_relations(&current.depends)
                .map_err(|e| bad(format!("{} Depends: {e}", current.name)))?;
            let group =
                groups.iter().find(|g| g.iter().any(|r| r.name.starts_with("linux-image-"))).ok_or_else(|| {
                    bad(format!(
                        "{} {} depends on no linux-image package (Depends: {})",
                        current.name, current.version, current.depends
                    ))
                })?;
            let next = group.iter().find_map(|r| self.newest(r)).ok_or_else(|| {
                bad(format!(
                    "{} {} depends on {}, which no suite offers",
                    current.name,
                    current.version,
                    group.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(" | ")
                ))
            })?;
            chain.push(next);
        }
        Err(bad("dependency chain is too long".into()))
    }
}

/// `linux-image-6.1.0-56-cloud-amd64` (or `-unsigned`) ships a kernel; the flavour
/// metapackages (`linux-image-cloud-amd64`) do not.
pub fn is_concrete_kernel(name: &str) -> bool {
    name.strip_prefix("linux-image-").is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// The kernel release (`uname -r`) a concrete kernel package installs.
pub fn kernel_release(package: &str) -> Option<&str> {
    let rest = package.strip_prefix("linux-image-")?;
    let rest = rest.strip_suffix("-unsigned").unwrap_or(rest);
    rest.starts_with(|c: char| c.is_ascii_digit()).then_some(rest)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn stanza(name: &str, version: &str, depends: &str, n: u8) -> String {
        format!(
            "Package: {name}\nSource: linux-signed-amd64\nVersion: {version}\n\
             Depends: {depends}\nFilename: pool/main/l/{name}_{version}_amd64.deb\n\
             Size: 1{n}\nSHA256: {}\nDescription: test\n fixture\n\n",
            format!("{n:02x}").repeat(32)
        )
    }

    /// A fixture shaped like bookworm + bookworm-security: the security suite has the
    /// newer metapackage, pointing at a newer ABI.
    pub(crate) fn fixture() -> Universe {
        let main = [
            stanza("linux-image-cloud-amd64", "6.1.176-1", "linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)", 1),
            stanza("linux-image-6.1.0-50-cloud-amd64", "6.1.176-1", "kmod, linux-base (>= 4.3~)", 2),
            stanza("linux-image-amd64", "6.1.176-1", "linux-image-6.1.0-50-amd64 (= 6.1.176-1)", 3),
            stanza("linux-image-6.1.0-50-amd64", "6.1.176-1", "kmod", 4),
            stanza("busybox-static", "1:1.35.0-4+b1", "", 5),
            stanza("hello", "2.10-3", "libc6", 6),
        ]
        .concat();
        let security = [
            stanza("linux-image-cloud-amd64", "6.1.192-2", "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)", 7),
            stanza("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2", "kmod", 8),
            stanza("linux-image-amd64", "6.1.192-2", "linux-image-6.1.0-57-amd64 (= 6.1.192-2)", 9),
        ]
        .concat();
        let mut u = Universe::new(vec!["bookworm".into(), "bookworm-security".into()]);
        let keep = |n: &str| n.starts_with("linux-image-") || n == "busybox-static";
        assert_eq!(u.add_index(0, &main, keep).unwrap(), 5);
        assert_eq!(u.add_index(1, &security, keep).unwrap(), 3);
        u
    }

    #[test]
    fn resolves_cloud_metapackage_to_newest_suite() {
        let u = fixture();
        let chain = u.resolve_kernel("linux-image-cloud-amd64").unwrap();
        let last = chain.last().unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(last.name, "linux-image-6.1.0-56-cloud-amd64");
        assert_eq!((last.version.as_str(), last.suite), ("6.1.192-2", 1));
        assert_eq!(last.sha256, "08".repeat(32));
        assert_eq!(kernel_release(&last.name), Some("6.1.0-56-cloud-amd64"));
    }

    #[test]
    fn missing_dependency_is_explained() {
        let u = fixture();
        let err = u.resolve_kernel("linux-image-amd64").unwrap_err().to_string();
        assert!(err.contains("linux-image-6.1.0-57-amd64"), "{err}");
        let err = u.resolve_kernel("linux-image-nope").unwrap_err().to_string();
        assert!(err.contains("bookworm-security"), "{err}");
        assert_eq!(u.newest_named("busybox-static").unwrap().version, "1:1.35.0-4+b1");
    }

    #[test]
    fn rejects_malformed_entries() {
        let mut u = Universe::new(vec!["x".into()]);
        let bad_sha = "Package: a\nVersion: 1\nFilename: pool/a.deb\nSize: 1\nSHA256: abc\n";
        assert!(u.add_index(0, bad_sha, |_| true).is_err());
        let unsafe_path =
            format!("Package: a\nVersion: 1\nFilename: ../etc/a.deb\nSize: 1\nSHA256: {}\n", "0".repeat(64));
        assert!(u.add_index(0, &unsafe_path, |_| true).is_err());
        assert!(!is_concrete_kernel("linux-image-cloud-amd64"));
        assert_eq!(kernel_release("linux-image-6.1.0-56-amd64-unsigned"), Some("6.1.0-56-amd64"));
    }
}
