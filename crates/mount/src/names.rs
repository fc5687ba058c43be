//! Ids and names before they become path components, and the container domain types
//! ([`ContainerId`], [`ContainerPath`]) parsed once for the agent and the Docker volume bridge.
//!
//! [`validate_component`] is the gate for names used verbatim (persistence ids, container ids,
//! role names): it refuses empty, `.`, `..`, `/`, NUL, control characters and more than 255
//! bytes. [`encode_component`] turns *any* non-empty id (a CSI `volume_id`, a Docker v2 plugin
//! name such as `rexray/ebs:latest`) into one safe component, reversibly
//! ([`decode_component`]): bytes outside `[A-Za-z0-9_.+,=@:-]`, `%` itself, and a `.` at the
//! start are percent-encoded (`%2F`), so `.`/`..` and hidden names cannot come out, and Mesos's
//! failure to encode `.`/`..` in CSI volume ids (research `isolators.md` §1.10(4)) cannot recur.

use std::path::{Component, Path, PathBuf};

use crate::error::{MountError, Result};

/// The longest path component Linux accepts.
pub const MAX_COMPONENT: usize = 255;

fn invalid(name: &str, reason: &'static str) -> MountError {
    MountError::InvalidName {
        name: name.to_owned(),
        reason,
    }
}

/// Checks that `name` can be used verbatim as one path component.
///
/// # Errors
/// [`MountError::InvalidName`] saying which rule failed.
pub fn validate_component(name: &str) -> Result<&str> {
    if name.is_empty() {
        return Err(invalid(name, "empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid(name, "'.' and '..' are not names"));
    }
    if name.len() > MAX_COMPONENT {
        return Err(invalid(name, "longer than 255 bytes"));
    }
    if name.contains('/') {
        return Err(invalid(name, "contains '/'"));
    }
    if name.contains('\0') {
        return Err(invalid(name, "contains NUL"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(name, "contains a control character"));
    }
    Ok(name)
}

fn plain(b: u8, first: bool) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(b, b'_' | b'+' | b',' | b'=' | b'@' | b':' | b'-')
        || (b == b'.' && !first)
}

/// Encodes a non-empty id as one safe path component (see the module docs).
///
/// # Errors
/// [`MountError::InvalidName`] when the id is empty or its encoding exceeds 255 bytes.
pub fn encode_component(id: &str) -> Result<String> {
    if id.is_empty() {
        return Err(invalid(id, "empty"));
    }
    let mut out = String::with_capacity(id.len());
    for (i, &b) in id.as_bytes().iter().enumerate() {
        if plain(b, i == 0) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 15));
        }
    }
    if out.len() > MAX_COMPONENT {
        return Err(invalid(id, "encoded form longer than 255 bytes"));
    }
    Ok(out)
}

fn hex_digit(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'A' + (n - 10) })
}

fn unhex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes what [`encode_component`] produced.
///
/// # Errors
/// [`MountError::InvalidName`] for anything it cannot have produced.
pub fn decode_component(encoded: &str) -> Result<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(unhex),
                bytes.get(i + 2).copied().and_then(unhex),
            ) else {
                return Err(invalid(encoded, "bad percent escape"));
            };
            out.push((hi << 4) | lo);
            i += 3;
        } else if plain(b, i == 0) {
            out.push(b);
            i += 1;
        } else {
            return Err(invalid(encoded, "not an encoded component"));
        }
    }
    String::from_utf8(out).map_err(|_| invalid(encoded, "decodes to invalid UTF-8"))
}

/// The longest container id: berth keeps a record per container named `<id>.json`, one file
/// name (255 bytes at most).
pub const MAX_CONTAINER_ID: usize = 250;

/// A container id, checked once: one path component ([`validate_component`]) of at most
/// [`MAX_CONTAINER_ID`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerId(String);

impl ContainerId {
    /// Checks `id`.
    ///
    /// # Errors
    /// [`MountError::InvalidName`] saying which rule failed.
    pub fn new(id: &str) -> Result<Self> {
        validate_component(id)?;
        if id.len() > MAX_CONTAINER_ID {
            return Err(invalid(id, "longer than 250 bytes"));
        }
        Ok(Self(id.to_owned()))
    }

    /// The id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ContainerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A path inside a container, checked once with the one rule set every caller shares (the
/// agent's volumes, the Docker volume specs): not empty, no NUL, no `..` component, no
/// leading `.` component, no component over 255 bytes, and not the root itself. An absolute
/// path is inside the container's root filesystem, a relative one inside its sandbox; both
/// become the same normal components ([`ContainerPath::in_root`]). Callers with a narrower
/// contract add their own rule on top (the DVDI environment wants absolute paths, the Docker
/// volume specs refuse control characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerPath {
    raw: PathBuf,
    in_root: PathBuf,
}

impl ContainerPath {
    /// The rule refusing the root itself (as [`ContainerPath::rule`] names it).
    pub const ROOT: &'static str = "is the root";
    /// The rule refusing a component over 255 bytes (as [`ContainerPath::rule`] names it).
    pub const LONG_COMPONENT: &'static str = "has a component longer than 255 bytes";

