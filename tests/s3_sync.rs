//! Object sync against the second S3 server of the testbed (versitygw, posix backend): first sync,
//! no-op re-sync (listing only), changed file, removed file, multipart upload, key escapes.
//! `cargo test --test s3_sync -- --ignored --nocapture bench` prints the 1,000-file benchmark.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gitopsd::manifest::parse_file;
use gitopsd::s3::{
    self, BucketAction, BucketSpec, MemorySource, ObjectSource, Owner, RequestLog, S3Error,
    S3Settings, SourceFile, apply_bucket, parse_bucket, plan_bucket,
};

async fn client(tb: &support::Testbed) -> (aws_sdk_s3::Client, RequestLog) {
    let settings = S3Settings {
        endpoint: Some(tb.env("GITOPSD_TEST_S3_ENDPOINT_2").to_string()),
        region: tb.env("GITOPSD_TEST_S3_REGION").to_string(),
        force_path_style: true,
        access_key_id: Some(tb.env("AWS_ACCESS_KEY_ID").to_string()),
        secret_access_key: Some(tb.env("AWS_SECRET_ACCESS_KEY").to_string()),
    };
    s3::client_with_log(&settings).await
}

/// The owner these tests plan and apply as (bucket names are unique per test).
fn owner() -> Owner {
    Owner::new("s3-tests", "dev")
}

fn spec(bucket: &str, objects: &str) -> BucketSpec {
    let yaml = format!(
        "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {{name: site}}\nspec:\n  name: {bucket}\n  deletionPolicy: Delete\n  objects:\n{objects}"
    );
    let m = parse_file("env/dev/site.yaml", yaml.as_bytes())
        .unwrap()
        .remove(0);
    parse_bucket(&m).unwrap_or_else(|e| panic!("invalid spec: {e:?}"))
}

const OBJECTS: &str = "    source: assets/dev\n    prefix: static/\n    delete: true\n    cacheControl: \"public, max-age=300\"\n    contentTypes: { \".webmanifest\": \"application/manifest+json\" }\n";

/// An [`ObjectSource`] over a real directory (what a checkout would give), content id from the
/// file's size and modification time, like a cheap stat cache.
struct DirSource {
    root: PathBuf,
}

impl DirSource {
    fn walk(&self, dir: &Path, out: &mut Vec<SourceFile>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                self.walk(&entry.path(), out)?;
            } else if meta.is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(&self.root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                let mtime = meta
                    .modified()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                out.push(SourceFile {
                    content_id: format!("{rel}:{}:{mtime}", meta.len()),
                    path: rel,
                    size: meta.len(),
                });
            }
        }
        Ok(())
    }
}

impl ObjectSource for DirSource {
    fn list(&self, dir: &str) -> Result<Vec<SourceFile>, S3Error> {
        let mut out = Vec::new();
        self.walk(&self.root.join(dir), &mut out)
            .map_err(|e| S3Error::source(dir, e.to_string()))?;
        Ok(out)
    }
    fn read(&self, path: &str) -> Result<Vec<u8>, S3Error> {
        std::fs::read(self.root.join(path)).map_err(|e| S3Error::source(path, e.to_string()))
    }
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// Objects under the prefix, key → size, read with the plain SDK.
async fn list(sdk: &aws_sdk_s3::Client, bucket: &str) -> BTreeMap<String, i64> {
    let out = sdk.list_objects_v2().bucket(bucket).send().await.unwrap();
    out.contents()
        .iter()
        .map(|o| (o.key().unwrap().to_string(), o.size().unwrap_or(0)))
        .collect()
}

/// Every request names gitopsd first in its User-Agent (issue 15), as versitygw's access log shows.
#[tokio::test]
async fn requests_carry_gitopsd_user_agent() {
    let tb = require_testbed!();
    let (c, _log) = client(tb).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "assets/dev/index.html", b"<h1>hello</h1>");
    let source = DirSource {
        root: dir.path().into(),
    };
    let name = support::unique_name("agent");
    let s = spec(&name, OBJECTS);
    let plan = plan_bucket(&c, &s, &owner(), Some(&source)).await.unwrap();
    apply_bucket(&c, &s, &owner(), &plan, Some(&source))
        .await
        .unwrap();
    let log = PathBuf::from(tb.env("GITOPSD_TEST_S3_ACCESS_LOG_2"));
    let needle = format!(" {name} ");
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    };
    // The server writes a line as each request completes; wait until the upload's is there.
    support::gitopsd::wait_for(
        "the upload in the access log",
        Duration::from_secs(30),
        || lines().iter().any(|l| l.contains("PutObject")),
    );
    let agent = format!(" {} aws-sdk-rust/", gitopsd::USER_AGENT);
    let lines = lines();
    assert!(
        lines.iter().all(|l| l.contains(&agent)),
        "every request's User-Agent starts with {}: {lines:#?}",
        gitopsd::USER_AGENT
    );
}

