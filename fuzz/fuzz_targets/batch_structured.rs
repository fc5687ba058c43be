//! libFuzzer entry point of the `batch_structured` target (see `berth_fuzz`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(target) = berth_fuzz::target("batch_structured") {
        berth_fuzz::run(target, data);
    }
});
