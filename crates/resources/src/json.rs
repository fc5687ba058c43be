//! Mesos JSON, read and written the way Mesos's stout library does it.
//!
//! Mesos does not use the proto3 JSON mapping: field names are the proto names
//! (`allocation_info`), enums are names, unknown keys are ignored, `null` means unset, numbers
//! may come as strings, and after parsing every `required` field must be present
//! (`research` J-1…J-6). An unknown enum name is a parse error in a required field and is
//! silently dropped in an optional one. Output lists set fields in field-number order (as
//! protobuf reflection does) plus unset fields that have an explicit, non-deprecated default.
//!
//! The codec is driven by the schema compiled into `berth-proto` (its descriptors, flattened
//! once into a compact table), so it covers every message of our `.proto` files with one
//! implementation. It streams: JSON is read straight into protobuf wire bytes through serde
//! (no intermediate `serde_json::Value` is needed), and wire bytes are written straight out as
//! JSON through any serde serializer.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use base64::Engine as _;
use prost::bytes::Buf as _;
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};
use prost_reflect::{Cardinality, DescriptorPool, Kind as RKind};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::Value as Json;

use crate::error::JsonError;

// ------------------------------------------------------------------------------------------
// The schema table.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
    Enum(usize),
    Message(usize),
}

impl Kind {
    fn wire_type(self) -> WireType {
        match self {
            Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => WireType::SixtyFourBit,
            Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => WireType::ThirtyTwoBit,
            Kind::String | Kind::Bytes | Kind::Message(_) => WireType::LengthDelimited,
            _ => WireType::Varint,
        }
    }
}

#[derive(Clone, Debug)]
enum Default_ {
    None,
    Bool(bool),
    Number(f64),
    Str(String),
    Enum(i32),
}

#[derive(Clone, Debug)]
struct Field {
    name: String,
    number: u32,
    kind: Kind,
    required: bool,
    repeated: bool,
    /// Map fields: (key kind, value kind); `kind` is then the entry message.
    map: Option<(Kind, Kind)>,
    /// An explicit, non-deprecated default, printed for unset fields.
    default: Default_,
}

#[derive(Debug, Default)]
struct Message {
    full_name: String,
    /// Sorted by field number.
    fields: Vec<Field>,
    by_name: HashMap<String, usize>,
}

impl Message {
    fn field_by_number(&self, number: u32) -> Option<usize> {
        self.fields.binary_search_by_key(&number, |f| f.number).ok()
    }
}

#[derive(Debug, Default)]
struct EnumType {
    by_name: HashMap<String, i32>,
    by_number: HashMap<i32, String>,
}

#[derive(Debug, Default)]
struct Schema {
    messages: Vec<Message>,
    enums: Vec<EnumType>,
    by_name: HashMap<String, usize>,
}

fn kind_of(
    kind: &RKind,
    msgs: &HashMap<String, usize>,
    enums: &HashMap<String, usize>,
) -> Option<Kind> {
    Some(match kind {
        RKind::Double => Kind::Double,
        RKind::Float => Kind::Float,
        RKind::Int32 => Kind::Int32,
        RKind::Int64 => Kind::Int64,
        RKind::Uint32 => Kind::Uint32,
        RKind::Uint64 => Kind::Uint64,
        RKind::Sint32 => Kind::Sint32,
        RKind::Sint64 => Kind::Sint64,
        RKind::Fixed32 => Kind::Fixed32,
        RKind::Fixed64 => Kind::Fixed64,
        RKind::Sfixed32 => Kind::Sfixed32,
        RKind::Sfixed64 => Kind::Sfixed64,
        RKind::Bool => Kind::Bool,
        RKind::String => Kind::String,
        RKind::Bytes => Kind::Bytes,
        RKind::Enum(e) => Kind::Enum(*enums.get(e.full_name())?),
        RKind::Message(m) => Kind::Message(*msgs.get(m.full_name())?),
    })
}

fn build_schema() -> Result<Schema, String> {
    let pool =
        DescriptorPool::decode(berth_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())?;
    let msg_index: HashMap<String, usize> = pool
        .all_messages()
        .enumerate()
        .map(|(i, m)| (m.full_name().to_owned(), i))
        .collect();
    let enum_index: HashMap<String, usize> = pool
        .all_enums()
        .enumerate()
        .map(|(i, e)| (e.full_name().to_owned(), i))
        .collect();
    let mut schema = Schema {
        by_name: msg_index.clone(),
        ..Schema::default()
    };
    for e in pool.all_enums() {
        let mut t = EnumType::default();
        for v in e.values() {
            t.by_name.insert(v.name().to_owned(), v.number());
            t.by_number.insert(v.number(), v.name().to_owned());
        }
        schema.enums.push(t);
    }
    for m in pool.all_messages() {
        let mut out = Message {
            full_name: m.full_name().to_owned(),
            ..Message::default()
        };
        for f in m.fields() {
            let kind = kind_of(&f.kind(), &msg_index, &enum_index)
                .ok_or_else(|| format!("unresolved type of {}", f.full_name()))?;
            let map = if f.is_map() {
                let RKind::Message(entry) = f.kind() else {
                    return Err(format!("map {} without entry", f.full_name()));
                };
                let k = kind_of(&entry.map_entry_key_field().kind(), &msg_index, &enum_index);
                let v = kind_of(
                    &entry.map_entry_value_field().kind(),
                    &msg_index,
                    &enum_index,
                );
                Some((k.ok_or("map key")?, v.ok_or("map value")?))
            } else {
                None
            };
            let proto = f.field_descriptor_proto();
            let deprecated = proto
                .options
                .as_ref()
                .and_then(|o| o.deprecated)
                .unwrap_or(false);
            let default = match (&proto.default_value, deprecated, kind) {
                (Some(_), true, _) | (None, _, _) => Default_::None,
                (Some(d), false, Kind::Bool) => Default_::Bool(d == "true"),
                (Some(d), false, Kind::String | Kind::Bytes) => Default_::Str(d.clone()),
                (Some(d), false, Kind::Enum(e)) => schema
                    .enums
                    .get(e)
                    .and_then(|t| t.by_name.get(d))
                    .map_or(Default_::None, |n| Default_::Enum(*n)),
                (Some(d), false, _) => d.parse().map_or(Default_::None, Default_::Number),
            };
            out.fields.push(Field {
                name: f.name().to_owned(),
                number: f.number(),
                kind,
                required: f.cardinality() == Cardinality::Required,
                repeated: f.is_list() || f.is_map(),
                map,
                default,
            });
        }
        out.fields.sort_by_key(|f| f.number);
        out.by_name = out
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        schema.messages.push(out);
    }
    Ok(schema)
}

