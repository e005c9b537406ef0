//! The GGUF header reader on arbitrary bytes: it must answer with a file or an error, never
//! panic, loop or allocate what the header merely claims. Inputs start as real GGUF headers
//! (see scripts/fuzz.sh for the seed corpus).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static PATH: std::path::PathBuf =
            std::env::temp_dir().join(format!("hyperllama-fuzz-gguf-{}", std::process::id()));
    }
    PATH.with(|p| {
        if std::fs::write(p, data).is_ok() {
            if let Ok(g) = hyperllama_gguf::GgufFile::open(p) {
                let _ = (g.architecture(), g.chat_template(), g.quantization(), g.parameter_count());
                let _ = g.memory_estimate(4096, 4);
            }
        }
    });
});
