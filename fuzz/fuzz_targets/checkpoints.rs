//! libFuzzer entry point of the `checkpoints` target (see `berth_fuzz`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(target) = berth_fuzz::target("checkpoints") {
        berth_fuzz::run(target, data);
    }
});
