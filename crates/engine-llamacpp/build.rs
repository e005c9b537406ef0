// Records the pinned llama-cpp-2 version (from Cargo.lock) for `hyperllama info`.
fn main() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock")).unwrap_or_default();
    let mut version = "unknown".to_string();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"llama-cpp-2\"" {
            if let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = \"")) {
                version = v.trim_end_matches('"').to_string();
            }
        }
    }
    println!("cargo:rustc-env=HYPERLLAMA_LLAMA_CPP_VERSION={version}");
    println!("cargo:rerun-if-changed=../../Cargo.lock");
}
