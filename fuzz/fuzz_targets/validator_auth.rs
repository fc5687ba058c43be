//! libFuzzer entry point of the `validator_auth` target (see `berth_fuzz`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(target) = berth_fuzz::target("validator_auth") {
        berth_fuzz::run(target, data);
    }
});
