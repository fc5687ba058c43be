//! Mesos JSON, read and written the way Mesos's stout library does it.
//!
//! Mesos does not use the proto3 JSON mapping: field names are the proto names
//! (`allocation_info`), enums are names, unknown keys are ignored, `null` means unset, numbers
//! may come as strings, and after parsing every `required` field must be present
//! (`research` J-1…J-6). An unknown enum name is a parse error in a required field and is
//! silently dropped in an optional one.
//!
//! The codec is driven by the schema compiled into `berth-proto` (descriptors), so it covers
//! every message of our `.proto` files with one implementation.

use std::sync::LazyLock;

use base64::Engine as _;
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value as PValue,
};
use serde_json::{Map, Number, Value as Json};

use crate::error::JsonError;

static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(berth_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
});

fn descriptor(full_name: &str) -> Result<MessageDescriptor, JsonError> {
    let pool = POOL.as_ref().map_err(|e| JsonError::Decode(e.clone()))?;
    pool.get_message_by_name(full_name)
        .ok_or_else(|| JsonError::Decode(format!("no message {full_name} in the schema")))
}

/// Parses Mesos JSON into a wire message.
///
/// # Errors
/// [`JsonError`] as stout would refuse the input (wrong JSON types, unknown names in required
/// enum fields, missing required fields).
pub fn from_json_value<T>(json: &Json) -> Result<T, JsonError>
where
    T: prost::Message + prost::Name + Default,
{
    let desc = descriptor(&T::full_name())?;
    let msg = parse_message(&desc, json, desc.name())?;
    msg.transcode_to::<T>()
        .map_err(|e| JsonError::Decode(e.to_string()))
}

/// Parses Mesos JSON text into a wire message.
///
/// # Errors
/// [`JsonError::Syntax`] for text that is not JSON, otherwise as [`from_json_value`].
pub fn from_json_str<T>(text: &str) -> Result<T, JsonError>
where
    T: prost::Message + prost::Name + Default,
{
    let json: Json = serde_json::from_str(text).map_err(|e| JsonError::Syntax(e.to_string()))?;
    from_json_value(&json)
}

/// Writes a wire message as Mesos JSON.
#[must_use]
pub fn to_json_value<T>(msg: &T) -> Json
where
    T: prost::Message + prost::Name,
{
    let Ok(desc) = descriptor(&T::full_name()) else {
        return Json::Null;
    };
    match DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()) {
        Ok(dm) => print_message(&dm),
        Err(_) => Json::Null,
    }
}

/// Keys of `json` that the schema of `T` does not know, as dotted paths (`create.resources`).
/// Mesos ignores such keys silently; tools use this to warn about typos.
#[must_use]
pub fn unknown_fields<T: prost::Name>(json: &Json) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(desc) = descriptor(&T::full_name()) {
        collect_unknown(&desc, json, "", &mut out);
    }
    out
}

fn collect_unknown(desc: &MessageDescriptor, json: &Json, path: &str, out: &mut Vec<String>) {
    let Json::Object(obj) = json else { return };
    for (key, value) in obj {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let Some(field) = desc.get_field_by_name(key) else {
            out.push(here);
            continue;
        };
        if field.is_map() {
            continue;
        }
        if let Kind::Message(child) = field.kind() {
            match value {
                Json::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        collect_unknown(&child, item, &format!("{here}[{i}]"), out);
                    }
                }
                other => collect_unknown(&child, other, &here, out),
            }
        }
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn parse_message(
    desc: &MessageDescriptor,
    json: &Json,
    path: &str,
) -> Result<DynamicMessage, JsonError> {
    let Json::Object(obj) = json else {
        return Err(JsonError::NotObject(path.to_owned()));
    };
    let mut msg = DynamicMessage::new(desc.clone());
    for field in desc.fields() {
        let Some(v) = obj.get(field.name()) else {
            continue;
        };
        if v.is_null() {
            continue;
        }
        let fpath = format!("{path}.{}", field.name());
        if field.is_map() {
            let map = parse_map(&field, v, &fpath)?;
            msg.set_field(&field, PValue::Map(map));
        } else if field.is_list() {
            let Json::Array(items) = v else {
                return Err(JsonError::NotArray(fpath));
            };
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                if let Some(pv) = parse_single(&field.kind(), item, &fpath, false)? {
                    list.push(pv);
                }
            }
            msg.set_field(&field, PValue::List(list));
        } else {
            let required = field.cardinality() == Cardinality::Required;
            if let Some(pv) = parse_single(&field.kind(), v, &fpath, required)? {
                msg.set_field(&field, pv);
            }
        }
    }
    let missing: Vec<String> = desc
        .fields()
        .filter(|f| f.cardinality() == Cardinality::Required && !msg.has_field(f))
        .map(|f| format!("{path}.{}", f.name()))
        .collect();
    if !missing.is_empty() {
        return Err(JsonError::MissingRequired(missing));
    }
    Ok(msg)
}

