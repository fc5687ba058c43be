//! Role names (Mesos `roles::validate`) and the role hierarchy.

use std::fmt;
use std::sync::Arc;

use crate::error::RoleError;

/// A valid, non-`*` role name such as `prod` or `eng/backend` (hierarchical).
///
/// The unreserved pseudo-role `*` is not a [`Role`]: berth represents "unreserved" as an empty
/// reservation stack. Cloning is cheap (the name is shared).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Role(Arc<str>);

impl Role {
    /// Validates a role name with Mesos's rules.
    ///
    /// # Errors
    /// [`RoleError`] naming the rule that failed; `*` is refused with [`RoleError::Star`].
    pub fn new(name: &str) -> Result<Self, RoleError> {
        validate_role_name(name)?;
        if name == "*" {
            return Err(RoleError::Star);
        }
        Ok(Role(Arc::from(name)))
    }

    /// The role name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if `self` is a strict sub-role of `parent` (`a/b` of `a`, `a/b/c` of `a`).
    #[must_use]
    pub fn is_strict_subrole_of(&self, parent: &Role) -> bool {
        is_strict_subrole(self.as_str(), parent.as_str())
    }

    /// True for hierarchical roles (names containing `/`).
    #[must_use]
    pub fn is_hierarchical(&self) -> bool {
        self.0.contains('/')
    }
}

impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Role({:?})", &*self.0)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Role {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Role {
    type Err = RoleError;
    fn from_str(s: &str) -> Result<Self, RoleError> {
        Role::new(s)
    }
}

/// `isStrictSubroleOf(child, parent)`.
#[must_use]
pub fn is_strict_subrole(child: &str, parent: &str) -> bool {
    child.len() > parent.len()
        && child.starts_with(parent)
        && child.as_bytes().get(parent.len()) == Some(&b'/')
}

/// Mesos `roles::validate`: `*` is valid; otherwise no leading/trailing slash, no `//`, not
/// empty, no `.`/`..`/`*` component, no component starting with `-`, no whitespace or DEL.
///
/// # Errors
/// The [`RoleError`] of the first rule that fails.
pub fn validate_role_name(name: &str) -> Result<(), RoleError> {
    if name == "*" {
        return Ok(());
    }
    if name.is_empty() {
        return Err(RoleError::Empty);
    }
    if name.starts_with('/') {
        return Err(RoleError::LeadingSlash(name.to_owned()));
    }
    if name.ends_with('/') {
        return Err(RoleError::TrailingSlash(name.to_owned()));
    }
    if name.contains("//") {
        return Err(RoleError::AdjacentSlashes(name.to_owned()));
    }
    // Component by component, in order, as Mesos checks them.
    for component in name.split('/') {
        if matches!(component, "." | ".." | "*") {
            return Err(RoleError::ReservedComponent {
                role: name.to_owned(),
                component: component.to_owned(),
            });
        }
        if component.starts_with('-') {
            return Err(RoleError::LeadingDash(component.to_owned()));
        }
        if component
            .chars()
            .any(|c| matches!(c, '\t' | '\n' | '\u{0b}' | '\u{0c}' | '\r' | ' ' | '\u{7f}'))
        {
            return Err(RoleError::Whitespace(component.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_roles() {
        for ok in ["a", "a/b/c", "prod-1", "x.y", "a*b"] {
            assert!(Role::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/a", "a/", "a//b", ".", "a/../b", "*/a", "-a", "a/-b", "a b", "a\u{7f}",
        ] {
            assert!(Role::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Role::new("*"), Err(RoleError::Star));
        assert!(validate_role_name("*").is_ok());
    }

    #[test]
    fn subroles() {
        assert!(is_strict_subrole("foo/bar", "foo"));
        assert!(is_strict_subrole("foo/bar/baz", "foo"));
        assert!(!is_strict_subrole("foo", "foo"));
        assert!(!is_strict_subrole("foobar", "foo"));
    }
}