static SCHEMA: LazyLock<Result<Schema, String>> = LazyLock::new(build_schema);

fn schema() -> Result<&'static Schema, JsonError> {
    SCHEMA.as_ref().map_err(|e| JsonError::Decode(e.clone()))
}

fn message_index(full_name: &str) -> Result<usize, JsonError> {
    schema()?
        .by_name
        .get(full_name)
        .copied()
        .ok_or_else(|| JsonError::Decode(format!("no message {full_name} in the schema")))
}

// ------------------------------------------------------------------------------------------
// Public API.

/// Parses Mesos JSON (a `serde_json::Value`) into a wire message.
///
/// # Errors
/// [`JsonError`] as stout would refuse the input (wrong JSON types, unknown names in required
/// enum fields, missing required fields).
pub fn from_json_value<T>(json: &Json) -> Result<T, JsonError>
where
    T: prost::Message + prost::Name + Default,
{
    decode_with(&T::full_name(), json)
}

/// Parses Mesos JSON text into a wire message, without building a `serde_json::Value`.
///
/// # Errors
/// [`JsonError::Syntax`] for text that is not JSON, otherwise as [`from_json_value`].
pub fn from_json_str<T>(text: &str) -> Result<T, JsonError>
where
    T: prost::Message + prost::Name + Default,
{
    let mut de = serde_json::Deserializer::from_str(text);
    let msg = decode_with(&T::full_name(), &mut de)?;
    de.end().map_err(|e| JsonError::Syntax(e.to_string()))?;
    Ok(msg)
}

/// Parses a JSON array of Mesos JSON messages from text (e.g. a resource list), without
/// building a `serde_json::Value`.
///
/// # Errors
/// [`JsonError::NotArray`] if the text is not an array, otherwise as [`from_json_str`].
pub fn from_json_str_list<T>(text: &str) -> Result<Vec<T>, JsonError>
where
    T: prost::Message + prost::Name + Default,
{
    let mut de = serde_json::Deserializer::from_str(text);
    let (list, decode_error) = read_list(&T::full_name(), &mut de)?;
    de.end().map_err(|e| JsonError::Syntax(e.to_string()))?;
    decode_error.map_or(Ok(list), Err)
}

/// Parses a JSON array of Mesos JSON messages `full_name` from any serde deserializer (the
/// reader behind [`from_json_str_list`]), one message at a time: no `serde_json::Value` is
/// built, and each message's wire bytes are decoded and dropped before the next is read.
///
/// # Errors
/// As [`from_json_str_list`]; errors of the deserializer itself become [`JsonError::Syntax`].
pub fn decode_list_with<'de, T, D>(full_name: &str, deserializer: D) -> Result<Vec<T>, JsonError>
where
    T: prost::Message + Default,
    D: Deserializer<'de>,
{
    let (list, decode_error) = read_list(full_name, deserializer)?;
    decode_error.map_or(Ok(list), Err)
}

/// The messages of a JSON array, and the first message whose wire bytes did not decode (a
/// failure reported only once the JSON itself has been read in full, as it was found).
fn read_list<'de, T, D>(
    full_name: &str,
    deserializer: D,
) -> Result<(Vec<T>, Option<JsonError>), JsonError>
where
    T: prost::Message + Default,
    D: Deserializer<'de>,
{
    let msg = message_index(full_name)?;
    let schema = schema()?;
    let failure = RefCell::new(None);
    let decode_error = RefCell::new(None);
    let decode = |body: &[u8]| match T::decode(body) {
        Ok(m) => Some(m),
        Err(e) => {
            decode_error
                .borrow_mut()
                .get_or_insert(JsonError::Decode(e.to_string()));
            None
        }
    };
    let seed = ListOf {
        schema,
        msg,
        failure: &failure,
        root: schema_name(schema, msg),
        decode: &decode,
    };
    match deserializer.deserialize_any(seed) {
        Ok(list) => Ok((list, decode_error.into_inner())),
        Err(e) => Err(failure
            .into_inner()
            .unwrap_or_else(|| JsonError::Syntax(e.to_string()))),
    }
}

/// A JSON array of messages, each read into its own wire bytes and decoded at once.
struct ListOf<'s, T> {
    schema: &'static Schema,
    msg: usize,
    failure: &'s Failure,
    root: String,
    /// Decodes one message's wire bytes (`None` after recording a failure).
    decode: &'s dyn Fn(&[u8]) -> Option<T>,
}