fn parse_map(
    field: &FieldDescriptor,
    v: &Json,
    path: &str,
) -> Result<std::collections::HashMap<MapKey, PValue>, JsonError> {
    let Kind::Message(entry) = field.kind() else {
        return Err(JsonError::Decode(format!(
            "map field {path} without an entry message"
        )));
    };
    let key_field = entry.map_entry_key_field();
    let value_field = entry.map_entry_value_field();
    let mut out = std::collections::HashMap::new();
    let Json::Object(obj) = v else {
        return Err(JsonError::NotObject(path.to_owned()));
    };
    for (k, val) in obj {
        let key = match key_field.kind() {
            Kind::String => MapKey::String(k.clone()),
            Kind::Bool => MapKey::Bool(k == "true"),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                MapKey::I32(k.parse().map_err(|_| JsonError::BadNumber {
                    field: path.to_owned(),
                    value: k.clone(),
                })?)
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                MapKey::I64(k.parse().map_err(|_| JsonError::BadNumber {
                    field: path.to_owned(),
                    value: k.clone(),
                })?)
            }
            Kind::Uint32 | Kind::Fixed32 => {
                MapKey::U32(k.parse().map_err(|_| JsonError::BadNumber {
                    field: path.to_owned(),
                    value: k.clone(),
                })?)
            }
            _ => MapKey::U64(k.parse().map_err(|_| JsonError::BadNumber {
                field: path.to_owned(),
                value: k.clone(),
            })?),
        };
        if let Some(pv) = parse_single(&value_field.kind(), val, &format!("{path}.{k}"), true)? {
            out.insert(key, pv);
        }
    }
    Ok(out)
}

fn number_text(v: &Json, path: &str) -> Result<String, JsonError> {
    match v {
        Json::Number(n) => Ok(n.to_string()),
        Json::String(s) => Ok(s.trim().to_owned()),
        other => Err(JsonError::WrongType {
            field: path.to_owned(),
            found: json_kind(other),
        }),
    }
}

fn parse_int<T: std::str::FromStr>(v: &Json, path: &str) -> Result<T, JsonError> {
    let text = number_text(v, path)?;
    text.parse::<T>()
        .or_else(|_| {
            // `8.0` for an integer field: accept when integral and exactly representable.
            let f: f64 = text.parse().map_err(|_| ())?;
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                format!("{f:.0}").parse::<T>().map_err(|_| ())
            } else {
                Err(())
            }
        })
        .map_err(|()| JsonError::BadNumber {
            field: path.to_owned(),
            value: text,
        })
}

/// Returns `None` when the value is to be dropped (unknown name in an optional enum).
fn parse_single(
    kind: &Kind,
    v: &Json,
    path: &str,
    required: bool,
) -> Result<Option<PValue>, JsonError> {
    let wrong = |found| JsonError::WrongType {
        field: path.to_owned(),
        found,
    };
    Ok(Some(match kind {
        Kind::Message(m) => PValue::Message(parse_message(m, v, path)?),
        Kind::Enum(e) => {
            let Json::String(name) = v else {
                return Err(wrong(json_kind(v)));
            };
            match e.get_value_by_name(name) {
                Some(ev) => PValue::EnumNumber(ev.number()),
                None if required => {
                    return Err(JsonError::UnknownEnum {
                        field: path.to_owned(),
                        name: name.clone(),
                    });
                }
                None => return Ok(None),
            }
        }
        Kind::Double | Kind::Float => {
            let text = number_text(v, path)?;
            let f: f64 = match text.as_str() {
                "Infinity" | "inf" => f64::INFINITY,
                "-Infinity" | "-inf" => f64::NEG_INFINITY,
                other => other.parse().map_err(|_| JsonError::BadNumber {
                    field: path.to_owned(),
                    value: text.clone(),
                })?,
            };
            if matches!(kind, Kind::Float) {
                #[allow(clippy::cast_possible_truncation)]
                PValue::F32(f as f32)
            } else {
                PValue::F64(f)
            }
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => PValue::I32(parse_int(v, path)?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => PValue::I64(parse_int(v, path)?),
        Kind::Uint32 | Kind::Fixed32 => PValue::U32(parse_int(v, path)?),
        Kind::Uint64 | Kind::Fixed64 => PValue::U64(parse_int(v, path)?),
        Kind::Bool => match v {
            Json::Bool(b) => PValue::Bool(*b),
            other => return Err(wrong(json_kind(other))),
        },
        Kind::String => match v {
            Json::String(s) => PValue::String(s.clone()),
            other => return Err(wrong(json_kind(other))),
        },
        Kind::Bytes => match v {
            Json::String(s) => PValue::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|_| JsonError::BadBytes(path.to_owned()))?
                    .into(),
            ),
            other => return Err(wrong(json_kind(other))),
        },
    }))
}