    /// Checks `raw`.
    ///
    /// # Errors
    /// [`MountError::InvalidPath`] naming the rule ([`ContainerPath::rule`] gives it alone).
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = |reason| MountError::InvalidPath {
            path: PathBuf::from(raw),
            reason,
        };
        if raw.is_empty() {
            return Err(bad("is empty"));
        }
        if raw.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        let mut in_root = PathBuf::new();
        for c in Path::new(raw).components() {
            match c {
                Component::RootDir => {}
                Component::Normal(n) if n.len() > MAX_COMPONENT => {
                    return Err(bad(Self::LONG_COMPONENT));
                }
                Component::Normal(n) => in_root.push(n),
                Component::ParentDir => return Err(bad("has a '..' component")),
                Component::CurDir => return Err(bad("has a '.' component")),
                Component::Prefix(_) => return Err(bad("has a prefix")),
            }
        }
        if in_root.as_os_str().is_empty() {
            return Err(bad(Self::ROOT));
        }
        Ok(Self {
            raw: PathBuf::from(raw),
            in_root,
        })
    }

    /// The rule a [`ContainerPath::parse`] error broke, for callers that word their own error.
    #[must_use]
    pub fn rule(e: &MountError) -> Option<&'static str> {
        match e {
            MountError::InvalidPath { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Whether the path is absolute (inside the rootfs) rather than relative (the sandbox).
    #[must_use]
    pub fn is_absolute(&self) -> bool {
        self.raw.is_absolute()
    }

    /// The path as given.
    #[must_use]
    pub fn as_path(&self) -> &Path {
        &self.raw
    }

    /// The path inside its root: its normal components, never empty.
    #[must_use]
    pub fn in_root(&self) -> &Path {
        &self.in_root
    }
}

impl std::fmt::Display for ContainerPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.raw.display().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn validation_rules() {
        for bad in [
            "", ".", "..", "a/b", "/", "a\0b", "a\nb", "a\tb", "\u{7f}", "\u{85}",
        ] {
            assert!(
                matches!(validate_component(bad), Err(MountError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(validate_component(&"x".repeat(256)).is_err());
        for good in [
            "pv-1",
            "a.b",
            "...",
            "ümlaut",
            "with space",
            &"x".repeat(255),
        ] {
            assert_eq!(validate_component(good).unwrap(), good);
        }
    }

    #[test]
    fn encoding_examples() {
        assert_eq!(
            encode_component("rexray/ebs:latest").unwrap(),
            "rexray%2Febs:latest"
        );
        assert_eq!(encode_component(".").unwrap(), "%2E");
        assert_eq!(encode_component("..").unwrap(), "%2E.");
        assert_eq!(encode_component("50%").unwrap(), "50%25");
        assert!(encode_component("").is_err());
        assert!(encode_component(&"/".repeat(86)).is_err());
        assert!(decode_component("%zz").is_err());
        assert!(decode_component("a/b").is_err());
        assert!(decode_component(".x").is_err());
    }

    #[test]
    fn container_ids() {
        assert_eq!(ContainerId::new("c-1").unwrap().as_str(), "c-1");
        assert!(ContainerId::new(&"x".repeat(250)).is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(251)] {
            assert!(
                matches!(ContainerId::new(bad), Err(MountError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn container_path_rules() {
        for (raw, abs, in_root) in [
            ("data", false, "data"),
            ("a/./b//c/", false, "a/b/c"),
            ("/x", true, "x"),
            ("/./x", true, "x"),
            ("/a/b", true, "a/b"),
            ("with\nnewline", false, "with\nnewline"),
        ] {
            let p = ContainerPath::parse(raw).unwrap();
            assert_eq!(p.is_absolute(), abs, "{raw:?}");
            assert_eq!(p.in_root(), Path::new(in_root), "{raw:?}");
            assert_eq!(p.as_path(), Path::new(raw));
        }
        for (raw, rule) in [
            ("", "is empty"),
            ("a\0b", "contains a NUL byte"),
            ("../x", "has a '..' component"),
            ("a/..", "has a '..' component"),
            ("/a/../b", "has a '..' component"),
            ("./x", "has a '.' component"),
            (".", "has a '.' component"),
            ("/", "is the root"),
            ("//", "is the root"),
            ("/.", "is the root"),
        ] {
            let e = ContainerPath::parse(raw).unwrap_err();
            assert_eq!(ContainerPath::rule(&e), Some(rule), "{raw:?}: {e}");
        }
        let long = "x".repeat(256);
        assert!(ContainerPath::parse(&long).is_err());
        assert!(ContainerPath::parse(&"x".repeat(255)).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any id up to 20 chars encodes to a valid component and decodes back to itself.
        #[test]
        fn encode_round_trips(id in "\\PC{1,20}|[./%\\x00-\\x1f]{1,40}") {
            let enc = encode_component(&id).unwrap();
            prop_assert!(validate_component(&enc).is_ok(), "{enc:?}");
            prop_assert!(!enc.starts_with('.'));
            prop_assert_eq!(decode_component(&enc).unwrap(), id);
        }
    }
}
