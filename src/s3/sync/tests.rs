//! Unit tests of object sync: keys, content types, digests, desired objects (no S3 server).
use super::digest::{compute_digests, hex, normalise_etag};
use super::*;
use crate::s3::spec::PART_SIZE;
use md5::Md5;

fn sync(source: &str, prefix: &str) -> ObjectSync {
    ObjectSync {
        source: source.into(),
        prefix: prefix.into(),
        delete: true,
        cache_control: None,
        content_types: BTreeMap::new(),
        max_file_size: 100,
    }
}

#[test]
fn keys_stay_under_the_prefix() {
    let s = sync("assets/dev", "static/");
    assert_eq!(
        object_key("b", &s, "assets/dev/css/a.css").unwrap(),
        "static/css/a.css"
    );
    for bad in [
        "assets/dev/../prod/x",
        "assets/dev//x",
        "assets/dev/a\\b",
        "assets/devx/y",
        "other/x",
        "assets/dev/./x",
    ] {
        let e = object_key("b", &s, bad).unwrap_err();
        assert!(matches!(e, S3Error::InvalidKey { .. }), "{bad}: {e}");
        assert!(e.to_string().contains("bucket b"), "{e}");
    }
    let root = sync("", "");
    assert_eq!(object_key("b", &root, "x/y.txt").unwrap(), "x/y.txt");
    assert!(object_key("b", &root, "/etc/passwd").is_err());
}

#[test]
fn content_types_with_overrides() {
    let mut o = BTreeMap::new();
    o.insert(
        ".webmanifest".to_string(),
        "application/x-custom".to_string(),
    );
    assert_eq!(
        content_type("a/b/INDEX.HTML", &o),
        "text/html; charset=utf-8"
    );
    assert_eq!(content_type("app.webmanifest", &o), "application/x-custom");
    assert_eq!(content_type("x.woff2", &o), "font/woff2");
    assert_eq!(content_type("x.unknown", &o), "application/octet-stream");
    assert_eq!(content_type("Makefile", &o), "application/octet-stream");
}

#[test]
fn multipart_etag_is_md5_of_part_md5s() {
    let small = compute_digests(b"hello");
    assert_eq!(small.etag, "5d41402abc4b2a76b9719d911017c592");
    let big = vec![7u8; PART_SIZE as usize + 10];
    let d = compute_digests(&big);
    let mut all = Md5::new();
    all.update(Md5::digest(&big[..PART_SIZE as usize]));
    all.update(Md5::digest(&big[PART_SIZE as usize..]));
    assert_eq!(d.etag, format!("{}-2", hex(&all.finalize())));
    assert_eq!(normalise_etag("\"ABC-2\""), "abc-2");
}

#[test]
fn desired_objects_enforce_size_and_errors_name_the_bucket() {
    let mut src = MemorySource::new();
    src.insert("site/a.txt", vec![0u8; 10]);
    src.insert("site/big.bin", vec![0u8; 101]);
    src.insert("elsewhere/x", vec![1u8]);
    let e = desired_objects("bk", &sync("site", "p/"), &src).unwrap_err();
    assert!(matches!(e, S3Error::FileTooLarge { size: 101, .. }), "{e}");
    src.files.remove("site/big.bin");
    let d = desired_objects("bk", &sync("site", "p/"), &src).unwrap();
    assert_eq!(d.keys().collect::<Vec<_>>(), vec!["p/a.txt"]);
    let e = src
        .read("nope")
        .map_err(|e| e.with_bucket("bk"))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "bucket bk: reading nope from the repository: no such file"
    );
}
