//! libFuzzer entry point of the `dvdi_plugin_spec` target (see `berth_fuzz`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(target) = berth_fuzz::target("dvdi_plugin_spec") {
        berth_fuzz::run(target, data);
    }
});