impl<'de, T> Visitor<'de> for ListOf<'_, T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        let mut read = 0usize;
        loop {
            let mut body = Vec::with_capacity(96);
            let index = read.to_string();
            let root = Path::root(&self.root);
            let path = root.child(&index);
            let seed = MessageSeed {
                schema: self.schema,
                msg: self.msg,
                out: &mut body,
                path,
                failure: self.failure,
            };
            if seq.next_element_seed(seed)?.is_none() {
                break;
            }
            read += 1;
            if let Some(m) = (self.decode)(&body) {
                out.push(m);
            }
        }
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Vec<T>, A::Error> {
        Err(fail(self.failure, JsonError::NotArray(self.root.clone())))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<T>, E> {
        Err(fail(self.failure, JsonError::NotArray(self.root.clone())))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Vec<T>, E> {
        Err(fail(self.failure, JsonError::NotArray(self.root.clone())))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Vec<T>, E> {
        Err(fail(self.failure, JsonError::NotArray(self.root.clone())))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Vec<T>, E> {
        Err(fail(self.failure, JsonError::NotArray(self.root.clone())))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Vec<T>, E> {
        Err(fail(self.failure, JsonError::NotArray(self.root.clone())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }
}

/// Parses Mesos JSON from any serde deserializer into a wire message (the schema-driven
/// reader behind [`from_json_value`] and [`from_json_str`]).
///
/// # Errors
/// As [`from_json_value`]; errors of the deserializer itself become [`JsonError::Syntax`].
pub fn decode_with<'de, T, D>(full_name: &str, deserializer: D) -> Result<T, JsonError>
where
    T: prost::Message + Default,
    D: Deserializer<'de>,
{
    let bytes = json_to_wire(full_name, deserializer)?;
    T::decode(bytes.as_slice()).map_err(|e| JsonError::Decode(e.to_string()))
}

/// Reads Mesos JSON for message `full_name` into protobuf wire bytes.
///
/// # Errors
/// As [`from_json_value`].
pub fn json_to_wire<'de, D: Deserializer<'de>>(
    full_name: &str,
    deserializer: D,
) -> Result<Vec<u8>, JsonError> {
    let msg = message_index(full_name)?;
    let schema = schema()?;
    let failure = RefCell::new(None);
    let mut out = Vec::with_capacity(128);
    let root = schema_name(schema, msg);
    let seed = MessageSeed {
        schema,
        msg,
        out: &mut out,
        path: Path::root(&root),
        failure: &failure,
    };
    match seed.deserialize(deserializer) {
        Ok(()) => Ok(out),
        Err(e) => Err(failure
            .into_inner()
            .unwrap_or_else(|| JsonError::Syntax(e.to_string()))),
    }
}

fn schema_name(schema: &Schema, msg: usize) -> String {
    schema
        .messages
        .get(msg)
        .map(|m| {
            m.full_name
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default()
}

/// Writes a wire message as Mesos JSON (a `serde_json::Value`).
#[must_use]
pub fn to_json_value<T>(msg: &T) -> Json
where
    T: prost::Message + prost::Name,
{
    let bytes = msg.encode_to_vec();
    WireJson::new(&T::full_name(), &bytes).map_or(Json::Null, |w| {
        serde_json::to_value(w).unwrap_or(Json::Null)
    })
}

/// A protobuf message's wire bytes that serialize as Mesos JSON with any serde serializer,
/// e.g. `serde_json::to_writer(out, &WireJson::new("mesos.v1.Resource", &bytes)?)`.
#[derive(Clone, Copy, Debug)]
pub struct WireJson<'a> {
    schema: &'static Schema,
    msg: usize,
    bytes: &'a [u8],
}

impl<'a> WireJson<'a> {
    /// Wraps the encoded bytes of message `full_name` (e.g. `mesos.v1.Resource`).
    ///
    /// # Errors
    /// [`JsonError::Decode`] if the schema has no such message.
    pub fn new(full_name: &str, bytes: &'a [u8]) -> Result<WireJson<'a>, JsonError> {
        Ok(WireJson {
            schema: schema()?,
            msg: message_index(full_name)?,
            bytes,
        })
    }
}

/// Keys of `json` that the schema of `T` does not know, as dotted paths (`create.resources`).
/// Mesos ignores such keys silently; tools use this to warn about typos.
#[must_use]
pub fn unknown_fields<T: prost::Name>(json: &Json) -> Vec<String> {
    let mut out = Vec::new();
    if let (Ok(schema), Ok(msg)) = (schema(), message_index(&T::full_name())) {
        collect_unknown(schema, msg, json, "", &mut out);
    }
    out
}

fn collect_unknown(schema: &Schema, msg: usize, json: &Json, path: &str, out: &mut Vec<String>) {
    let (Json::Object(obj), Some(m)) = (json, schema.messages.get(msg)) else {
        return;
    };
    for (key, value) in obj {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let Some(field) = m.by_name.get(key).and_then(|&i| m.fields.get(i)) else {
            out.push(here);
            continue;
        };
        if field.map.is_some() {
            continue;
        }
        if let Kind::Message(child) = field.kind {
            match value {
                Json::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        collect_unknown(schema, child, item, &format!("{here}[{i}]"), out);
                    }
                }
                other => collect_unknown(schema, child, other, &here, out),
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// JSON → wire.

/// A dotted path for error messages, built lazily.
#[derive(Clone, Copy)]
struct Path<'p> {
    parent: Option<&'p Path<'p>>,
    name: &'p str,
}

impl<'p> Path<'p> {
    fn root(name: &'p str) -> Path<'p> {
        Path { parent: None, name }
    }

    fn child(&'p self, name: &'p str) -> Path<'p> {
        Path {
            parent: Some(self),
            name,
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.parent {
            write!(f, "{p}.")?;
        }
        f.write_str(self.name)
    }
}

type Failure = RefCell<Option<JsonError>>;

fn fail<E: de::Error>(failure: &Failure, error: JsonError) -> E {
    let text = error.to_string();
    let mut slot = failure.borrow_mut();
    if slot.is_none() {
        *slot = Some(error);
    }
    E::custom(text)
}

struct MessageSeed<'s, 'p> {
    schema: &'static Schema,
    msg: usize,
    out: &'s mut Vec<u8>,
    path: Path<'p>,
    failure: &'s Failure,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some(message) = self.schema.messages.get(self.msg) else {
            return Err(fail(self.failure, JsonError::Decode("schema index".into())));
        };
        let mut seen = vec![false; message.fields.len()];
        // Where each field's bytes are, so that a repeated key replaces the earlier value
        // (the last one wins, as in stout and serde_json).
        let mut spans: Vec<Option<(usize, usize)>> = vec![None; message.fields.len()];
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let Some(&index) = message.by_name.get(key.as_ref()) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let Some(field) = message.fields.get(index) else {
                continue;
            };
            if let Some((s, e)) = spans.get_mut(index).and_then(Option::take) {
                self.out.drain(s..e);
                for (a, b) in spans.iter_mut().flatten() {
                    if *a >= e {
                        *a -= e - s;
                        *b -= e - s;
                    }
                }
            }
            let path = self.path.child(&field.name);
            let begin = self.out.len();
            let wrote = map.next_value_seed(FieldSeed {
                schema: self.schema,
                field,
                out: &mut *self.out,
                path,
                failure: self.failure,
            })?;
            if let Some(span) = spans.get_mut(index) {
                *span = Some((begin, self.out.len()));
            }
            if let Some(s) = seen.get_mut(index) {
                *s = wrote;
            }
        }
        let missing: Vec<String> = message
            .fields
            .iter()
            .zip(&seen)
            .filter(|(f, s)| f.required && !**s)
            .map(|(f, _)| format!("{}.{}", self.path, f.name))
            .collect();
        if !missing.is_empty() {
            return Err(fail(self.failure, JsonError::MissingRequired(missing)));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.not_object("array"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.not_object("string"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.not_object("boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.not_object("number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.not_object("number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.not_object("number"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.not_object("null"))
    }
}

impl MessageSeed<'_, '_> {
    /// stout's "Not expecting a JSON <type> for field '<name>'" (the whole input: not an object).
    fn not_object<E: de::Error>(&self, found: &'static str) -> E {
        let error = if self.path.parent.is_some() {
            JsonError::WrongType {
                field: self.path.to_string(),
                found,
            }
        } else {
            JsonError::NotObject(self.path.to_string())
        };
        fail(self.failure, error)
    }
}

/// One field's value (possibly `null`, a list or a map). Returns whether anything was set.
struct FieldSeed<'s, 'p> {
    schema: &'static Schema,
    field: &'static Field,
    out: &'s mut Vec<u8>,
    path: Path<'p>,
    failure: &'s Failure,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_, '_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value for '{}'", self.path)
    }

    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        if let Some((key, value)) = self.field.map {
            return d.deserialize_map(MapSeed {
                schema: self.schema,
                field: self.field,
                key,
                value,
                out: self.out,
                path: self.path,
                failure: self.failure,
            });
        }
        if self.field.repeated {
            return d.deserialize_any(ListSeed {
                schema: self.schema,
                field: self.field,
                out: self.out,
                path: self.path,
                failure: self.failure,
            });
        }
        let required = self.field.required;
        let before = self.out.len();
        let out = self.out;
        ValueSeed {
            schema: self.schema,
            number: self.field.number,
            kind: self.field.kind,
            required,
            out: &mut *out,
            path: self.path,
            failure: self.failure,
        }
        .deserialize(d)?;
        Ok(out.len() > before)
    }
}

struct ListSeed<'s, 'p> {
    schema: &'static Schema,
    field: &'static Field,
    out: &'s mut Vec<u8>,
    path: Path<'p>,
    failure: &'s Failure,
}

impl ListSeed<'_, '_> {
    fn item(&mut self) -> ValueSeed<'_, '_> {
        ValueSeed {
            schema: self.schema,
            number: self.field.number,
            kind: self.field.kind,
            required: false,
            out: &mut *self.out,
            path: self.path,
            failure: self.failure,
        }
    }
}

/// A list element: `null` elements are skipped, as stout skips them.
struct ListItem<'s, 'p>(ValueSeed<'s, 'p>);

impl<'de> DeserializeSeed<'de> for ListItem<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ListItem<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list element")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.deserialize(d)
    }
}

/// A repeated field: a JSON array, or (as stout accepts) a single value taken as one element.
impl<'de> Visitor<'de> for ListSeed<'_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element_seed(ListItem(self.item()))?.is_some() {}
        Ok(true)
    }

    fn visit_map<A: MapAccess<'de>>(mut self, map: A) -> Result<bool, A::Error> {
        self.item()
            .deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(true)
    }
    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<bool, E> {
        self.item().visit_str(v).map(|()| true)
    }
    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<bool, E> {
        self.item().visit_bool(v).map(|()| true)
    }
    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<bool, E> {
        self.item().visit_i64(v).map(|()| true)
    }
    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<bool, E> {
        self.item().visit_u64(v).map(|()| true)
    }
    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<bool, E> {
        self.item().visit_f64(v).map(|()| true)
    }
}

struct MapSeed<'s, 'p> {
    schema: &'static Schema,
    field: &'static Field,
    key: Kind,
    value: Kind,
    out: &'s mut Vec<u8>,
    path: Path<'p>,
    failure: &'s Failure,
}

impl<'de> Visitor<'de> for MapSeed<'_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let mut entry = Vec::new();
            let key_json = match self.key {
                Kind::String => Json::String(key.to_string()),
                Kind::Bool => Json::Bool(key == "true"),
                _ => Json::String(key.to_string()),
            };
            let path = self.path.child(&key);
            ValueSeed {
                schema: self.schema,
                number: 1,
                kind: self.key,
                required: true,
                out: &mut entry,
                path,
                failure: self.failure,
            }
            .deserialize(&key_json)
            .map_err(|e| de::Error::custom(e.to_string()))?;
            let seed = ValueSeed {
                schema: self.schema,
                number: 2,
                kind: self.value,
                required: true,
                out: &mut entry,
                path,
                failure: self.failure,
            };
            map.next_value_seed(seed)?;
            encode_key(self.field.number, WireType::LengthDelimited, self.out);
            encode_varint(entry.len() as u64, self.out);
            self.out.extend_from_slice(&entry);
        }
        Ok(true)
    }
}

/// One singular value, written with its tag. Unknown names of optional enums write nothing.
struct ValueSeed<'s, 'p> {
    schema: &'static Schema,
    number: u32,
    kind: Kind,
    required: bool,
    out: &'s mut Vec<u8>,
    path: Path<'p>,
    failure: &'s Failure,
}

impl ValueSeed<'_, '_> {
    fn wrong<E: de::Error>(&self, found: &'static str) -> E {
        fail(
            self.failure,
            JsonError::WrongType {
                field: self.path.to_string(),
                found,
            },
        )
    }

    fn bad_number<E: de::Error>(&self, value: impl fmt::Display) -> E {
        fail(
            self.failure,
            JsonError::BadNumber {
                field: self.path.to_string(),
                value: value.to_string(),
            },
        )
    }

    fn key(&mut self) {
        encode_key(self.number, self.kind.wire_type(), self.out);
    }

    /// Writes a numeric value given as a double (from a JSON number or a numeric string).
    fn number<E: de::Error>(mut self, f: f64, text: &dyn fmt::Display) -> Result<(), E> {
        // stout converts a double to an integer field by truncation (`1.5` → 1).
        let t = f.trunc();
        let integral = |lo: f64, hi: f64| t.is_finite() && t >= lo && t <= hi;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        match self.kind {
            Kind::Double => {
                self.key();
                self.out.extend_from_slice(&f.to_le_bytes());
            }
            Kind::Float => {
                self.key();
                self.out.extend_from_slice(&(f as f32).to_le_bytes());
            }
            Kind::Int32
            | Kind::Int64
            | Kind::Sint32
            | Kind::Sint64
            | Kind::Sfixed32
            | Kind::Sfixed64 => {
                let (lo, hi) = match self.kind {
                    Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                        (-9.007_199_254_740_992e15, 9.007_199_254_740_992e15)
                    }
                    _ => (f64::from(i32::MIN), f64::from(i32::MAX)),
                };
                if !integral(lo, hi) {
                    return Err(self.bad_number(text));
                }
                self.signed(t as i64);
            }
            Kind::Uint32 | Kind::Uint64 | Kind::Fixed32 | Kind::Fixed64 => {
                let hi = if matches!(self.kind, Kind::Uint32 | Kind::Fixed32) {
                    f64::from(u32::MAX)
                } else {
                    9.007_199_254_740_992e15
                };
                if !integral(0.0, hi) {
                    return Err(self.bad_number(text));
                }
                self.unsigned(t as u64);
            }
            Kind::Enum(_) => return Err(self.wrong("number")),
            Kind::Bool => return Err(self.wrong("number")),
            Kind::String | Kind::Bytes => return Err(self.wrong("number")),
            Kind::Message(_) => {
                return Err(fail(
                    self.failure,
                    JsonError::NotObject(self.path.to_string()),
                ));
            }
        }
        Ok(())
    }

    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
    fn signed(&mut self, v: i64) {
        self.key();
        match self.kind {
            Kind::Sint32 | Kind::Sint64 => encode_varint(((v << 1) ^ (v >> 63)) as u64, self.out),
            Kind::Sfixed32 => self.out.extend_from_slice(&(v as i32).to_le_bytes()),
            Kind::Sfixed64 => self.out.extend_from_slice(&v.to_le_bytes()),
            Kind::Int32 => encode_varint(i64::from(v as i32) as u64, self.out),
            _ => encode_varint(v as u64, self.out),
        }
    }

    #[allow(clippy::cast_possible_truncation)]
    fn unsigned(&mut self, v: u64) {
        self.key();
        match self.kind {
            Kind::Fixed32 => self.out.extend_from_slice(&(v as u32).to_le_bytes()),
            Kind::Fixed64 => self.out.extend_from_slice(&v.to_le_bytes()),
            _ => encode_varint(v, self.out),
        }
    }

    fn integer<E: de::Error>(mut self, v: i128) -> Result<(), E> {
        match self.kind {
            Kind::Double | Kind::Float => {
                #[allow(clippy::cast_precision_loss)]
                let f = v as f64;
                self.number(f, &v)
            }
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                let v = i32::try_from(v).map_err(|_| self.bad_number(v))?;
                self.signed(i64::from(v));
                Ok(())
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                let v = i64::try_from(v).map_err(|_| self.bad_number(v))?;
                self.signed(v);
                Ok(())
            }
            Kind::Uint32 | Kind::Fixed32 => {
                let v = u32::try_from(v).map_err(|_| self.bad_number(v))?;
                self.unsigned(u64::from(v));
                Ok(())
            }
            Kind::Uint64 | Kind::Fixed64 => {
                let v = u64::try_from(v).map_err(|_| self.bad_number(v))?;
                self.unsigned(v);
                Ok(())
            }
            _ => self.number(0.0, &v),
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.kind {
            Kind::Message(msg) => {
                let mut body = Vec::new();
                let failure = self.failure;
                MessageSeed {
                    schema: self.schema,
                    msg,
                    out: &mut body,
                    path: self.path,
                    failure,
                }
                .deserialize(d)?;
                encode_key(self.number, WireType::LengthDelimited, self.out);
                encode_varint(body.len() as u64, self.out);
                self.out.extend_from_slice(&body);
                Ok(())
            }
            _ => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value for '{}'", self.path)
    }

    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<(), E> {
        if self.kind != Kind::Bool {
            return Err(self.wrong("boolean"));
        }
        self.key();
        self.out.push(u8::from(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        if matches!(
            self.kind,
            Kind::Enum(_) | Kind::Bool | Kind::String | Kind::Bytes
        ) {
            return Err(self.wrong("number"));
        }
        self.integer(i128::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        if matches!(
            self.kind,
            Kind::Enum(_) | Kind::Bool | Kind::String | Kind::Bytes
        ) {
            return Err(self.wrong("number"));
        }
        self.integer(i128::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.number(v, &v)
    }

    fn visit_str<E: de::Error>(mut self, s: &str) -> Result<(), E> {
        match self.kind {
            Kind::String => {
                self.key();
                encode_varint(s.len() as u64, self.out);
                self.out.extend_from_slice(s.as_bytes());
                Ok(())
            }
            Kind::Bytes => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|_| fail(self.failure, JsonError::BadBytes(self.path.to_string())))?;
                self.key();
                encode_varint(bytes.len() as u64, self.out);
                self.out.extend_from_slice(&bytes);
                Ok(())
            }
            Kind::Enum(e) => match self.schema.enums.get(e).and_then(|t| t.by_name.get(s)) {
                Some(&n) => {
                    self.key();
                    #[allow(clippy::cast_sign_loss)]
                    encode_varint(i64::from(n) as u64, self.out);
                    Ok(())
                }
                None if self.required => Err(fail(
                    self.failure,
                    JsonError::UnknownEnum {
                        field: self.path.to_string(),
                        name: s.to_owned(),
                    },
                )),
                None => Ok(()),
            },
            Kind::Bool => match s {
                // stout reads "true" and "false" strings for booleans.
                "true" | "false" => {
                    self.key();
                    self.out.push(u8::from(s == "true"));
                    Ok(())
                }
                _ => Err(self.wrong("string")),
            },
            Kind::Message(_) => Err(self.wrong("string")),
            _ => {
                // Numbers may come as strings, including "Infinity" for doubles.
                let t = s.trim();
                let f: f64 = match t {
                    "Infinity" => f64::INFINITY,
                    "-Infinity" => f64::NEG_INFINITY,
                    other => match other.parse::<i128>() {
                        Ok(i) if !matches!(self.kind, Kind::Double | Kind::Float) => {
                            return self.integer(i);
                        }
                        // Rust also reads "inf", "nan", "infinity": stout does not.
                        _ => other
                            .parse::<f64>()
                            .ok()
                            .filter(|f| f.is_finite())
                            .ok_or_else(|| self.bad_number(t))?,
                    },
                };
                self.number(f, &t)
            }
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.wrong("array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.wrong("object"))
    }
}

// ------------------------------------------------------------------------------------------
// wire → JSON.

/// One field occurrence in the wire bytes.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

fn scan(mut buf: &[u8]) -> Vec<(u32, Raw<'_>)> {
    let mut out = Vec::new();
    while buf.has_remaining() {
        let Ok((number, wire)) = decode_key(&mut buf) else {
            break;
        };
        let raw = match wire {
            WireType::Varint => match decode_varint(&mut buf) {
                Ok(v) => Raw::Varint(v),
                Err(_) => break,
            },
            WireType::SixtyFourBit if buf.remaining() >= 8 => Raw::Fixed64(buf.get_u64_le()),
            WireType::ThirtyTwoBit if buf.remaining() >= 4 => Raw::Fixed32(buf.get_u32_le()),
            WireType::LengthDelimited => {
                let Ok(len) = decode_varint(&mut buf) else {
                    break;
                };
                let Ok(len) = usize::try_from(len) else { break };
                if buf.len() < len {
                    break;
                }
                let (body, rest) = buf.split_at(len);
                buf = rest;
                Raw::Bytes(body)
            }
            _ => break,
        };
        out.push((number, raw));
    }
    out
}

fn f64_json<S: Serializer>(s: S, f: f64) -> Result<S::Ok, S::Error> {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 {
        #[allow(clippy::cast_possible_truncation)]
        return s.serialize_i64(f as i64);
    }
    if f.is_finite() {
        s.serialize_f64(f)
    } else if f.is_nan() {
        s.serialize_str("NaN")
    } else if f > 0.0 {
        s.serialize_str("Infinity")
    } else {
        s.serialize_str("-Infinity")
    }
}

/// One scalar or message value of a field, for serialization.
struct WireValue<'a> {
    schema: &'static Schema,
    kind: Kind,
    raw: Raw<'a>,
}

impl serde::Serialize for WireValue<'_> {
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self.kind, self.raw) {
            (Kind::Double, Raw::Fixed64(v)) => f64_json(s, f64::from_bits(v)),
            (Kind::Float, Raw::Fixed32(v)) => f64_json(s, f64::from(f32::from_bits(v))),
            (Kind::Int32, Raw::Varint(v)) => s.serialize_i32(v as i32),
            (Kind::Int64, Raw::Varint(v)) => s.serialize_i64(v as i64),
            (Kind::Uint32, Raw::Varint(v)) => s.serialize_u32(v as u32),
            (Kind::Uint64, Raw::Varint(v)) => s.serialize_u64(v),
            (Kind::Sint32 | Kind::Sint64, Raw::Varint(v)) => {
                s.serialize_i64(((v >> 1) as i64) ^ -((v & 1) as i64))
            }
            (Kind::Fixed32, Raw::Fixed32(v)) => s.serialize_u32(v),
            (Kind::Fixed64, Raw::Fixed64(v)) => s.serialize_u64(v),
            (Kind::Sfixed32, Raw::Fixed32(v)) => s.serialize_i32(v as i32),
            (Kind::Sfixed64, Raw::Fixed64(v)) => s.serialize_i64(v as i64),
            (Kind::Bool, Raw::Varint(v)) => s.serialize_bool(v != 0),
            (Kind::String, Raw::Bytes(b)) => s.serialize_str(&String::from_utf8_lossy(b)),
            (Kind::Bytes, Raw::Bytes(b)) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
            }
            (Kind::Enum(e), Raw::Varint(v)) => {
                let n = v as i32;
                match self.schema.enums.get(e).and_then(|t| t.by_number.get(&n)) {
                    Some(name) => s.serialize_str(name),
                    None => s.serialize_i32(n),
                }
            }
            (Kind::Message(msg), Raw::Bytes(b)) => WireJson {
                schema: self.schema,
                msg,
                bytes: b,
            }
            .serialize(s),
            _ => s.serialize_unit(),
        }
    }
}

/// A repeated field: all occurrences, packed scalars unpacked.
struct WireList<'a> {
    schema: &'static Schema,
    kind: Kind,
    items: Vec<Raw<'a>>,
}

