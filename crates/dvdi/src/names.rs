//! Validated names: plugin (driver) names, volume names and consumer ids.
//!
//! - [`DriverName`]: a plugin name as Docker discovers it. v1 names are file names
//!   (`rexray`, `btrfs`); v2 (managed) names may carry `/` and `:` (`rexray/ebs:latest`). The
//!   name becomes a path below a discovery root, so every `/`-separated component must be a
//!   plain component: not empty, not starting with `.`, only `[A-Za-z0-9_.+:@-]`.
//! - [`VolumeName`]: any non-empty text of at most 255 bytes without control characters,
//!   other than `.` and `..`. It only ever travels in JSON bodies, and our records encode it
//!   ([`berth_mount::names::encode_component`]) before it becomes a path component.
//! - [`ConsumerId`]: the `ID` sent on Mount and Unmount (a full Mesos `ContainerID` such as
//!   `parent.child`, or `agent:<agent id>` in the compatibility mode): the same rules as a
//!   volume name.

use std::fmt;

use crate::error::{Result, invalid};

/// The longest name accepted (Linux `NAME_MAX`).
pub const MAX_NAME: usize = 255;

fn check_text(what: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(invalid(what, s, "empty"));
    }
    if s.len() > MAX_NAME {
        return Err(invalid(what, s, "longer than 255 bytes"));
    }
    if s == "." || s == ".." {
        return Err(invalid(what, s, "'.' and '..' are not names"));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(what, s, "contains a control character"));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$m:meta])* $t:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $t(String);

        impl $t {
            /// The name as text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $t {
            type Err = crate::DvdiError;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// A plugin (volume driver) name, validated (see the module docs).
    DriverName
);
name_type!(
    /// A volume name, validated (see the module docs).
    VolumeName
);
name_type!(
    /// A consumer id: the `ID` of Mount and Unmount (see the module docs).
    ConsumerId
);

impl DriverName {
    /// Validates a plugin name.
    ///
    /// # Errors
    /// [`crate::DvdiError::Invalid`] naming the broken rule.
    pub fn new(name: &str) -> Result<Self> {
        const WHAT: &str = "plugin name";
        check_text(WHAT, name)?;
        for comp in name.split('/') {
            if comp.is_empty() {
                return Err(invalid(
                    WHAT,
                    name,
                    "empty path component (leading, trailing or double '/')",
                ));
            }
            if comp.starts_with('.') {
                return Err(invalid(WHAT, name, "a component starts with '.'"));
            }
            if let Some(c) = comp.chars().find(|c| {
                !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | ':' | '@' | '-'))
            }) {
                return Err(invalid(
                    WHAT,
                    name,
                    format!(
                        "character {c:?} is not allowed (letters, digits, '_.+:@-' and '/' only)"
                    ),
                ));
            }
        }
        Ok(Self(name.to_owned()))
    }

    /// The names Docker would also accept for this plugin: a v2 reference without a tag also
    /// names `<name>:latest`, and `<name>:latest` also names the bare `<name>` (the plugin
    /// store normalises references this way).
    #[must_use]
    pub fn aliases(&self) -> Vec<String> {
        let last = self.0.rsplit('/').next().unwrap_or(&self.0);
        if let Some(base) = self.0.strip_suffix(":latest") {
            vec![base.to_owned()]
        } else if self.0.contains('/') && !last.contains(':') {
            vec![format!("{}:latest", self.0)]
        } else {
            Vec::new()
        }
    }
}

impl VolumeName {
    /// Validates a volume name.
    ///
    /// # Errors
    /// [`crate::DvdiError::Invalid`] naming the broken rule.
    pub fn new(name: &str) -> Result<Self> {
        check_text("volume name", name)?;
        Ok(Self(name.to_owned()))
    }
}

impl ConsumerId {
    /// Validates a consumer id.
    ///
    /// # Errors
    /// [`crate::DvdiError::Invalid`] naming the broken rule.
    pub fn new(id: &str) -> Result<Self> {
        check_text("consumer id", id)?;
        Ok(Self(id.to_owned()))
    }

    /// The synthetic id of the compatibility mode: `agent:<agent_id>`.
    ///
    /// # Errors
    /// As [`ConsumerId::new`].
    pub fn agent(agent_id: &str) -> Result<Self> {
        Self::new(&format!("agent:{agent_id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names() {
        for good in [
            "rexray",
            "btrfs",
            "rexray/ebs:latest",
            "org/x-y/z_1.2:v3",
            "a@b",
        ] {
            assert_eq!(DriverName::new(good).unwrap().as_str(), good);
        }
        for bad in [
            "", "/abs", "a//b", "a/", "..", "a/../b", ".hidden", "a/.b", "a b", "a\0b", "a\nb",
            "a;b", "a$b", "a\\b", "a%2e",
        ] {
            assert!(DriverName::new(bad).is_err(), "{bad:?}");
        }
        assert!(DriverName::new(&"x".repeat(256)).is_err());
    }

    #[test]
    fn aliases() {
        let a = |s: &str| DriverName::new(s).unwrap().aliases();
        assert_eq!(a("rexray/ebs"), vec!["rexray/ebs:latest"]);
        assert_eq!(a("rexray/ebs:latest"), vec!["rexray/ebs"]);
        assert!(a("rexray").is_empty());
        assert!(a("rexray/ebs:0.11").is_empty());
    }

    #[test]
    fn volume_names() {
        for good in ["v", "vol 1", "ümlaut", "a/b", "...", "x:y"] {
            assert!(VolumeName::new(good).is_ok(), "{good:?}");
        }
        for bad in ["", ".", "..", "a\nb", "a\0b", "\u{7f}"] {
            assert!(VolumeName::new(bad).is_err(), "{bad:?}");
        }
        assert!(VolumeName::new(&"x".repeat(256)).is_err());
        assert_eq!(ConsumerId::agent("a1").unwrap().as_str(), "agent:a1");
    }
}
