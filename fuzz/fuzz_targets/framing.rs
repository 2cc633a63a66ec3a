#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sse_gateway::fuzzing::framing(data));
