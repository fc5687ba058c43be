//! Marathon's ids: the instance id carried in the `marathon_task_id` reservation label, and
//! the app "safe path" used in both it and persistence ids (`/prod/db` → `prod_db`).

use std::fmt;

use regex::Regex;

/// `runSpecId.safePath`: the path segments joined with `_`.
#[must_use]
pub fn safe_path(run_spec_id: &str) -> String {
    run_spec_id.trim_start_matches('/').replace('/', "_")
}

/// How an instance id was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceIdStyle {
    /// `<safePath>.instance-<uuid>` (current Marathon).
    Instance,
    /// `<safePath>.marathon-<uuid>`.
    Marathon,
    /// `<safePath>.<uuid>` or `<safePath>_<uuid>` (legacy task ids).
    Legacy(char),
}

/// The id of one instance of a run spec, as stored in the `marathon_task_id` label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceId {
    /// The run spec's safe path.
    pub safe_path: String,
    /// The instance's unique part (a UUID when berth generates it).
    pub uuid: String,
    /// The written form.
    pub style: InstanceIdStyle,
}

impl InstanceId {
    /// A new instance id for `run_spec_id` with a time-based UUID, as Marathon generates.
    #[must_use]
    pub fn generate(run_spec_id: &str) -> InstanceId {
        let node: [u8; 6] = *uuid::Uuid::new_v4()
            .as_bytes()
            .first_chunk::<6>()
            .unwrap_or(&[0; 6]);
        InstanceId {
            safe_path: safe_path(run_spec_id),
            uuid: uuid::Uuid::now_v1(&node).hyphenated().to_string(),
            style: InstanceIdStyle::Instance,
        }
    }

    /// Parses a label value with Marathon's two regexes (new, then legacy).
    #[must_use]
    pub fn parse(text: &str) -> Option<InstanceId> {
        let new = Regex::new(r"^(.+)\.(instance-|marathon-)([^\.]+)$").ok()?;
        if let Some(c) = new.captures(text) {
            let style = if &c[2] == "instance-" {
                InstanceIdStyle::Instance
            } else {
                InstanceIdStyle::Marathon
            };
            return Some(InstanceId {
                safe_path: c[1].to_owned(),
                uuid: c[3].to_owned(),
                style,
            });
        }
        let legacy = Regex::new(r"^(.+)([\._])([^_\.]+)$").ok()?;
        let c = legacy.captures(text)?;
        let sep = c[2].chars().next()?;
        Some(InstanceId {
            safe_path: c[1].to_owned(),
            uuid: c[3].to_owned(),
            style: InstanceIdStyle::Legacy(sep),
        })
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.style {
            InstanceIdStyle::Instance => write!(f, "{}.instance-{}", self.safe_path, self.uuid),
            InstanceIdStyle::Marathon => write!(f, "{}.marathon-{}", self.safe_path, self.uuid),
            InstanceIdStyle::Legacy(sep) => write!(f, "{}{sep}{}", self.safe_path, self.uuid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_round_trip() {
        let id = InstanceId::generate("/prod/db");
        assert_eq!(id.safe_path, "prod_db");
        let text = id.to_string();
        assert!(text.starts_with("prod_db.instance-"));
        assert_eq!(InstanceId::parse(&text), Some(id));
        for text in [
            "prod_db.marathon-abc",
            "prod_db.1234",
            "prod_db_1234",
            "a.b.instance-x",
        ] {
            let parsed = InstanceId::parse(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(
            InstanceId::parse("a.b.instance-x").map(|i| i.safe_path),
            Some("a.b".to_owned())
        );
        assert_eq!(InstanceId::parse("nodelimiter"), None);
        assert_eq!(safe_path("/a/b/c"), "a_b_c");
    }
}
