//! Mesos JSON and protobuf for [`Resource`] and [`Resources`], and serde support.
//!
//! Input in either reservation format is validated (Mesos common validation) and upgraded;
//! output is the post-refinement format unless the legacy one is asked for.

use berth_proto::mesos::v1 as pb;
use prost::Message as _;
use serde::de::Error as _;
use serde_json::Value as Json;

use crate::error::{InputError, JsonError, ResourceError, ValidationError};
use crate::json::{from_json_value, to_json_value};
use crate::{Resource, Resources, validate};

impl Resource {
    /// Reads a wire resource in either reservation format: common validation, upgrade, build.
    ///
    /// # Errors
    /// The validation error, or [`ResourceError::PersistenceId`] for a persistence id that
    /// cannot become a path component.
    pub fn from_proto(r: &pb::Resource) -> Result<Resource, ResourceError> {
        validate::validate_resource(r)?;
        Resource::from_valid_proto(r)
    }

    /// Reads one resource from Mesos JSON (either format).
    ///
    /// # Errors
    /// [`InputError::Json`] (stage `parse`) or [`InputError::Resource`] (stage `validate`).
    pub fn from_json(json: &Json) -> Result<Resource, InputError> {
        let raw: pb::Resource = from_json_value(json)?;
        Ok(Resource::from_proto(&raw)?)
    }

    /// Mesos JSON, post-refinement format.
    #[must_use]
    pub fn to_json(&self) -> Json {
        to_json_value(&self.to_proto())
    }

    /// Mesos JSON, legacy (pre-refinement) format.
    ///
    /// # Errors
    /// [`InputError::Downgrade`] for refined reservations.
    pub fn to_json_legacy(&self) -> Result<Json, InputError> {
        Ok(to_json_value(&self.to_proto_legacy()?))
    }

    /// Protobuf bytes (post-refinement format).
    #[must_use]
    pub fn encode_to_vec(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Reads protobuf bytes of a `mesos.v1.Resource` (either format).
    ///
    /// # Errors
    /// [`JsonError::Decode`] for bytes that do not decode, else as [`Resource::from_proto`].
    pub fn decode(bytes: &[u8]) -> Result<Resource, InputError> {
        let raw = pb::Resource::decode(bytes).map_err(|e| JsonError::Decode(e.to_string()))?;
        Ok(Resource::from_proto(&raw)?)
    }
}

/// Parses a JSON array of Mesos resources into wire messages (no validation).
///
/// # Errors
/// [`JsonError`] when the value is not an array or an element does not parse.
pub fn parse_proto_list(json: &Json) -> Result<Vec<pb::Resource>, JsonError> {
    let Json::Array(items) = json else {
        return Err(JsonError::NotArray("resources".to_owned()));
    };
    items.iter().map(from_json_value::<pb::Resource>).collect()
}

impl Resources {
    /// Reads and validates wire resources (either format); any invalid element is an error
    /// naming it. Use `FromIterator` to get Mesos's "drop invalid" behaviour instead.
    ///
    /// # Errors
    /// [`InputError::Validation`] for the first invalid element.
    pub fn from_proto_list(list: &[pb::Resource]) -> Result<Resources, InputError> {
        validate::validate_list(list)?;
        let mut out = Resources::new();
        for (index, raw) in list.iter().enumerate() {
            let r = Resource::from_valid_proto(raw).map_err(|error| ValidationError::Resource {
                index,
                resource: format!("{}", to_json_value(raw)),
                error,
            })?;
            out.add_resource(r);
        }
        Ok(out)
    }

    /// Reads a JSON array of Mesos resources (either format).
    ///
    /// # Errors
    /// As [`parse_proto_list`] and [`Resources::from_proto_list`].
    pub fn from_json(json: &Json) -> Result<Resources, InputError> {
        Resources::from_proto_list(&parse_proto_list(json)?)
    }

    /// The wire resources, a shared resource once per copy (post-refinement format).
    #[must_use]
    pub fn to_proto_list(&self) -> Vec<pb::Resource> {
        self.iter_expanded().map(Resource::to_proto).collect()
    }

    /// Mesos JSON array (post-refinement format).
    #[must_use]
    pub fn to_json(&self) -> Json {
        Json::Array(self.iter_expanded().map(Resource::to_json).collect())
    }

    /// Mesos JSON array (legacy format).
    ///
    /// # Errors
    /// [`InputError::Downgrade`] for refined reservations.
    pub fn to_json_legacy(&self) -> Result<Json, InputError> {
        self.iter_expanded()
            .map(Resource::to_json_legacy)
            .collect::<Result<Vec<_>, _>>()
            .map(Json::Array)
    }
}

impl TryFrom<&pb::Resource> for Resource {
    type Error = ResourceError;
    fn try_from(r: &pb::Resource) -> Result<Resource, ResourceError> {
        Resource::from_proto(r)
    }
}

impl serde::Serialize for Resource {
    /// Streams the Mesos JSON (post-refinement format) without building a `Value`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = self.encode_to_vec();
        match crate::json::WireJson::new("mesos.v1.Resource", &bytes) {
            Ok(w) => w.serialize(s),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Resource {
    /// Streams Mesos JSON (either format) into the wire form without building a `Value`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Resource, D::Error> {
        let raw: pb::Resource =
            crate::json::decode_with("mesos.v1.Resource", d).map_err(D::Error::custom)?;
        Resource::from_proto(&raw).map_err(|e| D::Error::custom(InputError::Resource(e)))
    }
}

impl serde::Serialize for Resources {
    /// A JSON array, a shared resource once per copy.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter_expanded())
    }
}

impl<'de> serde::Deserialize<'de> for Resources {
    /// Streams a JSON array of Mesos resources without building a `Value`: each element goes
    /// to its wire form and is decoded before the next is read (a failure's field path names
    /// the element's index, as `berth-validator batch` reports it).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Resources, D::Error> {
        let list: Vec<pb::Resource> = crate::json::decode_list_with("mesos.v1.Resource", d)
            .map_err(|e| match e {
                JsonError::NotArray(_) => JsonError::NotArray("resources".to_owned()),
                e => e,
            })
            .map_err(|e| D::Error::custom(InputError::Json(e)))?;
        Resources::from_proto_list(&list).map_err(D::Error::custom)
    }
}

/// Parses the text of a JSON array of Mesos resources into wire messages (no validation),
/// without building a `serde_json::Value`.
///
/// # Errors
/// [`JsonError`] when the text is not an array or an element does not parse.
pub fn parse_proto_list_str(text: &str) -> Result<Vec<pb::Resource>, JsonError> {
    crate::json::from_json_str_list(text)
}
