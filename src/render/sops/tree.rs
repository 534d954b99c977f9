//! The pure part of SOPS: reading the `sops:` metadata, opening the data key with age,
//! decrypting each `ENC[AES256_GCM,…]` value in place and checking the MAC. No I/O.
//!
//! Mirrors getsops/sops v3 (`sops.go` `Tree.Decrypt`, `aes/cipher.go`, `stores/stores.go`):
//! values are walked in document order; a value's additional data is its path of keys joined
//! with `:` plus a trailing `:` (list items keep their parent's path); the MAC is SHA-512 over
//! every non-null leaf's plaintext (only encrypted ones with `mac_only_encrypted`), upper-case
//! hex, itself stored encrypted with the data key and `lastmodified` as additional data.

use std::io::Read;

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use super::SopsError;

/// The top-level key SOPS keeps its metadata under.
pub const METADATA_KEY: &str = "sops";
/// What sops assumes when a file names no encryption rule.
const DEFAULT_UNENCRYPTED_SUFFIX: &str = "_unencrypted";
/// SOPS's constant prefix of a MAC over encrypted values only (`MACOnlyEncryptedInitialization`).
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// SOPS encrypts with 32-byte IVs (GCM accepts them through GHASH).
type Cipher = AesGcm<Aes256, U32>;

/// Whether a document carries SOPS metadata (no Kubernetes object has a top-level `sops`).
pub fn is_encrypted(body: &Value) -> bool {
    body.get(METADATA_KEY)
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key("mac") || m.contains_key("lastmodified"))
}

/// [`is_encrypted`] for a kept body; parses only documents that have a top-level `sops` key.
pub fn body_encrypted(body: &crate::manifest::Body) -> bool {
    body.has_key(METADATA_KEY) && is_encrypted(&body.value())
}

/// Which leaves are encrypted (one rule at most, as sops enforces).
enum Rule {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    UnencryptedRegex(regex::Regex),
    EncryptedRegex(regex::Regex),
}

impl Rule {
    fn encrypts(&self, path: &[&str]) -> bool {
        match self {
            Rule::UnencryptedSuffix(s) => !path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::EncryptedSuffix(s) => path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::UnencryptedRegex(r) => !path.iter().any(|k| r.is_match(k)),
            Rule::EncryptedRegex(r) => path.iter().any(|k| r.is_match(k)),
        }
    }
}

/// The parts of `sops:` decryption needs.
struct Metadata {
    rule: Rule,
    mac_only_encrypted: bool,
    /// The encrypted MAC (`ENC[…]`).
    mac: String,
    /// Additional data of the MAC, as sops formats it (RFC 3339, whole seconds).
    lastmodified: String,
    /// age recipients and their armored encrypted data keys.
    age: Vec<(String, String)>,
}

fn meta_str<'a>(meta: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    meta.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn invalid(what: impl Into<String>) -> SopsError {
    SopsError::Metadata(what.into())
}

