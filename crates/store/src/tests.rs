use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path().join("models")).expect("open");
    (dir, s)
}

#[test]
fn names_parse_and_default() {
    let n = ModelName::parse("smollm2").expect("valid");
    assert_eq!((n.namespace.as_str(), n.model.as_str(), n.tag.as_str()), ("library", "smollm2", "latest"));
    assert_eq!(n.to_string(), "smollm2:latest");
    assert_eq!(ModelName::parse("me/smol-lm_2.5:135m-q4").expect("valid").to_string(), "me/smol-lm_2.5:135m-q4");
    let hub = ModelName::parse("huggingface.co/Org/Repo:Q4_1").expect("valid");
    assert_eq!(hub.to_string(), "hf.co/Org/Repo:Q4_1");
    assert!(hub.is_hub());
    assert_eq!(hub.hub_alias().expect("alias").to_string(), "Org/Repo:Q4_1");
    assert!(hub.matches(&ModelName::parse("hf.co/org/repo:q4_1").expect("valid")));
    assert!(ModelName::parse("smol").expect("valid").hub_alias().is_none());
}

#[test]
fn names_match_without_case_and_through_the_hub_alias() {
    let (dir, s) = store();
    let gguf = dir.path().join("w.gguf");
    std::fs::write(&gguf, b"GGUF fake").expect("write");
    let typed = ModelName::parse("hf.co/Org/Repo:Q4_1").expect("name");
    s.create(&typed, Source::File(gguf), Overrides::default()).expect("create");
    assert_eq!(s.list().expect("list")[0].name, "hf.co/Org/Repo:Q4_1", "listed as typed");
    for other in ["hf.co/org/repo:q4_1", "Org/Repo:Q4_1", "org/repo:Q4_1"] {
        let (stored, m) = s.resolve(&ModelName::parse(other).expect("name")).expect(other);
        assert_eq!(stored, typed, "{other}");
        assert_eq!(m.name, "hf.co/Org/Repo:Q4_1");
    }
    assert!(matches!(s.resolve(&ModelName::parse("Org/Repo:Q8_0").expect("n")), Err(StoreError::NotFound(_))));
    s.delete(&ModelName::parse("hf.co/org/REPO:q4_1").expect("name")).expect("rm by another case");
    assert!(s.list().expect("list").is_empty());
}

#[test]
fn names_that_could_escape_are_rejected() {
    for bad in [
        "",
        "..",
        "../etc/passwd",
        "/abs/path",
        "a/../b",
        "a/b/c",
        "a/b/c/d",
        "h..x/a/b",
        "x:..",
        "x:",
        ":tag",
        ".hidden",
        "a b",
        "a\\b",
        "ü",
    ] {
        assert!(matches!(ModelName::parse(bad), Err(StoreError::InvalidName { .. })), "{bad:?} accepted");
    }
}

#[test]
fn digests() {
    let hex = "a".repeat(64);
    let d = Digest::parse(&format!("sha256:{hex}")).expect("valid");
    assert_eq!(d, Digest::parse(&format!("sha256-{}", hex.to_uppercase())).expect("valid"));
    assert_eq!(d.file_name(), format!("sha256-{hex}"));
    for bad in ["sha256:abc", "md5:00", &"g".repeat(64), "sha256:../../etc/passwd"] {
        assert!(Digest::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn create_list_copy_delete_collects_blobs() {
    let (dir, s) = store();
    let gguf = dir.path().join("w.gguf");
    std::fs::write(&gguf, b"GGUF fake weights").expect("write");
    let a = ModelName::parse("a").expect("name");
    let m = s
        .create(&a, Source::File(gguf.clone()), Overrides { system: Some("hi".into()), ..Overrides::default() })
        .expect("create");
    assert_eq!(m.size, 17);
    assert!(s.has_blob(&m.model));
    let b = ModelName::parse("ns/b:v1").expect("name");
    s.copy(&a, &b).expect("copy");
    let c = ModelName::parse("c").expect("name");
    let mc = s.create(&c, Source::Model(a.clone()), Overrides::default()).expect("create from model");
    assert_eq!(mc.system.as_deref(), Some("hi"));
    assert_eq!(
        s.list().expect("list").iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["a:latest", "c:latest", "ns/b:v1"]
    );
    // One blob, three names.
    assert_eq!(std::fs::read_dir(s.root().join("blobs")).expect("dir").count(), 1);
    s.delete(&a).expect("delete");
    s.delete(&c).expect("delete");
    assert!(s.has_blob(&m.model), "still used by ns/b:v1");
    s.delete(&b).expect("delete");
    assert!(!s.has_blob(&m.model));
    assert!(matches!(s.delete(&b), Err(StoreError::NotFound(_))));
    assert!(matches!(s.get(&a), Err(StoreError::NotFound(_))));
}

#[test]
fn blob_with_wrong_digest_leaves_nothing() {
    let (_dir, s) = store();
    let wrong = Digest::parse(&format!("sha256:{}", "0".repeat(64))).expect("digest");
    let err = s.write_blob(&b"hello"[..], Some(&wrong)).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }));
    assert_eq!(std::fs::read_dir(s.root().join("blobs")).expect("dir").count(), 0);
    let d = s.write_blob(&b"hello"[..], None).expect("write");
    assert_eq!(d.hex(), "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    assert!(matches!(
        s.create(&ModelName::parse("x").expect("n"), Source::Blob(wrong), Overrides::default()),
        Err(StoreError::BlobNotFound(_))
    ));
}

#[test]
fn measurements_are_recorded_per_weights_and_engine() {
    let (dir, s) = store();
    assert!(s.measurements().is_empty() && s.measurements_modified().is_none());
    let weights = dir.path().join("w.gguf");
    std::fs::write(&weights, b"weights").expect("write");
    let d = digest_of_file(&weights).expect("digest");
    assert_eq!(d, s.write_blob(&b"weights"[..], None).expect("blob"), "the digest the store names blobs by");
    let m = |tps: f64| Measurement { decode_tps: tps, ttft_ms: 5.0, threads: Some(2), measured_at: "t".into() };
    s.record_measurement(&d, "llamacpp", m(60.0)).expect("record");
    s.record_measurement(&d, "max", m(10.0)).expect("record");
    s.record_measurement(&d, "max", m(11.0)).expect("replace");
    let all = s.measurements();
    assert_eq!(all[d.hex()].len(), 2);
    assert_eq!(all[d.hex()]["max"].decode_tps, 11.0);
    assert!(s.record_measurement(&d, "max", m(f64::NAN)).is_err(), "no speed, no record");
    // Nothing half-written is left beside it; a corrupt file reads as no measurements.
    let names: Vec<_> =
        std::fs::read_dir(s.root()).expect("dir").filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert!(!names.iter().any(|n| n.to_string_lossy().starts_with(".tmp")), "{names:?}");
    std::fs::write(s.root().join("measurements.json"), b"{not json").expect("write");
    assert!(s.measurements().is_empty());
}
