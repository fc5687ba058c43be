//! Persistence ids (`DiskInfo.Persistence.id`) and Marathon's `<app>#<volume>#<uuid>` form.
//!
//! A persistence id becomes a directory name on the agent
//! (`<root>/volumes/roles/<role>/<id>`), so it is validated with Mesos's `validateID`: not
//! empty, at most 255 bytes, not `.` or `..`, no control characters, `/` or `\`.

use std::fmt;
use std::sync::Arc;

use crate::error::IdError;

/// `NAME_MAX` on Linux.
const NAME_MAX: usize = 255;

/// A validated persistence id. Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistenceId(Arc<str>);

impl PersistenceId {
    /// Validates `id` with Mesos's `validateID` rules.
    ///
    /// # Errors
    /// [`IdError`] naming the rule that failed.
    pub fn new(id: &str) -> Result<Self, IdError> {
        validate_id(id)?;
        Ok(PersistenceId(Arc::from(id)))
    }

    /// The id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the id as a Marathon local-volume id, if it has that form.
    ///
    /// # Errors
    /// [`IdError::NotMarathon`] when it does not.
    pub fn marathon(&self) -> Result<MarathonVolumeId, IdError> {
        self.as_str().parse()
    }
}

impl fmt::Debug for PersistenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PersistenceId({:?})", &*self.0)
    }
}

impl fmt::Display for PersistenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for PersistenceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        PersistenceId::new(s)
    }
}

impl AsRef<str> for PersistenceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Mesos `common::validation::validateID`.
///
/// # Errors
/// [`IdError`] naming the rule that failed.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > NAME_MAX {
        return Err(IdError::TooLong);
    }
    if id == "." || id == ".." {
        return Err(IdError::Dot(id.to_owned()));
    }
    // Mesos tests each byte with `iscntrl` (ASCII controls only), then `/` and `\`.
    if id
        .bytes()
        .any(|b| b.is_ascii_control() || b == b'/' || b == b'\\')
    {
        return Err(IdError::InvalidCharacters(id.to_owned()));
    }
    Ok(())
}

/// Marathon's local persistent volume id: `<app safe path>#<volume name>#<uuid>`, where the safe
/// path is the app id without its leading `/` and with `/` replaced by `_`
/// (`/prod/db` → `prod_db`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MarathonVolumeId {
    app_safe_path: String,
    volume: String,
    uuid: uuid::Uuid,
}

impl MarathonVolumeId {
    /// Builds the id for `app_id` (e.g. `/prod/db`) and the volume `volume` (e.g. `data`) with
    /// a given UUID.
    ///
    /// # Errors
    /// [`IdError`] if the parts contain `#` or the result is not a valid persistence id.
    pub fn new(app_id: &str, volume: &str, uuid: uuid::Uuid) -> Result<Self, IdError> {
        let app_safe_path = app_id.trim_start_matches('/').replace('/', "_");
        let id = MarathonVolumeId {
            app_safe_path,
            volume: volume.to_owned(),
            uuid,
        };
        let text = id.to_string();
        if id.app_safe_path.is_empty()
            || id.volume.is_empty()
            || id.app_safe_path.contains('#')
            || id.volume.contains('#')
        {
            return Err(IdError::NotMarathon(text));
        }
        validate_id(&text)?;
        Ok(id)
    }

    /// Builds the id with a fresh time-based (version 1) UUID, as Marathon does.
    ///
    /// # Errors
    /// As [`MarathonVolumeId::new`].
    pub fn generate(app_id: &str, volume: &str) -> Result<Self, IdError> {
        let node: [u8; 6] = *uuid::Uuid::new_v4()
            .as_bytes()
            .first_chunk::<6>()
            .unwrap_or(&[0; 6]);
        Self::new(app_id, volume, uuid::Uuid::now_v1(&node))
    }

    /// The app id's safe path (`prod_db`).
    #[must_use]
    pub fn app_safe_path(&self) -> &str {
        &self.app_safe_path
    }

    /// The volume name (`data`).
    #[must_use]
    pub fn volume(&self) -> &str {
        &self.volume
    }

    /// The UUID.
    #[must_use]
    pub fn uuid(&self) -> uuid::Uuid {
        self.uuid
    }

    /// As a [`PersistenceId`].
    ///
    /// # Errors
    /// Never for values built by this type's constructors; kept fallible for safety.
    pub fn persistence_id(&self) -> Result<PersistenceId, IdError> {
        PersistenceId::new(&self.to_string())
    }
}

impl fmt::Display for MarathonVolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}#{}#{}",
            self.app_safe_path,
            self.volume,
            self.uuid.hyphenated()
        )
    }
}

impl std::str::FromStr for MarathonVolumeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let not = || IdError::NotMarathon(s.to_owned());
        validate_id(s)?;
        let mut parts = s.split('#');
        let (Some(app), Some(volume), Some(uuid), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(not());
        };
        if app.is_empty() || volume.is_empty() {
            return Err(not());
        }
        let uuid = uuid::Uuid::try_parse(uuid).map_err(|_| not())?;
        Ok(MarathonVolumeId {
            app_safe_path: app.to_owned(),
            volume: volume.to_owned(),
            uuid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_id_rules() {
        assert_eq!(PersistenceId::new(""), Err(IdError::Empty));
        assert_eq!(PersistenceId::new(&"a".repeat(256)), Err(IdError::TooLong));
        assert!(PersistenceId::new(&"a".repeat(255)).is_ok());
        assert_eq!(PersistenceId::new(".."), Err(IdError::Dot("..".into())));
        assert_eq!(PersistenceId::new("."), Err(IdError::Dot(".".into())));
        assert!(matches!(
            PersistenceId::new("a/b"),
            Err(IdError::InvalidCharacters(_))
        ));
        assert!(matches!(
            PersistenceId::new("a\\b"),
            Err(IdError::InvalidCharacters(_))
        ));
        assert!(matches!(
            PersistenceId::new("a\nb"),
            Err(IdError::InvalidCharacters(_))
        ));
        assert!(PersistenceId::new("...").is_ok());
        assert!(PersistenceId::new("my-volume.1").is_ok());
    }

    #[test]
    fn marathon_round_trip() {
        let id = MarathonVolumeId::generate("/prod/db", "data").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.app_safe_path(), "prod_db");
        assert_eq!(id.volume(), "data");
        assert_eq!(id.uuid().get_version_num(), 1);
        let text = id.to_string();
        assert!(text.starts_with("prod_db#data#"));
        let back: MarathonVolumeId = text.parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, id);
        let pid = id.persistence_id().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pid.marathon().ok(), Some(id));
    }

    #[test]
    fn marathon_rejects_other_forms() {
        for bad in [
            "a#b",
            "a#b#c",
            "#b#1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "a#b#c#d",
        ] {
            assert!(bad.parse::<MarathonVolumeId>().is_err(), "{bad}");
        }
        assert!(
            "a#b#1b4e28ba-2fa1-11d2-883f-0016d3cca427"
                .parse::<MarathonVolumeId>()
                .is_ok()
        );
        assert!(MarathonVolumeId::new("/a", "x#y", uuid::Uuid::nil()).is_err());
    }
}