fn parse_metadata(meta: &Map<String, Value>) -> Result<Metadata, SopsError> {
    for key in ["encrypted_comment_regex", "unencrypted_comment_regex"] {
        if meta_str(meta, key).is_some() {
            return Err(SopsError::Unsupported(format!(
                "{key} (comments are not kept once YAML is parsed)"
            )));
        }
    }
    let regex = |key: &str, s: &str| {
        regex::Regex::new(s).map_err(|e| invalid(format!("{key} is not a valid regex: {e}")))
    };
    let mut rules = Vec::new();
    if let Some(s) = meta_str(meta, "unencrypted_suffix") {
        rules.push(Rule::UnencryptedSuffix(s.to_string()));
    }
    if let Some(s) = meta_str(meta, "encrypted_suffix") {
        rules.push(Rule::EncryptedSuffix(s.to_string()));
    }
    if let Some(s) = meta_str(meta, "unencrypted_regex") {
        rules.push(Rule::UnencryptedRegex(regex("unencrypted_regex", s)?));
    }
    if let Some(s) = meta_str(meta, "encrypted_regex") {
        rules.push(Rule::EncryptedRegex(regex("encrypted_regex", s)?));
    }
    if rules.len() > 1 {
        return Err(invalid("more than one encryption rule (suffixes, regexes)"));
    }
    let rule = rules.pop().unwrap_or(Rule::UnencryptedSuffix(
        DEFAULT_UNENCRYPTED_SUFFIX.to_string(),
    ));
    let mac = meta_str(meta, "mac")
        .ok_or_else(|| invalid("no mac (the file is not protected against changes)"))?;
    let lastmodified = meta_str(meta, "lastmodified").ok_or_else(|| invalid("no lastmodified"))?;
    Ok(Metadata {
        rule,
        mac_only_encrypted: meta
            .get("mac_only_encrypted")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        mac: mac.to_string(),
        lastmodified: rfc3339_seconds(lastmodified)
            .ok_or_else(|| invalid("lastmodified is not an RFC 3339 time"))?,
        age: age_entries(meta)?,
    })
}

/// The age entries of the metadata: top-level `age:` or a single key group's.
fn age_entries(meta: &Map<String, Value>) -> Result<Vec<(String, String)>, SopsError> {
    let groups = meta.get("key_groups").and_then(Value::as_array);
    let list = match groups.map(Vec::as_slice) {
        None | Some([]) => meta.get("age"),
        Some([one]) => one.get("age"),
        Some(_) => {
            return Err(SopsError::Unsupported(
                "several key groups (Shamir secret sharing)".into(),
            ));
        }
    };
    let entries = list.and_then(Value::as_array).map(Vec::as_slice);
    Ok(entries
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            let recipient = e.get("recipient")?.as_str()?.to_string();
            let enc = e.get("enc")?.as_str()?.to_string();
            Some((recipient, enc))
        })
        .collect())
}

/// `lastmodified` as Go's `time.Format(time.RFC3339)` prints what `time.Parse` read: no
/// fractional seconds, `Z` for UTC. `None` when it is no RFC 3339 time.
pub fn rfc3339_seconds(text: &str) -> Option<String> {
    let (date, rest) = text.split_once(['T', 't'])?;
    let zone_at = rest.find(['Z', 'z', '+', '-'])?;
    let (time, zone) = rest.split_at(zone_at);
    let whole = time.split('.').next()?;
    let ok =
        date.len() == 10 && whole.len() == 8 && whole.chars().filter(|c| *c == ':').count() == 2;
    if !ok {
        return None;
    }
    let zone = match zone {
        "Z" | "z" | "+00:00" | "-00:00" => "Z",
        z if z.len() == 6 => z,
        _ => return None,
    };
    Some(format!("{date}T{whole}{zone}"))
}

/// Opens the data key with the first age entry one of `identities` can decrypt.
fn data_key(
    meta: &Metadata,
    identities: &[Box<dyn age::Identity + Send + Sync>],
) -> Result<Zeroizing<[u8; 32]>, SopsError> {
    if meta.age.is_empty() {
        return Err(SopsError::Unsupported(
            "no age recipient (only age is supported)".into(),
        ));
    }
    for (_, enc) in &meta.age {
        let armored = age::armor::ArmoredReader::new(enc.as_bytes());
        let Ok(decryptor) = age::Decryptor::new(armored) else {
            continue;
        };
        let Ok(mut reader) = decryptor.decrypt(identities.iter().map(|i| i.as_ref() as _)) else {
            continue;
        };
        let mut key = Zeroizing::new(Vec::with_capacity(32));
        if reader.read_to_end(&mut key).is_err() {
            continue;
        }
        let mut out = Zeroizing::new([0u8; 32]);
        if key.len() == 32 {
            out.copy_from_slice(&key);
            return Ok(out);
        }
    }
    Err(SopsError::NoKey {
        recipients: meta.age.iter().map(|(r, _)| r.clone()).collect(),
    })
}

