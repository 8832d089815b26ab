//! Debian control-file syntax: stanzas (Packages, Release) and relation fields (Depends).

use std::cmp::Ordering;

use super::version;

/// One paragraph of `Name: value` fields. Multi-line values keep their raw text, with
/// continuation lines still indented.
#[derive(Debug, Default)]
pub struct Stanza<'a> {
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Stanza<'a> {
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }
}

/// Splits control text into stanzas. Malformed lines are reported with their line number.
pub fn stanzas(text: &str) -> impl Iterator<Item = Result<Stanza<'_>, String>> {
    let mut lines = text.split_inclusive('\n').enumerate();
    let base = text.as_ptr() as usize;
    let offset = move |s: &str| s.as_ptr() as usize - base;
    std::iter::from_fn(move || {
        let mut stanza = Stanza::default();
        // (field index, start offset of its value) while a field may still continue.
        let mut open: Option<(usize, usize)> = None;
        for (no, line) in lines.by_ref() {
            let content = line.trim_end_matches(['\n', '\r']);
            if content.trim().is_empty() {
                if stanza.fields.is_empty() {
                    continue;
                }
                return Some(Ok(stanza));
            }
            if content.starts_with(' ') || content.starts_with('\t') {
                match open {
                    Some((i, start)) => {
                        let end = offset(content) + content.len();
                        stanza.fields[i].1 = text[start..end].trim();
                    }
                    None => {
                        return Some(Err(format!("line {}: continuation without field", no + 1)));
                    }
                }
                continue;
            }
            if content.starts_with('#') {
                continue;
            }
            let Some((name, value)) = content.split_once(':') else {
                return Some(Err(format!("line {}: expected `Name: value`", no + 1)));
            };
            let start = offset(value);
            open = Some((stanza.fields.len(), start));
            stanza.fields.push((name.trim(), value.trim()));
        }
        (!stanza.fields.is_empty()).then_some(Ok(stanza))
    })
}

/// The body of a clearsigned `InRelease` (or a plain `Release`), without the armour.
pub fn clearsigned_body(text: &str) -> Result<String, String> {
    const BEGIN: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
    const SIG: &str = "-----BEGIN PGP SIGNATURE-----";
    let Some(rest) = text.trim_start().strip_prefix(BEGIN) else {
        return Ok(text.to_owned());
    };
    // Armour headers ("Hash: SHA256") end at the first empty line.
    let body_start = rest.find("\n\n").ok_or("signed message has no body")? + 2;
    let body = &rest[body_start..];
    let end = body.find(SIG).ok_or("signed message has no signature block")?;
    let mut out = String::with_capacity(end);
    for line in body[..end].lines() {
        // RFC 4880 §7.1: lines starting with '-' are escaped as "- ".
        out.push_str(line.strip_prefix("- ").unwrap_or(line));
        out.push('\n');
    }
    Ok(out)
}

/// A file listed in a Release file's `SHA256:` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct Release {
    pub suite: String,
    pub codename: String,
    pub date: String,
    pub acquire_by_hash: bool,
    pub files: Vec<ReleaseFile>,
}

impl Release {
    pub fn parse(text: &str) -> Result<Release, String> {
        let body = clearsigned_body(text)?;
        let stanza = stanzas(&body).next().ok_or("empty Release file")??;
        let sums = stanza.get("SHA256").ok_or("no SHA256 field")?;
        let mut files = Vec::new();
        for line in sums.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut parts = line.split_whitespace();
            let (Some(sha), Some(size), Some(path), None) = (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("bad SHA256 line `{line}`"));
            };
            let size = size.parse().map_err(|_| format!("bad size in `{line}`"))?;
            if !is_sha256(sha) {
                return Err(format!("bad SHA256 digest in `{line}`"));
            }
            files.push(ReleaseFile { path: path.to_owned(), size, sha256: sha.to_ascii_lowercase() });
        }
        let field = |n: &str| stanza.get(n).unwrap_or_default().to_owned();
        Ok(Release {
            suite: field("Suite"),
            codename: field("Codename"),
            date: field("Date"),
            acquire_by_hash: stanza.get("Acquire-By-Hash").is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            files,
        })
    }

    pub fn file(&self, path: &str) -> Option<&ReleaseFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

/// `=`, `>=`, `<=`, `>>`, `<<` in a Depends field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ge,
    Le,
    Gt,
    Lt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    pub constraint: Option<(Op, String)>,
}

