//! libFuzzer entry point of the `validate_request_pb` target (see `berth_fuzz`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(target) = berth_fuzz::target("validate_request_pb") {
        berth_fuzz::run(target, data);
    }
});
