//! Issue 14 part 4: SOPS-encrypted objects through the `gitopsd` binary against the testbed.
//! Fixtures are encrypted at test time by the real sops CLI (GITOPSD_TEST_SOPS) for a key made
//! by Debian's `age-keygen`. A plain folder and a Kustomize environment are decrypted and
//! applied; the plaintext is in the live Secret only, never in the note, the preview or the
//! daemon's log; a tampered file and an environment without keys are rejected, naming the file,
//! and apply nothing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use gitopsd::status::{Outcome, Record};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use support::Testbed;
use support::gitopsd::{Env, Gitopsd, Transport, WorkRepo};

/// A fresh age key: (key file, recipient).
fn age_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("age.key");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("run age-keygen (Debian package age, tests/testbed/deps)");
    assert!(out.status.success(), "age-keygen: {out:?}");
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "age-keygen -y: {out:?}");
    let recipient = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (key, recipient)
}

/// `plain` encrypted by the real sops for `recipient`, with extra sops flags.
fn sops_encrypt(tb: &Testbed, dir: &Path, recipient: &str, plain: &str, flags: &[&str]) -> String {
    let file = dir.join("secret.yaml");
    std::fs::write(&file, plain).unwrap();
    let out = Command::new(tb.sops())
        .args(["--encrypt", "--age", recipient])
        .args(flags)
        .arg(&file)
        .current_dir(dir)
        .output()
        .expect("run sops");
    assert!(
        out.status.success(),
        "sops --encrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn secret_yaml(ns: &str, password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {ns}\n  labels:\n    app: db\ntype: Opaque\nstringData:\n  user: admin\n  password: {password}\n"
    )
}

fn with_key(env: &mut Env, key: &Path) {
    env.extra.push_str(&format!(
        "    decryption:\n      age_key_file: {}\n",
        key.display()
    ));
}

async fn live_password(client: &kube::Client, ns: &str) -> Option<String> {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt("db")
        .await
        .unwrap()?;
    let bytes = s.data?.get("password")?.0.clone();
    Some(String::from_utf8(bytes).unwrap())
}

/// Fails when `text` holds the plaintext or its base64.
fn assert_no_plaintext(what: &str, text: &str, plaintext: &str) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(plaintext);
    assert!(
        !text.contains(plaintext) && !text.contains(&b64),
        "{what} holds the plaintext:\n{text}"
    );
}

/// The only error of a rejected record (`at`, `reason`).
fn rejection(record: &Record) -> (String, String) {
    assert_eq!(record.outcome, Outcome::Rejected, "{record:?}");
    let e = record.errors.first().expect("an error");
    (e.at.clone().unwrap_or_default(), e.reason.clone())
}

