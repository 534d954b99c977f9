//! The decryptor on files made by the real sops CLI (see testdata/README.md; the key is a
//! throwaway test key), parsed as the renderers parse them. No I/O.

use serde_json::{Value, json};

use super::tree::rfc3339_seconds;
use super::*;
use crate::manifest::parse_file;

const KEY: &str = include_str!("testdata/test-age.key");
const OTHER_KEY: &str = include_str!("testdata/other-age.key");
const ALL: &str = include_str!("testdata/all.enc.yaml");
const MAC_ONLY: &str = include_str!("testdata/regex-maconly.enc.yaml");
const MULTI: &str = include_str!("testdata/multi.enc.yaml");

fn keys() -> Keys {
    Keys::parse(KEY).unwrap()
}

fn bodies(text: &str) -> Vec<Value> {
    parse_file("f.yaml", text.as_bytes())
        .unwrap()
        .into_iter()
        .map(|m| m.body.value())
        .collect()
}

fn decrypt(text: &str, keys: &Keys) -> Result<Vec<Value>, SopsError> {
    let mut b = bodies(text);
    decrypt_bodies(&mut b, keys)?;
    Ok(b)
}

#[test]
fn decrypts_every_type_as_sops_wrote_it() {
    let [body] = &decrypt(ALL, &keys()).unwrap()[..] else {
        panic!("one document")
    };
    assert_eq!(body["kind"], "Secret");
    assert_eq!(
        body["metadata"],
        json!({"name": "app-creds", "namespace": "team-a"})
    );
    assert_eq!(body["stringData"]["password"], "hunter2-test-value");
    assert_eq!(body["stringData"]["empty"], "");
    assert_eq!(body["stringData"]["note_unencrypted"], "kept in clear");
    let spec = &body["spec"];
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["ratio"], 0.25);
    assert_eq!(spec["whole"], 2.0);
    assert_eq!(
        (&spec["enabled"], &spec["off"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(spec["nothing"], Value::Null);
    assert_eq!(spec["hosts"], json!(["a.example.com", "b.example.com"]));
    assert_eq!(spec["nested"]["deep"]["token"], "t0k3n");
    assert!(body.get("sops").is_none(), "the metadata is removed");
}

#[test]
fn mac_only_encrypted_and_regex_files_decrypt() {
    let b = decrypt(MAC_ONLY, &keys()).unwrap();
    assert_eq!(b[0]["stringData"]["password"], "hunter2-test-value");
    assert_eq!(b[0]["stringData"]["port"], "5432");
    // With mac_only_encrypted, values outside the regex may change (kustomize transformations).
    let changed = MAC_ONLY.replace("app: db", "app: renamed");
    assert!(decrypt(&changed, &keys()).is_ok());
}

#[test]
fn a_changed_clear_value_is_a_mac_mismatch() {
    // Without mac_only_encrypted, the MAC covers values in the clear too.
    let changed = ALL.replace("kept in clear", "changed in clear");
    assert!(matches!(
        decrypt(&changed, &keys()),
        Err(SopsError::MacMismatch)
    ));
}

#[test]
fn a_changed_mac_is_a_mac_mismatch() {
    let at = ALL.find("mac: ENC[AES256_GCM,data:").unwrap() + 26;
    let mut bytes = ALL.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    assert!(matches!(
        decrypt(&tampered, &keys()),
        Err(SopsError::MacMismatch)
    ));
}

#[test]
fn a_value_moved_to_another_key_does_not_decrypt_and_the_error_names_the_key_only() {
    // Swap the ciphertexts of two values: each is bound to its own path.
    let mut b = bodies(ALL);
    let token = b[0]["spec"]["nested"]["deep"]["token"].clone();
    b[0]["stringData"]["password"] = token;
    let err = decrypt_bodies(&mut b, &keys()).unwrap_err();
    assert!(
        matches!(&err, SopsError::Value { path } if path == "stringData.password"),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        !message.contains("hunter2") && !message.contains("t0k3n"),
        "{message}"
    );
}

#[test]
fn documents_of_one_file_share_a_mac() {
    let b = decrypt(MULTI, &keys()).unwrap();
    assert_eq!(b[0]["stringData"]["a"], "first-test-value");
    assert_eq!(b[1]["stringData"]["b"], "second-test-value");
    // One document alone does not match the file's MAC.
    let mut one = bodies(MULTI);
    one.truncate(1);
    assert!(matches!(
        decrypt_bodies(&mut one, &keys()),
        Err(SopsError::MacMismatch)
    ));
}

#[test]
fn another_key_names_the_recipients() {
    let err = decrypt(ALL, &Keys::parse(OTHER_KEY).unwrap()).unwrap_err();
    let SopsError::NoKey { recipients } = &err else {
        panic!("{err}")
    };
    assert_eq!(recipients.len(), 1);
    assert!(recipients[0].starts_with("age1"), "{recipients:?}");
}

#[test]
fn key_files_are_parsed_without_echoing_them() {
    assert!(Keys::parse("# only a comment\n").is_err());
    let bad = "AGE-SECRET-KEY-1NOTAVALIDKEYATALL\n";
    let err = Keys::parse(bad).unwrap_err().to_string();
    assert!(
        err.contains("line 1") && !err.contains("NOTAVALID"),
        "{err}"
    );
}

#[test]
fn lastmodified_is_formatted_as_go_does() {
    let f = |s| rfc3339_seconds(s);
    assert_eq!(
        f("2026-12-02T18:31:11Z").as_deref(),
        Some("2026-12-02T18:31:11Z")
    );
    assert_eq!(
        f("2026-12-02T18:31:11.123456Z").as_deref(),
        Some("2026-12-02T18:31:11Z")
    );
    assert_eq!(
        f("2026-12-02T18:31:11+00:00").as_deref(),
        Some("2026-12-02T18:31:11Z")
    );
    assert_eq!(
        f("2026-12-02T18:31:11+02:00").as_deref(),
        Some("2026-12-02T18:31:11+02:00")
    );
    assert_eq!(f("yesterday"), None);
}

#[test]
fn only_documents_with_sops_metadata_are_encrypted() {
    assert!(is_encrypted(
        &json!({"kind": "Secret", "sops": {"mac": "x"}})
    ));
    assert!(!is_encrypted(
        &json!({"kind": "Secret", "data": {"sops": "x"}})
    ));
    assert!(!is_encrypted(&json!({"kind": "Secret", "sops": "plain"})));
}

fn state_of(files: &[(&str, &str)]) -> DesiredState {
    let entries = files.iter().map(|(path, text)| manifest::FileEntry {
        path: format!("env/{path}"),
        kind: manifest::EntryKind::File,
        bytes: text.as_bytes().to_vec(),
    });
    manifest::render("env", entries).unwrap()
}

#[test]
fn a_state_is_decrypted_and_rekeyed_by_file() {
    let plain = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\n";
    let mut state = state_of(&[("a.yaml", ALL), ("m.yaml", MULTI), ("p.yaml", plain)]);
    decrypt_state(&mut state, Some(&keys()), &Written::new()).unwrap();
    let names: Vec<String> = state.objects.keys().map(|k| k.to_string()).collect();
    assert_eq!(
        names,
        [
            "ConfigMap plain",
            "Secret one",
            "Secret two",
            "Secret team-a/app-creds"
        ]
    );
    let keys_of_a: Vec<String> = state.files["env/a.yaml"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(
        keys_of_a,
        ["Secret team-a/app-creds"],
        "the file index follows the new key"
    );
    assert!(
        state
            .objects
            .values()
            .all(|m| !is_encrypted(&m.body.value()))
    );
}

#[test]
fn a_state_without_keys_is_refused_naming_the_file_not_the_ciphertext() {
    let mut state = state_of(&[("a.yaml", ALL)]);
    let errors = decrypt_state(&mut state, None, &Written::new()).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "env/a.yaml");
    assert_eq!(errors[0].object, None, "its identity is ciphertext");
    assert!(
        errors[0].message.contains("no decryption settings"),
        "{}",
        errors[0]
    );
    let tampered = MAC_ONLY.replace(
        "password: ENC[AES256_GCM,data:C",
        "password: ENC[AES256_GCM,data:D",
    );
    let mut state = state_of(&[("r.yaml", &tampered)]);
    let errors = decrypt_state(&mut state, Some(&keys()), &Written::new()).unwrap_err();
    assert_eq!(errors[0].object.as_deref(), Some("Secret db"));
}

/// Render-time cost: `cargo test --lib sops::tests::cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn cost_of_decrypting_a_ten_key_secret_and_a_hundred() {
    let text = include_str!("testdata/ten.enc.yaml");
    let keys = keys();
    let parsed = bodies(text);
    let one = std::time::Instant::now();
    let b = decrypt_bodies(&mut parsed.clone(), &keys);
    let one = one.elapsed();
    assert!(b.is_ok());
    let hundred = std::time::Instant::now();
    for _ in 0..100 {
        decrypt_bodies(&mut parsed.clone(), &keys).unwrap();
    }
    println!(
        "one 10-key Secret: {one:?}; 100 such Secrets (100 files): {:?}",
        hundred.elapsed()
    );
}

#[test]
fn keys_sorted_by_kustomize_are_put_back_in_the_file_order() {
    let written = bodies(MAC_ONLY).remove(0);
    // What `kustomize build` prints: keys sorted within metadata and at the top level.
    let mut sorted = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"labels": {"app": "db"}, "name": "db"},
        "sops": written["sops"].clone(),
        "stringData": written["stringData"].clone(),
    });
    assert!(
        decrypt_bodies(&mut [sorted.clone()], &keys()).is_ok(),
        "mac_only: order is free"
    );
    let all = bodies(ALL).remove(0);
    let mut shuffled = serde_json::Map::new();
    for k in [
        "type",
        "spec",
        "sops",
        "stringData",
        "metadata",
        "kind",
        "apiVersion",
    ] {
        shuffled.insert(k.to_string(), all[k].clone());
    }
    let mut shuffled = Value::Object(shuffled);
    assert!(matches!(
        decrypt_bodies(&mut [shuffled.clone()], &keys()),
        Err(SopsError::MacMismatch)
    ));
    super::tree::reorder_like(&mut shuffled, &all);
    assert!(decrypt_bodies(&mut [shuffled], &keys()).is_ok());
    super::tree::reorder_like(&mut sorted, &written);
    assert_eq!(sorted, written);
}