fn print_message(msg: &DynamicMessage) -> Json {
    let mut out = Map::new();
    for field in msg.descriptor().fields() {
        if msg.has_field(&field) {
            let v = msg.get_field(&field);
            if let PValue::List(items) = v.as_ref()
                && items.is_empty()
            {
                continue;
            }
            if let PValue::Map(m) = v.as_ref()
                && m.is_empty()
            {
                continue;
            }
            out.insert(
                field.name().to_owned(),
                print_value(&field.kind(), v.as_ref()),
            );
        } else if has_printable_default(&field) {
            out.insert(
                field.name().to_owned(),
                print_value(&field.kind(), &field.default_value()),
            );
        }
    }
    Json::Object(out)
}

/// stout prints an unset field that has an explicit, non-deprecated default.
fn has_printable_default(field: &FieldDescriptor) -> bool {
    let proto = field.field_descriptor_proto();
    proto.default_value.is_some()
        && !proto
            .options
            .as_ref()
            .and_then(|o| o.deprecated)
            .unwrap_or(false)
}

fn print_f64(f: f64) -> Json {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 {
        #[allow(clippy::cast_possible_truncation)]
        return Json::Number(Number::from(f as i64));
    }
    Number::from_f64(f).map_or_else(
        || {
            Json::String(if f > 0.0 {
                "Infinity".into()
            } else if f < 0.0 {
                "-Infinity".into()
            } else {
                "NaN".into()
            })
        },
        Json::Number,
    )
}

