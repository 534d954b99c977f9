//! Three-way merge of note texts by top-level YAML section.
//!
//! Used only when replaying a note that was committed locally but not pushed, on top of a
//! remote that meanwhile changed the note on the same commit. A section starts at a line
//! with no indentation that looks like a mapping key (`name:`); everything up to the next
//! such line belongs to it. Lines before the first key form the preamble. Per section:
//! if we did not change it (ours == base) the remote's version wins, otherwise ours wins.

/// Splits `text` into (preamble, [(key, block)]).
fn sections(text: &str) -> (String, Vec<(String, String)>) {
    let mut preamble = String::new();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        if let Some(key) = top_level_key(line) {
            out.push((key, line.to_string()));
        } else if let Some((_, block)) = out.last_mut() {
            block.push_str(line);
        } else {
            preamble.push_str(line);
        }
    }
    (preamble, out)
}

fn top_level_key(line: &str) -> Option<String> {
    let first = line.chars().next()?;
    if first.is_whitespace() || matches!(first, '#' | '-' | '.' | '}' | ']') {
        return None;
    }
    let trimmed = line.trim_end();
    let key = if let Some(stripped) = trimmed.strip_prefix('"') {
        let end = stripped.find('"')?;
        let rest = &stripped[end + 1..];
        if !rest.starts_with(':') {
            return None;
        }
        &stripped[..end]
    } else {
        let idx = trimmed
            .find(": ")
            .or_else(|| trimmed.strip_suffix(':').map(|s| s.len()))?;
        &trimmed[..idx]
    };
    Some(key.trim().to_string())
}

fn lookup<'a>(s: &'a [(String, String)], key: &str) -> Option<&'a str> {
    s.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Merges `ours` (changed from `base`) into `theirs`.
pub fn merge_sections(base: Option<&str>, ours: &str, theirs: Option<&str>) -> String {
    let Some(theirs) = theirs else {
        return ours.to_string();
    };
    if base == Some(theirs) {
        return ours.to_string();
    }
    if base == Some(ours) || ours == theirs {
        return theirs.to_string();
    }
    let (bp, bs) = sections(base.unwrap_or(""));
    let (op, os) = sections(ours);
    let (tp, ts) = sections(theirs);
    let pick = |b: Option<&str>, o: Option<&str>, t: Option<&str>| -> Option<String> {
        if o == b {
            t.map(str::to_string)
        } else {
            o.map(str::to_string)
        }
    };
    let mut out = pick(Some(&bp), Some(&op), Some(&tp)).unwrap_or_default();
    let mut keys: Vec<&str> = ts.iter().map(|(k, _)| k.as_str()).collect();
    for (k, _) in &os {
        if !keys.contains(&k.as_str()) {
            keys.push(k);
        }
    }
    for key in keys {
        if let Some(block) = pick(lookup(&bs, key), lookup(&os, key), lookup(&ts, key)) {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&block);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_both_environments() {
        let base = "dev:\n  outcome: healthy\n";
        let ours = "dev:\n  outcome: rolled-back\n";
        let theirs = "dev:\n  outcome: healthy\nprod:\n  outcome: healthy\n";
        assert_eq!(
            merge_sections(Some(base), ours, Some(theirs)),
            "dev:\n  outcome: rolled-back\nprod:\n  outcome: healthy\n"
        );
    }

    #[test]
    fn new_note_on_both_sides() {
        let ours = "dev:\n  outcome: healthy\n";
        let theirs = "prod:\n  outcome: rejected\n  failing:\n  - a\n";
        let m = merge_sections(None, ours, Some(theirs));
        assert!(m.contains("dev:\n  outcome: healthy\n"));
        assert!(m.contains("prod:\n  outcome: rejected\n  failing:\n  - a\n"));
    }

    #[test]
    fn trivial_cases() {
        assert_eq!(merge_sections(None, "a: 1\n", None), "a: 1\n");
        assert_eq!(
            merge_sections(Some("a: 1\n"), "a: 2\n", Some("a: 1\n")),
            "a: 2\n"
        );
        assert_eq!(
            merge_sections(Some("a: 1\n"), "a: 1\n", Some("a: 3\n")),
            "a: 3\n"
        );
        assert_eq!(top_level_key("\"x y\": 1"), Some("x y".into()));
        assert_eq!(top_level_key("  nested: 1"), None);
        assert_eq!(top_level_key("- item"), None);
    }
}