/// `gitopsd once` with debug logging, so that even debug lines are checked for plaintext.
fn once_debug(g: &Gitopsd) -> (bool, String) {
    let out = g
        .command("once", &[])
        .env("GITOPSD_LOG", "debug")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), log)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sops_secret_is_applied_decrypted_and_its_plaintext_shown_nowhere() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "sops-plain").await;
    let work = tempfile::tempdir().unwrap();
    let (key, recipient) = age_key(work.path());
    let plaintext = format!("pw-{}", support::unique_name("x"));
    let repo = WorkRepo::new(tb, "sops-plain");
    repo.write("README.md", "config\n");
    let c0 = repo.commit_push("empty");
    // Everything encrypted (sops's default): kind and name too, re-read after decryption.
    let enc = sops_encrypt(
        tb,
        work.path(),
        &recipient,
        &secret_yaml(&ns, &plaintext),
        &[],
    );
    assert!(enc.contains("kind: ENC["), "{enc}");
    repo.write("env/secret.yaml", &enc);
    let c1 = repo.commit_push("an encrypted secret");
    let mut env = Env::new("sops-plain", "env", &ns);
    with_key(&mut env, &key);
    let g = Gitopsd::new(
        tb,
        &repo.remote,
        Transport::Https,
        std::slice::from_ref(&env),
    );

    let (ok, log) = once_debug(&g);
    assert!(ok, "once: {log}");
    let r = repo.expect_record(&c1, &env.name);
    assert_eq!(r.outcome, Outcome::Healthy, "{r:?}");
    assert_eq!(
        live_password(&client, &ns).await.as_deref(),
        Some(plaintext.as_str())
    );
    let s = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("db")
        .await
        .unwrap();
    let live = serde_json::to_value(&s).unwrap();
    assert!(
        live.get("sops").is_none() && !live.to_string().contains("ENC["),
        "no SOPS left: {live}"
    );
    assert_no_plaintext("the daemon log", &log, &plaintext);
    assert_no_plaintext("the note", &repo.note_text(&c1).unwrap(), &plaintext);

    let out = g.cmd(
        "preview",
        &[
            "--repo",
            repo.path().to_str().unwrap(),
            "--base",
            &c0,
            "--head",
            &c1,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert_no_plaintext("the preview", &out.stdout, &plaintext);
    assert_no_plaintext("the preview's log", &out.stderr, &plaintext);
    assert!(out.stdout.contains("SOPS-encrypted"), "{}", out.stdout);
    assert!(out.stdout.contains("stringData.password"), "{}", out.stdout);
    assert!(!out.stdout.contains("sops.mac"), "{}", out.stdout);

    // A changed MAC: rejected naming the file, and the live Secret is left as it was.
    let tampered = tamper_mac(&enc);
    repo.write("env/secret.yaml", &tampered);
    let c2 = repo.commit_push("tampered mac");
    let (_, log) = once_debug(&g);
    let (at, reason) = rejection(&repo.expect_record(&c2, &env.name));
    assert!(at.starts_with("env/secret.yaml"), "{at}: {reason}");
    assert!(reason.contains("MAC mismatch"), "{reason}");
    assert_no_plaintext("the daemon log", &log, &plaintext);
    assert_eq!(
        live_password(&client, &ns).await.as_deref(),
        Some(plaintext.as_str())
    );
}

/// `enc` with one character of its MAC's ciphertext changed.
fn tamper_mac(enc: &str) -> String {
    let at = enc.find("mac: ENC[AES256_GCM,data:").expect("a mac") + 26;
    let mut bytes = enc.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kustomize_environment_decrypts_after_the_build_and_a_changed_value_is_rejected() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "sops-kz").await;
    let work = tempfile::tempdir().unwrap();
    let (key, recipient) = age_key(work.path());
    let plaintext = format!("pw-{}", support::unique_name("k"));
    let flags = ["--encrypted-regex", "^(data|stringData)$"];
    let enc = sops_encrypt(
        tb,
        work.path(),
        &recipient,
        &secret_yaml(&ns, &plaintext),
        &flags,
    );
    let repo = WorkRepo::new(tb, "sops-kz");
    repo.write(
        "app/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - secret.enc.yaml\n",
    );
    repo.write("app/secret.enc.yaml", &enc);
    let c1 = repo.commit_push("a kustomization with an encrypted secret");
    let mut env = Env::new("sops-kz", "app", &ns);
    with_key(&mut env, &key);
    let g = Gitopsd::new(
        tb,
        &repo.remote,
        Transport::Https,
        std::slice::from_ref(&env),
    );

    let (ok, log) = once_debug(&g);
    assert!(ok, "once: {log}");
    let r = repo.expect_record(&c1, &env.name);
    assert_eq!(r.outcome, Outcome::Healthy, "{r:?}");
    assert_eq!(
        live_password(&client, &ns).await.as_deref(),
        Some(plaintext.as_str())
    );
    assert_no_plaintext("the daemon log", &log, &plaintext);
    assert_no_plaintext("the note", &repo.note_text(&c1).unwrap(), &plaintext);

    // An unencrypted value changed after encryption: the MAC still covers it.
    repo.write("app/secret.enc.yaml", &enc.replace("app: db", "app: evil"));
    let c2 = repo.commit_push("label changed by hand");
    let (_, log) = once_debug(&g);
    let (at, reason) = rejection(&repo.expect_record(&c2, &env.name));
    assert!(at.starts_with("app/secret.enc.yaml"), "{at}: {reason}");
    assert!(reason.contains("MAC mismatch"), "{reason}");
    assert_no_plaintext("the daemon log", &log, &plaintext);
    let s = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("db")
        .await
        .unwrap();
    let labels = s.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("app").map(String::as_str),
        Some("db"),
        "nothing applied"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_decryption_settings_or_with_another_key_a_sops_object_is_rejected() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "sops-nokey").await;
    let work = tempfile::tempdir().unwrap();
    let (_, recipient) = age_key(work.path());
    let other = tempfile::tempdir().unwrap();
    let (wrong_key, _) = age_key(other.path());
    let enc = sops_encrypt(
        tb,
        work.path(),
        &recipient,
        &secret_yaml(&ns, "pw-unused"),
        &[],
    );
    let repo = WorkRepo::new(tb, "sops-nokey");
    repo.write("env/secret.yaml", &enc);
    let c1 = repo.commit_push("an encrypted secret");
    let bare = Env::new("sops-nokey", "env", &ns);
    let mut wrong = Env::new("sops-wrong", "env", &ns);
    with_key(&mut wrong, &wrong_key);
    let g = Gitopsd::new(
        tb,
        &repo.remote,
        Transport::Https,
        &[bare.clone(), wrong.clone()],
    );

    let _ = g.once(None);
    let (at, reason) = rejection(&repo.expect_record(&c1, &bare.name));
    assert!(at.starts_with("env/secret.yaml"), "{at}: {reason}");
    assert!(reason.contains("no decryption settings"), "{reason}");
    let (at, reason) = rejection(&repo.expect_record(&c1, &wrong.name));
    assert!(at.starts_with("env/secret.yaml"), "{at}: {reason}");
    assert!(
        reason.contains(&recipient),
        "names the recipients: {reason}"
    );
    assert_eq!(live_password(&client, &ns).await, None, "nothing applied");
}
