#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| worker_emitter::fuzzing::webhook(data));
