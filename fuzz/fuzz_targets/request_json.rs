//! Request bodies of both API dialects, decoded and converted into the internal request.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hyperllama_server::api::decode_for_fuzzing(data);
});
