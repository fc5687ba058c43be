//! `convert`: Mesos JSON ↔ protobuf wire bytes, raw or base64, for debugging real Mesos traffic.
//! No validation: what is read is written back, field for field.

use base64::Engine as _;
use berth_resources::json::{from_json_value, to_json_value};
use berth_resources::proto;
use clap::ValueEnum;
use prost::Message as _;
use serde_json::Value as Json;

/// What the input holds.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Message {
    /// One `mesos.v1.Resource`.
    Resource,
    /// A JSON array of resources / concatenated length-delimited `Resource` messages.
    Resources,
    /// One `mesos.v1.Offer.Operation`.
    Operation,
}

/// An encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Encoding {
    /// Mesos JSON.
    Json,
    /// Raw protobuf bytes.
    Pb,
    /// Base64 of the protobuf bytes.
    Pb64,
}

enum Parsed {
    Resource(Box<proto::Resource>),
    Resources(Vec<proto::Resource>),
    Operation(Box<proto::offer::Operation>),
}

fn decode_bytes(message: Message, bytes: &[u8]) -> Result<Parsed, String> {
    let err = |e: prost::DecodeError| format!("not a protobuf {message:?}: {e}");
    Ok(match message {
        Message::Resource => {
            Parsed::Resource(Box::new(proto::Resource::decode(bytes).map_err(err)?))
        }
        Message::Operation => Parsed::Operation(Box::new(
            proto::offer::Operation::decode(bytes).map_err(err)?,
        )),
        Message::Resources => {
            let mut buf = bytes;
            let mut out = Vec::new();
            while !buf.is_empty() {
                out.push(proto::Resource::decode_length_delimited(&mut buf).map_err(err)?);
            }
            Parsed::Resources(out)
        }
    })
}

fn parse(message: Message, from: Encoding, input: &[u8]) -> Result<Parsed, String> {
    match from {
        Encoding::Pb => decode_bytes(message, input),
        Encoding::Pb64 => {
            let text = std::str::from_utf8(input).map_err(|e| e.to_string())?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| format!("not base64: {e}"))?;
            decode_bytes(message, &bytes)
        }
        Encoding::Json => {
            let json: Json = serde_json::from_slice(input).map_err(|e| format!("not JSON: {e}"))?;
            let e = |e: berth_resources::JsonError| e.to_string();
            Ok(match message {
                Message::Resource => Parsed::Resource(Box::new(from_json_value(&json).map_err(e)?)),
                Message::Operation => {
                    Parsed::Operation(Box::new(from_json_value(&json).map_err(e)?))
                }
                Message::Resources => {
                    Parsed::Resources(berth_resources::codec::parse_proto_list(&json).map_err(e)?)
                }
            })
        }
    }
}

fn encode(parsed: &Parsed) -> Vec<u8> {
    match parsed {
        Parsed::Resource(r) => r.encode_to_vec(),
        Parsed::Operation(o) => o.encode_to_vec(),
        Parsed::Resources(list) => {
            let mut out = Vec::new();
            for r in list {
                out.extend(r.encode_length_delimited_to_vec());
            }
            out
        }
    }
}

fn to_json(parsed: &Parsed) -> Json {
    match parsed {
        Parsed::Resource(r) => to_json_value(r.as_ref()),
        Parsed::Operation(o) => to_json_value(o.as_ref()),
        Parsed::Resources(list) => Json::Array(list.iter().map(to_json_value).collect()),
    }
}

/// Converts `input`.
///
/// # Errors
/// Input that does not parse in the `from` encoding.
pub(crate) fn convert(
    message: Message,
    from: Encoding,
    to: Encoding,
    input: &[u8],
) -> Result<Vec<u8>, String> {
    let parsed = parse(message, from, input)?;
    Ok(match to {
        Encoding::Pb => encode(&parsed),
        Encoding::Pb64 => {
            let mut s = base64::engine::general_purpose::STANDARD
                .encode(encode(&parsed))
                .into_bytes();
            s.push(b'\n');
            s
        }
        Encoding::Json => {
            let mut s = serde_json::to_vec_pretty(&to_json(&parsed)).map_err(|e| e.to_string())?;
            s.push(b'\n');
            s
        }
    })
}