fn unpack(kind: Kind, items: Vec<Raw<'_>>) -> Vec<Raw<'_>> {
    if matches!(kind, Kind::String | Kind::Bytes | Kind::Message(_)) {
        return items;
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Raw::Bytes(mut b) => {
                while b.has_remaining() {
                    let raw = match kind.wire_type() {
                        WireType::SixtyFourBit if b.remaining() >= 8 => {
                            Raw::Fixed64(b.get_u64_le())
                        }
                        WireType::ThirtyTwoBit if b.remaining() >= 4 => {
                            Raw::Fixed32(b.get_u32_le())
                        }
                        WireType::Varint => match decode_varint(&mut b) {
                            Ok(v) => Raw::Varint(v),
                            Err(_) => break,
                        },
                        _ => break,
                    };
                    out.push(raw);
                }
            }
            other => out.push(other),
        }
    }
    out
}

impl serde::Serialize for WireList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.items.len()))?;
        for raw in &self.items {
            seq.serialize_element(&WireValue {
                schema: self.schema,
                kind: self.kind,
                raw: *raw,
            })?;
        }
        seq.end()
    }
}

/// A map field: entries as a JSON object (keys as strings), sorted by key.
struct WireMap<'a> {
    schema: &'static Schema,
    key: Kind,
    value: Kind,
    entries: Vec<Raw<'a>>,
}

