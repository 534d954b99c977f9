//! Splitting multi-document YAML with line positions, and turning parser errors into positions.

use std::borrow::Cow;

/// One YAML document of a file.
#[derive(Debug, PartialEq)]
pub struct Document<'a> {
    pub text: Cow<'a, str>,
    /// Number of file lines before `text`'s first line (to make parser lines absolute).
    pub line_offset: u64,
    /// 1-based file line of the document's first meaningful line (not blank, not a comment).
    pub first_line: u64,
}

/// Splits at `---` marker lines (and ends documents at `...`). Documents with no content are
/// returned too, so that document indexes match what a person counts; they parse as null.
pub fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize; // byte offset of the current document's text
    let mut start_line = 0u64; // lines before it
    let mut inline: Option<&str> = None; // content after `--- ` on the marker line
    let mut offset = 0usize;
    let mut line_no = 0u64;
    let mut ended = false; // after `...`, skip until the next `---`
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        let is_marker =
            content == "---" || content.starts_with("--- ") || content.starts_with("---\t");
        let is_end = content == "..." || content.starts_with("... ");
        if is_marker || is_end {
            if !ended && (start_line > 0 || offset > 0 || inline.is_some()) {
                // Close the running document, unless it is the empty prelude before a first `---`.
                let body = &text[start..offset];
                let prelude_only = docs.is_empty() && inline.is_none() && is_blank(body);
                if !(prelude_only && is_marker) {
                    push(&mut docs, inline, body, start_line);
                }
            }
            line_no += 1;
            offset += line.len();
            start = offset;
            start_line = line_no;
            ended = is_end;
            inline = if is_marker {
                let rest = content[3..].trim();
                if rest.is_empty() { None } else { Some(rest) }
            } else {
                None
            };
            continue;
        }
        line_no += 1;
        offset += line.len();
    }
    if !ended {
        let body = &text[start..];
        if !(is_blank(body) && inline.is_none() && !docs.is_empty()) || docs.is_empty() {
            push(&mut docs, inline, body, start_line);
        }
    }
    docs
}

fn push<'a>(docs: &mut Vec<Document<'a>>, inline: Option<&'a str>, body: &'a str, before: u64) {
    let text: Cow<'a, str> = match inline {
        Some(first) => Cow::Owned(format!("{first}\n{body}")),
        None => Cow::Borrowed(body),
    };
    let skipped = text
        .lines()
        .take_while(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#') || t.starts_with('%')
        })
        .count() as u64;
    // Content on the marker line itself belongs to the marker's line.
    let line_offset = if inline.is_some() {
        before.saturating_sub(1)
    } else {
        before
    };
    docs.push(Document {
        text,
        line_offset,
        first_line: line_offset + skipped + 1,
    });
}

fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
}

/// An absolute line and a one-line message for a parser error in a document that starts after
/// `line_offset` lines of its file.
pub fn describe_error(err: &serde_saphyr::Error, line_offset: u64) -> (u64, String) {
    let plain = err.without_snippet().to_string();
    let message = plain.lines().next().unwrap_or("invalid YAML").to_string();
    // The parser's text starts with its own document-relative position; drop it, we report ours.
    let message = match message.split_once(": ") {
        Some((pos, rest)) if pos.starts_with("line ") => rest.to_string(),
        _ => message,
    };
    let line = err.location().map(|l| l.line()).unwrap_or(1);
    (line_offset + line.max(1), message)
}

/// Whether the parser stopped because a budget or alias limit was reached (not a syntax error):
/// parsing the rest of the file would only spend more.
pub fn is_budget_error(err: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error as E;
    let mut err = err;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = err {
        err = error;
    }
    matches!(
        err,
        E::Budget { .. }
            | E::AliasReplayLimitExceeded { .. }
            | E::AliasExpansionLimitExceeded { .. }
            | E::AliasReplayStackDepthExceeded { .. }
            | E::AliasReplayCounterOverflow { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_counts_lines() {
        let docs = split_documents("a: 1\n---\n# c\nb: 2\n...\n--- {c: 3}\n");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].first_line, 1);
        assert_eq!(docs[1].first_line, 4);
        assert_eq!(docs[2].first_line, 6);
        assert_eq!(docs[2].text, "{c: 3}\n");
    }

    #[test]
    fn leading_marker_does_not_make_an_empty_document() {
        let docs = split_documents("---\na: 1\n---\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].first_line, 2);
    }
}
