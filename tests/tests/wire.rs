//! Wire compatibility with Mesos: the bytes berth writes decode, with a generic protobuf wire
//! decoder (prost's `encoding` primitives, like `protoc --decode_raw`), against the field table
//! of Mesos's `mesos.v1` schema transcribed independently here from the research notes (W-1…W-8).
//! A wrong field number or wire type anywhere in our `.proto` makes this test fail.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test helpers abort on setup errors

use berth_resources::{Resource, Resources};
use berth_tests::conformance::{OperationVector, load_operation_vectors};
use berth_tests::read_vectors;
use prost::bytes::Buf;
use prost::encoding::{WireType, decode_key, decode_varint};

/// What a field holds on the wire.
#[derive(Clone, Copy)]
enum F {
    Str,
    Varint,
    Double,
    Msg(&'static str),
}

/// Mesos's field numbers (include/mesos/v1/mesos.proto), message by message.
fn field(message: &str, number: u32) -> Option<F> {
    use F::{Double, Msg, Str, Varint};
    Some(match (message, number) {
        ("Resource", 1) => Str,
        ("Resource", 2) => Varint,
        ("Resource", 3) => Msg("Scalar"),
        ("Resource", 4) => Msg("Ranges"),
        ("Resource", 5) => Msg("Set"),
        ("Resource", 6) => Str,
        ("Resource", 7) => Msg("DiskInfo"),
        ("Resource", 8 | 13) => Msg("ReservationInfo"),
        ("Resource", 9 | 10) => Msg("Empty"),
        ("Resource", 11) => Msg("AllocationInfo"),
        ("Resource", 12) => Msg("ResourceProviderID"),
        ("Scalar", 1) => Double,
        ("Ranges", 1) => Msg("Range"),
        ("Range", 1 | 2) => Varint,
        ("Set", 1) => Str,
        ("ReservationInfo", 4) => Varint,
        ("ReservationInfo", 3 | 1) => Str,
        ("ReservationInfo", 2) => Msg("Labels"),
        ("Labels", 1) => Msg("Label"),
        ("Label", 1 | 2) => Str,
        ("AllocationInfo" | "ResourceProviderID", 1) => Str,
        ("DiskInfo", 1) => Msg("Persistence"),
        ("DiskInfo", 2) => Msg("Volume"),
        ("DiskInfo", 3) => Msg("Source"),
        ("Persistence", 1 | 2) => Str,
        ("Source", 1) => Varint,
        ("Source", 2 | 3) => Msg("Root"),
        ("Source", 4 | 6 | 7) => Str,
        ("Source", 5) => Msg("Labels"),
        ("Root", 1) => Str,
        ("Volume", 1 | 2) => Str,
        ("Volume", 3) => Varint,
        ("Volume", 4) => Msg("Image"),
        ("Volume", 5) => Msg("VolumeSource"),
        _ => return None,
    })
}

#[derive(Default)]
struct Seen {
    strings: Vec<(String, u32, String)>,
    doubles: Vec<f64>,
    varints: Vec<(String, u32, u64)>,
}

fn walk(message: &str, mut buf: &[u8], seen: &mut Seen) -> Result<(), String> {
    while buf.has_remaining() {
        let (number, wire) = decode_key(&mut buf).map_err(|e| format!("{message}: {e}"))?;
        let kind = field(message, number)
            .ok_or_else(|| format!("{message} has no field {number} in Mesos"))?;
        match (kind, wire) {
            (F::Varint, WireType::Varint) => {
                let v = decode_varint(&mut buf).map_err(|e| e.to_string())?;
                seen.varints.push((message.to_owned(), number, v));
            }
            (F::Double, WireType::SixtyFourBit) => {
                if buf.remaining() < 8 {
                    return Err("truncated double".into());
                }
                seen.doubles.push(buf.get_f64_le());
            }
            (F::Str | F::Msg(_), WireType::LengthDelimited) => {
                let len = usize::try_from(decode_varint(&mut buf).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                if buf.remaining() < len {
                    return Err(format!("{message}.{number}: truncated"));
                }
                let (body, rest) = buf.split_at(len);
                match kind {
                    F::Str => {
                        let s = std::str::from_utf8(body).map_err(|e| e.to_string())?;
                        seen.strings
                            .push((message.to_owned(), number, s.to_owned()));
                    }
                    F::Msg("Image" | "VolumeSource" | "Empty") => {}
                    F::Msg(child) => walk(child, body, seen)?,
                    _ => {}
                }
                buf = rest;
            }
            (_, other) => {
                return Err(format!(
                    "{message}.{number}: wire type {other:?} is not Mesos's"
                ));
            }
        }
    }
    Ok(())
}

fn valid_vector_resources() -> Vec<Resource> {
    let text = read_vectors("operations.json").unwrap_or_else(|e| panic!("{e}"));
    let vectors: Vec<OperationVector> =
        load_operation_vectors(&text).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for v in &vectors {
        if let Ok(rs) = Resources::from_json(&v.resources) {
            out.extend(rs.iter_expanded().cloned());
        }
    }
    out
}

#[test]
fn vector_resources_decode_with_mesos_field_numbers() {
    let resources = valid_vector_resources();
    assert!(resources.len() > 100, "only {} resources", resources.len());
    for r in &resources {
        let bytes = r.encode_to_vec();
        let mut seen = Seen::default();
        walk("Resource", &bytes, &mut seen).unwrap_or_else(|e| panic!("{r}: {e}"));
        // The values are where Mesos expects them.
        assert!(
            seen.strings
                .iter()
                .any(|(m, n, s)| m == "Resource" && *n == 1 && s == &*r.name),
            "{r}: name"
        );
        let type_number = match r.value_type() {
            berth_resources::ValueType::Scalar => 0,
            berth_resources::ValueType::Ranges => 1,
            berth_resources::ValueType::Set => 2,
        };
        assert!(
            seen.varints
                .iter()
                .any(|(m, n, v)| m == "Resource" && *n == 2 && *v == type_number),
            "{r}: SCALAR = 0 is still written, as proto2 requires"
        );
        if let Some(s) = r.scalar_value() {
            assert_eq!(seen.doubles, vec![s.as_f64()], "{r}");
        }
        for x in &r.reservations {
            assert!(
                seen.strings
                    .iter()
                    .any(|(m, n, s)| m == "ReservationInfo" && *n == 3 && s == x.role.as_str()),
                "{r}: reservation role in field 3"
            );
        }
        if let Some(id) = r.persistence_id() {
            assert!(
                seen.strings
                    .iter()
                    .any(|(m, n, s)| m == "Persistence" && *n == 1 && s == id.as_str())
            );
        }
        // And berth reads them back to an equal value.
        let back = Resource::decode(&bytes).unwrap_or_else(|e| panic!("{r}: {e}"));
        assert!(back.identical(r), "{r}");
    }
}

#[test]
fn legacy_format_uses_fields_6_and_8() {
    let r = Resource::from_json(
        &serde_json::json!({"name":"cpus","type":"SCALAR","scalar":{"value":1},
        "role":"r","reservation":{"principal":"p"}}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let legacy = r.to_proto_legacy().unwrap_or_else(|e| panic!("{e}"));
    let bytes = prost::Message::encode_to_vec(&legacy);
    let mut seen = Seen::default();
    walk("Resource", &bytes, &mut seen).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        seen.strings
            .iter()
            .any(|(m, n, s)| m == "Resource" && *n == 6 && s == "r")
    );
    assert!(
        seen.strings
            .iter()
            .any(|(m, n, s)| m == "ReservationInfo" && *n == 1 && s == "p")
    );
}
