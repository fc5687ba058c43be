//! The Mesos agent's `--resources` text format: `cpus:4;mem:4096;disk(db):10000;ports:[31000-32000]`,
//! or a JSON array of resources (Mesos `Resources::parse` and `Resources::fromJSON`).
//!
//! `name(role):value` reserves statically for `role` (`*` = unreserved); values are scalars,
//! ranges `[a-b,c-d]` or sets `{x,y}`. Resources without a role get `default_role`.

#![allow(deprecated)] // `Resource.role` is deprecated in Mesos but is part of the legacy format we read.

use berth_proto::mesos::v1 as pb;
use serde_json::Value as Json;

use crate::error::InputError;
use crate::{Resources, codec};

fn text_err(input: &str, reason: impl Into<String>) -> InputError {
    InputError::Text {
        input: input.to_owned(),
        reason: reason.into(),
    }
}

impl Resources {
    /// Parses the agent's text format or a JSON array; `default_role` applies to resources that
    /// name none (use `"*"` for unreserved).
    ///
    /// # Errors
    /// [`InputError::Text`] for malformed text (including one name used with two value types),
    /// [`InputError::Json`] / [`InputError::Validation`] for a bad JSON array.
    pub fn parse(input: &str, default_role: &str) -> Result<Resources, InputError> {
        Resources::from_proto_list(&Resources::parse_list(input, default_role)?)
    }

    /// Parses the agent's text format or a JSON array into the list of resources it names, in
    /// order and unmerged (Mesos `Resources::fromString`): `cpus:0` is listed, where
    /// [`Resources::parse`] drops it as empty. The Mesos agent looks at this list to decide
    /// which resources it still has to detect.
    ///
    /// # Errors
    /// As [`Resources::parse`].
    pub fn parse_list(input: &str, default_role: &str) -> Result<Vec<pb::Resource>, InputError> {
        let trimmed = input.trim();
        let list = if trimmed.starts_with('[') && serde_json::from_str::<Json>(trimmed).is_ok() {
            let json: Json =
                serde_json::from_str(trimmed).map_err(|e| text_err(input, e.to_string()))?;
            let mut list = codec::parse_proto_list(&json)?;
            for r in &mut list {
                if r.role.is_none() && r.reservations.is_empty() {
                    r.role = Some(default_role.to_owned());
                }
            }
            list
        } else {
            parse_simple(input, default_role)?
        };
        let mut types: Vec<(&str, i32)> = Vec::new();
        for r in &list {
            match types.iter().find(|(n, _)| *n == r.name) {
                Some((_, t)) if *t != r.r#type => {
                    return Err(text_err(
                        input,
                        format!("resource '{}' has more than one type", r.name),
                    ));
                }
                Some(_) => {}
                None => types.push((&r.name, r.r#type)),
            }
        }
        Ok(list)
    }
}

fn parse_simple(input: &str, default_role: &str) -> Result<Vec<pb::Resource>, InputError> {
    let mut out = Vec::new();
    for token in input.split(';').map(str::trim).filter(|t| !t.is_empty()) {
        let (head, value) = token
            .split_once(':')
            .ok_or_else(|| text_err(input, format!("'{token}' is not name:value")))?;
        let head = head.trim();
        let (name, role) = match head.find('(') {
            Some(open) => {
                let rest = head.get(open + 1..).unwrap_or_default();
                let role = rest.strip_suffix(')').ok_or_else(|| {
                    text_err(input, format!("unbalanced parentheses in '{head}'"))
                })?;
                (head.get(..open).unwrap_or_default().trim(), role.trim())
            }
            None => (head, default_role),
        };
        if name.is_empty() {
            return Err(text_err(input, format!("empty resource name in '{token}'")));
        }
        let mut r = pb::Resource {
            name: name.to_owned(),
            role: Some(role.to_owned()),
            ..Default::default()
        };
        let value = value.trim();
        if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            r.r#type = pb::value::Type::Ranges as i32;
            let mut ranges = Vec::new();
            for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (b, e) = part.split_once('-').unwrap_or((part, part));
                let begin = b
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| text_err(input, format!("bad range '{part}'")))?;
                let end = e
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| text_err(input, format!("bad range '{part}'")))?;
                ranges.push(pb::value::Range { begin, end });
            }
            r.ranges = Some(pb::value::Ranges { range: ranges });
        } else if let Some(inner) = value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
            r.r#type = pb::value::Type::Set as i32;
            let items = inner
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            r.set = Some(pb::value::Set { item: items });
        } else {
            r.r#type = pb::value::Type::Scalar as i32;
            let v: f64 = value
                .parse()
                .map_err(|_| text_err(input, format!("bad scalar '{value}'")))?;
            r.scalar = Some(pb::value::Scalar { value: v });
        }
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::{Resources, Scalar};

    #[test]
    fn parses_agent_flags() {
        let r = Resources::parse(
            "cpus:4;mem:4096;disk(db):10000;ports:[31000-32000];zones:{a,b}",
            "*",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.cpus(), Some(Scalar::from_units(4)));
        assert_eq!(
            r.reserved(Some("db")).disk(),
            Some(Scalar::from_units(10000))
        );
        assert_eq!(r.ports().map(|p| p.len()), Some(1001));
        assert_eq!(r.len(), 5);
        let d = Resources::parse("cpus:1", "prod").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.reserved(Some("prod")).cpus(), Some(Scalar::from_units(1)));
    }

    #[test]
    fn parses_json_arrays_with_default_role() {
        let r = Resources::parse(
            r#"[{"name":"cpus","type":"SCALAR","scalar":{"value":2}}]"#,
            "r1",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.reserved(Some("r1")).cpus(), Some(Scalar::from_units(2)));
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "cpus",
            "cpus:x",
            "ports:[5-1]",
            "ports:[1-x]",
            "cpus(r:1",
            ":1",
            "cpus:1;cpus:[1-2]",
            "cpus(/a):1",
            "cpus:-1",
        ] {
            assert!(Resources::parse(bad, "*").is_err(), "{bad}");
        }
    }
}
