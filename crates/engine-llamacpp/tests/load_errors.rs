//! Loading bad files fails with a precise error, never a crash.

use hyperllama_engine::{Engine, EngineError, LoadOptions};
use hyperllama_engine_llamacpp::LlamaCppEngine;

async fn load_err(path: &std::path::Path) -> EngineError {
    match LlamaCppEngine::new().load(LoadOptions { path: path.to_path_buf(), ..LoadOptions::default() }).await {
        Err(e) => e,
        Ok(_) => panic!("{} loaded", path.display()),
    }
}

#[tokio::test]
async fn missing_file() {
    let e = load_err(std::path::Path::new("/nonexistent/model.gguf")).await;
    assert!(e.to_string().contains("not found"), "{e}");
}

#[tokio::test]
async fn text_file_named_gguf() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("model.gguf");
    std::fs::write(&p, "this is not a model\n").expect("write");
    let e = load_err(&p).await;
    assert!(e.to_string().contains("not a GGUF file"), "{e}");
}

#[tokio::test]
async fn truncated_gguf() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("model.gguf");
    let bytes = std::fs::read(crate::util::model_path()).expect("model");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("write");
    let e = load_err(&p).await;
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[tokio::test]
async fn unsupported_architecture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("model.gguf");
    let mut bytes = std::fs::read(crate::util::model_path()).expect("model");
    // Patch the value of general.architecture ("llama", 5 bytes) to another 5-byte name.
    let key = b"general.architecture";
    let at = bytes.windows(key.len()).position(|w| w == key).expect("key present") + key.len();
    let value = at + 4 + 8; // u32 type, u64 length
    assert_eq!(&bytes[value..value + 5], b"llama");
    bytes[value..value + 5].copy_from_slice(b"zzzzz");
    std::fs::write(&p, &bytes).expect("write");
    let e = load_err(&p).await;
    assert!(matches!(e, EngineError::UnsupportedArchitecture { ref arch } if arch == "zzzzz"), "{e}");
}