impl serde::Serialize for WireMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut pairs: Vec<(String, Option<Raw<'_>>)> = Vec::new();
        for entry in &self.entries {
            let Raw::Bytes(b) = entry else { continue };
            let mut key = String::new();
            let mut value = None;
            for (n, raw) in scan(b) {
                match (n, raw) {
                    (1, Raw::Bytes(k)) => key = String::from_utf8_lossy(k).into_owned(),
                    (1, Raw::Varint(v)) => {
                        key = if self.key == Kind::Bool {
                            (v != 0).to_string()
                        } else {
                            v.to_string()
                        }
                    }
                    (2, raw) => value = Some(raw),
                    _ => {}
                }
            }
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key, value));
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut map = s.serialize_map(Some(pairs.len()))?;
        for (k, v) in &pairs {
            match v {
                Some(raw) => map.serialize_entry(
                    k,
                    &WireValue {
                        schema: self.schema,
                        kind: self.value,
                        raw: *raw,
                    },
                )?,
                None => map.serialize_entry(
                    k,
                    &DefaultOf {
                        schema: self.schema,
                        kind: self.value,
                    },
                )?,
            }
        }
        map.end()
    }
}

/// The zero value of a kind (a map entry without a value).
struct DefaultOf {
    schema: &'static Schema,
    kind: Kind,
}