#[tokio::test]
async fn sync_first_noop_changed_and_removed_files() {
    let tb = require_testbed!();
    let (c, log) = client(tb).await;
    let sdk = tb.s3_client_2().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "assets/dev/index.html", b"<h1>hello</h1>");
    write(root, "assets/dev/css/site.css", b"body { color: red }");
    write(root, "assets/dev/app.webmanifest", b"{}");
    write(root, "assets/dev/empty.txt", b"");
    write(root, "assets/prod/other.txt", b"not synced");
    let source = DirSource { root: root.into() };
    let name = support::unique_name("sync");
    let s = spec(&name, OBJECTS);

    // First sync: the bucket is created and every file uploaded.
    let plan = plan_bucket(&c, &s, &owner(), Some(&source)).await.unwrap();
    assert_eq!(plan.action, BucketAction::Create);
    assert_eq!(
        plan.objects.uploads,
        [
            "static/app.webmanifest",
            "static/css/site.css",
            "static/empty.txt",
            "static/index.html"
        ]
    );
    assert_eq!(log.writes(), 0);
    let report = apply_bucket(&c, &s, &owner(), &plan, Some(&source))
        .await
        .unwrap();
    assert_eq!(report.uploaded, 4, "{report:?}");
    assert_eq!(list(&sdk, &name).await.len(), 4);
    let head = sdk
        .head_object()
        .bucket(&name)
        .key("static/index.html")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("text/html; charset=utf-8"));
    assert_eq!(head.cache_control(), Some("public, max-age=300"));
    assert!(
        head.metadata().unwrap().contains_key(s3::SHA256_METADATA),
        "{:?}",
        head.metadata()
    );
    let head = sdk
        .head_object()
        .bucket(&name)
        .key("static/app.webmanifest")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/manifest+json"));

    // No-op re-sync: listing only for the objects, zero writes.
    log.clear();
    let plan = plan_bucket(&c, &s, &owner(), Some(&source)).await.unwrap();
    assert!(plan.is_noop(), "{}\n{:?}", plan.diff_text(), plan.objects);
    assert_eq!(plan.objects.unchanged, 4);
    assert_eq!(plan.objects.head_requests, 0);
    let report = apply_bucket(&c, &s, &owner(), &plan, Some(&source))
        .await
        .unwrap();
    assert_eq!(report.write_calls, 0);
    let entries = log.entries();
    assert_eq!(log.writes(), 0, "{entries:?}");
    let object_reads: Vec<_> = entries
        .iter()
        .filter(|(m, what)| what == "object" && m == "GET")
        .collect();
    assert!(object_reads.is_empty(), "no per-object reads: {entries:?}");
    let heads: Vec<_> = entries.iter().filter(|(m, _)| m == "HEAD").collect();
    assert_eq!(
        heads,
        [&("HEAD".to_string(), "bucket".to_string())],
        "HeadBucket only: {entries:?}"
    );
    assert_eq!(
        entries.iter().filter(|(_, w)| w == "ListObjectsV2").count(),
        1,
        "{entries:?}"
    );

    // One changed file (same size: compared by content), one removed file.
    write(root, "assets/dev/css/site.css", b"body { color: RED }");
    std::fs::remove_file(root.join("assets/dev/empty.txt")).unwrap();
    log.clear();
    let plan = plan_bucket(&c, &s, &owner(), Some(&source)).await.unwrap();
    assert_eq!(plan.action, BucketAction::Update);
    assert_eq!(plan.objects.uploads, ["static/css/site.css"]);
    assert_eq!(plan.objects.replaced, ["static/css/site.css"]);
    assert_eq!(plan.objects.deletes, ["static/empty.txt"]);
    assert_eq!(plan.objects.unchanged, 2);
    let text = plan.diff_text();
    assert!(
        text.contains("~ static/css/site.css\n- static/empty.txt\n"),
        "{text}"
    );
    let report = apply_bucket(&c, &s, &owner(), &plan, Some(&source))
        .await
        .unwrap();
    assert_eq!(
        (report.uploaded, report.deleted, report.write_calls),
        (1, 1, 2),
        "{report:?}"
    );
    let live = list(&sdk, &name).await;
    assert!(!live.contains_key("static/empty.txt"));
    let body = sdk
        .get_object()
        .bucket(&name)
        .key("static/css/site.css")
        .send()
        .await
        .unwrap();
    assert_eq!(
        body.body.collect().await.unwrap().into_bytes().as_ref(),
        b"body { color: RED }"
    );
    assert!(
        plan_bucket(&c, &s, &owner(), Some(&source))
            .await
            .unwrap()
            .is_noop()
    );

    // Objects outside the prefix are never touched; with delete: false nothing is deleted.
    sdk.put_object()
        .bucket(&name)
        .key("other/keep.txt")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap();
    std::fs::remove_file(root.join("assets/dev/index.html")).unwrap();
    let keep = spec(&name, "    source: assets/dev\n    prefix: static/\n");
    let plan = plan_bucket(&c, &keep, &owner(), Some(&source))
        .await
        .unwrap();
    assert!(plan.objects.is_noop(), "{:?}", plan.objects);
    let plan = plan_bucket(&c, &s, &owner(), Some(&source)).await.unwrap();
    assert_eq!(plan.objects.deletes, ["static/index.html"]);
    apply_bucket(&c, &s, &owner(), &plan, Some(&source))
        .await
        .unwrap();
    assert!(list(&sdk, &name).await.contains_key("other/keep.txt"));
}

