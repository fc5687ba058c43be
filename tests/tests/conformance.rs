//! Runs the public conformance vectors (taken from Mesos's own tests) through berth's engine.
//! Prints the count and the name of every failing vector.

use berth_tests::conformance::{
    check_arithmetic, check_resource_validation, check_vector, load_arithmetic_vectors,
    load_operation_vectors,
};
use berth_tests::read_vectors;

fn report(kind: &str, total: usize, failures: &[(String, String)]) {
    println!("{kind}: {} of {total} vectors pass", total - failures.len());
    for (name, why) in failures {
        println!("  FAIL {name}: {why}");
    }
    assert!(total > 0, "{kind}: no vectors found");
    assert!(
        failures.is_empty(),
        "{kind}: {} of {total} vectors fail",
        failures.len()
    );
}

#[test]
fn resource_validation_vectors() {
    let text = read_vectors("operations.json").unwrap_or_else(|e| panic!("{e}"));
    let vectors = load_operation_vectors(&text).unwrap_or_else(|e| panic!("operations.json: {e}"));
    let selected: Vec<_> = vectors
        .iter()
        .filter(|v| v.category == "resource_validation")
        .collect();
    let failures: Vec<(String, String)> = selected
        .iter()
        .filter_map(|v| {
            check_resource_validation(v)
                .err()
                .map(|e| (v.name.clone(), e))
        })
        .collect();
    report("resource_validation", selected.len(), &failures);
}

#[test]
fn arithmetic_vectors() {
    let text = read_vectors("arithmetic.json").unwrap_or_else(|e| panic!("{e}"));
    let vectors = load_arithmetic_vectors(&text).unwrap_or_else(|e| panic!("arithmetic.json: {e}"));
    let failures: Vec<(String, String)> = vectors
        .iter()
        .filter_map(|v| check_arithmetic(v).err().map(|e| (v.name.clone(), e)))
        .collect();
    report("arithmetic", vectors.len(), &failures);
}

#[test]
fn operation_vectors() {
    let text = read_vectors("operations.json").unwrap_or_else(|e| panic!("{e}"));
    let vectors = load_operation_vectors(&text).unwrap_or_else(|e| panic!("operations.json: {e}"));
    let selected: Vec<_> = vectors
        .iter()
        .filter(|v| v.category != "resource_validation")
        .collect();
    let failures: Vec<(String, String)> = selected
        .iter()
        .filter_map(|v| check_vector(v).err().map(|e| (v.name.clone(), e)))
        .collect();
    report("operations", selected.len(), &failures);
}
