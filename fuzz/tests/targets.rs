//! The target list itself: names, seeds, the budget.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test code

#[test]
fn targets_are_distinct_and_seeded_from_the_conformance_vectors() {
    let mut names: Vec<&str> = berth_fuzz::TARGETS.iter().map(|t| t.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), berth_fuzz::TARGETS.len());
    // The batch targets start from every conformance vector (well over a hundred).
    let batch = berth_fuzz::target("batch_line").unwrap();
    assert!((batch.seeds)().len() > 100);
    let pb = berth_fuzz::target("validate_request_pb").unwrap();
    assert!((pb.seeds)().len() > 100);
}

#[test]
fn the_certificate_seed_names_p1() {
    let auth = berth_fuzz::target("validator_auth").unwrap();
    let seeds = (auth.seeds)();
    let cert = seeds.iter().find(|s| s.first() == Some(&0)).unwrap();
    assert_eq!(
        berth_validator::serve::auth::subject_common_name(&cert[1..]).as_deref(),
        Ok("p1")
    );
}

#[test]
fn the_budget_is_64_times_the_input_plus_the_floor() {
    assert_eq!(berth_fuzz::budget(0), berth_fuzz::FLOOR);
    assert_eq!(berth_fuzz::budget(1000), berth_fuzz::FLOOR + 64_000);
    assert_eq!(berth_fuzz::budget(usize::MAX), usize::MAX);
    assert!(berth_fuzz::allocated() > 0);
}