impl serde::Serialize for DefaultOf {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.kind {
            Kind::Message(msg) => WireJson {
                schema: self.schema,
                msg,
                bytes: &[],
            }
            .serialize(s),
            Kind::String | Kind::Bytes => s.serialize_str(""),
            Kind::Bool => s.serialize_bool(false),
            Kind::Enum(_) => WireValue {
                schema: self.schema,
                kind: self.kind,
                raw: Raw::Varint(0),
            }
            .serialize(s),
            _ => s.serialize_i64(0),
        }
    }
}

struct DefaultValue<'f> {
    schema: &'static Schema,
    field: &'f Field,
}

impl serde::Serialize for DefaultValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.field.default {
            Default_::Bool(b) => s.serialize_bool(*b),
            Default_::Number(f) => f64_json(s, *f),
            Default_::Str(v) => s.serialize_str(v),
            #[allow(clippy::cast_sign_loss)]
            Default_::Enum(n) => WireValue {
                schema: self.schema,
                kind: self.field.kind,
                raw: Raw::Varint(i64::from(*n) as u64),
            }
            .serialize(s),
            Default_::None => s.serialize_unit(),
        }
    }
}

impl serde::Serialize for WireJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Some(message) = self.schema.messages.get(self.msg) else {
            return s.serialize_unit();
        };
        // Group occurrences by field (input may interleave repeated fields).
        let mut occurrences: Vec<Vec<Raw<'_>>> = vec![Vec::new(); message.fields.len()];
        for (number, raw) in scan(self.bytes) {
            if let Some(slot) = message
                .field_by_number(number)
                .and_then(|i| occurrences.get_mut(i))
            {
                slot.push(raw);
            }
        }
        let mut map = s.serialize_map(None)?;
        for (field, occ) in message.fields.iter().zip(occurrences) {
            if occ.is_empty() {
                if !matches!(field.default, Default_::None) {
                    map.serialize_entry(
                        &field.name,
                        &DefaultValue {
                            schema: self.schema,
                            field,
                        },
                    )?;
                }
                continue;
            }
            if let Some((key, value)) = field.map {
                map.serialize_entry(
                    &field.name,
                    &WireMap {
                        schema: self.schema,
                        key,
                        value,
                        entries: occ,
                    },
                )?;
            } else if field.repeated {
                let items = unpack(field.kind, occ);
                map.serialize_entry(
                    &field.name,
                    &WireList {
                        schema: self.schema,
                        kind: field.kind,
                        items,
                    },
                )?;
            } else if let Kind::Message(msg) = field.kind {
                // Several occurrences of a singular message merge: concatenating the bytes
                // is exactly protobuf's merge semantics.
                if let [Raw::Bytes(b)] = occ.as_slice() {
                    map.serialize_entry(
                        &field.name,
                        &WireJson {
                            schema: self.schema,
                            msg,
                            bytes: b,
                        },
                    )?;
                } else {
                    let merged: Vec<u8> = occ
                        .iter()
                        .flat_map(|r| {
                            if let Raw::Bytes(b) = r {
                                b.to_vec()
                            } else {
                                Vec::new()
                            }
                        })
                        .collect();
                    map.serialize_entry(
                        &field.name,
                        &WireJson {
                            schema: self.schema,
                            msg,
                            bytes: &merged,
                        },
                    )?;
                }
            } else if let Some(last) = occ.last() {
                map.serialize_entry(
                    &field.name,
                    &WireValue {
                        schema: self.schema,
                        kind: field.kind,
                        raw: *last,
                    },
                )?;
            }
        }
        map.end()
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
            "unknown_key": {"deep": [1, 2]}});
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
        let keys: Vec<&String> = back
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            ["name", "type", "scalar", "disk", "reservations"],
            "field-number order"
        );
        let from_text: pb::Resource =
            from_json_str(&j.to_string()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(from_text, r);
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
        match from_json_value::<pb::Resource>(&json!({"name":"cpus","type":"SCALAR","scalar":{}})) {
            Err(JsonError::MissingRequired(fields)) => {
                assert_eq!(fields, ["Resource.scalar.value"])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            from_json_value::<pb::Resource>(&json!({"name":"cpus"})),
            Err(JsonError::MissingRequired(_))
        ));
        assert!(matches!(
            from_json_value::<pb::Resource>(&json!({"name":null,"type":"SCALAR"})),
            Err(JsonError::MissingRequired(_))
        ));
        assert!(matches!(
            from_json_value::<pb::Resource>(&json!({"name":1,"type":"SCALAR"})),
            Err(JsonError::WrongType { .. })
        ));
        // A single value for a repeated field is one element (stout): here one without its
        // required fields.
        assert!(matches!(
            from_json_value::<pb::Resource>(
                &json!({"name":"p","type":"RANGES","ranges":{"range":{}}})
            ),
            Err(JsonError::MissingRequired(_))
        ));
        assert!(matches!(
            from_json_value::<pb::Resource>(
                &json!({"name":"p","type":"RANGES","ranges":{"range":[{"begin":-1,"end":2}]}})
            ),
            Err(JsonError::BadNumber { .. })
        ));
        assert!(matches!(
            from_json_value::<pb::Resource>(&json!([])),
            Err(JsonError::NotObject(_))
        ));
        assert!(matches!(
            from_json_str::<pb::Resource>("{"),
            Err(JsonError::Syntax(_))
        ));
        assert!(matches!(
            from_json_str::<pb::Resource>(r#"{"name":"a","type":"SET"} x"#),
            Err(JsonError::Syntax(_))
        ));
        // Empty messages set the field; numeric strings and integral doubles are accepted.
        let r: pb::Resource = from_json_value(
            &json!({"name":"disk","type":"SCALAR","scalar":{"value":1},"shared":{},
                    "ranges":{"range":[{"begin":"5","end":6.0}]}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.shared.is_some());
        assert_eq!(
            r.ranges.map(|x| x.range),
            Some(vec![pb::value::Range { begin: 5, end: 6 }])
        );
    }

    #[test]
    fn defaults_maps_and_bytes() {
        let j = json!({"container_path":"/data","mode":"RO","image":{"type":"DOCKER","docker":{"name":"busybox"}},
            "source":{"type":"CSI_VOLUME","csi_volume":{"plugin_name":"p","static_provisioning":{
              "volume_id":"v","volume_capability":{"mount":{},"access_mode":{"mode":"SINGLE_NODE_WRITER"}},
              "volume_context":{"b":"2","a":"1"},
              "node_stage_secrets":{"s":{"type":"VALUE","value":{"data":"aGVsbG8="}}}}}}});
        let v: pb::Volume = from_json_value(&j).unwrap_or_else(|e| panic!("{e}"));
        let back = to_json_value(&v);
        assert_eq!(
            back["image"]["cached"],
            json!(true),
            "explicit default printed"
        );
        let sp = &back["source"]["csi_volume"]["static_provisioning"];
        assert_eq!(sp["volume_context"], json!({"a":"1","b":"2"}));
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

    #[test]
    fn wire_json_handles_interleaved_and_packed_fields() {
        // Set items 1 and 2 with another field in between, and a packed repeated varint is
        // not used by our schema but must not break the reader.
        let mut bytes = Vec::new();
        encode_key(1, WireType::LengthDelimited, &mut bytes);
        encode_varint(4, &mut bytes);
        bytes.extend_from_slice(b"zone");
        encode_key(2, WireType::Varint, &mut bytes);
        encode_varint(2, &mut bytes);
        let mut set = Vec::new();
        encode_key(1, WireType::LengthDelimited, &mut set);
        encode_varint(1, &mut set);
        set.push(b'a');
        encode_key(5, WireType::LengthDelimited, &mut bytes);
        encode_varint(set.len() as u64, &mut bytes);
        bytes.extend_from_slice(&set);
        encode_key(99, WireType::Varint, &mut bytes);
        encode_varint(7, &mut bytes);
        encode_key(5, WireType::LengthDelimited, &mut bytes);
        encode_varint(set.len() as u64, &mut bytes);
        bytes.extend_from_slice(&set);
        let w = WireJson::new("mesos.v1.Resource", &bytes).unwrap_or_else(|e| panic!("{e}"));
        let j = serde_json::to_value(w).unwrap_or_default();
        assert_eq!(
            j,
            json!({"name":"zone","type":"SET","set":{"item":["a","a"]}})
        );
    }
}

#[cfg(test)]
mod stout_tests {
    use berth_proto::mesos::v1 as pb;
    use serde_json::json;

    use super::*;

    fn both(j: &Json) -> Result<pb::Resource, JsonError> {
        let from_value = from_json_value::<pb::Resource>(j);
        let from_text = from_json_str::<pb::Resource>(&j.to_string());
        assert_eq!(
            from_value, from_text,
            "the Value and text readers agree on {j}"
        );
        from_value
    }

    #[test]
    fn a_single_value_is_one_element_of_a_repeated_field() {
        let r = both(&json!({"name":"zones","type":"SET","set":{"item":"a"}}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.set.map(|s| s.item), Some(vec!["a".to_owned()]));
        let r = both(&json!({"name":"cpus","type":"SCALAR","scalar":{"value":1},
            "reservations":{"type":"STATIC","role":"r"}}))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.reservations.len(), 1);
    }

    #[test]
    fn null_list_items_are_skipped() {
        let r = both(&json!({"name":"cpus","type":"SCALAR","scalar":{"value":1},
            "reservations":[null, {"type":"STATIC","role":"r"}, null]}))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.reservations.len(), 1);
    }

    #[test]
    fn the_last_of_repeated_keys_wins() {
        let text = r#"{"name":"cpus","type":"SCALAR","scalar":{"value":1},
            "reservations":[{"type":"STATIC","role":"a"}],"reservations":[{"type":"DYNAMIC","role":"b"}],
            "name":"mem","scalar":{"value":2}}"#;
        let r: pb::Resource = from_json_str(text).unwrap_or_else(|e| panic!("{e}"));
        let v: Json = serde_json::from_str(text).unwrap_or_default();
        assert_eq!(Some(&r), from_json_value::<pb::Resource>(&v).ok().as_ref());
        assert_eq!(r.name, "mem");
        assert_eq!(r.scalar.map(|s| s.value), Some(2.0));
        assert_eq!(r.reservations.len(), 1);
        assert_eq!(
            r.reservations.first().and_then(|x| x.role.clone()),
            Some("b".to_owned())
        );
        // A later null unsets a required field.
        assert!(matches!(
            from_json_str::<pb::Resource>(r#"{"name":"x","type":"SCALAR","name":null}"#),
            Err(JsonError::MissingRequired(_))
        ));
    }

    #[test]
    fn stout_wrong_type_texts_and_numbers() {
        let e = both(&json!({"name":"cpus","type":"SCALAR","scalar":[{"value":1}]})).err();
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("Not expecting a JSON array for field 'scalar' (at Resource.scalar)".to_owned())
        );
        // Booleans from strings, integers truncated from doubles.
        let v: pb::Volume = from_json_value(&json!({"container_path":"d","mode":"RW",
            "image":{"type":"DOCKER","docker":{"name":"x"},"cached":"false"}}))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.image.and_then(|i| i.cached), Some(false));
        let r =
            both(&json!({"name":"p","type":"RANGES","ranges":{"range":[{"begin":1.5,"end":"7"}]}}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.ranges.map(|x| x.range),
            Some(vec![pb::value::Range { begin: 1, end: 7 }])
        );
        // "NaN", "inf" and friends are not numbers to stout; "Infinity" is.
        for bad in ["NaN", "nan", "inf", "infinity"] {
            assert!(
                matches!(
                    both(&json!({"name":"cpus","type":"SCALAR","scalar":{"value":bad}})),
                    Err(JsonError::BadNumber { .. })
                ),
                "{bad}"
            );
        }
        let r = both(&json!({"name":"cpus","type":"SCALAR","scalar":{"value":"Infinity"}}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.scalar.is_some_and(|s| s.value.is_infinite()));
    }
}
