//! How llama.cpp was built for this test binary: CMake's `Release` (`-O3`), never
//! `RelWithDebInfo` (`-O2 -g`), which a release profile with debug info would otherwise give
//! (measured 15-20% slower batched decode, ~32% slower prefill; docs/PERFORMANCE.md).

use std::path::PathBuf;

/// The newest `CMakeCache.txt` of the llama.cpp build this binary was linked with.
fn cmake_cache() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<binary>
    let build = exe.parent().and_then(|d| d.parent()).expect("target/<profile>").join("build");
    let mut caches: Vec<PathBuf> = std::fs::read_dir(&build)
        .expect("the build directory")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("llama-cpp-sys-2-"))
        .map(|e| e.path().join("out/build/CMakeCache.txt"))
        .filter(|p| p.is_file())
        .collect();
    caches.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    caches.pop().unwrap_or_else(|| panic!("no llama.cpp CMakeCache.txt under {}", build.display()))
}

#[test]
fn llama_cpp_is_built_as_release_with_o3() {
    let path = cmake_cache();
    let cache = std::fs::read_to_string(&path).expect("read CMakeCache.txt");
    let value = |key: &str| {
        cache.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.split_once('=')).map(|(_, v)| v.to_string()))
    };
    assert_eq!(value("CMAKE_BUILD_TYPE:").as_deref(), Some("Release"), "{}", path.display());
    let flags = value("CMAKE_C_FLAGS_RELEASE:").unwrap_or_default();
    assert!(flags.contains("-O3"), "C flags for Release: {flags:?} ({})", path.display());
}