/// One parsed `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`.
struct Encrypted {
    /// Ciphertext followed by the tag, as the AEAD takes it; after [`open`], the plaintext.
    data: Zeroizing<Vec<u8>>,
    iv: Vec<u8>,
    kind: String,
}

fn parse_value(text: &str) -> Option<Encrypted> {
    let inner = text.strip_prefix("ENC[AES256_GCM,")?.strip_suffix(']')?;
    let mut fields = inner.split(',');
    let mut take = |name: &str| fields.next()?.strip_prefix(name).map(str::to_string);
    let (data, iv, tag, kind) = (take("data:")?, take("iv:")?, take("tag:")?, take("type:")?);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut data = b64.decode(data).ok()?;
    data.extend(b64.decode(tag).ok()?);
    Some(Encrypted {
        data: Zeroizing::new(data),
        iv: b64.decode(iv).ok()?,
        kind,
    })
}

/// Decrypts one value's bytes (`what` names it in errors: a path of keys, never a value).
fn open(cipher: &Cipher, text: &str, aad: &str, what: &str) -> Result<Encrypted, SopsError> {
    let bad = || SopsError::Value {
        path: what.to_string(),
    };
    let mut enc = parse_value(text).ok_or_else(bad)?;
    if enc.iv.len() != 32 {
        return Err(bad());
    }
    let nonce = Nonce::<U32>::from_slice(&enc.iv);
    let payload = Payload {
        msg: &enc.data,
        aad: aad.as_bytes(),
    };
    let plain = cipher.decrypt(nonce, payload).map_err(|_| bad())?;
    enc.data = Zeroizing::new(plain);
    Ok(enc)
}

/// A decrypted value in its JSON type and the bytes the MAC covers (sops's `ToBytes`).
fn typed(enc: &Encrypted, what: &str) -> Result<(Value, Zeroizing<Vec<u8>>), SopsError> {
    let bad = || SopsError::Type {
        path: what.to_string(),
        kind: enc.kind.clone(),
    };
    let text = std::str::from_utf8(&enc.data).map_err(|_| bad())?;
    let bytes = |s: String| Zeroizing::new(s.into_bytes());
    Ok(match enc.kind.as_str() {
        "str" | "bytes" | "time" => (Value::String(text.to_string()), bytes(text.into())),
        "int" => {
            let n: i64 = text.parse().map_err(|_| bad())?;
            (Value::Number(n.into()), bytes(n.to_string()))
        }
        "float" => {
            let f: f64 = text.parse().map_err(|_| bad())?;
            let n = Number::from_f64(f).ok_or_else(bad)?;
            (Value::Number(n), bytes(format_float(f)))
        }
        "bool" => {
            let b = match text {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
                "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
                _ => return Err(bad()),
            };
            (Value::Bool(b), bytes(go_bool(b).into()))
        }
        _ => return Err(bad()),
    })
}

fn go_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: shortest round-trip digits, never an exponent
/// (Rust's `Display` for `f64` prints the same).
fn format_float(f: f64) -> String {
    format!("{f}")
}

/// The MAC bytes of a leaf that is not encrypted.
fn plain_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Bool(b) => go_bool(*b).as_bytes().to_vec(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if !(n.is_i64() || n.is_u64()) => format_float(f).into_bytes(),
            _ => n.to_string().into_bytes(),
        },
        _ => Vec::new(),
    }
}

/// Walks the tree in document order, decrypting in place and hashing for the MAC.
struct Walk<'a> {
    cipher: &'a Cipher,
    meta: &'a Metadata,
    hash: Sha512,
}