#[tokio::test]
async fn large_files_use_multipart_and_resync_as_noop() {
    let tb = require_testbed!();
    let (c, log) = client(tb).await;
    let sdk = tb.s3_client_2().await;
    let name = support::unique_name("multipart");
    let s = spec(&name, "    source: data\n    prefix: blobs\n");
    let mut source = MemorySource::new();
    // ~20 MiB of non-repeating bytes: three 8 MiB parts.
    let mut big = Vec::with_capacity(20 << 20);
    let mut x: u32 = 12345;
    while big.len() < (20 << 20) + 1234 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        big.extend_from_slice(&x.to_le_bytes());
    }
    source.insert("data/big.bin", big.clone());
    source.insert("data/small.txt", "small");

    let plan = plan_bucket(&c, &s, &owner(), Some(&source)).await.unwrap();
    assert_eq!(plan.objects.uploads, ["blobs/big.bin", "blobs/small.txt"]);
    log.clear();
    let report = apply_bucket(&c, &s, &owner(), &plan, Some(&source))
        .await
        .unwrap();
    assert_eq!(report.uploaded, 2);
    let parts = log
        .entries()
        .iter()
        .filter(|(_, w)| w.contains("partNumber"))
        .count();
    assert_eq!(parts, 3, "{:?}", log.entries());
    let head = sdk
        .head_object()
        .bucket(&name)
        .key("blobs/big.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(big.len() as i64));
    assert!(
        head.e_tag().unwrap().contains("-3"),
        "multipart ETag: {:?}",
        head.e_tag()
    );
    let got = sdk
        .get_object()
        .bucket(&name)
        .key("blobs/big.bin")
        .send()
        .await
        .unwrap();
    assert!(got.body.collect().await.unwrap().into_bytes().as_ref() == big.as_slice());

    log.clear();
    let plan = plan_bucket(&c, &s, &owner(), Some(&source)).await.unwrap();
    assert!(plan.is_noop(), "{:?}", plan.objects);
    assert_eq!(
        plan.objects.head_requests, 0,
        "the multipart ETag is computed locally"
    );
    assert_eq!(log.writes(), 0);

    // A change inside the large file is found (same size).
    let mut changed = big.clone();
    changed[15 << 20] ^= 0xff;
    source.insert("data/big.bin", changed);
    let plan = plan_bucket(&c, &s, &owner(), Some(&source)).await.unwrap();
    assert_eq!(plan.objects.uploads, ["blobs/big.bin"]);
}

