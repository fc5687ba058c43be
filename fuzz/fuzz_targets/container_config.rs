//! libFuzzer entry point of the `container_config` target (see `berth_fuzz`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(target) = berth_fuzz::target("container_config") {
        berth_fuzz::run(target, data);
    }
});
