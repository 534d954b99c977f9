//! The rules for `spec.name` (AWS general-purpose bucket naming) and `spec.region`. Pure; may call
//! `crate::schema`.

use serde_json::Value;

use crate::schema::Checker;

/// `spec.name`: a string that is a valid bucket name (the checker is at `spec.name`).
pub(super) fn bucket_name(c: &mut Checker, v: &Value) -> Option<String> {
    let name = c.string(v)?;
    if let Err(e) = validate_bucket_name(&name) {
        c.problem(format!("{name:?} is not a valid S3 bucket name: {e}"));
    }
    Some(name)
}

/// `spec.region`: lowercase letters, digits and `-`, like `us-east-1`.
pub(super) fn region(c: &mut Checker, v: &Value) -> Option<String> {
    let r = c.string(v)?;
    let valid = !r.is_empty()
        && r.len() <= 32
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        c.problem(format!("{r:?} is not a region name (like us-east-1)"));
    }
    Some(r)
}

/// AWS general-purpose bucket naming rules.
pub fn validate_bucket_name(name: &str) -> Result<(), String> {
    if !(3..=63).contains(&name.len()) {
        return Err(format!(
            "must be 3 to 63 characters long, is {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        return Err(format!(
            "may contain only lowercase letters, digits, dots and hyphens, not {c:?}"
        ));
    }
    let bytes = name.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err("must begin and end with a letter or digit".into());
    }
    if name.contains("..") {
        return Err("must not contain two adjacent dots".into());
    }
    if name.contains(".-") || name.contains("-.") {
        return Err("must not contain a dot next to a hyphen".into());
    }
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("must not be formatted as an IP address".into());
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return Err(format!("must not start with {prefix:?}"));
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return Err(format!("must not end with {suffix:?}"));
        }
    }
    Ok(())
}