impl Relation {
    pub fn accepts(&self, version: &str) -> bool {
        let Some((op, want)) = &self.constraint else {
            return true;
        };
        let ord = version::compare(version, want);
        match op {
            Op::Eq => ord == Ordering::Equal,
            Op::Ge => ord != Ordering::Less,
            Op::Le => ord != Ordering::Greater,
            Op::Gt => ord == Ordering::Greater,
            Op::Lt => ord == Ordering::Less,
        }
    }
}

/// Parses a relation field into AND-ed groups of OR-ed alternatives. Architecture
/// restrictions (`[amd64]`) and build profiles (`<!nocheck>`) are dropped.
pub fn parse_relations(field: &str) -> Result<Vec<Vec<Relation>>, String> {
    let mut groups = Vec::new();
    for group in field.split(',').map(str::trim).filter(|g| !g.is_empty()) {
        let mut alts = Vec::new();
        for alt in group.split('|').map(str::trim) {
            let alt = alt.split(['[', '<']).next().unwrap_or_default().trim();
            let (name, constraint) = match alt.split_once('(') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix(')').ok_or_else(|| format!("unclosed `(` in `{alt}`"))?.trim();
                    let (op, ver) = [(">=", Op::Ge), ("<=", Op::Le), (">>", Op::Gt), ("<<", Op::Lt), ("=", Op::Eq)]
                        .into_iter()
                        .find_map(|(s, op)| inner.strip_prefix(s).map(|v| (op, v.trim())))
                        .ok_or_else(|| format!("bad version constraint in `{alt}`"))?;
                    if ver.is_empty() {
                        return Err(format!("empty version in `{alt}`"));
                    }
                    (name.trim(), Some((op, ver.to_owned())))
                }
                None => (alt, None),
            };
            // "pkg:any" names the same package.
            let name = name.split(':').next().unwrap_or_default();
            if name.is_empty() {
                return Err(format!("empty package name in `{group}`"));
            }
            alts.push(Relation { name: name.to_owned(), constraint });
        }
        groups.push(alts);
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stanzas_with_continuations() {
        let text = "Package: a\nVersion: 1\nDescription: short\n long line\n .\n\n\nPackage: b\nVersion: 2\n";
        let all: Vec<_> = stanzas(text).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].get("package"), Some("a"));
        assert_eq!(all[0].get("Description"), Some("short\n long line\n ."));
        assert_eq!(all[1].get("Version"), Some("2"));
        assert!(stanzas(" orphan\n").next().unwrap().is_err());
        assert!(stanzas("no colon here\n").next().unwrap().is_err());
    }

    #[test]
    fn parses_clearsigned_release() {
        let sha = "9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5";
        let text = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: Debian\nSuite: oldstable\n\
             Codename: bookworm\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nAcquire-By-Hash: yes\n\
             MD5Sum:\n b838d31986207780a596ce3e8010f90f  8790396 main/binary-amd64/Packages.xz\n\
             SHA256:\n {sha}  8790396 main/binary-amd64/Packages.xz\n\
             -----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n"
        );
        let r = Release::parse(&text).unwrap();
        assert_eq!(r.codename, "bookworm");
        assert!(r.acquire_by_hash);
        let f = r.file("main/binary-amd64/Packages.xz").unwrap();
        assert_eq!((f.size, f.sha256.as_str()), (8790396, sha));
        assert!(Release::parse("Origin: x\n").is_err());
        assert!(Release::parse("SHA256:\n zz 1 a\n").is_err());
    }

    #[test]
    fn parses_relations() {
        let g =
            parse_relations("linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2), a:any | b (>= 1.0) [amd64], c <!nocheck>")
                .unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!(g[0][0].name, "linux-image-6.1.0-56-cloud-amd64");
        assert_eq!(g[0][0].constraint, Some((Op::Eq, "6.1.192-2".into())));
        assert!(g[0][0].accepts("6.1.192-2") && !g[0][0].accepts("6.1.192-3"));
        assert_eq!((g[1][0].name.as_str(), g[1][1].name.as_str()), ("a", "b"));
        assert!(g[1][1].accepts("1.0") && !g[1][1].accepts("0.9"));
        assert_eq!(g[2][0].name, "c");
        assert!(parse_relations("a (= 1").is_err());
        assert!(parse_relations("a (~ 1)").is_err());
    }
}
