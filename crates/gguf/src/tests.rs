use std::io::Write;

use super::*;

/// Writes a minimal GGUF v3 file: a few metadata keys and one F32 tensor of `n` elements.
fn tiny_gguf(n: u64, data_bytes: usize) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(1u64.to_le_bytes()); // tensors
    out.extend(4u64.to_le_bytes()); // kv
    s(&mut out, "general.architecture");
    out.extend(8u32.to_le_bytes());
    s(&mut out, "llama");
    s(&mut out, "llama.context_length");
    out.extend(4u32.to_le_bytes());
    out.extend(2048u32.to_le_bytes());
    s(&mut out, "tokenizer.ggml.tokens");
    out.extend(9u32.to_le_bytes());
    out.extend(8u32.to_le_bytes());
    out.extend(2u64.to_le_bytes());
    s(&mut out, "<s>");
    s(&mut out, "</s>");
    s(&mut out, "tokenizer.ggml.bos_token_id");
    out.extend(4u32.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    // tensor info
    s(&mut out, "w");
    out.extend(1u32.to_le_bytes());
    out.extend(n.to_le_bytes());
    out.extend(0u32.to_le_bytes()); // F32
    out.extend(0u64.to_le_bytes());
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    out.extend(std::iter::repeat_n(0u8, data_bytes));
    out
}

fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".gguf").tempfile().expect("tempfile");
    f.write_all(bytes).expect("write");
    f
}

#[test]
fn reads_metadata_and_tensors() {
    let f = write(&tiny_gguf(8, 32));
    let g = GgufFile::open(f.path()).expect("valid file");
    assert_eq!(g.version, 3);
    assert_eq!(g.architecture(), Some("llama"));
    assert_eq!(g.context_length(), Some(2048));
    assert_eq!(g.bos_token(), Some("<s>"));
    assert_eq!(g.parameter_count(), 8);
    assert_eq!(g.tensors[0].n_bytes(), Some(32));
    assert_eq!(g.data_offset % 32, 0);
}

#[test]
fn missing_file() {
    let e = GgufFile::open("/nonexistent/model.gguf").unwrap_err();
    assert!(matches!(e, GgufError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("not found"));
}

#[test]
fn text_file_is_not_gguf() {
    let f = write(b"hello, I am a text file pretending to be a model\n");
    let e = GgufFile::open(f.path()).unwrap_err();
    assert!(matches!(e, GgufError::NotGguf { .. }), "{e}");
    assert!(e.to_string().contains("not a GGUF file"), "{e}");
}

#[test]
fn empty_file_is_not_gguf() {
    let f = write(b"");
    assert!(matches!(GgufFile::open(f.path()).unwrap_err(), GgufError::NotGguf { .. }));
}

#[test]
fn truncated_in_tensor_data() {
    let f = write(&tiny_gguf(8, 16)); // needs 32 bytes of data, has 16
    let e = GgufFile::open(f.path()).unwrap_err();
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn truncated_in_header() {
    let full = tiny_gguf(8, 32);
    for cut in [5, 12, 30, 60, 100] {
        let f = write(&full[..cut]);
        let e = GgufFile::open(f.path()).unwrap_err();
        assert!(matches!(e, GgufError::Truncated { .. }), "cut at {cut}: {e}");
    }
}

#[test]
fn bad_version_and_hostile_lengths() {
    let mut b = tiny_gguf(8, 32);
    b[4..8].copy_from_slice(&9u32.to_le_bytes());
    let f = write(&b);
    assert!(matches!(GgufFile::open(f.path()).unwrap_err(), GgufError::UnsupportedVersion { version: 9, .. }));

    let mut b = tiny_gguf(8, 32);
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes()); // kv count
    let f = write(&b);
    assert!(matches!(GgufFile::open(f.path()).unwrap_err(), GgufError::Corrupt { .. }));
}

#[test]
fn human_param_counts() {
    assert_eq!(human_params(134_515_008), "134.5M");
    assert_eq!(human_params(8_030_261_248), "8.0B");
}

#[test]
fn memory_estimate_scales_with_context() {
    let f = write(&tiny_gguf(8, 32));
    let g = GgufFile::open(f.path()).expect("valid");
    let a = g.memory_estimate(1024, 1);
    let b = g.memory_estimate(2048, 2);
    assert_eq!(a.weights, 32);
    assert!(b.total > a.total);
    assert_eq!(a.total, a.weights + a.kv_cache + a.compute);
}

/// Found by `cargo fuzz` (gguf_metadata): dimensions whose product overflows 64 bits.
#[test]
fn tensors_with_more_elements_than_u64_holds_are_corrupt() {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(0u64.to_le_bytes()); // kv
    b.extend(1u64.to_le_bytes());
    b.push(b'w');
    b.extend(2u32.to_le_bytes());
    b.extend((1u64 << 33).to_le_bytes());
    b.extend((1u64 << 33).to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    let f = write(&b);
    match GgufFile::open(f.path()).unwrap_err() {
        GgufError::Corrupt { reason, .. } => assert!(reason.contains("64 bits"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

/// Header values are untrusted: a huge embedding length saturates the estimate, never wraps.
#[test]
fn memory_estimate_saturates_on_hostile_metadata() {
    let f = write(&tiny_gguf(8, 32));
    let mut g = GgufFile::open(f.path()).expect("open");
    g.metadata.insert("llama.embedding_length".into(), Value::U64(u64::MAX / 3));
    g.metadata.insert("llama.block_count".into(), Value::U64(u64::MAX));
    let est = g.memory_estimate(4096, 4);
    assert_eq!(est.total, u64::MAX);
    assert!(est.compute > 4096 && est.kv_cache == u64::MAX, "{est:?}");
}