#[tokio::test]
async fn keys_escaping_the_prefix_are_rejected() {
    let tb = require_testbed!();
    // At validation: source and prefix.
    for (objects, needle) in [
        ("    source: ../outside\n", "spec.objects.source"),
        ("    source: /etc\n", "spec.objects.source"),
        (
            "    source: assets\n    prefix: a/../../b/\n",
            "spec.objects.prefix",
        ),
        (
            "    source: assets\n    prefix: /abs/\n",
            "spec.objects.prefix",
        ),
        (
            "    source: assets\n    prefix: 'a\\b/'\n",
            "spec.objects.prefix",
        ),
    ] {
        let yaml = format!(
            "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {{name: site}}\nspec:\n  name: some-bucket\n  objects:\n{objects}"
        );
        let m = parse_file("env/dev/site.yaml", yaml.as_bytes())
            .unwrap()
            .remove(0);
        let errors = parse_bucket(&m).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.message.starts_with(needle) && e.path == "env/dev/site.yaml"),
            "{objects}: {errors:?}"
        );
    }

    // At plan time: a file path from the source that would escape; nothing is written.
    struct Evil;
    impl ObjectSource for Evil {
        fn list(&self, _dir: &str) -> Result<Vec<SourceFile>, S3Error> {
            Ok(vec![SourceFile {
                path: "assets/../../etc/passwd".into(),
                size: 3,
                content_id: String::new(),
            }])
        }
        fn read(&self, _path: &str) -> Result<Vec<u8>, S3Error> {
            Ok(b"bad".to_vec())
        }
    }
    let (c, log) = client(tb).await;
    let name = support::unique_name("escape");
    let s = spec(&name, "    source: assets\n    prefix: p/\n");
    let err = plan_bucket(&c, &s, &owner(), Some(&Evil))
        .await
        .unwrap_err();
    assert!(matches!(err, S3Error::InvalidKey { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains(&name), "{err}");
    assert_eq!(log.writes(), 0);

    // Files bigger than maxFileSize.
    let s = spec(&name, "    source: assets\n    maxFileSize: 10B\n");
    let mut src = MemorySource::new();
    src.insert("assets/big.txt", vec![b'x'; 11]);
    let err = plan_bucket(&c, &s, &owner(), Some(&src)).await.unwrap_err();
    assert!(
        matches!(
            err,
            S3Error::FileTooLarge {
                size: 11,
                max: 10,
                ..
            }
        ),
        "{err:?}"
    );
}

/// Benchmark (prints figures): 1,000 small files — first sync, no-op re-sync, one changed file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark; run with --ignored --nocapture"]
async fn bench_sync_1000_small_files() {
    let tb = require_testbed!();
    let (c, log) = client(tb).await;
    let name = support::unique_name("bench");
    let s = spec(
        &name,
        "    source: site\n    prefix: www/\n    delete: true\n",
    );
    let mut source = MemorySource::new();
    for i in 0..1000 {
        source.insert(
            format!("site/d{}/file-{i:04}.html", i % 10),
            format!("<p>file {i}</p>\n").repeat(1 + i % 50),
        );
    }

    let t = Instant::now();
    let plan = plan_bucket(&c, &s, &owner(), Some(&source)).await.unwrap();
    let report = apply_bucket(&c, &s, &owner(), &plan, Some(&source))
        .await
        .unwrap();
    let first = t.elapsed();
    let first_requests = log.total();
    assert_eq!(report.uploaded, 1000);

    log.clear();
    let t = Instant::now();
    let plan = plan_bucket(&c, &s, &owner(), Some(&source)).await.unwrap();
    let report = apply_bucket(&c, &s, &owner(), &plan, Some(&source))
        .await
        .unwrap();
    let noop = t.elapsed();
    assert!(plan.is_noop());
    assert_eq!(report.write_calls, 0);
    let noop_entries = log.entries();
    let listing = noop_entries
        .iter()
        .filter(|(_, w)| w == "ListObjectsV2")
        .count();

    source.insert("site/d3/file-0003.html", "changed");
    log.clear();
    let t = Instant::now();
    let plan = plan_bucket(&c, &s, &owner(), Some(&source)).await.unwrap();
    let report = apply_bucket(&c, &s, &owner(), &plan, Some(&source))
        .await
        .unwrap();
    let one = t.elapsed();
    assert_eq!(report.uploaded, 1);

    println!(
        "s3 sync benchmark, 1,000 small files (versitygw at {}):",
        tb.env("GITOPSD_TEST_S3_ENDPOINT_2")
    );
    println!("  first sync (create + 1000 PUTs): {first:?}, {first_requests} requests");
    println!(
        "  no-op re-sync: {noop:?}, {} requests ({listing} ListObjectsV2, {} others: {:?}), 0 writes",
        noop_entries.len(),
        noop_entries.len() - listing,
        noop_entries
            .iter()
            .filter(|(_, w)| w != "ListObjectsV2")
            .collect::<Vec<_>>()
    );
    println!(
        "  one changed file: {one:?}, {} requests, {} write",
        log.total(),
        log.writes()
    );
}

#[tokio::test]
async fn header_changes_are_found_with_verify_object_headers() {
    let tb = require_testbed!();
    let (c, log) = client(tb).await;
    let name = support::unique_name("headers");
    let mut source = MemorySource::new();
    source.insert("web/index.html", "<p>hi</p>");
    source.insert("web/app.js", "console.log(1)");
    let old = spec(&name, "    source: web\n    cacheControl: no-cache\n");
    let plan = plan_bucket(&c, &old, &owner(), Some(&source))
        .await
        .unwrap();
    apply_bucket(&c, &old, &owner(), &plan, Some(&source))
        .await
        .unwrap();

    let new = spec(
        &name,
        "    source: web\n    cacheControl: \"public, max-age=60\"\n    contentTypes: { .js: application/x-test }\n",
    );
    let changes = s3::diff_specs(Some(&old), Some(&new));
    assert_eq!(
        changes.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(),
        ["objects"]
    );
    // Listing cannot see headers: the cheap plan says nothing to do ...
    assert!(
        plan_bucket(&c, &new, &owner(), Some(&source))
            .await
            .unwrap()
            .is_noop()
    );
    // ... the verifying plan HEADs each object and re-uploads both.
    let verify = s3::PlanOptions {
        verify_object_headers: true,
    };
    let plan = s3::plan_bucket_with(&c, &new, &owner(), Some(&source), verify)
        .await
        .unwrap();
    assert_eq!(plan.objects.head_requests, 2);
    assert_eq!(plan.objects.replaced, ["app.js", "index.html"]);
    apply_bucket(&c, &new, &owner(), &plan, Some(&source))
        .await
        .unwrap();
    let sdk = tb.s3_client_2().await;
    let head = sdk
        .head_object()
        .bucket(&name)
        .key("app.js")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/x-test"));
    assert_eq!(head.cache_control(), Some("public, max-age=60"));
    log.clear();
    let plan = s3::plan_bucket_with(&c, &new, &owner(), Some(&source), verify)
        .await
        .unwrap();
    assert!(plan.is_noop(), "{:?}", plan.objects);
    assert_eq!(log.writes(), 0);
}