impl Walk<'_> {
    fn value(&mut self, v: &mut Value, path: &mut Vec<String>) -> Result<(), SopsError> {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    path.push(k.clone());
                    self.value(child, path)?;
                    path.pop();
                }
                Ok(())
            }
            Value::Array(items) => items.iter_mut().try_for_each(|i| self.value(i, path)),
            Value::Null => Ok(()),
            leaf => self.leaf(leaf, path),
        }
    }

    fn leaf(&mut self, v: &mut Value, path: &[String]) -> Result<(), SopsError> {
        let keys: Vec<&str> = path.iter().map(String::as_str).collect();
        let encrypted = self.meta.rule.encrypts(&keys);
        let what = keys.join(".");
        let mac_bytes = if !encrypted {
            Zeroizing::new(plain_bytes(v))
        } else {
            let Value::String(text) = v else {
                return Err(SopsError::Value { path: what });
            };
            if text.is_empty() {
                // sops leaves empty strings as they are.
                Zeroizing::new(Vec::new())
            } else {
                let aad = format!("{}:", keys.join(":"));
                let opened = open(self.cipher, text, &aad, &what)?;
                let (value, bytes) = typed(&opened, &what)?;
                *v = value;
                bytes
            }
        };
        if !self.meta.mac_only_encrypted || encrypted {
            self.hash.update(&*mac_bytes);
        }
        Ok(())
    }
}

/// Decrypts the documents of one SOPS file in place with `identities` (in document order: a
/// file of several documents has one data key and one MAC over all of them; the metadata of the
/// first counts) and removes their `sops:` keys. On error the bodies may be partly decrypted:
/// the caller drops them.
pub fn decrypt(
    bodies: &mut [Value],
    identities: &[Box<dyn age::Identity + Send + Sync>],
) -> Result<(), SopsError> {
    let mut metadata = None;
    for body in bodies.iter_mut() {
        let Some(map) = body.as_object_mut() else {
            return Err(invalid("the document is not a mapping"));
        };
        match map.remove(METADATA_KEY) {
            Some(Value::Object(raw)) => {
                metadata.get_or_insert(raw);
            }
            _ => return Err(invalid("no sops mapping")),
        }
    }
    let meta = parse_metadata(&metadata.ok_or_else(|| invalid("no document"))?)?;
    let key = data_key(&meta, identities)?;
    let cipher = Cipher::new_from_slice(key.as_slice()).map_err(|_| invalid("data key"))?;
    let mut walk = Walk {
        cipher: &cipher,
        meta: &meta,
        hash: Sha512::new(),
    };
    if meta.mac_only_encrypted {
        walk.hash.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    let mut path = Vec::new();
    for body in bodies.iter_mut() {
        walk.value(body, &mut path)?;
    }
    let computed: String = walk
        .hash
        .finalize()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let stored = open(&cipher, &meta.mac, &meta.lastmodified, "sops.mac")
        .map_err(|_| SopsError::MacMismatch)?;
    if stored.data.as_slice() != computed.as_bytes() {
        return Err(SopsError::MacMismatch);
    }
    Ok(())
}

/// Puts the keys of `body`'s mappings in the order of `like`'s, the document as written: the
/// MAC follows the file's order, and `kustomize build` prints keys sorted. Keys `like` lacks
/// (added by a transformation) go last.
pub fn reorder_like(body: &mut Value, like: &Value) {
    match (body, like) {
        (Value::Object(map), Value::Object(template)) => {
            let mut rest = std::mem::take(map);
            for (k, t) in template {
                if let Some(mut v) = rest.shift_remove(k) {
                    reorder_like(&mut v, t);
                    map.insert(k.clone(), v);
                }
            }
            map.extend(rest);
        }
        (Value::Array(items), Value::Array(template)) => {
            for (v, t) in items.iter_mut().zip(template) {
                reorder_like(v, t);
            }
        }
        _ => {}
    }
}

/// The stored MAC of a SOPS document: documents of one file share it.
pub fn mac_of(body: &Value) -> Option<&str> {
    body.get(METADATA_KEY)?.get("mac")?.as_str()
}
