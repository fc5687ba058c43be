//! libFuzzer entry point of the `marathon_app` target (see `berth_fuzz`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(target) = berth_fuzz::target("marathon_app") {
        berth_fuzz::run(target, data);
    }
});