fn print_value(kind: &Kind, v: &PValue) -> Json {
    match v {
        PValue::Bool(b) => Json::Bool(*b),
        PValue::I32(i) => Json::Number((*i).into()),
        PValue::I64(i) => Json::Number((*i).into()),
        PValue::U32(u) => Json::Number((*u).into()),
        PValue::U64(u) => Json::Number((*u).into()),
        PValue::F32(f) => print_f64(f64::from(*f)),
        PValue::F64(f) => print_f64(*f),
        PValue::String(s) => Json::String(s.clone()),
        PValue::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        PValue::EnumNumber(n) => match kind {
            Kind::Enum(e) => e.get_value(*n).map_or_else(
                || Json::Number((*n).into()),
                |ev| Json::String(ev.name().to_owned()),
            ),
            _ => Json::Number((*n).into()),
        },
        PValue::Message(m) => print_message(m),
        PValue::List(items) => Json::Array(items.iter().map(|i| print_value(kind, i)).collect()),
        PValue::Map(map) => {
            let value_kind = match kind {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other.clone(),
            };
            let mut entries: Vec<(String, Json)> = map
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        MapKey::Bool(b) => b.to_string(),
                        MapKey::I32(i) => i.to_string(),
                        MapKey::I64(i) => i.to_string(),
                        MapKey::U32(u) => u.to_string(),
                        MapKey::U64(u) => u.to_string(),
                        MapKey::String(s) => s.clone(),
                    };
                    (key, print_value(&value_kind, v))
                })
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(entries.into_iter().collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_proto::mesos::v1 as pb;
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_and_prints_a_volume() {
        let j = json!({"name":"disk","type":"SCALAR","scalar":{"value":"2048"},
            "reservations":[{"type":"DYNAMIC","role":"r","principal":"p"}],
            "disk":{"persistence":{"id":"v1","principal":"p"},"volume":{"container_path":"data","mode":"RW"}},
            "unknown_key": 1});
        let r: pb::Resource = from_json_value(&j).unwrap_or_else(|e| panic!("{e}"));
        assert!((r.scalar.as_ref().map_or(0.0, |s| s.value) - 2048.0).abs() < f64::EPSILON);
        let back = to_json_value(&r);
        assert_eq!(back["scalar"]["value"], json!(2048));
        assert_eq!(back["reservations"][0]["type"], json!("DYNAMIC"));
        assert_eq!(back["disk"]["volume"]["mode"], json!("RW"));
        assert!(
            back.get("role").is_none(),
            "deprecated default is not printed"
        );
        assert!(back.get("unknown_key").is_none());
    }

    #[test]
    fn unknown_fields_are_listed() {
        let op = json!({"type": "CREATE", "create": {"resources": [], "volumes": [{"name": "disk", "typo": 1}]}});
        assert_eq!(
            unknown_fields::<pb::offer::Operation>(&op),
            vec![
                "create.resources".to_owned(),
                "create.volumes[0].typo".to_owned()
            ]
        );
    }

    #[test]
    fn enum_rules() {
        let bad_required = json!({"name":"x","type":"FLOATINGPOINT"});
        assert!(matches!(
            from_json_value::<pb::Resource>(&bad_required),
            Err(JsonError::UnknownEnum { .. })
        ));
        let numeric = json!({"name":"x","type":0});
        assert!(matches!(
            from_json_value::<pb::Resource>(&numeric),
            Err(JsonError::WrongType { .. })
        ));
        let bad_optional = json!({"name":"cpus","type":"SCALAR","scalar":{"value":1},
            "reservations":[{"type":"BOGUS","role":"r"}]});
        let r: pb::Resource = from_json_value(&bad_optional).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.reservations.first().and_then(|x| x.r#type), None);
    }

    #[test]
    fn required_fields_and_types() {
        assert!(matches!(
            from_json_value::<pb::Resource>(&json!({"name":"cpus","type":"SCALAR","scalar":{}})),
            Err(JsonError::MissingRequired(_))
        ));
        assert!(matches!(
            from_json_value::<pb::Resource>(&json!({"name":"cpus"})),
            Err(JsonError::MissingRequired(_))
        ));
        assert!(matches!(
            from_json_value::<pb::Resource>(&json!({"name":1,"type":"SCALAR"})),
            Err(JsonError::WrongType { .. })
        ));
        assert!(matches!(
            from_json_value::<pb::Resource>(
                &json!({"name":"p","type":"RANGES","ranges":{"range":{}}})
            ),
            Err(JsonError::NotArray(_))
        ));
        assert!(matches!(
            from_json_value::<pb::Resource>(&json!([])),
            Err(JsonError::NotObject(_))
        ));
        assert!(matches!(
            from_json_str::<pb::Resource>("{"),
            Err(JsonError::Syntax(_))
        ));
        // Empty messages set the field.
        let r: pb::Resource = from_json_value(
            &json!({"name":"disk","type":"SCALAR","scalar":{"value":1},"shared":{}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.shared.is_some());
    }

    #[test]
    fn defaults_maps_and_bytes() {
        let j = json!({"container_path":"/data","mode":"RO","image":{"type":"DOCKER","docker":{"name":"busybox"}},
            "source":{"type":"CSI_VOLUME","csi_volume":{"plugin_name":"p","static_provisioning":{
              "volume_id":"v","volume_capability":{"mount":{},"access_mode":{"mode":"SINGLE_NODE_WRITER"}},
              "volume_context":{"a":"1"},
              "node_stage_secrets":{"s":{"type":"VALUE","value":{"data":"aGVsbG8="}}}}}}});
        let v: pb::Volume = from_json_value(&j).unwrap_or_else(|e| panic!("{e}"));
        let back = to_json_value(&v);
        assert_eq!(
            back["image"]["cached"],
            json!(true),
            "explicit default printed"
        );
        let sp = &back["source"]["csi_volume"]["static_provisioning"];
        assert_eq!(sp["volume_context"]["a"], json!("1"));
        assert_eq!(
            sp["node_stage_secrets"]["s"]["value"]["data"],
            json!("aGVsbG8=")
        );
        // Printing the default makes it explicit, as stout does; everything else is kept.
        let mut expected = v;
        if let Some(image) = expected.image.as_mut() {
            image.cached = Some(true);
        }
        assert_eq!(from_json_value::<pb::Volume>(&back).ok(), Some(expected));
    }
}
