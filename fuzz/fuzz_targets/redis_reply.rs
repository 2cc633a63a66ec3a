#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| event_bus::fuzzing::redis_reply(data));
